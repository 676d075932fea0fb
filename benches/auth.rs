//! Keystone authentication benchmark: what validating tokens costs glance-api. Prints
//! figures, asserts nothing about time; exits with status 1 when something does not
//! work (a server that does not start, or an answer with the wrong status).
//!
//! Two glance-apis run in this process on one SQLite catalogue and one store: one with
//! `flavor = keystone+cachemanagement` in front of a mock Keystone on a loopback port
//! (tests/common/keystone.rs), one with `flavor = cachemanagement`. Both hold the same
//! BENCH_IMAGES (default 200) images of one project.
//!
//! 1. show (`GET /v2/images/{id}`) and list (`GET /v2/images?limit=25`), BENCH_REQUESTS
//!    (default 3000) of each per server on one keep-alive connection per server, the
//!    servers taking turns in rounds of 100 so that machine noise hits both. The token is
//!    validated by Keystone once and then comes from the cache, as in a steady cloud.
//!    Prints requests per second for each and the ratio authenticated / unauthenticated
//!    (the target is at least 0.9).
//! 2. BENCH_BOGUS (default 100000) requests with distinct bogus tokens: each is asked of
//!    the mock Keystone, answered 401, and remembered briefly. Prints this process's
//!    resident memory before and after, its peak, and the cache's entries (capped).
//!
//! Run: `cargo bench --bench auth`.

#[path = "../tests/common/keystone.rs"]
#[allow(dead_code)]
mod keystone;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glance_operator::api::server::{build_state, serve_on};
use glance_operator::api::settings::ApiSettings;
use glance_operator::api::state::AppState;
use glance_operator::conf::Config;
use serde_json::{Value, json};
use ureq::Agent;

type Result<T, E = String> = std::result::Result<T, E>;

const TOKEN: &str = "bench-member-token";
const PROJECT: &str = "bench-project";
const ROUND: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One glance-api.conf for both servers; `keystone` adds the flavor and section.
fn conf(dir: &std::path::Path, keystone: Option<&str>) -> String {
    let d = dir.display();
    let mut text = format!(
        "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = 0\nenabled_backends = default_backend:file\n\
         image_cache_dir = {d}/image-cache\nimage_cache_max_size = 1073741824\n\
         [glance_store]\ndefault_backend = default_backend\n\
         [default_backend]\nfilesystem_store_datadir = {d}/images\n\
         [database]\nconnection = sqlite:///{d}/glance.sqlite\n"
    );
    match keystone {
        Some(url) => text.push_str(&format!(
            "[paste_deploy]\nflavor = keystone+cachemanagement\n\
             [keystone_authtoken]\nauth_type = password\nauth_url = {url}/v3\n\
             www_authenticate_uri = {url}/v3\nusername = glance\npassword = {}\n\
             user_domain_name = Default\nproject_name = service\nproject_domain_name = Default\n",
            keystone::PASSWORD
        )),
        None => text.push_str("[paste_deploy]\nflavor = cachemanagement\n"),
    }
    text
}

/// Starts a glance-api on a free loopback port; returns its base URL and state.
async fn start(text: &str) -> Result<(String, Arc<AppState>)> {
    let config = Config::from_str("bench.conf", text).map_err(|e| e.to_string())?;
    let settings = ApiSettings::from_config(&config).map_err(|e| e.to_string())?;
    let state = build_state(settings).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let served = state.clone();
    tokio::spawn(async move { serve_on(listener, served, std::future::pending()).await });
    Ok((format!("http://{addr}"), state))
}

/// A GET with an optional token; the status and the body.
fn get(agent: &Agent, url: &str, token: Option<&str>) -> Result<(u16, String)> {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    let mut response = request.call().map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("GET {url}: {e}"))?;
    Ok((status, body))
}

fn expect(agent: &Agent, url: &str, token: Option<&str>, status: u16) -> Result<String> {
    let (got, body) = get(agent, url, token)?;
    if got == status {
        Ok(body)
    } else {
        Err(format!("GET {url}: {got} instead of {status}: {body}"))
    }
}

fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Creates `n` images owned by the bench's project through the authenticated server.
fn create_images(agent: &Agent, base: &str, n: usize) -> Result<Vec<String>> {
    (0..n)
        .map(|i| {
            let body = json!({"name": format!("bench-{i:05}"), "disk_format": "raw", "container_format": "bare", "visibility": "private"});
            let mut response = agent
                .post(&format!("{base}/v2/images"))
                .header("X-Auth-Token", TOKEN)
                .header("Content-Type", "application/json")
                .send(body.to_string())
                .map_err(|e| e.to_string())?;
            let text = response
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())?;
            let image: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
            image["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no id in {text}"))
        })
        .collect()
}

/// Requests per second of `paths` against each server, interleaved by rounds.
fn throughput(
    servers: &[(String, Option<&str>)],
    paths: &[String],
    requests: usize,
) -> Result<Vec<f64>> {
    let agents: Vec<Agent> = servers.iter().map(|_| agent()).collect();
    let mut spent = vec![Duration::ZERO; servers.len()];
    let mut done = 0;
    while done < requests {
        let round = ROUND.min(requests - done);
        for (i, (base, token)) in servers.iter().enumerate() {
            let start = Instant::now();
            for n in done..done + round {
                let path = &paths[n % paths.len()];
                expect(&agents[i], &format!("{base}{path}"), *token, 200)?;
            }
            spent[i] += start.elapsed();
        }
        done += round;
    }
    Ok(spent
        .iter()
        .map(|d| requests as f64 / d.as_secs_f64())
        .collect())
}

/// This process's resident and peak resident memory, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn run() -> Result<()> {
    let images = env_usize("BENCH_IMAGES", 200);
    let requests = env_usize("BENCH_REQUESTS", 3000);
    let bogus = env_usize("BENCH_BOGUS", 100_000);
    let mock = keystone::Mock::start().await;
    mock.add_user_in(
        TOKEN,
        "bench-user",
        PROJECT,
        vec!["member", "reader"],
        Duration::from_secs(24 * 3600),
    );
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (authenticated, auth_state) = start(&conf(dir.path(), Some(&mock.url()))).await?;
    let (open, _) = start(&conf(dir.path(), None)).await?;

    let servers = [(authenticated.clone(), Some(TOKEN)), (open, None)];
    let figures = tokio::task::spawn_blocking(move || -> Result<_> {
        let agent = agent();
        let ids = create_images(&agent, &servers[0].0, images)?;
        let shows: Vec<String> = ids.iter().map(|id| format!("/v2/images/{id}")).collect();
        let lists = vec!["/v2/images?limit=25".to_owned()];
        // Warm both (and validate the token once).
        throughput(&servers, &shows, ROUND)?;
        throughput(&servers, &lists, ROUND)?;
        let show = throughput(&servers, &shows, requests)?;
        let list = throughput(&servers, &lists, requests)?;
        Ok((show, list))
    })
    .await
    .map_err(|e| e.to_string())??;
    let (show, list) = figures;
    println!("images: {images}, requests per kind and server: {requests}");
    println!(
        "show: authenticated {:.0}/s, unauthenticated {:.0}/s, ratio {:.2} (target >= 0.90)",
        show[0],
        show[1],
        show[0] / show[1]
    );
    println!(
        "list: authenticated {:.0}/s, unauthenticated {:.0}/s, ratio {:.2} (target >= 0.90)",
        list[0],
        list[1],
        list[0] / list[1]
    );
    let validations_before = mock.counts().1;

    let (rss_before, _) = memory();
    let base = authenticated.clone();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let agent = agent();
        let url = format!("{base}/v2/images?limit=1");
        for i in 0..bogus {
            expect(&agent, &url, Some(&format!("bogus-{i:08}")), 401)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())??;
    let (rss_after, peak) = memory();
    let auth = auth_state
        .auth
        .as_ref()
        .ok_or("the authenticated server has no Keystone")?;
    println!(
        "bogus tokens: {bogus} in {:.1} s, Keystone asked {} times; cached validations {}; RSS {rss_before:.1} MiB before, {rss_after:.1} MiB after, peak {peak:.1} MiB",
        started.elapsed().as_secs_f64(),
        mock.counts().1 - validations_before,
        auth.cache_len(),
    );
    Ok(())
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("auth bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auth bench: {e}");
            ExitCode::FAILURE
        }
    }
}
