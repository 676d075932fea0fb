//! Reconcile scenarios against a scripted API server (tower-test): every request's
//! method, URI and body is asserted, in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::mock::{self, Call, Seen, status_body};
use common::{DEFAULT_IMAGE, glance};
use glance_operator::crd::Glance;
use glance_operator::crd::validate::{Size, validate};
use glance_operator::operator::context::Context;
use glance_operator::operator::error::Error;
use glance_operator::operator::metrics::Metrics;
use glance_operator::operator::reconcile::{error_policy, reconcile};
use glance_operator::resources::config::{ConfigSecret, config_hash, config_hash_with_secrets};
use glance_operator::resources::{Children, Observed, build};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

const NS: &str = "/api/v1/namespaces/openstack";
const APPLY: &str = "?&force=true&fieldManager=glance-operator";
const DB_URL: &str = "mysql+pymysql://glance:pw@db/glance";

fn ctx(client: kube::Client) -> Arc<Context> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "glance-operator".into(),
            instance: Some("test".into()),
        },
    );
    Arc::new(Context::new(
        client,
        recorder,
        Arc::new(Metrics::default()),
        DEFAULT_IMAGE.into(),
    ))
}

/// Runs one reconcile of `object` against `calls`; fails on any request beyond them.
async fn run(
    object: DeserializeGuard<Glance>,
    calls: Vec<Call>,
) -> (Result<Action, Error>, Vec<Seen>, Arc<Context>) {
    let (client, mut handle) = mock::client();
    let ctx = ctx(client);
    let mut task = tokio::spawn(reconcile(Arc::new(object), ctx.clone()));
    let seen = tokio::select! {
        seen = mock::serve(&mut handle, calls) => seen,
        ended = &mut task => panic!("reconcile ended before the script did: {ended:?}"),
        _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("script timed out"),
    };
    let result = tokio::select! {
        biased;
        joined = task => joined.expect("reconcile did not panic"),
        extra = handle.next_request() => match extra {
            Some((request, _)) => panic!("unexpected request {} {}", request.method(), request.uri()),
            None => panic!("client dropped"),
        },
    };
    (result, seen, ctx)
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("json")
}

fn db_secret(url: &str) -> Value {
    to_json(&Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("openstack".into()),
            namespace: Some("openstack".into()),
            ..Default::default()
        },
        data: Some([("connection".to_owned(), ByteString(url.as_bytes().to_vec()))].into()),
        ..Default::default()
    })
}

fn not_found(uri: String) -> Call {
    Call::fail("GET", uri, 404, "NotFound", "not found")
}

fn bound() -> Value {
    json!({"status": {"phase": "Bound"}})
}

fn deployment_ready(replicas: i32) -> Value {
    json!({"metadata": {"generation": 1},
           "status": {"observedGeneration": 1, "readyReplicas": replicas, "updatedReplicas": replicas}})
}

fn pvc_with(name: &str, request: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": "openstack"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": request}}},
           "status": {"phase": "Bound"}})
}

fn children(object: &Glance, observed: &Observed) -> Children {
    build(&validate(object, DEFAULT_IMAGE).expect("valid"), observed)
}

fn size(q: &str, bytes: u64) -> Option<Size> {
    Some(Size {
        quantity: q.into(),
        bytes,
    })
}

/// The observe step's GETs for `seed.yaml`-like objects.
fn observe_calls(db: Option<&str>, storage: Option<Value>, cache: Option<Value>) -> Vec<Call> {
    let mut calls = Vec::new();
    if let Some(url) = db {
        calls.push(Call::get(
            format!("{NS}/secrets/openstack"),
            200,
            db_secret(url),
        ));
    }
    for (name, pvc) in [("glance-storage", storage), ("glance-image-cache", cache)] {
        let uri = format!("{NS}/persistentvolumeclaims/{name}");
        calls.push(match pvc {
            Some(pvc) => Call::get(uri, 200, pvc),
            None => not_found(uri),
        });
    }
    calls
}

