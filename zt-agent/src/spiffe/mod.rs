//! Kernel-attested workload identity: the SPIFFE Workload API on a unix socket, handing
//! each enrolled task short-lived X.509- and JWT-SVIDs of its own identity.
//!
//! `attest` finds the caller's identity in the kernel's task table through its pidfd;
//! `keys` keeps the signing keys root-only on disk and rotates them; `ca` signs
//! X.509-SVIDs, `jwt` JWT-SVIDs; `svid` holds the authorities in force and the record
//! `zt-agent svid` shows; `server` is the gRPC service, with `authority` mending what
//! gRPC's C core sends as `:authority` on unix sockets, and `shares` holding each
//! caller to its share of the connections; `proto` is generated from
//! proto/workload.proto.

pub mod attest;
pub mod authority;
pub mod ca;
pub mod jwt;
pub mod keys;
pub mod proto;
pub mod server;
pub mod shares;
pub mod svid;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::bus::Bus;
use crate::ebpf::loader::{self, PinDir};
use crate::ebpf::maps::TasksView;
use crate::metrics::SpiffeMetrics;
use crate::state::State;
use attest::Peer;
use keys::KeyFile;
use server::{PeerStream, Shared, WorkloadApi};
use shares::{Key, Slot, Table, Why};
use svid::{Authorities, Issued, Keeper};

/// Where the Workload API listens unless told otherwise: outside the root-only state
/// dir, so that enrolled workloads (which run unprivileged) can reach it.
pub const DEFAULT_SOCKET: &str = "/run/zt-agent-workload/socket";

/// How often connections are checked for the idle cut-off: one is cut within this of
/// the cut-off.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum SpiffeError {
    #[error("{path}: {source}")]
    Keys {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Cert(String),
    #[error("JWT: {0}")]
    Jwt(String),
    #[error("Workload API socket {path}: {why}")]
    Socket { path: String, why: String },
    #[error("Workload API: the task table: {0}")]
    Tasks(#[source] loader::LoadError),
}

/// The Workload API's settings (from `zt-agent daemon`'s flags).
#[derive(Clone, Debug)]
pub struct Config {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// The operator's CA certificate (chain) and key.
    pub operator_ca: Option<(PathBuf, PathBuf)>,
    pub x509_ttl: Duration,
    pub jwt_ttl: Duration,
}

/// `spiffe://TRUST-DOMAIN` of a SPIFFE ID.
#[must_use]
pub fn trust_domain(spiffe_id: &str) -> Option<String> {
    let rest = spiffe_id.strip_prefix("spiffe://")?;
    let td = rest.split('/').next().filter(|t| !t.is_empty())?;
    Some(format!("spiffe://{td}"))
}

fn sock_err(path: &Path, why: impl Into<String>) -> SpiffeError {
    SpiffeError::Socket {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// Bind the socket: its directory made 0755 (or, if there, root's and writable by root
/// alone, never through a symlink), a stale socket of root's replaced, anything else
/// at the path refused, and the socket made 0666 for every workload to connect.
fn bind(path: &Path) -> Result<UnixListener, SpiffeError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| sock_err(path, "needs a directory"))?;
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| sock_err(dir, e.to_string()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| sock_err(dir, e.to_string()))?;
        }
        Err(e) => return Err(sock_err(dir, e.to_string())),
        Ok(m) if !m.is_dir() => return Err(sock_err(dir, "not a directory (a symlink?)")),
        Ok(m) if m.uid() != 0 => return Err(sock_err(dir, "directory not owned by root")),
        Ok(m) if m.mode() & 0o022 != 0 => {
            return Err(sock_err(dir, "directory writable by group or others"));
        }
        Ok(_) => {}
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(path, e.to_string())),
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt as _;
            if !m.file_type().is_socket() || m.uid() != 0 {
                return Err(sock_err(
                    path,
                    "something else is there (not a socket of root's); remove it or pick another --workload-api",
                ));
            }
            // An earlier daemon's socket.
            std::fs::remove_file(path).map_err(|e| sock_err(path, e.to_string()))?;
        }
    }
    let l = UnixListener::bind(path).map_err(|e| sock_err(path, e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| sock_err(path, e.to_string()))?;
    Ok(l)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1)
}

