//! Image metadata benchmark: glance-api against upstream Glance 33.0.0, both keeping
//! their catalogue in upstream's schema on one MariaDB server (databases `bench_ours`
//! and `bench_upstream`). Prints figures, asserts nothing about time. It does exit with
//! status 1 when something does not work: a server that does not start, an HTTP error,
//! or a listing without the expected images.
//!
//! Operations, each request timed on its own (wall clock from the TCP connect to the
//! last byte of the answer), p50 and p99 (nearest rank) per server:
//! - create: POST /v2/images of BENCH_IMAGES (default 1000) qcow2 images, each with a tag
//!   and two extra properties, one in four also with `tier=gold`;
//! - show: GET /v2/images/{id} of random images (BENCH_REQUESTS, default 500);
//! - patch: PATCH /v2/images/{id} (JSON patch: replace a property, add one) of random
//!   images (BENCH_REQUESTS);
//! - two listings (BENCH_LIST_RUNS each, default 30): the gold images sorted by name then
//!   created_at (a quarter of them), and all of them through a disk_format filter sorted
//!   by name. Every answer's count (and order) is checked.
//!
//! The same minimal HTTP/1.1 client talks to both servers, with a fresh TCP connection per
//! request (`Connection: close`: upstream's uWSGI closes every connection anyway), and the
//! requests alternate between the servers one by one, so machine noise hits both. Each
//! server gets BENCH_WARMUP (default 20) untimed requests of each kind first (5 of each
//! listing). Then, one server at a time, a few more requests of each kind count the SQL
//! statements they cost from MariaDB's global status counters.
//!
//! MariaDB: the server at GLANCE_TEST_MYSQL_URL (a user who may create databases), or
//! one started here with tests/db/servers.sh and stopped at the end. Upstream runs under
//! uWSGI (benches/upstream/glance_api.sh: 2 processes, its venv made by setup.sh on first
//! use); glance-api is the release binary cargo builds for this bench.
//!
//! Concurrent PATCHes of one image (`BENCH_SECTIONS`, default `all`; `concurrent` runs only
//! this section, without upstream): 1, 8 and 64 clients, each on its own connections,
//! send BENCH_PATCHES (default 400) PATCHes in all to one image of glance-api, each client
//! adding its own properties; throughput in requests per second, and every update is
//! checked to be there afterwards. With BENCH_BASELINE_API (and BENCH_BASELINE_MANAGE),
//! the same section also runs a glance-api built from another revision in the same run
//! (on a database of its own), and the single-client throughputs are compared as a ratio.
//!
//! Run: `cargo bench --bench metadata`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Display, Write as _};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use glance_operator::db::DbUrl;
use serde_json::{Value, json};
use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, Row};

use common::{
    DB_SERVERS_DIR, DIR_PREFIX, Samples, Server, TempDir, bench_base, env_usize, free_port,
    process_tree, remove_stale, root, start_upstream_with, wait_ready,
};

/// `limit` of both listings; also the most images the bench creates (upstream's
/// api_limit_max is 1000 by default, as is ours).
const LIST_LIMIT: usize = 1000;
/// Requests per kind and server in the SQL statement count.
const COUNT_REQUESTS: usize = 10;
/// Our p50 should be at most this fraction of upstream's.
const TARGET: f64 = 0.2;
const DATABASES: [&str; 2] = ["bench_ours", "bench_upstream"];
const JSON_PATCH: &str = "application/openstack-images-v2.1-json-patch";

type Result<T, E = String> = std::result::Result<T, E>;

/// Adds what was being done to an error.
trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}

// ---------------------------------------------------------------------------------------
// The timed client: one request on a fresh connection

/// A request and the status it must get.
struct Req {
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    expect: u16,
}

impl Req {
    fn get(path: String) -> Self {
        Self {
            method: "GET",
            path,
            content_type: None,
            body: Vec::new(),
            expect: 200,
        }
    }

    fn with_body(
        method: &'static str,
        path: String,
        content_type: &'static str,
        body: &Value,
    ) -> Self {
        Self {
            method,
            path,
            content_type: Some(content_type),
            body: body.to_string().into_bytes(),
            expect: if method == "POST" { 201 } else { 200 },
        }
    }
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    /// Connect to the last byte of the answer, in milliseconds.
    ms: f64,
}

impl Reply {
    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).context(|| "the answer is not JSON".to_owned())
    }
}

/// How the end of an answer's body is told.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// The decoded body once all of it is in `raw`.
fn complete_body(framing: &Framing, raw: &[u8]) -> Option<Vec<u8>> {
    match framing {
        Framing::Length(n) => (raw.len() >= *n).then(|| raw[..*n].to_vec()),
        Framing::Chunked => {
            if !raw.ends_with(b"0\r\n\r\n") {
                return None;
            }
            dechunk(raw)
        }
        Framing::Close => None,
    }
}

