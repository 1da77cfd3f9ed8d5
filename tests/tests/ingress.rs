//! Inbound for enrolled identities, against real listeners and real peers: binds need
//! an ingress rule (port 0 excepted), connection attempts and datagrams from peers no
//! rule allows are dropped (TCP and UDP, IPv4, IPv6 and v4-mapped), replies on the
//! identity's own traffic pass, a listen() without bind and a listener handed to
//! another process or shared by SO_REUSEPORT are judged too, audit mode reports.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use zt_agent_tests::{
    Background, DENIED, Daemon, Identity, InRule, OK, Rule, Selector, TIMEOUT, TestDir, free_port,
    probe_bin, reported, run_probe_unenrolled, send_udp, spawn_probe_unenrolled,
};

/// A client's connect from the test (unenrolled), optionally from `src`: its exit code
/// as zt-probe reports it (OK, TIMEOUT when the SYN was dropped).
fn connect(src: Option<&str>, host: &str, port: u16, millis: u64) -> (i32, String) {
    let (p, ms) = (port.to_string(), millis.to_string());
    match src {
        None => run_probe_unenrolled(&["connect-wait", host, &p, &ms]),
        Some(s) => run_probe_unenrolled(&["connect-wait", "--from", s, host, &p, &ms]),
    }
}

#[test]
fn binds_and_connections_need_an_ingress_rule() {
    let port = free_port();
    let p = port.to_string();
    let d = Daemon::start("in-tcp", Identity::new("in-tcp"));

    // No ingress rule: no listening port, over either protocol; port 0 is a client's.
    let (code, out) = d.run("in-tcp", &["bind", "tcp", "127.0.0.1", &p]);
    assert_eq!(code, DENIED, "{out}");
    assert_eq!(d.run("in-tcp", &["bind", "udp", "127.0.0.1", &p]).0, DENIED);
    assert_eq!(d.run("in-tcp", &["bind", "tcp", "::1", &p]).0, DENIED);
    assert_eq!(d.run("in-tcp", &["bind", "tcp", "127.0.0.1", "0"]).0, OK);
    assert_eq!(d.run("in-tcp", &["bind", "udp", "::", "0"]).0, OK);
    d.wait_event("the bind deny", |e| {
        e["kind"] == "bind"
            && e["verdict"] == "deny"
            && e["port"] == port
            && e["protocol"] == "tcp"
            && e["local"] == format!("127.0.0.1:{port}")
    });

    // listen() without bind takes an ephemeral port: nobody reaches it either.
    let l = Background::start(d.spawn_run("in-tcp", &["listen", "127.0.0.1", "auto", "1", "2500"]));
    let auto = l.port;
    let (code, out) = connect(None, "127.0.0.1", auto, 400);
    assert_eq!(
        code, TIMEOUT,
        "the connect to a listen() without bind got in: {out}"
    );
    let (_, out) = l.finish();
    assert_eq!(reported(&out, "accepted"), Some(0), "{out}");
    let ev = d.wait_event("the inbound deny", |e| {
        e["kind"] == "inbound" && e["verdict"] == "deny" && e["port"] == auto
    });
    assert_eq!(ev["identity"], "in-tcp");
    assert_eq!(ev["protocol"], "tcp");
    assert!(
        ev["src"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{ev}"
    );

    // A rule for one peer and one port: that port binds, that peer gets in (data both
    // ways), other peers do not, and the port is still closed to UDP.
    d.reload(Identity::new("in-tcp").ingress(InRule::from(["127.0.0.2"]).ports([port]).tcp()));
    let l = Background::start(d.spawn_run("in-tcp", &["listen", "127.0.0.1", &p, "1", "6000"]));
    assert_eq!(l.port, port);
    let (code, out) = connect(None, "127.0.0.1", port, 400);
    assert_eq!(code, TIMEOUT, "a peer no rule allows got in: {out}");
    let (code, out) = connect(Some("127.0.0.2"), "127.0.0.1", port, 3000);
    assert_eq!(code, OK, "the allowed peer was kept out: {out}");
    let (_, out) = l.finish();
    assert_eq!(reported(&out, "accepted"), Some(1), "{out}");
    assert!(
        out.contains("read=2"),
        "no data came in over the accepted socket: {out}"
    );
    assert_eq!(d.run("in-tcp", &["bind", "udp", "127.0.0.1", &p]).0, DENIED);

    assert!(
        d.metric(
            r#"zt_agent_ingress_verdicts_total{identity="in-tcp",protocol="tcp",verdict="deny"}"#
        ) >= 3.0,
        "{}",
        d.metrics()
    );
    assert!(
        d.metric(
            r#"zt_agent_ingress_verdicts_total{identity="in-tcp",protocol="tcp",verdict="allow"}"#
        ) >= 2.0
    );
}

#[test]
fn ipv6_and_v4_mapped_peers_are_judged_by_their_own_rules() {
    let port = free_port();
    let p = port.to_string();
    let v4_only = Identity::new("in-six").ingress(InRule::from(["127.0.0.1"]).ports([port]).tcp());
    let d = Daemon::start("in-six", &v4_only);
    // A dual-stack listener: IPv4 peers arrive v4-mapped, and are IPv4 peers.
    let l = Background::start(d.spawn_run("in-six", &["listen", "::", &p, "2", "6000"]));
    assert_eq!(connect(None, "127.0.0.1", port, 3000).0, OK);
    let (code, out) = connect(None, "::1", port, 400);
    assert_eq!(code, TIMEOUT, "an IPv6 peer passed an IPv4 rule: {out}");
    let (_, out) = l.finish();
    assert_eq!(reported(&out, "accepted"), Some(1), "{out}");
    d.wait_event("the IPv6 inbound deny", |e| {
        e["kind"] == "inbound"
            && e["src"].as_str().is_some_and(|s| s.starts_with("[::1]:"))
            && e["port"] == port
    });

    d.reload(Identity::new("in-six").ingress(InRule::from(["::1"]).ports([port]).tcp()));
    let l = Background::start(d.spawn_run("in-six", &["listen", "::", &p, "2", "6000"]));
    assert_eq!(connect(None, "::1", port, 3000).0, OK);
    let (code, out) = connect(None, "127.0.0.1", port, 400);
    assert_eq!(code, TIMEOUT, "a v4-mapped peer passed an IPv6 rule: {out}");
    let (_, out) = l.finish();
    assert_eq!(reported(&out, "accepted"), Some(1), "{out}");
}

#[test]
fn datagrams_from_peers_no_rule_allows_are_dropped() {
    let (port, port6) = (free_port(), free_port());
    let policy = Identity::new("in-udp")
        .ingress(InRule::from(["127.0.0.2"]).ports([port]).udp())
        .ingress(InRule::from(["::1"]).ports([port6]).udp());
    let d = Daemon::start("in-udp", &policy);
    // recvfrom on an unconnected socket: only the allowed peer's datagrams arrive.
    let r = Background::start(d.spawn_run(
        "in-udp",
        &["udp-recv", "127.0.0.1", &port.to_string(), "2000"],
    ));
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    send_udp("127.0.0.1", to, 3);
    send_udp("127.0.0.2", to, 2);
    let (_, out) = r.finish();
    assert_eq!(reported(&out, "received"), Some(2), "{out}");
    assert!(!out.contains("from=127.0.0.1:"), "{out}");
    let r =
        Background::start(d.spawn_run("in-udp", &["udp-recv", "::", &port6.to_string(), "2000"]));
    send_udp(
        "::1",
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port6)),
        2,
    );
    // v4-mapped on the dual-stack socket: an IPv4 peer no rule allows.
    send_udp("127.0.0.1", SocketAddr::from(([127, 0, 0, 1], port6)), 2);
    let (_, out) = r.finish();
    assert_eq!(reported(&out, "received"), Some(2), "{out}");
    d.wait_event("the UDP inbound deny", |e| {
        e["kind"] == "inbound" && e["protocol"] == "udp" && e["verdict"] == "deny"
    });
    // A port no rule names cannot be bound; one a rule names can, whatever address.
    let other = free_port().to_string();
    let (code, out) = d.run("in-udp", &["udp-recv", "127.0.0.2", &other, "10"]);
    assert_eq!(code, DENIED, "{out}");
    assert_eq!(
        d.run("in-udp", &["bind", "tcp", "127.0.0.1", &port.to_string()])
            .0,
        DENIED
    );
}

