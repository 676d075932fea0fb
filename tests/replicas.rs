//! Several glance-api replicas on one catalogue, each a real process: concurrent edits
//! of one image, a replica killed in the middle of an upload, an image deleted while
//! other replicas hold it in their caches, and the catalogue's server going away. The
//! catalogue is SQLite, or MariaDB or PostgreSQL with GLANCE_TEST_DATABASE (see
//! tests/common/db.rs).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::db::{backend, fresh_catalogue};
use common::process::{Process, free_port};
use common::server::{active_image, call, conf_with_database, create, data, start_on, upload};
use glance_operator::db::Backend;
use serde_json::{Value, json};

const PATCH: (&str, &str) = (
    "Content-Type",
    "application/openstack-images-v2.1-json-patch",
);

/// A replica's config: the shared store and catalogue, no authentication, `extra` in
/// `[DEFAULT]`.
fn replica_conf(
    dir: &Path,
    port: u16,
    connection: &str,
    cache: Option<&str>,
    extra: &str,
) -> String {
    let mut text = conf_with_database(
        dir,
        port,
        cache.map(|_| 1 << 30),
        "cachemanagement",
        connection,
    );
    if let Some(name) = cache {
        text = text.replace(
            &format!("image_cache_dir = {}/image-cache\n", dir.display()),
            &format!("image_cache_dir = {}/cache-{name}\n", dir.display()),
        );
    }
    text.replacen("[DEFAULT]\n", &format!("[DEFAULT]\n{extra}"), 1)
}

/// Starts replica `name` of the catalogue `connection` in `dir`.
fn replica(dir: &Path, name: &str, connection: &str, cache: Option<&str>, extra: &str) -> Process {
    let port = free_port();
    Process::start(
        dir,
        name,
        port,
        &replica_conf(dir, port, connection, cache, extra),
    )
}

async fn show(addr: SocketAddr, id: &str) -> Value {
    let reply = call(addr, "GET", &format!("/v2/images/{id}"), &[], vec![]).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_and_tag_puts_through_two_processes_all_take_effect() {
    let dir = tempfile::tempdir().expect("tmp");
    let connection = fresh_catalogue(dir.path()).await;
    let quotas = "image_property_quota = 1000\nimage_tag_quota = 1000\n";
    let a = replica(dir.path(), "a", &connection, None, quotas);
    let b = replica(dir.path(), "b", &connection, None, quotas);
    let image = create(a.addr, json!({"name": "busy", "keep": "me"})).await;
    let id = image["id"].as_str().expect("id").to_owned();

    let started = Instant::now();
    let mut requests = Vec::new();
    for i in 0..200 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        let body = json!([{"op": "add", "path": format!("/p{i}"), "value": format!("v{i}")}]);
        requests.push(tokio::spawn(call(
            addr,
            "PATCH",
            &format!("/v2/images/{id}"),
            &[PATCH],
            body.to_string().into_bytes(),
        )));
        let addr = if i % 2 == 0 { b.addr } else { a.addr };
        requests.push(tokio::spawn(call(
            addr,
            "PUT",
            &format!("/v2/images/{id}/tags/t{i}"),
            &[],
            vec![],
        )));
    }
    for request in requests {
        let reply = request.await.expect("join");
        assert!(
            reply.status == 200 || reply.status == 204,
            "{}: {}\nreplica a's warnings:\n{}\nreplica b's warnings:\n{}",
            reply.status,
            String::from_utf8_lossy(&reply.body),
            a.warnings(),
            b.warnings()
        );
    }
    println!(
        "200 PATCHes and 200 tag PUTs over two processes: {:?}",
        started.elapsed()
    );
    for addr in [a.addr, b.addr] {
        let shown = show(addr, &id).await;
        for i in 0..200 {
            assert_eq!(shown[format!("p{i}")], json!(format!("v{i}")), "p{i} lost");
        }
        assert_eq!(shown["keep"], "me");
        let tags: BTreeSet<String> = shown["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| t.as_str().expect("tag").to_owned())
            .collect();
        let expected: BTreeSet<String> = (0..200).map(|i| format!("t{i}")).collect();
        assert_eq!(tags, expected, "every tag kept");
    }

    // Removals race with additions as well: half the properties go, from both sides,
    // while other PATCHes replace the name.
    let mut requests = Vec::new();
    for i in 0..100 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        let body = json!([{"op": "remove", "path": format!("/p{i}")}]);
        requests.push(tokio::spawn(call(
            addr,
            "PATCH",
            &format!("/v2/images/{id}"),
            &[PATCH],
            body.to_string().into_bytes(),
        )));
        requests.push(tokio::spawn(call(
            if i % 2 == 0 { b.addr } else { a.addr },
            "DELETE",
            &format!("/v2/images/{id}/tags/t{i}"),
            &[],
            vec![],
        )));
    }
    for request in requests {
        let reply = request.await.expect("join");
        assert!(
            reply.status == 200 || reply.status == 204,
            "{}: {}\nreplica a's warnings:\n{}\nreplica b's warnings:\n{}",
            reply.status,
            String::from_utf8_lossy(&reply.body),
            a.warnings(),
            b.warnings()
        );
    }
    let shown = show(a.addr, &id).await;
    for i in 0..200 {
        let expected = if i < 100 {
            Value::Null
        } else {
            json!(format!("v{i}"))
        };
        assert_eq!(shown[format!("p{i}")], expected, "p{i}");
    }
    assert_eq!(shown["tags"].as_array().expect("tags").len(), 100);
}