/// Decodes a complete chunked body; None while the last chunk is missing.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if raw.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Sends `req` to 127.0.0.1:`port` on a new connection and reads the whole answer.
fn request(port: u16, req: &Req) -> Result<Reply> {
    let what = || format!("{} {} on port {port}", req.method, req.path);
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n",
        req.method, req.path
    );
    if let Some(content_type) = req.content_type {
        let _ = write!(
            head,
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            req.body.len()
        );
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&req.body);
    let mut raw = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut framing: Option<(u16, usize, Framing)> = None;

    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).context(what)?;
    stream.set_nodelay(true).context(what)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .context(what)?;
    stream.write_all(&out).context(what)?;
    loop {
        if let Some((status, head_len, how)) = &framing
            && let Some(body) = complete_body(how, &raw[*head_len..])
        {
            let ms = start.elapsed().as_secs_f64() * 1e3;
            return Ok(Reply {
                status: *status,
                body,
                ms,
            });
        }
        let n = stream.read(&mut chunk).context(what)?;
        if n == 0 {
            return match framing {
                Some((status, head_len, Framing::Close)) => Ok(Reply {
                    status,
                    body: raw[head_len..].to_vec(),
                    ms: start.elapsed().as_secs_f64() * 1e3,
                }),
                _ => Err(format!(
                    "{}: connection closed before the answer ended",
                    what()
                )),
            };
        }
        raw.extend_from_slice(&chunk[..n]);
        if framing.is_none() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = response.parse(&raw).context(what)? {
                let status = response.code.unwrap_or(0);
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                };
                let how = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                    Framing::Chunked
                } else if let Some(length) = header("content-length") {
                    Framing::Length(
                        length
                            .parse()
                            .context(|| format!("{}: Content-Length {length:?}", what()))?,
                    )
                } else {
                    Framing::Close
                };
                framing = Some((status, head_len, how));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Servers

/// One server under test: where it listens and the processes whose CPU it uses.
struct Side {
    name: &'static str,
    port: u16,
    pids: Vec<u32>,
}

/// CPU time so far of every thread of `pids`, in nanoseconds (/proc/PID/task/*/schedstat).
fn cpu_ns(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let ns = fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            total += ns.unwrap_or(0);
        }
    }
    total
}

/// MariaDB and PostgreSQL started by tests/db/servers.sh; stopped on drop.
struct DbServers(PathBuf);

impl DbServers {
    /// Starts them in `dir`; returns them and the MariaDB URL.
    fn start(dir: &Path) -> Result<(Self, String)> {
        let out = Command::new("bash")
            .arg(root().join("tests/db/servers.sh"))
            .arg("start")
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .context(|| "running tests/db/servers.sh".to_owned())?;
        let servers = Self(dir.to_owned());
        if !out.status.success() {
            return Err(format!(
                "tests/db/servers.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let env = fs::read_to_string(dir.join("env")).context(|| "reading its env".to_owned())?;
        let url = env
            .lines()
            .find_map(|l| l.strip_prefix("GLANCE_TEST_MYSQL_URL="))
            .ok_or("tests/db/servers.sh wrote no GLANCE_TEST_MYSQL_URL")?
            .trim()
            .to_owned();
        Ok((servers, url))
    }

    fn mariadb_pid(&self) -> Option<u32> {
        fs::read_to_string(self.0.join("mariadb/mysqld.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for DbServers {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(root().join("tests/db/servers.sh"))
            .arg("stop")
            .arg(&self.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!("tests/db/servers.sh stop {} failed", self.0.display());
        }
    }
}

/// `url` (a SQLAlchemy URL) with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (main, query) = url
        .split_once('?')
        .map_or((url, None), |(m, q)| (m, Some(q)));
    let (base, _) = main
        .rsplit_once('/')
        .filter(|(b, _)| b.contains("://"))
        .ok_or("GLANCE_TEST_MYSQL_URL has no database name")?;
    Ok(match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    })
}

/// An administrative connection to the MariaDB server (not timed).
struct Admin {
    runtime: tokio::runtime::Runtime,
    conn: MySqlConnection,
}

impl Admin {
    fn connect(url: &str) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context(|| "tokio runtime".to_owned())?;
        let parsed = DbUrl::parse(url).map_err(|e| e.to_string())?;
        let conn = runtime
            .block_on(MySqlConnection::connect(parsed.sqlx_url()))
            .context(|| format!("connecting to {}", parsed.redacted))?;
        Ok(Self { runtime, conn })
    }

    fn execute(&mut self, sql: String) -> Result<()> {
        let what = || sql.clone();
        self.runtime
            .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(&mut self.conn))
            .context(what)?;
        Ok(())
    }

    fn version(&mut self) -> Result<String> {
        let row = self
            .runtime
            .block_on(sqlx::raw_sql("SELECT VERSION()").fetch_one(&mut self.conn))
            .context(|| "SELECT VERSION()".to_owned())?;
        row.try_get::<String, _>(0)
            .context(|| "SELECT VERSION()".to_owned())
    }

    /// The server's global status counters.
    fn status(&mut self) -> Result<BTreeMap<String, u64>> {
        let rows = self
            .runtime
            .block_on(sqlx::raw_sql("SHOW GLOBAL STATUS").fetch_all(&mut self.conn))
            .context(|| "SHOW GLOBAL STATUS".to_owned())?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.try_get(0).ok()?;
                let value: String = r.try_get(1).ok()?;
                Some((name, value.parse().ok()?))
            })
            .collect())
    }
}

