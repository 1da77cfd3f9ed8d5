//! Prometheus metrics, served as text on a local address (default 127.0.0.1:9464).
//!
//! Kernel counters are per-CPU arrays; on every scrape they are summed and the growth
//! since the last scrape is added to the matching counter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use zt_agent_common::{PROTO_COUNT, VERDICT_COUNT, errors, verdict_index};

use crate::events::decode::verdict_name;

pub struct Metrics {
    pub registry: Registry,
    verdicts: IntCounterVec,
    events_lost: IntCounterVec,
    kernel_errors: IntCounterVec,
    pub events: IntCounterVec,
    pub map_entries: IntGaugeVec,
    pub map_capacity: IntGaugeVec,
    policy_info: IntGaugeVec,
    pub reloads: IntCounterVec,
    pub identity_tasks: IntGaugeVec,
    exec_verdicts: IntCounterVec,
    pub exec_guard: IntGaugeVec,
    pub dns: DnsMetrics,
    last_verdicts: BTreeMap<u32, u64>,
    last_exec: BTreeMap<u32, u64>,
    last_errors: Vec<u64>,
}

#[expect(
    clippy::expect_used,
    reason = "metric definitions are static and valid"
)]
fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

#[expect(
    clippy::expect_used,
    reason = "metric definitions are static and valid"
)]
fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// The resolver's metrics. Prometheus handles are shared, so the resolver keeps a
/// clone and never waits for the metrics lock.
#[derive(Clone)]
pub struct DnsMetrics {
    /// Queries by identity and result (allowed, audit, refused, malformed,
    /// upstream_error).
    pub queries: IntCounterVec,
    /// Addresses DNS answers hold open, per identity.
    pub installed: IntGaugeVec,
    /// Time from a query's arrival to its answer, by result.
    pub latency: HistogramVec,
    /// Learned addresses pushed out by the per-identity cap.
    pub evicted: IntCounter,
    /// `zt_agent_events_lost_total`: DNS events dropped when the daemon falls behind
    /// (`dns_backlog`).
    pub events_lost: IntCounterVec,
}

#[expect(
    clippy::expect_used,
    reason = "metric definitions are static and valid"
)]
fn dns_metrics(r: &Registry, events_lost: IntCounterVec) -> DnsMetrics {
    let latency = HistogramVec::new(
        HistogramOpts::new(
            "zt_agent_dns_latency_seconds",
            "Time the agent's resolver takes to answer a query, upstream included, by result.",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            2.5,
        ]),
        &["result"],
    )
    .expect("valid metric");
    r.register(Box::new(latency.clone()))
        .expect("unique metric");
    let evicted = IntCounter::new(
        "zt_agent_dns_evicted_total",
        "Learned addresses pushed out because an identity reached its cap.",
    )
    .expect("valid metric");
    r.register(Box::new(evicted.clone()))
        .expect("unique metric");
    DnsMetrics {
        queries: counter(
            r,
            "zt_agent_dns_queries_total",
            "DNS queries of enrolled tasks, by identity and result.",
            &["identity", "result"],
        ),
        installed: gauge(
            r,
            "zt_agent_dns_installed_addresses",
            "Addresses DNS answers currently allow, per identity.",
            &["identity"],
        ),
        latency,
        evicted,
        events_lost,
    }
}

