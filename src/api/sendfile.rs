//! Sends a response head and then a span of a file on a socket with sendfile(2): the file's
//! bytes go from the page cache to the socket without a copy through user space.
//!
//! This is blocking code for a blocking thread: the socket stays non-blocking (it belongs to
//! the async runtime) and a full send buffer is waited for with poll(2), so a slow disk never
//! stalls the async threads. A file that turns out shorter than promised (truncated behind
//! our back) ends the send with an error; nothing is mapped, so nothing can fault.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// How long a client may leave the socket full before the send gives up (nginx's
/// `send_timeout` default).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Linux sends at most this many bytes per sendfile call.
const MAX_PER_CALL: u64 = 0x7fff_f000;

/// Writes `head`, then `len` bytes of `file` from offset `start`, to `socket`.
pub fn send(socket: &OwnedFd, head: &[u8], file: &File, start: u64, len: u64) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    // MSG_MORE holds the head back until the file's first bytes join it in one segment.
    let more = if len > 0 { libc::MSG_MORE } else { 0 };
    let mut sent = 0;
    while sent < head.len() {
        let rest = &head[sent..];
        // SAFETY: `rest` is a live slice and `fd` an open socket owned by `socket`.
        let n = unsafe {
            libc::send(
                fd,
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL | more,
            )
        };
        match progress(fd, n)? {
            Some(n) => sent += n,
            None => continue,
        }
    }
    let mut offset = libc::off_t::try_from(start).map_err(io::Error::other)?;
    let mut remaining = len;
    while remaining > 0 {
        let count = usize::try_from(remaining.min(MAX_PER_CALL)).map_err(io::Error::other)?;
        // SAFETY: both descriptors are open for the duration of the call; `offset` is a live
        // off_t that sendfile advances by what it sent.
        let n = unsafe { libc::sendfile(fd, file.as_raw_fd(), &mut offset, count) };
        match progress(fd, n)? {
            Some(0) => return Err(super::data::short(remaining)),
            Some(n) => remaining -= n as u64,
            None => continue,
        }
    }
    Ok(())
}

/// What a send or sendfile call returning `n` means: Some(bytes) sent, None to try again
/// (interrupted, or the socket had room again after a wait), or the error.
fn progress(fd: RawFd, n: isize) -> io::Result<Option<usize>> {
    if let Ok(n) = usize::try_from(n) {
        return Ok(Some(n));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::Interrupted => Ok(None),
        io::ErrorKind::WouldBlock => wait_writable(fd).map(|()| None),
        _ => Err(e),
    }
}

/// Waits until `fd` can take more bytes, at most SEND_TIMEOUT.
fn wait_writable(fd: RawFd) -> io::Result<()> {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let timeout = libc::c_int::try_from(SEND_TIMEOUT.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: `poll` is one live pollfd, matching the count of 1.
        match unsafe { libc::poll(&mut poll, 1, timeout) } {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took no bytes for {} s", SEND_TIMEOUT.as_secs()),
                ));
            }
            n if n > 0 => return Ok(()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}
