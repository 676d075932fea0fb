//! The cache engine on real directories: LRU prune, stop condition, clean, queue, crash
//! recovery with a killed writer process, racing writer processes, orphans, and a cache.db
//! made with upstream Glance's schema.

use std::fs::{self, File, FileTimes};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

mod common;

use common::cache::{cached_ids, id, md5_hex, put};
use glance_operator::cache::{Cache, CacheError, DriverKind, ImageId, xattr_meta};
use rusqlite::{Connection, params};

const CHILD_ENV: &str = "GLANCE_CACHE_TEST_CHILD";

fn open(dir: &Path) -> Cache {
    Cache::open(dir, DriverKind::Sqlite, "cache.db").expect("open cache")
}

/// Sets last_accessed of `image` in cache.db, as a read at that time would.
fn set_accessed(dir: &Path, image: &ImageId, at: f64) {
    let db = Connection::open(dir.join("cache.db")).expect("db");
    db.execute(
        "UPDATE cached_images SET last_accessed = ?1 WHERE image_id = ?2",
        params![at, image.as_str()],
    )
    .expect("update");
}

fn age(path: &Path, seconds: u64) {
    let then = SystemTime::now() - Duration::from_secs(seconds);
    File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_times(FileTimes::new().set_modified(then))
        .expect("times");
}

#[test]
fn write_verify_publish_and_count_hits() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    let image = id(1);
    let data = b"an image".repeat(1000);
    assert!(!cache.is_cached(&image));
    let mut w = cache
        .open_for_write(&image, Some(&md5_hex(&data)))
        .expect("open")
        .expect("writer");
    w.write_all(&data).expect("write");
    assert!(cache.is_being_cached(&image));
    assert!(
        !dir.path().join(image.as_str()).exists(),
        "nothing visible before commit"
    );
    let entry = w.commit().expect("commit");
    assert_eq!((entry.size, entry.hits), (8000, 0));
    assert!(cache.is_cached(&image) && !cache.is_being_cached(&image));
    assert!(
        cache.open_for_write(&image, None).expect("open").is_none(),
        "already cached"
    );

    for _ in 0..3 {
        let (mut file, size) = cache.open_for_read(&image).expect("read").expect("cached");
        let mut back = Vec::new();
        file.read_to_end(&mut back).expect("read");
        assert_eq!((back.as_slice(), size), (data.as_slice(), 8000));
    }
    let listed = cache.cached().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hits, 3);
    assert_eq!(listed[0].checksum.as_deref(), Some(md5_hex(&data).as_str()));
    assert!(listed[0].last_accessed >= listed[0].last_modified);
    assert!(cache.open_for_read(&id(2)).expect("read").is_none());
}

#[test]
fn a_checksum_mismatch_goes_to_invalid_and_never_becomes_visible() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    let image = id(1);
    let mut w = cache
        .open_for_write(&image, Some(&md5_hex(b"expected")))
        .expect("open")
        .expect("writer");
    w.write_all(b"corrupted").expect("write");
    let err = w.commit().expect_err("mismatch");
    assert!(matches!(err, CacheError::ChecksumMismatch { .. }), "{err}");
    assert!(!cache.is_cached(&image) && !cache.is_being_cached(&image));
    assert_eq!(
        fs::read(dir.path().join("invalid").join(image.as_str())).expect("invalid"),
        b"corrupted"
    );
    assert!(cache.cached().expect("list").is_empty());
}

#[test]
fn an_abandoned_write_is_rolled_back_to_invalid() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    {
        let mut w = cache
            .open_for_write(&id(1), None)
            .expect("open")
            .expect("writer");
        w.write_all(b"partial").expect("write");
    }
    assert!(!cache.is_cached(&id(1)) && !cache.is_being_cached(&id(1)));
    assert!(dir.path().join("invalid").join(id(1).as_str()).exists());
}

#[test]
fn one_writer_per_image_among_threads() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    let image = id(7);
    let all_tried = std::sync::Barrier::new(8);
    let winners: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let writer = cache.open_for_write(&image, None).expect("open");
                    all_tried.wait(); // every writer is still open while the others try
                    usize::from(writer.is_some())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("join")).sum()
    });
    assert_eq!(winners, 1);
}

