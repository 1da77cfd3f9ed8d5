//! Host facts and helpers that the agent, the integration tests and xtask all need, written
//! once: whether this process is root, what /proc says about a process, where cgroup2 is
//! mounted, how a cgroup tree is removed, and the exit codes of the agent's commands.
//!
//! std and libc only, so that the tests and xtask can use it without building the eBPF
//! object that the agent's crate embeds.

pub mod cgroup;
pub mod exit;
pub mod mounts;
pub mod proc;

/// Whether this process runs with effective uid 0.
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
