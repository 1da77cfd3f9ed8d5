//! The Workload API's metrics: SVIDs handed out, and callers refused.

use prometheus::{IntCounterVec, Registry};

use super::registry::counter;

#[derive(Clone)]
pub struct SpiffeMetrics {
    /// `zt_agent_svids_issued_total{identity,type}`: X.509- and JWT-SVIDs signed.
    pub issued: IntCounterVec,
    /// `zt_agent_svid_refusals_total{reason}`: calls answered PermissionDenied (or
    /// InvalidArgument without the security header).
    pub refused: IntCounterVec,
}

impl SpiffeMetrics {
    #[must_use]
    pub fn register(r: &Registry) -> Self {
        let refused = counter(
            r,
            "zt_agent_svid_refusals_total",
            "Workload API calls refused, by reason (unenrolled, quarantined, task_exited, ...).",
            &["reason"],
        );
        for reason in ["unenrolled", "quarantined", "task_exited"] {
            refused.with_label_values(&[reason]).inc_by(0);
        }
        Self {
            issued: counter(
                r,
                "zt_agent_svids_issued_total",
                "SVIDs the Workload API signed, by identity and type (x509, jwt).",
                &["identity", "type"],
            ),
            refused,
        }
    }
}
