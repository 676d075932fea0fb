//! Interoperable image import, as Glance 33: `GET /v2/info/import`,
//! `PUT /v2/images/{id}/stage` and `POST /v2/images/{id}/import` with the `glance-direct`
//! and `web-download` methods.
//!
//! An import is an `api_image_import` task (`crate::db::Task`). The request checks what
//! upstream checks, records the task, and claims the image: uploading (glance-direct) or
//! queued (web-download) -> importing, under the import lock `os_glance_import_task`, in
//! one conditional update, so that of two replicas importing at once one wins and the
//! other gets 409. The task then runs in the background: web-download fetches the URL into
//! the staging directory (every URL and redirect through `[import_filtering_opts]`,
//! `import_settings::UrlFilter`), and the staged data goes into the store through the same
//! writer, digests and format inspection as an upload (`data::Ingest`), with bounded
//! memory. Success activates the image with its location and drops the lock; failure sets
//! the image back to queued, records the store in `os_glance_failed_import`, and removes
//! the staged data. While it runs the task renews the lock; a lock not renewed for
//! `LOCK_TTL` (its glance-api died) is reclaimed by any replica's upkeep, which fails the
//! task and sets the image back to queued.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::access::{Caller, permit};
use super::data::{Expected, Ingest, Unstored, drain, image_to_check};
use super::error::ApiError;
use super::images::path_id;
use super::request_id::RequestId;
use super::state::AppState;
use crate::cache::ImageId;
use crate::db::{Activation, IMPORT_LOCK, Image, now};
use crate::store::Store;

type Shared = Arc<AppState>;

/// How often a running import renews its lock.
const LOCK_RENEWAL: Duration = Duration::from_secs(10);
/// A lock not renewed for this long belongs to a dead import.
pub const LOCK_TTL: Duration = Duration::from_secs(30);

/// The stores an import is writing to, as Nova and Cinder read them: emptied (not
/// removed, as upstream leaves it) with the import lock when the data is in
/// (`crate::db::Db::activate_import`).
const IMPORTING: &str = crate::db::IMPORTING_TO_STORES;
/// The stores an import failed to write to: empty while none did, as upstream keeps it.
const FAILED: &str = "os_glance_failed_import";
/// Where staged data lives, in upstream's multi-node staging.
const STAGE_HOST: &str = "os_glance_stage_host";

/// Redirects a web-download follows, each checked against the filter.
const MAX_REDIRECTS: usize = 10;
/// The buffer of a copy into or out of staging.
const COPY_BUFFER: usize = 1 << 20;

/// GET /v2/info/import
pub async fn info(State(state): State<Shared>) -> Json<Value> {
    Json(json!({
        "import-methods": {
            "description": "Import methods available.",
            "type": "array",
            "value": state.settings.import.methods,
        }
    }))
}

/// The staged data of image `id`.
fn staged(state: &AppState, id: &ImageId) -> PathBuf {
    state.settings.import.staging_dir.join(id.as_str())
}

/// `x-openstack-image-size`, upstream's (Glance 31+) size of the data a request sends.
fn announced_size(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get("x-openstack-image-size") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request("Invalid or missing image size in request headers.")
            }),
    }
}

/// PUT /v2/images/{id}/stage: the data into the staging directory; queued -> uploading.
pub async fn stage(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    match begin_stage(&state, &caller, &raw, &headers).await {
        Ok((id, announced)) => finish_stage(&state, &id, announced, body).await,
        Err(refused) => {
            // Read to its end, so that the client sees the answer rather than a reset.
            drain(body).await;
            Err(refused)
        }
    }
}