/// Server-side applies of every child, in the order apply sends them.
fn apply_calls(c: &Children, pvc_answer: Value, deployment_answer: Value) -> Vec<Call> {
    let mut calls = vec![
        Call::apply(
            format!("{NS}/secrets/glance-config{APPLY}"),
            to_json(&c.config),
            json!({}),
        ),
        Call::apply(
            format!("{NS}/persistentvolumeclaims/glance-storage{APPLY}"),
            to_json(&c.storage),
            pvc_answer.clone(),
        ),
    ];
    if let Some(cache) = &c.cache {
        calls.push(Call::apply(
            format!("{NS}/persistentvolumeclaims/glance-image-cache{APPLY}"),
            to_json(&cache.pvc),
            pvc_answer,
        ));
        for (name, cronjob) in [
            ("glance-cache-pruner", &cache.pruner),
            ("glance-cache-cleaner", &cache.cleaner),
        ] {
            calls.push(Call::apply(
                format!("/apis/batch/v1/namespaces/openstack/cronjobs/{name}{APPLY}"),
                to_json(cronjob),
                json!({}),
            ));
        }
    }
    calls.push(Call::apply(
        format!("{NS}/services/glance-api{APPLY}"),
        to_json(&c.service),
        json!({}),
    ));
    calls.push(Call::apply(
        format!("/apis/apps/v1/namespaces/openstack/deployments/glance-api{APPLY}"),
        to_json(&c.deployment),
        deployment_answer,
    ));
    calls
}

fn status_call() -> Call {
    // The server answers with the whole object.
    let object = json!({"metadata": {"name": "glance", "namespace": "openstack"}, "spec": {}});
    let mut call = Call::apply(
        format!(
            "/apis/glance.openstack.org/v1beta1/namespaces/openstack/glances/glance/status{APPLY}"
        ),
        json!(null),
        object,
    );
    call.body = None; // checked below, with timestamps normalised
    call
}

fn event_call() -> Call {
    let mut call = Call::apply(
        "/apis/events.k8s.io/v1/namespaces/openstack/events?",
        json!(null),
        json!({}),
    );
    call.method = "POST";
    call.body = None;
    call.status = 201;
    call
}

/// The status body sent, with lastTransitionTime replaced by "T".
fn sent_status(seen: &[Seen]) -> Value {
    let body = &seen
        .iter()
        .find(|s| s.uri.contains("/status"))
        .expect("a status write")
        .body;
    let mut status = body.clone();
    for c in status["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        c["lastTransitionTime"] = json!("T");
    }
    status
}

/// The storage request of the cache PVC as it was applied.
fn sent_cache_request(seen: &[Seen]) -> Value {
    let pvc = seen
        .iter()
        .find(|s| s.uri.contains("persistentvolumeclaims/glance-image-cache?"))
        .expect("the cache PVC was applied");
    pvc.body["spec"]["resources"]["requests"]["storage"].clone()
}

