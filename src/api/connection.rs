//! One client connection. A `GET /v2/images/{id}/file` of a cached image is answered here,
//! with sendfile(2) from the cached copy. Any other request whose end its head tells
//! (no body, or a Content-Length one) is served by hyper and the router, one request at a
//! time, after which the connection comes back here; so a client that reuses its
//! connection (openstacksdk, glanceclient, nova) still gets cached images by sendfile.
//! Requests whose end this loop cannot see (chunked or upgraded bodies, `Expect`,
//! HTTP/1.0, malformed heads) hand the rest of the connection to hyper.
//!
//! Both paths decide a download with the same [`data::prepare`], so the status and headers
//! are the same whichever transport sends the bytes.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request};
use bytes::{Buf, BytesMut};
use futures::FutureExt;
use futures::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Sleep;
use tower::ServiceExt;
use tracing::debug;

use super::access;
use super::data::{self, Prepared, Source, Span};
use super::fill::{self, Fill, Progress};
use super::state::AppState;
use super::{request_id, sendfile};
use crate::keystone::Secret;

/// The largest request head read here; a larger one goes to hyper, under its own limits.
const MAX_HEAD: usize = 64 << 10;

/// How long a client has to send a whole request head (hyper's default too); a shorter
/// `client_socket_timeout` shortens it.
/// hyper's buffer of a connection: a request head (at most [`MAX_HEAD`]) fits it.
const MAX_BUF: usize = 2 * MAX_HEAD;

pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection waits for a whole request head, the next one on a kept-alive
/// connection included: [`HEAD_TIMEOUT`], or `client_socket_timeout` when shorter.
pub fn head_timeout(client_socket_timeout: Option<Duration>) -> Duration {
    client_socket_timeout.map_or(HEAD_TIMEOUT, |idle| idle.min(HEAD_TIMEOUT))
}

/// What ended a request body the client stopped sending.
#[derive(Debug, Error)]
pub enum BodyError {
    /// The connection failed or closed.
    #[error(transparent)]
    Connection(#[from] hyper::Error),
    /// Nothing came for `client_socket_timeout`.
    #[error("the client sent nothing for {0} s (client_socket_timeout)")]
    Idle(u64),
}

/// A request head as this loop sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// A bodiless HTTP/1.1 `GET /v2/images/{id}/file`: `len` bytes of head.
    Download {
        /// Bytes of the head, through its blank line.
        len: usize,
        /// The id as it appears in the path.
        id: String,
        /// The Range header's value.
        range: Option<String>,
        /// The X-Auth-Token (or X-Storage-Token) header's value, kept out of Debug.
        token: Option<Secret>,
        /// The client asked to close the connection after this answer.
        close: bool,
        /// The `x-openstack-request-id` the client sent, at most `request_id::MAX_LEN`
        /// characters long.
        request_id: Option<String>,
    },
    /// Another HTTP/1.1 request that ends `len + body` bytes from its start.
    Sized {
        /// Bytes of the head.
        len: usize,
        /// Bytes of the body (its Content-Length, 0 without one).
        body: u64,
        /// The client asked to close the connection after this answer.
        close: bool,
    },
    /// Anything else, malformed heads included: hyper's to serve or refuse, with the rest
    /// of the connection.
    Other,
}

