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
            ".spec.keystone.authUrl",
            rules::KEYSTONE_URL,
            rules::KEYSTONE_AUTH_URL_MESSAGE,
        ),
        (
            ".spec.keystone.passwordKey",
            rules::SECRET_KEY,
            rules::KEYSTONE_PASSWORD_KEY_MESSAGE,
        ),
        (
            ".spec.keystone.projectDomainName",
            rules::CONFIG_VALUE,
            rules::KEYSTONE_PROJECT_DOMAIN_NAME_MESSAGE,
        ),
        (
            ".spec.keystone.projectName",
            rules::CONFIG_VALUE,
            rules::KEYSTONE_PROJECT_NAME_MESSAGE,
        ),
        (
            ".spec.keystone.region",
            rules::CONFIG_VALUE,
            rules::KEYSTONE_REGION_MESSAGE,
        ),
        (
            ".spec.keystone.secret",
            rules::KEYSTONE_SECRET,
            rules::KEYSTONE_SECRET_MESSAGE,
        ),
        (
            ".spec.keystone.userDomainName",
            rules::CONFIG_VALUE,
            rules::KEYSTONE_USER_DOMAIN_NAME_MESSAGE,
        ),
        (
            ".spec.keystone.usernameKey",
            rules::SECRET_KEY,
            rules::KEYSTONE_USERNAME_KEY_MESSAGE,
        ),
        (
            ".spec.keystone.wwwAuthenticateUri",
            rules::KEYSTONE_URL,
            rules::KEYSTONE_WWW_AUTHENTICATE_URI_MESSAGE,
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
    assert_eq!(
        rules::NAME_LENGTH,
        "self.metadata.name.size() <= (has(self.spec.glanceAPI) && has(self.spec.glanceAPI.replicas) && self.spec.glanceAPI.replicas > 10 ? 35 : 36)"
    );
    assert_eq!(
        rules::NAME_LENGTH_MESSAGE,
        "metadata.name must be at most 36 characters (35 with more than 10 replicas), so that the CronJob name <name>-cache-cleaner-<replica> fits in 52"
    );
    assert_eq!(
        rules::REPLICAS_NEED_DATABASE,
        "!has(self.glanceAPI) || !has(self.glanceAPI.replicas) || self.glanceAPI.replicas <= 1 || (has(self.databaseInstance) && self.databaseInstance != '')"
    );
    // The name limits the CEL hard-codes are the ones the longest CronJob name leaves.
    assert_eq!(rules::REPLICAS_MAX, 32);
    assert_eq!(rules::CRONJOB_NAME_MAX, 52);
    for (replicas, max) in [(0, 36), (1, 36), (3, 36), (10, 36), (11, 35), (32, 35)] {
        assert_eq!(rules::name_max(replicas), max, "{replicas} replicas");
        let last = replicas.max(1) - 1;
        assert_eq!(
            format!("{}-cache-cleaner-{last}", "a".repeat(max)).len(),
            rules::CRONJOB_NAME_MAX,
            "{replicas} replicas"
        );
    }
    // No rule about the cache's access mode is left: every replica has its own volume.
    assert!(found.iter().all(
        |(_, rule, message)| !rule.contains("accessMode") && !message.contains("ReadWriteMany")
    ));
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
    assert_eq!(
        rules::KEYSTONE_URL,
        r"self.matches('^https?://[^\\x00-\\x20\\x7f/?#]+([/?#][^\\x00-\\x20\\x7f]*)?$')"
    );
    assert_eq!(
        rules::KEYSTONE_SECRET,
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')"
    );
    assert_eq!(rules::SECRET_KEY, "self.matches('^[-._a-zA-Z0-9]+$')");
    assert_eq!(
        rules::CONFIG_VALUE,
        r"self.matches('^[^ \\x00-\\x1f\\x7f]([^\\x00-\\x1f\\x7f]*[^ \\x00-\\x1f\\x7f])?$')"
    );
    // Every keystone message names its field.
    for (path, _, message) in found.iter().filter(|(p, _, _)| p.contains(".keystone.")) {
        let field = path.trim_start_matches(".spec.");
        assert!(message.starts_with(field), "{path}: {message}");
    }
    // The keystone strings are bounded too, and authUrl and secret are required.
    let keystone = &schema()["properties"]["spec"]["properties"]["keystone"];
    assert_eq!(keystone["required"], json!(["authUrl", "secret"]));
    for (field, max) in [
        ("authUrl", 2048),
        ("wwwAuthenticateUri", 2048),
        ("secret", 253),
        ("usernameKey", 253),
        ("passwordKey", 253),
        ("projectName", 255),
        ("userDomainName", 255),
        ("projectDomainName", 255),
        ("region", 255),
    ] {
        assert_eq!(
            keystone["properties"][field]["maxLength"],
            json!(max),
            "{field}"
        );
    }
    assert_eq!(
        keystone["properties"]["interface"]["enum"],
        json!(["public", "internal", "admin"]),
        "no null among the values: the server would refuse it"
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
        // Several replicas with a ReadWriteOnce cache: each has its own volume.
        json!({"glanceAPI": {"replicas": 3}, "databaseInstance": "db", "imageCacheSize": "10G",
               "imageCache": {"accessMode": "ReadWriteOnce"}}),
        json!({"glanceAPI": {"replicas": 3}, "databaseInstance": "db", "imageCacheSize": "10G"}),
        json!({"glanceAPI": {"replicas": 2}, "databaseInstance": "db", "imageCacheSize": "10G"}),
        json!({"glanceAPI": {"replicas": 32}, "databaseInstance": "db", "imageCacheSize": "10G"}),
        json!({"glanceAPI": {"replicas": 0}}),
        json!({"customServiceConfigSecrets": []}),
        json!({"customServiceConfigSecrets": ["ceph-s3-keys", "a.b-c", "0"]}),
        json!({"keystone": {"authUrl": "http://keystone-public.openstack.svc:5000/v3",
                            "secret": "glance-keystone"}}),
        json!({"keystone": {"authUrl": "https://keystone.example.com",
                            "wwwAuthenticateUri": "https://id.example.com:443/identity/v3?x=1#f",
                            "secret": "os.glance-keystone", "usernameKey": "OS_USERNAME",
                            "passwordKey": "password.txt", "projectName": "Service Project",
                            "userDomainName": "service-domain", "projectDomainName": "Default",
                            "region": "RegionOne", "interface": "public"}}),
        json!({"keystone": {"authUrl": "http://[fd00::10]:5000", "secret": "k",
                            "projectName": "s", "region": "régiön-1", "interface": "admin"}}),
    ] {
        assert_eq!(
            messages(&glance("glance", spec.clone())),
            Vec::<String>::new(),
            "{spec}"
        );
    }
    for (len, spec) in [
        (36, json!({})),
        (36, json!({"glanceAPI": {}})),
        (36, json!({"glanceAPI": {"replicas": 1}})),
        (
            36,
            json!({"glanceAPI": {"replicas": 10}, "databaseInstance": "db"}),
        ),
        (
            35,
            json!({"glanceAPI": {"replicas": 11}, "databaseInstance": "db"}),
        ),
        (
            35,
            json!({"glanceAPI": {"replicas": 32}, "databaseInstance": "db"}),
        ),
    ] {
        assert_eq!(
            messages(&glance(&"a".repeat(len), spec.clone())),
            Vec::<String>::new(),
            "{len} characters, {spec}"
        );
    }
}

