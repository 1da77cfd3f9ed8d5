//! Where event lines go: stdout (`-`) or a file, appended.

use std::io::Write as _;
use std::path::PathBuf;

use super::decode::JsonEvent;

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
}
