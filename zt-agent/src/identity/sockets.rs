//! Sockets a task had before it was enrolled (inherited across the exec that enrolled
//! it, as socket activation hands listeners over, or open when the daemon's scan found
//! it): the kernel recorded no identity for them. The daemon gives them the task's
//! identity, through a copy of each descriptor, so that what reaches them is judged as
//! for a socket created under it.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// Copies of the IPv4 and IPv6 sockets `tgid` holds. Best effort: a task that exits or
/// closes a descriptor meanwhile yields fewer.
#[must_use]
pub fn inet_sockets(tgid: u32) -> Vec<OwnedFd> {
    let mut out = Vec::new();
    // SAFETY: pidfd_open takes a pid and flags; the descriptor is ours.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0) };
    if pidfd < 0 {
        return out;
    }
    // SAFETY: the kernel just returned this descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let Ok(rd) = std::fs::read_dir(format!("/proc/{tgid}/fd")) else {
        return out;
    };
    for e in rd.flatten() {
        let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let is_socket =
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: pidfd_getfd copies descriptor `n` of the pidfd's process into ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
        if fd < 0 {
            continue;
        }
        // SAFETY: the kernel just returned this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if matches!(domain(&fd), Some(libc::AF_INET | libc::AF_INET6)) {
            out.push(fd);
        }
    }
    out
}

fn domain(fd: &OwnedFd) -> Option<i32> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid option buffer of the given length.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    (rc == 0).then_some(v)
}
