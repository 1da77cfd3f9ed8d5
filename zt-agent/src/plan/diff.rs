//! What changes in the kernel between two plans: identities, and entries per map.

use std::collections::BTreeMap;
use std::fmt;

use super::Plan;

/// Entries of one map that a new plan adds, removes or changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryDiff {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
}

impl EntryDiff {
    fn of<K: Ord, V: PartialEq>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Self {
        let mut d = Self::default();
        for (k, v) in new {
            match old.get(k) {
                None => d.added += 1,
                Some(o) if o != v => d.changed += 1,
                Some(_) => {}
            }
        }
        d.removed = old.keys().filter(|k| !new.contains_key(k)).count();
        d
    }

    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.added == 0 && self.removed == 0 && self.changed == 0
    }
}

/// The difference between the plan in force and the next one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanDiff {
    pub identities_added: Vec<String>,
    pub identities_removed: Vec<String>,
    /// Identities in both whose mode, owner, SPIFFE id or selectors changed.
    pub identities_changed: Vec<String>,
    pub policy_v4: EntryDiff,
    pub policy_v6: EntryDiff,
    pub ingress_v4: EntryDiff,
    pub ingress_v6: EntryDiff,
    /// The ports identities may bind.
    pub bind: EntryDiff,
    pub exe_selectors: EntryDiff,
    pub principals: EntryDiff,
    pub exec_allow: EntryDiff,
    pub identity_settings: EntryDiff,
}

impl PlanDiff {
    /// Nothing the kernel holds would change.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.identities_added.is_empty()
            && self.identities_removed.is_empty()
            && self.identities_changed.is_empty()
            && self.maps().iter().all(|(_, d)| d.is_empty())
    }

    fn maps(&self) -> [(&'static str, EntryDiff); 9] {
        [
            ("policy_v4", self.policy_v4),
            ("policy_v6", self.policy_v6),
            ("ingress_v4", self.ingress_v4),
            ("ingress_v6", self.ingress_v6),
            ("bind_ports", self.bind),
            ("exe_selectors", self.exe_selectors),
            ("principals", self.principals),
            ("exec_allow", self.exec_allow),
            ("identities", self.identity_settings),
        ]
    }
}

impl fmt::Display for PlanDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "no change");
        }
        let mut parts = Vec::new();
        for (sign, names) in [
            ('+', &self.identities_added),
            ('-', &self.identities_removed),
            ('~', &self.identities_changed),
        ] {
            parts.extend(names.iter().map(|n| format!("{sign}{n}")));
        }
        for (map, d) in self.maps() {
            if !d.is_empty() {
                parts.push(format!("{map} +{} -{} ~{}", d.added, d.removed, d.changed));
            }
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// Trie entries keyed by (prefix length, key).
fn trie<K: Ord + Copy, V: Copy>(entries: &[(u32, K, V)]) -> BTreeMap<(u32, K), V> {
    entries.iter().map(|(l, k, v)| ((*l, *k), *v)).collect()
}

/// What installing `new` over `old` changes.
#[must_use]
pub fn diff(old: &Plan, new: &Plan) -> PlanDiff {
    let idents = |p: &Plan| -> BTreeMap<String, String> {
        p.compiled
            .identities
            .iter()
            .map(|i| {
                // Everything but the rules, which the map diffs count.
                let key = format!(
                    "{}|{}|{}|{}|{:?}",
                    i.id, i.owner, i.spiffe_id, i.mode, i.cgroup_globs
                );
                (i.name.clone(), key)
            })
            .collect()
    };
    let (a, b) = (idents(old), idents(new));
    let v4 = |p: &Plan| trie(&p.compiled.v4);
    let v6 = |p: &Plan| trie(&p.compiled.v6);
    let (oe, ne) = (&old.exec.entries, &new.exec.entries);
    PlanDiff {
        identities_added: b.keys().filter(|n| !a.contains_key(*n)).cloned().collect(),
        identities_removed: a.keys().filter(|n| !b.contains_key(*n)).cloned().collect(),
        identities_changed: b
            .iter()
            .filter(|(n, v)| a.get(*n).is_some_and(|o| o != *v))
            .map(|(n, _)| n.clone())
            .collect(),
        policy_v4: EntryDiff::of(&v4(old), &v4(new)),
        policy_v6: EntryDiff::of(&v6(old), &v6(new)),
        ingress_v4: EntryDiff::of(&trie(&old.compiled.in_v4), &trie(&new.compiled.in_v4)),
        ingress_v6: EntryDiff::of(&trie(&old.compiled.in_v6), &trie(&new.compiled.in_v6)),
        bind: EntryDiff::of(&old.compiled.bind, &new.compiled.bind),
        exe_selectors: EntryDiff::of(&oe.exe, &ne.exe),
        principals: EntryDiff::of(&oe.principals, &ne.principals),
        exec_allow: EntryDiff::of(&oe.allow, &ne.allow),
        identity_settings: EntryDiff::of(&oe.configs, &ne.configs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::NoFiles;
    use crate::policy;

    fn plan(docs: &[(&str, &str)]) -> Plan {
        let text = docs
            .iter()
            .map(|(name, spec)| {
                format!(
                    "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: {name}\n  owner: o@example.com\nspec:\n{spec}\n"
                )
            })
            .collect::<Vec<_>>()
            .join("---\n");
        let p = policy::load_str("p.yaml", &text).expect("valid");
        super::super::build(&p, &BTreeMap::new(), &mut NoFiles).expect("plans")
    }

    #[test]
    fn same_policy_is_no_change() {
        let a = plan(&[("coder", "  egress:\n    - to: [10.0.0.0/8]\n")]);
        let d = diff(&a, &a.clone());
        assert!(d.is_empty());
        assert_eq!(d.to_string(), "no change");
    }

    #[test]
    fn counts_entries_and_identities() {
        let a = plan(&[
            (
                "coder",
                "  egress:\n    - to: [10.0.0.0/8]\n      ports: [443]\n",
            ),
            ("old", "  egress: []\n"),
        ]);
        let b = plan(&[
            (
                "coder",
                "  mode: audit\n  egress:\n    - to: [10.0.0.0/8, 192.0.2.0/24]\n      ports: [443]\n",
            ),
            ("new", "  egress: []\n"),
        ]);
        let d = diff(&a, &b);
        assert_eq!(d.identities_added, ["new"]);
        assert_eq!(d.identities_removed, ["old"]);
        assert_eq!(d.identities_changed, ["coder"]);
        // coder: the new prefix, and every value of coder changes with its flags; old's
        // root entry goes, new's comes (new takes id 2 from old, so its key is reused).
        assert!(d.policy_v4.added >= 1, "{d}");
        assert!(d.policy_v4.changed >= 1, "{d}");
        assert!(!d.is_empty());
        assert!(d.to_string().contains("+new"), "{d}");
    }

    #[test]
    fn counts_ingress_entries() {
        let a = plan(&[(
            "svc",
            "  egress: []
",
        )]);
        let b = plan(&[(
            "svc",
            "  ingress:\n    - from: [10.0.0.0/8]\n      ports: [8080]\n",
        )]);
        let d = diff(&a, &b);
        assert_eq!(d.ingress_v4.added, 1, "{d}");
        assert_eq!(d.bind.changed, 1, "{d}");
        assert!(d.policy_v4.is_empty(), "{d}");
        assert!(d.to_string().contains("ingress_v4 +1"), "{d}");
    }
}
