//! Exec: identity by binary and user, and the per-identity exec allowlist, judged
//! after exec's point of no return (tp_btf) and, where the kernel loads BPF LSM,
//! before it.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_get_current_uid_gid, generated::bpf_send_signal},
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use zt_agent_common::{
    ANY_ID, ENROLL_EXE, ENROLL_PRINCIPAL, ENROLL_QUARANTINE, EXE_FLAG_DIGEST, EXE_FLAG_QUARANTINE,
    ExecAllowKey, FileKey, FileStamp, IDENTITY_FLAG_AUDIT, IDENTITY_FLAG_EXEC_RESTRICTED,
    IDENTITY_FLAG_IN_POLICY, IDENTITY_NONE, IDENTITY_QUARANTINE, PRINCIPAL_GID, PRINCIPAL_UID,
    PrincipalKey, Reason, Verdict, errors,
};

use crate::events::{count_error, count_exec, emit_exec};
use crate::kernel::{
    BPRM_FILE_OFFSET, FILE_INODE_OFFSET, INODE_CTIME_NSEC_OFFSET, INODE_CTIME_SEC_OFFSET,
    INODE_INO_OFFSET, INODE_SB_OFFSET, SB_DEV_OFFSET, SIGKILL, current_tgid, offset, read_at,
    task_identity,
};
use crate::maps::{ZT_EXE_SEL, ZT_EXEC_ALLOW, ZT_IDENTITIES, ZT_PRINCIPALS};
use crate::tasks::{self, Refused};
use crate::verdict::{ALLOW, Judgement};

const EPERM: i32 = 1;

#[btf_tracepoint(function = "sched_process_exec")]
pub fn zt_exec(ctx: BtfTracePointContext) -> u32 {
    try_exec(&ctx);
    0
}

/// Where the kernel loads BPF LSM programs, exec of a file outside the allowlist
/// fails with EPERM before anything of the old image is torn down. It runs for every
/// file of the exec chain (a script, then its interpreter); the tp_btf exec hook still
/// judges the final file after the point of no return, and the exec that enrolls a task.
#[lsm(hook = "bprm_check_security")]
pub fn zt_exec_lsm(ctx: LsmContext) -> i32 {
    try_exec_lsm(&ctx)
}

#[inline(always)]
fn try_exec_lsm(ctx: &LsmContext) -> i32 {
    // bprm_check_security(struct linux_binprm *bprm, int ret)
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let bprm: *const u8 = ctx.arg(0);
    let id = task_identity(current_tgid());
    if id == IDENTITY_NONE {
        return 0;
    }
    let Some((file, stamp)) = exec_file(bprm) else {
        return 0;
    };
    let j = judge_exec(id, &file, &stamp);
    if (j.verdict as u8) == (Verdict::Deny as u8) {
        count_exec(id, j.verdict);
        // SAFETY: helper without arguments.
        let task = unsafe { bpf_get_current_task() } as *const u8;
        emit_exec(&j, id, 0, task, bprm, &file, &stamp);
        return -EPERM;
    }
    0
}

/// The file an exec runs, as (device, inode) and change time, from `bprm->file`.
#[inline(always)]
fn exec_file(bprm: *const u8) -> Option<(FileKey, FileStamp)> {
    let file = read_at::<*const u8>(bprm, offset(&BPRM_FILE_OFFSET))?;
    let inode = read_at::<*const u8>(file, offset(&FILE_INODE_OFFSET))?;
    let sb = read_at::<*const u8>(inode, offset(&INODE_SB_OFFSET))?;
    let dev = read_at::<u32>(sb, offset(&SB_DEV_OFFSET))?;
    let ino = read_at::<u64>(inode, offset(&INODE_INO_OFFSET))?;
    let sec = read_at::<i64>(inode, offset(&INODE_CTIME_SEC_OFFSET))?;
    let nsec = read_at::<u32>(inode, offset(&INODE_CTIME_NSEC_OFFSET))?;
    Some((
        FileKey { dev, _pad: 0, ino },
        FileStamp {
            ctime_sec: sec,
            // Recent kernels keep a "ctime was queried" flag in the top bits.
            ctime_nsec: nsec & 0x3fff_ffff,
            _pad: 0,
        },
    ))
}

/// The `IDENTITY_FLAG_*` of an identity; 0 (not in the policy) when unknown.
#[inline(always)]
fn identity_config(id: u32) -> u32 {
    ZT_IDENTITIES.get(id).map_or(0, |c| c.flags)
}

/// Whether an enrolled identity may exec this file.
#[inline(always)]
fn judge_exec(id: u32, file: &FileKey, stamp: &FileStamp) -> Judgement {
    let deny = |reason| Judgement {
        verdict: Verdict::Deny,
        reason,
    };
    if id == IDENTITY_QUARANTINE {
        return deny(Reason::Quarantined);
    }
    let flags = identity_config(id);
    if flags & IDENTITY_FLAG_IN_POLICY == 0 {
        return deny(Reason::IdentityRemoved);
    }
    if flags & IDENTITY_FLAG_EXEC_RESTRICTED == 0 {
        return Judgement {
            verdict: Verdict::Allow,
            reason: Reason::ExecUnrestricted,
        };
    }
    let key = ExecAllowKey {
        identity: id,
        dev: file.dev,
        ino: file.ino,
    };
    let reason = match ZT_EXEC_ALLOW.get_ptr(&key) {
        // SAFETY: pointer from a successful lookup.
        Some(p) if unsafe { *p } == *stamp => return ALLOW,
        Some(_) => Reason::FileChanged,
        None => Reason::ExecNotAllowed,
    };
    Judgement {
        verdict: if flags & IDENTITY_FLAG_AUDIT != 0 {
            Verdict::Audit
        } else {
            Verdict::Deny
        },
        reason,
    }
}

