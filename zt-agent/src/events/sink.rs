//! Where event lines go: stdout (`-`) or a file, appended. The sink is a bus
//! subscriber; it turns each event into its JSON line, numbers and seals it into the
//! audit trail (`chain`), and counts what it delivered.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::chain::{self, Head};
use super::json::JsonEvent;
use crate::bus::Event;
use crate::metrics::EventMetrics;
use crate::state::State;

enum Out {
    Stdout,
    File(std::fs::File),
}

pub struct Sink {
    out: Out,
    /// The last line's `seq` and `chain`.
    head: Head,
    /// Where the head is kept between runs.
    state_dir: PathBuf,
    head_saved: Option<Instant>,
}

/// How often, at most, the head is written to the state dir while lines flow (and
/// always when the sink stops).
const HEAD_EVERY: Duration = Duration::from_millis(200);

impl Sink {
    /// Open `spec` (`-` for stdout) and continue the chain from its last line, or
    /// from the head kept in `state_dir`.
    pub fn open(spec: &str, state_dir: &Path) -> std::io::Result<Self> {
        let kept = chain::read_head(state_dir);
        let (out, head) = if spec == "-" {
            (Out::Stdout, kept)
        } else {
            let path = PathBuf::from(spec);
            let in_file = chain::head_of_file(&path);
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            (Out::File(f), in_file.or(kept))
        };
        Ok(Self {
            out,
            head: head.unwrap_or_default(),
            state_dir: state_dir.to_path_buf(),
            head_saved: None,
        })
    }

    /// Number, seal and write one line.
    pub fn write(&mut self, ev: &mut JsonEvent) -> std::io::Result<()> {
        ev.seq = self.head.seq + 1;
        let body = serde_json::to_vec(ev).map_err(std::io::Error::other)?;
        let (mut line, link) = chain::seal(&self.head.chain, &body);
        line.push(b'\n');
        match &mut self.out {
            Out::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line)?;
                out.flush()?;
            }
            Out::File(f) => f.write_all(&line)?,
        }
        self.head = Head {
            seq: ev.seq,
            chain: link,
        };
        Ok(())
    }

    /// Keep the head in the state dir, at most every `HEAD_EVERY` unless `now`.
    fn save_head(&mut self, now: bool) {
        if !now && self.head_saved.is_some_and(|t| t.elapsed() < HEAD_EVERY) {
            return;
        }
        if self.head.seq == 0 {
            return;
        }
        if let Err(e) = chain::write_head(&self.state_dir, &self.head) {
            tracing::warn!(error = %e, "keeping the audit chain's head");
        }
        self.head_saved = Some(Instant::now());
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
        let mut tick = tokio::time::interval(HEAD_EVERY);
        let mut saved = self.head.seq;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => {
                        self.deliver(&ev, &state, &metrics);
                        self.save_head(false);
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    // Lines written since the last save, in a burst that ended.
                    if self.head.seq != saved {
                        self.save_head(true);
                        saved = self.head.seq;
                    }
                }
                _ = &mut stop => break,
            }
        }
        while let Ok(ev) = events.try_recv() {
            self.deliver(&ev, &state, &metrics);
        }
        self.save_head(true);
    }

    fn deliver(&mut self, ev: &Event, state: &watch::Receiver<Arc<State>>, metrics: &EventMetrics) {
        let st = state.borrow().clone();
        let mut line = JsonEvent::of(ev, &st);
        if self.write(&mut line).is_ok() {
            metrics
                .delivered
                .with_label_values(&[line.kind, line.verdict.unwrap_or("none")])
                .inc();
        } else {
            metrics.lost.with_label_values(&["sink_error"]).inc();
        }
    }
}
