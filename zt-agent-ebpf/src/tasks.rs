//! The task table's entries are added and removed here only, so that each identity's
//! count stays exact and no identity holds more than its share: one that would go
//! past it is refused for itself, and the table keeps room for every other identity.

use aya_ebpf::bindings::BPF_NOEXIST;
use zt_agent_common::{TaskIdentity, task_entries};

use crate::kernel::{TASK_START_BOOTTIME_OFFSET, atomic_add, offset, read_at};
use crate::maps::{ZT_TASK_COUNT, ZT_TASK_REFUSED, ZT_TASK_SHARE, ZT_TASKS};

/// Why a thread group got no entry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its identity holds its whole share.
    Share,
    /// It has one already (a concurrent enrollment won), or the table is full.
    Insert,
}

#[inline(always)]
fn count(identity: u32, add: bool) {
    if let Some(p) = ZT_TASK_COUNT.get_ptr_mut(identity) {
        // Adding all ones takes one away (wrapping).
        // SAFETY: `p` is a valid, aligned u64 of an array map value; every kernel-side
        // change of it is this atomic add.
        unsafe { atomic_add(p, if add { 1 } else { u64::MAX }) };
    }
}

/// Whether `identity` may take one more entry. Concurrent enrollments may each see
/// the last free slot, so an identity can go past its share by as many as run at
/// once, never more.
#[inline(always)]
fn has_room(identity: u32) -> bool {
    let Some(share) = ZT_TASK_SHARE.get(identity) else {
        return false;
    };
    let kernel = ZT_TASK_COUNT.get(identity).copied().unwrap_or(0);
    task_entries(kernel, share.user) < share.max
}

#[inline(always)]
pub(crate) fn count_refused(identity: u32) {
    if let Some(p) = ZT_TASK_REFUSED.get_ptr_mut(identity) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

/// When the thread group of `task` (a `struct task_struct *`) started, as /proc counts.
#[inline(always)]
pub(crate) fn start_ns(task: *const u8) -> u64 {
    read_at::<u64>(task, offset(&TASK_START_BOOTTIME_OFFSET)).unwrap_or(0)
}

/// Give `tgid`, which has no entry, its identity.
#[inline(always)]
pub(crate) fn enroll(tgid: u32, identity: u32, how: u32, start_ns: u64) -> Result<(), Refused> {
    if !has_room(identity) {
        count_refused(identity);
        return Err(Refused::Share);
    }
    enroll_past_share(tgid, identity, how, start_ns)
}

/// Give `tgid` its identity whatever the identity's share: for a task that would
/// otherwise run unjudged, once the one responsible was stopped.
#[inline(always)]
pub(crate) fn enroll_past_share(
    tgid: u32,
    identity: u32,
    how: u32,
    start_ns: u64,
) -> Result<(), Refused> {
    let t = TaskIdentity {
        identity,
        how,
        start_ns,
    };
    ZT_TASKS
        .insert(&tgid, &t, BPF_NOEXIST.into())
        .map_err(|_| Refused::Insert)?;
    count(identity, true);
    Ok(())
}

/// Remove the entry of `tgid`, if it has one.
#[inline(always)]
pub(crate) fn forget(tgid: u32) {
    let Some(p) = ZT_TASKS.get_ptr(&tgid) else {
        return;
    };
    // SAFETY: pointer from a successful lookup, read once.
    let identity = unsafe { (*p).identity };
    // Only the removal that succeeds counts, should two run at once.
    if ZT_TASKS.remove(&tgid).is_ok() {
        count(identity, false);
    }
}
