//! A small blocking client of glance-api, for glance-cache-manage and the prefetcher.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use ureq::Agent;

use crate::cache::ImageId;

/// A failed request to glance-api.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke.
    #[error("{method} {url}: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// What failed.
        source: Box<ureq::Error>,
    },
    /// The server answered with an error status.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The response body, for the message.
        body: String,
    },
    /// The answer was not the JSON expected.
    #[error("{url}: unexpected answer: {message}")]
    Decode {
        /// The URL.
        url: String,
        /// What was wrong.
        message: String,
    },
}

/// One entry of `GET /v2/cache`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CachedImage {
    /// The image.
    pub image_id: String,
    /// Reads served from the cache.
    pub hits: u64,
    /// Epoch seconds of the last read (0 = never).
    pub last_accessed: f64,
    /// Epoch seconds of the write.
    pub last_modified: f64,
    /// Bytes.
    pub size: u64,
}

/// The body of `GET /v2/cache`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CacheListing {
    /// Cached images.
    pub cached_images: Vec<CachedImage>,
    /// Queued image IDs.
    pub queued_images: Vec<String>,
}

/// The fields of an image the prefetcher needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ImageInfo {
    /// queued, saving, active, ...
    pub status: String,
    /// MD5 of the data, hex.
    pub checksum: Option<String>,
    /// Bytes.
    pub size: Option<u64>,
}

/// Which part of the cache `DELETE /v2/cache` clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearTarget {
    /// Cached images only.
    Cache,
    /// The prefetch queue only.
    Queue,
}

/// A client of one glance-api endpoint.
#[derive(Clone)]
pub struct ApiClient {
    agent: Agent,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client of `base` (e.g. `http://127.0.0.1:9292`), sending `token` as X-Auth-Token.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(
        &self,
        method: &'static str,
        path: &str,
        header: Option<(&str, &str)>,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let url = self.url(path);
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json");
        if let Some(token) = &self.token {
            request = request.header("X-Auth-Token", token);
        }
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let invalid = |e: ureq::http::Error| ClientError::Decode {
            url: url.clone(),
            message: e.to_string(),
        };
        // A PUT, POST or DELETE says its body is empty (Content-Length: 0): upstream reads
        // a request that has Transfer-Encoding as JSON, and an empty chunked body is
        // "Malformed JSON" to it.
        let sent = if matches!(method, "PUT" | "POST" | "DELETE") {
            self.agent.run(request.body(&[][..]).map_err(invalid)?)
        } else {
            self.agent.run(request.body(()).map_err(invalid)?)
        };
        let mut response = sent.map_err(|e| ClientError::Transport {
            method,
            url: url.clone(),
            source: Box::new(e),
        })?;
        let status = response.status().as_u16();
        if status >= 400 {
            let body = response
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            return Err(ClientError::Status {
                method,
                url,
                status,
                body: body.trim().to_owned(),
            });
        }
        Ok(response)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.send("GET", path, None)?;
        serde_json::from_reader(response.into_body().into_reader()).map_err(|e| {
            ClientError::Decode {
                url: self.url(path),
                message: e.to_string(),
            }
        })
    }

    /// `GET /v2/cache`.
    pub fn list_cache(&self) -> Result<CacheListing, ClientError> {
        self.json("/v2/cache")
    }

    /// `PUT /v2/cache/{id}`: queue for prefetching.
    pub fn queue(&self, id: &ImageId) -> Result<(), ClientError> {
        self.send("PUT", &format!("/v2/cache/{id}"), None).map(drop)
    }

    /// `DELETE /v2/cache/{id}`: remove from the cache and the queue.
    pub fn delete(&self, id: &ImageId) -> Result<(), ClientError> {
        self.send("DELETE", &format!("/v2/cache/{id}"), None)
            .map(drop)
    }

    /// `DELETE /v2/cache` with `x-image-cache-clear-target`.
    pub fn clear(&self, target: ClearTarget) -> Result<(), ClientError> {
        let value = match target {
            ClearTarget::Cache => "cache",
            ClearTarget::Queue => "queue",
        };
        self.send(
            "DELETE",
            "/v2/cache",
            Some(("x-image-cache-clear-target", value)),
        )
        .map(drop)
    }

    /// `GET /v2/images/{id}`.
    pub fn image(&self, id: &ImageId) -> Result<ImageInfo, ClientError> {
        self.json(&format!("/v2/images/{id}"))
    }

    /// `GET /v2/images/{id}/file`, as a stream.
    pub fn download(&self, id: &ImageId) -> Result<impl Read + use<>, ClientError> {
        let response = self.send("GET", &format!("/v2/images/{id}/file"), None)?;
        Ok(response.into_body().into_reader())
    }
}
