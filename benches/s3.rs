//! glance-api with glance_store's `s3` store, against the S3 server itself: prints figures,
//! asserts nothing about time. It does assert correctness: status codes, byte counts,
//! MD5/SHA-512 of what was stored and served, object sizes in the bucket, and that an
//! uncached GET really filled the cache (the tee path).
//!
//! 1. cold GET of an image (1 GiB; BENCH_S3_MIB) through glance-api: streamed from S3 to
//!    the client and into the cache at once (the cached copy deleted with
//!    DELETE /v2/cache/{id} before each run), vs a GET of the same object straight from
//!    the S3 server (a presigned URL);
//!    and, to tell the S3 read from the cache fill, the same GET with `Range: bytes=0-`
//!    (answered 206 from S3, never cached) vs the direct GET;
//! 2. cache hit: the GET right after, served from glance-api's cache, vs that cold GET;
//! 3. upload: PUT /v2/images/{id}/file of the same bytes to a new image vs a multipart
//!    upload of them straight to the S3 server, with the part size and the number of
//!    parts in flight glance-api uses;
//! 4. glance-api against upstream Glance 33.0.0 with glance_store's s3 store on the same S3
//!    server and bucket (benches/upstream/glance_api.sh: uWSGI, 2 processes, cache on, the
//!    same part size): the upload of the image to a new image, then its cold GET (the new
//!    image is in neither cache; both fill their cache on the way, which is checked);
//!    target 2x upstream's throughput (BENCH_SKIP_UPSTREAM=1 skips it);
//! 5. glance-api's memory while it uploads a 2 GiB image (BENCH_S3_RSS_MIB): VmRSS sampled
//!    every 10 ms and VmHWM of a fresh glance-api (the requirement: at most 64 MiB).
//!
//! The digests' floor: before anything else, one pass of MD5 and one of SHA-512 over the
//! image in this process, with glance-api's own digest code (`glance_operator::digest`),
//! timed in CPU seconds of the hashing thread. The CPU glance-api spends per GiB on an
//! upload (which computes both) and on a cold GET (which checks the MD5) is printed as a
//! ratio to it; target: at most 1.2x for the upload.
//!
//! The S3 server is Ceph's RADOS Gateway (one mon, mgr, osd with memstore, radosgw):
//! the one GLANCE_TEST_S3_* name when GLANCE_TEST_S3_ENDPOINT is set (`tests/s3/rgw.sh
//! start DIR` writes them to DIR/env), else one started here with tests/s3/rgw.sh and
//! stopped at the end, panics included (a cluster left by a killed bench is stopped by
//! the next run). Its osd keeps the objects in memory (memstore, a few GiB), so every
//! object is deleted once no longer needed and the gateway's garbage collection is run
//! (`radosgw-admin gc process`) when its ceph.conf is known (from radosgw's command
//! line); the bucket is made for the run and removed at the end.
//!
//! One client program serves both sides of every comparison: curl. Downloads: curl to
//! glance-api vs curl to a presigned GetObject URL, each `-o /dev/null`, timed by curl
//! (time_total). Uploads: `curl -T FILE` to glance-api vs one curl with `--parallel
//! --parallel-max N -T PART URL ...` over presigned UploadPart URLs (one file per part,
//! cut beforehand), both timed by the wall clock from starting curl to its exit (the
//! direct side from CreateMultipartUpload to CompleteMultipartUpload's answer, both sent
//! in-process with aws-sdk-s3: two small requests that glance-api makes too). curl on
//! both sides keeps the client's cost (reading the file, TCP, HTTP/1.1) the same, where
//! aws-sdk-s3 in-process for the direct side would trade it for another HTTP stack
//! than the one of the glance-api side. Figures are medians of BENCH_RUNS runs (default
//! 5), the two sides interleaved run by run; ratios come from the same run. The CPU time
//! each process (glance-api, radosgw, ceph-osd, curl) spends per GiB moved is printed
//! beside each figure.
//!
//! Placement (two CPUs and taskset; BENCH_PIN=0 leaves it to the scheduler): the S3
//! server's daemons on CPU 0, glance-api and curl on CPU 1, on both sides of a
//! comparison. The S3 server of a deployment runs on other machines; here it would
//! otherwise take CPU from glance-api, which then measures the CPUs of one machine shared
//! four ways rather than glance-api's data path.
//!
//! The data lives on /dev/shm when it has room (BENCH_DIR to choose), else under target/.
//!
//! Run: `cargo bench --bench s3` (BENCH_SECTIONS=1,3 runs only those sections; 1 and 2
//! run together).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use glance_operator::digest::{Algorithm, Hasher};
use glance_operator::store::s3::UPLOAD_BUDGET;
use tokio::runtime::Runtime;

mod common;
use common::{
    Api, CpuMeter, DIR_PREFIX, MIB, Placement, RGW_DIR, Row, Samples, Server, TempDir, bench_base,
    children_cpu_secs, compare, compare_as, curl, curl_fetch, curl_get_url, curl_put, env_flag,
    env_usize, gbps, hash_tool, interleave, machine, make_data, parse_curl, print_summary,
    proc_status_mib, process_tree, remove_stale, root, start_glance, start_upstream_with,
    verify_url,
};

