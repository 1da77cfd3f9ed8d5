//! Allowances to grant-trie entries. Pure: the manager computes the whole content of
//! the tries from the grants, windows and `ask` rules in force, and the enforcer makes
//! the maps hold it.
//!
//! The kernel does one longest-prefix match per family, so the value of every stored
//! prefix holds the allowances of every entry whose network contains it (as the policy
//! compiler does for port ranges). Identical allowances merge, keeping the later
//! deadline.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use zt_agent_common::{
    GRANT_ENTRIES_PER_IDENTITY, GRANT_SLOTS, GRANT_TRIE_CAPACITY, GrantKeyV4, GrantKeyV6,
    GrantSlot, GrantValue, IDENTITY_KEY_BITS, PortRange, grant_key_v6, key_v4,
};

use crate::ebpf::maps::GrantPrefix;
use crate::policy::{DynamicKind, DynamicRule};

/// Who an allowance is for, as the kernel compares it with the calling task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelScope {
    /// `GRANT_SCOPE_*`.
    pub scope: u8,
    pub id: u64,
    pub start: u64,
}

/// One network opened (or marked) for one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub identity: u32,
    pub net: IpNet,
    pub ranges: Vec<PortRange>,
    /// `GRANT_KIND_*`.
    pub kind: u8,
    pub scope: KernelScope,
    /// Boot-clock nanoseconds; `u64::MAX` for `ask` markers.
    pub deadline_ns: u64,
}

/// The content of both tries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tries {
    pub v4: BTreeMap<GrantPrefix<GrantKeyV4>, GrantValue>,
    pub v6: BTreeMap<GrantPrefix<GrantKeyV6>, GrantValue>,
}

impl Tries {
    #[must_use]
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EntriesError {
    #[error(
        "{net} would carry {count} allowances of one identity, more than the {max} an entry holds (too many grants and rules cover it)",
        max = GRANT_SLOTS
    )]
    TooManySlots { net: String, count: usize },
    #[error(
        "identity id {identity} would need {count} grant entries in one address family, more than the {max} one identity may hold",
        max = GRANT_ENTRIES_PER_IDENTITY
    )]
    TooManyEntries { identity: u32, count: usize },
    #[error("the grant tries would need {count} entries, more than their capacity of {max}", max = GRANT_TRIE_CAPACITY)]
    Full { count: usize },
}

/// The allowances of one identity's `ask` and `when` rules: `ask` markers that never
/// lapse, and windows until `window(rule position)` (0: closed).
pub fn rule_allowances(
    identity: u32,
    rules: &[DynamicRule],
    window: impl Fn(usize) -> u64,
) -> Vec<Allowance> {
    let mut out = Vec::new();
    for rule in rules {
        let (kind, deadline_ns) = match &rule.kind {
            DynamicKind::Ask { .. } => (zt_agent_common::GRANT_KIND_ASK, u64::MAX),
            DynamicKind::Window(_) => (zt_agent_common::GRANT_KIND_WINDOW, window(rule.index)),
        };
        for net in &rule.nets {
            out.push(Allowance {
                identity,
                net: *net,
                ranges: rule.ranges.clone(),
                kind,
                scope: KernelScope::default(),
                deadline_ns,
            });
        }
    }
    out
}

/// The slot key that makes two allowances the same but for their deadline.
type SlotKey = (u8, KernelScope, u16, u16, u8);

/// Build the tries' content from `allowances`.
///
/// # Errors
/// A prefix needs more than `GRANT_SLOTS` allowances, an identity more than its share
/// of entries, or the tries more than their capacity.
pub fn build(allowances: &[Allowance]) -> Result<Tries, EntriesError> {
    // Per (identity, network): the merged slots listed there.
    let mut per_net: BTreeMap<(u32, IpNet), BTreeMap<SlotKey, u64>> = BTreeMap::new();
    for a in allowances {
        let slots = per_net.entry((a.identity, a.net.trunc())).or_default();
        for r in &a.ranges {
            let d = slots
                .entry((a.kind, a.scope, r.lo, r.hi, r.proto_mask))
                .or_default();
            *d = (*d).max(a.deadline_ns);
        }
    }
    let prefixes: BTreeSet<(u32, IpNet)> = per_net.keys().copied().collect();
    let mut tries = Tries::default();
    let mut counts: BTreeMap<(u32, bool), usize> = BTreeMap::new();
    for (identity, prefix) in prefixes {
        // The union over the prefix and every stored network containing it.
        let mut merged: BTreeMap<SlotKey, u64> = BTreeMap::new();
        for len in 0..=prefix.prefix_len() {
            let Ok(ancestor) = IpNet::new(prefix.addr(), len).map(|n| n.trunc()) else {
                continue;
            };
            if let Some(slots) = per_net.get(&(identity, ancestor)) {
                for (k, d) in slots {
                    let e = merged.entry(*k).or_default();
                    *e = (*e).max(*d);
                }
            }
        }
        if merged.len() > GRANT_SLOTS {
            return Err(EntriesError::TooManySlots {
                net: prefix.to_string(),
                count: merged.len(),
            });
        }
        let mut v = GrantValue::EMPTY;
        for (slot, ((kind, scope, lo, hi, proto_mask), deadline_ns)) in
            v.slots.iter_mut().zip(&merged)
        {
            *slot = GrantSlot {
                deadline_ns: *deadline_ns,
                scope_id: scope.id,
                scope_start: scope.start,
                lo: *lo,
                hi: *hi,
                proto_mask: *proto_mask,
                kind: *kind,
                scope: scope.scope,
                _pad: 0,
            };
        }
        v.n_slots = u32::try_from(merged.len()).unwrap_or(0);
        let bits = IDENTITY_KEY_BITS + u32::from(prefix.prefix_len());
        let v6 = matches!(prefix, IpNet::V6(_));
        let n = counts.entry((identity, v6)).or_default();
        *n += 1;
        if *n > GRANT_ENTRIES_PER_IDENTITY {
            return Err(EntriesError::TooManyEntries {
                identity,
                count: *n,
            });
        }
        match prefix {
            IpNet::V4(p) => {
                tries
                    .v4
                    .insert((bits, key_v4(identity, p.network().octets())), v);
            }
            IpNet::V6(p) => {
                tries
                    .v6
                    .insert((bits, grant_key_v6(identity, p.network().octets())), v);
            }
        }
    }
    let count = tries.v4.len().max(tries.v6.len());
    if count > GRANT_TRIE_CAPACITY as usize {
        return Err(EntriesError::Full { count });
    }
    Ok(tries)
}

