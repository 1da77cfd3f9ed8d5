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
