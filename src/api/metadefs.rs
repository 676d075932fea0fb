//! The metadata definitions API of Glance 33 (`/v2/metadefs/*`): namespaces with their
//! objects, properties and tags, resource types and their associations. Reading follows
//! the namespace's visibility (public ones to every reader, private ones to their
//! project); writing is for administrators by default (`metadef_admin`). A namespace that
//! a caller may not see is 404, as upstream answers.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use super::access::{Caller, authorize, proposed_target};
use super::error::ApiError;
use super::state::AppState;
use crate::db::metadefs::{Association, Child, Kind, Namespace};
use crate::db::now;

type Shared = Arc<AppState>;

fn body_of(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "Malformed JSON in request body: {e}"
        ))),
    }
}

/// A string field of at most `max` characters (upstream's schema limits).
fn text_field(
    body: &Map<String, Value>,
    key: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) if required => Err(ApiError::bad_request(format!(
            "Provided object does not match schema: '{key}' is a required property"
        ))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(ApiError::bad_request(format!(
            "Provided object does not match schema: {key} is longer than {max} characters"
        ))),
        Some(other) => Err(ApiError::bad_request(format!(
            "Provided object does not match schema: {key}: {other} is not of type 'string'"
        ))),
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError::not_found(format!("Could not find {what}"))
}

fn conflict(message: String) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        message,
    }
}

/// The policy target of a namespace: its owner and visibility.
fn allowed(state: &AppState, caller: &Caller, rule: &str, ns: &Namespace) -> Result<(), ApiError> {
    authorize(
        state,
        caller,
        rule,
        &proposed_target(Some(&ns.owner), Some(&ns.visibility)),
    )
}

/// Namespace `name`, if the caller may see it (404 otherwise, as upstream), then `rule`.
async fn namespace_for(
    state: &AppState,
    caller: &Caller,
    name: &str,
    rule: &str,
) -> Result<Namespace, ApiError> {
    let unfound = || not_found(&format!("namespace {name}"));
    let ns = state.db.namespace(name).await?.ok_or_else(unfound)?;
    if caller.is_checked() {
        if !caller.is_admin() && ns.visibility != "public" && caller.project() != Some(&ns.owner) {
            return Err(unfound());
        }
        allowed(state, caller, "get_metadef_namespace", &ns).map_err(|_| unfound())?;
        if rule != "get_metadef_namespace" {
            allowed(state, caller, rule, &ns)?;
        }
    }
    Ok(ns)
}

fn namespace_json(ns: &Namespace) -> Value {
    let mut view = json!({
        "namespace": ns.namespace,
        "visibility": ns.visibility,
        "protected": ns.protected,
        "owner": ns.owner,
        "created_at": ns.created_at,
        "updated_at": ns.updated_at,
        "self": format!("/v2/metadefs/namespaces/{}", ns.namespace),
        "schema": "/v2/schemas/metadefs/namespace",
    });
    if let Some(d) = &ns.display_name {
        view["display_name"] = json!(d);
    }
    if let Some(d) = &ns.description {
        view["description"] = json!(d);
    }
    view
}

fn association_json(a: &Association) -> Value {
    let mut view = json!({"name": a.name, "created_at": a.created_at, "updated_at": a.updated_at});
    if let Some(p) = &a.prefix {
        view["prefix"] = json!(p);
    }
    if let Some(t) = &a.properties_target {
        view["properties_target"] = json!(t);
    }
    view
}

