//! The image digests (MD5 for `checksum`, SHA-512 for `os_hash_value`), each computed on
//! its own thread from the chunks fed to it, so hashing overlaps I/O and the two digests
//! overlap each other. The chunks waiting for a digest hold at most [`MAX_QUEUED`] bytes,
//! whatever their size, so a reader faster than the hash never piles the image up in
//! memory.
//!
//! The hashing itself is OpenSSL's (the `openssl` crate), whose assembly was the fastest
//! measured here for both digests: on this project's 2-core x86-64 build machine, MD5 at
//! 1.3x and SHA-512 at 1.5x the RustCrypto crates, with aws-lc-rs's and ring's SHA-512
//! in between. The RustCrypto crates remain for a library that refuses an algorithm
//! (MD5 under a FIPS provider).

use std::io;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use md5::Digest;
use openssl::hash::MessageDigest;

/// A digest that images carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `checksum`.
    Md5,
    /// `os_hash_value` with `os_hash_algo = sha512`.
    Sha512,
}

/// One running digest.
pub enum Hasher {
    /// OpenSSL's.
    OpenSsl(openssl::hash::Hasher),
    /// RustCrypto's, where OpenSSL refuses the algorithm.
    Md5(md5::Md5),
    /// RustCrypto's, where OpenSSL refuses the algorithm.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A digest of nothing yet.
    pub fn new(algorithm: Algorithm) -> Self {
        let openssl = match algorithm {
            Algorithm::Md5 => MessageDigest::md5(),
            Algorithm::Sha512 => MessageDigest::sha512(),
        };
        match (openssl::hash::Hasher::new(openssl), algorithm) {
            (Ok(hasher), _) => Self::OpenSsl(hasher),
            (Err(_), Algorithm::Md5) => Self::Md5(md5::Md5::new()),
            (Err(_), Algorithm::Sha512) => Self::Sha512(sha2::Sha512::new()),
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Self::OpenSsl(h) => h.update(data).map_err(io::Error::other),
            Self::Md5(h) => {
                h.update(data);
                Ok(())
            }
            Self::Sha512(h) => {
                h.update(data);
                Ok(())
            }
        }
    }

    /// The digest, hex.
    pub fn finish(self) -> io::Result<String> {
        match self {
            Self::OpenSsl(mut h) => Ok(hex::encode(h.finish().map_err(io::Error::other)?)),
            Self::Md5(h) => Ok(hex::encode(h.finalize())),
            Self::Sha512(h) => Ok(hex::encode(h.finalize())),
        }
    }
}

/// The digest of `data`, hex.
pub fn digest(algorithm: Algorithm, data: &[u8]) -> io::Result<String> {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(data)?;
    hasher.finish()
}

/// Bytes fed but not yet hashed, at most (one larger batch is let through alone).
pub const MAX_QUEUED: usize = 8 << 20;

/// Chunks are handed to the hashing thread in batches of at least this many bytes (the
/// last one excepted): a request body arrives in chunks of 128 KiB or less, and waking
/// the thread for each costs CPU.
pub const BATCH: usize = 1 << 20;

/// A running digest on a helper thread; `finish` returns it as hex.
pub struct BackgroundDigest {
    chunks: Option<Sender<Vec<Bytes>>>,
    /// Chunks fed and not yet handed over, and their bytes.
    batch: Vec<Bytes>,
    batched: usize,
    queued: Arc<Queued>,
    thread: Option<JoinHandle<io::Result<String>>>,
}

/// The bytes handed over and not yet hashed, whether the hashing thread has ended, and
/// whether a feeder waits for room; with a signal for the feeder.
#[derive(Default)]
struct Queued {
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    bytes: usize,
    ended: bool,
    waiting: bool,
}

impl Queued {
    /// Waits until `len` more bytes fit, then counts them; an error once the hashing
    /// thread has ended, as nothing would make room any more.
    fn add(&self, len: usize) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.ended {
                return Err(io::Error::other("digest thread stopped"));
            }
            if state.bytes == 0 || state.bytes + len <= MAX_QUEUED {
                state.bytes += len;
                return Ok(());
            }
            state.waiting = true;
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Counts `len` bytes hashed; wakes the feeder only if it waits.
    fn remove(&self, len: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.bytes = state.bytes.saturating_sub(len);
        if std::mem::take(&mut state.waiting) {
            self.changed.notify_all();
        }
    }

    fn end(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).ended = true;
        self.changed.notify_all();
    }
}

