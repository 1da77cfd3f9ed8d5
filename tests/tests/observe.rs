//! The observation store: what an identity did, as the daemon stored it in
//! observations.db, from real connects, datagrams, lookups and execs.

use std::time::{Duration, Instant};

use zt_agent_tests::{Daemon, Dnsmasq, Identity, OK, Peer, probe_bin};

/// Any resolver address: the kernel sends the query to the agent's resolver anyway.
const SOME_RESOLVER4: &str = "192.0.2.53";

/// (dest, name, port, protocol, binary, verdict, count) of every flow of `identity`.
type FlowRow = (String, String, u16, String, String, String, i64);

fn flows(d: &Daemon, identity: &str) -> Vec<FlowRow> {
    let db = rusqlite::Connection::open_with_flags(
        d.state_dir.join("observations.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the store");
    let mut q = db
        .prepare(
            "SELECT dest, name, port, protocol, binary, verdict, count FROM flows
             WHERE identity = ?1 ORDER BY dest, port, protocol",
        )
        .expect("query");
    q.query_map([identity], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("decode")
}

fn execs(d: &Daemon, identity: &str) -> Vec<(String, String, String, i64)> {
    let db = rusqlite::Connection::open_with_flags(
        d.state_dir.join("observations.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the store");
    let mut q = db
        .prepare("SELECT file, sha256, verdict, count FROM execs WHERE identity = ?1")
        .expect("query");
    q.query_map([identity], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("decode")
}

#[test]
fn what_an_audited_identity_did_is_stored_with_its_dns_names_and_counts() {
    let peer = Peer::new("ztobs1", &["10.231.44.1/24", "10.231.44.2/24"]);
    let up = Dnsmasq::start("observe", &[("10.231.44.1", "api.observe.test")], 60);
    let named = peer.tcp_server("10.231.44.1");
    let direct = peer.tcp_server("10.231.44.2");
    // Audit mode and nothing allowed: every connect, datagram and exec is reported.
    let policy = Identity::new("observed").audit().exec_allow(["/bin/true"]);
    let d = Daemon::start_with("observe", &policy, &["--dns-upstream", &up.upstream()]);
    let port = named.port.to_string();
    for _ in 0..3 {
        let (code, out) = d.run(
            "observed",
            &["dns-tcp", SOME_RESOLVER4, "api.observe.test", &port],
        );
        assert_eq!(code, OK, "{out}");
    }
    let dport = direct.port.to_string();
    assert_eq!(d.run("observed", &["tcp", "10.231.44.2", &dport]).0, OK);
    assert_eq!(
        d.run("observed", &["udp-sendto", "10.231.44.2", "4789"]).0,
        OK
    );

    let probe = probe_bin().display().to_string();
    let mut want: Vec<FlowRow> = vec![
        (
            "10.231.44.1".into(),
            "api.observe.test".into(),
            named.port,
            "tcp".into(),
            probe.clone(),
            "audit".into(),
            3,
        ),
        (
            "10.231.44.2".into(),
            String::new(),
            direct.port,
            "tcp".into(),
            probe.clone(),
            "audit".into(),
            1,
        ),
        (
            "10.231.44.2".into(),
            String::new(),
            4789,
            "udp".into(),
            probe.clone(),
            "audit".into(),
            1,
        ),
    ];
    want.sort();
    // Written once a second.
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let mut got: Vec<FlowRow> = flows(&d, "observed")
            .into_iter()
            .filter(|f| f.0.starts_with("10.231.44."))
            .collect();
        got.sort();
        if got == want || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(got, want, "{}", d.log());
    // The probe ran five times, outside the exec allowlist: audited, with its digest.
    let e = execs(&d, "observed");
    let probe_execs: Vec<_> = e.iter().filter(|x| x.0 == probe).collect();
    assert_eq!(probe_execs.len(), 1, "{e:?}");
    assert_eq!(probe_execs[0].2, "audit", "{e:?}");
    assert_eq!(probe_execs[0].3, 5, "{e:?}");
    assert_eq!(probe_execs[0].1.len(), 64, "{e:?}");
    assert!(
        d.metric(r#"zt_agent_observed_rows{table="flows"}"#) >= 3.0,
        "{}",
        d.metrics()
    );
}

#[test]
fn an_observation_store_that_is_not_roots_keeps_the_daemon_from_starting() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = Daemon::prepare("observe-trust", Identity::new("observed-t"), &[]);
    std::fs::create_dir_all(&d.state_dir).expect("state dir");
    std::fs::set_permissions(&d.state_dir, std::fs::Permissions::from_mode(0o700)).expect("mode");
    let db = d.state_dir.join("observations.db");
    std::fs::write(&db, b"").expect("store file");
    std::os::unix::fs::chown(&db, Some(65534), Some(65534)).expect("chown");
    let (code, err) = d.expect_refusal();
    assert_eq!(code, Some(zt_agent_host::exit::CANTCREAT.into()), "{err}");
    assert!(
        err.contains("observation store") && err.contains("not owned by root"),
        "{err}"
    );
}
