//! The metadata definition (metadefs) schemas, `GET /v2/schemas/metadefs/{name}`: the
//! documents Glance 33 publishes, kept as JSON files beside this module (they are the
//! API's contract, which clients such as the dashboard read).

use axum::Json;
use axum::extract::Path;
use serde_json::Value;

use super::error::ApiError;

/// Each schema's name in the path, and its document.
const SCHEMAS: &[(&str, &str)] = &[
    ("namespace", include_str!("metadef_schemas/namespace.json")),
    (
        "namespaces",
        include_str!("metadef_schemas/namespaces.json"),
    ),
    ("object", include_str!("metadef_schemas/object.json")),
    ("objects", include_str!("metadef_schemas/objects.json")),
    ("property", include_str!("metadef_schemas/property.json")),
    (
        "properties",
        include_str!("metadef_schemas/properties.json"),
    ),
    (
        "resource_type",
        include_str!("metadef_schemas/resource_type.json"),
    ),
    (
        "resource_types",
        include_str!("metadef_schemas/resource_types.json"),
    ),
    ("tag", include_str!("metadef_schemas/tag.json")),
    ("tags", include_str!("metadef_schemas/tags.json")),
];

/// The schema called `name`, if there is one.
pub fn schema(name: &str) -> Option<Value> {
    SCHEMAS
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, text)| serde_json::from_str(text).ok())
}

/// GET /v2/schemas/metadefs/{name}
pub async fn show(Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    schema(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("The resource could not be found."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_parses_and_bears_upstreams_name() {
        for (path, name) in [
            ("namespace", "namespace"),
            ("namespaces", "namespaces"),
            ("object", "object"),
            ("objects", "objects"),
            ("property", "property"),
            ("properties", "properties"),
            ("resource_type", "resource_type_association"),
            ("resource_types", "resource_type_associations"),
            ("tag", "tag"),
            ("tags", "tags"),
        ] {
            let doc = schema(path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(doc["name"], name, "{path}");
            assert!(doc["properties"].is_object(), "{path}");
        }
        assert!(schema("nothing").is_none());
    }
}
