//! Accounting and upload limits: exact byte counts of real TCP and UDP transfers by
//! an enrolled task, per identity (metrics) and per peer (the observation store), and
//! a limit that stops a transfer.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use zt_agent_tests::{DENIED, Daemon, Identity, OK, Rule};

const TCP_REPLY: usize = 300_000;
const UDP_REPLY: usize = 700;

/// A loopback TCP server (unenrolled, in the test process): reads until the client
/// shuts its side, then sends `TCP_REPLY` bytes and closes.
fn tcp_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                let _ = c.write_all(&vec![7u8; TCP_REPLY]);
            });
        }
    });
    port
}

/// A loopback UDP server answering each datagram with `UDP_REPLY` bytes.
fn udp_server() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = s.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&[9u8; UDP_REPLY], from);
        }
    });
    port
}

/// (dest, port, protocol, sent, received) of every peer of `identity` in the store.
fn stored(d: &Daemon, identity: &str) -> Vec<(String, u16, String, i64, i64)> {
    let db = d.observations();
    let mut q = db
        .prepare(
            "SELECT dest, port, protocol, sent, received FROM traffic
             WHERE identity = ?1 ORDER BY protocol, port",
        )
        .expect("query");
    q.query_map([identity], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("decode")
}

#[test]
fn known_tcp_and_udp_transfers_are_counted_to_the_byte() {
    let (tport, uport) = (tcp_server(), udp_server());
    let policy = Identity::new("mover")
        .egress(Rule::to(["127.0.0.1/32"]).ports([tport]).tcp())
        .egress(Rule::to(["127.0.0.1/32"]).ports([uport]).udp());
    let d = Daemon::start_with("traffic", &policy, &[]);
    let (t, u) = (tport.to_string(), uport.to_string());
    let (code, out) = d.run("mover", &["tcp-transfer", "127.0.0.1", &t, "1000000"]);
    assert_eq!(code, OK, "{out}");
    assert!(out.contains(&format!("received={TCP_REPLY}")), "{out}");
    let (code, out) = d.run("mover", &["udp-transfer", "127.0.0.1", &u, "50", "1200"]);
    assert_eq!(code, OK, "{out}");

    let sent = 1_000_000 + 50 * 1200;
    // TCP's received bytes are the kernel's bytes_received, which counts the peer's FIN
    // as one byte.
    let received = TCP_REPLY + 1 + 50 * UDP_REPLY;
    // The kernel's totals, read at the scrape.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tx = d.metric(r#"zt_agent_egress_bytes_total{identity="mover"}"#);
        let rx = d.metric(r#"zt_agent_ingress_bytes_total{identity="mover"}"#);
        if (tx, rx) == (sent as f64, received as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "egress {tx} ingress {rx}, want {sent} {received}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Per peer, in the store (written once a second).
    let want = vec![
        (
            "127.0.0.1".to_owned(),
            tport,
            "tcp".to_owned(),
            1_000_000,
            TCP_REPLY as i64 + 1,
        ),
        (
            "127.0.0.1".to_owned(),
            uport,
            "udp".to_owned(),
            60_000,
            50 * UDP_REPLY as i64,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = stored(&d, "mover");
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{got:?} != {want:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // review shows the same bytes by destination.
    let dir = d.policy_dir.display().to_string();
    let (code, out, err) = d.cli(&["review", "mover", "--json", "--policy", &dir]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let t = &r["identities"][0]["traffic"];
    assert_eq!(t[0]["port"], tport, "{r}");
    assert_eq!(t[0]["sent_bytes"], 1_000_000, "{r}");
    assert_eq!(t[0]["received_bytes"], TCP_REPLY + 1, "{r}");
    assert_eq!(t[1]["sent_bytes"], 60_000, "{r}");
    assert_eq!(
        d.metric(r#"zt_agent_limit_dropped_packets_total{identity="mover"}"#),
        0.0
    );
}

#[test]
fn an_upload_limit_stops_a_transfer_and_denies_new_connects() {
    let port = tcp_server();
    let policy = Identity::new("capped")
        .egress(Rule::to(["127.0.0.1/32"]).ports([port]).tcp())
        .limit("2MiB", "1m", "identity");
    let d = Daemon::start_with("limits", &policy, &[]);
    let p = port.to_string();
    // Under the cap: fine.
    let (code, out) = d.run("capped", &["tcp-transfer", "127.0.0.1", &p, "1000000"]);
    assert_eq!(code, OK, "{out}");
    // 64 MiB at 4 MiB/s: past 2 MiB within the first second, then stopped.
    let (code, out) = d.run(
        "capped",
        &["tcp-transfer", "127.0.0.1", &p, "67108864", "4194304"],
    );
    assert_ne!(code, OK, "{out}");
    let anomaly = d.wait_event("anomaly limit_exceeded", |e| {
        e["kind"] == "anomaly" && e["reason"] == "limit_exceeded" && e["identity"] == "capped"
    });
    assert_eq!(anomaly["response"], "enforced", "{anomaly}");
    assert_eq!(
        anomaly["evidence"]["limit_bytes"],
        2 * 1024 * 1024,
        "{anomaly}"
    );
    let tx = d.metric(r#"zt_agent_egress_bytes_total{identity="capped"}"#);
    assert!(
        tx > 2.0 * 1048576.0 && tx < 12.0 * 1048576.0,
        "sent {tx} bytes\n{out}\n{}",
        d.log()
    );
    assert!(d.metric(r#"zt_agent_limit_dropped_packets_total{identity="capped"}"#) > 0.0);
    assert_eq!(
        d.metric(r#"zt_agent_anomalies_total{identity="capped",kind="limit_exceeded"}"#),
        1.0
    );
    // A new connect is denied, with the reason.
    let (code, out) = d.run("capped", &["tcp", "127.0.0.1", &p]);
    assert_eq!(code, DENIED, "{out}");
    d.wait_event("connect denied by the limit", |e| {
        e["kind"] == "connect" && e["reason"] == "limit_exceeded" && e["identity"] == "capped"
    });
}

#[test]
fn a_destination_limit_stops_one_peer_and_not_another() {
    let (capped, other) = (tcp_server(), tcp_server());
    let policy = Identity::new("perdest")
        .egress(Rule::to(["127.0.0.1/32"]).ports([capped, other]).tcp())
        .limit("1MiB", "1m", "destination");
    let d = Daemon::start_with("destlimit", &policy, &[]);
    let (a, b) = (capped.to_string(), other.to_string());
    let (code, out) = d.run(
        "perdest",
        &["tcp-transfer", "127.0.0.1", &a, "33554432", "4194304"],
    );
    assert_ne!(code, OK, "{out}");
    let anomaly = d.wait_event("anomaly limit_exceeded", |e| {
        e["kind"] == "anomaly" && e["reason"] == "limit_exceeded"
    });
    assert_eq!(anomaly["dst"], format!("127.0.0.1:{capped}"), "{anomaly}");
    assert_eq!(anomaly["evidence"]["scope"], "destination", "{anomaly}");
    // The capped peer stays closed to new connects; the other is reachable.
    assert_eq!(d.run("perdest", &["tcp", "127.0.0.1", &a]).0, DENIED);
    let (code, out) = d.run("perdest", &["tcp-transfer", "127.0.0.1", &b, "500000"]);
    assert_eq!(code, OK, "{out}");
}
