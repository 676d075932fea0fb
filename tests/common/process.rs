//! glance-api as a real process of its own: a replica that a test can kill with
//! SIGKILL, as a node dies.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running glance-api process; killed when dropped.
pub struct Process {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its config file.
    pub conf: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    child: Child,
}

/// A free loopback port (bound, then released for the process to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Process {
    /// Starts glance-api with the config `text`, whose `bind_port` must be `port`, and
    /// waits until it answers `/healthcheck`. `name` names its files in `dir`.
    pub fn start(dir: &Path, name: &str, port: u16, text: &str) -> Process {
        Self::start_logging(dir, name, port, text, "info")
    }

    /// [`Process::start`] with `RUST_LOG` at `filter`.
    pub fn start_logging(dir: &Path, name: &str, port: u16, text: &str, filter: &str) -> Process {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, text).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_glance-api"))
            .arg("--config-file")
            .arg(&conf)
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn glance-api");
        let mut process = Process {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            conf,
            log,
            child,
        };
        process.wait_ready();
        process
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("glance-api exited ({status}): {}", self.log_text());
            }
            let up = ureq::get(format!("http://{}/healthcheck", self.addr))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "glance-api did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The lines it logged at WARN or ERROR so far.
    pub fn warnings(&self) -> String {
        self.log_text()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of its `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("process status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("memory field")
    }

    /// SIGKILL: the process dies at once, in the middle of whatever it does.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// glance-api's resident memory now: (the pages of its own executable, everything else).
/// The first are code and static data, which depend on how it was built: this
/// unoptimised test build's are several times a release build's.
pub fn rss_split(pid: u32, exe: &str) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut code, mut data) = (0, 0);
    let mut own = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            own = line.ends_with(exe);
        } else if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: u64 = kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            if own {
                code += kib * 1024;
            } else {
                data += kib * 1024;
            }
        }
    }
    (code, data)
}
