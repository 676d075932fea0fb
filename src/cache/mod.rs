//! The local image cache, compatible with upstream Glance's `glance/image_cache/` on disk.
//!
//! Where upstream is weak this engine does better:
//! - one writer per image: `incomplete/<id>` is created exclusively and locked (`flock`)
//!   while the writer lives, so a crashed writer is told apart from a slow one;
//! - a file is fsynced, checked against the image's MD5, and renamed into place inside the
//!   write transaction that records it (SQLite's write lock, or with `centralized_db` the
//!   catalogue transaction holding this node's lock), so a reader never sees a file without
//!   its row (and a crash between the two leaves a file that the next listing adopts);
//! - prune works on a snapshot and always terminates; incomplete and invalid bytes count
//!   toward the size;
//! - no lock files in the cache directory.
//!
//! Three drivers keep the metadata (upstream's `image_cache_driver`): `sqlite`
//! ([`sqlite`]), `xattr` ([`xattr_meta`]) and `centralized_db` ([`central`]: rows in the
//! catalogue database, per node). With `centralized_db` the rename and the commit are two
//! steps of two systems rather than one SQLite transaction; see [`central`] for how a
//! crash between them is repaired.

pub mod central;
pub mod image_id;
pub mod layout;
mod maintenance;
pub mod sqlite;
mod writer;
pub mod xattr_meta;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use thiserror::Error;
use tracing::{debug, warn};

pub use central::CentralDb;
pub use image_id::{ImageId, InvalidImageId};
pub use maintenance::{CleanReport, PruneReport, Reservation};
pub use writer::CacheWriter;

use layout::{Layout, epoch_seconds, list, names, remove, stat};
use sqlite::{Row, Sqlite};

/// How metadata is kept (upstream's image_cache_driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// `cache.db` in the cache directory.
    Sqlite,
    /// Extended attributes of the cached files.
    Xattr,
    /// Rows in the catalogue database, keyed by the node's `worker_self_reference_url`.
    CentralizedDb,
}

impl DriverKind {
    /// The value of image_cache_driver.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Xattr => "xattr",
            Self::CentralizedDb => "centralized_db",
        }
    }
}

/// What can go wrong in the cache.
#[derive(Debug, Error)]
pub enum CacheError {
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("cache database {path}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The xattr driver was chosen on a filesystem without user extended attributes.
    #[error(
        "image_cache_driver = xattr, but the filesystem of {path} does not store user extended attributes ({source}); use image_cache_driver = sqlite"
    )]
    XattrUnsupported {
        /// The cache directory.
        path: PathBuf,
        /// The error from setting a probe attribute.
        source: io::Error,
    },
    /// The centralized_db driver's rows in the catalogue database failed.
    #[error("cache rows of node {node} in the catalogue database: {source}")]
    Central {
        /// This node's worker_self_reference_url.
        node: String,
        /// Why.
        source: crate::db::DbError,
    },
    /// [`Cache::open`] was asked for the centralized_db driver, which needs the database.
    #[error(
        "image_cache_driver = centralized_db keeps the cache's rows in the catalogue database: open the cache with Cache::open_central"
    )]
    CentralNeedsDatabase,
    /// The nodes holding an image are known only to the centralized_db driver.
    #[error("Centralized caching is not enabled")]
    NotCentralized,
    /// The data written does not match the image's checksum; it went to invalid/.
    #[error(
        "image {id}: checksum mismatch (expected {expected}, got {actual}); discarded to invalid/"
    )]
    ChecksumMismatch {
        /// The image.
        id: ImageId,
        /// MD5 the image should have.
        expected: String,
        /// MD5 of what was written.
        actual: String,
    },
}

impl CacheError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// One cached image, as `glance-cache-manage list-cached` and `GET /v2/cache` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The image.
    pub image_id: ImageId,
    /// Reads served from the cache.
    pub hits: u64,
    /// Seconds since the epoch of the last read (0 when never read).
    pub last_accessed: f64,
    /// Seconds since the epoch of the write.
    pub last_modified: f64,
    /// Size in bytes.
    pub size: u64,
    /// MD5 of the image, hex, when known.
    pub checksum: Option<String>,
}

enum Metadata {
    Sqlite(Sqlite),
    Xattr,
    Central(CentralDb),
}

