//! connect and sendmsg: the verdict per call, by the identity of the calling task and
//! that of the socket; unenrolled tasks' destinations are recorded and pass.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::{
        bpf_get_current_comm, bpf_get_current_uid_gid, bpf_ktime_get_ns, generated::bpf_setsockopt,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use zt_agent_common::{
    CGROUP_ALLOW, CGROUP_REJECT, DNS_PORT, EventKind, FlowKey, IDENTITY_NONE, PROTO_MASK_TCP,
    PROTO_MASK_UDP, PROTO_OTHER, PROTO_TCP, PROTO_UDP, Reason, SOCK_MARK_ENROLLED,
    STATE_DEST_LIMITS, STATE_LIMITED, ShadowKey, ShadowValue, SockIdentity, Verdict,
};

const SOL_SOCKET: i32 = 1;
const SO_MARK: i32 = 36;

use super::dns::{dns_port, is_loopback, redirect_dns};
use crate::events::{count_verdict, emit};
use crate::kernel::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_STREAM, current_tgid,
    task_identity,
};
use crate::maps::{ZT_SHADOW, ZT_SOCK_ID};
use crate::traffic::{flow_limited, state_flags};
use crate::verdict::{ALLOW, Judgement, judge_v4, judge_v6, worst};

#[cgroup_sock_addr(connect4)]
pub fn zt_connect4(ctx: SockAddrContext) -> i32 {
    try_sock_addr(&ctx, EventKind::Connect, false)
}

