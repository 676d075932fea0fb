//! glance_store's `s3` store on aws-sdk-s3: objects named by image ID in one bucket.
//!
//! Every call here blocks its thread on the runtime (the data path runs on blocking
//! threads). An upload holds at most [`UPLOAD_BUDGET`] bytes: one part being filled and
//! the parts in flight. A read streams the object and resumes from where a cut connection
//! left it.
//!
//! Parts and objects are sent with an unsigned payload, as presigned-URL uploads are:
//! signing would hash every byte with SHA-256 on top of the MD5 and SHA-512 glance
//! computes, and cost more CPU than the S3 server spends storing it. Headers are still
//! signed; use an `https://` endpoint where the network between glance-api and S3 is
//! not trusted.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::config::{S3Options, UrlFormat};
use super::{Failure, Span, StoreError, Stored};
use crate::buffers::Pool;
use crate::digest::{Algorithm, BackgroundDigest};

/// The most bytes an upload holds in memory: the part being filled and the parts being
/// sent and hashed. With 10 MiB parts, one is sent while the next fills.
pub const UPLOAD_BUDGET: u64 = 24 << 20;

/// An S3 bucket as an image store; clones share one client.
#[derive(Clone)]
pub struct S3Store(Arc<Shared>);

/// What the clones of an [`S3Store`] share.
pub struct Shared {
    name: String,
    options: S3Options,
    client: Client,
    runtime: Handle,
}

impl std::ops::Deref for S3Store {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("name", &self.name)
            .field("endpoint", &self.options.endpoint)
            .field("bucket", &self.options.bucket)
            .finish()
    }
}

