//! Writing one image into the cache: exclusive create, stream, verify, fsync, publish.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use tracing::warn;

use super::layout::{epoch_seconds, remove};
use super::sqlite::Row;
use super::{Cache, CacheError, Entry, ImageId, Metadata, xattr_meta};
use crate::digest::{Algorithm, BackgroundDigest};

/// A write in progress into `incomplete/<id>`. Commit it to publish the image; dropping
/// it without commit moves the partial file to invalid/, as upstream's rollback does.
pub struct CacheWriter<'a> {
    cache: &'a Cache,
    id: ImageId,
    file: Option<File>,
    md5: BackgroundDigest,
    size: u64,
    expected_md5: Option<String>,
}

/// Takes an exclusive advisory lock on `file`, held until the file is closed. The kernel
/// drops it when the process dies, which tells a crashed writer from a live one.
pub(super) fn lock(file: &File, wait: bool) -> io::Result<bool> {
    let flags = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
    if unsafe { libc::flock(file.as_raw_fd(), flags) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Creates `path` already locked: the file is made and locked under a name of its own,
/// then linked into place (which fails if `path` exists), so that `path` never names an
/// unlocked file that [`abandoned`] would take for a dead writer's. None when `path`
/// exists.
fn start(path: &Path) -> Result<Option<File>, CacheError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("image");
    let temp = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(CacheError::io("creating", &temp))?;
    let placed = lock(&file, false)
        .and_then(|locked| {
            if locked {
                Ok(())
            } else {
                Err(io::Error::other("a new file is locked by someone else"))
            }
        })
        .and_then(|()| fs::hard_link(&temp, path));
    let _ = fs::remove_file(&temp);
    match placed {
        Ok(()) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(CacheError::io("creating", path)(e)),
    }
}

/// The file at `path`, locked by the caller, when no live writer holds it: a write
/// whose writer died. None when a live writer holds it, or it is gone or replaced
/// meanwhile. The lock is the caller's until the file is closed.
pub(super) fn abandoned(path: &Path) -> io::Result<Option<File>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !lock(&file, false)? {
        return Ok(None);
    }
    let held = file.metadata()?;
    match fs::metadata(path) {
        Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => Ok(Some(file)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl<'a> CacheWriter<'a> {
    /// Starts the write of `id`: None when a live writer has `incomplete/<id>`. A file
    /// there that no live writer holds (its writer died: the kernel dropped its lock) is
    /// taken over at once, not left to block the image until the cleaner's stall time.
    pub(super) fn create(
        cache: &'a Cache,
        id: &ImageId,
        expected_md5: Option<&str>,
    ) -> Result<Option<Self>, CacheError> {
        let path = cache.layout.incomplete(id);
        let file = match start(&path)? {
            Some(file) => file,
            None => match abandoned(&path).map_err(CacheError::io("checking", &path))? {
                None => return Ok(None),
                // Held locked while it goes, so that no one else takes it over too.
                Some(old) => {
                    warn!(image = %id, "taking over a cache write whose writer died");
                    remove(&path).map_err(CacheError::io("removing", &path))?;
                    let file = start(&path)?;
                    drop(old);
                    match file {
                        Some(file) => file,
                        None => return Ok(None),
                    }
                }
            },
        };
        Ok(Some(Self {
            cache,
            id: id.clone(),
            file: Some(file),
            md5: BackgroundDigest::new(Algorithm::Md5),
            size: 0,
            expected_md5: expected_md5.map(str::to_ascii_lowercase),
        }))
    }

    /// The image being written.
    pub fn id(&self) -> &ImageId {
        &self.id
    }

    /// A read handle of the file being written: it reads what is written so far, and
    /// stays readable once the file is published, or removed.
    pub fn reader(&self) -> io::Result<File> {
        File::open(self.cache.layout.incomplete(&self.id))
    }

    /// Gives the write up and removes its partial file (a failed write: on a full
    /// volume, moving it to invalid/ would free nothing).
    pub fn remove(mut self) {
        if self.file.take().is_some() {
            let path = self.cache.layout.incomplete(&self.id);
            if let Err(e) = remove(&path) {
                warn!(image = %self.id, error = %e, "could not remove a failed cache write");
            }
        }
    }

    /// Verifies the checksum, fsyncs, and publishes the image with its metadata.
    pub fn commit(mut self) -> Result<Entry, CacheError> {
        let actual = self.md5.finish().map_err(CacheError::io(
            "hashing",
            &self.cache.layout.incomplete(&self.id),
        ))?;
        if let Some(expected) = &self.expected_md5
            && *expected != actual
        {
            let expected = expected.clone();
            self.discard();
            return Err(CacheError::ChecksumMismatch {
                id: self.id.clone(),
                expected,
                actual,
            });
        }
        let layout = &self.cache.layout;
        let (incomplete, cached) = (layout.incomplete(&self.id), layout.cached(&self.id));
        if let Some(file) = &self.file {
            file.sync_all()
                .map_err(CacheError::io("syncing", &incomplete))?;
        }
        let now = epoch_seconds(SystemTime::now());
        let row = Row {
            last_accessed: now,
            last_modified: now,
            size: self.size,
            hits: 0,
            checksum: Some(actual),
        };
        let publish =
            || fs::rename(&incomplete, &cached).map_err(CacheError::io("publishing", &cached));
        match &self.cache.metadata {
            Metadata::Sqlite(db) => db.write(|locked| {
                locked.insert(&self.id, &row)?;
                publish()
            })?,
            Metadata::Xattr => {
                xattr_meta::set_hits(&incomplete, 0)
                    .map_err(CacheError::io("setting hits on", &incomplete))?;
                publish()?;
            }
            Metadata::Central(central) => central.publish(&self.id, &row, publish, || {
                // Back to incomplete/, from where dropping the writer moves it to invalid/.
                if let Err(e) = fs::rename(&cached, &incomplete) {
                    warn!(image = %self.id, error = %e, "a cache file without its row stays in place; the next listing adopts it");
                }
            })?,
        }
        let base = layout.base();
        File::open(base)
            .and_then(|dir| dir.sync_all())
            .map_err(CacheError::io("syncing", base))?;
        // Closing the file releases the lock; the image is already in place.
        self.file = None;
        Ok(Entry {
            image_id: self.id.clone(),
            hits: row.hits,
            last_accessed: row.last_accessed,
            last_modified: row.last_modified,
            size: row.size,
            checksum: row.checksum,
        })
    }

    /// Gives the write up: the partial file goes to invalid/.
    pub fn abort(mut self) {
        self.discard();
    }

    fn discard(&mut self) {
        if self.file.take().is_none() {
            return;
        }
        let layout = &self.cache.layout;
        let (from, to) = (layout.incomplete(&self.id), layout.invalid(&self.id));
        if let Err(e) = fs::rename(&from, &to) {
            warn!(image = %self.id, error = %e, "could not move an aborted cache write to invalid/");
        }
    }
}

impl CacheWriter<'_> {
    /// Writes a chunk; its MD5 is computed on a helper thread, overlapping the I/O.
    pub fn write_bytes(&mut self, chunk: &Bytes) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("cache write already finished"))?;
        file.write_all(chunk)?;
        self.md5.feed(chunk)?;
        self.size += chunk.len() as u64;
        Ok(())
    }
}

impl Write for CacheWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_bytes(&Bytes::copy_from_slice(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for CacheWriter<'_> {
    fn drop(&mut self) {
        self.discard();
    }
}
