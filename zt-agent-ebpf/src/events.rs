//! Counters and ring buffer events. Hot paths count; only non-allow verdicts and
//! execs emit an event.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel_str_bytes,
        generated::bpf_skb_cgroup_id,
    },
};
use zt_agent_common::{
    EVENT_ANCESTORS, Event, EventKind, FileKey, FileStamp, IDENTITY_NONE, MAX_IDENTITIES, Verdict,
    errors, exec_verdict_index, verdict_index,
};

use crate::kernel::{
    BPRM_FILENAME_OFFSET, TASK_REAL_PARENT_OFFSET, TASK_TGID_OFFSET, offset, read_at,
};
use crate::maps::{ZT_ERRORS, ZT_EVENTS, ZT_EXEC_VERDICTS, ZT_IN_VERDICTS, ZT_VERDICTS};
use crate::verdict::Judgement;

#[inline(always)]
pub(crate) fn count_verdict(identity: u32, verdict: Verdict, proto: u8) {
    if identity >= MAX_IDENTITIES {
        return;
    }
    if let Some(p) = ZT_VERDICTS.get_ptr_mut(verdict_index(identity, verdict as u8, proto)) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

/// Binds and inbound connection attempts and datagrams, as `count_verdict`.
#[inline(always)]
pub(crate) fn count_ingress(identity: u32, verdict: Verdict, proto: u8) {
    if identity >= MAX_IDENTITIES {
        return;
    }
    if let Some(p) = ZT_IN_VERDICTS.get_ptr_mut(verdict_index(identity, verdict as u8, proto)) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn count_exec(identity: u32, verdict: Verdict) {
    if identity >= MAX_IDENTITIES {
        return;
    }
    if let Some(p) = ZT_EXEC_VERDICTS.get_ptr_mut(exec_verdict_index(identity, verdict as u8)) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn count_error(slot: u32) {
    if let Some(p) = ZT_ERRORS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit(
    kind: EventKind,
    j: &Judgement,
    identity: u32,
    sock_identity: u32,
    family: u16,
    addr: &[u8; 16],
    port: u16,
    protocol: u8,
    detail: u32,
) {
    let Some(mut entry) = ZT_EVENTS.reserve(0) else {
        count_error(errors::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    fill_common(ev, kind, j, identity, detail);
    // SAFETY: `ev` points at the reserved record, which this program owns until submit.
    unsafe {
        (*ev).sock_identity = sock_identity;
        (*ev).family = family;
        (*ev).port = port;
        (*ev).protocol = protocol;
        (*ev).addr = *addr;
        (*ev).ancestors = [0; EVENT_ANCESTORS];
        (*ev).file = FileKey::default();
        (*ev).file_stamp = FileStamp::default();
        (*ev).path[0] = 0;
    }
    entry.submit(0);
}

/// An inbound event: judged when the packet arrived, in no task's context, so it
/// names the socket's identity and cgroup and no task.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_inbound(
    skb: *mut __sk_buff,
    j: &Judgement,
    identity: u32,
    family: u16,
    peer: &[u8; 16],
    local_port: u16,
    peer_port: u16,
    protocol: u8,
) {
    let Some(mut entry) = ZT_EVENTS.reserve(0) else {
        count_error(errors::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at the reserved record, which this program owns until
    // submit; the helpers take the skb of this program run.
    unsafe {
        (*ev).ktime_ns = bpf_ktime_get_ns();
        (*ev).cgroup_id = bpf_skb_cgroup_id(skb);
        (*ev).identity = identity;
        (*ev).sock_identity = identity;
        (*ev).pid = 0;
        (*ev).tgid = 0;
        (*ev).uid = 0;
        (*ev).gid = 0;
        (*ev).detail = u32::from(peer_port);
        (*ev).family = family;
        (*ev).port = local_port;
        (*ev).kind = EventKind::Inbound as u8;
        (*ev).verdict = j.verdict as u8;
        (*ev).reason = j.reason as u8;
        (*ev).protocol = protocol;
        (*ev)._pad = [0; 4];
        (*ev).addr = *peer;
        (*ev).comm = [0; 16];
        (*ev).ancestors = [0; EVENT_ANCESTORS];
        (*ev).file = FileKey::default();
        (*ev).file_stamp = FileStamp::default();
        (*ev).path[0] = 0;
    }
    entry.submit(0);
}

/// An exec event with its provenance: the ancestors' tgids, the file and the path.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_exec(
    j: &Judgement,
    identity: u32,
    how: u32,
    task: *const u8,
    bprm: *const u8,
    file: &FileKey,
    stamp: &FileStamp,
) {
    let Some(mut entry) = ZT_EVENTS.reserve(0) else {
        count_error(errors::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    fill_common(ev, EventKind::Exec, j, identity, how);
    let mut ancestors = [0u32; EVENT_ANCESTORS];
    let mut t = task;
    let mut i = 0;
    while i < EVENT_ANCESTORS && !t.is_null() {
        let Some(parent) = read_at::<*const u8>(t, offset(&TASK_REAL_PARENT_OFFSET)) else {
            break;
        };
        let Some(ptgid) = read_at::<i32>(parent, offset(&TASK_TGID_OFFSET)) else {
            break;
        };
        if ptgid <= 0 || parent == t {
            break;
        }
        ancestors[i] = ptgid as u32;
        t = parent;
        i += 1;
    }
    // SAFETY: `ev` points at the reserved record, which this program owns until submit.
    unsafe {
        (*ev).sock_identity = IDENTITY_NONE;
        (*ev).family = 0;
        (*ev).port = 0;
        (*ev).protocol = 0;
        (*ev).addr = [0; 16];
        (*ev).ancestors = ancestors;
        (*ev).file = *file;
        (*ev).file_stamp = *stamp;
        (*ev).path[0] = 0;
        if let Some(name) = read_at::<*const u8>(bprm, offset(&BPRM_FILENAME_OFFSET)) {
            let _ = bpf_probe_read_kernel_str_bytes(name, &mut (*ev).path);
        }
    }
    entry.submit(0);
}

#[inline(always)]
fn fill_common(ev: *mut Event, kind: EventKind, j: &Judgement, identity: u32, detail: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `ev` points at a reserved ring buffer record.
    unsafe {
        (*ev).ktime_ns = bpf_ktime_get_ns();
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).identity = identity;
        (*ev).pid = pid_tgid as u32;
        (*ev).tgid = (pid_tgid >> 32) as u32;
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).detail = detail;
        (*ev).kind = kind as u8;
        (*ev).verdict = j.verdict as u8;
        (*ev).reason = j.reason as u8;
        (*ev)._pad = [0; 4];
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
}
