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
use super::cache_api::CacheApi;
use super::error::ApiError;
use super::fill::{Fill, Progress, Rest, follow};
use super::images::path_id;
use super::state::{AppState, blocking};
use crate::buffers::Pool;
use crate::cache::{CacheError, Reading};
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

/// Size of the pieces of a cached copy that hyper sends (see [`Prepared::into_response`]).
const CACHED_CHUNK: usize = super::fill::FOLLOW_CHUNK;

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
    let size: Option<u64> = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    // More than image_size_cap announced: refused before the image is touched.
    let claimed = match claimed {
        Ok((id, lease, _, _)) if size.is_some_and(|n| n > state.settings.image_size_cap) => {
            let _ = state.db.release_upload(&id, &lease).await;
            Err(too_large(state.settings.image_size_cap))
        }
        other => other,
    };
    match claimed {
        Ok((id, lease, store, expected)) => {
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
pub(super) async fn drain(body: Body) {
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
            let store = state.stores.named(name).cloned().ok_or_else(|| {
                ApiError::bad_request(format!("Unknown scheme '{name}' found in URI"))
            })?;
            if !store.writable() {
                return Err(ApiError::bad_request(format!(
                    "Store {name} is read-only: X-Image-Meta-Store must name a store that takes data"
                )));
            }
            Ok(store)
        }
    }
}

/// What an upload's data is inspected against (`crate::format`): the image's
/// disk_format. Upstream inspects the data of `bare` images only.
#[derive(Debug, Clone)]
pub(super) struct Expected {
    disk_format: Option<String>,
}

