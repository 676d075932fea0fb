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

const APPS: &str = "/apis/apps/v1/namespaces/openstack";
const BATCH: &str = "/apis/batch/v1/namespaces/openstack";
/// The uid of the fixtures' Glance.
const UID: &str = "6f7e1c1e-3b0a-4c55-9d3e-1b2f7c1a0001";
/// The query of a list by the children's labels.
const SELECTOR: &str = "?&labelSelector=app.kubernetes.io%2Fname%3Dglance%2Capp.kubernetes.io%2Finstance%3Dglance%2Capp.kubernetes.io%2Fmanaged-by%3Dglance-operator";

fn bound() -> Value {
    json!({"status": {"phase": "Bound"}})
}

fn statefulset_ready(replicas: i32) -> Value {
    json!({"metadata": {"generation": 1},
           "status": {"observedGeneration": 1, "readyReplicas": replicas, "updatedReplicas": replicas}})
}

fn pvc_with(name: &str, request: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": "openstack"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": request}}},
           "status": {"phase": "Bound"}})
}

/// The access modes `<name>-storage` was created with for `replicas` replicas sharing the
/// file store.
fn storage_modes(replicas: i32) -> Vec<String> {
    vec![
        if replicas > 1 {
            "ReadWriteMany"
        } else {
            "ReadWriteOnce"
        }
        .to_owned(),
    ]
}

