//! `GET /v2/images`: upstream's filters, sort parameters, paging and links, read from the
//! query string into a [`ListQuery`]. Whatever upstream refuses with 400 is refused here
//! with the same words; nothing malformed turns into a silently empty list.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::{Date, DateTime};
use serde_json::{Value, json};

use super::access::{Caller, authorize, authorize_image, proposed_target};
use super::error::ApiError;
use super::images::image_json;
use super::state::AppState;
use crate::cache::ImageId;
use crate::db::{Cmp, Condition, ListQuery, SortDir, SortKey, Viewer};

/// Parameters that are not filters.
const NOT_FILTERS: &[&str] = &[
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "sort",
    "tag",
    "member_status",
];

/// Text columns that take `in:` and `eq:` (upstream's operator filters).
const OPERATOR_COLUMNS: &[&str] = &["name", "id", "status", "container_format", "disk_format"];
/// Text columns matched as they are.
const TEXT_COLUMNS: &[&str] = &["owner", "checksum", "os_hash_algo", "os_hash_value"];
/// Integer columns: exact, and with `_min` and `_max` as ranges.
const INT_COLUMNS: &[&str] = &["size", "virtual_size", "min_disk", "min_ram"];
/// Timestamp columns, with `gt:`, `gte:`, `lt:`, `lte:`, `eq:` and `neq:`.
const TIME_COLUMNS: &[&str] = &["created_at", "updated_at"];
/// Columns no listing can match on: every listed image is live.
const IGNORED: &[&str] = &["deleted", "deleted_at"];

/// GET /v2/images
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let mut first: HashMap<&str, &str> = HashMap::new();
    for (k, v) in &params {
        first.entry(k.as_str()).or_insert(v.as_str());
    }
    let mut query = ListQuery::new(state.settings.limit_default);
    scope(&mut query, &caller, &first)?;
    if let Some(limit) = first.get("limit") {
        query.limit = parse_limit(limit)?.min(state.settings.limit_max);
    }
    query.sort = parse_sort(&params)?;
    filters(&mut query, &params)?;
    authorize(
        &state,
        &caller,
        "get_images",
        &proposed_target(caller.project(), None),
    )?;
    if let Some(marker) = first.get("marker") {
        let not_found = || ApiError::bad_request(format!("No image found with ID {marker}"));
        let id = ImageId::parse(marker).map_err(|_| not_found())?;
        query.offset = state
            .db
            .offset_after(&query, &id)
            .await?
            .ok_or_else(not_found)?;
    }
    let (mut images, more) = state.db.list(&query).await?;
    // As upstream, a listed image the caller may not get_image is left out.
    if caller.is_checked() {
        images.retain(|image| authorize_image(&state, &caller, "get_image", image).is_ok());
    }
    let links = Links::new("/v2/images", &params);
    let mut body = json!({
        "images": images.iter().map(|i| image_json(&state, i)).collect::<Vec<_>>(),
        "schema": "/v2/schemas/images",
        "first": links.first(),
    });
    // As upstream, a full page links to the next one, which may be empty.
    if (more || images.len() == query.limit)
        && let Some(last) = images.last()
    {
        body["next"] = json!(links.next(&last.id.to_string()));
    }
    Ok(Json(body))
}

/// upstream's `_validate_limit`.
fn parse_limit(limit: &str) -> Result<usize, ApiError> {
    let n: i64 = limit
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request("limit param must be an integer"))?;
    usize::try_from(n).map_err(|_| ApiError::bad_request("limit param must be positive"))
}

/// Which images a listing may show the caller (upstream's `image_get_all`): everything
/// to an administrator; to others public, community, their own, and shared images their
/// project is a member of (`member_status`, default `accepted`). Without a `visibility`
/// filter, other projects' community images are left out.
fn scope(
    query: &mut ListQuery,
    caller: &Caller,
    first: &HashMap<&str, &str>,
) -> Result<(), ApiError> {
    let member_status = match first.get("member_status").copied().unwrap_or("accepted") {
        "all" => None,
        s @ ("accepted" | "pending" | "rejected") => Some(s.to_owned()),
        s => return Err(ApiError::bad_request(format!("Invalid status: {s}"))),
    };
    let viewer = Viewer {
        project: caller.project().map(str::to_owned),
        member_status,
    };
    // Without a token there is no project: no community image is listed unless asked
    // for, as upstream's listing for a context without an owner.
    if !first.contains_key("visibility") {
        query.hide_others_community = Some(viewer.clone());
    }
    if caller.is_checked() && !caller.is_admin() {
        query.viewer = Some(viewer);
    }
    Ok(())
}

