//! Image data: `PUT /v2/images/{id}/file` (streamed to the store, hashed on the way) and
//! `GET /v2/images/{id}/file` (Range, Content-MD5, and the transparent cache).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::access::{Caller, authorize_image, permit, visible};
use super::error::ApiError;
use super::images::path_id;
use super::state::{AppState, blocking};
use crate::buffers::Pool;
use crate::cache::CacheWriter;
use crate::db::{Activation, Image};
use crate::format::{Inspection, Refusal};
pub use crate::store::Span;
use crate::store::{Reader, Store, StoreError, Stored};

type Shared = Arc<AppState>;

/// How often an upload renews its lease; see [`crate::db::Db::claim_upload`] and
/// [`LEASE_TTL`].
pub const LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(10);
/// A lease not renewed for this long belongs to an uploader that died: three renewals
/// missed. With a sweep every [`LEASE_RENEWAL`], an image is back in queued within
/// 40 s of its uploader's death.
pub const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
const LEASE_LOST: &str = "was reclaimed during the upload: its upload lease expired";

/// Size of the chunks read from disk and sent to clients.
pub const CHUNK: usize = 1 << 20;

/// PUT /v2/images/{id}/file, into the store `X-Image-Meta-Store` names (with
/// `enabled_backends`), else the default one.
pub async fn upload(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let claimed = match target_store(&state, &headers) {
        Ok(store) => claim(&state, &caller, &raw, &headers)
            .await
            .map(|(id, lease, expected)| (id, lease, store, expected)),
        Err(e) => Err(e),
    };
    match claimed {
        Ok((id, lease, store, expected)) => {
            let size = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            // In a task of its own: should hyper drop this handler (the client gone), the
            // upload still ends, making the image active or moving it back to queued.
            tokio::spawn(store_body(state, id, lease, store, size, body, expected))
                .await
                .map_err(ApiError::internal)?
        }
        Err(e) => {
            drain(body).await;
            Err(e)
        }
    }
}

/// Reads a body to its end, so that the client sees the answer rather than a connection
/// reset while it is still sending.
async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}

/// The store an upload goes to.
fn target_store(state: &Shared, headers: &HeaderMap) -> Result<Store, ApiError> {
    let named = headers
        .get("x-image-meta-store")
        .and_then(|v| v.to_str().ok())
        .filter(|_| state.stores.multi());
    match named {
        None => Ok(state.stores.default_store().clone()),
        Some(name) => {
            state.stores.named(name).cloned().ok_or_else(|| {
                ApiError::bad_request(format!("Unknown scheme '{name}' found in URI"))
            })
        }
    }
}

/// What an upload's data is inspected against (`crate::format`): the image's
/// disk_format. Upstream inspects the data of `bare` images only.
struct Expected {
    disk_format: Option<String>,
}

impl Expected {
    fn of(image: &Image) -> Option<Self> {
        crate::format::inspects(image.container_format.as_deref()).then(|| Expected {
            disk_format: image.disk_format.clone(),
        })
    }
}

/// Upstream's refusal of data for an image without disk_format or container_format.
fn missing_formats(image: &Image) -> Option<String> {
    let missing: Vec<&str> = [
        ("disk_format", &image.disk_format),
        ("container_format", &image.container_format),
    ]
    .into_iter()
    .filter(|(_, value)| value.as_deref().is_none_or(str::is_empty))
    .map(|(key, _)| key)
    .collect();
    match missing.as_slice() {
        [] => None,
        [one] => Some(format!("Property {one} must be set prior to saving data.")),
        many => Some(format!(
            "Properties {} must be set prior to saving data.",
            many.join(", ")
        )),
    }
}

