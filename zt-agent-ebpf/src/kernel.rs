//! The running kernel: its ABI numbers, the struct offsets userspace computes from
//! BTF at load time (Rust eBPF has no CO-RE field relocation), reads through them,
//! and the calling task's identity.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
    bpf_probe_read_kernel,
};
use zt_agent_common::{Caller, IDENTITY_NONE, NS_PER_CLOCK_TICK};

use crate::maps::ZT_TASKS;

pub(crate) const AF_INET: u16 = 2;
pub(crate) const AF_INET6: u16 = 10;
pub(crate) const SOCK_STREAM: u32 = 1;
pub(crate) const SOCK_DGRAM: u32 = 2;
pub(crate) const IPPROTO_TCP: u32 = 6;
pub(crate) const IPPROTO_UDP: u32 = 17;
pub(crate) const SIGKILL: u32 = 9;

/// One `u32` global per offset, named as `zt_agent_common::offsets::OFFSETS` names
/// it: the loader sets them by symbol name before verification.
macro_rules! offset_globals {
    ($($global:ident: $how:ident($($arg:ident),*)),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            pub(crate) static $global: u32 = 0;
        )*
    };
}
zt_agent_common::kernel_offsets!(offset_globals);

/// Add `delta` to the u64 at `p` atomically (BPF has no other atomic for Rust to use).
///
/// # Safety
/// `p` must point to a valid, aligned u64 of a map value.
#[inline(always)]
pub(crate) unsafe fn atomic_add(p: *mut u64, delta: u64) {
    // SAFETY: as the caller promises.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {d}",
            p = in(reg) p,
            d = in(reg) delta,
        );
    }
}

#[inline(always)]
pub(crate) fn offset(global: &u32) -> usize {
    // SAFETY: reading a global that the loader set before verification.
    unsafe { core::ptr::read_volatile(global) as usize }
}

/// Read a `T` at `base + off` from kernel memory.
#[inline(always)]
pub(crate) fn read_at<T>(base: *const u8, off: usize) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off).cast::<T>()).ok() }
}

#[inline(always)]
pub(crate) fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Identity of the calling thread group, or `IDENTITY_NONE`.
#[inline(always)]
pub(crate) fn task_identity(tgid: u32) -> u32 {
    match ZT_TASKS.get_ptr(&tgid) {
        // SAFETY: the pointer comes from a successful lookup and is read once.
        Some(t) => unsafe { (*t).identity },
        None => IDENTITY_NONE,
    }
}

/// The calling task as a grant's scope sees it: its cgroup, its thread group, and when
/// that thread group started (the leader's boot-clock start, in clock ticks as
/// /proc/PID/stat gives it).
#[inline(always)]
pub(crate) fn caller() -> Caller {
    // SAFETY: helpers without arguments.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let start_ticks = read_at::<*const u8>(task, offset(&TASK_GROUP_LEADER_OFFSET))
        .and_then(|leader| read_at::<u64>(leader, offset(&TASK_START_BOOTTIME_OFFSET)))
        .map_or(u64::MAX, |ns| ns / NS_PER_CLOCK_TICK);
    Caller {
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: u64::from(current_tgid()),
        start_ticks,
    }
}
