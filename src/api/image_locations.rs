//! The `locations` of an image through PATCH, as upstream's `show_multiple_locations`
//! serves them: `add` at `/locations/-` or `/locations/N`, `replace` of `/locations`
//! (new metadata for the same URLs, or the first locations of a queued image), and
//! `remove` of `/locations/N`, with `validation_data` to fill a queued image's digests.
//!
//! A new URL is checked before the image's row is locked (the network is not waited on
//! under a lock): it must be an `http`/`https` URL that `[import_filtering_opts]`
//! allows, that an enabled `http` store reads, with data there (a HEAD gives a size
//! above 0), as upstream's `_check_location_uri` wants. Inside the edit, a URL that was
//! not checked is refused.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::state::{AppState, blocking};
use crate::db::{Image, Location};

/// A location operation of a patch.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum LocationOp {
    /// `add` at a position (None: `-`, the end).
    Add(Option<usize>, Value),
    /// `replace` of the whole list.
    Replace(Vec<Value>),
    /// `remove` at a position.
    Remove(usize),
}

fn forbidden(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: message.to_owned(),
    }
}

fn conflict(message: String) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        message,
    }
}

/// The location operation of a patch operation on `key` (`locations` or
/// `locations/…`), None when the key is another attribute. Paths deeper than upstream's
/// limits (add and remove: `/locations/X`; replace: `/locations`) are 400.
pub(super) fn parse(
    shown: bool,
    op: &str,
    key: &str,
    value: Option<&Value>,
) -> Result<Option<LocationOp>, ApiError> {
    let (root, rest) = match key.split_once('/') {
        Some((root, rest)) => (root, Some(rest)),
        None => (key, None),
    };
    if root != "locations" {
        return Ok(None);
    }

    let bad_path =
        || ApiError::bad_request(format!("Invalid JSON pointer for this resource: '/{key}'"));
    let position = |rest: &str| -> Result<Option<usize>, ApiError> {
        if rest == "-" {
            return Ok(None);
        }
        if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()) {
            return rest.parse().map(Some).map_err(|_| bad_path());
        }
        Err(ApiError::bad_request(format!(
            "Invalid position for {} a location.",
            if op == "add" { "adding" } else { "removing" }
        )))
    };
    let value = value.cloned().unwrap_or(Value::Null);
    let parsed = match (op, rest) {
        ("add", Some(rest)) => LocationOp::Add(position(rest)?, value),
        ("remove", Some(rest)) => match position(rest)? {
            Some(n) => LocationOp::Remove(n),
            None => {
                return Err(ApiError::bad_request(
                    "Invalid position for removing a location.",
                ));
            }
        },
        ("replace", None) => match value {
            Value::Array(list) if list.is_empty() => {
                return Err(ApiError::bad_request("Cannot set locations to empty list."));
            }
            Value::Array(list) => LocationOp::Replace(list),
            _ => {
                return Err(ApiError::bad_request(
                    "Provided object does not match schema 'image': locations: expected a list",
                ));
            }
        },
        _ => return Err(bad_path()),
    };
    // As upstream: the path and value are checked first (400), then whether locations
    // are shown at all (403).
    if !shown {
        return Err(forbidden(&format!(
            "It's not allowed to {op} locations if locations are invisible."
        )));
    }
    Ok(Some(parsed))
}

