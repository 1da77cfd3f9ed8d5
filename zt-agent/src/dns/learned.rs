//! Addresses DNS answers installed, per identity: the daemon's record of why each
//! kernel entry exists, so that entries are rebuilt when the policy changes, capped
//! per identity, and removed once they lapse. The kernel checks each range's deadline
//! itself; sweeping only frees the slots.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aya::maps::{HashMap, MapData, MapError};
#[cfg(test)]
use zt_agent_common::PortRange;
use zt_agent_common::{DNS_RANGES, DnsAllowKey, DnsAllowValue, DnsRange};

use crate::policy::NameRule;

/// Boot-clock nanoseconds, the clock `bpf_ktime_get_boot_ns` reads: it keeps counting
/// through suspend, so an allowance never outlives its TTL on a sleeping device.
#[must_use]
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; CLOCK_BOOTTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// A repeated answer rewrites the kernel entry only when it extends it by more than
/// this (the grace period covers the difference).
const REWRITE_AFTER_NS: u64 = 1_000_000_000;

/// One learned address: the names that resolved to it and until when.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// Query name -> deadline (boot ns).
    names: BTreeMap<String, u64>,
}

/// One address of one answer: `name` resolved to `addr` for `identity`, open until
/// `deadline` (boot ns).
#[derive(Clone, Copy, Debug)]
pub struct Answered<'a> {
    pub identity: u32,
    pub name: &'a str,
    pub addr: IpAddr,
    pub deadline: u64,
}

/// What one identity's learned addresses are judged by.
pub trait Rules {
    /// The name rules of identity `id`, or `None` if it is gone.
    fn rules(&self, id: u32) -> Option<&[NameRule]>;
}

#[derive(Default)]
pub struct Learned {
    entries: BTreeMap<(u32, IpAddr), Entry>,
    /// Most addresses one identity may hold.
    pub cap: usize,
    /// Entries pushed out by the cap, for metrics.
    pub evicted: u64,
}

fn key(identity: u32, addr: IpAddr) -> DnsAllowKey {
    let mut a = [0u8; 16];
    let family = match addr {
        IpAddr::V4(v4) => {
            a[..4].copy_from_slice(&v4.octets());
            libc::AF_INET
        }
        IpAddr::V6(v6) => {
            a = v6.octets();
            libc::AF_INET6
        }
    };
    DnsAllowKey {
        identity,
        family: family.unsigned_abs(),
        addr: a,
    }
}

/// The kernel value of an entry: per range, the latest deadline of the names whose
/// rules cover it. `None` when nothing is left.
fn value(entry: &Entry, rules: &[NameRule], now: u64) -> Option<DnsAllowValue> {
    let mut ranges: BTreeMap<(u16, u16, u8), u64> = BTreeMap::new();
    for (name, &deadline) in &entry.names {
        if deadline <= now {
            continue;
        }
        for rule in rules
            .iter()
            .filter(|r| r.names.iter().any(|n| n.matches(name)))
        {
            for r in &rule.ranges {
                let d = ranges.entry((r.lo, r.hi, r.proto_mask)).or_default();
                *d = (*d).max(deadline);
            }
        }
    }
    if ranges.is_empty() {
        return None;
    }
    // More distinct ranges than a value holds: keep those that last longest.
    let mut list: Vec<((u16, u16, u8), u64)> = ranges.into_iter().collect();
    list.sort_by_key(|e| std::cmp::Reverse(e.1));
    list.truncate(DNS_RANGES);
    let empty = DnsRange {
        deadline_ns: 0,
        lo: 0,
        hi: 0,
        proto_mask: 0,
        _pad: [0; 3],
    };
    let mut v = DnsAllowValue {
        n_ranges: 0,
        _pad: 0,
        ranges: [empty; DNS_RANGES],
    };
    for (slot, ((lo, hi, proto_mask), deadline_ns)) in v.ranges.iter_mut().zip(&list) {
        *slot = DnsRange {
            deadline_ns: *deadline_ns,
            lo: *lo,
            hi: *hi,
            proto_mask: *proto_mask,
            _pad: [0; 3],
        };
    }
    v.n_ranges = u32::try_from(list.len()).unwrap_or(0);
    Some(v)
}

