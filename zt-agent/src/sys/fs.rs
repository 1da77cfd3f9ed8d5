//! Files and directories the agent writes, and the ones it trusts when it reads them,
//! opened so that no other user can redirect them.
//!
//! The daemon runs as root and writes where an operator points it (`--events`,
//! `--state-dir`, `--pin-dir`); `run` reads the daemon's state and the daemon reads its
//! policy. A path is only as trustworthy as every directory on it: whoever can write
//! one of them can swap what lies below for a symlink to a file of root's, or for a file
//! of their own. So every path is walked from `/` one component at a time, each
//! directory opened with `O_NOFOLLOW` relative to the one before and checked on the open
//! descriptor: owned by root and writable by no one else, or sticky (like /tmp and
//! bpffs, where others may add entries but not touch root's). A symlink on the way is
//! followed only when root owns it. Files are then opened relative to that directory's
//! descriptor, with `O_NOFOLLOW`, created with an explicit mode (whatever the umask),
//! and checked on the open file (`fstat`): owner, mode, type, links.
//!
//! `Dir` is the handle the rest of the agent uses: the events file, the state directory
//! and its files, the pin directory, the policy directory, and whatever else is kept in
//! the state directory (databases, sockets: see [`Dir::proc_path`]).

use std::ffi::{CString, OsStr, OsString};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one walk before it gives up (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;
/// Depth of a tree `remove_tree` descends into (pins are two levels deep).
const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a symbolic link; it is not followed")]
    Symlink { path: String },
    #[error("{path} is owned by uid {uid}, not by root; it is not trusted")]
    Owner { path: String, uid: u32 },
    #[error("{path} has mode {mode:04o}: writable by users other than root, so it is not trusted")]
    Writable { path: String, mode: u32 },
    #[error("{path} has mode {mode:04o}, looser than {want:04o}; tighten it (chmod) or remove it")]
    Looser { path: String, mode: u32, want: u32 },
    #[error("{path} is not a {want}")]
    Kind { path: String, want: &'static str },
    #[error("{path} has {links} hard links; a file the agent writes must have one")]
    Links { path: String, links: u64 },
    #[error("{path} is larger than {cap} bytes")]
    TooLarge { path: String, cap: u64 },
    #[error("{path} must be an absolute path")]
    Relative { path: String },
    #[error("{path}: more than {MAX_SYMLINKS} symbolic links on the way")]
    Loop { path: String },
}

impl FsError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The error is the file being absent (not an untrusted one).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What `fstat` says about an open file, in the terms the checks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub kind: Kind,
    pub links: u64,
    pub size: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDevice,
    Other,
}

impl Meta {
    fn of(st: &libc::stat) -> Self {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::CharDevice,
            _ => Kind::Other,
        };
        Self {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            kind,
            links: st.st_nlink,
            size: u64::try_from(st.st_size).unwrap_or(0),
        }
    }

    /// Group or others may write it.
    #[must_use]
    pub const fn writable_by_others(&self) -> bool {
        self.mode & 0o022 != 0
    }

    /// Sticky: others may add entries but not rename or remove root's.
    #[must_use]
    pub const fn sticky(&self) -> bool {
        self.mode & libc::S_ISVTX != 0
    }

    /// Permission bits beyond `want`.
    #[must_use]
    pub const fn looser_than(&self, want: u32) -> bool {
        self.mode & 0o777 & !want != 0
    }
}

