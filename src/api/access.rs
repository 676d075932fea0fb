//! Who is asking and what they may do: keystonemiddleware's `auth_token` in front of the
//! Image API, and Glance's image visibility and policies behind it.
//!
//! With a `keystone` flavor every request but the version documents and the health
//! check carries a token ([`authenticate`]); its project, user and roles become the
//! request's [`Caller`]. Without Keystone every caller is an administrator, as
//! upstream's unauthenticated context is, and no policy is consulted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;
use crate::cache::ImageId;
use crate::db::Image;
use crate::keystone::{AuthError, RequestContext};
use crate::policy::{Credentials, Forbidden, Lookup, Target};

/// Paths served without a token, as upstream's pipeline answers them before auth_token.
const OPEN_PATHS: &[&str] = &["/", "/versions", "/healthcheck"];

/// The message of a 503 when Keystone cannot be asked (keystonemiddleware's).
const KEYSTONE_UNAVAILABLE: &str = "The Keystone service is temporarily unavailable.";

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The validated token's context; None without Keystone.
    context: Option<Arc<RequestContext>>,
    /// Glance's `context.is_admin`: the `context_is_admin` rule, or always without
    /// Keystone.
    is_admin: bool,
}

impl Caller {
    /// The caller of glance-api without Keystone: an administrator with no project.
    pub fn unauthenticated() -> Self {
        Caller {
            context: None,
            is_admin: true,
        }
    }

    /// A caller from a validated token; `is_admin` as the policy's `context_is_admin`
    /// says.
    pub fn authenticated(context: Arc<RequestContext>, is_admin: bool) -> Self {
        Caller {
            context: Some(context),
            is_admin,
        }
    }

    /// The token's user.
    pub fn user_id(&self) -> Option<&str> {
        self.context.as_deref().map(|c| c.user_id.as_str())
    }

    /// The caller's project (upstream's `context.owner`).
    pub fn project(&self) -> Option<&str> {
        self.context
            .as_deref()
            .and_then(|c| c.project_id.as_deref())
    }

    /// Whether policies apply: only to callers with a token.
    pub fn is_checked(&self) -> bool {
        self.context.is_some()
    }

    /// Glance's `context.is_admin`.
    pub fn is_admin(&self) -> bool {
        self.is_admin
    }

    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.context
            .as_deref()
            .is_some_and(|c| c.roles.iter().any(|r| r.eq_ignore_ascii_case(role)))
    }

    fn credentials(&self) -> Credentials<'_> {
        let context = self.context.as_deref();
        Credentials {
            user_id: context.map(|c| c.user_id.as_str()),
            project_id: context.and_then(|c| c.project_id.as_deref()),
            roles: context.map_or(&[], |c| c.roles.as_slice()),
            is_admin: self.is_admin,
        }
    }
}

/// The request's token: `X-Auth-Token`, or the older `X-Storage-Token`, as
/// keystonemiddleware reads it.
fn user_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-auth-token")
        .or_else(|| headers.get("x-storage-token"))
        .and_then(|v| v.to_str().ok())
}

/// The caller of a request with `token`: the one [`Caller::unauthenticated`] without
/// Keystone, else the token's, validated.
pub async fn caller(state: &AppState, token: Option<&str>) -> Result<Caller, AuthError> {
    let Some(auth) = &state.auth else {
        return Ok(Caller::unauthenticated());
    };
    let context = auth.authenticate(token).await?;
    let is_admin = state.policy.is_admin(
        Some(context.user_id.as_str()),
        context.project_id.as_deref(),
        &context.roles,
    );
    Ok(Caller::authenticated(context, is_admin))
}

/// Middleware: puts the [`Caller`] into the request, or answers 401 (no token, or an
/// invalid one) or 503 (Keystone cannot be asked) without going further.
pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.auth.is_some() && OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match caller(&state, user_token(request.headers())).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => refusal(&state, &e),
    }
}

/// keystonemiddleware's answers: 401 with its JSON body and `WWW-Authenticate`, or 503.
fn refusal(state: &AppState, e: &AuthError) -> Response {
    let Some(auth) = &state.auth else {
        return ApiError::internal("a refusal without Keystone").into_response();
    };
    if matches!(e, AuthError::Unavailable(_)) {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: KEYSTONE_UNAVAILABLE.to_owned(),
        }
        .into_response();
    }
    let body = json!({"error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }});
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&auth.www_authenticate()) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The policy target of an existing image, as upstream's `ImageTarget` reads it: every
/// core attribute in Python's text forms (`None`, `True`, `False`), and over them no
/// extra property can stand in for one; the other keys are the extra properties.
/// `project_id` is the owner, `member_id` the caller's project when the image is shared
/// and the caller is not its owner (`None` otherwise). Values are read as a rule asks.
pub struct ImageTarget<'a> {
    image: &'a Image,
    member: Option<&'a str>,
}

