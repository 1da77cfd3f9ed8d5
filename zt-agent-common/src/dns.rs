//! The DNS path: where enrolled tasks' DNS goes, who sent each query, and the
//! addresses answers installed per identity.

/// The agent's resolver, where the kernel sends enrolled tasks' DNS (UDP and TCP port
/// 53 to any address). It listens on 127.0.0.1 and ::1 at `port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Host byte order; 0: no DNS path (port 53 follows the IP rules).
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<DnsConfig>() == 8);
// SAFETY: repr(C), u16 + 6 explicit padding bytes, no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsConfig {}

/// The DNS port the kernel redirects.
pub const DNS_PORT: u16 = 53;

/// Key of the table of the resolver's clients, written for every packet sent to the
/// resolver: the sending socket's local address and port identify the query to the
/// daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DnsClientKey {
    /// Client's source address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// Client's local port, host byte order.
    pub port: u16,
    /// `AF_INET` or `AF_INET6` as the packet travels.
    pub family: u8,
    /// IP protocol number: 6 or 17.
    pub protocol: u8,
}
const _: () = assert!(core::mem::size_of::<DnsClientKey>() == 20);
// SAFETY: repr(C), 16 bytes + u16 + two u8, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsClientKey {}

/// New entries of the resolver's client table (new source addresses and ports) one
/// identity may make per CPU in one window of [`DNS_CLIENT_WINDOW_NS`]; past it the
/// packet guard drops its packets that would make one. The table is an LRU all
/// identities share: the budget keeps one identity from pushing another's entries out
/// before the resolver has read their queries. Packets from a source the table holds
/// rewrite its entry in place and cost no budget.
pub const DNS_CLIENT_BUDGET: u64 = 512;
pub const DNS_CLIENT_WINDOW_NS: u64 = 100_000_000;

/// One identity's use of a budget on one CPU: the window it counts in and how much
/// of it was used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Boot-clock nanoseconds divided by the window length.
    pub window: u64,
    pub used: u64,
}
const _: () = assert!(core::mem::size_of::<Budget>() == 16);
// SAFETY: repr(C), two u64, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Budget {}

/// Value of the resolver's client table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsClient {
    /// Identity of the sending socket; `IDENTITY_NONE` for a socket of an unenrolled
    /// task, whose queries the resolver refuses.
    pub identity: u32,
    pub tgid: u32,
}
const _: () = assert!(core::mem::size_of::<DnsClient>() == 8);
// SAFETY: repr(C), two u32, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsClient {}

/// Key of the table of addresses learned from DNS answers, per identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsAllowKey {
    pub identity: u32,
    /// `AF_INET` or `AF_INET6`; IPv4 in the first 4 bytes of `addr`.
    pub family: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<DnsAllowKey>() == 24);
// SAFETY: repr(C), two u32 + 16 bytes, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsAllowKey {}

/// Most port ranges one learned address carries (the union over the names and rules
/// that resolved to it).
pub const DNS_RANGES: usize = 8;

/// One allowance of a learned address: a port range over protocols until a deadline.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsRange {
    /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`) after which the range is
    /// gone; the kernel checks it, so expiry holds while the daemon is down.
    pub deadline_ns: u64,
    pub lo: u16,
    pub hi: u16,
    pub proto_mask: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<DnsRange>() == 16);

/// Value of the learned-address table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsAllowValue {
    pub n_ranges: u32,
    pub _pad: u32,
    pub ranges: [DnsRange; DNS_RANGES],
}
const _: () = assert!(core::mem::size_of::<DnsAllowValue>() == 8 + 16 * DNS_RANGES);
// SAFETY: repr(C), u32 + explicit u32 padding, then DnsRange records (u64, two u16,
// u8 + 3 explicit padding bytes each): no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DnsAllowValue {}

impl DnsAllowValue {
    /// Whether `port` over `proto_mask` is allowed at boot-clock time `now_ns`.
    #[inline(always)]
    #[must_use]
    pub fn allows(&self, port: u16, proto_mask: u8, now_ns: u64) -> bool {
        let mut i = 0;
        while i < DNS_RANGES {
            if i as u32 >= self.n_ranges {
                return false;
            }
            let r = &self.ranges[i];
            if r.proto_mask & proto_mask != 0
                && r.lo <= port
                && port <= r.hi
                && now_ns < r.deadline_ns
            {
                return true;
            }
            i += 1;
        }
        false
    }
}