/// Answers every datagram with one of its own, from its own port, until the test ends.
fn echo_server() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind echo");
    let port = s.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(b"pong", from);
        }
    });
    port
}

#[test]
fn replies_pass_and_strangers_do_not() {
    let echo = echo_server();
    let policy = Identity::new("in-reply").egress(Rule::to(["127.0.0.1"]).ports([echo]).udp());
    let d = Daemon::start("in-reply", &policy);
    let c = Background::start(d.spawn_run(
        "in-reply",
        &["udp-ping", "127.0.0.1", &echo.to_string(), "1500"],
    ));
    // Someone else writes to the client's port: not a reply, and no ingress rule.
    send_udp("127.0.0.1", SocketAddr::from(([127, 0, 0, 1], c.port)), 3);
    let (_, out) = c.finish();
    assert_eq!(reported(&out, "received"), Some(1), "{out}");
    assert!(
        out.contains(&format!("from=127.0.0.1:{echo}")),
        "the reply was lost: {out}"
    );
    // TCP replies on a connection the identity made pass as before.
    let s = zt_agent_tests::TcpServer::new("127.0.0.1");
    let policy = Identity::new("in-reply").egress(Rule::to(["127.0.0.1"]).ports([s.port]).tcp());
    d.reload(&policy);
    assert_eq!(
        d.run("in-reply", &["tcp", "127.0.0.1", &s.port.to_string()])
            .0,
        OK
    );
}