impl Expected {
    pub(super) fn of(image: &Image) -> Option<Self> {
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
pub(super) enum Unstored {
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
    Chunks(Vec<Bytes>),
    /// The body ended where the client said it would.
    End,
}

/// Image data on its way into a store, on a blocking thread: written, hashed, and, for
/// the formats that are, inspected (`crate::format`), the inspection decided on as soon as
/// it is settled and again at the end, before the data is made durable. Refused or failed
/// data is aborted: nothing is left in the store.
pub(super) struct Ingest {
    /// None once aborted.
    upload: Option<crate::store::Upload>,
    inspection: Option<(Expected, Inspection)>,
    /// The inspection was settled and judged.
    judged: bool,
}

impl Ingest {
    /// Starts writing image `id` (of `size` bytes, when known) into `store`.
    pub(super) fn begin(
        store: &Store,
        id: &crate::cache::ImageId,
        size: Option<u64>,
        expected: Option<Expected>,
    ) -> Result<Self, Unstored> {
        Ok(Self {
            upload: Some(store.begin_upload(id, size)?),
            inspection: expected.map(|e| (e, Inspection::new())),
            judged: false,
        })
    }

    /// Takes the next chunk; a refusal aborts what was written.
    pub(super) fn feed(&mut self, chunk: &Bytes) -> Result<(), Unstored> {
        if let Some((expected, inspection)) = &mut self.inspection {
            inspection.feed(chunk);
            if !self.judged
                && let Some(found) = inspection.found()
            {
                self.judged = true;
                if let Err(refusal) = found.check_upload(expected.disk_format.as_deref()) {
                    if let Some(upload) = self.upload.take() {
                        upload.abort();
                    }
                    return Err(Unstored::Refused(refusal));
                }
            }
        }
        match &mut self.upload {
            Some(upload) => Ok(upload.write(chunk)?),
            None => Err(Unstored::Store(StoreError::Io {
                store: String::new(),
                source: io::Error::other("the data was refused already"),
            })),
        }
    }

    /// The data ended: the inspection's verdict, then the data made durable; what was
    /// stored and the virtual size the inspection found.
    pub(super) fn finish(self) -> Result<(Stored, Option<u64>), Unstored> {
        let Some(upload) = self.upload else {
            return Err(Unstored::Store(StoreError::Io {
                store: String::new(),
                source: io::Error::other("the data was refused already"),
            }));
        };
        let virtual_size = match self.inspection {
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
        Ok((upload.finish()?, virtual_size))
    }

    /// Gives up: what was written goes.
    pub(super) fn abort(self) {
        if let Some(upload) = self.upload {
            upload.abort();
        }
    }
}

/// An upload's body goes to its writer thread in batches of chunks of at least this
/// many bytes: waking the thread for each chunk of 128 KiB or less cost more CPU.
const UPLOAD_BATCH: usize = 1 << 20;

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
    // A blocking thread writes, hashes and inspects; the request body is handed to it in
    // batches of chunks of at least UPLOAD_BATCH bytes.
    let (tx, mut rx) = mpsc::channel::<Piece>(2);
    let (writer_store, writer_id) = (store.clone(), id.clone());
    let writer = tokio::task::spawn_blocking(move || -> Result<(Stored, Option<u64>), Unstored> {
        let mut ingest = Ingest::begin(&writer_store, &writer_id, size, expected)?;
        loop {
            match rx.blocking_recv() {
                Some(Piece::Chunks(chunks)) => {
                    for chunk in chunks {
                        ingest.feed(&chunk)?;
                    }
                }
                Some(Piece::End) => return ingest.finish(),
                None => {
                    ingest.abort();
                    return Err(Unstored::Store(StoreError::Io {
                        store: writer_store.name().to_owned(),
                        source: io::Error::other("the upload ended before its data did"),
                    }));
                }
            }
        }
    });
    let mut stream = body.into_data_stream();
    let mut cut = None;
    let mut received = 0u64;
    let cap = state.settings.image_size_cap;
    let mut writer_gone = false;
    let mut batch = Vec::new();
    let mut batched = 0;
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
                        cut = Some(Cut::LeaseLost);
                        break;
                    }
                    // The database is away: the lease may still hold when it is back.
                    Err(e) => warn!(image = %id, error = %e, "upload lease not renewed"),
                }
                continue;
            }
        };
        match chunk {
            Ok(chunk) => {
                received = received.saturating_add(chunk.len() as u64);
                if received > cap {
                    cut = Some(Cut::TooLarge);
                    break;
                }
                // Once the writer failed, the rest is read and dropped (see `drain`).
                if !writer_gone {
                    batched += chunk.len();
                    batch.push(chunk);
                    if batched >= UPLOAD_BATCH {
                        batched = 0;
                        let chunks = std::mem::take(&mut batch);
                        writer_gone = tx.send(Piece::Chunks(chunks)).await.is_err();
                    }
                }
            }
            Err(e) => {
                cut = Some(Cut::Body(e.to_string()));
                break;
            }
        }
    }
    if cut.is_none() {
        if !batch.is_empty() {
            let _ = tx.send(Piece::Chunks(batch)).await;
        }
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
    let failure = match (cut, stored) {
        (Some(Cut::LeaseLost), _) => ApiError {
            status: StatusCode::CONFLICT,
            message: format!("Image {id} {LEASE_LOST}"),
        },
        (Some(Cut::TooLarge), _) => too_large(cap),
        (Some(Cut::Body(e)), _) => {
            ApiError::bad_request(format!("Error reading the image data: {e}"))
        }
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
                also: Vec::new(),
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

/// Why an upload's body stopped being read before its end.
enum Cut {
    /// The upload's lease was reclaimed, or its image deleted.
    LeaseLost,
    /// More than `image_size_cap` bytes.
    TooLarge,
    /// The client's body failed (cut off, or idle past client_socket_timeout).
    Body(String),
}

/// Upstream's 413 for data beyond `image_size_cap`.
fn too_large(cap: u64) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "The incoming image is too large: The provided image is too large (image_size_cap is {cap} bytes)."
        ),
    }
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
    /// The cached copy, already opened, its hit counted, kept from eviction while it is
    /// read.
    Cache(File, Reading),
    /// The store, opened at the span.
    Store(Box<Image>, Reader),
    /// A fill of the cache in flight, followed as it writes ([`super::fill`]).
    Fill(Box<Image>, Arc<Fill>),
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

/// What a download asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// A GET: a whole one is a hit, or starts (or follows) a fill of the cache.
    Get,
    /// A HEAD: no hit, no fill.
    Head,
    /// A GET that the connection loop answers with sendfile: from a cached copy, or
    /// following a fill of the cache (which a whole GET starts or joins, as [`Ask::Get`]
    /// does). Anything else gives [`Source::Nothing`] without opening the store, and is
    /// decided again by hyper.
    CachedOnly,
}

