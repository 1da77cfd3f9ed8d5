//! `GET /metrics` (and `/`) over HTTP on a local address. Before each scrape the
//! refresh hook folds in what only the kernel knows.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use prometheus::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Brings kernel-derived values up to date before a scrape is rendered.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Serve until the listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    refresh: Refresh,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics");
    }
    loop {
        let (mut sock, _) = listener.accept().await?;
        let registry = registry.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let resp = if path == "/metrics" || path == "/" {
                refresh().await;
                let body = super::render(&registry);
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body);
                r
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = sock.write_all(&resp).await;
            let _ = sock.shutdown().await;
        });
    }
}
