//! One client connection. A `GET /v2/images/{id}/file` of a cached image is answered here,
//! with sendfile(2) from the cached copy; any other request, and the rest of the connection
//! after it, is handed to hyper and the router, with the bytes already read.
//!
//! Both paths decide a download with the same [`data::prepare`], so the status and headers
//! are the same whichever transport sends the bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::debug;

use super::data::{self, Prepared, Source};
use super::sendfile;
use super::state::AppState;

/// The largest request head read here; a larger one goes to hyper, under its own limits.
const MAX_HEAD: usize = 64 << 10;

/// How long a client has to send a whole request head (hyper's default too).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

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
        /// The client asked to close the connection after this answer.
        close: bool,
    },
    /// Anything else, malformed heads included: hyper's to serve or refuse.
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
    let id = match (request.method, request.path, request.version) {
        (Some("GET"), Some(path), Some(1)) => download_id(path),
        _ => None,
    };
    let Some(id) = id else {
        return Some(Head::Other);
    };
    // The first Range header, read as the router reads it (HeaderMap::get, to_str).
    let mut range: Option<Option<String>> = None;
    let mut close = false;
    for h in request.headers.iter() {
        let value = std::str::from_utf8(h.value).ok();
        let name = h.name;
        if name.eq_ignore_ascii_case("range") {
            range.get_or_insert_with(|| {
                HeaderValue::from_bytes(h.value)
                    .ok()
                    .and_then(|v| v.to_str().ok().map(str::to_owned))
            });
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value.is_some_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("close"))
            });
        } else if name.eq_ignore_ascii_case("content-length") {
            if value.map(str::trim) != Some("0") {
                return Some(Head::Other);
            }
        } else if ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Some(Head::Other);
        }
    }
    Some(Head::Download {
        len,
        id: id.to_owned(),
        range: range.flatten(),
        close,
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
    // Only cached copies are sent here; without a cache every request is hyper's.
    while state.cache.is_some() {
        let head = tokio::select! {
            head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut buffered)) => head,
            () = stopped(&mut stop) => return,
        };
        let (len, id, range, close) = match head {
            Ok(Ok(Some(Head::Download {
                len,
                id,
                range,
                close,
            }))) => (len, id, range, close),
            Ok(Ok(Some(Head::Other))) => break,
            Ok(Ok(None)) => return, // closed between requests
            Ok(Err(e)) => {
                debug!(error = %e, "reading a request");
                return;
            }
            Err(_) => {
                debug!("no request head within {} s", HEAD_TIMEOUT.as_secs());
                return;
            }
        };
        let prepared = match data::prepare(&state, &id, range.as_deref()).await {
            Ok(
                prepared @ Prepared {
                    source: Source::Cache(_),
                    ..
                },
            ) => prepared,
            // Not a cached copy (or an error answer): hyper serves this request, decided
            // afresh, and the rest of the connection.
            _ => break,
        };
        buffered.advance(len);
        // A stop during the answer closes the connection after it: say so in the answer.
        let close = close || *stop.borrow();
        let bytes = prepared.span.len;
        match send_cached(&stream, prepared, close).await {
            Ok(()) => debug!(image = %id, bytes, "sent with sendfile"),
            Err(e) => {
                debug!(image = %id, error = %e, "sending a cached image");
                return;
            }
        }
        if close {
            return;
        }
    }
    hand_off(stream, buffered.freeze(), router, stop).await;
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

/// Sends a prepared answer whose bytes are a cached copy.
async fn send_cached(stream: &TcpStream, prepared: Prepared, close: bool) -> io::Result<()> {
    let Prepared {
        status,
        headers,
        span,
        source: Source::Cache(file),
    } = prepared
    else {
        return Err(io::Error::other(
            "only cached copies are sent with sendfile",
        ));
    };
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
    sendfile::send(stream, &head, &file, span).await
}

/// Serves the rest of the connection with hyper, replaying the bytes already read.
async fn hand_off(
    stream: TcpStream,
    buffered: Bytes,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let service = TowerToHyperService::new(
        router.map_request(|request: Request<Incoming>| request.map(Body::new)),
    );
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(TokioIo::new(Replay { buffered, stream }), service);
    tokio::pin!(connection);
    // Biased: the connection is polled first, so a request already read is in flight
    // (and finished) before a stop can close the connection as idle.
    let result = tokio::select! {
        biased;
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "connection ended");
    }
}

/// A stream that first yields bytes already read from it.
struct Replay {
    buffered: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffered.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.buffered.len().min(buf.remaining());
        buf.put_slice(&this.buffered.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
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
            close,
        })
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
        for other in [
            &b"PUT /v2/images/abc/file HTTP/1.1\r\n\r\n"[..],
            b"GET /v2/images/abc/file HTTP/1.0\r\n\r\n",
            b"GET /v2/images/abc HTTP/1.1\r\n\r\n",
            b"GET /v2/images/abc/file?x=1 HTTP/1.1\r\n\r\n",
            b"GET /v2/images/a%62c/file HTTP/1.1\r\n\r\n",
            b"GET /v2/images/a/b/file HTTP/1.1\r\n\r\n",
            b"GET /v2/images//file HTTP/1.1\r\n\r\n",
            b"GET /v2/images/abc/file HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            b"GET /v2/images/abc/file HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /v2/images/abc/file HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /v2/images/abc/file HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
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
