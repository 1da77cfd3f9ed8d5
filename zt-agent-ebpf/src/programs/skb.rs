//! Packets: the routing options the setsockopt guard refuses can ride on a single
//! sendmsg() as ancillary data (IPV6_RTHDR, IP_OPTIONS/IP_RETOPTS cmsgs), which no
//! socket option hook sees. Drop packets of enrolled sockets that carry IPv4 options
//! or IPv6 extension headers that can hold a routing header. Packets without them pass
//! after two loads. The same pass notes who sends to the agent's resolver, and drops
//! what an identity sends there past its budget. Packets whose mark carries
//! `SOCK_MARK_ENROLLED` are accounted to their socket's identity (`traffic`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, bpf_sock},
    helpers::generated::bpf_tcp_sock,
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use zt_agent_common::{
    EventKind, FlowKey, IDENTITY_NONE, PROTO_OTHER, Reason, SKB_DROP, SKB_PASS, SOCK_MARK_ENROLLED,
    SockIdentity, Verdict,
};

use super::dns::{dns_port, is_loopback, note_dns_client_v4, note_dns_client_v6};
use super::sock_addr::Dest;
use crate::events::{count_verdict, emit};
use crate::kernel::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use crate::maps::skb_sock_storage;
use crate::traffic::{Accounted, account};
use crate::verdict::mode_judgement;

const ETH_P_IP_BE: u32 = 0x0008; // htons(0x0800) as the __sk_buff sees it
const ETH_P_IPV6_BE: u32 = 0xdd86; // htons(0x86dd)

#[cgroup_skb(egress)]
pub fn zt_skb_egress(ctx: SkBuffContext) -> i32 {
    try_skb_egress(&ctx)
}

#[inline(always)]
fn try_skb_egress(ctx: &SkBuffContext) -> i32 {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: the context pointer is valid for the whole program run.
    let proto = unsafe { (*skb).protocol };
    // Direct packet access: this runs for every packet the host sends, so no helper
    // calls on the common path. The IP header is in the linear area.
    // SAFETY: data and data_end are the packet bounds the verifier tracks.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    if data + 8 > end {
        return SKB_PASS;
    }
    let suspicious = if proto == ETH_P_IP_BE {
        // IHL above 5 words: the header carries options.
        // SAFETY: within the bounds checked above.
        let first = unsafe { *(data as *const u8) };
        if first & 0x0f > 5 {
            true
        } else {
            if !note_dns_client_v4(skb, data, end) {
                return SKB_DROP;
            }
            false
        }
    } else if proto == ETH_P_IPV6_BE {
        // Hop-by-hop (0), routing (43) and destination options (60) come before any
        // transport header; TCP and UDP sockets never need them.
        // SAFETY: within the bounds checked above.
        let next = unsafe { *((data + 6) as *const u8) };
        if next == 0 || next == 43 || next == 60 {
            true
        } else {
            if !note_dns_client_v6(skb, data, end, next) {
                return SKB_DROP;
            }
            false
        }
    } else {
        false
    };
    // SAFETY: a field of the context.
    let marked = unsafe { (*skb).mark } & SOCK_MARK_ENROLLED != 0;
    if !suspicious && !marked {
        return SKB_PASS;
    }
    // SAFETY: reading the socket pointer of this skb.
    let Some((full, st)) = skb_sock_storage(unsafe { (*skb).__bindgen_anon_2.sk }) else {
        return SKB_PASS;
    };
    // SAFETY: non-null storage pointer, copied once.
    let s = unsafe { *st };
    let id = s.identity;
    if suspicious {
        if s.dns_identity != IDENTITY_NONE {
            // A socket that talks to the resolver: its packets must be the plain ones
            // the resolver's client record was made from, audit mode or not.
            return SKB_DROP;
        }
        if id == IDENTITY_NONE {
            return SKB_PASS;
        }
        let j = mode_judgement(id, Reason::SocketOption);
        count_verdict(id, j.verdict, PROTO_OTHER);
        emit(
            EventKind::Packet,
            &j,
            id,
            id,
            if proto == ETH_P_IP_BE {
                AF_INET
            } else {
                AF_INET6
            },
            &[0; 16],
            0,
            0,
            0,
        );
        if (j.verdict as u8) == (Verdict::Deny as u8) {
            return SKB_DROP;
        }
    }
    if id == IDENTITY_NONE {
        return SKB_PASS;
    }
    account_egress(skb, data, end, proto, full, st, &s)
}

