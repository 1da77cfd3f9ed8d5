//! Inbound: which ports enrolled sockets may bind, and who may reach them.
//!
//! A bind to a port no ingress rule opens is refused (port 0, a client's ephemeral
//! port, is not listening). A packet that reaches a listening TCP socket (a SYN, and
//! the handshake's last ACK) or an unconnected UDP socket is judged by the peer's
//! address, the local port and the protocol; a datagram from a peer the identity's
//! egress rules allow is a reply and passes. Packets of established sockets (the
//! connections the identity made, and those its listeners accepted) and of connected
//! UDP sockets (which only their peer reaches) pass after two loads: the socket's
//! state decides before anything is looked up.

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    macros::{cgroup_skb, cgroup_sock_addr},
    programs::{SkBuffContext, SockAddrContext},
};
use zt_agent_common::{
    CGROUP_ALLOW, CGROUP_REJECT, EventKind, FlowKey, IDENTITY_NONE, PROTO_MASK_TCP, PROTO_MASK_UDP,
    PROTO_OTHER, PROTO_TCP, PROTO_UDP, SKB_DROP, SKB_PASS, Verdict,
};

use super::dns::{dns_port, is_loopback};
use super::sock_addr::{Dest, make_dest};
use crate::events::{count_ingress, emit, emit_inbound};
use crate::kernel::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_STREAM, current_tgid,
    task_identity,
};
use crate::maps::{ZT_SOCK_ID, skb_sock_identity};
use crate::traffic::account;
use crate::verdict::{
    ALLOW, Judgement, judge_bind, judge_in_v4, judge_in_v6, judge_v4, judge_v6, worst,
};

const ETH_P_IP_BE: u32 = 0x0008; // htons(0x0800) as the __sk_buff sees it
const ETH_P_IPV6_BE: u32 = 0xdd86; // htons(0x86dd)
/// Socket states (`TCP_*`): a listener, and an unconnected UDP socket.
const TCP_ESTABLISHED: u32 = 1;
const TCP_LISTEN: u32 = 10;
const TCP_CLOSE: u32 = 7;
const TCP_SYN: u8 = 0x02;
/// IPv6 extension headers walked to find the transport header.
const IPV6_EXT_MAX: usize = 4;

#[cgroup_sock_addr(bind4)]
pub fn zt_bind4(ctx: SockAddrContext) -> i32 {
    try_bind(&ctx, false)
}

#[cgroup_sock_addr(bind6)]
pub fn zt_bind6(ctx: SockAddrContext) -> i32 {
    try_bind(&ctx, true)
}

#[cgroup_skb(ingress)]
pub fn zt_skb_ingress(ctx: SkBuffContext) -> i32 {
    try_skb_ingress(&ctx)
}

