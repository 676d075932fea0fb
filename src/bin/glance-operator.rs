//! The Glance operator: reconciles Glance custom resources into glance-api Deployments,
//! their configuration, volumes and image cache CronJobs.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use glance_operator::operator::run::{Settings, run};
use tracing::error;
use tracing_subscriber::EnvFilter;

/// Command line and environment of the operator.
#[derive(Debug, Parser)]
#[command(name = "glance-operator", version, about)]
struct Args {
    /// Image of glance-api and the cache CronJobs when a Glance does not name one.
    #[arg(
        long,
        env = "RELATED_IMAGE_GLANCE_API",
        default_value = "glance-operator:latest"
    )]
    default_image: String,
    /// Namespace of the leader-election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "glance-operator-system")]
    lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "glance-operator-leader")]
    lease_name: String,
    /// Identity of this replica in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "glance-operator")]
    identity: String,
    /// Address of the /metrics and /healthz endpoints.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stdout().is_terminal())
            .init();
    }
    let settings = Settings {
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity: args.identity,
        default_image: args.default_image,
        metrics_addr: args.metrics_addr,
        watch_namespace: args.watch_namespace.filter(|ns| !ns.is_empty()),
    };
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "glance-operator stopped");
            ExitCode::FAILURE
        }
    }
}