/// The checks of a stage request, and queued -> uploading.
async fn begin_stage(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    headers: &HeaderMap,
) -> Result<(ImageId, Option<u64>), ApiError> {
    if !state.settings.import.enabled("glance-direct") {
        return Err(ApiError::not_found(
            "'glance-direct' method is not available at this site.",
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    if !content_type.starts_with("application/octet-stream") {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("Invalid content type {content_type}"),
        });
    }
    let announced = announced_size(headers)?;
    let id = path_id(raw)?;
    let image = image_to_check(state, caller, &id).await?;
    permit(state, caller, "modify_image", &image).await?;
    let cap = state.settings.image_size_cap;
    if announced.is_some_and(|n| n > cap) {
        return Err(too_large(cap));
    }
    if !state.db.transition(&id, &["queued"], "uploading").await? {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!(
                "Image {id} is {}: only a queued image can be staged",
                image.status
            ),
        });
    }
    Ok((id, announced))
}

/// The body into the staging file; the image back to queued, and nothing staged, if
/// that fails.
async fn finish_stage(
    state: &AppState,
    id: &ImageId,
    announced: Option<u64>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let path = staged(state, id);
    let written = write_staged(&path, body, state.settings.image_size_cap).await;
    let failure = match written {
        Ok(n) if announced.is_some_and(|a| a != n) => ApiError::bad_request(format!(
            "The image data is {n} bytes, not the {} given in x-openstack-image-size",
            announced.unwrap_or_default()
        )),
        Ok(n) => {
            let size = i64::try_from(n).unwrap_or(i64::MAX);
            if state.db.set_staged_size(id, size).await? {
                record_stage_host(state, id).await?;
                return Ok(StatusCode::NO_CONTENT);
            }
            ApiError::not_found(format!("No image found with ID {id}"))
        }
        Err(e) => e,
    };
    let _ = fs::remove_file(&path);
    let _ = state.db.transition(id, &["uploading"], "queued").await;
    Err(failure)
}

/// As upstream, `os_glance_stage_host` names the replica that holds the staged data
/// (when it knows its own URL), so that an import through another one is sent there.
async fn record_stage_host(state: &AppState, id: &ImageId) -> Result<(), ApiError> {
    let Some(url) = &state.settings.self_url else {
        return Ok(());
    };
    let Some(edit) = state.db.edit(id).await? else {
        return Ok(());
    };
    let mut image = edit.image.clone();
    image.properties.insert(STAGE_HOST.to_owned(), url.clone());
    image.updated_at = now();
    state.db.save(edit, &image).await?;
    Ok(())
}

/// Sends a glance-direct import to the replica that staged the data, with the caller's
/// token, as upstream's `_proxy_request_to_host`: its error status comes back as it is;
/// a replica that cannot be reached is 504, any other failure to ask it 502.
async fn import_on(
    host: &str,
    id: &ImageId,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let url = format!("{host}/v2/images/{id}/import");
    info!(image = %id, host, "proxying the import to the replica that staged the data");
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut request = agent.post(&url).header("Content-Type", "application/json");
        if let Some(token) = &token {
            request = request.header("X-Auth-Token", token);
        }
        request.send(&body[..]).map(|r| r.status().as_u16())
    })
    .await
    .map_err(ApiError::internal)?;
    match answer {
        Ok(code) if (200..300).contains(&code) => Ok(StatusCode::ACCEPTED),
        Ok(code) => Err(ApiError {
            status: StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
            message: format!("The replica that staged the data answered {code}"),
        }),
        // As upstream: a replica that cannot be reached (refused, unresolved, timed out).
        Err(
            ureq::Error::ConnectionFailed
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::Io(_),
        ) => Err(ApiError {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: "Stage host is unavailable".to_owned(),
        }),
        Err(e) => Err(ApiError {
            status: StatusCode::BAD_GATEWAY,
            message: format!("Stage host is unavailable: {e}"),
        }),
    }
}

fn too_large(cap: u64) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "The incoming image is too large: image size exceeds the limit of {cap} bytes"
        ),
    }
}

