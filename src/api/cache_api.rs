//! The cache management API of glance-api (`cachemanagement` flavor): `/v2/cache` and the
//! legacy `/v2/cached_images` and `/v2/queued_images`. `GET /v2/cache/nodes/{image_id}`
//! lists the nodes holding an image with the `centralized_db` driver.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::error::ApiError;
use crate::cache::{Cache, DriverKind, Entry, ImageId};

/// Status of an image, as far as the cache API needs to know.
pub trait ImageCatalog: Send + Sync + 'static {
    /// The image's status (`active`, `queued`, ...), or None when there is no such image.
    fn status(&self, id: &ImageId) -> Result<Option<String>, ApiError>;

    /// Which of `ids` are images of the catalogue (not deleted).
    fn live(&self, ids: &[ImageId]) -> Result<Vec<ImageId>, ApiError> {
        let mut live = Vec::new();
        for id in ids {
            if self.status(id)?.is_some() {
                live.push(id.clone());
            }
        }
        Ok(live)
    }
}

impl CacheApi {
    /// Removes the cached copies, and the queue entries, of images that were deleted or
    /// are gone from the catalogue: deleted through another replica, or by upstream
    /// Glance. Returns how many copies it removed.
    pub fn drop_deleted(&self) -> Result<usize, ApiError> {
        self.cache.forget_absent(|held| self.catalog.live(held))
    }
}

/// What the cache API works on.
pub struct CacheApi {
    /// The cache.
    pub cache: Cache,
    /// image_cache_max_size, for prune.
    pub max_size: u64,
    /// image_cache_stall_time, for clean.
    pub stall_time: std::time::Duration,
    /// Where images are looked up.
    pub catalog: Arc<dyn ImageCatalog>,
    /// Woken when an image is queued, so a background worker can prefetch it.
    pub queued: Arc<tokio::sync::Notify>,
}

type Shared = Arc<CacheApi>;

/// The routes, to be merged into glance-api's router.
pub fn router(api: Shared) -> Router {
    Router::new()
        .route("/v2/cache", get(list).delete(clear))
        .route("/v2/cache/{image_id}", put(queue).delete(remove))
        .route("/v2/cache/nodes/{image_id}", get(nodes))
        .route("/v2/cache/prune", post(prune))
        .route("/v2/cache/clean", post(clean))
        .route(
            "/v2/cached_images",
            get(legacy_cached).delete(legacy_clear_cached),
        )
        .route("/v2/cached_images/{image_id}", delete(legacy_delete_cached))
        .route(
            "/v2/queued_images",
            get(legacy_queued).delete(legacy_clear_queued),
        )
        .route(
            "/v2/queued_images/{image_id}",
            put(legacy_queue).delete(legacy_dequeue),
        )
        .with_state(api)
}

/// Runs blocking cache work off the async threads.
async fn blocking<T: Send + 'static>(
    api: &Shared,
    f: impl FnOnce(&CacheApi) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let api = api.clone();
    tokio::task::spawn_blocking(move || f(&api))
        .await
        .map_err(ApiError::internal)?
}

fn entry_json(e: &Entry) -> Value {
    json!({
        "image_id": e.image_id.as_str(),
        "hits": e.hits,
        "last_accessed": e.last_accessed,
        "last_modified": e.last_modified,
        "size": e.size,
    })
}

fn cached_json(api: &CacheApi) -> Result<Vec<Value>, ApiError> {
    Ok(api.cache.cached()?.iter().map(entry_json).collect())
}

fn queued_json(api: &CacheApi) -> Result<Vec<String>, ApiError> {
    Ok(api
        .cache
        .queued()?
        .iter()
        .map(ToString::to_string)
        .collect())
}

fn parse_id(raw: &str) -> Result<ImageId, ApiError> {
    // An ID that is not a UUID cannot name an image: the same answer as an unknown one.
    ImageId::parse(raw).map_err(|_| ApiError::not_found(format!("No image found with ID {raw}")))
}

/// 404 unless the image exists; returns its status.
fn existing(api: &CacheApi, id: &ImageId) -> Result<String, ApiError> {
    api.catalog
        .status(id)?
        .ok_or_else(|| ApiError::not_found(format!("No image found with ID {id}")))
}

async fn list(State(api): State<Shared>) -> Result<Json<Value>, ApiError> {
    blocking(&api, |api| {
        api.drop_deleted()?;
        Ok(Json(
            json!({"cached_images": cached_json(api)?, "queued_images": queued_json(api)?}),
        ))
    })
    .await
}

