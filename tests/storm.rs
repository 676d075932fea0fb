//! A miss storm: many clients at once ask a real glance-api process for an image that
//! is not cached. The store is read once, every client gets the whole, correct body as
//! it arrives, a client that goes away harms no other, a failed read fails every client,
//! and memory does not grow with the number of clients.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::db::fresh_catalogue;
use common::process::{Process, free_port, rss_split};
use common::server::{active_image, conf_with_database, data};
use md5::{Digest, Md5};

/// glance-api with the cache on, logging its store opens.
async fn storm_server(dir: &Path) -> Process {
    let connection = fresh_catalogue(dir).await;
    let port = free_port();
    let text = conf_with_database(dir, port, Some(1 << 32), "cachemanagement", &connection);
    Process::start_logging(
        dir,
        "storm",
        port,
        &text,
        "info,glance_operator::store=debug",
    )
}

fn store_opens(server: &Process) -> usize {
    server.log_text().matches("opening image data").count()
}

/// A whole GET of `id`: (status, body). A connection cut before the promised end gives
/// what arrived and status 0.
fn get(addr: SocketAddr, id: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    write!(
        stream,
        "GET /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let body = raw[end + 4..].to_vec();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let status = head[9..12].parse().unwrap_or(0);
    if body.len() < length {
        return (0, body);
    }
    (status, body)
}

/// Ten whole GETs of `id` at once: (status, body) of each, as [`get`] gives them.
fn ten_gets(addr: SocketAddr, id: &str) -> Vec<(u16, Vec<u8>)> {
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let id = id.to_owned();
            std::thread::spawn(move || get(addr, &id))
        })
        .collect();
    clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect()
}

fn md5(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_miss_storm_reads_the_store_once_and_serves_every_client() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = storm_server(dir.path()).await;
    let bytes = data(64 << 20, 11);
    let want = md5(&bytes);
    let id = active_image(server.addr, &bytes).await;
    let opens_before = store_opens(&server);
    // Memory besides the executable's own pages (code, which an unoptimised build has
    // much of), sampled through the storm.
    let exe = env!("CARGO_BIN_EXE_glance-api").to_owned();
    let pid = server.pid();
    let idle = rss_split(pid, &exe).1;
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, exe) = (sampling.clone(), exe.clone());
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(rss_split(pid, &exe).1);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let addr = server.addr;
    let clients: Vec<_> = (0..100)
        .map(|n| {
            let id = id.clone();
            std::thread::spawn(move || {
                if n == 0 {
                    // The first client goes away after a little: no other suffers.
                    let mut stream = TcpStream::connect(addr).expect("connect");
                    write!(
                        stream,
                        "GET /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\n\r\n"
                    )
                    .expect("request");
                    let mut some = vec![0u8; 1 << 16];
                    let _ = stream.read_exact(&mut some);
                    return None;
                }
                Some(get(addr, &id))
            })
        })
        .collect();
    let mut complete = 0;
    for client in clients {
        if let Some((status, body)) = client.join().expect("client") {
            assert_eq!(status, 200);
            assert_eq!(body.len(), bytes.len());
            assert_eq!(md5(&body), want);
            complete += 1;
        }
    }
    assert_eq!(complete, 99);
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().expect("sampler");
    let opens = store_opens(&server) - opens_before;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "100 cold GETs of 64 MiB: {opens} store open(s); memory besides the executable: idle {:.1} MiB, peak {:.1} MiB",
        mib(idle),
        mib(peak)
    );
    assert_eq!(opens, 1, "one backend read for the whole storm");
    assert!(
        peak.saturating_sub(idle) <= 64 << 20,
        "memory does not grow with the clients: idle {:.1} MiB, peak {:.1} MiB",
        mib(idle),
        mib(peak)
    );
    // Cached now: a late GET is a hit, with no store read.
    let (status, body) = get(addr, &id);
    assert_eq!((status, md5(&body)), (200, want));
    assert_eq!(store_opens(&server) - opens_before, 1);
    assert!(dir.path().join("image-cache").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_that_fails_fails_every_client_and_caches_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = storm_server(dir.path()).await;
    let bytes = data(16 << 20, 12);
    let id = active_image(server.addr, &bytes).await;
    // The store's file loses its second half behind glance-api's back.
    let stored = dir.path().join("images").join(&id);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&stored)
        .and_then(|f| f.set_len(8 << 20))
        .expect("truncate");
    for (status, body) in ten_gets(server.addr, &id) {
        assert!(
            status == 0 || status >= 500,
            "no client gets a success with a short body: {status}, {} bytes",
            body.len()
        );
        assert!(body.len() < bytes.len());
    }
    assert!(!dir.path().join("image-cache").join(&id).exists());
    let incomplete = dir.path().join("image-cache/incomplete").join(&id);
    assert!(!incomplete.exists(), "the failed fill left incomplete/");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_whose_data_does_not_match_its_checksum_fails_every_client() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = storm_server(dir.path()).await;
    let bytes = data(8 << 20, 13);
    let id = active_image(server.addr, &bytes).await;
    // One byte of the stored data changes behind glance-api's back: same length.
    let stored = dir.path().join("images").join(&id);
    let mut changed = bytes.clone();
    changed[4 << 20] ^= 0xff;
    std::fs::write(&stored, &changed).expect("change");
    for (status, body) in ten_gets(server.addr, &id) {
        assert!(
            status == 0 || status >= 500,
            "no client gets the corrupt image whole: {status}, {} bytes",
            body.len()
        );
        assert!(body.len() < bytes.len(), "the last bytes are held back");
    }
    assert!(!dir.path().join("image-cache").join(&id).exists());
}
