//! Typed wrappers around the pinned maps, named by what they do.

use std::collections::BTreeMap;
use std::hash::Hash;

use aya::Pod;
use aya::maps::{
    Array, ArrayOfMaps, HashMap, LpmTrie, MapData, MapError, PerCpuArray, SkStorage, lpm_trie::Key,
};
use zt_agent_common::{
    CGROUP_LAUNCHED, DnsAllowKey, DnsAllowValue, DnsClient, DnsClientKey, DnsConfig, ExeSelector,
    ExecAllowKey, FileKey, FileStamp, FlowBytes, FlowKey, GrantKeyV4, GrantKeyV6, GrantValue,
    IdentityConfig, KeyV4, KeyV6, MAX_IDENTITIES, POLICY_TRIE_CAPACITY, PolicyValue, Principal,
    PrincipalKey, RuntimeState, ShadowKey, ShadowValue, SockIdentity, TaskIdentity, TaskShare,
    Traffic, errors, task_entries,
};

type Trie4 = LpmTrie<MapData, KeyV4, PolicyValue>;
type Trie6 = LpmTrie<MapData, KeyV6, PolicyValue>;

/// BPF_F_NO_PREALLOC: required for LPM tries, and must match the inner-map template.
const NO_PREALLOC: u32 = 1;

/// One policy trie entry: (prefix length including the 32 identity bits, key, value).
pub type TrieEntry<K> = (u32, K, PolicyValue);

/// The per-family policy tries, egress and ingress, swapped whole on every policy
/// change, and the ports each identity may bind.
pub struct PolicyMaps {
    pub v4: ArrayOfMaps<MapData, Trie4>,
    pub v6: ArrayOfMaps<MapData, Trie6>,
    pub in_v4: ArrayOfMaps<MapData, Trie4>,
    pub in_v6: ArrayOfMaps<MapData, Trie6>,
    pub in_ports: Array<MapData, PolicyValue>,
}

/// What one policy puts into the tries: per family, (prefix length, key, value).
#[derive(Clone, Copy)]
pub struct TrieEntries<'a> {
    pub v4: &'a [TrieEntry<KeyV4>],
    pub v6: &'a [TrieEntry<KeyV6>],
}

fn trie<K: Pod>(entries: &[TrieEntry<K>]) -> Result<LpmTrie<MapData, K, PolicyValue>, MapError> {
    let mut t = LpmTrie::create(POLICY_TRIE_CAPACITY, NO_PREALLOC)?;
    for (len, data, value) in entries {
        t.insert(&Key::new(*len, *data), value, 0)?;
    }
    Ok(t)
}

impl PolicyMaps {
    /// Build new tries from these entries and swap them in, then set the ports each
    /// identity may bind (identities not in `bind` bind nothing). Each trie swap is one
    /// atomic pointer swap; a verdict in flight keeps the trie it started with. On
    /// failure the tries in force before stay in force.
    pub fn install(
        &mut self,
        egress: TrieEntries<'_>,
        ingress: TrieEntries<'_>,
        bind: &BTreeMap<u32, PolicyValue>,
    ) -> Result<(), MapError> {
        let (e4, e6, i4, i6) = (
            trie(egress.v4)?,
            trie(egress.v6)?,
            trie(ingress.v4)?,
            trie(ingress.v6)?,
        );
        let old = (
            self.v4.get(&0, 0).ok(),
            self.v6.get(&0, 0).ok(),
            self.in_v4.get(&0, 0).ok(),
            self.in_v6.get(&0, 0).ok(),
        );
        let swapped = (|| {
            self.v4.set(0, &e4, 0)?;
            self.v6.set(0, &e6, 0)?;
            self.in_v4.set(0, &i4, 0)?;
            self.in_v6.set(0, &i6, 0)
        })();
        if let Err(e) = swapped {
            // Keep every family and direction on the same policy.
            if let Some(t) = &old.0 {
                let _ = self.v4.set(0, t, 0);
            }
            if let Some(t) = &old.1 {
                let _ = self.v6.set(0, t, 0);
            }
            if let Some(t) = &old.2 {
                let _ = self.in_v4.set(0, t, 0);
            }
            if let Some(t) = &old.3 {
                let _ = self.in_v6.set(0, t, 0);
            }
            return Err(e);
        }
        for id in 1..MAX_IDENTITIES {
            let want = bind.get(&id).copied().unwrap_or(PolicyValue::empty(0));
            if self.in_ports.get(&id, 0).ok() != Some(want) {
                self.in_ports.set(id, &want, 0)?;
            }
        }
        Ok(())
    }
}

