//! The centralized_db driver (upstream Glance 2024.1's default): the cache's rows live in
//! the catalogue database's `node_reference` and `cached_images` tables, keyed by this
//! node's `worker_self_reference_url`, while the files stay in the local cache directory.
//!
//! The cache engine is synchronous and the database layer async: every call here blocks
//! on the runtime that owns the database's connections, so it must come from a thread
//! that is not running async tasks (glance-api calls the cache from blocking threads; the
//! cache tools have no runtime of their own and get one here).
//!
//! Files and rows: a file is renamed into place inside the transaction that writes its
//! row, while that transaction holds the node's lock (see
//! [`crate::db::cached_images::NodeTx`]), so another process of this node that lists,
//! deletes or prunes under the same lock never sees one without the other. Unlike the
//! sqlite driver's single file, the rename and the commit are not one atomic step: a
//! crash between them leaves a file without a row, which the next listing adopts (as the
//! sqlite driver does with a file it finds without a row), and a commit that fails moves
//! the file back out to invalid/.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use tracing::{debug, info, warn};

use super::layout::{Layout, epoch_seconds, names};
use super::sqlite::{Row, Sqlite};
use super::{CacheError, ImageId, adopted_row};
use crate::db::cached_images::{CachedImage, NodeTx};
use crate::db::{Db, DbError, DbOptions, schema};

/// This node's view of the cache rows in the catalogue database.
pub struct CentralDb {
    db: Arc<Db>,
    node_url: String,
    node: i64,
    runtime: Handle,
    /// The runtime of a process that has none of its own (the cache tools).
    owned: Option<Runtime>,
}

impl Drop for CentralDb {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is refused inside async code; this does not.
        if let Some(runtime) = self.owned.take() {
            runtime.shutdown_background();
        }
    }
}

fn to_row(c: CachedImage) -> Option<(ImageId, Row)> {
    // A row whose key is not an image ID cannot name a cache file; it is left alone.
    let id = ImageId::parse(&c.image_id).ok()?;
    Some((
        id,
        Row {
            last_accessed: c.last_accessed,
            last_modified: c.last_modified,
            size: c.size,
            hits: c.hits,
            checksum: c.checksum,
        },
    ))
}

fn to_cached(id: &ImageId, row: &Row) -> CachedImage {
    CachedImage {
        image_id: id.to_string(),
        last_accessed: row.last_accessed,
        last_modified: row.last_modified,
        size: row.size,
        hits: row.hits,
        checksum: row.checksum.clone(),
    }
}

impl CentralDb {
    /// Records this node (`worker_self_reference_url`) in `node_reference`, as upstream's
    /// driver does in `configure()`; a node already recorded is fine. `runtime` owns the
    /// database's connections. Call it from a thread outside the runtime.
    pub fn register(db: Arc<Db>, node_url: &str, runtime: Handle) -> Result<Self, CacheError> {
        Self::start(db, node_url, runtime, None)
    }

