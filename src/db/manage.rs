//! `glance-manage`'s database commands, with upstream's output and exit statuses:
//! `db_sync`, `db_version` and `db_check` (also spelled `db sync`, `db version`,
//! `db check`).

use super::schema::{self, HEAD, State, Synced};
use super::url::Backend;
use super::{Db, DbError, DbOptions};
use crate::store::FileStore;

/// A command's answer: what it prints on stdout, and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Lines for stdout.
    pub stdout: String,
    /// Lines for stderr.
    pub stderr: String,
    /// Exit status.
    pub code: u8,
}

impl Outcome {
    fn ok(text: &str) -> Self {
        Self {
            stdout: format!("{text}\n"),
            stderr: String::new(),
            code: 0,
        }
    }
}

/// A database command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create or upgrade the schema to [`HEAD`] (an explicit target must be [`HEAD`]).
    Sync(Option<String>),
    /// Print the current revision.
    Version,
    /// Tell whether the schema is current (exit 3 if not).
    Check,
    /// Load metadata definitions from JSON files (a directory or one file).
    LoadMetadefs(std::path::PathBuf, super::metadef_files::LoadMode),
    /// Remove every metadata definition.
    UnloadMetadefs,
    /// Write the metadata definitions to JSON files in a directory.
    ExportMetadefs(std::path::PathBuf),
}

const NOT_UNDER_CONTROL: &str = "Database is either not under migration control or under legacy migration control, please run \"glance-manage db sync\" to place the database under alembic migration control.";

/// Runs `command` on the database of `options`; `store` is the default file store, for
/// the locations of a glance-api 0.1.0 catalogue being upgraded.
pub async fn run(
    command: &Command,
    options: &DbOptions,
    store: &FileStore,
) -> Result<Outcome, DbError> {
    if *command == Command::Check && options.url.backend == Backend::Postgres {
        // Upstream's rolling-upgrade check knows only MySQL and SQLite (sys.exit(msg):
        // the message goes to stderr).
        return Ok(Outcome {
            stdout: String::new(),
            stderr: "Rolling upgrades are currently supported only for MySQL and Sqlite\n"
                .to_owned(),
            code: 1,
        });
    }
    let db = Db::connect(options).await?;
    let outcome = match command {
        Command::Sync(Some(target)) if target != HEAD => Err(DbError::Schema {
            location: db.location().to_owned(),
            problem: format!("this glance-manage migrates only to {HEAD}, not to {target}"),
        }),
        Command::Sync(_) => schema::sync(&db, store).await.map(|synced| match synced {
            Synced::UpToDate => Outcome::ok("Database is up to date. No migrations needed."),
            Synced::Created => Outcome::ok(&format!(
                "Upgraded database to: 2024_1_expand01, current revision(s): 2024_1_expand01\nDatabase migration is up to date. No migration needed.\nUpgraded database to: {HEAD}, current revision(s): {HEAD}\nDatabase is synced successfully."
            )),
            Synced::Upgraded => Outcome::ok(&format!(
                "Moved the glance-api 0.1.0 catalogue into upstream Glance's schema.\nUpgraded database to: {HEAD}, current revision(s): {HEAD}\nDatabase is synced successfully."
            )),
        }),
        Command::Version => schema::state(&db).await.map(|state| match state {
            State::Revision(v) => Outcome::ok(&v),
            _ => Outcome::ok(NOT_UNDER_CONTROL),
        }),
        Command::LoadMetadefs(path, mode) => {
            match super::metadef_files::load(&db, path, *mode).await {
                Ok(lines) => Ok(Outcome::ok(&lines.join("\n"))),
                Err(super::metadef_files::LoadError::Db(e)) => Err(e),
                Err(e) => Ok(Outcome {
                    stdout: String::new(),
                    stderr: format!("{e}\n"),
                    code: 1,
                }),
            }
        }
        Command::UnloadMetadefs => super::metadef_files::unload(&db)
            .await
            .map(|n| Outcome::ok(&format!("Unloaded {n} metadata definition namespaces"))),
        Command::ExportMetadefs(dir) => match super::metadef_files::export(&db, dir).await {
            Ok(files) => Ok(Outcome::ok(
                &files
                    .iter()
                    .map(|f| format!("Exported to {}", f.display()))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )),
            Err(super::metadef_files::LoadError::Db(e)) => Err(e),
            Err(e) => Ok(Outcome {
                stdout: String::new(),
                stderr: format!("{e}\n"),
                code: 1,
            }),
        },
        Command::Check => schema::state(&db).await.map(|state| match state {
            State::Revision(v) if v == HEAD => {
                Outcome::ok("Database is up to date. No upgrades needed.")
            }
            _ => Outcome {
                stdout: "Your database is not up to date. Your first step is to run `glance-manage db expand`.\n".to_owned(),
                stderr: String::new(),
                code: 3,
            },
        }),
    };
    db.close().await;
    outcome
}
