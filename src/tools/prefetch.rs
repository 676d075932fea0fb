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
    /// The image, with its status and MD5.
    Found {
        /// queued, active, ...
        status: String,
        /// MD5, hex.
        checksum: Option<String>,
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
    let checksum = match source.lookup(id)? {
        Lookup::Missing => {
            dequeue()?;
            return Ok(Outcome::Skipped("image no longer exists"));
        }
        Lookup::Found { status, .. } if status != "active" => {
            return Ok(Outcome::Deferred(format!("image is {status}")));
        }
        Lookup::Found { checksum, .. } => checksum,
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
