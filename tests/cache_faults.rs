//! The transparent cache on its bad days: a full cache volume (a real tmpfs), a writer
//! killed with SIGKILL in the middle of a fill, and reads that are no hits.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::db::fresh_catalogue;
use common::process::{Process, free_port};
use common::server::{active_image, call, conf_with_database, data, start_conf};
use md5::{Digest, Md5};
use serde_json::{Value, json};

fn hits(listing: &Value, id: &str) -> Option<u64> {
    listing["cached_images"]
        .as_array()?
        .iter()
        .find(|e| e["image_id"] == json!(id))
        .and_then(|e| e["hits"].as_u64())
}

fn files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_and_heads_are_no_hits() {
    for driver in ["sqlite", "xattr"] {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
        let connection = fresh_catalogue(dir.path()).await;
        let text = conf_with_database(dir.path(), 0, Some(1 << 30), "cachemanagement", &connection)
            .replacen(
                "[DEFAULT]\n",
                &format!("[DEFAULT]\nimage_cache_driver = {driver}\n"),
                1,
            );
        let server = start_conf(dir.clone(), connection, &text).await;
        let addr = server.addr;
        let id = active_image(addr, &data(100_000, 1)).await;
        let file = format!("/v2/images/{id}/file");
        assert_eq!(call(addr, "GET", &file, &[], vec![]).await.status, 200);
        let listing = call(addr, "GET", "/v2/cache", &[], vec![]).await.json();
        assert_eq!(hits(&listing, &id), Some(0), "{driver}: the fill is no hit");
        assert_eq!(call(addr, "GET", &file, &[], vec![]).await.status, 200);
        let ranged = call(addr, "GET", &file, &[("Range", "bytes=0-99")], vec![]).await;
        assert_eq!(ranged.status, 206);
        assert_eq!(call(addr, "HEAD", &file, &[], vec![]).await.status, 200);
        let listing = call(addr, "GET", "/v2/cache", &[], vec![]).await.json();
        assert_eq!(
            hits(&listing, &id),
            Some(1),
            "{driver}: one whole GET, no range, no HEAD"
        );
    }
}

/// A tmpfs of `size` at `path`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_cache_volume_never_breaks_a_download() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
    let cache_dir = dir.path().join("image-cache");
    let _tmpfs = Tmpfs::mount(&cache_dir, "1m");
    let connection = fresh_catalogue(dir.path()).await;
    // The cache may hold 1 GiB, its volume 1 MiB: the fill runs out of space.
    let text = conf_with_database(dir.path(), 0, Some(1 << 30), "cachemanagement", &connection);
    let server = start_conf(dir.clone(), connection, &text).await;
    let addr = server.addr;
    let bytes = data(4 << 20, 2);
    let id = active_image(addr, &bytes).await;
    let log_before = common::server::log();
    for attempt in 0..2 {
        let got = call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]).await;
        assert_eq!(got.status, 200, "attempt {attempt}");
        assert_eq!(
            got.body.len(),
            bytes.len(),
            "attempt {attempt}: the whole body"
        );
        assert_eq!(
            hex::encode(Md5::digest(&got.body)),
            hex::encode(Md5::digest(&bytes)),
            "attempt {attempt}"
        );
    }
    for sub in ["incomplete", "invalid"] {
        assert!(
            files(&cache_dir.join(sub)).is_empty(),
            "{sub}/ holds {:?}",
            files(&cache_dir.join(sub))
        );
    }
    assert!(!cache_dir.join(&id).exists(), "not cached");
    let logged = common::server::log()[log_before.len()..].to_owned();
    assert!(
        logged.contains("the cache write failed") && logged.contains(&id),
        "the failure is logged with its reason: {logged}"
    );
}