#[test]
fn prune_evicts_least_recently_accessed_until_it_fits() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    // Ten 100-byte images; image n was last read at time 1000 - n, so 9 is the oldest.
    for n in 0..10 {
        put(&cache, &id(n), &[n as u8; 100]);
        set_accessed(dir.path(), &id(n), 1000.0 - f64::from(n));
    }
    assert_eq!(cache.total_size().expect("size"), 1000);
    let report = cache.prune(550).expect("prune");
    assert_eq!(
        (report.files, report.bytes, report.remaining),
        (5, 500, 500)
    );
    let left = cached_ids(&cache);
    assert_eq!(
        left,
        (0..5).map(id).collect::<Vec<_>>(),
        "the five most recently read remain"
    );
    // Already within the limit (the stop condition is size <= max): nothing to do.
    assert_eq!(cache.prune(500).expect("prune").files, 0);
    assert_eq!(cache.prune(499).expect("prune").files, 1);
    assert!(!cache.is_cached(&id(4)));
}

#[test]
fn prune_counts_partial_writes_and_always_terminates() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    for n in 0..5 {
        put(&cache, &id(n), &[1; 100]);
        set_accessed(dir.path(), &id(n), f64::from(n));
    }
    // An in-flight write of 300 bytes, a failed one of 50, and a foreign file.
    let mut writer = cache
        .open_for_write(&id(99), None)
        .expect("open")
        .expect("writer");
    writer.write_all(&[0; 300]).expect("write");
    fs::write(dir.path().join("invalid").join(id(98).as_str()), [0; 50]).expect("invalid");
    fs::write(dir.path().join("README.txt"), [0; 10_000]).expect("foreign");
    assert_eq!(cache.total_size().expect("size"), 850);
    let report = cache.prune(500).expect("prune");
    assert_eq!(
        (report.files, report.remaining),
        (4, 450),
        "partial bytes count toward the size"
    );
    // Partial bytes alone above the limit: every image goes, then prune stops.
    let report = cache.prune(100).expect("prune");
    assert_eq!((report.files, report.remaining), (1, 350));
    assert_eq!(
        cache.prune(0).expect("prune").files,
        0,
        "nothing left to evict; it returns"
    );
    assert!(
        dir.path().join("README.txt").exists(),
        "foreign files are left alone"
    );
    writer.commit().expect("the in-flight write still commits");
}

#[test]
fn clean_removes_invalid_and_stalled_but_not_fresh_or_live_writes() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    let incomplete = dir.path().join("incomplete");
    fs::write(dir.path().join("invalid").join(id(1).as_str()), [0; 10]).expect("invalid");
    fs::write(incomplete.join(id(2).as_str()), [0; 20]).expect("stalled");
    age(&incomplete.join(id(2).as_str()), 7200);
    fs::write(incomplete.join(id(3).as_str()), [0; 30]).expect("fresh");
    let mut live = cache
        .open_for_write(&id(4), None)
        .expect("open")
        .expect("writer");
    live.write_all(&[0; 40]).expect("write");
    age(&incomplete.join(id(4).as_str()), 7200);

    let report = cache.clean(Duration::from_secs(3600)).expect("clean");
    assert_eq!((report.invalid, report.stalled, report.bytes), (1, 1, 30));
    assert!(!incomplete.join(id(2).as_str()).exists());
    assert!(
        incomplete.join(id(3).as_str()).exists(),
        "fresh: younger than the stall time"
    );
    assert!(
        incomplete.join(id(4).as_str()).exists(),
        "a live writer's file is never removed"
    );
    live.commit().expect("the live write completes");
    assert!(cache.is_cached(&id(4)));
}

#[test]
fn queue_semantics_match_upstream() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    assert!(cache.queue(&id(1)).expect("queue"));
    assert!(!cache.queue(&id(1)).expect("queue"), "already queued");
    assert!(cache.is_queued(&id(1)));
    put(&cache, &id(2), b"x");
    assert!(!cache.queue(&id(2)).expect("queue"), "already cached");
    let _writer = cache
        .open_for_write(&id(3), None)
        .expect("open")
        .expect("writer");
    assert!(!cache.queue(&id(3)).expect("queue"), "being cached");
    assert!(cache.queue(&id(4)).expect("queue"));
    age(&dir.path().join("queue").join(id(4).as_str()), 60);
    assert_eq!(
        cache.queued().expect("queued"),
        vec![id(4), id(1)],
        "oldest first"
    );
    assert!(cache.dequeue(&id(4)).expect("dequeue"));
    assert!(!cache.dequeue(&id(4)).expect("dequeue"));
    assert!(cache.queue(&id(5)).expect("queue"));
    assert_eq!(cache.delete_all_queued().expect("clear"), 2);
    assert!(cache.queued().expect("queued").is_empty());
}

