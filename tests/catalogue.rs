//! The catalogue shared by several glance-api replicas, on the backend of
//! GLANCE_TEST_DATABASE: uploads racing between replicas, a delete during an upload,
//! upstream's soft deletes, and the database going away at start and while serving.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{
    Server, call, create, data, post_image, replica, start, start_on, status, upload,
};
use glance_operator::db::Backend;
use md5::{Digest, Md5};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upload whose body is sent in two halves, so that it is in flight in between.
struct SlowUpload {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowUpload {
    /// Sends the head and the first half of `bytes`, then waits until the image is saving.
    async fn begin(server: &Server, id: &str, bytes: &[u8]) -> Self {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let head = format!(
            "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        stream.write_all(first).await.expect("first half");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let image = call(server.addr, "GET", &format!("/v2/images/{id}"), &[], vec![]).await;
            if image.json()["status"] == "saving" {
                break;
            }
            assert!(Instant::now() < deadline, "the upload never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            stream,
            rest: rest.to_vec(),
        }
    }

    /// Sends the second half and returns the status code of the answer.
    async fn finish(mut self) -> u16 {
        self.stream
            .write_all(&self.rest)
            .await
            .expect("second half");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = self.stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed before an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&answer);
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line}"))
    }
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_uploading_one_image_one_wins_and_the_other_gets_409() {
    let a = start(None).await;
    let b = replica(&a, "").await;
    let image = create(
        a.addr,
        json!({"name": "raced", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let id = image["id"].as_str().expect("id");
    let winner = data(4 << 20, 1);
    let upload_a = SlowUpload::begin(&a, id, &winner).await;
    // Replica b sees the image saving and refuses its own upload.
    assert_eq!(upload(b.addr, id, &data(1 << 20, 2)).await, 409);
    assert_eq!(upload_a.finish().await, 204);
    let shown = call(b.addr, "GET", &format!("/v2/images/{id}"), &[], vec![])
        .await
        .json();
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["checksum"], md5_hex(&winner));
    assert_eq!(shown["size"], winner.len());
    let got = call(b.addr, "GET", &format!("/v2/images/{id}/file"), &[], vec![]).await;
    assert!(got.body == winner, "replica b serves replica a's data");
    // Once active, neither replica takes another upload.
    assert_eq!(upload(a.addr, id, b"again").await, 409);
    assert_eq!(upload(b.addr, id, b"again").await, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_image_while_it_uploads_never_leaves_an_active_image_without_data() {
    let a = start(None).await;
    let b = replica(&a, "").await;
    let image = create(
        a.addr,
        json!({"name": "doomed", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let id = image["id"].as_str().expect("id").to_owned();
    let upload_a = SlowUpload::begin(&a, &id, &data(4 << 20, 3)).await;
    assert_eq!(
        status(b.addr, "DELETE", &format!("/v2/images/{id}")).await,
        204
    );
    assert_eq!(upload_a.finish().await, 410, "the upload learns it lost");
    for server in [&a, &b] {
        assert_eq!(
            status(server.addr, "GET", &format!("/v2/images/{id}")).await,
            404
        );
        let list = call(server.addr, "GET", "/v2/images", &[], vec![])
            .await
            .json();
        assert_eq!(list["images"], json!([]));
    }
    let leftovers: Vec<_> = std::fs::read_dir(a.dir.path().join("images"))
        .expect("store")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(leftovers.is_empty(), "no data left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn soft_deleted_images_are_gone_but_their_ids_stay_taken() {
    let server = start(None).await;
    let addr = server.addr;
    let id = "6a1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let body = json!({"id": id, "name": "gone", "tags": ["t"], "p": "v"});
    create(addr, body.clone()).await;
    let kept = create(addr, json!({"name": "kept"})).await;
    assert_eq!(
        status(addr, "DELETE", &format!("/v2/images/{id}")).await,
        204
    );
    assert_eq!(status(addr, "GET", &format!("/v2/images/{id}")).await, 404);
    assert_eq!(
        status(addr, "DELETE", &format!("/v2/images/{id}")).await,
        404
    );
    assert_eq!(
        upload(addr, id, b"data").await,
        404,
        "no upload to a deleted image"
    );
    for query in ["", "?status=deleted", "?tag=t", "?p=v", "?name=gone"] {
        let list = call(addr, "GET", &format!("/v2/images{query}"), &[], vec![])
            .await
            .json();
        let ids: Vec<&str> = list["images"]
            .as_array()
            .expect("images")
            .iter()
            .filter_map(|i| i["id"].as_str())
            .collect();
        assert!(!ids.contains(&id), "{query}: {ids:?}");
    }
    let again = post_image(addr, body).await;
    assert_eq!(again.status, 409, "a deleted image's id is not reused");
    assert_eq!(
        status(
            addr,
            "GET",
            &format!("/v2/images/{}", kept["id"].as_str().expect("id"))
        )
        .await,
        200
    );
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn a_database_down_at_start_is_retried_then_named_without_its_password() {
    for scheme in ["mysql+pymysql", "postgresql+psycopg2"] {
        let dir = tempfile::tempdir().expect("tmp");
        let port = closed_port();
        let url = format!("{scheme}://glance:hunter2-secret@127.0.0.1:{port}/glance");
        let conf = common::server::conf_with_database(dir.path(), closed_port(), None, "", &url)
            .replace(
                "[database]\n",
                "[database]\nmax_retries = 2\nretry_interval = 1\n",
            );
        let path = dir.path().join("glance-api.conf");
        std::fs::write(&path, conf).expect("write");
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_glance-api"))
            .arg("--config-file")
            .arg(&path)
            .output()
            .expect("run");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{scheme}: exits with an error");
        assert!(
            stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("after 3 attempts"),
            "{scheme}: names the server and the attempts: {stderr}"
        );
        assert_eq!(
            stderr.matches("database unavailable; retrying").count(),
            2,
            "{scheme}: {stderr}"
        );
        assert!(
            took >= Duration::from_secs(2),
            "{scheme}: waited retry_interval: {took:?}"
        );
        assert!(
            !stderr.contains("hunter2"),
            "{scheme}: no password: {stderr}"
        );
    }
}

/// Cuts the database off, checks that requests get 503 with a JSON body and that a
/// write made meanwhile left nothing behind, then brings it back and checks recovery.
async fn goes_away_and_comes_back(server: &Server, cut: impl FnOnce(), restore: impl FnOnce()) {
    let addr = server.addr;
    let before = create(addr, json!({"name": "before"})).await;
    let before_id = before["id"].as_str().expect("id").to_owned();
    cut();
    let shown = call(addr, "GET", &format!("/v2/images/{before_id}"), &[], vec![]).await;
    assert_eq!(
        shown.status,
        503,
        "{}",
        String::from_utf8_lossy(&shown.body)
    );
    assert_eq!(shown.json()["code"], "503 Service Unavailable");
    assert!(shown.header("retry-after").is_some());
    let body = String::from_utf8_lossy(&shown.body).into_owned();
    assert!(
        !body.contains("glance-secret-pw") && !body.contains("hunter2"),
        "{body}"
    );
    let created = call(
        addr,
        "POST",
        "/v2/images",
        &[("Content-Type", "application/json")],
        json!({"name": "during", "tags": ["a", "b"], "x": "y"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(created.status, 503);
    assert_eq!(status(addr, "GET", "/healthcheck").await, 503);
    restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(addr, "GET", "/healthcheck").await != 200 {
        assert!(Instant::now() < deadline, "the server did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let shown = call(addr, "GET", &format!("/v2/images/{before_id}"), &[], vec![]).await;
    assert_eq!(shown.status, 200);
    let list = call(addr, "GET", "/v2/images?name=during", &[], vec![])
        .await
        .json();
    assert_eq!(
        list["images"],
        json!([]),
        "the refused create wrote nothing"
    );
    assert_eq!(
        status(addr, "DELETE", &format!("/v2/images/{before_id}")).await,
        204
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_database_gives_503_and_the_server_recovers_on_its_own() {
    match common::db::backend() {
        Backend::Sqlite => {
            // SQLite has no server to lose; a database locked by another process past the
            // busy timeout is its way of being unavailable.
            let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
            let connection = common::db::fresh_catalogue(dir.path()).await;
            let server = start_on(dir, connection, None, "pool_timeout = 2\n").await;
            let path = server.dir.path().join("glance.sqlite");
            let locker = std::sync::Arc::new(std::sync::Mutex::new(None));
            let (lock, unlock) = (locker.clone(), locker);
            goes_away_and_comes_back(
                &server,
                move || {
                    let conn = rusqlite::Connection::open(&path).expect("open");
                    conn.execute_batch("BEGIN EXCLUSIVE").expect("lock");
                    *lock.lock().expect("locker") = Some(conn);
                },
                move || {
                    let conn = unlock.lock().expect("locker").take().expect("locked");
                    conn.execute_batch("ROLLBACK").expect("unlock");
                },
            )
            .await;
        }
        backend => {
            let dir = std::sync::Arc::new(tempfile::tempdir().expect("tmp"));
            let url = common::db::create_database(backend).await;
            common::db::sync(&url, dir.path()).await;
            let target: SocketAddr = common::db::server_addr(&url);
            let proxy = common::proxy::Proxy::start(target).await;
            let through = common::db::with_addr(&url, proxy.addr);
            let server = start_on(dir, through, None, "pool_timeout = 2\n").await;
            goes_away_and_comes_back(&server, || proxy.cut(), || proxy.restore()).await;
        }
    }
}

/// An edit begun once an upload took the image sees it saving, and cannot change its
/// formats (the upload inspects against the formats it read); other changes go through.
#[tokio::test]
async fn formats_change_only_while_queued_even_for_an_edit_racing_an_upload() {
    use glance_operator::cache::ImageId;
    use glance_operator::db::{Db, DbOptions, DbUrl, Image, now};
    use glance_operator::store::FileStore;

    let dir = tempfile::tempdir().expect("tmp");
    let url = common::db::fresh_catalogue(dir.path()).await;
    let options = DbOptions::new(DbUrl::parse(&url).expect("url"));
    let store = FileStore::new(&dir.path().join("images"), "default_backend");
    let db = Db::open(&options, &store).await.expect("catalogue");
    let id = ImageId::parse("6f7e1c1e-3b0a-4c55-9d3e-1b2f7c1a00aa").expect("id");
    let mut image = Image::new(id.clone(), &now());
    image.disk_format = Some("qcow2".into());
    image.container_format = Some("ovf".into());
    assert!(db.insert(&image).await.expect("insert"));
    // The upload takes the image and reads ovf: it will not inspect the data.
    assert!(db.claim_upload(&id, "lease").await.expect("claim"));
    let edit = db.edit(&id).await.expect("edit").expect("image");
    assert_eq!(edit.image.status, "saving");
    let mut relabel = edit.image.clone();
    relabel.container_format = Some("bare".into());
    assert!(
        !db.save(edit, &relabel).await.expect("save"),
        "formats stay"
    );
    let edit = db.edit(&id).await.expect("edit").expect("image");
    let mut rename = edit.image.clone();
    rename.name = Some("renamed".into());
    assert!(
        db.save(edit, &rename).await.expect("save"),
        "other fields change"
    );
    let now_stored = db.get(&id).await.expect("get").expect("image");
    assert_eq!(now_stored.container_format.as_deref(), Some("ovf"));
    assert_eq!(now_stored.name.as_deref(), Some("renamed"));
    assert_eq!(now_stored.status, "saving");
}

/// A client that goes away in the middle of its upload leaves the image queued, ready for
/// another upload, and no data in the store.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_off_by_its_client_leaves_the_image_queued() {
    let server = start(None).await;
    let image = create(
        server.addr,
        json!({"name": "cut", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let id = image["id"].as_str().expect("id").to_owned();
    let upload = SlowUpload::begin(&server, &id, &vec![7u8; 4 << 20]).await;
    drop(upload);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = call(server.addr, "GET", &format!("/v2/images/{id}"), &[], vec![]).await;
        if shown.json()["status"] == "queued" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after the client left",
            shown.json()["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let images = server.dir.path().join("images");
    let left: Vec<_> = std::fs::read_dir(&images)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "data left in the store: {left:?}");
}