#[test]
fn cel_name_length_follows_the_replicas_as_name_max_does() {
    for replicas in 0..=rules::REPLICAS_MAX {
        let spec = json!({"glanceAPI": {"replicas": replicas}, "databaseInstance": "db"});
        let max = rules::name_max(replicas);
        assert_eq!(
            messages(&glance(&"a".repeat(max), spec.clone())),
            Vec::<String>::new(),
            "{replicas} replicas, {max} characters"
        );
        assert_eq!(
            messages(&glance(&"a".repeat(max + 1), spec)),
            vec![rules::NAME_LENGTH_MESSAGE.to_owned()],
            "{replicas} replicas, {} characters",
            max + 1
        );
    }
}

/// Where `value` breaks a `minimum` or `maximum` of `schema`, as the API server's schema
/// validation reports it (the local CEL validator evaluates the rules only).
fn bound_violations(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(n) = value.as_f64() {
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push(format!(
                "{path} in body should be less than or equal to {max}"
            ));
        }
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push(format!(
                "{path} in body should be greater than or equal to {min}"
            ));
        }
    }
    if let (Some(map), Some(props)) = (
        value.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for (k, v) in map {
            if let Some(sub) = props.get(k) {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                bound_violations(sub, v, &p, out);
            }
        }
    }
}

fn violations(object: &Value) -> Vec<String> {
    let mut out = Vec::new();
    bound_violations(&schema(), object, "", &mut out);
    out
}

#[test]
fn replicas_are_capped_by_the_schema_maximum() {
    let replicas =
        &schema()["properties"]["spec"]["properties"]["glanceAPI"]["properties"]["replicas"];
    assert_eq!(replicas["type"], json!("integer"));
    assert_eq!(replicas["minimum"].as_f64(), Some(0.0));
    assert_eq!(
        replicas["maximum"].as_f64(),
        Some(f64::from(rules::REPLICAS_MAX))
    );
    assert!(
        replicas["description"]
            .as_str()
            .is_some_and(|d| d.contains("at most 32")),
        "{replicas}"
    );
    let with = |n: i64| {
        glance(
            "glance",
            json!({"glanceAPI": {"replicas": n}, "databaseInstance": "db"}),
        )
    };
    for n in [0, 1, 2, 11, 32] {
        assert_eq!(violations(&with(n)), Vec::<String>::new(), "{n}");
        assert_eq!(messages(&with(n)), Vec::<String>::new(), "{n}");
    }
    // 33 passes every CEL rule: it is the schema's maximum that refuses it.
    assert_eq!(messages(&with(33)), Vec::<String>::new());
    assert_eq!(
        violations(&with(33)),
        vec!["spec.glanceAPI.replicas in body should be less than or equal to 32".to_owned()]
    );
    assert_eq!(
        violations(&with(-1)),
        vec!["spec.glanceAPI.replicas in body should be greater than or equal to 0".to_owned()]
    );
}

