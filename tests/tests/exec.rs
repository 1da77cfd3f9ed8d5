//! Identity by binary and user, and exec allowlists: real binaries exec'd by real
//! processes, judged by the programs in the running kernel.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zt_agent_tests::{
    DENIED, Daemon, Identity, KILLED, OK, Rule, Selector, TcpServer, TestDir, probe_bin, run_file,
    run_probe_unenrolled, sha256_of,
};

/// Retry `f` until it returns true or 10 s pass (the daemon re-checks files every second).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn exe_selector_enrolls_on_exec_and_children_inherit() {
    let dir = TestDir::new("exec-exe");
    let agent = dir.copy(&probe_bin(), "agent");
    let hard = dir.hardlink(&agent, "agent-hard");
    let sym = dir.symlink(&agent, "agent-sym");
    let copy = dir.copy(&probe_bin(), "agent-copy");
    let broader = dir.copy(&probe_bin(), "broader");
    let (a, b) = (TcpServer::new("127.0.0.1"), TcpServer::new("127.0.0.1"));
    let (pa, pb) = (a.port.to_string(), b.port.to_string());
    let policy = Identity::new("ex-exe")
        .selector(Selector::exe(&agent))
        .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp())
        .and(
            Identity::new("ex-exe-broader")
                .selector(Selector::exe(&broader))
                .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp())
                .egress(Rule::to(["127.0.0.1"]).ports([b.port]).tcp()),
        );
    let d = Daemon::start("exec-exe", &policy);
    fn tcp(port: &str) -> [&str; 3] {
        ["tcp", "127.0.0.1", port]
    }
    // Enrolled by its binary alone: no `run`, no cgroup.
    assert_eq!(run_file(&agent, &tcp(&pa)).0, OK);
    let (code, out) = run_file(&agent, &tcp(&pb));
    assert_eq!(
        code, DENIED,
        "exe-selected task reached a denied port: {out}"
    );
    // The same file through a hardlink or a symlink is the same identity.
    assert_eq!(run_file(&hard, &tcp(&pb)).0, DENIED, "hardlink");
    assert_eq!(run_file(&sym, &tcp(&pb)).0, DENIED, "symlink");
    // A copy is another file: not enrolled, not judged.
    assert_eq!(
        run_file(&copy, &tcp(&pb)).0,
        OK,
        "a copy must not be selected"
    );
    // A child exec'ing an unselected binary keeps the identity.
    let probe = probe_bin().display().to_string();
    let (code, out) = run_file(&agent, &["spawn", &probe, "tcp", "127.0.0.1", &pb]);
    assert_eq!(
        code, DENIED,
        "the child escaped its parent's identity: {out}"
    );
    let (code, _) = run_file(&agent, &["spawn", &probe, "tcp", "127.0.0.1", &pa]);
    assert_eq!(code, OK, "the child lost its allowed destination");
    // Exec'ing another identity's binary never borrows its broader policy.
    assert_eq!(
        run_file(&broader, &tcp(&pb)).0,
        OK,
        "the broader identity works"
    );
    let (code, out) = run_file(&agent, &["spawn", &broader, "tcp", "127.0.0.1", &pb]);
    assert_eq!(
        code, DENIED,
        "an enrolled task changed identity by exec: {out}"
    );
    // The enrolling exec is reported with its provenance.
    let ev = d.wait_event("exec enrolled by exe", |e| {
        e["kind"] == "exec" && e["enrolled_by"] == "exe" && e["identity"] == "ex-exe"
    });
    assert_eq!(ev["sha256"], sha256_of(&agent), "{ev}");
    assert!(
        ev["ancestors"].as_array().is_some_and(|a| !a.is_empty()),
        "{ev}"
    );
    assert!(ev["ppid"].as_u64().is_some_and(|p| p > 0), "{ev}");
    assert!(
        ev["path"].as_str().is_some_and(|p| p.contains("agent")),
        "{ev}"
    );
}

