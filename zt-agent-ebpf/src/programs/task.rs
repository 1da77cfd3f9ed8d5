//! Thread-group tagging: a task keeps its identity across fork (children inherit it)
//! and cgroup moves, takes one when it enters or is born in an enrolled cgroup, and
//! loses it when its whole thread group has exited.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::generated::bpf_send_signal,
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use zt_agent_common::{
    CGROUP_LAUNCHED, ENROLL_CGROUP, ENROLL_INHERIT, IDENTITY_NONE, TaskIdentity, errors,
};

use crate::events::count_error;
use crate::kernel::{
    CGROUP_KN_OFFSET, CGROUP_ROOT_HIERARCHY_ID_OFFSET, CGROUP_ROOT_OFFSET, CSS_SET_DFL_CGRP_OFFSET,
    KERNFS_NODE_ID_OFFSET, SIGKILL, TASK_CGROUPS_OFFSET, TASK_TGID_OFFSET, current_tgid, offset,
    read_at, task_identity,
};
use crate::maps::{ZT_CGROUPS, ZT_TASKS};

#[btf_tracepoint(function = "sched_process_fork")]
pub fn zt_fork(ctx: BtfTracePointContext) -> u32 {
    try_fork(&ctx);
    0
}

#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn zt_cgroup_attach(ctx: BtfTracePointContext) -> u32 {
    try_cgroup_attach(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn zt_exit(ctx: BtfTracePointContext) -> u32 {
    try_exit(&ctx);
    0
}

#[inline(always)]
fn try_fork(ctx: &BtfTracePointContext) {
    // Runs in the parent's context.
    let parent = current_tgid();
    let child: *const u8 = ctx.arg(1);
    let Some(child_tgid) = read_at::<i32>(child, offset(&TASK_TGID_OFFSET)) else {
        return;
    };
    let child_tgid = child_tgid as u32;
    if child_tgid == parent {
        return; // a new thread: the thread group is already enrolled or not
    }
    let (id, how) = match task_identity(parent) {
        IDENTITY_NONE => match child_cgroup_identity(child) {
            // Born in an enrolled cgroup: the parent's, or another one through
            // clone3(CLONE_INTO_CGROUP), which fires no cgroup_attach_task.
            Some(id) => (id, ENROLL_CGROUP),
            None => {
                // A new process never takes over an entry left by an earlier holder
                // of its pid.
                let _ = ZT_TASKS.remove(&child_tgid);
                return;
            }
        },
        id => (id, ENROLL_INHERIT),
    };
    let t = TaskIdentity { identity: id, how };
    // BPF_ANY: an entry under a pid that was just handed out is stale by definition.
    if ZT_TASKS.insert(&child_tgid, &t, BPF_ANY.into()).is_err() {
        // The child could not inherit the identity. It stays judged through its cgroup
        // if it remains there; count it, and stop the parent (fail closed).
        count_error(errors::TASKS_FULL);
        // SAFETY: helper call signalling the current task.
        unsafe {
            bpf_send_signal(SIGKILL);
        }
    }
}

/// The identity of the enrolled cgroup a new task starts in, if any.
#[inline(always)]
fn child_cgroup_identity(task: *const u8) -> Option<u32> {
    let cset = read_at::<*const u8>(task, offset(&TASK_CGROUPS_OFFSET))?;
    let cgrp = read_at::<*const u8>(cset, offset(&CSS_SET_DFL_CGRP_OFFSET))?;
    cgroup_identity(cgrp)
}

/// The identity a cgroup v2 `struct cgroup` is enrolled under, if any.
#[inline(always)]
fn cgroup_identity(cgrp: *const u8) -> Option<u32> {
    let kn = read_at::<*const u8>(cgrp, offset(&CGROUP_KN_OFFSET))?;
    let cgid = read_at::<u64>(kn, offset(&KERNFS_NODE_ID_OFFSET))?;
    // SAFETY: pointer from a successful lookup.
    ZT_CGROUPS
        .get_ptr(&cgid)
        .map(|p| unsafe { *p } & !CGROUP_LAUNCHED)
}

/// A task moved into an enrolled cgroup is enrolled before the write to
/// cgroup.procs returns, so it cannot move on before anything saw it.
#[inline(always)]
fn try_cgroup_attach(ctx: &BtfTracePointContext) {
    // cgroup_attach_task(struct cgroup *dst, const char *path, struct task_struct *task,
    //                    bool threadgroup)
    let cgrp: *const u8 = ctx.arg(0);
    let task: *const u8 = ctx.arg(2);
    // Only the cgroup2 hierarchy (hierarchy_id 0); v1 hierarchies number ids apart.
    let Some(root) = read_at::<*const u8>(cgrp, offset(&CGROUP_ROOT_OFFSET)) else {
        return;
    };
    if read_at::<i32>(root, offset(&CGROUP_ROOT_HIERARCHY_ID_OFFSET)) != Some(0) {
        return;
    }
    let Some(identity) = cgroup_identity(cgrp) else {
        return;
    };
    let Some(tgid) = read_at::<i32>(task, offset(&TASK_TGID_OFFSET)) else {
        return;
    };
    let t = TaskIdentity {
        identity,
        how: ENROLL_CGROUP,
    };
    // NOEXIST: an enrolled task never changes identity.
    if ZT_TASKS
        .insert(&(tgid as u32), &t, BPF_NOEXIST.into())
        .is_err()
        && task_identity(tgid as u32) == IDENTITY_NONE
    {
        count_error(errors::TASKS_FULL);
    }
}

#[inline(always)]
fn try_exit(ctx: &BtfTracePointContext) {
    // sched_process_exit(struct task_struct *p, bool group_dead): the identity ends
    // only when the whole thread group has exited.
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff == 0 {
        return;
    }
    let tgid = current_tgid();
    let _ = ZT_TASKS.remove(&tgid);
}
