//! glance-cache-pruner, -cleaner and -prefetcher, the real binaries, on real directories.

use std::collections::HashMap;
use std::fs::{self, File, FileTimes};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
mod common;

use common::cache::{cached_ids, id, md5_hex, put};
use glance_operator::cache::{Cache, DriverKind, ImageId};
use rusqlite::{Connection, params};
use serde_json::json;

/// A config dir for `cache_dir`, with `extra` lines in [DEFAULT].
fn config_dir(root: &Path, cache_dir: &Path, extra: &str) -> std::path::PathBuf {
    let conf = root.join("glance.conf.d");
    fs::create_dir_all(&conf).expect("mkdir");
    fs::write(
        conf.join("00-config.conf"),
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\n{extra}",
            cache_dir.display()
        ),
    )
    .expect("write");
    conf
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env_remove("OS_DEFAULT__WORKER_SELF_REFERENCE_URL")
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_pruner_keeps_the_most_recently_used_within_the_limit() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache_dir = tmp.path().join("cache");
    let cache = Cache::open(&cache_dir, DriverKind::Sqlite, "cache.db").expect("cache");
    let db = Connection::open(cache_dir.join("cache.db")).expect("db");
    for n in 0..5 {
        put(&cache, &id(n), &[n as u8; 100]);
        db.execute(
            "UPDATE cached_images SET last_accessed = ?1 WHERE image_id = ?2",
            params![f64::from(n), id(n).as_str()],
        )
        .expect("update");
    }
    let conf = config_dir(tmp.path(), &cache_dir, "image_cache_max_size = 250\n");
    let (ok, log) = run(
        env!("CARGO_BIN_EXE_glance-cache-pruner"),
        &["--config-dir", conf.to_str().expect("utf-8")],
    );
    assert!(ok, "{log}");
    assert!(
        log.contains("pruned the image cache")
            && log.contains("files=3")
            && log.contains("bytes=300"),
        "{log}"
    );
    let left = cached_ids(&cache);
    assert_eq!(left, vec![id(3), id(4)]);
}

#[test]
fn the_cleaner_removes_invalid_and_stalled_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache_dir = tmp.path().join("cache");
    Cache::open(&cache_dir, DriverKind::Sqlite, "cache.db").expect("cache");
    fs::write(cache_dir.join("invalid").join(id(1).as_str()), [0; 10]).expect("invalid");
    let stalled = cache_dir.join("incomplete").join(id(2).as_str());
    fs::write(&stalled, [0; 20]).expect("stalled");
    File::options()
        .write(true)
        .open(&stalled)
        .expect("open")
        .set_times(FileTimes::new().set_modified(SystemTime::now() - Duration::from_secs(600)))
        .expect("age");
    let fresh = cache_dir.join("incomplete").join(id(3).as_str());
    fs::write(&fresh, [0; 30]).expect("fresh");
    let conf = tmp.path().join("glance-api.conf");
    fs::write(
        &conf,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\nimage_cache_stall_time = 300\n",
            cache_dir.display()
        ),
    )
    .expect("conf");
    let (ok, log) = run(
        env!("CARGO_BIN_EXE_glance-cache-cleaner"),
        &["--config-file", conf.to_str().expect("utf-8")],
    );
    assert!(ok, "{log}");
    assert!(
        log.contains("invalid=1") && log.contains("stalled=1") && log.contains("bytes=30"),
        "{log}"
    );
    assert!(!stalled.exists() && fresh.exists());
}

#[test]
fn configuration_errors_are_clear_and_fail() {
    let tmp = tempfile::tempdir().expect("tmp");
    let conf = tmp.path().join("a.conf");
    let path = conf.to_str().expect("utf-8");
    for (text, expected) in [
        (
            "[DEFAULT]\nbind_port = 9292\n",
            "image_cache_dir is not set in [DEFAULT]".to_owned(),
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/x\nnovalue\n",
            format!("{path}:3:"),
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/x\nimage_cache_max_size = 10G\n",
            "image_cache_max_size = \"10G\"".to_owned(),
        ),
        (
            "[DEFAULT]\nimage_cache_dir = /tmp/x\nimage_cache_driver = centralised_db\n",
            "expected sqlite, xattr or centralized_db".to_owned(),
        ),
        (
            // upstream's sqlite_migration.can_migrate_to_central_db refuses this too.
            "[DEFAULT]\nimage_cache_dir = /tmp/x\nimage_cache_driver = centralized_db\n",
            "[DEFAULT] worker_self_reference_url is not set".to_owned(),
        ),
    ] {
        fs::write(&conf, text).expect("write");
        for program in [
            env!("CARGO_BIN_EXE_glance-cache-pruner"),
            env!("CARGO_BIN_EXE_glance-cache-cleaner"),
            env!("CARGO_BIN_EXE_glance-cache-prefetcher"),
        ] {
            let (ok, log) = run(program, &["--config-file", path]);
            assert!(!ok, "{program} accepted {text:?}");
            assert!(log.contains(&expected), "{program}: {log}");
        }
    }
    let (ok, log) = run(
        env!("CARGO_BIN_EXE_glance-cache-pruner"),
        &["--config-dir", "/nonexistent/glance.conf.d"],
    );
    assert!(!ok && log.contains("/nonexistent/glance.conf.d"), "{log}");
}

