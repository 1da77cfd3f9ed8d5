//! The running parts, each a task with a name: the event pump, the sink, the metrics
//! server, the ticker (with the reconciler), the container watch, the resolver's
//! sockets and its event builder, the tamper guard, the socket adopter, the grant
//! manager, the control socket, the SPIFFE Workload API and its key keeper, the
//! observer (flows and execs into the observation store), and a watch on the
//! enforcer's thread.
//!
//! A supervisor runs each part: when one fails (an error or a panic), it says which,
//! marks it down in `zt_agent_part_up{part}`, and starts it again after a pause, counted
//! in `zt_agent_part_restarts_total{part}`. Enforcement never pauses meanwhile: the
//! kernel keeps judging on the pinned programs and maps. A part that fails
//! [`RESTARTS`] times within [`WINDOW`], or the enforcer's thread (which alone holds the
//! policy maps), stops the daemon with a non-zero exit, so that its own supervisor
//! starts a new one, which adopts the pinned state.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::DaemonError;
use super::start::Started;
use super::{control, event_pump, guard, metrics, sockets, ticker};
use crate::events::sink::SinkPart;
use crate::metrics::PartMetrics;

/// A part's name, and why it ended.
type Ended = (&'static str, String);

/// Failures of one part within [`WINDOW`] after which the daemon stops.
pub const RESTARTS: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// First pause before a restart; it doubles with each failure in the window.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Part names: the `part` label.
pub mod name {
    pub const EVENT_PUMP: &str = "event_pump";
    pub const EVENT_SINK: &str = "event_sink";
    pub const METRICS: &str = "metrics";
    pub const TICKER: &str = "ticker";
    pub const CONTAINER_WATCH: &str = "container_watch";
    pub const ENFORCER: &str = "enforcer";
    pub const DNS_EVENTS: &str = "dns_events";
    pub const TAMPER_GUARD: &str = "tamper_guard";
    pub const SOCKET_ADOPTER: &str = "socket_adopter";
    pub const DNS_UDP4: &str = "dns_udp4";
    pub const DNS_UDP6: &str = "dns_udp6";
    pub const DNS_TCP4: &str = "dns_tcp4";
    pub const DNS_TCP6: &str = "dns_tcp6";
    pub const GRANTS: &str = "grant_manager";
    pub const CONTROL: &str = "control_socket";
    pub const WORKLOAD_API: &str = "workload_api";
    pub const SVID_KEYS: &str = "svid_keys";
    pub const OBSERVER: &str = "observer";
    pub const ACCOUNTANT: &str = "accountant";
}

pub struct Parts {
    set: JoinSet<Ended>,
    sink: Arc<Mutex<SinkPart>>,
}

/// Run `start()` until it has failed [`RESTARTS`] times within [`WINDOW`], starting it
/// again after each failure. Each run is a task of its own, so that a panic is caught
/// here and reported with the part's name.
pub async fn supervise<F>(
    part: &'static str,
    mut start: impl FnMut() -> F + Send,
    health: PartMetrics,
) -> Ended
where
    F: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut failures: VecDeque<Instant> = VecDeque::new();
    loop {
        health.set_up(part, true);
        let why = match tokio::spawn(start()).await {
            Ok(Ok(())) => "ended".to_owned(),
            Ok(Err(e)) => e,
            Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
            Err(e) => e.to_string(),
        };
        health.set_up(part, false);
        failures.retain(|t| t.elapsed() < WINDOW);
        if failures.len() + 1 >= RESTARTS {
            tracing::error!(
                part,
                why,
                "part failed {RESTARTS} times within {} s; stopping the daemon (enforcement stays in place)",
                WINDOW.as_secs()
            );
            return (
                part,
                format!(
                    "{why} (failed {RESTARTS} times within {} s)",
                    WINDOW.as_secs()
                ),
            );
        }
        let pause = FIRST_PAUSE * (1 << failures.len());
        failures.push_back(Instant::now());
        tracing::error!(
            part,
            why,
            pause_ms = pause.as_millis(),
            "part failed; starting it again (enforcement stays in place)"
        );
        tokio::time::sleep(pause).await;
        health.restarted(part);
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn why(r: std::io::Result<()>) -> Result<(), String> {
    r.map_err(|e| e.to_string())
}

impl Parts {
    pub fn spawn(s: Started) -> Result<Self, DaemonError> {
        let mut set = JoinSet::new();
        let health = s.metrics.parts.clone();
        for part in [
            name::EVENT_PUMP,
            name::EVENT_SINK,
            name::METRICS,
            name::TICKER,
            name::CONTAINER_WATCH,
            name::ENFORCER,
            name::DNS_EVENTS,
            name::TAMPER_GUARD,
            name::SOCKET_ADOPTER,
            name::GRANTS,
            name::CONTROL,
            name::OBSERVER,
            name::ACCOUNTANT,
        ] {
            health.set_up(part, false);
        }

        let pump = Arc::new(Mutex::new(s.pump));
        let (state, bus) = (s.state.clone(), s.bus.clone());
        set.spawn(supervise(
            name::EVENT_PUMP,
            move || {
                let (pump, state, bus) = (pump.clone(), state.clone(), bus.clone());
                async move { why(event_pump::run(&mut *pump.lock().await, state, bus).await) }
            },
            health.clone(),
        ));

        let sink = Arc::new(Mutex::new(s.sink));
        let shared = sink.clone();
        set.spawn(supervise(
            name::EVENT_SINK,
            move || {
                let sink = shared.clone();
                async move {
                    sink.lock().await.run().await;
                    Ok(())
                }
            },
            health.clone(),
        ));

        let guarded = Arc::new(Mutex::new(s.guard));
        let (bus, tamper) = (s.bus.clone(), s.metrics.tamper.clone());
        set.spawn(supervise(
            name::TAMPER_GUARD,
            move || {
                let (g, bus, m) = (guarded.clone(), bus.clone(), tamper.clone());
                async move {
                    guard::run(&mut *g.lock().await, &bus, &m).await;
                    Ok(())
                }
            },
            health.clone(),
        ));

        let exec_events = Arc::new(Mutex::new(s.enrolled));
        let enforcer = s.enforcer.clone();
        set.spawn(supervise(
            name::SOCKET_ADOPTER,
            move || {
                let (events, enforcer) = (exec_events.clone(), enforcer.clone());
                async move {
                    sockets::run(&mut *events.lock().await, &enforcer).await;
                    Ok(())
                }
            },
            health.clone(),
        ));

        let sources = metrics::Sources {
            kernel: s.metrics.kernel,
            counters: s.counters,
            enforcer: s.enforcer,
            resolver: s.resolver.clone(),
            state: s.state.clone(),
            traffic: s.metrics.traffic.clone(),
            last_traffic: BTreeMap::new(),
        };
        let refresh = metrics::refresh(sources);
        let (listener, registry) = (s.listener, s.metrics.registry);
        set.spawn(supervise(
            name::METRICS,
            move || {
                let (l, r, f) = (listener.clone(), registry.clone(), refresh.clone());
                metrics::serve(l, r, f)
            },
            health.clone(),
        ));

        // The signal handler is installed once, before any part runs, so that a SIGHUP
        // is never the default action (exit) while the ticker restarts.
        let hup = Arc::new(Mutex::new(signal(SignalKind::hangup())?));
        let reconciler = Arc::new(Mutex::new(s.reconciler));
        let resolver = s.resolver.clone();
        let containers = Arc::new(Mutex::new(s.containers));
        set.spawn(supervise(
            name::TICKER,
            move || {
                let (r, d, h) = (reconciler.clone(), resolver.clone(), hup.clone());
                let c = containers.clone();
                async move {
                    ticker::run(
                        &mut *r.lock().await,
                        &d,
                        &mut *h.lock().await,
                        &mut *c.lock().await,
                    )
                    .await;
                    Ok(())
                }
            },
            health.clone(),
        ));

        let watcher = Arc::new(s.watcher);
        set.spawn(supervise(
            name::CONTAINER_WATCH,
            move || {
                let w = watcher.clone();
                async move {
                    w.run().await;
                    Ok(())
                }
            },
            health.clone(),
        ));

        let observer = Arc::new(Mutex::new(s.observer));
        set.spawn(supervise(
            name::OBSERVER,
            move || {
                let observer = observer.clone();
                async move { observer.lock().await.run().await }
            },
            health.clone(),
        ));

        let accountant = Arc::new(Mutex::new(s.accountant));
        set.spawn(supervise(
            name::ACCOUNTANT,
            move || {
                let a = accountant.clone();
                async move { a.lock().await.run().await }
            },
            health.clone(),
        ));

        let grants = Arc::new(Mutex::new(s.grants));
        set.spawn(supervise(
            name::GRANTS,
            move || {
                let grants = grants.clone();
                async move {
                    let mut g = grants.lock().await;
                    let (manager, inbox) = &mut *g;
                    manager.run(inbox).await;
                    Ok(())
                }
            },
            health.clone(),
        ));
        let (listener, tasks, calls) = s.control;
        let (listener, tasks) = (Arc::new(listener), Arc::new(tasks));
        set.spawn(supervise(
            name::CONTROL,
            move || {
                let (l, t, c) = (listener.clone(), tasks.clone(), calls.clone());
                async move { why(control::serve(l, t, c).await) }
            },
            health.clone(),
        ));

        let events = Arc::new(Mutex::new(s.dns_events));
        set.spawn(supervise(
            name::DNS_EVENTS,
            move || {
                let events = events.clone();
                async move {
                    events.lock().await.run().await;
                    Ok(())
                }
            },
            health.clone(),
        ));

        // The resolver's sockets are served on its own thread's runtime; each socket is a
        // part of its own there.
        let dns = s.dns_serving;
        for sock in dns.udp {
            let part = if sock.ipv6() {
                name::DNS_UDP6
            } else {
                name::DNS_UDP4
            };
            let (r, h) = (s.resolver.clone(), health.clone());
            h.set_up(part, false);
            let run = dns.runtime.spawn(supervise(
                part,
                move || r.clone().serve_udp(sock.clone()),
                h,
            ));
            set.spawn(async move { run.await.unwrap_or((part, "its runtime ended".into())) });
        }
        for l in dns.tcp {
            let part = if l.ipv6() {
                name::DNS_TCP6
            } else {
                name::DNS_TCP4
            };
            let (r, h) = (s.resolver.clone(), health.clone());
            h.set_up(part, false);
            let run = dns
                .runtime
                .spawn(supervise(part, move || r.clone().serve_tcp(l.clone()), h));
            set.spawn(async move { run.await.unwrap_or((part, "its runtime ended".into())) });
        }

        if let Some(w) = s.workload {
            let keys = w.clone();
            set.spawn(supervise(
                name::WORKLOAD_API,
                move || w.clone().serve(),
                health.clone(),
            ));
            set.spawn(supervise(
                name::SVID_KEYS,
                move || keys.clone().keep(),
                health.clone(),
            ));
        }

        // The enforcer alone holds the policy maps: if its thread ends, the daemon stops
        // and a new one adopts what is pinned.
        let ended = s.enforcer_ended;
        health.set_up(name::ENFORCER, true);
        let h = health.clone();
        set.spawn(async move {
            let _ = ended.await;
            h.set_up(name::ENFORCER, false);
            (name::ENFORCER, "its thread ended".into())
        });
        Ok(Self { set, sink })
    }

    /// The first part that ended for good, and why. Pending while all run.
    pub async fn stopped(&mut self) -> Ended {
        match self.set.join_next().await {
            Some(Ok(ended)) => ended,
            Some(Err(e)) => ("a supervisor", e.to_string()),
            None => std::future::pending().await,
        }
    }

    /// Stop every part, then give the sink up to `limit` to write what is queued.
    pub async fn drain(mut self, limit: Duration) {
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
        let _ = tokio::time::timeout(limit, async { self.sink.lock().await.drain() }).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::metrics::Metrics;

    #[tokio::test(start_paused = true)]
    async fn a_failing_part_is_restarted_then_given_up_on() {
        let m = Metrics::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let (part, why) = supervise(
            "flaky",
            move || {
                let n = r.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n.is_multiple_of(2) {
                        Err(format!("failure {n}"))
                    } else {
                        panic!("panic {n}")
                    }
                }
            },
            m.parts.clone(),
        )
        .await;
        assert_eq!(part, "flaky");
        assert!(why.contains("failed 5 times"), "{why}");
        assert_eq!(runs.load(Ordering::SeqCst), RESTARTS);
        assert_eq!(
            m.parts.restarts.with_label_values(&["flaky"]).get(),
            u64::try_from(RESTARTS - 1).expect("small")
        );
        assert_eq!(m.parts.up.with_label_values(&["flaky"]).get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_out_in_time_never_stop_it() {
        let m = Metrics::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let supervised = supervise(
            "rare",
            move || {
                let n = r.fetch_add(1, Ordering::SeqCst);
                async move {
                    // Runs a while, then fails: never RESTARTS times in a window.
                    tokio::time::sleep(WINDOW / 2).await;
                    Err(format!("failure {n}"))
                }
            },
            m.parts.clone(),
        );
        let outcome = tokio::time::timeout(WINDOW * 20, supervised).await;
        assert!(outcome.is_err(), "gave up: {outcome:?}");
        assert!(runs.load(Ordering::SeqCst) >= 20);
        assert_eq!(m.parts.up.with_label_values(&["rare"]).get(), 1);
    }
}
