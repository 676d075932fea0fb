//! Miss-storm benchmark: 1, 10 and 100 concurrent cold GETs of one uncached image
//! (BENCH_STORM_MIB, default 256 MiB) through glance-api with the cache on, each round on
//! a cold cache (`DELETE /v2/cache/{id}` before it). Prints, per round: the store reads
//! (from glance-api's debug log of store opens; the target is 1), the aggregate
//! throughput and its ratio to one client's cold GET, and glance-api's peak resident
//! memory (VmHWM, reset before each round) against its idle memory. Asserts nothing about
//! time; it exits with status 1 when a client gets a wrong body.
//!
//! Run: `cargo bench --bench storm`.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::thread;
use std::time::Instant;

use common::{
    DIR_PREFIX, Server, TempDir, bench_base, env_usize, free_port, remove_stale, wait_ready,
};
use md5::{Digest, Md5};

type Result<T, E = String> = std::result::Result<T, E>;

/// One request on a fresh connection: (status, body); the body is hashed as it comes
/// and only its length and MD5 kept.
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    content_type: &str,
) -> Result<(u16, u64, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    stream.write_all(body).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).map_err(|e| e.to_string())? == 0 {
            return Err("closed before the head".to_owned());
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0);
    let mut md5 = Md5::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        len += n as u64;
    }
    Ok((status, len, hex::encode(md5.finalize())))
}

fn memory_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn store_opens(log: &Path) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .matches("opening image data")
        .count()
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storm bench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mib = env_usize("BENCH_STORM_MIB", 256) as u64;
    let size = mib << 20;
    let base = bench_base(3 * size + (1 << 30));
    fs::create_dir_all(&base).map_err(|e| e.to_string())?;
    remove_stale(&base);
    let tmp = TempDir::new(base.join(format!("{DIR_PREFIX}{}", std::process::id())));
    let dir = tmp.path();
    let port = free_port();
    let d = dir.display();
    let conf = dir.join("glance-api.conf");
    fs::write(
        &conf,
        format!(
            "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = {port}\nenabled_backends = file1:file\nimage_cache_dir = {d}/cache\nimage_cache_max_size = {}\n[glance_store]\ndefault_backend = file1\n[file1]\nfilesystem_store_datadir = {d}/images\n[database]\nconnection = sqlite:///{d}/glance.sqlite\n[paste_deploy]\nflavor = cachemanagement\n",
            4 * size
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = dir.join("glance-api.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glance-api"));
    cmd.arg("--config-file")
        .arg(&conf)
        .env("RUST_LOG", "warn,glance_operator::store=debug");
    let mut server = Server::spawn("glance-api", cmd, log.clone());
    wait_ready(&mut server, || {
        request(port, "GET", "/healthcheck", b"", "text/plain").is_ok_and(|r| r.0 == 200)
    });
    let pid = server.pid();

    let data_file = dir.join("image.raw");
    common::make_data(&data_file, size, 17);
    let bytes = fs::read(&data_file).map_err(|e| e.to_string())?;
    let want = hex::encode(Md5::digest(&bytes));
    let create = {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        let body = br#"{"name": "storm", "disk_format": "raw", "container_format": "bare"}"#;
        write!(
            stream,
            "POST /v2/images HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .map_err(|e| e.to_string())?;
        stream.write_all(body).map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        answer
    };
    let id = create
        .split("\"id\": \"")
        .nth(1)
        .or_else(|| create.split("\"id\":\"").nth(1))
        .and_then(|rest| rest.get(..36))
        .ok_or_else(|| format!("no image id in {create}"))?
        .to_owned();
    let uploaded = request(
        port,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &bytes,
        "application/octet-stream",
    )?;
    if uploaded.0 != 204 {
        return Err(format!("upload answered {}", uploaded.0));
    }
    drop(bytes);

    println!(
        "miss storm: concurrent cold GETs of one {mib} MiB image through glance-api (file store, cache on), {} CPUs",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut single = None;
    for clients in [1usize, 10, 100] {
        let evicted = request(
            port,
            "DELETE",
            &format!("/v2/cache/{id}"),
            b"",
            "text/plain",
        )?;
        if evicted.0 != 204 && evicted.0 != 404 {
            return Err(format!("DELETE /v2/cache answered {}", evicted.0));
        }
        let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
        let idle = memory_kib(pid, "VmRSS");
        let opens = store_opens(&log);
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let path = format!("/v2/images/{id}/file");
                thread::spawn(move || request(port, "GET", &path, b"", "text/plain"))
            })
            .collect();
        for worker in workers {
            let (status, len, md5) = worker.join().map_err(|_| "a client panicked")??;
            if status != 200 || len != size || md5 != want {
                return Err(format!("a client got {status}, {len} bytes, md5 {md5}"));
            }
        }
        let took = started.elapsed().as_secs_f64();
        let rate = (clients as f64 * size as f64) / took / f64::from(1 << 20);
        let reads = store_opens(&log) - opens;
        let peak = memory_kib(pid, "VmHWM");
        let single_rate = *single.get_or_insert(rate);
        println!(
            "  {clients:>3} clients: {took:>6.2} s, {rate:>8.0} MiB/s in all ({:.2}x one client's cold GET), store reads {reads}, RSS idle {:.1} MiB, peak {:.1} MiB (+{:.1})",
            rate / single_rate,
            idle as f64 / 1024.0,
            peak as f64 / 1024.0,
            peak.saturating_sub(idle) as f64 / 1024.0
        );
    }
    server.stop();
    Ok(())
}
