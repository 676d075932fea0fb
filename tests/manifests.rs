//! What users apply: `kubectl kustomize` renders config/default and the samples, and every
//! rendered object and every object the builders produce validates strictly against the
//! upstream Kubernetes schemas (kubernetes-validate, installed by .ci/venv.sh).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::schema::{assert_not_pruned, crd_schema};
use common::{DEFAULT_IMAGE, glance, valid};
use glance_operator::conf::{Config, ConfigSources};
use glance_operator::crd::Glance;
use glance_operator::crd::validate::{Size, validate};
use glance_operator::operator::observe::keystone_credentials;
use glance_operator::resources::config::{ConfigSecret, extra_config_file};
use glance_operator::resources::{Children, Observed, build};
use glance_operator::store::{BackendKind, StoreConfig};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::core::cel::Validator;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

/// Kubernetes version whose schemas the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.36";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(root())
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde_yaml::from_value::<Value>(serde_yaml::Value::deserialize(doc).expect("yaml"))
                .expect("json")
        })
        .collect()
}

use serde::Deserialize;

fn kubernetes_validate() -> PathBuf {
    match std::env::var_os("KUBERNETES_VALIDATE") {
        Some(path) => PathBuf::from(path),
        None => root().join(".venv/bin/kubernetes-validate"),
    }
}

/// Every object of `children`, the bodies that grow live cache volumes included.
fn children_docs(children: &Children) -> Vec<Value> {
    let Children {
        config,
        storage,
        cache,
        service,
        headless_service,
        db_sync,
        statefulset,
    } = children;
    let mut docs = vec![
        serde_json::to_value(config).expect("json"),
        serde_json::to_value(storage).expect("json"),
        serde_json::to_value(service).expect("json"),
        serde_json::to_value(headless_service).expect("json"),
        serde_json::to_value(statefulset).expect("json"),
    ];
    docs.extend(
        db_sync
            .iter()
            .map(|job| serde_json::to_value(job).expect("json")),
    );
    if let Some(cache) = cache {
        for cronjob in &cache.cronjobs {
            docs.push(serde_json::to_value(cronjob).expect("json"));
        }
        for resize in &cache.resizes {
            docs.push(serde_json::to_value(resize).expect("json"));
        }
    }
    docs
}

/// The seed Glance with three replicas, each with its own ReadWriteOnce cache volume, the
/// first of which is smaller than the claim template.
fn three_replicas() -> Children {
    let mut g = glance("seed.yaml");
    g.spec.glance_api.replicas = 3;
    let observed = Observed {
        database_connection: Some("mysql://x".into()),
        cache_volumes: [(
            "image-cache-glance-api-0".to_owned(),
            Size {
                quantity: "1G".into(),
                bytes: 1_000_000_000,
            },
        )]
        .into(),
        ..Observed::default()
    };
    build(&validate(&g, DEFAULT_IMAGE).expect("valid"), &observed)
}

