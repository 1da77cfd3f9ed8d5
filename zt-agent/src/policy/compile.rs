//! Policy to LPM trie entries. Pure: the daemon diffs the result against the maps.
//!
//! The kernel does one longest-prefix match on (identity, destination) and judges the port
//! and protocol against the value found. So the value of every prefix must already hold
//! every rule of the identity that covers that prefix: the union of the port ranges of all
//! rules whose network contains it, including /0 rules (which land in the root entry).
//! That is sufficient: any rule containing an address either contains the longest stored
//! prefix containing it or is itself a longer stored prefix, so the union is exact.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use thiserror::Error;
use zt_agent_common::{
    DNS_RANGES, GRANT_SLOTS, IDENTITY_FLAG_AUDIT, IDENTITY_FLAG_IN_POLICY, IDENTITY_KEY_BITS,
    IDENTITY_NONE, IDENTITY_QUARANTINE, KeyV4, KeyV6, MAX_IDENTITIES, MAX_PORT_RANGES,
    POLICY_TRIE_CAPACITY, PROTO_MASK_TCP, PROTO_MASK_UDP, PolicyValue, PortRange, key_v4, key_v6,
};

use super::model::{
    Access, DnsName, EgressRule, Identity, Limit, Location, Mode, Policy, Protocol, Window,
};

/// The policy as map entries, plus what the daemon reports about each identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// Hex sha256 of the policy source.
    pub sha256: String,
    /// Sorted by name.
    pub identities: Vec<CompiledIdentity>,
    /// (prefix length including the 32 identity bits, key, value).
    pub v4: Vec<(u32, KeyV4, PolicyValue)>,
    pub v6: Vec<(u32, KeyV6, PolicyValue)>,
    /// The ingress tries, keyed by the peer's address; their ranges are local ports.
    pub in_v4: Vec<(u32, KeyV4, PolicyValue)>,
    pub in_v6: Vec<(u32, KeyV6, PolicyValue)>,
    /// Per identity id: the ports it may bind (every port an ingress rule opens).
    pub bind: BTreeMap<u32, PolicyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledIdentity {
    pub id: u32,
    pub name: String,
    pub owner: String,
    pub description: Option<String>,
    pub spiffe_id: String,
    pub mode: Mode,
    /// Explicit cgroup selectors only; the launch cgroup `/zt/<name>/**` is implicit.
    pub cgroup_globs: Vec<String>,
    /// Number of egress (network or name, port range) pairs, for metrics.
    pub rules: usize,
    /// Rules that name DNS names: what the resolver answers and installs.
    pub names: Vec<NameRule>,
    /// The identity's literal networks: an answer inside one of them may be loopback,
    /// link-local or unspecified, as the policy already allows it.
    pub nets: Vec<IpNet>,
    /// Rules reached only through approval (`access: ask`) or inside windows (`when`):
    /// not in the policy tries, but in the grant tries while they apply.
    pub dynamic: Vec<DynamicRule>,
    /// `spec.grants.maxDuration`, in seconds.
    pub max_grant: u64,
    /// `spec.limits`.
    pub limits: Vec<Limit>,
}

/// An `ask` or `when` rule, as the grant tries and the resolver use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DynamicRule {
    /// Position in `spec.egress`.
    pub index: usize,
    pub location: Location,
    pub nets: Vec<IpNet>,
    pub names: Vec<DnsName>,
    /// As written, for grants that approvals of this rule give.
    pub ports: Vec<(u16, u16)>,
    pub protocol: Protocol,
    /// Merged port ranges with protocol bits, at most `GRANT_SLOTS`.
    pub ranges: Vec<PortRange>,
    pub kind: DynamicKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DynamicKind {
    /// `access: ask`: the longest an approval may last, in seconds.
    Ask { max_grant: u64 },
    /// `when`: the windows the rule is open in.
    Window(Vec<Window>),
}

