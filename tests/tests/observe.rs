//! The observation store: what an identity did, as the daemon stored it in
//! observations.db, from real connects, datagrams, lookups and execs.

use std::time::{Duration, Instant};

use zt_agent_tests::{DENIED, Daemon, Dnsmasq, Identity, OK, Peer, Rule, TestDir, probe_bin};

/// Any resolver address: the kernel sends the query to the agent's resolver anyway.
const SOME_RESOLVER4: &str = "192.0.2.53";

/// (dest, name, port, protocol, binary, verdict, count) of every flow of `identity`.
type FlowRow = (String, String, u16, String, String, String, i64);

fn flows(d: &Daemon, identity: &str) -> Vec<FlowRow> {
    let db = d.observations();
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
    let db = d.observations();
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
    // One event per cause, then one a second: the store still counts every record.
    let d = Daemon::start_with(
        "observe",
        &policy,
        &[
            "--dns-upstream",
            &up.upstream(),
            "--events-rate",
            "1",
            "--events-burst",
            "1",
        ],
    );
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

#[test]
fn a_suggested_policy_allows_what_was_done_and_nothing_else() {
    let peer = Peer::new("ztlearn1", &["10.231.45.1/24", "10.231.45.2/24"]);
    let up = Dnsmasq::start("learn", &[("10.231.45.1", "api.learn.test")], 60);
    let named = peer.tcp_server("10.231.45.1");
    let direct = peer.tcp_server("10.231.45.2");
    let unused = peer.tcp_server("10.231.45.2");
    // Audit mode, nothing allowed but /bin/true: what it does is what it needs.
    let policy = Identity::new("learner").audit().exec_allow(["/bin/true"]);
    let d = Daemon::start_with("learn", &policy, &["--dns-upstream", &up.upstream()]);
    let (np, dp) = (named.port.to_string(), direct.port.to_string());
    let workload = |d: &Daemon| {
        [
            d.run(
                "learner",
                &["dns-tcp", SOME_RESOLVER4, "api.learn.test", &np],
            ),
            d.run("learner", &["tcp", "10.231.45.2", &dp]),
        ]
    };
    for (code, out) in workload(&d) {
        assert_eq!(code, OK, "{out}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while flows(&d, "learner")
        .iter()
        .filter(|f| f.0.starts_with("10.231.45."))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "flows never stored: {}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = d.policy_dir.display().to_string();
    let (code, yaml, err) = d.cli(&["policy", "suggest", "learner", "--policy", &dir]);
    assert_eq!(code, 0, "{err}");
    assert!(!yaml.contains("mode: audit"), "{yaml}");
    for want in [
        "    - to: [api.learn.test]".to_owned(),
        format!("      ports: [{np}]"),
        "    - to: [10.231.45.2]".to_owned(),
        format!("      ports: [{dp}]"),
        format!("      - {}", probe_bin().display()),
    ] {
        assert!(yaml.contains(&want), "no `{want}` in\n{yaml}");
    }
    let (code, diff, err) = d.cli(&[
        "policy", "suggest", "learner", "--policy", &dir, "--format", "diff",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        diff.contains("\n-  mode: audit\n") && diff.contains("\n+    - to: [api.learn.test]\n"),
        "{diff}"
    );
    // It passes `policy check` ...
    let draft = TestDir::new("learn-draft");
    std::fs::write(draft.path.join("policy.yaml"), &yaml).expect("draft");
    let (code, out, err) = d.cli_no_dirs(&["policy", "check", &draft.path.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    // ... and applied, the same workload runs with no denial,
    d.reload(&yaml);
    let before = d.events().len();
    for (code, out) in workload(&d) {
        assert_eq!(code, OK, "{out}");
    }
    // while a destination it never used stays denied.
    let (code, out) = d.run("learner", &["tcp", "10.231.45.2", &unused.port.to_string()]);
    assert_eq!(code, DENIED, "{out}");
    let unused_dst = format!("10.231.45.2:{}", unused.port);
    d.wait_event("the unused destination's denial", |e| {
        e["identity"] == "learner" && e["kind"] == "connect" && e["dst"] == unused_dst.as_str()
    });
    let after: Vec<_> = d.events()[before..]
        .iter()
        .filter(|e| {
            // What the workload did: its connects, datagrams, execs and lookups.
            e["identity"] == "learner"
                && e["verdict"] != "allow"
                && ["connect", "sendmsg", "exec", "dns"].contains(&e["kind"].as_str().unwrap_or(""))
        })
        .cloned()
        .collect();
    assert!(
        after.len() == 1 && after[0]["dst"] == unused_dst.as_str(),
        "only the unused destination is denied: {after:#?}"
    );
}

#[test]
fn review_reports_an_identitys_denials_flows_and_grants() {
    let peer = Peer::new("ztrev1", &["10.231.46.1/24"]);
    let allowed = peer.tcp_server("10.231.46.1");
    let denied = peer.tcp_server("10.231.46.1");
    let granted = peer.tcp_server("10.231.46.1");
    let policy =
        Identity::new("reviewed").egress(Rule::to(["10.231.46.1"]).ports([allowed.port]).tcp());
    let d = Daemon::start("review", &policy);
    let (ap, dp, gp) = (
        allowed.port.to_string(),
        denied.port.to_string(),
        granted.port.to_string(),
    );
    assert_eq!(d.run("reviewed", &["tcp", "10.231.46.1", &ap]).0, OK);
    for _ in 0..2 {
        assert_eq!(d.run("reviewed", &["tcp", "10.231.46.1", &dp]).0, DENIED);
    }
    let (code, _, err) = d.cli(&[
        "grant",
        "reviewed",
        "--to",
        "10.231.46.1",
        "--ports",
        &gp,
        "--for",
        "10m",
        "--reason",
        "ticket 42",
    ]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flows(&d, "reviewed")
        .iter()
        .any(|f| f.2 == denied.port && f.5 == "deny" && f.6 == 2)
    {
        assert!(
            Instant::now() < deadline,
            "denials never stored: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = d.policy_dir.display().to_string();
    let (code, out, err) = d.cli(&["review", "reviewed", "--json", "--policy", &dir]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let i = &r["identities"][0];
    assert_eq!(r["identities"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(
        (&i["name"], &i["mode"], &i["egress_rules"]),
        (&"reviewed".into(), &"enforce".into(), &1.into()),
        "{i}"
    );
    assert_eq!(i["denials"].as_array().map(Vec::len), Some(1), "{i}");
    let deny = &i["denials"][0];
    assert_eq!(
        (&deny["dest"], &deny["port"], &deny["count"]),
        (&"10.231.46.1".into(), &denied.port.into(), &2.into()),
        "{i}"
    );
    let g = &i["grants"][0];
    assert_eq!(
        (&g["reason"], &g["state"]),
        (&"ticket 42".into(), &"active".into()),
        "{i}"
    );
    assert!(
        i["decisions"]
            .as_array()
            .is_some_and(|v| v.iter().any(|d| d["reason"] == "ticket 42")),
        "{i}"
    );
    let (code, md, err) = d.cli(&["review", "reviewed", "--policy", &dir]);
    assert_eq!(code, 0, "{err}");
    assert!(
        md.contains("## reviewed") && md.contains("### Denials"),
        "{md}"
    );
    assert!(
        md.contains(&format!("| 10.231.46.1 | {dp} | tcp |")),
        "{md}"
    );
    // An identity the policy does not have is a usage error.
    let (code, _, err) = d.cli(&["review", "nobody-here", "--policy", &dir]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no identity `nobody-here`"), "{err}");
}