fn our_conf(dir: &Path, port: u16, url: &str) -> Result<PathBuf> {
    let d = dir.display();
    let text = format!(
        "[DEFAULT]\n\
         bind_host = 127.0.0.1\n\
         bind_port = {port}\n\
         enabled_backends = file1:file\n\
         [glance_store]\n\
         default_backend = file1\n\
         [file1]\n\
         filesystem_store_datadir = {d}/images\n\
         [database]\n\
         connection = {url}\n\
         [paste_deploy]\n\
         flavor =\n"
    );
    let path = dir.join("glance-api.conf");
    fs::write(&path, text).context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// db_sync, then glance-api on a free port; waits for /healthcheck.
fn start_ours(dir: &Path, url: &str) -> Result<(Server, u16)> {
    start_build(
        dir,
        url,
        Path::new(env!("CARGO_BIN_EXE_glance-api")),
        Path::new(env!("CARGO_BIN_EXE_glance-manage")),
        "",
    )
}

// ---------------------------------------------------------------------------------------
// Measuring

/// What one kind of request cost on each side.
struct Measured {
    ms: Vec<Samples>,
    /// CPU of the server's processes, ns.
    server_cpu: Vec<u64>,
    /// CPU of MariaDB during that side's requests, ns.
    db_cpu: Vec<u64>,
}

/// Sends `n` requests to each of `sides`, alternating between them one by one (the
/// first side first on even requests, last on odd ones). `make(i, side)` builds request
/// `i` for a side, `check(i, side, reply)` checks its answer (after the clock stopped).
fn measure(
    sides: &[&Side],
    db_pids: &[u32],
    n: usize,
    make: &mut dyn FnMut(usize, usize) -> Req,
    check: &mut dyn FnMut(usize, usize, &Reply) -> Result<()>,
) -> Result<Measured> {
    let mut out = Measured {
        ms: vec![Samples::default(); sides.len()],
        server_cpu: vec![0; sides.len()],
        db_cpu: vec![0; sides.len()],
    };
    let mut order: Vec<usize> = (0..sides.len()).collect();
    for i in 0..n {
        for &s in &order {
            let side = sides[s];
            let req = make(i, s);
            let (cpu0, db0) = (cpu_ns(&side.pids), cpu_ns(db_pids));
            let reply = request(side.port, &req)?;
            let (cpu1, db1) = (cpu_ns(&side.pids), cpu_ns(db_pids));
            if reply.status != req.expect {
                let body = String::from_utf8_lossy(&reply.body);
                return Err(format!(
                    "{}: {} {} answered {} (expected {}): {}",
                    side.name,
                    req.method,
                    req.path,
                    reply.status,
                    req.expect,
                    body.chars().take(500).collect::<String>()
                ));
            }
            check(i, s, &reply)
                .context(|| format!("{}: {} {}", side.name, req.method, req.path))?;
            out.ms[s].push(reply.ms);
            out.server_cpu[s] += cpu1.saturating_sub(cpu0);
            out.db_cpu[s] += db1.saturating_sub(db0);
        }
        order.reverse();
    }
    Ok(out)
}

/// A deterministic xorshift64* sequence: the same random images for both servers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The body of POST /v2/images for image `i`.
fn create_body(i: usize, name: &str, disk_format: &str, gold: bool) -> Value {
    let mut body = json!({
        "name": name,
        "disk_format": disk_format,
        "container_format": "bare",
        "tags": ["bench"],
        "bench_team": format!("team-{}", i % 7),
        "bench_seq": i.to_string(),
    });
    if gold {
        body["tier"] = json!("gold");
    }
    body
}

/// Checks a created image and returns its ID.
fn check_created(reply: &Reply, name: &str, gold: bool) -> Result<String> {
    let image = reply.json()?;
    if image["name"] != name || image["tags"] != json!(["bench"]) || image["bench_team"].is_null() {
        return Err(format!("unexpected image: {image}"));
    }
    if (image["tier"] == "gold") != gold {
        return Err(format!("tier of {name}: {}", image["tier"]));
    }
    image["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no id in {image}"))
}