fn parse_json(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

fn object_json(ns: &str, o: &Child) -> Value {
    let mut view = json!({
        "name": o.name,
        "created_at": o.created_at,
        "updated_at": o.updated_at,
        "self": format!("/v2/metadefs/namespaces/{ns}/objects/{}", o.name),
        "schema": "/v2/schemas/metadefs/object",
    });
    if let Some(d) = &o.description {
        view["description"] = json!(d);
    }
    // As upstream, `required` is always there, empty when nothing is.
    let required = parse_json(o.required.as_deref());
    view["required"] = if required.is_null() {
        json!([])
    } else {
        required
    };
    let properties = parse_json(o.schema.as_deref());
    if properties.as_object().is_some_and(|p| !p.is_empty()) {
        view["properties"] = properties;
    }
    view
}

/// A property as upstream shows it alone: its definition with its name.
fn property_json(p: &Child) -> Value {
    let mut view = match parse_json(p.schema.as_deref()) {
        Value::Object(map) => Value::Object(map),
        _ => json!({}),
    };
    view["name"] = json!(p.name);
    view
}

fn tag_json(t: &Child) -> Value {
    json!({"name": t.name, "created_at": t.created_at, "updated_at": t.updated_at})
}

/// A namespace as `GET /v2/metadefs/namespaces/{namespace}` shows it, with its children.
async fn namespace_detail(state: &AppState, ns: &Namespace) -> Result<Value, ApiError> {
    let mut view = namespace_json(ns);
    let associations = state.db.associations(ns.id).await?;
    if !associations.is_empty() {
        view["resource_type_associations"] =
            Value::Array(associations.iter().map(association_json).collect());
    }
    let properties = state.db.children(Kind::Property, ns.id).await?;
    if !properties.is_empty() {
        let map: Map<String, Value> = properties
            .iter()
            .map(|p| (p.name.clone(), parse_json(p.schema.as_deref())))
            .collect();
        view["properties"] = Value::Object(map);
    }
    let objects = state.db.children(Kind::Object, ns.id).await?;
    if !objects.is_empty() {
        view["objects"] = Value::Array(
            objects
                .iter()
                .map(|o| object_json(&ns.namespace, o))
                .collect(),
        );
    }
    let tags = state.db.children(Kind::Tag, ns.id).await?;
    if !tags.is_empty() {
        view["tags"] = Value::Array(tags.iter().map(|t| json!({"name": t.name})).collect());
    }
    Ok(view)
}

/// GET /v2/metadefs/namespaces
pub async fn list_namespaces(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    axum::extract::Query(params): axum::extract::Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let target = proposed_target(caller.project(), None);
    authorize(&state, &caller, "get_metadef_namespaces", &target)?;
    let visibility = params
        .iter()
        .find(|(k, _)| k == "visibility")
        .map(|(_, v)| v.as_str());
    if let Some(v) = visibility
        && v != "public"
        && v != "private"
    {
        return Err(ApiError::bad_request(format!(
            "Invalid visibility value: {v}"
        )));
    }
    let owner =
        (caller.is_checked() && !caller.is_admin()).then(|| caller.project().unwrap_or_default());
    let resource_types: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "resource_types")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let mut listed = Vec::new();
    for ns in state.db.namespaces(owner, visibility).await? {
        let associations = state.db.associations(ns.id).await?;
        if !resource_types.is_empty()
            && !associations
                .iter()
                .any(|a| resource_types.contains(&a.name.as_str()))
        {
            continue;
        }
        let mut view = namespace_json(&ns);
        if !associations.is_empty() {
            view["resource_type_associations"] =
                Value::Array(associations.iter().map(association_json).collect());
        }
        listed.push(view);
    }
    Ok(Json(json!({
        "namespaces": listed,
        "first": "/v2/metadefs/namespaces",
        "schema": "/v2/schemas/metadefs/namespaces",
    })))
}

/// The namespace fields of a create or update body.
fn namespace_fields(body: &Map<String, Value>, ns: &mut Namespace) -> Result<(), ApiError> {
    ns.namespace = text_field(body, "namespace", 80, true)?.unwrap_or_default();
    ns.display_name = text_field(body, "display_name", 80, false)?;
    ns.description = text_field(body, "description", 500, false)?;
    if let Some(v) = text_field(body, "visibility", 32, false)? {
        if v != "public" && v != "private" {
            return Err(ApiError::bad_request(format!(
                "Provided object does not match schema 'namespace': '{v}' is not one of ['public', 'private']"
            )));
        }
        ns.visibility = v;
    }
    match body.get("protected") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => ns.protected = *b,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Provided object does not match schema 'namespace': protected: {other} is not of type 'boolean'"
            )));
        }
    }
    if let Some(owner) = text_field(body, "owner", 255, false)? {
        ns.owner = owner;
    }
    Ok(())
}