#[inline(always)]
fn try_bind(ctx: &SockAddrContext, is6: bool) -> i32 {
    // SAFETY: the context pointer is valid for the whole program run.
    let sa = unsafe { &*ctx.sock_addr };
    // user_port holds the port in network byte order in its low 16 bits.
    let port = u16::from_be(sa.user_port as u16);
    if port == 0 {
        // The kernel picks an ephemeral port: a client's, not a listener's. A listen()
        // on it is judged packet by packet like any other.
        return CGROUP_ALLOW;
    }
    let task_id = task_identity(current_tgid());
    let sock_id = match ZT_SOCK_ID.get_ptr_mut(ctx) {
        p if p.is_null() => IDENTITY_NONE,
        // SAFETY: non-null pointer to this socket's storage.
        p => unsafe { (*p).identity },
    };
    if task_id == IDENTITY_NONE && sock_id == IDENTITY_NONE {
        return CGROUP_ALLOW;
    }
    let (proto_mask, proto_idx, proto_num) = match (sa.type_, sa.protocol) {
        (SOCK_STREAM, IPPROTO_TCP) => (PROTO_MASK_TCP, PROTO_TCP, IPPROTO_TCP as u8),
        (SOCK_DGRAM, IPPROTO_UDP) => (PROTO_MASK_UDP, PROTO_UDP, IPPROTO_UDP as u8),
        // Other protocols match no rule, so they are denied.
        (_, p) => (0, PROTO_OTHER, p as u8),
    };
    let mut j = ALLOW;
    if task_id != IDENTITY_NONE {
        j = judge_bind(task_id, port, proto_mask);
    }
    if sock_id != IDENTITY_NONE && sock_id != task_id {
        j = worst(j, judge_bind(sock_id, port, proto_mask));
    }
    let reported = if task_id != IDENTITY_NONE {
        task_id
    } else {
        sock_id
    };
    count_ingress(reported, j.verdict, proto_idx);
    if (j.verdict as u8) != (Verdict::Allow as u8) {
        let at = make_dest(is6, sa.user_ip4, sa.user_ip6, port);
        emit(
            EventKind::Bind,
            &j,
            reported,
            sock_id,
            if at.v4 { AF_INET } else { AF_INET6 },
            &at.addr,
            port,
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

/// Where an inbound packet comes from, as its headers say.
struct Peer {
    dest: Dest,
    /// The peer's port, and the TCP flags, when the transport header was found.
    port: Option<u16>,
    tcp_flags: u8,
    /// Where the transport header starts (0: not found).
    l4: usize,
}

/// The transport header of an IPv6 packet: past the extension headers that may come
/// first. `None` when it is not found within a few of them.
#[inline(always)]
fn ipv6_transport(ctx: &SkBuffContext, mut next: u8) -> Option<(u8, usize)> {
    let mut off = 40usize;
    let mut i = 0;
    while i < IPV6_EXT_MAX {
        match next {
            6 | 17 => return Some((next, off)),
            // Hop-by-hop, routing, destination options: length in 8-octet units.
            0 | 43 | 60 => {
                let h: [u8; 2] = ctx.load(off).ok()?;
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            // Fragment header: fixed size.
            44 => {
                let h: [u8; 1] = ctx.load(off).ok()?;
                next = h[0];
                off += 8;
            }
            _ => return None,
        }
        i += 1;
    }
    None
}

#[inline(always)]
fn read_peer(ctx: &SkBuffContext, proto: u32) -> Option<Peer> {
    let (dest, l4) = if proto == ETH_P_IP_BE {
        let h: [u8; 20] = ctx.load(0).ok()?;
        let mut addr = [0u8; 16];
        addr[0] = h[12];
        addr[1] = h[13];
        addr[2] = h[14];
        addr[3] = h[15];
        let d = Dest {
            v4: true,
            addr,
            port: 0,
        };
        (d, Some((h[9], usize::from(h[0] & 0x0f) * 4)))
    } else if proto == ETH_P_IPV6_BE {
        let h: [u8; 40] = ctx.load(0).ok()?;
        let mut addr = [0u8; 16];
        let mut k = 0;
        while k < 16 {
            addr[k] = h[8 + k];
            k += 1;
        }
        // A v4-mapped source is an IPv4 peer on a dual-stack socket: judge it by the
        // IPv4 rules, as the connect hooks do.
        let mapped = addr[..10] == [0u8; 10] && addr[10] == 0xff && addr[11] == 0xff;
        let d = if mapped {
            let mut a = [0u8; 16];
            a[0] = addr[12];
            a[1] = addr[13];
            a[2] = addr[14];
            a[3] = addr[15];
            Dest {
                v4: true,
                addr: a,
                port: 0,
            }
        } else {
            Dest {
                v4: false,
                addr,
                port: 0,
            }
        };
        (d, ipv6_transport(ctx, h[6]))
    } else {
        return None;
    };
    let mut peer = Peer {
        dest,
        port: None,
        tcp_flags: 0,
        l4: 0,
    };
    if let Some((l4_proto, off)) = l4 {
        peer.l4 = off;
        if let Ok(ports) = ctx.load::<[u8; 2]>(off) {
            peer.port = Some(u16::from_be_bytes(ports));
        }
        if l4_proto == IPPROTO_TCP as u8
            && let Ok(flags) = ctx.load::<u8>(off + 13)
        {
            peer.tcp_flags = flags;
        }
    }
    Some(peer)
}

#[inline(always)]
fn judge_dest(d: &Dest, egress: bool, identity: u32, port: u16, mask: u8) -> Judgement {
    let a4 = [d.addr[0], d.addr[1], d.addr[2], d.addr[3]];
    match (egress, d.v4) {
        (true, true) => judge_v4(identity, a4, port, mask),
        (true, false) => judge_v6(identity, d.addr, port, mask),
        (false, true) => judge_in_v4(identity, a4, port, mask),
        (false, false) => judge_in_v6(identity, d.addr, port, mask),
    }
}

#[inline(always)]
fn try_skb_ingress(ctx: &SkBuffContext) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context pointer is valid for the whole program run.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return SKB_PASS;
    }
    // SAFETY: `state` is a field of the socket's common part, readable on any socket
    // the skb carries.
    let udp = match unsafe { (*sk).state } {
        TCP_LISTEN => false,
        TCP_CLOSE => true,
        // A connected UDP socket: only its peer reaches it; count what it gets.
        TCP_ESTABLISHED if udp_packet(skb) => return count_connected_udp(ctx, sk),
        // Established, connecting, closing: nothing new comes in on these (TCP's
        // received bytes are counted as the socket acknowledges them).
        _ => return SKB_PASS,
    };
    let Some((full, s)) = skb_sock_identity(sk) else {
        return SKB_PASS;
    };
    if s.identity == IDENTITY_NONE {
        return SKB_PASS;
    }
    // SAFETY: a full socket: every field is readable. src_port is in host order.
    let local_port = unsafe { (*full).src_port } as u16;
    // SAFETY: as above.
    let proto = unsafe { (*skb).protocol };
    let Some(peer) = read_peer(ctx, proto) else {
        // Not IP, or headers that cannot be read: an enrolled socket takes nothing it
        // cannot judge.
        return SKB_DROP;
    };
    let (mask, proto_idx, proto_num) = if udp {
        (PROTO_MASK_UDP, PROTO_UDP, IPPROTO_UDP as u8)
    } else {
        (PROTO_MASK_TCP, PROTO_TCP, IPPROTO_TCP as u8)
    };
    if udp && let Some(from) = peer.port {
        // The agent's resolver answering a query the kernel sent it for this socket.
        if s.dns_port != 0 && from == dns_port() && is_loopback(&peer.dest) {
            return SKB_PASS;
        }
        // A reply: the identity may send to where the datagram comes from.
        let e = judge_dest(&peer.dest, true, s.identity, from, mask);
        if (e.verdict as u8) == (Verdict::Allow as u8) {
            count_datagram(ctx, s.identity, &peer);
            return SKB_PASS;
        }
    }
    let j = judge_dest(&peer.dest, false, s.identity, local_port, mask);
    // One connection attempt is one SYN; the handshake's last ACK is judged again
    // (the policy may have changed) but not counted twice.
    let attempt = udp || peer.tcp_flags & TCP_SYN != 0 || peer.port.is_none();
    if attempt {
        count_ingress(s.identity, j.verdict, proto_idx);
        if (j.verdict as u8) != (Verdict::Allow as u8) {
            emit_inbound(
                skb,
                &j,
                s.identity,
                if peer.dest.v4 { AF_INET } else { AF_INET6 },
                &peer.dest.addr,
                local_port,
                peer.port.unwrap_or(0),
                proto_num,
            );
        }
    }
    if (j.verdict as u8) == (Verdict::Deny as u8) {
        return SKB_DROP;
    }
    if udp {
        count_datagram(ctx, s.identity, &peer);
    }
    SKB_PASS
}

/// Whether the packet is UDP, by its first header (direct access: no helper, as the
/// TCP packets that also get here pass after it).
#[inline(always)]
fn udp_packet(skb: *mut __sk_buff) -> bool {
    // SAFETY: the context pointer is valid for the whole program run; data and
    // data_end are the packet bounds the verifier tracks.
    let (proto, data, end) = unsafe {
        (
            (*skb).protocol,
            (*skb).data as usize,
            (*skb).data_end as usize,
        )
    };
    if data + 10 > end {
        return false;
    }
    // SAFETY: within the bounds checked above.
    let next = if proto == ETH_P_IP_BE {
        unsafe { *((data + 9) as *const u8) }
    } else if proto == ETH_P_IPV6_BE {
        unsafe { *((data + 6) as *const u8) }
    } else {
        0
    };
    next == IPPROTO_UDP as u8
}

/// A datagram for a connected UDP socket: counted to its identity if it has one.
#[inline(always)]
fn count_connected_udp(ctx: &SkBuffContext, sk: *mut aya_ebpf::bindings::bpf_sock) -> i32 {
    let Some((_, s)) = skb_sock_identity(sk) else {
        return SKB_PASS;
    };
    if s.identity == IDENTITY_NONE {
        return SKB_PASS;
    }
    // SAFETY: the context pointer is valid for the whole program run.
    if let Some(peer) = read_peer(ctx, unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).protocol }) {
        if !(s.dns_port != 0 && peer.port == Some(dns_port()) && is_loopback(&peer.dest)) {
            count_datagram(ctx, s.identity, &peer);
        }
    }
    SKB_PASS
}

/// Count a datagram's payload as received by `identity` from `peer`.
#[inline(always)]
fn count_datagram(ctx: &SkBuffContext, identity: u32, peer: &Peer) {
    if peer.l4 == 0 {
        return;
    }
    // SAFETY: the context pointer is valid for the whole program run.
    let len = unsafe { (*ctx.as_ptr().cast::<__sk_buff>()).len } as usize;
    let key = FlowKey {
        identity,
        port: peer.port.unwrap_or(0),
        family: if peer.dest.v4 {
            AF_INET as u8
        } else {
            AF_INET6 as u8
        },
        protocol: IPPROTO_UDP as u8,
        addr: peer.dest.addr,
    };
    let _ = account(&key, 0, len.saturating_sub(peer.l4 + 8) as u64);
}
