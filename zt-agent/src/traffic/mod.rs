//! Accounting and upload limits. The kernel adds every packet of an enrolled socket
//! to its identity's totals and to its flow (identity, peer, port, protocol); once a
//! second the accountant reads the flow table, turns what grew into sliding windows
//! per `spec.limits` entry, and marks in the kernel what went past a cap: the
//! identity (`STATE_LIMITED`) or the flow (`FLOW_FLAG_LIMITED`). From then on the
//! kernel denies new connects and sends (reason `limit_exceeded`) and drops packets
//! with payload, until the window slides back under the cap. Each crossing raises an
//! `anomaly` event. Identities in audit mode are reported, never limited.
//!
//! The first read after the daemon starts only takes note of what the table holds:
//! bytes sent while no daemon ran count in the totals, not in any window.

pub mod window;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use zt_agent_common::{
    FLOW_FLAG_LIMITED, FLOWS_CAPACITY, FlowBytes, FlowKey, RuntimeState, STATE_DEST_LIMITS,
    STATE_LIMITED,
};

use crate::bus::{self, Body, Bus};
use crate::ebpf::maps::TrafficMaps;
use crate::events::{AnomalyEvent, AnomalyEvidence};
use crate::metrics::TrafficMetrics;
use crate::policy::{Limit, LimitScope};
use crate::policy::{format_bytes, format_duration};
use crate::state::State;
pub use window::Window;

const EVERY: Duration = Duration::from_secs(1);
/// A flow unchanged this long leaves the kernel's table (its history is in the store).
const IDLE_SECS: u64 = 300;
/// ... or this long, once the table is three quarters full.
const IDLE_SECS_FULL: u64 = 30;
/// The queue of flow growth handed to the observer.
pub const MOVED_BACKLOG: usize = 16_384;

/// What one flow sent and received in the last second.
#[derive(Clone, Copy, Debug)]
pub struct Moved {
    pub key: FlowKey,
    pub tx: u64,
    pub rx: u64,
}

impl Moved {
    /// The peer as the identity addressed it.
    #[must_use]
    pub fn peer(&self) -> IpAddr {
        peer(&self.key)
    }
}

#[must_use]
pub fn peer(k: &FlowKey) -> IpAddr {
    if k.family == 2 {
        IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])
    } else {
        IpAddr::from(k.addr)
    }
}

#[derive(Clone, Copy)]
struct Seen {
    tx: u64,
    rx: u64,
    flags: u64,
    /// Second of the last growth.
    changed: u64,
}

pub struct Accountant {
    maps: TrafficMaps,
    state: watch::Receiver<Arc<State>>,
    bus: Bus,
    metrics: TrafficMetrics,
    observer: mpsc::Sender<Moved>,
    started: Instant,
    primed: bool,
    seen: HashMap<FlowKey, Seen>,
    /// Per identity and identity-scope limit.
    ids: HashMap<(u32, Limit), Window>,
    /// Per flow and destination-scope limit.
    flows: HashMap<(FlowKey, Limit), Window>,
    over_ids: HashSet<(u32, Limit)>,
    over_flows: HashSet<(FlowKey, Limit)>,
    /// The state flags last written per identity.
    written: HashMap<u32, u32>,
}

impl Accountant {
    #[must_use]
    pub fn new(
        maps: TrafficMaps,
        state: watch::Receiver<Arc<State>>,
        bus: Bus,
        metrics: TrafficMetrics,
        observer: mpsc::Sender<Moved>,
    ) -> Self {
        // What an earlier daemon marked stays until this one has judged it.
        let written = (0..zt_agent_common::MAX_IDENTITIES)
            .filter_map(|id| {
                let s = maps.state.get(&id, 0).ok()?;
                (s.flags != 0).then_some((id, s.flags))
            })
            .collect();
        Self {
            maps,
            state,
            bus,
            metrics,
            observer,
            started: Instant::now(),
            primed: false,
            seen: HashMap::new(),
            ids: HashMap::new(),
            flows: HashMap::new(),
            over_ids: HashSet::new(),
            over_flows: HashSet::new(),
            written,
        }
    }

