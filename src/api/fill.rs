//! One backend read per miss storm: the fills of the cache in flight, and the clients
//! that follow them.
//!
//! The first whole GET of an uncached image starts a fill: a task of its own that reads
//! the store once and writes `incomplete/<id>`, whatever happens to the client that
//! started it. Every whole GET of that image while the fill runs, the first one
//! included, follows the fill: it reads the bytes already written from the growing file
//! (through a read handle of its own, which stays readable once the file is renamed into
//! place) and waits for more. The last bytes go out only once the fill has verified the
//! image's MD5, so that a client never receives an image the cache refused with a
//! success status: a failed fill cuts every follower's connection.
//!
//! When the cache gives up in the middle (a full volume, an I/O error), its file stays
//! readable to the followers up to what was written, and each follower reads the rest
//! from the store on its own: the download never breaks because of the cache.
//!
//! Followers on glance-api's own connection loop (`super::connection`) send the file's
//! bytes with sendfile as they are written; those that hyper serves ([`follow`]) read
//! them in small pieces from the page cache. Either way, memory does not grow with
//! their number.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, watch};

use crate::buffers::Pool;
use crate::cache::ImageId;

/// What a follower reads and sends at a time.
pub const FOLLOW_CHUNK: usize = 64 << 10;

/// How far a fill has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The store is being opened.
    Starting,
    /// This many bytes are written to the file.
    Writing(u64),
    /// Complete and verified: every byte may go out.
    Done,
    /// The cache gave up after this many bytes, which the file still holds; the rest is
    /// the store's.
    Uncached(u64),
    /// The fill failed: every follower fails (before the answer: `status`, else cut).
    Failed {
        /// The HTTP status for a follower that has not answered yet.
        status: u16,
        /// Why.
        message: String,
    },
}

/// A fill in flight.
pub struct Fill {
    /// The image's size.
    pub size: u64,
    file: Mutex<Option<Arc<File>>>,
    progress: watch::Sender<Progress>,
}

impl Fill {
    /// Reports progress to the followers.
    pub fn report(&self, progress: Progress) {
        self.progress.send_replace(progress);
    }

    /// Hands the followers the file being written (before the first [`Progress::Writing`]).
    pub fn set_file(&self, file: File) {
        if let Ok(mut slot) = self.file.lock() {
            *slot = Some(Arc::new(file));
        }
    }

    /// The file being written, once the fill has one.
    pub fn file(&self) -> Option<Arc<File>> {
        self.file.lock().ok().and_then(|f| f.clone())
    }

    /// Its progress, as it changes.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Waits until the fill has started or failed; its failure if it failed.
    pub async fn started(&self) -> Result<(), (u16, String)> {
        let mut rx = self.progress.subscribe();
        let progress = rx
            .wait_for(|p| *p != Progress::Starting)
            .await
            .map(|p| p.clone())
            .unwrap_or(Progress::Failed {
                status: 500,
                message: "the cache fill ended before it started".to_owned(),
            });
        match progress {
            Progress::Failed { status, message } => Err((status, message)),
            _ => Ok(()),
        }
    }
}