/// Streams a request body into a new staging file; its size.
async fn write_staged(path: &std::path::Path, body: Body, cap: u64) -> Result<u64, ApiError> {
    let full = |e: io::Error| match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("Image storage media is full: {e}"),
        },
        _ if e.kind() == io::ErrorKind::AlreadyExists => ApiError {
            status: StatusCode::CONFLICT,
            message: format!("The image {} has data on staging", path.display()),
        },
        _ => ApiError::internal(format!("staging {}: {e}", path.display())),
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(full)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(full)?;
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("Error reading the image data: {e}")))?;
        written = written.saturating_add(chunk.len() as u64);
        if written > cap {
            return Err(too_large(cap));
        }
        // Small writes into the page cache; the request's chunks are at most a few
        // hundred KiB.
        file.write_all(&chunk).map_err(full)?;
    }
    file.sync_all().map_err(full)?;
    Ok(written)
}

/// What an import request asks for.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    method: String,
    uri: Option<String>,
    stores: Vec<String>,
    all_stores: bool,
    all_stores_must_succeed: bool,
    body: Value,
}

/// upstream's `_validate_import_body`, in its words.
fn parse_request(state: &AppState, body: &[u8]) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Malformed JSON in request body: {e}")))?;
    let Value::Object(fields) = &value else {
        return Err(ApiError::bad_request(
            "Import request requires a 'method' field.",
        ));
    };
    let method = fields
        .get("method")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::bad_request("Import request requires a 'method' field."))?;
    let name = method
        .get("name")
        .ok_or_else(|| ApiError::bad_request("Import request requires a 'name' field."))?;
    let name = name.as_str().unwrap_or_default().to_owned();
    if !state.settings.import.enabled(&name) {
        return Err(ApiError::bad_request(format!(
            "Unknown import method name '{name}'."
        )));
    }
    let flag = |key: &str, default: bool| match fields.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::bad_request(format!(
            "'{key}' must be boolean value only"
        ))),
    };
    let all_stores_must_succeed = flag("all_stores_must_succeed", true)?;
    let all_stores = flag("all_stores", false)?;
    let stores = stores_of(state, fields, all_stores)?;
    if !all_stores_must_succeed && !state.stores.multi() {
        return Err(ApiError::bad_request(
            "All_stores_must_succeed can only be set with enabled_backends",
        ));
    }
    let uri = method.get("uri").and_then(Value::as_str).map(str::to_owned);
    Ok(Request {
        method: name,
        uri,
        stores,
        all_stores,
        all_stores_must_succeed,
        body: value,
    })
}

/// The stores to import into: `stores` in the body, or all of them with `all_stores`,
/// else the default one.
fn stores_of(
    state: &AppState,
    fields: &Map<String, Value>,
    all_stores: bool,
) -> Result<Vec<String>, ApiError> {
    if all_stores {
        // As upstream, read-only (http) stores are not among "all".
        return Ok(state
            .stores
            .names()
            .filter(|name| state.stores.named(name).is_some_and(|s| s.writable()))
            .map(str::to_owned)
            .collect());
    }
    match fields.get("stores") {
        None | Some(Value::Null) => Ok(vec![state.stores.default_store().name().to_owned()]),
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| {
                let name = n.as_str().unwrap_or_default();
                state
                    .stores
                    .named(name)
                    .filter(|_| state.stores.multi())
                    .map(|s| s.name().to_owned())
                    .ok_or_else(|| ApiError {
                        status: StatusCode::CONFLICT,
                        message: format!("Unknown scheme '{name}' found in URI"),
                    })
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(
            "'stores' must be a list of store ids",
        )),
    }
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        message: message.into(),
    }
}

/// upstream's checks of the image's state for `method`.
fn check_image(image: &Image, method: &str) -> Result<(), ApiError> {
    let status = image.status.as_str();
    if status == "active" && method != "copy-image" {
        return Err(conflict(
            "Image with status active cannot be target for import",
        ));
    }
    if status != "active" && method == "copy-image" {
        return Err(conflict(
            "Only images with status active can be targeted for copying",
        ));
    }
    if status != "queued" && method == "web-download" {
        return Err(conflict(format!(
            "Image needs to be in 'queued' state to use '{method}' method"
        )));
    }
    if status != "uploading" && method == "glance-direct" {
        return Err(conflict(
            "Image needs to be staged before 'glance-direct' method can be used",
        ));
    }
    if image.container_format.as_deref().is_none_or(str::is_empty) {
        return Err(conflict("'container_format' needs to be set before import"));
    }
    if image.disk_format.as_deref().is_none_or(str::is_empty) {
        return Err(conflict("'disk_format' needs to be set before import"));
    }
    Ok(())
}

