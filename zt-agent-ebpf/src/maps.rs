//! Every map of the object. The names are the pin names in `map_names`.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, SkStorage},
    macros::btf_map,
};
use zt_agent_common::{
    Budget, CGROUPS_CAPACITY, DNS_ALLOW_CAPACITY, DNS_CLIENTS_CAPACITY, DnsAllowKey, DnsAllowValue,
    DnsClient, DnsClientKey, DnsConfig, EVENTS_RING_BYTES, EXE_SELECTORS_CAPACITY,
    EXEC_ALLOW_CAPACITY, EXEC_VERDICT_SLOTS, Event, ExeSelector, ExecAllowKey, FLOWS_CAPACITY,
    FileKey, FileStamp, FlowBytes, FlowKey, GRANT_TRIE_CAPACITY, GrantKeyV4, GrantKeyV6,
    GrantValue, IdentityConfig, KeyV4, KeyV6, MAX_IDENTITIES, POLICY_TRIE_CAPACITY,
    PRINCIPALS_CAPACITY, PolicyValue, Principal, PrincipalKey, RuntimeState, SHADOW_CAPACITY,
    ShadowKey, ShadowValue, SockIdentity, TASKS_CAPACITY, TaskIdentity, TaskShare, Traffic,
    VERDICT_SLOTS, errors,
};

#[btf_map]
pub(crate) static ZT_TASKS: HashMap<u32, TaskIdentity, { TASKS_CAPACITY as usize }> =
    HashMap::new();

#[btf_map]
pub(crate) static ZT_CGROUPS: HashMap<u64, u32, { CGROUPS_CAPACITY as usize }> = HashMap::new();

/// Outer arrays of one slot each: userspace builds a whole new trie and swaps it in,
/// so a verdict sees either the old policy or the new one.
/// A per-family policy trie behind its one-slot outer array.
pub(crate) type Tries<K> =
    ArrayOfMaps<LpmTrie<K, PolicyValue, { POLICY_TRIE_CAPACITY as usize }>, 1>;

#[btf_map]
pub(crate) static ZT_POLICY_V4: Tries<KeyV4> = ArrayOfMaps::new();

#[btf_map]
pub(crate) static ZT_POLICY_V6: Tries<KeyV6> = ArrayOfMaps::new();

#[btf_map]
pub(crate) static ZT_SOCK_ID: SkStorage<SockIdentity> = SkStorage::new();

#[btf_map]
pub(crate) static ZT_VERDICTS: PerCpuArray<u64, { VERDICT_SLOTS as usize }> = PerCpuArray::new();