#[test]
fn delete_and_delete_all() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    for n in 0..3 {
        put(&cache, &id(n), b"data");
    }
    assert!(cache.delete(&id(0)).expect("delete"));
    assert!(!cache.delete(&id(0)).expect("delete"));
    assert_eq!(cache.delete_all_cached().expect("clear"), 2);
    assert!(cache.cached().expect("list").is_empty());
    assert_eq!(cache.total_size().expect("size"), 0);
}

#[test]
fn orphan_files_are_adopted_and_orphan_rows_dropped() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    put(&cache, &id(1), b"kept");
    fs::write(dir.path().join(id(2).as_str()), b"no row").expect("orphan file");
    let db = Connection::open(dir.path().join("cache.db")).expect("db");
    db.execute(
        "INSERT INTO cached_images (image_id, size, hits) VALUES (?1, 5, 9)",
        params![id(3).as_str()],
    )
    .expect("orphan row");
    let listed = cache.cached().expect("list");
    let ids: Vec<&ImageId> = listed.iter().map(|e| &e.image_id).collect();
    assert_eq!(ids, vec![&id(1), &id(2)]);
    assert_eq!((listed[1].size, listed[1].hits), (6, 0));
    let rows: Vec<String> = db
        .prepare("SELECT image_id FROM cached_images ORDER BY image_id")
        .expect("stmt")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows, vec![id(1).to_string(), id(2).to_string()]);
}

#[test]
fn a_cache_db_made_with_upstreams_schema_round_trips() {
    let dir = tempfile::tempdir().expect("tmp");
    // What upstream's sqlite driver creates and writes, statement for statement.
    let db = Connection::open(dir.path().join("cache.db")).expect("db");
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS cached_images (
            image_id TEXT PRIMARY KEY,
            last_accessed REAL DEFAULT 0.0,
            last_modified REAL DEFAULT 0.0,
            size INTEGER DEFAULT 0,
            hits INTEGER DEFAULT 0,
            checksum TEXT
        );",
    )
    .expect("schema");
    for dirname in ["incomplete", "invalid", "queue"] {
        fs::create_dir(dir.path().join(dirname)).expect("dir");
    }
    fs::write(dir.path().join(id(1).as_str()), b"upstream wrote me").expect("file");
    db.execute(
        "INSERT INTO cached_images (image_id, last_accessed, last_modified, hits, size) VALUES (?, ?, ?, 0, ?)",
        params![id(1).as_str(), 1_700_000_000.5, 1_700_000_000.5, 17],
    )
    .expect("insert");
    db.execute(
        "UPDATE cached_images SET hits = hits + 1, last_accessed = ? WHERE image_id = ?",
        params![1_700_000_100.25, id(1).as_str()],
    )
    .expect("hit");

    let cache = open(dir.path());
    let listed = cache.cached().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].hits, listed[0].last_accessed, listed[0].size),
        (1, 1_700_000_100.25, 17)
    );
    put(&cache, &id(2), b"we wrote this");
    cache.open_for_read(&id(1)).expect("read").expect("cached");

    // Upstream's own queries read what we wrote.
    let rows: Vec<(String, i64, f64, f64, i64)> = db
        .prepare("SELECT image_id, hits, last_accessed, last_modified, size FROM cached_images ORDER BY image_id").expect("stmt")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))).expect("query")
        .collect::<Result<_, _>>().expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].1, rows[0].4), (2, 17));
    assert!(rows[0].2 > 1_700_000_100.25);
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1, rows[1].4),
        (id(2).as_str(), 0, 13)
    );
    let lru: String = db
        .query_row(
            "SELECT image_id FROM cached_images ORDER BY last_accessed LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("lru");
    assert_eq!(
        lru,
        id(2).to_string(),
        "upstream's get_least_recently_accessed agrees"
    );
}

