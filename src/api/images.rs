//! Image metadata: create, list, show, update (JSON patch), delete, tags.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use tracing::warn;

use super::access::{
    Caller, authorize, authorize_image, forbidden, image_target, permit, proposed_target,
};
use super::data::image_to_check;
use super::error::ApiError;
use super::image_locations;
use super::state::{AppState, blocking};
use crate::cache::ImageId;
use crate::db::{Image, StoreRemoval, now};

type Shared = Arc<AppState>;

/// disk_format values Glance accepts.
pub const DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
/// container_format values Glance accepts.
pub const CONTAINER_FORMATS: &[&str] = &[
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];
const VISIBILITIES: &[&str] = &["public", "private", "shared", "community"];
const READ_ONLY: &[&str] = &[
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
    "stores",
];

/// Attributes no request may set (upstream's `_reserved_properties`), and the
/// namespace upstream keeps for itself (`os_glance_…`).
const RESERVED: &[&str] = &["location", "deleted", "deleted_at"];
const RESERVED_NAMESPACE: &str = "os_glance";

/// The schema's limits: names, property keys and tags (VARCHAR(255)), property values
/// (TEXT), and min_disk and min_ram (INTEGER).
const MAX_NAME: usize = 255;
const MAX_PROPERTY_VALUE: usize = 65_535;
const MAX_INT: i64 = i32::MAX as i64;

/// 400 for a value of `field` that the image schema refuses, in upstream's words.
fn invalid(field: &str, reason: String) -> ApiError {
    ApiError::bad_request(format!(
        "Provided object does not match schema 'image': {field}: {reason}"
    ))
}

/// Refuses a value of `field` longer than `max` characters.
fn at_most(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n > max {
        return Err(invalid(
            field,
            format!("the value is too long ({n} characters; at most {max})"),
        ));
    }
    Ok(())
}

/// A tag: 1 to 255 characters.
fn check_tag(tag: &str) -> Result<(), ApiError> {
    if tag.is_empty() {
        return Err(invalid("tags", "a tag cannot be empty".to_owned()));
    }
    at_most("tags", tag, MAX_NAME)
}

/// What a request may set or remove: not the read-only attributes, not the reserved
/// ones nor upstream's own `os_glance_` namespace (403, upstream's words), and property
/// names of 1 to 255 characters (400).
fn check_key(key: &str) -> Result<(), ApiError> {
    if RESERVED.contains(&key) || key == "locations" || key.starts_with(RESERVED_NAMESPACE) {
        return Err(forbidden(format!("Attribute '{key}' is reserved.")));
    }
    if READ_ONLY.contains(&key) || key == "id" {
        return Err(forbidden(format!("Attribute '{key}' is read-only.")));
    }
    if key.is_empty() {
        return Err(ApiError::bad_request("A property name cannot be empty."));
    }
    if key.chars().count() > MAX_NAME {
        return Err(ApiError::bad_request(
            "Custom property should not be greater than 255 characters.",
        ));
    }
    Ok(())
}

/// On a catalogue whose tables cannot hold characters beyond the Basic Multilingual
/// Plane (MySQL's and MariaDB's utf8mb3 tables, as upstream creates them), refuses them
/// with upstream's `no_4byte_params` words before the database does.
fn check_4byte(state: &AppState, image: &Image) -> Result<(), ApiError> {
    if state.db.holds_4byte() {
        return Ok(());
    }
    let wide = |s: &str| s.chars().any(|c| u32::from(c) > 0xFFFF);
    for (key, value) in &image.properties {
        if wide(key) {
            return Err(ApiError::bad_request(
                "Property names can't contain 4 byte unicode.",
            ));
        }
        if wide(value) {
            return Err(ApiError::bad_request(format!(
                "{} can't contain 4 byte unicode characters.",
                title(key)
            )));
        }
    }
    for (field, value) in [("name", &image.name), ("owner", &image.owner)] {
        if value.as_deref().is_some_and(wide) {
            return Err(ApiError::bad_request(format!(
                "{} can't contain 4 byte unicode characters.",
                title(field)
            )));
        }
    }
    if image.tags.iter().any(|t| wide(t)) {
        return Err(ApiError::bad_request(
            "Param values can't contain 4 byte unicode.",
        ));
    }
    Ok(())
}

