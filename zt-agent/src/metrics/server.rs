//! `GET /metrics` (and `/`) over HTTP/1.1 on a local address. Before each scrape the
//! refresh hook folds in what only the kernel knows.
//!
//! Any local user can connect here, so nothing a client does may end the server or
//! hold it: hyper parses the requests (rather than a hand-written reader), a client
//! gets a few seconds to send its request headers, every connection ends after one
//! answer and within a fixed lifetime, and at most [`Limits::connections`] are open at
//! once. At that cap a new connection pushes out the oldest one that has not sent a
//! whole request yet, so idle connections never keep a scrape out. Accept errors (out
//! of descriptors, say) are waited out with a growing pause, never returned.
//!
//! hyper and hyper-util rather than axum: one route needs no router, and hyper's own
//! connection builder is where the header timeout and keep-alive are set.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Brings kernel-derived values up to date before a scrape is rendered.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What one client may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub connections: usize,
    /// Time from the connection to the end of its request headers.
    pub headers: Duration,
    /// Longest a connection lives, answer included.
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 64,
            headers: Duration::from_secs(5),
            lifetime: Duration::from_secs(15),
        }
    }
}

/// Serve on `listener` for as long as the future is polled: it never returns.
pub async fn serve(
    listener: Arc<TcpListener>,
    registry: Registry,
    refresh: Refresh,
    limits: Limits,
) -> Infallible {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics");
    }
    let table = Arc::new(Mutex::new(Table::new(limits.connections)));
    let mut backoff = crate::sys::backoff::Backoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff.reset();
                s
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM, or a connection reset before it was
                // accepted: the next accept may well succeed.
                let wait = backoff.pause();
                tracing::warn!(error = %e, pause_ms = wait.as_millis(), "metrics: accept failed; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let Some(slot) = Table::admit(&table) else {
            // Every connection is being answered: this one waits for none of them.
            drop(stream);
            continue;
        };
        let (registry, refresh) = (registry.clone(), refresh.clone());
        tokio::spawn(async move {
            let evicted = slot.state.clone();
            let svc = {
                let state = slot.state.clone();
                hyper::service::service_fn(move |req| {
                    // A whole request arrived: this connection is no longer pushed out.
                    state.serving.store(true, Ordering::Relaxed);
                    answer(req, registry.clone(), refresh.clone())
                })
            };
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.headers)
                .keep_alive(false);
            let conn = http.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = tokio::time::timeout(limits.lifetime, conn) => {}
                () = evicted.evict.notified() => {}
            }
            drop(slot);
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    registry: Registry,
    refresh: Refresh,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = |code: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = code;
        Ok(r)
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    if !matches!(req.uri().path(), "/metrics" | "/") {
        return status(StatusCode::NOT_FOUND);
    }
    refresh().await;
    let mut r = Response::new(Full::new(Bytes::from(super::render(&registry))));
    if let Ok(v) = hyper::header::HeaderValue::from_str("text/plain; version=0.0.4") {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(r)
}

/// One connection's place under the cap.
struct SlotState {
    evict: Notify,
    /// Set once its request has arrived.
    serving: AtomicBool,
}

/// The open connections, oldest first.
struct Table {
    cap: usize,
    open: VecDeque<Arc<SlotState>>,
}

/// Held by a connection's task; gives its place back on drop.
struct Slot {
    table: Arc<Mutex<Table>>,
    state: Arc<SlotState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock() {
            t.open.retain(|s| !Arc::ptr_eq(s, &self.state));
        }
    }
}

impl Table {
    fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            open: VecDeque::new(),
        }
    }

    /// A place for a new connection. At the cap, the oldest connection still waiting
    /// for its request gives its place up; `None` when all are being answered.
    fn admit(table: &Arc<Mutex<Self>>) -> Option<Slot> {
        let mut t = table.lock().ok()?;
        if t.open.len() >= t.cap {
            let i = t
                .open
                .iter()
                .position(|s| !s.serving.load(Ordering::Relaxed))?;
            if let Some(old) = t.open.remove(i) {
                old.evict.notify_one();
            }
        }
        let state = Arc::new(SlotState {
            evict: Notify::new(),
            serving: AtomicBool::new(false),
        });
        t.open.push_back(state.clone());
        Some(Slot {
            table: table.clone(),
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_waiting_connection_makes_room() {
        let t = Arc::new(Mutex::new(Table::new(2)));
        let a = Table::admit(&t).expect("a");
        let b = Table::admit(&t).expect("b");
        a.state.serving.store(true, Ordering::Relaxed);
        // a is being answered: b, the oldest waiting one, is pushed out.
        let c = Table::admit(&t).expect("c");
        assert_eq!(t.lock().expect("lock").open.len(), 2);
        // b's task ends on the notification and gives nothing back twice.
        drop(b);
        assert_eq!(t.lock().expect("lock").open.len(), 2);
        c.state.serving.store(true, Ordering::Relaxed);
        // Both are being answered: no room, and nobody is cut off.
        assert!(Table::admit(&t).is_none());
        drop(a);
        let _d = Table::admit(&t).expect("room again");
    }
}