/// The stores a copy-image goes to: those asked for but the ones that have the image
/// already (upstream: all of them with `all_stores`, else 400 for one that has it).
fn copy_targets(
    request: &mut Request,
    held: &[(String, Option<String>)],
    all_stores: bool,
) -> Result<(), ApiError> {
    let has = |store: &str| held.iter().any(|(_, s)| s.as_deref() == Some(store));
    if all_stores {
        request.stores.retain(|s| !has(s));
        return Ok(());
    }
    match request.stores.iter().find(|s| has(s)) {
        Some(present) => Err(ApiError::bad_request(format!(
            "Image is already present at store '{present}'"
        ))),
        None => Ok(()),
    }
}

/// POST /v2/images/{id}/import: 202 once the task is recorded and the image claimed.
pub async fn import(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    request_id: Option<Extension<RequestId>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let mut request = parse_request(&state, &body)?;
    let id = path_id(&raw)?;
    let image = image_to_check(&state, &caller, &id).await?;
    if request.method == "glance-direct" {
        permit(&state, &caller, "modify_image", &image).await?;
        let stage_host = state
            .db
            .get(&id)
            .await?
            .and_then(|i| i.properties.get(STAGE_HOST).cloned());
        if let Some(host) = stage_host.filter(|h| Some(h) != state.settings.self_url.as_ref()) {
            return import_on(&host, &id, &headers, body).await;
        }
    }
    check_image(&image, &request.method)?;
    let copy = request.method == "copy-image";
    // upstream: a copy is the copy_image rule's; any other import the owner's.
    let rule = if copy { "copy_image" } else { "modify_image" };
    permit(&state, &caller, rule, &image).await?;
    if copy {
        let held = state.db.locations(&id).await?;
        let all_stores = request.all_stores;
        copy_targets(&mut request, &held, all_stores)?;
        if request.stores.is_empty() {
            info!(image = %id, "nothing to copy: the image is in every store");
            return Ok(StatusCode::ACCEPTED);
        }
    }
    if image.properties.contains_key(IMPORT_LOCK) {
        return Err(conflict(format!(
            "New operation on image '{id}' is not permitted as prior operation is still in progress"
        )));
    }
    if request.method == "web-download" {
        let uri = request.uri.clone().unwrap_or_default();
        let filter = state.settings.import.filter.clone();
        let checked = tokio::task::spawn_blocking(move || filter.check(&uri))
            .await
            .map_err(ApiError::internal)?;
        if let Err(refused) = checked {
            info!(image = %id, reason = %refused, "web-download URI refused");
            return Err(ApiError::bad_request(format!(
                "URI for web-download does not pass filtering: {}",
                request.uri.as_deref().unwrap_or_default()
            )));
        }
    }
    let from = if request.method == "glance-direct" {
        "uploading"
    } else {
        "queued"
    };
    let task = super::tasks::image_task(
        "api_image_import",
        "pending",
        &caller,
        &image,
        request_id.map(|Extension(RequestId(r))| r),
        &json!({"image_id": id.to_string(), "import_req": request.body, "backend": request.stores}),
    );
    state.db.insert_task(&task).await?;
    let claimed = if copy {
        state.db.lock_copy(&id, &task.id).await?
    } else {
        state.db.claim_import(&id, from, &task.id).await?
    };
    if !claimed {
        let _ = state
            .db
            .move_task(
                &task.id,
                &["pending"],
                "failure",
                "Another operation on the image won",
                None,
                state.settings.import.task_ttl_hours,
            )
            .await;
        return Err(conflict(format!(
            "New operation on image '{id}' is not permitted as prior operation is still in progress"
        )));
    }
    set_properties(
        &state,
        &id,
        &[
            (IMPORTING, Some(request.stores.join(","))),
            (FAILED, Some(String::new())),
            (STAGE_HOST, None),
        ],
    )
    .await;
    let job = Job {
        state: state.clone(),
        task: task.id,
        image: id,
        request,
    };
    tokio::spawn(job.run());
    Ok(StatusCode::ACCEPTED)
}