    /// Connects to the catalogue at `options` on a runtime of its own (for the cache
    /// tools, which have none), checks that its schema is current, and records this node.
    pub fn connect(options: &DbOptions, node_url: &str) -> Result<Self, CacheError> {
        let failed = |source| CacheError::Central {
            node: node_url.to_owned(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("glance-cache-db")
            .enable_all()
            .build()
            .map_err(|e| failed(DbError::Sql(format!("starting a runtime: {e}"))))?;
        let db = runtime
            .block_on(async {
                let db = Db::connect(options).await?;
                schema::check_current(&db).await?;
                Ok(db)
            })
            .map_err(failed)?;
        let handle = runtime.handle().clone();
        Self::start(Arc::new(db), node_url, handle, Some(runtime))
    }

    fn start(
        db: Arc<Db>,
        node_url: &str,
        runtime: Handle,
        owned: Option<Runtime>,
    ) -> Result<Self, CacheError> {
        let mut central = Self {
            db,
            node_url: node_url.to_owned(),
            node: 0,
            runtime,
            owned,
        };
        let db = central.db.clone();
        central.node = central.run(async {
            if !db.node_reference_create(node_url).await? {
                debug!(node = node_url, "node reference is already recorded");
            }
            db.node_reference_id(node_url).await?.ok_or_else(|| {
                DbError::Sql(format!("node_reference {node_url:?} vanished after insert"))
            })
        })?;
        info!(
            node = node_url,
            node_reference_id = central.node,
            "centralized_db cache driver"
        );
        Ok(central)
    }

    /// This node's `worker_self_reference_url`.
    pub fn node_url(&self) -> &str {
        &self.node_url
    }

    /// This node's `node_reference_id`.
    pub fn node_reference_id(&self) -> i64 {
        self.node
    }

    /// The catalogue database.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    fn error(&self, source: DbError) -> CacheError {
        CacheError::Central {
            node: self.node_url.clone(),
            source,
        }
    }

    /// Runs `f` to completion on the database's runtime, from a blocking thread. Every
    /// database object `f` creates is also dropped inside it, where a runtime is current.
    fn run<T>(&self, f: impl Future<Output = Result<T, DbError>>) -> Result<T, CacheError> {
        self.block(f).map_err(|e| self.error(e))
    }

    fn block<T>(&self, f: impl Future<Output = T>) -> T {
        match Handle::try_current() {
            // On a worker of a multi-threaded runtime: hand its tasks to another worker
            // first (a no-op on a blocking thread).
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.runtime.block_on(f))
            }
            _ => self.runtime.block_on(f),
        }
    }

    /// Runs `f` in a transaction holding this node's lock, committing if it returns Ok.
    fn locked<T>(
        &self,
        f: impl AsyncFnOnce(&mut NodeTx<'_>) -> Result<T, CacheError>,
    ) -> Result<T, CacheError> {
        self.block(async {
            let mut tx = self
                .db
                .lock_node(self.node)
                .await
                .map_err(|e| self.error(e))?;
            let value = f(&mut tx).await?;
            tx.commit().await.map_err(|e| self.error(e))?;
            Ok(value)
        })
    }

    /// Every file of this node's cache with its row, by the files in `layout`. Files
    /// without a row get one (from the file's times), rows without a file are dropped;
    /// that reconciliation runs under the node's lock, and only when a first look without
    /// it finds the two disagree.
    pub(super) fn list(&self, layout: &Layout) -> Result<Vec<(ImageId, Row)>, CacheError> {
        let base = layout.base();
        let ids = names(base).map_err(CacheError::io("listing", base))?;
        let rows: HashMap<ImageId, Row> = self
            .run(self.db.cached_images(self.node))?
            .into_iter()
            .filter_map(to_row)
            .collect();
        if ids.len() == rows.len() && ids.iter().all(|id| rows.contains_key(id)) {
            let mut rows = rows;
            return Ok(ids
                .into_iter()
                .filter_map(|id| rows.remove(&id).map(|row| (id, row)))
                .collect());
        }
        self.locked(async |tx| {
            // Under the lock no image of this node is between rename and commit.
            let ids = names(base).map_err(CacheError::io("listing", base))?;
            let mut rows: HashMap<ImageId, Row> = tx
                .rows()
                .await
                .map_err(|e| self.error(e))?
                .into_iter()
                .filter_map(to_row)
                .collect();
            let mut entries = Vec::with_capacity(ids.len());
            for id in ids {
                let row = match rows.remove(&id) {
                    Some(row) => row,
                    None => {
                        let Some(row) = adopted_row(layout, &id)? else {
                            continue;
                        };
                        tx.insert(&to_cached(&id, &row))
                            .await
                            .map_err(|e| self.error(e))?;
                        row
                    }
                };
                entries.push((id, row));
            }
            for orphan in rows.keys() {
                debug!(image = %orphan, "dropping a row without a cache file");
                tx.delete(orphan.as_str())
                    .await
                    .map_err(|e| self.error(e))?;
            }
            Ok(entries)
        })
    }

    /// Counts a read of the file at `path`: one more hit, accessed now. A file without a
    /// row (adopted late, or read between another process's rename and commit) gets one.
    pub(super) fn hit(&self, id: &ImageId, size: u64, path: &Path) -> Result<(), CacheError> {
        let now = epoch_seconds(SystemTime::now());
        if self.run(self.db.update_hit_count(self.node, id.as_str(), now))? {
            return Ok(());
        }
        self.locked(async |tx| {
            if tx.hit(id.as_str(), now).await.map_err(|e| self.error(e))? || !path.is_file() {
                return Ok(());
            }
            let row = Row {
                last_accessed: now,
                last_modified: now,
                size,
                hits: 1,
                checksum: None,
            };
            tx.insert(&to_cached(id, &row))
                .await
                .map_err(|e| self.error(e))
        })
    }

    /// Removes `ids` with `unlink` and deletes their rows, under the node's lock; returns
    /// how many files and how many rows there were.
    pub(super) fn delete(
        &self,
        ids: &[ImageId],
        unlink: impl Fn(&ImageId) -> Result<bool, CacheError>,
    ) -> Result<(usize, usize), CacheError> {
        self.locked(async |tx| {
            let (mut files, mut rows) = (0, 0);
            for id in ids {
                files += usize::from(unlink(id)?);
                rows += usize::from(tx.delete(id.as_str()).await.map_err(|e| self.error(e))?);
            }
            Ok((files, rows))
        })
    }

    /// Writes `row` for `id` and runs `publish` (the rename into place) in one
    /// transaction under the node's lock. When the commit fails after the rename,
    /// `unpublish` moves the file back out, so that no file stays without its row.
    pub(super) fn publish(
        &self,
        id: &ImageId,
        row: &Row,
        publish: impl FnOnce() -> Result<(), CacheError>,
        unpublish: impl FnOnce(),
    ) -> Result<(), CacheError> {
        let committed = self.block(async {
            let mut tx = self
                .db
                .lock_node(self.node)
                .await
                .map_err(|e| self.error(e))?;
            tx.insert(&to_cached(id, row))
                .await
                .map_err(|e| self.error(e))?;
            publish()?;
            // The file is in place: from here a failure must take it back out.
            Ok(tx.commit().await.map_err(|e| self.error(e)))
        })?;
        committed.inspect_err(|e| {
            warn!(image = %id, error = %e, "the cache row did not commit; taking the file back out");
            unpublish();
        })
    }

    /// The URLs of the nodes whose rows say they hold `id`.
    pub(super) fn nodes(&self, id: &ImageId) -> Result<Vec<String>, CacheError> {
        self.run(self.db.cached_nodes(id.as_str()))
    }

    /// Moves the rows of an earlier sqlite driver's database at `path` into the
    /// catalogue as this node's, as upstream's `glance/sqlite_migration.py` does at start:
    /// a row whose file is in the cache and that the catalogue does not have yet is
    /// copied (hits, times, size and checksum); every row read is then deleted from the
    /// SQLite file, which stays. Returns how many rows were copied.
    pub(super) fn migrate(&self, layout: &Layout, path: &Path) -> Result<usize, CacheError> {
        if !path.is_file() {
            debug!(db = %path.display(), "no SQLite cache database to migrate");
            return Ok(0);
        }
        let sqlite = Sqlite::open(path)?;
        // Under SQLite's write lock: two processes of this node starting together migrate
        // once (the second finds no rows).
        sqlite.write(|local| {
            let old = local.rows()?;
            if old.is_empty() {
                return Ok(0);
            }
            info!(rows = old.len(), db = %path.display(), "migrating the SQLite cache database to the centralized database");
            let copied = self.locked(async |tx| {
                let present: Vec<String> = tx
                    .rows()
                    .await
                    .map_err(|e| self.error(e))?
                    .into_iter()
                    .map(|c| c.image_id)
                    .collect();
                let mut copied = 0;
                for (id, row) in &old {
                    if present.iter().any(|p| p == id.as_str()) {
                        debug!(image = %id, "already in the centralized database");
                    } else if layout.cached(id).is_file() {
                        tx.insert(&to_cached(id, row))
                            .await
                            .map_err(|e| self.error(e))?;
                        copied += 1;
                    } else {
                        debug!(image = %id, "not migrating a row without a cache file");
                    }
                }
                Ok(copied)
            })?;
            for id in old.keys() {
                local.delete(id)?;
            }
            info!(copied, "migrated the SQLite cache database");
            Ok(copied)
        })
    }
}
