//! What the kernel counts and holds: verdicts, execs, fail-closed errors, map entries
//! and enrolled tasks. The kernel's counters are per-CPU arrays; on every scrape they
//! are summed and the growth since the last scrape is added to the matching counter.

use std::collections::BTreeMap;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use zt_agent_common::{PROTO_NAMES, Verdict, errors, verdict_index};

use super::registry::{counter, gauge, plain_counter, plain_gauge};

pub struct KernelMetrics {
    verdicts: IntCounterVec,
    ingress_verdicts: IntCounterVec,
    exec_verdicts: IntCounterVec,
    task_refused: IntCounterVec,
    tasks_swept: IntCounter,
    pub task_share: IntGauge,
    kernel_errors: IntCounterVec,
    /// `zt_agent_events_lost_total`, for the ring buffer's losses.
    events_lost: IntCounterVec,
    pub map_entries: IntGaugeVec,
    pub map_capacity: IntGaugeVec,
    pub identity_tasks: IntGaugeVec,
    last_verdicts: BTreeMap<u32, u64>,
    last_ingress: BTreeMap<u32, u64>,
    last_exec: BTreeMap<u32, u64>,
    last_refused: BTreeMap<u32, u64>,
    last_swept: u64,
    last_errors: Vec<u64>,
}

impl KernelMetrics {
    #[must_use]
    pub fn register(r: &Registry, events_lost: IntCounterVec) -> Self {
        let m = Self {
            verdicts: counter(
                r,
                "zt_agent_verdicts_total",
                "Egress and socket decisions by the kernel, per identity, verdict and protocol.",
                &["identity", "verdict", "protocol"],
            ),
            ingress_verdicts: counter(
                r,
                "zt_agent_ingress_verdicts_total",
                "Binds to a port and inbound connection attempts and datagrams of enrolled sockets judged by the kernel, per identity, verdict and protocol.",
                &["identity", "verdict", "protocol"],
            ),
            task_refused: counter(
                r,
                "zt_agent_task_share_refused_total",
                "Forks and enrollments past the identity's share of the task table: the task that forked, or the one that could not be enrolled, was killed.",
                &["identity"],
            ),
            tasks_swept: plain_counter(
                r,
                "zt_agent_tasks_swept_total",
                "Task-table entries removed because their process was gone.",
            ),
            task_share: plain_gauge(
                r,
                "zt_agent_task_share",
                "Most task-table entries one identity may hold.",
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
            last_ingress: BTreeMap::new(),
            last_exec: BTreeMap::new(),
            last_refused: BTreeMap::new(),
            last_swept: 0,
            last_errors: vec![0; errors::COUNT as usize],
        };
        // Every fail-closed path from the start, at 0, so that a dashboard or an alert
        // tells "none" from "not served".
        for (i, reason) in errors::NAMES.iter().enumerate() {
            if i as u32 != errors::RINGBUF_FULL {
                m.kernel_errors.with_label_values(&[reason]).inc_by(0);
            }
        }
        m
    }

    /// Fold kernel verdict counters (summed per slot) into the counters. `names` maps
    /// identity ids to their label.
    pub fn update_verdicts(&mut self, names: &BTreeMap<u32, String>, read: impl Fn(u32) -> u64) {
        fold_verdicts(&self.verdicts, &mut self.last_verdicts, names, read);
    }

    /// The same for binds and inbound packets.
    pub fn update_ingress(&mut self, names: &BTreeMap<u32, String>, read: impl Fn(u32) -> u64) {
        fold_verdicts(&self.ingress_verdicts, &mut self.last_ingress, names, read);
    }

    /// Refusals past the task share, per identity (the kernel's and the daemon's, summed
    /// by `read`), and the entries the sweep removed.
    pub fn update_tasks(
        &mut self,
        names: &BTreeMap<u32, String>,
        read: impl Fn(u32) -> u64,
        swept: u64,
    ) {
        for (id, name) in names {
            let now = read(*id);
            let last = self.last_refused.entry(*id).or_insert(0);
            if now > *last {
                self.task_refused
                    .with_label_values(&[name.as_str()])
                    .inc_by(now - *last);
            }
            *last = now;
        }
        if swept > self.last_swept {
            self.tasks_swept.inc_by(swept - self.last_swept);
        }
        self.last_swept = swept;
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

/// Add each slot's growth since the last scrape to its (identity, verdict, protocol)
/// series.
fn fold_verdicts(
    counter: &IntCounterVec,
    last: &mut BTreeMap<u32, u64>,
    names: &BTreeMap<u32, String>,
    read: impl Fn(u32) -> u64,
) {
    for (id, name) in names {
        for v in Verdict::ALL {
            for (p, proto) in PROTO_NAMES.iter().enumerate() {
                let idx = verdict_index(*id, v as u8, p as u8);
                let now = read(idx);
                let seen = last.entry(idx).or_insert(0);
                if now > *seen {
                    counter
                        .with_label_values(&[name.as_str(), v.as_str(), proto])
                        .inc_by(now - *seen);
                }
                *seen = now;
            }
        }
    }
}
