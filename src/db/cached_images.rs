//! The image cache's rows in the catalogue, for upstream Glance's `centralized_db` cache
//! driver: `node_reference` (one row per glance-api, by its `worker_self_reference_url`)
//! and `cached_images` (one row per image a node holds). The statements are the ones
//! upstream's `glance/db/sqlalchemy/api.py` issues, keyed by the node's
//! `node_reference_id` rather than by a join on its URL, and the timestamps are written
//! as SQLAlchemy writes a naive UTC `DateTime` (`YYYY-MM-DD HH:MM:SS.ffffff`).
//!
//! Writes that must not interleave with another process of the same node (publishing a
//! file, deleting, reconciling the listing) run in a [`NodeTx`]: a transaction that first
//! locks the node's `node_reference` row, so that every process of one node takes turns
//! while other nodes go on undisturbed.

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::tz::TimeZone;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::query::Value;
use super::records::statement;
use super::url::Backend;
use super::{Db, DbError};

/// One row of `cached_images`, as the cache sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedImage {
    /// The image's ID.
    pub image_id: String,
    /// Seconds since the epoch of the last read.
    pub last_accessed: f64,
    /// Seconds since the epoch of the write.
    pub last_modified: f64,
    /// Bytes.
    pub size: u64,
    /// Reads served from the cache.
    pub hits: u64,
    /// MD5, hex.
    pub checksum: Option<String>,
}