impl S3Store {
    /// The store `name` with `options`; its calls run on `runtime`. Nothing is sent yet.
    pub fn new(name: &str, options: &S3Options, runtime: Handle) -> Result<Self, StoreError> {
        let http = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ));
        let http = match &options.cacert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| StoreError::Config {
                    store: name.to_owned(),
                    message: format!("s3_store_cacert = {}: {e}", path.display()),
                })?;
                let context = TlsContext::builder()
                    .with_trust_store(TrustStore::empty().with_pem_certificate(pem))
                    .build()
                    .map_err(|e| StoreError::Config {
                        store: name.to_owned(),
                        message: format!("s3_store_cacert = {}: {e}", path.display()),
                    })?;
                http.tls_context(context).build_https()
            }
            None => http.build_https(),
        };
        let region = match options.region.as_str() {
            "" => "us-east-1".to_owned(),
            region => region.to_owned(),
        };
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .endpoint_url(&options.endpoint)
            .region(Region::new(region))
            .credentials_provider(Credentials::new(
                &options.access_key,
                &options.secret_key.0,
                None,
                None,
                "glance-api.conf",
            ))
            .force_path_style(options.url_format == UrlFormat::Path)
            // As glance_store does by default: S3-compatible servers (Ceph's among them)
            // do not all take the newer flexible checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // A slow reader (the client of a download) is not a stalled server; the read
            // timeout covers a server that stops sending.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(options.max_retries.saturating_add(1))
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.connect_timeout)
                    .read_timeout(options.read_timeout)
                    .build(),
            )
            .build();
        Ok(Self(Arc::new(Shared {
            name: name.to_owned(),
            options: options.clone(),
            client: Client::from_conf(config),
            runtime,
        })))
    }

    /// Its name in `enabled_backends`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its options.
    pub fn options(&self) -> &S3Options {
        &self.options
    }

    /// The location of object `key`, as glance_store records it.
    pub fn location(&self, key: &str) -> String {
        format!("{}/{key}", self.options.location_prefix())
    }

    /// The bucket and key of a location of this store, or of another S3 location whose
    /// bucket this store's credentials read (as glance_store does, it takes the bucket
    /// and key from the URL and the server from the configuration).
    pub fn parse_location(url: &str) -> Option<(String, String)> {
        let rest = ["s3://", "s3+http://", "s3+https://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))?;
        let mut parts = rest.trim_matches('/').rsplitn(3, '/');
        let key = parts.next()?;
        let bucket = parts.next()?;
        parts.next()?; // the host
        (!key.is_empty() && !bucket.is_empty()).then(|| (bucket.to_owned(), key.to_owned()))
    }

    fn fail<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        operation: &'static str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_owned);
        let failure = match (&e, status, code.as_deref()) {
            (SdkError::TimeoutError(_), _, _) => Failure::Unavailable,
            (SdkError::DispatchFailure(_), _, _) => Failure::Unavailable,
            (SdkError::ResponseError(_), _, _) => Failure::Unavailable,
            (_, Some(500..=599), _) => Failure::Unavailable,
            (
                _,
                _,
                Some(
                    "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "AccessDenied"
                    | "InvalidSecurity",
                ),
            )
            | (_, Some(401 | 403), _) => Failure::Denied,
            (_, _, Some("NoSuchBucket")) => Failure::NoBucket,
            (_, _, Some("NoSuchKey")) | (_, Some(404), _) => Failure::NotFound,
            _ => Failure::Other,
        };
        let said = match (code, e.message(), status) {
            (Some(code), Some(message), _) if !message.is_empty() => format!("{code}: {message}"),
            (Some(code), _, _) => code,
            // HEAD answers have no body, hence no error code.
            (None, _, Some(status)) => format!("HTTP {status}"),
            (None, _, None) => DisplayErrorContext(&e).to_string(),
        };
        let detail = match failure {
            Failure::Denied => format!(
                "{said}: the credentials were refused; check s3_store_access_key and s3_store_secret_key"
            ),
            Failure::NoBucket => format!("{said}: the bucket does not exist"),
            _ => said,
        };
        StoreError::Remote {
            store: self.name.clone(),
            server: format!("{} bucket {}", self.options.endpoint, self.options.bucket),
            operation,
            failure,
            detail,
        }
    }

    /// Checks that the bucket exists, creating it when `s3_store_create_bucket_on_put`.
    fn ensure_bucket(&self) -> Result<(), StoreError> {
        let bucket = &self.options.bucket;
        let head = self
            .runtime
            .block_on(self.client.head_bucket().bucket(bucket).send());
        match head {
            Ok(_) => return Ok(()),
            Err(e) => {
                let e = self.fail("HeadBucket", e);
                if !matches!(
                    e,
                    StoreError::Remote {
                        failure: Failure::NotFound | Failure::NoBucket,
                        ..
                    }
                ) {
                    return Err(e);
                }
            }
        }
        if !self.options.create_bucket_on_put {
            return Err(StoreError::Remote {
                store: self.name.clone(),
                server: format!("{} bucket {bucket}", self.options.endpoint),
                operation: "HeadBucket",
                failure: Failure::NoBucket,
                detail: "the bucket does not exist; create it, or set s3_store_create_bucket_on_put = true to have it created".to_owned(),
            });
        }
        let mut create = self.client.create_bucket().bucket(bucket);
        if !self.options.region.is_empty() {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(
                        self.options.region.as_str(),
                    ))
                    .build(),
            );
        }
        match self.runtime.block_on(create.send()) {
            Ok(_) => Ok(()),
            // Another replica created it meanwhile.
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            Err(e) => Err(self.fail("CreateBucket", e)),
        }
    }

    /// Starts storing object `key`; `size` is the Content-Length when the client gave one.
    pub fn begin_upload(&self, key: &str, size: Option<u64>) -> Result<S3Upload, StoreError> {
        self.ensure_bucket()?;
        // As glance_store does: parts grow so that a known size fits in 10,000 of them.
        let part = size
            .map(|s| s.div_ceil(10_000))
            .unwrap_or(0)
            .max(self.options.chunk_size);
        let in_flight = (UPLOAD_BUDGET / part).saturating_sub(1).max(1);
        Ok(S3Upload {
            store: self.clone(),
            key: key.to_owned(),
            part_size: usize::try_from(part).unwrap_or(usize::MAX),
            in_flight: usize::try_from(in_flight)
                .unwrap_or(1)
                .min(self.options.thread_pools),
            pool: Pool::new(usize::try_from(part).unwrap_or(usize::MAX)),
            buf: Vec::new(),
            filled: 0,
            multipart: None,
            md5: BackgroundDigest::new(Algorithm::Md5),
            sha512: BackgroundDigest::new(Algorithm::Sha512),
            size: 0,
        })
    }

    /// Opens `span` of object `bucket/key` for reading.
    pub fn open(&self, bucket: &str, key: &str, span: Span) -> Result<S3Reader, StoreError> {
        let mut reader = S3Reader {
            store: self.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            next: span.start,
            end: span.start + span.len,
            body: None,
            chunk: Bytes::new(),
        };
        if span.len > 0 {
            reader.body = Some(reader.get()?);
        }
        Ok(reader)
    }

    /// Deletes object `bucket/key` (deleting a missing object is not an error in S3).
    pub fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.runtime
            .block_on(self.client.delete_object().bucket(bucket).key(key).send())
            .map(drop)
            .map_err(|e| self.fail("DeleteObject", e))
    }

    /// Aborts the multipart uploads in progress of `key`: what an upload whose writer
    /// died left behind.
    pub fn abort_partial(&self, key: &str) -> Result<(), StoreError> {
        let out = self
            .runtime
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.options.bucket)
                    .prefix(key)
                    .send(),
            )
            .map_err(|e| self.fail("ListMultipartUploads", e))?;
        for upload in out.uploads() {
            if let (Some(k), Some(id)) = (upload.key(), upload.upload_id())
                && k == key
            {
                self.runtime.block_on(abort_upload(self, key, id))?;
            }
        }
        Ok(())
    }

    /// The IDs of multipart uploads in progress in the bucket (for checks and cleanup).
    pub fn multipart_uploads(&self) -> Result<Vec<String>, StoreError> {
        let out = self
            .runtime
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.options.bucket)
                    .send(),
            )
            .map_err(|e| self.fail("ListMultipartUploads", e))?;
        Ok(out
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_owned))
            .collect())
    }
}

