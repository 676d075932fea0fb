//! The centralized_db cache driver: several nodes (cache directories with their own
//! worker_self_reference_url) on one catalogue database. Each node sees, counts, deletes
//! and prunes only its own rows; the catalogue tells which nodes hold an image
//! (`GET /v2/cache/nodes/{id}`); an earlier sqlite driver's cache.db is migrated; rows
//! read and write as upstream Glance's do. The catalogue is SQLite, or MariaDB or
//! PostgreSQL with GLANCE_TEST_DATABASE (see tests/common/db.rs).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::cache::{cached_ids, id, md5_hex, put};
use common::db::{backend, fresh_catalogue};
use common::server::{Server, active_image, call, conf_with_database, data, start_conf};
use glance_operator::api::server::build_state;
use glance_operator::api::settings::ApiSettings;
use glance_operator::cache::{Cache, CacheError, CentralDb, DriverKind, ImageId};
use glance_operator::conf::Config;
use glance_operator::db::cached_images::CachedImage;
use glance_operator::db::{Backend, Db, DbOptions, DbUrl};
use glance_operator::store::FileStore;
use serde_json::json;
use tokio::runtime::Runtime;

/// One catalogue database, and the runtime its connections live on. The tests call the
/// cache from their own thread, outside the runtime, as glance-api's blocking threads do.
struct Catalogue {
    dir: tempfile::TempDir,
    url: String,
    db: Arc<Db>,
    runtime: Runtime,
}

fn catalogue() -> Catalogue {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let url = runtime.block_on(fresh_catalogue(dir.path()));
    let options = DbOptions::new(DbUrl::parse(&url).expect("url"));
    let store = FileStore::new(&dir.path().join("images"), "default_backend");
    let db = runtime
        .block_on(Db::open(&options, &store))
        .expect("catalogue");
    Catalogue {
        dir,
        url,
        db: Arc::new(db),
        runtime,
    }
}

fn node_url(name: &str) -> String {
    format!("http://{name}.glance:9292")
}

impl Catalogue {
    fn cache_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("cache-{name}"))
    }

    /// Node `name`'s cache, rows in this catalogue.
    /// Nodes "a" and "b", each holding images 1 to 3 of 100 bytes.
    fn two_nodes_holding_three_images(&self) -> (Cache, Cache) {
        let (a, b) = (self.node("a"), self.node("b"));
        for n in 1..=3 {
            put(&a, &id(n), &[n as u8; 100]);
            put(&b, &id(n), &[n as u8; 100]);
        }
        (a, b)
    }

    fn node(&self, name: &str) -> Cache {
        let central = CentralDb::register(
            self.db.clone(),
            &node_url(name),
            self.runtime.handle().clone(),
        )
        .expect("register");
        Cache::open_central(&self.cache_dir(name), central, "cache.db").expect("open")
    }

    fn node_id(&self, name: &str) -> i64 {
        self.runtime
            .block_on(self.db.node_reference_id(&node_url(name)))
            .expect("query")
            .expect("registered")
    }

    /// Node `name`'s rows in the catalogue, by image ID.
    fn rows(&self, name: &str) -> BTreeMap<String, CachedImage> {
        let node = self.node_id(name);
        self.runtime
            .block_on(self.db.cached_images(node))
            .expect("rows")
            .into_iter()
            .map(|r| (r.image_id.clone(), r))
            .collect()
    }

    fn nodes(&self, image: &ImageId) -> Vec<String> {
        self.runtime
            .block_on(self.db.cached_nodes(image.as_str()))
            .expect("nodes")
    }
}

/// `sql` with PostgreSQL's numbered placeholders when the catalogue is PostgreSQL.
fn portable(sql: &str) -> String {
    if backend() != Backend::Postgres {
        return sql.to_owned();
    }
    let mut n = 0;
    sql.chars()
        .map(|ch| {
            if ch == '?' {
                n += 1;
                format!("${n}")
            } else {
                ch.to_string()
            }
        })
        .collect()
}

/// A connection pool of its own to the catalogue at `url`, as another program's.
async fn pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(DbUrl::parse(url).expect("url").sqlx_url())
        .await
        .expect("pool")
}