#[btf_map]
pub(crate) static ZT_ERRORS: PerCpuArray<u64, { errors::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub(crate) static ZT_EVENTS: RingBuf<Event, { EVENTS_RING_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub(crate) static ZT_IDENTITIES: Array<IdentityConfig, { MAX_IDENTITIES as usize }> = Array::new();

#[btf_map]
pub(crate) static ZT_EXE_SEL: HashMap<FileKey, ExeSelector, { EXE_SELECTORS_CAPACITY as usize }> =
    HashMap::new();

#[btf_map]
pub(crate) static ZT_PRINCIPALS: HashMap<
    PrincipalKey,
    Principal,
    { PRINCIPALS_CAPACITY as usize },
> = HashMap::new();

#[btf_map]
pub(crate) static ZT_EXEC_ALLOW: HashMap<
    ExecAllowKey,
    FileStamp,
    { EXEC_ALLOW_CAPACITY as usize },
> = HashMap::new();

#[btf_map]
pub(crate) static ZT_EXEC_VERDICTS: PerCpuArray<u64, { EXEC_VERDICT_SLOTS as usize }> =
    PerCpuArray::new();

/// Where unenrolled tasks connect and send: the shadow workloads `zt-agent ps` shows.
#[btf_map]
pub(crate) static ZT_SHADOW: LruHashMap<ShadowKey, ShadowValue, { SHADOW_CAPACITY as usize }> =
    LruHashMap::new();

/// The agent's resolver: where enrolled tasks' DNS goes.
#[btf_map]
pub(crate) static ZT_DNS_CONFIG: Array<DnsConfig, 1> = Array::new();

/// Who sent each packet that reached the resolver, by the sender's local port.
#[btf_map]
pub(crate) static ZT_DNS_CLIENTS: LruHashMap<
    DnsClientKey,
    DnsClient,
    { DNS_CLIENTS_CAPACITY as usize },
> = LruHashMap::new();

/// Addresses DNS answers installed per identity, each with its ports and deadlines.
#[btf_map]
pub(crate) static ZT_DNS_ALLOW: HashMap<
    DnsAllowKey,
    DnsAllowValue,
    { DNS_ALLOW_CAPACITY as usize },
> = HashMap::new();

/// Entries the kernel added to the task table per identity, less those it removed;
/// changed only with atomic adds.
#[btf_map]
pub(crate) static ZT_TASK_COUNT: Array<u64, { MAX_IDENTITIES as usize }> = Array::new();

/// Each identity's share of the task table and the entries the daemon added; written
/// by the daemon only.
#[btf_map]
pub(crate) static ZT_TASK_SHARE: Array<TaskShare, { MAX_IDENTITIES as usize }> = Array::new();

/// Forks and enrollments refused because the identity held its whole share.
#[btf_map]
pub(crate) static ZT_TASK_REFUSED: PerCpuArray<u64, { MAX_IDENTITIES as usize }> =
    PerCpuArray::new();

/// Ingress tries: (identity, peer address) -> the local ports open to that peer.
/// Swapped whole, as the egress tries are.
#[btf_map]
pub(crate) static ZT_IN_V4: Tries<KeyV4> = ArrayOfMaps::new();

#[btf_map]
pub(crate) static ZT_IN_V6: Tries<KeyV6> = ArrayOfMaps::new();

/// The ports each identity may bind: the union of its ingress rules' ports, with its
/// flags (no `IDENTITY_FLAG_IN_POLICY`: not in the policy).
#[btf_map]
pub(crate) static ZT_IN_PORTS: Array<PolicyValue, { MAX_IDENTITIES as usize }> = Array::new();

#[btf_map]
pub(crate) static ZT_IN_VERDICTS: PerCpuArray<u64, { VERDICT_SLOTS as usize }> = PerCpuArray::new();

/// Per identity and CPU: packets sent to the resolver in the current window.
#[btf_map]
pub(crate) static ZT_DNS_BUDGET: PerCpuArray<Budget, { MAX_IDENTITIES as usize }> =
    PerCpuArray::new();
/// Grants, open windows and `ask` markers per identity and prefix, written in place
/// by the daemon: each value carries its own deadlines and scopes.
#[btf_map]
pub(crate) static ZT_GRANTS_V4: LpmTrie<GrantKeyV4, GrantValue, { GRANT_TRIE_CAPACITY as usize }> =
    LpmTrie::new();

#[btf_map]
pub(crate) static ZT_GRANTS_V6: LpmTrie<GrantKeyV6, GrantValue, { GRANT_TRIE_CAPACITY as usize }> =
    LpmTrie::new();

/// Per identity and CPU: bytes its sockets sent and received.
#[btf_map]
pub(crate) static ZT_TRAFFIC: PerCpuArray<Traffic, { MAX_IDENTITIES as usize }> =
    PerCpuArray::new();

/// Bytes per (identity, peer, port, protocol), and the flags the daemon sets on a flow
/// past its limit. The daemon reads it every second and removes flows idle for long.
#[btf_map]
pub(crate) static ZT_FLOWS: HashMap<FlowKey, FlowBytes, { FLOWS_CAPACITY as usize }> =
    HashMap::new();

/// Per identity: runtime state the daemon sets (a limit reached), kept across reloads.
#[btf_map]
pub(crate) static ZT_ID_STATE: Array<RuntimeState, { MAX_IDENTITIES as usize }> = Array::new();

/// The socket-storage map as a helper argument: a BTF map is addressed by its static.
#[inline(always)]
pub(crate) fn sock_id_map() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&ZT_SOCK_ID).cast_mut().cast()
}

/// The full socket behind an skb's socket pointer, and what its storage records; `None`
/// for no socket, a request or time-wait socket, or a socket with no storage.
#[inline(always)]
pub(crate) fn skb_sock_identity(
    sk: *mut aya_ebpf::bindings::bpf_sock,
) -> Option<(*mut aya_ebpf::bindings::bpf_sock, SockIdentity)> {
    // SAFETY: non-null storage pointer, copied once.
    skb_sock_storage(sk).map(|(full, p)| (full, unsafe { *p }))
}

/// As `skb_sock_identity`, the storage itself.
#[inline(always)]
pub(crate) fn skb_sock_storage(
    sk: *mut aya_ebpf::bindings::bpf_sock,
) -> Option<(*mut aya_ebpf::bindings::bpf_sock, *mut SockIdentity)> {
    if sk.is_null() {
        return None;
    }
    // SAFETY: helper calls on the skb's socket; both accept and check it.
    let full = unsafe { aya_ebpf::helpers::generated::bpf_sk_fullsock(sk) };
    if full.is_null() {
        return None;
    }
    let p = unsafe {
        aya_ebpf::helpers::generated::bpf_sk_storage_get(
            sock_id_map(),
            full.cast(),
            core::ptr::null_mut(),
            0,
        )
    };
    if p.is_null() {
        return None;
    }
    Some((full, p.cast()))
}