/// Enrolled thread groups: tgid -> identity.
pub struct Tasks(pub HashMap<MapData, u32, TaskIdentity>);

impl Tasks {
    /// The entry of `tgid`, if it has one.
    #[must_use]
    pub fn get(&self, tgid: u32) -> Option<TaskIdentity> {
        self.0.get(&tgid, 0).ok()
    }

    /// Rewrite how an enrolled task was enrolled; never adds an entry.
    pub fn set_how(&mut self, tgid: u32, how: u32) -> Result<(), MapError> {
        let t = self.0.get(&tgid, 0)?;
        self.0
            .insert(&tgid, &TaskIdentity { how, ..t }, 2 /* BPF_EXIST */)
    }

    /// Enroll unless already enrolled: an identity never changes once taken.
    pub fn enroll_if_absent(&mut self, tgid: u32, t: &TaskIdentity) -> Result<bool, MapError> {
        match self.0.insert(&tgid, t, 1 /* BPF_NOEXIST */) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    #[must_use]
    pub fn all(&self) -> Vec<(u32, TaskIdentity)> {
        self.0.iter().filter_map(Result::ok).collect()
    }

    /// Remove the entry of `tgid` if it is still `expected`, in one step, so that an
    /// entry the kernel just made for a new holder of the pid is never lost. `true`
    /// when `expected` was removed.
    pub fn remove_if(&mut self, tgid: u32, expected: &TaskIdentity) -> Result<bool, MapError> {
        use std::os::fd::AsFd as _;
        let fd = aya::maps::IterableMap::map(&self.0).fd().as_fd();
        let syscall = |io_error| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_and_delete_elem",
                io_error,
            })
        };
        let Some(was) =
            super::sys::lookup_and_delete::<u32, TaskIdentity>(fd, &tgid).map_err(syscall)?
        else {
            return Ok(false);
        };
        if was == *expected {
            return Ok(true);
        }
        // Someone else's entry: put it back as it was.
        match self.0.insert(&tgid, &was, 1 /* BPF_NOEXIST */) {
            Ok(()) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Socket-local storage: the identity each socket was created under.
pub struct Sockets(pub SkStorage<MapData, SockIdentity>);

impl Sockets {
    /// Record `identity` for a socket that has none (a socket made before its task was
    /// enrolled); one that has an identity keeps it. `true` when recorded.
    pub fn tag(
        &mut self,
        socket: &impl std::os::fd::AsRawFd,
        identity: u32,
    ) -> Result<bool, MapError> {
        match self.0.insert(
            socket,
            &SockIdentity::new(identity),
            1, /* BPF_NOEXIST */
        ) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Each identity's share of the task table: the kernel's own count of the entries it
/// made, and what the daemon keeps (the share, and its own count).
pub struct TaskShares {
    pub count: Array<MapData, u64>,
    pub share: Array<MapData, TaskShare>,
}

impl TaskShares {
    /// The entries `identity` holds.
    #[must_use]
    pub fn held(&self, identity: u32) -> u64 {
        let kernel = self.count.get(&identity, 0).unwrap_or(0);
        let user = self.share.get(&identity, 0).map_or(0, |s| s.user);
        task_entries(kernel, user)
    }
}

/// The enrolled thread groups as a reader sees them, through a read-only descriptor
/// (the enforcer stays the one writer).
pub struct TasksView(pub HashMap<MapData, u32, TaskIdentity>);

impl TasksView {
    /// The identity the kernel recorded for thread group `tgid`, if any.
    #[must_use]
    pub fn get(&self, tgid: u32) -> Option<TaskIdentity> {
        self.0.get(&tgid, 0).ok()
    }
}

/// Enrolled cgroups: cgroup id -> identity.
pub struct Cgroups(pub HashMap<MapData, u64, u32>);

impl Cgroups {
    /// Add the selected cgroups in `want`. With `prune`, also remove entries that are
    /// not in `want`, except launch cgroups, which `zt-agent run` adds and removes
    /// itself (a walk that ran before its mkdir must not drop its entry).
    pub fn sync(
        &mut self,
        want: &std::collections::BTreeMap<u64, u32>,
        prune: bool,
    ) -> Result<(), MapError> {
        for (id, ident) in want {
            if self.0.get(id, 0).ok().map(|v| v & !CGROUP_LAUNCHED) != Some(*ident) {
                self.0.insert(id, ident, 0)?;
            }
        }
        if !prune {
            return Ok(());
        }
        let stale: Vec<u64> = self
            .0
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| !want.contains_key(k) && v & CGROUP_LAUNCHED == 0)
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            let _ = self.0.remove(&k);
        }
        Ok(())
    }

    /// A `zt-agent run` launch cgroup: marked so that the daemon's scans leave the
    /// entry to the launcher, which removes it when the workload is gone.
    pub fn insert_launch(&mut self, cgroup: u64, identity: u32) -> Result<(), MapError> {
        self.0.insert(&cgroup, &(identity | CGROUP_LAUNCHED), 0)
    }

    pub fn remove(&mut self, cgroup: u64) -> Result<(), MapError> {
        self.0.remove(&cgroup)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.keys().count()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the exec maps hold: each identity's settings (by id), the exe and uid/gid
/// selectors, and the exec allowlists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecEntries {
    pub configs: BTreeMap<u32, IdentityConfig>,
    pub exe: BTreeMap<FileKey, ExeSelector>,
    pub principals: BTreeMap<PrincipalKey, Principal>,
    pub allow: BTreeMap<ExecAllowKey, FileStamp>,
}

/// The exec side: identity settings, exe and uid/gid selectors, exec allowlists.
pub struct ExecMaps {
    pub identities: Array<MapData, IdentityConfig>,
    pub exe: HashMap<MapData, FileKey, ExeSelector>,
    pub principals: HashMap<MapData, PrincipalKey, Principal>,
    pub allow: HashMap<MapData, ExecAllowKey, FileStamp>,
}

/// Make `map` hold exactly `want`: additions and changes first, removals last.
fn sync_hash<K: Pod + Ord + Hash, V: Pod + PartialEq>(
    map: &mut HashMap<MapData, K, V>,
    want: &BTreeMap<K, V>,
) -> Result<(), MapError> {
    for (k, v) in want {
        if map.get(k, 0).ok().as_ref() != Some(v) {
            map.insert(k, v, 0)?;
        }
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in stale {
        let _ = map.remove(&k);
    }
    Ok(())
}

impl ExecMaps {
    /// Install the exec side of a policy. Allowlist entries go in before an identity
    /// becomes restricted, and leave only after it no longer is, so no allowed exec
    /// fails during a change. Identities not in `r.configs` become deny-all.
    pub fn sync(&mut self, r: &ExecEntries) -> Result<(), MapError> {
        // Add first (a newly restricted identity finds its entries), then switch the
        // identities, then prune.
        for (k, v) in &r.allow {
            if self.allow.get(k, 0).ok().as_ref() != Some(v) {
                self.allow.insert(k, v, 0)?;
            }
        }
        for id in 1..MAX_IDENTITIES {
            let want = r.configs.get(&id).copied().unwrap_or_default();
            if self.identities.get(&id, 0).ok() != Some(want) {
                self.identities.set(id, &want, 0)?;
            }
        }
        sync_hash(&mut self.allow, &r.allow)?;
        sync_hash(&mut self.exe, &r.exe)?;
        sync_hash(&mut self.principals, &r.principals)?;
        Ok(())
    }

    #[must_use]
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.exe.keys().count(),
            self.principals.keys().count(),
            self.allow.keys().count(),
        )
    }
}

/// Unenrolled tasks' egress destinations (LRU).
pub struct Shadow(pub HashMap<MapData, ShadowKey, ShadowValue>);

impl Shadow {
    #[must_use]
    pub fn all(&self) -> Vec<(ShadowKey, ShadowValue)> {
        self.0.iter().filter_map(Result::ok).collect()
    }
}

/// Per-CPU counters, summed.
pub struct Counters {
    pub verdicts: PerCpuArray<MapData, u64>,
    pub ingress_verdicts: PerCpuArray<MapData, u64>,
    pub exec_verdicts: PerCpuArray<MapData, u64>,
    pub errors: PerCpuArray<MapData, u64>,
    /// Per identity: forks and enrollments refused past the task share.
    pub task_refused: PerCpuArray<MapData, u64>,
    /// Per identity: bytes sent and received, and packets dropped past a limit.
    pub traffic: PerCpuArray<MapData, Traffic>,
}

/// The flow table the kernel counts into, and the per-identity state limits set.
pub struct TrafficMaps {
    pub flows: HashMap<MapData, FlowKey, FlowBytes>,
    pub state: Array<MapData, RuntimeState>,
}

/// One slot of a per-CPU counter array, summed over the CPUs (0 if unreadable).
#[must_use]
pub fn sum(map: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    map.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

impl Counters {
    /// One identity's traffic, summed over the CPUs.
    #[must_use]
    pub fn traffic(&self, identity: u32) -> Traffic {
        self.traffic
            .get(&identity, 0)
            .map(|v| {
                v.iter().fold(Traffic::default(), |a, t| Traffic {
                    tx_bytes: a.tx_bytes + t.tx_bytes,
                    rx_bytes: a.rx_bytes + t.rx_bytes,
                    limit_drops: a.limit_drops + t.limit_drops,
                })
            })
            .unwrap_or_default()
    }

    #[must_use]
    pub fn errors(&self) -> Vec<u64> {
        (0..errors::COUNT)
            .map(|i| self.errors.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect()
    }
}

/// The DNS path: the resolver's port, who sent each query, and what answers installed.
pub struct DnsMaps {
    pub config: Array<MapData, DnsConfig>,
    pub clients: HashMap<MapData, DnsClientKey, DnsClient>,
    pub allow: HashMap<MapData, DnsAllowKey, DnsAllowValue>,
}

impl DnsMaps {
    /// Send enrolled tasks' DNS to the resolver on `port`.
    pub fn set_port(&mut self, port: u16) -> Result<(), MapError> {
        self.config.set(0, &DnsConfig { port, _pad: [0; 6] }, 0)
    }
}

/// One grant trie entry: (prefix length including the 32 identity bits, key data).
pub type GrantPrefix<K> = (u32, K);

/// The grant tries: grants, open windows and `ask` markers, written in place, one
/// prefix at a time (each value is replaced whole, so a verdict sees the old value or
/// the new one).
pub struct GrantMaps {
    pub v4: LpmTrie<MapData, GrantKeyV4, GrantValue>,
    pub v6: LpmTrie<MapData, GrantKeyV6, GrantValue>,
    /// What the tries hold, as last written: read from the kernel once, so that a
    /// change writes only what differs (walking an LPM trie costs a syscall per key).
    held: Option<GrantContent>,
}

/// Entries of both grant tries.
type GrantContent = (
    BTreeMap<GrantPrefix<GrantKeyV4>, GrantValue>,
    BTreeMap<GrantPrefix<GrantKeyV6>, GrantValue>,
);

fn read_trie<K: Pod + Ord>(
    trie: &LpmTrie<MapData, K, GrantValue>,
) -> BTreeMap<GrantPrefix<K>, GrantValue> {
    trie.iter()
        .filter_map(Result::ok)
        .map(|(k, v)| ((k.prefix_len(), k.data()), v))
        .collect()
}

/// Make one grant trie hold exactly `want`, given that it holds `have`: changed and
/// new prefixes first, then removals.
fn sync_trie<K: Pod + Ord>(
    trie: &mut LpmTrie<MapData, K, GrantValue>,
    have: &BTreeMap<GrantPrefix<K>, GrantValue>,
    want: &BTreeMap<GrantPrefix<K>, GrantValue>,
) -> Result<usize, MapError> {
    let mut writes = 0;
    for (k, v) in want {
        if have.get(k) != Some(v) {
            trie.insert(&Key::new(k.0, k.1), v, 0)?;
            writes += 1;
        }
    }
    for k in have.keys().filter(|k| !want.contains_key(k)) {
        let _ = trie.remove(&Key::new(k.0, k.1));
        writes += 1;
    }
    Ok(writes)
}

impl GrantMaps {
    #[must_use]
    pub const fn new(
        v4: LpmTrie<MapData, GrantKeyV4, GrantValue>,
        v6: LpmTrie<MapData, GrantKeyV6, GrantValue>,
    ) -> Self {
        Self { v4, v6, held: None }
    }

    /// Make the tries hold exactly these entries. Returns how many entries were
    /// written or removed.
    pub fn sync(
        &mut self,
        v4: &BTreeMap<GrantPrefix<GrantKeyV4>, GrantValue>,
        v6: &BTreeMap<GrantPrefix<GrantKeyV6>, GrantValue>,
    ) -> Result<usize, MapError> {
        let (have4, have6) = match self.held.take() {
            Some(h) => h,
            None => (read_trie(&self.v4), read_trie(&self.v6)),
        };
        // On failure the next sync reads the kernel again.
        let n = sync_trie(&mut self.v4, &have4, v4)? + sync_trie(&mut self.v6, &have6, v6)?;
        self.held = Some((v4.clone(), v6.clone()));
        Ok(n)
    }

    /// Entries held, both families.
    #[must_use]
    pub fn len(&self) -> (usize, usize) {
        match &self.held {
            Some((a, b)) => (a.len(), b.len()),
            None => (self.v4.keys().count(), self.v6.keys().count()),
        }
    }
}