/// Image ID -> (status, data, checksum).
type Catalog = HashMap<ImageId, (&'static str, Vec<u8>, String)>;

#[derive(Clone)]
struct Images {
    images: Arc<Catalog>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

struct InFlight(Arc<AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn image(State(s): State<Images>, UrlPath(raw): UrlPath<String>) -> Response {
    match ImageId::parse(&raw)
        .ok()
        .and_then(|i| s.images.get(&i).cloned())
    {
        Some((status, data, checksum)) => {
            axum::Json(json!({"status": status, "checksum": checksum, "size": data.len()}))
                .into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn file(State(s): State<Images>, UrlPath(raw): UrlPath<String>) -> Response {
    let Some((_, data, _)) = ImageId::parse(&raw)
        .ok()
        .and_then(|i| s.images.get(&i).cloned())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.peak.fetch_max(now, Ordering::SeqCst);
    let guard = InFlight(s.in_flight.clone());
    // Slow chunks, so that downloads overlap when the prefetcher runs them concurrently.
    let chunks: Vec<Vec<u8>> = data.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let stream = futures::stream::unfold(
        (chunks.into_iter(), guard),
        |(mut rest, guard)| async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            rest.next()
                .map(|c| (Ok::<_, std::io::Error>(c), (rest, guard)))
        },
    );
    Body::from_stream(stream).into_response()
}

async fn image_server(
    images: HashMap<ImageId, (&'static str, Vec<u8>, String)>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let state = Images {
        images: Arc::new(images),
        in_flight: Arc::default(),
        peak: Arc::default(),
    };
    let peak = state.peak.clone();
    let app = Router::new()
        .route("/v2/images/{id}", get(image))
        .route("/v2/images/{id}/file", get(file))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, peak)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prefetcher_fetches_the_queue_concurrently_within_its_bound() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache_dir = tmp.path().join("cache");
    let cache = Cache::open(&cache_dir, DriverKind::Sqlite, "cache.db").expect("cache");
    let mut images = HashMap::new();
    for n in 1..=5 {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * n) as u8).collect();
        let sum = md5_hex(&data);
        images.insert(id(n), ("active", data, sum));
    }
    images.insert(
        id(6),
        ("active", b"tampered".to_vec(), md5_hex(b"original")),
    );
    images.insert(id(7), ("queued", vec![], String::new()));
    for n in 1..=8 {
        assert!(cache.queue(&id(n)).expect("queue"));
    }
    let (addr, peak) = image_server(images.clone()).await;
    let conf = config_dir(tmp.path(), &cache_dir, "");
    let args = [
        "--config-dir".to_owned(),
        conf.display().to_string(),
        "--api-url".to_owned(),
        format!("http://{addr}"),
        "--workers".to_owned(),
        "2".to_owned(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_glance-cache-prefetcher"))
            .args(&args)
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "one image failed its checksum, so the run fails: {log}"
    );
    assert!(
        log.contains("fetched=5")
            && log.contains("failed=1")
            && log.contains("deferred=1")
            && log.contains("skipped=1"),
        "{log}"
    );
    for n in 1..=5 {
        let (mut file, size) = cache
            .open_for_read(&id(n))
            .expect("read")
            .expect("prefetched");
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut data).expect("read");
        assert_eq!((size, &data), (300_000, &images[&id(n)].1), "image {n}");
    }
    assert_eq!(
        cache.queued().expect("queue").len(),
        2,
        "the failed and the inactive image stay queued"
    );
    assert!(
        cache.is_queued(&id(6)) && cache.is_queued(&id(7)) && !cache.is_queued(&id(8)),
        "a deleted image leaves the queue"
    );
    assert!(
        cache_dir.join("invalid").join(id(6).as_str()).exists(),
        "the bad download went to invalid/"
    );
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "downloads ran two at a time, never more"
    );
}