#[test]
fn every_manifest_validates_strictly_against_upstream_schemas() {
    let mut docs = kustomize("config/default");
    docs.extend(kustomize("samples/image-cache"));
    docs.extend(kustomize("samples/base"));
    docs.extend(kustomize("samples/ceph-s3"));
    docs.extend(kustomize("samples/keystone"));
    for fixture in ["seed.yaml", "cache-off.yaml", "shared.yaml"] {
        let observed = Observed {
            database_connection: Some("mysql://x".into()),
            ..Observed::default()
        };
        docs.extend(children_docs(&build(&valid(fixture), &observed)));
    }
    // With customServiceConfigSecrets the config volume is a projected one.
    let observed = Observed {
        database_connection: Some("mysql://x".into()),
        config_secrets: vec![ConfigSecret {
            name: "images-s3-keys".into(),
            data: [("s3.conf".to_owned(), ByteString(b"[ceph]\n".to_vec()))].into(),
        }],
        ..Observed::default()
    };
    let shared = children_docs(&build(&valid("shared.yaml"), &observed));
    // shared.yaml sets spec.keystone: its StatefulSet passes the credentials from the
    // Secret, and is validated with them.
    let keystone_env: Vec<&Value> = shared
        .iter()
        .filter(|d| d["kind"] == json!("StatefulSet"))
        .flat_map(|d| {
            d["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter(|e| {
            e.get("valueFrom")
                .and_then(|v| v.get("secretKeyRef"))
                .is_some()
        })
        .collect();
    assert_eq!(
        keystone_env,
        [
            &json!({"name": "OS_KEYSTONE_AUTHTOKEN__USERNAME",
                    "valueFrom": {"secretKeyRef": {"name": "images-keystone", "key": "user"}}}),
            &json!({"name": "OS_KEYSTONE_AUTHTOKEN__PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "images-keystone", "key": "pass"}}}),
        ]
    );
    docs.extend(shared);
    // Three replicas: a StatefulSet with its claim template, the headless Service, and a
    // pruner and a cleaner CronJob per replica.
    let three = children_docs(&three_replicas());
    let named = |kind: &str| -> Vec<&str> {
        three
            .iter()
            .filter(|d| d["kind"] == json!(kind))
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect()
    };
    assert_eq!(
        named("CronJob"),
        [
            "glance-cache-pruner-0",
            "glance-cache-cleaner-0",
            "glance-cache-pruner-1",
            "glance-cache-cleaner-1",
            "glance-cache-pruner-2",
            "glance-cache-cleaner-2",
        ]
    );
    assert_eq!(named("StatefulSet"), ["glance-api"]);
    assert_eq!(named("Service"), ["glance-api", "glance-api-headless"]);
    assert_eq!(named("Job"), ["glance-db-sync"]);
    assert_eq!(
        named("PersistentVolumeClaim"),
        ["glance-storage", "image-cache-glance-api-0"]
    );
    let statefulset = three
        .iter()
        .find(|d| d["kind"] == json!("StatefulSet"))
        .expect("StatefulSet");
    assert_eq!(
        statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        json!("image-cache")
    );
    docs.extend(three);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("all.yaml");
    let stream: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).expect("yaml")))
        .collect();
    std::fs::write(&file, stream).expect("write");

    let tool = kubernetes_validate();
    let out = Command::new(&tool)
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{} not runnable ({e}); run .ci/venv.sh", tool.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{report}"
    );
    // Only our own kind may lack an upstream schema; a WARN for anything else means a
    // wrong apiVersion or kind slipped through unvalidated.
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains(
                "Couldn't find schema for kind Glance with api version glance.openstack.org/v1beta1"
            ),
            "{line}"
        );
    }
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "ClusterRole",
        "Role",
        "Deployment",
        "StatefulSet",
        "Job",
        "Secret",
        "PersistentVolumeClaim",
        "CronJob",
        "Service",
        "Glance",
    ] {
        assert!(kinds.contains(&kind), "{kind} was validated");
    }
}

#[test]
fn samples_are_valid_glances() {
    let schema = crd_schema();
    for (dir, count, cache) in [
        ("samples/base", 1, None),
        ("samples/image-cache", 1, Some(10_000_000_000u64)),
        ("samples/ceph-s3", 2, Some(10_000_000_000u64)),
        ("samples/keystone", 2, None),
    ] {
        let docs = kustomize(dir);
        assert_eq!(docs.len(), count, "{dir}");
        let doc = find_glance(&docs);
        assert_not_pruned(&schema, doc, "");
        Validator::new()
            .validate(&schema, doc, None)
            .unwrap_or_else(|e| panic!("{dir}: {e:?}"));
        let mut g: Glance = serde_json::from_value(doc.clone()).expect("a Glance");
        g.metadata.namespace = Some("openstack".into());
        g.metadata.uid = Some("u".into());
        let v = validate(&g, DEFAULT_IMAGE).expect("valid");
        assert_eq!(v.cache.map(|c| c.size.bytes), cache, "{dir}");
    }
    // samples/glance.yaml is the base.
    let minimal: Glance = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("samples/glance.yaml")).expect("read"),
    )
    .expect("glance");
    assert!(minimal.spec.image_cache_size.is_none());
    // The seed example applies as written.
    let seed = serde_json::to_value(glance("seed.yaml")).expect("json");
    Validator::new()
        .validate(&schema, &seed, None)
        .expect("seed example passes CEL");
    assert_not_pruned(&schema, &seed, "");
}

fn find_glance(docs: &[Value]) -> &Value {
    docs.iter()
        .find(|d| d["kind"] == json!("Glance"))
        .expect("a Glance")
}