/// The DNS names of one egress rule and the ports their addresses are opened for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRule {
    pub names: Vec<DnsName>,
    /// Merged port ranges with protocol bits, at most `DNS_RANGES`.
    pub ranges: Vec<PortRange>,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "identity `{identity}` could not be given an id: an enforcement holds at most {max} identities, removed ones included (`zt-agent daemon --teardown` starts afresh)",
        max = MAX_IDENTITIES - 2
    )]
    MissingId { identity: String },
    #[error("identity `{identity}` has id {id}, outside 1..{max}", max = IDENTITY_QUARANTINE)]
    InvalidId { identity: String, id: u32 },
    #[error("identities `{first}` and `{second}` share id {id}")]
    SharedId {
        first: String,
        second: String,
        id: u32,
    },
    #[error(
        "{at}: {field}: identity `{identity}`: {prefix} needs {count} port ranges, more than the {max} a prefix can hold; merge ports into ranges",
        max = MAX_PORT_RANGES
    )]
    TooManyRanges {
        /// file:line:column of the rule that lists the network.
        at: String,
        /// `spec.egress` or `spec.ingress`.
        field: &'static str,
        identity: String,
        prefix: String,
        count: usize,
    },
    #[error(
        "{at}: spec.ingress: identity `{identity}`: its ingress rules open {count} distinct port ranges, more than the {max} a listener check can hold; merge ports into ranges",
        max = MAX_PORT_RANGES
    )]
    TooManyBindRanges {
        at: String,
        identity: String,
        count: usize,
    },
    #[error(
        "the {family} policy needs {entries} trie entries, more than the capacity of {capacity}"
    )]
    TrieFull {
        family: &'static str,
        entries: usize,
        capacity: u32,
    },
    #[error(
        "{at}: spec.egress: identity `{identity}`: the DNS names of this rule need {count} port ranges (with the other rules that list them), more than the {max} a learned address can hold; merge ports into ranges",
        max = DNS_RANGES
    )]
    TooManyNameRanges {
        at: String,
        identity: String,
        count: usize,
    },
    #[error(
        "{at}: spec.egress: identity `{identity}`: an `ask` or `when` rule needs {count} port ranges, more than the {max} a grant entry holds; merge ports into ranges",
        max = GRANT_SLOTS
    )]
    TooManyDynamicRanges {
        at: String,
        identity: String,
        count: usize,
    },
}

