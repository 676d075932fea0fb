//! Helpers shared by the benches (`mod common;` in benches/api.rs, benches/metadata.rs
//! and benches/s3.rs): environment, temp directories, server processes, test data, CPU
//! and memory of processes, control requests, CPU placement, curl as the timed client,
//! glance-api started as the release binary, sample figures and their tables, and
//! upstream Glance started by benches/upstream/glance_api.sh.
// Each bench uses a part of this module.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::Value;

pub const DIR_PREFIX: &str = "glance-api-bench-";
/// The subdirectory of a bench directory where a bench runs `tests/db/servers.sh`; the
/// servers of a killed bench are stopped before its directory is removed.
pub const DB_SERVERS_DIR: &str = "db-servers";
/// The subdirectory of a bench directory where a bench runs `tests/s3/rgw.sh`; likewise.
pub const RGW_DIR: &str = "rgw";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Free bytes of the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we pass; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Where the data goes: BENCH_DIR, else /dev/shm when `needed` bytes fit, else target/.
pub fn bench_base(needed: u64) -> PathBuf {
    if let Some(dir) = std::env::var_os("BENCH_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && free_bytes(shm).is_some_and(|free| free > needed) {
        return shm.to_owned();
    }
    root().join("target")
}

/// Removes directories left by benches that were killed (their process is gone).
pub fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            println!("removing {} left by a killed bench", entry.path().display());
            for (dir, script) in [
                (DB_SERVERS_DIR, "tests/db/servers.sh"),
                (RGW_DIR, "tests/s3/rgw.sh"),
            ] {
                let servers = entry.path().join(dir);
                if servers.is_dir() {
                    let _ = Command::new("bash")
                        .arg(root().join(script))
                        .arg("stop")
                        .arg(&servers)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(path: PathBuf) -> Self {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create the bench directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A server process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` with its output in `log`. The child gets SIGTERM if the bench dies.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let out = File::create(&log).expect("create the server log");
        let err = out.try_clone().expect("clone the log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { name, child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the log when the process has exited.
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("{} exited ({status}); its log:\n{tail}", self.name);
        }
    }

    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Waits until `ready()` holds, failing when the server exits or 30 s pass.
pub fn wait_ready(server: &mut Server, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        server.check_alive();
        if ready() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready after 30 s (log: {})",
            server.name,
            server.log.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `pid` and its descendants (nginx's workers are its master's children).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", all[i]));
        all.extend(
            children
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
        i += 1;
    }
    all
}

#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    pub fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The nearest-rank `p`th percentile (0 < p <= 100): the smallest sample with at least
    /// p % of the samples at or below it. NaN when there are none.
    pub fn percentile(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// "median (min–max)".
    pub fn show(&self) -> String {
        let v = self.sorted();
        format!(
            "{:.2} GB/s (min {:.2}, max {:.2}, n={})",
            self.median(),
            v[0],
            v[v.len() - 1],
            v.len()
        )
    }
}

/// Upstream Glance under uWSGI, started by benches/upstream/glance_api.sh; stopped on drop.
pub struct Upstream(PathBuf);

impl Upstream {
    /// The uWSGI master's PID.
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(self.0.join("uwsgi.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// Stops uWSGI and waits (at most 30 s) until its master has exited.
    pub fn stop(self) {
        let pid = self.pid();
        drop(self);
        let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // SAFETY: signal 0 only asks whether the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(pid) = self.pid().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: signals the uWSGI master the script started for this bench.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// Starts upstream Glance 33.0.0 with the cache on; None when it cannot be installed or run.
pub fn start_upstream(dir: &Path) -> Option<(Upstream, u16)> {
    match start_upstream_with(dir, &[]) {
        Ok(started) => Some(started),
        Err(e) => {
            println!("  upstream Glance did not start: {e}");
            None
        }
    }
}

/// Starts upstream Glance 33.0.0 with glance_api.sh's environment `env` (e.g.
/// GLANCE_API_DB_URL) on a free port; the error is what the script said.
pub fn start_upstream_with(dir: &Path, env: &[(&str, &str)]) -> Result<(Upstream, u16), String> {
    let port = free_port();
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("benches/upstream/glance_api.sh"))
        .arg(dir)
        .arg(port.to_string());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running glance_api.sh: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok((Upstream(dir.to_owned()), port))
}

// ---------------------------------------------------------------------------------------
// Sizes, data and digests

pub const MIB: u64 = 1 << 20;

/// Writes `size` pseudo-random bytes (xorshift64*, so nothing compresses or dedups).
pub fn make_data(path: &Path, size: u64, seed: u64) {
    let mut out = BufWriter::with_capacity(MIB as usize, File::create(path).expect("create"));
    let mut state = seed | 1;
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        out.write_all(&buf[..n]).expect("write data");
        left -= n as u64;
    }
    out.into_inner()
        .expect("flush")
        .sync_all()
        .expect("sync data");
}

/// Runs `tool FILE` (md5sum, sha512sum); returns the hex digest and the wall time.
pub fn hash_tool(tool: &str, file: &Path) -> (String, f64) {
    let start = Instant::now();
    let out = Command::new(tool)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{tool} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let digest = text.split_whitespace().next().expect("digest").to_owned();
    (digest, secs)
}

/// The CPU model and count, and where the data lives, for the head of a report.
pub fn machine(data: &Path) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    format!(
        "{cpu}, {} CPUs; data in {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        data.display()
    )
}

// ---------------------------------------------------------------------------------------
// Memory and CPU of processes

/// One field (in kB) of /proc/<pid>/status, in MiB.
pub fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) of `pid` so far, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// CPU time (user + system) of this process's children that have been waited for, in
/// seconds: a difference of two readings is what the clients run meanwhile took.
pub fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The CPU time a server's processes (e.g. nginx's master and workers) spend on what is
/// measured, and the bytes it served meanwhile.
pub struct CpuMeter {
    pids: Vec<u32>,
    pub secs: f64,
    pub bytes: u64,
}

impl CpuMeter {
    /// `pid` and its descendants.
    pub fn new(pid: u32) -> Self {
        Self {
            pids: process_tree(pid),
            secs: 0.0,
            bytes: 0,
        }
    }

    pub fn now(&self) -> f64 {
        self.pids.iter().map(|&p| cpu_secs(p)).sum()
    }

    /// Runs `f`, which returns the bytes it moved, and counts the server CPU it took.
    pub fn measure(&mut self, f: impl FnOnce() -> u64) {
        let before = self.now();
        let bytes = f();
        self.secs += self.now() - before;
        self.bytes += bytes;
    }

    /// CPU milliseconds per GiB moved.
    pub fn ms_per_gib(&self) -> f64 {
        self.secs * 1e3 / (self.bytes as f64 / (1u64 << 30) as f64)
    }

    /// "N ms per GiB" of server CPU.
    pub fn show(&self) -> String {
        format!("{:.0} ms CPU per GiB", self.ms_per_gib())
    }
}

// ---------------------------------------------------------------------------------------
// Control requests (ureq): not timed

pub struct Api {
    pub agent: ureq::Agent,
    pub base: String,
}

impl Api {
    pub fn new(port: u16) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            agent,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// Status and body; None when the server cannot be reached.
    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        json: Option<&Value>,
    ) -> Option<(u16, String)> {
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        let response = match json {
            Some(body) => self.agent.run(
                request
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .ok()?,
            ),
            None => self.agent.run(request.body(()).ok()?),
        };
        let mut response = response.ok()?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Some((status, body))
    }

    pub fn call(&self, method: &str, path: &str, json: Option<&Value>) -> (u16, String) {
        self.try_call(method, path, json)
            .unwrap_or_else(|| panic!("{method} {}{path}: no answer", self.base))
    }

    pub fn expect(&self, method: &str, path: &str, json: Option<&Value>, status: u16) -> String {
        let (got, body) = self.call(method, path, json);
        assert_eq!(got, status, "{method} {path}: {body}");
        body
    }

    pub fn create_image(&self, name: &str) -> String {
        let body = serde_json::json!({
            "name": name, "disk_format": "raw", "container_format": "bare"
        });
        let answer = self.expect("POST", "/v2/images", Some(&body), 201);
        let image: Value = serde_json::from_str(&answer).expect("image JSON");
        image["id"].as_str().expect("image id").to_owned()
    }

    pub fn image(&self, id: &str) -> Value {
        serde_json::from_str(&self.expect("GET", &format!("/v2/images/{id}"), None, 200))
            .expect("image JSON")
    }

    pub fn is_cached(&self, id: &str) -> bool {
        let listing: Value =
            serde_json::from_str(&self.expect("GET", "/v2/cache", None, 200)).expect("JSON");
        listing["cached_images"]
            .as_array()
            .expect("cached_images")
            .iter()
            .any(|e| e["image_id"] == id)
    }

    /// Polls GET /v2/cache until `id` is cached; returns how long that took.
    pub fn wait_cached(&self, id: &str, poll: Duration) -> Duration {
        let start = Instant::now();
        while !self.is_cached(id) {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "image {id} not cached after 120 s"
            );
            thread::sleep(poll);
        }
        start.elapsed()
    }

    pub fn uncache(&self, id: &str) {
        self.expect("DELETE", &format!("/v2/cache/{id}"), None, 204);
        assert!(!self.is_cached(id), "image {id} still cached after DELETE");
    }

    /// Full GET of `path` on this server, untimed: see [`verify_url`].
    pub fn verify_download(&self, path: &str, size: u64, md5: &str, md5_header: bool) {
        verify_url(
            &self.agent,
            &format!("{}{path}", self.base),
            size,
            md5,
            md5_header,
        );
    }
}

/// Full GET of `url`, untimed: checks status, Content-Length, Content-MD5 (when
/// `md5_header`) and the MD5 of the body.
pub fn verify_url(agent: &ureq::Agent, url: &str, size: u64, md5: &str, md5_header: bool) {
    let response = agent.get(url).call().expect("GET for verification");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("content-length").as_deref(),
        Some(size.to_string().as_str()),
        "Content-Length of {url}"
    );
    if md5_header {
        assert_eq!(header("content-md5").as_deref(), Some(md5), "Content-MD5");
    }
    let mut reader = response.into_body().into_reader();
    let mut digest = Md5::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).expect("read the body");
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        total += n as u64;
    }
    assert_eq!(total, size, "bytes of {url}");
    assert_eq!(hex::encode(digest.finalize()), md5, "MD5 of {url}");
}

// ---------------------------------------------------------------------------------------
// Placement: servers on SERVER_CPU and curl clients on CLIENT_CPU. Left to the scheduler,
// a run's figure depends on whether client and server happened to share a CPU (both sides
// of a cached-GET comparison then varied by 2x between runs). BENCH_PIN=0 turns it off;
// it needs two CPUs and taskset.

pub const SERVER_CPU: &str = "0";
pub const CLIENT_CPU: &str = "1";
/// The CPUs of the curl clients started now, when a [`Placement`] pins them.
static CLIENT_CPUS: Mutex<Option<&'static str>> = Mutex::new(None);

pub fn pinning_possible() -> bool {
    std::env::var("BENCH_PIN").map_or(true, |v| v != "0")
        && thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Sets the CPUs of every thread of `pid` and its descendants.
pub fn set_cpus(pid: u32, cpus: &str) {
    for p in process_tree(pid) {
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &p.to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset -a -p -c {cpus} {p}");
    }
}

/// Each process tree of `servers` on its CPUs and the curl clients on `clients` while it
/// lives; all CPUs again after.
pub struct Placement {
    servers: Vec<u32>,
}

impl Placement {
    /// None (and nothing pinned) when pinning is off or impossible.
    pub fn new(servers: &[(u32, &str)], clients: &'static str) -> Option<Placement> {
        if !pinning_possible() {
            return None;
        }
        for &(pid, cpus) in servers {
            set_cpus(pid, cpus);
        }
        *CLIENT_CPUS.lock().unwrap_or_else(|e| e.into_inner()) = Some(clients);
        Some(Placement {
            servers: servers.iter().map(|&(pid, _)| pid).collect(),
        })
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        *CLIENT_CPUS.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let all = format!(
            "0-{}",
            thread::available_parallelism().map_or(1, |n| n.get()) - 1
        );
        for &pid in &self.servers {
            set_cpus(pid, &all);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The timed client: curl

/// `curl -s`, on the client CPUs while a [`Placement`] pins them.
pub fn curl() -> Command {
    match *CLIENT_CPUS.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(cpus) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", cpus, "curl", "-s"]);
            taskset
        }
        None => {
            let mut curl = Command::new("curl");
            curl.arg("-s");
            curl
        }
    }
}

/// A GET of `url` to /dev/null printing "code bytes seconds" (see [`parse_curl`]).
pub fn curl_get_url(url: &str) -> Command {
    let mut cmd = curl();
    cmd.args(["-o", "/dev/null", "-w"])
        .arg("%{http_code} %{size_download} %{time_total}")
        .arg(url);
    cmd
}

pub fn curl_get(port: u16, path: &str) -> Command {
    curl_get_url(&format!("http://127.0.0.1:{port}{path}"))
}

/// Parses "code bytes seconds" and checks the code.
pub fn parse_curl(stdout: &[u8], want: u16) -> (u64, f64) {
    let text = String::from_utf8_lossy(stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 3, "curl printed {text:?}");
    assert_eq!(f[0].parse::<u16>().ok(), Some(want), "HTTP status: {text}");
    (f[1].parse().expect("size"), f[2].parse().expect("time"))
}

/// Full GET of `url` with curl; returns (bytes, seconds as curl timed them). Asserts 200.
pub fn curl_fetch(url: &str) -> (u64, f64) {
    let out = curl_get_url(url).output().expect("run curl");
    parse_curl(&out.stdout, 200)
}

/// PUT of `file` as application/octet-stream with curl -T; returns (status, bytes sent,
/// seconds as curl timed them).
pub fn curl_put(port: u16, path: &str, file: &Path) -> (u16, u64, f64) {
    let out = curl()
        .args(["-o", "/dev/null", "-w"])
        .arg("%{http_code} %{size_upload} %{time_total}")
        .args(["-H", "Content-Type: application/octet-stream"])
        .args(["-H", "Expect:"])
        .arg("-T")
        .arg(file)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 3, "curl printed {text:?}");
    (
        f[0].parse().expect("status"),
        f[1].parse().expect("size"),
        f[2].parse().expect("time"),
    )
}

// ---------------------------------------------------------------------------------------
// glance-api: the release binary cargo builds for the bench

/// The store part of a configuration (see [`glance_conf`]): one file store in `dir`/images.
pub fn file_stores(dir: &Path) -> String {
    let dir = fs::canonicalize(dir).expect("absolute path");
    format!(
        "enabled_backends = default_backend:file\n\
         [glance_store]\n\
         default_backend = default_backend\n\
         [default_backend]\n\
         filesystem_store_datadir = {}/images\n",
        dir.display()
    )
}

/// Writes glance-api.conf for `port` with its state (catalogue, cache) in `dir` and the
/// stores `stores` says: options of [DEFAULT] (enabled_backends), then sections.
pub fn glance_conf(dir: &Path, port: u16, stores: &str) -> PathBuf {
    let dir = fs::canonicalize(dir).expect("absolute path");
    let d = dir.display();
    let text = format!(
        "[DEFAULT]\n\
         bind_host = 127.0.0.1\n\
         bind_port = {port}\n\
         image_cache_dir = {d}/image-cache\n\
         image_cache_max_size = 10737418240\n\
         {stores}\
         [database]\n\
         connection = sqlite:///{d}/glance.sqlite\n\
         [paste_deploy]\n\
         flavor = cachemanagement\n"
    );
    let path = dir.join(format!("glance-api-{port}.conf"));
    fs::write(&path, text).expect("write glance-api.conf");
    path
}

/// Starts glance-api on a free port with its state in `dir` and `stores` (see
/// [`glance_conf`]); waits for /healthcheck.
pub fn start_glance(dir: &Path, stores: &str) -> (Server, Api) {
    let port = free_port();
    let conf = glance_conf(dir, port, stores);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glance-api"));
    cmd.arg("--config-file").arg(&conf).env_remove("RUST_LOG");
    let mut server = Server::spawn(
        "glance-api",
        cmd,
        dir.join(format!("glance-api-{port}.log")),
    );
    let api = Api::new(port);
    wait_ready(&mut server, || {
        api.try_call("GET", "/healthcheck", None)
            .is_some_and(|(s, _)| s == 200)
    });
    (server, api)
}

// ---------------------------------------------------------------------------------------
// Figures

pub fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

/// A line of a summary table.
pub struct Row {
    pub what: String,
    pub ours: String,
    pub reference: String,
    /// The ratio and its target.
    pub ratio: Option<(f64, f64)>,
}

/// Prints glance-api's figure, the reference's and their ratio, and adds a summary row.
pub fn compare(
    rows: &mut Vec<Row>,
    what: &str,
    ours: &Samples,
    reference_name: &str,
    reference: &Samples,
    target: f64,
) {
    compare_as(
        rows,
        what,
        ("glance-api:", ours),
        (reference_name, reference),
        target,
    );
}

/// [`compare`] with our side named `ours_name` (e.g. "cache hit:").
pub fn compare_as(
    rows: &mut Vec<Row>,
    what: &str,
    (ours_name, ours): (&str, &Samples),
    (reference_name, reference): (&str, &Samples),
    target: f64,
) {
    let ratio = ours.median() / reference.median();
    println!("  {ours_name:<13} {}", ours.show());
    println!("  {reference_name:<13} {}", reference.show());
    let ours_short = match ours_name.trim_end_matches(':') {
        "glance-api" => "ours",
        other => other,
    };
    println!(
        "  ratio {ours_short}/{}: {ratio:.3} (target >= {target}: {})",
        reference_name.trim_end_matches(':'),
        if ratio >= target { "met" } else { "MISSED" }
    );
    rows.push(Row {
        what: what.to_owned(),
        ours: format!("{:.2} GB/s", ours.median()),
        reference: format!(
            "{} {:.2} GB/s",
            reference_name.trim_end_matches(':'),
            reference.median()
        ),
        ratio: Some((ratio, target)),
    });
}

pub fn print_cpu(ours: &CpuMeter, theirs: Option<&CpuMeter>) {
    match theirs {
        Some(theirs) => println!(
            "  server CPU: glance-api {}, nginx {}",
            ours.show(),
            theirs.show()
        ),
        None => println!("  server CPU: glance-api {}", ours.show()),
    }
}

/// Prints the summary table of `rows`, headed by `title`.
pub fn print_summary(title: &str, rows: &[Row]) {
    println!("\nsummary ({title})");
    println!(
        "  {:<30} {:>18}  {:<26} ratio (target)",
        "", "glance-api", "reference"
    );
    for row in rows {
        let ratio = row.ratio.map_or(String::new(), |(r, t)| {
            format!("{r:.3} (>= {t}{})", if r >= t { "" } else { ", MISSED" })
        });
        println!(
            "  {:<30} {:>18}  {:<26} {ratio}",
            row.what, row.ours, row.reference
        );
    }
}

/// Runs `a` then `b` on even runs, `b` then `a` on odd ones.
pub fn interleave(runs: usize, mut a: impl FnMut(), mut b: impl FnMut()) {
    for i in 0..runs {
        if i % 2 == 0 {
            a();
            b();
        } else {
            b();
            a();
        }
    }
}
