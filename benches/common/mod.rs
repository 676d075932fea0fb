//! Helpers shared by the benches (`mod common;` in benches/api.rs and benches/metadata.rs):
//! environment, temp directories, server processes, sample figures, and upstream Glance
//! started by benches/upstream/glance_api.sh.
// Each bench uses a part of this module.
#![allow(dead_code)]

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const DIR_PREFIX: &str = "glance-api-bench-";
/// The subdirectory of a bench directory where a bench runs `tests/db/servers.sh`; the
/// servers of a killed bench are stopped before its directory is removed.
pub const DB_SERVERS_DIR: &str = "db-servers";

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
            let servers = entry.path().join(DB_SERVERS_DIR);
            if servers.is_dir() {
                let _ = Command::new("bash")
                    .arg(root().join("tests/db/servers.sh"))
                    .arg("stop")
                    .arg(&servers)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
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