/// glance-api's memory limit while it uploads (section 4).
const RSS_LIMIT_MIB: f64 = 64.0;
/// `s3_store_thread_pools`' default: glance-api sends at most this many parts at once.
const THREAD_POOLS: u64 = 10;
/// The CPU of the S3 server's daemons, and the one of glance-api and curl, when pinned.
const S3_CPU: &str = "0";
const OUR_CPU: &str = "1";

// ---------------------------------------------------------------------------------------
// The S3 server

/// Where the S3 server is and which processes it runs.
struct S3Env {
    endpoint: String,
    access_key: String,
    secret_key: String,
    region: String,
    /// radosgw, ceph-osd, ceph-mon, ceph-mgr, when known.
    pids: Vec<(&'static str, u32)>,
    /// The cluster's ceph.conf, for radosgw-admin; None when unknown.
    ceph_conf: Option<PathBuf>,
}

impl S3Env {
    /// From GLANCE_TEST_S3_* (`get` reads one); None when GLANCE_TEST_S3_ENDPOINT is unset.
    fn from_vars(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let endpoint = get("GLANCE_TEST_S3_ENDPOINT").filter(|v| !v.is_empty())?;
        let need = |name: &str| get(name).unwrap_or_else(|| panic!("{name} is not set"));
        let pids: Vec<(&'static str, u32)> = [
            ("radosgw", "GLANCE_TEST_S3_RGW_PID"),
            ("ceph-osd", "GLANCE_TEST_S3_OSD_PID"),
            ("ceph-mon", "GLANCE_TEST_S3_MON_PID"),
            ("ceph-mgr", "GLANCE_TEST_S3_MGR_PID"),
        ]
        .into_iter()
        .filter_map(|(name, var)| Some((name, get(var)?.parse().ok()?)))
        .filter(|&(_, pid)| Path::new(&format!("/proc/{pid}")).exists())
        .collect();
        // radosgw's command line names its ceph.conf (rgw.sh starts it with --conf).
        let ceph_conf = pids
            .iter()
            .find(|(name, _)| *name == "radosgw")
            .and_then(|&(_, pid)| fs::read(format!("/proc/{pid}/cmdline")).ok())
            .and_then(|cmdline| {
                let args: Vec<String> = cmdline
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let i = args.iter().position(|a| a == "--conf")?;
                args.get(i + 1).map(PathBuf::from)
            });
        Some(Self {
            endpoint,
            access_key: need("GLANCE_TEST_S3_ACCESS_KEY"),
            secret_key: need("GLANCE_TEST_S3_SECRET_KEY"),
            region: get("GLANCE_TEST_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
            pids,
            ceph_conf,
        })
    }

    fn pid(&self, name: &str) -> Option<u32> {
        self.pids.iter().find(|(n, _)| *n == name).map(|&(_, p)| p)
    }
}

/// A cluster started here with tests/s3/rgw.sh; stopped when dropped.
struct Cluster(PathBuf);

impl Cluster {
    fn start(dir: PathBuf) -> (Self, S3Env) {
        fs::create_dir_all(&dir).expect("rgw dir");
        println!(
            "starting Ceph and radosgw with tests/s3/rgw.sh in {}",
            dir.display()
        );
        let out = Command::new("bash")
            .arg(root().join("tests/s3/rgw.sh"))
            .arg("start")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run tests/s3/rgw.sh");
        // From here on the daemons are stopped whatever happens.
        let cluster = Cluster(dir);
        assert!(
            out.status.success(),
            "tests/s3/rgw.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = fs::read_to_string(cluster.0.join("env")).expect("rgw.sh's env file");
        let vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let env = S3Env::from_vars(|name| vars.get(name).cloned()).expect("endpoint in env");
        (cluster, env)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("tests/s3/rgw.sh"))
            .arg("stop")
            .arg(&self.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An aws-sdk-s3 client for the bench's own requests (presigning, multipart bookkeeping,
/// checks), on a runtime of its own.
struct S3 {
    client: Client,
    runtime: Runtime,
    ceph_conf: Option<PathBuf>,
}

impl S3 {
    fn new(env: &S3Env) -> Self {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&env.endpoint)
            .region(Region::new(env.region.clone()))
            .credentials_provider(Credentials::new(
                &env.access_key,
                &env.secret_key,
                None,
                None,
                "bench",
            ))
            .force_path_style(true)
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(config),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime"),
            ceph_conf: env.ceph_conf.clone(),
        }
    }

    fn presigning() -> PresigningConfig {
        PresigningConfig::expires_in(Duration::from_secs(6 * 3600)).expect("presigning config")
    }

    /// A presigned GetObject URL (it needs no headers).
    fn get_url(&self, bucket: &str, key: &str) -> String {
        let request = self
            .runtime
            .block_on(
                self.client
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .presigned(Self::presigning()),
            )
            .expect("presign GetObject");
        assert_eq!(request.headers().count(), 0, "GetObject needs headers");
        request.uri().to_owned()
    }

    /// The object's size, None when it does not exist.
    fn size(&self, bucket: &str, key: &str) -> Option<i64> {
        self.runtime
            .block_on(self.client.head_object().bucket(bucket).key(key).send())
            .ok()
            .and_then(|out| out.content_length())
    }

    fn delete(&self, bucket: &str, key: &str) {
        self.runtime
            .block_on(self.client.delete_object().bucket(bucket).key(key).send())
            .expect("DeleteObject");
    }

    /// Frees the space of deleted objects now: radosgw hands the parts of a deleted
    /// multipart object to its garbage collection, which waits two hours by default.
    fn collect_garbage(&self) {
        if let Some(conf) = &self.ceph_conf {
            let ok = Command::new("radosgw-admin")
                .arg("--conf")
                .arg(conf)
                .args(["gc", "process", "--include-all"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "radosgw-admin gc process failed");
        }
    }

    /// Uploads `parts` (files, in order) as object `bucket/key`: CreateMultipartUpload,
    /// one curl sending the parts over presigned UploadPart URLs, `concurrency` at once,
    /// then CompleteMultipartUpload. Returns the bytes sent and the wall time of it all.
    fn upload(&self, bucket: &str, key: &str, parts: &[PathBuf], concurrency: usize) -> (u64, f64) {
        let start = Instant::now();
        let created = self
            .runtime
            .block_on(
                self.client
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .send(),
            )
            .expect("CreateMultipartUpload");
        let upload_id = created.upload_id().expect("UploadId").to_owned();
        let mut cmd = curl();
        cmd.args([
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &concurrency.to_string(),
            "-H",
            "Expect:",
            "-w",
            "%{urlnum} %{http_code} %{size_upload} %header{etag}\\n",
        ]);
        let mut headers: Option<Vec<(String, String)>> = None;
        for (i, part) in parts.iter().enumerate() {
            let number = i32::try_from(i + 1).expect("part number");
            let request = self
                .runtime
                .block_on(
                    self.client
                        .upload_part()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .part_number(number)
                        .presigned(Self::presigning()),
                )
                .expect("presign UploadPart");
            let these: Vec<(String, String)> = request
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            // curl sends the same headers with every transfer.
            assert_eq!(headers.get_or_insert_with(|| these.clone()), &these);
            cmd.arg("-T")
                .arg(part)
                .args(["-o", "/dev/null", request.uri()]);
        }
        for (name, value) in headers.unwrap_or_default() {
            cmd.arg("-H").arg(format!("{name}: {value}"));
        }
        let out = cmd.output().expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut done: Vec<(i32, String)> = Vec::new();
        let mut sent = 0u64;
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(
                f.len() == 4 && f[1] == "200",
                "UploadPart answered {line:?}"
            );
            let number = f[0].parse::<i32>().expect("urlnum") + 1;
            sent += f[2].parse::<u64>().expect("size_upload");
            done.push((number, f[3].to_owned()));
        }
        assert_eq!(done.len(), parts.len(), "curl printed {text:?}");
        done.sort();
        let completed = done
            .into_iter()
            .map(|(number, etag)| {
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build()
            })
            .collect();
        self.runtime
            .block_on(
                self.client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(completed))
                            .build(),
                    )
                    .send(),
            )
            .expect("CompleteMultipartUpload");
        (sent, start.elapsed().as_secs_f64())
    }
}

/// The bench's bucket: made at start; emptied (multipart uploads aborted) and removed
/// when dropped, panics included.
struct Bucket<'a> {
    s3: &'a S3,
    name: String,
}

