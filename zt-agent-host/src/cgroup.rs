//! cgroup v2 trees: walking one, and killing and removing one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CgroupError {
    /// The error of an operation on `path`, for `map_err`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Every cgroup directory below `root` (the cgroup2 mount), as (relative path, dir).
#[must_use]
pub fn walk(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rel = dir
            .strip_prefix(root)
            .map_or_else(|_| String::from("/"), |r| format!("/{}", r.display()));
        out.push((rel, dir.clone()));
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    out
}

/// Whether `dir` or a cgroup below it holds a task.
#[must_use]
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// Kill everything left in `dir` and its descendants, wait for it to empty, and remove
/// the directories bottom-up.
pub fn kill_and_remove(dir: &Path) -> Result<(), CgroupError> {
    if !dir.exists() {
        return Ok(());
    }
    let kill = dir.join("cgroup.kill");
    if populated(dir) {
        std::fs::write(&kill, b"1").map_err(CgroupError::io(&kill))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while populated(dir) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut dirs = walk(dir);
    // Deepest first.
    dirs.sort_by_key(|(_, d)| std::cmp::Reverse(d.components().count()));
    for (_, d) in dirs {
        std::fs::remove_dir(&d).map_err(CgroupError::io(&d))?;
    }
    Ok(())
}
