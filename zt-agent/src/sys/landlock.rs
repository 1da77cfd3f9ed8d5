//! A Landlock domain for workloads started by `zt-agent run`.
//!
//! It restricts no file access a workload can use (it handles only the creation of
//! block devices, which needs a capability the workload lacks anyway). What it adds is
//! Landlock's ptrace scoping: a task in a domain may not ptrace, or open
//! /proc/PID/mem of, a task outside it. That keeps a workload from driving an
//! unenrolled process of the same user through /proc, which seccomp cannot see.

const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_ACCESS_FS_MAKE_BLOCK: u64 = 1 << 11;

/// The Landlock ABI version, or `None` where Landlock is not available.
#[must_use]
pub fn abi_version() -> Option<i64> {
    // SAFETY: the documented version query: no attribute, size 0.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u64>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v)
}

/// Put the calling thread in a new domain. Needs no_new_privs (or CAP_SYS_ADMIN).
/// Async-signal-safe: only system calls, for use between fork and exec.
pub fn restrict_self() -> std::io::Result<()> {
    let handled_access_fs: u64 = LANDLOCK_ACCESS_FS_MAKE_BLOCK;
    // SAFETY: a landlock_ruleset_attr of the first ABI (one u64) and its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &raw const handled_access_fs,
            size_of::<u64>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the ruleset descriptor just created; closed right after.
    let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd as i32, 0u32) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd as i32) };
    if rc != 0 {
        return Err(err);
    }
    Ok(())
}