/// The images of a listing answer, checked to be `want` many.
fn listed(reply: &Reply, want: usize) -> Result<Vec<Value>> {
    let body = reply.json()?;
    let images = body["images"]
        .as_array()
        .ok_or_else(|| "no images array in the answer".to_owned())?;
    if images.len() != want {
        return Err(format!("{} images listed, {want} expected", images.len()));
    }
    Ok(images.clone())
}

fn names_ascending(images: &[Value]) -> Result<()> {
    let names: Vec<&str> = images.iter().filter_map(|i| i["name"].as_str()).collect();
    if names.len() != images.len() || names.windows(2).any(|w| w[0] > w[1]) {
        return Err("images not sorted by name".to_owned());
    }
    Ok(())
}

/// One timed operation's figures.
struct Figures {
    what: String,
    ours: Samples,
    upstream: Samples,
}

impl Figures {
    fn p50_ratio(&self) -> f64 {
        self.ours.percentile(50.0) / self.upstream.percentile(50.0)
    }
}

fn ms(ns: u64, n: usize) -> f64 {
    ns as f64 / 1e6 / n.max(1) as f64
}

fn print_figures(what: &str, m: &Measured, sides: &[&Side], db_known: bool) -> Figures {
    let n = m.ms[0].len();
    println!("\n{what}, n = {n} per server");
    println!("  {:<14} {:>10} {:>10}", "", "p50 ms", "p99 ms");
    for (s, side) in sides.iter().enumerate() {
        println!(
            "  {:<14} {:>10.2} {:>10.2}",
            side.name,
            m.ms[s].percentile(50.0),
            m.ms[s].percentile(99.0)
        );
    }
    println!(
        "  {:<14} {:>10.3} {:>10.3}",
        "ours/upstream",
        m.ms[0].percentile(50.0) / m.ms[1].percentile(50.0),
        m.ms[0].percentile(99.0) / m.ms[1].percentile(99.0)
    );
    let mut cpu = format!(
        "  CPU per request: {} {:.2} ms, {} {:.2} ms",
        sides[0].name,
        ms(m.server_cpu[0], n),
        sides[1].name,
        ms(m.server_cpu[1], n)
    );
    if db_known {
        let _ = write!(
            cpu,
            "; MariaDB {:.2} ms for {}, {:.2} ms for {}",
            ms(m.db_cpu[0], n),
            sides[0].name,
            ms(m.db_cpu[1], n),
            sides[1].name
        );
    }
    println!("{cpu}");
    Figures {
        what: what.split(" (").next().unwrap_or(what).to_owned(),
        ours: m.ms[0].clone(),
        upstream: m.ms[1].clone(),
    }
}

