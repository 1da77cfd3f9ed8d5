//! Socket creation and socket options: enrolled tasks get TCP and UDP sockets only,
//! each tagged with its creator's identity and marked (`SOCK_MARK_ENROLLED`) so that
//! the packet hooks find it in one load, and no source routing. Nobody takes the mark
//! off a tagged socket with `SO_MARK`.

use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    helpers::generated::bpf_sk_storage_get,
    macros::{cgroup_sock, cgroup_sockopt},
    programs::{SockContext, SockoptContext},
};
use zt_agent_common::{
    CGROUP_ALLOW, CGROUP_REJECT, EventKind, IDENTITY_NONE, PROTO_OTHER, Reason, SOCK_MARK_ENROLLED,
    SockIdentity, Verdict, errors,
};

use crate::events::{count_error, count_verdict, emit};
use crate::kernel::{
    IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_STREAM, current_tgid, task_identity,
};
use crate::maps::sock_id_map;
use crate::verdict::mode_judgement;

const SOL_IP: i32 = 0;
const SOL_SOCKET: i32 = 1;
const SO_MARK: i32 = 36;
const SOL_IPV6: i32 = 41;
const IP_OPTIONS: i32 = 4;
const IPV6_2292RTHDR: i32 = 24;
const IPV6_RTHDR: i32 = 57;

#[cgroup_sock(sock_create)]
pub fn zt_sock_create(ctx: SockContext) -> i32 {
    try_sock_create(&ctx)
}

#[cgroup_sockopt(setsockopt)]
pub fn zt_setsockopt(ctx: SockoptContext) -> i32 {
    try_setsockopt(&ctx)
}

/// Tag the socket with its creator's identity; TCP and UDP only.
#[inline(always)]
fn try_sock_create(ctx: &SockContext) -> i32 {
    // Tasks in enrolled cgroups are enrolled when they enter (cgroup_attach_task), when
    // they are born there (fork, CLONE_INTO_CGROUP included), or by the daemon's scan
    // of tasks that were there first. So one lookup suffices on every hot path.
    let id = task_identity(current_tgid());
    if id == IDENTITY_NONE {
        return CGROUP_ALLOW;
    }
    // SAFETY: the context pointer is valid for the whole program run.
    let sk = unsafe { &*ctx.sock };
    let ok_type = (sk.type_ == SOCK_STREAM && sk.protocol == IPPROTO_TCP)
        || (sk.type_ == SOCK_DGRAM && sk.protocol == IPPROTO_UDP);
    if !ok_type {
        let j = mode_judgement(id, Reason::SocketType);
        count_verdict(id, j.verdict, PROTO_OTHER);
        emit(
            EventKind::SockCreate,
            &j,
            id,
            IDENTITY_NONE,
            sk.family as u16,
            &[0; 16],
            0,
            sk.protocol as u8,
            sk.type_,
        );
        if (j.verdict as u8) == (Verdict::Deny as u8) {
            return CGROUP_REJECT;
        }
    }
    let mut init = SockIdentity::new(id);
    // SAFETY: helper call with a valid map, socket and initial value.
    let p = unsafe {
        bpf_sk_storage_get(
            sock_id_map(),
            ctx.sock.cast(),
            (&raw mut init).cast(),
            BPF_SK_STORAGE_GET_F_CREATE.into(),
        )
    };
    if p.is_null() {
        // Without the tag a passed-on socket could escape its creator's policy.
        count_error(errors::SK_STORAGE);
        return CGROUP_REJECT;
    }
    // SAFETY: sock_create may write the mark of the socket it is given.
    unsafe { (*ctx.sock).mark |= SOCK_MARK_ENROLLED };
    CGROUP_ALLOW
}

/// setsockopt: no source routing, which would send packets somewhere other than
/// the address the connect/sendmsg hook judged.
#[inline(always)]
fn try_setsockopt(ctx: &SockoptContext) -> i32 {
    // SAFETY: the context pointer is valid for the whole program run.
    let so = unsafe { &*ctx.sockopt };
    let level = so.level;
    let optname = so.optname;
    if level == SOL_SOCKET && optname == SO_MARK {
        keep_mark(so);
        return CGROUP_ALLOW;
    }
    let routing = (level == SOL_IPV6 && (optname == IPV6_RTHDR || optname == IPV6_2292RTHDR))
        || (level == SOL_IP && optname == IP_OPTIONS);
    if !routing {
        return CGROUP_ALLOW;
    }
    // An unenrolled task setting the option on a socket an enrolled one created is
    // caught by the packet guard, which judges by the socket's identity.
    let id = task_identity(current_tgid());
    if id == IDENTITY_NONE {
        return CGROUP_ALLOW;
    }
    let j = mode_judgement(id, Reason::SocketOption);
    count_verdict(id, j.verdict, PROTO_OTHER);
    emit(
        EventKind::Setsockopt,
        &j,
        id,
        IDENTITY_NONE,
        0,
        &[0; 16],
        0,
        level as u8,
        optname as u32,
    );
    if (j.verdict as u8) == (Verdict::Deny as u8) {
        CGROUP_REJECT
    } else {
        CGROUP_ALLOW
    }
}

/// A new mark for a tagged socket keeps `SOCK_MARK_ENROLLED`, whoever sets it (only a
/// task with CAP_NET_ADMIN can): without it the socket's packets would go uncounted
/// and past its limits.
#[inline(always)]
fn keep_mark(so: &aya_ebpf::bindings::bpf_sockopt) {
    // SAFETY: the socket the option is set on, never null in this hook.
    let sk = unsafe { so.__bindgen_anon_1.sk };
    // SAFETY: helper call with a valid map and socket, no creation.
    let p = unsafe { bpf_sk_storage_get(sock_id_map(), sk.cast(), core::ptr::null_mut(), 0) };
    if p.is_null() {
        return;
    }
    // SAFETY: optval and optval_end bound the kernel's copy of the new value.
    let (v, end) = unsafe {
        (
            so.__bindgen_anon_2.optval as usize,
            so.__bindgen_anon_3.optval_end as usize,
        )
    };
    if v + 4 > end {
        return; // shorter than an int: the kernel refuses it
    }
    // SAFETY: within the bounds checked above; the kernel passes this copy on.
    unsafe { *(v as *mut u32) |= SOCK_MARK_ENROLLED };
}