/// Lets the clock move on far enough for the catalogue's DateTime columns to tell
/// before from after: MariaDB's DATETIME keeps whole seconds (upstream's schema, whose
/// prune then orders images read within one second by ID).
fn settle() {
    if backend() == Backend::MySql {
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
}

fn read(cache: &Cache, image: &ImageId) {
    let (mut file, _) = cache.open_for_read(image).expect("read").expect("cached");
    std::io::copy(&mut file, &mut std::io::sink()).expect("copy");
}

#[test]
fn two_nodes_on_one_catalogue_keep_their_own_rows() {
    let c = catalogue();
    let (a, b) = (c.node("a"), c.node("b"));
    assert_eq!(a.driver(), DriverKind::CentralizedDb);
    let (one, two) = (id(1), id(2));
    put(&a, &one, b"image one");
    put(&a, &two, b"image two, longer");
    put(&b, &one, b"image one");

    assert_eq!(cached_ids(&a), vec![one.clone(), two.clone()]);
    assert_eq!(cached_ids(&b), vec![one.clone()]);
    let rows = c.rows("a");
    let row = &rows[one.as_str()];
    assert_eq!(
        (row.size, row.hits, row.checksum.as_deref()),
        (9, 0, Some(md5_hex(b"image one").as_str()))
    );
    assert_eq!(row.last_accessed, row.last_modified);
    assert_eq!(rows[two.as_str()].size, 17);
    assert_eq!(c.rows("b").keys().collect::<Vec<_>>(), vec![one.as_str()]);

    // A hit on node A counts on A's row only.
    let b_before = c.rows("b")[one.as_str()].clone();
    read(&a, &one);
    read(&a, &one);
    let a_after = &c.rows("a")[one.as_str()];
    assert_eq!(a_after.hits, 2);
    assert!(a_after.last_accessed >= row.last_accessed);
    assert_eq!(c.rows("b")[one.as_str()], b_before);
    let listed = a.cached().expect("list");
    assert_eq!((listed[0].hits, listed[1].hits), (2, 0));
    assert_eq!(b.cached().expect("list")[0].hits, 0);

    // The catalogue knows who holds what; a delete on B leaves A's copy and row.
    assert_eq!(c.nodes(&one), vec![node_url("a"), node_url("b")]);
    assert_eq!(a.cached_nodes(&two).expect("nodes"), vec![node_url("a")]);
    assert!(b.delete(&one).expect("delete"));
    assert_eq!(b.cached_nodes(&one).expect("nodes"), vec![node_url("a")]);
    assert!(a.is_cached(&one) && !b.is_cached(&one));
    assert_eq!(cached_ids(&a), vec![one.clone(), two.clone()]);
    assert!(c.rows("b").is_empty());
    assert!(c.nodes(&id(3)).is_empty());
}

#[test]
fn prune_and_delete_all_leave_other_nodes_alone() {
    let c = catalogue();
    let (a, b) = c.two_nodes_holding_three_images();
    // On A, image 1 is the least recently used, then 3, then 2; on B image 1 is the most.
    settle();
    read(&a, &id(3));
    settle();
    read(&a, &id(2));
    read(&b, &id(1));
    let b_rows = c.rows("b");

    let report = a.prune(150).expect("prune");
    assert_eq!(
        (report.files, report.bytes, report.remaining),
        (2, 200, 100)
    );
    assert_eq!(cached_ids(&a), vec![id(2)]);
    assert_eq!(
        c.rows("a").keys().cloned().collect::<Vec<_>>(),
        vec![id(2).to_string()]
    );
    assert_eq!(c.rows("b"), b_rows, "B's rows untouched by A's prune");
    assert_eq!(cached_ids(&b), vec![id(1), id(2), id(3)]);
    assert_eq!(c.nodes(&id(1)), vec![node_url("b")]);

    assert_eq!(a.delete_all_cached().expect("delete all"), 1);
    assert!(c.rows("a").is_empty() && cached_ids(&a).is_empty());
    assert_eq!(c.rows("b"), b_rows);
    assert_eq!(b.delete_all_cached().expect("delete all"), 3);
    assert!(c.rows("b").is_empty());
}

#[test]
fn files_and_rows_are_reconciled_per_node() {
    let c = catalogue();
    let (a, b) = (c.node("a"), c.node("b"));
    put(&b, &id(7), b"b's copy");
    // A file without a row (a crash between rename and commit) is adopted by the listing.
    std::fs::write(c.cache_dir("a").join(id(1).as_str()), b"adopted").expect("write");
    let listed = a.cached().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].image_id.clone(), listed[0].hits, listed[0].size),
        (id(1), 0, 7)
    );
    assert_eq!(c.rows("a")[id(1).as_str()].checksum, None);
    // A read of a file without a row gives it one, with the hit.
    std::fs::write(c.cache_dir("a").join(id(2).as_str()), b"read first").expect("write");
    read(&a, &id(2));
    assert_eq!(c.rows("a")[id(2).as_str()].hits, 1);
    // A row without a file (removed behind the cache's back) is dropped by the listing.
    std::fs::remove_file(c.cache_dir("a").join(id(1).as_str())).expect("rm");
    assert_eq!(cached_ids(&a), vec![id(2)]);
    assert!(!c.rows("a").contains_key(id(1).as_str()));
    assert_eq!(c.nodes(&id(1)), Vec::<String>::new());
    // B's row for an image whose file A does not have is not A's to drop.
    assert_eq!(c.nodes(&id(7)), vec![node_url("b")]);
    // A write over a stale row replaces it.
    std::fs::remove_file(c.cache_dir("a").join(id(2).as_str())).expect("rm");
    put(&a, &id(2), b"new bytes!");
    let row = &c.rows("a")[id(2).as_str()];
    assert_eq!((row.hits, row.size), (0, 10));
}

