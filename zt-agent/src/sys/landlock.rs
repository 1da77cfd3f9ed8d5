//! A Landlock domain for workloads started by `zt-agent run`, at the newest ABI the
//! kernel offers.
//!
//! It restricts no file access a workload can use (it handles only the creation of
//! block devices, which needs a capability the workload lacks anyway). What it adds is
//! Landlock's scoping, which keeps a workload from reaching processes of its own user
//! outside its domain, the ones no policy judges:
//! - ptrace, and opening /proc/PID/mem (every ABI);
//! - signals (`LANDLOCK_SCOPE_SIGNAL`, ABI 6): a workload cannot kill or stop them;
//! - abstract unix sockets (`LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET`, ABI 6): it cannot
//!   connect to one they listen on (a session bus, an X server, an agent socket).
//!
//! Seccomp sees none of this: a signal or an abstract socket is judged by its target,
//! which a system call filter cannot know.

const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_ACCESS_FS_MAKE_BLOCK: u64 = 1 << 11;
const LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const LANDLOCK_SCOPE_SIGNAL: u64 = 1 << 1;
/// First ABI with `scoped`.
pub const ABI_SCOPES: i64 = 6;

/// `struct landlock_ruleset_attr` as of ABI 6; older ABIs take a prefix of it.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

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

/// What a domain at `abi` leaves out, for the launcher's note; `None` when nothing.
#[must_use]
pub fn missing_at(abi: Option<i64>) -> Option<&'static str> {
    match abi {
        None => Some(
            "Landlock is not available on this kernel: the workload is not kept from /proc/PID/mem, signals or abstract unix sockets of other processes of its user",
        ),
        Some(v) if v < ABI_SCOPES => Some(
            "this kernel's Landlock predates ABI 6: signals and abstract unix sockets of other processes of the workload's user are not scoped",
        ),
        Some(_) => None,
    }
}

/// Put the calling thread in a new domain at `abi` (from [`abi_version`]). Needs
/// no_new_privs (or CAP_SYS_ADMIN). Async-signal-safe: only system calls, for use
/// between fork and exec.
pub fn restrict_self(abi: i64) -> std::io::Result<()> {
    let attr = RulesetAttr {
        handled_access_fs: LANDLOCK_ACCESS_FS_MAKE_BLOCK,
        handled_access_net: 0,
        scoped: if abi >= ABI_SCOPES {
            LANDLOCK_SCOPE_SIGNAL | LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
        } else {
            0
        },
    };
    // The size tells the kernel which ABI the attribute is written for.
    let size = match abi {
        ..=3 => size_of::<u64>(),
        4 | 5 => 2 * size_of::<u64>(),
        _ => size_of::<RulesetAttr>(),
    };
    // SAFETY: a landlock_ruleset_attr of at least `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &raw const attr,
            size,
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