/// A location object of a request: `url` (a string of at most 255 characters) and
/// `metadata` (an object) required, `validation_data` optional, as upstream's schema.
fn location_of(value: &Value) -> Result<(String, Value, Map<String, Value>), ApiError> {
    let invalid = |why: &str| {
        ApiError::bad_request(format!(
            "Provided object does not match schema 'image': locations: {why}"
        ))
    };
    let Value::Object(map) = value else {
        return Err(invalid("a location must be an object"));
    };
    let url = match map.get("url") {
        Some(Value::String(url)) if url.chars().count() <= 255 => url.clone(),
        Some(Value::String(_)) => return Err(invalid("url: longer than 255 characters")),
        _ => return Err(invalid("'url' is a required string")),
    };
    let metadata = match map.get("metadata") {
        Some(meta @ Value::Object(_)) => meta.clone(),
        _ => return Err(invalid("'metadata' is a required object")),
    };
    let validation = match map.get("validation_data") {
        None => Map::new(),
        Some(Value::Object(v)) => {
            for (key, field) in v {
                let max = match key.as_str() {
                    "checksum" => 32,
                    "os_hash_algo" => 64,
                    "os_hash_value" => 128,
                    other => {
                        return Err(invalid(&format!(
                            "validation_data: Additional properties are not allowed ('{other}' was unexpected)"
                        )));
                    }
                };
                match field {
                    Value::String(s) if s.len() <= max => {}
                    _ => {
                        return Err(invalid(&format!(
                            "validation_data: {key}: a string of at most {max} characters"
                        )));
                    }
                }
            }
            if v.get("checksum")
                .and_then(Value::as_str)
                .is_some_and(|c| c.len() != 32)
            {
                return Err(invalid("validation_data: checksum: 32 characters"));
            }
            for required in ["os_hash_algo", "os_hash_value"] {
                if !v.contains_key(required) {
                    return Err(invalid(&format!(
                        "validation_data: '{required}' is a required property"
                    )));
                }
            }
            v.clone()
        }
        Some(_) => return Err(invalid("validation_data: an object")),
    };
    for key in map.keys() {
        if !matches!(key.as_str(), "url" | "metadata" | "validation_data") {
            return Err(invalid(&format!(
                "Additional properties are not allowed ('{key}' was unexpected)"
            )));
        }
    }
    Ok((url, metadata, validation))
}

/// The URLs of `ops` that `image` does not have yet, checked (filter, store, size): the
/// set of those that passed and the size the first of them reported.
pub(super) async fn check_new(
    state: &AppState,
    image: &Image,
    ops: &[LocationOp],
) -> Result<(BTreeSet<String>, Option<u64>), ApiError> {
    let mut new = Vec::new();
    for op in ops {
        let values: Vec<&Value> = match op {
            LocationOp::Add(_, v) => vec![v],
            LocationOp::Replace(list) => list.iter().collect(),
            LocationOp::Remove(_) => continue,
        };
        for v in values {
            let (url, _, _) = location_of(v)?;
            if !image.locations.iter().any(|l| l.url == url) && !new.contains(&url) {
                new.push(url);
            }
        }
    }
    let mut checked = BTreeSet::new();
    let mut size = None;
    for url in new {
        let invalid = || ApiError::bad_request("Invalid location");
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            return Err(invalid());
        }
        state
            .settings
            .import
            .filter
            .check(&url)
            .map_err(|_| invalid())?;
        let Some(store) = state.stores.http_store() else {
            return Err(invalid());
        };
        let store = store.clone();
        let head_url = url.clone();
        let found = blocking(move || Ok(store.size(&head_url)))
            .await?
            .map_err(|_| invalid())?;
        match found {
            Some(n) if n > 0 => {
                size.get_or_insert(n);
                checked.insert(url);
            }
            _ => return Err(invalid()),
        }
    }
    Ok((checked, size))
}

