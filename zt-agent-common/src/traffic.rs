//! Traffic accounting: bytes per identity and per identity and destination, and the
//! runtime state (limits reached) the daemon writes back per identity and per flow.

use crate::identity::MAX_IDENTITIES;

/// The bit the kernel ORs into the mark (`SO_MARK`) of every socket it tags with an
/// identity. The packet hooks read `skb->mark` first, so a packet of an unenrolled
/// socket is told apart with one load and costs no helper call. Marks are 0 unless a
/// privileged task sets one; this bit lies outside the masks kube-proxy (0xc000),
/// Cilium (0x0f00) and WireGuard's fwmark rules use.
pub const SOCK_MARK_ENROLLED: u32 = 0x0010_0000;

/// Capacity of the flow table (identity, peer, port, protocol).
pub const FLOWS_CAPACITY: u32 = 1 << 16;

/// Per identity and CPU: what its sockets sent and received. Payload bytes (past the
/// IP and TCP/UDP headers); TCP's received bytes are the in-order bytes the socket
/// took, counted when it next sends (every received segment is acknowledged).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Packets with payload dropped because a limit was reached.
    pub limit_drops: u64,
}
const _: () = assert!(core::mem::size_of::<Traffic>() == 24);
// SAFETY: repr(C), three u64, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Traffic {}

/// One identity's traffic with one peer: the key of the flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub identity: u32,
    /// The peer's port, host byte order.
    pub port: u16,
    /// `AF_INET` or `AF_INET6` (IPv4 and v4-mapped peers: `AF_INET`, the address in
    /// the first 4 bytes).
    pub family: u8,
    /// IP protocol number.
    pub protocol: u8,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 24);
// SAFETY: repr(C), u32, u16, two u8, 16 bytes: no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowKey {}

/// Bytes of one flow since the kernel first saw it, added atomically; `flags` is
/// written by the daemon (`FLOW_FLAG_*`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowBytes {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub flags: u64,
}
const _: () = assert!(core::mem::size_of::<FlowBytes>() == 24);
// SAFETY: repr(C), three u64, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowBytes {}

/// A per-destination limit was reached: new connects and sends to the peer are
/// denied and its packets with payload dropped.
pub const FLOW_FLAG_LIMITED: u64 = 1;

/// Per-identity runtime state, written by the daemon, kept across policy reloads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeState {
    /// `STATE_*`.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<RuntimeState>() == 4);
// SAFETY: repr(C), one u32.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RuntimeState {}

/// The identity's upload limit is reached: its new connects and sends are denied
/// (reason `limit_exceeded`) and its packets with payload dropped.
pub const STATE_LIMITED: u32 = 1;
/// The identity has per-destination limits: connects and sends look up the flow.
pub const STATE_DEST_LIMITS: u32 = 2;

pub const TRAFFIC_SLOTS: u32 = MAX_IDENTITIES;
