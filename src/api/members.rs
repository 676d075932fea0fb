//! The image members API, `/v2/images/{id}/members`: the owner of a `shared` image offers
//! it to other projects, and each of them accepts or rejects it. Status codes and
//! messages are upstream Glance's.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::access::{Caller, authorize_image, forbidden};
use super::error::ApiError;
use super::images::path_id;
use super::state::AppState;
use crate::db::Image;
use crate::db::members::{Added, MEMBER_STATUSES, Member};

type Shared = Arc<AppState>;

/// The routes, merged into glance-api's router.
pub fn router(state: Shared) -> Router {
    use axum::routing::get;
    Router::new()
        .route("/v2/images/{id}/members", get(index).post(create))
        .route(
            "/v2/images/{id}/members/{member_id}",
            get(show).put(update).delete(remove),
        )
        .with_state(state)
}

/// A membership as the API shows it.
pub fn member_json(m: &Member) -> Value {
    json!({
        "created_at": m.created_at,
        "image_id": m.image_id,
        "member_id": m.member_id,
        "schema": "/v2/schemas/member",
        "status": m.status,
        "updated_at": m.updated_at,
    })
}

/// The image of a members request: 404 `Image … not found.` when it does not exist or
/// the caller may not see it.
async fn lookup(state: &AppState, caller: &Caller, raw: &str) -> Result<Image, ApiError> {
    let id = path_id(raw)?;
    super::access::visible_image(state, caller, &id)
        .await
        .map_err(|e| match e.status {
            StatusCode::NOT_FOUND => ApiError::not_found(format!("Image {raw} not found.")),
            _ => e,
        })
}

/// Upstream's check that only shared images have members; `refused` words the 403.
fn shared_only(image: &Image, refused: impl FnOnce(&str) -> ApiError) -> Result<(), ApiError> {
    const ONLY_SHARED: &str = "Only shared images have members.";
    if image.visibility == "shared" {
        Ok(())
    } else {
        Err(refused(ONLY_SHARED))
    }
}

/// Whether the caller sees `member`'s row: an administrator and the owner see every
/// member, a member only itself (upstream's `image_member_find`).
fn sees(caller: &Caller, image: &Image, member: &str) -> bool {
    !caller.is_checked()
        || caller.is_admin()
        || caller
            .project()
            .is_some_and(|p| image.owner.as_deref() == Some(p) || p == member)
}

/// The membership `member` of `image` as the caller may see it (`get_member`), or 404.
async fn lookup_member(
    state: &AppState,
    caller: &Caller,
    image: &Image,
    member: &str,
) -> Result<Member, ApiError> {
    authorize_image(state, caller, "get_member", image)?;
    let absent = || {
        ApiError::not_found(format!(
            "{member} not found in the member list of the image {}.",
            image.id
        ))
    };
    if !sees(caller, image, member) {
        return Err(absent());
    }
    state.db.member(&image.id, member).await?.ok_or_else(absent)
}

/// The named string field of a JSON object body; `missing` and `malformed` word the 400s.
fn body_field(body: &Bytes, key: &str, missing: &str, malformed: &str) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Body expected in request."));
    }
    let fields: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("Malformed JSON in request body."))?;
    match fields.get(key) {
        None => Err(ApiError::bad_request(missing)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_request(malformed)),
    }
}

/// GET /v2/images/{id}/members
async fn index(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let image = lookup(&state, &caller, &raw).await?;
    shared_only(&image, |why| {
        forbidden(format!(
            "Not allowed to list members for image {}: {why}",
            image.id
        ))
    })?;
    authorize_image(&state, &caller, "get_members", &image)?;
    let may_show = authorize_image(&state, &caller, "get_member", &image).is_ok();
    let members: Vec<Value> = state
        .db
        .members(&image.id)
        .await?
        .iter()
        .filter(|m| may_show && sees(&caller, &image, &m.member_id))
        .map(member_json)
        .collect();
    Ok(Json(
        json!({"members": members, "schema": "/v2/schemas/members"}),
    ))
}

/// POST /v2/images/{id}/members `{"member": "<project>"}`
async fn create(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // The body is read first, as upstream's deserializer does.
    let member = body_field(
        &body,
        "member",
        "Member to be added not specified",
        "Expected a member in the form: {\"member\": \"image_id\"}",
    )?;
    if member.trim().is_empty() {
        return Err(ApiError::bad_request("Member can't be empty"));
    }
    if member.chars().count() > 255 {
        return Err(ApiError::bad_request("member: at most 255 characters"));
    }
    let image = lookup(&state, &caller, &raw).await?;
    let refused = || forbidden(format!("Not allowed to create members for image {raw}."));
    shared_only(&image, |_| refused())?;
    authorize_image(&state, &caller, "add_member", &image)?;
    let quota = state.settings.image_member_quota;
    let limit = u64::try_from(quota).unwrap_or(u64::MAX);
    match state.db.add_member(&image.id, &member, limit).await? {
        Added::Member(m) => Ok(Json(member_json(&m))),
        Added::Duplicate => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: format!("Member {member} is duplicated for image {raw}"),
        }),
        Added::Full { limit } => Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Image member limit exceeded for image {raw}: The limit has been exceeded on the number of allowed image members for this image. Attempted: {}, Maximum: {limit}:",
                limit.saturating_add(1)
            ),
        }),
    }
}

/// GET /v2/images/{id}/members/{member_id}
async fn show(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((raw, member)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let image = lookup(&state, &caller, &raw).await?;
    shared_only(&image, |why| ApiError::not_found(why))?;
    match lookup_member(&state, &caller, &image, &member).await {
        Ok(m) => Ok(Json(member_json(&m))),
        // Upstream answers a refused lookup here as not found.
        Err(e) if e.status == StatusCode::FORBIDDEN => Err(ApiError::not_found(e.message)),
        Err(e) => Err(e),
    }
}

/// PUT /v2/images/{id}/members/{member_id} `{"status": "accepted"}`
async fn update(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((raw, member)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let status = body_field(
        &body,
        "status",
        "Status not specified",
        "Expected a status in the form: {\"status\": \"status\"}",
    )?;
    let image = lookup(&state, &caller, &raw).await?;
    shared_only(&image, |_| {
        forbidden(format!("Not allowed to update members for image {raw}."))
    })?;
    lookup_member(&state, &caller, &image, &member).await?;
    authorize_image(&state, &caller, "modify_member", &image)?;
    if !MEMBER_STATUSES.contains(&status.as_str()) {
        return Err(ApiError::bad_request(
            "Incorrect request: Status must be \"pending\", \"accepted\" or \"rejected\".",
        ));
    }
    state
        .db
        .set_member_status(&image.id, &member, &status)
        .await?
        .map(|m| Json(member_json(&m)))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{member} not found in the member list of the image {raw}."
            ))
        })
}

/// DELETE /v2/images/{id}/members/{member_id}
async fn remove(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((raw, member)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let image = lookup(&state, &caller, &raw).await?;
    shared_only(&image, |_| {
        forbidden(format!("Not allowed to delete members for image {raw}."))
    })?;
    lookup_member(&state, &caller, &image, &member).await?;
    authorize_image(&state, &caller, "delete_member", &image)?;
    if state.db.remove_member(&image.id, &member).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "{member} not found in the member list of the image {raw}."
        )))
    }
}
