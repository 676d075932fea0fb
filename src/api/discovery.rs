//! The versions document, /healthcheck, and the image schemas.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::access::{Caller, authorize, proposed_target};
use super::error::ApiError;
use super::images::{CONTAINER_FORMATS, DISK_FORMATS};
use super::state::AppState;

/// The Image API versions served, newest first, in upstream's choice of them: the
/// location API's (2.17), the cache API's (2.14, 2.16) with the cache, the multi-store
/// ones (2.8, 2.10 to 2.13) with `enabled_backends`. Upstream's 2.18 is not served, so
/// not listed.
fn served(cache: bool, multi: bool) -> Vec<&'static str> {
    let mut ids = if cache {
        vec!["2.17", "2.16", "2.15", "2.14"]
    } else {
        vec!["2.17", "2.15"]
    };
    if multi {
        ids.extend(["2.13", "2.12", "2.11", "2.10", "2.9", "2.8"]);
    } else {
        ids.push("2.9");
    }
    ids.extend(["2.7", "2.6", "2.5", "2.4", "2.3", "2.2", "2.1", "2.0"]);
    ids
}

/// The versions document; the newest served version is CURRENT.
fn versions(state: &AppState, headers: &HeaderMap) -> Value {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:9292");
    let href = format!("http://{host}/v2/");
    let list: Vec<Value> = served(state.cache.is_some(), state.stores.multi())
        .into_iter()
        .enumerate()
        .map(|(n, id)| {
            json!({
                "id": format!("v{id}"),
                "status": if n == 0 { "CURRENT" } else { "SUPPORTED" },
                "links": [{"rel": "self", "href": href}],
            })
        })
        .collect();
    json!({"versions": list})
}

/// GET / (300 Multiple Choices)
pub async fn root(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(versions(&state, &headers)),
    )
        .into_response()
}

/// `/v2` itself: upstream's router redirects it to `/v2/` (302).
pub async fn v2_root(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:9292");
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = header::HeaderValue::from_str(&format!("http://{host}/v2/")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// GET /versions
pub async fn list_versions(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Json<Value> {
    Json(versions(&state, &headers))
}

/// GET /healthcheck: OK while the database answers.
pub async fn healthcheck(State(state): State<Arc<AppState>>) -> Response {
    match state.db.get_row(&crate::cache::ImageId::random()).await {
        Ok(_) => (StatusCode::OK, "OK").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response(),
    }
}

/// GET /v2/info/stores: the enabled backends, the default marked, as upstream lists them;
/// 404 without `enabled_backends`.
pub async fn stores(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    state
        .stores
        .info()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Multi backend is not supported at this site."))
}

/// GET /v2/info/stores/detail: the stores with their types, properties and weights, to
/// those the `stores_info_detail` rule admits (upstream: administrators and the service
/// role); 404 without `enabled_backends`.
pub async fn stores_detail(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let detail = state
        .stores
        .detail()
        .ok_or_else(|| ApiError::not_found("Multi backend is not supported at this site."))?;
    authorize(
        &state,
        &caller,
        "stores_info_detail",
        &proposed_target(caller.project(), None),
    )?;
    Ok(Json(detail))
}

/// GET /v2/info/usage: what upstream answers without Keystone's unified limits
/// (`use_keystone_limits = False`, its default and the only setting glance-api starts
/// with): no usage to report.
pub async fn usage() -> Json<Value> {
    Json(json!({"usage": {}}))
}

/// The `locations` attribute of the image schema, as upstream's.
fn locations_schema() -> Value {
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "url": {"type": "string", "maxLength": 255},
                "metadata": {"type": "object"},
                "validation_data": {
                    "description": "Values to be used to populate the corresponding image properties. If the image status is not 'queued', values must exactly match those already contained in the image properties.",
                    "type": "object",
                    "writeOnly": true,
                    "additionalProperties": false,
                    "properties": {
                        "checksum": {"type": "string", "minLength": 32, "maxLength": 32},
                        "os_hash_algo": {"type": "string", "maxLength": 64},
                        "os_hash_value": {"type": "string", "maxLength": 128},
                    },
                    "required": ["os_hash_algo", "os_hash_value"],
                },
            },
            "required": ["url", "metadata"],
        },
        "description": "A set of URLs to access the image file kept in external store",
    })
}