    /// Read the flow table once a second; never returns.
    ///
    /// # Errors
    /// Never: a failed map access is logged and retried on the next second.
    pub async fn run(&mut self) -> Result<(), String> {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.started.elapsed().as_secs();
            self.tick(now);
        }
    }

    fn tick(&mut self, now: u64) {
        let flows: Vec<(FlowKey, FlowBytes)> =
            self.maps.flows.iter().filter_map(Result::ok).collect();
        let state = self.state.borrow().clone();
        let limits: HashMap<u32, (&str, bool, &[Limit])> = state
            .identities
            .iter()
            .map(|i| {
                (
                    i.id,
                    (i.name.as_str(), i.mode == "enforce", i.limits.as_slice()),
                )
            })
            .collect();
        for (k, v) in &flows {
            let prev = self.seen.get(k).copied();
            let (dtx, drx) = match prev {
                // The entry was removed and made again since the last read.
                Some(p) if v.tx_bytes < p.tx || v.rx_bytes < p.rx => (v.tx_bytes, v.rx_bytes),
                Some(p) => (v.tx_bytes - p.tx, v.rx_bytes - p.rx),
                None if !self.primed => (0, 0),
                None => (v.tx_bytes, v.rx_bytes),
            };
            let changed = if dtx > 0 || drx > 0 || prev.is_none() {
                now
            } else {
                prev.map_or(now, |p| p.changed)
            };
            self.seen.insert(
                *k,
                Seen {
                    tx: v.tx_bytes,
                    rx: v.rx_bytes,
                    flags: v.flags,
                    changed,
                },
            );
            if dtx == 0 && drx == 0 {
                continue;
            }
            let _ = self.observer.try_send(Moved {
                key: *k,
                tx: dtx,
                rx: drx,
            });
            let Some((_, _, ls)) = limits.get(&k.identity) else {
                continue;
            };
            for l in *ls {
                match l.scope {
                    LimitScope::Identity => self
                        .ids
                        .entry((k.identity, *l))
                        .or_insert_with(|| Window::new(l.per_secs))
                        .add(now, dtx),
                    LimitScope::Destination => self
                        .flows
                        .entry((*k, *l))
                        .or_insert_with(|| Window::new(l.per_secs))
                        .add(now, dtx),
                }
            }
        }
        self.primed = true;
        // Windows of limits the policy no longer has go.
        let keeps = |id: u32, l: &Limit| limits.get(&id).is_some_and(|(_, _, ls)| ls.contains(l));
        self.ids.retain(|(id, l), _| keeps(*id, l));
        self.flows.retain(|(k, l), _| keeps(k.identity, l));
        self.over_ids.retain(|(id, l)| keeps(*id, l));
        self.over_flows.retain(|(k, l)| keeps(k.identity, l));

        self.judge(now, &limits);
        self.write_state(&limits);
        self.write_flows(&flows, &limits);
        self.sweep(now);
        self.metrics
            .flows
            .set(i64::try_from(self.seen.len()).unwrap_or(i64::MAX));
    }

    /// Which windows are past their caps; a crossing raises an anomaly.
    fn judge(&mut self, now: u64, limits: &HashMap<u32, (&str, bool, &[Limit])>) {
        let mut crossed = Vec::new();
        for ((id, l), w) in &mut self.ids {
            let sent = w.sum(now);
            let key = (*id, *l);
            if sent > l.upload_bytes {
                if self.over_ids.insert(key) {
                    crossed.push((*id, *l, None, sent));
                }
            } else {
                self.over_ids.remove(&key);
            }
        }
        for ((k, l), w) in &mut self.flows {
            let sent = w.sum(now);
            let key = (*k, *l);
            if sent > l.upload_bytes {
                if self.over_flows.insert(key) {
                    crossed.push((k.identity, *l, Some(*k), sent));
                }
            } else {
                self.over_flows.remove(&key);
            }
        }
        self.ids
            .retain(|k, w| !w.is_empty() || self.over_ids.contains(k));
        self.flows
            .retain(|k, w| !w.is_empty() || self.over_flows.contains(k));
        for (id, l, flow, sent) in crossed {
            let Some((name, enforce, _)) = limits.get(&id) else {
                continue;
            };
            self.raise(name, *enforce, &l, flow.as_ref(), sent);
        }
    }

    fn raise(&self, identity: &str, enforce: bool, l: &Limit, flow: Option<&FlowKey>, sent: u64) {
        let dst = flow.map(|k| std::net::SocketAddr::new(peer(k), k.port).to_string());
        let protocol = flow.map(|k| zt_agent_common::ip_protocol_name(k.protocol));
        let what = match &dst {
            Some(d) => format!("to {d}"),
            None => "in all".to_owned(),
        };
        let detail = format!(
            "sent {} {what} within {}, past its limit of {}{}",
            format_bytes(sent),
            format_duration(l.per_secs),
            format_bytes(l.upload_bytes),
            if enforce {
                ": new connects and sends are denied until the window slides back under it"
            } else {
                " (audit mode: reported only)"
            }
        );
        tracing::warn!(identity, %detail, "limit exceeded");
        self.metrics
            .anomalies
            .with_label_values(&[identity, "limit_exceeded"])
            .inc();
        self.bus
            .publish(bus::Event::now(Body::Anomaly(Box::new(AnomalyEvent {
                identity: identity.to_owned(),
                kind: "limit_exceeded",
                severity: "high",
                response: if enforce { "enforced" } else { "alert" },
                dst,
                protocol,
                detail,
                evidence: AnomalyEvidence {
                    scope: Some(l.scope.as_str()),
                    upload_bytes: Some(sent),
                    limit_bytes: Some(l.upload_bytes),
                    window_seconds: Some(l.per_secs),
                },
            }))));
    }

    /// The per-identity flags, written where they changed.
    fn write_state(&mut self, limits: &HashMap<u32, (&str, bool, &[Limit])>) {
        let mut want: HashMap<u32, u32> = HashMap::new();
        for (id, (_, enforce, ls)) in limits {
            if !enforce {
                continue;
            }
            let mut f = 0;
            if ls.iter().any(|l| l.scope == LimitScope::Destination) {
                f |= STATE_DEST_LIMITS;
            }
            if self.over_ids.iter().any(|(i, _)| i == id) {
                f |= STATE_LIMITED;
            }
            if f != 0 {
                want.insert(*id, f);
            }
        }
        let ids: HashSet<u32> = want.keys().chain(self.written.keys()).copied().collect();
        for id in ids {
            let f = want.get(&id).copied().unwrap_or(0);
            if self.written.get(&id).copied().unwrap_or(0) == f {
                continue;
            }
            match self.maps.state.set(id, &RuntimeState { flags: f }, 0) {
                Ok(()) if f == 0 => {
                    self.written.remove(&id);
                }
                Ok(()) => {
                    self.written.insert(id, f);
                }
                Err(e) => {
                    tracing::warn!(id, error = %e, "could not write an identity's limit state")
                }
            }
        }
    }

    /// Flow flags, written where they changed. The byte counts are written back as
    /// read: what the kernel added in between is lost, once per crossing.
    fn write_flows(
        &mut self,
        flows: &[(FlowKey, FlowBytes)],
        limits: &HashMap<u32, (&str, bool, &[Limit])>,
    ) {
        let over: HashSet<FlowKey> = self.over_flows.iter().map(|(k, _)| *k).collect();
        for (k, v) in flows {
            let enforce = limits.get(&k.identity).is_some_and(|(_, e, _)| *e);
            let want = if enforce && over.contains(k) {
                FLOW_FLAG_LIMITED
            } else {
                0
            };
            if v.flags == want {
                continue;
            }
            let value = FlowBytes { flags: want, ..*v };
            match self.maps.flows.insert(k, &value, 0) {
                Ok(()) => {
                    if let Some(s) = self.seen.get_mut(k) {
                        s.flags = want;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not mark a flow's limit"),
            }
        }
    }

    /// Flows idle for long leave the kernel's table; a limited one stays.
    fn sweep(&mut self, now: u64) {
        let idle = if self.seen.len() as u64 * 4 >= u64::from(FLOWS_CAPACITY) * 3 {
            IDLE_SECS_FULL
        } else {
            IDLE_SECS
        };
        let windowed: HashSet<FlowKey> = self.flows.keys().map(|(k, _)| *k).collect();
        let gone: Vec<FlowKey> = self
            .seen
            .iter()
            .filter(|(k, s)| {
                s.flags == 0 && now.saturating_sub(s.changed) >= idle && !windowed.contains(*k)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            let _ = self.maps.flows.remove(&k);
            self.seen.remove(&k);
        }
    }
}
