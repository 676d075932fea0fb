//! Sends a response head and then a span of a file on a socket with sendfile(2): the file's
//! bytes go from the page cache to the socket without a copy through user space.
//!
//! The sends run on the async threads, driven by the socket's readiness, the way nginx's
//! event loop runs them (without its aio threads): at most [`MAX_PER_CALL`] bytes a call,
//! so one fast client cannot hold a thread. Pages that are not in memory would make a
//! call wait on the disk, so each call first asks the kernel to start reading the window
//! after it (POSIX_FADV_WILLNEED): the disk reads ahead while the socket drains, and only
//! the first window of a cold file is read while a thread waits. A file that turns out
//! shorter than promised
//! (truncated behind our back) ends the send with an error; nothing is mapped into memory,
//! so nothing can fault.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::data::{Span, short};

/// How long a client may leave the socket full before the send gives up (nginx's
/// `send_timeout` default), at most: a shorter `client_socket_timeout` shortens it.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes per sendfile call (nginx's `sendfile_max_chunk` default).
pub const MAX_PER_CALL: u64 = 2 << 20;

/// Writes `head`, then the `span` of `file`, to `stream`; gives up (TimedOut) when the
/// client leaves the socket full for `patience`.
pub async fn send(
    stream: &TcpStream,
    head: &[u8],
    file: &File,
    span: Span,
    patience: Duration,
) -> io::Result<()> {
    // MSG_MORE holds the head back until the file's first bytes join it in one segment.
    send_bytes(stream, head, span.len > 0, patience).await?;
    send_span(stream, file, span, patience).await
}

/// Writes `bytes` to `stream`; with `more`, the kernel may hold them back for what
/// follows (MSG_MORE). Gives up (TimedOut) when the client leaves the socket full for
/// `patience`.
pub async fn send_bytes(
    stream: &TcpStream,
    bytes: &[u8],
    more: bool,
    patience: Duration,
) -> io::Result<()> {
    let socket = stream.as_raw_fd();
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    let mut sent = 0;
    while sent < bytes.len() {
        let rest = &bytes[sent..];
        sent += when_writable(stream, patience, || {
            // SAFETY: `rest` is a live slice and `socket` is open while `stream` lives.
            let n = unsafe { libc::send(socket, rest.as_ptr().cast(), rest.len(), flags) };
            outcome(n)
        })
        .await?;
    }
    Ok(())
}

/// Writes the `span` of `file` to `stream` with sendfile; gives up as [`send_bytes`].
pub async fn send_span(
    stream: &TcpStream,
    file: &File,
    span: Span,
    patience: Duration,
) -> io::Result<()> {
    let socket = stream.as_raw_fd();
    let mut offset = libc::off_t::try_from(span.start).map_err(io::Error::other)?;
    let mut remaining = span.len;
    while remaining > 0 {
        let count = usize::try_from(remaining.min(MAX_PER_CALL)).map_err(io::Error::other)?;
        read_ahead(
            file,
            offset + count as libc::off_t,
            remaining - count as u64,
        );
        let n = when_writable(stream, patience, || {
            // SAFETY: both descriptors are open for the call; `offset` is a live off_t,
            // which sendfile advances by what it sent.
            let n = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut offset, count) };
            outcome(n)
        })
        .await?;
        if n == 0 {
            return Err(short(remaining));
        }
        remaining -= n as u64;
    }
    Ok(())
}

/// Asks the kernel to start reading the next window of what is left; only a hint, so a
/// refusal changes nothing.
fn read_ahead(file: &File, offset: libc::off_t, left: u64) {
    let Ok(len) = libc::off_t::try_from(left.min(MAX_PER_CALL)) else {
        return;
    };
    if len > 0 {
        // SAFETY: a hint on an open descriptor; it touches no memory of ours.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
    }
}

/// Runs `call` once the socket has room, again whenever it finds the socket full, and
/// gives up after `patience` without room.
async fn when_writable(
    stream: &TcpStream,
    patience: Duration,
    mut call: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        tokio::time::timeout(patience, stream.writable())
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took no bytes for {} s", patience.as_secs()),
                )
            })??;
        match stream.try_io(Interest::WRITABLE, &mut call) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            result => return result,
        }
    }
}

/// The result of a system call that returned `n` bytes, or -1 and errno.
fn outcome(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    /// Sends over loopback TCP and returns the outcome and what the peer received.
    async fn sent(head: &[u8], data: &[u8], span: Span) -> (io::Result<()>, Vec<u8>) {
        let mut file = tempfile::tempfile().expect("file");
        file.write_all(data).expect("write");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reader = tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.expect("accept");
            let mut received = Vec::new();
            peer.read_to_end(&mut received).await.expect("read");
            received
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let result = send(&stream, head, &file, span, SEND_TIMEOUT).await;
        drop(stream);
        (result, reader.await.expect("reader"))
    }

    #[tokio::test]
    async fn the_head_then_the_span() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let whole = Span {
            start: 0,
            len: data.len() as u64,
        };
        let (result, received) = sent(b"HEAD\r\n\r\n", &data, whole).await;
        result.expect("sent");
        assert!(
            received == [&b"HEAD\r\n\r\n"[..], &data].concat(),
            "the whole file"
        );
        let (result, received) = sent(
            b"H",
            &data,
            Span {
                start: 1000,
                len: 10,
            },
        )
        .await;
        result.expect("sent");
        assert_eq!(received, [&b"H"[..], &data[1000..1010]].concat());
        let (result, received) = sent(b"empty", &data, Span { start: 0, len: 0 }).await;
        result.expect("sent");
        assert_eq!(received, b"empty");
    }

    #[tokio::test]
    async fn a_file_shorter_than_promised_is_an_error() {
        let data = vec![7u8; 100];
        let (result, received) = sent(b"H", &data, Span { start: 50, len: 80 }).await;
        let e = result.expect_err("short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("30 bytes short"), "{e}");
        assert_eq!(
            received,
            [&b"H"[..], &data[50..]].concat(),
            "what there was"
        );
    }
}