/// Python's `str.title()` for the ASCII words of a name.
fn title(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut start = true;
    for c in key.chars() {
        out.extend(if start {
            c.to_uppercase().collect::<Vec<_>>()
        } else {
            c.to_lowercase().collect()
        });
        start = !c.is_alphabetic();
    }
    out
}

/// Upstream's `image_property_quota` and `image_tag_quota`: 413 when a change leaves an
/// image with more properties or tags than allowed, and it added some. An image already
/// over a lowered quota can still lose some.
fn check_quotas(state: &AppState, old: Option<&Image>, new: &Image) -> Result<(), ApiError> {
    let over = |what: &str, quota: i64, before: usize, after: usize| {
        let limit = usize::try_from(quota).unwrap_or(usize::MAX);
        if quota >= 0 && after > limit && after > before {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "The limit has been exceeded on the number of allowed image {what}. Attempted: {after}, Maximum: {quota}"
                ),
            });
        }
        Ok(())
    };
    let settings = &state.settings;
    // Upstream leaves its own os_glance_ properties out of the count.
    let own = |i: &Image| {
        i.properties
            .keys()
            .filter(|k| !k.starts_with(RESERVED_NAMESPACE))
            .count()
    };
    over(
        "properties",
        settings.image_property_quota,
        old.map_or(0, own),
        own(new),
    )?;
    over(
        "tags",
        settings.image_tag_quota,
        old.map_or(0, |i| i.tags.len()),
        new.tags.len(),
    )
}

/// Properties kept for glance-api's own use and never shown: upstream's, and the lease
/// of an upload in progress ([`crate::db::UPLOAD_LEASE`]).
const HIDDEN: &[&str] = &[
    "os_glance_stage_host",
    "os_glance_hash_op_host",
    crate::db::UPLOAD_LEASE,
];

/// An image as the API shows it; its stores listed as upstream lists its locations, by
/// store weight.
pub fn image_json(state: &AppState, image: &Image) -> Value {
    let id = image.id.as_str();
    let mut v = json!({
        "id": id,
        "name": image.name,
        "status": image.status,
        "visibility": image.visibility,
        "protected": image.protected,
        "os_hidden": image.os_hidden,
        "checksum": image.checksum,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "owner": image.owner,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "tags": image.tags,
        "created_at": image.created_at,
        "updated_at": image.updated_at,
        "self": format!("/v2/images/{id}"),
        "file": format!("/v2/images/{id}/file"),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(map) = &mut v {
        if !image.stores.is_empty() {
            let stores = state.stores.by_weight(&image.stores);
            map.insert("stores".to_owned(), json!(stores.join(",")));
        }
        if state.settings.show_multiple_locations {
            let locations: Vec<Value> = image
                .locations
                .iter()
                .map(|l| json!({"url": l.url, "metadata": l.metadata}))
                .collect();
            map.insert("locations".to_owned(), json!(locations));
        }
        // As upstream, the first location by store weight (ties: the oldest first).
        if state.settings.show_image_direct_url
            // max_by_key keeps the last of equal keys: reversed, that is the oldest.
            && let Some(first) = image.locations.iter().rev().max_by_key(|l| {
                let store = l.metadata.get("store").and_then(Value::as_str);
                store.map_or(0, |s| state.stores.weight(s))
            })
        {
            map.insert("direct_url".to_owned(), json!(first.url));
        }
        for (k, val) in &image.properties {
            if !HIDDEN.contains(&k.as_str()) {
                map.entry(k.clone()).or_insert_with(|| json!(val));
            }
        }
    }
    v
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("No image found with ID {id}"))
}

/// Parses an ID from the URL; anything that is not a UUID is an unknown image.
pub fn path_id(raw: &str) -> Result<ImageId, ApiError> {
    ImageId::parse(raw).map_err(|_| not_found(raw))
}

fn conflict(message: String) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        message,
    }
}