/// Sends the head of an upload of `total` bytes of image `id`, and `first` bytes of it.
fn begin_upload(addr: SocketAddr, id: &str, total: usize, first: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    )
    .expect("head");
    stream.write_all(first).expect("first bytes");
    stream
}

/// The status code of the answer on `stream`.
fn answer(stream: &mut TcpStream) -> u16 {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("answer");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("status")
}

async fn wait_for_status(addr: SocketAddr, id: &str, status: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if show(addr, id).await["status"] == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "image {id} not {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_uploader_leaves_nothing_stuck_and_a_live_slow_upload_is_kept() {
    let dir = tempfile::tempdir().expect("tmp");
    let connection = fresh_catalogue(dir.path()).await;
    let live = replica(dir.path(), "live", &connection, None, "");
    let survivor = replica(dir.path(), "survivor", &connection, None, "");
    let mut doomed = replica(dir.path(), "doomed", &connection, None, "");
    let raw = json!({"disk_format": "raw", "container_format": "bare"});
    let slow = create(live.addr, raw.clone()).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let cut = create(survivor.addr, raw).await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // A live upload that lasts longer than a lease: 45 s, a little every second.
    let slow_data = data(45 * 4096 + 10, 7);
    let (slow_addr, slow_id, sent) = (live.addr, slow.clone(), slow_data.clone());
    let slow_upload = std::thread::spawn(move || {
        let mut stream = begin_upload(slow_addr, &slow_id, sent.len(), &sent[..10]);
        for piece in sent[10..].chunks(4096) {
            std::thread::sleep(Duration::from_secs(1));
            stream.write_all(piece).expect("more data");
        }
        answer(&mut stream)
    });

    // An upload whose replica dies in the middle.
    let cut_data = data(4 << 20, 9);
    let _held = begin_upload(doomed.addr, &cut, cut_data.len(), &cut_data[..1 << 20]);
    wait_for_status(survivor.addr, &cut, "saving", Duration::from_secs(10)).await;
    let partial = dir.path().join("images").join(format!(".{cut}.upload"));
    let started = Instant::now();
    while !partial.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no partial file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    doomed.kill();
    let killed = Instant::now();
    // Meanwhile a re-upload is refused: the image is still saving.
    assert_eq!(upload(survivor.addr, &cut, b"too early").await, 409);
    wait_for_status(survivor.addr, &cut, "queued", Duration::from_secs(60)).await;
    let took = killed.elapsed();
    println!("image back to queued {took:?} after its uploader was killed");
    assert!(took <= Duration::from_secs(60), "{took:?}");
    assert!(!partial.exists(), "the partial upload is removed");
    assert!(
        show(survivor.addr, &cut)
            .await
            .get("os_glance_upload_lease")
            .is_none(),
        "the lease is not shown"
    );
    assert_eq!(upload(survivor.addr, &cut, &cut_data).await, 204);
    assert_eq!(show(live.addr, &cut).await["status"], "active");

    // The slow upload kept its lease all along.
    assert_eq!(slow_upload.join().expect("slow upload"), 204);
    let shown = show(survivor.addr, &slow).await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["size"], json!(slow_data.len()));
    let stored = std::fs::read(dir.path().join("images").join(&slow)).expect("stored");
    assert_eq!(stored, slow_data);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_images_partial_upload_goes_with_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let connection = fresh_catalogue(dir.path()).await;
    let survivor = replica(dir.path(), "survivor", &connection, None, "");
    let mut doomed = replica(dir.path(), "doomed", &connection, None, "");
    let id = create(
        survivor.addr,
        json!({"disk_format": "raw", "container_format": "bare"}),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let _held = begin_upload(doomed.addr, &id, 2 << 20, &data(1 << 20, 3));
    let partial = dir.path().join("images").join(format!(".{id}.upload"));
    let started = Instant::now();
    while !partial.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no partial file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    doomed.kill();
    let deleted = call(
        survivor.addr,
        "DELETE",
        &format!("/v2/images/{id}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(deleted.status, 204);
    assert!(!partial.exists(), "the partial upload went with the image");
}

fn central(name: &str, port: u16) -> String {
    format!(
        "image_cache_driver = centralized_db\nworker_self_reference_url = http://127.0.0.1:{port}/{name}\n"
    )
}

fn central_replica(dir: &Path, name: &str, connection: &str) -> Process {
    let port = free_port();
    let text = replica_conf(dir, port, connection, Some(name), &central(name, port));
    Process::start(dir, name, port, &text)
}

async fn download(addr: SocketAddr, id: &str) {
    let reply = call(addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]).await;
    assert_eq!(reply.status, 200);
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

fn cached_ids(listing: &Value) -> Vec<String> {
    listing["cached_images"]
        .as_array()
        .expect("cached_images")
        .iter()
        .map(|e| e["image_id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_image_leaves_the_cache_of_every_replica() {
    let dir = tempfile::tempdir().expect("tmp");
    let connection = fresh_catalogue(dir.path()).await;
    let a = central_replica(dir.path(), "a", &connection);
    let b = central_replica(dir.path(), "b", &connection);
    let cached = |node: &str, id: &str| dir.path().join(format!("cache-{node}")).join(id);

    // Three images, each cached by both replicas.
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = active_image(a.addr, &data(300_000, n)).await;
        for addr in [a.addr, b.addr] {
            download(addr, &id).await;
        }
        for node in ["a", "b"] {
            let file = cached(node, &id);
            wait_until("cached", Duration::from_secs(10), || file.exists()).await;
        }
        ids.push(id);
    }
    let delete = |id: String| async move {
        let r = call(a.addr, "DELETE", &format!("/v2/images/{id}"), &[], vec![]).await;
        assert_eq!(r.status, 204);
    };

    // B's next listing drops what was deleted through A; A's own copy went at once.
    delete(ids[0].clone()).await;
    assert!(
        !cached("a", &ids[0]).exists(),
        "the deleting replica's copy"
    );
    let listing = call(b.addr, "GET", "/v2/cache", &[], vec![]).await.json();
    assert!(!cached_ids(&listing).contains(&ids[0]), "{listing}");
    assert!(!cached("b", &ids[0]).exists());
    assert!(cached_ids(&listing).contains(&ids[1]), "{listing}");

    // DELETE /v2/cache/{id} of a deleted image removes what is left.
    delete(ids[1].clone()).await;
    let removed = call(
        b.addr,
        "DELETE",
        &format!("/v2/cache/{}", ids[1]),
        &[],
        vec![],
    )
    .await;
    assert_eq!(
        removed.status,
        204,
        "{}",
        String::from_utf8_lossy(&removed.body)
    );
    assert!(!cached("b", &ids[1]).exists());

    // Without any call, B drops it within a minute.
    delete(ids[2].clone()).await;
    let file = cached("b", &ids[2]);
    let took = wait_until("swept", Duration::from_secs(60), || !file.exists()).await;
    println!("replica b dropped a deleted image's copy after {took:?}");
    // Its bytes are never served meanwhile.
    let r = call(
        b.addr,
        "GET",
        &format!("/v2/images/{}/file", ids[2]),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 404);
    let nodes = call(a.addr, "GET", "/v2/cache", &[], vec![]).await.json();
    assert!(cached_ids(&nodes).is_empty(), "{nodes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cleaner_removes_copies_of_deleted_images_with_the_sqlite_and_xattr_drivers() {
    for driver in ["sqlite", "xattr"] {
        let dir = tempfile::tempdir().expect("tmp");
        let connection = fresh_catalogue(dir.path()).await;
        let extra = format!("image_cache_driver = {driver}\n");
        let a = replica(dir.path(), "a", &connection, Some("a"), &extra);
        let mut b = replica(dir.path(), "b", &connection, Some("b"), &extra);
        let gone = active_image(a.addr, &data(100_000, 1)).await;
        let kept = active_image(a.addr, &data(100_000, 2)).await;
        for id in [&gone, &kept] {
            download(b.addr, id).await;
        }
        let cached = |id: &str| dir.path().join("cache-b").join(id);
        wait_until("cached", Duration::from_secs(10), || {
            cached(&gone).exists() && cached(&kept).exists()
        })
        .await;
        // B is down (its own sweep cannot run) when A deletes the image.
        b.kill();
        let r = call(a.addr, "DELETE", &format!("/v2/images/{gone}"), &[], vec![]).await;
        assert_eq!(r.status, 204);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_glance-cache-cleaner"))
            .arg("--config-file")
            .arg(&b.conf)
            .output()
            .expect("cleaner");
        assert!(
            out.status.success(),
            "{driver}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !cached(&gone).exists(),
            "{driver}: the deleted image's copy"
        );
        assert!(
            cached(&kept).exists(),
            "{driver}: a live image's copy stays"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_is_answered_503_within_2_s_and_recovery_is_immediate() {
    let backend = backend();
    if backend == Backend::Sqlite {
        // A SQLite catalogue is a local file: it has no server to lose (a database
        // locked past the busy timeout is tests/catalogue.rs' case).
        return;
    }
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
    let url = common::db::create_database(backend).await;
    common::db::sync(&url, dir.path()).await;
    let target = common::db::server_addr(&url);
    let proxy = common::proxy::Proxy::start(target).await;
    let at = proxy.addr;
    let server = start_on(dir, common::db::with_addr(&url, at), Some(1 << 30), "").await;
    let addr = server.addr;
    let id = active_image(addr, &data(200_000, 5)).await;
    download(addr, &id).await;
    wait_until("cached", Duration::from_secs(10), || {
        server.dir.path().join("image-cache").join(&id).exists()
    })
    .await;

    // The server stops: its port refuses connections.
    drop(proxy);
    let requests: [(&str, String, Vec<u8>); 5] = [
        ("GET", format!("/v2/images/{id}"), vec![]),
        ("GET", "/v2/images".to_owned(), vec![]),
        ("GET", format!("/v2/images/{id}/file"), vec![]),
        (
            "POST",
            "/v2/images".to_owned(),
            b"{\"name\": \"x\"}".to_vec(),
        ),
        ("GET", "/v2/cache".to_owned(), vec![]),
    ];
    let outage = Instant::now();
    let mut slowest = Duration::ZERO;
    while outage.elapsed() < Duration::from_secs(5) {
        for (method, path, body) in &requests {
            let started = Instant::now();
            let reply = call(
                addr,
                method,
                path,
                &[("Content-Type", "application/json")],
                body.clone(),
            )
            .await;
            let took = started.elapsed();
            slowest = slowest.max(took);
            assert_eq!(reply.status, 503, "{method} {path}");
            assert!(reply.header("retry-after").is_some(), "{method} {path}");
            assert!(took < Duration::from_secs(2), "{method} {path}: {took:?}");
        }
    }
    println!("slowest answer during the outage: {slowest:?}");

    // The server is back on its port.
    let proxy = common::proxy::Proxy::start_at(at, target).await;
    let back = Instant::now();
    loop {
        let reply = call(addr, "GET", &format!("/v2/images/{id}"), &[], vec![]).await;
        if reply.status == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(5), "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("recovered {:?} after the server came back", back.elapsed());
    download(addr, &id).await;
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_whose_glance_api_dies_fails_its_task_and_its_image_is_queued_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let connection = fresh_catalogue(dir.path()).await;
    let bytes = data(4 << 20, 13);
    let web = common::web::serve(bytes.clone()).await;
    let filter = format!(
        "[import_filtering_opts]\nallowed_hosts = 127.0.0.1\nallowed_ports = {}\n",
        web.port()
    );
    let start = |name: &str| {
        let port = free_port();
        let text = format!(
            "{}{filter}",
            replica_conf(dir.path(), port, &connection, None, "")
        );
        Process::start(dir.path(), name, port, &text)
    };
    let survivor = start("survivor");
    let mut doomed = start("doomed");
    let id = create(
        survivor.addr,
        json!({"disk_format": "raw", "container_format": "bare"}),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let import = |addr: SocketAddr, path: &'static str| {
        let body = json!({"method": {"name": "web-download", "uri": format!("http://127.0.0.1:{}{path}", web.port())}});
        call(
            addr,
            "POST",
            &format!("/v2/images/{id}/import"),
            &[("Content-Type", "application/json")],
            body.to_string().into_bytes(),
        )
    };
    // The download stalls after its first bytes; its glance-api is killed then.
    assert_eq!(import(doomed.addr, "/stall").await.status, 202);
    let staged = dir.path().join("staging").join(&id);
    let started = Instant::now();
    while !staged.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing staged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(show(survivor.addr, &id).await["status"], "importing");
    doomed.kill();
    let killed = Instant::now();
    // Meanwhile another import is refused: the first still holds the image.
    assert_eq!(import(survivor.addr, "/image").await.status, 409);
    wait_for_status(survivor.addr, &id, "queued", Duration::from_secs(60)).await;
    println!(
        "image queued again {:?} after its importer was killed",
        killed.elapsed()
    );
    let image = show(survivor.addr, &id).await;
    assert!(image.get("os_glance_import_task").is_none(), "{image}");
    assert!(!staged.exists(), "the staged data is removed");
    let tasks = call(
        survivor.addr,
        "GET",
        &format!("/v2/images/{id}/tasks"),
        &[],
        vec![],
    )
    .await
    .json();
    assert_eq!(tasks["tasks"][0]["status"], "failure", "{tasks}");
    // And the image can be imported again.
    assert_eq!(import(survivor.addr, "/image").await.status, 202);
    wait_for_status(survivor.addr, &id, "active", Duration::from_secs(30)).await;
    let got = call(
        survivor.addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[],
        vec![],
    )
    .await;
    assert!(got.body == bytes, "the imported bytes");
}