#[test]
fn ceph_s3_sample_keeps_the_keys_in_the_secret_it_names() {
    let docs = kustomize("samples/ceph-s3");
    let glance_doc = find_glance(&docs);
    let mut g: Glance = serde_json::from_value(glance_doc.clone()).expect("a Glance");
    assert_eq!(
        g.spec.custom_service_config_secrets,
        vec!["glance-s3-keys".to_owned()]
    );
    // The rendered Secret has exactly the name the Glance uses (no hash suffix).
    let secret_doc = docs
        .iter()
        .find(|d| d["kind"] == json!("Secret"))
        .expect("a Secret");
    assert_eq!(secret_doc["metadata"]["name"], json!("glance-s3-keys"));
    // kustomize wraps base64 at 70 columns; the API server's decoder skips the newlines.
    let mut unwrapped = secret_doc.clone();
    for value in unwrapped["data"]
        .as_object_mut()
        .expect("data")
        .values_mut()
    {
        *value = json!(value.as_str().expect("base64").replace('\n', ""));
    }
    let secret: Secret = serde_json::from_value(unwrapped).expect("Secret");
    let data = secret.data.clone().expect("data");
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["s3.conf"]);

    let custom = g
        .spec
        .custom_service_config
        .clone()
        .expect("customServiceConfig");
    assert!(!custom.contains("s3_store_access_key") && !custom.contains("s3_store_secret_key"));
    let keys = String::from_utf8(data["s3.conf"].0.clone()).expect("utf-8");
    assert!(keys.contains("REPLACE-WITH"), "placeholders only: {keys}");

    // What glance-api reads in the pod: the operator's files and the Secret's, in name order.
    g.metadata.namespace = Some("openstack".into());
    g.metadata.uid = Some("u".into());
    let v = validate(&g, DEFAULT_IMAGE).expect("valid");
    let extra = vec![ConfigSecret {
        name: "glance-s3-keys".into(),
        data,
    }];
    let children = build(
        &v,
        &Observed {
            config_secrets: extra.clone(),
            ..Observed::default()
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    for (key, value) in children.config.data.as_ref().expect("data") {
        std::fs::write(dir.path().join(key), &value.0).expect("write");
    }
    for (key, value) in &extra[0].data {
        let file = extra_config_file(0, "glance-s3-keys", key);
        assert_eq!(file, "02-glance-s3-keys-s3.conf");
        std::fs::write(dir.path().join(file), &value.0).expect("write");
    }
    let conf = Config::load(&ConfigSources {
        files: vec![],
        dirs: vec![dir.path().to_path_buf()],
    })
    .expect("loads");
    let stores = StoreConfig::from_config(&conf).expect("glance-api accepts the stores");
    assert_eq!(stores.default, "ceph");
    let names: Vec<&str> = stores.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, vec!["fast", "ceph"]);
    let BackendKind::S3(s3) = &stores.backends[1].kind else {
        panic!("ceph is not an s3 store: {:?}", stores.backends[1]);
    };
    assert_eq!(s3.access_key, "REPLACE-WITH-RGW-ACCESS-KEY");
    assert_eq!(s3.bucket, "glance");
    assert!(s3.create_bucket_on_put);
    assert_eq!(
        conf.get("DEFAULT", "image_cache_max_size"),
        Some("10000000000")
    );
}

#[test]
fn keystone_sample_keeps_the_credentials_in_the_secret_it_names() {
    let docs = kustomize("samples/keystone");
    let mut g: Glance = serde_json::from_value(find_glance(&docs).clone()).expect("a Glance");
    let keystone = g.spec.keystone.clone().expect("spec.keystone");
    assert_eq!(
        keystone.auth_url,
        "http://keystone-public.openstack.svc:5000/v3"
    );
    let secret_doc = docs
        .iter()
        .find(|d| d["kind"] == json!("Secret"))
        .expect("a Secret");
    // Exactly the name the Glance uses (no hash suffix), with the keys it names.
    assert_eq!(secret_doc["metadata"]["name"], json!(keystone.secret));
    // kustomize wraps base64 at 70 columns; the API server's decoder skips the newlines.
    let mut unwrapped = secret_doc.clone();
    for value in unwrapped["data"]
        .as_object_mut()
        .expect("data")
        .values_mut()
    {
        *value = json!(value.as_str().expect("base64").replace('\n', ""));
    }
    let secret: Secret = serde_json::from_value(unwrapped).expect("Secret");
    let data = secret.data.clone().expect("data");
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        vec![&keystone.password_key, &keystone.username_key]
    );
    let password = String::from_utf8(data[&keystone.password_key].0.clone()).expect("utf-8");
    assert!(password.contains("REPLACE-WITH"), "a placeholder only");

    // The operator's view: the credentials pass observe, and reach the pod only by reference.
    g.metadata.namespace = Some("openstack".into());
    g.metadata.uid = Some("u".into());
    let v = validate(&g, DEFAULT_IMAGE).expect("valid");
    let credentials = keystone_credentials(v.keystone.as_ref().expect("keystone"), Some(&secret))
        .expect("the sample Secret is usable");
    let children = build(
        &v,
        &Observed {
            keystone_credentials: Some(credentials),
            ..Observed::default()
        },
    );
    let docs = children_docs(&children);
    for doc in &docs {
        assert!(!doc.to_string().contains(&password), "{doc}");
    }
    let config = String::from_utf8(
        children.config.data.as_ref().expect("data")["00-config.conf"]
            .0
            .clone(),
    )
    .expect("utf-8");
    assert!(
        config.contains("\n[paste_deploy]\nflavor = keystone\n"),
        "{config}"
    );
    assert!(
        config.contains("\nwww_authenticate_uri = http://keystone-public.openstack.svc:5000/v3\n"),
        "{config}"
    );
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == json!(kind) && d["metadata"]["name"] == json!(name))
        .unwrap_or_else(|| panic!("{kind} {name} in config/default"))
}

