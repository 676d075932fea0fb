//! Cache benchmark: prints figures, asserts nothing about time.
//!
//! - prune of 2,000 and 100,000 entries down to half (in process, and the
//!   glance-cache-pruner binary including its start-up);
//! - clean of 10,000 stalled files;
//! - upstream Glance's glance-cache-pruner (PyPI glance, installed by
//!   benches/upstream/setup.sh into target/) on an identical 2,000-entry cache, with
//!   the time ratio measured in the same run.
//!
//! Caches are built by benches/upstream/make_cache.py, the same generator for both
//! implementations, on /dev/shm when it exists (set BENCH_DIR to choose), so that
//! storage sync latency does not dominate either side.
//!
//! Run: `cargo bench --bench cache` (BENCH_SKIP_UPSTREAM=1 skips upstream).

use std::fs::{self, File, FileTimes};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use glance_operator::cache::{Cache, DriverKind};

const ENTRY_SIZE: u64 = 1 << 20;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            if Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                root().join("target")
            }
        });
    base.join(format!("glance-cache-bench-{}", std::process::id()))
}

fn make_cache(dir: &Path, entries: usize) {
    let _ = fs::remove_dir_all(dir);
    let status = Command::new("python3")
        .arg(root().join("benches/upstream/make_cache.py"))
        .arg(dir)
        .arg(entries.to_string())
        .arg(ENTRY_SIZE.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("python3 runs make_cache.py");
    assert!(status.success(), "make_cache.py failed");
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The entries left after a prune to half are the newest half (make_cache.py gives entry
/// i last_accessed = base + i).
fn verify_half_left(dir: &Path, entries: usize) {
    let cache = Cache::open(dir, DriverKind::Sqlite, "cache.db").expect("open");
    let left = cache.cached().expect("list");
    assert_eq!(
        left.len(),
        entries / 2,
        "{} entries left in {}",
        left.len(),
        dir.display()
    );
    let oldest = left
        .iter()
        .map(|e| e.last_accessed)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(
        oldest,
        1_700_000_000.0 + (entries / 2) as f64,
        "the newest half remains"
    );
}

fn config(dir: &Path, max_size: u64) -> PathBuf {
    let conf = dir.with_extension("conf");
    fs::write(
        &conf,
        format!(
            "[DEFAULT]\nimage_cache_dir = {}\nimage_cache_driver = sqlite\nimage_cache_max_size = {max_size}\n",
            dir.display()
        ),
    )
    .expect("write config");
    conf
}

fn prune_in_process(dir: &Path, entries: usize, runs: usize) -> Duration {
    let max = entries as u64 * ENTRY_SIZE / 2;
    let samples = (0..runs)
        .map(|_| {
            make_cache(dir, entries);
            let start = Instant::now();
            let cache = Cache::open(dir, DriverKind::Sqlite, "cache.db").expect("open");
            let report = cache.prune(max).expect("prune");
            let elapsed = start.elapsed();
            assert_eq!(report.files, entries / 2);
            verify_half_left(dir, entries);
            elapsed
        })
        .collect();
    median(samples)
}

fn prune_with(program: &Path, dir: &Path, entries: usize, runs: usize) -> Duration {
    let conf = config(dir, entries as u64 * ENTRY_SIZE / 2);
    let samples = (0..runs)
        .map(|_| {
            make_cache(dir, entries);
            let start = Instant::now();
            let out = Command::new(program)
                .arg("--config-file")
                .arg(&conf)
                .output()
                .expect("run pruner");
            let elapsed = start.elapsed();
            assert!(
                out.status.success(),
                "{}: {}",
                program.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            verify_half_left(dir, entries);
            elapsed
        })
        .collect();
    median(samples)
}

fn clean_stalled(dir: &Path, files: usize, runs: usize) -> Duration {
    let samples = (0..runs)
        .map(|_| {
            make_cache(dir, 0);
            let cache = Cache::open(dir, DriverKind::Sqlite, "cache.db").expect("open");
            let old = FileTimes::new().set_modified(SystemTime::now() - Duration::from_secs(7200));
            for n in 0..files {
                let path = dir
                    .join("incomplete")
                    .join(format!("00000000-0000-4000-8000-{n:012}"));
                let file = File::create(&path).expect("create");
                file.set_len(4096).expect("size");
                file.set_times(old).expect("age");
            }
            let start = Instant::now();
            let report = cache.clean(Duration::from_secs(3600)).expect("clean");
            let elapsed = start.elapsed();
            assert_eq!(report.stalled, files);
            elapsed
        })
        .collect();
    median(samples)
}

fn upstream_pruner() -> Option<PathBuf> {
    if std::env::var_os("BENCH_SKIP_UPSTREAM").is_some() {
        return None;
    }
    let out = Command::new("bash")
        .arg(root().join("benches/upstream/setup.sh"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "upstream Glance could not be installed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Some(Path::new(&venv).join("bin/glance-cache-pruner"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes --bench; any other argument is ignored too.
    let dir = bench_dir();
    let cache_dir = dir.join("cache");
    fs::create_dir_all(&dir).expect("bench dir");
    println!(
        "cache benchmark in {} (median of runs; {} byte sparse entries)",
        dir.display(),
        ENTRY_SIZE
    );

    let ours_bin = PathBuf::from(env!("CARGO_BIN_EXE_glance-cache-pruner"));
    let p2k = prune_in_process(&cache_dir, 2_000, 5);
    println!(
        "prune   2,000 -> 1,000 entries, in process:      {:>9.1} ms  ({:.1} us/entry evicted)",
        ms(p2k),
        ms(p2k) * 1000.0 / 1000.0
    );
    let p100k = prune_in_process(&cache_dir, 100_000, 3);
    println!(
        "prune 100,000 -> 50,000 entries, in process:    {:>9.1} ms  ({:.1} us/entry evicted)",
        ms(p100k),
        ms(p100k) * 1000.0 / 50_000.0
    );
    let clean = clean_stalled(&cache_dir, 10_000, 3);
    println!(
        "clean 10,000 stalled files:                     {:>9.1} ms  ({:.1} us/file)",
        ms(clean),
        ms(clean) * 1000.0 / 10_000.0
    );
    let bin2k = prune_with(&ours_bin, &cache_dir, 2_000, 5);
    println!(
        "glance-cache-pruner (ours), 2,000 -> 1,000:     {:>9.1} ms  (process, start-up included)",
        ms(bin2k)
    );

    match upstream_pruner() {
        Some(upstream) => {
            let up2k = prune_with(&upstream, &cache_dir, 2_000, 5);
            println!(
                "glance-cache-pruner (upstream 33.0.0), same:    {:>9.1} ms  (process, start-up included)",
                ms(up2k)
            );
            println!(
                "ratio upstream / ours, process vs process:      {:>9.1}x",
                up2k.as_secs_f64() / bin2k.as_secs_f64()
            );
            println!(
                "ratio upstream / ours, upstream vs in-process:  {:>9.1}x",
                up2k.as_secs_f64() / p2k.as_secs_f64()
            );
        }
        None => println!("upstream glance-cache-pruner: skipped"),
    }
    let _ = fs::remove_dir_all(&dir);
}
