//! The few bpf(2) commands aya 0.16 does not expose: links created and pinned by
//! hand (sockopt programs, re-attaching a detached program), what a pinned link or
//! program is, and an atomic lookup-and-delete.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_link_type`
pub const BPF_LINK_TYPE_CGROUP: u32 = 3;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-padded bpf_attr of the size we pass.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn put32(attr: &mut [u8; 128], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(attr: &mut [u8; 128], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn fd_of(rc: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor to us.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

fn cpath(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
}

/// A new bpf_link of `prog` at `target` (a cgroup, or none for a tracepoint program).
pub fn link_create(
    prog: BorrowedFd<'_>,
    target: Option<BorrowedFd<'_>>,
    attach_type: u32,
) -> std::io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, prog.as_raw_fd() as u32);
    put32(&mut attr, 4, target.map_or(0, |t| t.as_raw_fd() as u32));
    put32(&mut attr, 8, attach_type);
    bpf(BPF_LINK_CREATE, &mut attr).map(fd_of)
}

/// Pin a bpf object (link, program, map) at `path`.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> std::io::Result<()> {
    let c = cpath(path)?;
    let mut attr = [0u8; 128];
    put64(&mut attr, 0, c.as_ptr() as u64);
    put32(&mut attr, 8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// Open the bpf object pinned at `path`.
pub fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    let c = cpath(path)?;
    let mut attr = [0u8; 128];
    put64(&mut attr, 0, c.as_ptr() as u64);
    bpf(BPF_OBJ_GET, &mut attr).map(fd_of)
}

/// Detach a link from its hook; the link object stays, attached to nothing.
pub fn link_detach(link: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, link.as_raw_fd() as u32);
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// What a link is and where it is attached (the head of `struct bpf_link_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// Cgroup links: the cgroup's id, 0 once the link was detached.
    pub cgroup_id: u64,
}

pub fn link_info(link: BorrowedFd<'_>) -> std::io::Result<LinkInfo> {
    let mut info = [0u8; 64];
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, link.as_raw_fd() as u32);
    put32(&mut attr, 4, info.len() as u32);
    put64(&mut attr, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let u32_at =
        |at: usize| u32::from_ne_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&info[16..24]);
    let link_type = u32_at(0);
    Ok(LinkInfo {
        link_type,
        id: u32_at(4),
        prog_id: u32_at(8),
        cgroup_id: if link_type == BPF_LINK_TYPE_CGROUP {
            u64::from_ne_bytes(id)
        } else {
            0
        },
    })
}

/// The id of an open link.
pub fn link_id(link: BorrowedFd<'_>) -> std::io::Result<u32> {
    link_info(link).map(|l| l.id)
}

/// The id of an open map (the head of `struct bpf_map_info`: type, then id).
pub fn map_id(map: BorrowedFd<'_>) -> std::io::Result<u32> {
    let mut info = [0u8; 88];
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, map.as_raw_fd() as u32);
    put32(&mut attr, 4, info.len() as u32);
    put64(&mut attr, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(u32::from_ne_bytes([info[4], info[5], info[6], info[7]]))
}

/// A new descriptor of the loaded program `id`.
pub fn prog_by_id(id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, id);
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(fd_of)
}

/// Remove `key` from a hash map and return the value it held, in one step. `None`
/// when there was no such key.
pub fn lookup_and_delete<K, V: Copy>(map: BorrowedFd<'_>, key: &K) -> std::io::Result<Option<V>> {
    let mut value = std::mem::MaybeUninit::<V>::uninit();
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, map.as_raw_fd() as u32);
    put64(&mut attr, 8, std::ptr::from_ref(key) as u64);
    put64(&mut attr, 16, value.as_mut_ptr() as u64);
    match bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
        // SAFETY: the kernel wrote a whole value of the map's value size, which is V's.
        Ok(_) => Ok(Some(unsafe { value.assume_init() })),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}