fn cstr(name: &OsStr, shown: &Path) -> Result<CString, FsError> {
    CString::new(name.as_bytes()).map_err(|_| FsError::Io {
        path: shown.display().to_string(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

fn cvt(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fstat(fd: RawFd) -> std::io::Result<Meta> {
    // SAFETY: a zeroed stat is a valid out-parameter; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    cvt(unsafe { libc::fstat(fd, &raw mut st) })?;
    Ok(Meta::of(&st))
}

fn stat_at(dir: RawFd, name: &CString, shown: &Path) -> Result<Option<Meta>, FsError> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated name, open directory, valid out-parameter.
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &raw mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 {
        return Ok(Some(Meta::of(&st)));
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(FsError::io(shown)(e))
    }
}

fn openat(dir: RawFd, name: &CString, flags: libc::c_int, mode: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name; the returned descriptor is ours.
    let fd = cvt(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// Open `name` in `dir` as a directory, naming a symlink as such.
fn open_dir_at(dir: RawFd, name: &CString, shown: &Path) -> Result<OwnedFd, FsError> {
    openat(dir, name, DIR_FLAGS, 0).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            FsError::Symlink {
                path: shown.display().to_string(),
            }
        } else if e.raw_os_error() == Some(libc::ENOTDIR) {
            FsError::Kind {
                path: shown.display().to_string(),
                want: "directory",
            }
        } else {
            FsError::io(shown)(e)
        }
    })
}

/// A directory on the way to what the agent opens: root's, and no one else may change
/// its entries (or only their own, where it is sticky).
fn check_on_the_way(meta: &Meta, shown: &Path) -> Result<(), FsError> {
    if meta.uid != 0 {
        return Err(FsError::Owner {
            path: shown.display().to_string(),
            uid: meta.uid,
        });
    }
    if meta.writable_by_others() && !meta.sticky() {
        return Err(FsError::Writable {
            path: shown.display().to_string(),
            mode: meta.mode,
        });
    }
    Ok(())
}

/// An open directory that only root can change (see the module text), and the path it
/// was reached by, for messages.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    meta: Meta,
    /// Files read from it must be root's (false only for [`Dir::open_any`]).
    owners_checked: bool,
}

impl Dir {
    /// Walk to `path` from `/`, checking every directory on the way and `path` itself.
    ///
    /// # Errors
    /// A component is missing, not a directory, a symlink root does not own, or a
    /// directory another user owns or may write.
    pub fn open(path: &Path) -> Result<Self, FsError> {
        let path = absolute(path)?;
        walk(&path)
    }

    /// The directory `path`, created with exactly `mode` if it is missing; an existing
    /// one must be root's and no looser than `mode` (see `tighten` for what is fixed
    /// rather than refused).
    ///
    /// # Errors
    /// As [`Dir::open`] for the parent; `path` exists as something else, with another
    /// owner or a looser mode.
    pub fn ensure(path: &Path, mode: u32) -> Result<Self, FsError> {
        Self::make(path, mode, false)
    }

    /// The directory `path`, which must not exist yet, created with exactly `mode`.
    ///
    /// # Errors
    /// As [`Dir::open`] for the parent; `path` exists already (as anything).
    pub fn create_new(path: &Path, mode: u32) -> Result<Self, FsError> {
        Self::make(path, mode, true)
    }

    fn make(path: &Path, mode: u32, exclusive: bool) -> Result<Self, FsError> {
        let path = absolute(path)?;
        let (parent, name) = split(&path)?;
        let parent = walk(&parent)?;
        let cname = cstr(&name, &path)?;
        // SAFETY: a NUL-terminated name relative to an open directory.
        let made = unsafe { libc::mkdirat(parent.raw(), cname.as_ptr(), mode) } == 0;
        if !made {
            let e = std::io::Error::last_os_error();
            if exclusive || e.raw_os_error() != Some(libc::EEXIST) {
                return Err(FsError::io(&path)(e));
            }
        }
        let fd = open_dir_at(parent.raw(), &cname, &path)?;
        if made {
            // mkdir applies the umask; the mode is the agent's to choose.
            // SAFETY: our own descriptor.
            cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map_err(FsError::io(&path))?;
        }
        let mut meta = fstat(fd.as_raw_fd()).map_err(FsError::io(&path))?;
        tighten(&fd, &mut meta, mode, &path)?;
        check_own(&meta, mode, &path)?;
        Ok(Self {
            fd,
            path,
            meta,
            owners_checked: true,
        })
    }

    /// Open any directory, whoever may change it, to read files of any owner the same
    /// careful way (regular files only, no blocking, a size cap): for `policy check`,
    /// which reads a user's drafts and acts on nothing.
    ///
    /// # Errors
    /// The directory cannot be opened.
    pub fn open_any(path: &Path) -> Result<Self, FsError> {
        let c = cstr(path.as_os_str(), path)?;
        let fd = openat(libc::AT_FDCWD, &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(FsError::io(path))?;
        let meta = fstat(fd.as_raw_fd()).map_err(FsError::io(path))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            meta,
            owners_checked: false,
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[must_use]
    pub const fn meta(&self) -> Meta {
        self.meta
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn shown(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Refuse a directory another user could change (for what is read from it).
    ///
    /// # Errors
    /// Owner not root, or group/other write permission.
    pub fn require_private_writes(&self) -> Result<(), FsError> {
        if self.meta.uid != 0 {
            return Err(FsError::Owner {
                path: self.path.display().to_string(),
                uid: self.meta.uid,
            });
        }
        if self.meta.writable_by_others() {
            return Err(FsError::Writable {
                path: self.path.display().to_string(),
                mode: self.meta.mode,
            });
        }
        Ok(())
    }

    /// `fstatat` without following a final symlink; `None` when there is no such entry.
    ///
    /// # Errors
    /// Any other failure.
    pub fn stat(&self, name: &str) -> Result<Option<Meta>, FsError> {
        let shown = self.shown(name);
        stat_at(self.raw(), &cstr(OsStr::new(name), &shown)?, &shown)
    }

    /// The subdirectory `name`, opened without following a symlink.
    ///
    /// # Errors
    /// Missing, a symlink or not a directory.
    pub fn subdir(&self, name: &str) -> Result<Self, FsError> {
        let shown = self.shown(name);
        let c = cstr(OsStr::new(name), &shown)?;
        let fd = open_dir_at(self.raw(), &c, &shown)?;
        let meta = fstat(fd.as_raw_fd()).map_err(FsError::io(&shown))?;
        Ok(Self {
            fd,
            path: shown,
            meta,
            owners_checked: self.owners_checked,
        })
    }

    /// Names of the entries, `.` and `..` left out.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn entries(&self) -> Result<Vec<String>, FsError> {
        let err = FsError::io(&self.path);
        // fdopendir takes the descriptor it is given: hand it a duplicate.
        // SAFETY: duplicating our own descriptor.
        let dup = cvt(unsafe { libc::fcntl(self.raw(), libc::F_DUPFD_CLOEXEC, 0) });
        let dup = match dup {
            Ok(fd) => fd,
            Err(e) => return Err(err(e)),
        };
        // SAFETY: dup is a directory descriptor we own; closedir closes it.
        let d = unsafe { libc::fdopendir(dup) };
        if d.is_null() {
            let e = std::io::Error::last_os_error();
            // SAFETY: fdopendir failed, so dup is still ours to close.
            unsafe { libc::close(dup) };
            return Err(err(e));
        }
        // SAFETY: d is a valid DIR; rewind because the duplicate shares its offset.
        unsafe { libc::rewinddir(d) };
        let mut names = Vec::new();
        loop {
            // SAFETY: d is valid until closedir below.
            let ent = unsafe { libc::readdir(d) };
            if ent.is_null() {
                break;
            }
            // SAFETY: readdir returned an entry with a NUL-terminated d_name.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            let name = OsString::from_vec(name.to_bytes().to_vec());
            if name != "." && name != ".." {
                names.push(name.to_string_lossy().into_owned());
            }
        }
        // SAFETY: closing the DIR we opened.
        unsafe { libc::closedir(d) };
        names.sort();
        Ok(names)
    }

    /// Append to `name`, creating it with exactly `mode` (and group `group`) if it is
    /// missing. The file must be a regular file of root's with one link and no looser
    /// mode than asked; with `group`, its group is set to it.
    ///
    /// # Errors
    /// A symlink, another owner, a looser mode, more than one link.
    pub fn open_append(
        &self,
        name: &str,
        mode: u32,
        group: Option<u32>,
    ) -> Result<std::fs::File, FsError> {
        let shown = self.shown(name);
        let c = cstr(OsStr::new(name), &shown)?;
        let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_NOCTTY;
        let (fd, made) = match openat(self.raw(), &c, flags | libc::O_CREAT | libc::O_EXCL, mode) {
            Ok(fd) => (fd, true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => (
                // O_NONBLOCK: a FIFO planted at the path must not hang the open.
                openat(self.raw(), &c, flags | libc::O_NONBLOCK, 0)
                    .map_err(|e| no_follow(e, &shown))?,
                false,
            ),
            Err(e) => return Err(no_follow(e, &shown)),
        };
        let meta = fstat(fd.as_raw_fd()).map_err(FsError::io(&shown))?;
        if !made && meta.kind == Kind::CharDevice && meta.uid == 0 {
            // Root's device node (/dev/null to discard, a console): only root can make
            // one, and its mode says who may open the device, not who reads the file.
            clear_nonblock(&fd).map_err(FsError::io(&shown))?;
            return Ok(std::fs::File::from(fd));
        }
        let mut meta = meta;
        if meta.links == 1 {
            tighten(&fd, &mut meta, mode, &shown)?;
        }
        check_own_file(&meta, mode, &shown)?;
        if made || group.is_some() {
            if let Some(g) = group {
                // SAFETY: our own descriptor; -1 keeps the owner.
                cvt(unsafe { libc::fchown(fd.as_raw_fd(), u32::MAX, g) })
                    .map_err(FsError::io(&shown))?;
            }
            // SAFETY: our own descriptor. After fchown, which clears setgid bits.
            cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map_err(FsError::io(&shown))?;
        }
        clear_nonblock(&fd).map_err(FsError::io(&shown))?;
        Ok(std::fs::File::from(fd))
    }

    /// Replace `name` atomically with `bytes`: a temporary file created exclusively
    /// (`O_EXCL`, mode `mode`), written, synced and renamed over it.
    ///
    /// # Errors
    /// Any step failing; the old file then stays as it was.
    pub fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), FsError> {
        let tmp = format!("{name}.tmp");
        let shown = self.shown(&tmp);
        let ctmp = cstr(OsStr::new(&tmp), &shown)?;
        let cname = cstr(OsStr::new(name), &shown)?;
        // A temporary left by a crash (only root can write here) is removed first, by
        // name, whatever it is: unlink never follows it.
        // SAFETY: NUL-terminated name relative to an open directory.
        let _ = unsafe { libc::unlinkat(self.raw(), ctmp.as_ptr(), 0) };
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = openat(self.raw(), &ctmp, flags, mode).map_err(|e| no_follow(e, &shown))?;
        // SAFETY: our own descriptor: the mode regardless of the umask.
        cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map_err(FsError::io(&shown))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(bytes).map_err(FsError::io(&shown))?;
        f.sync_all().map_err(FsError::io(&shown))?;
        // SAFETY: both names relative to our open directory.
        cvt(unsafe { libc::renameat(self.raw(), ctmp.as_ptr(), self.raw(), cname.as_ptr()) })
            .map_err(FsError::io(&self.shown(name)))?;
        // SAFETY: our own descriptor.
        let _ = unsafe { libc::fsync(self.raw()) };
        Ok(())
    }

    /// Read `name`, which must be a regular file of root's that no one else may write,
    /// of at most `cap` bytes. Opened once, without following a symlink, without
    /// blocking (a FIFO is refused, not waited on), and checked on the open file.
    ///
    /// # Errors
    /// Missing, a symlink, not a regular file, another owner, writable by others, too
    /// large.
    pub fn read_trusted(&self, name: &str, cap: u64) -> Result<Vec<u8>, FsError> {
        let shown = self.shown(name);
        let c = cstr(OsStr::new(name), &shown)?;
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
        let fd = openat(self.raw(), &c, flags, 0).map_err(|e| no_follow(e, &shown))?;
        read_checked(fd, &shown, cap, self.owners_checked)
    }

    /// Like [`Dir::read_trusted`], but a symlink is followed as long as it stays below
    /// this directory (`openat2` with `RESOLVE_BENEATH`): an absolute target, or one
    /// that climbs out with `..`, is refused by the kernel.
    ///
    /// # Errors
    /// As [`Dir::read_trusted`]; a link that leads out of the directory.
    pub fn read_beneath(&self, name: &str, cap: u64) -> Result<Vec<u8>, FsError> {
        let shown = self.shown(name);
        let c = cstr(OsStr::new(name), &shown)?;
        let how = OpenHow {
            flags: (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: an open_how of the size we pass, a NUL-terminated name.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.raw(),
                c.as_ptr(),
                &raw const how,
                size_of::<OpenHow>(),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EXDEV) {
                FsError::Io {
                    path: shown.display().to_string(),
                    source: std::io::Error::other(
                        "a symbolic link that leads out of the directory is not followed",
                    ),
                }
            } else {
                FsError::io(&shown)(e)
            });
        }
        // SAFETY: the kernel just returned this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(rc as RawFd) };
        read_checked(fd, &shown, cap, self.owners_checked)
    }

    /// Remove the entry `name` without following it: a file or a link is unlinked, a
    /// directory emptied (at any owner, never through a link) and removed. Absent is
    /// fine.
    ///
    /// # Errors
    /// An entry that cannot be removed.
    pub fn remove(&self, name: &str) -> Result<(), FsError> {
        remove_at(self.raw(), name, &self.shown(name), 0)
    }

    /// A path that reaches `name` in this very directory, through the descriptor
    /// (`/proc/self/fd/N/name`), for APIs that take a path (bind a socket, open a
    /// database). Valid while this `Dir` lives.
    #[must_use]
    pub fn proc_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.raw())).join(name)
    }
}

/// An existing file or directory of root's that no one else could ever write, only
/// readable more widely than the agent now makes it (an earlier version created the
/// state directory 0755 and the events file 0644): tighten it, and say so. Anything
/// another user owns or may write stays as it is, for the checks to refuse.
fn tighten(fd: &OwnedFd, meta: &mut Meta, want: u32, shown: &Path) -> Result<(), FsError> {
    if meta.uid != 0 || !meta.looser_than(want) || meta.writable_by_others() {
        return Ok(());
    }
    if meta.kind != Kind::File && meta.kind != Kind::Dir {
        return Ok(());
    }
    // SAFETY: our own descriptor.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), want) }).map_err(FsError::io(shown))?;
    tracing::warn!(
        path = %shown.display(),
        was = format!("{:04o}", meta.mode),
        now = format!("{want:04o}"),
        "tightened the mode of a file of root's that only root could have written"
    );
    meta.mode = want;
    Ok(())
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;

fn no_follow(e: std::io::Error, shown: &Path) -> FsError {
    if e.raw_os_error() == Some(libc::ELOOP) {
        FsError::Symlink {
            path: shown.display().to_string(),
        }
    } else {
        FsError::io(shown)(e)
    }
}

fn clear_nonblock(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on our own descriptor.
    let fl = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK) })?;
    Ok(())
}

