//! The resolver's metrics. Prometheus handles are shared, so the resolver keeps a clone
//! and never waits for a lock.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Registry};

use super::registry::{counter, gauge};

#[derive(Clone)]
pub struct DnsMetrics {
    /// Queries by identity and result (allowed, audit, refused, malformed,
    /// upstream_error, dropped).
    pub queries: IntCounterVec,
    /// Addresses DNS answers hold open, per identity.
    pub installed: IntGaugeVec,
    /// Time from a query's arrival to its answer, by result.
    pub latency: HistogramVec,
    /// Learned addresses pushed out by the per-identity cap.
    pub evicted: IntCounter,
    /// `zt_agent_events_lost_total`: DNS events dropped when the daemon falls behind
    /// (`dns_backlog`).
    pub events_lost: IntCounterVec,
}

impl DnsMetrics {
    #[expect(
        clippy::expect_used,
        reason = "metric definitions are static and valid"
    )]
    #[must_use]
    pub fn register(r: &Registry, events_lost: IntCounterVec) -> Self {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "zt_agent_dns_latency_seconds",
                "Time the agent's resolver takes to answer a query, upstream included, by result.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
            &["result"],
        )
        .expect("valid metric");
        r.register(Box::new(latency.clone()))
            .expect("unique metric");
        let evicted = IntCounter::new(
            "zt_agent_dns_evicted_total",
            "Learned addresses pushed out because an identity reached its cap.",
        )
        .expect("valid metric");
        r.register(Box::new(evicted.clone()))
            .expect("unique metric");
        events_lost.with_label_values(&["dns_backlog"]).inc_by(0);
        Self {
            queries: counter(
                r,
                "zt_agent_dns_queries_total",
                "DNS queries of enrolled tasks, by identity and result.",
                &["identity", "result"],
            ),
            installed: gauge(
                r,
                "zt_agent_dns_installed_addresses",
                "Addresses DNS answers currently allow, per identity.",
                &["identity"],
            ),
            latency,
            evicted,
            events_lost,
        }
    }
}
