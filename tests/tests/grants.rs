//! Just-in-time access against the real kernel: grants that open destinations and
//! lapse on time (also while the daemon is SIGKILLed), task-scoped grants, `ask` rules
//! approved, denied or timed out (for connects and for DNS lookups held by the
//! resolver), time windows around the test's own clock, the control socket's
//! refusals, grants across restarts, the audit chain, and every bad input.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zt_agent_tests::{
    Cgroup, DENIED, Daemon, Dnsmasq, Identity, OK, Peer, Rule, Selector, TcpServer,
};

const LO: &str = "127.0.0.1";

fn tcp(d: &Daemon, id: &str, port: u16) -> i32 {
    d.run(id, &["tcp", LO, &port.to_string()]).0
}

/// Poll `f` for up to `secs` seconds until it returns `Some`.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pending request of `identity` for `destination`, once raised.
fn pending(d: &Daemon, identity: &str, destination: &str) -> serde_json::Value {
    wait_for("a pending request", 20, || {
        d.cli_json(&["requests"])
            .as_array()?
            .iter()
            .find(|r| {
                r["identity"] == identity
                    && r["destination"] == destination
                    && r["state"] == "pending"
            })
            .cloned()
    })
}

fn grants_of(d: &Daemon) -> Vec<serde_json::Value> {
    d.cli_json(&["grants"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The run id (last part of its launch cgroup) of the enrolled task of `identity`
/// started by the `zt-agent run` process `launcher`.
fn run_id_of(launcher: &Child) -> String {
    wait_for("the run's workload", 20, || {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", launcher.id())).ok()?;
        let pid: u32 = children.split_whitespace().next()?.parse().ok()?;
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?.to_owned();
        path.starts_with("/zt/")
            .then(|| path.rsplit('/').next().map(str::to_owned))
            .flatten()
    })
}

fn exit_of(child: Child) -> (i32, String) {
    let out = child.wait_with_output().expect("wait run");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn grant_opens_and_lapses_on_time_while_the_daemon_is_killed() {
    let srv = TcpServer::new(LO);
    let policy = Identity::new("gr-lapse").egress(Rule::to(["192.0.2.1"]).ports([443]));
    let mut d = Daemon::start("gr-lapse", &policy);
    assert_eq!(tcp(&d, "gr-lapse", srv.port), DENIED);
    let port = srv.port.to_string();
    // `why` names the cause and the command that would give access.
    let why = wait_for("the denial in `why`", 20, || {
        d.cli_json(&["why", "--identity", "gr-lapse"])
            .as_array()?
            .first()
            .cloned()
    });
    assert_eq!(why["cause"], "no rule", "{why}");
    assert_eq!(why["dst"], format!("{LO}:{port}"));
    let command = why["command"].as_str().unwrap_or_default().to_owned();
    assert!(
        command.starts_with(&format!(
            "zt-agent grant gr-lapse --to {LO} --ports {port} --protocol tcp --for 1h --reason"
        )),
        "{command}"
    );
    let (code, out, err) = d.cli(&[
        "grant",
        "gr-lapse",
        "--to",
        LO,
        "--ports",
        &port,
        "--protocol",
        "tcp",
        "--for",
        "4s",
        "--reason",
        "debugging",
    ]);
    // The grant's clock started before the command returned.
    let t0 = Instant::now();
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    assert!(id.starts_with("g-"), "{out}");
    assert_eq!(tcp(&d, "gr-lapse", srv.port), OK);
    // UDP was not granted.
    assert_eq!(d.run("gr-lapse", &["udp-sendto", LO, &port]).0, DENIED);
    let ev = d.wait_event("grant issued", |e| {
        e["kind"] == "grant" && e["action"] == "issued"
    });
    assert_eq!(ev["grant_id"], id.as_str());
    assert_eq!(ev["why"], "debugging");
    assert_eq!(ev["scope"], "identity");
    assert!(
        ev["who"].as_str().is_some_and(|w| w.starts_with("root")),
        "{ev}"
    );
    assert_eq!(
        d.metric("zt_agent_grants_active{identity=\"gr-lapse\"}"),
        1.0
    );
    // The kernel lapses it on time with nobody to remove it.
    d.kill9();
    assert_eq!(tcp(&d, "gr-lapse", srv.port), OK, "still in force");
    std::thread::sleep(
        Duration::from_secs(4).saturating_sub(t0.elapsed()) + Duration::from_millis(300),
    );
    assert_eq!(
        tcp(&d, "gr-lapse", srv.port),
        DENIED,
        "lapsed while the daemon was down"
    );
    d.restart();
    assert_eq!(tcp(&d, "gr-lapse", srv.port), DENIED);
    let g = wait_for("the grant recorded expired", 10, || {
        grants_of(&d)
            .into_iter()
            .find(|g| g["id"] == id.as_str() && g["state"] == "expired")
    });
    assert_eq!(g["identity"], "gr-lapse");
    d.wait_event("grant expired", |e| {
        e["action"] == "expired" && e["grant_id"] == id.as_str()
    });
}

#[test]
fn run_grant_is_no_use_to_another_run_and_dies_with_its_run() {
    let srv = TcpServer::new(LO);
    let port = srv.port.to_string();
    let policy = Identity::new("gr-run");
    let d = Daemon::start("gr-run", &policy);
    let first = d.spawn_run("gr-run", &["until-tcp", LO, &port, "20000"]);
    let run = run_id_of(&first);
    let (code, out, err) = d.cli(&[
        "grant",
        "gr-run",
        "--to",
        "127.0.0.0/8",
        "--ports",
        &port,
        "--for",
        "1m",
        "--reason",
        "this run only",
        "--run",
        &run,
    ]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    let (code, out) = exit_of(first);
    assert_eq!(code, OK, "the run the grant names connects: {out}");
    // Another run of the same identity gets nothing from it.
    assert_eq!(tcp(&d, "gr-run", srv.port), DENIED);
    // The run ended: the grant went with it.
    let ev = d.wait_event("grant revoked with its run", |e| {
        e["action"] == "revoked" && e["grant_id"] == id.as_str()
    });
    assert_eq!(ev["reason"], "task_ended");
    assert_eq!(ev["scope"], format!("run:{run}"));
    let g = grants_of(&d)
        .into_iter()
        .find(|g| g["id"] == id.as_str())
        .expect("listed");
    assert_eq!(g["state"], "revoked");
    assert_eq!(g["ended"], "task_ended");
    // A `--pid` grant opens for that thread group only.
    let second = d.spawn_run("gr-run", &["until-tcp", LO, &port, "20000"]);
    let pid = wait_for("the second run's workload", 20, || {
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", second.id()))
            .ok()?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok()
    });
    let (code, _, err) = d.cli(&[
        "grant",
        "gr-run",
        "--to",
        LO,
        "--for",
        "1m",
        "--reason",
        "one task",
        "--pid",
        &pid.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(exit_of(second).0, OK);
    assert_eq!(tcp(&d, "gr-run", srv.port), DENIED);
}

/// A small HTTP server that keeps the body of every POST it gets.
struct Webhook {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Webhook {
    fn start() -> Self {
        let l = TcpListener::bind((LO, 0)).expect("bind webhook");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = bodies.clone();
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then as many body bytes as Content-Length says.
                let body = loop {
                    let Ok(n) = c.read(&mut chunk) else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                            })
                            .unwrap_or(0);
                        if rest.len() >= len {
                            break Some(format!("{}\n{rest}", head.lines().next().unwrap_or("")));
                        }
                    }
                };
                let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                if let Some(b) = body {
                    keep.lock().expect("lock").push(b);
                }
            }
        });
        Self { url, bodies }
    }
}

#[test]
fn ask_then_approve_lets_the_task_connect() {
    let srv = TcpServer::new(LO);
    let port = srv.port.to_string();
    let hook = Webhook::start();
    let policy = Identity::new("gr-ask")
        .egress(Rule::to([LO]).ports([srv.port]).tcp().ask().max_grant("2m"));
    let d = Daemon::start_with("gr-ask", &policy, &["--approval-webhook", &hook.url]);
    let task = d.spawn_run("gr-ask", &["until-tcp", LO, &port, "20000"]);
    let r = pending(&d, "gr-ask", LO);
    assert_eq!(r["port"], srv.port);
    assert_eq!(r["protocol"], "tcp");
    assert_eq!(r["owner"], "tests@example.com");
    assert!(
        r["rule"]
            .as_str()
            .is_some_and(|at| at.contains("policy.yaml:")),
        "{r}"
    );
    assert!(
        r["exe"].as_str().is_some_and(|e| e.ends_with("zt-probe")),
        "{r}"
    );
    assert!(
        r["scope"].as_str().is_some_and(|s| s.starts_with("run:")),
        "{r}"
    );
    assert!(!r["ancestors"].as_array().is_some_and(Vec::is_empty), "{r}");
    assert_eq!(d.metric("zt_agent_grant_requests_pending"), 1.0);
    let req = r["id"].as_str().expect("id").to_owned();
    let pid = r["pid"].as_u64().expect("pid").to_string();
    let why = wait_for("the pending request in `why`", 20, || {
        d.cli_json(&["why", "--pid", &pid])
            .as_array()?
            .iter()
            .find(|w| {
                w["cause"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("request pending"))
            })
            .cloned()
    });
    assert_eq!(why["command"], format!("zt-agent approve {req}"), "{why}");
    // The task retries meanwhile: still one request.
    std::thread::sleep(Duration::from_millis(500));
    let n = d
        .cli_json(&["requests"])
        .as_array()
        .map_or(0, |a| a.iter().filter(|r| r["state"] == "pending").count());
    assert_eq!(n, 1);
    // Over the rule's maxGrant.
    let (code, _, err) = d.cli(&["approve", &req, "--for", "10m"]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("maxGrant"), "{err}");
    let (code, out, err) = d.cli(&["approve", &req, "--for", "1m", "--reason", "pip install"]);
    assert_eq!(code, 0, "{err}");
    let grant = out.trim().to_owned();
    let (code, out) = exit_of(task);
    assert_eq!(code, OK, "{out}");
    let g = grants_of(&d)
        .into_iter()
        .find(|g| g["id"] == grant.as_str())
        .expect("grant listed");
    assert_eq!(g["request"], req.as_str());
    assert_eq!(g["to"], serde_json::json!([LO]));
    d.wait_event("approved", |e| {
        e["action"] == "approved" && e["request_id"] == req.as_str()
    });
    d.wait_event("requested", |e| {
        e["action"] == "requested" && e["dst"] == format!("{LO}:{port}") && e["comm"] == "zt-probe"
    });
    assert_eq!(
        d.metric("zt_agent_grant_requests_total{identity=\"gr-ask\",result=\"approved\"}"),
        1.0
    );
    // The grant is the requesting run's: another run asks again.
    assert_eq!(tcp(&d, "gr-ask", srv.port), DENIED);
    // Deciding twice is refused.
    let (code, _, err) = d.cli(&["deny", &req]);
    assert_eq!(code, 65, "{err}");
    let bodies = wait_for("the webhook's POST", 10, || {
        let b = hook.bodies.lock().expect("lock").clone();
        (!b.is_empty()).then_some(b)
    });
    assert!(bodies[0].starts_with("POST /hook"), "{}", bodies[0]);
    let json: serde_json::Value =
        serde_json::from_str(bodies[0].split_once('\n').map_or("", |(_, b)| b)).expect("json body");
    assert_eq!(json["identity"], "gr-ask");
    assert_eq!(json["destination"], LO);
    assert_eq!(json["state"], "pending");
}

#[test]
fn ask_then_deny_or_timeout_stays_denied_with_no_lasting_rule() {
    let srv = TcpServer::new(LO);
    let port = srv.port.to_string();
    let policy = Identity::new("gr-no").egress(Rule::to([LO]).ports([srv.port]).ask());
    let d = Daemon::start_with("gr-no", &policy, &["--ask-timeout", "3s"]);
    let sha = d.policy_sha();
    let task = d.spawn_run("gr-no", &["until-tcp", LO, &port, "2500"]);
    let r = pending(&d, "gr-no", LO);
    let req = r["id"].as_str().expect("id").to_owned();
    let (code, _, err) = d.cli(&["deny", &req, "--reason", "not needed"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(exit_of(task).0, DENIED);
    let ev = d.wait_event("denied", |e| {
        e["action"] == "denied" && e["request_id"] == req.as_str()
    });
    assert_eq!(ev["why"], "not needed");
    // Approving a denied request is refused, and nothing was granted.
    let (code, _, err) = d.cli(&["approve", &req]);
    assert_eq!(code, 65, "{err}");
    assert!(grants_of(&d).is_empty());
    assert_eq!(tcp(&d, "gr-no", srv.port), DENIED);
    // That attempt raised a new request; nobody decides it.
    let r = pending(&d, "gr-no", LO);
    let late = r["id"].as_str().expect("id").to_owned();
    assert_ne!(late, req);
    d.wait_event("timed out", |e| {
        e["action"] == "timed_out" && e["request_id"] == late.as_str()
    });
    let (code, _, err) = d.cli(&["approve", &late]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("timed_out"), "{err}");
    assert!(grants_of(&d).is_empty());
    assert_eq!(d.policy_sha(), sha, "no decision changes the policy");
    assert_eq!(
        d.metric("zt_agent_grant_requests_total{identity=\"gr-no\",result=\"timed_out\"}"),
        1.0
    );
    assert_eq!(
        d.metric("zt_agent_grant_requests_total{identity=\"gr-no\",result=\"denied\"}"),
        1.0
    );
}

#[test]
fn dns_name_under_ask_is_held_then_answered_after_approval() {
    let peer = Peer::new("ztgr1", &["10.232.1.1/24"]);
    let up = Dnsmasq::start("grants", &[("10.232.1.1", "pkg.gr-dns.test")], 60);
    let srv = peer.tcp_server("10.232.1.1");
    let port = srv.port.to_string();
    let policy =
        Identity::new("gr-dns").egress(Rule::to(["pkg.gr-dns.test"]).ports([srv.port]).tcp().ask());
    let d = Daemon::start_with("gr-dns", &policy, &["--dns-upstream", &up.upstream()]);
    let task = d.spawn_run(
        "gr-dns",
        &["dns-tcp", "192.0.2.53", "pkg.gr-dns.test", &port],
    );
    let r = pending(&d, "gr-dns", "pkg.gr-dns.test");
    assert_eq!(r["protocol"], "dns");
    std::thread::sleep(Duration::from_millis(300));
    let (code, _, err) = d.cli(&["approve", r["id"].as_str().expect("id")]);
    assert_eq!(code, 0, "{err}");
    let (code, out) = exit_of(task);
    assert_eq!(code, OK, "{out}");
    assert!(
        out.contains("\"rcode\":\"NOERROR\"") && out.contains("10.232.1.1"),
        "{out}"
    );
    // A denied lookup is refused.
    let task = d.spawn_run(
        "gr-dns",
        &["dns-tcp", "192.0.2.53", "pkg.gr-dns.test", &port],
    );
    let r = pending(&d, "gr-dns", "pkg.gr-dns.test");
    let (code, _, err) = d.cli(&["deny", r["id"].as_str().expect("id")]);
    assert_eq!(code, 0, "{err}");
    let (_, out) = exit_of(task);
    assert!(out.contains("\"rcode\":\"REFUSED\""), "{out}");
    let ev = d.wait_event("refused lookup", |e| {
        e["kind"] == "dns" && e["reason"] == "ask_denied"
    });
    assert_eq!(ev["query"], "pkg.gr-dns.test");
}

/// HH:MM:SS of the wall clock `offset` seconds from now, at UTC offset `tz_secs`.
fn clock(offset: i64, tz_secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t = (now + offset + tz_secs).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", t / 3600, t % 3600 / 60, t % 60)
}

#[test]
fn window_opens_and_closes_around_the_clock() {
    let open_now = TcpServer::new(LO);
    let opens_later = TcpServer::new(LO);
    // Asia/Kolkata is UTC+05:30 all year: the window's hours are local time there.
    let kolkata = 5 * 3600 + 1800;
    // Wide enough for a daemon that starts slowly on a busy machine: the first window
    // is open for 20 s, the second opens as it closes.
    let now_window = format!("{}-{}", clock(-3, 0), clock(20, 0));
    let later_window = format!("{}-{}", clock(20, kolkata), clock(90, kolkata));
    let policy = Identity::new("gr-win")
        .egress(
            Rule::to([LO])
                .ports([open_now.port])
                .when(&now_window, "UTC"),
        )
        .egress(
            Rule::to([LO])
                .ports([opens_later.port])
                .when(&later_window, "Asia/Kolkata"),
        );
    let t0 = Instant::now();
    let mut d = Daemon::start("gr-win", &policy);
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "the daemon took {:?} to start: too slow for the windows under test",
        t0.elapsed()
    );
    assert_eq!(tcp(&d, "gr-win", open_now.port), OK);
    assert_eq!(tcp(&d, "gr-win", opens_later.port), DENIED);
    d.wait_event("outside the window", |e| {
        e["reason"] == "outside_window" && e["dst"] == format!("{LO}:{}", opens_later.port)
    });
    // With the daemon down the open window closes on time, and the other does not open.
    d.kill9();
    std::thread::sleep(Duration::from_secs(21).saturating_sub(t0.elapsed()));
    assert_eq!(tcp(&d, "gr-win", open_now.port), DENIED, "closed on time");
    assert_eq!(
        tcp(&d, "gr-win", opens_later.port),
        DENIED,
        "opens only with the daemon"
    );
    d.restart();
    wait_for("the later window to open", 5, || {
        (tcp(&d, "gr-win", opens_later.port) == OK).then_some(())
    });
    assert_eq!(tcp(&d, "gr-win", open_now.port), DENIED);
}

#[test]
fn control_socket_refuses_other_users_and_enrolled_tasks() {
    let cg = Cgroup::new("gr-enrolled");
    let policy = Identity::new("gr-sock").selector(Selector::cgroup(cg.rel.clone()));
    let d = Daemon::start("gr-sock", &policy);
    let socket = d.state_dir.join("control.sock");
    let md = std::fs::metadata(&socket).expect("socket");
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(md.uid(), 0);
    // An unprivileged user.
    let out = d
        .cli_command(&["grants"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("zt-agent as nobody");
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A root process enrolled by a cgroup selector.
    let procs = cg.path.join("cgroup.procs");
    let mut c = d.cli_command(&[
        "grant", "gr-sock", "--to", LO, "--for", "1m", "--reason", "x",
    ]);
    // SAFETY: only a file write between fork and exec.
    unsafe {
        c.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    let out = c
        .stderr(Stdio::piped())
        .output()
        .expect("enrolled zt-agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("enrolled task"), "{err}");
    assert!(grants_of(&d).is_empty());
    // A peer that sends garbage or nothing does not stop the daemon.
    for junk in [&b"\xff\xff\xff\xff"[..], b"\x00\x00\x00\x02{}", b""] {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        let _ = s.write_all(junk);
    }
    assert_eq!(d.cli(&["grants", "--json"]).0, 0);
}

#[test]
fn grants_survive_a_restart_and_revoke_ends_them() {
    let srv = TcpServer::new(LO);
    let policy = Identity::new("gr-keep");
    let mut d = Daemon::start("gr-keep", &policy);
    let (code, out, err) = d.cli(&[
        "grant",
        "gr-keep",
        "--to",
        LO,
        "--for",
        "5m",
        "--reason",
        "migration",
    ]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    d.restart();
    assert_eq!(tcp(&d, "gr-keep", srv.port), OK);
    let g = grants_of(&d);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0]["state"], "active");
    assert_eq!(g[0]["reason"], "migration");
    let (code, out, err) = d.cli(&["revoke", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id), "{out}");
    assert_eq!(tcp(&d, "gr-keep", srv.port), DENIED);
    let (code, _, _) = d.cli(&["revoke", &id]);
    assert_eq!(code, 65, "a revoked grant is not in force");
    // Revoke by identity.
    for _ in 0..2 {
        let (code, _, err) = d.cli(&[
            "grant", "gr-keep", "--to", LO, "--for", "5m", "--reason", "r",
        ]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, _) = d.cli(&["revoke", "--identity", "gr-keep"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(tcp(&d, "gr-keep", srv.port), DENIED);
}

#[test]
fn audit_verify_finds_a_removed_and_an_edited_line() {
    let srv = TcpServer::new(LO);
    let policy = Identity::new("gr-audit");
    let mut d = Daemon::start("gr-audit", &policy);
    for _ in 0..3 {
        assert_eq!(tcp(&d, "gr-audit", srv.port), DENIED);
    }
    wait_for("three denials", 20, || {
        (d.events().iter().filter(|e| e["kind"] == "connect").count() >= 3).then_some(())
    });
    // The chain continues across a restart.
    let before = d
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0);
    d.restart();
    assert_eq!(tcp(&d, "gr-audit", srv.port), DENIED);
    d.wait_event("the denial after the restart", |e| {
        e["kind"] == "connect" && e["seq"].as_u64() > Some(before)
    });
    let seqs: Vec<u64> = d
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let verify = |text: &str| {
        let f = d.work.join("check.jsonl");
        std::fs::write(&f, text).expect("write");
        let (code, out, err) = d.cli_no_dirs(&["audit", "verify", &f.display().to_string()]);
        (code, format!("{out}{err}"))
    };
    let text = std::fs::read_to_string(&d.events_path).expect("events");
    let (code, out) = verify(&text);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 5, "{text}");
    let mut removed = lines.clone();
    removed.remove(2);
    let (code, out) = verify(&(removed.join("\n") + "\n"));
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("check.jsonl:3:"), "{out}");
    let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    edited[3] = edited[3].replacen("\"time\":\"2", "\"time\":\"1", 1);
    assert_ne!(edited[3], lines[3]);
    let (code, out) = verify(&(edited.join("\n") + "\n"));
    assert_eq!(code, 65, "{out}");
    assert!(out.contains("check.jsonl:4:"), "{out}");
}

#[test]
fn bad_input_gets_a_clear_error_and_its_code() {
    let policy = Identity::new("gr-bad").max_grant("10m");
    let d = Daemon::start("gr-bad", &policy);
    let cases: [(&[&str], i32, &str); 8] = [
        (
            &[
                "grant", "gr-nope", "--to", LO, "--for", "1m", "--reason", "x",
            ],
            78,
            "unknown identity",
        ),
        (
            &[
                "grant", "gr-bad", "--to", LO, "--for", "11m", "--reason", "x",
            ],
            65,
            "maxDuration",
        ),
        (
            &[
                "grant",
                "gr-bad",
                "--to",
                "10.0.0.1/8",
                "--for",
                "1m",
                "--reason",
                "x",
            ],
            64,
            "host bits",
        ),
        (
            &[
                "grant", "gr-bad", "--to", "a.*.com", "--for", "1m", "--reason", "x",
            ],
            64,
            "--to",
        ),
        (
            &[
                "grant", "gr-bad", "--to", LO, "--for", "soon", "--reason", "x",
            ],
            64,
            "--for",
        ),
        (
            &[
                "grant", "gr-bad", "--to", LO, "--for", "1m", "--reason", "x", "--run", "nope",
            ],
            65,
            "no run",
        ),
        (&["approve", "r-000000000000"], 65, "unknown request"),
        (&["revoke", "g-000000000000"], 65, "unknown grant"),
    ];
    for (args, want, says) in cases {
        let (code, _, err) = d.cli(args);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(d.cli(&["why", "--identity", "gr-nope"]).0, 78);
    // Policies that do not parse name file, line, column and field.
    let dir = d.work.join("bad-policy");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("bad.yaml"),
        format!(
            "{}",
            Identity::new("gr-bad")
                .max_grant("8d")
                .egress(Rule::to([LO]).when("25:00-26:00", "Mars/Olympus"))
                .egress(Rule::to([LO]).ask().when("08:00-09:00", "UTC"))
                .egress(Rule::to([LO]).max_grant("5m"))
        ),
    )
    .expect("write");
    let (code, _, err) = d.cli_no_dirs(&["policy", "check", &dir.display().to_string()]);
    assert_eq!(code, 78, "{err}");
    for says in [
        "spec.grants.maxDuration: maxDuration 8d is over the limit of 7d",
        "spec.egress[0].when[0].hours: invalid hours",
        "spec.egress[0].when[0].timezone: unknown time zone `Mars/Olympus`",
        "spec.egress[1].when: `when` cannot be combined with `access: ask`",
        "spec.egress[2].maxGrant: `maxGrant` applies to rules with `access: ask` only",
    ] {
        assert!(err.contains(says), "missing `{says}` in:\n{err}");
    }
    assert!(err.lines().all(|l| l.contains("bad.yaml:")), "{err}");
    // The ceiling of a rule may not pass the identity's.
    std::fs::write(
        dir.join("bad.yaml"),
        format!(
            "{}",
            Identity::new("gr-bad")
                .max_grant("10m")
                .egress(Rule::to([LO]).ask().max_grant("1h"))
        ),
    )
    .expect("write");
    let (code, _, err) = d.cli_no_dirs(&["policy", "check", &dir.display().to_string()]);
    assert_eq!(code, 78);
    assert!(
        err.contains("maxGrant 1h is longer than spec.grants.maxDuration 10m"),
        "{err}"
    );
}
