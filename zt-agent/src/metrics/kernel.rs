//! What the kernel counts and holds: verdicts, execs, fail-closed errors, map entries
//! and enrolled tasks. The kernel's counters are per-CPU arrays; on every scrape they
//! are summed and the growth since the last scrape is added to the matching counter.

use std::collections::BTreeMap;

use prometheus::{IntCounterVec, IntGaugeVec, Registry};
use zt_agent_common::{PROTO_NAMES, Verdict, errors, verdict_index};

use super::registry::{counter, gauge};

pub struct KernelMetrics {
    verdicts: IntCounterVec,
    exec_verdicts: IntCounterVec,
    kernel_errors: IntCounterVec,
    /// `zt_agent_events_lost_total`, for the ring buffer's losses.
    events_lost: IntCounterVec,
    pub map_entries: IntGaugeVec,
    pub map_capacity: IntGaugeVec,
    pub identity_tasks: IntGaugeVec,
    last_verdicts: BTreeMap<u32, u64>,
    last_exec: BTreeMap<u32, u64>,
    last_errors: Vec<u64>,
}

impl KernelMetrics {
    #[must_use]
    pub fn register(r: &Registry, events_lost: IntCounterVec) -> Self {
        Self {
            verdicts: counter(
                r,
                "zt_agent_verdicts_total",
                "Egress and socket decisions by the kernel, per identity, verdict and protocol.",
                &["identity", "verdict", "protocol"],
            ),
            exec_verdicts: counter(
                r,
                "zt_agent_exec_total",
                "Execs of enrolled tasks judged by the kernel, per identity and verdict.",
                &["identity", "verdict"],
            ),
            kernel_errors: counter(
                r,
                "zt_agent_kernel_errors_total",
                "Kernel-side failures that were handled fail-closed, by reason.",
                &["reason"],
            ),
            events_lost,
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
            identity_tasks: gauge(
                r,
                "zt_agent_identity_tasks",
                "Enrolled thread groups per identity.",
                &["identity"],
            ),
            last_verdicts: BTreeMap::new(),
            last_exec: BTreeMap::new(),
            last_errors: vec![0; errors::COUNT as usize],
        }
    }

    /// Fold kernel verdict counters (summed per slot) into the counters. `names` maps
    /// identity ids to their label.
    pub fn update_verdicts(&mut self, names: &BTreeMap<u32, String>, read: impl Fn(u32) -> u64) {
        for (id, name) in names {
            for v in Verdict::ALL {
                for (p, proto) in PROTO_NAMES.iter().enumerate() {
                    let idx = verdict_index(*id, v as u8, p as u8);
                    let now = read(idx);
                    let last = self.last_verdicts.entry(idx).or_insert(0);
                    if now > *last {
                        self.verdicts
                            .with_label_values(&[name.as_str(), v.as_str(), proto])
                            .inc_by(now - *last);
                    }
                    *last = now;
                }
            }
        }
    }

    /// Fold the kernel's exec verdict counters in, as `update_verdicts` does.
    pub fn update_exec(
        &mut self,
        names: &BTreeMap<u32, String>,
        read: impl Fn(u32, Verdict) -> u64,
    ) {
        for (id, name) in names {
            for v in Verdict::ALL {
                let idx = zt_agent_common::exec_verdict_index(*id, v as u8);
                let now = read(*id, v);
                let last = self.last_exec.entry(idx).or_insert(0);
                if now > *last {
                    self.exec_verdicts
                        .with_label_values(&[name.as_str(), v.as_str()])
                        .inc_by(now - *last);
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
    }

    /// One map's entries and capacity.
    pub fn set_map(&self, map: &str, entries: usize, capacity: u32) {
        self.map_entries
            .with_label_values(&[map])
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.map_capacity
            .with_label_values(&[map])
            .set(i64::from(capacity));
    }
}
