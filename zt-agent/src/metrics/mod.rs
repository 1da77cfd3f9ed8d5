//! Prometheus metrics, one file per component: each registers its own metrics on the
//! shared registry and keeps the handles it updates (Prometheus handles are shared, so
//! no component waits for another). Served as text on a local address (default
//! 127.0.0.1:9464).

pub mod dns;
pub mod events;
pub mod grants;
pub mod kernel;
pub mod observe;
pub mod parts;
pub mod policy;
mod registry;
pub mod server;
pub mod spiffe;
pub mod tamper;
pub mod traffic;

use prometheus::{Encoder as _, Registry, TextEncoder};

pub use dns::DnsMetrics;
pub use events::EventMetrics;
pub use grants::GrantMetrics;
pub use kernel::KernelMetrics;
pub use parts::PartMetrics;
pub use policy::PolicyMetrics;
pub use spiffe::SpiffeMetrics;
pub use tamper::TamperMetrics;
pub use traffic::TrafficMetrics;

/// Every metric the daemon serves.
pub struct Metrics {
    pub registry: Registry,
    pub kernel: KernelMetrics,
    pub events: EventMetrics,
    pub policy: PolicyMetrics,
    pub dns: DnsMetrics,
    pub tamper: TamperMetrics,
    pub grants: GrantMetrics,
    pub observe: observe::ObserveMetrics,
    pub spiffe: SpiffeMetrics,
    pub traffic: TrafficMetrics,
    pub parts: PartMetrics,
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let registry = Registry::new();
        let events = EventMetrics::register(&registry);
        Self {
            kernel: KernelMetrics::register(&registry, events.lost.clone()),
            dns: DnsMetrics::register(&registry, events.lost.clone()),
            policy: PolicyMetrics::register(&registry),
            tamper: TamperMetrics::register(&registry),
            grants: GrantMetrics::register(&registry),
            observe: observe::ObserveMetrics::register(&registry),
            spiffe: SpiffeMetrics::register(&registry),
            traffic: TrafficMetrics::register(&registry),
            parts: PartMetrics::register(&registry),
            events,
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The registry as Prometheus text.
#[must_use]
pub fn render(registry: &Registry) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use zt_agent_common::verdict_index;

    use super::*;

    #[test]
    fn counts_growth_only() {
        let mut m = Metrics::new();
        let names: BTreeMap<u32, String> = [(1, "coder".to_owned())].into();
        let idx = verdict_index(1, 1, 0);
        m.kernel
            .update_verdicts(&names, |i| if i == idx { 5 } else { 0 });
        m.kernel
            .update_verdicts(&names, |i| if i == idx { 7 } else { 0 });
        let text = String::from_utf8(render(&m.registry)).expect("utf8");
        assert!(
            text.contains(
                r#"zt_agent_verdicts_total{identity="coder",protocol="tcp",verdict="deny"} 7"#
            ),
            "{text}"
        );
        assert!(text.contains("zt_agent_build_info"));
        assert!(text.contains(r#"zt_agent_events_lost_total{reason="dns_backlog"} 0"#));
    }
}
