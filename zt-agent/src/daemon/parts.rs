//! The running parts, each a task with a name: the event pump, the sink, the metrics
//! server, the ticker (with the reconciler), the container watch and a watch on the
//! enforcer's thread. The
//! daemon stops when any of them ends, saying which.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::DaemonError;
use super::start::Started;
use super::{event_pump, metrics, ticker};

/// A part's name, and why it ended.
type Ended = (&'static str, String);

pub struct Parts {
    set: JoinSet<Ended>,
    sink: Option<tokio::task::JoinHandle<()>>,
    stop_sink: Option<oneshot::Sender<()>>,
}

fn why(r: std::io::Result<()>) -> String {
    r.err().map_or_else(|| "ended".into(), |e| e.to_string())
}

impl Parts {
    pub fn spawn(s: Started) -> Result<Self, DaemonError> {
        let mut set = JoinSet::new();
        let (state, bus, m) = (s.state.clone(), s.bus.clone(), s.metrics.events.clone());
        let events = s.events;
        set.spawn(async move {
            (
                "event pump",
                why(event_pump::run(events, state, bus, m).await),
            )
        });

        let (stop_sink, stopped) = oneshot::channel();
        let sink = tokio::spawn(s.sink.run(
            s.sink_events,
            s.state.clone(),
            s.metrics.events.clone(),
            stopped,
        ));

        let sources = metrics::Sources {
            kernel: s.metrics.kernel,
            counters: s.counters,
            enforcer: s.enforcer,
            resolver: s.resolver.clone(),
            state: s.state,
        };
        let (listener, registry) = (s.listener, s.metrics.registry);
        set.spawn(async move {
            let addr = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let r = metrics::run(listener, registry, sources).await;
            ("metrics server", format!("{} (on {addr})", why(r)))
        });

        let hup = signal(SignalKind::hangup())?;
        let (reconciler, resolver, containers) = (s.reconciler, s.resolver, s.containers);
        set.spawn(async move {
            ticker::run(reconciler, resolver, hup, containers).await;
            ("ticker", "ended".into())
        });

        let watcher = s.watcher;
        set.spawn(async move {
            watcher.run().await;
            ("container watch", "ended".into())
        });

        let ended = s.enforcer_ended;
        set.spawn(async move {
            let _ = ended.await;
            ("enforcer", "its thread ended".into())
        });
        Ok(Self {
            set,
            sink: Some(sink),
            stop_sink: Some(stop_sink),
        })
    }

    /// The first part to end, and why. Pending while all run.
    pub async fn stopped(&mut self) -> Ended {
        let sink = async {
            match &mut self.sink {
                Some(h) => {
                    let _ = h.await;
                    self.sink = None;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(done) = self.set.join_next() => match done {
                Ok(ended) => ended,
                Err(e) => ("a part", e.to_string()),
            },
            () = sink => ("event sink", "ended".into()),
        }
    }

    /// Stop the producers, then give the sink up to `limit` to write what is queued.
    pub async fn drain(mut self, limit: Duration) {
        self.set.abort_all();
        if let Some(stop) = self.stop_sink.take() {
            let _ = stop.send(());
        }
        if let Some(sink) = self.sink.take() {
            let _ = tokio::time::timeout(limit, sink).await;
        }
    }
}