/// Check an open file for reading: a regular file (of root's, no one else may write
/// it, with `owners`), at most `cap` bytes; then read it.
fn read_checked(fd: OwnedFd, shown: &Path, cap: u64, owners: bool) -> Result<Vec<u8>, FsError> {
    let meta = fstat(fd.as_raw_fd()).map_err(FsError::io(shown))?;
    if owners {
        check_trusted_file(&meta, shown)?;
    } else if meta.kind != Kind::File {
        return Err(FsError::Kind {
            path: shown.display().to_string(),
            want: "regular file",
        });
    }
    let too_large = || FsError::TooLarge {
        path: shown.display().to_string(),
        cap,
    };
    if meta.size > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(FsError::io(shown))?;
    // The size may have grown since fstat.
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

/// What a file or directory must be to be trusted or written.
struct Want {
    kind: Kind,
    /// One hard link (a file the agent writes: not a link to someone's file).
    one_link: bool,
    /// No permission bits beyond these.
    at_most: Option<u32>,
    /// No group or other write permission.
    private_writes: bool,
}

impl Want {
    fn check(&self, meta: &Meta, shown: &Path) -> Result<(), FsError> {
        let path = shown.display().to_string();
        if meta.kind != self.kind {
            let want = if self.kind == Kind::Dir {
                "directory"
            } else {
                "regular file"
            };
            return Err(FsError::Kind { path, want });
        }
        if meta.uid != 0 {
            return Err(FsError::Owner {
                path,
                uid: meta.uid,
            });
        }
        if self.one_link && meta.links != 1 {
            return Err(FsError::Links {
                path,
                links: meta.links,
            });
        }
        if let Some(want) = self.at_most
            && meta.looser_than(want)
        {
            return Err(FsError::Looser {
                path,
                mode: meta.mode,
                want,
            });
        }
        if self.private_writes && meta.writable_by_others() {
            return Err(FsError::Writable {
                path,
                mode: meta.mode,
            });
        }
        Ok(())
    }
}

/// A file the agent reads and acts on: a regular file of root's no one else may write.
///
/// # Errors
/// Not a regular file, another owner, group or other write permission.
pub fn check_trusted_file(meta: &Meta, shown: &Path) -> Result<(), FsError> {
    Want {
        kind: Kind::File,
        one_link: false,
        at_most: None,
        private_writes: true,
    }
    .check(meta, shown)
}

/// A directory the agent owns: root's, no looser than `want`.
fn check_own(meta: &Meta, want: u32, shown: &Path) -> Result<(), FsError> {
    Want {
        kind: Kind::Dir,
        one_link: false,
        at_most: Some(want),
        private_writes: false,
    }
    .check(meta, shown)
}

/// A file the agent writes: a regular file of root's, one link, no looser than `want`.
fn check_own_file(meta: &Meta, want: u32, shown: &Path) -> Result<(), FsError> {
    Want {
        kind: Kind::File,
        one_link: true,
        at_most: Some(want),
        private_writes: false,
    }
    .check(meta, shown)
}

fn absolute(path: &Path) -> Result<PathBuf, FsError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::path::absolute(path).map_err(|_| FsError::Relative {
        path: path.display().to_string(),
    })
}

