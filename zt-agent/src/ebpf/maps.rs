//! Typed wrappers around the pinned maps, named by what they do.

use std::collections::BTreeMap;
use std::hash::Hash;

use aya::Pod;
use aya::maps::{
    Array, ArrayOfMaps, HashMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key,
};
use zt_agent_common::{
    CGROUP_LAUNCHED, DnsAllowKey, DnsAllowValue, DnsClient, DnsClientKey, DnsConfig, ExeSelector,
    ExecAllowKey, FileKey, FileStamp, IdentityConfig, KeyV4, KeyV6, MAX_IDENTITIES,
    POLICY_TRIE_CAPACITY, PolicyValue, Principal, PrincipalKey, ShadowKey, ShadowValue,
    TaskIdentity, errors,
};

type Trie4 = LpmTrie<MapData, KeyV4, PolicyValue>;
type Trie6 = LpmTrie<MapData, KeyV6, PolicyValue>;

/// BPF_F_NO_PREALLOC: required for LPM tries, and must match the inner-map template.
const NO_PREALLOC: u32 = 1;

/// One policy trie entry: (prefix length including the 32 identity bits, key, value).
pub type TrieEntry<K> = (u32, K, PolicyValue);

/// The two per-family policy tries, swapped whole on every policy change.
pub struct PolicyMaps {
    pub v4: ArrayOfMaps<MapData, Trie4>,
    pub v6: ArrayOfMaps<MapData, Trie6>,
}

impl PolicyMaps {
    /// Build new tries from these entries and swap them in. Each family is one atomic
    /// pointer swap; a verdict in flight keeps the trie it started with.
    pub fn install(
        &mut self,
        v4: &[TrieEntry<KeyV4>],
        v6: &[TrieEntry<KeyV6>],
    ) -> Result<(), MapError> {
        let mut t4: Trie4 = LpmTrie::create(POLICY_TRIE_CAPACITY, NO_PREALLOC)?;
        for (len, data, value) in v4 {
            t4.insert(&Key::new(*len, *data), value, 0)?;
        }
        let mut t6: Trie6 = LpmTrie::create(POLICY_TRIE_CAPACITY, NO_PREALLOC)?;
        for (len, data, value) in v6 {
            t6.insert(&Key::new(*len, *data), value, 0)?;
        }
        let old_v4 = self.v4.get(&0, 0).ok();
        self.v4.set(0, &t4, 0)?;
        if let Err(e) = self.v6.set(0, &t6, 0) {
            // Keep both families on the same policy.
            if let Some(old) = old_v4 {
                let _ = self.v4.set(0, &old, 0);
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Enrolled thread groups: tgid -> identity.
pub struct Tasks(pub HashMap<MapData, u32, TaskIdentity>);

impl Tasks {
    pub fn enroll(&mut self, tgid: u32, identity: u32, how: u32) -> Result<(), MapError> {
        self.0.insert(&tgid, &TaskIdentity { identity, how }, 0)
    }

    /// Enroll unless already enrolled: an identity never changes once taken.
    pub fn enroll_if_absent(
        &mut self,
        tgid: u32,
        identity: u32,
        how: u32,
    ) -> Result<bool, MapError> {
        match self.0.insert(
            &tgid,
            &TaskIdentity { identity, how },
            1, /* BPF_NOEXIST */
        ) {
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

    pub fn remove(&mut self, tgid: u32) -> Result<(), MapError> {
        self.0.remove(&tgid)
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
    pub exec_verdicts: PerCpuArray<MapData, u64>,
    pub errors: PerCpuArray<MapData, u64>,
}

impl Counters {
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