#[cgroup_sock_addr(connect6)]
pub fn zt_connect6(ctx: SockAddrContext) -> i32 {
    try_sock_addr(&ctx, EventKind::Connect, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn zt_sendmsg4(ctx: SockAddrContext) -> i32 {
    try_sock_addr(&ctx, EventKind::Sendmsg, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn zt_sendmsg6(ctx: SockAddrContext) -> i32 {
    try_sock_addr(&ctx, EventKind::Sendmsg, true)
}

/// Where the call is going, as the hook judges it.
#[derive(Clone, Copy)]
pub(crate) struct Dest {
    pub(crate) v4: bool,
    pub(crate) addr: [u8; 16],
    pub(crate) port: u16,
}

#[inline(always)]
fn read_dest(ctx: &SockAddrContext, is6: bool) -> Dest {
    // SAFETY: the context pointer is valid for the whole program run.
    let sa = unsafe { &*ctx.sock_addr };
    // user_port holds the port in network byte order in its low 16 bits.
    make_dest(
        is6,
        sa.user_ip4,
        sa.user_ip6,
        u16::from_be(sa.user_port as u16),
    )
}

/// The peer of a connected socket: where a sendmsg() without an address goes.
#[inline(always)]
fn read_peer(ctx: &SockAddrContext, is6: bool) -> Dest {
    // SAFETY: the context pointer is valid for the whole program run; sk is the full
    // socket the call is made on.
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk };
    if sk.is_null() {
        return make_dest(false, 0, [0; 4], 0);
    }
    // SAFETY: non-null socket pointer from the context.
    let sk = unsafe { &*sk };
    make_dest(is6, sk.dst_ip4, sk.dst_ip6, u16::from_be(sk.dst_port))
}

#[inline(always)]
pub(crate) fn make_dest(is6: bool, ip4: u32, ip6: [u32; 4], port: u16) -> Dest {
    let mut addr = [0u8; 16];
    if !is6 {
        let a = ip4.to_ne_bytes();
        addr[0] = a[0];
        addr[1] = a[1];
        addr[2] = a[2];
        addr[3] = a[3];
        return Dest {
            v4: true,
            addr,
            port,
        };
    }
    let w = ip6;
    // An IPv4-mapped destination (::ffff:a.b.c.d) on an IPv6 socket reaches an IPv4
    // host and only runs connect6/sendmsg6: judge it by the IPv4 rules.
    if w[0] == 0 && w[1] == 0 && w[2] == 0xffff_u32.to_be() {
        let a = w[3].to_ne_bytes();
        addr[0] = a[0];
        addr[1] = a[1];
        addr[2] = a[2];
        addr[3] = a[3];
        return Dest {
            v4: true,
            addr,
            port,
        };
    }
    let mut i = 0;
    while i < 4 {
        let b = w[i].to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
        i += 1;
    }
    Dest {
        v4: false,
        addr,
        port,
    }
}

#[inline(always)]
fn judge_dest(identity: u32, d: &Dest, proto_mask: u8) -> Judgement {
    if d.v4 {
        judge_v4(
            identity,
            [d.addr[0], d.addr[1], d.addr[2], d.addr[3]],
            d.port,
            proto_mask,
        )
    } else {
        judge_v6(identity, d.addr, d.port, proto_mask)
    }
}

/// The unspecified address (0.0.0.0, ::) reaches this host: the kernel substitutes
/// loopback after the hook has run. Judge it as loopback, both families for `::`
/// (a v6 socket bound to a v4-mapped address ends up at 127.0.0.1).
#[inline(always)]
fn judge_unspecified_too(identity: u32, d: &Dest, proto_mask: u8) -> Judgement {
    if d.addr != [0u8; 16] {
        return judge_dest(identity, d, proto_mask);
    }
    let v4 = judge_v4(identity, [127, 0, 0, 1], d.port, proto_mask);
    if d.v4 {
        return v4;
    }
    let mut lo6 = [0u8; 16];
    lo6[15] = 1;
    worst(v4, judge_v6(identity, lo6, d.port, proto_mask))
}

#[inline(always)]
fn try_sock_addr(ctx: &SockAddrContext, kind: EventKind, is6: bool) -> i32 {
    let tgid = current_tgid();
    let task_id = task_identity(tgid);
    let sock_id = match ZT_SOCK_ID.get_ptr_mut(ctx) {
        p if p.is_null() => IDENTITY_NONE,
        // SAFETY: non-null pointer to this socket's storage.
        p => unsafe { (*p).identity },
    };
    // Where the call names (nothing, for a send on a connected socket).
    let given = read_dest(ctx, is6);
    let dns = dns_port();
    if dns != 0 && given.port == dns && (is_loopback(&given) || given.addr == [0u8; 16]) {
        // Nobody addresses the resolver itself, enrolled or not: only the kernel's
        // redirection reaches it, so the resolver always knows who asks. The
        // unspecified addresses (0.0.0.0, ::, ::ffff:0.0.0.0) count as loopback: the
        // kernel sends a call to them to loopback after this hook has run.
        return CGROUP_REJECT;
    }
    if task_id == IDENTITY_NONE && sock_id == IDENTITY_NONE {
        record_shadow(ctx, &given, tgid);
        return CGROUP_ALLOW;
    }
    if sock_id == IDENTITY_NONE {
        // A socket created outside and used by an enrolled task: tag it now, so that
        // its packets are guarded like those of sockets the task created itself.
        let mut init = SockIdentity::new(task_id);
        if !ZT_SOCK_ID
            .get_or_insert_ptr_mut(ctx, Some(&mut init))
            .is_null()
        {
            mark_enrolled(ctx);
        }
    }
    let reported = if task_id != IDENTITY_NONE {
        task_id
    } else {
        sock_id
    };

    // SAFETY: the context pointer is valid for the whole program run.
    let sa = unsafe { &*ctx.sock_addr };
    let (proto_mask, proto_idx, proto_num) = match (sa.type_, sa.protocol) {
        (SOCK_STREAM, IPPROTO_TCP) => (PROTO_MASK_TCP, PROTO_TCP, IPPROTO_TCP as u8),
        (SOCK_DGRAM, IPPROTO_UDP) => (PROTO_MASK_UDP, PROTO_UDP, IPPROTO_UDP as u8),
        // Other protocols match no rule, so they are denied.
        (_, p) => (0, PROTO_OTHER, p as u8),
    };
    let mut dest = given;
    if matches!(kind, EventKind::Sendmsg) && dest.port == 0 && dest.addr == [0u8; 16] {
        // sendmsg() on a connected socket with ancillary data runs this hook with no
        // address: the datagram goes to the socket's peer, so judge that. (The peer may
        // have been connected before this task had its identity.)
        dest = read_peer(ctx, is6);
    }

    // DNS is never judged by the IP rules: it goes to the resolver or nowhere.
    let dns_path = proto_mask != 0 && dns != 0;
    if dns_path && given.port == DNS_PORT {
        // To any resolver: the agent's resolver answers, by the identity's names.
        redirect_dns(ctx, is6, &given, dns, reported, tgid);
        count_verdict(reported, Verdict::Allow, proto_idx);
        return CGROUP_ALLOW;
    }
    if dns_path && dest.port == dns && is_loopback(&dest) {
        // A send on a socket the kernel connected to the resolver.
        count_verdict(reported, Verdict::Allow, proto_idx);
        return CGROUP_ALLOW;
    }
    let j = if dns_path && dest.port == DNS_PORT {
        // The peer of a socket connected before: there is no address to rewrite.
        Judgement {
            verdict: Verdict::Deny,
            reason: Reason::NoRule,
        }
    } else {
        let mut j = ALLOW;
        if task_id != IDENTITY_NONE {
            j = judge_unspecified_too(task_id, &dest, proto_mask);
        }
        if sock_id != IDENTITY_NONE && sock_id != task_id {
            j = worst(j, judge_unspecified_too(sock_id, &dest, proto_mask));
        }
        j
    };
    let j = within_limits(j, task_id, sock_id, &dest, proto_num);
    count_verdict(reported, j.verdict, proto_idx);
    if (j.verdict as u8) != (Verdict::Allow as u8) {
        emit(
            kind,
            &j,
            reported,
            sock_id,
            if dest.v4 { AF_INET } else { AF_INET6 },
            &dest.addr,
            dest.port,
            proto_num,
            0,
        );
    }
    if (j.verdict as u8) == (Verdict::Deny as u8) {
        CGROUP_REJECT
    } else {
        CGROUP_ALLOW
    }
}

/// An allowed call is denied when its identity, or its traffic to this destination,
/// is past an upload limit the daemon marked (never in audit mode: the daemon marks
/// enforcing identities only).
#[inline(always)]
fn within_limits(j: Judgement, task_id: u32, sock_id: u32, d: &Dest, proto: u8) -> Judgement {
    if (j.verdict as u8) == (Verdict::Deny as u8) {
        return j;
    }
    let over = |id: u32| {
        if id == IDENTITY_NONE {
            return false;
        }
        let st = state_flags(id);
        if st & STATE_LIMITED != 0 {
            return true;
        }
        st & STATE_DEST_LIMITS != 0
            && flow_limited(&FlowKey {
                identity: id,
                port: d.port,
                family: if d.v4 { AF_INET as u8 } else { AF_INET6 as u8 },
                protocol: proto,
                addr: d.addr,
            })
    };
    if over(task_id) || (sock_id != task_id && over(sock_id)) {
        Judgement {
            verdict: Verdict::Deny,
            reason: Reason::LimitExceeded,
        }
    } else {
        j
    }
}

/// Give a socket tagged here the mark sock_create gives the sockets it tags.
#[inline(always)]
fn mark_enrolled(ctx: &SockAddrContext) {
    // SAFETY: the context pointer is valid for the whole program run; sk is the full
    // socket the call is made on.
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk };
    if sk.is_null() {
        return;
    }
    // SAFETY: a full socket's mark is readable here.
    let mut mark = unsafe { (*sk).mark } | SOCK_MARK_ENROLLED;
    // SAFETY: helper call on this hook's context with a 4-byte value.
    unsafe {
        bpf_setsockopt(
            ctx.sock_addr.cast(),
            SOL_SOCKET,
            SO_MARK,
            (&raw mut mark).cast(),
            4,
        )
    };
}

/// Remember where an unenrolled task went: one LRU lookup, and an insert the first
/// time a (task, destination) pair is seen.
#[inline(always)]
fn record_shadow(ctx: &SockAddrContext, d: &Dest, tgid: u32) {
    // SAFETY: the context pointer is valid for the whole program run.
    let sa = unsafe { &*ctx.sock_addr };
    if d.port == 0 && d.addr == [0u8; 16] {
        return; // sendmsg on a connected socket: seen at connect
    }
    let key = ShadowKey {
        tgid,
        port: d.port,
        family: if d.v4 { AF_INET as u8 } else { AF_INET6 as u8 },
        protocol: sa.protocol as u8,
        addr: d.addr,
    };
    if let Some(v) = ZT_SHADOW.get_ptr_mut(&key) {
        // SAFETY: pointer from a successful lookup; a lost increment under a race is fine.
        unsafe { (*v).count += 1 };
        return;
    }
    let v = ShadowValue {
        // SAFETY: helper without arguments.
        first_ktime_ns: unsafe { bpf_ktime_get_ns() },
        count: 1,
        uid: bpf_get_current_uid_gid() as u32,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let _ = ZT_SHADOW.insert(&key, &v, BPF_ANY.into());
}
