//! bpffs and cgroup2 mounts. The cgroup2 mount is detected, never assumed: hybrid
//! hosts mount it at /sys/fs/cgroup/unified, unified ones at /sys/fs/cgroup.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
    #[error(
        "no cgroup2 filesystem is mounted (see /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NoCgroup2,
    #[error("bpffs is not mounted at {path} and mounting it failed: {source}")]
    Bpffs {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Parse mountinfo and return the mount point of the first filesystem of `fstype`.
#[must_use]
pub fn find_mount(mountinfo: &str, fstype: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        // Fields: id parent major:minor root mountpoint opts [optional...] - fstype source superopts
        let mut parts = line.split(" - ");
        let (Some(left), Some(right)) = (parts.next(), parts.next()) else {
            continue;
        };
        if right.split_whitespace().next() != Some(fstype) {
            continue;
        }
        if let Some(mp) = left.split_whitespace().nth(4) {
            return Some(PathBuf::from(unescape(mp)));
        }
    }
    None
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

pub fn cgroup2_mount() -> Result<PathBuf, MountError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    find_mount(&info, "cgroup2").ok_or(MountError::NoCgroup2)
}

pub const BPFFS: &str = "/sys/fs/bpf";

fn is_mounted(path: &Path, fstype: &str) -> Result<bool, MountError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    Ok(info.lines().any(|l| {
        let mut parts = l.split(" - ");
        match (parts.next(), parts.next()) {
            (Some(left), Some(right)) => {
                right.split_whitespace().next() == Some(fstype)
                    && left.split_whitespace().nth(4).map(unescape).as_deref()
                        == Some(&*path.to_string_lossy())
            }
            _ => false,
        }
    }))
}

/// Mount bpffs at /sys/fs/bpf unless it is there already.
pub fn ensure_bpffs() -> Result<(), MountError> {
    let path = Path::new(BPFFS);
    if is_mounted(path, "bpf")? {
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

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate
37 35 0:32 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd
";
    const UNIFIED: &str = "\
35 25 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn detects_hybrid_and_unified_cgroup2() {
        assert_eq!(
            find_mount(HYBRID, "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            find_mount(UNIFIED, "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(find_mount(HYBRID, "bpf"), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