/// Seconds since the epoch as a `DateTime` column holds it: `YYYY-MM-DD HH:MM:SS.ffffff`
/// in UTC (oslo's `utcnow()` through SQLAlchemy).
pub fn db_datetime(epoch: f64) -> String {
    // Saturating float-to-int conversion; out-of-range times clamp to jiff's range.
    let micros = (epoch * 1e6).round() as i64;
    let t = Timestamp::from_microsecond(micros).unwrap_or(if micros < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    let dt = t.to_zoned(TimeZone::UTC).datetime();
    format!(
        "{} {:02}:{:02}:{:02}.{:06}",
        dt.date(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1000
    )
}

/// Seconds since the epoch of a `DateTime` column's text: `YYYY-MM-DD HH:MM:SS[.f]`, also
/// with a `T` and a trailing `Z` (upstream's SQLite-to-central migration writes
/// `isoformat()`). None when it is not such a time.
pub fn parse_db_datetime(text: &str) -> Option<f64> {
    let text = text.trim().trim_end_matches('Z').trim_end_matches("+00:00");
    let dt: DateTime = text.replacen(' ', "T", 1).parse().ok()?;
    let t = dt.to_zoned(TimeZone::UTC).ok()?.timestamp();
    Some(t.as_microsecond() as f64 / 1e6)
}

fn column_error(i: usize, e: sqlx::Error) -> DbError {
    DbError::Sql(format!("cached_images column {i}: {e}"))
}

fn count(row: &AnyRow, i: usize) -> Result<u64, DbError> {
    let n: i64 = row.try_get(i).map_err(|e| column_error(i, e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn time(row: &AnyRow, i: usize) -> Result<f64, DbError> {
    let text: String = row.try_get(i).map_err(|e| column_error(i, e))?;
    parse_db_datetime(&text)
        .ok_or_else(|| DbError::Sql(format!("cached_images column {i}: {text:?} is not a time")))
}

fn cached_image(row: &AnyRow) -> Result<CachedImage, DbError> {
    Ok(CachedImage {
        image_id: row.try_get(0).map_err(|e| column_error(0, e))?,
        last_accessed: time(row, 1)?,
        last_modified: time(row, 2)?,
        size: count(row, 3)?,
        hits: count(row, 4)?,
        checksum: row.try_get(5).map_err(|e| column_error(5, e))?,
    })
}

impl Db {
    /// An expression reading `DateTime` column `col` as `YYYY-MM-DD HH:MM:SS.ffffff`.
    fn read_datetime(&self, col: &str) -> String {
        match self.backend() {
            Backend::Postgres => format!("to_char({col}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            Backend::MySql => format!("DATE_FORMAT({col}, '%Y-%m-%d %H:%i:%s.%f')"),
            Backend::Sqlite => format!("CAST({col} AS TEXT)"),
        }
    }

    fn select_cached(&self) -> String {
        format!(
            "SELECT image_id, {}, {}, size, hits, checksum FROM cached_images WHERE node_reference_id = ? ORDER BY image_id",
            self.read_datetime("last_accessed"),
            self.read_datetime("last_modified")
        )
    }

    /// Records a node (upstream's node_reference_create); false when it already was.
    pub async fn node_reference_create(&self, url: &str) -> Result<bool, DbError> {
        let sql = self
            .dialect()
            .sql("INSERT INTO node_reference (node_reference_url) VALUES (?)");
        match statement(sql)
            .bind(url)
            .execute(&mut *self.conn().await?)
            .await
        {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The `node_reference_id` of a node (upstream's node_reference_get_by_url).
    pub async fn node_reference_id(&self, url: &str) -> Result<Option<i64>, DbError> {
        let sql = self
            .dialect()
            .sql("SELECT node_reference_id FROM node_reference WHERE node_reference_url = ?");
        let row = statement(sql)
            .bind(url)
            .fetch_optional(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        row.map(|r| r.try_get::<i64, _>(0).map_err(|e| column_error(0, e)))
            .transpose()
    }

    /// The rows of node `node` (upstream's get_cached_images), by image ID.
    pub async fn cached_images(&self, node: i64) -> Result<Vec<CachedImage>, DbError> {
        let sql = self.dialect().sql(&self.select_cached());
        let rows = statement(sql)
            .bind(node)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter().map(cached_image).collect()
    }

    /// The URLs of the nodes that hold image `image_id` (upstream's get_cached_nodes),
    /// in URL order.
    pub async fn cached_nodes(&self, image_id: &str) -> Result<Vec<String>, DbError> {
        let sql = self.dialect().sql(
            "SELECT node_reference.node_reference_url FROM node_reference JOIN cached_images ON cached_images.node_reference_id = node_reference.node_reference_id WHERE cached_images.image_id = ? ORDER BY node_reference.node_reference_url",
        );
        let rows = statement(sql)
            .bind(image_id)
            .fetch_all(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(|e| column_error(0, e)))
            .collect()
    }

    /// Counts a read of `image_id` on node `node` at `now` (upstream's update_hit_count);
    /// false when the node has no row for it.
    pub async fn update_hit_count(
        &self,
        node: i64,
        image_id: &str,
        now: f64,
    ) -> Result<bool, DbError> {
        let sql = hit_sql(self);
        let n = statement(sql)
            .bind(db_datetime(now))
            .bind(image_id)
            .bind(node)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| self.error(e))?
            .rows_affected();
        Ok(n > 0)
    }

    /// Begins a transaction holding node `node`'s lock: its `node_reference` row, locked
    /// for update (on SQLite, the database's write lock, taken at once).
    pub async fn lock_node(&self, node: i64) -> Result<NodeTx<'_>, DbError> {
        let (tx, locked) = self
            .begin_locked(
                "node_reference",
                "node_reference_url",
                "node_reference_id",
                Value::Int(node),
            )
            .await?;
        if !locked {
            return Err(DbError::Sql(format!(
                "node_reference {node} is gone from the database"
            )));
        }
        Ok(NodeTx { db: self, tx, node })
    }
}

fn hit_sql(db: &Db) -> String {
    let d = db.dialect();
    d.sql(&format!(
        "UPDATE cached_images SET hits = hits + 1, last_accessed = {} WHERE image_id = ? AND node_reference_id = ?",
        d.ts()
    ))
}

/// A transaction holding one node's lock; see [`Db::lock_node`]. Dropped without
/// [`NodeTx::commit`], it rolls back.
pub struct NodeTx<'a> {
    db: &'a Db,
    tx: Transaction<'static, Any>,
    node: i64,
}

impl NodeTx<'_> {
    /// The node's rows, by image ID.
    pub async fn rows(&mut self) -> Result<Vec<CachedImage>, DbError> {
        let sql = self.db.dialect().sql(&self.db.select_cached());
        let rows = statement(sql)
            .bind(self.node)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(|e| self.db.error(e))?;
        rows.iter().map(cached_image).collect()
    }

    /// The `id` of the node's row for `image_id`. A plain read: the node's lock already
    /// keeps its rows from changing under us. Every change below then goes by primary
    /// key, so that InnoDB takes no gap locks, which two nodes writing rows of the same
    /// image side by side could otherwise deadlock on.
    async fn find(&mut self, image_id: &str) -> Result<Option<i64>, DbError> {
        let sql = self
            .db
            .dialect()
            .sql("SELECT id FROM cached_images WHERE image_id = ? AND node_reference_id = ?");
        let row = statement(sql)
            .bind(image_id)
            .bind(self.node)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(|e| self.db.error(e))?;
        row.map(|r| r.try_get::<i64, _>(0).map_err(|e| column_error(0, e)))
            .transpose()
    }

    async fn delete_id(&mut self, id: i64) -> Result<(), DbError> {
        let sql = self
            .db
            .dialect()
            .sql("DELETE FROM cached_images WHERE id = ?");
        statement(sql)
            .bind(id)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.db.error(e))?;
        Ok(())
    }

    /// Writes the node's row for `row.image_id` (upstream's insert_cache_details),
    /// replacing one left from an earlier copy, where upstream keeps the old row.
    pub async fn insert(&mut self, row: &CachedImage) -> Result<(), DbError> {
        if let Some(old) = self.find(&row.image_id).await? {
            self.delete_id(old).await?;
        }
        let d = self.db.dialect();
        let sql = d.sql(&format!(
            "INSERT INTO cached_images (image_id, last_accessed, last_modified, size, hits, checksum, node_reference_id) VALUES (?, {ts}, {ts}, ?, ?, ?, ?)",
            ts = d.ts()
        ));
        statement(sql)
            .bind(row.image_id.as_str())
            .bind(db_datetime(row.last_accessed))
            .bind(db_datetime(row.last_modified))
            .bind(i64::try_from(row.size).unwrap_or(i64::MAX))
            // hits is an INTEGER column.
            .bind(i32::try_from(row.hits).unwrap_or(i32::MAX))
            .bind(row.checksum.as_deref())
            .bind(self.node)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.db.error(e))?;
        Ok(())
    }

    /// Counts a read, as [`Db::update_hit_count`]; false when there is no row.
    pub async fn hit(&mut self, image_id: &str, now: f64) -> Result<bool, DbError> {
        let Some(id) = self.find(image_id).await? else {
            return Ok(false);
        };
        let d = self.db.dialect();
        let sql = d.sql(&format!(
            "UPDATE cached_images SET hits = hits + 1, last_accessed = {} WHERE id = ?",
            d.ts()
        ));
        statement(sql)
            .bind(db_datetime(now))
            .bind(id)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| self.db.error(e))?;
        Ok(true)
    }

    /// Deletes the node's row for `image_id` (upstream's delete_cached_image); true if
    /// there was one.
    pub async fn delete(&mut self, image_id: &str) -> Result<bool, DbError> {
        let Some(id) = self.find(image_id).await? else {
            return Ok(false);
        };
        self.delete_id(id).await?;
        Ok(true)
    }

    /// Commits, releasing the node's lock.
    pub async fn commit(self) -> Result<(), DbError> {
        self.tx.commit().await.map_err(|e| self.db.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_as_sqlalchemy_writes_them() {
        assert_eq!(db_datetime(0.0), "1970-01-01 00:00:00.000000");
        assert_eq!(
            db_datetime(1_718_810_565.123_456),
            "2024-06-19 15:22:45.123456"
        );
        assert_eq!(
            parse_db_datetime("2024-06-19 15:22:45.123456"),
            Some(1_718_810_565.123_456)
        );
        // MySQL's DATETIME keeps whole seconds; isoformat() has a T; SQLite may hold a Z.
        for text in [
            "2024-06-19 15:22:45",
            "2024-06-19T15:22:45",
            "2024-06-19T15:22:45Z",
            "2024-06-19 15:22:45.000000",
        ] {
            assert_eq!(parse_db_datetime(text), Some(1_718_810_565.0), "{text}");
        }
        for bad in ["", "yesterday", "2024-13-01 00:00:00", "1718810565.5"] {
            assert_eq!(parse_db_datetime(bad), None, "{bad}");
        }
        let t = 1_700_000_000.654_321;
        let back = parse_db_datetime(&db_datetime(t)).unwrap();
        assert!((back - t).abs() < 1e-6, "{back} != {t}");
    }
}