/// Sends a GET of `id`'s data and reads `first` bytes, then reads no more.
fn stalled_download(addr: std::net::SocketAddr, id: &str, first: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .expect("request");
    let mut got = vec![0u8; first];
    stream.read_exact(&mut got).expect("first bytes");
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fill_whose_writer_was_killed_is_taken_over_by_the_next_miss() {
    let dir = tempfile::tempdir().expect("tmp");
    let connection = fresh_catalogue(dir.path()).await;
    let port = free_port();
    let text = conf_with_database(
        dir.path(),
        port,
        Some(1 << 30),
        "cachemanagement",
        &connection,
    );
    let mut doomed = Process::start(dir.path(), "doomed", port, &text);
    let bytes = data(64 << 20, 3);
    let id = active_image(doomed.addr, &bytes).await;
    let incomplete = dir.path().join("image-cache/incomplete").join(&id);
    let _stalled = stalled_download(doomed.addr, &id, 1 << 20);
    let started = Instant::now();
    while !incomplete.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "no fill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    doomed.kill();
    assert!(incomplete.exists(), "the dead writer's file stays behind");

    // A restart, and the next miss fills the cache at once (image_cache_stall_time is a
    // day): the dead writer's file no longer blocks the image.
    let survivor = Process::start(dir.path(), "survivor", port, &text);
    let got = call(
        survivor.addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(got.body == bytes);
    let cached = dir.path().join("image-cache").join(&id);
    let started = Instant::now();
    while !cached.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "not cached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read(&cached).expect("cached"), bytes);
    assert!(!incomplete.exists());
    let listing = call(survivor.addr, "GET", "/v2/cache", &[], vec![])
        .await
        .json();
    assert_eq!(hits(&listing, &id), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_store_answers_413_and_the_image_goes_back_to_queued() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
    let store = dir.path().join("images");
    let _tmpfs = Tmpfs::mount(&store, "1m");
    let connection = fresh_catalogue(dir.path()).await;
    let text = conf_with_database(dir.path(), 0, None, "", &connection);
    let server = start_conf(dir.clone(), connection, &text).await;
    let addr = server.addr;
    let image = common::server::create(
        addr,
        json!({"disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let id = image["id"].as_str().expect("id").to_owned();
    let reply = call(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Accept", "application/json"),
        ],
        data(4 << 20, 5),
    )
    .await;
    assert_eq!(
        reply.status,
        413,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        reply.json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Image storage media is full")),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let shown = call(addr, "GET", &format!("/v2/images/{id}"), &[], vec![])
        .await
        .json();
    assert_eq!(shown["status"], "queued");
    assert!(
        files(&store).is_empty(),
        "no partial data: {:?}",
        files(&store)
    );
    // A smaller image fits afterwards.
    assert_eq!(
        common::server::upload(addr, &id, &data(100_000, 6)).await,
        204
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_size_cap_answers_413_announced_or_not() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = fresh_catalogue(dir.path()).await;
    let text = conf_with_database(dir.path(), 0, None, "", &connection).replacen(
        "[DEFAULT]\n",
        "[DEFAULT]\nimage_size_cap = 100000\n",
        1,
    );
    let server = start_conf(dir.clone(), connection, &text).await;
    let addr = server.addr;
    for chunked in [false, true] {
        let image = common::server::create(
            addr,
            json!({"disk_format": "raw", "container_format": "bare"}),
        )
        .await;
        let id = image["id"].as_str().expect("id").to_owned();
        let body = data(300_000, 7);
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = if chunked {
            format!(
                "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
        } else {
            format!(
                "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(head.as_bytes()).await.expect("head");
        for piece in body.chunks(50_000) {
            let sent = if chunked {
                let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                framed.extend_from_slice(piece);
                framed.extend_from_slice(b"\r\n");
                stream.write_all(&framed).await
            } else {
                stream.write_all(piece).await
            };
            if sent.is_err() {
                break;
            }
        }
        if chunked {
            let _ = stream.write_all(b"0\r\n\r\n").await;
        }
        let mut answer = vec![0u8; 12];
        stream.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer[9..12], b"413", "chunked: {chunked}");
        let shown = call(addr, "GET", &format!("/v2/images/{id}"), &[], vec![])
            .await
            .json();
        assert_eq!(shown["status"], "queued", "chunked: {chunked}");
    }
    assert!(files(&dir.path().join("images")).is_empty());
}

/// Bytes of every file under the cache directory: finished, incomplete and invalid.
fn cache_bytes(dir: &Path) -> u64 {
    ["", "incomplete", "invalid"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_fills_never_take_the_cache_over_its_maximum() {
    let max: u64 = 100 << 20;
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = fresh_catalogue(dir.path()).await;
    let text = conf_with_database(dir.path(), 0, Some(max), "cachemanagement", &connection);
    let server = start_conf(dir.clone(), connection, &text).await;
    let addr = server.addr;
    let mut images = Vec::new();
    for n in 0..4 {
        let bytes = data(40 << 20, 20 + n);
        let id = active_image(addr, &bytes).await;
        images.push((id, hex::encode(Md5::digest(&bytes))));
    }
    let cache_dir = dir.path().join("image-cache");
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, cache_dir) = (sampling.clone(), cache_dir.clone());
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                peak = peak.max(cache_bytes(&cache_dir));
                std::thread::sleep(Duration::from_millis(2));
            }
            peak
        })
    };
    let downloads: Vec<_> = images
        .iter()
        .map(|(id, _)| {
            tokio::spawn(call(
                addr,
                "GET",
                &format!("/v2/images/{id}/file"),
                &[],
                vec![],
            ))
        })
        .collect();
    for (download, (_, md5)) in downloads.into_iter().zip(&images) {
        let got = download.await.expect("download");
        assert_eq!(got.status, 200);
        assert_eq!(
            hex::encode(Md5::digest(&got.body)),
            *md5,
            "every client gets its image"
        );
    }
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let peak = sampler.join().expect("sampler");
    println!(
        "4 concurrent fills of 40 MiB into a 100 MiB cache: peak {} MiB",
        peak >> 20
    );
    assert!(
        peak <= max,
        "the cache went to {peak} bytes, over its {max}"
    );
    assert!(cache_bytes(&cache_dir) <= max);
    let cached = images
        .iter()
        .filter(|(id, _)| cache_dir.join(id).exists())
        .count();
    assert!(cached >= 1, "the images that fit are cached");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_being_read_is_not_evicted_to_make_room() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = fresh_catalogue(dir.path()).await;
    let text = conf_with_database(
        dir.path(),
        0,
        Some(100 << 20),
        "cachemanagement",
        &connection,
    );
    let server = start_conf(dir.clone(), connection, &text).await;
    let addr = server.addr;
    let cache_dir = dir.path().join("image-cache");
    let first = data(60 << 20, 31);
    let second = data(60 << 20, 32);
    let a = active_image(addr, &first).await;
    let b = active_image(addr, &second).await;
    assert!(
        call(addr, "GET", &format!("/v2/images/{a}/file"), &[], vec![])
            .await
            .body
            == first
    );
    assert!(cache_dir.join(&a).exists());

    // A client reads A slowly: A may not go to make room for B, which is served uncached.
    let mut slow = TcpStream::connect(addr).expect("connect");
    write!(slow, "GET /v2/images/{a}/file HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut some = vec![0u8; 1 << 16];
    slow.read_exact(&mut some).expect("first bytes");
    let got = call(addr, "GET", &format!("/v2/images/{b}/file"), &[], vec![]).await;
    assert!(got.status == 200 && got.body == second, "B is served whole");
    assert!(cache_dir.join(&a).exists(), "A, being read, stays");
    assert!(
        !cache_dir.join(&b).exists(),
        "B, with no room, is not cached"
    );

    // Once no one reads A, it makes room for B.
    drop(slow);
    let started = std::time::Instant::now();
    loop {
        let got = call(addr, "GET", &format!("/v2/images/{b}/file"), &[], vec![]).await;
        assert!(got.body == second);
        if cache_dir.join(&b).exists() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "B never cached"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!cache_dir.join(&a).exists(), "A was evicted for B");
}
