//! Learning: the least-privilege rules that would have allowed what an identity did,
//! from its stored flows and execs. Pure; `policy::edit` puts them into the document.
//!
//! A destination reached through an address the resolver answered becomes its DNS name
//! (the name is what stays true when the address changes); other destinations stay
//! addresses. Destinations with the same ports and protocol share a rule. DNS itself
//! (port 53) needs no rule: the kernel sends every query to the agent's resolver.

use std::collections::{BTreeMap, BTreeSet};

use super::store::{Exec, Flow, Seen};
use crate::policy::edit::yaml_str;

/// One learned egress rule with the evidence for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedRule {
    pub to: Vec<String>,
    pub ports: Vec<u16>,
    pub protocol: &'static str,
    /// Connects and datagrams seen, and when first and last (ms since the epoch).
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Which verdicts count as something the identity did.
#[derive(Clone, Copy, Debug)]
pub struct Take {
    /// Also what the policy denied (attempts, not things done).
    pub denied: bool,
}

impl Take {
    fn takes(self, verdict: &str) -> bool {
        verdict == "audit" || (self.denied && verdict == "deny")
    }
}

/// Destinations that share a protocol and ports, with their evidence together.
type Dests = (Vec<String>, Acc);

#[derive(Default)]
struct Acc {
    ports: BTreeSet<u16>,
    count: u64,
    first_ms: i64,
    last_ms: i64,
}

impl Acc {
    fn add(&mut self, count: u64, first: i64, last: i64) {
        self.first_ms = if self.count == 0 {
            first
        } else {
            self.first_ms.min(first)
        };
        self.last_ms = self.last_ms.max(last);
        self.count += count;
    }
}

/// The rules covering `flows`, most used first.
#[must_use]
pub fn egress_rules(flows: &[Seen<Flow>], take: Take) -> Vec<LearnedRule> {
    // (protocol, destination) -> ports and evidence.
    let mut by_dest: BTreeMap<(&'static str, String), Acc> = BTreeMap::new();
    for f in flows {
        if !take.takes(f.what.verdict) || f.what.port == 53 {
            continue;
        }
        let dest = f.what.name.clone().unwrap_or_else(|| f.what.dest.clone());
        let a = by_dest.entry((f.what.protocol, dest)).or_default();
        a.ports.insert(f.what.port);
        a.add(f.count, f.first_ms, f.last_ms);
    }
    // (protocol, ports) -> destinations.
    let mut by_ports: BTreeMap<(&'static str, Vec<u16>), Dests> = BTreeMap::new();
    for ((protocol, dest), a) in by_dest {
        let e = by_ports
            .entry((protocol, a.ports.iter().copied().collect()))
            .or_default();
        e.0.push(dest);
        e.1.add(a.count, a.first_ms, a.last_ms);
    }
    let mut rules: Vec<LearnedRule> = by_ports
        .into_iter()
        .map(|((protocol, ports), (to, a))| LearnedRule {
            to,
            ports,
            protocol,
            count: a.count,
            first_ms: a.first_ms,
            last_ms: a.last_ms,
        })
        .collect();
    rules.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.to.cmp(&b.to)));
    rules
}

/// Files executed that the allowlist did not hold, with their counts, most used first.
#[must_use]
pub fn exec_files(execs: &[Seen<Exec>], take: Take) -> Vec<(String, u64, i64, i64)> {
    let mut by_file: BTreeMap<String, Acc> = BTreeMap::new();
    for e in execs {
        if take.takes(e.what.verdict) {
            by_file
                .entry(e.what.file.clone())
                .or_default()
                .add(e.count, e.first_ms, e.last_ms);
        }
    }
    let mut v: Vec<_> = by_file
        .into_iter()
        .map(|(f, a)| (f, a.count, a.first_ms, a.last_ms))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// RFC 3339 (UTC, seconds) of milliseconds since the epoch.
#[must_use]
pub fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn flow_list<T: ToString>(v: &[T], quote: bool) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|x| {
            let s = x.to_string();
            if quote { yaml_str(&s) } else { s }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// The rule as policy lines (no indentation), with its evidence as a comment.
#[must_use]
pub fn rule_lines(r: &LearnedRule) -> Vec<String> {
    vec![
        format!(
            "# learned: {} {}, first {}, last {}",
            r.count,
            if r.count == 1 { "use" } else { "uses" },
            when(r.first_ms),
            when(r.last_ms)
        ),
        format!("- to: {}", flow_list(&r.to, true)),
        format!("  ports: {}", flow_list(&r.ports, false)),
        format!("  protocol: {}", r.protocol),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(
        dest: &str,
        name: Option<&str>,
        port: u16,
        protocol: &'static str,
        verdict: &'static str,
        count: u64,
    ) -> Seen<Flow> {
        Seen {
            what: Flow {
                identity: "a".into(),
                dest: dest.into(),
                name: name.map(str::to_owned),
                port,
                protocol,
                binary: None,
                verdict,
            },
            count,
            first_ms: 1_000,
            last_ms: 2_000,
        }
    }

    #[test]
    fn names_win_over_addresses_and_like_rules_merge() {
        let flows = [
            seen("10.0.0.1", Some("api.example.test"), 443, "tcp", "audit", 5),
            seen("10.0.0.2", Some("api.example.test"), 443, "tcp", "audit", 2),
            seen("10.0.0.9", None, 443, "tcp", "audit", 1),
            seen("10.0.0.9", None, 5432, "tcp", "audit", 1),
            seen("192.0.2.53", None, 53, "udp", "audit", 9),
            seen("10.0.0.8", None, 4789, "udp", "deny", 3),
        ];
        let rules = egress_rules(&flows, Take { denied: false });
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0].to, ["api.example.test"]);
        assert_eq!((rules[0].ports.clone(), rules[0].count), (vec![443], 7));
        assert_eq!(rules[1].to, ["10.0.0.9"]);
        assert_eq!(rules[1].ports, [443, 5432]);
        let with_denied = egress_rules(&flows, Take { denied: true });
        assert!(
            with_denied
                .iter()
                .any(|r| r.protocol == "udp" && r.ports == [4789])
        );
        assert_eq!(
            rule_lines(&rules[1])[1..],
            [
                "- to: [10.0.0.9]",
                "  ports: [443, 5432]",
                "  protocol: tcp"
            ]
        );
        assert!(
            rule_lines(&rules[1])[0].starts_with("# learned: 2 uses, first 1970-01-01T00:00:01Z")
        );
    }
}
