//! The policy in force, its reloads, the exec guard and the build.

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::registry::{counter, gauge};

#[derive(Clone)]
pub struct PolicyMetrics {
    info: IntGaugeVec,
    reloads: IntCounterVec,
    pub exec_guard: IntGaugeVec,
}

impl PolicyMetrics {
    #[must_use]
    pub fn register(r: &Registry) -> Self {
        let build = gauge(
            r,
            "zt_agent_build_info",
            "Build information; always 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let reloads = counter(
            r,
            "zt_agent_policy_reloads_total",
            "Policy loads and reloads, by result.",
            &["result"],
        );
        reloads.with_label_values(&["success"]).inc_by(0);
        Self {
            info: gauge(
                r,
                "zt_agent_policy_info",
                "The policy in force, by sha256; always 1.",
                &["sha256"],
            ),
            reloads,
            exec_guard: gauge(
                r,
                "zt_agent_exec_guard_info",
                "How disallowed execs are stopped: lsm (EPERM) or tp_btf_sigkill; always 1.",
                &["mechanism"],
            ),
        }
    }

    /// A policy load or reload took effect.
    pub fn loaded(&self, sha256: &str) {
        self.reloads.with_label_values(&["success"]).inc();
        self.set_policy(sha256);
    }

    /// A policy load or reload was refused; the running policy stays.
    pub fn rejected(&self) {
        self.reloads.with_label_values(&["failure"]).inc();
    }

    pub fn set_policy(&self, sha256: &str) {
        self.info.reset();
        self.info.with_label_values(&[sha256]).set(1);
    }
}