fn string_or_null(key: &str, v: &Value) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError::bad_request(format!(
            "{key}: expected a string or null"
        ))),
    }
}

fn one_of(key: &str, v: &Value, allowed: &[&str]) -> Result<Option<String>, ApiError> {
    let value = string_or_null(key, v)?;
    match &value {
        Some(s) if !allowed.contains(&s.as_str()) => Err(ApiError::bad_request(format!(
            "Invalid value '{s}' for {key}: expected one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(value),
    }
}

/// Sets one attribute from the API's JSON; `removing` clears it.
fn set_attribute(image: &mut Image, key: &str, value: Option<&Value>) -> Result<(), ApiError> {
    check_key(key)?;
    let null = Value::Null;
    let v = value.unwrap_or(&null);
    let int = |v: &Value| {
        let n = match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => n.as_i64().unwrap_or(i64::MAX),
            _ => return Err(invalid(key, format!("{v} is not of type 'integer'"))),
        };
        if n < 0 {
            return Err(ApiError::bad_request(format!(
                "Invalid value '{n}' for parameter '{key}': Cannot be a negative value"
            )));
        }
        // Upstream's _validate_db_int.
        if n > MAX_INT {
            return Err(ApiError::bad_request(format!(
                "'{key}' value out of range, must not exceed {MAX_INT}."
            )));
        }
        Ok(n)
    };
    let boolean = |v: &Value| {
        v.as_bool()
            .ok_or_else(|| ApiError::bad_request(format!("{key}: expected true or false")))
    };
    match key {
        "id" => return Err(forbidden("Attribute 'id' is read-only.".to_owned())),
        "name" => {
            let name = string_or_null(key, v)?;
            if let Some(name) = &name {
                at_most(key, name, MAX_NAME)?;
            }
            image.name = name;
        }
        "visibility" => {
            image.visibility = one_of(key, v, VISIBILITIES)?
                .ok_or_else(|| ApiError::bad_request("visibility cannot be null"))?;
        }
        "protected" => image.protected = boolean(v)?,
        "os_hidden" => image.os_hidden = boolean(v)?,
        // Once data is in, the inspected format stays what the image claims (upstream's
        // domain rule): no relabelling a checked qcow2 as raw afterwards.
        "disk_format" | "container_format"
            if !matches!(image.status.as_str(), "queued" | "importing") =>
        {
            return Err(forbidden(format!(
                "Attribute {key} can be only replaced for a queued image."
            )));
        }
        "disk_format" => image.disk_format = one_of(key, v, DISK_FORMATS)?,
        "container_format" => image.container_format = one_of(key, v, CONTAINER_FORMATS)?,
        "min_disk" => image.min_disk = int(v)?,
        "min_ram" => image.min_ram = int(v)?,
        "owner" => image.owner = string_or_null(key, v)?,
        "tags" => {
            let tags = v
                .as_array()
                .ok_or_else(|| ApiError::bad_request("tags: expected a list of strings"))?;
            image.tags = tags
                .iter()
                .map(|t| {
                    let tag = t
                        .as_str()
                        .ok_or_else(|| ApiError::bad_request("tags: expected a list of strings"))?;
                    check_tag(tag)?;
                    Ok(tag.to_owned())
                })
                .collect::<Result<_, ApiError>>()?;
        }
        _ => match value {
            None => {
                if image.properties.remove(key).is_none() {
                    return Err(conflict(format!("Property {key} does not exist.")));
                }
            }
            Some(Value::String(s)) => {
                at_most(key, s, MAX_PROPERTY_VALUE)?;
                image.properties.insert(key.to_owned(), s.clone());
            }
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{key}: extra properties must be strings"
                )));
            }
        },
    }
    Ok(())
}

