//! The Glance CRD's schema, and a check that the server would keep every field.

use glance_operator::crd::Glance;
use kube::CustomResourceExt;
use serde_json::{Value, json};

/// The openAPIV3Schema of the generated CRD, as JSON.
pub fn crd_schema() -> Value {
    let crd = Glance::crd();
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema"),
    )
    .expect("json")
}

/// Asserts that every field of `value` is declared by `schema`, so the server keeps it.
pub fn assert_not_pruned(schema: &Value, value: &Value, path: &str) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        || schema.get("x-kubernetes-int-or-string") == Some(&json!(true))
    {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let sub = schema
                    .get("properties")
                    .and_then(|p| p.get(k))
                    .or_else(|| schema.get("additionalProperties"));
                match sub {
                    Some(sub) => assert_not_pruned(sub, v, &format!("{path}.{k}")),
                    None if path.is_empty()
                        && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) => {}
                    None => panic!("{path}.{k} is not in the schema and would be pruned"),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                assert_not_pruned(&schema["items"], v, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}