/// Sets (Some, an empty value included) or removes (None) properties of image `id`,
/// under its row lock; a failure
/// is logged (the properties inform, they do not decide).
async fn set_properties(state: &AppState, id: &ImageId, changes: &[(&str, Option<String>)]) {
    let result = async {
        let Some(edit) = state.db.edit(id).await? else {
            return Ok(false);
        };
        let mut image = edit.image.clone();
        for (name, value) in changes {
            match value {
                Some(v) => {
                    image.properties.insert((*name).to_owned(), v.clone());
                }
                None => {
                    image.properties.remove(*name);
                }
            }
        }
        state.db.save(edit, &image).await
    }
    .await;
    if let Err(e) = result {
        warn!(image = %id, error = %e, "import properties not recorded");
    }
}

/// One import, run in the background.
struct Job {
    state: Shared,
    task: String,
    image: ImageId,
    request: Request,
}

/// Why an import failed.
#[derive(Debug)]
struct Failed(String);

impl Job {
    async fn run(self) {
        let ttl = self.state.settings.import.task_ttl_hours;
        let _ = self
            .state
            .db
            .move_task(&self.task, &["pending"], "processing", "", None, ttl)
            .await;
        let mut renewal = tokio::time::interval(LOCK_RENEWAL);
        renewal.tick().await;
        let work = self.work();
        tokio::pin!(work);
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = renewal.tick() => {
                    match self.state.db.renew_import(&self.image, &self.task).await {
                        Ok(true) => {}
                        Ok(false) => break Err(Failed("the import's lock was lost (the image was deleted, or its import reclaimed)".to_owned())),
                        Err(e) => warn!(image = %self.image, error = %e, "import lock not renewed"),
                    }
                }
            }
        };
        let _ = fs::remove_file(staged(&self.state, &self.image));
        match outcome {
            Ok(()) => {
                info!(image = %self.image, task = %self.task, "image imported");
                let result = json!({"image_id": self.image.to_string()}).to_string();
                let _ = self
                    .state
                    .db
                    .move_task(
                        &self.task,
                        &["processing"],
                        "success",
                        "",
                        Some(&result),
                        ttl,
                    )
                    .await;
            }
            Err(Failed(why)) => {
                warn!(image = %self.image, task = %self.task, error = %why, "image import failed");
                // The stores are recorded before the image leaves importing, so that whoever
                // sees it queued again (or still active, for a copy) sees why.
                set_properties(
                    &self.state,
                    &self.image,
                    &[
                        (IMPORTING, Some(String::new())),
                        (FAILED, Some(self.request.stores.join(","))),
                    ],
                )
                .await;
                if self.request.method == "copy-image" {
                    let _ = self
                        .state
                        .db
                        .drop_import_lock(&self.image, &self.task, None)
                        .await;
                } else {
                    let _ = self
                        .state
                        .db
                        .release_import(&self.image, &self.task, "queued")
                        .await;
                }
                let _ = self
                    .state
                    .db
                    .move_task(
                        &self.task,
                        &["pending", "processing"],
                        "failure",
                        &why,
                        None,
                        ttl,
                    )
                    .await;
            }
        }
    }

    async fn work(&self) -> Result<(), Failed> {
        let staged = staged(&self.state, &self.image);
        if self.request.method == "web-download" {
            let uri = self.request.uri.clone().unwrap_or_default();
            let filter = self.state.settings.import.filter.clone();
            let cap = self.state.settings.image_size_cap;
            let path = staged.clone();
            tokio::task::spawn_blocking(move || download(&filter, &uri, &path, cap))
                .await
                .map_err(|e| Failed(e.to_string()))??;
        }
        let image = self
            .state
            .db
            .get_row(&self.image)
            .await
            .map_err(|e| Failed(e.to_string()))?
            .ok_or_else(|| Failed("the image was deleted".to_owned()))?;
        let copy = self.request.method == "copy-image";
        if copy {
            let state = self.state.clone();
            let (id, path) = (self.image.clone(), staged.clone());
            let size = u64::try_from(image.size.unwrap_or(0)).unwrap_or(0);
            let held = state
                .db
                .locations(&id)
                .await
                .map_err(|e| Failed(e.to_string()))?;
            tokio::task::spawn_blocking(move || copy_out(&state, &held, size, &path))
                .await
                .map_err(|e| Failed(e.to_string()))??;
        }
        // A copy's data was inspected when it first came in.
        let expected = if copy { None } else { Expected::of(&image) };
        // Into each store in turn. With all_stores_must_succeed (the default) any failure
        // fails the whole import; without it, the stores that failed are recorded and the
        // image is made of those that did not.
        let mut written: Vec<(Store, crate::store::Stored, Option<u64>)> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for name in &self.request.stores {
            let store = self
                .state
                .stores
                .named(name)
                .cloned()
                .ok_or_else(|| Failed(format!("unknown store {name}")))?;
            let (id, path, expected) = (self.image.clone(), staged.clone(), expected.clone());
            let outcome = tokio::task::spawn_blocking(move || ingest(&store, &id, &path, expected))
                .await
                .map_err(|e| Failed(e.to_string()))
                .and_then(|r| r);
            match outcome {
                Ok((stored, virtual_size, store)) => written.push((store, stored, virtual_size)),
                Err(Failed(why)) if self.request.all_stores_must_succeed => {
                    self.remove(&written).await;
                    return Err(Failed(format!("store {name}: {why}")));
                }
                Err(Failed(why)) => {
                    warn!(image = %self.image, store = %name, error = %why, "import into a store failed; going on without it");
                    failed.push(name.clone());
                }
            }
        }
        let Some((first, stored, virtual_size)) = written.first() else {
            return Err(Failed(format!(
                "the import failed in every store ({})",
                failed.join(", ")
            )));
        };
        let locations: Vec<(String, String)> = written
            .iter()
            .map(|(store, _, _)| (store.location(&self.image), store.name().to_owned()))
            .collect();
        let recorded = if copy {
            self.state
                .db
                .add_copies(&self.image, &self.task, &locations)
                .await
        } else {
            let activation = Activation {
                size: i64::try_from(stored.size).unwrap_or(i64::MAX),
                checksum: stored.md5.clone(),
                os_hash_value: stored.sha512.clone(),
                location: first.location(&self.image),
                store: first.name().to_owned(),
                virtual_size: virtual_size.and_then(|v| i64::try_from(v).ok()),
                also: locations[1..].to_vec(),
            };
            self.state
                .db
                .activate_import(&self.image, &self.task, &activation)
                .await
        };
        match recorded {
            Ok(true) => {
                if !failed.is_empty() {
                    set_properties(
                        &self.state,
                        &self.image,
                        &[(FAILED, Some(failed.join(",")))],
                    )
                    .await;
                }
                Ok(())
            }
            outcome => {
                // Not recorded: the data must not stay behind.
                self.remove(&written).await;
                Err(Failed(match outcome {
                    Err(e) => e.to_string(),
                    _ => "the image was deleted or its import reclaimed meanwhile".to_owned(),
                }))
            }
        }
    }

    /// Removes the data this import wrote.
    async fn remove(&self, written: &[(Store, crate::store::Stored, Option<u64>)]) {
        for (store, _, _) in written {
            let (state, name, location) = (
                self.state.clone(),
                store.name().to_owned(),
                store.location(&self.image),
            );
            let removed =
                tokio::task::spawn_blocking(move || state.stores.delete(&location, Some(&name)))
                    .await;
            if let Ok(Err(e)) = removed {
                warn!(image = %self.image, error = %e, "data of a failed import not removed");
            }
        }
    }
}

