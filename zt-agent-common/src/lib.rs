//! Everything that crosses the kernel/user boundary, defined once: map names and
//! capacities, key and value layouts, verdicts, reasons and event records.
//!
//! Every type is `#[repr(C)]` with fixed-width fields and explicit padding, and
//! carries a size assertion so that both sides agree byte for byte.
#![no_std]

/// Largest identity id plus one. Id 0 means "not enrolled".
pub const MAX_IDENTITIES: u32 = 1024;
/// Identity id that is never assigned: an unenrolled task or socket.
pub const IDENTITY_NONE: u32 = 0;
/// Reserved identity of tasks that exec'd a selected file which no longer matches what
/// the policy pinned (digest, or a change since the daemon verified it). It has no
/// egress rules and no exec allowlist entries: deny all.
pub const IDENTITY_QUARANTINE: u32 = MAX_IDENTITIES - 1;

/// Capacity of each per-family policy trie (one entry per distinct prefix per identity,
/// plus one root entry per identity).
pub const POLICY_TRIE_CAPACITY: u32 = 1 << 18;
/// Capacity of the enrolled thread-group table.
pub const TASKS_CAPACITY: u32 = 1 << 16;
/// Capacity of the enrolled cgroup table.
pub const CGROUPS_CAPACITY: u32 = 1 << 14;
/// Ring buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;
/// Port ranges one prefix of one identity can carry.
pub const MAX_PORT_RANGES: usize = 16;
/// Capacity of the exe selector table (one entry per selected file).
pub const EXE_SELECTORS_CAPACITY: u32 = 4096;
/// Capacity of the uid/gid selector table.
pub const PRINCIPALS_CAPACITY: u32 = 4096;
/// Capacity of the exec allowlist table (identity, file) pairs.
pub const EXEC_ALLOW_CAPACITY: u32 = 1 << 14;
/// Capacity of the table of unenrolled tasks' egress destinations (LRU).
pub const SHADOW_CAPACITY: u32 = 1 << 14;
/// Bytes of the exec'd path an exec event carries (the rest is cut).
pub const EVENT_PATH_LEN: usize = 128;
/// Ancestors (parent first) an exec event carries.
pub const EVENT_ANCESTORS: usize = 4;

/// Map names, as the kernel object names them and as they are pinned.
pub mod map_names {
    pub const TASKS: &str = "ZT_TASKS";
    pub const CGROUPS: &str = "ZT_CGROUPS";
    pub const POLICY_V4: &str = "ZT_POLICY_V4";
    pub const POLICY_V6: &str = "ZT_POLICY_V6";
    pub const SOCK_IDENTITY: &str = "ZT_SOCK_ID";
    pub const VERDICTS: &str = "ZT_VERDICTS";
    pub const ERRORS: &str = "ZT_ERRORS";
    pub const EVENTS: &str = "ZT_EVENTS";
    pub const IDENTITIES: &str = "ZT_IDENTITIES";
    pub const EXE_SELECTORS: &str = "ZT_EXE_SEL";
    pub const PRINCIPALS: &str = "ZT_PRINCIPALS";
    pub const EXEC_ALLOW: &str = "ZT_EXEC_ALLOW";
    pub const EXEC_VERDICTS: &str = "ZT_EXEC_VERDICTS";
    pub const SHADOW: &str = "ZT_SHADOW";
    pub const DNS_CONFIG: &str = "ZT_DNS_CONFIG";
    pub const DNS_CLIENTS: &str = "ZT_DNS_CLIENTS";
    pub const DNS_ALLOW: &str = "ZT_DNS_ALLOW";
    pub const ALL: [&str; 17] = [
        TASKS,
        CGROUPS,
        POLICY_V4,
        POLICY_V6,
        SOCK_IDENTITY,
        VERDICTS,
        ERRORS,
        EVENTS,
        IDENTITIES,
        EXE_SELECTORS,
        PRINCIPALS,
        EXEC_ALLOW,
        EXEC_VERDICTS,
        SHADOW,
        DNS_CONFIG,
        DNS_CLIENTS,
        DNS_ALLOW,
    ];
}

