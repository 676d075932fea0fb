//! A scripted Kubernetes API server for tower-test: each expected request names its
//! method, path and query, optionally its exact JSON body, and the answer to send.

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

/// One expected request and its answer.
pub struct Call {
    /// HTTP method.
    pub method: &'static str,
    /// Path and query, exactly.
    pub uri: String,
    /// The exact JSON body expected, if checked here.
    pub body: Option<Value>,
    /// Status code of the answer.
    pub status: u16,
    /// Body of the answer; `Echo` returns the request body.
    pub answer: Answer,
}

/// What the scripted server answers.
pub enum Answer {
    /// This JSON.
    Json(Value),
    /// The request's own body, optionally with fields merged in (like a status the server sets).
    Echo(Value),
}

impl Call {
    /// A GET answered with `status` and `answer`.
    pub fn get(uri: impl Into<String>, status: u16, answer: Value) -> Self {
        Self {
            method: "GET",
            uri: uri.into(),
            body: None,
            status,
            answer: Answer::Json(answer),
        }
    }
    /// A server-side apply PATCH whose body must equal `body`, echoed back with `extra` merged.
    pub fn apply(uri: impl Into<String>, body: Value, extra: Value) -> Self {
        Self {
            method: "PATCH",
            uri: uri.into(),
            body: Some(body),
            status: 200,
            answer: Answer::Echo(extra),
        }
    }
    /// A request answered with an error Status.
    pub fn fail(
        method: &'static str,
        uri: impl Into<String>,
        code: u16,
        reason: &str,
        message: &str,
    ) -> Self {
        Self {
            method,
            uri: uri.into(),
            body: None,
            status: code,
            answer: Answer::Json(status_body(code, reason, message)),
        }
    }
    /// A DELETE with background propagation, answered 200.
    pub fn delete(uri: impl Into<String>) -> Self {
        Self::delete_with(uri, "Background")
    }
    /// A DELETE with `propagation` (Background, Foreground or Orphan), answered 200.
    pub fn delete_with(uri: impl Into<String>, propagation: &str) -> Self {
        Self {
            method: "DELETE",
            uri: uri.into(),
            body: Some(json!({"propagationPolicy": propagation})),
            status: 200,
            answer: Answer::Json(status_body(200, "", "")),
        }
    }
}

/// A metav1.Status body.
pub fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 400 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code,
    })
}

/// Merges `patch` into `base` (objects recursively, everything else replaced).
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// A client whose requests go to the returned handle.
pub fn client() -> (Client, Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// A request as it was received, for assertions after the fact.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// JSON body, or Null.
    pub body: Value,
}

/// Serves `calls` in order, asserting each request; returns what was received. Panics on
/// an unexpected request.
pub async fn serve(
    handle: &mut Handle<Request<Body>, Response<Body>>,
    calls: Vec<Call>,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        let (request, send) = handle
            .next_request()
            .await
            .unwrap_or_else(|| panic!("request #{i} ({} {}) never came", call.method, call.uri));
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        assert_eq!(
            (method.as_str(), uri.as_str()),
            (call.method, call.uri.as_str()),
            "request #{i}"
        );
        if let Some(expected) = &call.body {
            pretty_assertions::assert_eq!(&body, expected, "body of request #{i}: {method} {uri}");
        }
        let answer = match &call.answer {
            Answer::Json(v) => v.clone(),
            Answer::Echo(extra) => {
                let mut echoed = body.clone();
                merge(&mut echoed, extra);
                echoed
            }
        };
        let response = Response::builder()
            .status(StatusCode::from_u16(call.status).expect("status"))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).expect("json")))
            .expect("response");
        send.send_response(response);
        seen.push(Seen { method, uri, body });
    }
    seen
}