#[test]
fn uid_selector_enrolls_tasks_that_exec_with_that_uid() {
    let (a, b) = (TcpServer::new("127.0.0.1"), TcpServer::new("127.0.0.1"));
    let (pa, pb) = (a.port.to_string(), b.port.to_string());
    let policy = Identity::new("ex-uid")
        .selector(Selector::uid(4242))
        .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp())
        .and(
            Identity::new("ex-uid-restricted")
                .selector(Selector::uid(4244))
                .exec_allow(["/usr/bin/true"])
                .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()),
        );
    let d = Daemon::start("exec-uid", &policy);
    let (code, out) = run_probe_unenrolled(&["as-uid", "4242", "tcp", "127.0.0.1", &pb]);
    assert_eq!(code, DENIED, "uid 4242 reached a denied port: {out}");
    let (code, out) = run_probe_unenrolled(&["as-uid", "4242", "tcp", "127.0.0.1", &pa]);
    assert_eq!(code, OK, "uid 4242 lost its allowed port: {out}");
    // Another uid is not selected.
    let (code, out) = run_probe_unenrolled(&["as-uid", "4243", "tcp", "127.0.0.1", &pb]);
    assert_eq!(code, OK, "uid 4243 was judged: {out}");
    // The exec that gives the identity is judged by its allowlist too: uid 4244 may
    // exec only /usr/bin/true, so the probe dies at its first instruction.
    let (code, out) = run_probe_unenrolled(&["as-uid", "4244", "tcp", "127.0.0.1", &pa]);
    assert_eq!(code, -1, "the enrolling exec skipped the allowlist: {out}");
    let ev = d.wait_event("the enrolling exec, denied", |e| {
        e["kind"] == "exec" && e["identity"] == "ex-uid-restricted" && e["verdict"] == "deny"
    });
    assert_eq!(ev["enrolled_by"], "uid_gid", "{ev}");
}

#[test]
fn a_changed_or_replaced_binary_lands_in_quarantine() {
    let dir = TestDir::new("exec-digest");
    let agent = dir.copy(&probe_bin(), "agent");
    let pinned = sha256_of(&agent);
    let original = std::fs::read(&agent).expect("read agent");
    let a = TcpServer::new("127.0.0.1");
    let pa = a.port.to_string();
    let d = Daemon::start(
        "exec-digest",
        Identity::new("ex-digest")
            .selector(Selector::exe(&agent).sha256(&pinned))
            .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()),
    );
    let tcp = ["tcp", "127.0.0.1", pa.as_str()];
    assert_eq!(
        run_file(&agent, &tcp).0,
        OK,
        "the verified binary is enrolled"
    );

    // Rewritten in place (same inode): the kernel sees the new change time at once,
    // before the daemon has looked, and quarantines.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&agent)
        .and_then(|mut f| f.write_all(b"tampered"))
        .expect("rewrite in place");
    let (code, out) = run_file(&agent, &tcp);
    assert_eq!(code, DENIED, "a rewritten binary kept its identity: {out}");
    let ev = d.wait_event("exec into quarantine", |e| {
        e["kind"] == "exec" && e["identity"] == "quarantine"
    });
    assert_eq!(ev["enrolled_by"], "quarantine", "{ev}");
    // The daemon re-verifies the digest and reports the mismatch.
    d.wait_event("digest mismatch report", |e| {
        e["kind"] == "file" && e["reason"] == "digest_mismatch"
    });
    assert_eq!(run_file(&agent, &tcp).0, DENIED, "still quarantined");

    // Replaced by rename (a new inode) with the original content: the digest matches
    // again, and the daemon follows the new file.
    let fresh = dir.path.join("agent.new");
    std::fs::write(&fresh, &original).expect("write new");
    std::fs::set_permissions(&fresh, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::rename(&fresh, &agent).expect("rename over");
    eventually("the restored binary is enrolled again", || {
        run_file(&agent, &tcp).0 == OK
    });
    let m = d.metrics();
    assert!(
        m.contains("zt_agent_identity_tasks") || m.contains("zt_agent_exec_total"),
        "{m}"
    );
}

