//! The daemon under test: one per test, with its own pin directory, state directory,
//! policy and event file; its commands (`run`, `ps`, `status`, `--teardown`) against
//! those directories; its events and metrics.

use std::fmt::Display;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cgroup::remove_cgroup_tree;
use crate::host::{cgroup2_root, is_stale_tag, require_root, tag};
use crate::probe::{agent_bin, code_and_output, probe_bin};

/// A running zt-agent daemon owned by one test.
pub struct Daemon {
    pub name: String,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub work: PathBuf,
    pub policy_dir: PathBuf,
    pub events_path: PathBuf,
    pub metrics_addr: SocketAddr,
    /// The SPIFFE Workload API socket, in a directory of its own under /run (the state
    /// dir is root-only; workloads must reach this one).
    pub workload_socket: PathBuf,
    /// More `zt-agent daemon` arguments (the DNS upstream, say).
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    /// Start a daemon for test `name` with one policy file.
    pub fn start(name: &str, policy: impl Display) -> Self {
        Self::start_with(name, policy, &[])
    }

    /// Start a daemon with more arguments.
    pub fn start_with(name: &str, policy: impl Display, extra_args: &[&str]) -> Self {
        let mut d = Self::prepare(name, policy, extra_args);
        d.spawn();
        d
    }

    /// A daemon for test `name`, its directories and policy made, not started: change
    /// its paths, then [`Daemon::spawn`] it or [`Daemon::expect_refusal`].
    pub fn prepare(name: &str, policy: impl Display, extra_args: &[&str]) -> Self {
        require_root();
        sweep_stale_daemons();
        let base = format!("zt-test-{name}-{}", tag());
        let work = std::env::temp_dir().join(&base);
        let d = Self {
            name: name.to_owned(),
            pin_dir: PathBuf::from("/sys/fs/bpf").join(&base),
            state_dir: PathBuf::from("/run").join(&base),
            policy_dir: work.join("policy"),
            events_path: work.join("events.jsonl"),
            // Port 0: the daemon binds a free port and records it in its state file.
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workload_socket: PathBuf::from("/run")
                .join(format!("{base}-workload"))
                .join("socket"),
            work,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        d.teardown(); // leftovers of an earlier, interrupted run
        let _ = std::fs::remove_dir_all(&d.work);
        std::fs::create_dir_all(&d.policy_dir).expect("policy dir");
        d.write_policy(policy);
        d
    }

    /// `zt-agent daemon` with this daemon's arguments, not started.
    #[must_use]
    pub fn command(&self) -> Command {
        let mut c = Command::new(agent_bin());
        c.arg("daemon")
            .arg("--policy")
            .arg(&self.policy_dir)
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .arg("--events")
            .arg(&self.events_path)
            // Tests run side by side, each with its own resolver.
            .args(["--dns-port", "0"])
            .arg("--workload-api")
            .arg(&self.workload_socket)
            .args(&self.extra_args)
            .args(self.dir_args());
        c
    }

    /// Start the daemon expecting it to refuse: its exit code and stderr. A daemon
    /// still running after 20 s did not refuse; it is killed and the code is `None`.
    #[must_use]
    pub fn expect_refusal(&self) -> (Option<i32>, String) {
        let err_path = self.work.join("refusal.log");
        let err = std::fs::File::create(&err_path).expect("refusal log");
        let mut child = self
            .command()
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn daemon");
        let deadline = Instant::now() + Duration::from_secs(20);
        let code = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (code, std::fs::read_to_string(&err_path).unwrap_or_default())
    }

    /// Start the daemon and wait until it serves.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join("daemon.log"))
            .expect("daemon log");
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        self.wait_ready();
    }

