//! The tasks API of Glance 33: `GET /v2/tasks` and `/v2/tasks/{id}` (behind
//! `tasks_api_access`, administrators by default, and `get_tasks`/`get_task`; others see
//! their project's tasks only), `GET /v2/images/{id}/tasks` (whoever may see the image),
//! and the task schemas. An import's task is made by `import::import`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::access::{Caller, authorize, permit, proposed_target};
use super::data::image_to_check;
use super::error::ApiError;
use super::image_list::Links;
use super::images::{create_image, path_id};
use super::import::start_web_download;
use super::request_id::RequestId;
use super::state::AppState;
use crate::db::{Task, TaskQuery};

type Shared = Arc<AppState>;

/// Task statuses.
const STATUSES: &[&str] = &["pending", "processing", "success", "failure"];
/// Task types.
const TYPES: &[&str] = &["import", "api_image_import", "location_import"];

/// A task as upstream shows it; `full` adds its input, result and message.
fn task_json(task: &Task, full: bool) -> Value {
    let mut view = json!({
        "id": task.id,
        "type": task.kind,
        "status": task.status,
        "owner": task.owner,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "self": format!("/v2/tasks/{}", task.id),
        "schema": "/v2/schemas/task",
    });
    if let Some(expires) = &task.expires_at {
        view["expires_at"] = json!(expires);
    }
    if full {
        let blob = |text: &Option<String>| {
            text.as_deref()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .unwrap_or(Value::Null)
        };
        view["input"] = blob(&task.input);
        view["result"] = blob(&task.result);
        view["message"] = json!(task.message);
        for (key, value) in [
            ("image_id", &task.image_id),
            ("request_id", &task.request_id),
            ("user_id", &task.user_id),
        ] {
            if let Some(value) = value {
                view[key] = json!(value);
            }
        }
    }
    view
}

/// A new task of `kind` on `image`, made by `caller`'s request `request_id` with `input`:
/// owned by the caller's project (else the image's owner), as upstream's task factory.
pub(super) fn image_task(
    kind: &str,
    status: &str,
    caller: &Caller,
    image: &crate::db::Image,
    request_id: Option<String>,
    input: &Value,
) -> Task {
    Task {
        id: crate::cache::ImageId::random().to_string(),
        kind: kind.to_owned(),
        status: status.to_owned(),
        owner: caller
            .project()
            .map(str::to_owned)
            .or_else(|| image.owner.clone())
            .unwrap_or_default(),
        expires_at: None,
        created_at: crate::db::now(),
        updated_at: crate::db::now(),
        image_id: Some(image.id.to_string()),
        request_id,
        user_id: caller.user_id().map(str::to_owned),
        input: Some(input.to_string()),
        result: None,
        message: String::new(),
    }
}

/// `tasks_api_access`, then `rule`.
fn access(state: &AppState, caller: &Caller, rule: &str) -> Result<(), ApiError> {
    let target = proposed_target(caller.project(), None);
    authorize(state, caller, "tasks_api_access", &target)?;
    authorize(state, caller, rule, &target)
}

/// Whose tasks the caller sees: every project's for an administrator (or without
/// Keystone), else its own project's.
fn owner_filter(caller: &Caller) -> Option<String> {
    (caller.is_checked() && !caller.is_admin())
        .then(|| caller.project().unwrap_or_default().to_owned())
}

