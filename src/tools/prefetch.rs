//! Prefetching: fetch every queued image into the cache, several at a time, streaming (an
//! image is never held in memory). glance-cache-prefetcher fetches over HTTP from a
//! glance-api; glance-api's own prefetch worker reads its local store.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Mutex;

use tracing::{info, warn};

use super::client::{ApiClient, ClientError};
use crate::cache::{Cache, CacheError, ImageId};

/// What a source knows of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No such image.
    Missing,
    /// The image, with its status, MD5 and size.
    Found {
        /// queued, active, ...
        status: String,
        /// MD5, hex.
        checksum: Option<String>,
        /// Bytes, once known.
        size: Option<u64>,
    },
}

/// Where image data comes from.
pub trait ImageSource: Sync {
    /// Looks an image up.
    fn lookup(&self, id: &ImageId) -> Result<Lookup, String>;
    /// Opens its data as a stream.
    fn open(&self, id: &ImageId) -> Result<Box<dyn Read + '_>, String>;
}

impl ImageSource for ApiClient {
    fn lookup(&self, id: &ImageId) -> Result<Lookup, String> {
        match self.image(id) {
            Ok(image) => Ok(Lookup::Found {
                status: image.status,
                checksum: image.checksum,
                size: image.size,
            }),
            Err(ClientError::Status { status: 404, .. }) => Ok(Lookup::Missing),
            Err(e) => Err(e.to_string()),
        }
    }

    fn open(&self, id: &ImageId) -> Result<Box<dyn Read + '_>, String> {
        Ok(Box::new(self.download(id).map_err(|e| e.to_string())?))
    }
}

/// What happened to one queued image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fetched and cached; bytes written.
    Fetched(u64),
    /// Already cached, gone, or another writer has it.
    Skipped(&'static str),
    /// The image is not active yet; it stays queued.
    Deferred(String),
    /// Fetching failed; it stays queued for the next run.
    Failed(String),
}

/// Counts of a prefetch run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefetchReport {
    /// Images fetched.
    pub fetched: usize,
    /// Images skipped.
    pub skipped: usize,
    /// Images left queued because they are not active.
    pub deferred: usize,
    /// Images that failed.
    pub failed: usize,
}

