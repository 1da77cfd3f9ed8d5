//! Where event lines go: stdout (`-`) or a file, appended. The sink is a bus
//! subscriber; it turns each event into its JSON line, counts what it delivered, and
//! writes the summaries of what the limits left out (see `limit`).
//!
//! Events name identities, binaries and DNS names: the file is root's, mode 0600 (0640
//! with `--events-group`), and opened without following a symlink in a directory no
//! other user can change (`sys::fs`), every time it is opened.
//!
//! The file can be rotated both ways logrotate does it: `copytruncate` needs nothing
//! (lines are appended, so they go to the new end), and after a rename (`create`) a
//! SIGHUP makes the sink open the path again. With a size cap the sink rotates on its
//! own: `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2` and so on, keeping `keep`
//! old files.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio::sync::{mpsc, watch};

use super::json::JsonEvent;
use super::limit::Limits;
use crate::bus::{self, Event};
use crate::metrics::EventMetrics;
use crate::state::State;
use crate::sys::fs::FsError;

/// How often the summaries of suppressed events are written.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(2);

/// When the sink rotates its file by itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rotation {
    /// Size at which the file is rotated; 0: never.
    pub max_bytes: u64,
    /// Rotated files kept (`PATH.1` ... `PATH.keep`); 0: the file is emptied instead.
    pub keep: usize,
}

pub struct Sink {
    out: Out,
    rotation: Rotation,
    /// The group that may read the file, if any (mode 0640 rather than 0600).
    group: Option<u32>,
    /// Bytes in the file, as far as this sink knows (another process may have
    /// truncated it: checked before rotating).
    size: u64,
}

enum Out {
    Stdout,
    File { path: PathBuf, file: std::fs::File },
}

/// The one place the event file is opened, for appending: never through a symlink,
/// created with its mode, refused when another user owns it or may write it.
fn open_file(path: &Path, group: Option<u32>) -> Result<std::fs::File, FsError> {
    let mode = if group.is_some() { 0o640 } else { 0o600 };
    crate::sys::fs::open_append(path, mode, group)
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

impl Sink {
    /// `-` for stdout, else the file to append to; `group` makes it readable by that
    /// group (0640) rather than by root only (0600).
    pub fn open(spec: &str, rotation: Rotation, group: Option<u32>) -> Result<Self, FsError> {
        if spec == "-" {
            return Ok(Self {
                out: Out::Stdout,
                rotation,
                group,
                size: 0,
            });
        }
        let path = PathBuf::from(spec);
        let file = open_file(&path, group)?;
        let size = file.metadata().map_err(FsError::io(&path))?.len();
        Ok(Self {
            out: Out::File { path, file },
            rotation,
            group,
            size,
        })
    }

    /// Open the path again (after logrotate moved the file away).
    pub fn reopen(&mut self) -> std::io::Result<()> {
        if let Out::File { path, file } = &mut self.out {
            let f = open_file(path, self.group).map_err(std::io::Error::other)?;
            self.size = f.metadata()?.len();
            *file = f;
        }
        Ok(())
    }

    /// Rotate if `more` bytes would take the file past the cap.
    fn rotate_for(&mut self, more: u64) -> std::io::Result<()> {
        let max = self.rotation.max_bytes;
        let Out::File { path, file } = &mut self.out else {
            return Ok(());
        };
        if max == 0 || self.size + more <= max {
            return Ok(());
        }
        // Someone else may have emptied it (copytruncate).
        self.size = file.metadata()?.len();
        if self.size == 0 || self.size + more <= max {
            return Ok(());
        }
        let keep = self.rotation.keep;
        if keep == 0 {
            file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(numbered(path, keep));
            for n in (1..keep).rev() {
                let from = numbered(path, n);
                if from.exists() {
                    std::fs::rename(&from, numbered(path, n + 1))?;
                }
            }
            std::fs::rename(&*path, numbered(path, 1))?;
            *file = open_file(path, self.group).map_err(std::io::Error::other)?;
        }
        self.size = 0;
        Ok(())
    }

    pub fn write(&mut self, ev: &JsonEvent) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(ev).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.rotate_for(line.len() as u64)?;
        match &mut self.out {
            Out::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            Out::File { file, .. } => {
                file.write_all(&line)?;
                self.size += line.len() as u64;
                Ok(())
            }
        }
    }
}