impl<'a> Bucket<'a> {
    fn create(s3: &'a S3) -> Self {
        let name = format!("glance-bench-{}", uuid::Uuid::new_v4().simple());
        s3.runtime
            .block_on(s3.client.create_bucket().bucket(&name).send())
            .expect("CreateBucket");
        Self { s3, name }
    }
}

impl Drop for Bucket<'_> {
    fn drop(&mut self) {
        let (s3, bucket) = (self.s3, self.name.as_str());
        s3.runtime.block_on(async {
            if let Ok(out) = s3
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
            {
                for upload in out.uploads() {
                    if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                        let _ = s3
                            .client
                            .abort_multipart_upload()
                            .bucket(bucket)
                            .key(key)
                            .upload_id(id)
                            .send()
                            .await;
                    }
                }
            }
            if let Ok(out) = s3.client.list_objects_v2().bucket(bucket).send().await {
                for object in out.contents() {
                    if let Some(key) = object.key() {
                        let _ = s3
                            .client
                            .delete_object()
                            .bucket(bucket)
                            .key(key)
                            .send()
                            .await;
                    }
                }
            }
            let _ = s3.client.delete_bucket().bucket(bucket).send().await;
        });
        s3.collect_garbage();
    }
}

// ---------------------------------------------------------------------------------------
// CPU of every process on the data path

/// The CPU time glance-api, the S3 server's daemons and the curl clients spend on what is
/// measured, the CPU time the whole machine spent meanwhile, and the bytes and wall time.
struct CpuUse {
    meters: Vec<(&'static str, CpuMeter)>,
    clients: f64,
    machine: f64,
    bytes: u64,
    wall: f64,
}

/// CPU time of all CPUs since boot that something on this machine used (not idle, not
/// waiting for I/O, not stolen by the hypervisor), in seconds.
fn machine_busy_secs() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    // SAFETY: sysconf has no preconditions.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

impl CpuUse {
    /// CPU seconds per GiB of the process named `name`.
    fn secs_per_gib(&self, name: &str) -> f64 {
        self.meters
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(f64::NAN, |(_, m)| m.ms_per_gib() / 1e3)
    }

