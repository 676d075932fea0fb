//! `client_socket_timeout` (a client that sends or reads nothing loses its connection)
//! and `graceful_shutdown_timeout` (a stop cuts off what is still busy after it).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::server::{Server, active_image, call, conf_with_database, create, data, start_conf};
use glance_operator::api::connection::{HEAD_TIMEOUT, head_timeout};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The client_socket_timeout of these tests.
const IDLE: u64 = 2;
/// How long any wait for the server may take before the test gives up: well under the
/// 30 s (headers), 60 s (sendfile) or 900 s (everything else) the server waited before.
const PATIENCE: Duration = Duration::from_secs(10);
/// Bytes the cache may hold.
const CACHE: u64 = 1 << 30;

/// glance-api with `options` added to `[DEFAULT]`, the cache (and cachemanagement) on or
/// off.
async fn server(cache: bool, options: &str) -> Server {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = common::db::fresh_catalogue(dir.path()).await;
    let (cache, flavor) = if cache {
        (Some(CACHE), "cachemanagement")
    } else {
        (None, "")
    };
    let text = conf_with_database(dir.path(), 0, cache, flavor, &connection).replacen(
        "[DEFAULT]\n",
        &format!("[DEFAULT]\n{options}\n"),
        1,
    );
    start_conf(dir, connection, &text).await
}

async fn idle_server(cache: bool) -> Server {
    server(cache, &format!("client_socket_timeout = {IDLE}")).await
}

/// A connection with a small receive buffer, so that a client that reads nothing soon
/// leaves the server's writes blocked, whatever the machine's TCP tuning.
async fn connect_small(server: &Server) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 << 10).expect("SO_RCVBUF");
    socket.connect(server.addr).await.expect("connect")
}

/// Reads until the server closes the connection (end of file or reset); the bytes read
/// and when the end came. Panics when it does not come within PATIENCE.
async fn until_closed(stream: &mut TcpStream, what: &str) -> (u64, Instant) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (total, Instant::now()),
            Ok(Ok(n)) => total += n as u64,
            Err(_) => panic!("{what}: the connection is still open after {PATIENCE:?}"),
        }
    }
}

/// Reads one Content-Length framed answer; returns its status.
async fn read_answer(stream: &mut TcpStream) -> u16 {
    let mut received = Vec::new();
    let mut buf = vec![0u8; 65536];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed before an answer");
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().expect("length"));
    while received.len() < head_end + len {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the body in time")
            .expect("read");
        assert!(n > 0, "closed inside the body");
        received.extend_from_slice(&buf[..n]);
    }
    assert_eq!(received.len(), head_end + len, "nothing after the answer");
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status")
}

async fn image_status(server: &Server, id: &str) -> String {
    call(server.addr, "GET", &format!("/v2/images/{id}"), &[], vec![])
        .await
        .json()["status"]
        .as_str()
        .expect("status")
        .to_owned()
}