/// (parent, last component) of an absolute path that names something below `/`.
///
/// # Errors
/// The path is `/` or ends in `..`.
pub fn split(path: &Path) -> Result<(PathBuf, OsString), FsError> {
    match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => Ok((p.to_path_buf(), n.to_os_string())),
        _ => Err(FsError::Kind {
            path: path.display().to_string(),
            want: "path below a directory",
        }),
    }
}

/// Walk an absolute path from `/`, every directory checked (see the module text).
fn walk(path: &Path) -> Result<Dir, FsError> {
    let root_path = PathBuf::from("/");
    let root = open_dir_at(
        libc::AT_FDCWD,
        &cstr(OsStr::new("/"), &root_path)?,
        &root_path,
    )?;
    let mut cur = root;
    let mut meta = fstat(cur.as_raw_fd()).map_err(FsError::io(&root_path))?;
    check_on_the_way(&meta, &root_path)?;
    // Components still to walk, and the path walked so far (for messages).
    let mut todo: std::collections::VecDeque<OsString> = components(path);
    let mut shown = root_path.clone();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == "." {
            continue;
        }
        let next = shown.join(&c);
        let cname = cstr(&c, &next)?;
        if c != ".." {
            match stat_at(cur.as_raw_fd(), &cname, &next)? {
                Some(m) if m.kind == Kind::Symlink => {
                    if m.uid != 0 {
                        return Err(FsError::Owner {
                            path: next.display().to_string(),
                            uid: m.uid,
                        });
                    }
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(FsError::Loop {
                            path: path.display().to_string(),
                        });
                    }
                    let target = readlinkat(cur.as_raw_fd(), &cname, &next)?;
                    for t in components(&target).into_iter().rev() {
                        todo.push_front(t);
                    }
                    if target.is_absolute() {
                        cur = open_dir_at(
                            libc::AT_FDCWD,
                            &cstr(OsStr::new("/"), &root_path)?,
                            &root_path,
                        )?;
                        meta = fstat(cur.as_raw_fd()).map_err(FsError::io(&root_path))?;
                        shown.clone_from(&root_path);
                    }
                    continue;
                }
                Some(_) => {}
                None => {
                    return Err(FsError::io(&next)(std::io::ErrorKind::NotFound.into()));
                }
            }
        }
        let fd = open_dir_at(cur.as_raw_fd(), &cname, &next)?;
        meta = fstat(fd.as_raw_fd()).map_err(FsError::io(&next))?;
        check_on_the_way(&meta, &next)?;
        cur = fd;
        shown = if c == ".." {
            shown
                .parent()
                .map_or_else(|| root_path.clone(), Path::to_path_buf)
        } else {
            next
        };
    }
    Ok(Dir {
        fd: cur,
        path: path.to_path_buf(),
        meta,
        owners_checked: true,
    })
}