/// The policy target of `image` for `caller`.
pub fn image_target<'a>(image: &'a Image, caller: &'a Caller) -> ImageTarget<'a> {
    let member = (image.visibility == "shared")
        .then(|| caller.project())
        .flatten()
        .filter(|project| image.owner.as_deref() != Some(*project));
    ImageTarget { image, member }
}

impl Lookup for ImageTarget<'_> {
    fn value(&self, key: &str) -> Option<Cow<'_, str>> {
        let image = self.image;
        fn text(v: Option<&str>) -> Cow<'_, str> {
            Cow::Borrowed(v.unwrap_or("None"))
        }
        let flag = |b: bool| Cow::Borrowed(if b { "True" } else { "False" });
        let number =
            |n: Option<i64>| n.map_or(Cow::Borrowed("None"), |n| Cow::Owned(n.to_string()));
        Some(match key {
            "id" => Cow::Borrowed(image.id.as_str()),
            "name" => text(image.name.as_deref()),
            "status" => Cow::Borrowed(image.status.as_str()),
            "visibility" => Cow::Borrowed(image.visibility.as_str()),
            "protected" => flag(image.protected),
            "os_hidden" => flag(image.os_hidden),
            "owner" | "project_id" => text(image.owner.as_deref()),
            "member" | "member_id" => text(self.member),
            "disk_format" => text(image.disk_format.as_deref()),
            "container_format" => text(image.container_format.as_deref()),
            "min_disk" => Cow::Owned(image.min_disk.to_string()),
            "min_ram" => Cow::Owned(image.min_ram.to_string()),
            "size" => number(image.size),
            "virtual_size" => number(image.virtual_size),
            "checksum" => text(image.checksum.as_deref()),
            "os_hash_algo" => text(image.os_hash_algo.as_deref()),
            "os_hash_value" => text(image.os_hash_value.as_deref()),
            "created_at" => Cow::Borrowed(image.created_at.as_str()),
            "updated_at" => Cow::Borrowed(image.updated_at.as_str()),
            property => {
                return image
                    .properties
                    .get(property)
                    .map(|v| Cow::Borrowed(v.as_str()));
            }
        })
    }
}

/// The target of an image being created, or of a listing: its owner and its visibility
/// (`private` unless given).
pub fn proposed_target(owner: Option<&str>, visibility: Option<&str>) -> Target {
    let mut target = BTreeMap::new();
    if let Some(owner) = owner {
        target.insert("project_id".to_owned(), owner.to_owned());
        target.insert("owner".to_owned(), owner.to_owned());
    }
    target.insert(
        "visibility".to_owned(),
        visibility.unwrap_or("private").to_owned(),
    );
    target
}

/// 403 with `message`.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: message.into(),
    }
}

/// 404 as webob answers a bare HTTPNotFound.
fn hidden() -> ApiError {
    ApiError::not_found("The resource could not be found.")
}

/// Checks `action` against `target`: 403 with the policy's message.
pub fn authorize(
    state: &AppState,
    caller: &Caller,
    action: &str,
    target: &dyn Lookup,
) -> Result<(), ApiError> {
    if !caller.is_checked() {
        return Ok(());
    }
    // Every rule of the Image API is project-scoped: upstream refuses a token without a
    // project (a domain or system scope) whatever its roles.
    if caller.project().is_none() {
        return Err(forbidden(
            Forbidden {
                action: action.to_owned(),
            }
            .to_string(),
        ));
    }
    state
        .policy
        .authorize(action, &caller.credentials(), target)
        .map_err(|e| forbidden(e.to_string()))
}

/// Checks `action` on an existing image as upstream's `ImageAPIPolicy` does: a refusal
/// is 404 when the caller may not even `get_image` it, 403 otherwise.
pub fn authorize_image(
    state: &AppState,
    caller: &Caller,
    action: &str,
    image: &Image,
) -> Result<(), ApiError> {
    let target = image_target(image, caller);
    match authorize(state, caller, action, &target) {
        Ok(()) => Ok(()),
        Err(_) if action == "get_image" => Err(hidden()),
        Err(e) => match authorize(state, caller, "get_image", &target) {
            Ok(()) => Err(e),
            Err(_) => Err(hidden()),
        },
    }
}

/// Whether `image` is visible to the caller (upstream's `is_image_visible`): to an
/// administrator; when it has no owner; when public or community; to its owner; and,
/// when shared, to a member of any status.
pub async fn visible(state: &AppState, caller: &Caller, image: &Image) -> Result<bool, ApiError> {
    if caller.is_admin() || image.owner.is_none() {
        return Ok(true);
    }
    if matches!(image.visibility.as_str(), "public" | "community") {
        return Ok(true);
    }
    let Some(project) = caller.project() else {
        return Ok(false);
    };
    if image.owner.as_deref() == Some(project) {
        return Ok(true);
    }
    if image.visibility == "shared" {
        return Ok(state.db.member(&image.id, project).await?.is_some());
    }
    Ok(false)
}

