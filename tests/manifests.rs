//! What users apply: `kubectl kustomize` renders config/default and the samples, and every
//! rendered object and every object the builders produce validates strictly against the
//! upstream Kubernetes schemas (kubernetes-validate, installed by .ci/venv.sh).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::schema::{assert_not_pruned, crd_schema};
use common::{DEFAULT_IMAGE, glance, valid};
use glance_operator::crd::Glance;
use glance_operator::crd::validate::validate;
use glance_operator::resources::{Children, Observed, build};
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

fn children_docs(children: &Children) -> Vec<Value> {
    let Children {
        config,
        storage,
        cache,
        service,
        deployment,
    } = children;
    let mut docs = vec![
        serde_json::to_value(config).expect("json"),
        serde_json::to_value(storage).expect("json"),
        serde_json::to_value(service).expect("json"),
        serde_json::to_value(deployment).expect("json"),
    ];
    if let Some(cache) = cache {
        docs.push(serde_json::to_value(&cache.pvc).expect("json"));
        docs.push(serde_json::to_value(&cache.pruner).expect("json"));
        docs.push(serde_json::to_value(&cache.cleaner).expect("json"));
    }
    docs
}

#[test]
fn every_manifest_validates_strictly_against_upstream_schemas() {
    let mut docs = kustomize("config/default");
    docs.extend(kustomize("samples/image-cache"));
    docs.extend(kustomize("samples/base"));
    for fixture in ["seed.yaml", "cache-off.yaml", "shared.yaml"] {
        let observed = Observed {
            database_connection: Some("mysql://x".into()),
            ..Observed::default()
        };
        docs.extend(children_docs(&build(&valid(fixture), &observed)));
    }
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
    for (dir, cache) in [
        ("samples/base", None),
        ("samples/image-cache", Some(10_000_000_000u64)),
    ] {
        let docs = kustomize(dir);
        assert_eq!(docs.len(), 1, "{dir}");
        let doc = &docs[0];
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
            v(&["list", "watch", "create", "patch"]),
        ),
        (
            "apps".to_owned(),
            "deployments".to_owned(),
            v(&["list", "watch", "create", "patch"]),
        ),
        (
            "batch".to_owned(),
            "cronjobs".to_owned(),
            v(&["list", "watch", "create", "patch", "delete"]),
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
