//! glance-cache-pruner: evicts least recently used images until the cache fits
//! image_cache_max_size.

use std::process::ExitCode;

use clap::Parser;
use glance_operator::tools::{ConfigArgs, ToolError, exit};
use tracing::info;

/// Command line of glance-cache-pruner.
#[derive(Debug, Parser)]
#[command(
    name = "glance-cache-pruner",
    version,
    about = "Prune the image cache down to image_cache_max_size"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit("glance-cache-pruner", run(&cli.config))
}

fn run(args: &ConfigArgs) -> Result<(), ToolError> {
    let tool = args.open_cache("glance-cache-pruner")?;
    let max_size = tool.options.image_cache_max_size;
    let report = tool.cache.prune(max_size)?;
    info!(
        files = report.files,
        bytes = report.bytes,
        remaining = report.remaining,
        max_size,
        "pruned the image cache"
    );
    Ok(())
}