/// A multipart upload in progress.
struct Multipart {
    upload_id: String,
    sent: Vec<CompletedPart>,
    sending: VecDeque<JoinHandle<Result<CompletedPart, StoreError>>>,
}

/// An upload in progress: digests computed on two threads while parts go out. Dropping
/// it unfinished aborts the multipart upload.
pub struct S3Upload {
    store: S3Store,
    key: String,
    part_size: usize,
    in_flight: usize,
    /// The part buffers: at most `in_flight + 1` of them exist.
    pool: Pool,
    /// The part being filled, and how much of it is.
    buf: Vec<u8>,
    filled: usize,
    multipart: Option<Multipart>,
    md5: BackgroundDigest,
    sha512: BackgroundDigest,
    size: u64,
}

impl S3Upload {
    /// Takes one chunk of the image; on failure the upload is aborted.
    pub fn write(&mut self, chunk: &Bytes) -> Result<(), StoreError> {
        let result = self.take(chunk);
        if result.is_err() {
            self.abort();
        }
        result
    }

    fn take(&mut self, chunk: &Bytes) -> Result<(), StoreError> {
        self.size += chunk.len() as u64;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            if self.buf.is_empty() {
                self.buf = self.pool.take();
            }
            let n = (self.part_size - self.filled).min(rest.len());
            self.buf[self.filled..self.filled + n].copy_from_slice(&rest[..n]);
            self.filled += n;
            rest = &rest[n..];
            if self.filled == self.part_size {
                let part = self.take_part()?;
                self.send_part(part)?;
            }
        }
        Ok(())
    }

    /// The part filled so far, lent out of the pool and handed to both digests: they
    /// hash whole parts, so the request's chunks are freed as soon as they are copied,
    /// and the part buffers are all the upload holds.
    fn take_part(&mut self) -> Result<Bytes, StoreError> {
        let part = self.pool.lend(std::mem::take(&mut self.buf), self.filled);
        self.filled = 0;
        self.md5.feed(&part).map_err(|e| self.io(e))?;
        self.sha512.feed(&part).map_err(|e| self.io(e))?;
        Ok(part)
    }

    /// Sends the rest and completes the object: one PUT when it is smaller than a part
    /// and than `s3_store_large_object_size`, else the multipart upload's last part. On
    /// failure the upload is aborted.
    pub fn finish(mut self) -> Result<Stored, StoreError> {
        let result = self.complete_object();
        if result.is_err() {
            self.abort();
        }
        result
    }

    fn complete_object(&mut self) -> Result<Stored, StoreError> {
        let rest = self.take_part()?;
        let md5 = self.md5.finish().map_err(|e| self.io(e))?;
        let sha512 = self.sha512.finish().map_err(|e| self.io(e))?;
        let small = self.size < self.store.options.large_object_size || self.size == 0;
        if self.multipart.is_none() && small {
            let store = &self.store;
            store
                .runtime
                .block_on(
                    store
                        .client
                        .put_object()
                        .bucket(&store.options.bucket)
                        .key(&self.key)
                        .content_length(i64::try_from(rest.len()).unwrap_or(i64::MAX))
                        .body(ByteStream::from(rest))
                        .customize()
                        .disable_payload_signing()
                        .send(),
                )
                .map_err(|e| store.fail("PutObject", e))?;
        } else {
            if !rest.is_empty() {
                self.send_part(rest)?;
            }
            self.complete()?;
        }
        Ok(Stored {
            size: self.size,
            md5,
            sha512,
        })
    }

    fn io(&self, e: io::Error) -> StoreError {
        StoreError::Io {
            store: self.store.name.clone(),
            source: e,
        }
    }

    fn start(&mut self) -> Result<&mut Multipart, StoreError> {
        if self.multipart.is_none() {
            let store = &self.store;
            let out = store
                .runtime
                .block_on(
                    store
                        .client
                        .create_multipart_upload()
                        .bucket(&store.options.bucket)
                        .key(&self.key)
                        .send(),
                )
                .map_err(|e| store.fail("CreateMultipartUpload", e))?;
            let upload_id = out.upload_id().unwrap_or_default().to_owned();
            debug!(key = %self.key, %upload_id, "multipart upload started");
            self.multipart = Some(Multipart {
                upload_id,
                sent: Vec::new(),
                sending: VecDeque::new(),
            });
        }
        // Just set when it was None.
        self.multipart.as_mut().ok_or_else(|| StoreError::Io {
            store: String::new(),
            source: io::Error::other("no multipart upload"),
        })
    }

    /// Sends one part in the background, first waiting for the oldest part in flight
    /// when the budget is used up.
    fn send_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        let in_flight = self.in_flight;
        let (store, key) = (self.store.clone(), self.key.clone());
        let multipart = self.start()?;
        while multipart.sending.len() >= in_flight {
            wait_oldest(&store, multipart)?;
        }
        let number =
            i32::try_from(multipart.sent.len() + multipart.sending.len() + 1).unwrap_or(i32::MAX);
        let upload_id = multipart.upload_id.clone();
        let task_store = store.clone();
        multipart.sending.push_back(store.runtime.spawn(async move {
            let out = task_store
                .client
                .upload_part()
                .bucket(&task_store.options.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(i64::try_from(part.len()).unwrap_or(i64::MAX))
                .body(ByteStream::from(part))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| task_store.fail("UploadPart", e))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build())
        }));
        Ok(())
    }

    fn complete(&mut self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let Some(multipart) = self.multipart.as_mut() else {
            return Ok(());
        };
        while !multipart.sending.is_empty() {
            wait_oldest(&store, multipart)?;
        }
        store
            .runtime
            .block_on(
                store
                    .client
                    .complete_multipart_upload()
                    .bucket(&store.options.bucket)
                    .key(&self.key)
                    .upload_id(&multipart.upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(std::mem::take(&mut multipart.sent)))
                            .build(),
                    )
                    .send(),
            )
            .map_err(|e| store.fail("CompleteMultipartUpload", e))?;
        self.multipart = None;
        Ok(())
    }
}