/// The filters: every parameter that is not about paging, sorting or membership. As
/// upstream (`_make_conditions_from_filters`): the image's own columns by their rules,
/// anything else an extra property matched exactly.
fn filters(query: &mut ListQuery, params: &[(String, String)]) -> Result<(), ApiError> {
    // upstream reads the filters as a dict: the last value of a repeated name counts.
    let mut last: Vec<(&str, &str)> = Vec::new();
    for (k, v) in params {
        if k == "tag" {
            query.tags.push(v.trim().to_owned());
            continue;
        }
        if NOT_FILTERS.contains(&k.as_str()) {
            continue;
        }
        match last.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => last.push((k, v)),
        }
    }
    for (key, value) in last {
        filter(query, key, value)?;
    }
    Ok(())
}

fn filter(query: &mut ListQuery, key: &str, value: &str) -> Result<(), ApiError> {
    if let Some(column) = find(OPERATOR_COLUMNS, key) {
        let (op, operand) = split_op(value);
        let values = match op {
            "in" => split_in(operand)?,
            "eq" => vec![operand.to_owned()],
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Unable to filter by unknown operator '{op}'."
                )));
            }
        };
        query.conditions.push(Condition::Text(column, values));
    } else if let Some(column) = find(TIME_COLUMNS, key) {
        let (op, operand) = split_op(value);
        let time = parse_time(operand).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Bad \"{key}\" query filter format. Use ISO 8601 DateTime notation."
            ))
        })?;
        let cmp = Cmp::parse(op).ok_or_else(|| {
            ApiError::bad_request("Unable to filter on a unknown operator.".to_owned())
        })?;
        query.conditions.push(Condition::Time(column, cmp, time));
    } else if let Some(column) = find(INT_COLUMNS, key) {
        let n = value.trim().parse().map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid value '{value}' for parameter '{key}': it must be an integer."
            ))
        })?;
        query.conditions.push(Condition::Int(column, Cmp::Eq, n));
    } else if let Some((column, cmp)) = range(key) {
        let n = value.trim().parse().map_err(|_| {
            ApiError::bad_request("Unable to filter on a range with a non-numeric value.")
        })?;
        query.conditions.push(Condition::Int(column, cmp, n));
    } else if let Some(column) = find(TEXT_COLUMNS, key) {
        query
            .conditions
            .push(Condition::Text(column, vec![value.to_owned()]));
    } else {
        match key {
            "visibility" => match value {
                "all" => {}
                "public" | "private" | "shared" | "community" => query
                    .conditions
                    .push(Condition::Text("visibility", vec![value.to_owned()])),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid visibility value: {value}"
                    )));
                }
            },
            "os_hidden" => {
                let hidden = flag(key, value, &value.to_lowercase())?;
                query.include_hidden = hidden;
                if hidden {
                    query.conditions.push(Condition::Flag("os_hidden", true));
                }
            }
            "protected" => {
                let protected = flag(key, value, value)?;
                query
                    .conditions
                    .push(Condition::Flag("protected", protected));
            }
            "changes-since" => {
                return Err(ApiError::bad_request(
                    "The \"changes-since\" filter is no longer available on v2.",
                ));
            }
            _ if IGNORED.contains(&key) => {}
            _ if key.ends_with("_min") || key.ends_with("_max") => {
                return Err(ApiError::bad_request(format!(
                    "Unable to filter on a range: {key} names no numeric attribute (size, \
                     virtual_size, min_disk, min_ram)."
                )));
            }
            _ => query.properties.push((key.to_owned(), value.to_owned())),
        }
    }
    Ok(())
}

fn find(columns: &[&'static str], key: &str) -> Option<&'static str> {
    columns.iter().copied().find(|c| *c == key)
}

/// `size_min`, `min_ram_max`, …: a range on an integer column.
fn range(key: &str) -> Option<(&'static str, Cmp)> {
    let (column, cmp) = match key.strip_suffix("_min") {
        Some(column) => (column, Cmp::Gte),
        None => (key.strip_suffix("_max")?, Cmp::Lte),
    };
    Some((find(INT_COLUMNS, column)?, cmp))
}

/// `os_hidden` and `protected`: true or false, in upstream's words otherwise.
fn flag(key: &str, shown: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "Invalid value '{shown}' for '{key}' filter. Valid values are 'true' or 'false'."
        ))),
    }
}

