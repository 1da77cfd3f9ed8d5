//! Metric constructors: every metric is registered once, with a fixed label set.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[expect(
    clippy::expect_used,
    reason = "metric definitions are static and valid"
)]
pub fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

#[expect(
    clippy::expect_used,
    reason = "metric definitions are static and valid"
)]
pub fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// A counter without labels.
#[expect(
    clippy::expect_used,
    reason = "metric definitions are static and valid"
)]
pub fn plain_counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help)).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// A gauge without labels.
#[expect(
    clippy::expect_used,
    reason = "metric definitions are static and valid"
)]
pub fn plain_gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}
