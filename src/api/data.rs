//! Image data: `PUT /v2/images/{id}/file` (streamed to the store, hashed on the way) and
//! `GET /v2/images/{id}/file` (Range, Content-MD5, and the transparent cache).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::error::ApiError;
use super::images::path_id;
use super::state::{AppState, blocking};
use crate::cache::CacheWriter;
use crate::db::{Image, now};

type Shared = Arc<AppState>;

/// Size of the chunks read from disk and sent to clients.
pub const CHUNK: usize = 1 << 20;

/// PUT /v2/images/{id}/file
pub async fn upload(
    State(state): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    match claim(&state, &raw, &headers).await {
        Ok(id) => store_body(state, id, body).await,
        Err(e) => {
            // Read the body anyway, so that the client sees this answer rather than a
            // connection reset while it is still sending.
            let mut stream = body.into_data_stream();
            while let Some(Ok(_)) = stream.next().await {}
            Err(e)
        }
    }
}

/// Checks the request and moves the image from queued to saving.
async fn claim(
    state: &Shared,
    raw: &str,
    headers: &HeaderMap,
) -> Result<crate::cache::ImageId, ApiError> {
    let id = path_id(raw)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    if !content_type.starts_with("application/octet-stream") {
        return Err(ApiError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "Unsupported Content-Type {content_type:?}: image data is application/octet-stream"
            ),
        });
    }
    let db = state.db.clone();
    let claim_id = id.clone();
    blocking(move || {
        let image = db
            .get(&claim_id)?
            .ok_or_else(|| ApiError::not_found(format!("No image found with ID {claim_id}")))?;
        if !db.transition(&claim_id, &["queued"], "saving")? {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                message: format!(
                    "Image status transition from {} to saving is not allowed",
                    image.status
                ),
            });
        }
        Ok(())
    })
    .await?;
    Ok(id)
}

/// Streams the body into the store and records size and digests.
async fn store_body(
    state: Shared,
    id: crate::cache::ImageId,
    body: Body,
) -> Result<StatusCode, ApiError> {
    // A blocking thread writes and hashes; the request body is fed to it chunk by chunk.
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let writer_state = state.clone();
    let writer_id = id.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<crate::store::Stored, io::Error> {
        let mut upload = writer_state.store.begin_upload(&writer_id)?;
        while let Some(chunk) = rx.blocking_recv() {
            upload.write(chunk)?;
        }
        upload.finish()
    });
    let mut stream = body.into_data_stream();
    let mut body_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let stored = writer.await.map_err(ApiError::internal)?;
    let db = state.db.clone();
    let store = state.store.clone();
    blocking(move || {
        let fail = |message: String, status: StatusCode| {
            db.transition(&id, &["saving"], "queued")?;
            Err(ApiError { status, message })
        };
        if let Some(e) = body_error {
            store.delete(&id).map_err(ApiError::internal)?;
            return fail(
                format!("Error reading the image data: {e}"),
                StatusCode::BAD_REQUEST,
            );
        }
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                warn!(image = %id, error = %e, "storing image data failed");
                return fail(
                    "Failed to store the image data.".to_owned(),
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            }
        };
        let Some(mut image) = db.get(&id)? else {
            // Deleted while uploading: drop the data too.
            store.delete(&id).map_err(ApiError::internal)?;
            return Err(ApiError {
                status: StatusCode::GONE,
                message: format!("Image {id} was deleted during the upload"),
            });
        };
        image.size = Some(i64::try_from(stored.size).map_err(ApiError::internal)?);
        image.checksum = Some(stored.md5);
        image.os_hash_algo = Some("sha512".to_owned());
        image.os_hash_value = Some(stored.sha512);
        image.status = "active".to_owned();
        image.updated_at = now();
        db.update(&image)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// A byte range of an image of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: u64,
    /// Bytes.
    pub len: u64,
}

/// Parses a Range header: `bytes=a-b`, `bytes=a-` or `bytes=-n`, one range only. None
/// when it is malformed or covers nothing of the image (answered 416).
pub fn parse_range(value: &str, size: u64) -> Option<Span> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let span = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return None;
        }
        let n = n.min(size);
        Span {
            start: size - n,
            len: n,
        }
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse().ok()?
        };
        if end < start || start >= size {
            return None;
        }
        Span {
            start,
            len: end.min(size - 1) - start + 1,
        }
    };
    Some(span)
}