/// POST /v2/images: 201 with the image, its address in `Location`, and, as upstream,
/// the enabled import methods in `OpenStack-image-import-methods` and the enabled
/// stores in `OpenStack-image-store-ids`.
pub async fn create(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Json<Value>), ApiError> {
    let image = create_image(&state, &caller, &body).await?;
    let mut out = HeaderMap::new();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    if let Ok(location) = HeaderValue::from_str(&format!("http://{host}/v2/images/{}", image.id)) {
        out.insert(header::LOCATION, location);
    }
    let methods = state.settings.import.methods.join(",");
    if !methods.is_empty()
        && let Ok(methods) = HeaderValue::from_str(&methods)
    {
        out.insert(
            HeaderName::from_static("openstack-image-import-methods"),
            methods,
        );
    }
    if state.stores.multi() {
        let ids = state.stores.names().collect::<Vec<_>>().join(",");
        if let Ok(ids) = HeaderValue::from_str(&ids) {
            out.insert(HeaderName::from_static("openstack-image-store-ids"), ids);
        }
    }
    Ok((StatusCode::CREATED, out, Json(image_json(&state, &image))))
}

/// A new image from the JSON object `body`, as POST /v2/images makes it.
pub(super) async fn create_image(
    state: &AppState,
    caller: &Caller,
    body: &[u8],
) -> Result<Image, ApiError> {
    let fields: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("The request body must be a JSON object: {e}"))
    })?;
    let id = match fields.get("id") {
        Some(Value::String(s)) => {
            ImageId::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        Some(_) => return Err(ApiError::bad_request("id: expected a UUID string")),
        None => ImageId::random(),
    };
    let mut image = Image::new(id, &now());
    image.owner = caller.project().map(str::to_owned);
    for (key, value) in &fields {
        if key != "id" {
            set_attribute(&mut image, key, Some(value))?;
        }
    }
    authorize_create(state, caller, &image, fields.contains_key("visibility"))?;
    check_quotas(state, None, &image)?;
    check_4byte(state, &image)?;
    if !state.db.insert(&image).await? {
        return Err(conflict(format!(
            "Image with identifier {} already exists!",
            image.id
        )));
    }
    Ok(image)
}

/// upstream's `add_image` check: a refusal for another project's image says so; then
/// `publicize_image` or `communitize_image` for a public or community one.
fn authorize_create(
    state: &AppState,
    caller: &Caller,
    image: &Image,
    visibility_given: bool,
) -> Result<(), ApiError> {
    let visibility = visibility_given.then_some(image.visibility.as_str());
    let target = proposed_target(image.owner.as_deref(), visibility);
    if let Err(e) = authorize(state, caller, "add_image", &target) {
        return Err(match image.owner.as_deref() {
            owner if caller.project().is_some() && caller.project() != owner => forbidden(format!(
                "You are not permitted to create images owned by '{}'",
                owner.unwrap_or("None")
            )),
            _ => e,
        });
    }
    authorize_visibility(state, caller, &image.visibility, &target)
}

/// Making an image public or community needs its own rule (upstream's
/// `_enforce_image_visibility`).
fn authorize_visibility(
    state: &AppState,
    caller: &Caller,
    visibility: &str,
    target: &dyn crate::policy::Lookup,
) -> Result<(), ApiError> {
    match visibility {
        "public" => authorize(state, caller, "publicize_image", target),
        "community" => authorize(state, caller, "communitize_image", target),
        _ => Ok(()),
    }
}

/// An image the caller may see and act on with `action`, or 404/403 as upstream answers.
async fn image_for(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    action: &str,
) -> Result<Image, ApiError> {
    let id = path_id(raw)?;
    let image = state.db.get(&id).await?.ok_or_else(|| not_found(raw))?;
    permit(state, caller, action, &image).await?;
    Ok(image)
}

/// What [`image_for`] checks before an edit, which reads the image again under its lock:
/// nothing to check (and nothing to read) for a caller without a token, to whom every
/// image is visible and no policy applies.
async fn visible_to(
    state: &AppState,
    caller: &Caller,
    raw: &str,
    action: &str,
) -> Result<(), ApiError> {
    if caller.is_checked() {
        image_for(state, caller, raw, action).await?;
    }
    Ok(())
}