/// An active image's data, from the first location that reads, into the staging file.
fn copy_out(
    state: &AppState,
    held: &[(String, Option<String>)],
    size: u64,
    path: &std::path::Path,
) -> Result<(), Failed> {
    let span = crate::store::Span {
        start: 0,
        len: size,
    };
    let mut last = String::from("the image has no location");
    for (url, store) in held {
        let mut reader = match state.stores.open(url, store.as_deref(), span) {
            Ok(reader) => reader,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| Failed(format!("staging: {e}")))?;
        }
        let mut file = File::create(path).map_err(|e| Failed(format!("staging: {e}")))?;
        let copied =
            io::copy(&mut reader, &mut file).map_err(|e| Failed(format!("reading {url}: {e}")))?;
        if copied != size {
            return Err(Failed(format!("{url} holds {copied} bytes, not {size}")));
        }
        file.sync_all()
            .map_err(|e| Failed(format!("staging: {e}")))?;
        return Ok(());
    }
    Err(Failed(last))
}

/// The staged file into `store`, with the upload's digests and inspection.
fn ingest(
    store: &Store,
    id: &ImageId,
    path: &std::path::Path,
    expected: Option<Expected>,
) -> Result<(crate::store::Stored, Option<u64>, Store), Failed> {
    let mut file = File::open(path).map_err(|e| Failed(format!("no staged data: {e}")))?;
    let size = file.metadata().ok().map(|m| m.len());
    let failed = |e: Unstored| {
        Failed(match e {
            Unstored::Store(e) => e.to_string(),
            Unstored::Refused(r) => format!("Image data refused by the format inspection: {r}"),
        })
    };
    let mut ingest = Ingest::begin(store, id, size, expected).map_err(failed)?;
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                ingest.abort();
                return Err(Failed(format!("reading the staged data: {e}")));
            }
        };
        ingest
            .feed(&Bytes::copy_from_slice(&buf[..n]))
            .map_err(failed)?;
    }
    let (stored, virtual_size) = ingest.finish().map_err(failed)?;
    Ok((stored, virtual_size, store.clone()))
}