impl Learned {
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            ..Self::default()
        }
    }

    /// Record that `name` resolved to `addr` for `identity` until `deadline`, and
    /// write the kernel entry.
    ///
    /// # Errors
    /// The kernel map refused the entry (full).
    pub fn install(
        &mut self,
        map: &mut HashMap<MapData, DnsAllowKey, DnsAllowValue>,
        rules: &[NameRule],
        answer: Answered<'_>,
        now: u64,
    ) -> Result<(), MapError> {
        let Answered {
            identity,
            name,
            addr,
            deadline,
        } = answer;
        if !self.entries.contains_key(&(identity, addr)) && self.count(identity) >= self.cap {
            self.evict_one(map, identity, now);
        }
        let entry = self.entries.entry((identity, addr)).or_default();
        let d = entry.names.entry(name.to_owned()).or_default();
        if *d > now && deadline <= d.saturating_add(REWRITE_AFTER_NS) {
            // Already open until about then: spare the kernel a write per lookup.
            return Ok(());
        }
        *d = (*d).max(deadline);
        entry.names.retain(|_, d| *d > now);
        match value(entry, rules, now) {
            Some(v) => map.insert(&key(identity, addr), &v, 0),
            None => Ok(()),
        }
    }

    /// Addresses held, all identities together.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Addresses held by `identity`.
    #[must_use]
    pub fn count(&self, identity: u32) -> usize {
        self.entries
            .range((identity, IpAddr::from([0u8; 4]))..)
            .take_while(|((i, _), _)| *i == identity)
            .count()
    }

    /// Per identity id, the number of addresses it holds.
    #[must_use]
    pub fn counts(&self) -> BTreeMap<u32, usize> {
        let mut out = BTreeMap::new();
        for (id, _) in self.entries.keys() {
            *out.entry(*id).or_default() += 1;
        }
        out
    }

    /// Push out the identity's address that lapses first.
    fn evict_one(
        &mut self,
        map: &mut HashMap<MapData, DnsAllowKey, DnsAllowValue>,
        identity: u32,
        now: u64,
    ) {
        let victim = self
            .entries
            .iter()
            .filter(|((i, _), _)| *i == identity)
            .min_by_key(|(_, e)| {
                e.names
                    .values()
                    .copied()
                    .filter(|d| *d > now)
                    .max()
                    .unwrap_or(0)
            })
            .map(|(k, _)| *k);
        if let Some(k) = victim {
            self.entries.remove(&k);
            let _ = map.remove(&key(k.0, k.1));
            self.evicted += 1;
        }
    }

    /// Rebuild every entry against the current rules and drop what has lapsed or is
    /// no longer allowed: after a reload, and every second.
    pub fn refresh(
        &mut self,
        map: &mut HashMap<MapData, DnsAllowKey, DnsAllowValue>,
        rules: &dyn Rules,
        now: u64,
        rewrite: bool,
    ) {
        let mut gone = Vec::new();
        for (k, e) in &mut self.entries {
            e.names.retain(|_, d| *d > now);
            let v = rules.rules(k.0).and_then(|r| value(e, r, now));
            match v {
                None => gone.push(*k),
                Some(v) if rewrite => {
                    let _ = map.insert(&key(k.0, k.1), &v, 0);
                }
                Some(_) => {}
            }
        }
        for k in gone {
            self.entries.remove(&k);
            let _ = map.remove(&key(k.0, k.1));
        }
    }

    /// Drop every entry whose address `gone` says may no longer be open (it became one
    /// of the host's own, say); returns how many.
    pub fn forget(
        &mut self,
        map: &mut HashMap<MapData, DnsAllowKey, DnsAllowValue>,
        gone: impl Fn(IpAddr) -> bool,
    ) -> usize {
        let keys: Vec<(u32, IpAddr)> = self
            .entries
            .keys()
            .filter(|(_, a)| gone(*a))
            .copied()
            .collect();
        for k in &keys {
            self.entries.remove(k);
            let _ = map.remove(&key(k.0, k.1));
        }
        keys.len()
    }

    /// Remove every kernel entry: at start-up, where nothing says why they were made.
    pub fn flush(map: &mut HashMap<MapData, DnsAllowKey, DnsAllowValue>) -> usize {
        let keys: Vec<DnsAllowKey> = map.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = map.remove(k);
        }
        keys.len()
    }
}

/// Ranges of a rule as the compiler produced them (for tests).
#[cfg(test)]
pub(crate) fn range(lo: u16, hi: u16, proto_mask: u8) -> PortRange {
    PortRange {
        lo,
        hi,
        proto_mask,
        _pad: [0; 3],
    }
}

#[cfg(test)]
mod tests {
    use zt_agent_common::{PROTO_MASK_TCP, PROTO_MASK_UDP};

    use super::*;
    use crate::policy::DnsName;

    fn rule(names: &[&str], ranges: Vec<PortRange>) -> NameRule {
        NameRule {
            names: names
                .iter()
                .map(|n| DnsName::parse(n).expect("n"))
                .collect(),
            ranges,
        }
    }

    #[test]
    fn each_range_keeps_the_deadline_of_the_names_that_cover_it() {
        let rules = [
            rule(&["a.example"], vec![range(443, 443, PROTO_MASK_TCP)]),
            rule(
                &["b.example"],
                vec![
                    range(22, 22, PROTO_MASK_TCP),
                    range(443, 443, PROTO_MASK_TCP),
                ],
            ),
        ];
        let mut e = Entry::default();
        e.names.insert("a.example".into(), 1000);
        e.names.insert("b.example".into(), 500);
        let v = value(&e, &rules, 100).expect("value");
        assert_eq!(v.n_ranges, 2);
        assert!(v.allows(443, PROTO_MASK_TCP, 900));
        assert!(v.allows(22, PROTO_MASK_TCP, 400));
        assert!(
            !v.allows(22, PROTO_MASK_TCP, 600),
            "22 lapses with b.example"
        );
        assert!(!v.allows(443, PROTO_MASK_UDP, 400));
        // Once b.example has lapsed, only a.example's range is left.
        let v = value(&e, &rules, 600).expect("value");
        assert_eq!(v.n_ranges, 1);
        // A name no rule covers any more opens nothing.
        assert!(value(&e, &rules[..0], 100).is_none());
    }
}