/// GET /v2/images/{id}
pub async fn show(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let image = image_for(&state, &caller, &raw, "get_image").await?;
    Ok(Json(image_json(&state, &image)))
}

/// One operation of a JSON patch, its pointer decoded.
struct PatchOp {
    op: Change,
    key: String,
    value: Option<Value>,
    /// An add of the older media type: 409 when the attribute is already there.
    exclusive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Replace,
    Remove,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Replace => "replace",
            Change::Remove => "remove",
        }
    }
}

/// The JSON patch media types (upstream's, with the JSON Schema draft each follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    /// `application/openstack-images-v2.1-json-patch`: `{"op": "add", "path": "/a"}`.
    V21,
    /// `application/openstack-images-v2.0-json-patch`, the older form:
    /// `{"add": "/a"}`; adding a property that is already there is a conflict.
    V20,
}

const PATCH_TYPES: &str =
    "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch";

impl PatchType {
    /// The media type of a PATCH request, if it is one of the two.
    fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/openstack-images-v2.1-json-patch" => Some(Self::V21),
            "application/openstack-images-v2.0-json-patch" => Some(Self::V20),
            _ => None,
        }
    }

    /// upstream's 415 for any other media type, with its Accept-Patch header.
    fn unsupported() -> Response {
        let mut response = ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("Image PATCH expects Content-Type one of: {PATCH_TYPES}"),
        }
        .into_response();
        response.headers_mut().insert(
            HeaderName::from_static("accept-patch"),
            HeaderValue::from_static(PATCH_TYPES),
        );
        response
    }
}

/// Reads a JSON patch body: a list of operations whose paths name one attribute each,
/// in the form of `kind`.
fn parse_patch(body: &[u8], kind: PatchType) -> Result<Vec<PatchOp>, ApiError> {
    let ops: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Malformed JSON in request body: {e}")))?;
    let Value::Array(ops) = ops else {
        return Err(ApiError::bad_request(
            "Request body must be a JSON array of operation objects.",
        ));
    };
    ops.into_iter()
        .map(|op| {
            let Value::Object(mut op) = op else {
                return Err(ApiError::bad_request("Operations must be JSON objects."));
            };
            let (name, path) = match kind {
                PatchType::V21 => {
                    let name = match op.get("op") {
                        None => {
                            return Err(ApiError::bad_request(
                                "Unable to find `op` in JSON Schema change. It must be one of \
                                 the following: add, remove, replace.",
                            ));
                        }
                        Some(name) => name.as_str().unwrap_or("").to_owned(),
                    };
                    let path = op.get("path").ok_or_else(|| {
                        ApiError::bad_request("Unable to find 'path' in JSON Schema change")
                    })?;
                    (name, path.clone())
                }
                PatchType::V20 => {
                    let mut named = ["add", "remove", "replace"]
                        .into_iter()
                        .filter(|n| op.contains_key(*n));
                    let name = named.next().ok_or_else(|| {
                        ApiError::bad_request(
                            "Operation objects must contain exactly one member named \"add\", \
                             \"remove\", or \"replace\".",
                        )
                    })?;
                    if named.next().is_some() {
                        return Err(ApiError::bad_request(
                            "Operation objects must contain only one member named \"add\", \
                             \"remove\", or \"replace\".",
                        ));
                    }
                    (name.to_owned(), op.get(name).cloned().unwrap_or(Value::Null))
                }
            };
            let change = match name.as_str() {
                "add" => Change::Add,
                "replace" => Change::Replace,
                "remove" => Change::Remove,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid operation: `{other}`. It must be one of the following: add, replace, remove."
                    )));
                }
            };
            let path = path.as_str().ok_or_else(|| {
                ApiError::bad_request(format!("Pointer `{path}` does not start with \"/\"."))
            })?;
            let key = decode_pointer(path)?;
            let value = op.remove("value");
            if change != Change::Remove && value.is_none() {
                return Err(ApiError::bad_request(format!(
                    "Operation \"{name}\" requires a member named \"value\"."
                )));
            }
            Ok(PatchOp {
                op: change,
                key,
                value,
                exclusive: kind == PatchType::V20 && change == Change::Add,
            })
        })
        .collect()
}

