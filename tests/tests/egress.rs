//! Egress enforcement against real listeners on loopback: TCP and UDP, IPv4, IPv6 and
//! IPv4-mapped, ports, ranges and CIDRs, identities side by side, children, audit mode.

use zt_agent_tests::{
    DENIED, Daemon, Identity, OK, Rule, TcpServer, UdpServer, run_probe_unenrolled,
};

#[test]
fn tcp_v4_v6_and_v4_mapped() {
    let allowed4 = TcpServer::new("127.0.0.1");
    let other4 = TcpServer::new("127.0.0.1");
    let allowed6 = TcpServer::new("::1");
    let other6 = TcpServer::new("::1");
    let policy = Identity::new("eg-tcp")
        .egress(Rule::to(["127.0.0.1"]).ports([allowed4.port]).tcp())
        .egress(Rule::to(["::1"]).ports([allowed6.port]).tcp());
    let d = Daemon::start("tcp", &policy);
    let p = |port: u16| port.to_string();

    assert_eq!(
        d.run("eg-tcp", &["tcp", "127.0.0.1", &p(allowed4.port)]).0,
        OK
    );
    let (code, out) = d.run("eg-tcp", &["tcp", "127.0.0.1", &p(other4.port)]);
    assert_eq!(code, DENIED, "{out}");
    assert_eq!(d.run("eg-tcp", &["tcp", "::1", &p(allowed6.port)]).0, OK);
    assert_eq!(d.run("eg-tcp", &["tcp", "::1", &p(other6.port)]).0, DENIED);
    // An IPv6 socket reaching an IPv4 host through a v4-mapped address is judged by
    // the IPv4 rules, both ways.
    assert_eq!(
        d.run("eg-tcp", &["tcp", "::ffff:127.0.0.1", &p(allowed4.port)])
            .0,
        OK
    );
    assert_eq!(
        d.run("eg-tcp", &["tcp", "::ffff:127.0.0.1", &p(other4.port)])
            .0,
        DENIED
    );
    // The unspecified address reaches this host's loopback: judged as loopback.
    assert_eq!(
        d.run("eg-tcp", &["tcp", "0.0.0.0", &p(allowed4.port)]).0,
        OK
    );
    assert_eq!(
        d.run("eg-tcp", &["tcp", "0.0.0.0", &p(other4.port)]).0,
        DENIED
    );
    assert_eq!(d.run("eg-tcp", &["tcp", "::", &p(other6.port)]).0, DENIED);
    assert_eq!(
        run_probe_unenrolled(&["tcp", "0.0.0.0", &p(other4.port)]).0,
        OK
    );
    // The same destinations are open to unenrolled processes.
    assert_eq!(
        run_probe_unenrolled(&["tcp", "127.0.0.1", &p(other4.port)]).0,
        OK
    );
    assert_eq!(run_probe_unenrolled(&["tcp", "::1", &p(other6.port)]).0, OK);

    let ev = d.wait_event("deny of the v4-mapped connect", |e| {
        e["verdict"] == "deny" && e["dst"] == format!("127.0.0.1:{}", other4.port)
    });
    assert_eq!(ev["identity"], "eg-tcp");
    assert_eq!(ev["kind"], "connect");
    assert_eq!(ev["protocol"], "tcp");
    assert_eq!(ev["owner"], "tests@example.com");
    assert_eq!(ev["spiffe_id"], "spiffe://zt-agent.local/eg-tcp");
    assert_eq!(ev["policy_sha256"].as_str().map(str::len), Some(64));
    assert!(ev["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    d.wait_event("deny over IPv6", |e| {
        e["verdict"] == "deny" && e["dst"] == format!("[::1]:{}", other6.port)
    });
}

#[test]
fn udp_sendto_and_connected_v4_v6() {
    let ok4 = UdpServer::new("127.0.0.1");
    let no4 = UdpServer::new("127.0.0.1");
    let ok6 = UdpServer::new("::1");
    let no6 = UdpServer::new("::1");
    let policy = Identity::new("eg-udp")
        .egress(Rule::to(["127.0.0.1"]).ports([ok4.port]).udp())
        .egress(Rule::to(["::1"]).ports([ok6.port]).udp());
    let d = Daemon::start("udp", &policy);
    for (host, ok, no) in [("127.0.0.1", &ok4, &no4), ("::1", &ok6, &no6)] {
        for mode in ["udp-sendto", "udp-connect"] {
            assert_eq!(d.run("eg-udp", &[mode, host, &ok.port.to_string()]).0, OK);
            assert_eq!(
                ok.received(),
                1,
                "{mode} to {host} allowed but not delivered"
            );
            let (code, out) = d.run("eg-udp", &[mode, host, &no.port.to_string()]);
            assert_eq!(code, DENIED, "{mode} {host}: {out}");
            assert_eq!(no.received(), 0, "{mode} to {host} denied but delivered");
        }
    }
    // v4-mapped UDP from an IPv6 socket.
    assert_eq!(
        d.run(
            "eg-udp",
            &["udp-sendto", "::ffff:127.0.0.1", &no4.port.to_string()]
        )
        .0,
        DENIED
    );
    assert_eq!(
        d.run(
            "eg-udp",
            &["udp-sendto", "::ffff:127.0.0.1", &ok4.port.to_string()]
        )
        .0,
        OK
    );
    assert_eq!(ok4.received(), 1);
    // TCP to the UDP-only rule's port is denied: the protocol is part of the rule.
    let tcp = TcpServer::new("127.0.0.1");
    let policy = Identity::new("eg-udp").egress(Rule::to(["127.0.0.1"]).ports([tcp.port]).udp());
    d.reload(&policy);
    assert_eq!(
        d.run("eg-udp", &["tcp", "127.0.0.1", &tcp.port.to_string()])
            .0,
        DENIED
    );
    d.wait_event("a sendmsg deny", |e| {
        e["kind"] == "sendmsg" && e["verdict"] == "deny" && e["protocol"] == "udp"
    });
}

