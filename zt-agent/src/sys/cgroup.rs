//! cgroup v2: ids, the tree, launch cgroups and their clean-up (walking and removing a
//! tree are shared with the tests, in `zt_agent_host::cgroup`). Selector globs are
//! matched by `policy::cgroup_glob_matches`.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

pub use zt_agent_host::cgroup::{CgroupError, kill_and_remove, walk};

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
