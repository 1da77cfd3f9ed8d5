//! Traffic: bytes per identity (summed from the kernel's per-CPU counters at each
//! scrape), packets dropped past a limit, anomalies, and the flow table's use.
//! Destinations never become labels: they live in the observation store.

use std::collections::BTreeMap;

use prometheus::{IntCounterVec, IntGauge, Registry};
use zt_agent_common::Traffic;

use super::registry::{counter, plain_gauge};

#[derive(Clone)]
pub struct TrafficMetrics {
    pub egress_bytes: IntCounterVec,
    pub ingress_bytes: IntCounterVec,
    pub limit_drops: IntCounterVec,
    pub anomalies: IntCounterVec,
    pub flows: IntGauge,
}

impl TrafficMetrics {
    #[must_use]
    pub fn register(r: &Registry) -> Self {
        Self {
            egress_bytes: counter(
                r,
                "zt_agent_egress_bytes_total",
                "Payload bytes enrolled sockets sent (TCP and UDP, past the headers), per identity.",
                &["identity"],
            ),
            ingress_bytes: counter(
                r,
                "zt_agent_ingress_bytes_total",
                "Payload bytes enrolled sockets received (TCP in order, UDP datagrams), per identity.",
                &["identity"],
            ),
            limit_drops: counter(
                r,
                "zt_agent_limit_dropped_packets_total",
                "Packets with payload the kernel dropped because an upload limit of spec.limits was reached, per identity.",
                &["identity"],
            ),
            anomalies: counter(
                r,
                "zt_agent_anomalies_total",
                "Anomalies raised, per identity and kind (limit_exceeded, ...).",
                &["identity", "kind"],
            ),
            flows: plain_gauge(
                r,
                "zt_agent_flows",
                "Flows (identity, peer, port, protocol) the kernel's flow table holds.",
            ),
        }
    }

    /// Fold each identity's kernel totals in: the growth since the last scrape.
    pub fn update(
        &self,
        last: &mut BTreeMap<u32, Traffic>,
        names: &BTreeMap<u32, String>,
        read: impl Fn(u32) -> Traffic,
    ) {
        for (id, name) in names {
            let now = read(*id);
            let seen = last.entry(*id).or_default();
            let grow = |c: &IntCounterVec, n: u64, s: u64| {
                // Always served, 0 at first, so that a dashboard tells none from absent.
                c.with_label_values(&[name.as_str()])
                    .inc_by(n.saturating_sub(s));
            };
            grow(&self.egress_bytes, now.tx_bytes, seen.tx_bytes);
            grow(&self.ingress_bytes, now.rx_bytes, seen.rx_bytes);
            grow(&self.limit_drops, now.limit_drops, seen.limit_drops);
            *seen = now;
        }
    }
}
