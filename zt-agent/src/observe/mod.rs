//! Observation: what each enrolled identity did, kept for learning and review.
//!
//! The event pump hands the observer every connect, datagram and exec record the
//! kernel reports, whatever the event budgets (`--events-rate`), and it turns them into
//! flows and execs; a destination reached through an address the identity got from the
//! resolver is stored with that DNS name, learned from the `dns` events on the bus. It
//! writes to `store` once a second, in one transaction, off the hot path, and prunes
//! the store every minute.

pub mod review;
pub mod store;
pub mod suggest;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use zt_agent_common::EventKind;

use crate::bus::{Body, Event};
use crate::events::{DnsEvent, decode};
use crate::metrics::observe::ObserveMetrics;
use crate::state::State;
pub use store::{Bounds, Bytes, Exec, Flow, Moved, ObserveError, Seen, Store};

/// The bus queue of the observer.
pub const BACKLOG: usize = 4096;
/// The queue of records the pump hands over.
pub const RAW_BACKLOG: usize = 16_384;

/// A kernel record as the pump hands it over: with what /proc and the file showed when
/// the record was also reported as an event, without when the budgets held it back.
#[derive(Clone, Debug)]
pub struct Observed {
    pub raw: zt_agent_common::Event,
    pub exe: Option<String>,
    pub sha256: Option<String>,
}
/// Distinct flows or execs one identity may add between two writes; past it its new
/// ones are dropped and counted (repeats of those it has are still counted), so one
/// that sprays destinations fills only its own part.
const PENDING_PER_IDENTITY: usize = 4096;
/// (identity, address) -> name pairs remembered from answers.
const NAMES_MAX: usize = 16_384;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: u32 = 60;

/// The DNS names identities got addresses from, most recent answer winning.
#[derive(Default)]
struct Names(HashMap<(String, IpAddr), String>);

impl Names {
    fn learn(&mut self, d: &DnsEvent) {
        let Some(name) = &d.detail.query else { return };
        if self.0.len() >= NAMES_MAX {
            // Forget everything rather than track age: a later answer teaches it again.
            self.0.clear();
        }
        for a in &d.detail.answers {
            if let Ok(ip) = a.parse::<IpAddr>() {
                self.0.insert((d.identity.clone(), ip), name.clone());
            }
        }
    }

    fn of(&self, identity: &str, ip: IpAddr) -> Option<String> {
        self.0.get(&(identity.to_owned(), ip)).cloned()
    }
}

/// The binary each recent thread group runs: the file its exec record named, else what
/// /proc showed the first time one of its records came (a task that is gone by then
/// has none).
#[derive(Default)]
struct Binaries(HashMap<u32, Option<String>>);

impl Binaries {
    fn ran(&mut self, tgid: u32, file: &str) {
        if self.0.len() >= NAMES_MAX {
            self.0.clear();
        }
        self.0.insert(tgid, Some(file.to_owned()));
    }

    fn of(&mut self, tgid: u32) -> Option<String> {
        if let Some(b) = self.0.get(&tgid) {
            return b.clone();
        }
        let exe = std::fs::read_link(format!("/proc/{tgid}/exe"))
            .ok()
            .map(|p| p.display().to_string());
        if self.0.len() >= NAMES_MAX {
            self.0.clear();
        }
        self.0.insert(tgid, exe.clone());
        exe
    }
}

/// What was seen since the last write, counted per key: a flood of one flow is one
/// row to write.
struct Pending<K> {
    counts: HashMap<K, u64>,
    /// Distinct keys per identity.
    keys: HashMap<String, usize>,
}

