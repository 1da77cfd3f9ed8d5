//! Thread-group tagging: a task keeps its identity across fork (children inherit it)
//! and cgroup moves, takes one when it enters or is born in an enrolled cgroup, and
//! loses it when its whole thread group has exited.
//!
//! An identity that holds its whole share of the task table forks no further: the
//! task that forks past it is killed (these hooks can signal only the current task,
//! which is the parent). Its child is still enrolled, never left unjudged; since every
//! fork past the share costs the forker its life, the identity stays within a few
//! entries of its share, and the table keeps room for every other identity.

use aya_ebpf::{
    helpers::generated::bpf_send_signal, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use zt_agent_common::{CGROUP_LAUNCHED, ENROLL_CGROUP, ENROLL_INHERIT, IDENTITY_NONE, errors};

use crate::events::count_error;
use crate::kernel::{
    CGROUP_KN_OFFSET, CGROUP_ROOT_HIERARCHY_ID_OFFSET, CGROUP_ROOT_OFFSET, CSS_SET_DFL_CGRP_OFFSET,
    KERNFS_NODE_ID_OFFSET, SIGKILL, TASK_CGROUPS_OFFSET, TASK_GROUP_LEADER_OFFSET,
    TASK_TGID_OFFSET, current_tgid, offset, read_at, task_identity,
};
use crate::maps::ZT_CGROUPS;
use crate::tasks::{self, Refused};

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

/// SIGKILL the current task's thread group, or count that it could not be.
#[inline(always)]
fn kill_current() {
    // SAFETY: helper call signalling the current task.
    if unsafe { bpf_send_signal(SIGKILL) } != 0 {
        count_error(errors::KILL_FAILED);
    }
}

#[inline(always)]
fn try_fork(ctx: &BtfTracePointContext) {
    // sched_process_fork(struct task_struct *parent, struct task_struct *child); runs
    // in the parent's context, once the child exists and before it first runs.
    let parent = current_tgid();
    let child: *const u8 = ctx.arg(1);
    let Some(child_tgid) = read_at::<i32>(child, offset(&TASK_TGID_OFFSET)) else {
        return;
    };
    let child_tgid = child_tgid as u32;
    if child_tgid == parent {
        return; // a new thread: the thread group is already enrolled or not
    }
    // A new process never takes over an entry left by an earlier holder of its pid.
    tasks::forget(child_tgid);
    let (id, how) = match task_identity(parent) {
        IDENTITY_NONE => match child_cgroup_identity(child) {
            // Born in an enrolled cgroup: the parent's, or another one through
            // clone3(CLONE_INTO_CGROUP), which fires no cgroup_attach_task.
            Some(id) => (id, ENROLL_CGROUP),
            None => return,
        },
        id => (id, ENROLL_INHERIT),
    };
    let start = tasks::start_ns(child);
    match tasks::enroll(child_tgid, id, how, start) {
        Ok(()) => {}
        Err(Refused::Share) => {
            // Past the share: the forker dies for it, its child is still enrolled.
            kill_current();
            if tasks::enroll_past_share(child_tgid, id, how, start).is_err()
                && task_identity(child_tgid) == IDENTITY_NONE
            {
                count_error(errors::TASKS_FULL);
            }
        }
        Err(Refused::Insert) => {
            if task_identity(child_tgid) == IDENTITY_NONE {
                // The table is full: the child cannot inherit the identity. It stays
                // judged through its cgroup if it remains there; stop the parent.
                count_error(errors::TASKS_FULL);
                kill_current();
            }
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
    let tgid = tgid as u32;
    if task_identity(tgid) != IDENTITY_NONE {
        return; // an enrolled task never changes identity
    }
    let leader = read_at::<*const u8>(task, offset(&TASK_GROUP_LEADER_OFFSET)).unwrap_or(task);
    let start = tasks::start_ns(leader);
    let r = match tasks::enroll(tgid, identity, ENROLL_CGROUP, start) {
        // A task that moves itself in (as `zt-agent run` starts a workload) past the
        // share dies for it. One moved in by another task (an administrator, a service
        // manager) is enrolled past the share rather than left unjudged: a workload
        // cannot move tasks that are not its own already.
        Err(Refused::Share) if tgid == current_tgid() => {
            kill_current();
            return;
        }
        Err(Refused::Share) => tasks::enroll_past_share(tgid, identity, ENROLL_CGROUP, start),
        r => r,
    };
    if r.is_err() && task_identity(tgid) == IDENTITY_NONE {
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
    tasks::forget(current_tgid());
}
