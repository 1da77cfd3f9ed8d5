//! The agent's resolver: UDP and TCP on 127.0.0.1 and ::1 at the DNS port, where the
//! kernel sends enrolled tasks' DNS. It learns who asked from the kernel's record of
//! the sending socket, answers the names the identity's policy allows by forwarding to
//! the upstream resolvers, installs the answered addresses for that identity before
//! it answers, and refuses everything else.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData};
use hickory_proto::op::{Message, ResponseCode};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use zt_agent_common::{DnsAllowKey, DnsAllowValue, DnsClient, DnsClientKey};

use super::host::HostAddrs;
use super::learned::{Answered, Learned, Rules, boot_ns};
use super::message::{self, Asker, Decision, Forward, Limits, Outcome};
use super::shares::{self, Query, Shares};
use crate::bus::{self, Body, Bus};
use crate::events::limit::Cause;
use crate::events::{DnsDetail, DnsEvent, TaskFacts};
use crate::grants::model::TaskScope;
use crate::grants::view::{AskNames, NameAllowance};
use crate::grants::{DnsCall, Handle as GrantsHandle};
use crate::metrics::DnsMetrics;
use crate::policy::{Compiled, Mode, NameRule};

/// Default port of the resolver: privileged, so that only root can listen there
/// while the daemon is down, and next to 53 so that it is easy to recognise.
pub const DEFAULT_PORT: u16 = 54;

/// Resolver settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub port: u16,
    pub upstreams: Vec<SocketAddr>,
    pub max_ttl: u32,
    pub grace: Duration,
    pub per_identity: usize,
    /// Answers kept at once, all identities together; 0: no cache.
    pub cache_entries: usize,
    pub timeout: Duration,
}

/// The name side of the policy in force, by identity id.
#[derive(Clone, Debug, Default)]
pub struct DnsPolicy {
    pub by_id: BTreeMap<u32, IdentityNames>,
}

#[derive(Clone, Debug)]
pub struct IdentityNames {
    pub name: String,
    pub audit: bool,
    pub rules: Vec<NameRule>,
    pub nets: Vec<IpNet>,
}

impl DnsPolicy {
    #[must_use]
    pub fn from_compiled(c: &Compiled) -> Self {
        Self {
            by_id: c
                .identities
                .iter()
                .map(|i| {
                    (
                        i.id,
                        IdentityNames {
                            name: i.name.clone(),
                            audit: i.mode == Mode::Audit,
                            rules: i.names.clone(),
                            nets: i.nets.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}

impl Rules for DnsPolicy {
    fn rules(&self, id: u32) -> Option<&[NameRule]> {
        self.by_id.get(&id).map(|i| i.rules.as_slice())
    }
}

/// The upstream resolvers of the host: the `nameserver` lines of resolv.conf.
#[must_use]
pub fn host_upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, zt_agent_common::DNS_PORT))
        .collect()
}

/// The resolver's sockets, bound before the programs attach so that the first
/// redirected query finds them.
pub struct Listeners {
    pub port: u16,
    udp: Vec<(std::net::UdpSocket, u8)>,
    tcp: Vec<(std::net::TcpListener, u8)>,
}

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Bind UDP and TCP on 127.0.0.1:`port`, and on [::1]:`port` where the host has IPv6.
/// Port 0 picks a free privileged port, the same for all four sockets (for tests, which
/// run several daemons side by side).
///
/// # Errors
/// A port that any user could listen on while the daemon is down (at or above
/// `net.ipv4.ip_unprivileged_port_start`), port 53, or sockets that cannot be bound.
pub fn bind(port: u16) -> io::Result<Listeners> {
    let unprivileged = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u16>().ok())
        .unwrap_or(1024);
    if port == zt_agent_common::DNS_PORT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--dns-port 53: the kernel redirects port 53 to the resolver; pick another port",
        ));
    }
    if port >= unprivileged {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--dns-port {port}: any user may listen on ports from {unprivileged} (net.ipv4.ip_unprivileged_port_start) while the daemon is down and receive enrolled tasks' DNS; pick a port below {unprivileged}"
            ),
        ));
    }
    if port != 0 {
        return bind_once(port);
    }
    let mut last = None;
    for _ in 0..64 {
        // Above the well-known services, below the unprivileged range.
        let p = rand::random_range(600..unprivileged.clamp(601, 1024));
        if p == zt_agent_common::DNS_PORT {
            continue;
        }
        match bind_once(p) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free privileged port")))
}

