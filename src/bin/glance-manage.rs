//! glance-manage: upstream Glance's database commands (`db_sync`, `db_version`,
//! `db_check`, also as `db sync|version|check`), run before glance-api starts.

use std::process::ExitCode;

use clap::Parser;
use glance_operator::api::settings::{default_backend, store_dir};
use glance_operator::conf::Config;
use glance_operator::db::DbOptions;
use glance_operator::db::manage::{Command, run};
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
    /// db_sync [VERSION], db_version, db_check, or db sync|version|check.
    #[arg(required = true, num_args = 1..=3, value_name = "COMMAND")]
    command: Vec<String>,
}

fn command(words: &[String]) -> Result<Command, String> {
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
        _ => Err(format!(
            "unknown command {:?}: use db_sync [VERSION], db_version or db_check",
            words.join(" ")
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match command(&cli.command) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("glance-manage: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&cli.config.sources()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("glance-manage: {e}");
            return ExitCode::FAILURE;
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