/// Checks the request and moves the image from queued to saving under a new upload
/// lease ([`crate::db::Db::claim_upload`]); returns the lease's token and what the data
/// is to be inspected against, read once the image is saving.
async fn claim(
    state: &Shared,
    caller: &Caller,
    raw: &str,
    headers: &HeaderMap,
) -> Result<(crate::cache::ImageId, String, Option<Expected>), ApiError> {
    let id = path_id(raw)?;
    if caller.is_checked() {
        let image = image_to_check(state, caller, &id).await?;
        permit(state, caller, "upload_image", &image).await?;
    }
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
    // One conditional update decides between replicas: only one moves queued -> saving.
    let lease = uuid::Uuid::new_v4().to_string();
    if state.db.claim_upload(&id, &lease).await? {
        let image = match state.db.get_row(&id).await {
            Ok(image) => image,
            Err(e) => {
                let _ = state.db.release_upload(&id, &lease).await;
                return Err(e.into());
            }
        };
        // As upstream's domain: no data without both formats, so that nothing is stored
        // that was not inspected against what the image claims.
        if let Some(missing) = image.as_ref().and_then(missing_formats) {
            let _ = state.db.release_upload(&id, &lease).await;
            return Err(ApiError::bad_request(missing));
        }
        // None: deleted meanwhile; the activation finds out.
        return Ok((id, lease, image.as_ref().and_then(Expected::of)));
    }
    let image = state
        .db
        .get_row(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No image found with ID {id}")))?;
    Err(ApiError {
        status: StatusCode::CONFLICT,
        message: format!(
            "Image status transition from {} to saving is not allowed",
            image.status
        ),
    })
}

/// Image `id` as a check needs it: whole (the policy target holds its properties) for
/// a caller with a token, its row alone otherwise; 404 when there is none.
pub async fn image_to_check(
    state: &AppState,
    caller: &Caller,
    id: &crate::cache::ImageId,
) -> Result<Image, ApiError> {
    let image = if caller.is_checked() {
        state.db.get(id).await?
    } else {
        state.db.get_row(id).await?
    };
    image.ok_or_else(|| ApiError::not_found(format!("No image found with ID {id}")))
}

/// Why the store's writer thread did not store an upload.
enum Unstored {
    /// The store failed.
    Store(StoreError),
    /// The format inspection refused the data (see `crate::format`).
    Refused(Refusal),
}

impl From<StoreError> for Unstored {
    fn from(e: StoreError) -> Self {
        Unstored::Store(e)
    }
}

/// What the request handler hands the store's writer thread.
enum Piece {
    /// More data.
    Chunk(Bytes),
    /// The body ended where the client said it would.
    End,
}

/// Streams the body into `store` and records size and digests. With `expected`, the
/// data's format is inspected on the way (`crate::format`, only header regions kept) and
/// decided on at the end of the data, before it is made durable: refused data is
/// aborted like a failed upload and the image is not activated. Whatever fails, no data
/// is left behind: a partial file is removed, a multipart upload aborted, and data whose
/// image could not be activated deleted.
async fn store_body(
    state: Shared,
    id: crate::cache::ImageId,
    lease: String,
    store: Store,
    size: Option<u64>,
    body: Body,
    expected: Option<Expected>,
) -> Result<StatusCode, ApiError> {
    // A blocking thread writes, hashes and inspects; the request body is fed to it chunk
    // by chunk.
    let (tx, mut rx) = mpsc::channel::<Piece>(8);
    let (writer_store, writer_id) = (store.clone(), id.clone());
    let writer = tokio::task::spawn_blocking(move || -> Result<(Stored, Option<u64>), Unstored> {
        let mut upload = writer_store.begin_upload(&writer_id, size)?;
        let mut inspection = expected.map(|e| (e, Inspection::new()));
        // Judged once, as soon as the inspection is settled: a refusal then stores no
        // more (the rest of the body is read and dropped).
        let mut judged = false;
        loop {
            match rx.blocking_recv() {
                Some(Piece::Chunk(chunk)) => {
                    if let Some((expected, inspection)) = &mut inspection {
                        inspection.feed(&chunk);
                        if !judged && let Some(found) = inspection.found() {
                            judged = true;
                            if let Err(refusal) =
                                found.check_upload(expected.disk_format.as_deref())
                            {
                                upload.abort();
                                return Err(Unstored::Refused(refusal));
                            }
                        }
                    }
                    upload.write(&chunk)?
                }
                Some(Piece::End) => {
                    let virtual_size = match inspection {
                        None => None,
                        Some((expected, inspection)) => {
                            match inspection
                                .finish()
                                .check_upload(expected.disk_format.as_deref())
                            {
                                Ok(virtual_size) => virtual_size,
                                Err(refusal) => {
                                    upload.abort();
                                    return Err(Unstored::Refused(refusal));
                                }
                            }
                        }
                    };
                    return Ok((upload.finish()?, virtual_size));
                }
                None => {
                    upload.abort();
                    return Err(Unstored::Store(StoreError::Io {
                        store: writer_store.name().to_owned(),
                        source: io::Error::other("the upload ended before its data did"),
                    }));
                }
            }
        }
    });
    let mut stream = body.into_data_stream();
    let mut body_error = None;
    let mut writer_gone = false;
    // The lease is renewed while the body streams; a lost lease (reclaimed after it
    // expired, or the image deleted) ends the upload.
    let mut renewal = tokio::time::interval(LEASE_RENEWAL);
    renewal.tick().await;
    loop {
        let chunk = tokio::select! {
            chunk = stream.next() => match chunk {
                Some(chunk) => chunk,
                None => break,
            },
            _ = renewal.tick() => {
                match state.db.renew_upload(&id, &lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        body_error = Some(LEASE_LOST.to_owned());
                        break;
                    }
                    // The database is away: the lease may still hold when it is back.
                    Err(e) => warn!(image = %id, error = %e, "upload lease not renewed"),
                }
                continue;
            }
        };
        match chunk {
            // Once the writer failed, the rest is read and dropped (see `drain`).
            Ok(chunk) if !writer_gone => writer_gone = tx.send(Piece::Chunk(chunk)).await.is_err(),
            Ok(_) => {}
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    if body_error.is_none() {
        let _ = tx.send(Piece::End).await;
    }
    drop(tx);
    // A writer that panicked stored nothing: the image goes back to queued below.
    let stored = writer.await.unwrap_or_else(|e| {
        Err(Unstored::Store(StoreError::Io {
            store: store.name().to_owned(),
            source: io::Error::other(format!("the upload's writer failed: {e}")),
        }))
    });
    let failure = match (body_error, stored) {
        (Some(e), _) if e == LEASE_LOST => ApiError {
            status: StatusCode::CONFLICT,
            message: format!("Image {id} {LEASE_LOST}"),
        },
        (Some(e), _) => ApiError::bad_request(format!("Error reading the image data: {e}")),
        // Deleted meanwhile: the delete removed the partial data under the writer.
        (None, Err(Unstored::Store(_))) if matches!(state.db.get_row(&id).await, Ok(None)) => {
            deleted_during_upload(&id)
        }
        (None, Err(Unstored::Store(e))) => {
            warn!(image = %id, error = %e, "storing image data failed");
            e.into()
        }
        // Upstream's InvalidImageData: 415 with the inspector's reason.
        (None, Err(Unstored::Refused(refusal))) => {
            warn!(image = %id, error = %refusal, "image data refused by the format inspection");
            ApiError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: refusal.to_string(),
            }
        }
        (None, Ok((stored, virtual_size))) => {
            let location = store.location(&id);
            let activation = Activation {
                size: i64::try_from(stored.size).map_err(ApiError::internal)?,
                checksum: stored.md5,
                os_hash_value: stored.sha512,
                location: location.clone(),
                store: store.name().to_owned(),
                virtual_size: virtual_size.and_then(|v| i64::try_from(v).ok()),
            };
            let failure = match state.db.activate(&id, &lease, &activation).await {
                Ok(true) => return Ok(StatusCode::NO_CONTENT),
                // Deleted (or otherwise moved on) while uploading: the data goes too.
                Ok(false) => deleted_during_upload(&id),
                // Not activated: the image must not keep data it does not describe.
                Err(e) => e.into(),
            };
            let (state, name) = (state.clone(), store.name().to_owned());
            blocking(move || Ok(state.stores.delete(&location, Some(&name))?)).await?;
            failure
        }
    };
    // Back to queued, unless it was deleted or reclaimed meanwhile; another upload may
    // then try.
    let _ = state.db.release_upload(&id, &lease).await;
    Err(failure)
}

/// Upstream's 410 for an upload whose image went away (deleted, or reclaimed after its
/// lease expired).
fn deleted_during_upload(id: &crate::cache::ImageId) -> ApiError {
    ApiError {
        status: StatusCode::GONE,
        message: format!(
            "Image {id} could not be found after upload. The image may have been deleted during the upload."
        ),
    }
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

/// Where the bytes of a download come from.
pub enum Source {
    /// No bytes: the image has no data yet (204) or the range is unsatisfiable (416).
    Nothing,
    /// The cached copy, already opened, its hit counted.
    Cache(File),
    /// The store, opened at the span, through the cache tee when the read fills the
    /// cache.
    Store(Box<Image>, Reader),
}

/// A GET of image data, decided before a byte is sent: the status and headers of the
/// answer, the range, and where the bytes come from. Both transports serve it: hyper with
/// a streamed body ([`Prepared::into_response`]), and the connection loop with sendfile
/// for cached copies (`super::connection`).
pub struct Prepared {
    /// 200, 206, 204 or 416.
    pub status: StatusCode,
    /// The headers of the answer, Content-Length included.
    pub headers: HeaderMap,
    /// The bytes to send: the range, or the whole image. The body is exactly this long
    /// (Content-Length says so); a source that ends early is an error.
    pub span: Span,
    /// Where the bytes come from.
    pub source: Source,
}

/// Decides a GET of image `raw` with an optional Range header value. It looks the image
/// up and, when the cache holds it, opens the cached copy and counts a hit.
/// `counted`: a GET (a HEAD is no hit).
pub async fn prepare(
    state: &Shared,
    caller: &Caller,
    raw: &str,
    range: Option<&str>,
    counted: bool,
) -> Result<Prepared, ApiError> {
    let id = path_id(raw)?;
    let image = image_to_check(state, caller, &id).await?;
    // As upstream: not visible is 404, a deactivated image is refused to all but
    // administrators, and only then is download_image checked.
    if caller.is_checked() && !visible(state, caller, &image).await? {
        return Err(ApiError::not_found(format!("No image found with ID {id}")));
    }
    let deactivated = image.status == "deactivated";
    if deactivated && !caller.is_admin() {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "The requested image has been deactivated. Image data download is forbidden."
                .to_owned(),
        });
    }
    // Visible (checked just above): the policy alone decides now.
    authorize_image(state, caller, "download_image", &image)?;
    let state = state.clone();
    let range = range.map(str::to_owned);
    let runtime = tokio::runtime::Handle::current();
    blocking(move || {
        if !(image.status == "active" || deactivated) {
            return Ok(Prepared::empty(StatusCode::NO_CONTENT, HeaderMap::new()));
        }
        let size = u64::try_from(image.size.unwrap_or(0)).unwrap_or(0);
        let span = match range.as_deref().map(|value| parse_range(value, size)) {
            None => None,
            Some(Some(span)) => Some(span),
            Some(None) => {
                let mut headers = HeaderMap::new();
                insert(
                    &mut headers,
                    header::CONTENT_RANGE,
                    format!("bytes */{size}"),
                );
                return Ok(Prepared::empty(StatusCode::RANGE_NOT_SATISFIABLE, headers));
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let status = match span {
            Some(span) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(span.len));
                let last = span.start + span.len - 1;
                insert(
                    &mut headers,
                    header::CONTENT_RANGE,
                    format!("bytes {}-{last}/{size}", span.start),
                );
                StatusCode::PARTIAL_CONTENT
            }
            None => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
                if let Some(md5) = image.checksum.as_deref() {
                    insert(
                        &mut headers,
                        HeaderName::from_static("content-md5"),
                        md5.to_owned(),
                    );
                }
                StatusCode::OK
            }
        };
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        // Only a whole GET is a hit, as upstream counts them. A cache that cannot be read
        // leaves the image to the store.
        let cached = state.cache.as_ref().and_then(|cache| {
            let opened = if counted && span.is_none() {
                cache.cache.open_for_read(&image.id)
            } else {
                cache.cache.open_uncounted(&image.id)
            };
            opened
                .inspect_err(|e| warn!(image = %image.id, error = %e, "cached copy not read; serving from the store"))
                .ok()
                .flatten()
        });
        let span = span.unwrap_or(Span {
            start: 0,
            len: size,
        });
        // The store is opened before the answer starts, so that a store that fails
        // gets a JSON error naming it rather than a cut-off body.
        let source = match cached {
            Some((file, _)) => Source::Cache(file),
            None => {
                let reader = state.open_data(&runtime, &image.id, span)?;
                Source::Store(Box::new(image), reader)
            }
        };
        Ok(Prepared {
            status,
            headers,
            span,
            source,
        })
    })
    .await
}