/// Fetches `uri` into `path`: each URL (the first and every redirect's) through the
/// filter, the connection to the address the filter checked, at most `cap` bytes, and
/// a body shorter than its Content-Length is a failure.
fn download(
    filter: &super::import_settings::UrlFilter,
    uri: &str,
    path: &std::path::Path,
    cap: u64,
) -> Result<(), Failed> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(300)))
        .build()
        .into();
    let mut url = uri.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let address = filter
            .check(&url)
            .map_err(|e| Failed(format!("URI for web-download does not pass filtering: {e}")))?;
        let parsed = url::Url::parse(&url).map_err(|e| Failed(e.to_string()))?;
        // Plain HTTP goes to the checked address, so that a second look-up of the name
        // cannot lead elsewhere; HTTPS keeps the name, which its certificate vouches for.
        let (target, host) = if parsed.scheme() == "http" {
            let mut pinned = parsed.clone();
            pinned
                .set_ip_host(address.ip())
                .map_err(|()| Failed(format!("cannot connect to {address}")))?;
            (
                pinned.to_string(),
                parsed.host_str().map(|h| match parsed.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                }),
            )
        } else {
            (url.clone(), None)
        };
        let mut request = agent.get(&target);
        if let Some(host) = &host {
            request = request.header("Host", host);
        }
        let mut response = request
            .call()
            .map_err(|e| Failed(format!("fetching {url}: {e}")))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let next = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| Failed(format!("{url} redirected without a Location")))?;
            url = parsed
                .join(next)
                .map_err(|e| Failed(format!("redirect of {url}: {e}")))?
                .to_string();
            continue;
        }
        if status != 200 {
            return Err(Failed(format!("fetching {url}: HTTP {status}")));
        }
        let expected = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if expected.is_some_and(|n| n > cap) {
            return Err(Failed(format!(
                "the image at {url} is larger than image_size_cap"
            )));
        }
        let mut reader = response
            .body_mut()
            .with_config()
            .limit(cap.saturating_add(1))
            .reader();
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| Failed(format!("staging: {e}")))?;
        }
        let mut file = File::create(path).map_err(|e| Failed(format!("staging: {e}")))?;
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut written = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failed(format!("fetching {url}: {e}"))),
            };
            written += n as u64;
            if written > cap {
                return Err(Failed(format!(
                    "the image at {url} is larger than image_size_cap"
                )));
            }
            file.write_all(&buf[..n])
                .map_err(|e| Failed(format!("staging: {e}")))?;
        }
        if expected.is_some_and(|n| n != written) {
            return Err(Failed(format!(
                "downloaded data size {written} is different from expected {}",
                expected.unwrap_or_default()
            )));
        }
        file.sync_all()
            .map_err(|e| Failed(format!("staging: {e}")))?;
        return Ok(());
    }
    Err(Failed(format!(
        "{uri}: more than {MAX_REDIRECTS} redirects"
    )))
}