/// Parses the request head at the start of `buf`; None while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return None,
        _ => return Some(Head::Other),
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Some(Head::Other);
    };
    if method == "CONNECT" {
        return Some(Head::Other);
    }
    let mut range: Option<Option<String>> = None;
    let mut token: Option<Option<String>> = None;
    let mut storage_token: Option<Option<String>> = None;
    let mut request_id: Option<Option<String>> = None;
    let mut close = false;
    let mut body: Option<u64> = None;
    for h in request.headers.iter() {
        let value = std::str::from_utf8(h.value).ok();
        let name = h.name;
        // Each first header, read as the router reads it (HeaderMap::get, to_str).
        let read = || {
            HeaderValue::from_bytes(h.value)
                .ok()
                .and_then(|v| v.to_str().ok().map(str::to_owned))
        };
        if name.eq_ignore_ascii_case("range") {
            range.get_or_insert_with(read);
        } else if name.eq_ignore_ascii_case("x-auth-token") {
            token.get_or_insert_with(read);
        } else if name.eq_ignore_ascii_case("x-storage-token") {
            storage_token.get_or_insert_with(read);
        } else if name.eq_ignore_ascii_case(request_id::HEADER.as_str()) {
            request_id.get_or_insert_with(read);
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value.is_some_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("close"))
            });
        } else if name.eq_ignore_ascii_case("content-length") {
            // Digits only, and every Content-Length alike; anything else is hyper's to refuse.
            let length = value
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (length, body) {
                (Some(length), None) => body = Some(length),
                (Some(length), Some(seen)) if length == seen => {}
                _ => return Some(Head::Other),
            }
        } else if ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Some(Head::Other);
        }
    }
    let body = body.unwrap_or(0);
    if u64::try_from(len)
        .ok()
        .and_then(|len| len.checked_add(body))
        .is_none()
    {
        return Some(Head::Other);
    }
    // An id too long to answer with is refused by the router's middleware.
    let request_id = request_id.flatten();
    let acceptable = request_id::answer_id(request_id.as_deref()).is_ok();
    Some(match download_id(path) {
        Some(id) if method == "GET" && body == 0 && acceptable => Head::Download {
            len,
            id: id.to_owned(),
            range: range.flatten(),
            token: token.or(storage_token).flatten().map(Secret::new),
            close,
            request_id,
        },
        _ => Head::Sized { len, body, close },
    })
}

/// The id of a plain `/v2/images/{id}/file` path: no query and no escapes, which the
/// router decodes its own way.
fn download_id(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/v2/images/")?.strip_suffix("/file")?;
    let plain = !id.is_empty() && !id.contains(['/', '%', '?', '#']);
    plain.then_some(id)
}

/// Serves `stream` until the client closes it, it fails, or `stop` turns true (after the
/// answer in flight).
pub async fn serve(
    mut stream: TcpStream,
    state: Arc<AppState>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut buffered = BytesMut::with_capacity(4096);
    let idle = state.settings.client_socket_timeout;
    let head_limit = head_timeout(idle);
    // Only cached copies are sent here; without a cache every request is hyper's.
    while state.cache.is_some() {
        let head = tokio::select! {
            head = tokio::time::timeout(head_limit, read_head(&mut stream, &mut buffered)) => head,
            () = stopped(&mut stop) => return,
        };
        let head = match head {
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) => return, // closed between requests
            Ok(Err(e)) => {
                debug!(error = %e, "reading a request");
                return;
            }
            Err(_) => {
                debug!("no request head within {} s", head_limit.as_secs());
                return;
            }
        };
        let (len, body, close) = match head {
            Head::Download {
                len,
                id,
                range,
                token,
                close,
                request_id,
            } => match prepare_cached(
                &state,
                &id,
                range.as_deref(),
                token.as_ref().map(Secret::expose),
            )
            .await
            {
                Ok(
                    prepared @ Prepared {
                        source: Source::Cache(..) | Source::Fill(..),
                        ..
                    },
                ) => {
                    buffered.advance(len);
                    // A stop during the answer closes the connection after it: say so.
                    let close = close || *stop.borrow();
                    let bytes = prepared.span.len;
                    let request_id =
                        request_id::answer_id(request_id.as_deref()).unwrap_or_default();
                    match send_cached(&stream, &state, prepared, close, &request_id, idle).await {
                        Ok(()) => debug!(image = %id, bytes, "sent with sendfile"),
                        Err(e) => {
                            debug!(image = %id, error = %e, "sending a cached image");
                            return;
                        }
                    }
                    if close {
                        return;
                    }
                    continue;
                }
                // Not a cached copy (or an error answer): hyper serves it, decided afresh.
                _ => (len, 0, close),
            },
            Head::Sized { len, body, close } => (len, body, close),
            Head::Other => break,
        };
        // parse_head saw to it that this does not overflow.
        let request = (len as u64).saturating_add(body);
        match with_hyper(stream, buffered, request, router.clone(), &mut stop, idle).await {
            Some(back) if !close => (stream, buffered) = back,
            _ => return,
        }
    }
    with_hyper(stream, buffered, u64::MAX, router, &mut stop, idle).await;
}

