//! The Workload API service on its unix socket: every call checks the security
//! header, attests the caller from the kernel, and answers only with what the
//! caller's own identity is entitled to. Streams send the first message at once and a
//! new one on rotation, on a key change or a policy reload, and end (PermissionDenied)
//! once the task that connected has exited or lost its identity.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::attest::{self, Attested, Peer, Refusal};
use super::authority::AuthorityFix;
use super::proto::{self, spiffe_workload_api_server::SpiffeWorkloadApi};
use super::shares::{Slot, SlotState};
use super::svid::{Authorities, Issued, IssuedJwtRecord, IssuedX509};
use super::{jwt, trust_domain};
use crate::bus::{self, Body, Bus};
use crate::ebpf::maps::TasksView;
use crate::events::{SvidDetail, SvidEvent, TaskFacts};
use crate::metrics::SpiffeMetrics;
use crate::state::State;

/// The metadata every Workload API request must carry (SPIFFE Workload Endpoint §3).
const HEADER: &str = "workload.spiffe.io";

/// A connection with the peer pinned at accept, its place under the caller's share, and
/// the client's `:authority` rewritten on the way in (see `authority`). Once its place
/// is taken from it (see `shares`), reads and writes fail and the connection ends.
pub struct PeerStream {
    io: UnixStream,
    peer: Arc<Peer>,
    fix: AuthorityFix,
    /// Rewritten bytes h2 has not read yet.
    ready: Vec<u8>,
    slot: Slot,
}

/// What every request of a connection carries: its peer, and its place, to mark when a
/// request arrives.
#[derive(Clone, Debug)]
pub struct Conn {
    pub peer: Arc<Peer>,
    pub slot: Arc<SlotState>,
}

impl PeerStream {
    #[must_use]
    pub fn new(io: UnixStream, peer: Peer, slot: Slot) -> Self {
        Self {
            io,
            peer: Arc::new(peer),
            fix: AuthorityFix::default(),
            ready: Vec::new(),
            slot,
        }
    }