/// The image schema, as upstream publishes it (python-glanceclient validates with it).
pub fn image_schema() -> Value {
    let nullable_enum = |values: &[&str]| {
        let mut e: Vec<Value> = vec![Value::Null];
        e.extend(values.iter().map(|v| json!(v)));
        e
    };
    json!({
        "name": "image",
        "properties": {
            "id": {"type": "string", "description": "An identifier for the image",
                   "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
            "name": {"type": ["null", "string"], "description": "Descriptive name for the image", "maxLength": 255},
            "status": {"type": "string", "readOnly": true, "description": "Status of the image",
                       "enum": ["queued", "saving", "active", "killed", "deleted", "uploading", "importing", "pending_delete", "deactivated"]},
            "visibility": {"type": "string", "description": "Scope of image accessibility", "enum": ["community", "public", "private", "shared"]},
            "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
            "os_hidden": {"type": "boolean", "description": "If true, image will not appear in default image list response."},
            "checksum": {"type": ["null", "string"], "readOnly": true, "description": "md5 hash of image contents.", "maxLength": 32},
            "os_hash_algo": {"type": ["null", "string"], "readOnly": true, "description": "Algorithm to calculate the os_hash_value", "maxLength": 64},
            "os_hash_value": {"type": ["null", "string"], "readOnly": true, "description": "Hexdigest of the image contents using the algorithm specified by the os_hash_algo", "maxLength": 128},
            "owner": {"type": ["null", "string"], "description": "Owner of the image", "maxLength": 255},
            "size": {"type": ["null", "integer"], "readOnly": true, "description": "Size of image file in bytes"},
            "virtual_size": {"type": ["null", "integer"], "readOnly": true, "description": "Virtual size of image in bytes"},
            "container_format": {"type": ["null", "string"], "description": "Format of the container", "enum": nullable_enum(CONTAINER_FORMATS)},
            "disk_format": {"type": ["null", "string"], "description": "Format of the disk", "enum": nullable_enum(DISK_FORMATS)},
            "created_at": {"type": "string", "readOnly": true, "description": "Date and time of image registration"},
            "updated_at": {"type": "string", "readOnly": true, "description": "Date and time of the last image modification"},
            "tags": {"type": "array", "description": "List of strings related to the image", "items": {"type": "string", "maxLength": 255}},
            "self": {"type": "string", "readOnly": true, "description": "An image self url"},
            "file": {"type": "string", "readOnly": true, "description": "An image file url"},
            "schema": {"type": "string", "readOnly": true, "description": "An image schema url"},
            "stores": {"type": "string", "readOnly": true, "description": "Store in which image data resides."},
            "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
            "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
            "direct_url": {"type": "string", "readOnly": true, "description": "URL to access the image file kept in external store"},
            "locations": locations_schema(),
        },
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    })
}

/// GET /v2/schemas/image
pub async fn schema_image() -> Json<Value> {
    Json(image_schema())
}

/// The schema of one image member (upstream's `member` schema).
pub fn member_schema() -> Value {
    json!({
        "name": "member",
        "properties": {
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "image_id": {"type": "string", "description": "An identifier for the image", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
            "status": {"type": "string", "description": "The status of this image member", "enum": ["pending", "accepted", "rejected"]},
            "schema": {"readOnly": true, "type": "string"},
        },
    })
}

/// GET /v2/schemas/member
pub async fn schema_member() -> Json<Value> {
    Json(member_schema())
}

/// GET /v2/schemas/members
pub async fn schema_members() -> Json<Value> {
    Json(json!({
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member_schema()},
            "schema": {"type": "string"},
        },
        "links": [{"rel": "describedby", "href": "{schema}"}],
    }))
}

/// GET /v2/schemas/images
pub async fn schema_images() -> Json<Value> {
    Json(json!({
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image_schema()},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }))
}