/// Sets a header whose value was formatted here; a value that is not a valid header
/// (an odd checksum in the database) is left out.
fn insert(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(name, value);
    }
}

impl Prepared {
    fn empty(status: StatusCode, headers: HeaderMap) -> Self {
        Prepared {
            status,
            headers,
            span: Span { start: 0, len: 0 },
            source: Source::Nothing,
        }
    }

    /// The answer with a body streamed from a blocking thread, CHUNK by CHUNK.
    pub fn into_response(self, state: Shared) -> Response {
        let Prepared {
            status,
            headers,
            span,
            source,
        } = self;
        let body = match source {
            Source::Nothing => Body::empty(),
            source => {
                // Chunks read ahead of the client. A read from the store may fill the cache,
                // and its MD5 thread (the slowest part) then has more to work on while the
                // client's side hiccups: 0.91 of md5sum with 4, 0.94-0.95 with 8 (9 runs).
                let ahead = match source {
                    Source::Store(..) => 8,
                    _ => 4,
                };
                let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(ahead);
                tokio::task::spawn_blocking(move || send(&state, source, status, span, tx));
                Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                }))
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// GET /v2/images/{id}/file
pub async fn download(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let counted = method == axum::http::Method::GET;
    Ok(prepare(&state, &caller, &raw, range, counted)
        .await?
        .into_response(state))
}

/// Streams the `span` of `source` into `tx`. A full read (200) from the store fills the
/// cache on the way when the image fits and no one else is filling it.
fn send(
    state: &AppState,
    source: Source,
    status: StatusCode,
    span: Span,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let (id, result) = match source {
        Source::Nothing => return,
        Source::Cache(mut file) => {
            debug!("serving from the cache");
            let result = file
                .seek(SeekFrom::Start(span.start))
                .and_then(|_| pump(file, span.len, None, &tx));
            (None, result)
        }
        Source::Store(image, reader) => {
            let result = from_store(state, &image, reader, status == StatusCode::OK, span, &tx);
            (Some(image.id), result)
        }
    };
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::BrokenPipe {
            warn!(image = ?id, error = %e, "download failed");
        }
        let _ = tx.blocking_send(Err(e));
    }
}