/// Program names (the Rust function names in zt-agent-ebpf) and their attach points.
pub mod program_names {
    pub const CONNECT4: &str = "zt_connect4";
    pub const CONNECT6: &str = "zt_connect6";
    pub const SENDMSG4: &str = "zt_sendmsg4";
    pub const SENDMSG6: &str = "zt_sendmsg6";
    pub const SOCK_CREATE: &str = "zt_sock_create";
    pub const SETSOCKOPT: &str = "zt_setsockopt";
    pub const FORK: &str = "zt_fork";
    pub const EXIT: &str = "zt_exit";
    pub const CGROUP_ATTACH: &str = "zt_cgroup_attach";
    pub const EXEC: &str = "zt_exec";
    /// BPF LSM exec guard, used where the kernel loads it (EPERM before the exec).
    pub const EXEC_LSM: &str = "zt_exec_lsm";
    pub const SKB_EGRESS: &str = "zt_skb_egress";
    /// Report DNS replies from the agent's resolver as coming from where the task sent.
    pub const RECVMSG4: &str = "zt_recvmsg4";
    pub const RECVMSG6: &str = "zt_recvmsg6";
    pub const GETPEERNAME4: &str = "zt_getpeername4";
    pub const GETPEERNAME6: &str = "zt_getpeername6";
}

/// Return codes of cgroup sock_addr, sock and sockopt programs.
pub const CGROUP_REJECT: i32 = 0;
pub const CGROUP_ALLOW: i32 = 1;

/// Verdict of one decision. Also the second index of the verdict counters.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow = 0,
    Deny = 1,
    /// Audit mode: allowed, but the enforce mode would have denied it.
    Audit = 2,
}
pub const VERDICT_COUNT: u32 = 3;

/// Protocol index of the verdict counters.
pub const PROTO_TCP: u8 = 0;
pub const PROTO_UDP: u8 = 1;
pub const PROTO_OTHER: u8 = 2;
pub const PROTO_COUNT: u32 = 3;

/// Index into the per-CPU verdict counters.
#[inline(always)]
#[must_use]
pub const fn verdict_index(identity: u32, verdict: u8, proto: u8) -> u32 {
    (identity * VERDICT_COUNT + verdict as u32) * PROTO_COUNT + proto as u32
}
pub const VERDICT_SLOTS: u32 = MAX_IDENTITIES * VERDICT_COUNT * PROTO_COUNT;

/// Index into the per-CPU exec verdict counters.
#[inline(always)]
#[must_use]
pub const fn exec_verdict_index(identity: u32, verdict: u8) -> u32 {
    identity * VERDICT_COUNT + verdict as u32
}
pub const EXEC_VERDICT_SLOTS: u32 = MAX_IDENTITIES * VERDICT_COUNT;

/// What an event reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Connect = 1,
    Sendmsg = 2,
    SockCreate = 3,
    Setsockopt = 4,
    /// A packet of an enrolled socket carrying IP options or IPv6 routing headers.
    Packet = 5,
    /// A task executed a new program: an enrolled one, or one that took an identity by
    /// it (detail: how, an `ENROLL_*` value, or 0 when it was enrolled before).
    Exec = 6,
}

/// Why a decision went the way it did.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// An egress rule matched.
    RuleMatched = 0,
    /// No egress rule of the identity covers the destination, port and protocol.
    NoRule = 1,
    /// The identity is no longer in the policy: its tasks are held in deny-all.
    IdentityRemoved = 2,
    /// Only TCP and UDP sockets may be created by enrolled tasks.
    SocketType = 3,
    /// A socket option that would route packets elsewhere (IPV6_RTHDR, IP_OPTIONS).
    SocketOption = 4,
    /// The identity does not restrict exec.
    ExecUnrestricted = 5,
    /// The file is not in the identity's exec allowlist.
    ExecNotAllowed = 6,
    /// The file changed since the daemon verified it (its change time differs), so it
    /// is not the file the policy names until the daemon checks it again.
    FileChanged = 7,
    /// The task is quarantined: a selected file did not match its pinned digest.
    Quarantined = 8,
    /// An address a DNS answer installed for the identity, within its TTL.
    DnsLearned = 9,
}