fn wait_oldest(store: &S3Store, multipart: &mut Multipart) -> Result<(), StoreError> {
    if let Some(task) = multipart.sending.pop_front() {
        let part = store.runtime.block_on(task).map_err(|e| StoreError::Io {
            store: store.name.clone(),
            source: io::Error::other(e),
        })??;
        multipart.sent.push(part);
    }
    Ok(())
}

/// How long an abort that S3 could not take is retried in the background.
const ABORT_PATIENCE: Duration = Duration::from_secs(600);

/// The longest pause between two of those retries: the parts go within this long of
/// S3's return (an abort is one small request).
const ABORT_PAUSE_MAX: Duration = Duration::from_secs(5);

impl S3Upload {
    /// Stops the parts in flight and aborts the multipart upload, waiting for S3's
    /// answer, so that a failed upload leaves no parts behind. When S3 cannot be
    /// reached, the abort is retried in the background until it can.
    pub fn abort(&mut self) {
        let Some(multipart) = self.stop() else {
            return;
        };
        let (store, key) = (self.store.clone(), self.key.clone());
        let first = store
            .runtime
            .block_on(abort_upload(&store, &key, &multipart.upload_id));
        match first {
            Ok(()) => debug!(%key, "multipart upload aborted"),
            Err(e) if e.is_unavailable() => {
                warn!(%key, error = %e, "multipart upload not aborted yet; retrying in the background");
                drop(
                    store
                        .runtime
                        .spawn(abort_until_done(store.clone(), key, multipart)),
                );
            }
            Err(e) => warn!(%key, error = %e, "multipart upload not aborted"),
        }
    }