#[test]
fn audit_mode_reports_and_lets_inbound_through() {
    let port = free_port();
    let p = port.to_string();
    let d = Daemon::start("in-audit", Identity::new("in-audit").audit());
    let l = Background::start(d.spawn_run("in-audit", &["listen", "127.0.0.1", &p, "1", "6000"]));
    assert_eq!(connect(None, "127.0.0.1", port, 3000).0, OK);
    let (_, out) = l.finish();
    assert_eq!(reported(&out, "accepted"), Some(1), "{out}");
    d.wait_event("the bind audit", |e| {
        e["kind"] == "bind" && e["verdict"] == "audit" && e["port"] == port
    });
    d.wait_event("the inbound audit", |e| {
        e["kind"] == "inbound" && e["verdict"] == "audit" && e["port"] == port
    });
}

#[test]
fn a_listener_keeps_its_identity_in_other_hands_and_in_a_reuseport_group() {
    let port = free_port();
    let p = port.to_string();
    let policy = Identity::new("in-pass").ingress(InRule::from(["127.0.0.2"]).ports([port]).tcp());
    let d = Daemon::start("in-pass", &policy);

    // Made by the identity, accepted on by an unenrolled process: still judged.
    let dir = d.work.join("sock");
    std::fs::create_dir_all(&dir).expect("dir");
    // The workload runs as nobody and must reach the socket path.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let sock = dir.join("pass.sock").display().to_string();
    let maker = Background::start(d.spawn_run("in-pass", &["listen-pass", &sock, "127.0.0.1", &p]));
    let taker = Background::start(spawn_probe_unenrolled(&["accept-fd", &sock, "1", "5000"]));
    assert_eq!(taker.port, port);
    let (code, out) = connect(None, "127.0.0.1", port, 400);
    assert_eq!(
        code, TIMEOUT,
        "the passed listener let a stranger in: {out}"
    );
    assert_eq!(connect(Some("127.0.0.2"), "127.0.0.1", port, 3000).0, OK);
    let (_, out) = taker.finish();
    assert_eq!(reported(&out, "accepted"), Some(1), "{out}");
    let _ = maker.finish();

    // SO_REUSEPORT with an unenrolled listener of the same user: connections the
    // kernel hands to the enrolled one are judged by its identity, the others pass.
    std::thread::sleep(Duration::from_millis(100));
    let enrolled = Background::start(d.spawn_run(
        "in-pass",
        &["listen", "--reuseport", "127.0.0.1", &p, "64", "8000"],
    ));
    let other = Background::start(spawn_probe_unenrolled(&[
        "as-uid",
        "65534",
        "listen",
        "--reuseport",
        "127.0.0.1",
        &p,
        "64",
        "8000",
    ]));
    let (mut ok, mut dropped) = (0, 0);
    for _ in 0..12 {
        match connect(None, "127.0.0.1", port, 300).0 {
            OK => ok += 1,
            TIMEOUT => dropped += 1,
            c => panic!("unexpected connect outcome {c}"),
        }
    }
    let (_, eout) = enrolled.finish();
    let (_, oout) = other.finish();
    assert_eq!(reported(&eout, "accepted"), Some(0), "{eout}");
    assert_eq!(reported(&oout, "accepted"), Some(ok), "{oout}");
    assert_eq!(ok + dropped, 12);
}

#[test]
fn a_listener_opened_before_enrollment_takes_the_identity() {
    let port = free_port();
    let p = port.to_string();
    let files = TestDir::new("in-before");
    let service = files.copy(&probe_bin(), "service");
    let policy = Identity::new("in-before")
        .selector(Selector::exe(&service))
        .ingress(InRule::from(["127.0.0.2"]).ports([port]).tcp());
    let d = Daemon::start("in-before", &policy);
    // Socket activation: the listener is made unenrolled, then the service binary is
    // exec'd with it, which enrolls the task; the kernel recorded no identity for it.
    let l = Background::start(spawn_probe_unenrolled(&[
        "inherit-listen",
        "127.0.0.1",
        &p,
        &service,
        "accept-env",
        "1",
        "8000",
    ]));
    assert_eq!(l.port, port);
    d.wait_event("the exec that enrolled the service", |e| {
        e["kind"] == "exec" && e["enrolled_by"] == "exe" && e["identity"] == "in-before"
    });
    // The daemon gives the inherited listener its identity right after that exec.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !d
        .log()
        .contains("sockets opened before enrollment now carry the identity")
    {
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out) = connect(None, "127.0.0.1", port, 400);
    assert_eq!(
        code, TIMEOUT,
        "the inherited listener let a stranger in: {out}"
    );
    assert_eq!(connect(Some("127.0.0.2"), "127.0.0.1", port, 3000).0, OK);
    let (_, out) = l.finish();
    assert_eq!(reported(&out, "accepted"), Some(1), "{out}");
}