/// (type, reason, note) of each event sent.
fn sent_events(seen: &[Seen]) -> Vec<(String, String, String)> {
    seen.iter()
        .filter(|s| s.uri.starts_with("/apis/events.k8s.io"))
        .map(|s| {
            assert_eq!(s.body["regarding"]["name"], json!("glance"));
            assert_eq!(s.body["regarding"]["kind"], json!("Glance"));
            (
                s.body["type"].as_str().unwrap_or("").to_owned(),
                s.body["reason"].as_str().unwrap_or("").to_owned(),
                s.body["note"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "observedGeneration": 1, "lastTransitionTime": "T"})
}

fn status_of(conditions: Vec<Value>, ready: i32, cache: Option<i64>) -> Value {
    let mut status = json!({"observedGeneration": 1, "conditions": conditions, "readyReplicas": ready,
                            "apiEndpoint": "http://glance-api.openstack.svc:9292"});
    if let Some(bytes) = cache {
        status["imageCacheMaxSize"] = json!(bytes);
    }
    json!({"apiVersion": "glance.openstack.org/v1beta1", "kind": "Glance", "status": status})
}

/// The seed Glance as first created (no status, no PVCs yet), and its children.
fn fresh_seed() -> (Glance, Children) {
    let object = glance("seed.yaml");
    let observed = Observed {
        database_connection: Some(DB_URL.into()),
        ..Default::default()
    };
    let expected = children(&object, &observed);
    (object, expected)
}

#[tokio::test]
async fn first_creation_applies_every_child_then_writes_status() {
    let (object, expected) = fresh_seed();
    let mut calls = observe_calls(Some(DB_URL), None, None);
    calls.extend(apply_calls(
        &expected,
        json!({"status": {"phase": "Pending"}}),
        json!({}),
    ));
    calls.push(status_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(300))
    );
    assert_eq!(
        sent_status(&seen),
        status_of(
            vec![
                condition(
                    "Ready",
                    "False",
                    "Pending",
                    "StorageReady: PVC glance-storage is not bound yet"
                ),
                condition(
                    "ConfigReady",
                    "True",
                    "Rendered",
                    "rendered with image_cache_max_size = 10000000000 bytes"
                ),
                condition(
                    "StorageReady",
                    "False",
                    "Pending",
                    "PVC glance-storage is not bound yet"
                ),
                condition(
                    "CacheReady",
                    "False",
                    "Pending",
                    "PVC glance-image-cache is not bound yet"
                ),
                condition(
                    "DeploymentReady",
                    "False",
                    "Progressing",
                    "0/1 replicas ready"
                ),
            ],
            0,
            Some(10_000_000_000),
        )
    );
    assert_eq!(
        sent_events(&seen),
        vec![],
        "first creation: nothing to warn about"
    );
    // The config Secret carries the URL read from the databaseInstance Secret.
    let conf = &seen[3].body["data"]["00-config.conf"];
    let text = String::from_utf8(base64_decode(conf.as_str().expect("base64"))).expect("utf-8");
    assert!(text.contains(&format!("connection = {DB_URL}\n")), "{text}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    let v: ByteString = serde_json::from_value(json!(s)).expect("base64");
    v.0
}

/// A Glance whose status is what a previous reconcile wrote for a ready deployment.
fn ready_glance(fixture: &str, cache_bytes: Option<i64>, cache_condition: Value) -> Glance {
    let mut object = glance(fixture);
    let status = status_of(
        vec![
            condition("Ready", "True", "Ready", "glance-api is ready"),
            condition(
                "ConfigReady",
                "True",
                "Rendered",
                &match cache_bytes {
                    Some(b) => format!("rendered with image_cache_max_size = {b} bytes"),
                    None => "rendered with the image cache off".to_owned(),
                },
            ),
            condition(
                "StorageReady",
                "True",
                "Bound",
                "PVC glance-storage is bound",
            ),
            cache_condition,
            condition("DeploymentReady", "True", "Available", "1/1 replicas ready"),
        ],
        1,
        cache_bytes,
    )["status"]
        .clone();
    let mut status = status;
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        c["lastTransitionTime"] = json!("2026-11-01T00:00:00Z");
    }
    object.status = Some(serde_json::from_value(status).expect("status"));
    object
}

/// A seed Glance that an earlier reconcile made ready, with bound 10G volumes, now asking
/// for `cache_size` with the database at `db_url`; and the observe and apply calls it makes.
fn bound_seed(cache_size: &str, db_url: &str) -> (Glance, Vec<Call>) {
    let mut object = ready_glance(
        "seed.yaml",
        Some(10_000_000_000),
        condition(
            "CacheReady",
            "True",
            "Bound",
            "PVC glance-image-cache is bound",
        ),
    );
    object.spec.image_cache_size = Some(Quantity(cache_size.into()));
    let observed = Observed {
        database_connection: Some(db_url.into()),
        storage_request: size("10G", 10_000_000_000),
        cache_request: size("10G", 10_000_000_000),
        ..Default::default()
    };
    let expected = children(&object, &observed);
    let mut calls = observe_calls(
        Some(db_url),
        Some(pvc_with("glance-storage", "10G")),
        Some(pvc_with("glance-image-cache", "10G")),
    );
    calls.extend(apply_calls(&expected, bound(), deployment_ready(1)));
    (object, calls)
}

#[tokio::test]
async fn steady_state_sends_identical_applies_and_no_status_write_delete_or_event() {
    let (object, calls) = bound_seed("10G", DB_URL);
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(300))
    );
    let writes: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method != "GET" && s.method != "PATCH")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(seen.iter().all(|s| !s.uri.contains("/status")));
}