/// Compiles `policy` with the identity ids in `ids` (see `assign_ids`).
///
/// # Errors
/// An identity without a valid, unique id; a prefix needing more than `MAX_PORT_RANGES`
/// ranges; more entries than a trie holds.
pub fn compile(policy: &Policy, ids: &BTreeMap<String, u32>) -> Result<Compiled, CompileError> {
    let mut identities = Vec::new();
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    let (mut in_v4, mut in_v6) = (Vec::new(), Vec::new());
    let mut bind = BTreeMap::new();
    let mut used: BTreeMap<u32, &str> = BTreeMap::new();
    let mut sorted: Vec<&Identity> = policy.identities.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));

    for identity in sorted {
        let id = *ids
            .get(&identity.name)
            .ok_or_else(|| CompileError::MissingId {
                identity: identity.name.clone(),
            })?;
        if id == IDENTITY_NONE || id >= IDENTITY_QUARANTINE {
            return Err(CompileError::InvalidId {
                identity: identity.name.clone(),
                id,
            });
        }
        if let Some(first) = used.insert(id, &identity.name) {
            return Err(CompileError::SharedId {
                first: first.to_owned(),
                second: identity.name.clone(),
                id,
            });
        }
        let flags = match identity.mode {
            Mode::Audit => IDENTITY_FLAG_AUDIT,
            Mode::Enforce => 0,
        };
        let egress: Vec<NetRule<'_>> = static_rules(identity)
            .map(|r| NetRule {
                nets: &r.to,
                ports: &r.ports,
                protocol: r.protocol,
                location: &r.location,
            })
            .collect();
        let ingress: Vec<NetRule<'_>> = identity
            .ingress
            .iter()
            .map(|r| NetRule {
                nets: &r.from,
                ports: &r.ports,
                protocol: r.protocol,
                location: &r.location,
            })
            .collect();
        let add = |rules: &[NetRule<'_>],
                   field: &'static str,
                   t4: &mut Vec<(u32, KeyV4, PolicyValue)>,
                   t6: &mut Vec<(u32, KeyV6, PolicyValue)>| {
            let (e4, e6) = entries(identity, field, rules)?;
            for (net, ranges) in e4 {
                let IpNet::V4(n) = net else { continue };
                let key = key_v4(id, n.network().octets());
                let len = IDENTITY_KEY_BITS + u32::from(n.prefix_len());
                t4.push((len, key, value(flags, &ranges)));
            }
            for (net, ranges) in e6 {
                let IpNet::V6(n) = net else { continue };
                let key = key_v6(id, n.network().octets());
                let len = IDENTITY_KEY_BITS + u32::from(n.prefix_len());
                t6.push((len, key, value(flags, &ranges)));
            }
            Ok::<(), CompileError>(())
        };
        add(&egress, "spec.egress", &mut v4, &mut v6)?;
        add(&ingress, "spec.ingress", &mut in_v4, &mut in_v6)?;
        bind.insert(id, bind_ports(identity, flags)?);
        identities.push(CompiledIdentity {
            id,
            name: identity.name.clone(),
            owner: identity.owner.clone(),
            description: identity.description.clone(),
            spiffe_id: identity.spiffe_id(),
            mode: identity.mode,
            cgroup_globs: identity.cgroup_globs(),
            rules: identity
                .egress
                .iter()
                .map(|r| (r.to.len() + r.names.len()) * r.ports.len())
                .sum(),
            names: name_rules(identity)?,
            nets: static_rules(identity)
                .flat_map(|r| r.to.iter().copied())
                .collect(),
            dynamic: dynamic_rules(identity)?,
            max_grant: identity.grants.max_duration,
            limits: identity.limits.clone(),
        });
    }
    for (family, entries) in [
        ("IPv4", v4.len()),
        ("IPv6", v6.len()),
        ("IPv4 ingress", in_v4.len()),
        ("IPv6 ingress", in_v6.len()),
    ] {
        if entries > POLICY_TRIE_CAPACITY as usize {
            return Err(CompileError::TrieFull {
                family,
                entries,
                capacity: POLICY_TRIE_CAPACITY,
            });
        }
    }
    Ok(Compiled {
        sha256: policy.sha256.clone(),
        identities,
        v4,
        v6,
        in_v4,
        in_v6,
        bind,
    })
}

/// The ports an identity may bind: every port its ingress rules open, whoever the
/// peer, with its flags and [`IDENTITY_FLAG_IN_POLICY`].
fn bind_ports(identity: &Identity, flags: u32) -> Result<PolicyValue, CompileError> {
    let (mut tcp, mut udp) = (Vec::new(), Vec::new());
    for r in &identity.ingress {
        let mask = r.protocol.mask();
        if mask & PROTO_MASK_TCP != 0 {
            tcp.extend(r.ports.iter().copied());
        }
        if mask & PROTO_MASK_UDP != 0 {
            udp.extend(r.ports.iter().copied());
        }
    }
    let ranges = combine(merge(tcp), merge(udp));
    if ranges.len() > MAX_PORT_RANGES {
        let at = identity
            .ingress
            .last()
            .map_or_else(|| identity.location.to_string(), |r| r.location.to_string());
        return Err(CompileError::TooManyBindRanges {
            at,
            identity: identity.name.clone(),
            count: ranges.len(),
        });
    }
    Ok(value(flags | IDENTITY_FLAG_IN_POLICY, &ranges))
}

/// The part of an egress or ingress rule the tries are built from.
struct NetRule<'a> {
    nets: &'a [IpNet],
    ports: &'a [(u16, u16)],
    protocol: super::model::Protocol,
    location: &'a super::model::Location,
}