#[test]
fn a_node_registers_once_and_a_failed_commit_leaves_no_file() {
    let c = catalogue();
    let a = c.node("a");
    let again = c.node("a");
    put(&a, &id(1), b"shared dir");
    assert_eq!(cached_ids(&again), vec![id(1)]);
    let count: i64 = c.runtime.block_on(async {
        use sqlx::Row;
        let pool = pool(&c.url).await;
        let count = sqlx::query(sqlx::AssertSqlSafe(portable(
            "SELECT COUNT(*) FROM node_reference WHERE node_reference_url = ?",
        )))
        .bind(node_url("a"))
        .fetch_one(&pool)
        .await
        .expect("count")
        .try_get(0)
        .expect("count");
        pool.close().await;
        count
    });
    assert_eq!(count, 1);

    // With the catalogue gone, a write cannot commit its row: no file is published.
    c.runtime.block_on(c.db.close());
    let mut w = a
        .open_for_write(&id(2), None)
        .expect("open")
        .expect("not cached");
    w.write_all(b"orphan?").expect("write");
    let err = w.commit().expect_err("no database");
    assert!(matches!(err, CacheError::Central { .. }), "{err}");
    assert!(err.to_string().contains(&node_url("a")), "{err}");
    assert!(!a.is_cached(&id(2)) && !a.is_being_cached(&id(2)));
    assert!(
        c.cache_dir("a")
            .join("invalid")
            .join(id(2).as_str())
            .exists()
    );
    // Reads still serve the cached copy; the hit is only not counted.
    read(&a, &id(1));
}

#[test]
fn an_sqlite_cache_db_is_migrated_to_the_catalogue() {
    let c = catalogue();
    let dir = c.cache_dir("a");
    {
        let old = Cache::open(&dir, DriverKind::Sqlite, "cache.db").expect("sqlite cache");
        put(&old, &id(1), b"one");
        put(&old, &id(2), b"two!");
        put(&old, &id(3), b"gone");
        read(&old, &id(2));
        read(&old, &id(2));
        // A row whose file is gone is not migrated.
        std::fs::remove_file(dir.join(id(3).as_str())).expect("rm");
    }
    let old_rows = rusqlite::Connection::open(dir.join("cache.db"))
        .expect("cache.db")
        .query_row(
            "SELECT last_modified, checksum FROM cached_images WHERE image_id = ?1",
            [id(2).as_str()],
            |r| Ok((r.get::<_, f64>(0)?, r.get::<_, Option<String>>(1)?)),
        )
        .expect("row");

    let a = c.node("a");
    let rows = c.rows("a");
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        vec![id(1).to_string(), id(2).to_string()]
    );
    let two = &rows[id(2).as_str()];
    assert_eq!((two.hits, two.size), (2, 4));
    assert_eq!(two.checksum, old_rows.1);
    assert!(
        (two.last_modified - old_rows.0).abs() < 1.0,
        "{two:?} vs {old_rows:?}"
    );
    // The rows left cache.db, which stays; a second start migrates nothing.
    let left: i64 = rusqlite::Connection::open(dir.join("cache.db"))
        .expect("cache.db")
        .query_row("SELECT COUNT(*) FROM cached_images", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0);
    drop(a);
    let a = c.node("a");
    assert_eq!(c.rows("a")[id(2).as_str()].hits, 2);
    assert_eq!(cached_ids(&a), vec![id(1), id(2)]);
}