/// Counter slots of the per-CPU error array.
pub mod errors {
    /// An event was dropped because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 0;
    /// The task table was full, so a child could not inherit its parent's identity.
    pub const TASKS_FULL: u32 = 1;
    /// Socket-local storage could not be created.
    pub const SK_STORAGE: u32 = 2;
    /// A disallowed exec's SIGKILL could not be sent.
    pub const KILL_FAILED: u32 = 3;
    pub const COUNT: u32 = 4;
    pub const NAMES: [&str; COUNT as usize] =
        ["ringbuf_full", "tasks_full", "sk_storage", "kill_failed"];
}

/// Value of the thread-group table, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskIdentity {
    pub identity: u32,
    /// How the task was enrolled (`ENROLL_*`).
    pub how: u32,
}
pub const ENROLL_RUN: u32 = 1;
pub const ENROLL_CGROUP: u32 = 2;
pub const ENROLL_INHERIT: u32 = 3;
pub const ENROLL_SCAN: u32 = 4;
/// Exec'd a file an `exe` selector names.
pub const ENROLL_EXE: u32 = 5;
/// Exec'd anything with a uid or gid a selector names.
pub const ENROLL_PRINCIPAL: u32 = 6;
/// Exec'd a selected file that failed its digest or changed: [`IDENTITY_QUARANTINE`].
pub const ENROLL_QUARANTINE: u32 = 7;

/// A file as the kernel sees it: `inode->i_sb->s_dev` (major << 20 | minor) and
/// `inode->i_ino`. Userspace derives it from the mount's device number and st_ino,
/// which differ from stat()'s st_dev on overlayfs and btrfs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// The inode's change time. Any write, rename, link or chmod moves it, and an inode
/// number reused by a new file comes with a new one: an entry whose stamp differs
/// from the file's is not trusted until the daemon re-verifies the file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileStamp {
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub _pad: u32,
}

/// Value of the exe selector table, keyed by [`FileKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExeSelector {
    pub stamp: FileStamp,
    pub identity: u32,
    /// Real uid the task must have after the exec, or [`ANY_ID`].
    pub uid: u32,
    /// Real gid the task must have after the exec, or [`ANY_ID`].
    pub gid: u32,
    /// `EXE_FLAG_*`.
    pub flags: u32,
}
/// "Any uid/gid" in selector values.
pub const ANY_ID: u32 = u32::MAX;
/// The selector pins a digest: a changed file sends its exec'ers to quarantine.
pub const EXE_FLAG_DIGEST: u32 = 1;
/// The file failed its pinned digest: exec'ing it means quarantine.
pub const EXE_FLAG_QUARANTINE: u32 = 2;

/// Key of the uid/gid selector table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrincipalKey {
    /// [`PRINCIPAL_UID`] or [`PRINCIPAL_GID`].
    pub kind: u32,
    pub id: u32,
}
pub const PRINCIPAL_UID: u32 = 0;
pub const PRINCIPAL_GID: u32 = 1;

/// Value of the uid/gid selector table. A uid entry may also require a gid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Principal {
    pub identity: u32,
    /// For uid entries: the gid also required, or [`ANY_ID`].
    pub gid: u32,
}

/// Key of the exec allowlist table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExecAllowKey {
    pub identity: u32,
    pub dev: u32,
    pub ino: u64,
}

/// Per-identity settings, indexed by identity id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `IDENTITY_FLAG_*`.
    pub flags: u32,
}
/// The identity is in the installed policy (absent: removed, deny all).
pub const IDENTITY_FLAG_IN_POLICY: u32 = 2;
/// Exec is limited to the identity's allowlist.
pub const IDENTITY_FLAG_EXEC_RESTRICTED: u32 = 4;

/// Key of the table of unenrolled tasks' egress: who went where.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShadowKey {
    pub tgid: u32,
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// IP protocol number.
    pub protocol: u8,
    pub addr: [u8; 16],
}

/// Value of the shadow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowValue {
    pub first_ktime_ns: u64,
    pub count: u64,
    pub uid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// Value bit of the enrolled-cgroup table: the entry belongs to a `zt-agent run`
/// launch cgroup, which the launcher adds and removes itself. The identity is the
/// value without this bit.
pub const CGROUP_LAUNCHED: u32 = 1 << 31;

