//! What the agent trusts on disk, tried as an unprivileged local user (`nobody`)
//! would: the events path, the state directory and its files, the pin directory, the
//! policy directory and its files. Each attack must be refused with a clear message,
//! and leave root's files and the running policy as they were.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zt_agent_host::exit;
use zt_agent_tests::{DENIED, Daemon, Identity, OK, Rule, TcpServer, TestDir, sh_as_nobody};

/// A directory in /tmp that `nobody` makes and owns (0755), removed at the end.
struct Planted(PathBuf);

impl Planted {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("zt-test-planted-{tag}"));
        let _ = std::fs::remove_dir_all(&p);
        let (code, out) = sh_as_nobody(&format!("mkdir -m 755 {}", p.display()));
        assert_eq!(code, 0, "{out}");
        Self(p)
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        // remove_dir_all never follows the links inside.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A root-owned file with known content, to see that nothing wrote to it.
fn victim(files: &TestDir) -> PathBuf {
    let p = files.path.join("victim.sh");
    std::fs::write(&p, "#!/bin/sh\necho untouched\n").expect("victim");
    p
}

fn assert_untouched(p: &Path) {
    assert_eq!(
        std::fs::read_to_string(p).expect("victim"),
        "#!/bin/sh\necho untouched\n",
        "root's file was written through a planted link"
    );
}

/// The daemon refuses to start, with a configuration error naming `nobody`.
fn assert_refused_naming_nobody(d: &Daemon) {
    let (code, err) = d.expect_refusal();
    assert_eq!(code, Some(exit::CONFIG.into()), "{err}");
    assert!(
        err.contains("uid 65534"),
        "the refusal names the owner: {err}"
    );
}

fn policy(name: &str, port: u16) -> Identity {
    Identity::new(name).egress(Rule::to(["127.0.0.1"]).ports([port]).tcp())
}