/// The storage PVC (created for `replicas`) and the cache volumes of replicas
/// 0..replicas, bound at `cache`.
fn bound_pvcs(replicas: i32, cache: Option<&str>) -> Vec<Value> {
    let mut storage = pvc_with("glance-storage", "10G");
    storage["spec"]["accessModes"] = json!(storage_modes(replicas));
    let mut pvcs = vec![storage];
    if let Some(request) = cache {
        pvcs.extend(
            (0..replicas).map(|i| pvc_with(&format!("image-cache-glance-api-{i}"), request)),
        );
    }
    pvcs
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

/// What observe reads from a cluster holding `pvcs` (they are also what
/// Observed.cache_volumes is built from), for `replicas` replicas and a cache template of
/// `template` (the live StatefulSet's, when it exists).
fn observed_from(
    db: Option<&str>,
    replicas: i32,
    cache: Option<&str>,
    template: Option<&str>,
) -> Observed {
    let bytes = |q: &str| glance_operator::quantity::parse_bytes(q).expect("quantity");
    Observed {
        database_connection: db.map(str::to_owned),
        storage_request: size("10G", 10_000_000_000),
        storage_access_modes: Some(storage_modes(replicas)),
        cache_template_request: template.and_then(|q| size(q, bytes(q))),
        cache_volumes: cache
            .map(|q| {
                (0..replicas)
                    .map(|i| {
                        (
                            format!("image-cache-glance-api-{i}"),
                            Size {
                                quantity: q.into(),
                                bytes: bytes(q),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The observe step's reads: the database Secret, the labelled PVCs, then the StatefulSet
/// and the Deployment named glance-api and the Job glance-db-sync (each given, else not
/// found).
fn observe_calls(
    db: Option<&str>,
    pvcs: Vec<Value>,
    statefulset: Option<Value>,
    deployment: Option<Value>,
    job: Option<Value>,
) -> Vec<Call> {
    let mut calls = Vec::new();
    if let Some(url) = db {
        calls.push(Call::get(
            format!("{NS}/secrets/openstack"),
            200,
            db_secret(url),
        ));
    }
    calls.push(Call::get(
        format!("{NS}/persistentvolumeclaims{SELECTOR}"),
        200,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": pvcs}),
    ));
    for (uri, live) in [
        (format!("{APPS}/statefulsets/glance-api"), statefulset),
        (format!("{APPS}/deployments/glance-api"), deployment),
        (format!("{BATCH}/jobs/glance-db-sync"), job),
    ] {
        calls.push(match live {
            Some(object) => Call::get(uri, 200, object),
            None => not_found(uri),
        });
    }
    calls
}

/// The db-sync Job of `c` as the server holds it once it completed (None for SQLite).
fn done_job(c: &Children) -> Option<Value> {
    c.db_sync.as_ref().map(|job| {
        let mut live = to_json(job);
        common::mock::merge(&mut live, &json!({"status": {"succeeded": 1}}));
        live
    })
}

/// The server-side apply that creates the db-sync Job of `c`.
fn job_apply(c: &Children) -> Call {
    Call::apply(
        format!("{BATCH}/jobs/glance-db-sync{APPLY}"),
        to_json(c.db_sync.as_ref().expect("a db-sync Job")),
        json!({}),
    )
}

/// The StatefulSet as the server holds it after an earlier apply of `c`.
fn live_statefulset(c: &Children, replicas: i32) -> Value {
    let mut live = to_json(&c.statefulset);
    common::mock::merge(&mut live, &statefulset_ready(replicas));
    live
}

/// The server-side apply of the StatefulSet, answered with `answer` merged in.
fn statefulset_apply(c: &Children, answer: Value) -> Call {
    Call::apply(
        format!("{APPS}/statefulsets/glance-api{APPLY}"),
        to_json(&c.statefulset),
        answer,
    )
}

/// Server-side applies of every child, in the order apply sends them, with `workload`
/// (the StatefulSet's step) after the Services and the resizes, and the CronJobs last.
fn apply_calls(c: &Children, pvc_answer: Value, workload: Vec<Call>) -> Vec<Call> {
    let mut calls = applies_before_migration(c, pvc_answer, workload);
    calls.extend(cronjob_calls(c));
    calls
}

/// The applies while the db-sync Job has not completed: the CronJobs wait for it too.
fn applies_before_migration(c: &Children, pvc_answer: Value, workload: Vec<Call>) -> Vec<Call> {
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
        Call::apply(
            format!("{NS}/services/glance-api{APPLY}"),
            to_json(&c.service),
            json!({}),
        ),
        Call::apply(
            format!("{NS}/services/glance-api-headless{APPLY}"),
            to_json(&c.headless_service),
            json!({}),
        ),
    ];
    for resize in c.cache.iter().flat_map(|cache| &cache.resizes) {
        calls.push(Call::apply(
            format!(
                "{NS}/persistentvolumeclaims/{}{APPLY}",
                resize.metadata.name.as_deref().expect("name")
            ),
            to_json(resize),
            pvc_answer.clone(),
        ));
    }
    calls.extend(workload);
    calls
}

/// The applies of the CronJobs of `c`.
fn cronjob_calls(c: &Children) -> Vec<Call> {
    let mut calls = Vec::new();
    for cronjob in c.cache.iter().flat_map(|cache| &cache.cronjobs) {
        calls.push(Call::apply(
            format!(
                "{BATCH}/cronjobs/{}{APPLY}",
                cronjob.metadata.name.as_deref().expect("name")
            ),
            to_json(cronjob),
            json!({}),
        ));
    }
    calls
}

/// The sweep's kinds in the order it lists them, with the path they are listed under.
fn sweep_kinds() -> [(&'static str, String); 5] {
    [
        ("CronJob", format!("{BATCH}/cronjobs")),
        ("Job", format!("{BATCH}/jobs")),
        ("StatefulSet", format!("{APPS}/statefulsets")),
        ("Service", format!("{NS}/services")),
        (
            "PersistentVolumeClaim",
            format!("{NS}/persistentvolumeclaims"),
        ),
    ]
}

/// Everything `c` names, as the sweep's lists would show it, plus `more`.
fn listed(c: &Children, more: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut listed: Vec<(String, String)> = c
        .names()
        .into_iter()
        .filter(|(kind, _)| kind != "Secret")
        .collect();
    listed.extend(more.iter().map(|(k, n)| ((*k).to_owned(), (*n).to_owned())));
    listed
}

/// The sweep: per kind, a list by label answered with the `listed` (kind, name) of that
/// kind, owned by the Glance (PVCs by nobody), then a background delete of each `deleted`
/// name of that kind.
fn sweep_calls(listed: &[(String, String)], deleted: &[(&str, &str)]) -> Vec<Call> {
    let mut calls = Vec::new();
    for (kind, path) in sweep_kinds() {
        let items: Vec<Value> = listed
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, name)| {
                let owners = if kind == "PersistentVolumeClaim" {
                    json!([])
                } else {
                    json!([{"apiVersion": "glance.openstack.org/v1beta1", "kind": "Glance",
                            "name": "glance", "uid": UID, "controller": true}])
                };
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                       "metadata": {"name": name, "namespace": "openstack", "ownerReferences": owners}})
            })
            .collect();
        calls.push(Call::get(
            format!("{path}{SELECTOR}"),
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items}),
        ));
        // Deleted in the order they are listed.
        for (_, name) in listed.iter().filter(|(k, _)| k == kind) {
            if deleted.contains(&(kind, name.as_str())) {
                calls.push(Call::delete(format!("{path}/{name}?")));
            }
        }
    }
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

/// The StatefulSet as it was applied.
fn sent_statefulset(seen: &[Seen]) -> Value {
    seen.iter()
        .find(|s| s.uri.contains("statefulsets/glance-api?") && s.method == "PATCH")
        .expect("the StatefulSet was applied")
        .body
        .clone()
}

/// The request of the cache claim template as it was applied.
fn sent_cache_request(seen: &[Seen]) -> Value {
    sent_statefulset(seen)["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
        ["storage"]
        .clone()
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

/// The config file rendered into the applied config Secret.
fn sent_config(seen: &[Seen]) -> String {
    let config = seen
        .iter()
        .find(|s| s.uri.contains("secrets/glance-config?"))
        .expect("config Secret applied");
    let conf = config.body["data"]["00-config.conf"]
        .as_str()
        .expect("base64");
    String::from_utf8(base64_decode(conf)).expect("utf-8")
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
async fn first_creation_migrates_the_database_before_the_statefulset() {
    let (object, expected) = fresh_seed();
    let mut calls = observe_calls(Some(DB_URL), vec![], None, None, None);
    // The database is migrated first; the StatefulSet and the CronJobs wait for the Job.
    calls.extend(applies_before_migration(
        &expected,
        json!({"status": {"phase": "Pending"}}),
        vec![job_apply(&expected)],
    ));
    calls.extend(sweep_calls(&[], &[]));
    calls.push(status_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(5))
    );
    let mut want = status_of(
        vec![
            condition(
                "Ready",
                "False",
                "Pending",
                "StorageReady: PVC glance-storage is not bound yet",
            ),
            condition(
                "ConfigReady",
                "True",
                "Rendered",
                "rendered with image_cache_max_size = 10000000000 bytes",
            ),
            condition(
                "StorageReady",
                "False",
                "Pending",
                "PVC glance-storage is not bound yet",
            ),
            condition(
                "CacheReady",
                "False",
                "Pending",
                "0 of 1 cache volumes bound; waiting for image-cache-glance-api-0",
            ),
            condition(
                "APIReady",
                "False",
                "Replacing",
                "StatefulSet not rolled: Job glance-db-sync started glance-manage db_sync",
            ),
            condition(
                "DatabaseReady",
                "False",
                "Migrating",
                "Job glance-db-sync started glance-manage db_sync",
            ),
            unauthenticated(),
        ],
        0,
        Some(10_000_000_000),
    );
    // No StatefulSet yet: no replica count to report.
    want["status"]
        .as_object_mut()
        .expect("status")
        .remove("readyReplicas");
    assert_eq!(sent_status(&seen), want);
    assert_eq!(
        sent_events(&seen),
        vec![],
        "first creation: nothing to warn about"
    );
    // The config Secret carries the URL read from the databaseInstance Secret.
    let text = sent_config(&seen);
    assert!(text.contains(&format!("connection = {DB_URL}\n")), "{text}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    let v: ByteString = serde_json::from_value(json!(s)).expect("base64");
    v.0
}

/// DatabaseReady once the database is migrated: by the Job, or SQLite by the init container.
fn database_condition(shared: bool) -> Value {
    if shared {
        condition(
            "DatabaseReady",
            "True",
            "Migrated",
            "Job glance-db-sync completed glance-manage db_sync",
        )
    } else {
        condition(
            "DatabaseReady",
            "True",
            "SQLite",
            "SQLite on the storage volume, migrated by the pod's db-sync init container",
        )
    }
}

/// Authenticated without spec.keystone: a plain statement, not counted in Ready.
fn unauthenticated() -> Value {
    condition(
        "Authenticated",
        "False",
        "Unauthenticated",
        "spec.keystone is not set: the Image API serves every request without authentication",
    )
}

/// Authenticated with spec.keystone, naming the endpoint tokens are checked with.
fn authenticated(auth_url: &str) -> Value {
    condition(
        "Authenticated",
        "True",
        "Keystone",
        &format!(
            "Image API requests need a Keystone token, checked with {auth_url} (keystone.authUrl)"
        ),
    )
}

/// A Glance whose status is what a previous reconcile wrote for `replicas` ready replicas.
fn ready_glance(fixture: &str, replicas: i32, cache_bytes: Option<i64>) -> Glance {
    let mut object = glance(fixture);
    object.spec.glance_api.replicas = replicas;
    let cache_condition = match cache_bytes {
        Some(_) => condition(
            "CacheReady",
            "True",
            "Bound",
            &format!("{replicas} of {replicas} cache volumes bound"),
        ),
        None => condition("CacheReady", "True", "CacheDisabled", "image cache is off"),
    };
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
            condition(
                "APIReady",
                "True",
                "Available",
                &format!("{replicas}/{replicas} replicas ready"),
            ),
            database_condition(object.spec.database_instance.is_some()),
            match &object.spec.keystone {
                Some(keystone) => authenticated(&keystone.auth_url),
                None => unauthenticated(),
            },
        ],
        replicas,
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

/// What an earlier reconcile left for the seed Glance with `replicas` replicas and a
/// 10G cache: its children, as the cluster holds them.
fn earlier(replicas: i32, db_url: &str) -> Children {
    let mut before = ready_glance("seed.yaml", replicas, Some(10_000_000_000));
    before.status = None;
    children(&before, &observed_from(Some(db_url), replicas, None, None))
}

/// The seed Glance that an earlier reconcile made ready with `replicas` replicas and
/// bound 10G volumes, now asking for `cache_size` with the database at `db_url`; its
/// children, and the observe calls it makes.
fn bound_seed(replicas: i32, cache_size: &str, db_url: &str) -> (Glance, Children, Vec<Call>) {
    let mut object = ready_glance("seed.yaml", replicas, Some(10_000_000_000));
    object.spec.image_cache_size = Some(Quantity(cache_size.into()));
    let expected = children(
        &object,
        &observed_from(Some(db_url), replicas, Some("10G"), Some("10G")),
    );
    let calls = observe_calls(
        Some(db_url),
        bound_pvcs(replicas, Some("10G")),
        Some(live_statefulset(&earlier(replicas, db_url), replicas)),
        None,
        done_job(&expected),
    );
    (object, expected, calls)
}

/// The reads of a cluster holding `replicas` bound 10G cache volumes, the StatefulSet of
/// `live` and the completed db-sync Job of `job`.
fn observe_bound(replicas: i32, live: &Children, job: &Children) -> Vec<Call> {
    observe_calls(
        Some(DB_URL),
        bound_pvcs(replicas, Some("10G")),
        Some(live_statefulset(live, replicas)),
        None,
        done_job(job),
    )
}

/// The children of the seed-like `object` with `replicas` bound 10G cache volumes.
fn seed_children(object: &Glance, replicas: i32) -> Children {
    children(
        object,
        &observed_from(Some(DB_URL), replicas, Some("10G"), Some("10G")),
    )
}

/// Every apply of `c` with `replicas` ready, and a sweep that finds only what `c` names.
fn applied(c: &Children, replicas: i32) -> Vec<Call> {
    let mut calls = apply_calls(
        c,
        bound(),
        vec![statefulset_apply(c, statefulset_ready(replicas))],
    );
    calls.extend(sweep_calls(&listed(c, &[]), &[]));
    calls
}

/// A steady reconcile of `bound_seed`: observe, every apply, an empty sweep.
fn steady_calls(replicas: i32, cache_size: &str, db_url: &str) -> (Glance, Children, Vec<Call>) {
    let (object, expected, mut calls) = bound_seed(replicas, cache_size, db_url);
    calls.extend(applied(&expected, replicas));
    (object, expected, calls)
}

#[tokio::test]
async fn steady_state_sends_identical_applies_and_no_status_write_delete_or_event() {
    for replicas in [1, 3] {
        let (object, _, calls) = steady_calls(replicas, "10G", DB_URL);
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
}

#[tokio::test]
async fn cache_turned_on_recreates_the_statefulset_with_a_claim_template_and_adds_cronjobs() {
    let mut object = ready_glance("cache-off.yaml", 1, None);
    let before = children(&object, &observed_from(None, 1, None, None));
    object.spec.image_cache_size = Some(Quantity("10Gi".into()));
    let expected = children(&object, &observed_from(None, 1, None, None));
    assert!(expected.cache.is_some());
    let mut calls = observe_calls(
        None,
        bound_pvcs(1, None),
        Some(live_statefulset(&before, 1)),
        None,
        None,
    );
    // The claim templates changed: the StatefulSet goes with its pods orphaned, and the
    // new one is applied once it is gone.
    calls.extend(apply_calls(
        &expected,
        bound(),
        vec![Call::delete_with(
            format!("{APPS}/statefulsets/glance-api?"),
            "Background",
        )],
    ));
    calls.extend(sweep_calls(&listed(&before, &[]), &[]));
    calls.push(status_call());
    calls.push(event_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object.clone())), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(5))
    );
    let status = sent_status(&seen);
    assert_eq!(
        status["status"]["imageCacheMaxSize"],
        json!(10_737_418_240i64)
    );
    assert_eq!(
        status["status"]["conditions"][4],
        condition(
            "APIReady",
            "False",
            "Replacing",
            "StatefulSet glance-api is being replaced, because its volume claim templates changed; its pods restart with the new volume"
        )
    );
    let cronjobs: Vec<&str> = seen
        .iter()
        .filter(|s| s.uri.contains("/cronjobs/") && s.method == "PATCH")
        .map(|s| s.body["metadata"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        cronjobs,
        ["glance-cache-pruner-0", "glance-cache-cleaner-0"]
    );

    // The next reconcile finds it gone and applies the one with the template.
    let mut calls = observe_calls(None, bound_pvcs(1, None), None, None, None);
    calls.extend(apply_calls(
        &expected,
        bound(),
        vec![statefulset_apply(&expected, json!({}))],
    ));
    calls.extend(sweep_calls(&listed(&expected, &[]), &[]));
    calls.extend([status_call(), event_call(), event_call()]);
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    result.expect("reconciled");
    assert_eq!(sent_cache_request(&seen), json!("10Gi"));
}

#[tokio::test]
async fn cache_turned_off_with_three_replicas_sweeps_every_cronjob_and_cache_volume() {
    let mut object = ready_glance("seed.yaml", 3, Some(10_000_000_000));
    let before = earlier(3, DB_URL);
    object.spec.image_cache_size = None;
    let expected = children(&object, &observed_from(Some(DB_URL), 3, None, None));
    assert!(expected.cache.is_none());
    let mut calls = observe_bound(3, &before, &expected);
    calls.extend(apply_calls(
        &expected,
        bound(),
        vec![Call::delete_with(
            format!("{APPS}/statefulsets/glance-api?"),
            "Orphan",
        )],
    ));
    let mut deleted: Vec<(&str, String)> = Vec::new();
    for i in 0..3 {
        deleted.push(("CronJob", format!("glance-cache-pruner-{i}")));
        deleted.push(("CronJob", format!("glance-cache-cleaner-{i}")));
    }
    for i in 0..3 {
        deleted.push((
            "PersistentVolumeClaim",
            format!("image-cache-glance-api-{i}"),
        ));
    }
    let deleted: Vec<(&str, &str)> = deleted.iter().map(|(k, n)| (*k, n.as_str())).collect();
    calls.extend(sweep_calls(&listed(&before, &[]), &deleted));
    calls.push(status_call());
    calls.push(event_call());
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
    assert!(
        !sent_config(&seen).contains("image_cache"),
        "the rendered config has no cache options"
    );
}

#[tokio::test]
async fn cache_off_steady_state_deletes_nothing() {
    let object = ready_glance("cache-off.yaml", 1, None);
    let expected = children(&object, &observed_from(None, 1, None, None));
    let mut calls = observe_calls(
        None,
        bound_pvcs(1, None),
        Some(live_statefulset(&expected, 1)),
        None,
        None,
    );
    calls.extend(applied(&expected, 1));
    let (result, _, _) = run(DeserializeGuard(Ok(object)), calls).await;
    result.expect("reconciled");
}

#[tokio::test]
async fn scaling_one_to_three_adds_cronjobs_and_three_to_one_sweeps_them_and_the_volumes() {
    // 1 -> 3: the StatefulSet makes the new volumes; two more pairs of CronJobs.
    let (mut object, _, _) = bound_seed(1, "10G", DB_URL);
    object.spec.glance_api.replicas = 3;
    let before = earlier(1, DB_URL);
    let expected = seed_children(&object, 1);
    let mut calls = observe_bound(1, &before, &expected);
    calls.extend(apply_calls(
        &expected,
        bound(),
        vec![statefulset_apply(&expected, statefulset_ready(1))],
    ));
    calls.extend(sweep_calls(&listed(&before, &[]), &[]));
    // CacheReady, APIReady and StorageReady (below) change.
    calls.push(status_call());
    calls.push(event_call());
    calls.push(event_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    result.expect("reconciled");
    assert_eq!(sent_statefulset(&seen)["spec"]["replicas"], json!(3));
    let cronjobs = seen
        .iter()
        .filter(|s| s.uri.contains("/cronjobs/") && s.method == "PATCH")
        .count();
    assert_eq!(cronjobs, 6);
    assert_eq!(
        sent_status(&seen)["status"]["conditions"][3],
        condition(
            "CacheReady",
            "False",
            "Pending",
            "1 of 3 cache volumes bound; waiting for image-cache-glance-api-1, image-cache-glance-api-2"
        )
    );
    // The storage volume was made ReadWriteOnce for one replica, and that cannot change:
    // said plainly, not retried as a resize.
    assert_eq!(
        sent_status(&seen)["status"]["conditions"][2],
        condition(
            "StorageReady",
            "False",
            "NotShared",
            "PVC glance-storage is ReadWriteOnce, and its access modes cannot change, but 3 replicas share the file store on it: pods on other nodes cannot mount it. Set glanceAPI.replicas to 1, or move the images to a ReadWriteMany volume or a remote store"
        )
    );

    // 3 -> 1: the CronJobs and volumes of replicas 1 and 2 go.
    let (mut object, _, _) = bound_seed(3, "10G", DB_URL);
    object.spec.glance_api.replicas = 1;
    let before = earlier(3, DB_URL);
    let expected = children(
        &object,
        &Observed {
            // The storage volume stays as it was made for three.
            storage_access_modes: Some(storage_modes(3)),
            ..observed_from(Some(DB_URL), 1, Some("10G"), Some("10G"))
        },
    );
    let mut calls = observe_bound(3, &before, &expected);
    calls.extend(apply_calls(
        &expected,
        bound(),
        vec![statefulset_apply(&expected, statefulset_ready(1))],
    ));
    calls.extend(sweep_calls(
        &listed(&before, &[]),
        &[
            ("CronJob", "glance-cache-pruner-1"),
            ("CronJob", "glance-cache-cleaner-1"),
            ("CronJob", "glance-cache-pruner-2"),
            ("CronJob", "glance-cache-cleaner-2"),
            ("PersistentVolumeClaim", "image-cache-glance-api-1"),
            ("PersistentVolumeClaim", "image-cache-glance-api-2"),
        ],
    ));
    // Only messages change (3/3 to 1/1): a status write, no event.
    calls.push(status_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    result.expect("reconciled");
    assert_eq!(sent_statefulset(&seen)["spec"]["replicas"], json!(1));
    let storage = seen
        .iter()
        .find(|s| s.uri.contains("persistentvolumeclaims/glance-storage?"))
        .expect("storage applied");
    assert_eq!(
        storage.body["spec"]["accessModes"],
        json!(["ReadWriteMany"]),
        "access modes cannot change: the volume keeps the ones it was made with"
    );
}

#[tokio::test]
async fn growing_with_three_replicas_grows_each_volume_then_recreates_the_statefulset() {
    let (object, expected, mut calls) = bound_seed(3, "20G", DB_URL);
    let resized: Vec<String> = expected
        .cache
        .as_ref()
        .expect("cache on")
        .resizes
        .iter()
        .map(|r| r.metadata.name.clone().expect("name"))
        .collect();
    assert_eq!(
        resized,
        [
            "image-cache-glance-api-0",
            "image-cache-glance-api-1",
            "image-cache-glance-api-2"
        ]
    );
    calls.extend(apply_calls(
        &expected,
        bound(),
        vec![Call::delete_with(
            format!("{APPS}/statefulsets/glance-api?"),
            "Orphan",
        )],
    ));
    calls.extend(sweep_calls(&listed(&expected, &[]), &[]));
    calls.push(status_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(5))
    );
    for name in &resized {
        let resize = seen
            .iter()
            .find(|s| s.uri.contains(&format!("persistentvolumeclaims/{name}?")))
            .expect("resized");
        assert_eq!(
            resize.body["spec"],
            json!({"resources": {"requests": {"storage": "20G"}}}),
            "{name}: only the request is applied"
        );
    }
    assert_eq!(
        sent_status(&seen)["status"]["imageCacheMaxSize"],
        json!(20_000_000_000i64)
    );
    // The pods kept running: nothing but the StatefulSet itself was deleted.
    let deletes: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.uri.as_str())
        .collect();
    assert_eq!(
        deletes,
        [format!("{APPS}/statefulsets/glance-api?").as_str()]
    );
}

#[tokio::test]
async fn shrinking_lowers_the_limit_keeps_the_volumes_and_warns_once() {
    let (object, expected, mut calls) = bound_seed(1, "5G", DB_URL);
    assert!(expected.cache.as_ref().expect("on").resizes.is_empty());
    calls.extend(applied(&expected, 1));
    calls.push(status_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("no error loop"),
        Action::requeue(Duration::from_secs(300))
    );
    assert_eq!(sent_cache_request(&seen), json!("10G"));
    assert!(sent_config(&seen).contains("image_cache_max_size = 5000000000\n"));
    let message = "imageCacheSize 5G is smaller than the cache volumes (10G); a volume cannot shrink, so they keep their size and image_cache_max_size is lowered to 5000000000 bytes";
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
    let (object, expected, mut calls) = bound_seed(1, "20G", DB_URL);
    let refusal = "persistentvolumeclaims \"image-cache-glance-api-0\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize";
    let mut applies = apply_calls(
        &expected,
        bound(),
        vec![Call::delete_with(
            format!("{APPS}/statefulsets/glance-api?"),
            "Orphan",
        )],
    );
    // The resize, after the config, storage and the two Services.
    applies[4] = Call::fail(
        "PATCH",
        format!("{NS}/persistentvolumeclaims/image-cache-glance-api-0{APPLY}"),
        403,
        "Forbidden",
        refusal,
    );
    calls.extend(applies);
    calls.extend(sweep_calls(&listed(&expected, &[]), &[]));
    calls.push(status_call());
    calls.push(event_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("terminal, not an error"),
        Action::requeue(Duration::from_secs(5))
    );
    let note = format!("PVC image-cache-glance-api-0: {refusal}");
    assert!(
        sent_events(&seen).contains(&("Warning".into(), "ResizeRejected".into(), note.clone())),
        "{:?}",
        sent_events(&seen)
    );
    let status = sent_status(&seen);
    assert_eq!(
        status["status"]["conditions"][3],
        condition("CacheReady", "False", "ResizeRejected", &note)
    );
    assert_eq!(status["status"]["conditions"][0]["status"], json!("False"));
}

#[tokio::test]
async fn upgrade_from_the_deployment_deletes_it_first_then_starts_the_statefulset() {
    let object = ready_glance("seed.yaml", 1, Some(10_000_000_000));
    let expected = children(&object, &observed_from(Some(DB_URL), 1, None, None));
    // What the earlier release left: a Deployment and the single cache PVC.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "glance-api", "namespace": "openstack",
                     "ownerReferences": [{"apiVersion": "glance.openstack.org/v1beta1",
                         "kind": "Glance", "name": "glance", "uid": UID, "controller": true}]}});
    let mut pvcs = bound_pvcs(1, None);
    pvcs.push(pvc_with("glance-image-cache", "10G"));

    // Before the database is migrated, the old Deployment keeps serving: nothing of it is
    // deleted, and the new StatefulSet and CronJobs wait.
    let mut calls = observe_calls(
        Some(DB_URL),
        pvcs.clone(),
        None,
        Some(deployment.clone()),
        None,
    );
    calls.extend(applies_before_migration(
        &expected,
        bound(),
        vec![job_apply(&expected)],
    ));
    calls.extend(sweep_calls(&listed(&expected, &[]), &[]));
    // CacheReady, APIReady and DatabaseReady change.
    calls.extend([status_call(), event_call(), event_call(), event_call()]);
    let (result, seen, _) = run(DeserializeGuard(Ok(object.clone())), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(5))
    );
    assert!(
        seen.iter().all(|s| s.method != "DELETE"),
        "nothing deleted yet"
    );

    // A Deployment of that name that this Glance does not own is left alone.
    let mut foreign = deployment.clone();
    foreign["metadata"]["ownerReferences"] = json!([]);
    let mut calls = observe_calls(
        Some(DB_URL),
        bound_pvcs(1, None),
        None,
        Some(foreign),
        done_job(&expected),
    );
    calls.extend(apply_calls(&expected, bound(), vec![]));
    calls.extend(sweep_calls(&listed(&expected, &[]), &[]));
    calls.extend([status_call(), event_call(), event_call()]);
    let (result, seen, _) = run(DeserializeGuard(Ok(object.clone())), calls).await;
    result.expect("reconciled");
    assert_eq!(
        sent_status(&seen)["status"]["conditions"][4],
        condition(
            "APIReady",
            "False",
            "Replacing",
            "a Deployment glance-api that this Glance does not own is in the way of StatefulSet glance-api: delete it"
        )
    );

    // Once migrated, the owned Deployment goes first, in the foreground.
    // The db-sync Job already ran for this image and database (see the db-sync tests):
    // the old Deployment served meanwhile.
    let mut calls = observe_calls(
        Some(DB_URL),
        pvcs,
        None,
        Some(deployment.clone()),
        done_job(&expected),
    );
    calls.extend(apply_calls(
        &expected,
        bound(),
        vec![Call::delete_with(
            format!("{APPS}/deployments/glance-api?"),
            "Foreground",
        )],
    ));
    calls.extend(sweep_calls(
        &listed(
            &expected,
            &[
                ("CronJob", "glance-cache-pruner"),
                ("CronJob", "glance-cache-cleaner"),
                ("PersistentVolumeClaim", "glance-image-cache"),
            ],
        ),
        &[
            ("CronJob", "glance-cache-pruner"),
            ("CronJob", "glance-cache-cleaner"),
            ("PersistentVolumeClaim", "glance-image-cache"),
        ],
    ));
    calls.push(status_call());
    calls.push(event_call());
    calls.push(event_call());
    let (result, seen, _) = run(DeserializeGuard(Ok(object.clone())), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(5))
    );
    assert!(
        seen.iter()
            .all(|s| !s.uri.contains("statefulsets/glance-api?&")),
        "no StatefulSet while the Deployment's pods may still mount the storage volume"
    );
    assert!(
        seen.iter()
            .all(|s| !(s.method == "DELETE" && s.uri.contains("glance-storage"))),
        "the storage volume and its images stay"
    );

    // While the Deployment is being deleted, the StatefulSet still waits.
    let mut going = deployment.clone();
    going["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
    let mut calls = observe_calls(
        Some(DB_URL),
        bound_pvcs(1, None),
        None,
        Some(going),
        done_job(&expected),
    );
    calls.extend(apply_calls(&expected, bound(), vec![]));
    calls.extend(sweep_calls(&listed(&expected, &[]), &[]));
    calls.extend([status_call(), event_call(), event_call()]);
    let (result, _, _) = run(DeserializeGuard(Ok(object.clone())), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(5))
    );

    // Once it is gone, the StatefulSet starts on the same storage volume.
    let mut calls = observe_calls(
        Some(DB_URL),
        bound_pvcs(1, None),
        None,
        None,
        done_job(&expected),
    );
    calls.extend(apply_calls(
        &expected,
        bound(),
        vec![statefulset_apply(&expected, json!({}))],
    ));
    calls.extend(sweep_calls(&listed(&expected, &[]), &[]));
    calls.extend([status_call(), event_call(), event_call()]);
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(300))
    );
    assert!(
        sent_statefulset(&seen)
            .to_string()
            .contains("\"claimName\":\"glance-storage\""),
        "the StatefulSet mounts the same storage volume"
    );
}