#[test]
fn a_digest_that_does_not_match_at_load_quarantines() {
    let dir = TestDir::new("exec-baddigest");
    let agent = dir.copy(&probe_bin(), "agent");
    let a = TcpServer::new("127.0.0.1");
    let pa = a.port.to_string();
    let wrong = "ab".repeat(32);
    let audited = dir.copy(&probe_bin(), "audited");
    let policy = Identity::new("ex-baddigest")
        .selector(Selector::exe(&agent).sha256(&wrong))
        .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp())
        .and(
            Identity::new("ex-baddigest-audit")
                .audit()
                .selector(Selector::exe(&audited).sha256(&wrong))
                .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()),
        );
    let d = Daemon::start("exec-baddigest", &policy);
    d.wait_event("digest mismatch report", |e| {
        e["kind"] == "file" && e["reason"] == "digest_mismatch" && e["identity"] == "ex-baddigest"
    });
    // Never "unenrolled": deny all, even what the identity would allow.
    let (code, out) = run_file(&agent, &["tcp", "127.0.0.1", &pa]);
    assert_eq!(
        code, DENIED,
        "a binary failing its digest ran unjudged: {out}"
    );
    // Quarantined tasks may not exec anything either.
    let (code, out) = run_file(&agent, &["spawn", "/usr/bin/true"]);
    assert_eq!(code, KILLED, "a quarantined task exec'd: {out}");
    // Audit mode never blocks: the task keeps its identity, and the exec is reported
    // as one that enforce mode would have quarantined.
    let (code, out) = run_file(&audited, &["tcp", "127.0.0.1", &pa]);
    assert_eq!(code, OK, "audit mode quarantined: {out}");
    let ev = d.wait_event("audit of a digest mismatch", |e| {
        e["kind"] == "exec" && e["identity"] == "ex-baddigest-audit"
    });
    assert_eq!(ev["verdict"], "audit", "{ev}");
    assert_eq!(ev["reason"], "quarantined", "{ev}");
}

#[test]
fn exec_allowlist_judges_files_not_paths() {
    let dir = TestDir::new("exec-allow");
    let tool = dir.copy(std::path::Path::new("/usr/bin/true"), "tool");
    let tool_hard = dir.hardlink(&tool, "tool-hard");
    let tool_sym = dir.symlink(&tool, "tool-sym");
    let tool_copy = dir.copy(std::path::Path::new("/usr/bin/true"), "tool-copy");
    let pinned_ok = dir.copy(std::path::Path::new("/usr/bin/true"), "pinned-ok");
    let pinned_bad = dir.copy(std::path::Path::new("/usr/bin/true"), "pinned-bad");
    let good = sha256_of(&pinned_ok);
    let wrong = "ab".repeat(32);
    // A script whose interpreter is allowed runs; one whose interpreter is not, dies.
    let ok_script = dir.script("ok.sh", &format!("#!{tool}\n"));
    let sh_script = dir.script("sh.sh", "#!/bin/sh\nexit 0\n");
    let probe = probe_bin().display().to_string();
    let allowing = |name: &str| {
        Identity::new(name)
            .exec_allow([&probe, &tool])
            .exec_allow_pinned(&pinned_ok, &good)
            .exec_allow_pinned(&pinned_bad, &wrong)
            .egress(Rule::to(["127.0.0.1"]).ports([9]).tcp())
    };
    let policy = allowing("ex-allow").and(allowing("ex-allow-audit").audit());
    let d = Daemon::start("exec-allow", &policy);

    let spawn = |identity: &str, args: &[&str]| {
        let mut a = vec!["spawn"];
        a.extend_from_slice(args);
        d.run(identity, &a)
    };
    let proc_root = format!("/proc/self/root{tool}");
    for (what, args, want) in [
        ("the allowed file", vec![tool.as_str()], OK),
        ("a hardlink to it", vec![tool_hard.as_str()], OK),
        ("a symlink to it", vec![tool_sym.as_str()], OK),
        ("it through /proc/self/root", vec![proc_root.as_str()], OK),
        (
            "a script whose interpreter is allowed",
            vec![ok_script.as_str()],
            OK,
        ),
        (
            "a copy under another name",
            vec![tool_copy.as_str()],
            KILLED,
        ),
        ("a file not listed", vec!["/usr/bin/false"], KILLED),
        (
            "the dynamic loader running an allowed file",
            vec!["/lib64/ld-linux-x86-64.so.2", tool.as_str()],
            KILLED,
        ),
        (
            "a script whose interpreter is not allowed",
            vec![sh_script.as_str()],
            KILLED,
        ),
        (
            "a file whose pinned digest matches",
            vec![pinned_ok.as_str()],
            OK,
        ),
        (
            "a file whose pinned digest does not match",
            vec![pinned_bad.as_str()],
            KILLED,
        ),
    ] {
        let (code, out) = spawn("ex-allow", &args);
        assert_eq!(code, want, "{what}: {out}");
    }
    let (code, out) = d.run("ex-allow", &["spawn-memfd", &tool]);
    assert_eq!(code, KILLED, "fexecve of a memfd: {out}");

    // Audit mode reports instead of stopping.
    let (code, out) = spawn("ex-allow-audit", &[tool_copy.as_str()]);
    assert_eq!(code, OK, "audit mode stopped an exec: {out}");
    d.wait_event("audit exec event", |e| {
        e["kind"] == "exec" && e["verdict"] == "audit" && e["identity"] == "ex-allow-audit"
    });

    // The denials are reported with provenance and counted.
    let ev = d.wait_event("denied exec of the copy", |e| {
        e["kind"] == "exec" && e["verdict"] == "deny" && e["path"] == tool_copy.as_str()
    });
    assert_eq!(ev["reason"], "exec_not_allowed", "{ev}");
    assert_eq!(ev["identity"], "ex-allow", "{ev}");
    assert_eq!(ev["sha256"], sha256_of(&tool_copy), "{ev}");
    assert!(
        ev["ancestors"].as_array().is_some_and(|a| !a.is_empty()),
        "{ev}"
    );
    eventually("exec deny counter", || {
        d.metric("zt_agent_exec_total{identity=\"ex-allow\",verdict=\"deny\"}") >= 6.0
    });
    let status = d.status();
    let mech = status["exec_guard"]
        .as_str()
        .expect("exec_guard")
        .to_owned();
    assert!(mech == "lsm" || mech == "tp_btf_sigkill", "{status}");
    assert_eq!(
        d.metric(&format!("zt_agent_exec_guard_info{{mechanism=\"{mech}\"}}")),
        1.0
    );
}