/// Reclaims the imports whose glance-api died (their lock not renewed for [`LOCK_TTL`]):
/// the image goes back to queued, the task fails, and staged data on this node goes.
pub async fn reclaim(state: &AppState) {
    let ttl = i64::try_from(LOCK_TTL.as_secs()).unwrap_or(30);
    let expired = match state.db.expired_imports(ttl).await {
        Ok(expired) => expired,
        Err(e) => {
            warn!(error = %e, "looking for abandoned imports");
            return;
        }
    };
    for (id, task) in expired {
        if let Ok(true) = state.db.reclaim_import(&id, &task, ttl, "queued").await {
            warn!(image = %id, task = %task, "abandoned import reclaimed: the image is queued again");
            abandoned(
                state,
                &id,
                &task,
                "The import stopped with the glance-api that ran it",
            )
            .await;
        }
    }
    let copies = match state.db.expired_copies(ttl).await {
        Ok(copies) => copies,
        Err(e) => {
            warn!(error = %e, "looking for abandoned copies");
            Vec::new()
        }
    };
    for (id, task) in copies {
        if let Ok(true) = state.db.drop_import_lock(&id, &task, Some(ttl)).await {
            warn!(image = %id, task = %task, "abandoned copy reclaimed: the image keeps its stores");
            set_properties(state, &id, &[(IMPORTING, Some(String::new()))]).await;
            abandoned(
                state,
                &id,
                &task,
                "The copy stopped with the glance-api that ran it",
            )
            .await;
        }
    }
    if let Err(e) = state.db.purge_expired_tasks().await {
        warn!(error = %e, "purging expired tasks");
    }
}

/// What is left of an import whose glance-api died, once its lock is taken back: the
/// staged data, and the task, which fails with `why`.
async fn abandoned(state: &AppState, id: &ImageId, task: &str, why: &str) {
    let _ = fs::remove_file(staged(state, id));
    let _ = state
        .db
        .move_task(
            task,
            &["pending", "processing"],
            "failure",
            why,
            None,
            state.settings.import.task_ttl_hours,
        )
        .await;
}

/// Starts a web-download of `uri` into queued image `image` as task `task` (recorded
/// already): upstream's older `import` tasks (POST /v2/tasks) run this way. False if the
/// image could not be claimed.
pub(super) async fn start_web_download(
    state: &Shared,
    task: &str,
    image: &ImageId,
    uri: &str,
) -> Result<bool, ApiError> {
    if !state.db.claim_import(image, "queued", task).await? {
        return Ok(false);
    }
    let store = state.stores.default_store().name().to_owned();
    set_properties(
        state,
        image,
        &[
            (IMPORTING, Some(store.clone())),
            (FAILED, Some(String::new())),
        ],
    )
    .await;
    let job = Job {
        state: state.clone(),
        task: task.to_owned(),
        image: image.clone(),
        request: Request {
            method: "web-download".to_owned(),
            uri: Some(uri.to_owned()),
            stores: vec![store],
            all_stores: false,
            all_stores_must_succeed: true,
            body: Value::Null,
        },
    };
    tokio::spawn(job.run());
    Ok(true)
}
