//! `x-openstack-request-id` on every answer, as upstream's context middleware sets it:
//! the id the client sent in that header (at most [`MAX_LEN`] characters, with `req-`
//! put in front when it lacks it), else a new `req-<uuid>`. A longer one is refused with
//! upstream's 431. The connection loop's sendfile answers carry it too
//! (`connection::send_cached`).

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::ApiError;

/// The header, in both directions.
pub const HEADER: HeaderName = HeaderName::from_static("x-openstack-request-id");

/// upstream's `max_request_id_length` default.
pub const MAX_LEN: usize = 64;

/// The id to answer with for the `x-openstack-request-id` the client sent, if any; Err
/// for one that is too long.
pub fn answer_id(sent: Option<&str>) -> Result<String, ApiError> {
    match sent.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(format!("req-{}", uuid::Uuid::new_v4())),
        Some(id) if id.chars().count() > MAX_LEN => Err(ApiError {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!("x-openstack-request-id is too long, max size {MAX_LEN}"),
        }),
        Some(id) if id.starts_with("req-") => Ok(id.to_owned()),
        Some(id) => Ok(format!("req-{id}")),
    }
}

/// The request's id, in its extensions for the handlers (an import's task records it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Middleware: every answer of the router carries the request's id, and the request's
/// log lines name it.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let sent = request
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (id, mut response) = match answer_id(sent.as_deref()) {
        Ok(id) => {
            request.extensions_mut().insert(RequestId(id.clone()));
            let span = tracing::info_span!("request", request_id = %id);
            (id, next.run(request).instrument(span).await)
        }
        Err(refusal) => (answer_id(None).unwrap_or_default(), refusal.into_response()),
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_id_is_kept_a_missing_one_made_and_a_long_one_refused() {
        assert_eq!(answer_id(Some("req-abc")).unwrap(), "req-abc");
        assert_eq!(answer_id(Some("abc")).unwrap(), "req-abc");
        let made = answer_id(None).unwrap();
        assert!(made.starts_with("req-") && made.len() == 40, "{made}");
        assert_ne!(made, answer_id(Some("")).unwrap());
        let refused = answer_id(Some(&"x".repeat(65))).unwrap_err();
        assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(refused.message.contains("x-openstack-request-id"));
    }
}
