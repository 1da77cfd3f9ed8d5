//! The daemon's life: reloads under live traffic, bad policies that must not replace
//! the running one, SIGKILL and adoption, teardown, metrics, and CLI errors.

use std::process::Command;
use std::time::Duration;

use zt_agent_host::exit;
use zt_agent_tests::{
    DENIED, Daemon, Identity, OK, Rule, TcpServer, agent_bin, probe_bin, require_root,
};

fn loop_counts(out: &str) -> (u64, u64) {
    let field = |k: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {out:?}"))
    };
    (field("ok="), field("denied="))
}

#[test]
fn reload_swaps_policy_under_live_traffic() {
    let a = TcpServer::new("127.0.0.1");
    let b = TcpServer::new("127.0.0.1");
    let never = TcpServer::new("127.0.0.1");
    let (pa, pb, pn) = (
        a.port.to_string(),
        b.port.to_string(),
        never.port.to_string(),
    );
    let d = Daemon::start(
        "reload",
        Identity::new("lc-reload").egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()),
    );
    // Clients hammer a port no policy version allows, and the port that changes.
    let never_client = d.spawn_run("lc-reload", &["loop-tcp", "127.0.0.1", &pn, "8000"]);
    let a_client = d.spawn_run("lc-reload", &["loop-tcp", "127.0.0.1", &pa, "8000"]);
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..4 {
        let port = if i % 2 == 0 { b.port } else { a.port };
        d.reload(Identity::new("lc-reload").egress(Rule::to(["127.0.0.1"]).ports([port]).tcp()));
        std::thread::sleep(Duration::from_millis(200));
    }
    d.reload(Identity::new("lc-reload").egress(Rule::to(["127.0.0.1"]).ports([b.port]).tcp()));
    let out =
        String::from_utf8_lossy(&never_client.wait_with_output().expect("wait").stdout).to_string();
    let (ok, denied) = loop_counts(&out);
    assert_eq!(
        ok, 0,
        "a port no policy allowed was reached during reloads: {out}"
    );
    assert!(denied > 10, "{out}");
    let out =
        String::from_utf8_lossy(&a_client.wait_with_output().expect("wait").stdout).to_string();
    let (ok, denied) = loop_counts(&out);
    assert!(
        ok > 0 && denied > 0,
        "the changing port saw both policies: {out}"
    );
    // The final policy is in force.
    assert_eq!(d.run("lc-reload", &["tcp", "127.0.0.1", &pa]).0, DENIED);
    assert_eq!(d.run("lc-reload", &["tcp", "127.0.0.1", &pb]).0, OK);
    assert!(d.metric("zt_agent_policy_reloads_total{result=\"success\"}") >= 6.0);
}

#[test]
fn reload_on_file_change_without_signal() {
    let a = TcpServer::new("127.0.0.1");
    let pa = a.port.to_string();
    let d = Daemon::start(
        "watch",
        Identity::new("lc-watch").egress(Rule::to(["192.0.2.1"]).ports([443]).tcp()),
    );
    assert_eq!(d.run("lc-watch", &["tcp", "127.0.0.1", &pa]).0, DENIED);
    let before = d.policy_sha();
    d.write_policy(Identity::new("lc-watch").egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.policy_sha() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "file change not picked up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.run("lc-watch", &["tcp", "127.0.0.1", &pa]).0, OK);
}

#[test]
fn malformed_policies_never_replace_the_running_one() {
    let a = TcpServer::new("127.0.0.1");
    let pa = a.port.to_string();
    let good = Identity::new("lc-bad").egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp());
    let d = Daemon::start("badpolicy", &good);
    let sha = d.policy_sha();
    let corpus = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../zt-agent/tests/policy_corpus"
    );
    let mut cases: Vec<_> = std::fs::read_dir(corpus)
        .expect("corpus")
        .flatten()
        .map(|e| e.path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "corpus has {} cases", cases.len());
    let mut failures = d.metric("zt_agent_policy_reloads_total{result=\"failure\"}");
    for case in &cases {
        let text = std::fs::read_to_string(case).expect("case");
        d.write_policy(&text);
        d.hup();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = d.metric("zt_agent_policy_reloads_total{result=\"failure\"}");
            if now > failures {
                failures = now;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} was not rejected:\n{}",
                case.display(),
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            d.policy_sha(),
            sha,
            "{} replaced the policy",
            case.display()
        );
        assert_eq!(
            d.run("lc-bad", &["tcp", "127.0.0.1", &pa]).0,
            OK,
            "after {} the running policy is gone",
            case.display()
        );
    }
    // Errors name the file, line and column.
    assert!(d.log().contains("policy.yaml:"), "{}", d.log());
}