/// Authenticates a download and decides it ([`data::prepare`]). A refused token is
/// hyper's to answer, with the same middleware as every other request.
async fn prepare_cached(
    state: &Arc<AppState>,
    id: &str,
    range: Option<&str>,
    token: Option<&str>,
) -> Result<Prepared, ()> {
    let caller = access::caller(state, token).await.map_err(drop)?;
    data::prepare(state, &caller, id, range, data::Ask::CachedOnly)
        .await
        .map_err(drop)
}

/// Completes when the server stops (at once if it already has).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the server is gone, which is a stop too.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Reads until `buffered` starts with a whole head; None when the client closed first.
async fn read_head(stream: &mut TcpStream, buffered: &mut BytesMut) -> io::Result<Option<Head>> {
    loop {
        if !buffered.is_empty()
            && let Some(head) = parse_head(buffered)
        {
            return Ok(Some(head));
        }
        if stream.read_buf(buffered).await? == 0 {
            return Ok(None);
        }
    }
}

/// Sends a prepared answer whose bytes are a cached copy or a fill of the cache; a
/// client that takes nothing for `idle` (or [`sendfile::SEND_TIMEOUT`], when shorter) is
/// given up.
async fn send_cached(
    stream: &TcpStream,
    state: &Arc<AppState>,
    prepared: Prepared,
    close: bool,
    request_id: &str,
    idle: Option<Duration>,
) -> io::Result<()> {
    let Prepared {
        status,
        headers,
        span,
        source,
    } = prepared;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("{}: {request_id}\r\n", request_id::HEADER).as_bytes());
    if close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(
        format!(
            "date: {}\r\n\r\n",
            httpdate::fmt_http_date(SystemTime::now())
        )
        .as_bytes(),
    );
    let patience = idle.map_or(sendfile::SEND_TIMEOUT, |idle| {
        idle.min(sendfile::SEND_TIMEOUT)
    });
    match source {
        Source::Cache(file, _reading) => sendfile::send(stream, &head, &file, span, patience).await,
        Source::Fill(image, fill) => {
            follow_fill(stream, state, &head, *image, fill, patience).await
        }
        _ => Err(io::Error::other(
            "only cached copies and fills are sent with sendfile",
        )),
    }
}

/// Sends a whole image as its fill writes it, with sendfile from the growing file, by
/// the rules of [`fill::follow`]: the last byte once the MD5 is checked, a failed fill
/// cuts the connection, and the bytes the cache did not keep come from the store.
async fn follow_fill(
    stream: &TcpStream,
    state: &Arc<AppState>,
    head: &[u8],
    image: crate::db::Image,
    fill: Arc<Fill>,
    patience: Duration,
) -> io::Result<()> {
    let size = fill.size;
    let mut progress = fill.watch();
    // The head goes out at once, as hyper's does: a fill that fails later cuts the body.
    sendfile::send_bytes(stream, head, false, patience).await?;
    let mut offset = 0;
    loop {
        let now = progress.borrow_and_update().clone();
        let readable = fill::readable(&now, size).map_err(io::Error::other)?;
        if offset < readable {
            let file = fill
                .file()
                .ok_or_else(|| io::Error::other("the cache fill has no file"))?;
            let span = Span {
                start: offset,
                len: readable - offset,
            };
            sendfile::send_span(stream, &file, span, patience).await?;
            offset = readable;
            continue;
        }
        if offset >= size {
            return Ok(());
        }
        if matches!(now, Progress::Uncached(_)) {
            // The cache gave up: the rest from the store, as any uncached download.
            let (tx, mut rx) = mpsc::channel(2);
            data::store_rest(state.clone(), image, size)(offset, tx);
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk?;
                sendfile::send_bytes(stream, &chunk, false, patience).await?;
                offset += chunk.len() as u64;
            }
            return match size - offset {
                0 => Ok(()),
                missing => Err(data::short(missing)),
            };
        }
        if progress.changed().await.is_err() {
            return Err(io::Error::other("the cache fill stopped"));
        }
    }
}