/// Marks the queue ended when the hashing thread ends, by returning or by panicking.
struct EndOnDrop(Arc<Queued>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl BackgroundDigest {
    /// Starts a thread computing `algorithm`'s digest.
    pub fn new(algorithm: Algorithm) -> Self {
        let (tx, rx) = channel::<Vec<Bytes>>();
        let queued = Arc::new(Queued::default());
        let hashed = EndOnDrop(queued.clone());
        let thread = std::thread::spawn(move || {
            let mut digest = Hasher::new(algorithm);
            for batch in rx {
                let mut len = 0;
                for chunk in &batch {
                    // An error ends the thread, and with it the queue: the feeder then
                    // gets an error too, and `finish` this one.
                    digest.update(chunk)?;
                    len += chunk.len();
                }
                // The chunks are let go before room is made for more.
                drop(batch);
                hashed.0.remove(len);
            }
            digest.finish()
        });
        Self {
            chunks: Some(tx),
            batch: Vec::new(),
            batched: 0,
            queued,
            thread: Some(thread),
        }
    }

    /// Takes one chunk for the thread (a reference-counted clone, not a copy), handed
    /// over with the chunks before it once they make a [`BATCH`]. Waits while
    /// MAX_QUEUED bytes are already waiting.
    pub fn feed(&mut self, chunk: &Bytes) -> io::Result<()> {
        if self.chunks.is_none() {
            return Err(io::Error::other("digest finished"));
        }
        self.batch.push(chunk.clone());
        self.batched += chunk.len();
        if self.batched >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands the batch to the thread.
    fn hand_over(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.queued.add(self.batched)?;
        self.batched = 0;
        self.chunks
            .as_ref()
            .ok_or_else(|| io::Error::other("digest finished"))?
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| io::Error::other("digest thread stopped"))
    }

    /// Waits for the thread and returns the digest, hex.
    pub fn finish(&mut self) -> io::Result<String> {
        self.hand_over()?;
        self.chunks = None;
        self.thread
            .take()
            .ok_or_else(|| io::Error::other("digest finished"))?
            .join()
            .map_err(|_| io::Error::other("digest thread panicked"))?
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_digest_of_what_was_fed() {
        let data: Vec<u8> = (0..10_000_000u32).map(|i| (i % 253) as u8).collect();
        for (algorithm, reference) in [
            (Algorithm::Md5, hex::encode(md5::Md5::digest(&data))),
            (Algorithm::Sha512, hex::encode(sha2::Sha512::digest(&data))),
        ] {
            let mut background = BackgroundDigest::new(algorithm);
            for chunk in data.chunks(1 << 20) {
                background
                    .feed(&Bytes::copy_from_slice(chunk))
                    .expect("feed");
            }
            assert_eq!(background.finish().expect("finish"), reference);
            assert_eq!(digest(algorithm, &data).expect("digest"), reference);
        }
    }

    #[test]
    fn the_fallbacks_agree_with_openssl() {
        let data = b"The quick brown fox jumps over the lazy dog";
        for (algorithm, fallback) in [
            (Algorithm::Md5, Hasher::Md5(md5::Md5::new())),
            (Algorithm::Sha512, Hasher::Sha512(sha2::Sha512::new())),
        ] {
            let mut openssl = Hasher::new(algorithm);
            assert!(
                matches!(openssl, Hasher::OpenSsl(_)),
                "OpenSSL has {algorithm:?}"
            );
            let mut fallback = fallback;
            openssl.update(data).expect("update");
            fallback.update(data).expect("update");
            assert_eq!(
                openssl.finish().expect("finish"),
                fallback.finish().expect("finish")
            );
        }
        assert_eq!(
            digest(Algorithm::Md5, data).expect("md5"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }

    #[test]
    fn a_full_queue_makes_the_feeder_wait() {
        let queued = Arc::new(Queued::default());
        queued.add(MAX_QUEUED - 1).expect("room");
        let waiting = queued.clone();
        let (done, added) = std::sync::mpsc::channel();
        let feeder = std::thread::spawn(move || {
            let result = waiting.add(2);
            let _ = done.send(());
            result
        });
        assert!(
            added.recv_timeout(Duration::from_millis(200)).is_err(),
            "2 more bytes do not fit"
        );
        queued.remove(1);
        added
            .recv_timeout(Duration::from_secs(10))
            .expect("room again");
        feeder.join().expect("feeder").expect("added");
        // Alone, a chunk larger than the bound still goes through.
        let alone = Queued::default();
        alone.add(MAX_QUEUED * 2).expect("a lone chunk");
    }

    #[test]
    fn a_feeder_waiting_on_an_ended_thread_gets_an_error() {
        let queued = Arc::new(Queued::default());
        queued.add(MAX_QUEUED).expect("room");
        let waiting = queued.clone();
        let feeder = std::thread::spawn(move || waiting.add(1));
        drop(EndOnDrop(queued));
        assert!(feeder.join().expect("feeder").is_err());
    }
}