#[test]
fn enforcement_survives_sigkill_and_restart_adopts_without_a_gap() {
    let a = TcpServer::new("127.0.0.1");
    let n = TcpServer::new("127.0.0.1");
    let (pa, pn) = (a.port.to_string(), n.port.to_string());
    let mut d = Daemon::start(
        "restart",
        Identity::new("lc-restart").egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()),
    );
    // A client keeps trying a denied port across the kill and the restart.
    let mut client = d.spawn_run("lc-restart", &["loop-tcp", "127.0.0.1", &pn, "10000"]);
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    // No daemon: the kernel still enforces.
    assert_eq!(d.run("lc-restart", &["tcp", "127.0.0.1", &pn]).0, DENIED);
    assert_eq!(d.run("lc-restart", &["tcp", "127.0.0.1", &pa]).0, OK);
    d.restart();
    // The client must still be trying after the restart, or the gap went untested.
    assert!(
        client.try_wait().expect("try_wait").is_none(),
        "the client finished before the restart was over"
    );
    assert!(
        d.log().contains("adopting pinned enforcement"),
        "{}",
        d.log()
    );
    let out = String::from_utf8_lossy(&client.wait_with_output().expect("wait").stdout).to_string();
    let (ok, denied) = loop_counts(&out);
    assert_eq!(
        ok, 0,
        "a denied port was reached across kill and restart: {out}"
    );
    assert!(denied > 10, "{out}");
    assert_eq!(d.run("lc-restart", &["tcp", "127.0.0.1", &pn]).0, DENIED);
    assert_eq!(d.run("lc-restart", &["tcp", "127.0.0.1", &pa]).0, OK);
    // Events still flow from the adopted ring buffer.
    d.wait_event("deny after adoption", |e| e["verdict"] == "deny");
}

#[test]
fn teardown_removes_everything() {
    let d = Daemon::start(
        "teardown",
        Identity::new("lc-down").egress(Rule::to(["192.0.2.1"]).ports([443]).tcp()),
    );
    assert!(d.pin_dir.join("links").exists());
    let mut d = d;
    d.kill9();
    d.teardown();
    assert!(!d.pin_dir.exists(), "pins left behind");
    assert!(
        !d.state_dir.join("state.json").exists(),
        "state left behind"
    );
    // Nothing is enforced any more; `run` says the daemon is gone.
    let out = d.run_cmd("lc-down", &["--user", "nobody"], &["tcp", "127.0.0.1", "1"]);
    assert_eq!(out.status.code(), Some(exit::UNAVAILABLE.into()), "{out:?}");
}

#[test]
fn metrics_pass_promtool_and_count_verdicts() {
    let a = TcpServer::new("127.0.0.1");
    let pa = a.port.to_string();
    let d = Daemon::start(
        "metrics",
        Identity::new("lc-metrics").egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()),
    );
    assert_eq!(d.run("lc-metrics", &["tcp", "127.0.0.1", &pa]).0, OK);
    assert_eq!(d.run("lc-metrics", &["tcp", "127.0.0.1", "1"]).0, DENIED);
    let text = d.metrics();
    for series in [
        r#"zt_agent_verdicts_total{identity="lc-metrics",protocol="tcp",verdict="allow"} 1"#,
        r#"zt_agent_verdicts_total{identity="lc-metrics",protocol="tcp",verdict="deny"} 1"#,
        r#"zt_agent_events_lost_total{reason="ringbuf_full"} 0"#,
        r#"zt_agent_map_capacity{map="tasks"}"#,
        r#"zt_agent_map_entries{map="policy_v4"}"#,
        "zt_agent_policy_info{sha256=",
        r#"zt_agent_policy_reloads_total{result="success"}"#,
        "zt_agent_build_info{version=",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(text.as_bytes());
    let out = child
        .take()
        .expect("promtool must be installed (./x test installs it)");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

trait WithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> Option<std::process::Output>;
}