/// Value of the socket-local storage: the identity of the task that created the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockIdentity {
    pub identity: u32,
    /// Identity the agent's resolver serves this socket's queries as: that of the task
    /// whose DNS the kernel last redirected on it (0: never redirected, refused).
    pub dns_identity: u32,
    /// That task's tgid, for the resolver's events.
    pub dns_tgid: u32,
    /// Where that task sent DNS before the kernel redirected it (port, host byte
    /// order; 0: never redirected). Replies are reported as coming from there, so that
    /// stub resolvers accept them.
    pub dns_port: u16,
    /// `AF_INET` or `AF_INET6` of `dns_addr` (IPv4 in its first 4 bytes).
    pub dns_family: u16,
    pub dns_addr: [u8; 16],
}

impl SockIdentity {
    /// A socket of `identity` that never sent DNS.
    #[must_use]
    pub const fn new(identity: u32) -> Self {
        Self {
            identity,
            dns_identity: 0,
            dns_tgid: 0,
            dns_port: 0,
            dns_family: 0,
            dns_addr: [0; 16],
        }
    }
}

/// The agent's resolver, where the kernel sends enrolled tasks' DNS (UDP and TCP port
/// 53 to any address). It listens on 127.0.0.1 and ::1 at `port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Host byte order; 0: no DNS path (port 53 follows the IP rules).
    pub port: u16,
    pub _pad: [u8; 6],
}

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

/// Value of the resolver's client table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsClient {
    /// Identity of the sending socket; `IDENTITY_NONE` for a socket of an unenrolled
    /// task, whose queries the resolver refuses.
    pub identity: u32,
    pub tgid: u32,
}

/// Key of the table of addresses learned from DNS answers, per identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsAllowKey {
    pub identity: u32,
    /// `AF_INET` or `AF_INET6`; IPv4 in the first 4 bytes of `addr`.
    pub family: u32,
    pub addr: [u8; 16],
}

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

/// Value of the learned-address table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsAllowValue {
    pub n_ranges: u32,
    pub _pad: u32,
    pub ranges: [DnsRange; DNS_RANGES],
}

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

/// Capacity of the resolver's client table (an LRU: the oldest ports drop out).
pub const DNS_CLIENTS_CAPACITY: u32 = 1 << 14;
/// Capacity of the learned-address table, all identities together.
pub const DNS_ALLOW_CAPACITY: u32 = 1 << 16;

/// LPM trie key data for IPv4: identity (big endian) then the address.
/// Prefix length = 32 + the CIDR's prefix length.
pub type KeyV4 = [u8; 8];
/// LPM trie key data for IPv6: identity (big endian) then the address.
pub type KeyV6 = [u8; 20];
/// Bits of the key taken by the identity.
pub const IDENTITY_KEY_BITS: u32 = 32;

#[must_use]
pub fn key_v4(identity: u32, addr: [u8; 4]) -> KeyV4 {
    let id = identity.to_be_bytes();
    [
        id[0], id[1], id[2], id[3], addr[0], addr[1], addr[2], addr[3],
    ]
}

#[must_use]
pub fn key_v6(identity: u32, addr: [u8; 16]) -> KeyV6 {
    let mut k = [0u8; 20];
    let id = identity.to_be_bytes();
    let mut i = 0;
    while i < 4 {
        k[i] = id[i];
        i += 1;
    }
    while i < 20 {
        k[i] = addr[i - 4];
        i += 1;
    }
    k
}

/// Protocol bits of a port range.
pub const PROTO_MASK_TCP: u8 = 1;
pub const PROTO_MASK_UDP: u8 = 2;

/// One allowed port range, inclusive, for the protocols in `proto_mask`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
    pub proto_mask: u8,
    pub _pad: [u8; 3],
}

/// Identity flags carried in every policy value, so that one lookup gives both the
/// allowed ports and how to enforce them.
pub const IDENTITY_FLAG_AUDIT: u32 = 1;

/// Value of the policy tries. Every identity in the policy has a root entry (prefix
/// length 32: the identity bits only) in both tries, so a lookup for an identity in
/// the policy always finds a value; no value means the identity is not in the policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyValue {
    pub flags: u32,
    pub n_ranges: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
}

