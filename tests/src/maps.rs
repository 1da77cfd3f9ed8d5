//! The daemon's pinned maps and links as a test reads and changes them: raw bpf(2) on
//! the pins, so that a test can plant the entries an attacker or a race would leave,
//! or detach a program as an attacker with full capabilities would.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-padded bpf_attr of the size we pass.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// One pinned map.
pub struct PinnedMap(OwnedFd);

impl PinnedMap {
    #[must_use]
    pub fn open(path: &Path) -> Self {
        let c = CString::new(path.as_os_str().as_bytes()).expect("path");
        let mut attr = [0u8; 128];
        attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
        let fd = bpf(BPF_OBJ_GET, &mut attr)
            .unwrap_or_else(|e| panic!("open pinned map {}: {e}", path.display()));
        // SAFETY: the kernel just returned this descriptor.
        Self(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn attr(&self, key: &[u8], value: *const u8, flags: u64) -> [u8; 128] {
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&(self.0.as_raw_fd() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(key.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(value as u64).to_ne_bytes());
        attr[24..32].copy_from_slice(&flags.to_ne_bytes());
        attr
    }

    /// The value of `key` (`len` bytes), if there is one.
    #[must_use]
    pub fn get(&self, key: &[u8], len: usize) -> Option<Vec<u8>> {
        let mut value = vec![0u8; len];
        let mut attr = self.attr(key, value.as_mut_ptr(), 0);
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).ok()?;
        Some(value)
    }

    /// Write `key` = `value` (flags 0: add or replace).
    pub fn set(&self, key: &[u8], value: &[u8]) {
        let mut attr = self.attr(key, value.as_ptr(), 0);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).expect("map update");
    }
}

/// Detach the link pinned at `pin` from its hook, as `bpftool link detach` does: the
/// link stays, attached to nothing.
pub fn detach_link(pin: &Path) -> std::io::Result<()> {
    let c = CString::new(pin.as_os_str().as_bytes()).expect("path");
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(c.as_ptr() as u64).to_ne_bytes());
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel just returned this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// A task-table entry: identity, how it was enrolled, start time (boot-clock ns).
#[must_use]
pub fn task_entry(identity: u32, how: u32, start_ns: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&identity.to_ne_bytes());
    v.extend_from_slice(&how.to_ne_bytes());
    v.extend_from_slice(&start_ns.to_ne_bytes());
    v
}

/// When process `pid` started, as a task-table entry stamps it (clock-tick precision).
#[must_use]
pub fn start_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = after[19].parse().expect("starttime");
    ticks * (1_000_000_000 / zt_agent_host::proc::clock_ticks())
}
