//! cgroup v2: ids, the tree, launch cgroups and their clean-up (walking and removing a
//! tree are shared with the tests, in `zt_agent_host::cgroup`). Selector globs are
//! matched by `policy::cgroup_glob_matches`.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

pub use zt_agent_host::cgroup::{CgroupError, kill_and_remove, walk};

/// The kernel's cgroup id is the inode number of the cgroup directory.
pub fn cgroup_id(dir: &Path) -> Result<u64, CgroupError> {
    Ok(std::fs::metadata(dir).map_err(CgroupError::io(dir))?.ino())
}

/// Thread-group ids of the tasks in one cgroup (not its descendants).
#[must_use]
pub fn procs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Create a cgroup (and its parents).
pub fn create(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(CgroupError::io(dir))
}

/// Move the calling process into `dir`.
pub fn enter(dir: &Path) -> Result<(), CgroupError> {
    let f = dir.join("cgroup.procs");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .and_then(|mut fh| fh.write_all(b"0"))
        .map_err(CgroupError::io(&f))
}

/// Why a launch cgroup has no `pids.max`.
#[derive(Debug, thiserror::Error)]
pub enum PidsError {
    #[error(
        "the pids controller is not available to cgroup v2 here (it is not in {path}; a hybrid layout may bind it to cgroup v1)"
    )]
    Unavailable { path: String },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

/// Limit the tasks (processes and threads) in `dir` to `max`: enable the pids
/// controller from `root` (the cgroup2 mount) down to `dir`'s parent, then write
/// `pids.max`. The cgroups on the way must hold no tasks of their own, as launch
/// cgroups' parents never do.
pub fn limit_pids(root: &Path, dir: &Path, max: u64) -> Result<(), PidsError> {
    let controllers = root.join("cgroup.controllers");
    let available = std::fs::read_to_string(&controllers).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == "pids") {
        return Err(PidsError::Unavailable {
            path: controllers.display().to_string(),
        });
    }
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut at = root.to_path_buf();
    for part in rel.iter() {
        let control = at.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&control).unwrap_or_default();
        if !enabled.split_whitespace().any(|c| c == "pids") {
            std::fs::write(&control, b"+pids").map_err(CgroupError::io(&control))?;
        }
        at.push(part);
    }
    let file = dir.join("pids.max");
    std::fs::write(&file, max.to_string()).map_err(CgroupError::io(&file))?;
    Ok(())
}
