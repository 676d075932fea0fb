//! Image metadata in upstream Glance's schema, on MariaDB/MySQL, PostgreSQL or SQLite,
//! at the `[database] connection` URL, through one async sqlx pool.
//!
//! [`url`] reads SQLAlchemy URLs, [`options`] oslo.db's pool and retry options,
//! [`schema`] creates and checks the tables (`glance-manage db_sync`), [`records`] reads
//! and writes images, [`query`] turns a listing into SQL, and [`manage`] is
//! `glance-manage`. [`cached_images`] holds the image cache's rows for the
//! `centralized_db` cache driver.

pub mod cached_images;
mod dialect;
pub mod manage;
pub mod members;
pub mod metadef_files;
pub mod metadefs;
pub mod options;
mod query;
mod records;
pub mod schema;
mod tasks;
pub mod url;

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, SqlStr, Transaction};
use thiserror::Error;

pub use dialect::Dialect;
pub use options::DbOptions;
pub use query::{Cmp, Condition, ListQuery, SortDir, SortKey, Viewer};
pub use records::{
    Activation, IMPORT_LOCK, IMPORTING_TO_STORES, ImageEdit, StoreRemoval, UPLOAD_LEASE,
};
pub use tasks::{Task, TaskQuery};
pub use url::{Backend, DbUrl, UrlError};

use crate::cache::ImageId;
use crate::store::FileStore;

/// A database failure. No variant's message holds a password.
#[derive(Debug, Error)]
pub enum DbError {
    /// The connection URL cannot be used.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A `[database]` option has a bad value.
    #[error("[database] {option} = {value:?}: {expected}")]
    Option {
        /// The option.
        option: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The database server cannot be reached, or went away (the API answers 503).
    #[error("database at {location} is unavailable: {reason}")]
    Unavailable {
        /// host:port, socket or file.
        location: String,
        /// What the driver said (no password).
        reason: String,
    },
    /// The schema is not the one this glance-api reads.
    #[error("database at {location}: {problem}")]
    Schema {
        /// host:port, socket or file.
        location: String,
        /// What is wrong, and what to run.
        problem: String,
    },
    /// The database refused a value (too long, out of range, a character its charset
    /// cannot hold): the request's fault, answered 400.
    #[error("the database refused a value: {0}")]
    Invalid(String),
    /// A statement failed.
    #[error("database: {0}")]
    Sql(String),
}

impl DbError {
    /// Whether a request that hit this error should be answered 503 (try again later).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Classifies a driver error: lost connections, timeouts and (SQLite) a database locked
/// beyond the busy timeout are [`DbError::Unavailable`].
pub(crate) fn classify(backend: Backend, location: &str, e: sqlx::Error) -> DbError {
    let unavailable = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            match backend {
                // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes. And "no such
                // table", which a connection that must (re)load the schema while another
                // process holds the file locked past the busy timeout reports instead of
                // SQLITE_BUSY: the schema was checked at start, so at run time it means
                // the schema could not be read now.
                Backend::Sqlite => {
                    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                        || d.message().starts_with("no such table")
                }
                // SQLSTATE 08xxx: connection exceptions; HY000 with 1053/1927/2006/2013:
                // shutdown or a lost connection.
                Backend::MySql => {
                    code.starts_with("08")
                        || matches!(code.as_ref(), "1053" | "1927" | "2006" | "2013")
                }
                // 08xxx: connection exceptions; 57P0x: the server is shutting down.
                Backend::Postgres => code.starts_with("08") || code.starts_with("57P0"),
            }
        }
        _ => false,
    };
    if is_invalid_value(backend, &e) {
        return DbError::Invalid(match &e {
            sqlx::Error::Database(d) => d.message().to_owned(),
            other => other.to_string(),
        });
    }
    if unavailable {
        DbError::Unavailable {
            location: location.to_owned(),
            reason: e.to_string(),
        }
    } else {
        DbError::Sql(e.to_string())
    }
}

/// Whether the server refused a value rather than the statement: MySQL's 1264 (out of
/// range), 1366 (incorrect string value: a character the column's charset cannot hold),
/// 1406 (data too long) and 1267/1271 (a 4-byte character compared with a utf8mb3
/// column); PostgreSQL's class 22 (data exceptions).
fn is_invalid_value(backend: Backend, e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(d) = e else {
        return false;
    };
    let class_22 = d.code().is_some_and(|c| c.starts_with("22"));
    match backend {
        Backend::MySql => {
            class_22
                || d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .is_some_and(|m| matches!(m.number(), 1264 | 1267 | 1271 | 1366 | 1406))
        }
        Backend::Postgres => class_22,
        Backend::Sqlite => false,
    }
}