/// An RFC 6901 pointer to one attribute: `/name`, with `~1` for `/` and `~0` for `~`;
/// any other `~` escape is refused, in upstream's words.
fn decode_pointer(path: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("Pointer `{path}` {why}"));
    let Some(key) = path.strip_prefix('/') else {
        return Err(bad("does not start with \"/\"."));
    };
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(bad(
                "contains \"~\" not part of a recognized escape sequence.",
            ));
        }
    }
    // `locations/N` and `locations/-` are the one deeper path (image_locations).
    let deeper = key
        .split_once('/')
        .is_some_and(|(root, rest)| root == "locations" && !rest.contains('/'));
    if key.is_empty() || (key.contains('/') && !deeper) {
        return Err(ApiError::bad_request(format!(
            "Invalid JSON pointer for this resource: '{path}'"
        )));
    }
    if deeper {
        return Ok(key.to_owned());
    }
    Ok(key.replace("~1", "/").replace("~0", "~"))
}

/// Applies `ops` to `image` with the checks upstream makes for each: who may change the
/// owner and the visibility, `modify_image`, read-only and reserved attributes, and the
/// values' schema.
fn apply(
    state: &AppState,
    caller: &Caller,
    image: &mut Image,
    ops: &[PatchOp],
    locations: &Checked,
    removed: &mut Vec<crate::db::Location>,
) -> Result<(), ApiError> {
    for PatchOp {
        op,
        key,
        value,
        exclusive,
    } in ops
    {
        let key = key.as_str();
        if let Some(location_op) = image_locations::parse(
            state.settings.show_multiple_locations,
            op.name(),
            key,
            value.as_ref(),
        )? {
            authorize_image(state, caller, "modify_image", image)?;
            let rule = match location_op {
                image_locations::LocationOp::Remove(_) => "delete_image_location",
                _ => "set_image_location",
            };
            authorize_image(state, caller, rule, image)?;
            image_locations::apply(
                state,
                image,
                &location_op,
                &locations.urls,
                locations.size,
                removed,
            )?;
            continue;
        }
        if key == "owner" && *op != Change::Remove && !caller.is_admin() {
            return Err(forbidden("Owner can't be updated by non admin.".to_owned()));
        }
        if key == "visibility"
            && let Some(Value::String(v)) = value
        {
            authorize_visibility(state, caller, v, &image_target(image, caller))?;
        }
        authorize_image(state, caller, "modify_image", image)?;
        match op {
            Change::Add | Change::Replace => {
                if *exclusive && (is_core(key) || image.properties.contains_key(key)) {
                    check_key(key)?;
                    return Err(conflict(format!("Property {key} already present.")));
                }
                if *op == Change::Replace && !is_core(key) && !image.properties.contains_key(key) {
                    check_key(key)?;
                    return Err(conflict(format!("Property {key} does not exist.")));
                }
                set_attribute(image, key, value.as_ref())?;
            }
            Change::Remove => {
                if is_core(key) {
                    check_key(key)?;
                    return Err(forbidden(format!("Property {key} may not be removed.")));
                }
                set_attribute(image, key, None)?;
            }
        }
    }
    Ok(())
}