/// Count the packet to its socket's identity and peer: its payload as sent, and for
/// TCP what the socket received since it last sent (each received segment is
/// acknowledged, so a send follows every arrival). Dropped when a limit is reached.
#[inline(always)]
fn account_egress(
    skb: *mut __sk_buff,
    data: usize,
    end: usize,
    proto: u32,
    full: *mut bpf_sock,
    st: *mut SockIdentity,
    s: &SockIdentity,
) -> i32 {
    let mut key = FlowKey {
        identity: s.identity,
        port: 0,
        family: 0,
        protocol: 0,
        addr: [0; 16],
    };
    let l4 = if proto == ETH_P_IP_BE {
        if data + 20 > end {
            return SKB_PASS;
        }
        // SAFETY: within the bounds checked above.
        unsafe {
            key.family = AF_INET as u8;
            key.protocol = *((data + 9) as *const u8);
            key.addr[..4].copy_from_slice(&*((data + 16) as *const [u8; 4]));
            usize::from(*(data as *const u8) & 0x0f) * 4
        }
    } else if proto == ETH_P_IPV6_BE {
        if data + 40 > end {
            return SKB_PASS;
        }
        // SAFETY: within the bounds checked above.
        unsafe {
            key.family = AF_INET6 as u8;
            key.protocol = *((data + 6) as *const u8);
            key.addr = *((data + 24) as *const [u8; 16]);
        }
        40
    } else {
        return SKB_PASS;
    };
    let mut headers = l4;
    let mut rx = 0u64;
    let mut resent = false;
    let t = data + l4;
    if key.protocol == IPPROTO_TCP as u8 {
        if t + 20 > end {
            return SKB_PASS;
        }
        // SAFETY: within the bounds checked above.
        unsafe {
            key.port = u16::from_be_bytes(*((t + 2) as *const [u8; 2]));
            headers += usize::from(*((t + 12) as *const u8) >> 4) * 4;
        }
        // SAFETY: a full socket; the helper checks it is TCP.
        let tp = unsafe { bpf_tcp_sock(full) };
        if !tp.is_null() {
            // New data leaves at snd_nxt (advanced after this hook runs); a segment
            // from before it is a retransmission, counted once already.
            // SAFETY: within the bounds checked above; tp is non-null.
            let seq = u32::from_be_bytes(unsafe { *((t + 4) as *const [u8; 4]) });
            resent = seq != unsafe { (*tp).snd_nxt };
            // SAFETY: non-null pointer the helper returned; st is this socket's
            // storage, written under the socket's lock as TCP sends are.
            unsafe {
                let got = (*tp).bytes_received;
                let seen = (*st).rx_accounted;
                if got > seen {
                    rx = got - seen;
                    (*st).rx_accounted = got;
                }
            }
        }
    } else if key.protocol == IPPROTO_UDP as u8 {
        if t + 8 > end {
            return SKB_PASS;
        }
        // SAFETY: within the bounds checked above.
        key.port = u16::from_be_bytes(unsafe { *((t + 2) as *const [u8; 2]) });
        headers += 8;
    }
    if s.dns_identity != IDENTITY_NONE && key.port == dns_port() && to_loopback(&key) {
        // A query the kernel sent to the agent's resolver: DNS, not traffic.
        return SKB_PASS;
    }
    // SAFETY: a field of the context.
    let len = u64::from(unsafe { (*skb).len });
    let tx = if resent {
        0
    } else {
        len.saturating_sub(headers as u64)
    };
    match account(&key, tx, rx) {
        Accounted::Counted => SKB_PASS,
        Accounted::Limited => SKB_DROP,
    }
}

#[inline(always)]
fn to_loopback(key: &FlowKey) -> bool {
    is_loopback(&Dest {
        v4: key.family == AF_INET as u8,
        addr: key.addr,
        port: key.port,
    })
}
