//! A digest computed on its own thread from the chunks fed to it, so hashing overlaps I/O.

use std::io;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;
use md5::Digest;

/// A running digest on a helper thread; `finish` returns it as hex.
pub struct BackgroundDigest {
    chunks: Option<SyncSender<Bytes>>,
    thread: Option<JoinHandle<String>>,
}

impl BackgroundDigest {
    /// Starts a thread computing digest `D`.
    pub fn new<D: Digest + Send + 'static>() -> Self {
        let (tx, rx) = sync_channel::<Bytes>(16);
        let thread = std::thread::spawn(move || {
            let mut digest = D::new();
            for chunk in rx {
                digest.update(&chunk);
            }
            hex::encode(digest.finalize())
        });
        Self {
            chunks: Some(tx),
            thread: Some(thread),
        }
    }

    /// Hands one chunk to the thread (a reference-counted clone, not a copy).
    pub fn feed(&self, chunk: &Bytes) -> io::Result<()> {
        self.chunks
            .as_ref()
            .ok_or_else(|| io::Error::other("digest finished"))?
            .send(chunk.clone())
            .map_err(|_| io::Error::other("digest thread stopped"))
    }

    /// Waits for the thread and returns the digest, hex.
    pub fn finish(&mut self) -> io::Result<String> {
        self.chunks = None;
        self.thread
            .take()
            .ok_or_else(|| io::Error::other("digest finished"))?
            .join()
            .map_err(|_| io::Error::other("digest thread panicked"))
    }
}

impl Drop for BackgroundDigest {
    fn drop(&mut self) {
        self.chunks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