/// The rules the policy tries hold: neither `ask` nor `when`.
fn static_rules(identity: &Identity) -> impl Iterator<Item = &EgressRule> {
    identity.egress.iter().filter(|r| r.is_static())
}

/// The ranges of one rule: its ports for its protocols, merged.
fn rule_ranges(rule: &EgressRule) -> Ranges {
    port_ranges(&rule.ports, rule.protocol)
}

/// Inclusive port ranges over a protocol as the kernel's ranges carry them: merged,
/// one range per distinct interval with the protocols' bits.
#[must_use]
pub fn port_ranges(ports: &[(u16, u16)], protocol: Protocol) -> Vec<PortRange> {
    let mask = protocol.mask();
    let pick = |bit: u8| {
        if mask & bit != 0 {
            merge(ports.to_vec())
        } else {
            Vec::new()
        }
    };
    combine(pick(PROTO_MASK_TCP), pick(PROTO_MASK_UDP))
}

fn dynamic_rules(identity: &Identity) -> Result<Vec<DynamicRule>, CompileError> {
    let mut out = Vec::new();
    for (index, rule) in identity.egress.iter().enumerate() {
        if rule.is_static() {
            continue;
        }
        let ranges = rule_ranges(rule);
        if ranges.len() > GRANT_SLOTS {
            return Err(CompileError::TooManyDynamicRanges {
                at: rule.location.to_string(),
                identity: identity.name.clone(),
                count: ranges.len(),
            });
        }
        let kind = match rule.access {
            Access::Ask => DynamicKind::Ask {
                max_grant: rule.max_grant.unwrap_or(identity.grants.max_duration),
            },
            Access::Allow => DynamicKind::Window(rule.when.clone()),
        };
        out.push(DynamicRule {
            index,
            location: rule.location.clone(),
            nets: rule.to.iter().map(IpNet::trunc).collect(),
            names: rule.names.clone(),
            ports: rule.ports.clone(),
            protocol: rule.protocol,
            ranges,
            kind,
        });
    }
    Ok(out)
}

/// Inclusive port ranges of one protocol.
type PortList = Vec<(u16, u16)>;
/// Port ranges with their protocol bits.
type Ranges = Vec<PortRange>;
/// (network, ranges) of one identity in one family.
type Entries = Vec<(IpNet, Ranges)>;

