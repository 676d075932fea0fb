//! glance-cache-prefetcher: fetches every queued image from a glance-api into the cache,
//! several at a time, streaming (an image is never held in memory).

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;

use tracing::{info, warn};

use super::client::{ApiClient, ClientError};
use crate::cache::{Cache, CacheError, ImageId};

/// What happened to one queued image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fetched and cached; bytes written.
    Fetched(u64),
    /// Already cached, or another writer has it; dequeued or left alone.
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

/// Fetches every queued image with at most `workers` downloads at once.
pub fn prefetch(
    cache: &Cache,
    client: &ApiClient,
    workers: usize,
) -> Result<PrefetchReport, CacheError> {
    let queue = Mutex::new(cache.queued()?.into_iter().collect::<VecDeque<_>>());
    let report = Mutex::new(PrefetchReport::default());
    let next = || queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                while let Some(id) = next() {
                    let outcome = fetch_one(cache, client, &id);
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
pub fn fetch_one(cache: &Cache, client: &ApiClient, id: &ImageId) -> Outcome {
    match try_fetch(cache, client, id) {
        Ok(outcome) => outcome,
        Err(why) => Outcome::Failed(why),
    }
}

fn try_fetch(cache: &Cache, client: &ApiClient, id: &ImageId) -> Result<Outcome, String> {
    let dequeue = || cache.dequeue(id).map_err(|e| e.to_string());
    if cache.is_cached(id) {
        dequeue()?;
        return Ok(Outcome::Skipped("already cached"));
    }
    let image = match client.image(id) {
        Ok(image) => image,
        Err(ClientError::Status { status: 404, .. }) => {
            dequeue()?;
            return Ok(Outcome::Skipped("image no longer exists"));
        }
        Err(e) => return Err(e.to_string()),
    };
    if image.status != "active" {
        return Ok(Outcome::Deferred(format!("image is {}", image.status)));
    }
    let Some(mut writer) = cache
        .open_for_write(id, image.checksum.as_deref())
        .map_err(|e| e.to_string())?
    else {
        return Ok(Outcome::Skipped("another writer is caching it"));
    };
    let mut body = client.download(id).map_err(|e| e.to_string())?;
    io::copy(&mut body, &mut writer).map_err(|e| format!("downloading: {e}"))?;
    let entry = writer.commit().map_err(|e| e.to_string())?;
    dequeue()?;
    Ok(Outcome::Fetched(entry.size))
}
