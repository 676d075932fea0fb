//! A small HTTP server on loopback that serves an image for web-download imports:
//! `/image` answers the bytes; `/hop` redirects to `/image`; `/away` redirects to the same
//! server by another name (`localhost`); `/stall` sends a head promising the whole image
//! and a first 64 KiB, then nothing more for a minute, as a server that hangs;
//! `/generated/N` streams N bytes of [`generated`] data without holding them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Starts the server; its address.
pub async fn serve(body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = Arc::new(body);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                let port = addr.port();
                let whole = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if let Some(n) = path.strip_prefix("/generated/") {
                    let n: u64 = n.parse().unwrap_or(0);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                    );
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut sent = 0u64;
                    let mut chunk = vec![0u8; 1 << 20];
                    while sent < n {
                        let len = (n - sent).min(chunk.len() as u64) as usize;
                        fill(&mut chunk[..len], sent);
                        if stream.write_all(&chunk[..len]).await.is_err() {
                            return;
                        }
                        sent += len as u64;
                    }
                    return;
                }
                let answer = match path.as_str() {
                    "/image" => [whole.as_bytes(), &body].concat(),
                    "/stall" => {
                        let first = body.len().min(64 << 10);
                        let _ = stream
                            .write_all(&[whole.as_bytes(), &body[..first]].concat())
                            .await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    "/hop" => b"HTTP/1.1 302 Found\r\nLocation: /image\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                    "/away" => format!("HTTP/1.1 302 Found\r\nLocation: http://localhost:{port}/image\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes(),
                    _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                };
                let _ = stream.write_all(&answer).await;
            });
        }
    });
    addr
}

/// The bytes of `/generated/N` from offset `at` on: a cheap function of the offset.
pub fn fill(buf: &mut [u8], at: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = at + i as u64;
        *b = (x ^ (x >> 9) ^ (x >> 17)) as u8;
    }
}

/// The MD5 of `/generated/N`.
pub fn generated_md5(n: u64) -> String {
    use md5::{Digest, Md5};
    let mut md5 = Md5::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < n {
        let len = (n - at).min(chunk.len() as u64) as usize;
        fill(&mut chunk[..len], at);
        md5.update(&chunk[..len]);
        at += len as u64;
    }
    hex::encode(md5.finalize())
}
