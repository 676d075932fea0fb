//! The generated CRD: freshness of crds/, exact CEL rules, CEL evaluated locally,
//! defaults, descriptions, and no field the server would prune.

mod common;

use common::schema::{assert_not_pruned, crd_schema as schema};
use glance_operator::crd::{Glance, rules};
use kube::CustomResourceExt;
use kube::core::cel::{Validator, apply_defaults, compile_schema};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

#[test]
fn crds_directory_is_what_crdgen_prints() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/glance.yaml");
    let on_disk = std::fs::read_to_string(path).expect("crds/glance.yaml exists");
    let generated = serde_yaml::to_string(&Glance::crd()).expect("yaml");
    assert!(
        on_disk == generated,
        "crds/glance.yaml is stale: run `cargo run --bin crdgen > crds/glance.yaml`"
    );
}

/// Every x-kubernetes-validations entry as (path, rule, message).
fn collect_rules(schema: &Value, path: &str, out: &mut Vec<(String, String, String)>) {
    if let Some(list) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in list {
            out.push((
                path.to_owned(),
                r["rule"].as_str().unwrap_or_default().to_owned(),
                r["message"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            collect_rules(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = schema.get("items") {
        collect_rules(items, &format!("{path}[]"), out);
    }
}

#[test]
fn cel_rules_are_exactly_the_forms_the_server_compiles() {
    let mut found = Vec::new();
    collect_rules(&schema(), "", &mut found);
    let expected: Vec<(String, String, String)> = [
        ("", rules::NAME_LENGTH, rules::NAME_LENGTH_MESSAGE),
        ("", rules::NAME_FORMAT, rules::NAME_FORMAT_MESSAGE),
        (
            ".spec",
            rules::REPLICAS_NEED_DATABASE,
            rules::REPLICAS_NEED_DATABASE_MESSAGE,
        ),
        (
            ".spec",
            rules::REPLICAS_NEED_SHARED_CACHE,
            rules::REPLICAS_NEED_SHARED_CACHE_MESSAGE,
        ),
        (
            ".spec.customServiceConfigSecrets",
            rules::CONFIG_SECRET_NAMES,
            rules::CONFIG_SECRET_NAMES_MESSAGE,
        ),
        (
            ".spec.customServiceConfigSecrets",
            rules::CONFIG_SECRETS_UNIQUE,
            rules::CONFIG_SECRETS_UNIQUE_MESSAGE,
        ),
        (
            ".spec.imageCache.cleanerSchedule",
            rules::SCHEDULE,
            rules::SCHEDULE_MESSAGE,
        ),
        (
            ".spec.imageCache.prunerSchedule",
            rules::SCHEDULE,
            rules::SCHEDULE_MESSAGE,
        ),
        (
            ".spec.imageCacheSize",
            rules::CACHE_SIZE,
            rules::CACHE_SIZE_MESSAGE,
        ),
        (
            ".spec.storageRequest",
            rules::STORAGE_REQUEST,
            rules::STORAGE_REQUEST_MESSAGE,
        ),
    ]
    .into_iter()
    .map(|(p, r, m)| (p.to_owned(), r.to_owned(), m.to_owned()))
    .collect();
    assert_eq!(found, expected);

    // The text itself, pinned: local CEL does not type-check, so only these forms are known good.
    assert_eq!(
        rules::CACHE_SIZE,
        "self == '' || (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))"
    );
    assert_eq!(
        rules::STORAGE_REQUEST,
        "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))"
    );
    assert_eq!(rules::NAME_LENGTH, "self.metadata.name.size() <= 38");
    assert_eq!(rules::NAME_MAX, 38);
    assert_eq!(
        rules::SCHEDULE,
        r"self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\\S+( +\\S+){4})$')"
    );
    assert_eq!(
        rules::CONFIG_SECRET_NAMES,
        "self.all(s, s.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))"
    );
    assert_eq!(
        rules::CONFIG_SECRETS_UNIQUE,
        "self.all(s, self.exists_one(t, t == s))"
    );
    // The list and its entries are bounded, so the server can estimate the rules' cost.
    let list = &schema()["properties"]["spec"]["properties"]["customServiceConfigSecrets"];
    assert_eq!(list["maxItems"], json!(16));
    assert_eq!(rules::CONFIG_SECRETS_MAX, 16);
    assert_eq!(list["items"], json!({"type": "string", "maxLength": 253}));
    for (_, rule, message) in &found {
        assert!(
            !rule.contains(".isQuantity()") && !rule.contains(".sign()"),
            "{rule}"
        );
        assert!(
            message.len() > 20,
            "a message a person understands: {message}"
        );
    }
    let compiled = compile_schema(&schema());
    assert!(
        !compiled.has_errors(),
        "{:?}",
        compiled.compilation_errors()
    );
}

fn glance(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "glance.openstack.org/v1beta1",
        "kind": "Glance",
        "metadata": {"name": name, "namespace": "openstack"},
        "spec": spec,
    })
}

fn messages(object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn seed_spec() -> Value {
    json!({
        "customServiceConfig": "[DEFAULT]\ndebug = true\n",
        "databaseInstance": "openstack",
        "storageClass": "",
        "imageCacheSize": "10G",
        "storageRequest": "10G",
        "glanceAPI": {},
    })
}

#[test]
fn cel_accepts_the_seed_example_and_the_samples() {
    for spec in [
        seed_spec(),
        json!({}),
        json!({"imageCacheSize": ""}),
        json!({"imageCacheSize": "+10G"}),
        json!({"imageCacheSize": "1e3"}),
        json!({"imageCacheSize": ".5Gi"}),
        json!({"imageCacheSize": "10Gi", "glanceAPI": {"replicas": 3}, "databaseInstance": "db",
               "imageCache": {"accessMode": "ReadWriteMany", "prunerSchedule": "@hourly", "cleanerSchedule": "0  3 * * 1-5"}}),
        json!({"glanceAPI": {"replicas": 2}, "databaseInstance": "db"}),
        json!({"customServiceConfigSecrets": []}),
        json!({"customServiceConfigSecrets": ["ceph-s3-keys", "a.b-c", "0"]}),
    ] {
        assert_eq!(
            messages(&glance("glance", spec.clone())),
            Vec::<String>::new(),
            "{spec}"
        );
    }
    let name = "a".repeat(38);
    assert_eq!(messages(&glance(&name, json!({}))), Vec::<String>::new());
}

#[test]
fn cel_rejects_with_messages_a_person_understands() {
    let cases = [
        (
            glance(&"a".repeat(39), json!({})),
            rules::NAME_LENGTH_MESSAGE,
        ),
        (glance("1glance", json!({})), rules::NAME_FORMAT_MESSAGE),
        (glance("glance-", json!({})), rules::NAME_FORMAT_MESSAGE),
        (
            glance("glance", json!({"imageCacheSize": "10GB"})),
            rules::CACHE_SIZE_MESSAGE,
        ),
        (
            glance("glance", json!({"imageCacheSize": "10g"})),
            rules::CACHE_SIZE_MESSAGE,
        ),
        (
            glance("glance", json!({"imageCacheSize": "10KiB"})),
            rules::CACHE_SIZE_MESSAGE,
        ),
        (
            glance("glance", json!({"imageCacheSize": "-1G"})),
            rules::CACHE_SIZE_MESSAGE,
        ),
        (
            glance("glance", json!({"imageCacheSize": "0"})),
            rules::CACHE_SIZE_MESSAGE,
        ),
        (
            glance("glance", json!({"storageRequest": "0Gi"})),
            rules::STORAGE_REQUEST_MESSAGE,
        ),
        (
            glance("glance", json!({"storageRequest": "lots"})),
            rules::STORAGE_REQUEST_MESSAGE,
        ),
        (
            glance(
                "glance",
                json!({"imageCache": {"prunerSchedule": "every hour"}}),
            ),
            rules::SCHEDULE_MESSAGE,
        ),
        (
            glance(
                "glance",
                json!({"imageCache": {"cleanerSchedule": "* * * *"}}),
            ),
            rules::SCHEDULE_MESSAGE,
        ),
        (
            glance("glance", json!({"glanceAPI": {"replicas": 2}})),
            rules::REPLICAS_NEED_DATABASE_MESSAGE,
        ),
        (
            glance(
                "glance",
                json!({"glanceAPI": {"replicas": 2}, "databaseInstance": "db", "imageCacheSize": "10G"}),
            ),
            rules::REPLICAS_NEED_SHARED_CACHE_MESSAGE,
        ),
        (
            glance(
                "glance",
                json!({"customServiceConfigSecrets": ["ceph-keys", "Ceph_Keys"]}),
            ),
            rules::CONFIG_SECRET_NAMES_MESSAGE,
        ),
        (
            glance("glance", json!({"customServiceConfigSecrets": ["keys-"]})),
            rules::CONFIG_SECRET_NAMES_MESSAGE,
        ),
        (
            glance("glance", json!({"customServiceConfigSecrets": ["a..b"]})),
            rules::CONFIG_SECRET_NAMES_MESSAGE,
        ),
        (
            glance("glance", json!({"customServiceConfigSecrets": [""]})),
            rules::CONFIG_SECRET_NAMES_MESSAGE,
        ),
        (
            glance(
                "glance",
                json!({"customServiceConfigSecrets": ["keys", "more", "keys"]}),
            ),
            rules::CONFIG_SECRETS_UNIQUE_MESSAGE,
        ),
    ];
    for (object, message) in cases {
        assert_eq!(messages(&object), vec![message.to_owned()], "{object}");
    }
}

#[test]
fn defaults_fill_an_empty_spec_like_the_rust_types_do() {
    let defaulted = apply_defaults(&schema(), &glance("glance", json!({})));
    assert_eq!(
        defaulted["spec"],
        json!({
            "storageRequest": "10G",
            "imageCache": {
                "prunerSchedule": "*/15 * * * *",
                "cleanerSchedule": "*/30 * * * *",
                "stallTime": 86400,
                "accessMode": "ReadWriteOnce",
                "driver": "sqlite",
            },
            "glanceAPI": {"replicas": 1},
        })
    );
    // The Rust defaults agree with the schema's.
    let parsed: Glance = serde_json::from_value(glance("glance", json!({}))).expect("parses");
    let reserialized = serde_json::to_value(&parsed).expect("json");
    assert_eq!(reserialized["spec"], defaulted["spec"]);
}

#[test]
fn no_field_is_pruned_silently() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/shared.yaml"
    ))
    .expect("fixture");
    let mut g: Glance = serde_yaml::from_str(&text).expect("glance");
    g.status = Some(glance_operator::crd::GlanceStatus {
        observed_generation: Some(3),
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Ready".into(),
            message: "ok".into(),
            observed_generation: Some(3),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        }],
        ready_replicas: Some(3),
        image_cache_max_size: Some(53687091200),
        api_endpoint: Some("http://images-api.openstack.svc:9292".into()),
    });
    let value = serde_json::to_value(&g).expect("json");
    // The fixture sets every spec field, and the status every status field.
    assert_eq!(value["spec"].as_object().map(|m| m.len()), Some(8));
    assert_eq!(value["status"].as_object().map(|m| m.len()), Some(5));
    assert_not_pruned(&schema(), &value, "");
}

fn assert_described(schema: &Value, path: &str) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            assert!(
                v.get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.is_empty()),
                "{p} has no description for kubectl explain"
            );
            assert_described(v, &p);
        }
    }
}

#[test]
fn every_field_is_described_and_columns_and_status_exist() {
    let s = schema();
    assert!(
        s["description"]
            .as_str()
            .is_some_and(|d| d.contains("image cache"))
    );
    assert_described(&s, "");
    let crd = serde_json::to_value(Glance::crd()).expect("json");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"], json!({"status": {}}));
    let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or(""),
                c["jsonPath"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        columns,
        vec![
            ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
            ("Replicas", ".status.readyReplicas"),
            ("Cache", ".spec.imageCacheSize"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
    assert_eq!(crd["spec"]["scope"], json!("Namespaced"));
    assert_eq!(
        crd["metadata"]["name"],
        json!("glances.glance.openstack.org")
    );
}