/// POST /v2/metadefs/namespaces: the namespace, with the resource type associations,
/// objects, properties and tags its body holds.
pub async fn create_namespace(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Json<Value>), ApiError> {
    let body = body_of(&body)?;
    let mut ns = Namespace {
        id: 0,
        namespace: String::new(),
        display_name: None,
        description: None,
        visibility: "private".to_owned(),
        protected: false,
        owner: caller.project().unwrap_or_default().to_owned(),
        created_at: now(),
        updated_at: now(),
    };
    namespace_fields(&body, &mut ns)?;
    allowed(&state, &caller, "add_metadef_namespace", &ns)?;
    let associations = match body.get("resource_type_associations") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|a| association_of(a.as_object().unwrap_or(&Map::new())))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let objects = match body.get("objects") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|o| object_of(o.as_object().unwrap_or(&Map::new())))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let properties = match body.get("properties") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, def)| {
                let mut def = def.as_object().cloned().unwrap_or_default();
                def.insert("name".to_owned(), json!(name));
                property_of(&def)
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let tags = match body.get("tags") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|t| tag_of(t.as_object().unwrap_or(&Map::new())))
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    if !state.db.insert_namespace(&ns).await? {
        return Err(conflict(format!(
            "A metadata definition namespace with name={} already exists.",
            ns.namespace
        )));
    }
    let created = state
        .db
        .namespace(&ns.namespace)
        .await?
        .ok_or_else(|| ApiError::internal("the new namespace is gone"))?;
    for a in &associations {
        state.db.associate(created.id, a).await?;
    }
    for (kind, children) in [
        (Kind::Object, &objects),
        (Kind::Property, &properties),
        (Kind::Tag, &tags),
    ] {
        if !children.is_empty() && !state.db.insert_children(kind, created.id, children).await? {
            state.db.delete_namespace(created.id).await?;
            return Err(conflict(
                "Duplicate names in the namespace's body".to_owned(),
            ));
        }
    }
    let mut headers = HeaderMap::new();
    if let Ok(location) =
        HeaderValue::from_str(&format!("/v2/metadefs/namespaces/{}", created.namespace))
    {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        Json(namespace_detail(&state, &created).await?),
    ))
}

/// GET /v2/metadefs/namespaces/{namespace}
pub async fn show_namespace(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace_for(&state, &caller, &name, "get_metadef_namespace").await?;
    Ok(Json(namespace_detail(&state, &ns).await?))
}

/// PUT /v2/metadefs/namespaces/{namespace}
pub async fn update_namespace(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut ns = namespace_for(&state, &caller, &name, "modify_metadef_namespace").await?;
    let body = body_of(&body)?;
    namespace_fields(&body, &mut ns)?;
    if !state.db.update_namespace(&ns).await? {
        return Err(conflict(format!(
            "A metadata definition namespace with name={} already exists.",
            ns.namespace
        )));
    }
    let updated = state
        .db
        .namespace(&ns.namespace)
        .await?
        .ok_or_else(|| not_found(&format!("namespace {}", ns.namespace)))?;
    Ok(Json(namespace_json(&updated)))
}

/// DELETE /v2/metadefs/namespaces/{namespace}
pub async fn delete_namespace(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let ns = namespace_for(&state, &caller, &name, "delete_metadef_namespace").await?;
    if ns.protected {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "Metadata definition namespace {name} is protected and cannot be deleted."
            ),
        });
    }
    state.db.delete_namespace(ns.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn association_of(body: &Map<String, Value>) -> Result<Association, ApiError> {
    Ok(Association {
        name: text_field(body, "name", 80, true)?.unwrap_or_default(),
        prefix: text_field(body, "prefix", 80, false)?,
        properties_target: text_field(body, "properties_target", 80, false)?,
        created_at: now(),
        updated_at: now(),
    })
}

fn object_of(body: &Map<String, Value>) -> Result<Child, ApiError> {
    let name = text_field(body, "name", 80, true)?.unwrap_or_default();
    let required = match body.get("required") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => {
            Some(Value::Array(list.clone()).to_string())
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "Provided object does not match schema 'object': required must be a list of strings",
            ));
        }
    };
    let properties = match body.get("properties") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(map)) => Value::Object(map.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Provided object does not match schema 'object': properties must be an object",
            ));
        }
    };
    Ok(Child {
        name,
        schema: Some(properties.to_string()),
        description: text_field(body, "description", 65535, false)?,
        required,
        created_at: now(),
        updated_at: now(),
    })
}

