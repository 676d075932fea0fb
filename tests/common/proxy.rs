//! A TCP proxy in front of a server (a database, S3) that a test can cut, stall and
//! restore: the server going away or hanging, and coming back, without touching the
//! server other tests use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The proxy; dropping it stops it.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        Self::start_at("127.0.0.1:0".parse().expect("addr"), target).await
    }

    /// A proxy at `addr` forwarding to `target`: one started again where a dropped one
    /// listened, as a stopped server that comes back (while none listens there,
    /// connections are refused).
    pub async fn start_at(addr: SocketAddr, target: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_up, accept_links) = (up.clone(), links.clone());
        let accept_stalled = stalled.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let stall = accept_stalled.load(Ordering::SeqCst);
                let link = tokio::spawn(async move {
                    if stall {
                        // Accepted, and then nothing: a server that hangs.
                        let _held = &client;
                        std::future::pending::<()>().await;
                    }
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accept_links.lock().expect("links").push(link);
            }
        });
        Self {
            addr,
            up,
            stalled,
            links,
            accept,
        }
    }

    /// The database goes away: every open connection is cut and new ones are closed.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    /// The server is back.
    pub fn restore(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        self.up.store(true, Ordering::SeqCst);
    }

    /// The server hangs: open connections are cut, new ones accepted and never answered.
    pub fn stall(&self) {
        self.cut();
        self.stalled.store(true, Ordering::SeqCst);
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
