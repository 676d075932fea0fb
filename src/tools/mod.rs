//! The cache tools: glance-cache-manage, -pruner, -cleaner and -prefetcher.

pub mod client;
pub mod manage;
pub mod prefetch;
pub mod table;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use thiserror::Error;
use tracing::error;
use tracing_subscriber::EnvFilter;

use crate::cache::{Cache, CacheError};
use crate::conf::{CacheOptions, ConfError, Config, ConfigSources};

/// The configuration flags every tool takes, as upstream's oslo.config programs do.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// A configuration file; may be given several times, later files override earlier ones.
    #[arg(long = "config-file", value_name = "PATH")]
    pub config_file: Vec<PathBuf>,
    /// A directory of *.conf files, read in name order after the --config-file files.
    #[arg(long = "config-dir", value_name = "DIR")]
    pub config_dir: Vec<PathBuf>,
    /// Log at debug level.
    #[arg(short = 'd', long)]
    pub debug: bool,
}

/// Why a tool failed.
#[derive(Debug, Error)]
pub enum ToolError {
    /// The configuration is missing or wrong.
    #[error(transparent)]
    Conf(#[from] ConfError),
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Some images could not be prefetched.
    #[error("{0} of the queued images could not be prefetched")]
    Prefetch(usize),
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
    /// Starts logging (RUST_LOG overrides the level).
    pub fn init_logging(&self) {
        let level = if self.debug { "debug" } else { "info" };
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }

    /// Loads the configuration and opens the cache it names.
    pub fn open_cache(&self) -> Result<CacheTool, ToolError> {
        let sources = ConfigSources {
            files: self.config_file.clone(),
            dirs: self.config_dir.clone(),
        };
        let config = Config::load(&sources)?;
        let options = CacheOptions::from_config(&config)?;
        let cache = Cache::open(
            options.require_dir()?,
            options.image_cache_driver,
            &options.image_cache_sqlite_db,
        )?;
        Ok(CacheTool {
            config,
            options,
            cache,
        })
    }
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