#[test]
fn the_head_timeout_is_30_s_or_a_shorter_client_socket_timeout() {
    assert_eq!(head_timeout(None), HEAD_TIMEOUT);
    assert_eq!(head_timeout(Some(Duration::from_secs(900))), HEAD_TIMEOUT);
    assert_eq!(
        head_timeout(Some(Duration::from_secs(2))),
        Duration::from_secs(2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeouts_are_validated_integers() {
    use glance_operator::api::settings::ApiSettings;
    use glance_operator::conf::Config;
    let read = |options: &str| {
        let text = format!("[DEFAULT]\n{options}\n");
        ApiSettings::from_config(&Config::from_str("t.conf", &text).expect("parses"))
    };
    let defaults = read("").expect("defaults");
    assert_eq!(
        defaults.client_socket_timeout,
        Some(Duration::from_secs(900))
    );
    assert_eq!(
        defaults.graceful_shutdown_timeout,
        Some(Duration::from_secs(60))
    );
    let zero = read("client_socket_timeout = 0\ngraceful_shutdown_timeout = 0").expect("zero");
    assert_eq!(zero.client_socket_timeout, None, "0 waits for ever");
    assert_eq!(zero.graceful_shutdown_timeout, None, "0 waits for ever");
    let set = read("client_socket_timeout = 5\ngraceful_shutdown_timeout = 7").expect("set");
    assert_eq!(set.client_socket_timeout, Some(Duration::from_secs(5)));
    assert_eq!(set.graceful_shutdown_timeout, Some(Duration::from_secs(7)));
    for option in ["client_socket_timeout", "graceful_shutdown_timeout"] {
        for bad in ["-1", "1.5", "ten", ""] {
            let e = read(&format!("{option} = {bad}")).expect_err(bad);
            assert!(e.to_string().contains(option), "{option} = {bad}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_whose_client_stops_sending_ends_and_the_image_is_queued_again() {
    for cache in [false, true] {
        let server = idle_server(cache).await;
        let image = create(
            server.addr,
            json!({"name": "stalled", "disk_format": "raw", "container_format": "bare"}),
        )
        .await;
        let id = image["id"].as_str().expect("id");
        let bytes = data(4 << 20, 1);
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let head = format!(
            "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream
            .write_all(&bytes[..bytes.len() / 2])
            .await
            .expect("first half");
        let silent = Instant::now();
        let deadline = silent + PATIENCE;
        while image_status(&server, id).await != "saving" {
            assert!(Instant::now() < deadline, "the upload never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The client now sends nothing: within the timeout (and some) the upload ends.
        loop {
            let status = image_status(&server, id).await;
            if status == "queued" {
                break;
            }
            assert_eq!(status, "saving", "cache {cache}");
            assert!(
                Instant::now() < deadline,
                "cache {cache}: still saving after {PATIENCE:?} of silence"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            silent.elapsed() >= Duration::from_millis(IDLE * 1000 - 1000),
            "cache {cache}: not before the timeout ({:?})",
            silent.elapsed()
        );
        // The client is told why, and the connection ends.
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
            .await
            .expect("the stalled upload: closed in time")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400")
                && answer.contains("the client sent nothing for 2 s"),
            "cache {cache}: {answer}"
        );
        // The image takes a new upload.
        assert_eq!(
            common::server::upload(server.addr, id, &bytes).await,
            204,
            "cache {cache}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_request_head_is_closed() {
    for cache in [false, true] {
        let server = idle_server(cache).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(b"GET /v2/images HTTP/1.1\r\nHost: test\r\nAccept: app")
            .await
            .expect("half a head");
        let silent = Instant::now();
        let (_, end) = until_closed(&mut stream, "half a head").await;
        let waited = end - silent;
        assert!(
            waited >= Duration::from_millis(IDLE * 1000 - 1000),
            "cache {cache}: closed after {waited:?}, before the timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_kept_alive_connection_is_closed() {
    for cache in [false, true] {
        let server = idle_server(cache).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        for _ in 0..2 {
            stream
                .write_all(b"GET /versions HTTP/1.1\r\nHost: test\r\n\r\n")
                .await
                .expect("request");
            assert_eq!(read_answer(&mut stream).await, 200, "cache {cache}");
        }
        let silent = Instant::now();
        let (extra, end) = until_closed(&mut stream, "an idle connection").await;
        assert_eq!(extra, 0, "no bytes after the answers");
        let waited = end - silent;
        assert!(
            waited >= Duration::from_millis(IDLE * 1000 - 1000),
            "cache {cache}: closed after {waited:?}, before the timeout"
        );
    }
}

/// The server closes a download of `len` bytes whose client reads nothing after the
/// request: reading afterwards finds the end of the connection long before the last
/// byte. Returns the bytes received.
async fn unread_download_is_closed(server: &Server, id: &str, len: u64, what: &str) -> u64 {
    let mut stream = connect_small(server).await;
    stream
        .write_all(format!("GET /v2/images/{id}/file HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("request");
    // Read nothing for longer than the timeout, with room for a busy machine.
    tokio::time::sleep(Duration::from_secs(IDLE + 4)).await;
    let (received, _) = until_closed(&mut stream, what).await;
    assert!(
        received < len,
        "{what}: the whole answer came ({received} bytes): the connection was not closed"
    );
    received
}

#[tokio::test(flavor = "multi_thread")]
async fn a_download_whose_client_reads_nothing_is_closed() {
    let len: u64 = 64 << 20;
    let bytes = data(len as usize, 7);

    // Without a cache: hyper writes the answer from the store.
    let server = idle_server(false).await;
    let id = active_image(server.addr, &bytes).await;
    unread_download_is_closed(&server, &id, len, "from the store").await;
    assert!(
        common::server::log().contains("the client read nothing for 2 s"),
        "hyper's write timed out"
    );
    drop(server);

    // From the cache: sendfile writes it.
    let server = idle_server(true).await;
    let id = active_image(server.addr, &bytes).await;
    let first = call(
        server.addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        &[],
        vec![],
    )
    .await;
    assert!(first.body == bytes, "the first download is whole");
    let cached = server.dir.path().join("image-cache").join(&id);
    assert!(cached.exists(), "cached by the first download");
    unread_download_is_closed(&server, &id, len, "from the cache").await;
    assert!(
        common::server::log().contains("the client took no bytes for 2 s"),
        "sendfile timed out"
    );
    // The server goes on.
    assert_eq!(
        common::server::status(server.addr, "GET", "/healthcheck").await,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_fill_cut_off_by_the_stop_is_never_published() {
    let len: u64 = 128 << 20;
    let drain = 1;
    let mut server = server(true, &format!("graceful_shutdown_timeout = {drain}")).await;
    let id = {
        let bytes = data(len as usize, 9);
        active_image(server.addr, &bytes).await
    };
    let cache_dir = server.dir.path().join("image-cache");
    // A cold download: it fills the cache as it goes. Read a little of it.
    let mut stream = connect_small(&server).await;
    stream
        .write_all(format!("GET /v2/images/{id}/file HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    while received < 1 << 20 {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("first bytes in time")
            .expect("read");
        assert!(n > 0, "closed early");
        received += n as u64;
    }
    assert!(
        cache_dir.join("incomplete").join(&id).exists(),
        "the fill is under way"
    );
    // Stop, and let the drain time pass with the client reading nothing.
    let _ = server.stop.take().expect("stop").send(());
    tokio::time::sleep(Duration::from_secs(drain + 2)).await;
    // Whatever the server had sent arrives, then the end: the download was cut off.
    let (more, _) = until_closed(&mut stream, "the download cut off by the stop").await;
    assert!(
        received + more < len,
        "the download was cut off ({} of {len} bytes)",
        received + more
    );
    tokio::time::timeout(PATIENCE, &mut server.task)
        .await
        .expect("the server stopped")
        .expect("clean stop");
    // The fill reads the store on its own, whatever its clients do: it either ended
    // before the stop (a whole, verified image) or was given up at the stop. A cut-off
    // fill is never published, not even later.
    let cached = cache_dir.join(&id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    if cached.exists() {
        assert_eq!(
            std::fs::metadata(&cached).expect("cached").len(),
            len,
            "only a whole image is cached"
        );
        assert!(std::fs::read(&cached).expect("cached") == data(len as usize, 9));
    }
    assert!(
        !cache_dir.join("incomplete").join(&id).exists(),
        "the partial file left incomplete/"
    );
}