/// A property: its name, and its definition (title and type required, as upstream's
/// `PropertyType`), kept without the name.
fn property_of(body: &Map<String, Value>) -> Result<Child, ApiError> {
    let name = text_field(body, "name", 80, true)?.unwrap_or_default();
    text_field(body, "title", 65535, true)?;
    let kind = text_field(body, "type", 32, true)?.unwrap_or_default();
    const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];
    if !TYPES.contains(&kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Provided object does not match schema 'property': '{kind}' is not one of {TYPES:?}"
        )));
    }
    let mut def = body.clone();
    def.remove("name");
    Ok(Child {
        name,
        schema: Some(Value::Object(def).to_string()),
        description: None,
        required: None,
        created_at: now(),
        updated_at: now(),
    })
}

fn tag_of(body: &Map<String, Value>) -> Result<Child, ApiError> {
    Ok(Child {
        name: text_field(body, "name", 80, true)?.unwrap_or_default(),
        schema: None,
        description: None,
        required: None,
        created_at: now(),
        updated_at: now(),
    })
}

/// The rules of each kind of child: (get one, list, add, modify, delete one).
fn rules(kind: Kind) -> [&'static str; 5] {
    match kind {
        Kind::Object => [
            "get_metadef_object",
            "get_metadef_objects",
            "add_metadef_object",
            "modify_metadef_object",
            "delete_metadef_object",
        ],
        Kind::Property => [
            "get_metadef_property",
            "get_metadef_properties",
            "add_metadef_property",
            "modify_metadef_property",
            "remove_metadef_property",
        ],
        Kind::Tag => [
            "get_metadef_tag",
            "get_metadef_tags",
            "add_metadef_tag",
            "modify_metadef_tag",
            "delete_metadef_tag",
        ],
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Object => "object",
        Kind::Property => "property",
        Kind::Tag => "tag",
    }
}

fn child_json(kind: Kind, ns: &str, child: &Child) -> Value {
    match kind {
        Kind::Object => object_json(ns, child),
        Kind::Property => property_json(child),
        Kind::Tag => tag_json(child),
    }
}

fn child_of_body(kind: Kind, body: &Map<String, Value>) -> Result<Child, ApiError> {
    match kind {
        Kind::Object => object_of(body),
        // Upstream keeps the name in the definition of a property made or changed
        // through this API (not in those of a namespace's body or of a file), and
        // lists it from there.
        Kind::Property => {
            let mut child = property_of(body)?;
            if let Some(Value::Object(mut def)) = child
                .schema
                .as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
            {
                def.insert("name".to_owned(), json!(child.name));
                child.schema = Some(Value::Object(def).to_string());
            }
            Ok(child)
        }
        Kind::Tag => tag_of(body),
    }
}

async fn list_children(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    name: &str,
) -> Result<Value, ApiError> {
    let ns = namespace_for(state, caller, name, rules(kind)[1]).await?;
    let children = state.db.children(kind, ns.id).await?;
    Ok(match kind {
        Kind::Object => json!({
            "objects": children.iter().map(|o| object_json(&ns.namespace, o)).collect::<Vec<_>>(),
            "schema": "/v2/schemas/metadefs/objects",
        }),
        Kind::Property => {
            let map: Map<String, Value> = children
                .iter()
                .map(|p| (p.name.clone(), parse_json(p.schema.as_deref())))
                .collect();
            json!({"properties": map})
        }
        // As upstream, a list of tags names them only; a tag alone has its times too.
        Kind::Tag => {
            json!({"tags": children.iter().map(|t| json!({"name": t.name})).collect::<Vec<_>>()})
        }
    })
}

async fn create_child(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    name: &str,
    child: Child,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ns = namespace_for(state, caller, name, rules(kind)[2]).await?;
    if !state
        .db
        .insert_children(kind, ns.id, std::slice::from_ref(&child))
        .await?
    {
        return Err(conflict(format!(
            "A metadata definition {} with name={} already exists in namespace={}.",
            kind_name(kind),
            child.name,
            ns.namespace
        )));
    }
    let made = state
        .db
        .child(kind, ns.id, &child.name)
        .await?
        .ok_or_else(|| ApiError::internal("the new definition is gone"))?;
    let mut view = child_json(kind, &ns.namespace, &made);
    // As upstream, a new object shows `required` only when its body gave it.
    if kind == Kind::Object
        && made.required.is_none()
        && let Value::Object(map) = &mut view
    {
        map.remove("required");
    }
    Ok((StatusCode::CREATED, Json(view)))
}