#[tokio::test]
async fn cache_turned_on_applies_the_cache_pvc_and_cronjobs() {
    let mut object = ready_glance(
        "cache-off.yaml",
        None,
        condition("CacheReady", "True", "CacheDisabled", "image cache is off"),
    );
    object.spec.image_cache_size = Some(Quantity("10Gi".into()));
    let observed = Observed {
        storage_request: size("10G", 10_000_000_000),
        ..Default::default()
    };
    let expected = children(&object, &observed);
    assert!(expected.cache.is_some());
    let mut calls = observe_calls(None, Some(pvc_with("glance-storage", "10G")), None);
    calls.extend(apply_calls(&expected, bound(), deployment_ready(1)));
    calls.push(status_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    result.expect("reconciled");
    assert_eq!(sent_cache_request(&seen), json!("10Gi"));
    assert_eq!(
        sent_status(&seen)["status"]["imageCacheMaxSize"],
        json!(10_737_418_240i64)
    );
    assert_eq!(
        sent_events(&seen),
        vec![(
            "Normal".into(),
            "Bound".into(),
            "PVC glance-image-cache is bound".into()
        )]
    );
}

#[tokio::test]
async fn cache_turned_off_deletes_the_cronjobs_then_the_cache_pvc() {
    let mut object = ready_glance(
        "seed.yaml",
        Some(10_000_000_000),
        condition(
            "CacheReady",
            "True",
            "Bound",
            "PVC glance-image-cache is bound",
        ),
    );
    object.spec.image_cache_size = None;
    let observed = Observed {
        database_connection: Some(DB_URL.into()),
        storage_request: size("10G", 10_000_000_000),
        ..Default::default()
    };
    let expected = children(&object, &observed);
    assert!(expected.cache.is_none());
    let mut calls = observe_calls(
        Some(DB_URL),
        Some(pvc_with("glance-storage", "10G")),
        Some(pvc_with("glance-image-cache", "10G")),
    );
    let mut applies = apply_calls(&expected, bound(), deployment_ready(1));
    let service_and_deployment = applies.split_off(2);
    calls.extend(applies);
    calls.push(Call::delete(
        "/apis/batch/v1/namespaces/openstack/cronjobs/glance-cache-pruner?",
    ));
    calls.push(Call::fail(
        "DELETE",
        "/apis/batch/v1/namespaces/openstack/cronjobs/glance-cache-cleaner?",
        404,
        "NotFound",
        "already gone",
    ));
    calls.push(Call::delete(format!(
        "{NS}/persistentvolumeclaims/glance-image-cache?"
    )));
    calls.extend(service_and_deployment);
    calls.push(status_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    result.expect("reconciled");
    let status = sent_status(&seen);
    assert!(
        status["status"].get("imageCacheMaxSize").is_none(),
        "{status}"
    );
    assert_eq!(
        status["status"]["conditions"][3],
        condition("CacheReady", "True", "CacheDisabled", "image cache is off")
    );
    assert_eq!(
        sent_events(&seen),
        vec![(
            "Normal".into(),
            "CacheDisabled".into(),
            "image cache is off".into()
        )]
    );
    let deployment = seen
        .iter()
        .find(|s| s.uri.contains("deployments"))
        .expect("deployment");
    assert!(
        !deployment.body.to_string().contains("image-cache"),
        "the API no longer mounts the cache"
    );
}

#[tokio::test]
async fn cache_off_steady_state_deletes_nothing() {
    let object = ready_glance(
        "cache-off.yaml",
        None,
        condition("CacheReady", "True", "CacheDisabled", "image cache is off"),
    );
    let expected = children(
        &object,
        &Observed {
            storage_request: size("10G", 10_000_000_000),
            ..Default::default()
        },
    );
    let mut calls = observe_calls(None, Some(pvc_with("glance-storage", "10G")), None);
    calls.extend(apply_calls(&expected, bound(), deployment_ready(1)));
    let (result, _, _) = run(DeserializeGuard(Ok(object)), calls).await;
    result.expect("reconciled");
}

#[tokio::test]
async fn growing_image_cache_size_expands_the_pvc() {
    let (object, mut calls) = bound_seed("20G", DB_URL);
    calls.push(status_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    result.expect("reconciled");
    assert_eq!(sent_cache_request(&seen), json!("20G"));
    assert_eq!(
        sent_status(&seen)["status"]["imageCacheMaxSize"],
        json!(20_000_000_000i64)
    );
    assert_eq!(sent_events(&seen), vec![]);
}

#[tokio::test]
async fn shrinking_lowers_the_limit_keeps_the_pvc_and_warns_once() {
    let (object, mut calls) = bound_seed("5G", DB_URL);
    calls.push(status_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("no error loop"),
        Action::requeue(Duration::from_secs(300))
    );
    assert_eq!(sent_cache_request(&seen), json!("10G"));
    let conf = base64_decode(
        seen[3].body["data"]["00-config.conf"]
            .as_str()
            .expect("conf"),
    );
    assert!(
        String::from_utf8(conf)
            .expect("utf-8")
            .contains("image_cache_max_size = 5000000000\n")
    );
    let message = "imageCacheSize 5G is smaller than PVC glance-image-cache (10G); a PVC cannot shrink, so it keeps its size and image_cache_max_size is lowered to 5000000000 bytes";
    assert_eq!(
        sent_events(&seen),
        vec![("Warning".into(), "ShrinkIgnored".into(), message.into())]
    );
    assert_eq!(
        sent_status(&seen)["status"]["conditions"][3],
        condition("CacheReady", "True", "ShrinkIgnored", message)
    );
    assert_eq!(
        sent_status(&seen)["status"]["imageCacheMaxSize"],
        json!(5_000_000_000i64)
    );
}

#[tokio::test]
async fn a_refused_resize_is_reported_not_retried_in_a_loop() {
    let (object, mut calls) = bound_seed("20G", DB_URL);
    let refusal = "persistentvolumeclaims \"glance-image-cache\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize";
    // The cache PVC's apply, after the three reads and the config and storage applies.
    calls[5] = Call::fail(
        "PATCH",
        format!("{NS}/persistentvolumeclaims/glance-image-cache{APPLY}"),
        403,
        "Forbidden",
        refusal,
    );
    calls.push(status_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("terminal, not an error"),
        Action::requeue(Duration::from_secs(300))
    );
    let note = format!("PVC glance-image-cache: {refusal}");
    assert_eq!(
        sent_events(&seen),
        vec![("Warning".into(), "ResizeRejected".into(), note.clone())]
    );
    let status = sent_status(&seen);
    assert_eq!(
        status["status"]["conditions"][3],
        condition("CacheReady", "False", "ResizeRejected", &note)
    );
    assert_eq!(status["status"]["conditions"][0]["status"], json!("False"));
}

#[tokio::test]
async fn an_api_error_fails_the_reconcile_and_backs_off() {
    let (object, expected) = fresh_seed();
    let mut calls = observe_calls(Some(DB_URL), None, None);
    let mut applies = apply_calls(&expected, bound(), json!({}));
    let last = applies.len() - 1;
    applies[last] = Call::fail(
        "PATCH",
        format!("/apis/apps/v1/namespaces/openstack/deployments/glance-api{APPLY}"),
        500,
        "InternalError",
        "etcd timeout",
    );
    calls.extend(applies);
    let (result, seen, ctx) = run(DeserializeGuard(Ok(object.clone())), calls).await;
    let error = result.expect_err("the 500 fails the reconcile");
    assert!(error.to_string().contains("etcd timeout"), "{error}");
    assert!(
        seen.iter().all(|s| !s.uri.contains("/status")),
        "no status write after a failure"
    );
    let obj = Arc::new(DeserializeGuard(Ok(object)));
    let delays: Vec<Action> = (0..8)
        .map(|_| error_policy(obj.clone(), &error, ctx.clone()))
        .collect();
    let secs = [5, 10, 20, 40, 80, 160, 300, 300];
    assert_eq!(
        delays,
        secs.iter()
            .map(|s| Action::requeue(Duration::from_secs(*s)))
            .collect::<Vec<_>>()
    );
    let metrics = ctx.metrics.encode().expect("metrics");
    assert!(
        metrics.contains("glance_operator_reconcile_failures_total{error=\"kube\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_missing_database_secret_is_named_in_a_condition_and_retried() {
    let object = glance("seed.yaml");
    let calls = vec![
        not_found(format!("{NS}/secrets/openstack")),
        not_found(format!("{NS}/persistentvolumeclaims/glance-storage")),
        not_found(format!("{NS}/persistentvolumeclaims/glance-image-cache")),
        status_call(),
        event_call(),
    ];
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reported"),
        Action::requeue(Duration::from_secs(30))
    );
    let message = "databaseInstance Secret \"openstack\" not found in this namespace";
    let status = sent_status(&seen);
    assert_eq!(
        status["status"]["conditions"],
        json!([
            condition(
                "Ready",
                "False",
                "DatabaseSecretNotReady",
                &format!("ConfigReady: {message}")
            ),
            condition("ConfigReady", "False", "DatabaseSecretNotReady", message),
        ])
    );
    assert_eq!(
        sent_events(&seen),
        vec![(
            "Warning".into(),
            "DatabaseSecretNotReady".into(),
            message.into()
        )]
    );
}

#[tokio::test]
async fn a_database_secret_without_connection_key_is_named_too() {
    let object = glance("seed.yaml");
    let mut secret = db_secret(DB_URL);
    secret["data"] = json!({"url": "eA=="});
    let calls = vec![
        Call::get(format!("{NS}/secrets/openstack"), 200, secret),
        not_found(format!("{NS}/persistentvolumeclaims/glance-storage")),
        not_found(format!("{NS}/persistentvolumeclaims/glance-image-cache")),
        status_call(),
        event_call(),
    ];
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reported"),
        Action::requeue(Duration::from_secs(30))
    );
    assert_eq!(
        sent_status(&seen)["status"]["conditions"][1]["message"],
        json!("databaseInstance Secret \"openstack\" has no key \"connection\"")
    );
}

#[tokio::test]
async fn a_changed_database_secret_rerenders_the_config_and_rolls_the_pods() {
    let mut hashes = Vec::new();
    for url in [DB_URL, "mysql+pymysql://glance:rotated@db/glance"] {
        let (object, calls) = bound_seed("10G", url);
        let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
        result.expect("reconciled");
        let conf = base64_decode(
            seen[3].body["data"]["00-config.conf"]
                .as_str()
                .expect("conf"),
        );
        assert!(
            String::from_utf8(conf)
                .expect("utf-8")
                .contains(&format!("connection = {url}\n"))
        );
        let deployment = seen
            .iter()
            .find(|s| s.uri.contains("deployments"))
            .expect("deployment");
        hashes.push(deployment.body["spec"]["template"]["metadata"]["annotations"]["glance.openstack.org/config-hash"].clone());
    }
    assert_ne!(hashes[0], hashes[1]);
}

#[tokio::test]
async fn an_invalid_spec_is_reported_without_touching_children() {
    let mut object = glance("seed.yaml");
    object.spec.image_cache_size = Some(Quantity("1500m".into()));
    let (result, seen, _) = run(
        DeserializeGuard(Ok(object)),
        vec![status_call(), event_call()],
    )
    .await;
    assert_eq!(result.expect("reported"), Action::await_change());
    let message = "spec.imageCacheSize: \"1500m\" is not a whole number of bytes";
    assert_eq!(
        sent_status(&seen)["status"]["conditions"][1],
        condition("ConfigReady", "False", "InvalidSpec", message)
    );
    assert_eq!(
        sent_events(&seen),
        vec![("Warning".into(), "InvalidSpec".into(), message.into())]
    );
}

#[tokio::test]
async fn a_malformed_object_is_reported_not_crashing_the_watch() {
    let raw = json!({
        "apiVersion": "glance.openstack.org/v1beta1", "kind": "Glance",
        "metadata": {"name": "glance", "namespace": "openstack", "uid": "u1"},
        "spec": {"glanceAPI": {"replicas": "many"}},
    });
    let guard: DeserializeGuard<Glance> =
        serde_json::from_value(raw).expect("the guard always deserializes");
    assert!(guard.0.is_err());
    let (result, seen, _) = run(guard, vec![event_call()]).await;
    assert_eq!(result.expect("reported"), Action::await_change());
    let events = sent_events(&seen);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("Warning", "InvalidObject")
    );
    assert!(events[0].2.contains("\"many\""), "{}", events[0].2);
}

const KEYS_SECRET: &str = "ceph-s3-keys";

fn keys_secret(conf: &str) -> Value {
    to_json(&Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(KEYS_SECRET.into()),
            namespace: Some("openstack".into()),
            ..Default::default()
        },
        data: Some([("s3.conf".to_owned(), ByteString(conf.as_bytes().to_vec()))].into()),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}

/// A ready seed Glance naming KEYS_SECRET in customServiceConfigSecrets, whose s3.conf is
/// `conf`: the calls of a steady reconcile (the Secret is read right after the database
/// Secret, before the PVCs), and the config hash the Deployment must carry.
fn seed_with_keys(conf: &str) -> (Glance, Vec<Call>, String) {
    let mut object = ready_glance(
        "seed.yaml",
        Some(10_000_000_000),
        condition(
            "CacheReady",
            "True",
            "Bound",
            "PVC glance-image-cache is bound",
        ),
    );
    object.spec.custom_service_config_secrets = vec![KEYS_SECRET.into()];
    let secret: Secret = serde_json::from_value(keys_secret(conf)).expect("secret");
    let extra = vec![ConfigSecret {
        name: KEYS_SECRET.into(),
        data: secret.data.clone().expect("data"),
    }];
    let observed = Observed {
        database_connection: Some(DB_URL.into()),
        config_secrets: extra.clone(),
        storage_request: size("10G", 10_000_000_000),
        cache_request: size("10G", 10_000_000_000),
    };
    let expected = children(&object, &observed);
    let hash = config_hash_with_secrets(&expected.config, &extra);
    let mut calls = observe_calls(
        Some(DB_URL),
        Some(pvc_with("glance-storage", "10G")),
        Some(pvc_with("glance-image-cache", "10G")),
    );
    calls.insert(
        1,
        Call::get(
            format!("{NS}/secrets/{KEYS_SECRET}"),
            200,
            keys_secret(conf),
        ),
    );
    calls.extend(apply_calls(&expected, bound(), deployment_ready(1)));
    (object, calls, hash)
}

/// The pod template annotations of the applied Deployment, and its config volume.
fn sent_deployment(seen: &[Seen]) -> (Value, Value) {
    let deployment = seen
        .iter()
        .find(|s| s.uri.contains("deployments/glance-api?"))
        .expect("the Deployment was applied");
    let template = &deployment.body["spec"]["template"];
    (
        template["metadata"]["annotations"]["glance.openstack.org/config-hash"].clone(),
        template["spec"]["volumes"][0].clone(),
    )
}

#[tokio::test]
async fn a_named_config_secret_is_read_mounted_and_hashed_into_the_deployment() {
    let conf = "[ceph]\ns3_store_access_key = AKIA0\ns3_store_secret_key = s0\n";
    let (object, calls, hash) = seed_with_keys(conf);
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(300))
    );
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].uri, format!("{NS}/secrets/{KEYS_SECRET}"));
    let (annotation, volume) = sent_deployment(&seen);
    assert_eq!(annotation, json!(hash));
    let config = seen
        .iter()
        .find(|s| s.uri.contains("secrets/glance-config?"))
        .expect("config Secret applied");
    let plain: Secret = serde_json::from_value(config.body.clone()).expect("secret");
    assert_ne!(
        annotation,
        json!(config_hash(&plain)),
        "the keys Secret is part of the hash"
    );
    assert!(
        !config
            .body
            .to_string()
            .contains(&json!(ByteString(conf.as_bytes().to_vec())).to_string()),
        "the keys are mounted from their own Secret, never copied into the config Secret"
    );
    assert_eq!(
        volume["projected"]["sources"][1],
        json!({"secret": {"name": KEYS_SECRET, "items": [{"key": "s3.conf", "path": "02-ceph-s3-keys-s3.conf"}]}})
    );
    // The cache jobs mount it too.
    for name in ["glance-cache-pruner", "glance-cache-cleaner"] {
        let cronjob = seen
            .iter()
            .find(|s| s.uri.contains(&format!("cronjobs/{name}?")))
            .expect("cronjob applied");
        assert_eq!(
            cronjob.body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"][0], volume,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_changed_config_secret_rolls_the_pods() {
    let mut annotations = Vec::new();
    for conf in [
        "[ceph]\ns3_store_secret_key = before\n",
        "[ceph]\ns3_store_secret_key = rotated\n",
    ] {
        let (object, calls, hash) = seed_with_keys(conf);
        let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
        result.expect("reconciled");
        let (annotation, _) = sent_deployment(&seen);
        assert_eq!(annotation, json!(hash));
        annotations.push(annotation);
    }
    assert_ne!(annotations[0], annotations[1]);
}

#[tokio::test]
async fn a_missing_config_secret_is_named_in_a_condition_and_nothing_is_applied() {
    let mut object = glance("seed.yaml");
    object.spec.custom_service_config_secrets = vec![KEYS_SECRET.into(), "other-keys".into()];
    // The script ends with the status and the event: any apply or delete would be an
    // unexpected request and fail the test.
    let calls = vec![
        Call::get(format!("{NS}/secrets/openstack"), 200, db_secret(DB_URL)),
        not_found(format!("{NS}/secrets/{KEYS_SECRET}")),
        Call::get(
            format!("{NS}/secrets/other-keys"),
            200,
            json!({"metadata": {"name": "other-keys", "namespace": "openstack"}}),
        ),
        not_found(format!("{NS}/persistentvolumeclaims/glance-storage")),
        not_found(format!("{NS}/persistentvolumeclaims/glance-image-cache")),
        status_call(),
        event_call(),
    ];
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reported"),
        Action::requeue(Duration::from_secs(30))
    );
    let message = "customServiceConfigSecrets: Secret \"ceph-s3-keys\" not found in this namespace: create it, or remove it from the list";
    assert_eq!(
        sent_status(&seen)["status"]["conditions"],
        json!([
            condition(
                "Ready",
                "False",
                "ConfigSecretNotReady",
                &format!("ConfigReady: {message}")
            ),
            condition("ConfigReady", "False", "ConfigSecretNotReady", message),
        ])
    );
    assert_eq!(
        sent_events(&seen),
        vec![(
            "Warning".into(),
            "ConfigSecretNotReady".into(),
            message.into()
        )]
    );
    assert!(
        seen.iter()
            .all(|s| s.method == "GET" || s.uri.contains("/status") || s.uri.contains("/events")),
        "nothing applied or deleted"
    );
}

#[test]
fn status_body_helper_is_a_failure_for_errors() {
    assert_eq!(
        status_body(404, "NotFound", "x")["status"],
        json!("Failure")
    );
}
