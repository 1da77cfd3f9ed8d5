//! Where event lines go: stdout (`-`) or a file, appended. The sink is a bus
//! subscriber; it turns each event into its JSON line and counts what it delivered.
//!
//! Events name identities, binaries and DNS names: the file is root's, mode 0600 (0640
//! with `--events-group`), and opened without following a symlink in a directory no
//! other user can change (`sys::fs`).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use super::json::JsonEvent;
use crate::bus::Event;
use crate::metrics::EventMetrics;
use crate::state::State;
use crate::sys::fs::FsError;

pub enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    /// `-` for stdout, else the file to append to; `group` makes it readable by that
    /// group (0640) rather than by root only (0600).
    pub fn open(spec: &str, group: Option<u32>) -> Result<Self, FsError> {
        if spec == "-" {
            return Ok(Self::Stdout);
        }
        let mode = if group.is_some() { 0o640 } else { 0o600 };
        let f = crate::sys::fs::open_append(Path::new(spec), mode, group)?;
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
