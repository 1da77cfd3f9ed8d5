//! cgroup v2: ids, the tree, launch cgroups and their clean-up (walking and removing a
//! tree are shared with the tests, in `zt_agent_host::cgroup`). Selector globs are
//! matched by `policy::cgroup_glob_matches`.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

pub use zt_agent_host::cgroup::{CgroupError, kill_and_remove, populated, walk};

use super::fs::{Dir, FsError};

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

/// Remove the launch cgroups below `launch_root` (`/zt`: identity, then run id) whose
/// `zt-agent run` is gone and that hold no task: what a launcher killed before its own
/// clean-up (SIGKILL, the OOM killer) leaves. A run id starts with its launcher's pid;
/// a cgroup that still holds tasks stays, and stays enrolled. Returns what was removed.
#[must_use]
pub fn remove_orphan_runs(launch_root: &Path) -> Vec<PathBuf> {
    let dirs = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d).map_or_else(
            |_| Vec::new(),
            |rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            },
        )
    };
    let mut removed = Vec::new();
    for run in dirs(launch_root).iter().flat_map(|i| dirs(i)) {
        let launcher = run
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = launcher else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() || populated(&run) {
            continue;
        }
        let mut tree = walk(&run);
        tree.sort_by_key(|(_, d)| std::cmp::Reverse(d.components().count()));
        if tree.iter().all(|(_, d)| std::fs::remove_dir(d).is_ok()) {
            removed.push(run);
        }
    }
    removed
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Create the launch cgroup `root/parts...` for `run`: missing directories are made
/// root's with mode 0755 whatever the caller's umask (a looser one would let the
/// workload's user create cgroups in it), existing ones must be root's and no looser,
/// and the last one must be new. `root` must be a cgroup2 mount.
pub fn create_launch(root: &Path, parts: &[&str]) -> Result<PathBuf, FsError> {
    let not_cgroup2 = || FsError::Kind {
        path: root.display().to_string(),
        want: "cgroup2 mount",
    };
    let c =
        std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).map_err(|_| not_cgroup2())?;
    // SAFETY: a zeroed statfs is a valid out-parameter; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    #[expect(
        clippy::useless_conversion,
        reason = "f_type is 64 bits wide here but not on every target"
    )]
    let f_type = i64::from(st.f_type);
    if rc != 0 || f_type != CGROUP2_SUPER_MAGIC {
        return Err(not_cgroup2());
    }
    let mut dir = root.to_path_buf();
    for (i, p) in parts.iter().enumerate() {
        dir.push(p);
        if i + 1 == parts.len() {
            Dir::create_new(&dir, 0o755)?;
        } else {
            Dir::ensure(&dir, 0o755)?;
        }
    }
    Ok(dir)
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