/// Serves with hyper the next `request` bytes of the connection (`u64::MAX`: all of it),
/// replaying the bytes already read. Gives the connection back once hyper has answered
/// and is waiting for more; None when it is finished (closed, failed, stopped, or hyper
/// left part of the request unread). A client that sends nothing of a body being read,
/// or reads nothing of an answer being written, for `idle` loses the connection.
async fn with_hyper(
    stream: TcpStream,
    buffered: BytesMut,
    request: u64,
    router: Router,
    stop: &mut watch::Receiver<bool>,
    idle: Option<Duration>,
) -> Option<(TcpStream, BytesMut)> {
    let answered = Arc::new(Answered::default());
    let out = answered.clone();
    let feed = Feed {
        stream,
        buffered,
        left: request,
        answered: answered.clone(),
        write_idle: Idle::new(idle),
    };
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (router, answered) = (router.clone(), answered.clone());
        // Boxed, so the connection stays Unpin and can be taken apart afterwards.
        Box::pin(async move {
            let request = request.map(|body| {
                Body::new(IdleBody {
                    body,
                    idle: Idle::new(idle),
                })
            });
            let response = router.oneshot(request).await?;
            Ok::<_, Infallible>(response.map(|body| Body::new(Answering { body, answered })))
        })
    });
    let mut connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout(idle))
        // Answers queue at most this much in hyper before it polls the body again, so
        // that a hundred downloads of one image do not hold hundreds of MiB; a larger
        // chunk (a store read's) still goes out whole.
        .max_buf_size(MAX_BUF)
        .serve_connection(TokioIo::new(feed), service);
    let mut stopping = false;
    // Biased: the connection is polled first, so a request already read is in flight
    // (and answered) before a stop can close the connection as idle.
    let result = loop {
        tokio::select! {
            biased;
            result = futures::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => break result,
            () = stopped(stop), if !stopping => {
                stopping = true;
                Pin::new(&mut connection).graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "connection ended");
        return None;
    }
    let handed_back = out.eof_given();
    if !handed_back || stopping || request == u64::MAX {
        // hyper finished on its own (or is told to): let it flush and close.
        if let Err(e) = (&mut connection).await {
            debug!(error = %e, "connection ended");
        }
        return None;
    }
    let parts = connection.into_parts();
    let Feed {
        stream,
        buffered,
        left,
        ..
    } = parts.io.into_inner();
    let whole = left == 0 && parts.read_buf.is_empty();
    (whole && !stopping).then_some((stream, buffered))
}

/// The end of an answer: hyper has dropped its body, and then flushed (hyper flushes its
/// IO only once its own buffer is written out). From then on the connection reads as
/// closed to hyper, which finishes and hands it back.
#[derive(Default)]
struct Answered {
    /// hyper dropped the response body.
    done: AtomicBool,
    /// ... and flushed everything after that.
    flushed: AtomicBool,
    /// ... and was told the stream ended.
    eof: AtomicBool,
    waker: AtomicWaker,
}

impl Answered {
    fn set(&self) {
        self.done.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// A flush completed: once the body is done, every byte of the answer is out.
    fn flushed(&self) {
        if self.done.load(Ordering::Acquire) && !self.flushed.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Ready once the answer is out; it is then the end of the stream for hyper.
    fn poll_out(&self, cx: &mut Context<'_>) -> Poll<()> {
        let out = || self.flushed.load(Ordering::Acquire);
        if !out() {
            self.waker.register(cx.waker());
            if !out() {
                return Poll::Pending;
            }
        }
        self.eof.store(true, Ordering::Release);
        Poll::Ready(())
    }

    /// Whether hyper was told the stream ended (and so finished at a clean boundary).
    fn eof_given(&self) -> bool {
        self.eof.load(Ordering::Acquire)
    }
}

/// A response body that marks the answer done when hyper is through with it.
struct Answering {
    body: Body,
    answered: Arc<Answered>,
}

impl http_body::Body for Answering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.answered.set();
    }
}

