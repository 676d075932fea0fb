//! The location API of Image API 2.17, as Glance 33 serves it: `POST
//! /v2/images/{id}/locations` adds a location to a queued image in a `location_import`
//! task, and `GET /v2/images/{id}/locations` lists them for services.
//!
//! The task follows upstream's flow: the location is added (with its store, and the
//! size a HEAD reports); with `do_secure_hash` (default True) the data is read once to
//! compute its MD5 and the hash of `validation_data`'s algorithm (else sha512), which
//! must match the hash given, before the image is active; without it, the given hash is
//! set and the image is active at once. A failed check sets the image back to queued
//! with no digests; the location stays (the http store cannot delete it), as upstream.
//! While the task runs the image holds upstream's lock `os_glance_import_task`.

use std::io::Read;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use openssl::hash::{Hasher, MessageDigest};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::access::{Caller, permit};
use super::data::image_to_check;
use super::error::ApiError;
use super::image_locations::hex_bytes;
use super::images::path_id;
use super::request_id::RequestId;
use super::state::{AppState, blocking};
use super::tasks::image_task;
use crate::cache::ImageId;
use crate::db::{Location, now};
use crate::store::{HttpStore, Span};

type Shared = Arc<AppState>;

/// The lock property upstream's tasks hold on an image.
const LOCK: &str = "os_glance_import_task";

/// The hash algorithms the API's schema takes, with their digest sizes in bytes.
const ALGORITHMS: &[(&str, usize)] = &[("sha1", 20), ("sha256", 32), ("sha512", 64), ("md5", 16)];

fn status(code: StatusCode, message: String) -> ApiError {
    ApiError {
        status: code,
        message,
    }
}

/// The `validation_data` of a request: both members or neither, a known algorithm, and
/// a hex value of its digest's size (400 otherwise, as upstream).
fn validation_of(body: &Map<String, Value>) -> Result<Option<(String, String)>, ApiError> {
    let invalid = |why: String| {
        ApiError::bad_request(format!(
            "Provided object does not match schema 'location': {why}"
        ))
    };
    let data = match body.get("validation_data") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(invalid("validation_data: expected an object".to_owned())),
    };
    if let Some(extra) = data
        .keys()
        .find(|k| !matches!(k.as_str(), "os_hash_algo" | "os_hash_value"))
    {
        return Err(invalid(format!(
            "validation_data: Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let algo = data.get("os_hash_algo");
    let value = data.get("os_hash_value");
    let (algo, value) = match (algo, value) {
        (None, None) => return Ok(None),
        (Some(Value::String(a)), Some(Value::String(v))) => (a.clone(), v.clone()),
        (None, _) => {
            return Err(invalid(
                "'os_hash_algo' is a dependency of 'os_hash_value'".to_owned(),
            ));
        }
        (_, None) => {
            return Err(invalid(
                "'os_hash_value' is a dependency of 'os_hash_algo'".to_owned(),
            ));
        }
        _ => return Err(invalid("validation_data: strings expected".to_owned())),
    };
    let Some(&(_, size)) = ALGORITHMS.iter().find(|(name, _)| *name == algo) else {
        return Err(invalid(format!(
            "os_hash_algo: '{algo}' is not one of ['sha1', 'sha256', 'sha512', 'md5']"
        )));
    };
    let Some(bytes) = hex_bytes(&value) else {
        return Err(ApiError::bad_request(format!(
            "os_hash_value ({value}) is not a valid hexadecimal value"
        )));
    };
    if bytes != size {
        return Err(ApiError::bad_request(format!(
            "os_hash_value: ({value}) is not the correct size for ({algo}) (should be ({size}) bytes)"
        )));
    }
    Ok(Some((algo, value)))
}

/// POST /v2/images/{id}/locations: 202, the task runs on.
pub async fn add(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    request_id: Option<Extension<RequestId>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let id = path_id(&raw)?;
    let image = image_to_check(&state, &caller, &id).await?;
    permit(&state, &caller, "get_image", &image).await?;
    let body: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(ApiError::bad_request(
                "The request body must be a JSON object.",
            ));
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "Malformed JSON in request body: {e}"
            )));
        }
    };
    let Some(Value::String(url)) = body.get("url").cloned() else {
        return Err(ApiError::bad_request(
            "Provided object does not match schema 'location': 'url' is a required string",
        ));
    };
    if image.status != "queued" {
        return Err(status(
            StatusCode::CONFLICT,
            format!(
                "It's not allowed to add locations if image status is {}.",
                image.status
            ),
        ));
    }
    permit(&state, &caller, "add_image_location", &image).await?;
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let http = matches!(scheme.as_str(), "http" | "https");
    let store = state.stores.http_store().filter(|_| http).cloned();
    if store.is_none() && !caller.has_role("service") {
        return Err(status(
            StatusCode::FORBIDDEN,
            "http store must be enabled to use location API by normal user.".to_owned(),
        ));
    }
    let validation = validation_of(&body)?;
    let Some(store) = store else {
        return Err(ApiError::bad_request(format!(
            "Invalid location: no enabled store reads {scheme} URLs"
        )));
    };
    if state.settings.import.filter.check(&url).is_err() {
        return Err(ApiError::bad_request(format!(
            "URI for add location does not pass filtering: {url}"
        )));
    }
    let input = json!({"image_id": id.to_string(), "loc_url": url, "validation_data": body.get("validation_data").cloned().unwrap_or(json!({}))});
    let task = image_task(
        "location_import",
        "processing",
        &caller,
        &image,
        request_id.map(|Extension(RequestId(r))| r),
        &input,
    );
    // The lock, under the image's row lock: one operation at a time.
    let task_id = task.id.clone();
    let locked = state
        .db
        .edit(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No image found with ID {id}")))?;
    if locked.image.properties.contains_key(LOCK) || locked.image.status != "queued" {
        return Err(status(
            StatusCode::CONFLICT,
            format!(
                "New operation on image '{id}' is not permitted as prior operation is still in progress"
            ),
        ));
    }
    let mut with_lock = locked.image.clone();
    with_lock
        .properties
        .insert(LOCK.to_owned(), task_id.clone());
    with_lock.updated_at = now();
    state.db.save(locked, &with_lock).await?;
    state.db.insert_task(&task).await?;
    let run_state = state.clone();
    tokio::spawn(async move {
        let outcome = run(&run_state, &id, &url, validation, store).await;
        finish(&run_state, &id, &task_id, outcome).await;
    });
    Ok(StatusCode::ACCEPTED)
}