    fn new(processes: &[(&'static str, u32)]) -> Self {
        Self {
            meters: processes
                .iter()
                .map(|&(name, pid)| (name, CpuMeter::new(pid)))
                .collect(),
            clients: 0.0,
            machine: 0.0,
            bytes: 0,
            wall: 0.0,
        }
    }

    /// Runs `f`, which returns the bytes it moved and the seconds it took.
    fn measure(&mut self, f: impl FnOnce() -> (u64, f64)) -> (u64, f64) {
        let before: Vec<f64> = self.meters.iter().map(|(_, m)| m.now()).collect();
        let clients = children_cpu_secs();
        let machine = machine_busy_secs();
        let (bytes, secs) = f();
        self.machine += machine_busy_secs() - machine;
        self.clients += children_cpu_secs() - clients;
        for ((_, meter), before) in self.meters.iter_mut().zip(before) {
            meter.secs += meter.now() - before;
            meter.bytes += bytes;
        }
        self.bytes += bytes;
        self.wall += secs;
        (bytes, secs)
    }

    /// "CPU ms per GiB: glance-api N, radosgw N, ceph-osd N, curl N, anything else N;
    /// CPUs busy x.xx of which others' x.xx". Anything else is the rest of the machine
    /// (the bench itself, other work on it) and shows how quiet the machine was.
    fn show(&self) -> String {
        let gib = self.bytes as f64 / (1u64 << 30) as f64;
        let mut parts: Vec<String> = self
            .meters
            .iter()
            .filter(|(_, m)| m.secs > 0.0)
            .map(|(name, m)| format!("{name} {:.0}", m.ms_per_gib()))
            .collect();
        parts.push(format!("curl {:.0}", self.clients * 1e3 / gib));
        let ours = self.meters.iter().map(|(_, m)| m.secs).sum::<f64>() + self.clients;
        let others = (self.machine - ours).max(0.0);
        parts.push(format!("anything else {:.0}", others * 1e3 / gib));
        format!(
            "CPU ms per GiB: {}; CPUs busy on average: {:.2} (anything else {:.2})",
            parts.join(", "),
            self.machine / self.wall,
            others / self.wall
        )
    }
}

// ---------------------------------------------------------------------------------------

/// A GET of all of `url` as the range `bytes=0-`: answered 206, which glance-api streams
/// from the store and never caches. Returns (bytes, seconds as curl timed them).
fn curl_fetch_all(url: &str) -> (u64, f64) {
    let out = curl_get_url(url)
        .args(["-H", "Range: bytes=0-"])
        .output()
        .expect("run curl");
    parse_curl(&out.stdout, 206)
}

/// Cuts `file` into files of `part` bytes in `dir`: the parts of a direct upload.
fn cut(file: &Path, part: u64, dir: &Path) -> Vec<PathBuf> {
    use std::io::{Read, Write};
    fs::create_dir_all(dir).expect("parts dir");
    let mut input = fs::File::open(file).expect("open the data");
    let mut buf = vec![0u8; usize::try_from(part).expect("part size")];
    let mut parts = Vec::new();
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]).expect("read the data") {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return parts;
        }
        let path = dir.join(format!("part-{:05}", parts.len() + 1));
        fs::File::create(&path)
            .and_then(|mut f| f.write_all(&buf[..filled]))
            .expect("write a part");
        parts.push(path);
    }
}

fn mib(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b => format!("{} MiB", b / MIB),
    }
}