/// An image record.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Its ID.
    pub id: ImageId,
    /// Name.
    pub name: Option<String>,
    /// queued, saving, active, killed, deleted, deactivated.
    pub status: String,
    /// public, private, shared, community.
    pub visibility: String,
    /// Refuses deletion while true.
    pub protected: bool,
    /// Hidden from default listings.
    pub os_hidden: bool,
    /// raw, qcow2, ...
    pub disk_format: Option<String>,
    /// bare, ovf, ...
    pub container_format: Option<String>,
    /// Minimum disk (GB).
    pub min_disk: i64,
    /// Minimum RAM (MB).
    pub min_ram: i64,
    /// Bytes of data.
    pub size: Option<i64>,
    /// Virtual size.
    pub virtual_size: Option<i64>,
    /// MD5 of the data, hex.
    pub checksum: Option<String>,
    /// Always sha512 once data is uploaded.
    pub os_hash_algo: Option<String>,
    /// Hex digest with os_hash_algo.
    pub os_hash_value: Option<String>,
    /// Owner (project).
    pub owner: Option<String>,
    /// RFC 3339, seconds.
    pub created_at: String,
    /// RFC 3339, seconds.
    pub updated_at: String,
    /// Tags.
    pub tags: BTreeSet<String>,
    /// Extra properties.
    pub properties: BTreeMap<String, String>,
    /// The stores holding the data (from the locations' `store`).
    pub stores: Vec<String>,
    /// The live locations, oldest first.
    pub locations: Vec<Location>,
}

/// One row of `image_locations`, as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// Where the data is (`value`).
    pub url: String,
    /// `meta_data`, a JSON object (`{"store": "…"}` for data glance wrote).
    pub metadata: serde_json::Value,
}

impl Image {
    /// A new queued image with defaults.
    pub fn new(id: ImageId, now: &str) -> Self {
        Self {
            id,
            name: None,
            status: "queued".to_owned(),
            visibility: "shared".to_owned(),
            protected: false,
            os_hidden: false,
            disk_format: None,
            container_format: None,
            min_disk: 0,
            min_ram: 0,
            size: None,
            virtual_size: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            owner: None,
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
            tags: BTreeSet::new(),
            properties: BTreeMap::new(),
            stores: Vec::new(),
            locations: Vec::new(),
        }
    }
}

/// Now, as Glance shows timestamps: RFC 3339 in UTC, whole seconds.
pub fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An API timestamp (`YYYY-MM-DDTHH:MM:SSZ`) as Glance's columns hold it
/// (`YYYY-MM-DD HH:MM:SS.ffffff`, as SQLAlchemy writes DateTime to SQLite).
pub(crate) fn db_time(api: &str) -> String {
    let t = api.trim_end_matches('Z').replacen('T', " ", 1);
    format!("{t}.000000")
}

/// The time `secs` seconds ago, as Glance's columns hold it (see [`db_time`]).
pub(crate) fn db_time_ago(secs: i64) -> String {
    let then = Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MIN);
    then.strftime("%Y-%m-%d %H:%M:%S.000000").to_string()
}

/// How long a request waits for a connection before glance-api asks whether the server
/// takes connections at all ([`Db::probe`]): if it does, the request waits on, up to
/// `pool_timeout` (the server or the pool is busy); if it refuses, the server is away
/// and the request is answered 503 at once, not after `pool_timeout`.
const CONNECT_BUDGET: Duration = Duration::from_millis(1000);

/// How long that question waits for the server's answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

/// A server that gave this process a working connection this recently is taken for
/// busy, not away, when it does not answer the probe in time: a server swamped with new
/// connections lets its listen queue overflow, and a connect then goes unanswered
/// although every open connection works.
const ALIVE_WINDOW: Duration = Duration::from_secs(5);

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The server took the connection.
    Accepted,
    /// The connect failed: refused, no such socket, no route.
    Refused,
    /// No answer within [`PROBE_TIMEOUT`].
    Silent,
}

/// How to ask whether the server takes connections.
#[derive(Debug, Clone)]
enum Probe {
    /// A SQLite file: nothing to ask.
    File,
    /// host:port.
    Tcp(String),
    /// A unix socket.
    Unix(std::path::PathBuf),
}

