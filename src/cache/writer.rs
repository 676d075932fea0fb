//! Writing one image into the cache: exclusive create, stream, verify, fsync, publish.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::SystemTime;

use bytes::Bytes;
use md5::Md5;
use tracing::warn;

use super::layout::epoch_seconds;
use super::sqlite::Row;
use super::{Cache, CacheError, Entry, ImageId, Metadata, xattr_meta};
use crate::digest::BackgroundDigest;

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

impl<'a> CacheWriter<'a> {
    pub(super) fn create(
        cache: &'a Cache,
        id: &ImageId,
        expected_md5: Option<&str>,
    ) -> Result<Option<Self>, CacheError> {
        let path = cache.layout.incomplete(id);
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(CacheError::io("creating", &path)(e)),
        };
        // The cleaner may hold the lock for an instant while it checks the file.
        lock(&file, true).map_err(CacheError::io("locking", &path))?;
        Ok(Some(Self {
            cache,
            id: id.clone(),
            file: Some(file),
            md5: BackgroundDigest::new::<Md5>(),
            size: 0,
            expected_md5: expected_md5.map(str::to_ascii_lowercase),
        }))
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