/// The first line of `program --version`.
fn version(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

/// CPU seconds of the calling thread.
fn thread_cpu_secs() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// The least CPU seconds per GiB of three passes of `algorithm` over `data`, 1 MiB at a
/// time as glance-api feeds it, on this thread; and the digest, hex.
fn digest_floor(algorithm: Algorithm, data: &[u8]) -> (f64, String) {
    let gib = data.len() as f64 / (1u64 << 30) as f64;
    let mut best = f64::MAX;
    let mut hex = String::new();
    for _ in 0..3 {
        let start = thread_cpu_secs();
        let mut hasher = Hasher::new(algorithm);
        for chunk in data.chunks(MIB as usize) {
            hasher.update(chunk).expect("hash");
        }
        hex = hasher.finish().expect("digest");
        best = best.min((thread_cpu_secs() - start) / gib);
    }
    (best, hex)
}

/// "N.NN s per GiB, M.MMx the floor".
fn against_floor(secs: f64, floor: f64) -> String {
    format!("{secs:.2} s per GiB, {:.2}x the floor", secs / floor)
}

fn main() {
    // cargo bench passes --bench; a filter argument is accepted and ignored.
    let runs = env_usize("BENCH_RUNS", 5);
    let size = env_usize("BENCH_S3_MIB", 1024) as u64 * MIB;
    let rss_size = env_usize("BENCH_S3_RSS_MIB", 2048) as u64 * MIB;
    let chunk_mib = env_usize("BENCH_S3_PART_MIB", 10) as u64;
    assert!(
        chunk_mib >= 5,
        "BENCH_S3_PART_MIB: S3 parts are at least 5 MiB"
    );
    // As glance-api (and glance_store) size the parts of an upload of known size, and as
    // many in flight as its memory budget lets it send.
    let part = (chunk_mib * MIB).max(size.div_ceil(10_000));
    let ours_in_flight = (UPLOAD_BUDGET / part)
        .saturating_sub(1)
        .clamp(1, THREAD_POOLS) as usize;
    let direct_in_flight = env_usize("BENCH_S3_CONCURRENCY", ours_in_flight);
    let sections: Vec<u32> = std::env::var("BENCH_SECTIONS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let want = |n: u32| sections.is_empty() || sections.contains(&n);

    // The image, its parts, its cached copy and the file of section 4, with headroom.
    let needed = 3 * size + rss_size + (1 << 30);
    let base = bench_base(needed);
    fs::create_dir_all(&base).expect("bench base directory");
    remove_stale(&base);
    let tmp = TempDir::new(base.join(format!("{DIR_PREFIX}{}", std::process::id())));
    let data = tmp.path().join("data");
    let state = tmp.path().join("glance");
    fs::create_dir_all(&data).expect("data dir");
    fs::create_dir_all(&state).expect("state dir");

    println!("glance-api with the s3 store vs the S3 server itself");
    println!("  machine: {}", machine(tmp.path()));
    let (_cluster, env) = match S3Env::from_vars(|name| std::env::var(name).ok()) {
        Some(env) => {
            println!("  S3 server: {} (GLANCE_TEST_S3_ENDPOINT)", env.endpoint);
            (None, env)
        }
        None => {
            let (cluster, env) = Cluster::start(tmp.path().join(RGW_DIR));
            println!("  S3 server: {} (started by tests/s3/rgw.sh)", env.endpoint);
            (Some(cluster), env)
        }
    };
    println!(
        "    {}; {}",
        version("radosgw"),
        match &env.ceph_conf {
            Some(conf) => format!(
                "deleted objects freed with radosgw-admin --conf {} gc process",
                conf.display()
            ),
            None => "ceph.conf unknown: deleted objects wait for the gateway's garbage collection"
                .to_owned(),
        }
    );
    println!(
        "  client: {}; {runs} runs per figure, medians",
        version("curl")
    );
    println!("  glance-api: {}", env!("CARGO_BIN_EXE_glance-api"));
    println!(
        "  image: {}; parts of {} (s3_store_large_object_chunk_size = {chunk_mib}), \
         glance-api sends {ours_in_flight} at once (its {} MiB upload budget), the direct \
         upload {direct_in_flight} (curl --parallel-max)",
        mib(size),
        mib(part),
        UPLOAD_BUDGET / MIB
    );

    let s3 = S3::new(&env);
    let bucket = Bucket::create(&s3);
    let stores = format!(
        "enabled_backends = ceph:s3\n\
         [glance_store]\n\
         default_backend = ceph\n\
         [ceph]\n\
         s3_store_host = {}\n\
         s3_store_access_key = {}\n\
         s3_store_secret_key = {}\n\
         s3_store_bucket = {}\n\
         s3_store_bucket_url_format = path\n\
         s3_store_large_object_chunk_size = {chunk_mib}\n",
        env.endpoint, env.access_key, env.secret_key, bucket.name
    );

    let big = data.join("image.bin");
    make_data(&big, size, 0x9e37_79b9_7f4a_7c15);
    let (md5, _) = hash_tool("md5sum", &big);
    let (sha512, _) = hash_tool("sha512sum", &big);
    let (md5_floor, sha512_floor) = {
        let bytes = fs::read(&big).expect("read the data");
        let (md5_floor, md5_hex) = digest_floor(Algorithm::Md5, &bytes);
        let (sha512_floor, sha512_hex) = digest_floor(Algorithm::Sha512, &bytes);
        assert_eq!((md5_hex, sha512_hex), (md5.clone(), sha512.clone()));
        (md5_floor, sha512_floor)
    };
    let floor = md5_floor + sha512_floor;
    println!(
        "  the digests' floor (glance_operator::digest, CPU of one thread, best of 3): MD5 \
         {md5_floor:.2} s per GiB, SHA-512 {sha512_floor:.2} s per GiB; both {floor:.2} s per GiB"
    );

    let (mut glance, api) = start_glance(&state, &stores);
    let port = api.port();
    let placement = |glance: &Server| {
        let mut pins: Vec<(u32, &str)> = env.pids.iter().map(|&(_, p)| (p, S3_CPU)).collect();
        pins.push((glance.pid(), OUR_CPU));
        Placement::new(&pins, OUR_CPU)
    };
    let pinned = placement(&glance);
    match &pinned {
        Some(_) => println!(
            "  placement: S3 server ({}) on CPU {S3_CPU}, glance-api and curl on CPU {OUR_CPU}",
            env.pids
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => println!("  placement: left to the scheduler"),
    }
    let processes = |glance: &Server| {
        let mut all = vec![("glance-api", glance.pid())];
        all.extend(
            ["radosgw", "ceph-osd"]
                .into_iter()
                .filter_map(|name| Some((name, env.pid(name)?))),
        );
        all
    };

    // The image, uploaded through glance-api and checked, in glance-api and in S3.
    let upload = |api: &Api, name: &str, file: &Path, size: u64| -> (String, f64) {
        let id = api.create_image(name);
        let start = Instant::now();
        let (status, sent, _) = curl_put(api.port(), &format!("/v2/images/{id}/file"), file);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!((status, sent), (204, size), "upload of {name}");
        let image = api.image(&id);
        assert_eq!(image["status"], "active");
        assert_eq!(image["size"], size);
        assert_eq!(
            s3.size(&bucket.name, &id),
            i64::try_from(size).ok(),
            "object {id}"
        );
        (id, secs)
    };
    let (id, _) = upload(&api, "bench-s3", &big, size);
    let image = api.image(&id);
    assert_eq!(image["checksum"], md5.as_str());
    assert_eq!(image["os_hash_value"], sha512.as_str());
    let glance_path = format!("/v2/images/{id}/file");
    let glance_url = format!("http://127.0.0.1:{port}{glance_path}");
    let direct_url = s3.get_url(&bucket.name, &id);
    verify_url(&api.agent, &direct_url, size, &md5, false);

    let mut rows = Vec::new();

    // 1 and 2. Cold GET vs direct GET; cache hit vs cold GET.
    if want(1) || want(2) {
        println!(
            "\n1. cold GET of the {} image through glance-api (S3 -> client + cache) vs a GET \
             straight from S3 (presigned URL)",
            mib(size)
        );
        // Warm-up, untimed; the first cold GET fills the cache, then its copy is checked.
        assert_eq!(curl_fetch(&direct_url).0, size);
        assert!(!api.is_cached(&id));
        assert_eq!(curl_fetch(&glance_url).0, size);
        api.wait_cached(&id, Duration::from_millis(20));
        api.verify_download(&glance_path, size, &md5, true);
        let (mut cold, mut hit, mut direct) = (Samples::new(), Samples::new(), Samples::new());
        let mut ranged = Samples::new();
        let mut commit_lag = Samples::new();
        let mut cpu: Vec<CpuUse> = (0..4).map(|_| CpuUse::new(&processes(&glance))).collect();
        let [cold_cpu, hit_cpu, direct_cpu, ranged_cpu] = &mut cpu[..] else {
            unreachable!()
        };
        let fetch =
            |get: fn(&str) -> (u64, f64), url: &str, samples: &mut Samples, cpu: &mut CpuUse| {
                let (bytes, secs) = cpu.measure(|| get(url));
                assert_eq!(bytes, size, "GET {url}");
                samples.push(gbps(bytes, secs));
            };
        interleave(
            runs,
            || {
                // The previous tee is committed; drop the cached copy.
                api.wait_cached(&id, Duration::from_millis(20));
                api.uncache(&id);
                fetch(curl_fetch_all, &glance_url, &mut ranged, ranged_cpu);
                assert!(!api.is_cached(&id), "a ranged GET filled the cache");
                fetch(curl_fetch, &glance_url, &mut cold, cold_cpu);
                // Proves the tee path ran (a plain store read would not cache it).
                let lag = api.wait_cached(&id, Duration::from_millis(5));
                commit_lag.push(lag.as_secs_f64() * 1e3);
                fetch(curl_fetch, &glance_url, &mut hit, hit_cpu);
            },
            || fetch(curl_fetch, &direct_url, &mut direct, direct_cpu),
        );
        compare(
            &mut rows,
            &format!("1. cold GET {}", mib(size)),
            &cold,
            "direct S3:",
            &direct,
            0.9,
        );
        println!("  glance-api cold GET: {}", cold_cpu.show());
        println!("  direct S3 GET:       {}", direct_cpu.show());
        println!(
            "  glance-api's CPU on the cold GET (it checks the MD5): {}; MD5's floor alone \
             {md5_floor:.2} s per GiB",
            against_floor(cold_cpu.secs_per_gib("glance-api"), floor)
        );
        println!(
            "  (cache entry listed {:.0} ms median after the last byte)",
            commit_lag.median()
        );
        println!(
            "  without the cache, to tell the S3 read from the cache fill: the same GET with \
             Range: bytes=0- (206, streamed from S3, never cached), in the same runs"
        );
        compare_as(
            &mut rows,
            &format!("1b. ranged GET {}, no cache", mib(size)),
            ("ranged GET:", &ranged),
            ("direct S3:", &direct),
            0.9,
        );
        println!("  glance-api ranged GET: {}", ranged_cpu.show());
        println!("\n2. cache hit: the GET right after, from glance-api's cache, vs that cold GET");
        compare_as(
            &mut rows,
            &format!("2. cache hit GET {}", mib(size)),
            ("cache hit:", &hit),
            ("cold GET:", &cold),
            1.0,
        );
        println!("  glance-api cache hit: {}", hit_cpu.show());
    }

    // 3. Upload through glance-api vs a multipart upload straight to S3.
    if want(3) {
        println!(
            "\n3. upload of the {} image: PUT through glance-api ({} parts, {ours_in_flight} \
             in flight) vs a multipart upload straight to S3 ({} parts, {direct_in_flight} \
             in flight)",
            mib(size),
            mib(part),
            mib(part)
        );
        let parts = cut(&big, part, &data.join("parts"));
        println!(
            "  {} parts; both timed by the wall clock: curl -T to glance-api, and \
             CreateMultipartUpload + one curl --parallel + CompleteMultipartUpload",
            parts.len()
        );
        let (mut ours, mut theirs) = (Samples::new(), Samples::new());
        let (mut our_cpu, mut their_cpu) = (
            CpuUse::new(&processes(&glance)),
            CpuUse::new(&processes(&glance)),
        );
        let mut n = 0;
        interleave(
            runs,
            || {
                n += 1;
                let mut id = String::new();
                our_cpu.measure(|| {
                    let (new, secs) = upload(&api, &format!("bench-upload-{n}"), &big, size);
                    id = new;
                    ours.push(gbps(size, secs));
                    (size, secs)
                });
                let image = api.image(&id);
                assert_eq!(image["checksum"], md5.as_str());
                assert_eq!(image["os_hash_value"], sha512.as_str());
                api.expect("DELETE", &format!("/v2/images/{id}"), None, 204);
                assert_eq!(
                    s3.size(&bucket.name, &id),
                    None,
                    "object of a deleted image"
                );
                s3.collect_garbage();
            },
            || {
                let key = format!("direct-{}", theirs.len() + 1);
                let (sent, secs) =
                    their_cpu.measure(|| s3.upload(&bucket.name, &key, &parts, direct_in_flight));
                assert_eq!(sent, size);
                assert_eq!(s3.size(&bucket.name, &key), i64::try_from(size).ok());
                if theirs.is_empty() {
                    verify_url(
                        &api.agent,
                        &s3.get_url(&bucket.name, &key),
                        size,
                        &md5,
                        false,
                    );
                }
                theirs.push(gbps(sent, secs));
                s3.delete(&bucket.name, &key);
                s3.collect_garbage();
            },
        );
        compare(
            &mut rows,
            &format!("3. upload {}", mib(size)),
            &ours,
            "direct S3:",
            &theirs,
            0.9,
        );
        println!("  glance-api upload: {}", our_cpu.show());
        println!("  direct S3 upload:  {}", their_cpu.show());
        let secs = our_cpu.secs_per_gib("glance-api");
        println!(
            "  glance-api's CPU on the upload (MD5 and SHA-512): {} (target at most 1.2x): {}",
            against_floor(secs, floor),
            if secs / floor <= 1.2 { "met" } else { "MISSED" }
        );
        rows.push(Row {
            what: format!("3b. upload CPU {}", mib(size)),
            ours: format!("{secs:.2} s/GiB"),
            reference: format!(
                "floor {floor:.2}: {:.2}x (<= 1.2{})",
                secs / floor,
                if secs / floor <= 1.2 { "" } else { ", MISSED" }
            ),
            ratio: None,
        });
        let _ = fs::remove_dir_all(data.join("parts"));
    }

    // 4. Against upstream Glance with the s3 store on the same S3 server.
    if want(4) && !env_flag("BENCH_SKIP_UPSTREAM") {
        println!(
            "\n4. glance-api vs upstream Glance 33.0.0 (uWSGI, 2 processes, cache on), both with \
             the s3 store on this S3 server: upload of the {} image to a new image, then its \
             cold GET",
            mib(size)
        );
        let upstream_conf = format!(
            "[ceph]\n\
             s3_store_host = {}\n\
             s3_store_access_key = {}\n\
             s3_store_secret_key = {}\n\
             s3_store_bucket = {}\n\
             s3_store_bucket_url_format = path\n\
             s3_store_large_object_chunk_size = {chunk_mib}\n",
            env.endpoint, env.access_key, env.secret_key, bucket.name
        );
        match start_upstream_with(
            &tmp.path().join("upstream"),
            &[
                ("GLANCE_API_ENABLED_BACKENDS", "ceph:s3"),
                ("GLANCE_API_DEFAULT_BACKEND", "ceph"),
                ("GLANCE_API_STORE_CONF", &upstream_conf),
            ],
        ) {
            Err(e) => println!("  upstream Glance did not start: {e}"),
            Ok((upstream, upstream_port)) => {
                let theirs_api = Api::new(upstream_port);
                let upstream_pid = upstream.pid().expect("uWSGI's pid");
                // Upstream's processes where glance-api's are: with the curl clients.
                let upstream_pinned = pinned.as_ref().and_then(|_| {
                    Placement::new(
                        &process_tree(upstream_pid)
                            .into_iter()
                            .map(|p| (p, OUR_CPU))
                            .collect::<Vec<_>>(),
                        OUR_CPU,
                    )
                });
                let upstream_processes = {
                    let mut all = vec![("upstream", upstream_pid)];
                    all.extend(processes(&glance).into_iter().skip(1));
                    all
                };
                // Upload to a new image, check it, GET it cold, check that the GET filled
                // the cache, delete it: the same on both sides.
                let round = |api: &Api,
                             name: &str,
                             uploads: &mut Samples,
                             gets: &mut Samples,
                             upload_cpu: &mut CpuUse,
                             get_cpu: &mut CpuUse| {
                    let mut id = String::new();
                    upload_cpu.measure(|| {
                        let (new, secs) = upload(api, name, &big, size);
                        id = new;
                        uploads.push(gbps(size, secs));
                        (size, secs)
                    });
                    let image = api.image(&id);
                    assert_eq!(image["checksum"], md5.as_str(), "{name}");
                    assert_eq!(image["os_hash_value"], sha512.as_str(), "{name}");
                    assert!(!api.is_cached(&id), "{name}: cached before its first GET");
                    let url = format!("http://127.0.0.1:{}/v2/images/{id}/file", api.port());
                    let (bytes, secs) = get_cpu.measure(|| curl_fetch(&url));
                    assert_eq!(bytes, size, "{name}: GET");
                    gets.push(gbps(bytes, secs));
                    api.wait_cached(&id, Duration::from_millis(20));
                    api.expect("DELETE", &format!("/v2/images/{id}"), None, 204);
                    assert_eq!(s3.size(&bucket.name, &id), None, "{name}: object left");
                    s3.collect_garbage();
                };
                let (mut our_uploads, mut our_gets) = (Samples::new(), Samples::new());
                let (mut their_uploads, mut their_gets) = (Samples::new(), Samples::new());
                let mut cpu: Vec<CpuUse> = (0..2)
                    .map(|_| CpuUse::new(&processes(&glance)))
                    .chain((0..2).map(|_| CpuUse::new(&upstream_processes)))
                    .collect();
                let [our_up_cpu, our_get_cpu, their_up_cpu, their_get_cpu] = &mut cpu[..] else {
                    unreachable!()
                };
                let mut n = 0;
                let mut m = 0;
                interleave(
                    runs,
                    || {
                        n += 1;
                        round(
                            &api,
                            &format!("ours-{n}"),
                            &mut our_uploads,
                            &mut our_gets,
                            our_up_cpu,
                            our_get_cpu,
                        );
                    },
                    || {
                        m += 1;
                        round(
                            &theirs_api,
                            &format!("upstream-{m}"),
                            &mut their_uploads,
                            &mut their_gets,
                            their_up_cpu,
                            their_get_cpu,
                        );
                    },
                );
                println!("  upload:");
                compare(
                    &mut rows,
                    &format!("4a. upload {} vs upstream", mib(size)),
                    &our_uploads,
                    "upstream:",
                    &their_uploads,
                    2.0,
                );
                println!("  glance-api: {}", our_up_cpu.show());
                println!("  upstream:   {}", their_up_cpu.show());
                println!("  cold GET:");
                compare(
                    &mut rows,
                    &format!("4b. cold GET {} vs upstream", mib(size)),
                    &our_gets,
                    "upstream:",
                    &their_gets,
                    2.0,
                );
                println!("  glance-api: {}", our_get_cpu.show());
                println!("  upstream:   {}", their_get_cpu.show());
                drop(upstream_pinned);
                upstream.stop();
            }
        }
    }

    // 5. Memory while uploading, in a fresh glance-api.
    if want(5) {
        println!(
            "\n4. glance-api memory while it uploads a {} image (limit {RSS_LIMIT_MIB} MiB)",
            mib(rss_size)
        );
        // The S3 server's osd holds 3 GiB: room for this image only.
        drop(pinned);
        api.expect("DELETE", &format!("/v2/images/{id}"), None, 204);
        s3.collect_garbage();
        glance.stop();
        drop(glance);
        let file = if rss_size == size {
            big.clone()
        } else {
            let _ = fs::remove_file(&big);
            let file = data.join("rss.bin");
            make_data(&file, rss_size, 0xd1b5_4a32_d192_ed03);
            file
        };
        let (glance, api) = start_glance(&state, &stores);
        let pinned = placement(&glance);
        thread::sleep(Duration::from_millis(500));
        let pid = glance.pid();
        let idle = proc_status_mib(pid, "VmHWM:").expect("VmHWM");
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
        let mut cpu = CpuUse::new(&processes(&glance));
        let mut rss_id = String::new();
        cpu.measure(|| {
            let (id, secs) = upload(&api, "bench-rss", &file, rss_size);
            rss_id = id;
            (rss_size, secs)
        });
        stop.store(true, Ordering::Relaxed);
        let (max_rss, samples) = sampler.join().expect("sampler");
        let hwm = proc_status_mib(pid, "VmHWM:").expect("VmHWM");
        let secs = cpu.wall;
        println!("  idle:   VmHWM {idle:.1} MiB");
        println!(
            "  upload: max VmRSS {max_rss:.1} MiB ({samples} samples, every 10 ms), VmHWM \
             {hwm:.1} MiB: {} (limit {RSS_LIMIT_MIB} MiB); {secs:.2} s ({:.2} GB/s)",
            if hwm <= RSS_LIMIT_MIB {
                "met"
            } else {
                "MISSED"
            },
            gbps(rss_size, secs)
        );
        println!("  {}", cpu.show());
        api.expect("DELETE", &format!("/v2/images/{rss_id}"), None, 204);
        s3.collect_garbage();
        rows.push(Row {
            what: format!("5. VmHWM upload {}", mib(rss_size)),
            ours: format!("{hwm:.1} MiB"),
            reference: format!(
                "limit {RSS_LIMIT_MIB} MiB{}",
                if hwm <= RSS_LIMIT_MIB { "" } else { ", MISSED" }
            ),
            ratio: None,
        });
        drop(pinned);
        drop(glance);
    } else {
        drop(pinned);
        drop(glance);
    }

    print_summary(&format!("curl, medians of {runs}"), &rows);
}