impl<K> Default for Pending<K> {
    fn default() -> Self {
        Self {
            counts: HashMap::new(),
            keys: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Pending<K> {
    /// Count `k` of `identity`; `false` when it is new and the identity has no room.
    fn add(&mut self, identity: &str, k: K) -> bool {
        if let Some(n) = self.counts.get_mut(&k) {
            *n += 1;
            return true;
        }
        let used = self.keys.entry(identity.to_owned()).or_default();
        if *used >= PENDING_PER_IDENTITY {
            return false;
        }
        *used += 1;
        self.counts.insert(k, 1);
        true
    }

    fn take(&mut self) -> Vec<(K, u64)> {
        self.keys.clear();
        self.counts.drain().collect()
    }
}

pub struct Observer {
    store: Store,
    events: mpsc::Receiver<Arc<Event>>,
    /// Every connect, datagram and exec record, from the pump.
    raw: mpsc::Receiver<Observed>,
    /// What each flow sent and received, from the accountant.
    moved: mpsc::Receiver<crate::traffic::Moved>,
    bytes: HashMap<Bytes, (u64, u64)>,
    state: watch::Receiver<Arc<State>>,
    bounds: Bounds,
    metrics: ObserveMetrics,
    names: Names,
    binaries: Binaries,
    flows: Pending<Flow>,
    execs: Pending<Exec>,
}

fn now_ms() -> i64 {
    let t = time::OffsetDateTime::now_utc();
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The event's address as the identity used it: an IPv4-mapped IPv6 address as IPv4.
fn dest_ip(ev: &zt_agent_common::Event) -> Option<IpAddr> {
    match ev.family {
        2 => Some(IpAddr::from([
            ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
        ])),
        10 => {
            let a = std::net::Ipv6Addr::from(ev.addr);
            Some(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4))
        }
        _ => None,
    }
}

impl Observer {
    #[must_use]
    pub fn new(
        store: Store,
        events: mpsc::Receiver<Arc<Event>>,
        raw: mpsc::Receiver<Observed>,
        moved: mpsc::Receiver<crate::traffic::Moved>,
        state: watch::Receiver<Arc<State>>,
        bounds: Bounds,
        metrics: ObserveMetrics,
    ) -> Self {
        Self {
            store,
            events,
            raw,
            moved,
            bytes: HashMap::new(),
            state,
            bounds,
            metrics,
            names: Names::default(),
            binaries: Binaries::default(),
            flows: Pending::default(),
            execs: Pending::default(),
        }
    }

    /// Take events until the bus closes, writing each second.
    ///
    /// # Errors
    /// Never: a failed write is counted and its observations dropped.
    pub async fn run(&mut self) -> Result<(), String> {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(e) => self.take(&e),
                    None => {
                        self.flush();
                        return Ok(());
                    }
                },
                Some(o) = self.raw.recv() => self.record(o),
                Some(m) = self.moved.recv() => self.moved(&m),
                _ = tick.tick() => {
                    self.flush();
                    ticks += 1;
                    if ticks % PRUNE_EVERY == 1 {
                        self.prune();
                    }
                }
            }
        }
    }

    fn take(&mut self, e: &Event) {
        // Kernel records come from the pump, every one of them; the bus brings the names.
        if let Body::Dns(d) = &e.body {
            self.names.learn(d);
        }
    }

    /// One flow's bytes of the last second.
    fn moved(&mut self, m: &crate::traffic::Moved) {
        let identity = self.state.borrow().label_of(m.key.identity);
        let ip = m.peer();
        let key = Bytes {
            name: self.names.of(&identity, ip),
            identity,
            dest: ip.to_string(),
            port: m.key.port,
            protocol: match m.key.protocol {
                17 => "udp",
                _ => "tcp",
            },
        };
        // One entry per flow the kernel's table holds: bounded by its capacity.
        let e = self.bytes.entry(key).or_default();
        e.0 += m.tx;
        e.1 += m.rx;
    }

