//! Buffers lent out as [`Bytes`] that come back to their pool once every holder dropped
//! them, so that a stream of large chunks reuses a few allocations instead of asking the
//! allocator (and the kernel, page by page) for new ones.

use std::sync::mpsc::{Receiver, Sender, channel};

use bytes::Bytes;

/// The buffers of one stream.
pub struct Pool {
    home: Sender<Vec<u8>>,
    returned: Receiver<Vec<u8>>,
    size: usize,
}

/// A buffer lent out; it goes home on drop (or is freed when the pool is gone).
struct Lent {
    buf: Vec<u8>,
    len: usize,
    home: Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let _ = self.home.send(std::mem::take(&mut self.buf));
    }
}

impl Pool {
    /// A pool of buffers of `size` bytes.
    pub fn new(size: usize) -> Self {
        let (home, returned) = channel();
        Self {
            home,
            returned,
            size,
        }
    }

    /// A buffer that came back, else a new one: `size` bytes long, contents unspecified.
    pub fn take(&self) -> Vec<u8> {
        self.returned
            .try_recv()
            .unwrap_or_else(|_| vec![0u8; self.size])
    }

    /// Lends the first `len` bytes of `buf` out as [`Bytes`].
    pub fn lend(&self, buf: Vec<u8>, len: usize) -> Bytes {
        Bytes::from_owner(Lent {
            buf,
            len,
            home: self.home.clone(),
        })
    }
}