/// GET /v2/tasks
pub async fn list(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    access(&state, &caller, "get_tasks")?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let ascending = match get("sort_dir").unwrap_or("desc") {
        "asc" => true,
        "desc" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid sort direction: {other}"
            )));
        }
    };
    let sort_key = match get("sort_key").unwrap_or("created_at") {
        "created_at" => "created_at",
        "updated_at" => "updated_at",
        "id" => "id",
        "type" => "type",
        "status" => "status",
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid sort key: {other}. It must be one of the following: created_at, updated_at, id, type, status."
            )));
        }
    };
    let status = get("status").map(str::to_owned);
    if let Some(s) = &status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!("Invalid status value: {s}")));
    }
    let kind = get("type").map(str::to_owned);
    if let Some(t) = &kind
        && !TYPES.contains(&t.as_str())
    {
        return Err(ApiError::bad_request(format!("Invalid type value: {t}")));
    }
    let limit = match get("limit") {
        None => state.settings.limit_default,
        Some(l) => {
            let n: i64 = l
                .parse()
                .map_err(|_| ApiError::bad_request("limit param must be an integer"))?;
            usize::try_from(n).map_err(|_| ApiError::bad_request("limit param must be positive"))?
        }
    }
    .min(state.settings.limit_max);
    let mut query = TaskQuery {
        owner: owner_filter(&caller),
        status,
        kind,
        sort_key,
        ascending,
        limit,
        offset: 0,
    };
    if let Some(marker) = get("marker") {
        if uuid::Uuid::parse_str(marker).is_err() {
            return Err(ApiError::bad_request("Invalid marker format"));
        }
        query.offset = state
            .db
            .task_offset_after(&query, marker)
            .await?
            .ok_or_else(|| ApiError::bad_request(format!("No task found with ID {marker}")))?;
    }
    let (tasks, more) = state.db.tasks(&query).await?;
    let links = Links::new("/v2/tasks", &params);
    let mut body = json!({
        "tasks": tasks.iter().map(|t| task_json(t, false)).collect::<Vec<_>>(),
        "first": links.first(),
        "schema": "/v2/schemas/tasks",
    });
    if more && let Some(last) = tasks.last() {
        body["next"] = json!(links.next(&last.id));
    }
    Ok(Json(body))
}

/// POST /v2/tasks: upstream's older `import` task, a web-download of `input.import_from`
/// into a new image made of `input.image_properties`. The URL goes through
/// `[import_filtering_opts]` first: one that does not pass is 400 at once (as Glance 33
/// answers), never a task that fetches it.
pub async fn create(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    request_id: Option<Extension<RequestId>>,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Json<Value>), ApiError> {
    access(&state, &caller, "add_task")?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Malformed JSON in request body: {e}")))?;
    for key in ["type", "input"] {
        if body.get(key).is_none() {
            return Err(ApiError::bad_request(format!("Task '{key}' is required")));
        }
    }
    let kind = body["type"].as_str().unwrap_or_default();
    if kind != "import" {
        return Err(ApiError::bad_request(format!(
            "Task type '{kind}' cannot be made through this API: use 'import', or POST /v2/images/{{id}}/import"
        )));
    }
    let input = body["input"]
        .as_object()
        .ok_or_else(|| ApiError::bad_request("Task 'input' must be an object"))?;
    let uri = input
        .get("import_from")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let filter = state.settings.import.filter.clone();
    let checked_uri = uri.clone();
    let checked = tokio::task::spawn_blocking(move || filter.check(&checked_uri))
        .await
        .map_err(ApiError::internal)?;
    if let Err(refused) = checked {
        return Err(ApiError::bad_request(format!(
            "The import_from URI is not accepted: {refused}"
        )));
    }
    let properties = input
        .get("image_properties")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let image = create_image(&state, &caller, properties.to_string().as_bytes()).await?;
    let task = Task {
        id: crate::cache::ImageId::random().to_string(),
        kind: "import".to_owned(),
        status: "pending".to_owned(),
        owner: caller.project().unwrap_or_default().to_owned(),
        expires_at: None,
        created_at: crate::db::now(),
        updated_at: crate::db::now(),
        image_id: None,
        request_id: request_id.map(|Extension(RequestId(r))| r),
        user_id: caller.user_id().map(str::to_owned),
        input: Some(body["input"].to_string()),
        result: None,
        message: String::new(),
    };
    state.db.insert_task(&task).await?;
    if !start_web_download(&state, &task.id, &image.id, &uri).await? {
        return Err(ApiError::internal(
            "the task's new image could not be claimed",
        ));
    }
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v2/tasks/{}", task.id)) {
        headers.insert(header::LOCATION, location);
    }
    let shown = state.db.task(&task.id).await?.unwrap_or(task);
    Ok((StatusCode::CREATED, headers, Json(task_json(&shown, true))))
}

