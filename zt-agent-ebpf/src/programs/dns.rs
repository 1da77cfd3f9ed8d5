//! The DNS path: enrolled tasks' DNS goes to the agent's resolver on loopback (the
//! sock_addr hook redirects it), which learns who asked from the packet guard, and
//! whose replies are reported as coming from the resolver the task addressed.

use aya_ebpf::{
    bindings::{__sk_buff, BPF_ANY},
    helpers::generated::bpf_ktime_get_boot_ns,
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use zt_agent_common::{
    CGROUP_ALLOW, DNS_CLIENT_BUDGET, DNS_CLIENT_WINDOW_NS, DnsClient, DnsClientKey, IDENTITY_NONE,
    SockIdentity, errors,
};

use super::sock_addr::{Dest, make_dest};
use crate::events::count_error;
use crate::kernel::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use crate::maps::{ZT_DNS_BUDGET, ZT_DNS_CLIENTS, ZT_DNS_CONFIG, ZT_SOCK_ID, skb_sock_identity};

#[cgroup_sock_addr(recvmsg4)]
pub fn zt_recvmsg4(ctx: SockAddrContext) -> i32 {
    dns_reply_source(&ctx, false);
    CGROUP_ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn zt_recvmsg6(ctx: SockAddrContext) -> i32 {
    dns_reply_source(&ctx, true);
    CGROUP_ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn zt_getpeername4(ctx: SockAddrContext) -> i32 {
    dns_reply_source(&ctx, false);
    CGROUP_ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn zt_getpeername6(ctx: SockAddrContext) -> i32 {
    dns_reply_source(&ctx, true);
    CGROUP_ALLOW
}

const LO4: [u8; 4] = [127, 0, 0, 1];

/// The resolver's port, or 0 when there is no DNS path.
#[inline(always)]
pub(crate) fn dns_port() -> u16 {
    match ZT_DNS_CONFIG.get(0) {
        Some(c) => c.port,
        None => 0,
    }
}

#[inline(always)]
pub(crate) fn is_loopback(d: &Dest) -> bool {
    if d.v4 {
        return d.addr[0] == LO4[0] && d.addr[1] == 0 && d.addr[2] == 0 && d.addr[3] == LO4[3];
    }
    let mut lo6 = [0u8; 16];
    lo6[15] = 1;
    d.addr == lo6
}

/// The loopback address a `sockaddr` of the socket's family holds, v4-mapped on an
/// IPv6 socket that reaches an IPv4 destination.
#[inline(always)]
fn write_addr(sa: *mut aya_ebpf::bindings::bpf_sock_addr, is6: bool, v4: bool, addr: &[u8; 16]) {
    // SAFETY: the context pointer is valid and these fields are writable in the
    // connect, sendmsg, recvmsg and getpeername hooks.
    unsafe {
        if !is6 {
            (*sa).user_ip4 = u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]);
        } else if v4 {
            (*sa).user_ip6[0] = 0;
            (*sa).user_ip6[1] = 0;
            (*sa).user_ip6[2] = 0xffff_u32.to_be();
            (*sa).user_ip6[3] = u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]);
        } else {
            (*sa).user_ip6[0] = u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]);
            (*sa).user_ip6[1] = u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]);
            (*sa).user_ip6[2] = u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]);
            (*sa).user_ip6[3] = u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]);
        }
    }
}

/// Send this DNS call to the resolver instead, and remember on the socket where it
/// was going and for whom.
#[inline(always)]
pub(crate) fn redirect_dns(
    ctx: &SockAddrContext,
    is6: bool,
    dest: &Dest,
    dns: u16,
    identity: u32,
    tgid: u32,
) {
    let mut lo = [0u8; 16];
    if dest.v4 {
        lo[0] = LO4[0];
        lo[3] = LO4[3];
    } else {
        lo[15] = 1;
    }
    write_addr(ctx.sock_addr, is6, dest.v4, &lo);
    // SAFETY: as above.
    unsafe { (*ctx.sock_addr).user_port = u32::from(dns.to_be()) };
    let mut init = SockIdentity::new(identity);
    let p = ZT_SOCK_ID.get_or_insert_ptr_mut(ctx, Some(&mut init));
    if !p.is_null() {
        // SAFETY: non-null pointer to this socket's storage.
        unsafe {
            (*p).dns_identity = identity;
            (*p).dns_tgid = tgid;
            (*p).dns_port = dest.port;
            (*p).dns_family = if dest.v4 { AF_INET } else { AF_INET6 };
            (*p).dns_addr = dest.addr;
        }
    } else {
        // The resolver will not know who asked and refuses the query.
        count_error(errors::SK_STORAGE);
    }
}

/// A reply from the resolver: report it as coming from where the task sent its query.
#[inline(always)]
fn dns_reply_source(ctx: &SockAddrContext, is6: bool) {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for the whole program run.
    let (port, ip4, ip6) = unsafe {
        (
            u16::from_be((*sa).user_port as u16),
            (*sa).user_ip4,
            (*sa).user_ip6,
        )
    };
    let dns = dns_port();
    if dns == 0 || port != dns {
        return;
    }
    let from = make_dest(is6, ip4, ip6, port);
    if !is_loopback(&from) {
        return;
    }
    let p = match ZT_SOCK_ID.get_ptr_mut(ctx) {
        p if p.is_null() => return,
        p => p,
    };
    // SAFETY: non-null pointer to this socket's storage.
    let s = unsafe { *p };
    if s.dns_port == 0 {
        return;
    }
    let v4 = s.dns_family == AF_INET;
    if !is6 && !v4 {
        return;
    }
    write_addr(sa, is6, v4, &s.dns_addr);
    // SAFETY: as above.
    unsafe { (*sa).user_port = u32::from(s.dns_port.to_be()) };
}

