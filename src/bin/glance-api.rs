//! glance-api: the Image API v2 server with the transparent local image cache.
//!
//! With no --config-file/--config-dir it runs on embedded defaults: SQLite, images and
//! the cache under ./glance-data, listening on 127.0.0.1:9292.

use std::process::ExitCode;

use clap::Parser;
use glance_operator::api::server::{build_state, serve, shutdown_signal};
use glance_operator::api::settings::{ApiSettings, EMBEDDED_DEFAULTS};
use glance_operator::conf::Config;
use glance_operator::tools::ConfigArgs;
use tracing::{debug, error, info};

/// Command line of glance-api.
#[derive(Debug, Parser)]
#[command(
    name = "glance-api",
    version,
    about = "OpenStack Image API v2 server with a local image cache"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = cli.config.sources();
    let embedded = sources.files.is_empty() && sources.dirs.is_empty();
    let config = if embedded {
        Config::from_str("embedded defaults", EMBEDDED_DEFAULTS)
    } else {
        Config::load(&sources)
    };
    // Nothing logs before logging starts: errors until then go to stderr only.
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("glance-api: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = cli.config.init_logging(&config, "glance-api") {
        eprintln!("glance-api: {e}");
        return ExitCode::FAILURE;
    }
    if embedded {
        info!(
            "no --config-file or --config-dir: using the embedded defaults (./glance-data, 127.0.0.1:9292)"
        );
    }
    debug!(files = ?config.files(), "configuration loaded");
    let settings = match ApiSettings::from_config(&config) {
        Ok(settings) => settings,
        Err(e) => {
            error!(error = %e, "invalid configuration");
            eprintln!("glance-api: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match build_state(settings).await {
        Ok(state) => serve(state, shutdown_signal()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "glance-api stopped");
            eprintln!("glance-api: {e}");
            ExitCode::FAILURE
        }
    }
}