/// Decides a GET (or HEAD) of image `raw` with an optional Range header value. It looks
/// the image up and, when the cache holds it, opens the cached copy and counts a hit (a
/// whole GET only, as upstream counts them).
pub async fn prepare(
    state: &Shared,
    caller: &Caller,
    raw: &str,
    range: Option<&str>,
    ask: Ask,
) -> Result<Prepared, ApiError> {
    let counted = ask != Ask::Head;
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
                .map(|(file, _)| (file, cache.cache.reading(&image.id)))
        });
        let span = span.unwrap_or(Span {
            start: 0,
            len: size,
        });
        // The store is opened before the answer starts, so that a store that fails
        // gets a JSON error naming it rather than a cut-off body.
        let fills = status == StatusCode::OK && counted && size > 0;
        let source = match (cached, &state.cache) {
            (Some((file, reading)), _) => Source::Cache(file, reading),
            // A whole GET of an uncached image that fits follows the image's fill, which
            // the first such GET starts: one store read however many clients ask.
            (None, Some(cache)) if fills && size <= cache.max_size => {
                let (fill, lead) = state.fills.join(&image.id, size);
                if lead {
                    // A thread of its own, outside the blocking pool that the requests
                    // waiting for it may fill up.
                    let (filler, image_copy, fill_copy) =
                        (state.clone(), image.clone(), fill.clone());
                    let runtime = runtime.clone();
                    let spawned = std::thread::Builder::new()
                        .name("cache-fill".to_owned())
                        .spawn(move || run_fill(&filler, &runtime, &image_copy, &fill_copy));
                    if let Err(e) = spawned {
                        warn!(error = %e, "not cached: no thread for the fill");
                        fill.report(Progress::Uncached(0));
                        state.fills.end(&image.id, &fill);
                    }
                }
                runtime
                    .block_on(fill.started())
                    .map_err(|(status, message)| ApiError {
                        status: StatusCode::from_u16(status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        message,
                    })?;
                Source::Fill(Box::new(image), fill)
            }
            (None, _) if ask == Ask::CachedOnly => Source::Nothing,
            (None, _) => {
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
            Source::Fill(image, fill) => {
                let rest = store_rest(state, *image, fill.size);
                Body::from_stream(follow(fill, rest))
            }
            source => {
                // Chunks read ahead of the client: a read from the store keeps more in
                // flight while the client's side hiccups.
                // A cached copy (which sendfile did not take: a fill ended between the two
                // looks) comes from the page cache in small pieces, as a fill's followers
                // read it: a storm of them does not add up to much memory.
                let ahead = match source {
                    Source::Store(..) => 8,
                    _ => 2,
                };
                let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(ahead);
                tokio::task::spawn_blocking(move || send(source, span, tx));
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

/// The rest of image `image` (`size` bytes) from an offset, read from the store on a
/// blocking thread into the channel given: what a follower of a fill that the cache gave
/// up sends after the bytes the cache kept.
pub fn store_rest(state: Shared, image: Image, size: u64) -> Rest {
    Box::new(move |offset, tx| {
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let span = Span {
                start: offset,
                len: size - offset,
            };
            let sent = state
                .open_data(&runtime, &image.id, span)
                .map_err(|e| io::Error::other(e.message))
                .and_then(|reader| pump(reader, span.len, CHUNK, &tx));
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(e));
            }
        });
    })
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
    let ask = if method == axum::http::Method::HEAD {
        Ask::Head
    } else {
        Ask::Get
    };
    Ok(prepare(&state, &caller, &raw, range, ask)
        .await?
        .into_response(state))
}

/// Streams the `span` of `source` into `tx`. A full read (200) from the store fills the
/// cache on the way when the image fits and no one else is filling it.
fn send(source: Source, span: Span, tx: mpsc::Sender<io::Result<Bytes>>) {
    let (id, result) = match source {
        Source::Nothing => return,
        Source::Cache(mut file, _reading) => {
            debug!("serving from the cache");
            let result = file
                .seek(SeekFrom::Start(span.start))
                .and_then(|_| pump(file, span.len, CACHED_CHUNK, &tx));
            (None, result)
        }
        Source::Store(image, reader) => (Some(image.id), pump(reader, span.len, CHUNK, &tx)),
        // Streamed by `Prepared::into_response` itself.
        Source::Fill(..) => return,
    };
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::BrokenPipe {
            warn!(image = ?id, error = %e, "download failed");
        }
        let _ = tx.blocking_send(Err(e));
    }
}

/// Copies `len` bytes of `source` to the client in CHUNK pieces; a source that ends
/// early is an error (the client was promised every byte). A client that goes away stops
/// the copy (BrokenPipe).
fn pump(
    mut source: impl Read,
    len: u64,
    chunk: usize,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let mut remaining = len;
    // Buffers come back once hyper has written them.
    let pool = Pool::new(chunk);
    while remaining > 0 {
        let want = usize::try_from(remaining.min(chunk as u64)).unwrap_or(chunk);
        let mut buf = pool.take();
        let n = read_full(&mut source, &mut buf[..want])?;
        if n == 0 {
            return Err(short(remaining));
        }
        remaining = remaining.saturating_sub(n as u64);
        tx.blocking_send(Ok(pool.lend(buf, n)))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
    }
    Ok(())
}