fn bind_once(port: u16) -> io::Result<Listeners> {
    let ctx =
        |e: io::Error, a: SocketAddr| io::Error::new(e.kind(), format!("DNS resolver on {a}: {e}"));
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let udp4 = std::net::UdpSocket::bind(v4).map_err(|e| ctx(e, v4))?;
    let tcp4 = std::net::TcpListener::bind(v4).map_err(|e| ctx(e, v4))?;
    let mut l = Listeners {
        port,
        udp: vec![(udp4, AF_INET)],
        tcp: vec![(tcp4, AF_INET)],
    };
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
    let no_v6 = !std::path::Path::new("/proc/net/if_inet6").exists();
    match (
        std::net::UdpSocket::bind(v6),
        std::net::TcpListener::bind(v6),
    ) {
        (Ok(u), Ok(t)) => {
            l.udp.push((u, AF_INET6));
            l.tcp.push((t, AF_INET6));
        }
        (Err(e), _) | (_, Err(e)) if no_v6 || e.kind() == io::ErrorKind::AddrNotAvailable => {
            tracing::warn!(error = %e, "no IPv6 loopback: the resolver listens on 127.0.0.1 only, and DNS over IPv6 sockets fails");
        }
        (Err(e), _) | (_, Err(e)) => return Err(ctx(e, v6)),
    }
    for (s, _) in &l.udp {
        s.set_nonblocking(true)?;
        deep_receive_queue(s);
    }
    for (s, _) in &l.tcp {
        s.set_nonblocking(true)?;
    }
    Ok(l)
}

/// Receive queue of each UDP socket: a burst from one workload queues behind it rather
/// than push other identities' queries out of a small default queue.
const UDP_RECEIVE_QUEUE: libc::c_int = 8 << 20;

