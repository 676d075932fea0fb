//! glance_store's read-only `http` store: image data at an `http://` or `https://` URL
//! that an image's location names, read with a GET (a `Range` for a span that does not
//! start at 0). It takes no uploads, and deleting a location leaves the data where it
//! is, as upstream's store does. Unlike upstream's, it follows no redirect: a location
//! is checked by `[import_filtering_opts]` when it is added, and a redirect would lead
//! past that check. ureq (already the client of web-download) does the HTTP.

use std::io::{self, Read};
use std::time::Duration;

use super::Span;

/// How long a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read of the body may wait for bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// One `name:http` backend.
#[derive(Debug, Clone)]
pub struct HttpStore {
    name: String,
    agent: ureq::Agent,
}

impl HttpStore {
    /// The store called `name` in `enabled_backends`.
    pub fn new(name: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_body(Some(READ_TIMEOUT))
            .build()
            .into();
        Self {
            name: name.to_owned(),
            agent,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `url` is one this store reads.
    pub fn reads(url: &str) -> bool {
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        lower.starts_with("http://") || lower.starts_with("https://")
    }

    /// The `span` of the data at `url`.
    pub fn open(&self, url: &str, span: Span) -> io::Result<impl Read + Send + use<>> {
        let mut request = self.agent.get(without_fragment(url));
        if span.start > 0 {
            request = request.header("Range", format!("bytes={}-", span.start));
        }
        let response = request
            .call()
            .map_err(|e| io::Error::other(format!("GET {}: {e}", redact(url))))?;
        let status = response.status().as_u16();
        let skip = match status {
            206 => 0,
            // A server that ignores Range sends everything: the start is skipped here.
            200 => span.start,
            _ => {
                return Err(io::Error::other(format!(
                    "GET {}: HTTP {status}",
                    redact(url)
                )));
            }
        };
        let mut body = response.into_body().into_reader();
        if skip > 0 {
            io::copy(&mut (&mut body).take(skip), &mut io::sink())?;
        }
        Ok(body.take(span.len))
    }

    /// The size of the data at `url`, from a HEAD's Content-Length (upstream's
    /// `get_size`); None when the server does not say or does not answer 200.
    pub fn size(&self, url: &str) -> io::Result<Option<u64>> {
        let response = self
            .agent
            .head(without_fragment(url))
            .call()
            .map_err(|e| io::Error::other(format!("HEAD {}: {e}", redact(url))))?;
        if response.status().as_u16() != 200 {
            return Ok(None);
        }
        Ok(response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()))
    }
}

/// `url` without its `#fragment`, which is the client's and never sent (locations of
/// one object told apart by a fragment read the same data).
fn without_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(before, _)| before)
}

/// `url` without the user and password it may carry.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A one-request server: answers `status` with `body` (the part `Range` asks for
    /// when `ranges` is true), and hands back the request head.
    fn serve(body: &'static [u8], ranges: bool) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/image.raw", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).expect("read");
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).expect("utf-8");
            let start = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("range: bytes=")
                        .or(l.strip_prefix("Range: bytes="))
                })
                .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
            let (status, sent) = match start {
                Some(s) if ranges => ("206 Partial Content", &body[s..]),
                _ => ("200 OK", body),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                sent.len()
            );
            stream.write_all(answer.as_bytes()).expect("write");
            stream.write_all(sent).expect("write");
            head
        });
        (url, server)
    }

    fn read(store: &HttpStore, url: &str, span: Span) -> Vec<u8> {
        let mut out = Vec::new();
        store
            .open(url, span)
            .expect("open")
            .read_to_end(&mut out)
            .expect("read");
        out
    }

    #[test]
    fn a_span_with_a_range_or_by_skipping() {
        let store = HttpStore::new("web");
        for ranges in [true, false] {
            let (url, server) = serve(b"0123456789", ranges);
            let got = read(&store, &url, Span { start: 3, len: 4 });
            assert_eq!(got, b"3456", "ranges: {ranges}");
            let head = server.join().expect("server").to_ascii_lowercase();
            assert!(head.contains("range: bytes=3-"), "{head}");
        }
        let (url, server) = serve(b"0123456789", true);
        assert_eq!(
            read(&store, &url, Span { start: 0, len: 10 }),
            b"0123456789"
        );
        let head = server.join().expect("server").to_ascii_lowercase();
        assert!(!head.contains("range:"), "{head}");
    }

    #[test]
    fn only_http_urls_and_errors_name_the_url_without_credentials() {
        assert!(HttpStore::reads("http://example.com/x"));
        assert!(HttpStore::reads("HTTPS://example.com/x"));
        assert!(!HttpStore::reads("file:///x"));
        assert!(!HttpStore::reads("s3://a/b"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let err = HttpStore::new("web")
            .open(
                &format!("http://user:secret@127.0.0.1:{port}/x"),
                Span { start: 0, len: 1 },
            )
            .err()
            .expect("nothing listens");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
    }
}