impl PolicyValue {
    #[must_use]
    pub const fn empty(flags: u32) -> Self {
        Self {
            flags,
            n_ranges: 0,
            ranges: [PortRange {
                lo: 0,
                hi: 0,
                proto_mask: 0,
                _pad: [0; 3],
            }; MAX_PORT_RANGES],
        }
    }

    /// Whether `port` over the protocol bit `proto_mask` is allowed.
    #[inline(always)]
    #[must_use]
    pub fn allows(&self, port: u16, proto_mask: u8) -> bool {
        let mut i = 0;
        while i < MAX_PORT_RANGES {
            if i as u32 >= self.n_ranges {
                return false;
            }
            let r = &self.ranges[i];
            if r.proto_mask & proto_mask != 0 && r.lo <= port && port <= r.hi {
                return true;
            }
            i += 1;
        }
        false
    }
}

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
    /// Kind-specific detail: socket type for SockCreate, option name for Setsockopt.
    pub detail: u32,
    /// `AF_INET` or `AF_INET6` of the destination as judged (v4-mapped becomes `AF_INET`).
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    pub kind: u8,
    pub verdict: u8,
    pub reason: u8,
    /// IP protocol number (6 TCP, 17 UDP), or the socket option level.
    pub protocol: u8,
    pub _pad: [u8; 4],
    /// Destination address: 4 bytes for IPv4, 16 for IPv6.
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

const _: () = assert!(core::mem::size_of::<TaskIdentity>() == 8);
const _: () = assert!(core::mem::size_of::<SockIdentity>() == 32);
const _: () = assert!(core::mem::size_of::<DnsConfig>() == 8);
const _: () = assert!(core::mem::size_of::<DnsClientKey>() == 20);
const _: () = assert!(core::mem::size_of::<DnsClient>() == 8);
const _: () = assert!(core::mem::size_of::<DnsAllowKey>() == 24);
const _: () = assert!(core::mem::size_of::<DnsRange>() == 16);
const _: () = assert!(core::mem::size_of::<DnsAllowValue>() == 8 + 16 * DNS_RANGES);
const _: () = assert!(core::mem::size_of::<PortRange>() == 8);
const _: () = assert!(core::mem::size_of::<PolicyValue>() == 8 + 8 * MAX_PORT_RANGES);
const _: () = assert!(core::mem::size_of::<Event>() == 88 + 16 + 32 + EVENT_PATH_LEN);
const _: () = assert!(core::mem::size_of::<FileKey>() == 16);
const _: () = assert!(core::mem::size_of::<FileStamp>() == 16);
const _: () = assert!(core::mem::size_of::<ExeSelector>() == 32);
const _: () = assert!(core::mem::size_of::<PrincipalKey>() == 8);
const _: () = assert!(core::mem::size_of::<Principal>() == 8);
const _: () = assert!(core::mem::size_of::<ExecAllowKey>() == 16);
const _: () = assert!(core::mem::size_of::<ShadowKey>() == 24);
const _: () = assert!(core::mem::size_of::<ShadowValue>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), fixed-width, and have no implicit padding.
    unsafe impl aya::Pod for super::TaskIdentity {}
    unsafe impl aya::Pod for super::SockIdentity {}
    unsafe impl aya::Pod for super::PortRange {}
    unsafe impl aya::Pod for super::PolicyValue {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::FileStamp {}
    unsafe impl aya::Pod for super::ExeSelector {}
    unsafe impl aya::Pod for super::PrincipalKey {}
    unsafe impl aya::Pod for super::Principal {}
    unsafe impl aya::Pod for super::ExecAllowKey {}
    unsafe impl aya::Pod for super::IdentityConfig {}
    unsafe impl aya::Pod for super::ShadowKey {}
    unsafe impl aya::Pod for super::ShadowValue {}
    unsafe impl aya::Pod for super::DnsConfig {}
    unsafe impl aya::Pod for super::DnsClientKey {}
    unsafe impl aya::Pod for super::DnsClient {}
    unsafe impl aya::Pod for super::DnsAllowKey {}
    unsafe impl aya::Pod for super::DnsAllowValue {}
}
