//! Where event lines go: stdout (`-`) or a file, appended. The sink is a bus
//! subscriber; it turns each event into its JSON line and counts what it delivered.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::json::JsonEvent;
use crate::bus::Event;
use crate::metrics::EventMetrics;
use crate::state::State;

pub enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    pub fn open(spec: &str) -> std::io::Result<Self> {
        if spec == "-" {
            return Ok(Self::Stdout);
        }
        let path = PathBuf::from(spec);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::File(f))
    }

    pub fn write(&mut self, ev: &JsonEvent) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(ev).map_err(std::io::Error::other)?;
        line.push(b'\n');
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            Self::File(f) => f.write_all(&line),
        }
    }

    /// Write every event the bus brings until the bus is gone, or until `stop`, then
    /// what is still queued. Owners, SPIFFE ids and the policy hash come from the state
    /// in force when the line is written.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Arc<Event>>,
        state: watch::Receiver<Arc<State>>,
        metrics: EventMetrics,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.deliver(&ev, &state, &metrics),
                    None => return,
                },
                _ = &mut stop => break,
            }
        }
        while let Ok(ev) = events.try_recv() {
            self.deliver(&ev, &state, &metrics);
        }
    }

    fn deliver(&mut self, ev: &Event, state: &watch::Receiver<Arc<State>>, metrics: &EventMetrics) {
        let st = state.borrow().clone();
        let line = JsonEvent::of(ev, &st);
        if self.write(&line).is_ok() {
            metrics
                .delivered
                .with_label_values(&[line.kind, line.verdict.unwrap_or("none")])
                .inc();
        } else {
            metrics.lost.with_label_values(&["sink_error"]).inc();
        }
    }
}