impl Probe {
    /// From a URL's location (`host[:port]`, `host (socket PATH)`, or a file).
    fn of(url: &DbUrl) -> Self {
        let default_port = match url.backend {
            Backend::Sqlite => return Probe::File,
            Backend::MySql => 3306,
            Backend::Postgres => 5432,
        };
        let location = url.location.as_str();
        if let Some((_, socket)) = location.split_once("(socket ") {
            let path = std::path::PathBuf::from(socket.trim_end_matches(')'));
            // PostgreSQL's socket is named by its directory, as libpq takes it.
            return Probe::Unix(if path.is_dir() {
                path.join(format!(".s.PGSQL.{default_port}"))
            } else {
                path
            });
        }
        let has_port = match location.rsplit_once(']') {
            Some((_, rest)) => rest.starts_with(':'),
            None => location.contains(':'),
        };
        if has_port {
            Probe::Tcp(location.to_owned())
        } else {
            Probe::Tcp(format!("{location}:{default_port}"))
        }
    }
}

/// After the server was found unreachable, requests are answered 503 at once for this
/// long instead of each trying again; the first one after it tries, so recovery comes
/// by itself, within this long of the server's return.
const OUTAGE_HOLD: Duration = Duration::from_millis(750);

/// The image metadata database: a pool, and the SQL dialect of its server.
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
    location: String,
    /// Until when an outage is held (see [`OUTAGE_HOLD`]).
    held_until: Mutex<Option<(Instant, String)>>,
    /// How to ask whether the server takes connections.
    probe: Probe,
    /// When a connection of the pool last proved to work (acquired: pinged or opened).
    alive_at: Mutex<Option<Instant>>,
    /// The last probe's answer and when it was had: one probe at a time, shared by the
    /// requests that wait meanwhile, so that a storm of slow requests does not become a
    /// storm of connects that fills the server's listen queue.
    probed: tokio::sync::Mutex<Option<(Instant, Answer)>>,
}

impl Db {
    /// Connects (retrying as `[database] max_retries` and `retry_interval` say) and checks
    /// that the schema is current. A SQLite database is created or migrated here; a
    /// server's schema is `glance-manage db_sync`'s to create.
    /// `store` is where images of a catalogue from before upstream's schema live.
    pub async fn open(options: &DbOptions, store: &FileStore) -> Result<Self, DbError> {
        let db = Self::connect(options).await?;
        if options.url.backend == Backend::Sqlite {
            schema::sync(&db, store).await?;
        } else {
            schema::check_current(&db).await?;
        }
        Ok(db)
    }

    /// Connects, retrying while the server is unavailable, without looking at the schema.
    pub async fn connect(options: &DbOptions) -> Result<Self, DbError> {
        let pool = options.connect().await?;
        Ok(Self {
            pool,
            dialect: Dialect(options.url.backend),
            location: options.url.location.clone(),
            held_until: Mutex::new(None),
            probe: Probe::of(&options.url),
            alive_at: Mutex::new(None),
            probed: tokio::sync::Mutex::new(None),
        })
    }

    /// Which server this is.
    pub fn backend(&self) -> Backend {
        self.dialect.0
    }

    /// Whether the catalogue's text columns hold characters beyond the Basic Multilingual
    /// Plane: not on MySQL and MariaDB, whose tables are utf8mb3 as upstream creates them.
    pub fn holds_4byte(&self) -> bool {
        self.backend() != Backend::MySql
    }