/// GET /v2/tasks/{id}
pub async fn show(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    access(&state, &caller, "get_task")?;
    let not_found = || ApiError::not_found(format!("Task with the given ID {id} was not found"));
    let task = state.db.task(&id).await?.ok_or_else(not_found)?;
    if owner_filter(&caller).is_some_and(|owner| owner != task.owner) {
        return Err(not_found());
    }
    Ok(Json(task_json(&task, true)))
}

/// GET /v2/images/{id}/tasks: the image's tasks, to whoever may see the image.
pub async fn of_image(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(&raw)?;
    let image = image_to_check(&state, &caller, &id).await?;
    permit(&state, &caller, "get_image", &image)
        .await
        .map_err(|_| ApiError::not_found(format!("No image found with ID {id}")))?;
    let tasks = state.db.image_tasks(id.as_str()).await?;
    Ok(Json(json!({
        "tasks": tasks.iter().map(image_task_json).collect::<Vec<_>>(),
    })))
}

/// A task as upstream lists an image's tasks: its row's columns (live rows, so never
/// deleted), with no links.
fn image_task_json(task: &Task) -> Value {
    let mut view = task_json(task, true);
    if let Value::Object(map) = &mut view {
        map.remove("self");
        map.remove("schema");
        map.insert("expires_at".to_owned(), json!(task.expires_at));
        map.insert("deleted_at".to_owned(), Value::Null);
        map.insert("deleted".to_owned(), json!(false));
        for key in ["image_id", "request_id", "user_id"] {
            map.entry(key).or_insert(Value::Null);
        }
    }
    view
}

/// The task schema's properties; `full` with input, result and message.
fn task_properties(full: bool) -> Value {
    let mut properties = json!({
        "id": {"description": "An identifier for the task", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$", "type": "string"},
        "type": {"description": "The type of task represented by this content", "enum": TYPES, "type": "string"},
        "status": {"description": "The current status of this task", "enum": STATUSES, "type": "string"},
        "owner": {"description": "An identifier for the owner of this task", "type": "string"},
        "image_id": {"description": "Image associated with the task", "type": "string"},
        "request_id": {"description": "Human-readable informative request-id", "type": "string"},
        "user_id": {"description": "User associated with the task", "type": "string"},
        "expires_at": {"description": "Datetime when this resource would be subject to removal", "type": ["null", "string"]},
        "created_at": {"description": "Datetime when this resource was created", "type": "string"},
        "updated_at": {"description": "Datetime when this resource was updated", "type": "string"},
        "self": {"readOnly": true, "type": "string"},
        "schema": {"readOnly": true, "type": "string"},
    });
    if full {
        properties["input"] = json!({"description": "The parameters required by task, JSON blob", "type": ["null", "object"]});
        properties["result"] = json!({"description": "The result of current task, JSON blob", "type": ["null", "object"]});
        properties["message"] = json!({"description": "Human-readable informative message only included when appropriate (usually on failure)", "type": "string"});
    }
    properties
}

/// GET /v2/schemas/task
pub async fn schema_task() -> Json<Value> {
    Json(json!({"name": "task", "properties": task_properties(true)}))
}

/// GET /v2/schemas/tasks
pub async fn schema_tasks() -> Json<Value> {
    Json(json!({
        "name": "tasks",
        "properties": {
            "tasks": {"type": "array", "items": {"name": "task", "properties": task_properties(false)}},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "describedby", "href": "{schema}"},
        ],
    }))
}