    fn stop(&mut self) -> Option<Multipart> {
        let multipart = self.multipart.take()?;
        for task in &multipart.sending {
            task.abort();
        }
        Some(multipart)
    }
}

async fn abort_upload(store: &S3Store, key: &str, upload_id: &str) -> Result<(), StoreError> {
    store
        .client
        .abort_multipart_upload()
        .bucket(&store.options.bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .map(drop)
        .map_err(|e| store.fail("AbortMultipartUpload", e))
}

/// Retries an abort with growing pauses while S3 is unavailable, for [`ABORT_PATIENCE`].
async fn abort_until_done(store: S3Store, key: String, multipart: Multipart) {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_secs(1);
    loop {
        match abort_upload(&store, &key, &multipart.upload_id).await {
            Ok(()) => {
                debug!(%key, "multipart upload aborted");
                return;
            }
            Err(e) if e.is_unavailable() && started.elapsed() < ABORT_PATIENCE => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ABORT_PAUSE_MAX);
            }
            Err(e) => {
                warn!(%key, upload_id = %multipart.upload_id, error = %e, "multipart upload left behind");
                return;
            }
        }
    }
}

impl Drop for S3Upload {
    /// An upload dropped without `finish` or `abort` (a panic) is aborted in the
    /// background.
    fn drop(&mut self) {
        if let Some(multipart) = self.stop() {
            let task = abort_until_done(self.store.clone(), self.key.clone(), multipart);
            drop(self.store.runtime.spawn(task));
        }
    }
}

/// The bytes of an object (or a range of it), read on a blocking thread. A connection
/// that breaks mid-object is resumed with a ranged GET from the next byte, up to
/// `s3_store_max_retries` times.
pub struct S3Reader {
    store: S3Store,
    bucket: String,
    key: String,
    next: u64,
    end: u64,
    body: Option<ByteStream>,
    chunk: Bytes,
}

impl S3Reader {
    fn get(&self) -> Result<ByteStream, StoreError> {
        let store = &self.store;
        let out = store
            .runtime
            .block_on(
                store
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .range(format!("bytes={}-{}", self.next, self.end - 1))
                    .send(),
            )
            .map_err(|e| store.fail("GetObject", e))?;
        Ok(out.body)
    }

    fn refill(&mut self) -> io::Result<()> {
        let mut resumed = 0;
        loop {
            let next = match self.body.as_mut() {
                Some(body) => self.store.runtime.block_on(body.next()),
                None => None,
            };
            match next {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    return Ok(());
                }
                // The object ended early: the caller reports the short read.
                None => return Ok(()),
                Some(Err(e)) => {
                    if resumed >= self.store.options.max_retries {
                        return Err(io::Error::other(format!(
                            "store {}: reading {} from {} failed at byte {} after {resumed} resumptions: {e}",
                            self.store.name, self.key, self.store.options.endpoint, self.next
                        )));
                    }
                    resumed += 1;
                    warn!(store = %self.store.name, key = %self.key, at = self.next, error = %e, "S3 read broke; resuming");
                    std::thread::sleep(Duration::from_millis(100 << resumed.min(5)));
                    self.body = Some(self.get().map_err(io::Error::other)?);
                }
            }
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.next >= self.end || buf.is_empty() {
            return Ok(0);
        }
        if self.chunk.is_empty() {
            self.refill()?;
        }
        let n = buf.len().min(self.chunk.len());
        let n = n.min(usize::try_from(self.end - self.next).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.chunk[..n]);
        bytes::Buf::advance(&mut self.chunk, n);
        self.next += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_as_glance_store_writes_them() {
        assert_eq!(
            S3Store::parse_location("s3://rgw:8080/glance/1b2c"),
            Some(("glance".to_owned(), "1b2c".to_owned()))
        );
        assert_eq!(
            S3Store::parse_location("s3+https://s3.example.org/path/glance/1b2c"),
            Some(("glance".to_owned(), "1b2c".to_owned()))
        );
        assert_eq!(S3Store::parse_location("s3://glance/1b2c"), None);
        assert_eq!(S3Store::parse_location("file:///x/y/z"), None);
    }
}