/// A deadline that runs while the client keeps something waiting: armed when an
/// operation on its side of the connection finds nothing to do, disarmed as soon as one
/// makes progress.
struct Idle {
    /// `client_socket_timeout`; None: no limit.
    limit: Option<Duration>,
    /// The deadline, reused from one wait to the next.
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer runs for the current wait.
    armed: bool,
}

impl Idle {
    fn new(limit: Option<Duration>) -> Self {
        Idle {
            limit,
            timer: None,
            armed: false,
        }
    }

    /// Passes on what an operation returned; while it is Pending, the wait is timed, and
    /// once it has lasted the limit this is Ready with Err(limit in seconds).
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<T>) -> Poll<Result<T, u64>> {
        if polled.is_ready() {
            self.armed = false;
            return polled.map(Ok);
        }
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        if !self.armed {
            self.armed = true;
            let deadline = tokio::time::Instant::now()
                .checked_add(limit)
                .unwrap_or_else(far_future);
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match self.timer.as_mut().map(|timer| timer.poll_unpin(cx)) {
            Some(Poll::Ready(())) => {
                self.armed = false;
                Poll::Ready(Err(limit.as_secs()))
            }
            _ => Poll::Pending,
        }
    }
}

/// A deadline no connection reaches (about 30 years away), for a limit too large to add.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

/// A request body that fails once the client has sent nothing of it for
/// `client_socket_timeout` while the handler waits for it. An upload then ends as any
/// upload whose body fails: the image goes back to queued.
struct IdleBody {
    body: Incoming,
    idle: Idle,
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match this.idle.watch(cx, polled) {
            Poll::Ready(Ok(frame)) => Poll::Ready(frame.map(|f| f.map_err(BodyError::from))),
            Poll::Ready(Err(seconds)) => {
                debug!("request body: nothing for {seconds} s");
                Poll::Ready(Some(Err(BodyError::Idle(seconds))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection as hyper reads it: the bytes already read, then the socket, `left` bytes
/// in all; after those, nothing until the answer is out, then the end. A write that finds
/// the socket full for `client_socket_timeout` (the client reads nothing) fails.
struct Feed {
    stream: TcpStream,
    buffered: BytesMut,
    left: u64,
    answered: Arc<Answered>,
    write_idle: Idle,
}

impl Feed {
    /// A write's outcome, failed once the client has taken nothing for the limit.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        self.write_idle.watch(cx, polled).map(|outcome| {
            outcome.unwrap_or_else(|seconds| {
                debug!("answer: the client read nothing for {seconds} s");
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {seconds} s (client_socket_timeout)"),
                ))
            })
        })
    }
}

impl AsyncRead for Feed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.left == 0 {
            // Zero bytes read, once the answer is out: the end of the stream, for hyper.
            return this.answered.poll_out(cx).map(Ok);
        }
        let room = u64::try_from(buf.remaining()).unwrap_or(u64::MAX);
        if !this.buffered.is_empty() {
            let n = usize::try_from(room.min(this.left))
                .unwrap_or(usize::MAX)
                .min(this.buffered.len());
            buf.put_slice(&this.buffered.split_to(n));
            this.left -= n as u64;
            return Poll::Ready(Ok(()));
        }
        if room <= this.left {
            let before = buf.filled().len();
            let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
            this.left -= (buf.filled().len() - before) as u64;
            return polled;
        }
        // Less than hyper has room for: read just that much, never into the next request.
        let mut part = vec![0u8; usize::try_from(this.left).unwrap_or(usize::MAX)];
        let mut part_buf = ReadBuf::new(&mut part);
        let polled = Pin::new(&mut this.stream).poll_read(cx, &mut part_buf);
        let n = part_buf.filled().len();
        buf.put_slice(&part[..n]);
        this.left -= n as u64;
        polled
    }
}

