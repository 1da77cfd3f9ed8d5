//! Ring buffer events: what happened (kind), how it was judged (verdict), why
//! (reason), and the record itself.

use crate::exec::{FileKey, FileStamp};

wire_enum! {
    /// Verdict of one decision. Also the second index of the verdict counters.
    pub enum Verdict: u8 {
        Allow = 0 => "allow",
        Deny = 1 => "deny",
        /// Audit mode: allowed, but the enforce mode would have denied it.
        Audit = 2 => "audit",
    }
}

wire_enum! {
    /// What an event reports.
    pub enum EventKind: u8 {
        Connect = 1 => "connect",
        Sendmsg = 2 => "sendmsg",
        SockCreate = 3 => "socket",
        Setsockopt = 4 => "setsockopt",
        /// A packet of an enrolled socket carrying IP options or IPv6 routing headers.
        Packet = 5 => "packet",
        /// A task executed a new program: an enrolled one, or one that took an identity by
        /// it (detail: how, an `ENROLL_*` value, or 0 when it was enrolled before).
        Exec = 6 => "exec",
        /// An enrolled socket bound to a port no ingress rule of its identity opens
        /// (port: the port, protocol: TCP or UDP).
        Bind = 7 => "bind",
        /// A connection attempt or datagram reached an enrolled socket from a peer no
        /// ingress rule allows (addr: the peer; port: the local port; detail: the
        /// peer's port; no task: the packet is judged on arrival).
        Inbound = 8 => "inbound",
    }
}

wire_enum! {
    /// Why a decision went the way it did.
    pub enum Reason: u8 {
        /// An egress rule matched.
        RuleMatched = 0 => "rule_matched",
        /// No egress rule of the identity covers the destination, port and protocol.
        NoRule = 1 => "no_rule",
        /// The identity is no longer in the policy: its tasks are held in deny-all.
        IdentityRemoved = 2 => "identity_removed",
        /// Only TCP and UDP sockets may be created by enrolled tasks.
        SocketType = 3 => "socket_type",
        /// A socket option that would route packets elsewhere (IPV6_RTHDR, IP_OPTIONS).
        SocketOption = 4 => "socket_option",
        /// The identity does not restrict exec.
        ExecUnrestricted = 5 => "exec_not_restricted",
        /// The file is not in the identity's exec allowlist.
        ExecNotAllowed = 6 => "exec_not_allowed",
        /// The file changed since the daemon verified it (its change time differs), so it
        /// is not the file the policy names until the daemon checks it again.
        FileChanged = 7 => "file_changed",
        /// The task is quarantined: a selected file did not match its pinned digest.
        Quarantined = 8 => "quarantined",
        /// An address a DNS answer installed for the identity, within its TTL.
        DnsLearned = 9 => "dns_learned",
        /// A grant in the calling task's scope, within its deadline.
        Granted = 10 => "granted",
        /// A `when` rule inside its window.
        WindowOpen = 11 => "window_open",
        /// Only an `ask` rule covers the destination, and no grant is in force: the
        /// daemon raises a request.
        AskRequired = 12 => "ask_required",
        /// A `when` rule covers the destination, outside its window.
        OutsideWindow = 13 => "outside_window",
        /// A grant covered the destination, and has lapsed.
        GrantExpired = 14 => "grant_expired",
        /// The identity, or its traffic to this destination, went past an upload limit
        /// of `spec.limits` in the current window.
        LimitExceeded = 15 => "limit_exceeded",
    }
}

/// The name of an IP protocol number an event carries.
#[must_use]
pub const fn ip_protocol_name(protocol: u8) -> &'static str {
    match protocol {
        6 => "tcp",
        17 => "udp",
        _ => "other",
    }
}

/// Bytes of the exec'd path an exec event carries (the rest is cut).
pub const EVENT_PATH_LEN: usize = 128;
/// Ancestors (parent first) an exec event carries.
pub const EVENT_ANCESTORS: usize = 4;

/// An event record sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    /// Identity of the calling task (0: not enrolled).
    pub identity: u32,
    /// Identity recorded when the socket was created (0: none).
    pub sock_identity: u32,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Kind-specific detail: socket type for SockCreate, option name for Setsockopt,
    /// the peer's port for Inbound.
    pub detail: u32,
    /// `AF_INET` or `AF_INET6` of the destination as judged (v4-mapped becomes `AF_INET`).
    pub family: u16,
    /// Destination port, host byte order (the local port for Bind and Inbound).
    pub port: u16,
    /// An [`EventKind`].
    pub kind: u8,
    /// A [`Verdict`].
    pub verdict: u8,
    /// A [`Reason`].
    pub reason: u8,
    /// IP protocol number (6 TCP, 17 UDP), or the socket option level.
    pub protocol: u8,
    pub _pad: [u8; 4],
    /// Destination address (the peer's for Inbound): 4 bytes for IPv4, 16 for IPv6.
    pub addr: [u8; 16],
    pub comm: [u8; 16],
    /// Exec events: the tgids of the parent, grandparent, ... (0 past the first task).
    pub ancestors: [u32; EVENT_ANCESTORS],
    /// Exec events: the file that now runs (the interpreter, for a script).
    pub file: FileKey,
    /// Exec events: that file's change time, so that userspace names the same version.
    pub file_stamp: FileStamp,
    /// Exec events: the path given to execve (NUL-terminated, possibly cut).
    pub path: [u8; EVENT_PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<Event>() == 88 + 16 + 32 + EVENT_PATH_LEN);
// SAFETY: repr(C), fixed-width fields each at its natural alignment, explicit padding
// after the u8 fields: the size asserted above is the sum of the fields, no implicit padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Event {}