/// The identity an unenrolled task takes by this exec, if any: an `exe` selector
/// naming the file (with its uid/gid conditions), else a uid, else a gid selector.
#[inline(always)]
fn select_on_exec(
    file: &FileKey,
    stamp: &FileStamp,
    uid: u32,
    gid: u32,
) -> Option<(u32, u32, Reason)> {
    if let Some(p) = ZT_EXE_SEL.get_ptr(file) {
        // SAFETY: pointer from a successful lookup; copied once.
        let sel = unsafe { *p };
        if (sel.uid == ANY_ID || sel.uid == uid) && (sel.gid == ANY_ID || sel.gid == gid) {
            // A pinned digest that failed, or that can no longer be vouched for because
            // the file changed since the daemon verified it: quarantine. Without a
            // digest a changed file is still the selected file.
            let reason = if sel.flags & EXE_FLAG_QUARANTINE != 0 {
                Reason::Quarantined
            } else if sel.stamp != *stamp {
                Reason::FileChanged
            } else {
                Reason::RuleMatched
            };
            let digest_failed = sel.flags & EXE_FLAG_QUARANTINE != 0
                || (sel.stamp != *stamp && sel.flags & EXE_FLAG_DIGEST != 0);
            if !digest_failed {
                return Some((sel.identity, ENROLL_EXE, reason));
            }
            // An identity in audit mode never blocks: its tasks stay in it, and the exec
            // is reported as one that would have been quarantined.
            if identity_config(sel.identity) & IDENTITY_FLAG_AUDIT != 0 {
                return Some((sel.identity, ENROLL_EXE, Reason::Quarantined));
            }
            return Some((IDENTITY_QUARANTINE, ENROLL_QUARANTINE, reason));
        }
    }
    let by_uid = PrincipalKey {
        kind: PRINCIPAL_UID,
        id: uid,
    };
    if let Some(p) = ZT_PRINCIPALS.get_ptr(&by_uid) {
        // SAFETY: pointer from a successful lookup; copied once.
        let pr = unsafe { *p };
        if pr.gid == ANY_ID || pr.gid == gid {
            return Some((pr.identity, ENROLL_PRINCIPAL, Reason::RuleMatched));
        }
    }
    let by_gid = PrincipalKey {
        kind: PRINCIPAL_GID,
        id: gid,
    };
    // SAFETY: pointer from a successful lookup.
    ZT_PRINCIPALS.get_ptr(&by_gid).map(|p| {
        (
            unsafe { (*p).identity },
            ENROLL_PRINCIPAL,
            Reason::RuleMatched,
        )
    })
}

/// Runs after exec's point of no return, before the new image runs an instruction.
/// An unenrolled task may take an identity here; an enrolled one keeps its own and
/// is killed if its allowlist does not hold the file (the interpreter, for a script).
#[inline(always)]
fn try_exec(ctx: &BtfTracePointContext) {
    // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    let tgid = current_tgid();
    let id = task_identity(tgid);
    let Some((file, stamp)) = exec_file(bprm) else {
        if id != IDENTITY_NONE {
            // Unreadable file: judge it as unknown (fail closed).
            let (f, st) = (FileKey::default(), FileStamp::default());
            let j = judge_exec(id, &f, &st);
            finish_exec(&j, id, 0, task, bprm, &f, &st);
        }
        return;
    };
    if id != IDENTITY_NONE {
        let j = judge_exec(id, &file, &stamp);
        finish_exec(&j, id, 0, task, bprm, &file, &stamp);
        return;
    }
    let uid_gid = bpf_get_current_uid_gid();
    let Some((new_id, how, reason)) =
        select_on_exec(&file, &stamp, uid_gid as u32, (uid_gid >> 32) as u32)
    else {
        return;
    };
    // A concurrent enrollment (cgroup move) wins; an identity never changes.
    if let Err(why) = tasks::enroll(tgid, new_id, how, tasks::start_ns(task)) {
        if why == Refused::Share || task_identity(tgid) == IDENTITY_NONE {
            // Could not tag the task (its identity holds its whole share of the task
            // table, or the table is full): it must not run unjudged.
            if why == Refused::Insert {
                count_error(errors::TASKS_FULL);
            }
            // SAFETY: helper call signalling the current task.
            unsafe {
                bpf_send_signal(SIGKILL);
            }
        }
        return;
    }
    // The exec that gave the identity is the identity's first: its allowlist applies.
    // Quarantine is the exception: the task lives on there, with nothing allowed.
    let j = if new_id == IDENTITY_QUARANTINE {
        Judgement {
            verdict: Verdict::Allow,
            reason,
        }
    } else if (reason as u8) == (Reason::Quarantined as u8) {
        // Audit mode, where enforce mode would have quarantined.
        Judgement {
            verdict: Verdict::Audit,
            reason,
        }
    } else {
        match judge_exec(new_id, &file, &stamp) {
            j if (j.verdict as u8) == (Verdict::Allow as u8) => Judgement {
                verdict: Verdict::Allow,
                reason,
            },
            j => j,
        }
    };
    finish_exec(&j, new_id, how, task, bprm, &file, &stamp);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn finish_exec(
    j: &Judgement,
    id: u32,
    how: u32,
    task: *const u8,
    bprm: *const u8,
    file: &FileKey,
    stamp: &FileStamp,
) {
    count_exec(id, j.verdict);
    emit_exec(j, id, how, task, bprm, file, stamp);
    if (j.verdict as u8) == (Verdict::Deny as u8) {
        // SAFETY: helper call signalling the current task (its whole thread group).
        if unsafe { bpf_send_signal(SIGKILL) } != 0 {
            count_error(errors::KILL_FAILED);
        }
    }
}
