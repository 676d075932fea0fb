//! The README's configuration reference is checked against the generated CRD.

mod common;

use std::collections::BTreeMap;

use common::schema::crd_schema;
use glance_operator::crd::rules;
use serde_json::Value;

/// spec field paths of the CRD, with their defaults, down to where the API's own types
/// begin (resources, nodeSelector and tolerations are Kubernetes types).
fn crd_fields(schema: &Value, path: &str, out: &mut BTreeMap<String, Option<String>>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        let field = format!("{path}.{name}");
        let ours = prop.get("properties").is_some() && !["resources"].contains(&name.as_str());
        if ours {
            crd_fields(prop, &field, out);
        } else {
            let default = prop.get("default").map(|d| match d {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            out.insert(field, default);
        }
    }
}

/// The README's "Configuration reference" section.
fn reference_section() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    readme
        .split("## Configuration reference")
        .nth(1)
        .expect("section")
        .split("\n## ")
        .next()
        .unwrap_or("")
        .to_owned()
}

fn readme_fields() -> BTreeMap<String, Option<String>> {
    reference_section()
        .lines()
        .filter(|l| l.starts_with("| `spec."))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let field = cells[1].trim_matches('`').to_owned();
            let default = cells[2];
            let default = default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .map(str::to_owned);
            (field, default)
        })
        .collect()
}

#[test]
fn the_configuration_reference_matches_the_crd() {
    let mut crd = BTreeMap::new();
    crd_fields(&crd_schema()["properties"]["spec"], "spec", &mut crd);
    assert_eq!(readme_fields(), crd, "README table (left) vs CRD (right)");
    assert_eq!(crd.len(), 26);
}

#[test]
fn the_reference_states_the_limits_the_rules_enforce() {
    // Joined into one line: the paragraph wraps anywhere.
    let section = reference_section()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let most = rules::name_max(1);
    let fewer = rules::name_max(rules::REPLICAS_MAX);
    assert_eq!((most, fewer), (36, 35));
    for stated in [
        format!("longer than {most} characters, {fewer} with more than 10 replicas"),
        format!("replicas above {}", rules::REPLICAS_MAX),
        format!("at most {}", rules::REPLICAS_MAX),
        "`<name>-cache-cleaner-<replica>`".to_owned(),
        "StatefulSet".to_owned(),
    ] {
        assert!(section.contains(&stated), "the reference states {stated:?}");
    }
    // Several replicas no longer need a ReadWriteMany cache: each has its own volume.
    assert!(
        !section.contains("`ReadWriteMany` for several replicas"),
        "stale accessMode row"
    );
}