    /// Where the database is: host:port, socket or file.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Classifies a driver error ([`classify`]); a server that cannot be reached holds
    /// the outage ([`OUTAGE_HOLD`]). SQLite's locks and a pool that stayed busy do not:
    /// they are load, not an outage.
    pub(crate) fn error(&self, e: sqlx::Error) -> DbError {
        let lost = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(_) => self.backend() != Backend::Sqlite,
            _ => false,
        };
        let e = classify(self.dialect.0, &self.location, e);
        if lost && let DbError::Unavailable { reason, .. } = &e {
            self.hold(reason);
        }
        e
    }

    fn hold(&self, reason: &str) {
        if let Ok(mut held) = self.held_until.lock() {
            *held = Some((Instant::now() + OUTAGE_HOLD, reason.to_owned()));
        }
    }

    /// The reason of an outage being held, if one is.
    fn held(&self) -> Option<String> {
        let mut held = self.held_until.lock().ok()?;
        match held.as_ref() {
            Some((until, reason)) if Instant::now() < *until => Some(reason.clone()),
            Some(_) => {
                *held = None;
                None
            }
            None => None,
        }
    }

    /// A connection of the pool: at once while an outage is held (503), and within
    /// [`CONNECT_BUDGET`] when a new connection must be opened. Only while every
    /// connection is busy does it wait up to `pool_timeout`.
    pub(crate) async fn conn(&self) -> Result<PoolConnection<Any>, DbError> {
        if let Some(reason) = self.held() {
            return Err(DbError::Unavailable {
                location: self.location.clone(),
                reason,
            });
        }
        let started = Instant::now();
        let first = match tokio::time::timeout(CONNECT_BUDGET, self.pool.acquire()).await {
            Ok(acquired) => return self.acquired(acquired),
            Err(_) => self.probe().await,
        };
        // Slow: while the server takes connections, or has just given one that works,
        // this is load, and the request waits for one as long as pool_timeout says.
        let busy = match first {
            Answer::Accepted => true,
            Answer::Refused => false,
            Answer::Silent => self.alive_within(ALIVE_WINDOW),
        };
        if !busy {
            let reason = match first {
                Answer::Silent => "the server does not answer connections",
                _ => "the server does not accept connections",
            }
            .to_owned();
            self.hold(&reason);
            return Err(DbError::Unavailable {
                location: self.location.clone(),
                reason,
            });
        }
        let rest = self
            .pool
            .options()
            .get_acquire_timeout()
            .saturating_sub(started.elapsed());
        match tokio::time::timeout(rest, self.pool.acquire()).await {
            Ok(acquired) => self.acquired(acquired),
            Err(_) => Err(self.error(sqlx::Error::PoolTimedOut)),
        }
    }

    /// The pool's answer, noting a connection that works as the server's sign of life.
    fn acquired(
        &self,
        acquired: Result<PoolConnection<Any>, sqlx::Error>,
    ) -> Result<PoolConnection<Any>, DbError> {
        let conn = acquired.map_err(|e| self.error(e))?;
        if let Ok(mut at) = self.alive_at.lock() {
            *at = Some(Instant::now());
        }
        Ok(conn)
    }

    /// Whether a connection of the pool proved to work within `window`.
    fn alive_within(&self, window: Duration) -> bool {
        self.alive_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < window)
    }

    /// Whether the server accepts a connection now (a bare TCP or unix-socket connect,
    /// no login), within [`PROBE_TIMEOUT`]. A SQLite file always does. An answer is
    /// shared for [`PROBE_TIMEOUT`] by every request that asks meanwhile.
    async fn probe(&self) -> Answer {
        let mut probed = self.probed.lock().await;
        if let Some((at, answer)) = *probed
            && at.elapsed() < PROBE_TIMEOUT
        {
            return answer;
        }
        let answer = self.connect_probe().await;
        *probed = Some((Instant::now(), answer));
        answer
    }

    /// One bare connect to the server, for [`Db::probe`].
    async fn connect_probe(&self) -> Answer {
        let connected = match &self.probe {
            Probe::File => return Answer::Accepted,
            Probe::Tcp(addr) => {
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr.as_str()))
                    .await
                    .map(|c| c.map(drop))
            }
            Probe::Unix(path) => {
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(path))
                    .await
                    .map(|c| c.map(drop))
            }
        };
        match connected {
            Ok(Ok(())) => Answer::Accepted,
            Ok(Err(_)) => Answer::Refused,
            Err(_) => Answer::Silent,
        }
    }

    /// Begins a transaction on a connection of [`Db::conn`].
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Any>, DbError> {
        self.begin_with(None).await
    }

    /// [`Db::begin`] with `statement` instead of the driver's BEGIN (SQLite's
    /// `BEGIN IMMEDIATE`).
    pub(crate) async fn begin_with(
        &self,
        statement: Option<&'static str>,
    ) -> Result<Transaction<'static, Any>, DbError> {
        let conn = self.conn().await?;
        // The pool's own `begin` does just this, with a connection it acquired itself.
        Transaction::begin(conn, statement.map(SqlStr::from_static))
            .await
            .map_err(|e| self.error(e))
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreadable_sqlite_schema_is_unavailable_a_bad_statement_is_not() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        let missing = sqlx::query("SELECT id FROM images")
            .fetch_all(&pool)
            .await
            .expect_err("no table");
        assert!(classify(Backend::Sqlite, "memory", missing).is_unavailable());
        let bad = sqlx::query("SELEKT 1")
            .fetch_all(&pool)
            .await
            .expect_err("syntax");
        assert!(!classify(Backend::Sqlite, "memory", bad).is_unavailable());
    }
}
