//! JSON error bodies with the status codes a Glance client expects.

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::{error, warn};

use crate::cache::CacheError;
use crate::db::DbError;
use crate::store::{Failure, StoreError};

/// An HTTP error answer. As upstream (webob), a client that accepts JSON gets
/// `{"code": "404 Not Found", "title": "Not Found", "message": "..."}` and any other client
/// an HTML page (python-glanceclient parses that one); see [`negotiate`].
#[derive(Debug)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// What went wrong, for the client.
    pub message: String,
}

impl ApiError {
    /// 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 500; the cause is logged, and the client gets it in short, so that nobody has to
    /// read the server's log to know what broke. Causes never hold a secret: database
    /// errors leave the password out, and the paths in store and cache errors are those
    /// of the data directories.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        error!(error = %cause, "internal error");
        let mut cause = cause.to_string();
        if let Some((cut, _)) = cause.char_indices().nth(MAX_CAUSE) {
            cause.truncate(cut);
            cause.push('…');
        }
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("The server has an internal error: {cause}"),
        }
    }
}

/// How much of an internal error's cause a 500 shows.
const MAX_CAUSE: usize = 300;

impl From<DbError> for ApiError {
    /// A lost or unreachable database is 503 (the client may retry); the cause is
    /// logged without the password, and the client is told only that it is unavailable.
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            warn!(error = %e, "database unavailable");
            return Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "The image database is unavailable; try again later.".to_owned(),
            };
        }
        if let DbError::Invalid(reason) = &e {
            return Self::bad_request(format!("Invalid value: {reason}"));
        }
        Self::internal(e)
    }
}

impl From<StoreError> for ApiError {
    /// A remote store that cannot be reached is 503 (try again later); one that answers
    /// with an error is 502; either way the message names the store. Local file errors
    /// are 500.
    fn from(e: StoreError) -> Self {
        warn!(error = %e, "store failure");
        let status = match &e {
            // Upstream's answers for a store that ran out of room.
            StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                return Self {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("Image storage media is full: {e}"),
                };
            }
            StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::EDQUOT) => {
                return Self {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("Image exceeds the storage quota: {e}"),
                };
            }
            StoreError::Remote { failure, .. } if *failure == Failure::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            StoreError::Remote { .. } => StatusCode::BAD_GATEWAY,
            StoreError::ReadOnly { .. } => StatusCode::BAD_REQUEST,
            _ => return Self::internal(e),
        };
        Self {
            status,
            message: e.to_string(),
        }
    }
}

impl From<CacheError> for ApiError {
    /// The catalogue that holds the centralized_db driver's rows being unavailable is 503,
    /// as for image requests; anything else in the cache is 500.
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Central { source, .. } if source.is_unavailable() => source.into(),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let code = format!("{} {title}", self.status.as_u16());
        let body = json!({"code": code, "title": title, "message": self.message});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Always JSON, with a hint when to come back: clients and load balancers
            // retry these.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return response;
        }
        if self.status == StatusCode::BAD_GATEWAY {
            // A store's failure: JSON for every client, as 503 is.
            return response;
        }
        response.extensions_mut().insert(ErrorPage {
            code,
            message: self.message,
        });
        response
    }
}

/// The parts of an error needed to render it as HTML instead.
#[derive(Debug, Clone)]
struct ErrorPage {
    code: String,
    message: String,
}

/// Middleware: error answers stay JSON for clients that accept JSON and become webob's HTML
/// error page for the others.
pub async fn negotiate(request: Request, next: Next) -> Response {
    let wants_json = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let method = request.method().clone();
    let mut response = next.run(request).await;
    // The router's own 405 has no body: upstream's words, and its Allow header kept.
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && response.extensions().get::<ErrorPage>().is_none()
    {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("The method {method} is not allowed for this resource."),
        }
        .into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    }
    if wants_json {
        return response;
    }
    match response.extensions().get::<ErrorPage>().cloned() {
        Some(page) => {
            let html = format!(
                "<html>\n <head>\n  <title>{code}</title>\n </head>\n <body>\n  <h1>{code}</h1>\n  {message}<br /><br />\n\n\n\n </body>\n</html>",
                code = escape(&page.code),
                message = escape(&page.message)
            );
            let mut html_response = (
                response.status(),
                [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
                html,
            )
                .into_response();
            for (name, value) in response.headers() {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    html_response
                        .headers_mut()
                        .insert(name.clone(), value.clone());
                }
            }
            html_response
        }
        None => response,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbError;

    #[test]
    fn a_500_names_its_cause_in_short_and_a_refused_value_is_400() {
        let e = ApiError::internal("store \"default_backend\": disk I/O error");
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            e.message,
            "The server has an internal error: store \"default_backend\": disk I/O error"
        );
        let long = ApiError::internal("x".repeat(2000));
        assert!(long.message.chars().count() < 400, "{}", long.message);
        let refused = ApiError::from(DbError::Invalid(
            "Data too long for column 'name' at row 1".to_owned(),
        ));
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(refused.message.contains("'name'"), "{}", refused.message);
    }

    #[test]
    fn an_unavailable_catalogue_under_the_cache_is_503_other_cache_errors_500() {
        let central = |source| CacheError::Central {
            node: "http://glance-api-0:9292".to_owned(),
            source,
        };
        let down = ApiError::from(central(DbError::Unavailable {
            location: "db:3306".to_owned(),
            reason: "connection refused".to_owned(),
        }));
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
        let broken = ApiError::from(central(DbError::Schema {
            location: "db:3306".to_owned(),
            problem: "no table cached_images".to_owned(),
        }));
        assert_eq!(broken.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
