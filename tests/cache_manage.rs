//! glance-cache-manage, the real binary, against the cache API served over real HTTP.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::cache::{id, put};
use glance_operator::api::cache_api::{CacheApi, ImageCatalog, router};
use glance_operator::api::error::ApiError;
use glance_operator::cache::{Cache, DriverKind, ImageId};

struct Catalog(HashMap<ImageId, &'static str>);

impl ImageCatalog for Catalog {
    fn status(&self, id: &ImageId) -> Result<Option<String>, ApiError> {
        Ok(self.0.get(id).map(|s| (*s).to_owned()))
    }
}

fn open(dir: &Path) -> Cache {
    Cache::open(dir, DriverKind::Sqlite, "cache.db").expect("cache")
}

async fn serve(dir: &Path) -> SocketAddr {
    let catalog = Catalog(HashMap::from([
        (id(1), "active"),
        (id(2), "active"),
        (id(3), "queued"),
    ]));
    let api = CacheApi {
        cache: Cache::open(dir, DriverKind::Sqlite, "cache.db").expect("cache"),
        max_size: 10,
        stall_time: Duration::from_secs(3600),
        catalog: Arc::new(catalog),
        queued: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(Arc::new(api))).await });
    addr
}

/// Runs glance-cache-manage with `args`, feeding `stdin`; returns (success, stdout, stderr).
async fn manage(addr: SocketAddr, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glance-cache-manage"));
    cmd.args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8(out.stdout).expect("utf-8"),
            String::from_utf8(out.stderr).expect("utf-8"),
        )
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread")]
async fn list_queue_and_delete_like_upstream() {
    let dir = tempfile::tempdir().expect("tmp");
    let addr = serve(dir.path()).await;

    assert_eq!(
        manage(addr, &["list-cached"], "").await,
        (true, "No cached images.\n".into(), String::new())
    );
    assert_eq!(
        manage(addr, &["list-queued"], "").await,
        (true, "No queued images.\n".into(), String::new())
    );

    put(&open(dir.path()), &id(1), b"seventeen bytes!!");
    let (ok, out, _) = manage(addr, &["list-cached"], "").await;
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Found 1 cached images...");
    assert_eq!(
        lines[1],
        "+--------------------------------------+----------------------------+----------------------------+------+------+"
    );
    assert_eq!(
        lines[2],
        "|                  ID                  |    Last Accessed (UTC)     |    Last Modified (UTC)     | Size | Hits |"
    );
    assert!(
        lines[4].starts_with("| 00000000-0000-4000-8000-000000000001 | 20"),
        "{}",
        lines[4]
    );
    assert!(lines[4].ends_with("|   17 |    0 |"), "{}", lines[4]);
    assert_eq!(lines.len(), 6);

    // Confirmation: "n" does nothing, "y" queues.
    let (ok, out, _) = manage(addr, &["queue-image", id(2).as_str()], "n\n").await;
    assert!(ok);
    assert_eq!(out, format!("Queue image {} for caching? [y/N]: ", id(2)));
    assert_eq!(
        manage(addr, &["list-queued"], "").await.1,
        "No queued images.\n"
    );
    let (ok, _, _) = manage(addr, &["queue-image", id(2).as_str()], "y\n").await;
    assert!(ok);
    let (_, out, _) = manage(addr, &["list-queued"], "").await;
    assert_eq!(
        out,
        format!(
            "Found 1 queued images...\n+--------------------------------------+\n|                  ID                  |\n+--------------------------------------+\n| {} |\n+--------------------------------------+\n",
            id(2)
        )
    );

    // Errors name the problem and fail.
    let (ok, _, err) = manage(addr, &["-f", "queue-image", id(9).as_str()], "").await;
    assert!(!ok && err.contains("HTTP 404"), "{err}");
    let (ok, _, err) = manage(addr, &["-f", "queue-image", id(3).as_str()], "").await;
    assert!(
        !ok && err.contains("HTTP 400") && err.contains("active"),
        "{err}"
    );
    let (ok, _, err) = manage(addr, &["-f", "queue-image", "../../etc/passwd"], "").await;
    assert!(!ok && err.contains("is not an image ID"), "{err}");
    let (ok, _, err) = manage(addr, &["-f", "delete-queued-image", id(1).as_str()], "").await;
    assert!(!ok && err.contains("is not queued"), "{err}");
    let (ok, _, err) = manage(addr, &["-f", "delete-cached-image", id(2).as_str()], "").await;
    assert!(!ok && err.contains("is not cached"), "{err}");

    let (ok, out, _) = manage(
        addr,
        &["-f", "-v", "delete-queued-image", id(2).as_str()],
        "",
    )
    .await;
    assert!(ok);
    assert_eq!(out, format!("Deleted queued image {}\n", id(2)));
    let (ok, out, _) = manage(
        addr,
        &[
            "--force",
            "--verbose",
            "delete-cached-image",
            id(1).as_str(),
        ],
        "",
    )
    .await;
    assert!(ok);
    assert_eq!(out, format!("Deleted cached image {}\n", id(1)));
    assert_eq!(
        manage(addr, &["list-cached"], "").await.1,
        "No cached images.\n"
    );

    put(&open(dir.path()), &id(1), b"again");
    manage(addr, &["-f", "queue-image", id(2).as_str()], "").await;
    let (ok, out, _) = manage(addr, &["-f", "-v", "delete-all-cached-images"], "").await;
    assert!(ok);
    assert_eq!(out, "Deleted 1 cached images\n");
    let (ok, out, _) = manage(addr, &["delete-all-queued-images", "-v"], "yes\n").await;
    assert!(ok);
    assert_eq!(
        out,
        "Delete all queued images? [y/N]: Deleted 1 queued images\n"
    );
    assert_eq!(
        manage(addr, &["list-queued"], "").await.1,
        "No queued images.\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_a_clear_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let (ok, _, err) = manage(addr, &["list-cached"], "").await;
    assert!(!ok);
    assert!(
        err.starts_with(&format!(
            "glance-cache-manage: GET http://127.0.0.1:{}/v2/cache:",
            addr.port()
        )),
        "{err}"
    );
}

fn http(addr: SocketAddr, method: &str, path: &str, header: Option<(&str, &str)>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let mut res = agent.run(req.body(()).expect("request")).expect("send");
    (
        res.status().as_u16(),
        res.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_api_answers_like_upstream() {
    let dir = tempfile::tempdir().expect("tmp");
    let addr = serve(dir.path()).await;
    put(&open(dir.path()), &id(1), b"0123456789");
    put(&open(dir.path()), &id(2), b"abcdefghij");
    let call = |m: &'static str, p: String, h: Option<(&'static str, &'static str)>| {
        tokio::task::spawn_blocking(move || http(addr, m, &p, h))
    };

    let (code, body) = call(
        "DELETE",
        "/v2/cache".into(),
        Some(("x-image-cache-clear-target", "everything")),
    )
    .await
    .expect("join");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("400 Bad Request"), "{body}");
    let (code, body) = call("POST", "/v2/cache/prune".into(), None)
        .await
        .expect("join");
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"total_bytes_pruned":10,"total_files_pruned":1}"#)
    );
    assert_eq!(
        call("POST", "/v2/cache/clean".into(), None)
            .await
            .expect("join"),
        (200, String::new())
    );
    assert_eq!(
        call("PUT", "/v2/cache/not-a-uuid".into(), None)
            .await
            .expect("join")
            .0,
        404
    );
    assert_eq!(
        call("DELETE", format!("/v2/cache/{}", id(9)), None)
            .await
            .expect("join")
            .0,
        404
    );
    let (code, body) = call("GET", "/v2/cached_images".into(), None)
        .await
        .expect("join");
    assert_eq!(code, 200);
    assert!(
        body.starts_with(
            r#"{"cached_images":[{"hits":0,"image_id":"00000000-0000-4000-8000-000000000002""#
        ),
        "{body}"
    );
    assert_eq!(
        call("PUT", format!("/v2/queued_images/{}", id(1)), None)
            .await
            .expect("join")
            .0,
        200
    );
    assert_eq!(
        call("GET", "/v2/queued_images".into(), None)
            .await
            .expect("join")
            .1,
        format!(r#"{{"queued_images":["{}"]}}"#, id(1))
    );
    assert_eq!(
        call("DELETE", "/v2/queued_images".into(), None)
            .await
            .expect("join")
            .1,
        r#"{"num_deleted":1}"#
    );
    assert_eq!(
        call("DELETE", "/v2/cached_images".into(), None)
            .await
            .expect("join")
            .1,
        r#"{"num_deleted":1}"#
    );
    assert_eq!(
        call(
            "DELETE",
            "/v2/cache".into(),
            Some(("x-image-cache-clear-target", "queue"))
        )
        .await
        .expect("join")
        .0,
        204
    );
}

