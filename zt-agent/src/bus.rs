//! The in-process event bus: kernel, DNS, file, tamper and grant events (next: anomalies) as
//! one typed enum, from their producers to every subscriber. Events become JSON only at
//! the sink.
//!
//! Each subscriber has a bounded queue of its own. Publishing never waits: an event a
//! subscriber has no room for is dropped for that subscriber alone and counted in
//! `zt_agent_events_lost_total{reason="<subscriber>_backlog"}`, so a slow consumer
//! never holds up enforcement, the producers or the other consumers.
//!
//! Before a producer spends anything on an event (reading /proc, hashing a file), it
//! asks [`Bus::admit`]: the per-identity and per-cause budgets of `events::limit` say
//! whether the event is reported or only counted.

use std::sync::Arc;

use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::events::limit::{Cause, Limits};
use crate::events::{
    AnomalyEvent, DnsEvent, FileEvent, GrantEvent, KernelEvent, SvidEvent, TamperEvent,
};
use crate::metrics::EventMetrics;

/// One event, stamped when it was produced.
#[derive(Clone, Debug)]
pub struct Event {
    /// RFC 3339, UTC.
    pub time: String,
    pub body: Body,
}

#[derive(Clone, Debug)]
pub enum Body {
    /// A decision the kernel reported through the ring buffer, with what /proc told
    /// about the task when it arrived.
    Kernel(Box<KernelEvent>),
    /// A query the resolver answered or refused.
    Dns(Box<DnsEvent>),
    /// The daemon found a file the policy names missing, or failing its digest.
    File(FileEvent),
    /// Enforcement was tampered with: a program detached, a pin removed.
    Tamper(TamperEvent),
    /// A grant given, requested, decided or ended.
    Grant(Box<GrantEvent>),
    /// The Workload API handed out an SVID or refused a caller.
    Svid(Box<SvidEvent>),
    /// An identity departed from what it may or usually does.
    Anomaly(Box<AnomalyEvent>),
}

impl Event {
    #[must_use]
    pub fn now(body: Body) -> Self {
        Self {
            time: now_rfc3339(),
            body,
        }
    }
}

#[must_use]
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

struct Subscriber {
    tx: mpsc::Sender<Arc<Event>>,
    lost: IntCounter,
    /// The events it takes; the others never use its queue.
    wants: fn(&Body) -> bool,
}

/// The publishing end; cheap to clone, one per producer.
#[derive(Clone)]
pub struct Bus {
    subscribers: Arc<[Subscriber]>,
    limits: Limits,
}

impl Bus {
    /// Whether an event of `cause` is within its budgets (and so to be published).
    #[must_use]
    pub fn admit(&self, cause: Cause<'_>) -> bool {
        self.limits.admit(cause)
    }

    /// Hand `event` to every subscriber that has room for it.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        for s in self.subscribers.iter().filter(|s| (s.wants)(&event.body)) {
            if s.tx.try_send(event.clone()).is_err() {
                s.lost.inc();
            }
        }
    }
}

/// Subscribers are known before the bus starts: every part of the daemon that listens
/// subscribes while the daemon is put together.
pub struct Builder {
    subscribers: Vec<Subscriber>,
    metrics: EventMetrics,
    limits: Limits,
}

impl Builder {
    #[must_use]
    pub fn new(metrics: &EventMetrics, limits: Limits) -> Self {
        Self {
            subscribers: Vec::new(),
            metrics: metrics.clone(),
            limits,
        }
    }

    /// A queue of `capacity` events for the subscriber `name` (a metric label).
    pub fn subscribe(&mut self, name: &str, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        self.subscribe_to(name, capacity, |_| true)
    }

    /// A queue of `capacity` events for `name` that takes only the events `wants`
    /// picks, so that the others never fill it.
    pub fn subscribe_to(
        &mut self,
        name: &str,
        capacity: usize,
        wants: fn(&Body) -> bool,
    ) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity);
        let lost = self
            .metrics
            .lost
            .with_label_values(&[&format!("{name}_backlog")]);
        lost.inc_by(0);
        self.subscribers.push(Subscriber { tx, lost, wants });
        rx
    }

    #[must_use]
    pub fn build(self) -> Bus {
        Bus {
            subscribers: self.subscribers.into(),
            limits: self.limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn file_event(n: usize) -> Event {
        Event::now(Body::File(FileEvent {
            identity: format!("i{n}"),
            reason: "file_unresolved",
            detail: String::new(),
        }))
    }

    #[test]
    fn slow_subscriber_loses_alone_and_counts() {
        let m = Metrics::new();
        let limits = Limits::new(
            crate::events::limit::Budget {
                per_second: 1.0,
                burst: 1.0,
            },
            m.events.suppressed.clone(),
        );
        let mut b = Builder::new(&m.events, limits);
        let mut fast = b.subscribe("fast", 8);
        let slow = b.subscribe("slow", 2);
        let bus = b.build();
        for n in 0..5 {
            bus.publish(file_event(n));
            // The fast one keeps up.
            assert!(fast.try_recv().is_ok());
        }
        assert_eq!(slow.len(), 2);
        let lost = |r: &str| m.events.lost.with_label_values(&[r]).get();
        assert_eq!(lost("slow_backlog"), 3);
        assert_eq!(lost("fast_backlog"), 0);
    }

    #[test]
    fn a_picky_subscriber_gets_only_what_it_wants() {
        let m = Metrics::new();
        let limits = Limits::new(
            crate::events::limit::Budget {
                per_second: 1.0,
                burst: 1.0,
            },
            m.events.suppressed.clone(),
        );
        let mut b = Builder::new(&m.events, limits);
        let mut none = b.subscribe_to("none", 1, |_| false);
        let bus = b.build();
        for n in 0..3 {
            bus.publish(file_event(n));
        }
        assert!(none.try_recv().is_err());
        assert_eq!(m.events.lost.with_label_values(&["none_backlog"]).get(), 0);
    }
}
