//! The cache tools: glance-cache-manage, -pruner, -cleaner and -prefetcher.

pub mod client;
pub mod manage;
pub mod prefetch;
pub mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use thiserror::Error;
use tracing::error;

use crate::cache::{Cache, CacheError, CentralDb, DriverKind};
use crate::conf::logging::{self, LogError, LogSettings};
use crate::conf::{CacheOptions, ConfError, Config, ConfigSources};
use crate::db::{DbError, DbOptions};

/// glance-api's default `[database] connection`, which the tools share.
pub const DEFAULT_CONNECTION: &str = "sqlite:////var/lib/glance/glance.sqlite";

/// The configuration flags every tool takes, as upstream's oslo.config programs do.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// A configuration file; may be given several times, later files override earlier ones.
    #[arg(long = "config-file", value_name = "PATH")]
    pub config_file: Vec<PathBuf>,
    /// A directory of *.conf files, read in name order after the --config-file files.
    #[arg(long = "config-dir", value_name = "DIR")]
    pub config_dir: Vec<PathBuf>,
    /// Log at debug level, as `[DEFAULT] debug = true` does.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

/// Why a tool failed.
#[derive(Debug, Error)]
pub enum ToolError {
    /// The configuration is missing or wrong.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// Logging cannot start as the configuration says (boxed: the Result stays small).
    #[error(transparent)]
    Log(Box<LogError>),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The `[database]` options are wrong (centralized_db driver).
    #[error(transparent)]
    Db(#[from] DbError),
    /// Some images could not be prefetched.
    #[error("{0} of the queued images could not be prefetched")]
    Prefetch(usize),
}

impl From<LogError> for ToolError {
    fn from(e: LogError) -> Self {
        Self::Log(Box::new(e))
    }
}

/// A tool's loaded configuration and opened cache.
pub struct CacheTool {
    /// The merged configuration.
    pub config: Config,
    /// The cache options in it.
    pub options: CacheOptions,
    /// The cache at image_cache_dir.
    pub cache: Cache,
}

impl ConfigArgs {
    /// Where the configuration comes from: `--config-file` and `--config-dir`.
    pub fn sources(&self) -> ConfigSources {
        ConfigSources {
            files: self.config_file.clone(),
            dirs: self.config_dir.clone(),
        }
    }

    /// Starts logging as `config` and `--debug` say (see [`crate::conf::logging`]), once
    /// the configuration is loaded.
    pub fn init_logging(&self, config: &Config, program: &str) -> Result<LogSettings, LogError> {
        logging::init(config, self.debug, program)
    }

    /// Loads the configuration, starts logging as it says, and opens the cache it names.
    pub fn open_cache(&self, program: &str) -> Result<CacheTool, ToolError> {
        let config = Config::load(&self.sources())?;
        self.init_logging(&config, program)?;
        let options = CacheOptions::from_config(&config)?;
        let cache = open_cache(&config, &options)?;
        Ok(CacheTool {
            config,
            options,
            cache,
        })
    }
}

/// Opens the cache that `options` (read from `config`) name. With the centralized_db
/// driver this connects to `config`'s `[database]` on a runtime of its own and records
/// this node (`worker_self_reference_url`), so call it outside async code.
pub fn open_cache(config: &Config, options: &CacheOptions) -> Result<Cache, ToolError> {
    let dir = options.require_dir()?;
    Ok(match options.image_cache_driver {
        DriverKind::CentralizedDb => {
            let node = options.node_url()?;
            let database = DbOptions::from_config(config, DEFAULT_CONNECTION)?;
            let central = CentralDb::connect(&database, node)?;
            Cache::open_central(dir, central, &options.image_cache_sqlite_db)?
        }
        driver => Cache::open(dir, driver, &options.image_cache_sqlite_db)?,
    })
}

/// The exit code of a tool's result; the error is logged.
pub fn exit(program: &str, result: Result<(), ToolError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "{program} failed");
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}
