//! glance-cache-prefetcher: fetches the images queued for prefetching into the cache.

use std::process::ExitCode;

use clap::Parser;
use glance_operator::tools::client::ApiClient;
use glance_operator::tools::prefetch::prefetch;
use glance_operator::tools::{ConfigArgs, ToolError, exit};
use tracing::info;

/// Command line of glance-cache-prefetcher.
#[derive(Debug, Parser)]
#[command(
    name = "glance-cache-prefetcher",
    version,
    about = "Fetch queued images into the image cache"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    /// glance-api to fetch from (default: http://127.0.0.1:<bind_port from the config>).
    #[arg(long, env = "GLANCE_API_URL")]
    api_url: Option<String>,
    /// Images fetched at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Token sent as X-Auth-Token.
    #[arg(long = "os-auth-token", env = "OS_AUTH_TOKEN")]
    token: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    exit("glance-cache-prefetcher", run(&cli))
}

fn run(cli: &Cli) -> Result<(), ToolError> {
    let tool = cli.config.open_cache("glance-cache-prefetcher")?;
    let url = match &cli.api_url {
        Some(url) => url.clone(),
        None => format!(
            "http://127.0.0.1:{}",
            tool.config.get_u64("DEFAULT", "bind_port", 9292)?
        ),
    };
    let client = ApiClient::new(&url, cli.token.clone());
    let report = prefetch(
        &tool.cache,
        &client,
        usize::from(cli.workers),
        tool.options.image_cache_max_size,
    )?;
    info!(
        fetched = report.fetched,
        skipped = report.skipped,
        deferred = report.deferred,
        failed = report.failed,
        "prefetch finished"
    );
    if report.failed > 0 {
        return Err(ToolError::Prefetch(report.failed));
    }
    Ok(())
}