/// Fetches every queued image with at most `workers` at once, keeping the cache within
/// `max_size`.
pub fn prefetch(
    cache: &Cache,
    source: &dyn ImageSource,
    workers: usize,
    max_size: u64,
) -> Result<PrefetchReport, CacheError> {
    let queue = Mutex::new(cache.queued()?.into_iter().collect::<VecDeque<_>>());
    let report = Mutex::new(PrefetchReport::default());
    let next = || queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                while let Some(id) = next() {
                    let outcome = fetch_one(cache, source, &id, max_size);
                    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                    match &outcome {
                        Outcome::Fetched(bytes) => {
                            info!(image = %id, bytes, "prefetched");
                            r.fetched += 1;
                        }
                        Outcome::Skipped(why) => {
                            info!(image = %id, why, "skipped");
                            r.skipped += 1;
                        }
                        Outcome::Deferred(why) => {
                            warn!(image = %id, why, "not prefetched yet; left in the queue");
                            r.deferred += 1;
                        }
                        Outcome::Failed(why) => {
                            warn!(image = %id, error = %why, "prefetch failed; left in the queue");
                            r.failed += 1;
                        }
                    }
                }
            });
        }
    });
    Ok(report.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Fetches one image into the cache.
pub fn fetch_one(cache: &Cache, source: &dyn ImageSource, id: &ImageId, max_size: u64) -> Outcome {
    match try_fetch(cache, source, id, max_size) {
        Ok(outcome) => outcome,
        Err(why) => Outcome::Failed(why),
    }
}

fn try_fetch(
    cache: &Cache,
    source: &dyn ImageSource,
    id: &ImageId,
    max_size: u64,
) -> Result<Outcome, String> {
    let dequeue = || cache.dequeue(id).map_err(|e| e.to_string());
    if cache.is_cached(id) {
        dequeue()?;
        return Ok(Outcome::Skipped("already cached"));
    }
    let (checksum, size) = match source.lookup(id)? {
        Lookup::Missing => {
            dequeue()?;
            return Ok(Outcome::Skipped("image no longer exists"));
        }
        Lookup::Found { status, .. } if status != "active" => {
            return Ok(Outcome::Deferred(format!("image is {status}")));
        }
        Lookup::Found { checksum, size, .. } => (checksum, size.unwrap_or(0)),
    };
    if size > max_size {
        dequeue()?;
        return Ok(Outcome::Skipped("larger than the whole cache"));
    }
    // Room for the whole image before a byte is written, as for glance-api's fills: the
    // writes in flight of this process never take the cache over max_size together.
    let Some(_room) = cache.reserve(size, max_size).map_err(|e| e.to_string())? else {
        return Ok(Outcome::Failed(format!(
            "no room in the cache for {size} bytes now (image_cache_max_size {max_size})"
        )));
    };
    let Some(mut writer) = cache
        .open_for_write(id, checksum.as_deref())
        .map_err(|e| e.to_string())?
    else {
        return Ok(Outcome::Skipped("another writer is caching it"));
    };
    let mut data = source.open(id)?;
    // 1 MiB writes: the cache writer hashes each write on its helper thread.
    let mut buffered = io::BufWriter::with_capacity(1 << 20, &mut writer);
    io::copy(&mut data, &mut buffered)
        .and_then(|_| io::Write::flush(&mut buffered))
        .map_err(|e| format!("reading the image: {e}"))?;
    drop(buffered);
    let entry = cache.admit(writer, max_size).map_err(|e| e.to_string())?;
    dequeue()?;
    Ok(Outcome::Fetched(entry.size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::DriverKind;
    use std::sync::atomic::{AtomicU64, Ordering};

    const SIZE: u64 = 3 << 20;

    /// Images of SIZE bytes, served slowly enough that every worker's fetch overlaps the
    /// others'; the cache's size is sampled while they write.
    struct Slow<'a> {
        cache: &'a Cache,
        peak: AtomicU64,
    }

    impl ImageSource for Slow<'_> {
        fn lookup(&self, _: &ImageId) -> Result<Lookup, String> {
            Ok(Lookup::Found {
                status: "active".to_owned(),
                checksum: None,
                size: Some(SIZE),
            })
        }

        fn open(&self, _: &ImageId) -> Result<Box<dyn Read + '_>, String> {
            Ok(Box::new(SlowReader {
                source: self,
                left: SIZE,
            }))
        }
    }

    struct SlowReader<'a, 'b> {
        source: &'a Slow<'b>,
        left: u64,
    }

    impl Read for SlowReader<'_, '_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(256 << 10).min(self.left as usize);
            buf[..n].fill(7);
            self.left -= n as u64;
            std::thread::sleep(std::time::Duration::from_millis(5));
            let now = self.source.cache.total_size().unwrap_or(0);
            self.source.peak.fetch_max(now, Ordering::Relaxed);
            Ok(n)
        }
    }

    #[test]
    fn concurrent_prefetches_reserve_room_and_never_take_the_cache_over_its_maximum() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = Cache::open(dir.path(), DriverKind::Xattr, "cache.db")
            .or_else(|_| Cache::open(dir.path(), DriverKind::Sqlite, "cache.db"))
            .expect("cache");
        // Room for two of the eight images at once.
        let max_size = 2 * SIZE + SIZE / 2;
        for _ in 0..8 {
            cache.queue(&ImageId::random()).expect("queue");
        }
        let source = Slow {
            cache: &cache,
            peak: AtomicU64::new(0),
        };
        let report = prefetch(&cache, &source, 8, max_size).expect("prefetch");
        let peak = source.peak.load(Ordering::Relaxed);
        assert!(
            peak <= max_size,
            "the cache reached {peak} bytes, over its maximum of {max_size}"
        );
        assert!(report.fetched >= 2, "{report:?}");
        assert_eq!(report.fetched + report.failed, 8, "{report:?}");
        assert!(cache.total_size().expect("size") <= max_size);
        // What found no room stays queued for the next run.
        assert_eq!(cache.queued().expect("queued").len(), report.failed);
    }
}
