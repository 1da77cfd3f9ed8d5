//! Packets: the routing options the setsockopt guard refuses can ride on a single
//! sendmsg() as ancillary data (IPV6_RTHDR, IP_OPTIONS/IP_RETOPTS cmsgs), which no
//! socket option hook sees. Drop packets of enrolled sockets that carry IPv4 options
//! or IPv6 extension headers that can hold a routing header. Packets without them pass
//! after two loads. The same pass notes who sends to the agent's resolver, and drops
//! what an identity sends there past its budget.

use aya_ebpf::{
    EbpfContext as _, bindings::__sk_buff, macros::cgroup_skb, programs::SkBuffContext,
};
use zt_agent_common::{EventKind, IDENTITY_NONE, PROTO_OTHER, Reason, SKB_DROP, SKB_PASS, Verdict};

use super::dns::{note_dns_client_v4, note_dns_client_v6};
use crate::events::{count_verdict, emit};
use crate::kernel::{AF_INET, AF_INET6};
use crate::maps::skb_sock_identity;
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
    if !suspicious {
        return SKB_PASS;
    }
    // SAFETY: reading the socket pointer of this skb.
    let Some((_, s)) = skb_sock_identity(unsafe { (*skb).__bindgen_anon_2.sk }) else {
        return SKB_PASS;
    };
    let (id, dns_id) = (s.identity, s.dns_identity);
    if dns_id != IDENTITY_NONE {
        // A socket that talks to the resolver: its packets must be the plain ones the
        // resolver's client record was made from, audit mode or not.
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
        SKB_DROP
    } else {
        SKB_PASS
    }
}