/// GET /v2/images/{id}/file
pub async fn download(
    State(state): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = path_id(&raw)?;
    let db = state.db.clone();
    let lookup = id.clone();
    let image = blocking(move || {
        db.get(&lookup)?
            .ok_or_else(|| ApiError::not_found(format!("No image found with ID {lookup}")))
    })
    .await?;
    match image.status.as_str() {
        "active" => {}
        "deactivated" => {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                message:
                    "The requested image has been deactivated. Image data download is forbidden."
                        .to_owned(),
            });
        }
        _ => return Ok(StatusCode::NO_CONTENT.into_response()),
    }
    let size = u64::try_from(image.size.unwrap_or(0)).unwrap_or(0);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(value) => match parse_range(value, size) {
            Some(span) => Some(span),
            None => {
                let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(response);
            }
        },
    };
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let send_state = state.clone();
    let send_image = image.clone();
    tokio::task::spawn_blocking(move || send(&send_state, &send_image, range, tx));

    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    match range {
        Some(span) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = response.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(span.len));
            if let Ok(v) = HeaderValue::from_str(&format!(
                "bytes {}-{}/{size}",
                span.start,
                span.start + span.len - 1
            )) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        None => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            if let Some(md5) = image
                .checksum
                .as_deref()
                .and_then(|c| HeaderValue::from_str(c).ok())
            {
                h.insert("content-md5", md5);
            }
        }
    }
    h_accept_ranges(&mut response);
    Ok(response)
}

fn h_accept_ranges(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// Streams the image (or a range of it) into `tx`, from the cache when it holds the image,
/// else from the store, filling the cache on a full read when no one else is.
fn send(state: &AppState, image: &Image, range: Option<Span>, tx: mpsc::Sender<io::Result<Bytes>>) {
    let result = (|| -> io::Result<()> {
        if let Some(cache) = &state.cache {
            if let Some((file, _)) = cache
                .cache
                .open_for_read(&image.id)
                .map_err(io::Error::other)?
            {
                debug!(image = %image.id, "serving from the cache");
                return pump(file, range, None, &tx);
            }
            let size = u64::try_from(image.size.unwrap_or(0)).unwrap_or(u64::MAX);
            if range.is_none() && size <= cache.max_size {
                let writer = cache
                    .cache
                    .open_for_write(&image.id, image.checksum.as_deref())
                    .map_err(io::Error::other)?;
                if let Some(writer) = writer {
                    let file = state.store.open_data(&image.id)?;
                    let admit = |writer: CacheWriter<'_>| {
                        if let Err(e) = cache.cache.admit(writer, cache.max_size) {
                            warn!(image = %image.id, error = %e, "not cached");
                        }
                    };
                    return pump(file, None, Some((writer, &admit)), &tx);
                }
            }
        }
        pump(state.store.open_data(&image.id)?, range, None, &tx)
    })();
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::BrokenPipe {
            warn!(image = %image.id, error = %e, "download failed");
        }
        let _ = tx.blocking_send(Err(e));
    }
}

/// A CHUNK buffer lent to the response body; it returns to its download's pool once hyper
/// has written it, so buffers are not allocated, zeroed and faulted in for every chunk.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    home: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // The pool is gone once the download finished; the buffer is then simply freed.
        let _ = self.home.send(std::mem::take(&mut self.buf));
    }
}

/// A cache write fed by a download, and what to do with it once the data is complete.
type Tee<'a, 'c> = (CacheWriter<'c>, &'a dyn Fn(CacheWriter<'c>));

/// Copies `file` (or the `range` of it) to the client in CHUNK pieces. With a tee, each
/// piece is written to the cache too, and the last piece is held back until the cache
/// write is published, so a client that has every byte can rely on the next read being a
/// hit. A client that goes away stops the copy (BrokenPipe) and the cache write is dropped.
fn pump(
    mut file: File,
    range: Option<Span>,
    mut tee: Option<Tee<'_, '_>>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let send = |chunk: Bytes| {
        tx.blocking_send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    };
    let mut remaining = match range {
        Some(span) => {
            file.seek(SeekFrom::Start(span.start))?;
            span.len
        }
        None => u64::MAX,
    };
    let mut held: Option<Bytes> = None;
    let (home, returned) = std::sync::mpsc::channel::<Vec<u8>>();
    while remaining > 0 {
        let want = usize::try_from(remaining.min(CHUNK as u64)).unwrap_or(CHUNK);
        let mut buf = returned.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        let n = read_full(&mut file, &mut buf[..want])?;
        if n == 0 {
            break;
        }
        remaining = remaining.saturating_sub(n as u64);
        let chunk = Bytes::from_owner(Pooled {
            buf,
            len: n,
            home: home.clone(),
        });
        match tee.as_mut() {
            Some((writer, _)) => {
                writer.write_bytes(&chunk)?;
                if let Some(previous) = held.replace(chunk) {
                    send(previous)?;
                }
            }
            None => send(chunk)?,
        }
    }
    if let Some((writer, finish)) = tee {
        finish(writer);
    }
    match held {
        Some(last) => send(last),
        None => Ok(()),
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-9", 100),
            Some(Span { start: 0, len: 10 })
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            Some(Span { start: 90, len: 10 })
        );
        assert_eq!(
            parse_range("bytes=-5", 100),
            Some(Span { start: 95, len: 5 })
        );
        assert_eq!(
            parse_range("bytes=95-200", 100),
            Some(Span { start: 95, len: 5 })
        );
        assert_eq!(
            parse_range("bytes=-500", 100),
            Some(Span { start: 0, len: 100 })
        );
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