/// The rows read and write as upstream's SQLAlchemy models do: the queries of
/// glance/db/sqlalchemy/api.py find ours, and ours find rows written as upstream writes
/// them. On SQLite the column values are also checked for the storage types and the
/// text format SQLAlchemy uses.
#[test]
fn rows_are_upstreams() {
    let c = catalogue();
    let a = c.node("a");
    put(&a, &id(1), b"upstream shape");
    read(&a, &id(1));
    let node = c.node_id("a");
    let sql = |s: &str| portable(s);
    let ts = |s: &str| {
        if backend() == Backend::Postgres {
            s.replace("?ts", "CAST(? AS TIMESTAMP)")
        } else {
            s.replace("?ts", "?")
        }
    };
    c.runtime.block_on(async {
        use sqlx::Row;
        let pool = pool(&c.url).await;
        // get_hit_count / get_cached_images: an outer join on the node's URL.
        let hits: i64 = sqlx::query(sqlx::AssertSqlSafe(sql("SELECT cached_images.hits FROM cached_images LEFT OUTER JOIN node_reference ON node_reference.node_reference_id = cached_images.node_reference_id WHERE cached_images.image_id = ? AND node_reference.node_reference_url = ?")))
            .bind(id(1).as_str())
            .bind(node_url("a"))
            .fetch_one(&pool)
            .await
            .expect("get_hit_count")
            .try_get(0)
            .expect("hits");
        assert_eq!(hits, 1);
        // update_hit_count and insert_cache_details as upstream issues them, with
        // oslo's utcnow() as SQLAlchemy binds it.
        sqlx::query(sqlx::AssertSqlSafe(sql(&ts("UPDATE cached_images SET hits=(cached_images.hits + ?), last_accessed=?ts WHERE cached_images.image_id = ? AND cached_images.node_reference_id = (SELECT node_reference.node_reference_id FROM node_reference WHERE node_reference.node_reference_url = ?)"))))
            .bind(1_i32)
            .bind("2030-01-02 03:04:05.678900")
            .bind(id(1).as_str())
            .bind(node_url("a"))
            .execute(&pool)
            .await
            .expect("update_hit_count");
        std::fs::write(c.cache_dir("a").join(id(2).as_str()), b"by upstream").expect("file");
        sqlx::query(sqlx::AssertSqlSafe(sql(&ts("INSERT INTO cached_images (image_id, last_accessed, last_modified, size, hits, checksum, node_reference_id) VALUES (?, ?ts, ?ts, ?, ?, ?, ?)"))))
            .bind(id(2).as_str())
            .bind("2029-05-06 07:08:09.000000")
            .bind("2029-05-06 07:08:09.000000")
            .bind(11_i64)
            .bind(0_i32)
            .bind(None::<String>)
            .bind(node)
            .execute(&pool)
            .await
            .expect("insert_cache_details");
        pool.close().await;
    });
    let listed = a.cached().expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].hits, 2);
    // MariaDB's DATETIME drops the fraction.
    let accessed = if backend() == Backend::MySql {
        1_893_553_445.0
    } else {
        1_893_553_445.678_9
    };
    assert_eq!(listed[0].last_accessed, accessed);
    assert_eq!(
        (
            listed[1].image_id.clone(),
            listed[1].size,
            listed[1].hits,
            listed[1].last_modified
        ),
        (id(2), 11, 0, 1_872_745_689.0)
    );

    if backend() == Backend::Sqlite {
        let file = DbUrl::parse(&c.url)
            .expect("url")
            .sqlite_file
            .expect("file");
        let conn = rusqlite::Connection::open(file).expect("open");
        let (accessed, modified, types, checksum): (String, String, String, String) = conn
            .query_row(
                "SELECT last_accessed, last_modified, typeof(last_accessed) || typeof(size) || typeof(hits) || typeof(node_reference_id), checksum FROM cached_images WHERE image_id = ?1",
                [id(1).as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .expect("row");
        assert_eq!(accessed, "2030-01-02 03:04:05.678900");
        // SQLAlchemy's SQLite DATETIME: YYYY-MM-DD HH:MM:SS.ffffff.
        assert_eq!(modified.len(), 26, "{modified}");
        assert!(
            modified.chars().enumerate().all(|(i, ch)| match i {
                4 | 7 => ch == '-',
                10 => ch == ' ',
                13 | 16 => ch == ':',
                19 => ch == '.',
                _ => ch.is_ascii_digit(),
            }),
            "{modified}"
        );
        assert_eq!(types, "textintegerintegerinteger");
        assert_eq!(checksum, md5_hex(b"upstream shape"));
    }
}

// --- glance-api and the cache tools -------------------------------------------------

/// glance-api `name` with the centralized_db driver (`url` as its node URL, or none) on
/// catalogue `connection` in `dir`, its cache in `dir/cache-<name>`.
fn central_conf(dir: &Path, connection: &str, name: &str, url: Option<&str>) -> String {
    let d = dir.display();
    let mut text = conf_with_database(dir, 0, Some(1 << 30), "cachemanagement", connection)
        .replace(
            &format!("image_cache_dir = {d}/image-cache\n"),
            &format!("image_cache_dir = {d}/cache-{name}\nimage_cache_driver = centralized_db\n"),
        );
    if let Some(url) = url {
        text = text.replacen(
            "[DEFAULT]\n",
            &format!("[DEFAULT]\nworker_self_reference_url = {url}\n"),
            1,
        );
    }
    text
}

async fn central_server(dir: Arc<tempfile::TempDir>, connection: &str, name: &str) -> Server {
    let text = central_conf(dir.path(), connection, name, Some(&node_url(name)));
    start_conf(dir, connection.to_owned(), &text).await
}

#[tokio::test(flavor = "multi_thread")]
async fn glance_api_lists_the_nodes_that_hold_an_image() {
    let dir = Arc::new(tempfile::tempdir().expect("tmp"));
    let connection = fresh_catalogue(dir.path()).await;
    let a = central_server(dir.clone(), &connection, "a").await;
    let b = central_server(dir.clone(), &connection, "b").await;
    let bytes = data(50_000, 3);
    let image = active_image(a.addr, &bytes).await;
    let nodes = format!("/v2/cache/nodes/{image}");

    let reply = call(a.addr, "GET", &nodes, &[], vec![]).await;
    assert_eq!((reply.status, reply.json()), (200, json!([])));
    for server in [&a, &b] {
        let got = call(
            server.addr,
            "GET",
            &format!("/v2/images/{image}/file"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(got.body, bytes);
    }
    for server in [&a, &b] {
        let reply = call(server.addr, "GET", &nodes, &[], vec![]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.json(), json!([node_url("a"), node_url("b")]));
    }
    // A read served from A's cache counts on A's row only.
    call(
        a.addr,
        "GET",
        &format!("/v2/images/{image}/file"),
        &[],
        vec![],
    )
    .await;
    let hits = |server: &Server| {
        let addr = server.addr;
        async move { call(addr, "GET", "/v2/cache", &[], vec![]).await.json()["cached_images"].clone() }
    };
    let (on_a, on_b) = (hits(&a).await, hits(&b).await);
    assert_eq!(
        (on_a[0]["image_id"].clone(), on_a[0]["hits"].clone()),
        (json!(image), json!(1))
    );
    assert_eq!(on_b[0]["hits"], json!(0));

    // B drops its copy: only A holds the image now, and only B's listing changed.
    assert_eq!(
        call(b.addr, "DELETE", &format!("/v2/cache/{image}"), &[], vec![])
            .await
            .status,
        204
    );
    assert_eq!(
        call(a.addr, "GET", &nodes, &[], vec![]).await.json(),
        json!([node_url("a")])
    );
    assert_eq!(hits(&b).await, json!([]));
    assert_eq!(hits(&a).await.as_array().map(Vec::len), Some(1));
    let legacy = call(b.addr, "GET", "/v2/cached_images", &[], vec![])
        .await
        .json();
    assert_eq!(legacy, json!({"cached_images": []}));

    // 404 for an image that does not exist (or is not an ID), 405 for other methods.
    let missing = call(
        a.addr,
        "GET",
        &format!("/v2/cache/nodes/{}", ImageId::random()),
        &[],
        vec![],
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        call(a.addr, "GET", "/v2/cache/nodes/not-an-id", &[], vec![])
            .await
            .status,
        404
    );
    assert_eq!(
        call(a.addr, "DELETE", &nodes, &[], vec![]).await.status,
        405
    );
    // A deleted image is gone from every node's listing of it.
    assert_eq!(
        call(
            a.addr,
            "DELETE",
            &format!("/v2/images/{image}"),
            &[],
            vec![]
        )
        .await
        .status,
        204
    );
    assert_eq!(call(a.addr, "GET", &nodes, &[], vec![]).await.status, 404);
    assert_eq!(hits(&a).await, json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn glance_api_answers_409_without_centralized_caching() {
    let server = common::server::start(Some(1 << 30)).await;
    let bytes = data(100, 1);
    let image = active_image(server.addr, &bytes).await;
    for path in [
        format!("/v2/cache/nodes/{image}"),
        format!("/v2/cache/nodes/{}", ImageId::random()),
    ] {
        let reply = call(
            server.addr,
            "GET",
            &path,
            &[("Accept", "application/json")],
            vec![],
        )
        .await;
        assert_eq!(reply.status, 409);
        assert_eq!(
            reply.json()["message"],
            json!("Centralized caching is not enabled")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn glance_api_refuses_centralized_db_without_worker_self_reference_url() {
    let dir = tempfile::tempdir().expect("tmp");
    let connection = fresh_catalogue(dir.path()).await;
    let text = central_conf(dir.path(), &connection, "a", None);
    let settings = ApiSettings::from_config(&Config::from_str("t.conf", &text).expect("conf"))
        .expect("settings");
    let Err(err) = build_state(settings).await else {
        panic!("started without worker_self_reference_url");
    };
    let message = err.to_string();
    assert!(message.contains("worker_self_reference_url"), "{message}");
    assert!(message.contains("centralized_db"), "{message}");
    // The option set through oslo's environment source is enough.
    let mut config = Config::from_str("t.conf", &text).expect("conf");
    config.merge(Config::from_env([(
        "OS_DEFAULT__WORKER_SELF_REFERENCE_URL".to_owned(),
        node_url("a"),
    )]));
    let state = build_state(ApiSettings::from_config(&config).expect("settings"))
        .await
        .expect("starts");
    assert_eq!(
        state.cache.as_ref().map(|c| c.cache.driver()),
        Some(DriverKind::CentralizedDb)
    );
}

fn tool(program: &str, conf: &Path, url: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(program);
    cmd.arg("--config-file")
        .arg(conf)
        .env_remove("OS_DEFAULT__WORKER_SELF_REFERENCE_URL");
    if let Some(url) = url {
        cmd.env("OS_DEFAULT__WORKER_SELF_REFERENCE_URL", url);
    }
    let out = cmd.output().expect("run");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn cache_tools_work_on_their_nodes_rows() {
    let c = catalogue();
    let (a, _b) = c.two_nodes_holding_three_images();
    settle();
    read(&a, &id(1));
    assert!(a.queue(&id(9)).expect("queue"));
    let b_rows = c.rows("b");
    let conf = c.dir.path().join("a.conf");
    let text = format!(
        "[DEFAULT]\nimage_cache_dir = {}\nimage_cache_driver = centralized_db\nimage_cache_max_size = 150\nimage_cache_stall_time = 0\n[database]\nconnection = {}\nmax_retries = 0\n",
        c.cache_dir("a").display(),
        c.url
    );
    std::fs::write(&conf, &text).expect("conf");

    for program in [
        env!("CARGO_BIN_EXE_glance-cache-pruner"),
        env!("CARGO_BIN_EXE_glance-cache-cleaner"),
        env!("CARGO_BIN_EXE_glance-cache-prefetcher"),
    ] {
        let (ok, log) = tool(program, &conf, None);
        assert!(!ok, "{program} started without worker_self_reference_url");
        assert!(
            log.contains("worker_self_reference_url is not set"),
            "{program}: {log}"
        );
    }
    let (ok, log) = tool(
        env!("CARGO_BIN_EXE_glance-cache-pruner"),
        &conf,
        Some(&node_url("a")),
    );
    assert!(ok, "{log}");
    assert!(
        log.contains("files=2") && log.contains("bytes=200"),
        "{log}"
    );
    assert_eq!(cached_ids(&a), vec![id(1)]);
    assert_eq!(
        c.rows("a").keys().cloned().collect::<Vec<_>>(),
        vec![id(1).to_string()]
    );
    assert_eq!(c.rows("b"), b_rows);

    std::fs::write(
        c.cache_dir("a").join("invalid").join(id(5).as_str()),
        b"bad",
    )
    .expect("write");
    let (ok, log) = tool(
        env!("CARGO_BIN_EXE_glance-cache-cleaner"),
        &conf,
        Some(&node_url("a")),
    );
    assert!(ok && log.contains("invalid=1"), "{log}");
    assert_eq!(c.rows("b"), b_rows);

    // The prefetcher fetches A's queue from a glance-api and commits A's row.
    let server = c.runtime.block_on(common::server::start(None));
    let bytes = data(120, 9);
    let image = c.runtime.block_on(active_image(server.addr, &bytes));
    let image = ImageId::parse(&image).expect("id");
    assert!(a.queue(&image).expect("queue"));
    std::fs::write(
        &conf,
        text.replace(
            "image_cache_max_size = 150",
            "image_cache_max_size = 100000",
        ),
    )
    .expect("conf");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glance-cache-prefetcher"));
    cmd.arg("--config-file")
        .arg(&conf)
        .args(["--api-url", &format!("http://{}", server.addr)])
        .env("OS_DEFAULT__WORKER_SELF_REFERENCE_URL", node_url("a"));
    let out = cmd.output().expect("run");
    let log = String::from_utf8_lossy(&out.stderr);
    // id(9) is not in that glance-api: skipped; the image is fetched.
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("fetched=1") && log.contains("skipped=1"),
        "{log}"
    );
    assert!(a.is_cached(&image));
    let row = &c.rows("a")[image.as_str()];
    assert_eq!((row.size, row.hits), (120, 0));
    assert_eq!(row.checksum.as_deref(), Some(md5_hex(&bytes).as_str()));
    assert_eq!(c.nodes(&image), vec![node_url("a")]);
}

/// Two nodes, each with several threads, write, read, list and delete the same images at
/// once: every write commits (no deadlock between the nodes' transactions), and each
/// node ends with exactly its own rows.
#[test]
fn two_busy_nodes_write_the_same_images_at_once() {
    let c = catalogue();
    let nodes = [c.node("a"), c.node("b")];
    let images: Vec<ImageId> = (1..=24).map(id).collect();
    std::thread::scope(|scope| {
        for node in &nodes {
            for lane in 0..3 {
                let images = &images;
                scope.spawn(move || {
                    for (n, image) in images.iter().enumerate().filter(|(n, _)| n % 3 == lane) {
                        let bytes = format!("image {image}").into_bytes();
                        put(node, image, &bytes);
                        read(node, image);
                        if n % 4 == 0 {
                            assert!(node.delete(image).expect("delete"));
                            put(node, image, &bytes);
                        }
                        node.cached().expect("list");
                    }
                });
            }
        }
    });
    for (node, name) in nodes.iter().zip(["a", "b"]) {
        assert_eq!(cached_ids(node), images, "{name}");
        let rows = c.rows(name);
        assert_eq!(rows.len(), images.len(), "{name}");
        for (n, image) in images.iter().enumerate() {
            let expected = if n % 4 == 0 { 0 } else { 1 };
            assert_eq!(rows[image.as_str()].hits, expected, "{name} {image}");
        }
    }
    for image in &images {
        assert_eq!(c.nodes(image), vec![node_url("a"), node_url("b")]);
    }
}