#[test]
fn cel_rejects_with_messages_a_person_understands() {
    let cases = [
        (
            glance(&"a".repeat(37), json!({})),
            rules::NAME_LENGTH_MESSAGE,
        ),
        (
            glance(
                &"a".repeat(37),
                json!({"glanceAPI": {"replicas": 10}, "databaseInstance": "db"}),
            ),
            rules::NAME_LENGTH_MESSAGE,
        ),
        (
            glance(
                &"a".repeat(36),
                json!({"glanceAPI": {"replicas": 11}, "databaseInstance": "db"}),
            ),
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
                json!({"glanceAPI": {"replicas": 3}, "imageCacheSize": "10G"}),
            ),
            rules::REPLICAS_NEED_DATABASE_MESSAGE,
        ),
        (
            glance(
                "glance",
                json!({"glanceAPI": {"replicas": 2}, "databaseInstance": ""}),
            ),
            rules::REPLICAS_NEED_DATABASE_MESSAGE,
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

/// A Glance whose spec.keystone is the minimal one with `field` set to `value`.
fn with_keystone(field: &str, value: Value) -> Value {
    let mut keystone = json!({"authUrl": "http://keystone:5000/v3", "secret": "glance-keystone"});
    keystone[field] = value;
    glance("glance", json!({ "keystone": keystone }))
}

#[test]
fn cel_rejects_keystone_fields_naming_the_field() {
    let url = [
        "keystone:5000",
        "ftp://keystone/v3",
        "http://",
        "https:///v3",
        "http://?x",
        "http://keystone:5000/v3 ",
        "http://keystone:5000/v3\n[DEFAULT]",
        "http://key stone/v3",
        "HTTP://keystone/v3",
        "",
    ];
    let name = ["", " service", "service ", "ser\nvice", "a\tb", "x\u{7f}"];
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for bad in url {
        let bad = json!(bad);
        cases.push((
            with_keystone("authUrl", bad.clone()),
            rules::KEYSTONE_AUTH_URL_MESSAGE,
        ));
        cases.push((
            with_keystone("wwwAuthenticateUri", bad),
            rules::KEYSTONE_WWW_AUTHENTICATE_URI_MESSAGE,
        ));
    }
    for bad in name {
        let bad = json!(bad);
        for (field, message) in [
            ("projectName", rules::KEYSTONE_PROJECT_NAME_MESSAGE),
            ("userDomainName", rules::KEYSTONE_USER_DOMAIN_NAME_MESSAGE),
            (
                "projectDomainName",
                rules::KEYSTONE_PROJECT_DOMAIN_NAME_MESSAGE,
            ),
            ("region", rules::KEYSTONE_REGION_MESSAGE),
        ] {
            cases.push((with_keystone(field, bad.clone()), message));
        }
    }
    for bad in ["Glance_Keystone", "keys-", "a..b", ""] {
        cases.push((
            with_keystone("secret", json!(bad)),
            rules::KEYSTONE_SECRET_MESSAGE,
        ));
    }
    for bad in ["user name", "", "user/name", "pass:word"] {
        cases.push((
            with_keystone("usernameKey", json!(bad)),
            rules::KEYSTONE_USERNAME_KEY_MESSAGE,
        ));
        cases.push((
            with_keystone("passwordKey", json!(bad)),
            rules::KEYSTONE_PASSWORD_KEY_MESSAGE,
        ));
    }
    for (object, message) in cases {
        assert_eq!(messages(&object), vec![message.to_owned()], "{object}");
    }
}

#[test]
fn keystone_defaults_fill_the_optional_fields_like_the_rust_types_do() {
    let object = glance(
        "glance",
        json!({"keystone": {"authUrl": "http://keystone:5000/v3", "secret": "glance-keystone"}}),
    );
    let defaulted = apply_defaults(&schema(), &object);
    assert_eq!(
        defaulted["spec"]["keystone"],
        json!({
            "authUrl": "http://keystone:5000/v3",
            "secret": "glance-keystone",
            "usernameKey": "username",
            "passwordKey": "password",
            "projectName": "service",
            "userDomainName": "Default",
            "projectDomainName": "Default",
        })
    );
    let parsed: Glance = serde_json::from_value(object).expect("parses");
    let reserialized = serde_json::to_value(&parsed).expect("json");
    assert_eq!(reserialized["spec"], defaulted["spec"]);
    // Without spec.keystone nothing is defaulted into it.
    let empty = apply_defaults(&schema(), &glance("glance", json!({})));
    assert!(empty["spec"].get("keystone").is_none(), "{empty}");
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
    assert_eq!(value["spec"].as_object().map(|m| m.len()), Some(9));
    assert_eq!(
        value["spec"]["keystone"].as_object().map(|m| m.len()),
        Some(10)
    );
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
