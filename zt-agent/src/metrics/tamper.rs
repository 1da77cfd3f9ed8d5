//! Tamper detection: what was found changed under the daemon, by kind.

use prometheus::{IntCounterVec, Registry};

use super::registry::counter;
use crate::tamper::What;

#[derive(Clone)]
pub struct TamperMetrics {
    pub total: IntCounterVec,
}

impl TamperMetrics {
    #[must_use]
    pub fn register(r: &Registry) -> Self {
        let total = counter(
            r,
            "zt_agent_tamper_total",
            "Programs found detached and pins found removed under the running daemon, each restored, by what.",
            &["what"],
        );
        for w in What::ALL {
            total.with_label_values(&[w.as_str()]).inc_by(0);
        }
        Self { total }
    }
}