/// upstream's `split_filter_op`: `op:operand`, or `eq` with the whole value, also when the
/// value is itself an ISO 8601 time (whose colons are no operator).
fn split_op(value: &str) -> (&str, &str) {
    match value.split_once(':') {
        Some((op, operand)) if parse_time(value).is_none() => (op, operand),
        _ => ("eq", value),
    }
}

/// An ISO 8601 date and time, as oslo's `parse_isotime` reads it (no offset is UTC; a
/// date alone is its midnight), written as Glance's columns hold times:
/// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC.
fn parse_time(value: &str) -> Option<String> {
    let text = value.trim().replacen(' ', "T", 1);
    let timestamp = text.parse::<Timestamp>().ok().or_else(|| {
        let civil = text.parse::<DateTime>().ok().or_else(|| {
            text.parse::<Date>()
                .ok()
                .map(|d| d.to_datetime(k8s_openapi::jiff::civil::Time::midnight()))
        })?;
        civil
            .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    })?;
    Some(format!(
        "{}.{:06}",
        timestamp.strftime("%Y-%m-%d %H:%M:%S"),
        timestamp.subsec_microsecond()
    ))
}

/// upstream's `split_filter_value_for_quotes`, after its `validate_quotes`: the values of
/// `in:a,"b,c",d`. A quoted value keeps its backslash escapes, as upstream's does.
fn split_in(list: &str) -> Result<Vec<String>, ApiError> {
    validate_quotes(list)?;
    let chars: Vec<char> = list.chars().collect();
    let mut values = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            if j < chars.len() {
                values.push(chars[i + 1..j].iter().collect());
                i = j + 1;
                if chars.get(i) == Some(&',') {
                    i += 1;
                }
                continue;
            }
        }
        if chars[i] == ',' {
            values.push(String::new());
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i] != ',' {
            i += 1;
        }
        values.push(chars[start..i].iter().collect());
        if i < chars.len() {
            i += 1;
        }
    }
    Ok(values)
}

/// upstream's `validate_quotes`: every quoted value stands between commas, and is closed.
fn validate_quotes(list: &str) -> Result<(), ApiError> {
    let chars: Vec<char> = list.chars().collect();
    let mut opening = true;
    for (i, &c) in chars.iter().enumerate() {
        if c != '"' || (i > 0 && chars[i - 1] == '\\') {
            continue;
        }
        if opening && i > 0 && chars[i - 1] != ',' {
            return Err(ApiError::bad_request(format!(
                "Invalid filter value {list}. There is no comma before opening quotation mark."
            )));
        }
        if !opening && i + 1 != chars.len() && chars[i + 1] != ',' {
            return Err(ApiError::bad_request(format!(
                "Invalid filter value {list}. There is no comma after closing quotation mark."
            )));
        }
        opening = !opening;
    }
    if !opening {
        return Err(ApiError::bad_request(format!(
            "Invalid filter value {list}. The quote is not closed."
        )));
    }
    Ok(())
}

/// The sort: `sort=key:dir,key2` or `sort_key=..&sort_dir=..` (repeatable), in
/// upstream's rules and words; `created_at` and `id` end it, so that the order is total,
/// in the one direction given, else descending.
fn parse_sort(params: &[(String, String)]) -> Result<Vec<(SortKey, SortDir)>, ApiError> {
    let key = |k: &str| {
        SortKey::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid sort key: {k}. It must be one of the following: {}.",
                SortKey::NAMES.join(", ")
            ))
        })
    };
    let dir = |d: &str| {
        SortDir::parse(d)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid sort direction: {d}")))
    };
    fn named<'a>(
        params: &'a [(String, String)],
        name: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.trim())
    }
    let (mut keys, mut dirs) = (Vec::new(), Vec::new());
    if let Some(sort) = named(params, "sort").next() {
        if named(params, "sort_key").next().is_some() || named(params, "sort_dir").next().is_some()
        {
            return Err(ApiError::bad_request(
                "Old and new sorting syntax cannot be combined",
            ));
        }
        for part in sort.split(',') {
            let (k, d) = part.split_once(':').unwrap_or((part, ""));
            keys.push(key(k.trim())?);
            dirs.push(if d.is_empty() {
                SortDir::Desc
            } else {
                dir(d.trim())?
            });
        }
    } else {
        for k in named(params, "sort_key") {
            keys.push(key(k)?);
        }
        for d in named(params, "sort_dir") {
            dirs.push(dir(d)?);
        }
        if dirs.len() > 1 && dirs.len() != keys.len() {
            return Err(ApiError::bad_request(
                "Number of sort dirs does not match the number of sort keys",
            ));
        }
    }
    if keys.is_empty() {
        keys.push(SortKey::CreatedAt);
    }
    let default = match dirs.as_slice() {
        [one] => *one,
        _ => SortDir::Desc,
    };
    let mut sort: Vec<(SortKey, SortDir)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, dirs.get(i).copied().unwrap_or(default)))
        .collect();
    for k in [SortKey::CreatedAt, SortKey::Id] {
        if !keys.contains(&k) {
            sort.push((k, default));
        }
    }
    Ok(sort)
}

