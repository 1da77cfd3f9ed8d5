//! zt-agent's kernel side: per-identity egress verdicts at connect/sendmsg time,
//! socket creation and socket option guards, thread-group tagging on fork/exec/exit,
//! and the per-identity exec allowlist.
//!
//! Every program attaches once at the cgroup2 root. Unenrolled tasks pay one task
//! lookup, one socket-storage lookup and one record of where they went, and pass.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    bindings::{BPF_ANY, BPF_NOEXIST, BPF_SK_STORAGE_GET_F_CREATE},
    btf_maps::{Array, ArrayOfMaps, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, SkStorage},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
        generated::{bpf_ktime_get_boot_ns, bpf_send_signal, bpf_sk_fullsock, bpf_sk_storage_get},
    },
    macros::{
        btf_map, btf_tracepoint, cgroup_skb, cgroup_sock, cgroup_sock_addr, cgroup_sockopt, lsm,
    },
    maps::lpm_trie::Key,
    programs::{
        BtfTracePointContext, LsmContext, SkBuffContext, SockAddrContext, SockContext,
        SockoptContext,
    },
};
use zt_agent_common::{
    ANY_ID, CGROUP_ALLOW, CGROUP_LAUNCHED, CGROUP_REJECT, CGROUPS_CAPACITY, DNS_ALLOW_CAPACITY,
    DNS_CLIENTS_CAPACITY, DNS_PORT, DnsAllowKey, DnsAllowValue, DnsClient, DnsClientKey, DnsConfig,
    ENROLL_CGROUP, ENROLL_EXE, ENROLL_INHERIT, ENROLL_PRINCIPAL, ENROLL_QUARANTINE,
    EVENT_ANCESTORS, EVENTS_RING_BYTES, EXE_FLAG_DIGEST, EXE_FLAG_QUARANTINE,
    EXE_SELECTORS_CAPACITY, EXEC_ALLOW_CAPACITY, EXEC_VERDICT_SLOTS, Event, EventKind, ExeSelector,
    ExecAllowKey, FileKey, FileStamp, IDENTITY_FLAG_AUDIT, IDENTITY_FLAG_EXEC_RESTRICTED,
    IDENTITY_FLAG_IN_POLICY, IDENTITY_KEY_BITS, IDENTITY_NONE, IDENTITY_QUARANTINE, IdentityConfig,
    KeyV4, KeyV6, MAX_IDENTITIES, POLICY_TRIE_CAPACITY, PRINCIPAL_GID, PRINCIPAL_UID,
    PRINCIPALS_CAPACITY, PROTO_MASK_TCP, PROTO_MASK_UDP, PROTO_OTHER, PROTO_TCP, PROTO_UDP,
    PolicyValue, Principal, PrincipalKey, Reason, SHADOW_CAPACITY, ShadowKey, ShadowValue,
    SockIdentity, TASKS_CAPACITY, TaskIdentity, VERDICT_SLOTS, Verdict, errors, exec_verdict_index,
    verdict_index,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
const IP_OPTIONS: i32 = 4;
const IPV6_2292RTHDR: i32 = 24;
const IPV6_RTHDR: i32 = 57;
const SIGKILL: u32 = 9;
const EPERM: i32 = 1;

// Kernel struct offsets of the running kernel, computed by userspace from BTF at
// load time (Rust eBPF has no CO-RE field relocation).
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_KN_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_ROOT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static KERNFS_NODE_ID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_ROOT_HIERARCHY_ID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_CGROUPS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_REAL_PARENT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CSS_SET_DFL_CGRP_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BPRM_FILE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static BPRM_FILENAME_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FILE_INODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_SB_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_INO_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_CTIME_SEC_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static INODE_CTIME_NSEC_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static SB_DEV_OFFSET: u32 = 0;

#[inline(always)]
fn offset(global: &u32) -> usize {
    // SAFETY: reading a global that the loader set before verification.
    unsafe { core::ptr::read_volatile(global) as usize }
}

/// Read a `T` at `base + off` from kernel memory.
#[inline(always)]
fn read_at<T>(base: *const u8, off: usize) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off).cast::<T>()).ok() }
}

#[btf_map]
static ZT_TASKS: HashMap<u32, TaskIdentity, { TASKS_CAPACITY as usize }> = HashMap::new();

#[btf_map]
static ZT_CGROUPS: HashMap<u64, u32, { CGROUPS_CAPACITY as usize }> = HashMap::new();

/// Outer arrays of one slot each: userspace builds a whole new trie and swaps it in,
/// so a verdict sees either the old policy or the new one.
#[btf_map]
static ZT_POLICY_V4: ArrayOfMaps<
    LpmTrie<KeyV4, PolicyValue, { POLICY_TRIE_CAPACITY as usize }>,
    1,
> = ArrayOfMaps::new();

#[btf_map]
static ZT_POLICY_V6: ArrayOfMaps<
    LpmTrie<KeyV6, PolicyValue, { POLICY_TRIE_CAPACITY as usize }>,
    1,
