//! bpffs and cgroup2 mounts. Reading mountinfo is shared with the tests and xtask
//! (`zt_agent_host::mounts`); mounting bpffs is the agent's own.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Host(#[from] zt_agent_host::mounts::MountError),
    #[error("bpffs is not mounted at {path} and mounting it failed: {source}")]
    Bpffs {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub fn cgroup2_mount() -> Result<PathBuf, MountError> {
    Ok(zt_agent_host::mounts::cgroup2_mount()?)
}

pub const BPFFS: &str = "/sys/fs/bpf";

/// Mount bpffs at /sys/fs/bpf unless it is there already.
pub fn ensure_bpffs() -> Result<(), MountError> {
    let path = Path::new(BPFFS);
    if zt_agent_host::mounts::is_mounted(&zt_agent_host::mounts::mountinfo()?, path, "bpf") {
        return Ok(());
    }
    let err = |source| MountError::Bpffs {
        path: BPFFS.into(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (src, target, fstype) = (c("bpf"), c(BPFFS), c("bpf"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}