/// An image the caller may see, or 404 (`No image found with ID …`) as if there were none.
pub async fn visible_image(
    state: &AppState,
    caller: &Caller,
    id: &ImageId,
) -> Result<Image, ApiError> {
    let gone = || ApiError::not_found(format!("No image found with ID {id}"));
    let image = state.db.get(id).await?.ok_or_else(gone)?;
    if visible(state, caller, &image).await? {
        Ok(image)
    } else {
        Err(gone())
    }
}

/// `action` on an image the caller has looked up: 404 when it may not see it, else as
/// [`authorize_image`].
pub async fn permit(
    state: &AppState,
    caller: &Caller,
    action: &str,
    image: &Image,
) -> Result<(), ApiError> {
    if !caller.is_checked() {
        return Ok(());
    }
    if !visible(state, caller, image).await? {
        return Err(ApiError::not_found(format!(
            "No image found with ID {}",
            image.id
        )));
    }
    authorize_image(state, caller, action, image)
}

/// The rule upstream's cache API checks for a route.
fn cache_rule(method: &Method, path: &str) -> &'static str {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    match (method, path) {
        ("GET", "/v2/cache") => "cache_list",
        ("DELETE", "/v2/cache" | "/v2/cache/{image_id}") => "cache_delete",
        ("PUT", "/v2/cache/{image_id}") => "cache_image",
        ("GET", "/v2/cache/nodes/{image_id}") => "list_cached_nodes",
        ("POST", "/v2/cache/prune") => "cache_prune",
        ("POST", "/v2/cache/clean") => "cache_clean",
        // The legacy /v2/cached_images and /v2/queued_images.
        _ => "manage_image_cache",
    }
}

/// Middleware of the cache API's routes: the route's rule (upstream's
/// `CacheImageAPIPolicy`), checked against the image when the route names one. A
/// refusal is 403 with the policy's message.
pub async fn cache_policy(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request.extensions().get::<Caller>().cloned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let rule = cache_rule(request.method(), route);
    let image = path_image(request.uri().path())
        .filter(|_| matches!(rule, "cache_image" | "cache_delete"))
        .map(str::to_owned);
    match check_cache_request(&state, caller, rule, image).await {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn check_cache_request(
    state: &AppState,
    caller: Option<Caller>,
    rule: &str,
    image: Option<String>,
) -> Result<(), ApiError> {
    let Some(caller) = caller else {
        return Err(ApiError::internal("a cache request without a caller"));
    };
    if !caller.is_checked() {
        return Ok(());
    }
    // Upstream looks the image up first: for a queue an unknown (or invisible) one is
    // 404; a delete goes on without it, to remove what the cache holds.
    let Some(raw) = image else {
        return authorize(state, &caller, rule, &Target::new());
    };
    let found = match ImageId::parse(&raw) {
        Ok(id) => match visible_image(state, &caller, &id).await {
            Ok(image) => Some(image),
            Err(e) if e.status == StatusCode::NOT_FOUND => None,
            Err(e) => return Err(e),
        },
        Err(_) => None,
    };
    match found {
        Some(image) => authorize(state, &caller, rule, &image_target(&image, &caller)),
        None if rule == "cache_image" => {
            Err(ApiError::not_found(format!("Image {raw} not found.")))
        }
        None => authorize(state, &caller, rule, &Target::new()),
    }
}

/// The image id of `/v2/cache/{id}`.
fn path_image(path: &str) -> Option<&str> {
    path.strip_prefix("/v2/cache/")
        .filter(|id| !id.contains('/') && !matches!(*id, "prune" | "clean"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_routes_map_to_upstreams_rules() {
        assert_eq!(cache_rule(&Method::GET, "/v2/cache"), "cache_list");
        assert_eq!(cache_rule(&Method::DELETE, "/v2/cache"), "cache_delete");
        assert_eq!(
            cache_rule(&Method::DELETE, "/v2/cache/{image_id}"),
            "cache_delete"
        );
        assert_eq!(
            cache_rule(&Method::PUT, "/v2/cache/{image_id}"),
            "cache_image"
        );
        assert_eq!(cache_rule(&Method::POST, "/v2/cache/prune"), "cache_prune");
        assert_eq!(cache_rule(&Method::POST, "/v2/cache/clean"), "cache_clean");
        assert_eq!(
            cache_rule(&Method::GET, "/v2/cached_images"),
            "manage_image_cache"
        );
        assert_eq!(path_image("/v2/cache/abc"), Some("abc"));
        assert_eq!(path_image("/v2/cache/prune"), None);
        assert_eq!(path_image("/v2/cache/nodes/abc"), None);
    }
}