fn queue_active(api: &CacheApi, id: &ImageId) -> Result<(), ApiError> {
    let status = existing(api, id)?;
    if status != "active" {
        return Err(ApiError::bad_request(format!(
            "Only images with status active can be targeted for queueing; image {id} is {status}"
        )));
    }
    if api.cache.queue(id)? {
        api.queued.notify_one();
    }
    Ok(())
}

async fn queue(State(api): State<Shared>, Path(raw): Path<String>) -> Result<StatusCode, ApiError> {
    let id = parse_id(&raw)?;
    blocking(&api, move |api| queue_active(api, &id)).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn remove(
    State(api): State<Shared>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&raw)?;
    blocking(&api, move |api| {
        // A deleted image's copy left on this node goes too; only an image that is
        // neither in the catalogue nor here is unknown.
        let known = api.catalog.status(&id)?.is_some();
        let removed = api.cache.delete(&id)?;
        let dequeued = api.cache.dequeue(&id)?;
        if known || removed || dequeued {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::not_found(format!("No image found with ID {id}")))
        }
    })
    .await
}

/// GET /v2/cache/nodes/{image_id}: the URLs of the nodes that hold the image, as a JSON
/// list. 409 unless the driver is centralized_db, 404 when there is no such image (in
/// upstream's order).
async fn nodes(State(api): State<Shared>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    if api.cache.driver() != DriverKind::CentralizedDb {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: "Centralized caching is not enabled".to_owned(),
        });
    }
    let id = parse_id(&raw)?;
    blocking(&api, move |api| {
        existing(api, &id)?;
        Ok(Json(api.cache.cached_nodes(&id)?).into_response())
    })
    .await
}

async fn clear(State(api): State<Shared>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let target = headers
        .get("x-image-cache-clear-target")
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    let (cache, queue) = match target.as_deref() {
        None | Some("") => (true, true),
        Some("cache") => (true, false),
        Some("queue") => (false, true),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "x-image-cache-clear-target must be 'cache' or 'queue', not {other:?}"
            )));
        }
    };
    blocking(&api, move |api| {
        if cache {
            api.cache.delete_all_cached()?;
        }
        if queue {
            api.cache.delete_all_queued()?;
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn prune(State(api): State<Shared>) -> Result<Json<Value>, ApiError> {
    blocking(&api, |api| {
        api.drop_deleted()?;
        let report = api.cache.prune(api.max_size)?;
        Ok(Json(
            json!({"total_files_pruned": report.files, "total_bytes_pruned": report.bytes}),
        ))
    })
    .await
}

async fn clean(State(api): State<Shared>) -> Result<Response, ApiError> {
    blocking(&api, |api| {
        api.cache.clean(api.stall_time)?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}

async fn legacy_cached(State(api): State<Shared>) -> Result<Json<Value>, ApiError> {
    blocking(&api, |api| {
        api.drop_deleted()?;
        Ok(Json(json!({"cached_images": cached_json(api)?})))
    })
    .await
}

async fn legacy_clear_cached(State(api): State<Shared>) -> Result<Json<Value>, ApiError> {
    blocking(&api, |api| {
        Ok(Json(json!({"num_deleted": api.cache.delete_all_cached()?})))
    })
    .await
}

async fn legacy_delete_cached(
    State(api): State<Shared>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&raw)?;
    blocking(&api, move |api| {
        if api.cache.delete(&id)? {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::not_found(format!("Image {id} is not cached")))
        }
    })
    .await
}

async fn legacy_queued(State(api): State<Shared>) -> Result<Json<Value>, ApiError> {
    blocking(&api, |api| {
        Ok(Json(json!({"queued_images": queued_json(api)?})))
    })
    .await
}

async fn legacy_clear_queued(State(api): State<Shared>) -> Result<Json<Value>, ApiError> {
    blocking(&api, |api| {
        Ok(Json(json!({"num_deleted": api.cache.delete_all_queued()?})))
    })
    .await
}

async fn legacy_queue(
    State(api): State<Shared>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&raw)?;
    blocking(&api, move |api| queue_active(api, &id)).await?;
    Ok(StatusCode::OK)
}

async fn legacy_dequeue(
    State(api): State<Shared>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&raw)?;
    blocking(&api, move |api| {
        if api.cache.dequeue(&id)? {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::not_found(format!("Image {id} is not queued")))
        }
    })
    .await
}