/// The fills in flight, by image.
#[derive(Default)]
pub struct Fills {
    fills: Mutex<HashMap<ImageId, Arc<Fill>>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl Fills {
    /// The server stopped: fills in flight give up at their next piece (their files go
    /// to invalid/, never into the cache).
    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the server stopped.
    pub fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The fill of `id` in flight, and whether the caller must start it (it did not
    /// exist: the caller leads).
    pub fn join(&self, id: &ImageId, size: u64) -> (Arc<Fill>, bool) {
        let Ok(mut fills) = self.fills.lock() else {
            // A poisoned registry: no sharing, but the download still goes.
            return (new_fill(size), true);
        };
        if let Some(fill) = fills.get(id) {
            return (fill.clone(), false);
        }
        let fill = new_fill(size);
        fills.insert(id.clone(), fill.clone());
        (fill, true)
    }

    /// Forgets the fill of `id` (it ended): the next GET finds the image cached, or
    /// starts anew.
    pub fn end(&self, id: &ImageId, fill: &Arc<Fill>) {
        if let Ok(mut fills) = self.fills.lock()
            && fills.get(id).is_some_and(|f| Arc::ptr_eq(f, fill))
        {
            fills.remove(id);
        }
    }

    /// How many fills are in flight.
    pub fn len(&self) -> usize {
        self.fills.lock().map_or(0, |f| f.len())
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn new_fill(size: u64) -> Arc<Fill> {
    let (progress, _) = watch::channel(Progress::Starting);
    Arc::new(Fill {
        size,
        file: Mutex::new(None),
        progress,
    })
}

/// How many bytes of the image a follower may send from the file at `progress` (the last
/// one waits for the MD5 check); the failure that must cut the follower if it failed.
pub fn readable(progress: &Progress, size: u64) -> Result<u64, String> {
    match progress {
        Progress::Starting => Ok(0),
        Progress::Writing(n) => Ok((*n).min(size.saturating_sub(1))),
        Progress::Done => Ok(size),
        Progress::Uncached(n) => Ok(*n),
        Progress::Failed { message, .. } => Err(message.clone()),
    }
}

/// Where a follower's bytes come from once the cache gave up: the store, from an offset,
/// on a thread of its own, into the channel given.
pub type Rest = Box<dyn FnOnce(u64, mpsc::Sender<io::Result<Bytes>>) + Send>;

/// What a follower has sent, and where it reads next.
struct Follower {
    fill: Arc<Fill>,
    progress: watch::Receiver<Progress>,
    offset: u64,
    pool: Pool,
    rest: Option<Rest>,
    from_store: Option<mpsc::Receiver<io::Result<Bytes>>>,
    ended: bool,
}

/// The image's bytes as the fill writes them, for one client. Each piece is read from
/// the page cache on the runtime's own threads (no thread per client), so that a
/// hundred clients cost a hundred small buffers and nothing else. When the cache gave up
/// before the bytes were written, `rest` reads them from the store.
pub fn follow(fill: Arc<Fill>, rest: Rest) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let follower = Follower {
        progress: fill.watch(),
        fill,
        offset: 0,
        pool: Pool::new(FOLLOW_CHUNK),
        rest: Some(rest),
        from_store: None,
        ended: false,
    };
    futures::stream::unfold(follower, |mut f| async move {
        let item = f.next().await?;
        if item.is_err() {
            f.ended = true;
        }
        Some((item, f))
    })
}

impl Follower {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.ended {
            return None;
        }
        let size = self.fill.size;
        loop {
            if let Some(store) = self.from_store.as_mut() {
                return store.recv().await;
            }
            if self.offset >= size {
                return None;
            }
            let progress = self.progress.borrow_and_update().clone();
            let readable = match readable(&progress, size) {
                Ok(readable) => readable,
                Err(message) => return Some(Err(io::Error::other(message))),
            };
            if self.offset < readable {
                return Some(self.read(readable));
            }
            if matches!(progress, Progress::Uncached(_)) {
                // The cache gave up: the rest from the store, as any uncached download.
                let (tx, rx) = mpsc::channel(2);
                if let Some(rest) = self.rest.take() {
                    rest(self.offset, tx);
                }
                self.from_store = Some(rx);
                continue;
            }
            if self.progress.changed().await.is_err() {
                return Some(Err(io::Error::other("the cache fill stopped")));
            }
        }
    }

    /// The next piece below `readable`, from the fill's file.
    fn read(&mut self, readable: u64) -> io::Result<Bytes> {
        let file = self
            .fill
            .file()
            .ok_or_else(|| io::Error::other("the cache fill has no file"))?;
        let want = usize::try_from((readable - self.offset).min(FOLLOW_CHUNK as u64))
            .unwrap_or(FOLLOW_CHUNK);
        let mut buf = self.pool.take();
        let n = file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the cache file is shorter than its fill said",
            ));
        }
        self.offset += n as u64;
        Ok(self.pool.lend(buf, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fill_per_image_until_it_ends() {
        let fills = Fills::default();
        let id = ImageId::parse("6a4bb5a2-4e08-4d7e-a1f3-0f1f4e1f2a3b").unwrap();
        let (first, lead) = fills.join(&id, 10);
        assert!(lead);
        let (second, lead) = fills.join(&id, 10);
        assert!(!lead);
        assert!(Arc::ptr_eq(&first, &second));
        fills.end(&id, &first);
        assert!(fills.is_empty());
        let (_, lead) = fills.join(&id, 10);
        assert!(lead);
    }
}
