//! glance-api's background upkeep, on every replica:
//! - uploads whose uploader died: an image whose upload lease was not renewed for
//!   [`LEASE_TTL`] goes back to queued, and its partial data is removed
//!   (see [`crate::db::Db::claim_upload`]);
//! - imports whose glance-api died: an image whose import lock was not renewed for
//!   `import::LOCK_TTL` goes back to queued and its task fails (`import::reclaim`), and
//!   tasks past their `task_time_to_live` are removed;
//! - cached copies of images deleted elsewhere (another replica, or upstream Glance)
//!   are removed from this replica's cache within [`CACHE_SWEEP`].
//!
//! Every step is a conditional update or an idempotent removal, so replicas running it
//! at the same time never undo each other's work nor a live upload.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::data::{LEASE_RENEWAL, LEASE_TTL};
use super::state::AppState;

/// How often copies of deleted images are looked for in the cache.
pub const CACHE_SWEEP: Duration = Duration::from_secs(30);

/// Runs the upkeep until the task is aborted.
pub async fn run(state: Arc<AppState>) {
    let mut uploads = tokio::time::interval(LEASE_RENEWAL);
    let mut cache = tokio::time::interval(CACHE_SWEEP);
    loop {
        tokio::select! {
            _ = uploads.tick() => {
                reclaim_uploads(&state).await;
                super::import::reclaim(&state).await;
            }
            _ = cache.tick() => drop_deleted(&state).await,
        }
    }
}

/// Moves the images of dead uploads back to queued and removes their partial data.
pub async fn reclaim_uploads(state: &Arc<AppState>) {
    let ttl = i64::try_from(LEASE_TTL.as_secs()).unwrap_or(i64::MAX);
    let expired = match state.db.expired_uploads(ttl).await {
        Ok(expired) => expired,
        Err(e) => {
            warn!(error = %e, "looking for dead uploads failed");
            return;
        }
    };
    for (id, lease) in expired {
        match state.db.reclaim_upload(&id, &lease, ttl).await {
            Ok(true) => {
                info!(image = %id, "the upload's lease expired: image back to queued");
                let stores = state.clone();
                let removed =
                    tokio::task::spawn_blocking(move || stores.stores.remove_partial(&id)).await;
                match removed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "partial upload data not removed"),
                    Err(e) => warn!(error = %e, "partial upload data not removed"),
                }
            }
            Ok(false) => {}
            Err(e) => warn!(image = %id, error = %e, "reclaiming a dead upload failed"),
        }
    }
}

/// Removes this replica's cached copies of deleted images.
pub async fn drop_deleted(state: &Arc<AppState>) {
    let Some(cache) = state.cache.clone() else {
        return;
    };
    match tokio::task::spawn_blocking(move || cache.drop_deleted()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(error = %e.message, "sweeping deleted images from the cache failed"),
        Err(e) => warn!(error = %e, "sweeping deleted images from the cache failed"),
    }
}