impl AsyncWrite for Feed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.timed(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.timed(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            this.answered.flushed();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn download(len: usize, range: Option<&str>, close: bool) -> Option<Head> {
        Some(Head::Download {
            len,
            id: "abc".to_owned(),
            range: range.map(str::to_owned),
            token: None,
            close,
            request_id: None,
        })
    }

    #[test]
    fn a_downloads_token_is_read_like_keystonemiddleware_reads_it() {
        let token = |head: &[u8]| match parse_head(head) {
            Some(Head::Download { token, .. }) => token.map(|t| t.expose().to_owned()),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            token(
                b"GET /v2/images/abc/file HTTP/1.1\r\nX-Auth-Token: t1\r\nx-auth-token: t2\r\n\r\n"
            ),
            Some("t1".to_owned())
        );
        assert_eq!(
            token(b"GET /v2/images/abc/file HTTP/1.1\r\nX-Storage-Token: s\r\nX-Auth-Token: a\r\n\r\n"),
            Some("a".to_owned())
        );
        assert_eq!(
            token(b"GET /v2/images/abc/file HTTP/1.1\r\nX-Storage-Token: s\r\n\r\n"),
            Some("s".to_owned())
        );
        assert_eq!(token(b"GET /v2/images/abc/file HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn heads() {
        let plain = b"GET /v2/images/abc/file HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parse_head(plain), download(plain.len(), None, false));
        assert_eq!(parse_head(&plain[..20]), None, "incomplete");
        let pipelined = [&plain[..], b"GET / HTTP/1.1\r\n\r\n"].concat();
        assert_eq!(parse_head(&pipelined), download(plain.len(), None, false));
        let ranged = b"GET /v2/images/abc/file HTTP/1.1\r\nRange: bytes=0-9\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_head(ranged),
            download(ranged.len(), Some("bytes=0-9"), true)
        );
        let twice =
            b"GET /v2/images/abc/file HTTP/1.1\r\nRange: bytes=0-0\r\nRange: bytes=1-1\r\n\r\n";
        assert_eq!(
            parse_head(twice),
            download(twice.len(), Some("bytes=0-0"), false),
            "the first Range, as HeaderMap::get reads it"
        );
        let odd = "GET /v2/images/abc/file HTTP/1.1\r\nRange: bytes=0-9\u{a0}\r\n\r\n".as_bytes();
        assert_eq!(
            parse_head(odd),
            download(odd.len(), None, false),
            "a Range value that is not visible ASCII is ignored, as the router ignores it"
        );
        let sized = |head: &[u8], body: u64| {
            assert_eq!(
                parse_head(head),
                Some(Head::Sized {
                    len: head.len(),
                    body,
                    close: false
                }),
                "{}",
                String::from_utf8_lossy(head)
            );
        };
        sized(b"PUT /v2/images/abc/file HTTP/1.1\r\n\r\n", 0);
        sized(b"GET /v2/images/abc HTTP/1.1\r\n\r\n", 0);
        sized(b"GET /v2/images/abc/file?x=1 HTTP/1.1\r\n\r\n", 0);
        sized(b"GET /v2/images/a%62c/file HTTP/1.1\r\n\r\n", 0);
        sized(b"GET /v2/images/a/b/file HTTP/1.1\r\n\r\n", 0);
        sized(b"GET /v2/images//file HTTP/1.1\r\n\r\n", 0);
        sized(
            b"GET /v2/images/abc/file HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            5,
        );
        sized(
            b"POST /v2/images HTTP/1.1\r\nContent-Length: 12\r\ncontent-length: 12\r\n\r\n",
            12,
        );
        for other in [
            &b"GET /v2/images/abc/file HTTP/1.0\r\n\r\n"[..],
            b"POST /v2/images HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST /v2/images HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST /v2/images HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST /v2/images HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"PUT /v2/images/abc/file HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"PUT /v2/images/abc/file HTTP/1.1\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n",
            b"GET /v2/images/abc/file HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"CONNECT x:1 HTTP/1.1\r\n\r\n",
            b"POST /v2/images HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(other),
                Some(Head::Other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        let huge = [&b"GET / HTTP/1.1\r\nX: "[..], &vec![b'a'; MAX_HEAD]].concat();
        assert_eq!(parse_head(&huge), Some(Head::Other), "too large for here");
    }
}
