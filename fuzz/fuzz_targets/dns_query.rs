//! The resolver's query path on arbitrary bytes: a query from a hostile task, then an
//! answer from a hostile network. Nothing may panic, and nothing outside the chain of
//! an allowed name may be learned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zt_agent::dns::message::{self, Asker, Decision, Limits};
use zt_agent::policy::{DnsName, NameRule};

fuzz_target!(|data: &[u8]| {
    let rules = [NameRule {
        names: ["example.com", "*.example.net", "a"]
            .iter()
            .filter_map(|n| DnsName::parse(n).ok())
            .collect(),
        ranges: Vec::new(),
    }];
    let nets: [ipnet::IpNet; 1] = ["127.0.0.0/8".parse().expect("net")];
    let asker = Asker {
        identity: Some("fuzz"),
        audit: data.first().is_some_and(|b| b & 1 == 1),
        rules: &rules,
        nets: &nets,
        host: &[],
    };
    // The first byte splits the rest into the query and the upstream answer.
    let split = data.first().map_or(0, |b| usize::from(*b));
    let rest = data.get(1..).unwrap_or(&[]);
    let (query, answer) = rest.split_at(split.min(rest.len()));
    let Decision::Forward(fwd) = message::query(query, &asker, 0x5a5a) else {
        return;
    };
    assert!(asker.audit || !fwd.rules.is_empty());
    let limits = Limits { max_ttl: 300 };
    for max in [512, 65535] {
        if let Ok(a) = message::answer(&fwd, answer, &asker, limits, max) {
            assert!(a.learned.iter().all(|l| l.ttl <= 300));
            assert!(a.learned.iter().all(|l| !message::never_from_dns(l.addr)));
            assert!(a.learned.len() <= message::MAX_LEARNED);
            assert!(a.reply.len() <= max);
        }
    }
});