impl WithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> Option<std::process::Output> {
        use std::io::Write as _;
        let mut c = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        c.stdin.take()?.write_all(input).ok()?;
        c.wait_with_output().ok()
    }
}

#[test]
fn cli_errors_and_exit_codes() {
    require_root();
    let d = Daemon::start(
        "cli",
        Identity::new("lc-cli").egress(Rule::to(["192.0.2.1"]).ports([443]).tcp()),
    );
    // Unknown identity: a configuration error that names what exists.
    let out = d.run_cmd(
        "no-such-identity",
        &["--user", "nobody"],
        &["tcp", "127.0.0.1", "1"],
    );
    assert_eq!(out.status.code(), Some(exit::CONFIG.into()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown identity") && err.contains("lc-cli"),
        "{err}"
    );
    // Root workloads need an explicit --user root.
    let probe = probe_bin().display().to_string();
    let out = d
        .run_command("lc-cli", &[], &[&probe])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(exit::USAGE.into()), "{out:?}");
    // Unknown user.
    let out = d.run_cmd("lc-cli", &["--user", "no-such-user-zt"], &["raw4"]);
    assert_eq!(out.status.code(), Some(exit::NOUSER.into()), "{out:?}");
    // The workload's own exit status passes through, and so does a missing command.
    let out = d
        .run_command("lc-cli", &["--user", "nobody"], &["sh", "-c", "exit 7"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(7));
    let out = d
        .run_command("lc-cli", &["--user", "nobody"], &["/nonexistent/cmd"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(exit::NOT_FOUND.into()), "{out:?}");
    // The workload runs unprivileged: no capabilities, no_new_privs, not root.
    let out = d
        .run_command(
            "lc-cli",
            &["--user", "nobody"],
            &[
                "grep",
                "-E",
                "^(Uid|CapEff|CapPrm|CapBnd|NoNewPrivs)",
                "/proc/self/status",
            ],
        )
        .output()
        .expect("run");
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("Uid:\t65534"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapPrm:\t0000000000000000"), "{status}");
    assert!(status.contains("CapBnd:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // The run cgroups are gone once the workload exits.
    let zt = zt_agent_tests::cgroup2_root().join("zt").join("lc-cli");
    let left: Vec<_> = std::fs::read_dir(&zt)
        .map(|r| r.flatten().filter(|e| e.path().is_dir()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run cgroups left behind: {left:?}");

    // policy check: exit 78 and file:line:column on a bad policy, 0 on the examples.
    let bad = d.work.join("bad");
    std::fs::create_dir_all(&bad).expect("dir");
    std::fs::write(
        bad.join("p.yaml"),
        "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: Bad_Name\n  owner: a@b\n",
    )
    .expect("write");
    let out = Command::new(agent_bin())
        .args(["policy", "check"])
        .arg(&bad)
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(exit::CONFIG.into()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.yaml:4:"), "{err}");
    assert!(err.contains("metadata.name"), "{err}");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
    let out = Command::new(agent_bin())
        .args(["policy", "check", examples])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(exit::OK.into()), "{out:?}");
    // A daemon started on a bad policy refuses to start, and says why.
    let out = Command::new(agent_bin())
        .args(["daemon", "--policy"])
        .arg(&bad)
        .args([
            "--pin-dir",
            "/sys/fs/bpf/zt-test-cli-bad",
            "--state-dir",
            "/run/zt-test-cli-bad",
        ])
        .output()
        .expect("daemon");
    assert_eq!(out.status.code(), Some(exit::CONFIG.into()), "{out:?}");
    assert!(!std::path::Path::new("/sys/fs/bpf/zt-test-cli-bad/links").exists());
}

#[test]
fn refuses_to_guess_when_pinned_state_is_incomplete_or_unknown() {
    let n = TcpServer::new("127.0.0.1");
    let pn = n.port.to_string();
    let mut d = Daemon::start(
        "partial",
        Identity::new("lc-partial").egress(Rule::to(["192.0.2.1"]).ports([443]).tcp()),
    );
    d.kill9();
    // The state file is gone (say /run was cleared): ids cannot be matched to names.
    let state = std::fs::read(d.state_dir.join("state.json")).expect("state");
    std::fs::remove_file(d.state_dir.join("state.json")).expect("rm state");
    let out = daemon_cmd(&d).output().expect("daemon");
    assert_eq!(out.status.code(), Some(exit::UNAVAILABLE.into()), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be adopted"),
        "{out:?}"
    );
    std::fs::write(d.state_dir.join("state.json"), state).expect("restore state");
    // One link of the set is missing: the daemon leaves the rest attached and says so.
    std::fs::remove_file(d.pin_dir.join("links/zt_exit")).expect("rm link");
    let out = daemon_cmd(&d).output().expect("daemon");
    assert_eq!(out.status.code(), Some(exit::UNAVAILABLE.into()), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--teardown"),
        "{out:?}"
    );
    // Enforcement went on through both refusals.
    assert_eq!(d.run("lc-partial", &["tcp", "127.0.0.1", &pn]).0, DENIED);
}

fn daemon_cmd(d: &Daemon) -> Command {
    let mut c = Command::new(agent_bin());
    c.args([
        "daemon",
        "--metrics-addr",
        "127.0.0.1:0",
        "--events",
        "/dev/null",
        "--policy",
    ])
    .arg(&d.policy_dir)
    .arg("--pin-dir")
    .arg(&d.pin_dir)
    .arg("--state-dir")
    .arg(&d.state_dir);
    c
}

#[test]
fn run_forwards_signals_cleans_up_and_isolates_the_workload() {
    use std::os::unix::process::CommandExt as _;
    let d = Daemon::start(
        "runiso",
        Identity::new("lc-iso").egress(Rule::to(["192.0.2.1"]).ports([443]).tcp()),
    );
    // A descriptor the launcher inherits without close-on-exec must not reach CMD.
    let file = std::fs::File::open("/etc/hostname").expect("open");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    let mut c = d.run_command(
        "lc-iso",
        &["--user", "nobody"],
        &[
            "sh",
            "-c",
            "test ! -e /proc/self/fd/7 && test \"$HOME\" = /nonexistent && test -z \"$SUDO_UID\"",
        ],
    );
    c.env("SUDO_UID", "0");
    // SAFETY: dup2 between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = c.output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "fd, HOME or SUDO_UID leaked: {out:?}"
    );

    // SIGTERM to the launcher reaches CMD; the launcher still cleans up.
    let mut child = d
        .run_command("lc-iso", &["--user", "nobody"], &["sleep", "30"])
        .spawn()
        .expect("run sleep");
    let zt = zt_agent_tests::cgroup2_root().join("zt").join("lc-iso");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let runs = || {
        std::fs::read_dir(&zt)
            .map(|r| r.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0)
    };
    while runs() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no run cgroup appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(exit::signalled(libc::SIGTERM).into()),
        "{status:?}"
    );
    assert_eq!(runs(), 0, "run cgroup left behind after SIGTERM");
}

#[test]
fn execs_of_enrolled_tasks_are_reported() {
    let d = Daemon::start(
        "exec",
        Identity::new("lc-exec").egress(Rule::to(["192.0.2.1"]).ports([443]).tcp()),
    );
    let out = d.run_cmd("lc-exec", &["--user", "nobody"], &["child", "raw4"]);
    assert!(out.status.code().is_some(), "{out:?}");
    // The launched probe, and the child it executes, each produce an exec event with
    // the identity and the parent.
    let ev = d.wait_event("exec of the child probe", |e| {
        e["kind"] == "exec"
            && e["identity"] == "lc-exec"
            && e["comm"] == "zt-probe"
            && e["ppid"].as_u64().is_some_and(|p| p > 1)
    });
    assert_eq!(ev["verdict"], "allow");
    assert_eq!(ev["uid"], 65534);
    let execs = d
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "exec" && e["identity"] == "lc-exec")
        .count();
    assert!(
        execs >= 2,
        "expected the probe and its child: {:#?}",
        d.events()
    );
    // Unenrolled execs are not reported.
    let _ = std::process::Command::new("/bin/true").status();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.events()
            .iter()
            .all(|e| e["kind"] != "exec" || e["identity"] == "lc-exec"),
        "{:#?}",
        d.events()
    );
}