/// Statement counters per request: what changed in `after` since `before`, less what the
/// two SHOW GLOBAL STATUS themselves add (`idle`), over `n`.
struct Counts(BTreeMap<&'static str, f64>);

const COUNTERS: &[(&str, &str)] = &[
    ("Questions", "Questions"),
    ("execute", "Com_stmt_execute"),
    ("SELECT", "Com_select"),
    ("INSERT", "Com_insert"),
    ("UPDATE", "Com_update"),
    ("BEGIN", "Com_begin"),
    ("COMMIT", "Com_commit"),
    ("ROLLBACK", "Com_rollback"),
    ("prepare", "Com_stmt_prepare"),
    ("ping", "Com_admin_commands"),
];

impl Counts {
    fn new(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        idle: &BTreeMap<&'static str, i64>,
        n: usize,
    ) -> Self {
        Self(
            COUNTERS
                .iter()
                .map(|&(label, var)| {
                    let delta = after.get(var).copied().unwrap_or(0) as i64
                        - before.get(var).copied().unwrap_or(0) as i64
                        - idle.get(var).copied().unwrap_or(0);
                    (label, delta as f64 / n as f64)
                })
                .collect(),
        )
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &(label, _) in COUNTERS {
            write!(
                f,
                " {:>10.1}",
                self.0.get(label).copied().unwrap_or(f64::NAN)
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let start = Instant::now();
    let outcome = run();
    println!("\ntotal wall time: {:.1} s", start.elapsed().as_secs_f64());
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metadata bench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    if std::env::var("BENCH_SECTIONS").as_deref() == Ok("concurrent") {
        return run_concurrent_only();
    }
    // cargo bench passes --bench; a filter argument is accepted and ignored.
    let images = env_usize("BENCH_IMAGES", 1000).min(LIST_LIMIT);
    let requests = env_usize("BENCH_REQUESTS", 500);
    let list_runs = env_usize("BENCH_LIST_RUNS", 30);
    let warmup = env_usize("BENCH_WARMUP", 20);
    let list_warmup = warmup.min(5);

    // Dropped in reverse order: upstream and ours stop before the database servers.
    let (tmp, db_servers, server_url) = workspace()?;
    let db_pids: Vec<u32> = db_servers
        .as_ref()
        .and_then(DbServers::mariadb_pid)
        .into_iter()
        .collect();
    let mut admin = Admin::connect(&server_url)?;
    for name in DATABASES {
        admin.execute(format!("DROP DATABASE IF EXISTS {name}"))?;
        admin.execute(format!("CREATE DATABASE {name}"))?;
    }
    let urls = DATABASES
        .iter()
        .map(|name| with_database(&server_url, name))
        .collect::<Result<Vec<_>>>()?;

    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    println!("glance-api metadata benchmark: glance-api vs upstream Glance 33.0.0, one MariaDB");
    println!(
        "  machine: {cpu}, {} CPUs; state in {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        tmp.path().display()
    );
    println!(
        "  MariaDB {} ({}), databases {} and {}",
        admin.version()?,
        if db_servers.is_some() {
            "started with tests/db/servers.sh"
        } else {
            "at GLANCE_TEST_MYSQL_URL"
        },
        DATABASES[0],
        DATABASES[1]
    );

    let (glance, our_port) = start_ours(&tmp.path().join("ours"), &urls[0])?;
    println!(
        "  glance-api: {} (one process, no cache)",
        env!("CARGO_BIN_EXE_glance-api")
    );
    println!("  starting upstream Glance (glance_api.sh: db_sync, then uWSGI) ...");
    let (upstream, up_port) = start_upstream_with(
        &tmp.path().join("upstream"),
        &[("GLANCE_API_DB_URL", &urls[1])],
    )
    .map_err(|e| format!("upstream Glance did not start: {e}"))?;
    let up_pids = upstream.pid().map(process_tree).unwrap_or_default();
    println!(
        "  upstream: Glance 33.0.0 under uWSGI (http-socket, {} processes: master and workers; \
         its paste flavor has the cache middleware)",
        up_pids.len()
    );
    println!(
        "  client: minimal Rust HTTP/1.1 client, the same for both; a fresh TCP connection \
         per request for both (Connection: close), requests alternated one by one"
    );
    println!(
        "  figures: wall clock per request, connect to last byte; p50/p99 nearest rank \
         (p99 of {list_runs} listings is their slowest); warm-up: {warmup} untimed requests \
         of each kind per server, {list_warmup} of each listing"
    );

    let ours = Side {
        name: "glance-api",
        port: our_port,
        pids: vec![glance.pid()],
    };
    let up = Side {
        name: "upstream",
        port: up_port,
        pids: up_pids,
    };
    let sides = [&ours, &up];
    let db_known = !db_pids.is_empty();
    let mut figures = Vec::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // Create. Warm-up images are raw (the disk_format filter leaves them out) and have
    // no tier; the timed ones are qcow2.
    let mut warm_ids = vec![Vec::new(), Vec::new()];
    measure(
        &sides,
        &db_pids,
        warmup,
        &mut |i, _| {
            let body = create_body(i, &format!("warmup-{i:04}"), "raw", false);
            Req::with_body("POST", "/v2/images".to_owned(), "application/json", &body)
        },
        &mut |i, s, reply| {
            warm_ids[s].push(check_created(reply, &format!("warmup-{i:04}"), false)?);
            Ok(())
        },
    )?;
    let names: Vec<String> = (0..images)
        .map(|i| format!("bench-{:016x}-{i:04}", rng.next()))
        .collect();
    let mut ids = vec![Vec::new(), Vec::new()];
    let m = measure(
        &sides,
        &db_pids,
        images,
        &mut |i, _| {
            let body = create_body(i, &names[i], "qcow2", i % 4 == 0);
            Req::with_body("POST", "/v2/images".to_owned(), "application/json", &body)
        },
        &mut |i, s, reply| {
            ids[s].push(check_created(reply, &names[i], i % 4 == 0)?);
            Ok(())
        },
    )?;
    figures.push(print_figures(
        &format!(
            "create (POST /v2/images: a tag, 2 extra properties, 1 in 4 also tier=gold; \
             {images} images)"
        ),
        &m,
        &sides,
        db_known,
    ));

    // Show.
    let show = |n: usize, rng: &mut Rng| {
        let picks: Vec<usize> = (0..n).map(|_| rng.below(images)).collect();
        measure(
            &sides,
            &db_pids,
            n,
            &mut |i, s| Req::get(format!("/v2/images/{}", ids[s][picks[i]])),
            &mut |i, s, reply| {
                let image = reply.json()?;
                if image["id"] != ids[s][picks[i]].as_str() || image["bench_team"].is_null() {
                    return Err(format!("unexpected image: {image}"));
                }
                Ok(())
            },
        )
    };
    show(warmup, &mut rng)?;
    let m = show(requests, &mut rng)?;
    figures.push(print_figures(
        "show (GET /v2/images/{id}, random images)",
        &m,
        &sides,
        db_known,
    ));

    // Patch: replace bench_seq, add a new property.
    let patch = |targets: &[Vec<String>], picks: &[usize], tag: &str| {
        measure(
            &sides,
            &db_pids,
            picks.len(),
            &mut |i, s| {
                let body = json!([
                    {"op": "replace", "path": "/bench_seq", "value": format!("{tag}-{i}")},
                    {"op": "add", "path": format!("/bench_{tag}_{i}"), "value": "yes"},
                ]);
                Req::with_body(
                    "PATCH",
                    format!("/v2/images/{}", targets[s][picks[i]]),
                    JSON_PATCH,
                    &body,
                )
            },
            &mut |i, _, reply| {
                let image = reply.json()?;
                if image["bench_seq"] != format!("{tag}-{i}").as_str()
                    || image[format!("bench_{tag}_{i}")] != "yes"
                {
                    return Err(format!("patch {i} not applied: {image}"));
                }
                Ok(())
            },
        )
    };
    let warm_picks: Vec<usize> = (0..warmup).map(|i| i % warm_ids[0].len()).collect();
    patch(&warm_ids, &warm_picks, "warm")?;
    let picks: Vec<usize> = (0..requests).map(|_| rng.below(images)).collect();
    let m = patch(&ids, &picks, "patch")?;
    figures.push(print_figures(
        "patch (PATCH /v2/images/{id}: replace a property, add one; random images)",
        &m,
        &sides,
        db_known,
    ));

    // Listings.
    let gold = images.div_ceil(4);
    let gold_path =
        format!("/v2/images?limit={LIST_LIMIT}&tier=gold&sort=name:asc,created_at:desc");
    let all_path = format!("/v2/images?limit={LIST_LIMIT}&disk_format=qcow2&sort=name:asc");
    let id_sets: Vec<HashSet<&str>> = ids
        .iter()
        .map(|v| v.iter().map(String::as_str).collect())
        .collect();
    let list = |path: &str, want: usize, gold_only: bool, n: usize| {
        measure(
            &sides,
            &db_pids,
            n,
            &mut |_, _| Req::get(path.to_owned()),
            &mut |_, s, reply| {
                let listed = listed(reply, want)?;
                names_ascending(&listed)?;
                if listed.iter().any(|i| {
                    !i["id"].as_str().is_some_and(|id| id_sets[s].contains(id))
                        || (gold_only && i["tier"] != "gold")
                        || i["disk_format"] != "qcow2"
                }) {
                    return Err("an image listed that should not be".to_owned());
                }
                if !gold_only {
                    let seen: HashSet<&str> =
                        listed.iter().filter_map(|i| i["id"].as_str()).collect();
                    if seen.len() != want {
                        return Err("an image listed twice".to_owned());
                    }
                }
                Ok(())
            },
        )
    };
    list(&gold_path, gold, true, list_warmup)?;
    let m = list(&gold_path, gold, true, list_runs)?;
    figures.push(print_figures(
        &format!("list {gold} (GET {gold_path})"),
        &m,
        &sides,
        db_known,
    ));
    list(&all_path, images, false, list_warmup)?;
    let m = list(&all_path, images, false, list_runs)?;
    figures.push(print_figures(
        &format!("list {images} (GET {all_path})"),
        &m,
        &sides,
        db_known,
    ));

    // SQL statements per request, one server at a time (the counters are global).
    println!(
        "\nSQL statements per request (MariaDB global status, {COUNT_REQUESTS} requests of a \
         kind to one server at a time, untimed)\n  Questions: statements run; execute: of them \
         prepared-statement executions; SELECT..ROLLBACK: by kind; prepare: statements \
         prepared; ping: COM_PING and other admin commands"
    );
    let idle = {
        let a = admin.status()?;
        let b = admin.status()?;
        COUNTERS
            .iter()
            .map(|&(_, var)| {
                (
                    var,
                    b.get(var).copied().unwrap_or(0) as i64
                        - a.get(var).copied().unwrap_or(0) as i64,
                )
            })
            .collect::<BTreeMap<&'static str, i64>>()
    };
    let mut header = format!("  {:<8} {:<11}", "", "");
    for &(label, _) in COUNTERS {
        let _ = write!(header, " {label:>10}");
    }
    println!("{header}");
    for kind in ["create", "show", "patch", "list"] {
        for (s, side) in sides.iter().enumerate() {
            let one = [*side];
            let before = admin.status()?;
            let mut make = |i: usize, _: usize| match kind {
                "create" => Req::with_body(
                    "POST",
                    "/v2/images".to_owned(),
                    "application/json",
                    &create_body(i, &format!("count-{i:04}"), "raw", false),
                ),
                "show" => Req::get(format!("/v2/images/{}", ids[s][i % ids[s].len()])),
                "patch" => Req::with_body(
                    "PATCH",
                    format!("/v2/images/{}", ids[s][i % ids[s].len()]),
                    JSON_PATCH,
                    &json!([
                        {"op": "replace", "path": "/bench_seq", "value": format!("count-{i}")},
                        {"op": "add", "path": format!("/bench_count_{i}"), "value": "yes"},
                    ]),
                ),
                _ => Req::get(gold_path.clone()),
            };
            measure(&one, &[], COUNT_REQUESTS, &mut make, &mut |_, _, _| Ok(()))?;
            let after = admin.status()?;
            let counts = Counts::new(&before, &after, &idle, COUNT_REQUESTS);
            println!("  {kind:<8} {:<11}{counts}", side.name);
        }
    }

    println!(
        "\ntarget: our p50 at most 1/5 of upstream's (ours/upstream <= {TARGET:.3}) [printed, not asserted]"
    );
    for f in &figures {
        let r = f.p50_ratio();
        println!(
            "  {:<10} p50 {:>8.2} ms vs {:>8.2} ms: ratio {r:.3}: {}",
            f.what,
            f.ours.percentile(50.0),
            f.upstream.percentile(50.0),
            if r <= TARGET { "met" } else { "MISSED" }
        );
    }

    upstream.stop();
    drop(glance);
    concurrent_section(tmp.path(), &server_url, &mut admin)?;
    drop(admin);
    drop(db_servers);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Concurrent PATCHes of one image

/// The bench's directory, and the MariaDB server at GLANCE_TEST_MYSQL_URL or one started
/// here (with its URL).
fn workspace() -> Result<(TempDir, Option<DbServers>, String)> {
    let base = bench_base(1 << 30);
    fs::create_dir_all(&base).context(|| format!("creating {}", base.display()))?;
    remove_stale(&base);
    let tmp = TempDir::new(base.join(format!("{DIR_PREFIX}{}", std::process::id())));
    let (db_servers, server_url) = match std::env::var("GLANCE_TEST_MYSQL_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let (servers, url) = DbServers::start(&tmp.path().join(DB_SERVERS_DIR))?;
            (Some(servers), url)
        }
    };
    Ok((tmp, db_servers, server_url))
}

/// The concurrent section alone: its own MariaDB (or GLANCE_TEST_MYSQL_URL), no upstream.
fn run_concurrent_only() -> Result<()> {
    let (tmp, db_servers, server_url) = workspace()?;
    let mut admin = Admin::connect(&server_url)?;
    concurrent_section(tmp.path(), &server_url, &mut admin)?;
    drop(admin);
    drop(db_servers);
    Ok(())
}

/// PATCH throughput of one image with 1, 8 and 64 clients, for this glance-api and, with
/// BENCH_BASELINE_API, another build.
fn concurrent_section(dir: &Path, server_url: &str, admin: &mut Admin) -> Result<()> {
    let total = env_usize("BENCH_PATCHES", 400);
    let mut builds = vec![(
        "this build".to_owned(),
        PathBuf::from(env!("CARGO_BIN_EXE_glance-api")),
        PathBuf::from(env!("CARGO_BIN_EXE_glance-manage")),
    )];
    if let Ok(api) = std::env::var("BENCH_BASELINE_API") {
        let manage = std::env::var("BENCH_BASELINE_MANAGE")
            .map_err(|_| "BENCH_BASELINE_API needs BENCH_BASELINE_MANAGE".to_owned())?;
        builds.push((
            "baseline".to_owned(),
            PathBuf::from(api),
            PathBuf::from(manage),
        ));
    }
    println!(
        "
concurrent PATCHes of one image ({total} in all, each adding a property of its own; req/s):"
    );
    let mut single = Vec::new();
    for (n, (name, api, manage)) in builds.iter().enumerate() {
        let database = format!("bench_patch_{n}");
        admin.execute(format!("DROP DATABASE IF EXISTS {database}"))?;
        admin.execute(format!("CREATE DATABASE {database}"))?;
        let url = with_database(server_url, &database)?;
        let unlimited = "image_property_quota = -1\n";
        let (server, port) = start_build(&dir.join(&database), &url, api, manage, unlimited)?;
        let mut line = format!("  {name:<11}");
        for clients in [1usize, 8, 64] {
            let (rate, lost) = patch_storm(port, clients, total)?;
            if clients == 1 {
                single.push(rate);
            }
            write!(line, " {clients:>2} clients {rate:>8.1}").map_err(|e| e.to_string())?;
            if lost > 0 {
                if n == 0 {
                    return Err(format!("{clients} clients: {lost} updates lost"));
                }
                write!(line, " ({lost} lost)").map_err(|e| e.to_string())?;
            }
        }
        println!("{line}");
        drop(server);
        admin.execute(format!("DROP DATABASE {database}"))?;
    }
    if let [ours, baseline] = single[..] {
        println!(
            "  single-client PATCH throughput, this build / baseline: {:.3} (target >= 0.8) [printed, not asserted]",
            ours / baseline
        );
    }
    Ok(())
}

/// db_sync with `manage`, then `api` on a free port with `extra` lines in `[DEFAULT]`;
/// waits for /healthcheck.
fn start_build(
    dir: &Path,
    url: &str,
    api: &Path,
    manage: &Path,
    extra: &str,
) -> Result<(Server, u16)> {
    fs::create_dir_all(dir.join("images")).context(|| format!("creating {}", dir.display()))?;
    let port = free_port();
    let conf = our_conf(dir, port, url)?;
    let text = fs::read_to_string(&conf).context(|| "reading the config".to_owned())?;
    fs::write(
        &conf,
        text.replacen("[DEFAULT]\n", &format!("[DEFAULT]\n{extra}"), 1),
    )
    .context(|| "writing the config".to_owned())?;
    let out = Command::new(manage)
        .arg("--config-file")
        .arg(&conf)
        .arg("db_sync")
        .env_remove("RUST_LOG")
        .output()
        .context(|| "running glance-manage db_sync".to_owned())?;
    if !out.status.success() {
        return Err(format!(
            "glance-manage db_sync failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut cmd = Command::new(api);
    cmd.arg("--config-file").arg(&conf).env_remove("RUST_LOG");
    let mut server = Server::spawn("glance-api", cmd, dir.join("glance-api.log"));
    wait_ready(&mut server, || {
        request(port, &Req::get("/healthcheck".to_owned())).is_ok_and(|r| r.status == 200)
    });
    Ok((server, port))
}

/// `total` PATCHes of one new image from `clients` threads at once: requests per second,
/// and how many of the properties they added are missing afterwards (lost updates).
/// Fails unless every PATCH answered 200.
fn patch_storm(port: u16, clients: usize, total: usize) -> Result<(f64, usize)> {
    let created = request(
        port,
        &Req::with_body(
            "POST",
            "/v2/images".to_owned(),
            "application/json",
            &json!({"name": format!("storm-{clients}")}),
        ),
    )?;
    let id = created.json()?["id"]
        .as_str()
        .ok_or("no image id")?
        .to_owned();
    let per_client = total / clients;
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let id = id.clone();
            thread::spawn(move || -> Result<()> {
                for i in 0..per_client {
                    let reply = request(
                        port,
                        &Req::with_body(
                            "PATCH",
                            format!("/v2/images/{id}"),
                            JSON_PATCH,
                            &json!([{"op": "add", "path": format!("/c{c}_{i}"), "value": "x"}]),
                        ),
                    )?;
                    if reply.status != 200 {
                        return Err(format!("PATCH answered {}", reply.status));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| "a client panicked".to_owned())??;
    }
    let rate = (per_client * clients) as f64 / started.elapsed().as_secs_f64();
    let shown = request(port, &Req::get(format!("/v2/images/{id}")))?.json()?;
    let kept = (0..clients)
        .flat_map(|c| (0..per_client).map(move |i| format!("c{c}_{i}")))
        .filter(|k| shown.get(k).is_some())
        .count();
    Ok((rate, per_client * clients - kept))
}