/// The task's flow; Err with the reason it failed.
async fn run(
    state: &AppState,
    id: &ImageId,
    url: &str,
    validation: Option<(String, String)>,
    store: HttpStore,
) -> Result<(), String> {
    let head_store = store.clone();
    let head_url = url.to_owned();
    let size = blocking(move || Ok(head_store.size(&head_url)))
        .await
        .map_err(|e| e.message)?
        .map_err(|e| format!("Invalid location: {e}"))?
        .filter(|&n| n > 0)
        .ok_or_else(|| "Invalid location: no data there".to_owned())?;
    let secure = state.settings.do_secure_hash;
    let algo = validation
        .as_ref()
        .map_or("sha512".to_owned(), |(a, _)| a.clone());
    // The location, and the state before any hashing.
    let store_name = store.name().to_owned();
    let location_url = url.to_owned();
    let given = validation.clone();
    let hash_algo = algo.clone();
    edit(state, id, move |image| {
        if image.status != "queued" {
            return Err(format!("the image is {}, no longer queued", image.status));
        }
        image.locations.push(Location {
            url: location_url,
            metadata: json!({"store": store_name}),
        });
        if image.size.is_none() {
            image.size = i64::try_from(size).ok();
        }
        match (secure, &given) {
            (true, Some(_)) => {
                image.status = "importing".to_owned();
                image.os_hash_algo = Some(hash_algo);
            }
            (true, None) => {
                image.status = "active".to_owned();
                image.os_hash_algo = Some(hash_algo);
            }
            (false, Some((a, v))) => {
                image.os_hash_algo = Some(a.clone());
                image.os_hash_value = Some(v.clone());
                image.status = "active".to_owned();
            }
            (false, None) => image.status = "active".to_owned(),
        }
        Ok(())
    })
    .await?;
    if !secure {
        return Ok(());
    }
    let read_url = url.to_owned();
    let digest_algo = algo.clone();
    let hashed = blocking(move || Ok(hash(&store, &read_url, size, &digest_algo))).await;
    let hashed = hashed.map_err(|e| e.message).and_then(|r| r);
    let (md5, value) = match hashed {
        Ok(pair) => pair,
        Err(e) => {
            revert(state, id).await;
            return Err(format!(
                "Failed to calculate the hash of the location's data: {e}"
            ));
        }
    };
    if let Some((_, expected)) = &validation
        && !expected.eq_ignore_ascii_case(&value)
    {
        revert(state, id).await;
        return Err(format!(
            "os_hash_value: ({expected}) not matched with actual os_hash_value: ({value})"
        ));
    }
    edit(state, id, move |image| {
        image.checksum = Some(md5);
        image.os_hash_value = Some(value);
        if image.status == "importing" {
            image.status = "active".to_owned();
        }
        Ok(())
    })
    .await
}

