//! The daemon's own health, part by part: whether each part runs, and how often the
//! supervisor started it again.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::registry::{counter, gauge};

#[derive(Clone)]
pub struct PartMetrics {
    /// 1 while the part runs, 0 while it is down (between a failure and its restart,
    /// or for good once the supervisor gave up).
    pub up: IntGaugeVec,
    /// Restarts of the part after it failed or ended.
    pub restarts: IntCounterVec,
}

impl PartMetrics {
    #[must_use]
    pub fn register(r: &Registry) -> Self {
        Self {
            up: gauge(
                r,
                "zt_agent_part_up",
                "Whether each part of the daemon runs (1) or is down (0).",
                &["part"],
            ),
            restarts: counter(
                r,
                "zt_agent_part_restarts_total",
                "Times a part of the daemon was started again after it failed or ended.",
                &["part"],
            ),
        }
    }

    /// `part` runs (or not).
    pub fn set_up(&self, part: &str, up: bool) {
        self.up.with_label_values(&[part]).set(i64::from(up));
        self.restarts.with_label_values(&[part]).inc_by(0);
    }

    pub fn restarted(&self, part: &str) {
        self.restarts.with_label_values(&[part]).inc();
    }
}
