//! The sqlite driver: `cache.db` with upstream Glance's `cached_images` table, so upstream
//! and this engine can each read and write a cache the other made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::CacheError;
use super::image_id::ImageId;

/// Upstream's schema, verbatim.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS cached_images (
    image_id TEXT PRIMARY KEY,
    last_accessed REAL DEFAULT 0.0,
    last_modified REAL DEFAULT 0.0,
    size INTEGER DEFAULT 0,
    hits INTEGER DEFAULT 0,
    checksum TEXT
)";

/// One row of `cached_images`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Seconds since the epoch of the last read.
    pub last_accessed: f64,
    /// Seconds since the epoch of the write.
    pub last_modified: f64,
    /// Size in bytes.
    pub size: u64,
    /// Reads served from the cache.
    pub hits: u64,
    /// MD5 of the image, hex.
    pub checksum: Option<String>,
}

/// A connection to `cache.db`. Several processes share the file; SQLite's locking and a
/// busy timeout serialise their writes.
pub struct Sqlite {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// A write transaction holding SQLite's write lock: while it is open no other process can
/// commit a new image, so the files on disk and the committed rows agree.
pub struct Locked<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
}

fn db_error(path: &Path) -> impl FnOnce(rusqlite::Error) -> CacheError + '_ {
    move |source| CacheError::Db {
        path: path.to_owned(),
        source,
    }
}

impl Sqlite {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let open = || {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        Ok(Self {
            conn: Mutex::new(open().map_err(db_error(path))?),
            path: path.to_owned(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` inside a write transaction, committing if it returns Ok.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&Locked<'_>) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error(&self.path))?;
        let locked = Locked {
            tx,
            path: &self.path,
        };
        let value = f(&locked)?;
        locked.tx.commit().map_err(db_error(&self.path))?;
        Ok(value)
    }

    /// One row.
    pub fn row(&self, id: &ImageId) -> Result<Option<Row>, CacheError> {
        self.conn()
            .query_row(
                "SELECT last_accessed, last_modified, size, hits, checksum FROM cached_images WHERE image_id = ?1",
                params![id.as_str()],
                read_row,
            )
            .optional()
            .map_err(db_error(&self.path))
    }

    /// Counts a read: one more hit, accessed now. A file without a row gets one.
    pub fn hit(&self, id: &ImageId, now: f64, size: u64) -> Result<(), CacheError> {
        self.write(|db| {
            let updated = db
                .tx
                .execute(
                    "UPDATE cached_images SET hits = hits + 1, last_accessed = ?1 WHERE image_id = ?2",
                    params![now, id.as_str()],
                )
                .map_err(db_error(db.path))?;
            if updated == 0 {
                db.insert(id, &Row { last_accessed: now, last_modified: now, size, hits: 1, checksum: None })?;
            }
            Ok(())
        })
    }
}

impl Locked<'_> {
    /// Every row.
    pub fn rows(&self) -> Result<HashMap<ImageId, Row>, CacheError> {
        self.all_rows().map_err(db_error(self.path))
    }

    fn all_rows(&self) -> rusqlite::Result<HashMap<ImageId, Row>> {
        let mut stmt = self.tx.prepare(
            "SELECT image_id, last_accessed, last_modified, size, hits, checksum FROM cached_images",
        )?;
        let mut rows = HashMap::new();
        let mut query = stmt.query([])?;
        while let Some(r) = query.next()? {
            let id: String = r.get(0)?;
            // Rows whose key is not an image ID cannot name a cache file; they are ignored.
            if let Ok(id) = ImageId::parse(&id) {
                rows.insert(
                    id,
                    Row {
                        last_accessed: r.get(1)?,
                        last_modified: r.get(2)?,
                        size: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        hits: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                        checksum: r.get(5)?,
                    },
                );
            }
        }
        Ok(rows)
    }

    /// Inserts or replaces a row.
    pub fn insert(&self, id: &ImageId, row: &Row) -> Result<(), CacheError> {
        self.tx
            .prepare_cached(
            "INSERT OR REPLACE INTO cached_images (image_id, last_accessed, last_modified, size, hits, checksum)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| stmt.execute(params![
                id.as_str(),
                row.last_accessed,
                row.last_modified,
                i64::try_from(row.size).unwrap_or(i64::MAX),
                i64::try_from(row.hits).unwrap_or(i64::MAX),
                row.checksum
            ]))
        .map(|_| ())
        .map_err(db_error(self.path))
    }

    /// Deletes a row; true if there was one.
    pub fn delete(&self, id: &ImageId) -> Result<bool, CacheError> {
        self.tx
            .execute(
                "DELETE FROM cached_images WHERE image_id = ?1",
                params![id.as_str()],
            )
            .map(|n| n > 0)
            .map_err(db_error(self.path))
    }
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        last_accessed: r.get(0)?,
        last_modified: r.get(1)?,
        size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        hits: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        checksum: r.get(4)?,
    })
}