/// PATCH /v2/images/{id} (application/openstack-images-v2.1-json-patch)
///
/// The patch is applied to the image as it is under its row lock ([`crate::db::Db::edit`]),
/// and only what it changed is written: concurrent patches of one image, through any
/// replica, all take effect.
pub async fn update(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(kind) = PatchType::of(&headers) else {
        return PatchType::unsupported();
    };
    match parse_patch(&body, kind) {
        Ok(ops) => update_with(state, caller, raw, ops).await.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn update_with(
    state: Shared,
    caller: Caller,
    raw: String,
    ops: Vec<PatchOp>,
) -> Result<Json<Value>, ApiError> {
    // As upstream, an empty patch changes nothing, not even updated_at.
    if ops.is_empty() {
        let image = image_for(&state, &caller, &raw, "get_image").await?;
        return Ok(Json(image_json(&state, &image)));
    }
    visible_to(&state, &caller, &raw, "get_image").await?;
    // New location URLs are checked (over the network) before the row is locked.
    let location_ops = ops
        .iter()
        .filter_map(|o| {
            image_locations::parse(
                state.settings.show_multiple_locations,
                o.op.name(),
                &o.key,
                o.value.as_ref(),
            )
            .transpose()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let locations = if location_ops.is_empty() {
        Checked::default()
    } else {
        let seen = image_for(&state, &caller, &raw, "get_image").await?;
        let (urls, size) = image_locations::check_new(&state, &seen, &location_ops).await?;
        Checked { urls, size }
    };
    let mut removed = Vec::new();
    let image = edit(&state, &raw, |image| {
        apply(&state, &caller, image, &ops, &locations, &mut removed)
    })
    .await?;
    // As upstream, a removed location's data goes (an http store's stays where it is).
    for location in removed {
        let store = location
            .metadata
            .get("store")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let stores = state.stores.clone();
        let url = location.url.clone();
        match blocking(move || Ok(stores.delete(&url, store.as_deref()))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(image = %image.id, error = %e, "the removed location's data stays"),
            Err(e) => {
                warn!(image = %image.id, error = %e.message, "the removed location's data stays")
            }
        }
    }
    Ok(Json(image_json(&state, &image)))
}

/// The new location URLs of a patch that passed their checks, and the size they report.
#[derive(Debug, Default)]
struct Checked {
    urls: std::collections::BTreeSet<String>,
    size: Option<u64>,
}

/// Changes image `raw` with `change`, applied under the image's row lock to the image as
/// it is then, and writes what changed; the image as saved. 404 when it is gone.
async fn edit(
    state: &AppState,
    raw: &str,
    change: impl FnOnce(&mut Image) -> Result<(), ApiError>,
) -> Result<Image, ApiError> {
    let id = path_id(raw)?;
    let edit = state.db.edit(&id).await?.ok_or_else(|| not_found(raw))?;
    let mut image = edit.image.clone();
    change(&mut image)?;
    check_quotas(state, Some(&edit.image), &image)?;
    check_4byte(state, &image)?;
    image.updated_at = now();
    if !state.db.save(edit, &image).await? {
        return Err(forbidden(
            "Attribute disk_format and container_format can be only replaced for a queued image."
                .to_owned(),
        ));
    }
    Ok(image)
}

fn is_core(key: &str) -> bool {
    matches!(
        key,
        "id" | "name"
            | "visibility"
            | "protected"
            | "os_hidden"
            | "disk_format"
            | "container_format"
            | "min_disk"
            | "min_ram"
            | "owner"
            | "tags"
    ) || READ_ONLY.contains(&key)
}

/// DELETE /v2/stores/{store}/{id}: the image's data in one store, as upstream's
/// delete_from_store: never its last copy, only of an active image, under the
/// `get_image_location` and `delete_image_location` rules.
pub async fn delete_from_store(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((store, raw)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if !state.stores.multi() {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    if state.stores.named(&store).is_none() {
        return Err(conflict(format!(
            "The selected store {store} is not available on this node."
        )));
    }
    let unfound = || ApiError::not_found(format!("Failed to find image {raw}"));
    let id = path_id(&raw).map_err(|_| unfound())?;
    let image = image_to_check(&state, &caller, &id)
        .await
        .map_err(|_| unfound())?;
    permit(&state, &caller, "get_image_location", &image)
        .await
        .map_err(|e| match e.status {
            StatusCode::NOT_FOUND => unfound(),
            _ => e,
        })?;
    authorize_image(&state, &caller, "delete_image_location", &image)?;
    let url = match state.db.remove_store_location(&id, &store).await? {
        StoreRemoval::Removed(url) => url,
        StoreRemoval::Gone => return Err(unfound()),
        StoreRemoval::NotActive => {
            return Err(conflict(
                "It's not allowed to remove image data from store if image status is not 'active'"
                    .to_owned(),
            ));
        }
        StoreRemoval::OnlyOne => {
            return Err(forbidden(
                "Cannot delete image data from the only store containing it. Consider deleting the image instead."
                    .to_owned(),
            ));
        }
        StoreRemoval::NotInStore => {
            return Err(ApiError::not_found(format!(
                "Image {id} is not stored in store {store}."
            )));
        }
    };
    // The location is gone first, so no reader is sent to data that is being removed.
    blocking(move || {
        if let Err(e) = state.stores.delete(&url, Some(&store)) {
            warn!(image = %id, store = %store, error = %e, "image data not deleted from the store");
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// DELETE /v2/images/{id}: the record, its data, and its cached copy.
pub async fn delete(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = path_id(&raw)?;
    // Upstream's words for an image it cannot find to delete.
    let unfound = |e: ApiError| match e.status {
        StatusCode::NOT_FOUND => {
            ApiError::not_found(format!("Failed to find image {raw} to delete"))
        }
        _ => e,
    };
    let image = image_to_check(&state, &caller, &id)
        .await
        .map_err(unfound)?;
    permit(&state, &caller, "delete_image", &image)
        .await
        .map_err(unfound)?;
    if image.protected {
        return Err(forbidden(format!(
            "Image {id} is protected and cannot be deleted."
        )));
    }
    let locations = state.db.locations(&id).await?;
    if !state.db.delete(&id).await? {
        return Err(not_found(&raw));
    }
    // The record is gone first, so no reader is sent to data that is being removed. A
    // store that fails now leaves an orphan object behind, logged; the image is deleted.
    blocking(move || {
        for (url, store) in &locations {
            if let Err(e) = state.stores.delete(url, store.as_deref()) {
                warn!(image = %id, error = %e, "image data not deleted");
            }
        }
        // And what an upload that died left (a live one fails at its activation).
        if let Err(e) = state.stores.remove_partial(&id) {
            warn!(image = %id, error = %e, "partial upload data not deleted");
        }
        if let Some(cache) = &state.cache {
            cache.cache.delete(&id)?;
            cache.cache.dequeue(&id)?;
        }
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// PUT /v2/images/{id}/tags/{tag}
pub async fn add_tag(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((raw, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_tag(&tag)?;
    let id = raw.clone();
    edit_tags(state, caller, raw, move |tags| {
        tags.insert(tag);
        Ok(())
    })
    .await
    .map_err(|e| match e.status {
        // Upstream's words for a tag too many.
        StatusCode::PAYLOAD_TOO_LARGE => ApiError {
            status: e.status,
            message: format!("Image tag limit exceeded for image {id}: {}:", e.message),
        },
        _ => e,
    })
}

/// DELETE /v2/images/{id}/tags/{tag}
pub async fn remove_tag(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((raw, tag)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    edit_tags(state, caller, raw, move |tags| {
        if tags.remove(&tag) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("Tag {tag} not found")))
        }
    })
    .await
}

async fn edit_tags(
    state: Shared,
    caller: Caller,
    raw: String,
    change: impl FnOnce(&mut std::collections::BTreeSet<String>) -> Result<(), ApiError>
    + Send
    + 'static,
) -> Result<StatusCode, ApiError> {
    // Upstream's words for a tag's image it cannot find.
    let unfound = |e: ApiError| match e.status {
        StatusCode::NOT_FOUND => ApiError::not_found(format!("Image {raw} not found.")),
        _ => e,
    };
    visible_to(&state, &caller, &raw, "modify_image")
        .await
        .map_err(unfound)?;
    edit(&state, &raw, |image| {
        authorize_image(&state, &caller, "modify_image", image)?;
        change(&mut image.tags)
    })
    .await
    .map_err(unfound)?;
    Ok(StatusCode::NO_CONTENT)
}