#[test]
fn rbac_grants_exactly_what_the_reconciler_uses() {
    let docs = kustomize("config/default");
    let rules = &find(&docs, "ClusterRole", "glance-operator")["rules"];
    let granted: Vec<(String, String, Vec<String>)> = rules
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| {
            let verbs: Vec<String> = r["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .map(|v| v.as_str().unwrap_or("").to_owned())
                .collect();
            let groups = r["apiGroups"].as_array().expect("groups").clone();
            let resources = r["resources"].as_array().expect("resources").clone();
            groups.into_iter().flat_map(move |g| {
                let verbs = verbs.clone();
                resources.clone().into_iter().map(move |res| {
                    (
                        g.as_str().unwrap_or("").to_owned(),
                        res.as_str().unwrap_or("").to_owned(),
                        verbs.clone(),
                    )
                })
            })
        })
        .collect();
    let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let expected = vec![
        (
            "glance.openstack.org".to_owned(),
            "glances".to_owned(),
            v(&["get", "list", "watch"]),
        ),
        (
            "glance.openstack.org".to_owned(),
            "glances/status".to_owned(),
            v(&["patch"]),
        ),
        (
            "glance.openstack.org".to_owned(),
            "glances/finalizers".to_owned(),
            v(&["update"]),
        ),
        (
            String::new(),
            "secrets".to_owned(),
            v(&["get", "list", "watch", "create", "patch"]),
        ),
        (
            String::new(),
            "persistentvolumeclaims".to_owned(),
            v(&["get", "list", "watch", "create", "patch", "delete"]),
        ),
        (
            String::new(),
            "services".to_owned(),
            v(&["list", "watch", "create", "patch", "delete"]),
        ),
        (
            "apps".to_owned(),
            "statefulsets".to_owned(),
            v(&["get", "list", "watch", "create", "patch", "delete"]),
        ),
        (
            "apps".to_owned(),
            "deployments".to_owned(),
            v(&["get", "list", "watch", "delete"]),
        ),
        (
            "batch".to_owned(),
            "cronjobs".to_owned(),
            v(&["get", "list", "watch", "create", "patch", "delete"]),
        ),
        (
            "batch".to_owned(),
            "jobs".to_owned(),
            v(&["get", "list", "watch", "create", "patch", "delete"]),
        ),
        (
            "events.k8s.io".to_owned(),
            "events".to_owned(),
            v(&["create", "patch"]),
        ),
    ];
    assert_eq!(granted, expected);
    let lease = &find(&docs, "Role", "glance-operator-leader-election")["rules"];
    assert_eq!(
        lease,
        &json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}])
    );
    assert_eq!(
        find(&docs, "RoleBinding", "glance-operator-leader-election")["metadata"]["namespace"],
        json!("glance-operator-system")
    );
}

#[test]
fn the_manager_is_hardened_and_passes_its_image_on() {
    let docs = kustomize("config/default");
    let deployment = find(&docs, "Deployment", "glance-operator");
    assert_eq!(
        deployment["metadata"]["namespace"],
        json!("glance-operator-system")
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["serviceAccountName"], json!("glance-operator"));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], json!(true));
    assert_eq!(
        pod["securityContext"]["seccompProfile"],
        json!({"type": "RuntimeDefault"})
    );
    assert_eq!(
        container["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true,
               "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    let env = container["env"].as_array().expect("env");
    let related = env
        .iter()
        .find(|e| e["name"] == json!("RELATED_IMAGE_GLANCE_API"))
        .expect("RELATED_IMAGE_GLANCE_API");
    assert_eq!(
        related["value"], container["image"],
        "glance-api runs the operator's own image by default"
    );
    for name in ["POD_NAME", "POD_NAMESPACE"] {
        assert!(env.iter().any(|e| e["name"] == json!(name)), "{name}");
    }
    let ns = find(&docs, "Namespace", "glance-operator-system");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        json!("restricted")
    );
}