fn from_store(
    state: &AppState,
    image: &Image,
    reader: Reader,
    whole: bool,
    span: Span,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    if let Some(cache) = &state.cache
        && whole
        && span.len <= cache.max_size
    {
        // A cache that cannot take the image leaves the download to the store alone.
        let writer = cache
            .cache
            .open_for_write(&image.id, image.checksum.as_deref())
            .inspect_err(|e| warn!(image = %image.id, error = %e, "not cached: the cache write did not start"))
            .ok()
            .flatten();
        if let Some(writer) = writer {
            let admit = |writer: CacheWriter<'_>| {
                if let Err(e) = cache.cache.admit(writer, cache.max_size) {
                    warn!(image = %image.id, error = %e, "not cached");
                }
            };
            return pump(reader, span.len, Some((writer, &admit)), tx);
        }
    }
    pump(reader, span.len, None, tx)
}

/// A cache write fed by a download, and what to do with it once the data is complete.
type Tee<'a, 'c> = (CacheWriter<'c>, &'a dyn Fn(CacheWriter<'c>));

/// Copies `len` bytes of `source` to the client in CHUNK pieces; a source that ends
/// early is an error (the client was promised every byte). With a tee, each
/// piece is written to the cache too, and the last piece is held back until the cache
/// write is published, so a client that has every byte can rely on the next read being a
/// hit. A client that goes away stops the copy (BrokenPipe) and the cache write is dropped.
fn pump(
    mut source: impl Read,
    len: u64,
    mut tee: Option<Tee<'_, '_>>,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let send = |chunk: Bytes| {
        tx.blocking_send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    };
    let mut remaining = len;
    let mut held: Option<Bytes> = None;
    // Buffers come back once hyper has written them.
    let pool = Pool::new(CHUNK);
    while remaining > 0 {
        let want = usize::try_from(remaining.min(CHUNK as u64)).unwrap_or(CHUNK);
        let mut buf = pool.take();
        let n = read_full(&mut source, &mut buf[..want])?;
        if n == 0 {
            return Err(short(remaining));
        }
        remaining = remaining.saturating_sub(n as u64);
        let chunk = pool.lend(buf, n);
        match tee.as_mut().map(|(writer, _)| writer.write_bytes(&chunk)) {
            Some(Ok(())) => {
                if let Some(previous) = held.replace(chunk) {
                    send(previous)?;
                }
            }
            // A cache that fails (a full volume, an I/O error) never breaks the download:
            // its partial file goes, and the rest is served from the store alone.
            Some(Err(e)) => {
                if let Some((writer, _)) = tee.take() {
                    warn!(image = %writer.id(), error = %e, "not cached: the cache write failed");
                    writer.remove();
                }
                if let Some(previous) = held.take() {
                    send(previous)?;
                }
                send(chunk)?;
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

/// The error of a file that ended `remaining` bytes before the promised end.
pub fn short(remaining: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the file ended {remaining} bytes short of the promised length"),
    )
}

fn read_full(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
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
