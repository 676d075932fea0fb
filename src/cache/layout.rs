//! Where things live in a cache directory (upstream Glance's layout):
//!
//! ```text
//! <dir>/<image_id>             finished image
//! <dir>/incomplete/<image_id>  being written
//! <dir>/invalid/<image_id>     failed or aborted write
//! <dir>/queue/<image_id>       empty marker: queued for prefetch
//! <dir>/cache.db               sqlite driver metadata (centralized_db migrates it at start)
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::image_id::ImageId;

/// Paths of one cache directory.
#[derive(Debug, Clone)]
pub struct Layout {
    base: PathBuf,
}

/// A file found in one of the cache's directories.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its image ID.
    pub id: ImageId,
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    pub modified: SystemTime,
    /// Last access.
    pub accessed: SystemTime,
}

impl Layout {
    /// The layout under `base`.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Self { base: base.into() }
    }

    /// Creates the directory and its subdirectories if missing.
    pub fn create(&self) -> io::Result<()> {
        for dir in [self.incomplete_dir(), self.invalid_dir(), self.queue_dir()] {
            fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    /// The cache directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Finished images live here.
    pub fn cached(&self, id: &ImageId) -> PathBuf {
        self.base.join(id.as_str())
    }

    /// Writes in progress.
    pub fn incomplete_dir(&self) -> PathBuf {
        self.base.join("incomplete")
    }

    /// A write in progress.
    pub fn incomplete(&self, id: &ImageId) -> PathBuf {
        self.incomplete_dir().join(id.as_str())
    }

    /// Failed writes.
    pub fn invalid_dir(&self) -> PathBuf {
        self.base.join("invalid")
    }

    /// A failed write.
    pub fn invalid(&self, id: &ImageId) -> PathBuf {
        self.invalid_dir().join(id.as_str())
    }

    /// Prefetch markers.
    pub fn queue_dir(&self) -> PathBuf {
        self.base.join("queue")
    }

    /// A prefetch marker.
    pub fn queued(&self, id: &ImageId) -> PathBuf {
        self.queue_dir().join(id.as_str())
    }
}

/// The entries of `dir` named by an image ID (none when `dir` does not exist).
fn image_entries(dir: &Path) -> io::Result<Vec<(ImageId, fs::DirEntry)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| ImageId::parse(n).ok())
        {
            found.push((id, entry));
        }
    }
    Ok(found)
}

/// Regular files named by an image ID in `dir`, with their sizes and times. Anything else
/// (the metadata database, subdirectories, foreign files) is not cache content and is
/// left alone.
pub fn list(dir: &Path) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for (id, entry) in image_entries(dir)? {
        // A file removed between read_dir and metadata is simply gone.
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            found.push(Found {
                id,
                size: meta.len(),
                modified: meta.modified()?,
                accessed: meta.accessed()?,
            });
        }
    }
    Ok(found)
}

/// IDs of the regular files named by an image ID in `dir`, from the directory listing
/// alone (no stat per file).
pub fn names(dir: &Path) -> io::Result<Vec<ImageId>> {
    Ok(image_entries(dir)?
        .into_iter()
        .filter(|(_, entry)| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|(id, _)| id)
        .collect())
}

/// The size and times of one file, if it is still there.
pub fn stat(path: &Path, id: &ImageId) -> io::Result<Option<Found>> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Some(Found {
            id: id.clone(),
            size: meta.len(),
            modified: meta.modified()?,
            accessed: meta.accessed()?,
        })),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file; true if it existed.
pub fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Seconds since the epoch, as upstream's `time.time()`.
pub fn epoch_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