    /// Fails once the connection was pushed out; until then the task polling it is
    /// woken when it is.
    fn check(&self, cx: &Context<'_>) -> std::io::Result<()> {
        if self.slot.state.watch(cx.waker()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "Workload API connection pushed out",
            ));
        }
        Ok(())
    }
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = Conn;
    fn connect_info(&self) -> Self::ConnectInfo {
        Conn {
            peer: self.peer.clone(),
            slot: self.slot.state.clone(),
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        this.check(cx)?;
        while this.ready.is_empty() {
            let mut raw = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut raw);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let mut out = std::mem::take(&mut this.ready);
                    this.fix
                        .feed(rb.filled(), &mut out)
                        .map_err(std::io::Error::other)?;
                    this.ready = out;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.ready.len().min(buf.remaining());
        buf.put_slice(&this.ready[..n]);
        this.ready.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What the service runs on.
pub struct Shared {
    pub tasks: TasksView,
    pub state: watch::Receiver<Arc<State>>,
    pub authorities: watch::Receiver<Arc<Authorities>>,
    pub x509_ttl: i64,
    pub jwt_ttl: i64,
    pub bus: Bus,
    pub metrics: SpiffeMetrics,
    /// The latest SVIDs by identity, for `zt-agent svid`; written out by the keeper.
    pub issued: Mutex<Issued>,
    pub issued_dirty: std::sync::atomic::AtomicBool,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn internal(e: &super::SpiffeError) -> Status {
    tracing::error!(error = %e, "Workload API");
    Status::internal("the agent could not sign an SVID")
}

impl Shared {
    fn publish(
        &self,
        verdict: &'static str,
        identity: String,
        reason: &'static str,
        tgid: u32,
        detail: SvidDetail,
    ) {
        self.bus
            .publish(bus::Event::now(Body::Svid(Box::new(SvidEvent {
                verdict,
                identity,
                reason,
                tgid,
                task: TaskFacts::read(tgid),
                detail,
            }))));
    }

    /// Report a refusal and turn it into the status the standard asks for.
    fn refuse(&self, peer: &Peer, refusal: Refusal, svid_type: &'static str) -> Status {
        self.metrics
            .refused
            .with_label_values(&[refusal.as_str()])
            .inc();
        let identity = match refusal {
            Refusal::Quarantined => crate::policy::QUARANTINE_NAME.to_owned(),
            _ => "unenrolled".to_owned(),
        };
        self.publish(
            "deny",
            identity,
            refusal.as_str(),
            peer.pid,
            SvidDetail {
                svid_type,
                ..SvidDetail::default()
            },
        );
        Status::permission_denied(format!(
            "no SPIFFE identity for this caller: {}",
            refusal.as_str()
        ))
    }

    fn attest(&self, peer: &Peer, svid_type: &'static str) -> Result<Attested, Status> {
        let state = self.state.borrow().clone();
        attest::attest(peer, &self.tasks, &state).map_err(|r| self.refuse(peer, r, svid_type))
    }

    /// Check the header and attest the caller of `req`.
    fn caller<T>(
        &self,
        req: &Request<T>,
        svid_type: &'static str,
    ) -> Result<(Arc<Peer>, Attested), Status> {
        let conn = req.extensions().get::<Conn>();
        // A request arrived: the connection is no longer cut off for idling.
        if let Some(c) = conn {
            c.slot.served();
        }
        if req.metadata().get(HEADER).and_then(|v| v.to_str().ok()) != Some("true") {
            self.metrics
                .refused
                .with_label_values(&["missing_security_header"])
                .inc();
            return Err(Status::invalid_argument(
                "security header missing from request (workload.spiffe.io: true)",
            ));
        }
        let peer = conn
            .map(|c| c.peer.clone())
            .ok_or_else(|| Status::permission_denied(Refusal::NoPeer.as_str()))?;
        let who = self.attest(&peer, svid_type)?;
        Ok((peer, who))
    }

    /// The bundles of every trust domain the policy names (one authority signs all).
    fn bundles(&self, pick: impl Fn(&Authorities) -> Vec<u8>) -> HashMap<String, Vec<u8>> {
        let auth = self.authorities.borrow().clone();
        let bundle = pick(&auth);
        let state = self.state.borrow().clone();
        state
            .identities
            .iter()
            .filter_map(|i| trust_domain(&i.spiffe_id))
            .map(|td| (td, bundle.clone()))
            .collect()
    }

    fn x509_response(&self, who: &Attested) -> Result<(proto::X509svidResponse, i64, i64), Status> {
        let auth = self.authorities.borrow().clone();
        let t = now();
        let cert = auth
            .signer
            .issue(&who.identity.spiffe_id, &who.run_id, t, self.x509_ttl)
            .map_err(|e| internal(&e))?;
        self.metrics
            .issued
            .with_label_values(&[who.identity.name.as_str(), "x509"])
            .inc();
        self.publish(
            "allow",
            who.identity.name.clone(),
            "issued",
            who.tgid,
            SvidDetail {
                svid_type: "x509",
                run_id: Some(who.run_id.clone()),
                serial: Some(cert.serial.clone()),
                expires: rfc3339(cert.not_after),
                ..SvidDetail::default()
            },
        );
        self.record(&auth, &who.identity.name, |r| {
            r.x509 = Some(IssuedX509 {
                spiffe_id: who.identity.spiffe_id.clone(),
                serial: cert.serial.clone(),
                not_before: cert.not_before,
                not_after: cert.not_after,
                run_id: who.run_id.clone(),
                pid: who.tgid,
                certificate: cert.leaf_pem.clone(),
            });
        });
        let resp = proto::X509svidResponse {
            svids: vec![proto::X509svid {
                spiffe_id: who.identity.spiffe_id.clone(),
                x509_svid: cert.chain,
                x509_svid_key: cert.key_der,
                bundle: auth.x509_bundle.clone(),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles: HashMap::new(),
        };
        Ok((resp, cert.not_before, cert.not_after))
    }

    fn record(
        &self,
        auth: &Authorities,
        identity: &str,
        f: impl FnOnce(&mut super::svid::IssuedFor),
    ) {
        if let Ok(mut issued) = self.issued.lock() {
            issued.set_bundles(auth);
            f(issued.identities.entry(identity.to_owned()).or_default());
            self.issued_dirty
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// What a stream waits for before it looks again.
enum Wake {
    /// Time to renew the SVID.
    Rotate,
    /// The signing keys or bundles changed.
    Keys,
    /// The policy was reloaded, or the caller's process exited.
    Look,
    /// The client went away, or the daemon is stopping.
    Closed,
}

async fn wait(
    until: Option<i64>,
    exit: Option<&AsyncFd<OwnedFd>>,
    state: &mut watch::Receiver<Arc<State>>,
    auth: &mut watch::Receiver<Arc<Authorities>>,
    closed: impl std::future::Future<Output = ()>,
) -> Wake {
    let sleep = async {
        match until {
            Some(t) => {
                let secs = u64::try_from(t - now()).unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
            }
            None => std::future::pending().await,
        }
    };
    let exited = async {
        match exit {
            Some(fd) => {
                let _ = fd.readable().await;
            }
            // No pidfd to watch: each renewal's attestation checks the caller instead.
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = sleep => Wake::Rotate,
        () = exited => Wake::Look,
        r = state.changed() => if r.is_ok() { Wake::Look } else { Wake::Closed },
        r = auth.changed() => if r.is_ok() { Wake::Keys } else { Wake::Closed },
        () = closed => Wake::Closed,
    }
}

fn exit_watch(peer: &Peer) -> Option<AsyncFd<OwnedFd>> {
    let fd = peer.exit_fd()?;
    // SAFETY: the AsyncFd owns this descriptor (a fresh copy) for its whole life.
    unsafe { AsyncFd::register(fd) }.ok()
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// The service.
#[derive(Clone)]
pub struct WorkloadApi(pub Arc<Shared>);

impl WorkloadApi {
    /// Keep sending whatever `make` answers for the caller until it is refused, the
    /// client goes away or the server stops. `make` returns the message and, for an
    /// SVID, when to renew it.
    fn stream<T: Send + 'static>(
        &self,
        peer: Arc<Peer>,
        mut who: Attested,
        svid_type: &'static str,
        first: (T, Option<i64>),
        make: impl Fn(&Shared, &Attested) -> Result<(T, Option<i64>), Status> + Send + 'static,
    ) -> Stream<T> {
        let (tx, rx) = mpsc::channel(2);
        let shared = self.0.clone();
        tokio::spawn(async move {
            let (msg, mut renew) = first;
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
            let exit = exit_watch(&peer);
            let mut state = shared.state.clone();
            let mut auth = shared.authorities.clone();
            loop {
                let wake = wait(renew, exit.as_ref(), &mut state, &mut auth, tx.closed()).await;
                let renew_now = match wake {
                    Wake::Closed => return,
                    Wake::Rotate | Wake::Keys => true,
                    Wake::Look => false,
                };
                let again = match shared.attest(&peer, svid_type) {
                    Ok(a) => a,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                // A policy reload that leaves the identity as it was changes nothing;
                // a key change, a new SPIFFE ID or a renewal sends a new message.
                let same = again.identity.spiffe_id == who.identity.spiffe_id;
                if !renew_now && same {
                    continue;
                }
                who = again;
                match make(&shared, &who) {
                    Ok((msg, r)) => {
                        renew = r;
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

impl WorkloadApi {
    /// A bundle stream: `make` now, and again whenever the keys or the policy change.
    fn bundles<T: Send + 'static>(
        &self,
        (peer, who): (Arc<Peer>, Attested),
        svid_type: &'static str,
        make: fn(&Shared) -> T,
    ) -> Stream<T> {
        let first = (make(&self.0), None);
        self.stream(peer, who, svid_type, first, move |s, _| Ok((make(s), None)))
    }
}

/// Renew an X.509-SVID at half its life.
fn renew_at(not_before: i64, not_after: i64) -> Option<i64> {
    Some(not_before + (not_after - not_before) / 2)
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream<proto::X509svidResponse>;
    type FetchX509BundlesStream = Stream<proto::X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<proto::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<proto::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let (peer, who) = self.0.caller(&req, "x509")?;
        let (first, nb, na) = self.0.x509_response(&who)?;
        let make =
            |s: &Shared, w: &Attested| s.x509_response(w).map(|(m, nb, na)| (m, renew_at(nb, na)));
        Ok(Response::new(self.stream(
            peer,
            who,
            "x509",
            (first, renew_at(nb, na)),
            make,
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<proto::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let caller = self.0.caller(&req, "x509_bundle")?;
        Ok(Response::new(self.bundles(caller, "x509_bundle", |s| {
            proto::X509BundlesResponse {
                crl: Vec::new(),
                bundles: s.bundles(|a| a.x509_bundle.clone()),
            }
        })))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<proto::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let caller = self.0.caller(&req, "jwt_bundle")?;
        Ok(Response::new(self.bundles(caller, "jwt_bundle", |s| {
            proto::JwtBundlesResponse {
                bundles: s.bundles(|a| a.jwt_bundle.clone()),
            }
        })))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<proto::JwtsvidRequest>,
    ) -> Result<Response<proto::JwtsvidResponse>, Status> {
        let (peer, who) = self.0.caller(&req, "jwt")?;
        let body = req.get_ref();
        let audience: Vec<String> = body
            .audience
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect();
        if audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if !body.spiffe_id.is_empty() && body.spiffe_id != who.identity.spiffe_id {
            return Err(self.0.refuse(&peer, Refusal::NotEntitled, "jwt"));
        }
        let s = &self.0;
        let auth = s.authorities.borrow().clone();
        let t = now();
        let issued = jwt::sign(
            auth.jwt_signer(),
            jwt::Claims {
                sub: who.identity.spiffe_id.clone(),
                aud: audience.clone(),
                exp: t + s.jwt_ttl,
                iat: t,
                run_id: who.run_id.clone(),
                identity: who.identity.name.clone(),
            },
        )
        .map_err(|e| internal(&e))?;
        s.metrics
            .issued
            .with_label_values(&[who.identity.name.as_str(), "jwt"])
            .inc();
        s.publish(
            "allow",
            who.identity.name.clone(),
            "issued",
            who.tgid,
            SvidDetail {
                svid_type: "jwt",
                run_id: Some(who.run_id.clone()),
                kid: Some(issued.kid.clone()),
                audience: audience.clone(),
                expires: rfc3339(issued.claims.exp),
                ..SvidDetail::default()
            },
        );
        s.record(&auth, &who.identity.name, |r| {
            r.jwt = Some(IssuedJwtRecord {
                spiffe_id: who.identity.spiffe_id.clone(),
                kid: issued.kid.clone(),
                audience,
                iat: issued.claims.iat,
                exp: issued.claims.exp,
                run_id: who.run_id.clone(),
                pid: who.tgid,
            });
        });
        Ok(Response::new(proto::JwtsvidResponse {
            svids: vec![proto::Jwtsvid {
                spiffe_id: who.identity.spiffe_id,
                svid: issued.token,
                hint: String::new(),
            }],
        }))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<proto::ValidateJwtsvidRequest>,
    ) -> Result<Response<proto::ValidateJwtsvidResponse>, Status> {
        let _ = self.0.caller(&req, "validate")?;
        let body = req.get_ref();
        if body.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if body.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let auth = self.0.authorities.borrow().clone();
        let claims = jwt::validate(&auth.jwt_keys, &body.svid, &body.audience)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let spiffe_id = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(Response::new(proto::ValidateJwtsvidResponse {
            spiffe_id,
            claims: Some(to_struct(claims)),
        }))
    }
}

fn to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_struct(m: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt as _;

    use super::super::shares::{self, Key, Limits, Why};
    use super::*;

    #[test]
    fn a_connection_pushed_out_stops_reading_and_closes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let table = shares::table(Limits {
                unenrolled_uid: 1,
                ..Limits::default()
            });
            let (a, mut b) = UnixStream::pair().expect("pair");
            let peer = Peer::of(&a).expect("peer");
            let (slot, _) = Slot::admit(&table, Key::Unenrolled { uid: 0 });
            let mut s = PeerStream::new(a, peer, slot);
            // A reader waiting for bytes that never come.
            let reader = tokio::spawn(async move {
                let mut buf = [0u8; 16];
                let r = s.read(&mut buf).await;
                drop(s);
                r
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (_next, pushed) = Slot::admit(&table, Key::Unenrolled { uid: 0 });
            assert_eq!(pushed, [Why::Share]);
            let r = tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .expect("the reader was woken")
                .expect("joined");
            assert_eq!(
                r.expect_err("pushed out").kind(),
                std::io::ErrorKind::ConnectionAborted
            );
            // Its socket is closed: the client reads the end.
            let mut buf = [0u8; 16];
            assert_eq!(b.read(&mut buf).await.expect("read"), 0);
        });
    }
}