async fn show_child(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    name: &str,
    child: &str,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace_for(state, caller, name, rules(kind)[0]).await?;
    let found =
        state.db.child(kind, ns.id, child).await?.ok_or_else(|| {
            not_found(&format!("{} {child} in namespace {name}", kind_name(kind)))
        })?;
    Ok(Json(child_json(kind, &ns.namespace, &found)))
}

async fn update_child(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    name: &str,
    old: &str,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let ns = namespace_for(state, caller, name, rules(kind)[3]).await?;
    let body = body_of(body)?;
    let new = child_of_body(kind, &body)?;
    match state.db.update_child(kind, ns.id, old, &new).await? {
        None => Err(not_found(&format!(
            "{} {old} in namespace {name}",
            kind_name(kind)
        ))),
        Some(false) => Err(conflict(format!(
            "A metadata definition {} with name={} already exists in namespace={}.",
            kind_name(kind),
            new.name,
            ns.namespace
        ))),
        Some(true) => {
            let saved = state
                .db
                .child(kind, ns.id, &new.name)
                .await?
                .ok_or_else(|| not_found(&new.name))?;
            Ok(Json(child_json(kind, &ns.namespace, &saved)))
        }
    }
}

async fn delete_child(
    state: &AppState,
    caller: &Caller,
    kind: Kind,
    name: &str,
    child: Option<&str>,
) -> Result<StatusCode, ApiError> {
    let rule = match (kind, child) {
        (Kind::Tag, None) => "delete_metadef_tags",
        (_, None) => "modify_metadef_namespace",
        _ => rules(kind)[4],
    };
    let ns = namespace_for(state, caller, name, rule).await?;
    if ns.protected && child.is_none() {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("Namespace {name} is protected and cannot be changed."),
        });
    }
    let n = state.db.delete_children(kind, ns.id, child).await?;
    if n == 0
        && let Some(child) = child
    {
        return Err(not_found(&format!(
            "{} {child} in namespace {name}",
            kind_name(kind)
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

macro_rules! child_routes {
    ($kind:expr, $list:ident, $show:ident, $update:ident, $delete:ident, $delete_all:ident) => {
        /// GET /v2/metadefs/namespaces/{namespace}/… (the list)
        pub async fn $list(
            State(state): State<Shared>,
            Extension(caller): Extension<Caller>,
            Path(name): Path<String>,
        ) -> Result<Json<Value>, ApiError> {
            Ok(Json(list_children(&state, &caller, $kind, &name).await?))
        }

        /// GET /v2/metadefs/namespaces/{namespace}/…/{name}
        pub async fn $show(
            State(state): State<Shared>,
            Extension(caller): Extension<Caller>,
            Path((name, child)): Path<(String, String)>,
        ) -> Result<Json<Value>, ApiError> {
            show_child(&state, &caller, $kind, &name, &child).await
        }

        /// PUT /v2/metadefs/namespaces/{namespace}/…/{name}
        pub async fn $update(
            State(state): State<Shared>,
            Extension(caller): Extension<Caller>,
            Path((name, child)): Path<(String, String)>,
            body: Bytes,
        ) -> Result<Json<Value>, ApiError> {
            update_child(&state, &caller, $kind, &name, &child, &body).await
        }

        /// DELETE /v2/metadefs/namespaces/{namespace}/…/{name}
        pub async fn $delete(
            State(state): State<Shared>,
            Extension(caller): Extension<Caller>,
            Path((name, child)): Path<(String, String)>,
        ) -> Result<StatusCode, ApiError> {
            delete_child(&state, &caller, $kind, &name, Some(&child)).await
        }

        /// DELETE /v2/metadefs/namespaces/{namespace}/… (all of them)
        pub async fn $delete_all(
            State(state): State<Shared>,
            Extension(caller): Extension<Caller>,
            Path(name): Path<String>,
        ) -> Result<StatusCode, ApiError> {
            delete_child(&state, &caller, $kind, &name, None).await
        }
    };
}

child_routes!(
    Kind::Object,
    list_objects,
    show_object,
    update_object,
    delete_object,
    delete_objects
);
child_routes!(
    Kind::Property,
    list_properties,
    show_property,
    update_property,
    delete_property,
    delete_properties
);
child_routes!(
    Kind::Tag,
    list_tags,
    show_tag,
    update_tag,
    delete_tag,
    delete_tags
);

/// POST /v2/metadefs/namespaces/{namespace}/objects
pub async fn create_object(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let object = object_of(&body_of(&body)?)?;
    create_child(&state, &caller, Kind::Object, &name, object).await
}

/// POST /v2/metadefs/namespaces/{namespace}/properties
pub async fn create_property(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let property = child_of_body(Kind::Property, &body_of(&body)?)?;
    create_child(&state, &caller, Kind::Property, &name, property).await
}

/// POST /v2/metadefs/namespaces/{namespace}/tags/{tag}: one tag, named by the path.
pub async fn create_tag(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((name, tag)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut body = Map::new();
    body.insert("name".to_owned(), json!(tag));
    create_child(&state, &caller, Kind::Tag, &name, tag_of(&body)?).await
}

/// POST /v2/metadefs/namespaces/{namespace}/tags: several tags, which replace the
/// namespace's tags unless `X-Openstack-Append: True`.
pub async fn create_tags(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ns = namespace_for(&state, &caller, &name, "add_metadef_tags").await?;
    let body = body_of(&body)?;
    let tags = match body.get("tags") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|t| tag_of(t.as_object().unwrap_or(&Map::new())))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(ApiError::bad_request("'tags' is a required property")),
    };
    let mut names: Vec<&str> = tags.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(conflict("Duplicate tag names in the request".to_owned()));
    }
    let append = headers
        .get("x-openstack-append")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !append {
        state.db.delete_children(Kind::Tag, ns.id, None).await?;
    }
    if !state.db.insert_children(Kind::Tag, ns.id, &tags).await? {
        return Err(conflict(format!(
            "A metadata tag already exists in namespace={}",
            ns.namespace
        )));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"tags": tags.iter().map(|t| json!({"name": t.name})).collect::<Vec<_>>()})),
    ))
}