/// Applies one location operation to `image` (under its row lock), with upstream's
/// checks; `checked` holds the new URLs that passed [`check_new`], `size` the size
/// they reported. What a remove took away is pushed on `removed`.
pub(super) fn apply(
    state: &AppState,
    image: &mut Image,
    op: &LocationOp,
    checked: &BTreeSet<String>,
    size: Option<u64>,
    removed: &mut Vec<Location>,
) -> Result<(), ApiError> {
    let verb = match op {
        LocationOp::Add(..) => "add",
        LocationOp::Replace(_) => "replace",
        LocationOp::Remove(_) => "remove",
    };
    if !state.settings.show_multiple_locations {
        return Err(forbidden(&format!(
            "It's not allowed to {verb} locations if locations are invisible."
        )));
    }
    let allowed: &[&str] = match op {
        LocationOp::Remove(_) => &["active"],
        _ => &["active", "queued"],
    };
    if !allowed.contains(&image.status.as_str()) {
        return Err(conflict(format!(
            "It's not allowed to {verb} locations if image status is {}.",
            image.status
        )));
    }
    let unchecked = |url: &str| {
        if image.locations.iter().any(|l| l.url == url) || checked.contains(url) {
            Ok(())
        } else {
            Err(conflict(
                "The image's locations changed meanwhile; try again.".to_owned(),
            ))
        }
    };
    match op {
        LocationOp::Add(position, value) => {
            let (url, metadata, validation) = location_of(value)?;
            unchecked(&url)?;
            let fill = validation_data(image, &validation)?;
            if image.locations.iter().any(|l| l.url == url) {
                return Err(ApiError::bad_request(format!(
                    "The location {url} already exists"
                )));
            }
            let at = position.unwrap_or(image.locations.len());
            if at > image.locations.len() {
                return Err(ApiError::bad_request(
                    "Invalid position for adding a location.",
                ));
            }
            check_quota(state, image.locations.len() + 1)?;
            image.locations.insert(at, Location { url, metadata });
            activate(image, fill, size);
        }
        LocationOp::Replace(values) => {
            let mut parsed = Vec::new();
            let mut validations = Vec::new();
            for v in values {
                let (url, metadata, validation) = location_of(v)?;
                unchecked(&url)?;
                if parsed.iter().any(|l: &Location| l.url == url) {
                    return Err(ApiError::bad_request(format!(
                        "The location {url} already exists"
                    )));
                }
                parsed.push(Location { url, metadata });
                validations.push(validation);
            }
            let mut merged = Map::new();
            for validation in &validations {
                for (k, v) in validation {
                    if merged.get(k).is_some_and(|seen| seen != v) {
                        return Err(conflict(format!("Conflicting values for {k}")));
                    }
                    merged.insert(k.clone(), v.clone());
                }
            }
            let fill = validation_data(image, &merged)?;
            let mut old: Vec<&str> = image.locations.iter().map(|l| l.url.as_str()).collect();
            let mut new: Vec<&str> = parsed.iter().map(|l| l.url.as_str()).collect();
            old.sort_unstable();
            new.sort_unstable();
            if !old.is_empty() && old != new {
                return Err(ApiError::bad_request(format!(
                    "Original locations is not empty: {}",
                    old.join(", ")
                )));
            }
            check_quota(state, parsed.len())?;
            image.locations = parsed;
            activate(image, fill, size);
        }
        LocationOp::Remove(at) => {
            if image.locations.len() == 1 {
                return Err(forbidden("Cannot remove last location in the image."));
            }
            if *at >= image.locations.len() {
                return Err(ApiError::bad_request(
                    "Invalid position for removing a location.",
                ));
            }
            removed.push(image.locations.remove(*at));
        }
    }
    Ok(())
}

/// The bytes of a hex digest, None when `s` is not hex.
pub(super) fn hex_bytes(s: &str) -> Option<usize> {
    (s.len().is_multiple_of(2) && s.chars().all(|c| c.is_ascii_hexdigit())).then_some(s.len() / 2)
}

/// `image_location_quota`.
fn check_quota(state: &AppState, count: usize) -> Result<(), ApiError> {
    let quota = state.settings.image_location_quota;
    if quota >= 0 && i64::try_from(count).unwrap_or(i64::MAX) > quota {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Attempted: {count}, Maximum: {quota}: image_location_quota is exceeded"
            ),
        });
    }
    Ok(())
}

/// A queued image with a location is active, with the validation data's digests and
/// the size its location reported.
fn activate(image: &mut Image, fill: Map<String, Value>, size: Option<u64>) {
    if image.status != "queued" {
        return;
    }
    let text = |k: &str| fill.get(k).and_then(Value::as_str).map(str::to_owned);
    if let Some(c) = text("checksum") {
        image.checksum = Some(c);
    }
    if let Some(a) = text("os_hash_algo") {
        image.os_hash_algo = Some(a);
    }
    if let Some(v) = text("os_hash_value") {
        image.os_hash_value = Some(v);
    }
    if image.size.is_none()
        && let Some(n) = size.and_then(|n| i64::try_from(n).ok())
    {
        image.size = Some(n);
    }
    image.status = "active".to_owned();
}

