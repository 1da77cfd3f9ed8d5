//! Exec: files as the kernel names them, the selectors that enroll by binary or
//! user, and the per-identity exec allowlist.

/// A file as the kernel sees it: `inode->i_sb->s_dev` (major << 20 | minor) and
/// `inode->i_ino`. Userspace derives it from the mount's device number and st_ino,
/// which differ from stat()'s st_dev on overlayfs and btrfs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<FileKey>() == 16);
// SAFETY: repr(C), u32 + explicit u32 padding + u64, no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FileKey {}

/// The inode's change time. Any write, rename, link or chmod moves it, and an inode
/// number reused by a new file comes with a new one: an entry whose stamp differs
/// from the file's is not trusted until the daemon re-verifies the file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileStamp {
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FileStamp>() == 16);
// SAFETY: repr(C), i64 + u32 + explicit u32 padding, no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FileStamp {}

/// Value of the exe selector table, keyed by [`FileKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExeSelector {
    pub stamp: FileStamp,
    pub identity: u32,
    /// Real uid the task must have after the exec, or [`ANY_ID`].
    pub uid: u32,
    /// Real gid the task must have after the exec, or [`ANY_ID`].
    pub gid: u32,
    /// `EXE_FLAG_*`.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<ExeSelector>() == 32);
// SAFETY: repr(C), a FileStamp then four u32, no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ExeSelector {}

/// "Any uid/gid" in selector values.
pub const ANY_ID: u32 = u32::MAX;
/// The selector pins a digest: a changed file sends its exec'ers to quarantine.
pub const EXE_FLAG_DIGEST: u32 = 1;
/// The file failed its pinned digest: exec'ing it means quarantine.
pub const EXE_FLAG_QUARANTINE: u32 = 2;

/// Key of the uid/gid selector table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrincipalKey {
    /// [`PRINCIPAL_UID`] or [`PRINCIPAL_GID`].
    pub kind: u32,
    pub id: u32,
}
const _: () = assert!(core::mem::size_of::<PrincipalKey>() == 8);
// SAFETY: repr(C), two u32, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PrincipalKey {}

pub const PRINCIPAL_UID: u32 = 0;
pub const PRINCIPAL_GID: u32 = 1;

/// Value of the uid/gid selector table. A uid entry may also require a gid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub identity: u32,
    /// For uid entries: the gid also required, or [`ANY_ID`].
    pub gid: u32,
}
const _: () = assert!(core::mem::size_of::<Principal>() == 8);
// SAFETY: repr(C), two u32, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Principal {}

/// Key of the exec allowlist table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExecAllowKey {
    pub identity: u32,
    pub dev: u32,
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<ExecAllowKey>() == 16);
// SAFETY: repr(C), two u32 then a u64, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ExecAllowKey {}