#[test]
fn running_processes_are_adopted_at_start() {
    let dir = TestDir::new("exec-adopt");
    let agent = dir.copy(&probe_bin(), "agent");
    let b = TcpServer::new("127.0.0.1");
    let pb = b.port.to_string();
    let a = TcpServer::new("127.0.0.1");
    // Both start, and exec, before any daemon: no hook saw them.
    let spawn = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let mut by_exe = spawn(&agent, &["wait-stdin", "tcp", "127.0.0.1", &pb]);
    let probe = probe_bin().display().to_string();
    let mut by_uid = spawn(
        &probe,
        &["as-uid", "4343", "wait-stdin", "tcp", "127.0.0.1", &pb],
    );
    std::thread::sleep(Duration::from_millis(300));
    let policy = Identity::new("ex-adopt")
        .selector(Selector::exe(&agent))
        .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp())
        .and(
            Identity::new("ex-adopt-uid")
                .selector(Selector::uid(4343))
                .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()),
        );
    let d = Daemon::start("exec-adopt", &policy);
    let ps = d.ps();
    let enrolled = ps["enrolled"].as_array().expect("enrolled");
    for (child, ident) in [(&by_exe, "ex-adopt"), (&by_uid, "ex-adopt-uid")] {
        let t = enrolled
            .iter()
            .find(|t| t["pid"] == child.id())
            .unwrap_or_else(|| panic!("pid {} not adopted: {ps}", child.id()));
        assert_eq!(t["identity"], ident, "{t}");
        assert_eq!(t["how"], "scan", "{t}");
    }
    for child in [&mut by_exe, &mut by_uid] {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("write");
    }
    for (child, what) in [(by_exe, "exe"), (by_uid, "uid")] {
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(DENIED),
            "a pre-existing task selected by {what} was not judged: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn ps_lists_enrolled_and_shadow_workloads() {
    let a = TcpServer::new("127.0.0.1");
    let pa = a.port.to_string();
    let d = Daemon::start(
        "exec-ps",
        Identity::new("ex-ps").egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()),
    );
    let enrolled = d.spawn_run("ex-ps", &["loop-tcp", "127.0.0.1", &pa, "3000"]);
    let shadow = Command::new(probe_bin())
        .args(["loop-tcp", "127.0.0.1", &pa, "3000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("shadow workload");
    let shadow_pid = shadow.id();
    let mut seen = serde_json::Value::Null;
    eventually("ps shows both", || {
        seen = d.ps();
        let has_enrolled = seen["enrolled"]
            .as_array()
            .is_some_and(|v| v.iter().any(|t| t["identity"] == "ex-ps"));
        let has_shadow = seen["shadow"].as_array().is_some_and(|v| {
            v.iter().any(|t| {
                t["pid"] == shadow_pid
                    && t["exe"] == probe_bin().display().to_string()
                    && t["destinations"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|x| x["dst"] == format!("127.0.0.1:{pa}")))
            })
        });
        has_enrolled && has_shadow
    });
    // An enrolled task is never listed as a shadow workload.
    let enrolled_pids: Vec<u64> = seen["enrolled"]
        .as_array()
        .expect("enrolled")
        .iter()
        .filter_map(|t| t["pid"].as_u64())
        .collect();
    assert!(
        seen["shadow"]
            .as_array()
            .expect("shadow")
            .iter()
            .all(|t| !enrolled_pids.contains(&t["pid"].as_u64().unwrap_or_default())),
        "{seen}"
    );
    let _ = enrolled.wait_with_output();
    let _ = shadow.wait_with_output();
}

