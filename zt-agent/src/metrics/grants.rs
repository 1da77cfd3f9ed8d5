//! Grants and requests: how many grants are in force per identity, how requests were
//! decided, and how many wait for a decision.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::registry::{counter, gauge};

#[derive(Clone)]
pub struct GrantMetrics {
    /// `zt_agent_grants_active{identity}`.
    pub active: IntGaugeVec,
    /// `zt_agent_grant_requests_total{identity,result}`: approved, denied, timed_out.
    pub requests: IntCounterVec,
    /// `zt_agent_grant_requests_pending`.
    pub pending: IntGauge,
}

impl GrantMetrics {
    #[expect(
        clippy::expect_used,
        reason = "metric definitions are static and valid"
    )]
    #[must_use]
    pub fn register(r: &Registry) -> Self {
        let pending = IntGauge::new(
            "zt_agent_grant_requests_pending",
            "Requests raised by ask rules that wait for a decision.",
        )
        .expect("valid metric");
        r.register(Box::new(pending.clone()))
            .expect("unique metric");
        Self {
            active: gauge(
                r,
                "zt_agent_grants_active",
                "Grants in force, per identity.",
                &["identity"],
            ),
            requests: counter(
                r,
                "zt_agent_grant_requests_total",
                "Requests raised by ask rules, per identity and how they ended (approved, denied, timed_out).",
                &["identity", "result"],
            ),
            pending,
        }
    }
}