/// Upstream's `_validate_validation_data`: values already set must match (409), new
/// ones only on a queued image, `checksum` an MD5, `os_hash_algo` sha512 (its
/// `hashing_algorithm`) and `os_hash_value` a digest of its size. The values to set.
fn validation_data(
    image: &Image,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    let mut new = Map::new();
    for (k, v) in given {
        let current = match k.as_str() {
            "checksum" => image.checksum.as_deref(),
            "os_hash_algo" => image.os_hash_algo.as_deref(),
            "os_hash_value" => image.os_hash_value.as_deref(),
            _ => None,
        };
        let v_str = v.as_str().unwrap_or_default();
        if current == Some(v_str) {
            continue;
        }
        if current.is_some() {
            return Err(conflict(format!(
                "{k} is already set with a different value"
            )));
        }
        new.insert(k.clone(), v.clone());
    }
    if new.is_empty() {
        return Ok(new);
    }
    if image.status != "queued" {
        let keys: Vec<&str> = new.keys().map(String::as_str).collect();
        return Err(conflict(format!(
            "New value(s) for {} may only be provided when image status is 'queued'",
            keys.join(", ")
        )));
    }

    if let Some(c) = new.get("checksum").and_then(Value::as_str)
        && hex_bytes(c) != Some(16)
    {
        return Err(conflict(format!(
            "checksum ({c}) is not the correct size for md5 (should be 16 bytes)"
        )));
    }
    let algo = new
        .get("os_hash_algo")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if algo != "sha512" {
        return Err(conflict(format!("os_hash_algo must be sha512, not {algo}")));
    }
    let value = new
        .get("os_hash_value")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if hex_bytes(value) != Some(64) {
        return Err(conflict(format!(
            "os_hash_value ({value}) is not the correct size for sha512 (should be 64 bytes)"
        )));
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_as_upstream_limits_them() {
        let loc = json!({"url": "http://x/y", "metadata": {}});
        assert_eq!(
            parse(true, "add", "locations/-", Some(&loc)).expect("add"),
            Some(LocationOp::Add(None, loc.clone()))
        );
        assert_eq!(
            parse(true, "add", "locations/2", Some(&loc)).expect("add"),
            Some(LocationOp::Add(Some(2), loc.clone()))
        );
        assert_eq!(
            parse(true, "remove", "locations/0", None).expect("remove"),
            Some(LocationOp::Remove(0))
        );
        assert_eq!(parse(true, "replace", "name", None).expect("other"), None);
        for (op, key, value) in [
            ("replace", "locations/0", Some(loc.clone())),
            ("add", "locations", Some(loc.clone())),
            ("remove", "locations/-", None),
            ("add", "locations/x", Some(loc.clone())),
            ("replace", "locations", Some(json!([]))),
            ("replace", "locations", Some(json!({"url": "x"}))),
        ] {
            let err = parse(true, op, key, value.as_ref()).expect_err(key);
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{op} {key}");
            // Without show_multiple_locations too: the path is checked first.
            let err = parse(false, op, key, value.as_ref()).expect_err(key);
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{op} {key}");
        }
        // A well-formed operation is 403 when locations are not shown.
        let err = parse(false, "add", "locations/-", Some(&loc)).expect_err("invisible");
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert_eq!(parse(false, "replace", "name", None).expect("other"), None);
    }

    #[test]
    fn location_objects_need_url_and_metadata() {
        assert!(location_of(&json!({"url": "http://x", "metadata": {}})).is_ok());
        for bad in [
            json!({"url": "http://x"}),
            json!({"metadata": {}}),
            json!({"url": 1, "metadata": {}}),
            json!({"url": "http://x", "metadata": {}, "extra": 1}),
            json!({"url": "http://x", "metadata": {}, "validation_data": {"os_hash_value": "ab"}}),
            json!({"url": "http://x", "metadata": {}, "validation_data": {"checksum": "ab", "os_hash_algo": "sha512", "os_hash_value": "ab"}}),
        ] {
            let err = location_of(&bad).expect_err("refused");
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn validation_data_fills_a_queued_image_and_must_match_a_set_one() {
        let mut image = Image::new(
            crate::cache::ImageId::parse("00000000-0000-0000-0000-000000000001").expect("id"),
            "2026-01-01T00:00:00Z",
        );
        let good = json!({"checksum": "1".repeat(32), "os_hash_algo": "sha512", "os_hash_value": "de".repeat(64)});
        let Value::Object(good) = good else {
            unreachable!()
        };
        assert_eq!(validation_data(&image, &good).expect("queued").len(), 3);
        let mut wrong_algo = good.clone();
        wrong_algo.insert("os_hash_algo".into(), json!("sha256"));
        assert_eq!(
            validation_data(&image, &wrong_algo)
                .expect_err("algo")
                .status,
            StatusCode::CONFLICT
        );
        let mut short = good.clone();
        short.insert("os_hash_value".into(), json!("dead"));
        assert_eq!(
            validation_data(&image, &short).expect_err("size").status,
            StatusCode::CONFLICT
        );
        image.status = "active".into();
        image.checksum = Some("1".repeat(32));
        image.os_hash_algo = Some("sha512".into());
        image.os_hash_value = Some("de".repeat(64));
        assert!(
            validation_data(&image, &good)
                .expect("same values")
                .is_empty()
        );
        let mut other = good.clone();
        other.insert("checksum".into(), json!("2".repeat(32)));
        assert_eq!(
            validation_data(&image, &other).expect_err("differs").status,
            StatusCode::CONFLICT
        );
    }
}
