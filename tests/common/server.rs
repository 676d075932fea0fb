//! glance-api in the background of a test, and a blocking HTTP client for it.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use glance_operator::api::server::{build_state, serve_on};
use glance_operator::api::settings::ApiSettings;
use glance_operator::api::state::AppState;
use glance_operator::conf::Config;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A glance-api serving on a port of its own, in the background of the test.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its directory: images/, image-cache/, and glance.sqlite on SQLite. Replicas share it.
    pub dir: Arc<tempfile::TempDir>,
    /// `[database] connection`.
    pub connection: String,
    /// Its state.
    pub state: Arc<AppState>,
    /// Stops it.
    pub stop: Option<oneshot::Sender<()>>,
    /// Its serving task.
    pub task: tokio::task::JoinHandle<()>,
}

pub fn conf_text(dir: &Path, port: u16, cache: Option<u64>, flavor: &str) -> String {
    let sqlite = format!("sqlite:///{}/glance.sqlite", dir.display());
    conf_with_database(dir, port, cache, flavor, &sqlite)
}

pub fn conf_with_database(
    dir: &Path,
    port: u16,
    cache: Option<u64>,
    flavor: &str,
    connection: &str,
) -> String {
    let d = dir.display();
    let mut text = format!(
        "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = {port}\nenabled_backends = default_backend:file\n"
    );
    if let Some(max) = cache {
        text.push_str(&format!(
            "image_cache_dir = {d}/image-cache\nimage_cache_max_size = {max}\n"
        ));
    }
    text.push_str(&format!(
        "[glance_store]\ndefault_backend = default_backend\n[default_backend]\nfilesystem_store_datadir = {d}/images\n[os_glance_staging_store]\nfilesystem_store_datadir = {d}/staging\n[database]\nconnection = {connection}\n[paste_deploy]\nflavor = {flavor}\nlimit_param_default = 3\n"
    ));
    text
}

/// glance-api on port 0 with its catalogue on the backend of GLANCE_TEST_DATABASE.
pub async fn start(cache: Option<u64>) -> Server {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = super::db::fresh_catalogue(dir.path()).await;
    start_on(dir, connection, cache, "").await
}

/// Another glance-api on the same catalogue and store as `server`: a second replica.
pub async fn replica(server: &Server, extra_database_options: &str) -> Server {
    start_on(
        server.dir.clone(),
        server.connection.clone(),
        server.state.cache.as_ref().map(|c| c.max_size),
        extra_database_options,
    )
    .await
}

/// glance-api on port 0 in `dir` with catalogue `connection`; `extra_database_options`
/// are more `[database]` lines.
pub async fn start_on(
    dir: Arc<tempfile::TempDir>,
    connection: String,
    cache: Option<u64>,
    extra_database_options: &str,
) -> Server {
    let flavor = if cache.is_some() {
        "cachemanagement"
    } else {
        ""
    };
    let text = conf_with_database(dir.path(), 0, cache, flavor, &connection).replace(
        "[database]\n",
        &format!("[database]\n{extra_database_options}"),
    );
    start_conf(dir, connection, &text).await
}

/// glance-api on port 0 in `dir` with the configuration `text` (whose catalogue is
/// `connection`).
pub async fn start_conf(dir: Arc<tempfile::TempDir>, connection: String, text: &str) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    start_listening(listener, dir, connection, text).await
}

/// glance-api on `listener` (bound beforehand, so that its configuration may name its
/// own address) in `dir` with the configuration `text`.
pub async fn start_listening(
    listener: tokio::net::TcpListener,
    dir: Arc<tempfile::TempDir>,
    connection: String,
    text: &str,
) -> Server {
    log();
    let config = Config::from_str("test.conf", text).expect("conf");
    let state = build_state(ApiSettings::from_config(&config).expect("settings"))
        .await
        .expect("state");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        serve_on(listener, task_state, async move {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    Server {
        addr,
        dir,
        connection,
        state,
        stop: Some(stop),
        task,
    }
}

/// An HTTP answer.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request with a blocking client, off the async threads. The future owns its
/// arguments, so callers may pass temporaries.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> impl std::future::Future<Output = Reply> + Send + use<> {
    let url = format!("http://{addr}{path}");
    let method = method.to_owned();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    async move {
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into();
            let mut req = ureq::http::Request::builder()
                .method(method.as_str())
                .uri(&url);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            let mut res = agent.run(req.body(body).expect("request")).expect("send");
            let headers = res
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let mut data = Vec::new();
            res.body_mut()
                .with_config()
                .limit(u64::MAX)
                .reader()
                .read_to_end(&mut data)
                .expect("body");
            Reply {
                status: res.status().as_u16(),
                headers,
                body: data,
            }
        })
        .await
        .expect("join")
    }
}

/// The status code of a request without headers or body.
pub async fn status(addr: SocketAddr, method: &str, path: &str) -> u16 {
    call(addr, method, path, &[], vec![]).await.status
}

/// POST /v2/images with a JSON body, whatever the answer.
pub async fn post_image(addr: SocketAddr, body: Value) -> Reply {
    call(
        addr,
        "POST",
        "/v2/images",
        &[("Content-Type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await
}

/// A created image (201 asserted).
pub async fn create(addr: SocketAddr, body: Value) -> Value {
    let r = post_image(addr, body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

pub async fn upload(addr: SocketAddr, id: &str, data: &[u8]) -> u16 {
    call(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[("Content-Type", "application/octet-stream")],
        data.to_vec(),
    )
    .await
    .status
}

pub fn data(n: usize, seed: u32) -> Vec<u8> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// An active image with `bytes` of data; returns its id.
pub async fn active_image(addr: SocketAddr, bytes: &[u8]) -> String {
    let image = create(
        addr,
        json!({"name": "img", "disk_format": "raw", "container_format": "bare"}),
    )
    .await;
    let id = image["id"].as_str().expect("id").to_owned();
    assert_eq!(upload(addr, &id, bytes).await, 204);
    id
}

/// What the servers of this test process logged: warnings and errors, and the
/// connection module's debug lines. Warnings and errors also go to stderr, which the
/// test runner shows when a test fails.
pub fn log() -> String {
    static LOG: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>, bool);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log").extend_from_slice(buf);
            if self.1 {
                std::io::stderr().write_all(buf)?;
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = LOG.get_or_init(|| {
        use tracing_subscriber::fmt::MakeWriter;
        struct Writers(Arc<std::sync::Mutex<Vec<u8>>>);
        impl<'a> MakeWriter<'a> for Writers {
            type Writer = Capture;
            fn make_writer(&'a self) -> Capture {
                Capture(self.0.clone(), false)
            }
            fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Capture {
                Capture(self.0.clone(), *meta.level() <= tracing::Level::WARN)
            }
        }
        let captured = Arc::new(std::sync::Mutex::new(Vec::new()));
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn,glance_operator::api::connection=debug")
            .with_ansi(false)
            .with_writer(Writers(captured.clone()))
            .try_init();
        captured
    });
    String::from_utf8_lossy(&captured.lock().expect("log")).into_owned()
}
