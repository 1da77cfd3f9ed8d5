//! Enrolled thread groups and cgroups, and each identity's share of the task table.

/// Value of the thread-group table, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskIdentity {
    pub identity: u32,
    /// How the task was enrolled (`ENROLL_*`).
    pub how: u32,
    /// When the thread group started (`start_boottime`, boot-clock nanoseconds; the
    /// daemon writes it at clock-tick precision, as /proc shows it). With the tgid it
    /// names one process, so that an entry is never taken for a later holder of its pid.
    pub start_ns: u64,
}
const _: () = assert!(core::mem::size_of::<TaskIdentity>() == 16);
// SAFETY: repr(C), two u32 then a u64 at offset 8, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TaskIdentity {}

pub const ENROLL_RUN: u32 = 1;
pub const ENROLL_CGROUP: u32 = 2;
pub const ENROLL_INHERIT: u32 = 3;
pub const ENROLL_SCAN: u32 = 4;
/// Exec'd a file an `exe` selector names.
pub const ENROLL_EXE: u32 = 5;
/// Exec'd anything with a uid or gid a selector names.
pub const ENROLL_PRINCIPAL: u32 = 6;
/// Exec'd a selected file that failed its digest or changed: [`crate::IDENTITY_QUARANTINE`].
pub const ENROLL_QUARANTINE: u32 = 7;

/// Value bit of the enrolled-cgroup table: the entry belongs to a `zt-agent run`
/// launch cgroup, which the launcher adds and removes itself. The identity is the
/// value without this bit.
pub const CGROUP_LAUNCHED: u32 = 1 << 31;

/// Default share of the task table one identity may hold.
pub const DEFAULT_TASK_SHARE: u64 = 4096;

/// What userspace keeps per identity for the task table, indexed by identity id. Only
/// the daemon's enforcer writes it; the kernel reads it.
///
/// The kernel counts the entries it adds and removes itself in a separate array, with
/// atomic adds, so that no write from userspace can lose one of its updates. An
/// identity holds `kernel + user` entries (wrapping: either part may go below zero,
/// when one side removes what the other added).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskShare {
    /// Most entries the identity may hold; 0 holds none.
    pub max: u64,
    /// Entries the daemon added for the identity, less those it removed (wrapping).
    pub user: u64,
}
const _: () = assert!(core::mem::size_of::<TaskShare>() == 16);
// SAFETY: repr(C), two u64, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TaskShare {}

/// The entries an identity holds, from the kernel's count and the daemon's.
#[inline(always)]
#[must_use]
pub const fn task_entries(kernel: u64, user: u64) -> u64 {
    let n = kernel.wrapping_add(user);
    // A transient negative sum (a removal counted before its insert) is no entry.
    if (n as i64) < 0 { 0 } else { n }
}