/// The entries of one identity per family: the root (/0) first, then every distinct
/// network of its rules, each with the union of the ranges of the rules containing it.
fn entries(
    identity: &Identity,
    field: &'static str,
    rules: &[NetRule<'_>],
) -> Result<(Entries, Entries), CompileError> {
    let root4 = IpNet::V4(ipnet::Ipv4Net::default());
    let root6 = IpNet::V6(ipnet::Ipv6Net::default());
    // Distinct networks per family, ordered for determinism (root first).
    let mut nets4: BTreeSet<(u8, IpNet)> = BTreeSet::from([(0, root4)]);
    let mut nets6: BTreeSet<(u8, IpNet)> = BTreeSet::from([(0, root6)]);
    for rule in rules {
        for net in rule.nets {
            let net = net.trunc();
            match net {
                IpNet::V4(_) => nets4.insert((net.prefix_len(), net)),
                IpNet::V6(_) => nets6.insert((net.prefix_len(), net)),
            };
        }
    }
    // Which rules list each network, so that the rules containing a prefix are found by
    // walking its ancestors (at most 129 lookups) instead of scanning every rule.
    // The merged TCP and UDP ranges each network is listed with, so that a prefix's
    // value is the union over its ancestors (at most 129 lists of a few ranges each),
    // however many rules list a covering network.
    let mut per_net: BTreeMap<IpNet, (PortList, PortList)> = BTreeMap::new();
    for rule in rules {
        let mask = rule.protocol.mask();
        for net in rule.nets {
            let (tcp, udp) = per_net.entry(net.trunc()).or_default();
            if mask & PROTO_MASK_TCP != 0 {
                tcp.extend(rule.ports.iter().copied());
            }
            if mask & PROTO_MASK_UDP != 0 {
                udp.extend(rule.ports.iter().copied());
            }
        }
    }
    for (tcp, udp) in per_net.values_mut() {
        *tcp = merge(std::mem::take(tcp));
        *udp = merge(std::mem::take(udp));
    }
    let build = |nets: BTreeSet<(u8, IpNet)>| -> Result<Entries, CompileError> {
        nets.into_iter()
            .map(|(_, prefix)| {
                let mut tcp = Vec::new();
                let mut udp = Vec::new();
                for len in 0..=prefix.prefix_len() {
                    let ancestor = IpNet::new(prefix.addr(), len).map(|n| n.trunc());
                    if let Some((t, u)) = ancestor.ok().and_then(|a| per_net.get(&a)) {
                        tcp.extend_from_slice(t);
                        udp.extend_from_slice(u);
                    }
                }
                let ranges = combine(merge(tcp), merge(udp));
                if ranges.len() > MAX_PORT_RANGES {
                    let at = rules
                        .iter()
                        .find(|r| r.nets.iter().any(|n| n.trunc() == prefix))
                        .map_or_else(|| identity.location.to_string(), |r| r.location.to_string());
                    return Err(CompileError::TooManyRanges {
                        at,
                        field,
                        identity: identity.name.clone(),
                        prefix: prefix.to_string(),
                        count: ranges.len(),
                    });
                }
                Ok((prefix, ranges))
            })
            .collect()
    };
    Ok((build(nets4)?, build(nets6)?))
}

fn name_rules(identity: &Identity) -> Result<Vec<NameRule>, CompileError> {
    let mut out = Vec::new();
    for rule in static_rules(identity).filter(|r| !r.names.is_empty()) {
        let ranges = rule_ranges(rule);
        if ranges.len() > DNS_RANGES {
            return Err(CompileError::TooManyNameRanges {
                at: rule.location.to_string(),
                identity: identity.name.clone(),
                count: ranges.len(),
            });
        }
        out.push(NameRule {
            names: rule.names.clone(),
            ranges,
        });
    }
    // An address learned for a name carries the ranges of every rule listing it.
    let mut per_name: BTreeMap<&DnsName, BTreeSet<(u16, u16, u8)>> = BTreeMap::new();
    for (rule, compiled) in static_rules(identity)
        .filter(|r| !r.names.is_empty())
        .zip(&out)
    {
        for name in &rule.names {
            let set = per_name.entry(name).or_default();
            set.extend(compiled.ranges.iter().map(|r| (r.lo, r.hi, r.proto_mask)));
            if set.len() > DNS_RANGES {
                return Err(CompileError::TooManyNameRanges {
                    at: rule.location.to_string(),
                    identity: identity.name.clone(),
                    count: set.len(),
                });
            }
        }
    }
    Ok(out)
}

/// Sorted union of inclusive ranges; overlapping and adjacent ranges become one.
fn merge(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// One range per distinct interval: intervals both protocols allow share one entry.
fn combine(tcp: Vec<(u16, u16)>, udp: Vec<(u16, u16)>) -> Ranges {
    let mut masks: BTreeMap<(u16, u16), u8> = BTreeMap::new();
    for r in tcp {
        *masks.entry(r).or_default() |= PROTO_MASK_TCP;
    }
    for r in udp {
        *masks.entry(r).or_default() |= PROTO_MASK_UDP;
    }
    masks
        .into_iter()
        .map(|((lo, hi), proto_mask)| PortRange {
            lo,
            hi,
            proto_mask,
            _pad: [0; 3],
        })
        .collect()
}

fn value(flags: u32, ranges: &[PortRange]) -> PolicyValue {
    let mut v = PolicyValue::empty(flags);
    for (slot, r) in v.ranges.iter_mut().zip(ranges) {
        *slot = *r;
    }
    // Callers check the count; never claim more ranges than were copied.
    v.n_ranges = u32::try_from(ranges.len().min(MAX_PORT_RANGES)).unwrap_or(0);
    v
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::{assign_ids, load_str};
    use super::*;

    /// Simulates the kernel: longest-prefix match on (identity, address), then the port check.
    /// `None`: the identity has no entry at all (not in the policy).
    fn lookup(c: &Compiled, id: u32, addr: IpAddr, port: u16, proto: u8) -> Option<(bool, u32)> {
        fn best<const N: usize>(
            entries: &[(u32, [u8; N], PolicyValue)],
            key: [u8; N],
        ) -> Option<PolicyValue> {
            entries
                .iter()
                .filter(|(len, k, _)| prefix_matches(k, &key, *len))
                .max_by_key(|(len, _, _)| *len)
                .map(|(_, _, v)| *v)
        }
        let v = match addr {
            IpAddr::V4(a) => best(&c.v4, key_v4(id, a.octets())),
            IpAddr::V6(a) => best(&c.v6, key_v6(id, a.octets())),
        }?;
        Some((v.allows(port, proto), v.flags))
    }

    fn prefix_matches(stored: &[u8], key: &[u8], bits: u32) -> bool {
        (0..bits as usize).all(|i| {
            let m = 0x80u8 >> (i % 8);
            stored[i / 8] & m == key[i / 8] & m
        })
    }

    fn compiled(yaml: &str) -> (Compiled, BTreeMap<String, u32>) {
        let policy = load_str("t.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
        let ids = assign_ids(&BTreeMap::new(), &policy);
        (
            compile(&policy, &ids).unwrap_or_else(|e| panic!("{e}")),
            ids,
        )
    }

    fn doc(name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: {name}\n  owner: o@example.com\nspec:\n{spec}"
        )
    }

    const TCP: u8 = PROTO_MASK_TCP;
    const UDP: u8 = PROTO_MASK_UDP;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn root_entries_in_both_families() {
        let (c, ids) = compiled(&doc("a", "  mode: audit\n"));
        let id = ids["a"];
        assert_eq!(c.v4.len(), 1);
        assert_eq!(c.v6.len(), 1);
        assert_eq!(c.v4[0].0, 32);
        assert_eq!(c.v4[0].1, key_v4(id, [0; 4]));
        assert_eq!(c.v6[0].0, 32);
        assert_eq!(c.v6[0].1, key_v6(id, [0; 16]));
        assert_eq!(c.v4[0].2, PolicyValue::empty(IDENTITY_FLAG_AUDIT));
        assert_eq!(c.v6[0].2.flags, IDENTITY_FLAG_AUDIT);
        assert_eq!(c.identities[0].mode, Mode::Audit);
        assert_eq!(c.identities[0].rules, 0);
        // Deny-all, loopback included.
        assert_eq!(lookup(&c, id, ip("127.0.0.1"), 80, TCP), Some((false, 1)));
        // Another identity has no entry.
        assert_eq!(lookup(&c, id + 1, ip("127.0.0.1"), 80, TCP), None);
    }

    #[test]
    fn longest_prefix_carries_the_union() {
        let (c, ids) = compiled(&doc(
            "a",
            "  egress:\n  - to: [10.0.0.0/8]\n    ports: [443]\n    protocol: tcp\n  - to: [10.1.0.0/16]\n    ports: [80]\n",
        ));
        let id = ids["a"];
        assert_eq!(c.v4.len(), 3);
        let e16 =
            c.v4.iter()
                .find(|(len, _, _)| *len == 48)
                .unwrap_or_else(|| panic!("no /16 entry"));
        assert_eq!(e16.1, key_v4(id, [10, 1, 0, 0]));
        let r = &e16.2.ranges[..e16.2.n_ranges as usize];
        assert_eq!(
            r.iter()
                .map(|r| (r.lo, r.hi, r.proto_mask))
                .collect::<Vec<_>>(),
            vec![(80, 80, TCP | UDP), (443, 443, TCP)]
        );
        assert_eq!(lookup(&c, id, ip("10.1.2.3"), 443, TCP), Some((true, 0)));
        assert_eq!(lookup(&c, id, ip("10.1.2.3"), 80, UDP), Some((true, 0)));
        assert_eq!(lookup(&c, id, ip("10.1.2.3"), 443, UDP), Some((false, 0)));
        assert_eq!(lookup(&c, id, ip("10.2.0.1"), 443, TCP), Some((true, 0)));
        assert_eq!(lookup(&c, id, ip("10.2.0.1"), 80, TCP), Some((false, 0)));
        assert_eq!(lookup(&c, id, ip("11.0.0.1"), 443, TCP), Some((false, 0)));
        assert_eq!(lookup(&c, id, ip("::1"), 443, TCP), Some((false, 0)));
        assert_eq!(c.identities[0].rules, 2);
    }

    #[test]
    fn slash_zero_merges_into_root_and_every_prefix() {
        let (c, ids) = compiled(&doc(
            "a",
            "  egress:\n  - to: [0.0.0.0/0, \"::/0\"]\n    ports: [53]\n    protocol: udp\n  - to: [192.168.1.10]\n    ports: [\"8000-8100\", 1883]\n    protocol: tcp\n",
        ));
        let id = ids["a"];
        assert_eq!(c.v4.len(), 2);
        assert_eq!(c.v6.len(), 1);
        assert_eq!(c.v4[0].2.n_ranges, 1);
        assert_eq!(lookup(&c, id, ip("8.8.8.8"), 53, UDP), Some((true, 0)));
        assert_eq!(lookup(&c, id, ip("8.8.8.8"), 53, TCP), Some((false, 0)));
        assert_eq!(lookup(&c, id, ip("2001:db8::1"), 53, UDP), Some((true, 0)));
        assert_eq!(lookup(&c, id, ip("192.168.1.10"), 53, UDP), Some((true, 0)));
        assert_eq!(
            lookup(&c, id, ip("192.168.1.10"), 1883, TCP),
            Some((true, 0))
        );
        assert_eq!(
            lookup(&c, id, ip("192.168.1.10"), 8050, TCP),
            Some((true, 0))
        );
        assert_eq!(
            lookup(&c, id, ip("192.168.1.11"), 1883, TCP),
            Some((false, 0))
        );
        let host = &c.v4[1];
        assert_eq!(host.0, 64);
        assert_eq!(host.1, key_v4(id, [192, 168, 1, 10]));
    }

    #[test]
    fn omitted_ports_mean_all_and_ranges_merge() {
        let (c, ids) = compiled(&doc(
            "a",
            "  egress:\n  - to: [\"2001:db8::/32\"]\n  - to: [\"2001:db8:1::/48\"]\n    ports: [\"10-20\", \"15-30\", 31, 40]\n    protocol: tcp\n",
        ));
        let id = ids["a"];
        let e48 =
            c.v6.iter()
                .find(|(len, _, _)| *len == 32 + 48)
                .unwrap_or_else(|| panic!("no /48"));
        let r = &e48.2.ranges[..e48.2.n_ranges as usize];
        assert_eq!(
            r.iter()
                .map(|r| (r.lo, r.hi, r.proto_mask))
                .collect::<Vec<_>>(),
            vec![(0, 65535, TCP | UDP)],
            "the /32 rule's all-ports range absorbs the narrower TCP ranges"
        );
        assert_eq!(lookup(&c, id, ip("2001:db8:1::5"), 0, UDP), Some((true, 0)));
        assert_eq!(
            lookup(&c, id, ip("2001:db9::5"), 443, TCP),
            Some((false, 0))
        );
        // Key bits beyond the prefix are zero.
        assert_eq!(e48.1[4 + 6..], [0u8; 10]);
    }

    #[test]
    fn same_ranges_for_both_protocols_share_a_slot() {
        assert_eq!(
            combine(merge(vec![(1, 5), (6, 9)]), merge(vec![(1, 9), (20, 20)]))
                .iter()
                .map(|r| (r.lo, r.hi, r.proto_mask))
                .collect::<Vec<_>>(),
            vec![(1, 9, TCP | UDP), (20, 20, UDP)]
        );
        assert_eq!(merge(vec![(65535, 65535), (0, 65534)]), vec![(0, 65535)]);
    }

    #[test]
    fn too_many_ranges_is_an_error() {
        let ports: Vec<String> = (0..17).map(|i| (1000 + 2 * i).to_string()).collect();
        let yaml = doc(
            "many",
            &format!(
                "  egress:\n  - to: [10.0.0.0/8]\n    ports: [{}]\n",
                ports.join(", ")
            ),
        );
        let policy = load_str("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
        let ids = assign_ids(&BTreeMap::new(), &policy);
        let err = compile(&policy, &ids).err();
        assert!(
            matches!(
                &err,
                Some(CompileError::TooManyRanges { at, identity, prefix, count: 17, .. })
                    if at.starts_with("t.yaml:") && identity == "many" && prefix == "10.0.0.0/8"
            ),
            "{err:?}"
        );
        // 16 fit.
        let yaml = yaml.replace(", 1032]", "]");
        let policy = load_str("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
        assert!(compile(&policy, &ids).is_ok());
    }

    #[test]
    fn names_needing_too_many_ranges_are_an_error() {
        let rule = |ports: &str| format!("  - to: [api.example.com]\n    ports: [{ports}]\n");
        let yaml = doc(
            "names",
            &format!(
                "  egress:\n{}{}",
                rule("1, 3, 5, 7, 9"),
                rule("11, 13, 15, 17")
            ),
        );
        let policy = load_str("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
        let ids = assign_ids(&BTreeMap::new(), &policy);
        let err = compile(&policy, &ids).err();
        assert!(
            matches!(
                &err,
                Some(CompileError::TooManyNameRanges { at, identity, count: 9 })
                    if at.starts_with("t.yaml:") && identity == "names"
            ),
            "{err:?}"
        );
        // 8 fit, across the two rules.
        let yaml = yaml.replace(", 17]", "]");
        let policy = load_str("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
        assert!(compile(&policy, &ids).is_ok());
    }

    #[test]
    fn missing_or_bad_id_is_an_error() {
        let policy =
            load_str("t.yaml", &doc("a", "  mode: enforce\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            compile(&policy, &BTreeMap::new()),
            Err(CompileError::MissingId {
                identity: "a".into()
            })
        );
        let ids = BTreeMap::from([("a".to_owned(), MAX_IDENTITIES)]);
        assert!(matches!(
            compile(&policy, &ids),
            Err(CompileError::InvalidId { .. })
        ));
        let two = format!(
            "{}{}",
            doc("a", "  mode: audit\n"),
            doc("b", "  mode: audit\n")
        );
        let policy = load_str("t.yaml", &two).unwrap_or_else(|e| panic!("{e}"));
        let ids = BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 3)]);
        assert!(matches!(
            compile(&policy, &ids),
            Err(CompileError::SharedId { .. })
        ));
    }

    #[test]
    fn identities_are_isolated_and_sorted() {
        let two = format!(
            "{}{}",
            doc("zed", "  egress:\n  - to: [10.0.0.0/8]\n"),
            doc("abc", "  egress:\n  - to: [10.0.0.0/8]\n    ports: [22]\n")
        );
        let (c, ids) = compiled(&two);
        assert_eq!(
            c.identities
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            ["abc", "zed"]
        );
        assert_eq!(
            lookup(&c, ids["abc"], ip("10.0.0.1"), 80, TCP),
            Some((false, 0))
        );
        assert_eq!(
            lookup(&c, ids["zed"], ip("10.0.0.1"), 80, TCP),
            Some((true, 0))
        );
        assert_eq!(c.identities[0].spiffe_id, "spiffe://zt-agent.local/abc");
        assert_eq!(c.sha256.len(), 64);
    }
}