const PROTOCOLS: [&str; PROTO_COUNT as usize] = ["tcp", "udp", "other"];

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let build = gauge(
            r,
            "zt_agent_build_info",
            "Build information; always 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let events_lost = counter(
            r,
            "zt_agent_events_lost_total",
            "Events that could not be delivered, by reason.",
            &["reason"],
        );
        Self {
            verdicts: counter(
                r,
                "zt_agent_verdicts_total",
                "Egress and socket decisions by the kernel, per identity, verdict and protocol.",
                &["identity", "verdict", "protocol"],
            ),
            dns: dns_metrics(r, events_lost.clone()),
            events_lost,
            kernel_errors: counter(
                r,
                "zt_agent_kernel_errors_total",
                "Kernel-side failures that were handled fail-closed, by reason.",
                &["reason"],
            ),
            events: counter(
                r,
                "zt_agent_events_total",
                "Events delivered to the event sink, by kind and verdict.",
                &["kind", "verdict"],
            ),
            map_entries: gauge(
                r,
                "zt_agent_map_entries",
                "Entries in each kernel map.",
                &["map"],
            ),
            map_capacity: gauge(
                r,
                "zt_agent_map_capacity",
                "Capacity of each kernel map.",
                &["map"],
            ),
            policy_info: gauge(
                r,
                "zt_agent_policy_info",
                "The policy in force, by sha256; always 1.",
                &["sha256"],
            ),
            reloads: counter(
                r,
                "zt_agent_policy_reloads_total",
                "Policy loads and reloads, by result.",
                &["result"],
            ),
            identity_tasks: gauge(
                r,
                "zt_agent_identity_tasks",
                "Enrolled thread groups per identity.",
                &["identity"],
            ),
            exec_verdicts: counter(
                r,
                "zt_agent_exec_total",
                "Execs of enrolled tasks judged by the kernel, per identity and verdict.",
                &["identity", "verdict"],
            ),
            exec_guard: gauge(
                r,
                "zt_agent_exec_guard_info",
                "How disallowed execs are stopped: lsm (EPERM) or tp_btf_sigkill; always 1.",
                &["mechanism"],
            ),
            registry,
            last_verdicts: BTreeMap::new(),
            last_exec: BTreeMap::new(),
            last_errors: vec![0; errors::COUNT as usize],
        }
    }

    /// Fold the kernel's exec verdict counters in, as `update_verdicts` does.
    pub fn update_exec(
        &mut self,
        names: &BTreeMap<u32, String>,
        read: impl Fn(u32, zt_agent_common::Verdict) -> u64,
    ) {
        use zt_agent_common::Verdict;
        for (id, name) in names {
            for v in [Verdict::Allow, Verdict::Deny, Verdict::Audit] {
                let idx = zt_agent_common::exec_verdict_index(*id, v as u8);
                let now = read(*id, v);
                let last = self.last_exec.entry(idx).or_insert(0);
                if now > *last {
                    self.exec_verdicts
                        .with_label_values(&[name.as_str(), verdict_name(v as u8)])
                        .inc_by(now - *last);
                    *last = now;
                }
            }
        }
    }

    pub fn set_policy(&self, sha256: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[sha256]).set(1);
    }

    /// Fold kernel verdict counters (summed per slot) into the counters. `names` maps
    /// identity ids to their label.
    pub fn update_verdicts(&mut self, names: &BTreeMap<u32, String>, read: impl Fn(u32) -> u64) {
        for (id, name) in names {
            for v in 0..VERDICT_COUNT as u8 {
                for (p, proto) in PROTOCOLS.iter().enumerate() {
                    let idx = verdict_index(*id, v, p as u8);
                    let now = read(idx);
                    let last = self.last_verdicts.entry(idx).or_insert(0);
                    if now > *last {
                        self.verdicts
                            .with_label_values(&[name.as_str(), verdict_name(v), proto])
                            .inc_by(now - *last);
                    }
                    *last = now;
                }
            }
        }
    }

    pub fn update_errors(&mut self, now: &[u64]) {
        for (i, n) in now.iter().enumerate() {
            let last = self.last_errors.get(i).copied().unwrap_or(0);
            if *n > last {
                let reason = errors::NAMES.get(i).copied().unwrap_or("unknown");
                if i as u32 == errors::RINGBUF_FULL {
                    self.events_lost
                        .with_label_values(&[reason])
                        .inc_by(n - last);
                } else {
                    self.kernel_errors
                        .with_label_values(&[reason])
                        .inc_by(n - last);
                }
            }
            if let Some(l) = self.last_errors.get_mut(i) {
                *l = *n;
            }
        }
        // Make the series visible before the first loss.
        self.events_lost
            .with_label_values(&["ringbuf_full"])
            .inc_by(0);
        self.events_lost
            .with_label_values(&["sink_error"])
            .inc_by(0);
        self.events_lost
            .with_label_values(&["dns_backlog"])
            .inc_by(0);
    }

    pub fn sink_error(&self) {
        self.events_lost.with_label_values(&["sink_error"]).inc();
    }

    #[must_use]
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serve `GET /metrics` (and `/`). The closure refreshes kernel-derived values first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Mutex<Metrics>>,
    refresh: Arc<dyn Fn() + Send + Sync>,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics");
    }
    loop {
        let (mut sock, _) = listener.accept().await?;
        let metrics = metrics.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let resp = if path == "/metrics" || path == "/" {
                refresh();
                let body = metrics.lock().map(|m| m.render()).unwrap_or_default();
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(&body);
                r
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = sock.write_all(&resp).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_growth_only() {
        let mut m = Metrics::new();
        let names: BTreeMap<u32, String> = [(1, "coder".to_owned())].into();
        let idx = verdict_index(1, 1, 0);
        m.update_verdicts(&names, |i| if i == idx { 5 } else { 0 });
        m.update_verdicts(&names, |i| if i == idx { 7 } else { 0 });
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(
            text.contains(
                r#"zt_agent_verdicts_total{identity="coder",protocol="tcp",verdict="deny"} 7"#
            ),
            "{text}"
        );
        assert!(text.contains("zt_agent_build_info"));
    }
}
