//! glance-api data-path benchmark: prints figures, asserts nothing about time. It does
//! assert correctness: status codes, byte counts, MD5/SHA-512 of what was stored and
//! served, and that an uncached GET really filled the cache (the tee path).
//!
//! 1. cached GET of a 1 GiB image: glance-api vs nginx (sendfile) serving the same bytes;
//! 2. uncached GET of that image (streamed from the store while the cache is filled, the
//!    cached copy deleted with DELETE /v2/cache/{id} before each run) vs `md5sum` of the file;
//! 3. upload (PUT) of the 1 GiB file to a new image vs `sha512sum` of the file;
//! 4. 8 concurrent cached GETs of a 256 MiB image: glance-api vs nginx, aggregate rate;
//! 5. RSS of glance-api: idle after start, and at most while it prefetches the 1 GiB image
//!    (PUT /v2/cache/{id}), sampled every 10 ms.
//!
//! Everything runs on loopback. One client serves both sides of a comparison: curl by
//! default (`curl -s -o /dev/null -w ...`), or BENCH_CLIENT=rust for a minimal blocking
//! HTTP/1.1 client in this file. Figures are medians of BENCH_RUNS runs (default 5), the
//! two sides of a comparison interleaved run by run; ratios come from the same run.
//!
//! In sections 1 and 4 the servers (glance-api, nginx and its workers) run on CPU 0 and the
//! curl clients on CPU 1, the same for both sides, when there are two CPUs and taskset
//! (BENCH_PIN=0 leaves placement to the scheduler).
//!
//! The data lives on /dev/shm when it has room (BENCH_DIR to choose), else under target/.
//! nginx is installed with apt-get (nginx-light, else nginx) when missing; when that is
//! impossible the nginx sides are skipped (BENCH_SKIP_NGINX=1 skips them on purpose).
//! Servers are stopped when the bench ends, panics included; a temp directory left by a
//! bench that was killed is removed by the next run.
//!
//! Run: `cargo bench --bench api` (BENCH_SECTIONS=1,4 runs only those sections).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::{
    Api, CLIENT_CPU, CpuMeter, DIR_PREFIX, MIB, Placement, Row, SERVER_CPU, Samples, Server,
    TempDir, bench_base, compare, curl_get, curl_put, env_flag, env_usize, file_stores, free_port,
    gbps, hash_tool, interleave, machine, make_data, parse_curl, print_cpu, print_summary,
    proc_status_mib, remove_stale, start_glance, start_upstream, wait_ready,
};

const BIG: u64 = 1 << 30;
const SMALL: u64 = 256 * MIB;
const CONCURRENCY: usize = 8;

// ---------------------------------------------------------------------------------------
// The timed client: curl, or a minimal Rust HTTP/1.1 client

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Curl,
    Rust,
}

