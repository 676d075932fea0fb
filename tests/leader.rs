//! Leader election on a Lease, against a scripted API server.

mod common;

use common::mock::{self, Call, Seen};
use glance_operator::operator::leader::LeaseLock;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/glance-operator-system/leases";

fn now() -> Timestamp {
    "2026-11-23T12:00:00.000000Z".parse().expect("time")
}

fn lease(holder: &str, renewed: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "glance-operator-leader", "namespace": "glance-operator-system", "resourceVersion": "41"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "acquireTime": "2026-11-23T11:00:00.000000Z", "renewTime": renewed, "leaseTransitions": transitions},
    })
}

async fn try_acquire(calls: Vec<Call>) -> (Result<bool, kube::Error>, Vec<Seen>) {
    let (client, mut handle) = mock::client();
    let lock = LeaseLock::new(
        Api::<Lease>::namespaced(client, "glance-operator-system"),
        "glance-operator-leader",
        "pod-a",
    );
    let task = tokio::spawn(async move { lock.try_acquire(now()).await });
    let seen = mock::serve(&mut handle, calls).await;
    let result = tokio::select! {
        biased;
        r = task => r.expect("no panic"),
        extra = handle.next_request() => panic!("unexpected request {:?}", extra.map(|(r, _)| r.uri().to_string())),
    };
    (result, seen)
}

/// A PUT of the lease, answered with what was sent; its body is checked by the test.
fn replace_call() -> Call {
    let mut call = Call::apply(
        format!("{LEASES}/glance-operator-leader?"),
        json!(null),
        json!({}),
    );
    call.method = "PUT";
    call.body = None;
    call
}

fn get(answer: Value) -> Call {
    Call::get(format!("{LEASES}/glance-operator-leader"), 200, answer)
}

#[tokio::test]
async fn creates_the_lease_when_there_is_none() {
    let mut create = Call::apply(
        format!("{LEASES}?"),
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "glance-operator-leader"},
            "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15, "acquireTime": "2026-11-23T12:00:00.000000Z",
                     "renewTime": "2026-11-23T12:00:00.000000Z", "leaseTransitions": 0},
        }),
        json!({}),
    );
    create.method = "POST";
    create.status = 201;
    let (result, _) = try_acquire(vec![
        Call::fail(
            "GET",
            format!("{LEASES}/glance-operator-leader"),
            404,
            "NotFound",
            "not found",
        ),
        create,
    ])
    .await;
    assert!(result.expect("ok"));
}

#[tokio::test]
async fn waits_while_another_replica_holds_a_fresh_lease() {
    let (result, seen) =
        try_acquire(vec![get(lease("pod-b", "2026-11-23T11:59:50.000000Z", 2))]).await;
    assert!(!result.expect("ok"));
    assert_eq!(seen.len(), 1, "no write while the lease is held");
}

#[tokio::test]
async fn takes_over_an_expired_lease_with_the_read_resource_version() {
    let (result, seen) = try_acquire(vec![
        get(lease("pod-b", "2026-11-23T11:59:40.000000Z", 2)),
        replace_call(),
    ])
    .await;
    assert!(result.expect("ok"));
    let body = &seen[1].body;
    assert_eq!(
        body["metadata"]["resourceVersion"],
        json!("41"),
        "optimistic concurrency"
    );
    assert_eq!(body["spec"]["holderIdentity"], json!("pod-a"));
    assert_eq!(body["spec"]["leaseTransitions"], json!(3));
    assert_eq!(
        body["spec"]["acquireTime"],
        json!("2026-11-23T12:00:00.000000Z")
    );
    assert_eq!(
        body["spec"]["renewTime"],
        json!("2026-11-23T12:00:00.000000Z")
    );
}

#[tokio::test]
async fn renews_its_own_lease_keeping_acquire_time_and_transitions() {
    let (result, seen) = try_acquire(vec![
        get(lease("pod-a", "2026-11-23T11:59:55.000000Z", 2)),
        replace_call(),
    ])
    .await;
    assert!(result.expect("ok"));
    assert_eq!(seen[1].body["spec"]["leaseTransitions"], json!(2));
    assert_eq!(
        seen[1].body["spec"]["acquireTime"],
        json!("2026-11-23T11:00:00.000000Z")
    );
    assert_eq!(
        seen[1].body["spec"]["renewTime"],
        json!("2026-11-23T12:00:00.000000Z")
    );
}

#[tokio::test]
async fn losing_the_race_for_an_expired_lease_is_not_leadership() {
    let (result, _) = try_acquire(vec![
        get(lease("pod-b", "2026-11-23T11:00:00.000000Z", 2)),
        Call::fail(
            "PUT",
            format!("{LEASES}/glance-operator-leader?"),
            409,
            "Conflict",
            "the object has been modified",
        ),
    ])
    .await;
    assert!(!result.expect("a conflict is an answer, not an error"));
}

#[tokio::test]
async fn other_api_errors_are_errors() {
    let (result, _) = try_acquire(vec![Call::fail(
        "GET",
        format!("{LEASES}/glance-operator-leader"),
        403,
        "Forbidden",
        "no RBAC",
    )])
    .await;
    assert!(result.is_err());
}
