//! The Workload API's metrics: SVIDs handed out, callers refused, and connections
//! pushed out.

use prometheus::{IntCounterVec, Registry};

use super::registry::counter;

#[derive(Clone)]
pub struct SpiffeMetrics {
    /// `zt_agent_svids_issued_total{identity,type}`: X.509- and JWT-SVIDs signed.
    pub issued: IntCounterVec,
    /// `zt_agent_svid_refusals_total{reason}`: calls answered PermissionDenied (or
    /// InvalidArgument without the security header).
    pub refused: IntCounterVec,
    /// `zt_agent_svid_connections_evicted_total{reason}`: Workload API connections
    /// pushed out: `share` (their caller's share, or the unenrolled pool, was full),
    /// `idle` (no request within the cut-off), `global` (all connections were open).
    pub evicted: IntCounterVec,
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
        let evicted = counter(
            r,
            "zt_agent_svid_connections_evicted_total",
            "Workload API connections pushed out, by reason (share, idle, global).",
            &["reason"],
        );
        for why in crate::spiffe::shares::Why::ALL {
            evicted.with_label_values(&[why.as_str()]).inc_by(0);
        }
        Self {
            evicted,
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