/// An image cache directory.
pub struct Cache {
    layout: Layout,
    metadata: Metadata,
    /// Bytes reserved by this process's writes in flight ([`Cache::reserve`]).
    reserved: std::sync::Mutex<u64>,
    /// The images this process is reading now, and how many times ([`Cache::reading`]).
    readers: Arc<std::sync::Mutex<std::collections::HashMap<ImageId, usize>>>,
}

/// A read of a cached image in progress ([`Cache::reading`]): eviction skips the image
/// until it is dropped.
pub struct Reading {
    readers: Arc<std::sync::Mutex<std::collections::HashMap<ImageId, usize>>>,
    id: ImageId,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = readers.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&self.id);
            }
        }
    }
}

impl Cache {
    /// Opens the cache at `dir`, creating its directories (and `db_name` for the sqlite
    /// driver) if needed. The centralized_db driver needs [`Cache::open_central`].
    pub fn open(dir: &Path, driver: DriverKind, db_name: &str) -> Result<Self, CacheError> {
        let layout = Layout::new(dir);
        layout
            .create()
            .map_err(CacheError::io("creating cache directories in", dir))?;
        let db_path = dir.join(db_name);
        let metadata = match driver {
            DriverKind::CentralizedDb => return Err(CacheError::CentralNeedsDatabase),
            DriverKind::Sqlite => Metadata::Sqlite(Sqlite::open(&db_path)?),
            DriverKind::Xattr => {
                xattr_meta::check_supported(dir).map_err(|source| {
                    CacheError::XattrUnsupported {
                        path: dir.to_owned(),
                        source,
                    }
                })?;
                Metadata::Xattr
            }
        };
        Ok(Self {
            layout,
            metadata,
            reserved: std::sync::Mutex::new(0),
            readers: Arc::default(),
        })
    }

    /// Opens the cache at `dir` with the centralized_db driver: files here, rows in the
    /// catalogue through `central`. The rows of an earlier sqlite driver's `db_name` in
    /// `dir` are migrated first, as upstream does at start. Call it from a thread outside
    /// the database's runtime.
    pub fn open_central(dir: &Path, central: CentralDb, db_name: &str) -> Result<Self, CacheError> {
        let layout = Layout::new(dir);
        layout
            .create()
            .map_err(CacheError::io("creating cache directories in", dir))?;
        central.migrate(&layout, &dir.join(db_name))?;
        Ok(Self {
            layout,
            metadata: Metadata::Central(central),
            reserved: std::sync::Mutex::new(0),
            readers: Arc::default(),
        })
    }

    /// The metadata driver.
    pub fn driver(&self) -> DriverKind {
        match self.metadata {
            Metadata::Sqlite(_) => DriverKind::Sqlite,
            Metadata::Xattr => DriverKind::Xattr,
            Metadata::Central(_) => DriverKind::CentralizedDb,
        }
    }