fn components(path: &Path) -> std::collections::VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn readlinkat(dir: RawFd, name: &CString, shown: &Path) -> Result<PathBuf, FsError> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is writable for its length; name is NUL-terminated.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(FsError::io(shown)(std::io::Error::last_os_error()));
    }
    buf.truncate(n.unsigned_abs());
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

fn remove_at(dir: RawFd, name: &str, shown: &Path, depth: usize) -> Result<(), FsError> {
    let c = cstr(OsStr::new(name), shown)?;
    // SAFETY: NUL-terminated name relative to an open directory; never follows.
    if unsafe { libc::unlinkat(dir, c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT) => return Ok(()),
        Some(libc::EISDIR) => {}
        _ => return Err(FsError::io(shown)(e)),
    }
    if depth >= MAX_DEPTH {
        return Err(FsError::io(shown)(std::io::Error::other(
            "directory tree too deep to remove",
        )));
    }
    // Someone may add entries while this runs (bpffs and /tmp are sticky): empty and
    // retry a few times rather than fail on the first ENOTEMPTY.
    for _ in 0..4 {
        let sub = match openat(dir, &c, DIR_FLAGS, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(FsError::io(shown)(e)),
        };
        let d = Dir {
            meta: fstat(sub.as_raw_fd()).map_err(FsError::io(shown))?,
            fd: sub,
            path: shown.to_path_buf(),
            owners_checked: true,
        };
        for n in d.entries()? {
            remove_at(d.raw(), &n, &shown.join(&n), depth + 1)?;
        }
        // SAFETY: as above.
        if unsafe { libc::unlinkat(dir, c.as_ptr(), libc::AT_REMOVEDIR) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) => return Ok(()),
            Some(libc::ENOTEMPTY | libc::EEXIST) => {}
            _ => return Err(FsError::io(shown)(e)),
        }
    }
    Err(FsError::io(shown)(std::io::Error::from_raw_os_error(
        libc::ENOTEMPTY,
    )))
}