/// The Workload API, ready to serve: two parts, the server and the key keeper, each
/// started again by the daemon's supervisor if it fails (hence cheap to clone).
#[derive(Clone)]
pub struct Workload {
    listener: Arc<UnixListener>,
    shared: Arc<Shared>,
    keeper: Arc<tokio::sync::Mutex<Keeper>>,
    key_file: Arc<KeyFile>,
    authorities: Arc<watch::Sender<Arc<Authorities>>>,
    pub socket: PathBuf,
}

/// Open the keys, the task table (read-only) and the socket.
pub fn start(
    cfg: &Config,
    pins: &PinDir,
    state: watch::Receiver<Arc<State>>,
    bus: Bus,
    metrics: SpiffeMetrics,
) -> Result<Workload, SpiffeError> {
    let jwt_ttl = secs(cfg.jwt_ttl);
    let (keeper, auth) = Keeper::open(
        KeyFile::of(&cfg.state_dir),
        cfg.operator_ca.clone(),
        jwt_ttl,
        now(),
    )?;
    let tasks = TasksView(
        loader::open_pinned_read_only(pins, zt_agent_common::map_names::TASKS)
            .map_err(SpiffeError::Tasks)?,
    );
    let listener = bind(&cfg.socket)?;
    let mut issued = Issued::default();
    issued.set_bundles(&auth);
    let (authorities, auth_rx) = watch::channel(auth);
    let shared = Arc::new(Shared {
        tasks,
        state,
        authorities: auth_rx,
        x509_ttl: secs(cfg.x509_ttl),
        jwt_ttl,
        bus,
        metrics,
        issued: std::sync::Mutex::new(issued),
        issued_dirty: std::sync::atomic::AtomicBool::new(true),
    });
    tracing::info!(socket = %cfg.socket.display(), "SPIFFE Workload API listening");
    Ok(Workload {
        listener: Arc::new(listener),
        shared,
        keeper: Arc::new(tokio::sync::Mutex::new(keeper)),
        key_file: Arc::new(KeyFile::of(&cfg.state_dir)),
        authorities: Arc::new(authorities),
        socket: cfg.socket.clone(),
    })
}

impl Workload {
    /// Serve the Workload API. Nothing a caller does ends it: accept errors are
    /// waited out, and each caller holds at most its share of the connections.
    pub async fn serve(self) -> Result<(), String> {
        let table = shares::table(shares::Limits::default());
        let (incoming, _tasks) = incoming(self.listener.clone(), self.shared.clone(), table);
        tonic::transport::Server::builder()
            .concurrency_limit_per_connection(32)
            .add_service(
                proto::spiffe_workload_api_server::SpiffeWorkloadApiServer::new(WorkloadApi(
                    self.shared.clone(),
                )),
            )
            .serve_with_incoming(incoming)
            .await
            .map_err(|e| e.to_string())
    }

    /// Rotate the keys on schedule, publish the new authorities, and write out the
    /// record of what was issued (at most once a second).
    pub async fn keep(self) -> Result<(), String> {
        let mut keeper = self.keeper.lock().await;
        let shared = &self.shared;
        let mut next = keeper.next_change(now());
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let t = now();
            if t >= next {
                match keeper.rotate(t, false) {
                    Ok(Some(a)) => {
                        if let Ok(mut i) = shared.issued.lock() {
                            i.set_bundles(&a);
                        }
                        shared
                            .issued_dirty
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        self.authorities.send_replace(a);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "rotating the SVID signing keys"),
                }
                next = keeper.next_change(t);
            }
            if shared
                .issued_dirty
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                let snapshot = shared.issued.lock().map(|i| i.clone()).ok();
                if let Some(s) = snapshot
                    && let Err(e) = s.write(&self.key_file)
                {
                    tracing::warn!(error = %e, "writing the record of issued SVIDs");
                }
            }
        }
    }
}

/// The key a caller's connections count against: its identity as attested now with
/// its uid, or its uid alone when it has none.
fn key_of(peer: &Peer, shared: &Shared) -> Key {
    let state = shared.state.borrow().clone();
    match attest::attest(peer, &shared.tasks, &state) {
        Ok(who) => Key::Identity {
            name: who.identity.name,
            uid: peer.uid,
        },
        Err(_) => Key::Unenrolled { uid: peer.uid },
    }
}

