//! Files as the kernel's exec hook sees them: `(s_dev, i_ino)` plus the change time.
//!
//! stat()'s st_dev is not always the kernel's `inode->i_sb->s_dev`: overlayfs reports
//! a per-layer pseudo device for files when its layers sit on different filesystems,
//! and btrfs reports a per-subvolume device. The superblock's device is what the
//! mount table shows for the mount the file was reached through, so the device comes
//! from mountinfo, looked up by statx's mount id. The inode number and the change time
//! are the same in both views.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};
use zt_agent_common::{FileKey, FileStamp};

/// Largest binary the daemon digests for a policy (`sha256` pins).
pub const MAX_POLICY_DIGEST_BYTES: u64 = 4 << 30;

/// A file's kernel identity and its change time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub key: FileKey,
    pub stamp: FileStamp,
}

impl FileId {
    /// `dev:ino` in the kernel's numbering, for logs and events.
    #[must_use]
    pub fn describe(key: &FileKey) -> String {
        format!("{}:{}:{}", key.dev >> 20, key.dev & 0xf_ffff, key.ino)
    }
}

/// Mount id -> superblock device (kernel encoding), from one mountinfo.
#[derive(Clone, Debug, Default)]
pub struct MountDevs(HashMap<u64, u32>);

impl MountDevs {
    /// The mount table of `pid`'s mount namespace (`None`: this process's).
    pub fn read(pid: Option<u32>) -> std::io::Result<Self> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/mountinfo"),
            None => "/proc/self/mountinfo".to_owned(),
        };
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    #[must_use]
    pub fn parse(mountinfo: &str) -> Self {
        let mut m = HashMap::new();
        for line in mountinfo.lines() {
            // id parent major:minor root mountpoint ...
            let mut f = line.split_whitespace();
            let (Some(id), Some(_), Some(dev)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let (Ok(id), Some((maj, min))) = (id.parse::<u64>(), dev.split_once(':')) else {
                continue;
            };
            if let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>()) {
                m.insert(id, (maj << 20) | (min & 0xf_ffff));
            }
        }
        Self(m)
    }
}

/// statx of an open file, or of a path relative to `dirfd`/absolute.
fn statx(dirfd: i32, path: &CString, flags: i32) -> std::io::Result<libc::statx> {
    // SAFETY: zeroed statx is a valid out-buffer.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer for the duration of the call.
    let rc = unsafe {
        libc::statx(
            dirfd,
            path.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            &raw mut st,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(std::io::Error::other(
            "statx gave no mount id (Linux 5.8 or later needed)",
        ));
    }
    Ok(st)
}

/// Open a file for reading without side effects: a FIFO does not block, a terminal
/// does not become the daemon's controlling terminal.
pub fn open_quietly(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
}

fn to_id(st: &libc::statx, mounts: &MountDevs) -> std::io::Result<FileId> {
    if u32::from(st.stx_mode) & libc::S_IFMT != libc::S_IFREG {
        return Err(std::io::Error::other("not a regular file"));
    }
    let dev = *mounts.0.get(&st.stx_mnt_id).ok_or_else(|| {
        std::io::Error::other(format!(
            "mount {} is not in the mount table read",
            st.stx_mnt_id
        ))
    })?;
    Ok(FileId {
        key: FileKey {
            dev,
            _pad: 0,
            ino: st.stx_ino,
        },
        stamp: FileStamp {
            ctime_sec: st.stx_ctime.tv_sec,
            ctime_nsec: st.stx_ctime.tv_nsec,
            _pad: 0,
        },
    })
}

/// The file `path` names, following symlinks, as the exec hook will see it.
pub fn of_path(path: &Path, mounts: &MountDevs) -> std::io::Result<FileId> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    to_id(&statx(libc::AT_FDCWD, &c, 0)?, mounts)
}

/// The file open at `fd`.
pub fn of_fd(fd: BorrowedFd<'_>, mounts: &MountDevs) -> std::io::Result<FileId> {
    let empty = CString::default();
    to_id(&statx(fd.as_raw_fd(), &empty, libc::AT_EMPTY_PATH)?, mounts)
}

/// The sha256 of the regular file at `path` (at most `max_bytes` long), with the
/// identity of the very file hashed. A file that changes while it is read is an error,
/// never a digest of a mix.
pub fn digest(
    path: &Path,
    mounts: &MountDevs,
    max_bytes: u64,
) -> std::io::Result<(FileId, String)> {
    use std::os::fd::AsFd as _;
    let mut f = open_quietly(path)?;
    let before = of_fd(f.as_fd(), mounts)?;
    let size = f.metadata()?.len();
    if size > max_bytes {
        return Err(std::io::Error::other(format!(
            "{size} bytes, more than the {max_bytes} this digests"
        )));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let after = of_fd(f.as_fd(), mounts)?;
    if before != after {
        return Err(std::io::Error::other(
            "the file changed while it was hashed",
        ));
    }
    Ok((before, hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_devices_in_kernel_encoding() {
        let m = MountDevs::parse(
            "22 1 259:3 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
             40 22 0:44 / /merged rw - overlay overlay rw,lowerdir=/l\n",
        );
        assert_eq!(m.0.get(&22), Some(&((259 << 20) | 3)));
        assert_eq!(m.0.get(&40), Some(&44));
    }

    #[test]
    fn a_file_and_its_hardlink_and_symlink_are_one_file_a_copy_is_not() {
        let dir = std::env::temp_dir().join(format!("zt-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let a = dir.join("a");
        std::fs::write(&a, b"hello").expect("write");
        std::fs::hard_link(&a, dir.join("hard")).expect("hardlink");
        std::os::unix::fs::symlink(&a, dir.join("sym")).expect("symlink");
        std::fs::copy(&a, dir.join("copy")).expect("copy");
        let mounts = MountDevs::read(None).expect("mountinfo");
        let id = |n: &str| of_path(&dir.join(n), &mounts).expect("stat").key;
        assert_eq!(id("a"), id("hard"));
        assert_eq!(id("a"), id("sym"));
        assert_ne!(id("a"), id("copy"));
        let (fid, d) = digest(&a, &mounts, 1 << 20).expect("digest");
        assert!(digest(&a, &mounts, 2).is_err(), "size cap");
        assert_eq!(fid.key, id("a"));
        assert_eq!(
            d,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
