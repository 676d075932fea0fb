//! glance-manage: upstream Glance's database commands (`db_sync`, `db_version`,
//! `db_check`, also as `db sync|version|check`), run before glance-api starts, and its
//! metadata definition commands (`db_load_metadefs`, `db_unload_metadefs`,
//! `db_export_metadefs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use glance_operator::api::settings::{default_backend, store_dir};
use glance_operator::conf::Config;
use glance_operator::db::DbOptions;
use glance_operator::db::manage::{Command, run};
use glance_operator::db::metadef_files::LoadMode;
use glance_operator::store::FileStore;
use glance_operator::tools::ConfigArgs;

/// Command line of glance-manage.
#[derive(Debug, Parser)]
#[command(
    name = "glance-manage",
    version,
    about = "Create and check glance-api's database schema"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// db_sync [VERSION], db_version, db_check (or db sync|version|check),
    /// db_load_metadefs [PATH] [--merge [--prefer_new|--overwrite]],
    /// db_unload_metadefs, db_export_metadefs [PATH].
    #[arg(
        required = true,
        num_args = 1..,
        value_name = "COMMAND",
        allow_hyphen_values = true,
        trailing_var_arg = true
    )]
    command: Vec<String>,
}

/// The metadefs directory: a PATH given (positional or `--path`), else
/// `[DEFAULT] metadata_source_path`, upstream's default `/etc/glance/metadefs/`.
fn metadefs_path(rest: &[&str], config: &Config) -> Result<(PathBuf, Vec<String>), String> {
    let mut path = None;
    let mut flags = Vec::new();
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        match *word {
            "--path" => {
                path = Some(
                    words
                        .next()
                        .ok_or_else(|| "--path needs a value".to_owned())?
                        .to_string(),
                )
            }
            w if w.starts_with("--path=") => path = Some(w["--path=".len()..].to_owned()),
            w if w.starts_with("--") => flags.push(w.to_owned()),
            w if path.is_none() => path = Some(w.to_owned()),
            w => return Err(format!("unexpected argument {w:?}")),
        }
    }
    let path = path.unwrap_or_else(|| {
        config
            .get("DEFAULT", "metadata_source_path")
            .unwrap_or("/etc/glance/metadefs/")
            .to_owned()
    });
    Ok((PathBuf::from(path), flags))
}

fn command(words: &[String], config: &Config) -> Result<Command, String> {
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (name, rest) = match words.as_slice() {
        ["db", name, rest @ ..] => (format!("db_{name}"), rest),
        [name, rest @ ..] => ((*name).to_owned(), rest),
        [] => return Err("a command is needed".to_owned()),
    };
    match (name.as_str(), rest) {
        ("db_sync", []) => Ok(Command::Sync(None)),
        ("db_sync", [version]) => Ok(Command::Sync(Some((*version).to_owned()))),
        ("db_version", []) => Ok(Command::Version),
        ("db_check", []) => Ok(Command::Check),
        ("db_load_metadefs", rest) => {
            let (path, flags) = metadefs_path(rest, config)?;
            let mut mode = LoadMode::default();
            for flag in flags {
                match flag.as_str() {
                    "--merge" => mode.merge = true,
                    "--prefer_new" => mode.prefer_new = true,
                    "--overwrite" => mode.overwrite = true,
                    other => return Err(format!("unknown option {other:?}")),
                }
            }
            Ok(Command::LoadMetadefs(path, mode))
        }
        ("db_unload_metadefs", []) => Ok(Command::UnloadMetadefs),
        ("db_export_metadefs", rest) => {
            let (path, flags) = metadefs_path(rest, config)?;
            match flags.first() {
                Some(other) => Err(format!("unknown option {other:?}")),
                None => Ok(Command::ExportMetadefs(path)),
            }
        }
        _ => Err(format!(
            "unknown command {:?}: use db_sync [VERSION], db_version, db_check, db_load_metadefs, db_unload_metadefs or db_export_metadefs",
            words.join(" ")
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config.sources()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("glance-manage: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = match command(&cli.command, &config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("glance-manage: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cli.config.init_logging(&config, "glance-manage") {
        eprintln!("glance-manage: {e}");
        return ExitCode::FAILURE;
    }
    let options = match DbOptions::from_config(&config, "sqlite:////var/lib/glance/glance.sqlite") {
        Ok(options) => options,
        Err(e) => {
            eprintln!("glance-manage: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = FileStore::new(&store_dir(&config), default_backend(&config));
    match run(&command, &options, &store).await {
        Ok(outcome) => {
            print!("{}", outcome.stdout);
            eprint!("{}", outcome.stderr);
            ExitCode::from(outcome.code)
        }
        Err(e) => {
            eprintln!("glance-manage: {e}");
            ExitCode::FAILURE
        }
    }
}