> = ArrayOfMaps::new();

#[btf_map]
static ZT_SOCK_ID: SkStorage<SockIdentity> = SkStorage::new();

#[btf_map]
static ZT_VERDICTS: PerCpuArray<u64, { VERDICT_SLOTS as usize }> = PerCpuArray::new();

#[btf_map]
static ZT_ERRORS: PerCpuArray<u64, { errors::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
static ZT_EVENTS: RingBuf<Event, { EVENTS_RING_BYTES as usize }> = RingBuf::new();

#[btf_map]
static ZT_IDENTITIES: Array<IdentityConfig, { MAX_IDENTITIES as usize }> = Array::new();

#[btf_map]
static ZT_EXE_SEL: HashMap<FileKey, ExeSelector, { EXE_SELECTORS_CAPACITY as usize }> =
    HashMap::new();

#[btf_map]
static ZT_PRINCIPALS: HashMap<PrincipalKey, Principal, { PRINCIPALS_CAPACITY as usize }> =
    HashMap::new();

#[btf_map]
static ZT_EXEC_ALLOW: HashMap<ExecAllowKey, FileStamp, { EXEC_ALLOW_CAPACITY as usize }> =
    HashMap::new();

#[btf_map]
static ZT_EXEC_VERDICTS: PerCpuArray<u64, { EXEC_VERDICT_SLOTS as usize }> = PerCpuArray::new();

/// Where unenrolled tasks connect and send: the shadow workloads `zt-agent ps` shows.
#[btf_map]
static ZT_SHADOW: LruHashMap<ShadowKey, ShadowValue, { SHADOW_CAPACITY as usize }> =
    LruHashMap::new();

/// The agent's resolver: where enrolled tasks' DNS goes.
#[btf_map]
static ZT_DNS_CONFIG: Array<DnsConfig, 1> = Array::new();

/// Who sent each packet that reached the resolver, by the sender's local port.
#[btf_map]
static ZT_DNS_CLIENTS: LruHashMap<DnsClientKey, DnsClient, { DNS_CLIENTS_CAPACITY as usize }> =
    LruHashMap::new();

/// Addresses DNS answers installed per identity, each with its ports and deadlines.
#[btf_map]
static ZT_DNS_ALLOW: HashMap<DnsAllowKey, DnsAllowValue, { DNS_ALLOW_CAPACITY as usize }> =
    HashMap::new();

// ---------------------------------------------------------------------------
// Entry points: thin wrappers; the fallback verdict lives here.
// ---------------------------------------------------------------------------

#[cgroup_sock_addr(connect4)]
pub fn zt_connect4(ctx: SockAddrContext) -> i32 {
    judge_sock_addr(&ctx, EventKind::Connect, false)
}

#[cgroup_sock_addr(connect6)]
pub fn zt_connect6(ctx: SockAddrContext) -> i32 {
    judge_sock_addr(&ctx, EventKind::Connect, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn zt_sendmsg4(ctx: SockAddrContext) -> i32 {
    judge_sock_addr(&ctx, EventKind::Sendmsg, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn zt_sendmsg6(ctx: SockAddrContext) -> i32 {
    judge_sock_addr(&ctx, EventKind::Sendmsg, true)
}

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

#[cgroup_sock(sock_create)]
pub fn zt_sock_create(ctx: SockContext) -> i32 {
    try_sock_create(&ctx)
}

#[cgroup_sockopt(setsockopt)]
pub fn zt_setsockopt(ctx: SockoptContext) -> i32 {
    try_setsockopt(&ctx)
}

#[cgroup_skb(egress)]
pub fn zt_skb_egress(ctx: SkBuffContext) -> i32 {
    try_skb_egress(&ctx)
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn zt_fork(ctx: BtfTracePointContext) -> u32 {
    try_fork(&ctx);
    0
}

#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn zt_cgroup_attach(ctx: BtfTracePointContext) -> u32 {
    try_cgroup_attach(&ctx);
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn zt_exec(ctx: BtfTracePointContext) -> u32 {
    try_exec(&ctx);
    0
}

/// Where the kernel loads BPF LSM programs, exec of a file outside the allowlist
/// fails with EPERM before anything of the old image is torn down. It runs for every
/// file of the exec chain (a script, then its interpreter); the tp_btf exec hook still
/// judges the final file after the point of no return, and the exec that enrolls a task.
#[lsm(hook = "bprm_check_security")]
pub fn zt_exec_lsm(ctx: LsmContext) -> i32 {
    // bprm_check_security(struct linux_binprm *bprm, int ret)
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return prev;
    }
    let bprm: *const u8 = ctx.arg(0);
    let id = task_identity(current_tgid());
    if id == IDENTITY_NONE {
        return 0;
    }
    let Some((file, stamp)) = exec_file(bprm) else {
        return 0;
    };
    let j = judge_exec(id, &file, &stamp);
    if (j.verdict as u8) == (Verdict::Deny as u8) {
        count_exec(id, j.verdict);
        // SAFETY: helper without arguments.
        let task = unsafe { bpf_get_current_task() } as *const u8;
        emit_exec(&j, id, 0, task, bprm, &file, &stamp);
        return -EPERM;
    }
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn zt_exit(ctx: BtfTracePointContext) -> u32 {
    try_exit(&ctx);
    0
}

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Identity of the calling thread group, or `IDENTITY_NONE`.
#[inline(always)]
fn task_identity(tgid: u32) -> u32 {
    match ZT_TASKS.get_ptr(&tgid) {
        // SAFETY: the pointer comes from a successful lookup and is read once.
        Some(t) => unsafe { (*t).identity },
        None => IDENTITY_NONE,
    }
}

// ---------------------------------------------------------------------------
// Policy lookups
// ---------------------------------------------------------------------------

/// Result of judging one identity.
#[derive(Clone, Copy)]
struct Judgement {
    verdict: Verdict,
    reason: Reason,
}

const ALLOW: Judgement = Judgement {
    verdict: Verdict::Allow,
    reason: Reason::RuleMatched,
};

#[inline(always)]
fn judge_value(v: Option<*mut PolicyValue>, port: u16, proto_mask: u8) -> Judgement {
    match v {
        // Not in the policy (removed, quarantined, or no policy installed yet): deny all.
        None => Judgement {
            verdict: Verdict::Deny,
            reason: Reason::IdentityRemoved,
        },
        Some(p) => {
            // SAFETY: pointer from a successful lookup in the current inner trie.
            let v = unsafe { &*p };
            if v.allows(port, proto_mask) {
                ALLOW
            } else if v.flags & IDENTITY_FLAG_AUDIT != 0 {
                Judgement {
                    verdict: Verdict::Audit,
                    reason: Reason::NoRule,
                }
            } else {
                Judgement {
                    verdict: Verdict::Deny,
                    reason: Reason::NoRule,
                }
            }
        }
    }
}

#[inline(always)]
fn judge_v4(identity: u32, addr: [u8; 4], port: u16, proto_mask: u8) -> Judgement {
    let key = Key {
        prefix_len: IDENTITY_KEY_BITS + 32,
        data: zt_agent_common::key_v4(identity, addr),
    };
    let j = judge_value(ZT_POLICY_V4.get_value_ptr_mut(0, &key), port, proto_mask);
    let mut a = [0u8; 16];
    a[0] = addr[0];
    a[1] = addr[1];
    a[2] = addr[2];
    a[3] = addr[3];
    dns_learned(j, identity, AF_INET, a, port, proto_mask)
}

#[inline(always)]
fn judge_v6(identity: u32, addr: [u8; 16], port: u16, proto_mask: u8) -> Judgement {
    let key = Key {
        prefix_len: IDENTITY_KEY_BITS + 128,
        data: zt_agent_common::key_v6(identity, addr),
    };
    let j = judge_value(ZT_POLICY_V6.get_value_ptr_mut(0, &key), port, proto_mask);
    dns_learned(j, identity, AF_INET6, addr, port, proto_mask)
}

/// No rule covers the destination: a DNS answer may have installed it for this
/// identity, for some ports, until a deadline.
#[inline(always)]
fn dns_learned(
    j: Judgement,
    identity: u32,
    family: u16,
    addr: [u8; 16],
    port: u16,
    proto_mask: u8,
) -> Judgement {
    if (j.reason as u8) != (Reason::NoRule as u8) {
        return j;
    }
    let key = DnsAllowKey {
        identity,
        family: family as u32,
        addr,
    };
    let Some(v) = ZT_DNS_ALLOW.get_ptr(&key) else {
        return j;
    };
    // SAFETY: pointer from a successful lookup; helper without arguments.
    let ok = unsafe { (*v).allows(port, proto_mask, bpf_ktime_get_boot_ns()) };
    if ok {
        Judgement {
            verdict: Verdict::Allow,
            reason: Reason::DnsLearned,
        }
    } else {
        j
    }
}

/// Root entry of an identity (no address bits): carries its flags.
/// `None` means the identity is not in the installed policy.
#[inline(always)]
fn identity_flags(identity: u32) -> Option<u32> {
    let key = Key {
        prefix_len: IDENTITY_KEY_BITS,
        data: zt_agent_common::key_v4(identity, [0; 4]),
    };
    // SAFETY: pointer from a successful lookup.
    ZT_POLICY_V4
        .get_value_ptr_mut(0, &key)
        .map(|p| unsafe { (*p).flags })
}

/// The stricter of two judgements.
#[inline(always)]
fn worst(a: Judgement, b: Judgement) -> Judgement {
    if (b.verdict as u8) == (Verdict::Deny as u8) {
        return b;
    }
    if (a.verdict as u8) == (Verdict::Deny as u8) {
        return a;
    }
    if (b.verdict as u8) == (Verdict::Audit as u8) {
        return b;
    }
    a
}

// ---------------------------------------------------------------------------
// connect / sendmsg
// ---------------------------------------------------------------------------

/// Where the call is going, as the hook judges it.
#[derive(Clone, Copy)]
struct Dest {
    v4: bool,
    addr: [u8; 16],
    port: u16,
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
fn make_dest(is6: bool, ip4: u32, ip6: [u32; 4], port: u16) -> Dest {
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
fn judge_sock_addr(ctx: &SockAddrContext, kind: EventKind, is6: bool) -> i32 {
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
    if dns != 0 && given.port == dns && is_loopback(&given) {
        // Nobody addresses the resolver itself, enrolled or not: only the kernel's
        // redirection reaches it, so the resolver always knows who asks.
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
        let _ = ZT_SOCK_ID.get_or_insert_ptr_mut(ctx, Some(&mut init));
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

// ---------------------------------------------------------------------------
// DNS path: enrolled tasks' DNS goes to the agent's resolver on loopback, which learns
// who asked from the packet guard, and whose replies are reported as coming from the
// resolver the task addressed.
// ---------------------------------------------------------------------------

const LO4: [u8; 4] = [127, 0, 0, 1];

/// The resolver's port, or 0 when there is no DNS path.
#[inline(always)]
fn dns_port() -> u16 {
    match ZT_DNS_CONFIG.get(0) {
        Some(c) => c.port,
        None => 0,
    }
}

#[inline(always)]
fn is_loopback(d: &Dest) -> bool {
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
fn redirect_dns(ctx: &SockAddrContext, is6: bool, dest: &Dest, dns: u16, identity: u32, tgid: u32) {
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

/// A packet to the resolver: record which socket's identity sent it, by source port.
/// Every such packet overwrites the entry, so a port reused by another socket never
/// inherits an earlier identity.
#[inline(always)]
fn record_dns_client(skb: *const __sk_buff, family: u8, protocol: u8, saddr: [u8; 16], sport: u16) {
    let mut client = DnsClient {
        identity: IDENTITY_NONE,
        tgid: 0,
    };
    // SAFETY: reading the socket pointer of this skb.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if !sk.is_null() {
        // SAFETY: helper calls on the skb's socket; both accept and check it.
        let full = unsafe { bpf_sk_fullsock(sk) };
        if !full.is_null() {
            let p =
                unsafe { bpf_sk_storage_get(sock_id_map(), full.cast(), core::ptr::null_mut(), 0) };
            if !p.is_null() {
                // SAFETY: non-null storage pointer.
                let s = unsafe { &*(p as *const SockIdentity) };
                client.identity = s.dns_identity;
                client.tgid = s.dns_tgid;
            }
        }
    }
    let key = DnsClientKey {
        addr: saddr,
        port: sport,
        family,
        protocol,
    };
    let _ = ZT_DNS_CLIENTS.insert(&key, &client, BPF_ANY.into());
}

/// An IPv4 packet without options: if it goes to the resolver (127.0.0.1 at its port,
/// TCP or UDP), record who sent it. Other packets pay a few loads.
#[inline(always)]
fn note_dns_client_v4(skb: *const __sk_buff, data: usize, end: usize) {
    if data + 24 > end {
        return;
    }
    // SAFETY: within the bounds just checked (a 20-byte header, then the ports).
    let b = |i: usize| unsafe { *((data + i) as *const u8) };
    if b(16) != LO4[0] || b(17) != 0 || b(18) != 0 || b(19) != LO4[3] {
        return;
    }
    let l4 = b(9);
    if l4 != IPPROTO_TCP as u8 && l4 != IPPROTO_UDP as u8 {
        return;
    }
    let dns = dns_port();
    if dns == 0 || u16::from_be_bytes([b(22), b(23)]) != dns {
        return;
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
    );
}

/// The same for an IPv6 packet whose next header is `next` (::1 at the resolver's port).
#[inline(always)]
fn note_dns_client_v6(skb: *const __sk_buff, data: usize, end: usize, next: u8) {
    if (next != IPPROTO_TCP as u8 && next != IPPROTO_UDP as u8) || data + 44 > end {
        return;
    }
    // SAFETY: within the bounds just checked (a 40-byte header, then the ports).
    let b = |i: usize| unsafe { *((data + i) as *const u8) };
    if b(39) != 1 {
        return;
    }
    let mut i = 24;
    while i < 39 {
        if b(i) != 0 {
            return;
        }
        i += 1;
    }
    let dns = dns_port();
    if dns == 0 || u16::from_be_bytes([b(42), b(43)]) != dns {
        return;
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
    );
}

// ---------------------------------------------------------------------------
// Socket creation: tag the socket with its creator's identity; TCP and UDP only.
// ---------------------------------------------------------------------------

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
    CGROUP_ALLOW
}

/// The socket-storage map as a helper argument: a BTF map is addressed by its static.
#[inline(always)]
fn sock_id_map() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&ZT_SOCK_ID).cast_mut().cast()
}

/// Deny, or audit when the identity is in audit mode.
#[inline(always)]
fn mode_judgement(identity: u32, reason: Reason) -> Judgement {
    match identity_flags(identity) {
        Some(f) if f & IDENTITY_FLAG_AUDIT != 0 => Judgement {
            verdict: Verdict::Audit,
            reason,
        },
        _ => Judgement {
            verdict: Verdict::Deny,
            reason,
        },
    }
}

// ---------------------------------------------------------------------------
// setsockopt: no source routing, which would send packets somewhere other than
// the address the connect/sendmsg hook judged.
// ---------------------------------------------------------------------------

#[inline(always)]
fn try_setsockopt(ctx: &SockoptContext) -> i32 {
    // SAFETY: the context pointer is valid for the whole program run.
    let so = unsafe { &*ctx.sockopt };
    let level = so.level;
    let optname = so.optname;
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

// ---------------------------------------------------------------------------
// Packets: the same routing options can ride on a single sendmsg() as ancillary data
// (IPV6_RTHDR, IP_OPTIONS/IP_RETOPTS cmsgs), which no socket option hook sees. Drop
// packets of enrolled sockets that carry IPv4 options or IPv6 extension headers that
// can hold a routing header. Packets without them pass after two loads.
// ---------------------------------------------------------------------------

const ETH_P_IP_BE: u32 = 0x0008; // htons(0x0800) as the __sk_buff sees it
const ETH_P_IPV6_BE: u32 = 0xdd86; // htons(0x86dd)
const SKB_PASS: i32 = 1;
const SKB_DROP: i32 = 0;

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
            note_dns_client_v4(skb, data, end);
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
            note_dns_client_v6(skb, data, end, next);
            false
        }
    } else {
        false
    };
    if !suspicious {
        return SKB_PASS;
    }
    // SAFETY: reading the socket pointer of this skb.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return SKB_PASS;
    }
    // SAFETY: helper calls on the skb's socket; both accept and check it.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return SKB_PASS;
    }
    let p = unsafe { bpf_sk_storage_get(sock_id_map(), full.cast(), core::ptr::null_mut(), 0) };
    if p.is_null() {
        return SKB_PASS;
    }
    // SAFETY: non-null storage pointer.
    let (id, dns_id) = unsafe {
        let s = &*(p as *const SockIdentity);
        (s.identity, s.dns_identity)
    };
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

// ---------------------------------------------------------------------------
// Thread-group tagging
// ---------------------------------------------------------------------------

#[inline(always)]
fn try_fork(ctx: &BtfTracePointContext) {
    // Runs in the parent's context.
    let parent = current_tgid();
    let child: *const u8 = ctx.arg(1);
    let Some(child_tgid) = read_at::<i32>(child, offset(&TASK_TGID_OFFSET)) else {
        return;
    };
    let child_tgid = child_tgid as u32;
    if child_tgid == parent {
        return; // a new thread: the thread group is already enrolled or not
    }
    let (id, how) = match task_identity(parent) {
        IDENTITY_NONE => match child_cgroup_identity(child) {
            // Born in an enrolled cgroup: the parent's, or another one through
            // clone3(CLONE_INTO_CGROUP), which fires no cgroup_attach_task.
            Some(id) => (id, ENROLL_CGROUP),
            None => {
                // A new process never takes over an entry left by an earlier holder
                // of its pid.
                let _ = ZT_TASKS.remove(&child_tgid);
                return;
            }
        },
        id => (id, ENROLL_INHERIT),
    };
    let t = TaskIdentity { identity: id, how };
    // BPF_ANY: an entry under a pid that was just handed out is stale by definition.
    if ZT_TASKS.insert(&child_tgid, &t, BPF_ANY.into()).is_err() {
        // The child could not inherit the identity. It stays judged through its cgroup
        // if it remains there; count it, and stop the parent (fail closed).
        count_error(errors::TASKS_FULL);
        // SAFETY: helper call signalling the current task.
        unsafe {
            bpf_send_signal(SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------
// Exec: identity by binary and user, and the exec allowlist
// ---------------------------------------------------------------------------

/// The file an exec runs, as (device, inode) and change time, from `bprm->file`.
#[inline(always)]
fn exec_file(bprm: *const u8) -> Option<(FileKey, FileStamp)> {
    let file = read_at::<*const u8>(bprm, offset(&BPRM_FILE_OFFSET))?;
    let inode = read_at::<*const u8>(file, offset(&FILE_INODE_OFFSET))?;
    let sb = read_at::<*const u8>(inode, offset(&INODE_SB_OFFSET))?;
    let dev = read_at::<u32>(sb, offset(&SB_DEV_OFFSET))?;
    let ino = read_at::<u64>(inode, offset(&INODE_INO_OFFSET))?;
    let sec = read_at::<i64>(inode, offset(&INODE_CTIME_SEC_OFFSET))?;
    let nsec = read_at::<u32>(inode, offset(&INODE_CTIME_NSEC_OFFSET))?;
    Some((
        FileKey { dev, _pad: 0, ino },
        FileStamp {
            ctime_sec: sec,
            // Recent kernels keep a "ctime was queried" flag in the top bits.
            ctime_nsec: nsec & 0x3fff_ffff,
            _pad: 0,
        },
    ))
}

/// The `IDENTITY_FLAG_*` of an identity; 0 (not in the policy) when unknown.
#[inline(always)]
fn identity_config(id: u32) -> u32 {
    ZT_IDENTITIES.get(id).map_or(0, |c| c.flags)
}

/// Whether an enrolled identity may exec this file.
#[inline(always)]
fn judge_exec(id: u32, file: &FileKey, stamp: &FileStamp) -> Judgement {
    let deny = |reason| Judgement {
        verdict: Verdict::Deny,
        reason,
    };
    if id == IDENTITY_QUARANTINE {
        return deny(Reason::Quarantined);
    }
    let flags = identity_config(id);
    if flags & IDENTITY_FLAG_IN_POLICY == 0 {
        return deny(Reason::IdentityRemoved);
    }
    if flags & IDENTITY_FLAG_EXEC_RESTRICTED == 0 {
        return Judgement {
            verdict: Verdict::Allow,
            reason: Reason::ExecUnrestricted,
        };
    }
    let key = ExecAllowKey {
        identity: id,
        dev: file.dev,
        ino: file.ino,
    };
    let reason = match ZT_EXEC_ALLOW.get_ptr(&key) {
        // SAFETY: pointer from a successful lookup.
        Some(p) if unsafe { *p } == *stamp => return ALLOW,
        Some(_) => Reason::FileChanged,
        None => Reason::ExecNotAllowed,
    };
    Judgement {
        verdict: if flags & IDENTITY_FLAG_AUDIT != 0 {
            Verdict::Audit
        } else {
            Verdict::Deny
        },
        reason,
    }
}

/// The identity an unenrolled task takes by this exec, if any: an `exe` selector
/// naming the file (with its uid/gid conditions), else a uid, else a gid selector.
#[inline(always)]
fn select_on_exec(
    file: &FileKey,
    stamp: &FileStamp,
    uid: u32,
    gid: u32,
) -> Option<(u32, u32, Reason)> {
    if let Some(p) = ZT_EXE_SEL.get_ptr(file) {
        // SAFETY: pointer from a successful lookup; copied once.
        let sel = unsafe { *p };
        if (sel.uid == ANY_ID || sel.uid == uid) && (sel.gid == ANY_ID || sel.gid == gid) {
            // A pinned digest that failed, or that can no longer be vouched for because
            // the file changed since the daemon verified it: quarantine. Without a
            // digest a changed file is still the selected file.
            let reason = if sel.flags & EXE_FLAG_QUARANTINE != 0 {
                Reason::Quarantined
            } else if sel.stamp != *stamp {
                Reason::FileChanged
            } else {
                Reason::RuleMatched
            };
            let digest_failed = sel.flags & EXE_FLAG_QUARANTINE != 0
                || (sel.stamp != *stamp && sel.flags & EXE_FLAG_DIGEST != 0);
            if !digest_failed {
                return Some((sel.identity, ENROLL_EXE, reason));
            }
            // An identity in audit mode never blocks: its tasks stay in it, and the exec
            // is reported as one that would have been quarantined.
            if identity_config(sel.identity) & IDENTITY_FLAG_AUDIT != 0 {
                return Some((sel.identity, ENROLL_EXE, Reason::Quarantined));
            }
            return Some((IDENTITY_QUARANTINE, ENROLL_QUARANTINE, reason));
        }
    }
    let by_uid = PrincipalKey {
        kind: PRINCIPAL_UID,
        id: uid,
    };
    if let Some(p) = ZT_PRINCIPALS.get_ptr(&by_uid) {
        // SAFETY: pointer from a successful lookup; copied once.
        let pr = unsafe { *p };
        if pr.gid == ANY_ID || pr.gid == gid {
            return Some((pr.identity, ENROLL_PRINCIPAL, Reason::RuleMatched));
        }
    }
    let by_gid = PrincipalKey {
        kind: PRINCIPAL_GID,
        id: gid,
    };
    // SAFETY: pointer from a successful lookup.
    ZT_PRINCIPALS.get_ptr(&by_gid).map(|p| {
        (
            unsafe { (*p).identity },
            ENROLL_PRINCIPAL,
            Reason::RuleMatched,
        )
    })
}

/// Runs after exec's point of no return, before the new image runs an instruction.
/// An unenrolled task may take an identity here; an enrolled one keeps its own and
/// is killed if its allowlist does not hold the file (the interpreter, for a script).
#[inline(always)]
fn try_exec(ctx: &BtfTracePointContext) {
    // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    let tgid = current_tgid();
    let id = task_identity(tgid);
    let Some((file, stamp)) = exec_file(bprm) else {
        if id != IDENTITY_NONE {
            // Unreadable file: judge it as unknown (fail closed).
            let (f, st) = (FileKey::default(), FileStamp::default());
            let j = judge_exec(id, &f, &st);
            finish_exec(&j, id, 0, task, bprm, &f, &st);
        }
        return;
    };
    if id != IDENTITY_NONE {
        let j = judge_exec(id, &file, &stamp);
        finish_exec(&j, id, 0, task, bprm, &file, &stamp);
        return;
    }
    let uid_gid = bpf_get_current_uid_gid();
    let Some((new_id, how, reason)) =
        select_on_exec(&file, &stamp, uid_gid as u32, (uid_gid >> 32) as u32)
    else {
        return;
    };
    let t = TaskIdentity {
        identity: new_id,
        how,
    };
    // NOEXIST: a concurrent enrollment (cgroup move) wins; an identity never changes.
    if ZT_TASKS.insert(&tgid, &t, BPF_NOEXIST.into()).is_err() {
        if task_identity(tgid) == IDENTITY_NONE {
            // Could not tag the task: it must not run unjudged.
            count_error(errors::TASKS_FULL);
            // SAFETY: helper call signalling the current task.
            unsafe {
                bpf_send_signal(SIGKILL);
            }
        }
        return;
    }
    // The exec that gave the identity is the identity's first: its allowlist applies.
    // Quarantine is the exception: the task lives on there, with nothing allowed.
    let j = if new_id == IDENTITY_QUARANTINE {
        Judgement {
            verdict: Verdict::Allow,
            reason,
        }
    } else if (reason as u8) == (Reason::Quarantined as u8) {
        // Audit mode, where enforce mode would have quarantined.
        Judgement {
            verdict: Verdict::Audit,
            reason,
        }
    } else {
        match judge_exec(new_id, &file, &stamp) {
            j if (j.verdict as u8) == (Verdict::Allow as u8) => Judgement {
                verdict: Verdict::Allow,
                reason,
            },
            j => j,
        }
    };
    finish_exec(&j, new_id, how, task, bprm, &file, &stamp);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn finish_exec(
    j: &Judgement,
    id: u32,
    how: u32,
    task: *const u8,
    bprm: *const u8,
    file: &FileKey,
    stamp: &FileStamp,
) {
    count_exec(id, j.verdict);
    emit_exec(j, id, how, task, bprm, file, stamp);
    if (j.verdict as u8) == (Verdict::Deny as u8) {
        // SAFETY: helper call signalling the current task (its whole thread group).
        if unsafe { bpf_send_signal(SIGKILL) } != 0 {
            count_error(errors::KILL_FAILED);
        }
    }
}

#[inline(always)]
fn count_exec(identity: u32, verdict: Verdict) {
    if identity >= MAX_IDENTITIES {
        return;
    }
    if let Some(p) = ZT_EXEC_VERDICTS.get_ptr_mut(exec_verdict_index(identity, verdict as u8)) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

/// The identity of the enrolled cgroup a new task starts in, if any.
#[inline(always)]
fn child_cgroup_identity(task: *const u8) -> Option<u32> {
    let cset = read_at::<*const u8>(task, offset(&TASK_CGROUPS_OFFSET))?;
    let cgrp = read_at::<*const u8>(cset, offset(&CSS_SET_DFL_CGRP_OFFSET))?;
    cgroup_identity(cgrp)
}

/// The identity a cgroup v2 `struct cgroup` is enrolled under, if any.
#[inline(always)]
fn cgroup_identity(cgrp: *const u8) -> Option<u32> {
    let kn = read_at::<*const u8>(cgrp, offset(&CGROUP_KN_OFFSET))?;
    let cgid = read_at::<u64>(kn, offset(&KERNFS_NODE_ID_OFFSET))?;
    // SAFETY: pointer from a successful lookup.
    ZT_CGROUPS
        .get_ptr(&cgid)
        .map(|p| unsafe { *p } & !CGROUP_LAUNCHED)
}

/// A task moved into an enrolled cgroup is enrolled before the write to
/// cgroup.procs returns, so it cannot move on before anything saw it.
#[inline(always)]
fn try_cgroup_attach(ctx: &BtfTracePointContext) {
    // cgroup_attach_task(struct cgroup *dst, const char *path, struct task_struct *task,
    //                    bool threadgroup)
    let cgrp: *const u8 = ctx.arg(0);
    let task: *const u8 = ctx.arg(2);
    // Only the cgroup2 hierarchy (hierarchy_id 0); v1 hierarchies number ids apart.
    let Some(root) = read_at::<*const u8>(cgrp, offset(&CGROUP_ROOT_OFFSET)) else {
        return;
    };
    if read_at::<i32>(root, offset(&CGROUP_ROOT_HIERARCHY_ID_OFFSET)) != Some(0) {
        return;
    }
    let Some(identity) = cgroup_identity(cgrp) else {
        return;
    };
    let Some(tgid) = read_at::<i32>(task, offset(&TASK_TGID_OFFSET)) else {
        return;
    };
    let t = TaskIdentity {
        identity,
        how: ENROLL_CGROUP,
    };
    // NOEXIST: an enrolled task never changes identity.
    if ZT_TASKS
        .insert(&(tgid as u32), &t, BPF_NOEXIST.into())
        .is_err()
        && task_identity(tgid as u32) == IDENTITY_NONE
    {
        count_error(errors::TASKS_FULL);
    }
}

#[inline(always)]
fn try_exit(ctx: &BtfTracePointContext) {
    // sched_process_exit(struct task_struct *p, bool group_dead): the identity ends
    // only when the whole thread group has exited.
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff == 0 {
        return;
    }
    let tgid = current_tgid();
    let _ = ZT_TASKS.remove(&tgid);
}

// ---------------------------------------------------------------------------
// Counters and events
// ---------------------------------------------------------------------------

#[inline(always)]
fn count_verdict(identity: u32, verdict: Verdict, proto: u8) {
    if identity >= MAX_IDENTITIES {
        return;
    }
    if let Some(p) = ZT_VERDICTS.get_ptr_mut(verdict_index(identity, verdict as u8, proto)) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn count_error(slot: u32) {
    if let Some(p) = ZT_ERRORS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit(
    kind: EventKind,
    j: &Judgement,
    identity: u32,
    sock_identity: u32,
    family: u16,
    addr: &[u8; 16],
    port: u16,
    protocol: u8,
    detail: u32,
) {
    let Some(mut entry) = ZT_EVENTS.reserve(0) else {
        count_error(errors::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    fill_common(ev, kind, j, identity, detail);
    // SAFETY: `ev` points at the reserved record, which this program owns until submit.
    unsafe {
        (*ev).sock_identity = sock_identity;
        (*ev).family = family;
        (*ev).port = port;
        (*ev).protocol = protocol;
        (*ev).addr = *addr;
        (*ev).ancestors = [0; EVENT_ANCESTORS];
        (*ev).file = FileKey::default();
        (*ev).file_stamp = FileStamp::default();
        (*ev).path[0] = 0;
    }
    entry.submit(0);
}

/// An exec event with its provenance: the ancestors' tgids, the file and the path.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_exec(
    j: &Judgement,
    identity: u32,
    how: u32,
    task: *const u8,
    bprm: *const u8,
    file: &FileKey,
    stamp: &FileStamp,
) {
    let Some(mut entry) = ZT_EVENTS.reserve(0) else {
        count_error(errors::RINGBUF_FULL);
        return;
    };
    let ev = entry.as_mut_ptr();
    fill_common(ev, EventKind::Exec, j, identity, how);
    let mut ancestors = [0u32; EVENT_ANCESTORS];
    let mut t = task;
    let mut i = 0;
    while i < EVENT_ANCESTORS && !t.is_null() {
        let Some(parent) = read_at::<*const u8>(t, offset(&TASK_REAL_PARENT_OFFSET)) else {
            break;
        };
        let Some(ptgid) = read_at::<i32>(parent, offset(&TASK_TGID_OFFSET)) else {
            break;
        };
        if ptgid <= 0 || parent == t {
            break;
        }
        ancestors[i] = ptgid as u32;
        t = parent;
        i += 1;
    }
    // SAFETY: `ev` points at the reserved record, which this program owns until submit.
    unsafe {
        (*ev).sock_identity = IDENTITY_NONE;
        (*ev).family = 0;
        (*ev).port = 0;
        (*ev).protocol = 0;
        (*ev).addr = [0; 16];
        (*ev).ancestors = ancestors;
        (*ev).file = *file;
        (*ev).file_stamp = *stamp;
        (*ev).path[0] = 0;
        if let Some(name) = read_at::<*const u8>(bprm, offset(&BPRM_FILENAME_OFFSET)) {
            let _ = bpf_probe_read_kernel_str_bytes(name, &mut (*ev).path);
        }
    }
    entry.submit(0);
}

#[inline(always)]
fn fill_common(ev: *mut Event, kind: EventKind, j: &Judgement, identity: u32, detail: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `ev` points at a reserved ring buffer record.
    unsafe {
        (*ev).ktime_ns = bpf_ktime_get_ns();
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).identity = identity;
        (*ev).pid = pid_tgid as u32;
        (*ev).tgid = (pid_tgid >> 32) as u32;
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).detail = detail;
        (*ev).kind = kind as u8;
        (*ev).verdict = j.verdict as u8;
        (*ev).reason = j.reason as u8;
        (*ev)._pad = [0; 4];
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
