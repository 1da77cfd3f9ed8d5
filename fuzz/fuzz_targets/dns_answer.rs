//! The resolver's upstream-answer path on arbitrary bytes: a fixed, allowed query (the
//! first byte picks which), then whatever the network sends back. Nothing may panic, and
//! every answer built keeps `zt_agent::dns::message::invariants` (only the queried
//! name's chain, clamped TTLs, nothing installed that DNS may never open or that is the
//! host's own).
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use zt_agent::dns::message::{self, Asker, Decision, Limits};
use zt_agent::policy::{DnsName, NameRule};

/// A query for `name` of type `t` (1 A, 28 AAAA), with EDNS when `edns`.
fn query(name: &str, t: u16, edns: bool) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    for l in name.split('.') {
        q.push(u8::try_from(l.len()).unwrap_or(0));
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&t.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if edns {
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    }
    q
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, answer)) = data.split_first() else {
        return;
    };
    let rules = [NameRule {
        names: ["api.example.com", "*.example.net"]
            .iter()
            .filter_map(|n| DnsName::parse(n).ok())
            .collect(),
        ranges: Vec::new(),
    }];
    let nets: [ipnet::IpNet; 1] = ["10.0.0.0/24".parse().expect("net")];
    let mut host: Vec<IpAddr> = ["10.0.0.5", "2001:db8::5", "192.0.2.1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    host.sort_unstable();
    let asker = Asker {
        identity: Some("fuzz"),
        audit: pick & 0x10 != 0,
        rules: &rules,
        nets: if pick & 0x20 != 0 { &nets } else { &[] },
        host: &host,
    };
    let name = if pick & 1 == 0 {
        "api.example.com"
    } else {
        "a.b.example.net"
    };
    let t = if pick & 2 == 0 { 1 } else { 28 };
    let Decision::Forward(fwd) = message::query(&query(name, t, pick & 4 != 0), &asker, 0x5a5a)
    else {
        return;
    };
    let limits = Limits { max_ttl: 300 };
    for max in [512, 1232, 65535] {
        if let Ok(a) = message::answer(&fwd, answer, &asker, limits, max) {
            if let Err(e) = message::invariants(&fwd, &asker, limits, max, &a) {
                panic!("{e}");
            }
        }
    }
});
