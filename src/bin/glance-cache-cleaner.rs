//! glance-cache-cleaner: removes failed writes and writes stalled longer than
//! image_cache_stall_time.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use glance_operator::tools::{ConfigArgs, ToolError, exit};
use tracing::info;

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
    cli.config.init_logging();
    exit("glance-cache-cleaner", run(&cli.config))
}

fn run(args: &ConfigArgs) -> Result<(), ToolError> {
    let tool = args.open_cache()?;
    let report = tool
        .cache
        .clean(Duration::from_secs(tool.options.image_cache_stall_time))?;
    info!(
        invalid = report.invalid,
        stalled = report.stalled,
        bytes = report.bytes,
        "cleaned the image cache"
    );
    Ok(())
}