fn deep_receive_queue(s: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let size = UDP_RECEIVE_QUEUE;
    // SAFETY: setting an int option on a socket we own. SO_RCVBUFFORCE (root) goes past
    // net.core.rmem_max; where it fails the default stays.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// DNS events waiting to be written; past this, they are counted lost.
const EVENT_BACKLOG: usize = 16_384;
/// (identity, query name, query type).
type CacheKey = (u32, String, u16);

/// Queries an upstream socket carries before it is replaced by one on a new port.
const UPSTREAM_SOCKET_USES: u32 = 64;
/// A TCP client that takes longer than this to send a whole query (or to take its
/// answer) is closed, as is one that sends nothing for this long.
const TCP_IDLE: Duration = Duration::from_secs(5);

pub struct Resolver {
    settings: Settings,
    policy: RwLock<Arc<DnsPolicy>>,
    learned: Mutex<(Learned, BpfHashMap<MapData, DnsAllowKey, DnsAllowValue>)>,
    clients: BpfHashMap<MapData, DnsClientKey, DnsClient>,
    metrics: DnsMetrics,
    /// Each identity's TCP connections and queries in flight.
    shares: Shares,
    /// The host's own addresses, and the generation of them the learned entries were
    /// last checked against.
    host: HostAddrs,
    host_checked: AtomicU64,
    bus: Bus,
    /// Answers kept per identity and question, for their TTL: repeated lookups skip
    /// the upstream round trip. Per identity, so that no identity learns from timing
    /// what another one asked.
    cache: Mutex<HashMap<CacheKey, (Message, Instant, u32)>>,
    /// Events on their way to the builder on the daemon's runtime, which reads the
    /// task's facts from /proc off the resolver's thread.
    pending: tokio::sync::mpsc::Sender<PendingEvent>,
    /// Upstream sockets between queries: (upstream, socket, queries it carried).
    idle_upstream: Mutex<Vec<(SocketAddr, UdpSocket, u32)>>,
    /// The grant manager: names open through grants and windows, and `ask` rules.
    grants: OnceLock<GrantsHandle>,
}

/// What one pass over a query came to.
enum Handled {
    Reply(Option<Vec<u8>>),
    /// Only an `ask` rule covers the name: hold the query for a decision.
    Ask {
        rule: usize,
        qname: String,
        refused: Vec<u8>,
        qtype: String,
    },
}

/// The name rules of one query beyond the identity's own: grants and open windows
/// that take in the asking task, then `ask` rules.
struct Dynamic {
    allowances: Vec<NameAllowance>,
    asks: Vec<AskNames>,
}

/// A DNS event before the task's facts are read.
struct PendingEvent {
    verdict: &'static str,
    identity: String,
    reason: &'static str,
    tgid: u32,
    proto: &'static str,
    detail: DnsDetail,
}

/// The builder of DNS events, on the daemon's runtime: it reads the task's facts from
/// /proc off the resolver's thread and publishes the events.
pub struct DnsEvents {
    rx: tokio::sync::mpsc::Receiver<PendingEvent>,
    bus: Bus,
}

impl DnsEvents {
    /// Publish every event the resolver queues, until it is gone.
    pub async fn run(&mut self) {
        while let Some(p) = self.rx.recv().await {
            let task = if p.tgid == 0 {
                TaskFacts::default()
            } else {
                TaskFacts::read(p.tgid)
            };
            self.bus
                .publish(bus::Event::now(Body::Dns(Box::new(DnsEvent {
                    verdict: p.verdict,
                    identity: p.identity,
                    reason: p.reason,
                    tgid: p.tgid,
                    protocol: p.proto,
                    detail: p.detail,
                    task,
                }))));
        }
    }
}

/// A socket of the resolver and its address family.
pub struct Bound<S> {
    pub sock: Arc<S>,
    pub family: u8,
}

impl<S> Clone for Bound<S> {
    fn clone(&self) -> Self {
        Self {
            sock: self.sock.clone(),
            family: self.family,
        }
    }
}

impl<S> Bound<S> {
    #[must_use]
    pub const fn ipv6(&self) -> bool {
        self.family == AF_INET6
    }
}

/// The resolver's sockets, registered with the runtime of its thread, where the daemon
/// runs each of them as a part.
pub struct Serving {
    pub runtime: tokio::runtime::Handle,
    pub udp: Vec<Bound<UdpSocket>>,
    pub tcp: Vec<Bound<TcpListener>>,
}

impl Resolver {
    #[must_use]
    pub fn new(
        settings: Settings,
        mut allow: BpfHashMap<MapData, DnsAllowKey, DnsAllowValue>,
        clients: BpfHashMap<MapData, DnsClientKey, DnsClient>,
        metrics: DnsMetrics,
        bus: Bus,
    ) -> (Self, DnsEvents) {
        let (pending, rx) = tokio::sync::mpsc::channel::<PendingEvent>(EVENT_BACKLOG);
        let events = DnsEvents {
            rx,
            bus: bus.clone(),
        };
        // Nothing says why entries left by an earlier daemon were made, or under which
        // policy: start from none. Tasks resolve again.
        let flushed = Learned::flush(&mut allow);
        if flushed > 0 {
            tracing::info!(
                flushed,
                "dropped addresses an earlier daemon learned from DNS"
            );
        }
        let host = HostAddrs::follow();
        let me = Self {
            learned: Mutex::new((Learned::new(settings.per_identity), allow)),
            settings,
            policy: RwLock::new(Arc::new(DnsPolicy::default())),
            clients,
            metrics,
            shares: Shares::default(),
            host_checked: AtomicU64::new(host.generation()),
            host,
            bus,
            idle_upstream: Mutex::new(Vec::new()),
            pending,
            cache: Mutex::new(HashMap::new()),
            grants: OnceLock::new(),
        };
        (me, events)
    }

    /// Answer names through grants, windows and `ask` rules from now on.
    pub fn set_grants(&self, h: GrantsHandle) {
        let _ = self.grants.set(h);
    }

    /// The grants and windows whose names `client` may resolve now, and the `ask`
    /// rules of its identity (none in audit mode, where nothing is held).
    fn dynamic(&self, client: DnsClient, audit: bool) -> Dynamic {
        let none = Dynamic {
            allowances: Vec::new(),
            asks: Vec::new(),
        };
        let Some(g) = self.grants.get() else {
            return none;
        };
        let view = g.view.borrow().clone();
        let Some(names) = view.by_id.get(&client.identity) else {
            return none;
        };
        let now = boot_ns();
        let mut task: Option<TaskScope> = None;
        let allowances = names
            .allowances
            .iter()
            .filter(|a| a.deadline_ns > now)
            .filter(|a| {
                let t = task.get_or_insert_with(|| TaskScope::read(client.tgid));
                a.scope.takes_in(t)
            })
            .cloned()
            .collect();
        Dynamic {
            allowances,
            asks: if audit {
                Vec::new()
            } else {
                names.asks.clone()
            },
        }
    }

    /// Hold a query under `ask`: raise or join the request, and wait for a decision
    /// for at most the hold. `Ok(())` once approved; the reason to refuse otherwise.
    async fn hold(&self, client: DnsClient, name: &str, rule: usize) -> Result<(), &'static str> {
        let Some(g) = self.grants.get() else {
            return Err("ask_denied");
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let call = DnsCall::Ask {
            identity: client.identity,
            tgid: client.tgid,
            name: name.to_owned(),
            rule,
            reply,
        };
        if g.dns.send(call).await.is_err() {
            return Err("ask_denied");
        }
        match tokio::time::timeout(g.ask_hold, rx).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err("ask_denied"),
            Err(_) => Err("ask_timed_out"),
        }
    }

    /// Install addresses an answer gave under a grant or window, through the manager,
    /// before the answer goes out.
    async fn learn_dynamic(&self, client: DnsClient, a: &NameAllowance, addrs: Vec<(IpAddr, u32)>) {
        let Some(g) = self.grants.get() else { return };
        let now = boot_ns();
        let grace = u64::try_from(self.settings.grace.as_nanos()).unwrap_or(u64::MAX);
        for (addr, ttl) in addrs {
            let deadline_ns = now
                .saturating_add(u64::from(ttl).saturating_mul(1_000_000_000))
                .saturating_add(grace)
                .min(a.deadline_ns);
            let (reply, rx) = tokio::sync::oneshot::channel();
            let call = DnsCall::Learn {
                identity: client.identity,
                addrs: vec![addr],
                ranges: a.ranges.clone(),
                scope: a.scope.clone(),
                source: a.source.clone(),
                deadline_ns,
                reply,
            };
            if g.dns.send(call).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
            }
        }
    }

    #[must_use]
    pub const fn port(&self) -> u16 {
        self.settings.port
    }

    /// Learned addresses held, all identities together.
    #[must_use]
    pub fn installed(&self) -> usize {
        self.learned.lock().map(|l| l.0.len()).unwrap_or(0)
    }

    /// Judge by a new policy from now on, and rebuild what earlier answers installed.
    pub fn set_policy(&self, p: DnsPolicy) {
        let p = Arc::new(p);
        if let Ok(mut cur) = self.policy.write() {
            *cur = p.clone();
        }
        if let Ok(mut l) = self.learned.lock() {
            let (table, map) = &mut *l;
            table.set_sharers(p.by_id.values().filter(|i| !i.rules.is_empty()).count());
            table.refresh(map, p.as_ref(), boot_ns(), true);
        }
        self.update_gauges();
    }

    /// Free what has lapsed (the kernel already ignores it), read the host's addresses
    /// again and close what an answer opened on an address that is now the host's, and
    /// refresh the gauges.
    pub fn tick(&self) {
        let p = self.policy.read().map(|p| p.clone()).unwrap_or_default();
        self.host.refresh();
        let generation = self.host.generation();
        let host = (self.host_checked.swap(generation, Ordering::AcqRel) != generation)
            .then(|| self.host.get());
        if let Ok(mut l) = self.learned.lock() {
            let (table, map) = &mut *l;
            if let Some(host) = host {
                let n = table.forget(map, |a| host.binary_search(&a).is_ok());
                if n > 0 {
                    tracing::info!(
                        n,
                        "closed addresses answers had opened that are now the host's own"
                    );
                }
            }
            table.refresh(map, p.as_ref(), boot_ns(), false);
        }
        self.update_gauges();
    }

    /// Set the per-identity gauges (on every tick and every scrape).
    pub fn update_gauges(&self) {
        let p = self.policy.read().map(|p| p.clone()).unwrap_or_default();
        let Ok(l) = self.learned.lock() else { return };
        let counts = l.0.counts();
        self.metrics.installed.reset();
        for (id, ident) in &p.by_id {
            self.metrics
                .installed
                .with_label_values(&[ident.name.as_str()])
                .set(i64::try_from(counts.get(id).copied().unwrap_or(0)).unwrap_or(i64::MAX));
        }
        let evicted = l.0.evicted;
        let seen = self.metrics.evicted.get();
        if evicted > seen {
            self.metrics.evicted.inc_by(evicted - seen);
        }
    }

    /// Start the resolver's thread and register `listeners` with its runtime; the
    /// daemon then serves each socket there ([`Self::serve_udp`], [`Self::serve_tcp`]).
    ///
    /// The resolver runs on a thread of its own with a single-threaded runtime: a query
    /// then never waits for a wake-up on another worker thread, which costs more than the
    /// query's own work.
    pub fn serve(listeners: Listeners) -> io::Result<Serving> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (udp, tcp) = {
            let _in_rt = rt.enter();
            let udp = listeners
                .udp
                .into_iter()
                .map(|(s, family)| {
                    Ok(Bound {
                        sock: Arc::new(UdpSocket::from_std(s)?),
                        family,
                    })
                })
                .collect::<io::Result<Vec<_>>>()?;
            let tcp = listeners
                .tcp
                .into_iter()
                .map(|(l, family)| {
                    Ok(Bound {
                        sock: Arc::new(TcpListener::from_std(l)?),
                        family,
                    })
                })
                .collect::<io::Result<Vec<_>>>()?;
            (udp, tcp)
        };
        let runtime = rt.handle().clone();
        std::thread::Builder::new()
            .name("zt-dns".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        Ok(Serving { runtime, udp, tcp })
    }

    fn client(&self, family: u8, protocol: u8, peer: SocketAddr) -> DnsClient {
        let mut addr = [0u8; 16];
        match peer.ip() {
            IpAddr::V4(a) => addr[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => addr = a.octets(),
        }
        let key = DnsClientKey {
            addr,
            port: peer.port(),
            family,
            protocol,
        };
        self.clients.get(&key, 0).unwrap_or(DnsClient {
            identity: 0,
            tgid: 0,
        })
    }

    /// A place for one query of `identity`, or `None` when its share is used up.
    fn admit(&self, identity: u32) -> Option<Query> {
        self.shares.query(identity)
    }

    fn dropped(&self, identity: u32) {
        let p = self.policy.read().map(|p| p.clone()).unwrap_or_default();
        let label = p
            .by_id
            .get(&identity)
            .map_or("unenrolled", |i| i.name.as_str());
        self.metrics
            .queries
            .with_label_values(&[label, Outcome::Dropped.as_str()])
            .inc();
    }

    /// Serve queries on one UDP socket. Returns only on a panic of its own.
    pub async fn serve_udp(self: Arc<Self>, b: Bound<UdpSocket>) -> Result<(), String> {
        let mut buf = vec![0u8; 65535];
        let mut backoff = crate::sys::backoff::Backoff::default();
        loop {
            let (n, peer) = match b.sock.recv_from(&mut buf).await {
                Ok(x) => {
                    backoff.reset();
                    x
                }
                Err(e) => {
                    tracing::debug!(error = %e, "DNS resolver: receive failed");
                    tokio::time::sleep(backoff.pause()).await;
                    continue;
                }
            };
            // Read the record now: it is the sender of this very datagram.
            let client = self.client(b.family, IPPROTO_UDP, peer);
            let Some(admission) = self.admit(client.identity) else {
                self.dropped(client.identity);
                continue;
            };
            let bytes = buf[..n].to_vec();
            let me = self.clone();
            let sock = b.sock.clone();
            tokio::spawn(async move {
                let _admission = admission;
                if let Some(reply) = me.handle(&bytes, client, true).await {
                    let _ = sock.send_to(&reply, peer).await;
                }
            });
        }
    }

    /// Accept TCP connections on one listener. Returns only on a panic of its own.
    pub async fn serve_tcp(self: Arc<Self>, b: Bound<TcpListener>) -> Result<(), String> {
        let mut backoff = crate::sys::backoff::Backoff::default();
        loop {
            let (stream, peer) = match b.sock.accept().await {
                Ok(x) => {
                    backoff.reset();
                    x
                }
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "DNS resolver: accept failed");
                    tokio::time::sleep(backoff.pause()).await;
                    continue;
                }
            };
            let client = self.client(b.family, IPPROTO_TCP, peer);
            if client.identity == 0 {
                // Not a connection the kernel redirected.
                self.dropped(0);
                continue;
            }
            // Always taken: room is made from the identity's own oldest connection, or
            // from the identity holding the most.
            let Some(conn) = self.shares.connect(client.identity) else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = me.serve_conn(stream, client) => {}
                    () = conn.evicted.notified() => {}
                }
                drop(conn);
            });
        }
    }

    async fn serve_conn(self: Arc<Self>, mut stream: TcpStream, client: DnsClient) {
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let Some(admission) = self.admit(client.identity) else {
                self.dropped(client.identity);
                return;
            };
            let reply = self.handle(&msg, client, false).await;
            drop(admission);
            let Some(reply) = reply else { return };
            let Ok(n) = u16::try_from(reply.len()) else {
                return;
            };
            let mut out = n.to_be_bytes().to_vec();
            out.extend_from_slice(&reply);
            match tokio::time::timeout(TCP_IDLE, stream.write_all(&out)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// Judge one query and produce the reply, if any. A name only an `ask` rule
    /// covers is held until a human decides (or the hold ends), then answered or
    /// refused.
    pub async fn handle(&self, bytes: &[u8], client: DnsClient, udp: bool) -> Option<Vec<u8>> {
        let (rule, qname, refused, qtype) = match self.handle_once(bytes, client, udp, true).await {
            Handled::Reply(r) => return r,
            Handled::Ask {
                rule,
                qname,
                refused,
                qtype,
            } => (rule, qname, refused, qtype),
        };
        let start = Instant::now();
        match self.hold(client, &qname, rule).await {
            Ok(()) => match self.handle_once(bytes, client, udp, false).await {
                Handled::Reply(r) => r,
                Handled::Ask { refused, .. } => Some(refused),
            },
            Err(why) => {
                let policy = self.policy.read().map(|p| p.clone()).unwrap_or_default();
                let label = policy
                    .by_id
                    .get(&client.identity)
                    .map_or("unenrolled", |i| i.name.as_str())
                    .to_owned();
                let outcome = Outcome::Refused;
                self.metrics
                    .queries
                    .with_label_values(&[label.as_str(), outcome.as_str()])
                    .inc();
                self.metrics
                    .latency
                    .with_label_values(&[outcome.as_str()])
                    .observe(start.elapsed().as_secs_f64());
                self.event(
                    "deny",
                    &label,
                    why,
                    client.tgid,
                    if udp { "udp" } else { "tcp" },
                    DnsDetail {
                        query: Some(qname),
                        qtype: Some(qtype),
                        rcode: rcode_name(ResponseCode::Refused),
                        answers: Vec::new(),
                        installed: Vec::new(),
                        withheld: Vec::new(),
                    },
                );
                Some(refused)
            }
        }
    }

    async fn handle_once(
        &self,
        bytes: &[u8],
        client: DnsClient,
        udp: bool,
        may_hold: bool,
    ) -> Handled {
        let start = Instant::now();
        let policy = self.policy.read().map(|p| p.clone()).unwrap_or_default();
        let ident = policy.by_id.get(&client.identity);
        let host = self.host.get();
        let own = ident.map_or(&[][..], |i| i.rules.as_slice());
        let dynamic = self.dynamic(client, ident.is_some_and(|i| i.audit));
        // The identity's own rules, then grants and windows, then `ask` rules.
        let n_own = own.len();
        let n_allowed = n_own + dynamic.allowances.len();
        // Most queries have no grant, window or `ask` rule to add: then the identity's
        // own rules are used as they are, with no copy per query.
        let rules: std::borrow::Cow<'_, [NameRule]> =
            if dynamic.allowances.is_empty() && dynamic.asks.is_empty() {
                std::borrow::Cow::Borrowed(own)
            } else {
                let mut v = own.to_vec();
                v.extend(dynamic.allowances.iter().map(|a| NameRule {
                    names: a.names.clone(),
                    ranges: a.ranges.clone(),
                }));
                v.extend(dynamic.asks.iter().map(|a| NameRule {
                    names: a.names.clone(),
                    ranges: Vec::new(),
                }));
                std::borrow::Cow::Owned(v)
            };
        let asker = Asker {
            identity: ident.map(|i| i.name.as_str()),
            audit: ident.is_some_and(|i| i.audit),
            rules: &rules,
            nets: ident.map_or(&[], |i| i.nets.as_slice()),
            host: &host,
        };
        let label = ident.map_or("unenrolled", |i| i.name.as_str());
        let proto = if udp { "udp" } else { "tcp" };
        let done = |outcome: Outcome| {
            self.metrics
                .queries
                .with_label_values(&[label, outcome.as_str()])
                .inc();
            self.metrics
                .latency
                .with_label_values(&[outcome.as_str()])
                .observe(start.elapsed().as_secs_f64());
        };
        let upstream_id: u16 = rand::random();
        let fwd = match message::query(bytes, &asker, upstream_id) {
            Decision::Drop => {
                done(Outcome::Malformed);
                return Handled::Reply(None);
            }
            Decision::Reply {
                reply,
                outcome,
                qname,
                qtype,
                why,
            } => {
                done(outcome);
                if outcome == Outcome::Refused {
                    self.event(
                        "deny",
                        label,
                        why,
                        client.tgid,
                        proto,
                        DnsDetail {
                            query: qname,
                            qtype: qtype.map(|t| t.to_string()),
                            rcode: rcode_name(ResponseCode::Refused),
                            answers: Vec::new(),
                            installed: Vec::new(),
                            withheld: Vec::new(),
                        },
                    );
                }
                return Handled::Reply(Some(reply));
            }
            Decision::Forward(f) => f,
        };
        let own_hit = fwd.rules.iter().any(|i| *i < n_own);
        let granted: Vec<&NameAllowance> = fwd
            .rules
            .iter()
            .filter(|i| (n_own..n_allowed).contains(*i))
            .map(|i| &dynamic.allowances[i - n_own])
            .collect();
        if fwd.outcome == Outcome::Allowed && !own_hit && granted.is_empty() {
            // Only `ask` rules cover it.
            let rule = fwd
                .rules
                .iter()
                .find(|i| **i >= n_allowed)
                .map(|i| dynamic.asks[i - n_allowed].rule);
            let refused = message::refused(&fwd);
            return match rule {
                Some(rule) if may_hold => Handled::Ask {
                    rule,
                    qname: fwd.qname.clone(),
                    refused,
                    qtype: fwd.qtype.to_string(),
                },
                _ => Handled::Reply(Some(refused)),
            };
        }
        let max_reply = if udp {
            message::udp_limit(&fwd.client)
        } else {
            usize::from(u16::MAX)
        };
        let limits = Limits {
            max_ttl: self.settings.max_ttl,
        };
        let key = (client.identity, fwd.qname.clone(), u16::from(fwd.qtype));
        let answered = match self.cached(&key, fwd.upstream_id) {
            // Kept decoded: no encoding and decoding again on the common path.
            Some(m) => message::answer_message(&fwd, &m, &asker, limits, max_reply).ok(),
            None => {
                let bytes = self.exchange(&fwd, udp).await;
                let answered = bytes
                    .as_deref()
                    .and_then(|b| message::answer(&fwd, b, &asker, limits, max_reply).ok());
                if answered.is_some()
                    && let Some(b) = &bytes
                {
                    self.keep(key, b, limits);
                }
                answered
            }
        };
        let Some(ans) = answered else {
            done(Outcome::UpstreamError);
            return Handled::Reply(Some(message::servfail(&fwd)));
        };
        let mut installed = Vec::new();
        for a in &granted {
            let addrs: Vec<(IpAddr, u32)> = ans.learned.iter().map(|l| (l.addr, l.ttl)).collect();
            self.learn_dynamic(client, a, addrs).await;
            installed.extend(ans.learned.iter().map(|l| {
                format!(
                    "{} ttl={} ({})",
                    l.addr,
                    l.ttl,
                    match &a.source {
                        crate::grants::view::Source::Grant(id) => format!("grant {id}"),
                        crate::grants::view::Source::Window(_) => "window".to_owned(),
                    }
                )
            }));
        }
        if fwd.outcome == Outcome::Allowed && own_hit {
            let now = boot_ns();
            let grace = u64::try_from(self.settings.grace.as_nanos()).unwrap_or(u64::MAX);
            if let Ok(mut l) = self.learned.lock() {
                // The rules in force now: a reload during the upstream round trip must
                // not be undone by an answer to a query judged before it.
                let current = self.policy.read().map(|p| p.clone()).unwrap_or_default();
                let (table, map) = &mut *l;
                if let Some(ident) = current.by_id.get(&client.identity) {
                    for learned in &ans.learned {
                        let deadline = now
                            .saturating_add(u64::from(learned.ttl).saturating_mul(1_000_000_000))
                            .saturating_add(grace);
                        let answered = Answered {
                            identity: client.identity,
                            name: &fwd.qname,
                            addr: learned.addr,
                            deadline,
                        };
                        match table.install(map, &ident.rules, answered, now) {
                            Ok(()) => {
                                installed.push(format!("{} ttl={}", learned.addr, learned.ttl))
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, addr = %learned.addr, identity = label, "could not install a learned address");
                            }
                        }
                    }
                }
            }
        }
        done(fwd.outcome);
        let verdict = if fwd.outcome == Outcome::Audited {
            "audit"
        } else {
            "allow"
        };
        self.event(
            verdict,
            label,
            fwd.why,
            client.tgid,
            proto,
            DnsDetail {
                query: Some(fwd.qname.clone()),
                qtype: Some(fwd.qtype.to_string()),
                rcode: rcode_name(ans.rcode),
                answers: ans.learned.iter().map(|l| l.addr.to_string()).collect(),
                installed,
                withheld: ans.withheld.iter().map(ToString::to_string).collect(),
            },
        );
        Handled::Reply(Some(ans.reply))
    }

    fn event(
        &self,
        verdict: &'static str,
        identity: &str,
        reason: &'static str,
        tgid: u32,
        proto: &'static str,
        detail: DnsDetail,
    ) {
        let cause = Cause {
            identity,
            kind: "dns",
            verdict,
            reason,
        };
        if !self.bus.admit(cause) {
            return;
        }
        let pending = PendingEvent {
            verdict,
            identity: identity.to_owned(),
            reason,
            tgid,
            proto,
            detail,
        };
        // Bounded: a flood of queries never grows the daemon without limit; what does
        // not fit is counted.
        if self.pending.try_send(pending).is_err() {
            self.metrics
                .events_lost
                .with_label_values(&["dns_backlog"])
                .inc();
        }
    }

    /// One UDP exchange with `up`. Sockets are connected to their upstream (the kernel
    /// drops datagrams from anywhere else), reused for a few queries and then replaced,
    /// so source ports keep changing; a reply must carry the query's random id.
    async fn udp_exchange(&self, up: SocketAddr, query: &[u8], id: u16) -> io::Result<Vec<u8>> {
        let pooled = self.idle_upstream.lock().ok().and_then(|mut v| {
            v.iter()
                .position(|(a, _, _)| *a == up)
                .map(|i| v.swap_remove(i))
        });
        let (sock, uses) = match pooled {
            Some((_, s, u)) => (s, u),
            None => {
                let local = match up {
                    SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                    SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
                };
                let s = UdpSocket::bind(local).await?;
                s.connect(up).await?;
                (s, 0)
            }
        };
        sock.send(query).await?;
        // We ask for answers of at most UDP_PAYLOAD bytes; a longer one is cut, fails
        // to parse and is treated as a failure.
        let mut buf = vec![0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).await?;
            // Anything else is a late answer to a query that timed out on this socket.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                buf.truncate(n);
                if uses + 1 < UPSTREAM_SOCKET_USES
                    && let Ok(mut v) = self.idle_upstream.lock()
                    && v.len() < shares::IN_FLIGHT
                {
                    v.push((up, sock, uses + 1));
                }
                return Ok(buf);
            }
        }
    }

    /// A kept answer for this identity's question, aged and addressed to `id`.
    fn cached(&self, key: &CacheKey, id: u16) -> Option<Message> {
        let mut c = self.cache.lock().ok()?;
        let (m, stored, ttl) = c.get(key)?;
        let age = u32::try_from(stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if age >= *ttl {
            c.remove(key);
            return None;
        }
        Some(message::aged(m, id, age))
    }

    fn keep(&self, key: CacheKey, bytes: &[u8], limits: Limits) {
        let Some((m, ttl)) = message::cacheable(bytes, limits) else {
            return;
        };
        let entries = self.settings.cache_entries;
        if entries == 0 {
            return;
        }
        let Ok(mut c) = self.cache.lock() else { return };
        if c.len() >= entries {
            c.retain(|_, (_, stored, ttl)| stored.elapsed().as_secs() < u64::from(*ttl));
            if c.len() >= entries {
                c.clear();
            }
        }
        c.insert(key, (m, Instant::now(), ttl));
    }

    /// Ask the upstream resolvers in turn; `None` when none answers in time.
    async fn exchange(&self, fwd: &Forward, udp: bool) -> Option<Vec<u8>> {
        for up in &self.settings.upstreams {
            let got = tokio::time::timeout(self.settings.timeout, async {
                if udp {
                    match self.udp_exchange(*up, &fwd.upstream, fwd.upstream_id).await {
                        // Truncated: the whole answer comes over TCP.
                        Ok(r) if r.get(2).is_some_and(|f| f & 0x02 != 0) => {
                            tcp_exchange(*up, &fwd.upstream).await
                        }
                        other => other,
                    }
                } else {
                    tcp_exchange(*up, &fwd.upstream).await
                }
            })
            .await;
            match got {
                Ok(Ok(r)) => return Some(r),
                Ok(Err(e)) => tracing::debug!(upstream = %up, error = %e, "upstream failed"),
                Err(_) => tracing::debug!(upstream = %up, "upstream timed out"),
            }
        }
        None
    }
}

/// NOERROR, NXDOMAIN, REFUSED, ...: the names operators know from dig.
fn rcode_name(code: ResponseCode) -> String {
    format!("{code:?}").to_ascii_uppercase()
}

async fn tcp_exchange(up: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    let n = u16::try_from(query.len()).map_err(|_| io::Error::other("query too long"))?;
    let mut out = n.to_be_bytes().to_vec();
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).await?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_nameserver_lines() {
        let conf = "# comment\nsearch example.com\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\noptions edns0\nnameserver bogus\n";
        let got: Vec<String> = host_upstreams(conf)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            ["10.255.255.53:53", "[fe80::1]:53", "[2001:db8::53]:53"]
        );
    }
}