    fn dir_args(&self) -> Vec<String> {
        vec![
            "--pin-dir".into(),
            self.pin_dir.display().to_string(),
            "--state-dir".into(),
            self.state_dir.display().to_string(),
        ]
    }

    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.join("daemon.log")).unwrap_or_default()
    }

    fn links_pinned(&self) -> bool {
        std::fs::read_dir(self.pin_dir.join("links")).is_ok_and(|rd| rd.count() > 0)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "zt-agent daemon exited during start-up ({status}); BPF must load here.\n{}",
                    self.log()
                );
            }
            // The daemon records its metrics address, and serves metrics, only once
            // everything is attached. The pid tells this daemon's state from a
            // predecessor's.
            let state = self.state();
            let pid = self.child.as_ref().map(Child::id);
            let addr = state["metrics_addr"]
                .as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok());
            if let Some(addr) = addr
                && self.links_pinned()
                && state["daemon_pid"].as_u64() == pid.map(u64::from)
                && TcpStream::connect(addr).is_ok()
            {
                self.metrics_addr = addr;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "zt-agent daemon not ready after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replace the policy file (atomically, as an editor or config manager would).
    pub fn write_policy(&self, policy: impl Display) {
        let tmp = self.work.join("policy.yaml.tmp");
        std::fs::write(&tmp, policy.to_string()).expect("write policy");
        std::fs::rename(&tmp, self.policy_dir.join("policy.yaml")).expect("rename policy");
    }

    #[must_use]
    pub fn state(&self) -> serde_json::Value {
        let s = std::fs::read_to_string(self.state_dir.join("state.json")).unwrap_or_default();
        serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
    }

    #[must_use]
    pub fn policy_sha(&self) -> String {
        self.state()["policy_sha256"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Send SIGHUP.
    pub fn hup(&self) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGHUP) };
        }
    }

    /// Write a new policy, SIGHUP, and wait until it is in force.
    pub fn reload(&self, policy: impl Display) {
        let before = self.policy_sha();
        self.write_policy(policy);
        self.hup();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.policy_sha() == before {
            assert!(
                Instant::now() < deadline,
                "policy not reloaded:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `zt-agent run --identity ID --user nobody -- zt-probe ARGS...`
    #[must_use]
    pub fn run(&self, identity: &str, probe_args: &[&str]) -> (i32, String) {
        code_and_output(&self.run_cmd(identity, &["--user", "nobody"], probe_args))
    }

    /// `zt-agent run --identity ID EXTRA... -- CMD...` against this daemon, not started.
    #[must_use]
    pub fn run_command(&self, identity: &str, extra: &[&str], cmd: &[&str]) -> Command {
        let mut c = Command::new(agent_bin());
        c.args(["run", "--identity", identity])
            .args(extra)
            .args(self.dir_args())
            .arg("--")
            .args(cmd)
            .env_remove("SUDO_UID");
        c
    }

    /// `zt-agent run --identity ID EXTRA... -- zt-probe ARGS...`, not started.
    fn run_probe_command(&self, identity: &str, extra: &[&str], probe_args: &[&str]) -> Command {
        let probe = probe_bin().display().to_string();
        let cmd: Vec<&str> = std::iter::once(probe.as_str())
            .chain(probe_args.iter().copied())
            .collect();
        self.run_command(identity, extra, &cmd)
    }

    /// `zt-agent run --identity ID EXTRA... -- zt-probe ARGS...`, waited for.
    #[must_use]
    pub fn run_cmd(&self, identity: &str, extra: &[&str], probe_args: &[&str]) -> Output {
        self.run_probe_command(identity, extra, probe_args)
            .output()
            .expect("zt-agent run")
    }

    /// Start `zt-agent run --user nobody -- zt-probe ARGS` without waiting for it.
    #[must_use]
    pub fn spawn_run(&self, identity: &str, probe_args: &[&str]) -> Child {
        self.run_probe_command(identity, &["--user", "nobody"], probe_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("zt-agent run")
    }

    #[must_use]
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.events_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait up to 30 s for an event matching `pred` (it returns as soon as one is there).
    pub fn wait_event(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no event {what}; events: {:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The observation store, read-only.
    #[must_use]
    pub fn observations(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.state_dir.join("observations.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the store")
    }

    /// Scrape /metrics (within 10 s).
    #[must_use]
    pub fn metrics(&self) -> String {
        let mut s = TcpStream::connect_timeout(&self.metrics_addr, Duration::from_secs(10))
            .expect("metrics connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("metrics request");
        let mut buf = String::new();
        s.read_to_string(&mut buf).expect("metrics read");
        buf.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }

    /// Value of one series, 0 if absent.
    #[must_use]
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Whether the daemon process still runs.
    #[must_use]
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The daemon's pid, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL the daemon, leaving its pins in place.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start a new daemon on the same pins (adoption).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// `zt-agent daemon --teardown` for this test's pins.
    pub fn teardown(&self) {
        let _ = Command::new(agent_bin())
            .args(["daemon", "--teardown"])
            .args(self.dir_args())
            .stderr(Stdio::null())
            .status();
        if let Some(dir) = self.workload_socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// `zt-agent ARGS... --pin-dir ... --state-dir ...` against this daemon: (exit
    /// code, stdout, stderr).
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cli_command(args).output().expect("zt-agent");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `zt-agent ARGS...` for commands that take no pin or state directory (`policy
    /// check`, `audit verify`): (exit code, stdout, stderr).
    #[must_use]
    pub fn cli_no_dirs(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(agent_bin())
            .args(args)
            .output()
            .expect("zt-agent");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The command of [`Self::cli`], not started.
    #[must_use]
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(agent_bin());
        c.args(args).args(self.dir_args());
        c
    }

    /// `zt-agent ARGS... --json` against this daemon, parsed; panics on failure.
    #[must_use]
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let (code, out, err) = self.cli(&a);
        assert_eq!(code, 0, "zt-agent {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `zt-agent ps --json` against this daemon.
    #[must_use]
    pub fn ps(&self) -> serde_json::Value {
        self.json_command("ps")
    }

    /// `zt-agent status --json` against this daemon.
    #[must_use]
    pub fn status(&self) -> serde_json::Value {
        self.json_command("status")
    }

    fn json_command(&self, sub: &str) -> serde_json::Value {
        let out = Command::new(agent_bin())
            .args([sub, "--json"])
            .args(self.dir_args())
            .output()
            .expect("zt-agent");
        assert!(
            out.status.success(),
            "zt-agent {sub} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let names: Vec<String> = self.state()["ids"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        self.kill9();
        self.teardown();
        for n in names {
            remove_orphan_runs(&cgroup2_root().join("zt").join(n));
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log of {} ---\n{}", self.name, self.log());
        }
    }
}

/// Tear down what daemons of test processes that died left pinned (their programs stay
/// attached at the cgroup2 root until their links go). Once per test process.
fn sweep_stale_daemons() {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| {
        let Ok(rd) = std::fs::read_dir("/sys/fs/bpf") else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("zt-test-") else {
                continue;
            };
            if !rest.rsplit('-').next().is_some_and(is_stale_tag) {
                continue;
            }
            let _ = Command::new(agent_bin())
                .args(["daemon", "--teardown", "--pin-dir"])
                .arg(e.path())
                .arg("--state-dir")
                .arg(PathBuf::from("/run").join(&name))
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(&name));
        }
    });
}

/// Kill and remove the launch cgroups below an identity's `/zt/<name>` whose launcher is
/// gone (a run id starts with the launcher's pid), then the directory if it is empty.
/// Runs of other test processes, whose launchers live, are left alone.
fn remove_orphan_runs(identity_dir: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(identity_dir) {
        for e in rd.flatten() {
            let run = e.file_name().to_string_lossy().into_owned();
            if run.split('-').next().is_some_and(is_stale_tag) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(identity_dir);
}