/// MD5 and the `algo` hash of the `size` bytes at `url`.
fn hash(store: &HttpStore, url: &str, size: u64, algo: &str) -> Result<(String, String), String> {
    let digest = MessageDigest::from_name(algo).ok_or_else(|| format!("no {algo} digest"))?;
    let mut md5 = Hasher::new(MessageDigest::md5()).map_err(|e| e.to_string())?;
    let mut other = Hasher::new(digest).map_err(|e| e.to_string())?;
    let mut reader = store
        .open(
            url,
            Span {
                start: 0,
                len: size,
            },
        )
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        total += n as u64;
        md5.update(&buf[..n]).map_err(|e| e.to_string())?;
        other.update(&buf[..n]).map_err(|e| e.to_string())?;
    }
    if total != size {
        return Err(format!("read {total} bytes of {size}"));
    }
    let md5 = hex::encode(md5.finish().map_err(|e| e.to_string())?);
    let value = hex::encode(other.finish().map_err(|e| e.to_string())?);
    Ok((md5, value))
}

/// A failed hash: the image goes back to queued with no digests (its location stays).
async fn revert(state: &AppState, id: &ImageId) {
    let outcome = edit(state, id, |image| {
        if image.status != "active" {
            image.status = "queued".to_owned();
        }
        image.os_hash_algo = None;
        image.os_hash_value = None;
        image.checksum = None;
        Ok(())
    })
    .await;
    if let Err(e) = outcome {
        warn!(image = %id, error = %e, "the image could not be set back to queued");
    }
}

/// Changes image `id` under its row lock.
async fn edit(
    state: &AppState,
    id: &ImageId,
    change: impl FnOnce(&mut crate::db::Image) -> Result<(), String>,
) -> Result<(), String> {
    let edit = state
        .db
        .edit(id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the image is gone".to_owned())?;
    let mut image = edit.image.clone();
    change(&mut image)?;
    image.updated_at = now();
    state
        .db
        .save(edit, &image)
        .await
        .map_err(|e| e.to_string())
        .map(drop)
}

/// Ends the task and lets go of the image's lock.
async fn finish(state: &AppState, id: &ImageId, task_id: &str, outcome: Result<(), String>) {
    let (to, message) = match &outcome {
        Ok(()) => ("success", String::new()),
        Err(e) => ("failure", e.clone()),
    };
    match &outcome {
        Ok(()) => info!(image = %id, task = task_id, "location added"),
        Err(e) => warn!(image = %id, task = task_id, error = %e, "location import failed"),
    }
    let owned = task_id.to_owned();
    let unlocked = edit(state, id, move |image| {
        if image.properties.get(LOCK) == Some(&owned) {
            image.properties.remove(LOCK);
        }
        Ok(())
    })
    .await;
    if let Err(e) = unlocked {
        warn!(image = %id, error = %e, "the import lock stays");
    }
    let result = json!({"image_id": id.to_string()}).to_string();
    if let Err(e) = state
        .db
        .move_task(
            task_id,
            &["pending", "processing"],
            to,
            &message,
            Some(result.as_str()),
            state.settings.import.task_ttl_hours,
        )
        .await
    {
        warn!(task = task_id, error = %e, "the task's end was not recorded");
    }
}

/// GET /v2/images/{id}/locations: `fetch_image_location` (services, by default).
pub async fn list(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&raw)?;
    let image = image_to_check(&state, &caller, &id).await?;
    permit(&state, &caller, "get_image", &image).await?;
    permit(&state, &caller, "fetch_image_location", &image).await?;
    let image = state
        .db
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No image found with ID {id}")))?;
    Ok(Json(json!(
        image
            .locations
            .iter()
            .map(|l| json!({"url": l.url, "metadata": l.metadata}))
            .collect::<Vec<_>>()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn validation_data_as_upstream_checks_it() {
        assert_eq!(
            validation_of(&body(json!({"url": "x"}))).expect("none"),
            None
        );
        let sha256 = "ab".repeat(32);
        assert_eq!(
            validation_of(&body(
                json!({"validation_data": {"os_hash_algo": "sha256", "os_hash_value": sha256}})
            ))
            .expect("good"),
            Some(("sha256".to_owned(), sha256.clone()))
        );
        for bad in [
            json!({"os_hash_algo": "sha512", "os_hash_value": "dbc9e0f80d131e64b94913a7b40bb5"}),
            json!({"os_hash_value": "ab".repeat(64)}),
            json!({"os_hash_algo": "sha123", "os_hash_value": "ab".repeat(64)}),
            json!({"os_hash_algo": "sha512", "os_hash_value": sha256}),
            json!({"os_hash_algo": "sha256", "os_hash_value": "zz".repeat(32)}),
            json!({"os_hash_algo": "sha256", "os_hash_value": sha256, "checksum": "x"}),
        ] {
            let err = validation_of(&body(json!({"validation_data": bad}))).expect_err("refused");
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