/// GET /v2/metadefs/resource_types
pub async fn list_resource_types(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let target = proposed_target(caller.project(), Some("public"));
    authorize(&state, &caller, "list_metadef_resource_types", &target)?;
    let types = state.db.resource_types().await?;
    Ok(Json(json!({
        "resource_types": types
            .iter()
            .map(|(name, created, updated)| json!({"name": name, "created_at": created, "updated_at": updated}))
            .collect::<Vec<_>>(),
    })))
}

/// GET /v2/metadefs/namespaces/{namespace}/resource_types
pub async fn list_associations(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ns = namespace_for(&state, &caller, &name, "get_metadef_resource_type").await?;
    let associations = state.db.associations(ns.id).await?;
    Ok(Json(json!({
        "resource_type_associations": associations.iter().map(association_json).collect::<Vec<_>>(),
    })))
}

/// POST /v2/metadefs/namespaces/{namespace}/resource_types
pub async fn associate(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ns = namespace_for(
        &state,
        &caller,
        &name,
        "add_metadef_resource_type_association",
    )
    .await?;
    let association = association_of(&body_of(&body)?)?;
    if !state.db.associate(ns.id, &association).await? {
        return Err(conflict(format!(
            "The metadata definition resource-type association of resource-type={} to namespace={} already exists.",
            association.name, ns.namespace
        )));
    }
    let made = state
        .db
        .associations(ns.id)
        .await?
        .into_iter()
        .find(|a| a.name == association.name)
        .ok_or_else(|| ApiError::internal("the new association is gone"))?;
    Ok((StatusCode::CREATED, Json(association_json(&made))))
}

/// DELETE /v2/metadefs/namespaces/{namespace}/resource_types/{resource_type}
pub async fn dissociate(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((name, resource_type)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ns = namespace_for(
        &state,
        &caller,
        &name,
        "remove_metadef_resource_type_association",
    )
    .await?;
    if ns.protected {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!("Namespace {name} is protected and cannot be changed."),
        });
    }
    if !state.db.dissociate(ns.id, &resource_type).await? {
        return Err(not_found(&format!(
            "resource type {resource_type} associated with namespace {name}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}