/// An overlay mount whose layers sit on two different tmpfs mounts, with xino off:
/// stat() then reports a per-layer pseudo device for files, not the overlay's own
/// device that the kernel's exec hook sees. Unmounted on drop.
struct Overlay {
    base: std::path::PathBuf,
    merged: std::path::PathBuf,
}

impl Overlay {
    fn new(name: &str) -> Self {
        let base = std::env::temp_dir().join(format!("zt-test-overlay-{name}"));
        let mut o = Self {
            merged: base.join("merged"),
            base,
        };
        o.cleanup();
        for d in ["lower", "upper", "merged"] {
            std::fs::create_dir_all(o.base.join(d)).expect("overlay dirs");
        }
        let mount = |args: &[&str]| {
            let st = Command::new("mount").args(args).status().expect("mount");
            assert!(st.success(), "mount {args:?} failed");
        };
        let lower = o.base.join("lower").display().to_string();
        let upper = o.base.join("upper").display().to_string();
        mount(&["-t", "tmpfs", "zt-lower", &lower]);
        mount(&["-t", "tmpfs", "zt-upper", &upper]);
        std::fs::create_dir_all(o.base.join("upper/data")).expect("upperdir");
        std::fs::create_dir_all(o.base.join("upper/work")).expect("workdir");
        o.merged = o.base.join("merged");
        let opts = format!("lowerdir={lower},upperdir={upper}/data,workdir={upper}/work,xino=off");
        mount(&[
            "-t",
            "overlay",
            "zt-overlay",
            "-o",
            &opts,
            &o.merged.display().to_string(),
        ]);
        o
    }

    fn lower(&self) -> std::path::PathBuf {
        self.base.join("lower")
    }

    fn cleanup(&mut self) {
        for d in ["merged", "upper", "lower"] {
            let _ = Command::new("umount")
                .arg(self.base.join(d))
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        self.cleanup();
    }
}

#[test]
fn exe_selector_on_overlayfs_matches_the_kernels_view() {
    use std::os::unix::fs::MetadataExt as _;
    let ov = Overlay::new("exe");
    std::fs::copy(probe_bin(), ov.lower().join("agent")).expect("copy into lower layer");
    let agent = ov.merged.join("agent").display().to_string();
    // The case under test: stat()'s device differs from the overlay's superblock.
    let st_dev = std::fs::metadata(&agent).expect("stat").dev();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let merged = ov.merged.display().to_string();
    let sb_dev = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some(merged.as_str()))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .expect("overlay in mountinfo");
    let (maj, min) = sb_dev.split_once(':').expect("major:minor");
    let sb = libc::makedev(maj.parse().expect("major"), min.parse().expect("minor"));
    assert_ne!(
        st_dev, sb,
        "this overlay reports the superblock's device in stat(); the test would not exercise the difference"
    );

    let (a, b) = (TcpServer::new("127.0.0.1"), TcpServer::new("127.0.0.1"));
    let (pa, pb) = (a.port.to_string(), b.port.to_string());
    let _d = Daemon::start(
        "exec-overlay",
        Identity::new("ex-overlay")
            .selector(Selector::exe(&agent))
            .egress(Rule::to(["127.0.0.1"]).ports([a.port]).tcp()),
    );
    assert_eq!(run_file(&agent, &["tcp", "127.0.0.1", &pa]).0, OK);
    let (code, out) = run_file(&agent, &["tcp", "127.0.0.1", &pb]);
    assert_eq!(
        code, DENIED,
        "an overlayfs binary escaped its exe selector: {out}"
    );
}
