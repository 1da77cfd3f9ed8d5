//! Mounts, from /proc/self/mountinfo. The cgroup2 mount is detected, never assumed:
//! hybrid hosts mount it at /sys/fs/cgroup/unified, unified ones at /sys/fs/cgroup.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
    #[error(
        "no cgroup2 filesystem is mounted (see /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NoCgroup2,
}

/// This process's mount table.
pub fn mountinfo() -> Result<String, MountError> {
    std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)
}

/// (mount point, filesystem type) of every line of a mountinfo.
fn mounts(mountinfo: &str) -> impl Iterator<Item = (String, &str)> {
    mountinfo.lines().filter_map(|line| {
        // Fields: id parent major:minor root mountpoint opts [optional...] - fstype source superopts
        let mut parts = line.split(" - ");
        let (left, right) = (parts.next()?, parts.next()?);
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        Some((unescape(mount_point), fstype))
    })
}

/// The mount point of the first filesystem of `fstype` in `mountinfo`.
#[must_use]
pub fn find_mount(mountinfo: &str, fstype: &str) -> Option<PathBuf> {
    mounts(mountinfo)
        .find(|(_, t)| *t == fstype)
        .map(|(mp, _)| PathBuf::from(mp))
}

/// Whether a filesystem of `fstype` is mounted at `path` in `mountinfo`.
#[must_use]
pub fn is_mounted(mountinfo: &str, path: &Path, fstype: &str) -> bool {
    mounts(mountinfo).any(|(mp, t)| t == fstype && mp == *path.to_string_lossy())
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

/// Where cgroup2 is mounted on this host.
pub fn cgroup2_mount() -> Result<PathBuf, MountError> {
    find_mount(&mountinfo()?, "cgroup2").ok_or(MountError::NoCgroup2)
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
    fn is_mounted_matches_path_and_type() {
        let cg = Path::new("/sys/fs/cgroup/unified");
        assert!(is_mounted(HYBRID, cg, "cgroup2"));
        assert!(!is_mounted(HYBRID, cg, "tmpfs"));
        assert!(!is_mounted(UNIFIED, cg, "cgroup2"));
        let spaced = "40 25 0:40 / /mnt/a\\040b rw - tmpfs tmpfs rw\n";
        assert!(is_mounted(spaced, Path::new("/mnt/a b"), "tmpfs"));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
