//! `/metrics` and `/healthz` of the operator.

use std::sync::Arc;
use std::time::Duration;

use glance_operator::operator::metrics::{Metrics, router};

async fn get(metrics: Arc<Metrics>, path: &str) -> (u16, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router(metrics)).await });
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response[9..12].parse().expect("status code");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

#[tokio::test]
async fn healthz_turns_ok_once_the_api_answered() {
    let metrics = Arc::new(Metrics::default());
    assert_eq!(get(metrics.clone(), "/healthz").await.0, 503);
    metrics.set_healthy(true);
    assert_eq!(get(metrics, "/healthz").await, (200, "ok".to_owned()));
}

#[tokio::test]
async fn metrics_count_reconciles_failures_and_leadership() {
    let metrics = Arc::new(Metrics::default());
    metrics.observe(Duration::from_millis(30), None);
    metrics.observe(Duration::from_millis(30), Some("kube"));
    metrics.leader.set(1);
    let (code, body) = get(metrics, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "glance_operator_reconciliations_total 2",
        "glance_operator_reconcile_failures_total{error=\"kube\"} 1",
        "glance_operator_reconcile_duration_seconds_count 2",
        "glance_operator_leader 1",
    ] {
        assert!(body.contains(line), "{line} missing from\n{body}");
    }
}
