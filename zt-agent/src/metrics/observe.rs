//! The observation store: rows kept, rows pruned, observations it had no room for.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::registry::{counter, gauge};

#[derive(Clone)]
pub struct ObserveMetrics {
    pub rows: IntGaugeVec,
    pub pruned: IntCounterVec,
    pub dropped: IntCounterVec,
}

impl ObserveMetrics {
    #[must_use]
    pub fn register(r: &Registry) -> Self {
        let rows = gauge(
            r,
            "zt_agent_observed_rows",
            "Rows of the observation store, by table (flows, execs).",
            &["table"],
        );
        let pruned = counter(
            r,
            "zt_agent_observed_pruned_total",
            "Rows of the observation store removed, past the retention or the row cap, by table.",
            &["table"],
        );
        let dropped = counter(
            r,
            "zt_agent_observations_dropped_total",
            "Observations not stored: the store failed or its write queue was full, by why.",
            &["why"],
        );
        for t in ["flows", "execs"] {
            rows.with_label_values(&[t]).set(0);
            pruned.with_label_values(&[t]).inc_by(0);
        }
        for w in ["queue_full", "store_failed"] {
            dropped.with_label_values(&[w]).inc_by(0);
        }
        Self {
            rows,
            pruned,
            dropped,
        }
    }
}
