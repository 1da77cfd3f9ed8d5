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

/// A container's root directory, through which paths are resolved as the container's
/// tasks see them: absolute symlinks and `..` stay inside it (`RESOLVE_IN_ROOT`), and
/// devices come from the container's own mount table.
pub struct Root {
    dir: std::os::fd::OwnedFd,
    pub mounts: MountDevs,
}

impl Root {
    /// The root of `pid`'s mount namespace, as `pid` sees it.
    pub fn of_pid(pid: u32) -> std::io::Result<Self> {
        use std::os::fd::OwnedFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_path()
            .open(format!("/proc/{pid}/root"))?;
        Ok(Self {
            dir: OwnedFd::from(f),
            mounts: MountDevs::read(Some(pid))?,
        })
    }

    /// A directory taken as a root, with this process's mount table.
    pub fn of_dir(dir: &Path) -> std::io::Result<Self> {
        use std::os::fd::OwnedFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_path()
            .open(dir)?;
        Ok(Self {
            dir: OwnedFd::from(f),
            mounts: MountDevs::read(None)?,
        })
    }

    /// Open `path` (absolute inside the root) with `flags`, never leaving the root.
    fn open(&self, path: &str, flags: i32) -> std::io::Result<std::fs::File> {
        use std::os::fd::FromRawFd as _;
        let c = CString::new(path).map_err(std::io::Error::other)?;
        // SAFETY: zeroed open_how is valid; the fields are set below.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid directory fd, C string and open_how for the duration of the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                c.as_ptr(),
                &raw const how,
                size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor this function owns.
        Ok(unsafe { std::fs::File::from_raw_fd(fd as i32) })
    }

    /// The file `path` names inside the root, as the exec hook will see it.
    pub fn id(&self, path: &str) -> std::io::Result<FileId> {
        use std::os::fd::AsFd as _;
        let f = self.open(path, libc::O_PATH)?;
        of_fd(f.as_fd(), &self.mounts)
    }

    /// The digest of the file `path` names inside the root.
    pub fn digest(&self, path: &str, max_bytes: u64) -> std::io::Result<(FileId, String)> {
        let f = self.open(path, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)?;
        digest_open(f, &self.mounts, max_bytes)
    }
}

/// O_PATH | O_DIRECTORY for the root's descriptor.
trait PathFlags {
    fn custom_flags_path(&mut self) -> &mut Self;
}

impl PathFlags for std::fs::OpenOptions {
    fn custom_flags_path(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt as _;
        self.custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
    }
}

/// The sha256 of the regular file at `path` (at most `max_bytes` long), with the
/// identity of the very file hashed. A file that changes while it is read is an error,
/// never a digest of a mix.
pub fn digest(
    path: &Path,
    mounts: &MountDevs,
    max_bytes: u64,
) -> std::io::Result<(FileId, String)> {
    digest_open(open_quietly(path)?, mounts, max_bytes)
}

/// The sha256 of an open regular file, as [`digest`].
fn digest_open(
    mut f: std::fs::File,
    mounts: &MountDevs,
    max_bytes: u64,
) -> std::io::Result<(FileId, String)> {
    use std::os::fd::AsFd as _;
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
    fn paths_in_a_root_stay_inside_it() {
        let dir = std::env::temp_dir().join(format!("zt-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/bin")).expect("tmp root");
        std::fs::write(dir.join("usr/bin/tool"), b"inside").expect("write");
        // An absolute symlink, as images have them: /usr/bin/tool inside the root, not
        // the host's.
        std::os::unix::fs::symlink("/usr/bin/tool", dir.join("usr/bin/alias")).expect("symlink");
        std::os::unix::fs::symlink("../../../../../usr/bin/tool", dir.join("usr/bin/up"))
            .expect("symlink");
        let mounts = MountDevs::read(None).expect("mountinfo");
        let inside = of_path(&dir.join("usr/bin/tool"), &mounts)
            .expect("stat")
            .key;
        let root = Root::of_dir(&dir).expect("root");
        assert_eq!(root.id("/usr/bin/tool").expect("tool").key, inside);
        assert_eq!(root.id("/usr/bin/alias").expect("alias").key, inside);
        assert_eq!(root.id("/usr/bin/up").expect("dot-dot").key, inside);
        assert!(
            root.id("/etc/hostname").is_err(),
            "the host's files are not in the root"
        );
        let (id, d) = root.digest("/usr/bin/alias", 1 << 20).expect("digest");
        assert_eq!(id.key, inside);
        assert_eq!(d.len(), 64);
        std::fs::remove_dir_all(&dir).expect("cleanup");
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