/// The `first` and `next` links as upstream builds them: the request's parameters but
/// the marker, one value per name (the last given, as Python's `dict(request.params)`
/// keeps), form-encoded; `next` adds the page's last image as the marker.
pub(super) struct Links {
    base: &'static str,
    params: Vec<(String, String)>,
}

impl Links {
    /// The links of a listing at `base` (`/v2/images`, `/v2/tasks`).
    pub(super) fn new(base: &'static str, params: &[(String, String)]) -> Self {
        let mut once: Vec<(String, String)> = Vec::new();
        for (k, v) in params.iter().filter(|(k, _)| k != "marker") {
            match once.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.clone(),
                None => once.push((k.clone(), v.clone())),
            }
        }
        Self { base, params: once }
    }

    pub(super) fn first(&self) -> String {
        if self.params.is_empty() {
            self.base.to_owned()
        } else {
            format!("{}?{}", self.base, self.query())
        }
    }

    pub(super) fn next(&self, marker: &str) -> String {
        let query = self.query();
        let sep = if query.is_empty() { "" } else { "&" };
        format!("{}?{query}{sep}marker={}", self.base, encode(marker))
    }

    fn query(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Python's `quote_plus`: unreserved characters as they are, space as `+`.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn query_of(pairs: &[(&str, &str)]) -> Result<ListQuery, String> {
        let mut query = ListQuery::new(25);
        filters(&mut query, &params(pairs)).map_err(|e| e.message)?;
        Ok(query)
    }

    #[test]
    fn in_lists_split_as_upstream_does() {
        assert_eq!(split_in("a,b").unwrap(), ["a", "b"]);
        assert_eq!(split_in("a,,b").unwrap(), ["a", "", "b"]);
        assert_eq!(split_in("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(split_in("a,\"b\\\"c\"").unwrap(), ["a", "b\\\"c"]);
        assert!(
            split_in("a\"b\"")
                .unwrap_err()
                .message
                .contains("no comma before")
        );
        assert!(
            split_in("\"a\"b")
                .unwrap_err()
                .message
                .contains("no comma after")
        );
        assert!(split_in("\"a").unwrap_err().message.contains("not closed"));
    }

    #[test]
    fn operators_split_except_in_a_bare_time() {
        assert_eq!(split_op("in:a,b"), ("in", "a,b"));
        assert_eq!(split_op("plain"), ("eq", "plain"));
        assert_eq!(
            split_op("2024-01-02T03:04:05Z"),
            ("eq", "2024-01-02T03:04:05Z")
        );
        assert_eq!(
            split_op("gte:2024-01-02T03:04:05Z"),
            ("gte", "2024-01-02T03:04:05Z")
        );
    }

    #[test]
    fn times_are_read_as_iso_8601_and_written_as_the_columns_hold_them() {
        assert_eq!(
            parse_time("2024-01-02T03:04:05Z").unwrap(),
            "2024-01-02 03:04:05.000000"
        );
        assert_eq!(
            parse_time("2024-01-02T05:04:05.5+02:00").unwrap(),
            "2024-01-02 03:04:05.500000"
        );
        assert_eq!(
            parse_time("2024-01-02T03:04:05").unwrap(),
            "2024-01-02 03:04:05.000000"
        );
        assert_eq!(
            parse_time("2024-01-02").unwrap(),
            "2024-01-02 00:00:00.000000"
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn filters_become_conditions_on_their_columns() {
        let q = query_of(&[
            ("name", "in:a,\"b,c\""),
            ("size", "1024"),
            ("min_ram", "512"),
            ("size_min", "10"),
            ("checksum", "abc"),
            ("created_at", "gt:2024-01-02T03:04:05Z"),
            ("visibility", "all"),
            ("hw_disk_bus", "scsi"),
        ])
        .unwrap();
        assert_eq!(
            q.conditions,
            vec![
                Condition::Text("name", vec!["a".into(), "b,c".into()]),
                Condition::Int("size", Cmp::Eq, 1024),
                Condition::Int("min_ram", Cmp::Eq, 512),
                Condition::Int("size", Cmp::Gte, 10),
                Condition::Text("checksum", vec!["abc".into()]),
                Condition::Time("created_at", Cmp::Gt, "2024-01-02 03:04:05.000000".into()),
            ]
        );
        assert_eq!(q.properties, vec![("hw_disk_bus".into(), "scsi".into())]);
    }

    #[test]
    fn malformed_filters_are_refused_naming_what_is_wrong() {
        for (pairs, words) in [
            (vec![("name", "like:a")], "unknown operator 'like'"),
            (
                vec![("created_at", "gt:yesterday")],
                "Bad \"created_at\" query filter",
            ),
            (vec![("updated_at", "about:2024-01-02")], "unknown operator"),
            (vec![("size_min", "ten")], "non-numeric value"),
            (vec![("size", "big")], "'size'"),
            (
                vec![("visibility", "everyone")],
                "Invalid visibility value: everyone",
            ),
            (vec![("os_hidden", "maybe")], "'os_hidden' filter"),
            (vec![("protected", "yes")], "'protected' filter"),
            (vec![("changes-since", "2024-01-02")], "changes-since"),
            (vec![("name_min", "1")], "name_min"),
        ] {
            let err = query_of(&pairs).unwrap_err();
            assert!(err.contains(words), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn sort_parameters_follow_upstreams_rules() {
        use SortDir::{Asc, Desc};
        use SortKey::{CreatedAt, Id, Name, Size};
        let sort = |pairs: &[(&str, &str)]| parse_sort(&params(pairs)).map_err(|e| e.message);
        assert_eq!(sort(&[]).unwrap(), [(CreatedAt, Desc), (Id, Desc)]);
        assert_eq!(
            sort(&[("sort", "name:asc,size")]).unwrap(),
            [(Name, Asc), (Size, Desc), (CreatedAt, Desc), (Id, Desc)]
        );
        assert_eq!(
            sort(&[
                ("sort_key", "name"),
                ("sort_key", "size"),
                ("sort_dir", "asc")
            ])
            .unwrap(),
            [(Name, Asc), (Size, Asc), (CreatedAt, Asc), (Id, Asc)]
        );
        assert!(
            sort(&[("sort", "name"), ("sort_key", "size")])
                .unwrap_err()
                .contains("cannot be combined")
        );
        assert!(
            sort(&[("sort_key", "owner")])
                .unwrap_err()
                .contains("Invalid sort key: owner")
        );
        assert!(
            sort(&[("sort_dir", "up")])
                .unwrap_err()
                .contains("Invalid sort direction: up")
        );
        assert!(
            sort(&[
                ("sort_key", "name"),
                ("sort_dir", "asc"),
                ("sort_dir", "asc"),
                ("sort_dir", "asc")
            ])
            .unwrap_err()
            .contains("does not match")
        );
    }

    #[test]
    fn limits_are_non_negative_integers() {
        assert_eq!(parse_limit("5").unwrap(), 5);
        assert!(parse_limit("-1").unwrap_err().message.contains("positive"));
        assert!(parse_limit("x").unwrap_err().message.contains("integer"));
    }

    #[test]
    fn links_keep_the_query_and_add_the_marker() {
        let links = Links::new(
            "/v2/images",
            &params(&[
                ("name", "a b"),
                ("marker", "m"),
                ("limit", "2"),
                ("name", "c:d"),
            ]),
        );
        assert_eq!(links.first(), "/v2/images?name=c%3Ad&limit=2");
        assert_eq!(links.next("x"), "/v2/images?name=c%3Ad&limit=2&marker=x");
        assert_eq!(Links::new("/v2/tasks", &[]).next("x"), "/v2/tasks?marker=x");
    }
}