    /// The URLs of the nodes that hold image `id`, per the catalogue (`GET
    /// /v2/cache/nodes/{id}`); [`CacheError::NotCentralized`] with another driver.
    pub fn cached_nodes(&self, id: &ImageId) -> Result<Vec<String>, CacheError> {
        match &self.metadata {
            Metadata::Central(central) => central.nodes(id),
            _ => Err(CacheError::NotCentralized),
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        self.layout.base()
    }

    /// Marks image `id` as being read until the returned guard is dropped: eviction
    /// leaves it alone meanwhile (in this process).
    pub fn reading(&self, id: &ImageId) -> Reading {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        *readers.entry(id.clone()).or_insert(0) += 1;
        Reading {
            readers: self.readers.clone(),
            id: id.clone(),
        }
    }

    /// Whether this process is reading image `id` now.
    fn is_read(&self, id: &ImageId) -> bool {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// True when the finished image is in the cache.
    pub fn is_cached(&self, id: &ImageId) -> bool {
        self.layout.cached(id).is_file()
    }

    /// True while a live writer has `incomplete/<id>` (a dead writer's file does not
    /// count: the next write takes it over).
    pub fn is_being_cached(&self, id: &ImageId) -> bool {
        let path = self.layout.incomplete(id);
        path.exists() && !matches!(writer::abandoned(&path), Ok(Some(_)))
    }

    /// True when the image is queued for prefetching.
    pub fn is_queued(&self, id: &ImageId) -> bool {
        self.layout.queued(id).exists()
    }

    /// Queues an image for prefetching. False, as upstream, when it is already cached,
    /// being cached or queued.
    pub fn queue(&self, id: &ImageId) -> Result<bool, CacheError> {
        if self.is_cached(id) || self.is_being_cached(id) {
            return Ok(false);
        }
        let path = self.layout.queued(id);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(CacheError::io("queueing", &path)(e)),
        }
    }

    /// Queued images, oldest first.
    pub fn queued(&self) -> Result<Vec<ImageId>, CacheError> {
        let dir = self.layout.queue_dir();
        let mut found = list(&dir).map_err(CacheError::io("listing", &dir))?;
        found.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.id.cmp(&b.id)));
        Ok(found.into_iter().map(|f| f.id).collect())
    }

    /// Removes an image from the queue; true if it was queued.
    pub fn dequeue(&self, id: &ImageId) -> Result<bool, CacheError> {
        let path = self.layout.queued(id);
        remove(&path).map_err(CacheError::io("dequeueing", &path))
    }

    /// Empties the queue; returns how many were queued.
    pub fn delete_all_queued(&self) -> Result<usize, CacheError> {
        let mut removed = 0;
        for id in self.queued()? {
            removed += usize::from(self.dequeue(&id)?);
        }
        Ok(removed)
    }

    /// Every cached image, by image ID. Listing also reconciles: a file without a row gets
    /// one (from the file's times), a row without a file is dropped.
    pub fn cached(&self) -> Result<Vec<Entry>, CacheError> {
        let base = self.layout.base();
        let mut entries = match &self.metadata {
            Metadata::Sqlite(db) => db.write(|locked| {
                // Under the write lock no image is between rename and commit, so every
                // row's file exists unless it was removed behind our back. Sizes come
                // from the rows (written at commit); only files without a row are stat'ed.
                let ids = names(base).map_err(CacheError::io("listing", base))?;
                let mut rows = locked.rows()?;
                let mut entries = Vec::with_capacity(ids.len());
                for id in ids {
                    let row = match rows.remove(&id) {
                        Some(row) => row,
                        None => {
                            let Some(row) = adopted_row(&self.layout, &id)? else {
                                continue;
                            };
                            locked.insert(&id, &row)?;
                            row
                        }
                    };
                    entries.push(entry(id, row));
                }
                for orphan in rows.keys() {
                    debug!(image = %orphan, "dropping a row without a cache file");
                    locked.delete(orphan)?;
                }
                Ok(entries)
            })?,
            Metadata::Xattr => {
                let files = list(base).map_err(CacheError::io("listing", base))?;
                let mut entries = Vec::with_capacity(files.len());
                for file in files {
                    let path = self.layout.cached(&file.id);
                    let hits = xattr_meta::hits(&path)
                        .map_err(CacheError::io("reading hits of", &path))?;
                    let row = Row {
                        last_accessed: epoch_seconds(file.accessed),
                        last_modified: epoch_seconds(file.modified),
                        size: file.size,
                        hits,
                        checksum: None,
                    };
                    entries.push(entry(file.id, row));
                }
                entries
            }
            Metadata::Central(central) => central
                .list(&self.layout)?
                .into_iter()
                .map(|(id, row)| entry(id, row))
                .collect(),
        };
        entries.sort_by(|a, b| a.image_id.cmp(&b.image_id));
        Ok(entries)
    }

    /// Opens a cached image for reading and counts the hit. None when not cached.
    pub fn open_for_read(&self, id: &ImageId) -> Result<Option<(File, u64)>, CacheError> {
        self.open_cached(id, true)
    }

    /// Opens a cached image for a read that is no hit, as upstream counts them: a range
    /// of it, or a HEAD. None when not cached.
    pub fn open_uncounted(&self, id: &ImageId) -> Result<Option<(File, u64)>, CacheError> {
        self.open_cached(id, false)
    }

    fn open_cached(&self, id: &ImageId, hit: bool) -> Result<Option<(File, u64)>, CacheError> {
        let path = self.layout.cached(id);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError::io("opening", &path)(e)),
        };
        let size = file
            .metadata()
            .map_err(CacheError::io("reading size of", &path))?
            .len();
        if !hit {
            return Ok(Some((file, size)));
        }
        match &self.metadata {
            Metadata::Sqlite(db) => db.hit(id, epoch_seconds(SystemTime::now()), size)?,
            Metadata::Xattr => {
                xattr_meta::hit(&file, &path).map_err(CacheError::io("counting a hit on", &path))?
            }
            Metadata::Central(central) => {
                // The count is bookkeeping: a catalogue that cannot take it does not
                // keep the cached copy from being served.
                if let Err(e) = central.hit(id, size, &path) {
                    warn!(image = %id, error = %e, "cache hit not counted");
                }
            }
        }
        Ok(Some((file, size)))
    }

    /// Deletes a cached image and its metadata; true if it was cached.
    pub fn delete(&self, id: &ImageId) -> Result<bool, CacheError> {
        let path = self.layout.cached(id);
        match &self.metadata {
            Metadata::Sqlite(db) => db.write(|locked| {
                let existed = remove(&path).map_err(CacheError::io("deleting", &path))?;
                let had_row = locked.delete(id)?;
                Ok(existed || had_row)
            }),
            Metadata::Xattr => remove(&path).map_err(CacheError::io("deleting", &path)),
            Metadata::Central(central) => {
                let (files, rows) = central.delete(std::slice::from_ref(id), |id| {
                    let path = self.layout.cached(id);
                    remove(&path).map_err(CacheError::io("deleting", &path))
                })?;
                Ok(files + rows > 0)
            }
        }
    }

    /// Deletes every cached image; returns how many there were.
    pub fn delete_all_cached(&self) -> Result<usize, CacheError> {
        let ids: Vec<ImageId> = self.cached()?.into_iter().map(|e| e.image_id).collect();
        self.delete_many(&ids)
    }

    /// Deletes `ids` in one metadata transaction; returns how many files were removed.
    fn delete_many(&self, ids: &[ImageId]) -> Result<usize, CacheError> {
        let unlink = |id: &ImageId| {
            let path = self.layout.cached(id);
            remove(&path).map_err(CacheError::io("deleting", &path))
        };
        match &self.metadata {
            Metadata::Sqlite(db) => db.write(|locked| {
                let mut removed = 0;
                for id in ids {
                    removed += usize::from(unlink(id)?);
                    locked.delete(id)?;
                }
                Ok(removed)
            }),
            Metadata::Xattr => ids
                .iter()
                .try_fold(0, |n, id| Ok(n + usize::from(unlink(id)?))),
            Metadata::Central(central) => Ok(central.delete(ids, unlink)?.0),
        }
    }

    /// Bytes the cache occupies: finished images plus partial writes in incomplete/ and
    /// failed ones in invalid/ (upstream counts only what sits at the top level).
    pub fn total_size(&self) -> Result<u64, CacheError> {
        let finished = self.dir_size(self.layout.base())?;
        Ok(finished.saturating_add(self.partial_size()?))
    }

    /// Bytes in incomplete/ and invalid/.
    fn partial_size(&self) -> Result<u64, CacheError> {
        let incomplete = self.dir_size(&self.layout.incomplete_dir())?;
        Ok(incomplete.saturating_add(self.dir_size(&self.layout.invalid_dir())?))
    }

    fn dir_size(&self, dir: &Path) -> Result<u64, CacheError> {
        let files = list(dir).map_err(CacheError::io("listing", dir))?;
        Ok(files.iter().fold(0u64, |t, f| t.saturating_add(f.size)))
    }

    /// Starts writing an image: `incomplete/<id>`, created exclusively and locked. None when
    /// the image is already cached or another writer has it. `expected_md5` (hex), when
    /// given, is checked before the image becomes visible.
    pub fn open_for_write(
        &self,
        id: &ImageId,
        expected_md5: Option<&str>,
    ) -> Result<Option<CacheWriter<'_>>, CacheError> {
        if self.is_cached(id) {
            return Ok(None);
        }
        CacheWriter::create(self, id, expected_md5)
    }
}

/// The row a finished cache file without one gets (hits 0, checksum unknown), or None
/// when the file is gone too.
fn adopted_row(layout: &Layout, id: &ImageId) -> Result<Option<Row>, CacheError> {
    let path = layout.cached(id);
    let Some(file) = stat(&path, id).map_err(CacheError::io("reading", &path))? else {
        return Ok(None);
    };
    debug!(image = %id, "adopting a cache file without a row");
    Ok(Some(Row {
        last_accessed: epoch_seconds(file.accessed),
        last_modified: epoch_seconds(file.modified),
        size: file.size,
        hits: 0,
        checksum: None,
    }))
}

fn entry(image_id: ImageId, row: Row) -> Entry {
    Entry {
        image_id,
        hits: row.hits,
        last_accessed: row.last_accessed,
        last_modified: row.last_modified,
        size: row.size,
        checksum: row.checksum,
    }
}