impl Client {
    fn from_env() -> Self {
        match std::env::var("BENCH_CLIENT").as_deref() {
            Ok("rust") => Client::Rust,
            Ok("curl") | Err(_) => Client::Curl,
            Ok(other) => panic!("BENCH_CLIENT={other:?}: use curl or rust"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Client::Curl => "curl",
            Client::Rust => "minimal Rust HTTP/1.1 client (1 MiB reads)",
        }
    }

    /// Full GET; returns (bytes, seconds). Asserts 200.
    fn get(self, port: u16, path: &str) -> (u64, f64) {
        match self {
            Client::Curl => {
                let out = curl_get(port, path).output().expect("run curl");
                parse_curl(&out.stdout, 200)
            }
            Client::Rust => rust_get(port, path),
        }
    }

    /// `n` GETs at once; returns (total bytes, wall seconds from start to the last byte).
    fn get_concurrent(self, port: u16, path: &str, n: usize) -> (u64, f64) {
        match self {
            Client::Curl => {
                let mut cmds: Vec<Command> = (0..n).map(|_| curl_get(port, path)).collect();
                let start = Instant::now();
                let children: Vec<Child> = cmds
                    .iter_mut()
                    .map(|c| c.stdout(Stdio::piped()).spawn().expect("run curl"))
                    .collect();
                let outputs: Vec<_> = children
                    .into_iter()
                    .map(|c| c.wait_with_output().expect("wait for curl"))
                    .collect();
                let secs = start.elapsed().as_secs_f64();
                let bytes = outputs.iter().map(|o| parse_curl(&o.stdout, 200).0).sum();
                (bytes, secs)
            }
            Client::Rust => {
                let barrier = Arc::new(Barrier::new(n + 1));
                let threads: Vec<_> = (0..n)
                    .map(|_| {
                        let barrier = barrier.clone();
                        let path = path.to_owned();
                        thread::spawn(move || {
                            barrier.wait();
                            rust_get(port, &path).0
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                let bytes = threads
                    .into_iter()
                    .map(|t| t.join().expect("client thread"))
                    .sum();
                (bytes, start.elapsed().as_secs_f64())
            }
        }
    }

    /// PUT of `file` as application/octet-stream; returns (status, bytes sent, seconds).
    fn put(self, port: u16, path: &str, file: &Path) -> (u16, u64, f64) {
        match self {
            Client::Curl => curl_put(port, path, file),
            Client::Rust => rust_put(port, path, file),
        }
    }
}

/// Reads a response head from `s` into `buf`: (status, content-length, body bytes already
/// read past the head).
fn read_head(s: &mut TcpStream, buf: &mut [u8]) -> (u16, Option<u64>, u64) {
    let mut filled = 0;
    loop {
        let n = s.read(&mut buf[filled..]).expect("read the response");
        assert!(n > 0, "connection closed inside the response head");
        filled += n;
        if let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status line");
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            });
            return (status, length, (filled - end - 4) as u64);
        }
        assert!(filled < buf.len(), "response head too long");
    }
}

fn rust_get(port: u16, path: &str) -> (u64, f64) {
    let mut buf = vec![0u8; MIB as usize];
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("send the request");
    let (status, length, mut got) = read_head(&mut s, &mut buf);
    assert_eq!(status, 200, "GET {path}");
    let want = length.expect("Content-Length");
    while got < want {
        let n = s.read(&mut buf).expect("read the body");
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    (got, start.elapsed().as_secs_f64())
}

fn rust_put(port: u16, path: &str, file: &Path) -> (u16, u64, f64) {
    let mut buf = vec![0u8; MIB as usize];
    let mut data = File::open(file).expect("open the upload");
    let size = data.metadata().expect("stat").len();
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("send the request");
    let mut sent = 0u64;
    loop {
        let n = data.read(&mut buf).expect("read the upload");
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).expect("send the body");
        sent += n as u64;
    }
    let (status, _, _) = read_head(&mut s, &mut buf);
    (status, sent, start.elapsed().as_secs_f64())
}

fn find_nginx() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    candidates.extend(["/usr/sbin/nginx", "/usr/local/sbin/nginx"].map(PathBuf::from));
    candidates.into_iter().find(|p| p.is_file())
}

/// nginx, installed with apt-get when missing; None when it cannot be had.
fn ensure_nginx() -> Option<PathBuf> {
    if env_flag("BENCH_SKIP_NGINX") {
        return None;
    }
    if let Some(found) = find_nginx() {
        return Some(found);
    }
    println!("nginx not found: installing it with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = || {
        ["nginx-light", "nginx"]
            .iter()
            .any(|pkg| apt(&["install", "-y", "-q", pkg]) && find_nginx().is_some())
    };
    if install() || (apt(&["update", "-q"]) && install()) {
        return find_nginx();
    }
    println!(
        "WARNING: could not install nginx (try `apt-get install -y nginx-light` as root); \
         the nginx comparisons are skipped"
    );
    None
}

/// Starts nginx serving `root` (sendfile on; tcp_nopush on) on a free port.
fn start_nginx(nginx: &Path, dir: &Path, root: &Path) -> (Server, u16) {
    fs::create_dir_all(dir).expect("nginx dir");
    let d = fs::canonicalize(dir).expect("absolute path");
    let root = fs::canonicalize(root).expect("absolute path");
    let port = free_port();
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;\n"
    } else {
        ""
    };
    // Temp paths of modules nginx-light may lack are dropped if `nginx -t` rejects them.
    let optional = [
        "proxy_temp_path",
        "fastcgi_temp_path",
        "uwsgi_temp_path",
        "scgi_temp_path",
    ];
    let write = |with_optional: bool| {
        let temps: String = optional
            .iter()
            .filter(|_| with_optional)
            .map(|t| format!("    {t} {}/{t};\n", d.display()))
            .collect();
        let text = format!(
            "{user}worker_processes auto;\n\
             daemon off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   sendfile on;\n\
             \x20   tcp_nopush on;\n\
             \x20   default_type application/octet-stream;\n\
             \x20   client_body_temp_path {d}/client_body_temp_path;\n\
             {temps}\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       root {root};\n\
             \x20   }}\n\
             }}\n",
            d = d.display(),
            root = root.display(),
        );
        let conf = d.join("nginx.conf");
        fs::write(&conf, text).expect("write nginx.conf");
        conf
    };
    let test = |conf: &Path| {
        Command::new(nginx)
            .arg("-t")
            .arg("-q")
            .arg("-c")
            .arg(conf)
            .arg("-e")
            .arg(d.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut conf = write(true);
    if !test(&conf) {
        conf = write(false);
        if !test(&conf) {
            let out = Command::new(nginx)
                .args(["-t", "-c"])
                .arg(&conf)
                .arg("-e")
                .arg(d.join("error.log"))
                .output()
                .expect("nginx -t");
            panic!(
                "nginx rejects {}: {}",
                conf.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut cmd = Command::new(nginx);
    cmd.arg("-c").arg(&conf).arg("-e").arg(d.join("error.log"));
    let mut server = Server::spawn("nginx", cmd, d.join("nginx.out"));
    let api = Api::new(port);
    wait_ready(&mut server, || api.try_call("GET", "/", None).is_some());
    (server, port)
}

fn nginx_version(nginx: &Path) -> String {
    Command::new(nginx)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------

/// A cached-GET comparison of glance-api with nginx (when it runs), placed as
/// [`Placement`] says: a warm-up, then `runs` interleaved runs of `fetch` on each side,
/// each moving `total` bytes; prints the rates, their ratio and the servers' CPU.
fn against_nginx(
    rows: &mut Vec<Row>,
    what: &str,
    runs: usize,
    (glance, port, path): (&Server, u16, &str),
    nginx: Option<(&Server, u16, &str)>,
    total: u64,
    fetch: impl Fn(u16, &str) -> (u64, f64),
) {
    let mut servers = vec![glance.pid()];
    servers.extend(nginx.map(|(s, _, _)| s.pid()));
    let pins: Vec<(u32, &str)> = servers.iter().map(|&pid| (pid, SERVER_CPU)).collect();
    let placement = Placement::new(&pins, CLIENT_CPU);
    match &placement {
        Some(_) => println!("  placement: servers on CPU {SERVER_CPU}, curl on CPU {CLIENT_CPU}"),
        None => println!("  placement: left to the scheduler"),
    }
    let timed = |meter: &mut CpuMeter, samples: &mut Samples, port: u16, path: &str| {
        meter.measure(|| {
            let (bytes, secs) = fetch(port, path);
            assert_eq!(bytes, total);
            samples.push(gbps(bytes, secs));
            bytes
        })
    };
    // Warm-up, untimed.
    fetch(port, path);
    let mut ours = Samples::new();
    let mut our_cpu = CpuMeter::new(glance.pid());
    match nginx {
        Some((server, nginx_port, nginx_path)) => {
            fetch(nginx_port, nginx_path);
            let mut theirs = Samples::new();
            let mut their_cpu = CpuMeter::new(server.pid());
            interleave(
                runs,
                || timed(&mut our_cpu, &mut ours, port, path),
                || timed(&mut their_cpu, &mut theirs, nginx_port, nginx_path),
            );
            compare(rows, what, &ours, "nginx:", &theirs, 0.95);
            print_cpu(&our_cpu, Some(&their_cpu));
        }
        None => {
            (0..runs).for_each(|_| timed(&mut our_cpu, &mut ours, port, path));
            println!("  glance-api:   {} (nginx skipped)", ours.show());
            print_cpu(&our_cpu, None);
        }
    }
}

fn main() {
    // cargo bench passes --bench; a filter argument is accepted and ignored.
    let runs = env_usize("BENCH_RUNS", 5);
    let client = Client::from_env();
    // Source files, store copies, cache copies, one upload in flight, headroom.
    let needed = 3 * (BIG + SMALL) + BIG + 2 * BIG;
    let base = bench_base(needed);
    fs::create_dir_all(&base).expect("bench base directory");
    remove_stale(&base);
    let tmp = TempDir::new(base.join(format!("{DIR_PREFIX}{}", std::process::id())));
    let data = tmp.path().join("data");
    let state = tmp.path().join("glance");
    fs::create_dir_all(&data).expect("data dir");
    fs::create_dir_all(&state).expect("state dir");

    println!("glance-api data-path benchmark");
    println!("  machine: {}", machine(tmp.path()));
    println!(
        "  client: {}; {runs} runs per figure, medians",
        client.name()
    );
    println!("  glance-api: {}", env!("CARGO_BIN_EXE_glance-api"));

    let sections: Vec<u32> = std::env::var("BENCH_SECTIONS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let want = |n: u32| sections.is_empty() || sections.contains(&n);
    let nginx_bin = if want(1) || want(4) {
        ensure_nginx()
    } else {
        None
    };
    if let Some(bin) = &nginx_bin {
        println!("  nginx: {} ({})", bin.display(), nginx_version(bin));
    }

    let big = data.join("big.bin");
    let small = data.join("small.bin");
    make_data(&big, BIG, 0x9e37_79b9_7f4a_7c15);
    make_data(&small, SMALL, 0xd1b5_4a32_d192_ed03);
    let (big_md5, _) = hash_tool("md5sum", &big);
    let (big_sha512, _) = hash_tool("sha512sum", &big);
    let (small_md5, _) = hash_tool("md5sum", &small);

    let stores = file_stores(&state);
    let (mut glance, api) = start_glance(&state, &stores);
    let port = api.port();

    // Two images, uploaded and checked, then cached by a first (tee) GET.
    let upload = |name: &str, file: &Path, size: u64, md5: &str| -> String {
        let id = api.create_image(name);
        let (status, sent, _) = client.put(port, &format!("/v2/images/{id}/file"), file);
        assert_eq!((status, sent), (204, size), "upload of {name}");
        let image = api.image(&id);
        assert_eq!(image["status"], "active");
        assert_eq!(image["size"], size);
        assert_eq!(image["checksum"], md5);
        id
    };
    let big_id = upload("bench-1GiB", &big, BIG, &big_md5);
    assert_eq!(api.image(&big_id)["os_hash_value"], big_sha512.as_str());
    let small_id = upload("bench-256MiB", &small, SMALL, &small_md5);
    let big_path = format!("/v2/images/{big_id}/file");
    let small_path = format!("/v2/images/{small_id}/file");
    for (path, id, size) in [(&big_path, &big_id, BIG), (&small_path, &small_id, SMALL)] {
        assert!(!api.is_cached(id));
        assert_eq!(client.get(port, path).0, size);
        api.wait_cached(id, Duration::from_millis(20));
    }
    // Served from the cache: bytes, Content-Length, Content-MD5 and MD5 of the body.
    api.verify_download(&big_path, BIG, &big_md5, true);
    api.verify_download(&small_path, SMALL, &small_md5, true);

    let nginx = nginx_bin.as_ref().map(|bin| {
        let (server, nginx_port) = start_nginx(bin, &tmp.path().join("nginx"), &data);
        let nginx_api = Api::new(nginx_port);
        nginx_api.verify_download("/big.bin", BIG, &big_md5, false);
        nginx_api.verify_download("/small.bin", SMALL, &small_md5, false);
        (server, nginx_port)
    });

    let mut rows = Vec::new();

    // 6. The same requests against upstream Glance (uWSGI http-socket, 2 processes).
    if want(6) {
        println!(
            "\n6. glance-api vs upstream Glance 33.0.0 (uWSGI, cache on), same client and requests"
        );
        if let Some((_upstream, up_port)) = start_upstream(&tmp.path().join("upstream")) {
            let up = Api::new(up_port);
            let up_id = up.create_image("bench-1GiB");
            let up_path = format!("/v2/images/{up_id}/file");
            let (status, sent, _) = client.put(up_port, &up_path, &big);
            assert_eq!((status, sent), (204, BIG), "upload to upstream");
            assert_eq!(client.get(up_port, &up_path).0, BIG);
            up.wait_cached(&up_id, Duration::from_millis(20));
            let (mut ours, mut theirs) = (Samples::new(), Samples::new());
            interleave(
                runs,
                || {
                    ours.push({
                        let (b, s) = client.get(port, &big_path);
                        gbps(b, s)
                    })
                },
                || {
                    theirs.push({
                        let (b, s) = client.get(up_port, &up_path);
                        gbps(b, s)
                    })
                },
            );
            println!(" cached GET 1 GiB:");
            compare(
                &mut rows,
                "6. cached GET 1 GiB",
                &ours,
                "upstream:",
                &theirs,
                1.0,
            );
            let (mut ours, mut theirs) = (Samples::new(), Samples::new());
            interleave(
                runs,
                || {
                    api.wait_cached(&big_id, Duration::from_millis(20));
                    api.uncache(&big_id);
                    ours.push({
                        let (b, s) = client.get(port, &big_path);
                        gbps(b, s)
                    });
                },
                || {
                    up.wait_cached(&up_id, Duration::from_millis(20));
                    up.uncache(&up_id);
                    theirs.push({
                        let (b, s) = client.get(up_port, &up_path);
                        gbps(b, s)
                    });
                },
            );
            println!(" uncached (tee) GET 1 GiB:");
            compare(
                &mut rows,
                "6. uncached GET 1 GiB",
                &ours,
                "upstream:",
                &theirs,
                1.0,
            );
            api.wait_cached(&big_id, Duration::from_millis(20));
        }
    }

    // 1. Cached GET, 1 GiB.
    if want(1) {
        println!("\n1. cached GET of a 1 GiB image (glance-api cache vs nginx sendfile)");
        against_nginx(
            &mut rows,
            "1. cached GET 1 GiB",
            runs,
            (&glance, port, &big_path),
            nginx.as_ref().map(|(s, p)| (s, *p, "/big.bin")),
            BIG,
            |p, path| client.get(p, path),
        );
    }

    // 2. Uncached (tee) GET, 1 GiB, vs md5sum.
    if want(2) {
        println!("\n2. uncached GET of the 1 GiB image (store -> client + cache) vs md5sum");
        let mut ours = Samples::new();
        let mut theirs = Samples::new();
        let mut commit_lag = Samples::new();
        let mut our_cpu = CpuMeter::new(glance.pid());
        interleave(
            runs,
            || {
                // The previous tee is committed; drop the cached copy.
                api.wait_cached(&big_id, Duration::from_millis(20));
                api.uncache(&big_id);
                our_cpu.measure(|| {
                    let (bytes, secs) = client.get(port, &big_path);
                    assert_eq!(bytes, BIG);
                    ours.push(gbps(bytes, secs));
                    bytes
                });
                // Proves the tee path ran (a plain store read would not cache it).
                let lag = api.wait_cached(&big_id, Duration::from_millis(5));
                commit_lag.push(lag.as_secs_f64() * 1e3);
            },
            || {
                let (digest, secs) = hash_tool("md5sum", &big);
                assert_eq!(digest, big_md5);
                theirs.push(gbps(BIG, secs));
            },
        );
        compare(
            &mut rows,
            "2. uncached (tee) GET 1 GiB",
            &ours,
            "md5sum:",
            &theirs,
            0.9,
        );
        println!(
            "  (cache entry listed {:.0} ms median after the last byte)",
            commit_lag.median()
        );
        print_cpu(&our_cpu, None);
    }

    // 3. Upload, 1 GiB, vs sha512sum.
    if want(3) {
        println!("\n3. upload (PUT) of the 1 GiB file to a new image vs sha512sum");
        let mut ours = Samples::new();
        let mut theirs = Samples::new();
        let mut n = 0;
        let mut our_cpu = CpuMeter::new(glance.pid());
        interleave(
            runs,
            || {
                n += 1;
                let id = api.create_image(&format!("bench-upload-{n}"));
                our_cpu.measure(|| {
                    let (status, sent, secs) =
                        client.put(port, &format!("/v2/images/{id}/file"), &big);
                    assert_eq!((status, sent), (204, BIG), "upload {n}");
                    ours.push(gbps(sent, secs));
                    sent
                });
                let image = api.image(&id);
                assert_eq!(image["size"], BIG);
                assert_eq!(image["checksum"], big_md5.as_str());
                assert_eq!(image["os_hash_value"], big_sha512.as_str());
                api.expect("DELETE", &format!("/v2/images/{id}"), None, 204);
            },
            || {
                let (digest, secs) = hash_tool("sha512sum", &big);
                assert_eq!(digest, big_sha512);
                theirs.push(gbps(BIG, secs));
            },
        );
        compare(
            &mut rows,
            "3. upload (PUT) 1 GiB",
            &ours,
            "sha512sum:",
            &theirs,
            0.9,
        );
        print_cpu(&our_cpu, None);
    }

    // 4. 8 concurrent cached GETs, 256 MiB.
    if want(4) {
        println!(
            "\n4. {CONCURRENCY} concurrent cached GETs of a 256 MiB image (aggregate) vs nginx"
        );
        assert!(api.is_cached(&small_id));
        against_nginx(
            &mut rows,
            "4. 8 x cached GET 256 MiB",
            runs,
            (&glance, port, &small_path),
            nginx.as_ref().map(|(s, p)| (s, *p, "/small.bin")),
            CONCURRENCY as u64 * SMALL,
            |p, path| client.get_concurrent(p, path, CONCURRENCY),
        );
    }

    let bench_hwm = proc_status_mib(glance.pid(), "VmHWM:").unwrap_or(f64::NAN);
    println!("\n  (glance-api VmHWM after sections 1-4: {bench_hwm:.1} MiB)");
    drop(nginx);
    glance.stop();
    drop(glance);

    // 5. RSS: a fresh glance-api on the same state.
    if want(5) {
        println!("\n5. glance-api RSS: idle after start, and while prefetching the 1 GiB image");
        let (glance, api) = start_glance(&state, &stores);
        thread::sleep(Duration::from_millis(500));
        let pid = glance.pid();
        let idle_hwm = proc_status_mib(pid, "VmHWM:").expect("VmHWM");
        let idle_rss = proc_status_mib(pid, "VmRSS:").expect("VmRSS");
        println!("  idle:        VmHWM {idle_hwm:.1} MiB, VmRSS {idle_rss:.1} MiB");

        api.uncache(&big_id);
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut max, mut samples) = (0.0f64, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = proc_status_mib(pid, "VmRSS:") {
                        max = max.max(rss);
                        samples += 1;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                (max, samples)
            })
        };
        let start = Instant::now();
        api.expect("PUT", &format!("/v2/cache/{big_id}"), None, 202);
        api.wait_cached(&big_id, Duration::from_millis(20));
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let (max_rss, samples) = sampler.join().expect("sampler");
        let hwm = proc_status_mib(pid, "VmHWM:").expect("VmHWM");
        println!(
            "  prefetch:    max VmRSS {max_rss:.1} MiB ({samples} samples, every 10 ms), \
             VmHWM {hwm:.1} MiB; cached in {secs:.2} s ({:.2} GB/s)",
            gbps(BIG, secs)
        );
        api.verify_download(&big_path, BIG, &big_md5, true);
        rows.push(Row {
            what: "5. RSS idle / prefetch 1 GiB".to_owned(),
            ours: format!("{idle_hwm:.1} / {max_rss:.1} MiB"),
            reference: format!("VmHWM after: {hwm:.1} MiB"),
            ratio: None,
        });
        drop(glance);
    }

    print_summary(&format!("{}, medians of {runs}", client.name()), &rows);
}