#[test]
fn port_range_and_cidr() {
    // Three consecutive free ports are not guaranteed; pick a range around two servers.
    let a = TcpServer::new("127.0.0.1");
    let b = TcpServer::new("127.0.0.1");
    let (lo, hi) = (a.port.min(b.port), a.port.max(b.port));
    // A third port outside the range, for the CIDR checks.
    let outside = loop {
        let s = TcpServer::new("0.0.0.0");
        if s.port < lo || s.port > hi {
            break s;
        }
    };
    let policy = Identity::new("eg-range")
        .egress(Rule::to(["127.0.0.1"]).port_range(lo, hi).tcp())
        .egress(Rule::to(["127.0.0.0/30"]).ports([outside.port]).any());
    let d = Daemon::start("range", &policy);
    assert_eq!(
        d.run("eg-range", &["tcp", "127.0.0.1", &lo.to_string()]).0,
        OK
    );
    assert_eq!(
        d.run("eg-range", &["tcp", "127.0.0.1", &hi.to_string()]).0,
        OK
    );
    // 127.0.0.2 is inside 127.0.0.0/30; 127.0.0.5 is not. Loopback answers both.
    let o = outside.port.to_string();
    assert_eq!(d.run("eg-range", &["tcp", "127.0.0.2", &o]).0, OK);
    assert_eq!(d.run("eg-range", &["tcp", "127.0.0.5", &o]).0, DENIED);
    // The range rule is for 127.0.0.1 only.
    assert_eq!(
        d.run("eg-range", &["tcp", "127.0.0.2", &lo.to_string()]).0,
        DENIED
    );
    let below = (lo - 1).to_string();
    assert_eq!(d.run("eg-range", &["tcp", "127.0.0.1", &below]).0, DENIED);
}

#[test]
fn two_identities_side_by_side_and_children() {
    let s1 = TcpServer::new("127.0.0.1");
    let s2 = TcpServer::new("127.0.0.1");
    let policy = Identity::new("eg-one")
        .egress(Rule::to(["127.0.0.1"]).ports([s1.port]).tcp())
        .and(Identity::new("eg-two").egress(Rule::to(["127.0.0.1"]).ports([s2.port]).tcp()));
    let d = Daemon::start("pair", &policy);
    let (p1, p2) = (s1.port.to_string(), s2.port.to_string());
    // Run both at once so their tasks are enrolled side by side.
    let a = d.spawn_run("eg-one", &["loop-tcp", "127.0.0.1", &p2, "500"]);
    let b = d.spawn_run("eg-two", &["loop-tcp", "127.0.0.1", &p1, "500"]);
    for child in [a, b] {
        let out = child.wait_with_output().expect("wait");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains("ok=0 "), "cross traffic got through: {text}");
        assert!(!text.contains("denied=0 "), "nothing was tried: {text}");
    }
    assert_eq!(d.run("eg-one", &["tcp", "127.0.0.1", &p1]).0, OK);
    assert_eq!(d.run("eg-two", &["tcp", "127.0.0.1", &p2]).0, OK);
    assert_eq!(d.run("eg-one", &["tcp", "127.0.0.1", &p2]).0, DENIED);
    assert_eq!(d.run("eg-two", &["tcp", "127.0.0.1", &p1]).0, DENIED);
    // A child, and a grandchild, of the launched command keep its identity.
    assert_eq!(
        d.run("eg-one", &["child", "tcp", "127.0.0.1", &p2]).0,
        DENIED
    );
    assert_eq!(
        d.run("eg-one", &["child", "child", "tcp", "127.0.0.1", &p2])
            .0,
        DENIED
    );
    assert_eq!(d.run("eg-one", &["child", "tcp", "127.0.0.1", &p1]).0, OK);
}

#[test]
fn audit_mode_allows_and_reports() {
    let s = TcpServer::new("127.0.0.1");
    let u = UdpServer::new("127.0.0.1");
    let policy = Identity::new("eg-audit")
        .audit()
        .egress(Rule::to(["192.0.2.1"]).ports([443]).tcp());
    let d = Daemon::start("audit", &policy);
    assert_eq!(
        d.run("eg-audit", &["tcp", "127.0.0.1", &s.port.to_string()])
            .0,
        OK
    );
    assert_eq!(
        d.run(
            "eg-audit",
            &["udp-sendto", "127.0.0.1", &u.port.to_string()]
        )
        .0,
        OK
    );
    assert_eq!(u.received(), 1);
    let ev = d.wait_event("audit verdict", |e| {
        e["verdict"] == "audit" && e["dst"] == format!("127.0.0.1:{}", s.port)
    });
    assert_eq!(ev["identity"], "eg-audit");
    assert_eq!(ev["reason"], "no_rule");
    let m = d.metrics();
    assert!(
        m.contains(
            r#"zt_agent_verdicts_total{identity="eg-audit",protocol="tcp",verdict="audit"}"#
        ),
        "{m}"
    );
}
