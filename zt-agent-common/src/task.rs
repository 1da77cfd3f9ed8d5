//! Enrolled thread groups and cgroups.

/// Value of the thread-group table, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskIdentity {
    pub identity: u32,
    /// How the task was enrolled (`ENROLL_*`).
    pub how: u32,
}
const _: () = assert!(core::mem::size_of::<TaskIdentity>() == 8);
// SAFETY: repr(C), two u32, no padding.
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
