//! The event pump: kernel records from the ring buffer, decoded, held to their budgets,
//! and enriched with what /proc shows of their task while it may still be there, onto
//! the bus.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use prometheus::IntCounter;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use zt_agent_common::{
    ENROLL_EXE, ENROLL_PRINCIPAL, ENROLL_QUARANTINE, EventKind, Reason, Verdict,
};

use crate::bus::{self, Body, Bus};
use crate::events::decode;
use crate::events::json::identity_label;
use crate::events::limit::Cause;
use crate::events::provenance::Digests;
use crate::metrics::EventMetrics;
use crate::observe::Observed;
use crate::state::State;

/// The ring buffer and what the pump keeps between records; it outlives a restart of
/// the pump.
pub struct Pump {
    ring: AsyncFd<RingBuf<MapData>>,
    digests: Digests,
    metrics: EventMetrics,
    /// Where the (tgid, identity) of each task an exec enrolled goes, whatever the
    /// event budgets: its sockets from before then get the identity. The count of
    /// those lost when the queue was full.
    enrolled: Option<(mpsc::Sender<(u32, u32)>, IntCounter)>,
    /// Where every connect, datagram and exec record goes too, whatever the event
    /// budgets, so that the observation store counts each one; the count of those it
    /// had no room for.
    observed: Option<(mpsc::Sender<Observed>, IntCounter)>,
}

impl Pump {
    /// Register the ring buffer with the runtime.
    pub fn new(events: RingBuf<MapData>, metrics: EventMetrics) -> std::io::Result<Self> {
        Ok(Self {
            // SAFETY: the ring buffer owns its descriptor and outlives the
            // registration: both live in the pump.
            ring: unsafe { AsyncFd::register(events) }?,
            digests: Digests::default(),
            metrics,
            enrolled: None,
            observed: None,
        })
    }

    /// Send every connect, datagram and exec record to the observer too.
    #[must_use]
    pub fn with_observer(mut self, tx: mpsc::Sender<Observed>, dropped: IntCounter) -> Self {
        self.observed = Some((tx, dropped));
        self
    }

    /// Send the tasks execs enrolled to `tx` too.
    #[must_use]
    pub fn with_enrolled(mut self, tx: mpsc::Sender<(u32, u32)>) -> Self {
        let lost = self.metrics.lost.with_label_values(&["sockets_backlog"]);
        lost.inc_by(0);
        self.enrolled = Some((tx, lost));
        self
    }
}

/// Drain the ring buffer until it fails.
pub async fn run(
    pump: &mut Pump,
    state: watch::Receiver<Arc<State>>,
    bus: Bus,
) -> std::io::Result<()> {
    let malformed = pump.metrics.lost.with_label_values(&["malformed"]);
    loop {
        let mut guard = pump.ring.readable_mut().await?;
        // Cleared before draining, never after: the kernel wakes a reader only when it
        // had read everything, so a record that arrived between the last read and a
        // later clear would never wake the pump again, and events would stop for good.
        guard.clear_ready();
        let rb = guard.get_inner_mut();
        let mut batch = Vec::new();
        while let Some(item) = rb.next() {
            match decode::parse(&item) {
                Some(ev) => batch.push(ev),
                None => malformed.inc(),
            }
        }
        if batch.is_empty() {
            continue;
        }
        let st = state.borrow().clone();
        // Enriching reads /proc and may hash a large binary for an exec event: let the
        // runtime move the other parts (the control socket among them) off this worker.
        tokio::task::block_in_place(|| {
            for raw in batch {
                let (Ok(kind), Ok(verdict), Ok(reason)) = (
                    EventKind::try_from(raw.kind),
                    Verdict::try_from(raw.verdict),
                    Reason::try_from(raw.reason),
                ) else {
                    malformed.inc();
                    continue;
                };
                let enrolled_now = kind == EventKind::Exec
                    && matches!(
                        raw.detail,
                        ENROLL_EXE | ENROLL_PRINCIPAL | ENROLL_QUARANTINE
                    );
                if enrolled_now
                    && let Some((tx, lost)) = &pump.enrolled
                    && tx.try_send((raw.tgid, raw.identity)).is_err()
                {
                    lost.inc();
                }
                let identity = identity_label(&st, raw.identity);
                let cause = Cause {
                    identity: &identity,
                    kind: kind.as_str(),
                    verdict: verdict.as_str(),
                    reason: reason.as_str(),
                };
                let observed = matches!(
                    kind,
                    EventKind::Connect | EventKind::Sendmsg | EventKind::Exec
                );
                let observe = |o: Observed| {
                    if let Some((tx, dropped)) = &pump.observed
                        && tx.try_send(o).is_err()
                    {
                        dropped.inc();
                    }
                };
                if !bus.admit(cause) {
                    // Counted, not reported: the observer still gets the record, as is.
                    if observed {
                        observe(Observed {
                            raw,
                            exe: None,
                            sha256: None,
                        });
                    }
                    continue;
                }
                match decode::enrich(&raw, &st, &mut pump.digests) {
                    Some(k) => {
                        if observed {
                            observe(Observed {
                                raw,
                                exe: k.exe.clone(),
                                sha256: k.exec.as_ref().and_then(|x| x.sha256.clone()),
                            });
                        }
                        bus.publish(bus::Event::now(Body::Kernel(Box::new(k))));
                    }
                    None => malformed.inc(),
                }
            }
        });
    }
}
