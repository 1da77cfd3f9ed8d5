//! The resolver against names and answers built to trick it: a label holding a dot (or
//! another byte no policy name has) never passes a wildcard, and an answer naming one
//! of this host's own addresses never opens it, over UDP and TCP, IPv4 and IPv6, A and
//! AAAA, in enforce and audit mode.

use std::process::Command;
use std::time::{Duration, Instant};

use zt_agent_tests::{DENIED, Daemon, Dnsmasq, Identity, OK, Peer, Rule, TcpServer, Veth};

const SOME_RESOLVER4: &str = "192.0.2.53";
const SOME_RESOLVER6: &str = "2001:db8::53";
/// (transport, server the task addresses, query type).
const WAYS: [(&str, &str, &str); 4] = [
    ("udp", SOME_RESOLVER4, "A"),
    ("tcp", SOME_RESOLVER4, "A"),
    ("udp-connect", SOME_RESOLVER6, "AAAA"),
    ("tcp", SOME_RESOLVER6, "AAAA"),
];

fn answer(code: i32, out: &str) -> serde_json::Value {
    assert_eq!(code, OK, "{out}");
    let line = out.lines().find(|l| l.starts_with('{')).expect("answer");
    serde_json::from_str(line).expect("json")
}

fn dns(d: &Daemon, id: &str, how: &str, server: &str, name: &str, t: &str) -> serde_json::Value {
    let (code, out) = d.run(id, &["dns", how, server, name, t]);
    answer(code, &out)
}

/// A query whose name has exactly these wire labels.
fn dns_labels(
    d: &Daemon,
    id: &str,
    how: &str,
    server: &str,
    t: &str,
    labels: &[&str],
) -> serde_json::Value {
    let mut args = vec!["dns-labels", how, server, t];
    args.extend_from_slice(labels);
    let (code, out) = d.run(id, &args);
    answer(code, &out)
}