/// The requests glance-cache-manage sends, as a server sees them: heads and bodies.
/// Answers each with `status` and an empty body.
fn recording_server(
    status: u16,
    requests: usize,
) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorder = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..requests {
            let (stream, _) = listener.accept().expect("accept");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).expect("line") == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            // A chunked body's bytes, whatever they are, are recorded too.
            if head.contains("transfer-encoding: chunked") {
                let mut line = String::new();
                reader.read_line(&mut line).expect("chunk");
                head.push_str(&format!("chunk: {line}"));
                let _ = reader.read(&mut [0u8; 16]);
            }
            seen.push(head);
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .expect("answer");
        }
        seen
    });
    (addr, recorder)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_request_has_an_empty_body_that_upstreams_json_parser_takes() {
    // Upstream reads any request with Transfer-Encoding as a JSON body, and answers 400
    // "Malformed JSON" for an empty chunked one: the PUT says Content-Length: 0.
    let (addr, recorder) = recording_server(202, 1);
    let image = "6f1c2d3e-0000-4000-8000-000000000077";
    let (ok, _, err) = manage(addr, &["queue-image", image], "y\n").await;
    assert!(ok, "{err}");
    let seen = recorder.join().expect("recorder");
    assert!(
        seen[0].starts_with(&format!("put /v2/cache/{image} http/1.1")),
        "{seen:?}"
    );
    assert!(seen[0].contains("content-length: 0\r\n"), "{seen:?}");
    assert!(!seen[0].contains("transfer-encoding"), "{seen:?}");
}