fn count(shared: &Shared, why: Why, n: usize) {
    if n > 0 {
        shared
            .metrics
            .evicted
            .with_label_values(&[why.as_str()])
            .inc_by(n as u64);
    }
}

/// Tasks that stop when this is dropped, with the server that started them.
struct AbortOnDrop([tokio::task::JoinHandle<()>; 2]);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Accepted connections with their peers pinned and attested, each admitted under its
/// caller's share (one whose credentials cannot be read is dropped); and the tasks
/// accepting them and cutting idle ones off, to stop with the server.
fn incoming(
    listener: Arc<UnixListener>,
    shared: Arc<Shared>,
    table: Table,
) -> (
    impl tokio_stream::Stream<Item = std::io::Result<PeerStream>>,
    AbortOnDrop,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let sweeper = {
        let (shared, table) = (shared.clone(), table.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let n = table
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .sweep(std::time::Instant::now());
                count(&shared, Why::Idle, n);
            }
        })
    };
    let acceptor = tokio::spawn(async move {
        let mut backoff = crate::sys::backoff::Backoff::default();
        loop {
            let peer = listener
                .accept()
                .await
                .and_then(|(io, _)| Peer::of(&io).map(|p| (io, p)));
            let (io, peer) = match peer {
                Ok(c) => {
                    backoff.reset();
                    c
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM, a connection reset before it was
                    // accepted, or a peer whose credentials cannot be read: the next
                    // accept may well succeed.
                    let wait = backoff.pause();
                    tracing::warn!(error = %e, pause_ms = wait.as_millis(), "Workload API: accept failed; waiting");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let key = key_of(&peer, &shared);
            let (slot, pushed) = Slot::admit(&table, key);
            for why in pushed {
                count(&shared, why, 1);
            }
            if tx.send(Ok(PeerStream::new(io, peer, slot))).await.is_err() {
                return;
            }
        }
    });
    (
        tokio_stream::wrappers::ReceiverStream::new(rx),
        AbortOnDrop([acceptor, sweeper]),
    )
}

/// Remove the Workload API socket (a socket of root's only) and its directory if that is
/// left empty (teardown).
pub fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt as _;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket() && m.uid() == 0) {
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Remove the keys from a state dir (teardown).
pub fn remove_keys(state_dir: &Path) {
    KeyFile::of(state_dir).remove();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domains() {
        assert_eq!(
            trust_domain("spiffe://example.org/a/b").as_deref(),
            Some("spiffe://example.org")
        );
        assert_eq!(trust_domain("spiffe:///a"), None);
        assert_eq!(trust_domain("https://x"), None);
    }

    #[test]
    fn bind_refuses_what_is_not_its_own() {
        if !zt_agent_host::is_root() {
            return;
        }
        let base = std::env::temp_dir().join(format!("zt-wl-bind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("base");
        // A regular file at the socket path is left alone.
        let dir = base.join("d");
        std::fs::create_dir(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.join("socket"), b"x").expect("file");
        assert!(bind(&dir.join("socket")).is_err());
        assert_eq!(std::fs::read(dir.join("socket")).expect("kept"), b"x");
        // A symlinked directory is refused.
        std::os::unix::fs::symlink(&dir, base.join("link")).expect("symlink");
        assert!(bind(&base.join("link").join("s2")).is_err());
        // A world-writable directory is refused.
        let open = base.join("open");
        std::fs::create_dir(&open).expect("dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(bind(&open.join("socket")).is_err());
        // A fresh one is made 0755 with a 0666 socket, and a stale socket replaced.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let fresh = base.join("fresh").join("socket");
            drop(bind(&fresh).expect("bind"));
            let m = std::fs::metadata(&fresh).expect("socket");
            assert_eq!(m.mode() & 0o777, 0o666);
            let d = std::fs::metadata(base.join("fresh")).expect("dir");
            assert_eq!(d.mode() & 0o777, 0o755);
            drop(bind(&fresh).expect("rebind over a stale socket"));
        });
        let _ = std::fs::remove_dir_all(&base);
    }
}