fn answers(v: &serde_json::Value) -> Vec<String> {
    v["answers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn tcp(d: &Daemon, id: &str, ip: &str, port: u16) -> i32 {
    d.run(id, &["tcp", ip, &port.to_string()]).0
}

#[test]
fn a_dot_inside_a_label_never_passes_a_wildcard() {
    let peer = Peer::new("ztlbl1", &["10.231.50.1/24", "fd00:231:50::1/64"]);
    // Upstream answers every name under `test.`, as the parent zone's servers might.
    let up = Dnsmasq::start_with(
        "labels",
        &[],
        60,
        &[
            "--address=/test/10.231.50.1",
            "--address=/test/fd00:231:50::1",
        ],
    );
    let srv = peer.tcp_server("10.231.50.1");
    let srv6 = peer.tcp_server("fd00:231:50::1");
    let policy = Identity::new("lbl-e")
        .egress(Rule::to(["*.lbl.test"]).ports([srv.port, srv6.port]).tcp())
        .and(
            Identity::new("lbl-a")
                .audit()
                .egress(Rule::to(["*.lbl.test"]).ports([srv.port, srv6.port]).tcp()),
        );
    let d = Daemon::start_with("dns-labels", &policy, &["--dns-upstream", &up.upstream()]);
    for (how, server, t) in WAYS {
        // The real subdomain passes.
        let a = dns_labels(&d, "lbl-e", how, server, t, &["ok", "lbl", "test"]);
        assert_eq!(a["rcode"], "NOERROR", "{how} {t}: {a}");
        // `evil2.lbl` is one label under `test.`: a sibling of the allowed domain.
        for labels in [
            &["evil2.lbl", "test"][..],
            &["a", "evil2.lbl", "test"],
            &["a\\", "lbl", "test"],
            &["a b", "lbl", "test"],
            &["caf\u{e9}", "lbl", "test"],
            &["hex:6100", "lbl", "test"],
        ] {
            let r = dns_labels(&d, "lbl-e", how, server, t, labels);
            assert_eq!(r["rcode"], "REFUSED", "{how} {t} {labels:?}: {r}");
            assert!(answers(&r).is_empty());
        }
    }
    let ev = d.wait_event("the refusal", |e| {
        e["kind"] == "dns" && e["identity"] == "lbl-e" && e["query"] == "evil2\\.lbl.test"
    });
    assert_eq!(ev["verdict"], "deny", "{ev}");
    assert_eq!(ev["reason"], "invalid_name", "{ev}");
    assert!(
        !d.events().iter().any(|e| e["identity"] == "lbl-e"
            && e["verdict"] == "allow"
            && e["query"].as_str().is_some_and(|q| q.contains('\\'))),
        "a name with an escaped label was allowed"
    );
    // Nothing was installed by them: only the real subdomain opened the address.
    assert_eq!(
        d.metric("zt_agent_dns_installed_addresses{identity=\"lbl-e\"}"),
        2.0,
        "{}",
        d.metrics()
    );
    // Audit mode never blocks: the name is forwarded, reported, and installs nothing.
    let (code, out) = d.run(
        "lbl-a",
        &[
            "dns-labels",
            "udp",
            SOME_RESOLVER4,
            "A",
            "evil2.lbl",
            "test",
        ],
    );
    let a = answer(code, &out);
    assert_eq!(answers(&a), ["10.231.50.1"], "{a}");
    let ev = d.wait_event("the audit", |e| {
        e["kind"] == "dns" && e["identity"] == "lbl-a" && e["query"] == "evil2\\.lbl.test"
    });
    assert_eq!(
        (ev["verdict"].as_str(), ev["reason"].as_str()),
        (Some("audit"), Some("invalid_name")),
        "{ev}"
    );
    assert!(ev["installed"].is_null(), "{ev}");
    assert_eq!(
        d.metric("zt_agent_dns_installed_addresses{identity=\"lbl-a\"}"),
        0.0
    );
    // The enforced identity reaches the address only as the real name's answer allowed.
    assert_eq!(tcp(&d, "lbl-e", "10.231.50.1", srv.port), OK);
}

/// Wait until `f` holds, for up to `secs` seconds.
fn eventually(secs: u64, what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_hosts_own_addresses_are_never_opened_by_an_answer() {
    // Addresses of this host (a veth end in its own namespace), and a peer's address
    // that becomes the host's later.
    let host = Veth::new("ztself1", &["10.231.51.1/24", "fd00:231:51::1/64"]);
    let peer = Peer::new("ztself2", &["10.231.52.3/24"]);
    let up = Dnsmasq::start(
        "self",
        &[
            ("10.231.51.1", "self.hst.test"),
            ("fd00:231:51::1", "self.hst.test"),
            ("::ffff:10.231.51.1", "mapped.hst.test"),
            ("10.231.51.2", "late.hst.test"),
            ("10.231.52.3", "moved.hst.test"),
        ],
        60,
    );
    let srv = TcpServer::new("10.231.51.1");
    let srv6 = TcpServer::new("fd00:231:51::1");
    let literal = TcpServer::new("10.231.51.1");
    let far = peer.tcp_server("10.231.52.3");
    let names = [
        "self.hst.test",
        "mapped.hst.test",
        "late.hst.test",
        "moved.hst.test",
    ];
    let ports = [srv.port, srv6.port, far.port];
    let policy = Identity::new("hst-e")
        .egress(Rule::to(names).ports(ports).tcp())
        .and(
            Identity::new("hst-l")
                .egress(Rule::to(["10.231.51.1"]).ports([literal.port]).tcp())
                .egress(Rule::to(["self.hst.test"]).ports([srv.port]).tcp()),
        )
        .and(
            Identity::new("hst-a")
                .audit()
                .egress(Rule::to(["self.hst.test"]).ports([srv.port]).tcp()),
        );
    let d = Daemon::start_with("dns-self", &policy, &["--dns-upstream", &up.upstream()]);
    for (how, server, t) in WAYS {
        // dnsmasq refuses A for a name it has only AAAA for.
        let names: &[&str] = if t == "A" {
            &["self.hst.test"]
        } else {
            &["self.hst.test", "mapped.hst.test"]
        };
        for name in names {
            let a = dns(&d, "hst-e", how, server, name, t);
            assert_eq!(a["rcode"], "NOERROR", "{how} {name} {t}: {a}");
            assert!(
                answers(&a).is_empty(),
                "withheld from the answer: {how} {name} {t}: {a}"
            );
        }
    }
    assert_eq!(tcp(&d, "hst-e", "10.231.51.1", srv.port), DENIED);
    assert_eq!(tcp(&d, "hst-e", "fd00:231:51::1", srv6.port), DENIED);
    let ev = d.wait_event("withheld", |e| {
        e["identity"] == "hst-e" && e["query"] == "self.hst.test" && e["qtype"] == "A"
    });
    assert_eq!(ev["withheld"][0], "10.231.51.1", "{ev}");
    assert!(ev["installed"].is_null(), "{ev}");

    // Kept current: an address the host takes after start is never opened either.
    let ip = |args: &[&str]| {
        assert!(
            Command::new("ip")
                .args(args)
                .status()
                .expect("ip")
                .success(),
            "ip {args:?}"
        );
    };
    ip(&["addr", "add", "10.231.51.2/24", "dev", "ztself1"]);
    let a = dns(&d, "hst-e", "udp", SOME_RESOLVER4, "late.hst.test", "A");
    assert!(answers(&a).is_empty(), "{a}");
    // An address opened while it was someone else's is closed once the host takes it.
    let a = dns(&d, "hst-e", "udp", SOME_RESOLVER4, "moved.hst.test", "A");
    assert_eq!(answers(&a), ["10.231.52.3"], "{a}");
    assert_eq!(tcp(&d, "hst-e", "10.231.52.3", far.port), OK);
    ip(&["addr", "add", "10.231.52.3/32", "dev", "ztself1"]);
    eventually(5, "the address stays open to the identity", || {
        tcp(&d, "hst-e", "10.231.52.3", far.port) == DENIED
    });

    // A literal rule covering the address lets the identity see it, on that rule's
    // ports only.
    let a = dns(&d, "hst-l", "udp", SOME_RESOLVER4, "self.hst.test", "A");
    assert_eq!(answers(&a), ["10.231.51.1"], "{a}");
    assert_eq!(tcp(&d, "hst-l", "10.231.51.1", literal.port), OK);
    assert_eq!(tcp(&d, "hst-l", "10.231.51.1", srv.port), DENIED);

    // Audit mode: withheld and reported, nothing installed.
    let a = dns(&d, "hst-a", "tcp", SOME_RESOLVER6, "self.hst.test", "AAAA");
    assert!(answers(&a).is_empty(), "{a}");
    let ev = d.wait_event("audit withheld", |e| {
        e["identity"] == "hst-a" && e["query"] == "self.hst.test"
    });
    assert_eq!(ev["withheld"][0], "fd00:231:51::1", "{ev}");
    assert_eq!(
        d.metric("zt_agent_dns_installed_addresses{identity=\"hst-a\"}"),
        0.0
    );
    assert_eq!(
        d.metric("zt_agent_dns_installed_addresses{identity=\"hst-e\"}"),
        0.0
    );
    drop(host);
}
