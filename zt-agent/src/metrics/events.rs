//! Event delivery: what reached the sink, and what was lost on the way, by reason.

use prometheus::{IntCounterVec, Registry};

use super::registry::counter;

#[derive(Clone)]
pub struct EventMetrics {
    /// Events written to the sink, by kind and verdict.
    pub delivered: IntCounterVec,
    /// Events that could not be delivered, by reason: `ringbuf_full` (kernel),
    /// `sink_error`, `<subscriber>_backlog` (a bus subscriber fell behind),
    /// `dns_backlog`.
    pub lost: IntCounterVec,
    /// Events left out by the per-identity and per-cause budgets, by identity and kind.
    pub suppressed: IntCounterVec,
}

impl EventMetrics {
    #[must_use]
    pub fn register(r: &Registry) -> Self {
        let lost = counter(
            r,
            "zt_agent_events_lost_total",
            "Events that could not be delivered, by reason.",
            &["reason"],
        );
        // Make the series visible before the first loss.
        for reason in ["ringbuf_full", "sink_error"] {
            lost.with_label_values(&[reason]).inc_by(0);
        }
        Self {
            delivered: counter(
                r,
                "zt_agent_events_total",
                "Events delivered to the event sink, by kind and verdict.",
                &["kind", "verdict"],
            ),
            lost,
            suppressed: counter(
                r,
                "zt_agent_events_suppressed_total",
                "Events left out by the per-identity and per-cause budgets (each summed up on a `suppressed` line), by identity and kind.",
                &["identity", "kind"],
            ),
        }
    }
}