    /// One kernel record.
    fn record(&mut self, o: Observed) {
        let ev = &o.raw;
        let (Ok(kind), Ok(verdict)) = (
            EventKind::try_from(ev.kind),
            zt_agent_common::Verdict::try_from(ev.verdict),
        ) else {
            return;
        };
        let verdict = verdict.as_str();
        let identity = self.state.borrow().label_of(ev.identity);
        match kind {
            EventKind::Connect | EventKind::Sendmsg => {
                let Some(ip) = dest_ip(ev) else { return };
                let protocol = match ev.protocol {
                    6 => "tcp",
                    17 => "udp",
                    _ => return,
                };
                let flow = Flow {
                    name: self.names.of(&identity, ip),
                    identity: identity.clone(),
                    dest: ip.to_string(),
                    port: ev.port,
                    protocol,
                    binary: o.exe.clone().or_else(|| self.binaries.of(ev.tgid)),
                    verdict,
                };
                if !self.flows.add(&identity, flow) {
                    self.full();
                }
            }
            EventKind::Exec => {
                let file = decode::c_str(&ev.path);
                self.binaries.ran(ev.tgid, &file);
                let exec = Exec {
                    identity: identity.clone(),
                    file,
                    sha256: o.sha256.clone(),
                    verdict,
                };
                if !self.execs.add(&identity, exec) {
                    self.full();
                }
            }
            _ => {}
        }
    }

    fn full(&self) {
        self.metrics
            .dropped
            .with_label_values(&["queue_full"])
            .inc();
    }

    fn flush(&mut self) {
        if !self.bytes.is_empty() {
            let moved: Vec<(Bytes, u64, u64)> =
                self.bytes.drain().map(|(k, (t, r))| (k, t, r)).collect();
            let r = tokio::task::block_in_place(|| self.store.record_bytes(&moved, now_ms()));
            if let Err(e) = r {
                tracing::warn!(error = %e, "observation store: dropping this second's byte counts");
                self.metrics
                    .dropped
                    .with_label_values(&["store_failed"])
                    .inc_by(moved.len() as u64);
            }
        }
        let (flows, execs) = (self.flows.take(), self.execs.take());
        if flows.is_empty() && execs.is_empty() {
            return;
        }
        let r = tokio::task::block_in_place(|| self.store.record(&flows, &execs, now_ms()));
        if let Err(e) = r {
            tracing::warn!(error = %e, "observation store: dropping what was seen this second");
            self.metrics
                .dropped
                .with_label_values(&["store_failed"])
                .inc_by((flows.len() + execs.len()) as u64);
        }
        self.count_rows();
    }

    fn prune(&mut self) {
        match tokio::task::block_in_place(|| self.store.prune(self.bounds, now_ms())) {
            Ok((flows, execs)) => {
                self.metrics
                    .pruned
                    .with_label_values(&["flows"])
                    .inc_by(flows as u64);
                self.metrics
                    .pruned
                    .with_label_values(&["execs"])
                    .inc_by(execs as u64);
            }
            Err(e) => tracing::warn!(error = %e, "observation store: pruning failed"),
        }
        self.count_rows();
    }

    fn count_rows(&self) {
        if let Ok((flows, execs)) = self.store.rows() {
            let set = |t: &str, n: u64| {
                self.metrics
                    .rows
                    .with_label_values(&[t])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            };
            set("flows", flows);
            set("execs", execs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_identity_fills_only_its_own_part_of_what_waits() {
        let mut p: Pending<(String, usize)> = Pending::default();
        for i in 0..PENDING_PER_IDENTITY {
            assert!(p.add("spray", ("spray".into(), i)));
        }
        // No room for a new one of its own; repeats still count; others still fit.
        assert!(!p.add("spray", ("spray".into(), PENDING_PER_IDENTITY)));
        assert!(p.add("spray", ("spray".into(), 0)));
        assert!(p.add("calm", ("calm".into(), 0)));
        let taken = p.take();
        assert_eq!(taken.len(), PENDING_PER_IDENTITY + 1);
        assert!(taken.contains(&(("spray".into(), 0), 2)));
        // A write frees the parts.
        assert!(p.add("spray", ("spray".into(), PENDING_PER_IDENTITY)));
    }
}