#[cfg(test)]
mod tests {
    use zt_agent_common::{
        Caller, GRANT_KIND_ASK, GRANT_KIND_GRANT, GRANT_SCOPE_CGROUP, GRANT_SCOPE_IDENTITY,
        GrantMatch, PROTO_MASK_TCP,
    };

    use super::*;

    fn range(lo: u16, hi: u16) -> PortRange {
        PortRange {
            lo,
            hi,
            proto_mask: PROTO_MASK_TCP,
            _pad: [0; 3],
        }
    }

    fn grant(net: &str, port: u16, scope: KernelScope, deadline_ns: u64) -> Allowance {
        Allowance {
            identity: 3,
            net: net.parse().expect("net"),
            ranges: vec![range(port, port)],
            kind: GRANT_KIND_GRANT,
            scope,
            deadline_ns,
        }
    }

    /// The kernel's lookup: the longest stored prefix containing the address.
    fn lookup(t: &Tries, identity: u32, addr: [u8; 4]) -> Option<GrantValue> {
        let key = key_v4(identity, addr);
        t.v4.iter()
            .filter(|((bits, k), _)| {
                (0..*bits as usize).all(|i| {
                    let m = 0x80u8 >> (i % 8);
                    k[i / 8] & m == key[i / 8] & m
                })
            })
            .max_by_key(|((bits, _), _)| *bits)
            .map(|(_, v)| *v)
    }

    #[test]
    fn narrower_prefixes_carry_the_wider_allowances() {
        let run = KernelScope {
            scope: GRANT_SCOPE_CGROUP,
            id: 42,
            start: 0,
        };
        let all = KernelScope::default();
        let t = build(&[
            grant("10.0.0.0/8", 443, all, 100),
            grant("10.1.2.3/32", 22, run, 50),
            Allowance {
                kind: GRANT_KIND_ASK,
                deadline_ns: u64::MAX,
                ..grant("10.1.0.0/16", 5432, all, 0)
            },
        ])
        .expect("fits");
        assert_eq!(t.v4.len(), 3);
        let me = &Caller {
            cgroup_id: 42,
            tgid: 1,
            start_ticks: 1,
        };
        let other = &Caller {
            cgroup_id: 43,
            tgid: 1,
            start_ticks: 1,
        };
        let host = lookup(&t, 3, [10, 1, 2, 3]).expect("entry");
        assert_eq!(host.judge(443, PROTO_MASK_TCP, 10, me), GrantMatch::Granted);
        assert_eq!(host.judge(22, PROTO_MASK_TCP, 10, me), GrantMatch::Granted);
        assert_eq!(host.judge(22, PROTO_MASK_TCP, 10, other), GrantMatch::None);
        assert_eq!(
            host.judge(5432, PROTO_MASK_TCP, 10, me),
            GrantMatch::AskRequired
        );
        assert_eq!(
            host.judge(443, PROTO_MASK_TCP, 100, me),
            GrantMatch::GrantExpired
        );
        let wide = lookup(&t, 3, [10, 9, 9, 9]).expect("entry");
        assert_eq!(wide.judge(22, PROTO_MASK_TCP, 10, me), GrantMatch::None);
        assert!(lookup(&t, 4, [10, 1, 2, 3]).is_none(), "identities apart");
        assert_eq!(GRANT_SCOPE_IDENTITY, all.scope);
    }

    #[test]
    fn same_allowances_merge_and_too_many_fail() {
        let all = KernelScope::default();
        let t = build(&[
            grant("10.0.0.1/32", 443, all, 5),
            grant("10.0.0.1/32", 443, all, 9),
        ])
        .expect("fits");
        let v = t.v4.values().next().expect("one");
        assert_eq!(v.n_slots, 1);
        assert_eq!(v.slots[0].deadline_ns, 9);
        let many: Vec<Allowance> = (0..=GRANT_SLOTS as u16)
            .map(|p| grant("10.0.0.1/32", 1000 + p, all, 5))
            .collect();
        assert!(matches!(
            build(&many),
            Err(EntriesError::TooManySlots { .. })
        ));
    }
}