/// Whether `identity` may send one more packet to the resolver in this window, on
/// this CPU ([`DNS_CLIENT_BUDGET`]).
#[inline(always)]
fn within_budget(identity: u32) -> bool {
    let Some(b) = ZT_DNS_BUDGET.get_ptr_mut(identity) else {
        return false;
    };
    // SAFETY: helper without arguments; per-CPU slot, only this CPU writes it.
    unsafe {
        let window = bpf_ktime_get_boot_ns() / DNS_CLIENT_WINDOW_NS;
        if (*b).window != window {
            (*b).window = window;
            (*b).used = 0;
        }
        (*b).used += 1;
        (*b).used <= DNS_CLIENT_BUDGET
    }
}

/// A packet to the resolver: record which socket's identity sent it, by source port.
/// Every such packet overwrites the entry, so a port reused by another socket never
/// inherits an earlier identity. Only a packet that makes a new entry is charged to
/// its identity's budget: queries over a socket the table already holds push nothing
/// out, however many, and the budget bounds how fast one identity can make new
/// sources (new sockets, new addresses). `false`: the sender is past its budget and
/// the packet must be dropped (its query is lost for it alone).
#[inline(always)]
fn record_dns_client(
    skb: *const __sk_buff,
    family: u8,
    protocol: u8,
    saddr: [u8; 16],
    sport: u16,
) -> bool {
    let mut client = DnsClient {
        identity: IDENTITY_NONE,
        tgid: 0,
    };
    // SAFETY: reading the socket pointer of this skb.
    if let Some((_, s)) = skb_sock_identity(unsafe { (*skb).__bindgen_anon_2.sk }) {
        client.identity = s.dns_identity;
        client.tgid = s.dns_tgid;
    }
    let key = DnsClientKey {
        addr: saddr,
        port: sport,
        family,
        protocol,
    };
    if let Some(p) = ZT_DNS_CLIENTS.get_ptr_mut(&key) {
        // SAFETY: pointer from a successful lookup; one socket owns a source port, so
        // no other CPU writes this entry for another sender meanwhile.
        unsafe { *p = client };
        return true;
    }
    if !within_budget(client.identity) {
        count_error(errors::DNS_BUDGET);
        return false;
    }
    let _ = ZT_DNS_CLIENTS.insert(&key, &client, BPF_ANY.into());
    true
}

/// An IPv4 packet without options: if it goes to the resolver (127.0.0.1 at its port,
/// TCP or UDP), record who sent it. Other packets pay a few loads. `false`: drop it.
#[inline(always)]
pub(crate) fn note_dns_client_v4(skb: *const __sk_buff, data: usize, end: usize) -> bool {
    if data + 24 > end {
        return true;
    }
    // SAFETY: within the bounds just checked (a 20-byte header, then the ports).
    let b = |i: usize| unsafe { *((data + i) as *const u8) };
    if b(16) != LO4[0] || b(17) != 0 || b(18) != 0 || b(19) != LO4[3] {
        return true;
    }
    let l4 = b(9);
    if l4 != IPPROTO_TCP as u8 && l4 != IPPROTO_UDP as u8 {
        return true;
    }
    let dns = dns_port();
    if dns == 0 || u16::from_be_bytes([b(22), b(23)]) != dns {
        return true;
    }
    let mut saddr = [0u8; 16];
    saddr[0] = b(12);
    saddr[1] = b(13);
    saddr[2] = b(14);
    saddr[3] = b(15);
    record_dns_client(
        skb,
        AF_INET as u8,
        l4,
        saddr,
        u16::from_be_bytes([b(20), b(21)]),
    )
}

/// The same for an IPv6 packet whose next header is `next` (::1 at the resolver's port).
#[inline(always)]
pub(crate) fn note_dns_client_v6(skb: *const __sk_buff, data: usize, end: usize, next: u8) -> bool {
    if (next != IPPROTO_TCP as u8 && next != IPPROTO_UDP as u8) || data + 44 > end {
        return true;
    }
    // SAFETY: within the bounds just checked (a 40-byte header, then the ports).
    let b = |i: usize| unsafe { *((data + i) as *const u8) };
    if b(39) != 1 {
        return true;
    }
    let mut i = 24;
    while i < 39 {
        if b(i) != 0 {
            return true;
        }
        i += 1;
    }
    let dns = dns_port();
    if dns == 0 || u16::from_be_bytes([b(42), b(43)]) != dns {
        return true;
    }
    let mut saddr = [0u8; 16];
    let mut k = 0;
    while k < 16 {
        saddr[k] = b(8 + k);
        k += 1;
    }
    record_dns_client(
        skb,
        AF_INET6 as u8,
        next,
        saddr,
        u16::from_be_bytes([b(40), b(41)]),
    )
}