#[tokio::test]
async fn an_api_error_fails_the_reconcile_and_backs_off() {
    let (object, expected) = fresh_seed();
    let mut calls = observe_calls(Some(DB_URL), vec![], None, None, None);
    calls.extend(applies_before_migration(
        &expected,
        bound(),
        vec![Call::fail(
            "PATCH",
            format!("{BATCH}/jobs/glance-db-sync{APPLY}"),
            500,
            "InternalError",
            "etcd timeout",
        )],
    ));
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
    let mut calls = vec![not_found(format!("{NS}/secrets/openstack"))];
    calls.extend(observe_calls(None, vec![], None, None, None));
    calls.extend([status_call(), event_call()]);
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
    let mut calls = vec![Call::get(format!("{NS}/secrets/openstack"), 200, secret)];
    calls.extend(observe_calls(None, vec![], None, None, None));
    calls.extend([status_call(), event_call()]);
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
        let (object, _, calls) = steady_calls(1, "10G", url);
        let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
        result.expect("reconciled");
        assert!(sent_config(&seen).contains(&format!("connection = {url}\n")));
        hashes.push(
            sent_statefulset(&seen)["spec"]["template"]["metadata"]["annotations"]
                ["glance.openstack.org/config-hash"]
                .clone(),
        );
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
/// Secret, before the PVCs), and the config hash the StatefulSet must carry.
fn seed_with_keys(conf: &str) -> (Glance, Vec<Call>, String) {
    let mut object = ready_glance("seed.yaml", 1, Some(10_000_000_000));
    object.spec.custom_service_config_secrets = vec![KEYS_SECRET.into()];
    let secret: Secret = serde_json::from_value(keys_secret(conf)).expect("secret");
    let extra = vec![ConfigSecret {
        name: KEYS_SECRET.into(),
        data: secret.data.clone().expect("data"),
    }];
    let observed = Observed {
        config_secrets: extra.clone(),
        ..observed_from(Some(DB_URL), 1, Some("10G"), Some("10G"))
    };
    let expected = children(&object, &observed);
    let hash = config_hash_with_secrets(&expected.config, &extra);
    let mut calls = observe_bound(1, &expected, &expected);
    calls.insert(
        1,
        Call::get(
            format!("{NS}/secrets/{KEYS_SECRET}"),
            200,
            keys_secret(conf),
        ),
    );
    calls.extend(applied(&expected, 1));
    (object, calls, hash)
}

/// The pod template annotations of the applied StatefulSet, and its config volume.
fn sent_template(seen: &[Seen]) -> (Value, Value) {
    let template = &sent_statefulset(seen)["spec"]["template"];
    (
        template["metadata"]["annotations"]["glance.openstack.org/config-hash"].clone(),
        template["spec"]["volumes"][0].clone(),
    )
}

#[tokio::test]
async fn a_named_config_secret_is_read_mounted_and_hashed_into_the_statefulset() {
    let conf = "[ceph]\ns3_store_access_key = AKIA0\ns3_store_secret_key = s0\n";
    let (object, calls, hash) = seed_with_keys(conf);
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(300))
    );
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].uri, format!("{NS}/secrets/{KEYS_SECRET}"));
    let (annotation, volume) = sent_template(&seen);
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
    for name in ["glance-cache-pruner-0", "glance-cache-cleaner-0"] {
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
        let (annotation, _) = sent_template(&seen);
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
    let mut calls = vec![
        Call::get(format!("{NS}/secrets/openstack"), 200, db_secret(DB_URL)),
        not_found(format!("{NS}/secrets/{KEYS_SECRET}")),
        Call::get(
            format!("{NS}/secrets/other-keys"),
            200,
            json!({"metadata": {"name": "other-keys", "namespace": "openstack"}}),
        ),
    ];
    calls.extend(observe_calls(None, vec![], None, None, None));
    calls.extend([status_call(), event_call()]);
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

/// The seed Glance given a new image while the db-sync Job, of the new image or of the old
/// one, has `status`: the reads, and the applies and sweep of a reconcile that neither
/// replaces the Job nor rolls the StatefulSet or the CronJobs (they keep the image whose
/// schema they know).
fn new_image_while_the_job_is(of_new_image: bool, status: Value) -> (Glance, Vec<Call>) {
    let (mut object, expected, _) = bound_seed(1, "10G", DB_URL);
    object.spec.glance_api.container_image = Some("registry.example/glance:2".into());
    let new = seed_children(&object, 1);
    let of = if of_new_image { &new } else { &expected };
    let mut job = to_json(of.db_sync.as_ref().expect("job"));
    common::mock::merge(&mut job, &json!({ "status": status }));
    let mut calls = observe_calls(
        Some(DB_URL),
        bound_pvcs(1, Some("10G")),
        Some(live_statefulset(&expected, 1)),
        None,
        Some(job),
    );
    calls.extend(applies_before_migration(&new, bound(), vec![]));
    calls.extend(sweep_calls(&listed(&new, &[]), &[]));
    (object, calls)
}

#[tokio::test]
async fn a_failed_db_sync_job_is_reported_and_the_statefulset_is_not_rolled() {
    let (object, mut calls) = new_image_while_the_job_is(
        true,
        json!({"failed": 5, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"}]}),
    );
    calls.extend([status_call(), event_call(), event_call()]);
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reported, not an error loop"),
        Action::requeue(Duration::from_secs(300))
    );
    let why = "Job glance-db-sync failed (Job has reached the specified backoff limit): see kubectl logs job/glance-db-sync, then delete the Job to run it again";
    let status = sent_status(&seen);
    assert_eq!(
        status["status"]["conditions"][5],
        condition("DatabaseReady", "False", "MigrationFailed", why)
    );
    assert_eq!(
        status["status"]["conditions"][4],
        condition(
            "APIReady",
            "False",
            "Replacing",
            &format!("StatefulSet not rolled: {why}")
        )
    );
    assert!(
        sent_events(&seen).contains(&("Warning".into(), "MigrationFailed".into(), why.into())),
        "{:?}",
        sent_events(&seen)
    );
}

#[tokio::test]
async fn a_new_image_replaces_the_finished_db_sync_job_before_rolling() {
    let (mut object, expected, _) = bound_seed(1, "10G", DB_URL);
    object.spec.glance_api.container_image = Some("registry.example/glance:2".into());
    let new = seed_children(&object, 1);
    // The Job that completed for the old image.
    let mut calls = observe_bound(1, &expected, &expected);
    calls.extend(applies_before_migration(
        &new,
        bound(),
        vec![Call::delete_with(
            format!("{BATCH}/jobs/glance-db-sync?"),
            "Foreground",
        )],
    ));
    calls.extend(sweep_calls(&listed(&new, &[]), &[]));
    calls.extend([status_call(), event_call(), event_call()]);
    let (result, seen, _) = run(DeserializeGuard(Ok(object.clone())), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        sent_status(&seen)["status"]["conditions"][5],
        condition(
            "DatabaseReady",
            "False",
            "Migrating",
            "Job glance-db-sync is replaced: the image or the database changed"
        )
    );

    // Once the new Job completed, the StatefulSet rolls onto the new image.
    let mut calls = observe_bound(1, &expected, &new);
    calls.extend(applied(&new, 1));
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    result.expect("reconciled");
    assert!(
        sent_statefulset(&seen)
            .to_string()
            .contains("registry.example/glance:2")
    );
}

#[tokio::test]
async fn a_running_db_sync_job_is_never_cut_off_by_a_new_image() {
    let (object, mut calls) = new_image_while_the_job_is(false, json!({"active": 1}));
    calls.extend([status_call(), event_call(), event_call()]);
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        sent_status(&seen)["status"]["conditions"][5],
        condition(
            "DatabaseReady",
            "False",
            "Migrating",
            "Job glance-db-sync for the earlier image or database is still running; it is replaced when it ends"
        )
    );
}

const KEYSTONE_SECRET: &str = "glance-keystone";
const KEYSTONE_URL: &str = "http://keystone-public.openstack.svc:5000/v3";

fn keystone_secret(data: &[(&str, &str)]) -> Value {
    to_json(&Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(KEYSTONE_SECRET.into()),
            namespace: Some("openstack".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}

/// The ready seed Glance given spec.keystone (its status is what a reconcile wrote before,
/// with Authenticated False), whose Secret holds `password`: the calls of a reconcile (the
/// Secret is read right after the database Secret, before the PVCs) and the children.
fn seed_with_keystone(password: &str) -> (Glance, Vec<Call>, Children) {
    let mut object = glance("seed.yaml");
    object.spec.keystone = Some(
        serde_json::from_value(json!({"authUrl": KEYSTONE_URL, "secret": KEYSTONE_SECRET}))
            .expect("spec.keystone"),
    );
    let status = ready_glance("seed.yaml", 1, Some(10_000_000_000)).status;
    object.status = status;
    let credentials = ConfigSecret {
        name: KEYSTONE_SECRET.into(),
        data: [
            (
                "password".to_owned(),
                ByteString(password.as_bytes().to_vec()),
            ),
            ("username".to_owned(), ByteString(b"glance".to_vec())),
        ]
        .into(),
    };
    let observed = Observed {
        keystone_credentials: Some(credentials),
        ..observed_from(Some(DB_URL), 1, Some("10G"), Some("10G"))
    };
    let expected = children(&object, &observed);
    let mut calls = observe_bound(1, &expected, &expected);
    calls.insert(
        1,
        Call::get(
            format!("{NS}/secrets/{KEYSTONE_SECRET}"),
            200,
            keystone_secret(&[
                ("username", "glance"),
                ("password", password),
                ("ca.crt", "not read"),
            ]),
        ),
    );
    calls.extend(applied(&expected, 1));
    (object, calls, expected)
}

#[tokio::test]
async fn keystone_reads_its_secret_renders_the_section_and_says_authenticated() {
    let (object, mut calls, _) = seed_with_keystone("pw-1");
    // Authenticated flips from False to True: a status write and a Normal event.
    calls.extend([status_call(), event_call()]);
    let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(300))
    );
    assert_eq!(seen[1].uri, format!("{NS}/secrets/{KEYSTONE_SECRET}"));
    let conf = sent_config(&seen);
    assert!(
        conf.contains(&format!(
            "[keystone_authtoken]\nauth_type = password\nauth_url = {KEYSTONE_URL}\n"
        )),
        "{conf}"
    );
    assert!(
        conf.contains("flavor = keystone+cachemanagement\n"),
        "{conf}"
    );
    let env = sent_statefulset(&seen)["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert_eq!(
        env[3],
        json!({"name": "OS_KEYSTONE_AUTHTOKEN__PASSWORD",
               "valueFrom": {"secretKeyRef": {"name": KEYSTONE_SECRET, "key": "password"}}})
    );
    assert!(
        seen.iter()
            .filter(|s| s.method != "GET")
            .all(|s| !s.body.to_string().contains("pw-1")),
        "the password is in no request the operator sends"
    );
    let status = sent_status(&seen);
    assert_eq!(
        status["status"]["conditions"][6],
        authenticated(KEYSTONE_URL)
    );
    assert_eq!(
        status["status"]["conditions"][0],
        condition("Ready", "True", "Ready", "glance-api is ready")
    );
    assert_eq!(
        sent_events(&seen),
        vec![(
            "Normal".into(),
            "Keystone".into(),
            format!(
                "Image API requests need a Keystone token, checked with {KEYSTONE_URL} (keystone.authUrl)"
            )
        )]
    );
}

#[tokio::test]
async fn a_changed_keystone_password_rolls_the_pods() {
    let mut annotations = Vec::new();
    for password in ["pw-1", "pw-2"] {
        let (object, mut calls, expected) = seed_with_keystone(password);
        calls.extend([status_call(), event_call()]);
        let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
        result.expect("reconciled");
        let (annotation, _) = sent_template(&seen);
        assert_eq!(
            annotation,
            to_json(&expected.statefulset)["spec"]["template"]["metadata"]["annotations"]["glance.openstack.org/config-hash"]
        );
        annotations.push(annotation);
    }
    assert_ne!(annotations[0], annotations[1]);
}

#[tokio::test]
async fn a_missing_keystone_secret_or_key_is_named_in_a_condition_and_nothing_is_applied() {
    for (answer, message) in [
        (
            not_found(format!("{NS}/secrets/{KEYSTONE_SECRET}")),
            "keystone.secret: Secret \"glance-keystone\" not found in this namespace: create it with the service user's name under key \"username\" and its password under key \"password\"",
        ),
        (
            Call::get(
                format!("{NS}/secrets/{KEYSTONE_SECRET}"),
                200,
                keystone_secret(&[("username", "glance"), ("pass", "pw")]),
            ),
            "keystone.secret: Secret \"glance-keystone\" has no key \"password\" (keystone.passwordKey): put the service user's password there",
        ),
    ] {
        let mut object = glance("seed.yaml");
        object.spec.keystone = Some(
            serde_json::from_value(json!({"authUrl": KEYSTONE_URL, "secret": KEYSTONE_SECRET}))
                .expect("spec.keystone"),
        );
        // The script ends with the status and the event: any apply or delete would be an
        // unexpected request and fail the test.
        let mut calls = vec![
            Call::get(format!("{NS}/secrets/openstack"), 200, db_secret(DB_URL)),
            answer,
        ];
        calls.extend(observe_calls(None, vec![], None, None, None));
        calls.extend([status_call(), event_call()]);
        let (result, seen, _) = run(DeserializeGuard(Ok(object)), calls).await;
        assert_eq!(
            result.expect("reported"),
            Action::requeue(Duration::from_secs(30))
        );
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
            seen.iter().all(|s| s.method == "GET"
                || s.uri.contains("/status")
                || s.uri.contains("/events")),
            "nothing applied or deleted"
        );
    }
}