#[test]
fn events_file_is_private_and_never_opened_through_a_link() {
    let files = TestDir::new("trust-events");
    let v = victim(&files);
    // nobody owns a directory in /tmp and plants the events path as a link to root's
    // script there.
    let planted = Planted::new("events");
    let link = planted.0.join("events.jsonl");
    let (code, out) = sh_as_nobody(&format!("ln -s {} {}", v.display(), link.display()));
    assert_eq!(code, 0, "{out}");
    let mut d = Daemon::prepare("trust-events", policy("tr-events", 9), &[]);
    d.events_path = link;
    assert_refused_naming_nobody(&d);
    assert_untouched(&v);

    // A link in a directory of root's is refused as a link.
    let root_link = files.path.join("events-link.jsonl");
    std::os::unix::fs::symlink(&v, &root_link).expect("link");
    d.events_path = root_link;
    let (code, err) = d.expect_refusal();
    assert_eq!(code, Some(exit::CONFIG.into()), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_untouched(&v);

    // The file the daemon creates is root's alone; with --events-group, that group's too.
    d.events_path = d.work.join("events.jsonl");
    d.spawn();
    let m = std::fs::metadata(&d.events_path).expect("events file");
    assert_eq!((m.mode() & 0o777, m.uid()), (0o600, 0), "events file mode");
    d.kill9();
    std::fs::remove_file(&d.events_path).expect("rm events");
    let grouped = Daemon::start_with(
        "trust-events-group",
        policy("tr-events-g", 9),
        &["--events-group", "nogroup"],
    );
    let m = std::fs::metadata(&grouped.events_path).expect("events file");
    assert_eq!(
        (m.mode() & 0o777, m.uid()),
        (0o640, 0),
        "grouped events file mode"
    );
    assert_eq!(m.gid(), zt_agent_tests::NOBODY, "group nogroup");
    // An existing file others may write is refused rather than written to.
    let mut loose = Daemon::prepare("trust-events-loose", policy("tr-events-l", 9), &[]);
    std::fs::write(&loose.events_path, b"").expect("loose file");
    std::fs::set_permissions(&loose.events_path, std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    let (code, err) = loose.expect_refusal();
    assert_eq!(code, Some(exit::CONFIG.into()), "{err}");
    assert!(err.contains("0666") && err.contains("looser"), "{err}");
    // One only readable by everyone (an older version's 0644) is root's alone from now.
    std::fs::set_permissions(&loose.events_path, std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    loose.spawn();
    let m = std::fs::metadata(&loose.events_path).expect("events file");
    assert_eq!(
        m.mode() & 0o777,
        0o600,
        "an older events file kept its mode"
    );
}

#[test]
fn state_directory_planted_by_another_user_is_refused() {
    let files = TestDir::new("trust-state");
    let v = victim(&files);
    // nobody makes the state directory first, with a forged state file and the
    // temporary file the daemon writes planted as a link to root's script.
    let planted = Planted::new("state");
    let (code, out) = sh_as_nobody(&format!(
        "cd {} && echo '{{\"cgroup_root\":\"/\",\"ids\":{{\"tr-state\":1}},\"identities\":[],\"policy_sha256\":\"x\"}}' > state.json && ln -s {} state.json.tmp",
        planted.0.display(),
        v.display()
    ));
    assert_eq!(code, 0, "{out}");
    let mut d = Daemon::prepare("trust-state", policy("tr-state", 9), &[]);
    d.state_dir.clone_from(&planted.0);
    assert_refused_naming_nobody(&d);
    assert_untouched(&v);
    // Nothing was loaded: the refusal came before the programs.
    assert!(
        !d.pin_dir.exists(),
        "pins made before the state directory was checked"
    );

    // A state directory of root's that others may write is refused too.
    let loose = PathBuf::from("/run/zt-test-trust-state-loose");
    let _ = std::fs::remove_dir_all(&loose);
    std::fs::create_dir(&loose).expect("dir");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    d.state_dir.clone_from(&loose);
    let (code, err) = d.expect_refusal();
    let _ = std::fs::remove_dir_all(&loose);
    assert_eq!(code, Some(exit::CONFIG.into()), "{err}");
    assert!(err.contains("0777"), "{err}");

    // The daemon's own state directory and file are 0700 and 0600 whatever the umask.
    d.state_dir = PathBuf::from("/run/zt-test-trust-state");
    d.spawn();
    let dm = std::fs::metadata(&d.state_dir).expect("state dir");
    let fm = std::fs::metadata(d.state_dir.join("state.json")).expect("state file");
    assert_eq!((dm.mode() & 0o777, fm.mode() & 0o777), (0o700, 0o600));
}

#[test]
fn run_trusts_only_roots_state_and_the_kernels_record() {
    let allowed = TcpServer::new("127.0.0.1");
    let other = TcpServer::new("127.0.0.1");
    let two = format!(
        "{}---\n{}",
        policy("tr-run", allowed.port),
        policy("tr-run-other", other.port)
    );
    let d = Daemon::start("trust-run", &two);
    let state = d.state();
    let other_id = state["ids"]["tr-run-other"].as_u64().expect("id");
    let port = other.port.to_string();
    let probe = zt_agent_tests::probe_bin().display().to_string();
    let tcp: [&str; 4] = [&probe, "tcp", "127.0.0.1", &port];
    // The daemon's own: tr-run may not reach the other identity's port.
    let (code, out) = run_with_state(&d, &d.state_dir, &tcp);
    assert_eq!(code, DENIED, "{out}");

    // nobody forges a state file that gives tr-run the other identity's id and a
    // cgroup root of their own.
    let planted = Planted::new("run-state");
    let fake_root = planted.0.join("cgroot");
    let mut forged = state.clone();
    forged["ids"]["tr-run"] = other_id.into();
    for i in forged["identities"].as_array_mut().expect("identities") {
        if i["name"] == "tr-run" {
            i["id"] = other_id.into();
        }
    }
    forged["cgroup_root"] = fake_root.display().to_string().into();
    let forged_text = serde_json::to_string(&forged).expect("json");
    let (code, out) = sh_as_nobody(&format!(
        "mkdir {} && cat > {}/state.json <<'EOF'\n{forged_text}\nEOF",
        fake_root.display(),
        planted.0.display()
    ));
    assert_eq!(code, 0, "{out}");
    let (code, text) = run_with_state(&d, &planted.0, &tcp);
    assert_eq!(code, i32::from(exit::UNAVAILABLE), "{text}");
    assert!(
        text.contains("not trusted") && text.contains("uid 65534"),
        "{text}"
    );

    // A root-owned state whose id the kernel does not hold in its policy is refused.
    let stale = PathBuf::from("/run/zt-test-trust-run-stale");
    let _ = std::fs::remove_dir_all(&stale);
    std::fs::create_dir(&stale).expect("dir");
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut wrong = state.clone();
    wrong["ids"]["tr-run"] = 777.into();
    for i in wrong["identities"].as_array_mut().expect("identities") {
        if i["name"] == "tr-run" {
            i["id"] = 777.into();
        }
    }
    std::fs::write(stale.join("state.json"), wrong.to_string()).expect("state");
    let (code, text) = run_with_state(&d, &stale, &tcp);
    assert_eq!(code, i32::from(exit::UNAVAILABLE), "{text}");
    assert!(text.contains("does not match the kernel"), "{text}");

    // A root-owned state with a cgroup root that is not the cgroup2 mount: `run` uses
    // the real mount, so the workload is in its launch cgroup all the same.
    let mut moved = state.clone();
    moved["cgroup_root"] = fake_root.display().to_string().into();
    std::fs::write(stale.join("state.json"), moved.to_string()).expect("state");
    let (code, text) = run_with_state(&d, &stale, &["cat", "/proc/self/cgroup"]);
    let _ = std::fs::remove_dir_all(&stale);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("/zt/tr-run/"),
        "workload outside its launch cgroup: {text}"
    );
    assert!(
        std::fs::read_dir(&fake_root).is_ok_and(|mut r| r.next().is_none()),
        "run made cgroups under the state's cgroup root"
    );
}

/// `zt-agent run --identity tr-run --user nobody` against the daemon's pins and the
/// state directory `state_dir`.
fn run_with_state(d: &Daemon, state_dir: &Path, cmd: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(zt_agent_tests::agent_bin())
        .args([
            "run",
            "--identity",
            "tr-run",
            "--user",
            "nobody",
            "--pin-dir",
        ])
        .arg(&d.pin_dir)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--")
        .args(cmd)
        .env_remove("SUDO_UID")
        .output()
        .expect("zt-agent run");
    zt_agent_tests::code_and_output(&out)
}

#[test]
fn planted_pin_directory_is_named_and_teardown_clears_it() {
    // nobody creates the daemon's pin directory first (bpffs is world-writable and
    // sticky), with subdirectories and a dangling link where a link pin would be.
    let mut d = Daemon::prepare("trust-pins", policy("tr-pins", 9), &[]);
    let pins = d.pin_dir.display().to_string();
    let (code, out) = sh_as_nobody(&format!(
        "mkdir -p {pins}/links {pins}/maps/sub/deeper && ln -s /nonexistent {pins}/links/zt_connect4 && ln -s /etc/passwd {pins}/maps/ZT_TASKS"
    ));
    assert_eq!(code, 0, "{out}");
    let (code, err) = d.expect_refusal();
    assert_eq!(code, Some(exit::UNAVAILABLE.into()), "{err}");
    assert!(
        err.contains("not made by zt-agent")
            && err.contains("uid 65534")
            && err.contains("links/zt_connect4 (symbolic link")
            && err.contains("--teardown"),
        "the refusal says whose it is and what is there: {err}"
    );
    // `run` refuses to open maps from it.
    let out = d.run_cmd("tr-pins", &["--user", "nobody"], &["tcp", "127.0.0.1", "9"]);
    let (code, text) = zt_agent_tests::code_and_output(&out);
    assert_eq!(code, i32::from(exit::UNAVAILABLE), "{text}");
    assert!(text.contains("not trusted"), "{text}");
    // --teardown removes it, links never followed, whatever it holds.
    let out = std::process::Command::new(zt_agent_tests::agent_bin())
        .args(["daemon", "--teardown", "--pin-dir", &pins, "--state-dir"])
        .arg(&d.state_dir)
        .output()
        .expect("teardown");
    assert!(out.status.success(), "{out:?}");
    assert!(!d.pin_dir.exists(), "planted pins left behind");
    assert!(Path::new("/etc/passwd").exists());
    // And then the agent starts and enforces.
    d.spawn();
    assert_eq!(d.run("tr-pins", &["tcp", "127.0.0.1", "1"]).0, DENIED);
}

#[test]
fn policy_directory_others_may_write_is_refused_and_the_running_policy_kept() {
    let allowed = TcpServer::new("127.0.0.1");
    let wanted = TcpServer::new("127.0.0.1");
    let d = Daemon::start("trust-policy", policy("tr-pol", allowed.port));
    let wp = wanted.port.to_string();
    assert_eq!(d.run("tr-pol", &["tcp", "127.0.0.1", &wp]).0, DENIED);
    let before = d.policy_sha();
    let failures = || d.metric("zt_agent_policy_reloads_total{result=\"failure\"}");
    let reload_refused = |what: &str, f0: f64| {
        d.hup();
        let deadline = Instant::now() + Duration::from_secs(15);
        while failures() <= f0 {
            assert!(Instant::now() < deadline, "{what}: no refusal\n{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(d.policy_sha(), before, "{what}: the policy was replaced");
        assert_eq!(
            d.run("tr-pol", &["tcp", "127.0.0.1", &wp]).0,
            DENIED,
            "{what}: the workload reached what only the planted policy allows"
        );
    };

    // A careless chmod: nobody replaces the policy file with one of their own.
    std::fs::set_permissions(&d.policy_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let theirs = policy("tr-pol", wanted.port).to_string();
    let (code, out) = sh_as_nobody(&format!(
        "cd {} && cat > .new <<'EOF'\n{theirs}\nEOF\nmv .new policy.yaml",
        d.policy_dir.display()
    ));
    assert_eq!(code, 0, "{out}");
    reload_refused("writable directory", failures());
    assert!(
        d.log().contains("policy directory refused") && d.log().contains("0777"),
        "{}",
        d.log()
    );

    // The directory is fixed, but the file is still nobody's.
    std::fs::set_permissions(&d.policy_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    reload_refused("file owned by nobody", failures());
    assert!(
        d.log().contains("policy.yaml: policy file refused"),
        "{}",
        d.log()
    );

    // A link to a file elsewhere (root's, even) is not followed.
    let files = TestDir::new("trust-policy");
    let outside = files.path.join("outside.yaml");
    std::fs::write(&outside, &theirs).expect("outside");
    std::fs::remove_file(d.policy_dir.join("policy.yaml")).expect("rm");
    std::os::unix::fs::symlink(&outside, d.policy_dir.join("policy.yaml")).expect("link");
    reload_refused("link out of the directory", failures());
    assert!(
        d.log().contains("leads out of the directory"),
        "{}",
        d.log()
    );

    // A link that stays inside the directory (a ConfigMap's `..data/`) is followed.
    let data = d.policy_dir.join("..data");
    std::fs::create_dir(&data).expect("..data");
    std::fs::write(data.join("policy.yaml"), &theirs).expect("inside");
    std::fs::remove_file(d.policy_dir.join("policy.yaml")).expect("rm");
    std::os::unix::fs::symlink("..data/policy.yaml", d.policy_dir.join("policy.yaml"))
        .expect("link");
    d.hup();
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.policy_sha() == before {
        assert!(
            Instant::now() < deadline,
            "link inside not followed\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.run("tr-pol", &["tcp", "127.0.0.1", &wp]).0, OK);

    // A fresh start on a directory others may write is refused outright.
    let fresh = Daemon::prepare("trust-policy-fresh", policy("tr-pol-f", 9), &[]);
    std::fs::set_permissions(&fresh.policy_dir, std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let (code, err) = fresh.expect_refusal();
    assert_eq!(code, Some(exit::CONFIG.into()), "{err}");
    assert!(err.contains("policy directory refused"), "{err}");
}

#[test]
fn a_fifo_swapped_in_for_a_policy_file_does_not_hang_the_daemon() {
    let allowed = TcpServer::new("127.0.0.1");
    let later = TcpServer::new("127.0.0.1");
    let d = Daemon::start("trust-fifo", policy("tr-fifo", allowed.port));
    let f0 = d.metric("zt_agent_policy_reloads_total{result=\"failure\"}");
    // The policy file becomes a FIFO nobody writes to.
    let file = d.policy_dir.join("policy.yaml");
    std::fs::remove_file(&file).expect("rm");
    let c = std::ffi::CString::new(file.display().to_string()).expect("path");
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    d.hup();
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.metric("zt_agent_policy_reloads_total{result=\"failure\"}") <= f0 {
        assert!(
            Instant::now() < deadline,
            "no refusal of the FIFO\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.log().contains("not a regular file"), "{}", d.log());
    // The daemon still reloads: a real file again, with a new rule, is in force soon.
    std::fs::remove_file(&file).expect("rm fifo");
    d.reload(
        Identity::new("tr-fifo").egress(
            Rule::to(["127.0.0.1"])
                .ports([allowed.port, later.port])
                .tcp(),
        ),
    );
    assert_eq!(
        d.run("tr-fifo", &["tcp", "127.0.0.1", &later.port.to_string()])
            .0,
        OK
    );
}