/// The sink as a part of the daemon: its queue on the bus, the limits whose summaries
/// it writes, and SIGHUP.
pub struct SinkPart {
    pub sink: Sink,
    pub events: mpsc::Receiver<Arc<Event>>,
    pub state: watch::Receiver<Arc<State>>,
    pub metrics: EventMetrics,
    pub limits: Limits,
    pub hup: Signal,
}

impl SinkPart {
    /// Write every event the bus brings until the bus is gone. Owners, SPIFFE ids and
    /// the policy hash come from the state in force when the line is written.
    pub async fn run(&mut self) {
        let mut summaries = tokio::time::interval(SUMMARY_EVERY);
        loop {
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ev) => self.deliver(&ev),
                    None => return,
                },
                _ = self.hup.recv() => {
                    if let Err(e) = self.sink.reopen() {
                        tracing::warn!(error = %e, "could not open the event file again; writing to the old one");
                    }
                }
                _ = summaries.tick() => self.summaries(),
            }
        }
    }

    /// Write what is still queued, and the last summaries.
    pub fn drain(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.deliver(&ev);
        }
        self.summaries();
    }

    fn deliver(&mut self, ev: &Event) {
        let st = self.state.borrow().clone();
        let line = JsonEvent::of(ev, &st);
        self.write(&line);
    }

    fn summaries(&mut self) {
        let st = self.state.borrow().clone();
        let time = bus::now_rfc3339();
        for s in self.limits.take() {
            let line = JsonEvent::suppressed(&time, &s, SUMMARY_EVERY, &st);
            self.write(&line);
        }
    }

    fn write(&mut self, line: &JsonEvent) {
        if self.sink.write(line).is_ok() {
            self.metrics
                .delivered
                .with_label_values(&[line.kind, line.verdict.unwrap_or("none")])
                .inc();
        } else {
            self.metrics.lost.with_label_values(&["sink_error"]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Body;
    use crate::events::FileEvent;

    fn line(n: usize) -> JsonEvent {
        let ev = Event::now(Body::File(FileEvent {
            identity: format!("i{n}"),
            reason: "file_unresolved",
            detail: "x".repeat(100),
        }));
        JsonEvent::of(&ev, &State::default())
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zt-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn lines(p: &Path) -> usize {
        std::fs::read_to_string(p).map_or(0, |s| s.lines().count())
    }

    #[test]
    fn a_size_cap_rotates_and_keeps_that_many_files() {
        let d = dir("rotate");
        let path = d.join("events.jsonl");
        let rot = Rotation {
            max_bytes: 2_000,
            keep: 2,
        };
        let mut s = Sink::open(path.to_str().expect("utf8"), rot, None).expect("open");
        for n in 0..100 {
            s.write(&line(n)).expect("write");
        }
        for p in [&path, &numbered(&path, 1), &numbered(&path, 2)] {
            let len = std::fs::metadata(p).expect("exists").len();
            assert!(len > 0 && len <= 2_000, "{}: {len}", p.display());
        }
        assert!(!numbered(&path, 3).exists());
        // The newest line is in the current file, whole.
        let last = std::fs::read_to_string(&path).expect("read");
        assert!(last.ends_with("\n") && last.contains("\"i99\""), "{last}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn copytruncate_and_rename_then_reopen_both_lose_nothing() {
        let d = dir("logrotate");
        let path = d.join("events.jsonl");
        let rot = Rotation {
            max_bytes: 1_000_000,
            keep: 1,
        };
        let mut s = Sink::open(path.to_str().expect("utf8"), rot, None).expect("open");
        s.write(&line(0)).expect("write");
        // copytruncate: the next line starts the emptied file.
        std::fs::copy(&path, d.join("copy")).expect("copy");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        s.write(&line(1)).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with('{') && text.contains("\"i1\""), "{text:?}");
        // create: renamed away, then SIGHUP's reopen.
        std::fs::rename(&path, d.join("old")).expect("rename");
        s.write(&line(2)).expect("write");
        s.reopen().expect("reopen");
        s.write(&line(3)).expect("write");
        assert_eq!(lines(&d.join("old")), 2);
        assert_eq!(lines(&path), 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