/// The gid of a group name (or a numeric gid).
///
/// # Errors
/// No such group.
pub fn group_id(name: &str) -> Result<u32, FsError> {
    if let Ok(g) = name.parse::<u32>() {
        return Ok(g);
    }
    let unknown = || FsError::Io {
        path: format!("group {name:?}"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    let c = CString::new(name).map_err(|_| unknown())?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed group is a valid out-parameter.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid name, out-parameters and buffer.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &raw mut gr,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &raw mut out,
        )
    };
    if rc != 0 || out.is_null() {
        return Err(unknown());
    }
    Ok(gr.gr_gid)
}

/// Open the file at `path` for appending (see [`Dir::open_append`]), its directory
/// walked and checked first.
///
/// # Errors
/// As [`Dir::open`] and [`Dir::open_append`].
pub fn open_append(path: &Path, mode: u32, group: Option<u32>) -> Result<std::fs::File, FsError> {
    let path = absolute(path)?;
    let (parent, name) = split(&path)?;
    let dir = Dir::open(&parent)?;
    dir.open_append(&name.to_string_lossy(), mode, group)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A scratch directory of root's under /tmp for one test; removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("zt-fs-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir(&p).expect("scratch");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            Self(p)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// What these tests check is root's view: every directory they make is root's.
    fn require_root() {
        // SAFETY: no preconditions.
        let root = unsafe { libc::geteuid() == 0 };
        assert!(root, "these tests need root (sudo ./x test)");
    }

    #[test]
    fn ensure_creates_with_the_mode_whatever_the_umask_and_refuses_looser() {
        require_root();
        let s = Scratch::new("ensure");
        let d = s.0.join("state");
        let dir = Dir::ensure(&d, 0o700).expect("ensure");
        assert_eq!(dir.meta().mode, 0o700);
        // Wider read access on root's directory (an older version's 0755) is tightened...
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            Dir::ensure(&d, 0o700).expect("tightened").meta().mode,
            0o700
        );
        // ...write access for others is refused: someone may have used it.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = Dir::ensure(&d, 0o700).expect_err("looser");
        assert!(matches!(e, FsError::Looser { .. }), "{e}");
    }

    #[test]
    fn write_atomic_replaces_a_planted_temporary_link_without_following_it() {
        require_root();
        let s = Scratch::new("atomic");
        let victim = s.0.join("victim");
        std::fs::write(&victim, b"keep").expect("victim");
        let dir = Dir::ensure(&s.0.join("st"), 0o700).expect("dir");
        std::os::unix::fs::symlink(&victim, s.0.join("st/state.json.tmp")).expect("link");
        dir.write_atomic("state.json", b"{}", 0o600).expect("write");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"keep");
        assert_eq!(dir.read_trusted("state.json", 10).expect("read"), b"{}");
    }

    #[test]
    fn open_append_refuses_links_and_loose_files() {
        require_root();
        let s = Scratch::new("append");
        let victim = s.0.join("victim");
        std::fs::write(&victim, b"keep").expect("victim");
        std::os::unix::fs::symlink(&victim, s.0.join("ev")).expect("link");
        let e = open_append(&s.0.join("ev"), 0o600, None).expect_err("symlink");
        assert!(matches!(e, FsError::Symlink { .. }), "{e}");
        std::fs::hard_link(&victim, s.0.join("hard")).expect("hardlink");
        let e = open_append(&s.0.join("hard"), 0o600, None).expect_err("hardlink");
        assert!(
            matches!(e, FsError::Links { .. } | FsError::Looser { .. }),
            "{e}"
        );
        let f = open_append(&s.0.join("new"), 0o640, Some(0)).expect("new");
        drop(f);
        let m = std::fs::metadata(s.0.join("new")).expect("meta");
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn walk_refuses_a_directory_others_may_write_and_follows_roots_links() {
        require_root();
        let s = Scratch::new("walk");
        let open = s.0.join("open");
        std::fs::create_dir(&open).expect("dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        std::fs::create_dir(open.join("x")).expect("x");
        let e = Dir::open(&open.join("x")).expect_err("writable");
        assert!(matches!(e, FsError::Writable { .. }), "{e}");
        // A sticky world-writable directory (like /tmp) is fine on the way.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        Dir::open(&open.join("x")).expect("sticky");
        std::os::unix::fs::symlink("open/x", s.0.join("l")).expect("link");
        let d = Dir::open(&s.0.join("l")).expect("root's link");
        assert_eq!(d.meta().kind, Kind::Dir);
    }

    #[test]
    fn remove_empties_trees_without_following_links() {
        require_root();
        let s = Scratch::new("remove");
        let keep = s.0.join("keep");
        std::fs::create_dir(&keep).expect("keep");
        std::fs::write(keep.join("f"), b"x").expect("f");
        let t = s.0.join("t");
        std::fs::create_dir_all(t.join("a/b")).expect("tree");
        std::os::unix::fs::symlink(&keep, t.join("a/link")).expect("link");
        std::os::unix::fs::symlink("/nonexistent", t.join("a/b/dangling")).expect("dangling");
        Dir::open(&s.0).expect("dir").remove("t").expect("remove");
        assert!(!t.exists());
        assert!(keep.join("f").exists(), "followed a link");
    }
}
