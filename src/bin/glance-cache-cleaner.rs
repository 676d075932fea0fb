//! glance-cache-cleaner: removes failed writes and writes stalled longer than
//! image_cache_stall_time.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use glance_operator::db::{Db, DbError, DbOptions};
use glance_operator::tools::{CacheTool, ConfigArgs, DEFAULT_CONNECTION, ToolError, exit};
use tracing::{info, warn};

/// Command line of glance-cache-cleaner.
#[derive(Debug, Parser)]
#[command(
    name = "glance-cache-cleaner",
    version,
    about = "Remove invalid and stalled files from the image cache"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit("glance-cache-cleaner", run(&cli.config))
}

fn run(args: &ConfigArgs) -> Result<(), ToolError> {
    let tool = args.open_cache("glance-cache-cleaner")?;
    let report = tool
        .cache
        .clean(Duration::from_secs(tool.options.image_cache_stall_time))?;
    info!(
        invalid = report.invalid,
        stalled = report.stalled,
        bytes = report.bytes,
        "cleaned the image cache"
    );
    // Copies of images deleted from the catalogue go too; the cleaning above stands if
    // the catalogue cannot be asked now (the next run tries again).
    match forget_deleted(&tool) {
        Ok(dropped) => info!(dropped, "removed the copies of deleted images"),
        Err(e) => warn!(error = %e, "deleted images not looked for: the catalogue cannot be asked"),
    }
    Ok(())
}

/// Removes the cached copies of images that the catalogue (`[database]`) no longer has.
fn forget_deleted(tool: &CacheTool) -> Result<usize, ToolError> {
    if tool.config.get("database", "connection").is_none() {
        // No catalogue named: nothing to ask (and no SQLite file to create by asking).
        return Ok(0);
    }
    tool.cache.forget_absent(|held| {
        let mut options = DbOptions::from_config(&tool.config, DEFAULT_CONNECTION)?;
        // One attempt: a catalogue that is away is asked again on the next run.
        options.max_retries = Some(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ToolError::Db(DbError::Sql(format!("no runtime: {e}"))))?;
        Ok(runtime.block_on(async {
            let db = Db::connect(&options).await?;
            let live = db.live(held).await;
            db.close().await;
            live
        })?)
    })
}