#[test]
fn the_xattr_driver_keeps_hits_on_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = Cache::open(dir.path(), DriverKind::Xattr, "cache.db")
        .expect("xattr supported on the test filesystem");
    put(&cache, &id(1), b"xattr image");
    for _ in 0..2 {
        cache.open_for_read(&id(1)).expect("read").expect("cached");
    }
    let path = dir.path().join(id(1).as_str());
    assert_eq!(
        xattr::get(&path, "user.hits").expect("xattr"),
        Some(b"2".to_vec())
    );
    let listed = cache.cached().expect("list");
    assert_eq!((listed[0].hits, listed[0].size), (2, 11));
    assert!(
        !dir.path().join("cache.db").exists(),
        "no database with the xattr driver"
    );
    put(&cache, &id(2), b"older");
    File::options()
        .write(true)
        .open(dir.path().join(id(2).as_str()))
        .expect("open")
        .set_times(FileTimes::new().set_accessed(SystemTime::UNIX_EPOCH + Duration::from_secs(1)))
        .expect("atime");
    assert_eq!(cache.prune(11).expect("prune").files, 1);
    assert!(
        cache.is_cached(&id(1)) && !cache.is_cached(&id(2)),
        "least recently accessed (atime) goes"
    );
}

#[test]
fn the_xattr_driver_refuses_a_filesystem_without_user_attributes() {
    let err =
        xattr_meta::check_supported(Path::new("/proc")).expect_err("procfs has no user xattrs");
    assert!(!err.to_string().is_empty());
}

/// Entry point of the child processes the tests below start (does nothing otherwise).
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::env::var("GLANCE_CACHE_TEST_DIR").expect("dir");
    let cache = open(Path::new(&dir));
    match role.as_str() {
        "stall" => {
            let mut w = cache
                .open_for_write(&id(1), None)
                .expect("open")
                .expect("writer");
            w.write_all(&[7; 1 << 20]).expect("write");
            w.flush().expect("flush");
            println!("READY");
            std::io::stdout().flush().expect("stdout");
            std::thread::sleep(Duration::from_secs(600));
        }
        "race" => {
            let data = vec![9u8; 4 << 20];
            match cache
                .open_for_write(&id(2), Some(&md5_hex(&data)))
                .expect("open")
            {
                Some(mut w) => {
                    for chunk in data.chunks(64 << 10) {
                        w.write_all(chunk).expect("write");
                    }
                    w.commit().expect("commit");
                    println!("WON");
                }
                None => println!("LOST"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn child(role: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "child_process_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, role)
    .env("GLANCE_CACHE_TEST_DIR", dir)
    .stdout(Stdio::piped());
    cmd
}

#[test]
fn a_writer_killed_mid_stream_leaves_nothing_in_place_and_is_cleaned() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    let mut writer = child("stall", dir.path()).spawn().expect("spawn");
    let mut lines = BufReader::new(writer.stdout.take().expect("stdout")).lines();
    assert!(
        lines.any(|l| l.map(|l| l.contains("READY")).unwrap_or(false)),
        "child started writing"
    );
    assert!(cache.is_being_cached(&id(1)));
    assert!(
        cache.open_for_write(&id(1), None).expect("open").is_none(),
        "one writer per image"
    );
    assert_eq!(
        cache.clean(Duration::ZERO).expect("clean").stalled,
        0,
        "the writer is alive"
    );

    writer.kill().expect("kill");
    writer.wait().expect("wait");
    assert!(
        !cache.is_cached(&id(1)),
        "a crash never leaves a file in the final location"
    );
    assert!(cache.cached().expect("list").is_empty());
    assert_eq!(
        cache.total_size().expect("size"),
        1 << 20,
        "the partial file still counts"
    );
    let report = cache.clean(Duration::ZERO).expect("clean");
    assert_eq!(
        (report.stalled, report.bytes),
        (1, 1 << 20),
        "the dead writer's file is stalled"
    );
    put(&cache, &id(1), b"second attempt");
    assert!(cache.is_cached(&id(1)));
}

#[test]
fn two_writer_processes_never_interleave() {
    let dir = tempfile::tempdir().expect("tmp");
    let cache = open(dir.path());
    let children: Vec<_> = (0..2)
        .map(|_| child("race", dir.path()).spawn().expect("spawn"))
        .collect();
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| String::from_utf8(c.wait_with_output().expect("wait").stdout).expect("utf-8"))
        .collect();
    let won = outputs.iter().filter(|o| o.contains("WON")).count();
    let lost = outputs.iter().filter(|o| o.contains("LOST")).count();
    // Either one won and the other found it being (or already) cached.
    assert_eq!((won, lost), (1, 1), "{outputs:?}");
    let (mut file, size) = cache.open_for_read(&id(2)).expect("read").expect("cached");
    let mut data = Vec::new();
    file.read_to_end(&mut data).expect("read");
    assert_eq!(size, 4 << 20);
    assert!(data.iter().all(|b| *b == 9));
}
