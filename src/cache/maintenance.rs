//! Prune (evict least recently used images until the cache fits) and clean (remove failed
//! and stalled writes).

use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};

use super::layout::{list, remove};
use super::writer::abandoned;
use super::{Cache, CacheError, CacheWriter, Entry, ImageId};

/// What a prune removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// Images evicted.
    pub files: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Size of the cache afterwards.
    pub remaining: u64,
}

/// Room in the cache reserved for a write in flight ([`Cache::reserve`]); given back
/// when dropped.
pub struct Reservation<'a> {
    cache: &'a Cache,
    size: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut reserved = self
            .cache
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *reserved = reserved.saturating_sub(self.size);
    }
}

/// What a clean removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanReport {
    /// Files removed from invalid/.
    pub invalid: usize,
    /// Stalled files removed from incomplete/.
    pub stalled: usize,
    /// Bytes freed.
    pub bytes: u64,
}

impl Cache {
    /// Removes the cached copies of the images that `live` does not name: images deleted
    /// from the catalogue (through another replica, or by upstream Glance). `live` is asked
    /// once, with every image the cache holds, and only when it holds some. Queued images
    /// are left to the prefetcher, which skips those the catalogue does not have. Returns
    /// how many copies went.
    pub fn forget_absent<E: From<CacheError>>(
        &self,
        live: impl FnOnce(&[ImageId]) -> Result<Vec<ImageId>, E>,
    ) -> Result<usize, E> {
        let held: Vec<ImageId> = self.cached()?.into_iter().map(|e| e.image_id).collect();
        if held.is_empty() {
            return Ok(0);
        }
        let live: std::collections::HashSet<ImageId> = live(&held)?.into_iter().collect();
        let mut dropped = 0;
        for id in held.iter().filter(|id| !live.contains(*id)) {
            if self.delete(id)? {
                dropped += 1;
                info!(image = %id, "cached copy of a deleted image removed");
            }
        }
        Ok(dropped)
    }

    /// Evicts least recently accessed images that no one in this process is reading until
    /// the cache is at most `max_size` bytes.
    /// It works on one snapshot of the entries, so it always terminates; when partial
    /// writes alone exceed `max_size` it stops after evicting every finished image.
    pub fn prune(&self, max_size: u64) -> Result<PruneReport, CacheError> {
        // One listing gives both the entries and the size of the finished images.
        let mut entries = self.cached()?;
        let finished = entries.iter().fold(0u64, |t, e| t.saturating_add(e.size));
        let mut total = finished.saturating_add(self.partial_size()?);
        entries.sort_by(|a, b| {
            a.last_accessed
                .total_cmp(&b.last_accessed)
                .then_with(|| a.image_id.cmp(&b.image_id))
        });
        let mut victims = Vec::new();
        let mut bytes = 0u64;
        for entry in entries {
            if total <= max_size {
                break;
            }
            // An image someone is reading now stays.
            if self.is_read(&entry.image_id) {
                continue;
            }
            total = total.saturating_sub(entry.size);
            bytes = bytes.saturating_add(entry.size);
            victims.push(entry.image_id);
        }
        let files = self.delete_many(&victims)?;
        debug!(files, bytes, remaining = total, max_size, "pruned");
        Ok(PruneReport {
            files,
            bytes,
            remaining: total,
        })
    }

    /// Room for a write of `size` bytes, reserved before the write begins and held until
    /// the returned guard is dropped (once the image is published, or given up). The
    /// reservations of the writes in flight count toward the cache's size, so that
    /// concurrent writes never take it over `max_size`: least recently used images are
    /// evicted to make room, and None says that there is none even then (the image is
    /// then served uncached). Bytes already written by the writes in flight count twice,
    /// in their files and in their reservations: the bound errs on the safe side.
    pub fn reserve(&self, size: u64, max_size: u64) -> Result<Option<Reservation<'_>>, CacheError> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = reserved.saturating_add(size);
        if wanted > max_size {
            return Ok(None);
        }
        // Makes room for the reservations, this one included.
        let left = self.prune(max_size - wanted)?.remaining;
        if left.saturating_add(wanted) > max_size {
            return Ok(None);
        }
        *reserved = wanted;
        Ok(Some(Reservation { cache: self, size }))
    }

    /// Publishes a finished write after evicting least recently used images, so that the
    /// cache, this image included, stays within `max_size` instead of waiting for the pruner.
    pub fn admit(&self, writer: CacheWriter<'_>, max_size: u64) -> Result<Entry, CacheError> {
        // The writer's bytes sit in incomplete/ and count toward the size prune sees.
        self.prune(max_size)?;
        writer.commit()
    }

    /// Removes every file in invalid/, and the files in incomplete/ last written more than
    /// `stall_time` ago whose writer is gone (a live writer holds a lock on its file).
    pub fn clean(&self, stall_time: Duration) -> Result<CleanReport, CacheError> {
        let mut report = CleanReport::default();
        let invalid_dir = self.layout.invalid_dir();
        for found in list(&invalid_dir).map_err(CacheError::io("listing", &invalid_dir))? {
            let path = self.layout.invalid(&found.id);
            if remove(&path).map_err(CacheError::io("removing", &path))? {
                report.invalid += 1;
                report.bytes = report.bytes.saturating_add(found.size);
            }
        }
        let cutoff = SystemTime::now()
            .checked_sub(stall_time)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let incomplete_dir = self.layout.incomplete_dir();
        for found in list(&incomplete_dir).map_err(CacheError::io("listing", &incomplete_dir))? {
            if found.modified > cutoff {
                continue;
            }
            let path = self.layout.incomplete(&found.id);
            match abandoned(&path) {
                // Removed while locked: no writer can take it over meanwhile.
                Ok(Some(_held)) => {
                    if remove(&path).map_err(CacheError::io("removing", &path))? {
                        report.stalled += 1;
                        report.bytes = report.bytes.saturating_add(found.size);
                    }
                }
                Ok(None) => {
                    info!(image = %found.id, "skipping a stalled-looking write whose writer is still running")
                }
                Err(e) => {
                    warn!(image = %found.id, error = %e, "cannot lock an incomplete file; leaving it")
                }
            }
        }
        debug!(
            invalid = report.invalid,
            stalled = report.stalled,
            bytes = report.bytes,
            "cleaned"
        );
        Ok(report)
    }
}