/// Fills the cache with image `image` for [`Source::Fill`]'s followers: one read of the
/// store, written to `incomplete/<id>`, verified and published; every step reported to
/// the followers. It runs to its end whatever its followers do.
fn run_fill(state: &AppState, runtime: &tokio::runtime::Handle, image: &Image, fill: &Arc<Fill>) {
    let span = Span {
        start: 0,
        len: fill.size,
    };
    let outcome = (|| {
        let cache = state.cache.as_ref()?;
        let reader = match state.open_data(runtime, &image.id, span) {
            Ok(reader) => reader,
            Err(e) => {
                return Some(Progress::Failed {
                    status: e.status.as_u16(),
                    message: e.message,
                });
            }
        };
        Some(fill_from(cache, image, fill, reader, || {
            state.fills.stopped()
        }))
    })()
    .unwrap_or(Progress::Uncached(0));
    fill.report(outcome);
    state.fills.end(&image.id, fill);
}

/// The fill's copy from `reader` to the cache; its last word to the followers.
fn fill_from(
    cache: &CacheApi,
    image: &Image,
    fill: &Fill,
    mut reader: Reader,
    stopped: impl Fn() -> bool,
) -> Progress {
    // The image's room is reserved before a byte is written: concurrent fills never
    // take the cache over image_cache_max_size.
    let _room = match cache.cache.reserve(fill.size, cache.max_size) {
        Ok(Some(room)) => room,
        Ok(None) => {
            debug!(image = %image.id, "not cached: no room even after evicting");
            return Progress::Uncached(0);
        }
        Err(e) => {
            warn!(image = %image.id, error = %e, "not cached: no room reserved");
            return Progress::Uncached(0);
        }
    };
    let writer = match cache
        .cache
        .open_for_write(&image.id, image.checksum.as_deref())
    {
        Ok(Some(writer)) => writer,
        // Another process writes it (a prefetcher), or the cache cannot start one: the
        // followers read the store themselves.
        Ok(None) => return Progress::Uncached(0),
        Err(e) => {
            warn!(image = %image.id, error = %e, "not cached: the cache write did not start");
            return Progress::Uncached(0);
        }
    };
    let mut writer = match writer.reader() {
        Ok(file) => {
            fill.set_file(file);
            writer
        }
        Err(e) => {
            warn!(image = %image.id, error = %e, "not cached: the cache write cannot be read back");
            writer.remove();
            return Progress::Uncached(0);
        }
    };
    fill.report(Progress::Writing(0));
    let mut written = 0u64;
    // The chunks are read into buffers of a pool and handed to the cache writer (and its
    // digest thread) as they are: no copy, and a few allocations for the whole image.
    let pool = Pool::new(CHUNK);
    while written < fill.size {
        if stopped() {
            return failed(io::Error::other("glance-api stopped"));
        }
        let want = usize::try_from((fill.size - written).min(CHUNK as u64)).unwrap_or(CHUNK);
        let mut buf = pool.take();
        let n = match read_full(&mut reader, &mut buf[..want]) {
            Ok(0) => {
                let e = short(fill.size - written);
                warn!(image = %image.id, error = %e, "download failed");
                return failed(e);
            }
            Ok(n) => n,
            Err(e) => {
                warn!(image = %image.id, error = %e, "download failed");
                return failed(e);
            }
        };
        // A cache that fails (a full volume, an I/O error) never breaks the download: its
        // file goes (still readable to the followers up to here), and the rest is the
        // store's.
        if let Err(e) = writer.write_bytes(&pool.lend(buf, n)) {
            warn!(image = %image.id, error = %e, "not cached: the cache write failed");
            writer.remove();
            return Progress::Uncached(written);
        }
        written += n as u64;
        fill.report(Progress::Writing(written));
    }
    match cache.cache.admit(writer, cache.max_size) {
        Ok(_) => Progress::Done,
        Err(e @ CacheError::ChecksumMismatch { .. }) => {
            warn!(image = %image.id, error = %e, "download failed: the data does not match its checksum");
            failed(io::Error::other(e.to_string()))
        }
        // Every byte is in the file and was checked as it came; only keeping it failed.
        Err(e) => {
            warn!(image = %image.id, error = %e, "not cached");
            Progress::Uncached(written)
        }
    }
}

fn failed(e: io::Error) -> Progress {
    Progress::Failed {
        status: StatusCode::BAD_GATEWAY.as_u16(),
        message: e.to_string(),
    }
}

/// The error of a file that ended `remaining` bytes before the promised end.
pub fn short(remaining: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the file ended {remaining} bytes short of the promised length"),
    )
}

pub(super) fn read_full(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
