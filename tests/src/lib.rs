//! Harness for the privileged integration tests.
//!
//! Each test starts its own daemon with its own pin directory, state directory, policy
//! and identity names, so tests run in parallel without seeing each other. Everything
//! is torn down on drop, also when the test fails: the daemon is killed, its pins
//! removed (which detaches its programs), and the cgroups it made removed.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Probe exit codes (see src/bin/zt-probe.rs).
pub const OK: i32 = 0;
pub const DENIED: i32 = 10;
/// zt-probe: a program it spawned was killed by SIGKILL.
pub const KILLED: i32 = 12;

/// Privileged tests never skip: without root and a loadable BPF program they fail.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "privileged eBPF tests need root: run them with `sudo ./x test`"
    );
}

fn target_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// The zt-agent binary under test (`./x test` builds it first).
#[must_use]
pub fn agent_bin() -> PathBuf {
    let p = std::env::var_os("ZT_AGENT_BIN")
        .map_or_else(|| target_dir().join("zt-agent"), PathBuf::from);
    assert!(
        p.exists(),
        "{} is missing: build it first (`./x test` does: cargo build -p zt-agent)",
        p.display()
    );
    p
}

#[must_use]
pub fn probe_bin() -> PathBuf {
    let p = target_dir().join("zt-probe");
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// The cgroup2 mount point, read from mountinfo like the agent does.
#[must_use]
pub fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for line in info.lines() {
        let mut parts = line.split(" - ");
        if let (Some(l), Some(r)) = (parts.next(), parts.next())
            && r.split_whitespace().next() == Some("cgroup2")
            && let Some(mp) = l.split_whitespace().nth(4)
        {
            return PathBuf::from(mp);
        }
    }
    panic!("no cgroup2 mount");
}

/// Remove a cgroup and everything below it, killing what runs there.
pub fn remove_cgroup_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    let _ = std::fs::write(dir.join("cgroup.kill"), b"1");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let populated = std::fs::read_to_string(dir.join("cgroup.events"))
            .map(|s| s.contains("populated 1"))
            .unwrap_or(false);
        if !populated || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut dirs = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        dirs.push(d);
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = std::fs::remove_dir(&d);
    }
}

/// A running zt-agent daemon owned by one test.
pub struct Daemon {
    pub name: String,
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub work: PathBuf,
    pub policy_dir: PathBuf,
    pub events_path: PathBuf,
    pub metrics_addr: SocketAddr,
    /// More `zt-agent daemon` arguments (the DNS upstream, say).
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    /// Start a daemon for test `name` with one policy file.
    pub fn start(name: &str, policy_yaml: &str) -> Self {
        Self::start_with(name, policy_yaml, &[])
    }

    /// Start a daemon with more arguments.
    pub fn start_with(name: &str, policy_yaml: &str, extra_args: &[&str]) -> Self {
        require_root();
        let base = format!("zt-test-{name}");
        let work = std::env::temp_dir().join(&base);
        let mut d = Self {
            name: name.to_owned(),
            pin_dir: PathBuf::from("/sys/fs/bpf").join(&base),
            state_dir: PathBuf::from("/run").join(&base),
            policy_dir: work.join("policy"),
            events_path: work.join("events.jsonl"),
            // Port 0: the daemon binds a free port and records it in its state file.
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            work,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        d.teardown(); // leftovers of an earlier, interrupted run
        let _ = std::fs::remove_dir_all(&d.work);
        std::fs::create_dir_all(&d.policy_dir).expect("policy dir");
        d.write_policy(policy_yaml);
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join("daemon.log"))
            .expect("daemon log");
        let child = Command::new(agent_bin())
            .arg("daemon")
            .arg("--policy")
            .arg(&self.policy_dir)
            .arg("--metrics-addr")
            .arg("127.0.0.1:0")
            .arg("--events")
            .arg(&self.events_path)
            // Tests run side by side, each with its own resolver.
            .args(["--dns-port", "0"])
            .args(&self.extra_args)
            .args(self.dir_args())
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
    pub fn write_policy(&self, yaml: &str) {
        let tmp = self.work.join("policy.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write policy");
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
    pub fn reload(&self, yaml: &str) {
        let before = self.policy_sha();
        self.write_policy(yaml);
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
        let out = self.run_cmd(identity, &["--user", "nobody"], probe_args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
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

    /// `zt-agent run --identity ID EXTRA... -- zt-probe ARGS...`, waited for.
    #[must_use]
    pub fn run_cmd(&self, identity: &str, extra: &[&str], probe_args: &[&str]) -> Output {
        let probe = probe_bin().display().to_string();
        let cmd: Vec<&str> = std::iter::once(probe.as_str())
            .chain(probe_args.iter().copied())
            .collect();
        self.run_command(identity, extra, &cmd)
            .output()
            .expect("zt-agent run")
    }

    /// Start `zt-agent run --user nobody -- zt-probe ARGS` without waiting for it.
    #[must_use]
    pub fn spawn_run(&self, identity: &str, probe_args: &[&str]) -> Child {
        let probe = probe_bin().display().to_string();
        let cmd: Vec<&str> = std::iter::once(probe.as_str())
            .chain(probe_args.iter().copied())
            .collect();
        self.run_command(identity, &["--user", "nobody"], &cmd)
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

    /// Scrape /metrics.
    #[must_use]
    pub fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.metrics_addr).expect("metrics connect");
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
            remove_cgroup_tree(&cgroup2_root().join("zt").join(n));
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log of {} ---\n{}", self.name, self.log());
        }
    }
}

/// A cgroup made by a test, below `<cgroup2>/zt-test/`. Removed on drop.
pub struct Cgroup {
    pub path: PathBuf,
    /// Path relative to the cgroup2 mount, as policy selectors write it.
    pub rel: String,
}

impl Cgroup {
    #[must_use]
    pub fn new(name: &str) -> Self {
        let rel = format!("/zt-test/{name}");
        let path = cgroup2_root().join(rel.trim_start_matches('/'));
        remove_cgroup_tree(&path);
        std::fs::create_dir_all(&path).expect("create cgroup");
        Self { path, rel }
    }

    /// Start `zt-probe ARGS` as root inside this cgroup (before it executes).
    #[must_use]
    pub fn spawn_probe(&self, args: &[&str]) -> Child {
        let procs = self.path.join("cgroup.procs");
        let mut cmd = Command::new(probe_bin());
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: only a file write between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd.spawn().expect("spawn probe in cgroup")
    }

    /// Start `zt-probe ARGS` as root directly inside this cgroup with
    /// clone3(CLONE_INTO_CGROUP), the way systemd starts services: the task never
    /// enters the cgroup by a write to cgroup.procs. Returns the probe's exit code.
    #[must_use]
    pub fn clone3_probe(&self, args: &[&str]) -> i32 {
        use std::ffi::CString;
        use std::os::fd::AsRawFd as _;
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
        let dir = std::fs::File::open(&self.path).expect("open cgroup dir");
        let prog = CString::new(probe_bin().display().to_string()).expect("path");
        let argv_c: Vec<CString> = std::iter::once(prog.clone())
            .chain(args.iter().map(|a| CString::new(*a).expect("arg")))
            .collect();
        let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        let cl = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with a valid argument block; the child only calls execve and
        // _exit, both async-signal-safe, on memory prepared before the call.
        let pid = unsafe { libc::syscall(libc::SYS_clone3, &raw const cl, size_of::<CloneArgs>()) };
        assert!(pid >= 0, "clone3: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid as i32, &raw mut status, 0) };
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        }
    }

    /// Run `zt-probe ARGS` as root inside this cgroup and return (exit code, output).
    #[must_use]
    pub fn run_probe(&self, args: &[&str]) -> (i32, String) {
        let out = self
            .spawn_probe(args)
            .wait_with_output()
            .expect("wait probe");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

/// Run `zt-probe ARGS` unenrolled, as root, in the test's own cgroup.
#[must_use]
pub fn run_probe_unenrolled(args: &[&str]) -> (i32, String) {
    let out = Command::new(probe_bin())
        .args(args)
        .output()
        .expect("probe");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A TCP listener that accepts and drops connections until the test ends.
pub struct TcpServer {
    pub port: u16,
}

impl TcpServer {
    #[must_use]
    pub fn new(ip: &str) -> Self {
        let l = TcpListener::bind((ip, 0)).expect("bind tcp");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
        Self { port }
    }
}

/// A UDP socket that counts what reaches it.
pub struct UdpServer {
    sock: UdpSocket,
    pub port: u16,
}

impl UdpServer {
    #[must_use]
    pub fn new(ip: &str) -> Self {
        let sock = UdpSocket::bind((ip, 0)).expect("bind udp");
        let port = sock.local_addr().expect("addr").port();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        Self { sock, port }
    }

    /// Datagrams received within the read timeout.
    #[must_use]
    pub fn received(&self) -> usize {
        let mut n = 0;
        let mut buf = [0u8; 64];
        while self.sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }
}

/// An identity document with the given egress rules (YAML list items, indented).
#[must_use]
pub fn identity(name: &str, mode: &str, extra_spec: &str, egress: &str) -> String {
    format!(
        "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: {name}\n  owner: tests@example.com\nspec:\n  mode: {mode}\n{extra_spec}  egress:\n{egress}\n"
    )
}

/// A directory of files a test makes before its daemon starts (binaries, scripts).
/// Removed on drop.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    #[must_use]
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("zt-test-files-{name}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("test dir");
        // Workloads run as nobody under `zt-agent run`.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod test dir");
        Self { path }
    }

    /// Copy `src` to NAME (a new file, mode kept), returning its path.
    #[must_use]
    pub fn copy(&self, src: &Path, name: &str) -> String {
        let dst = self.path.join(name);
        std::fs::copy(src, &dst).expect("copy");
        dst.display().to_string()
    }

    #[must_use]
    pub fn hardlink(&self, src: &str, name: &str) -> String {
        let dst = self.path.join(name);
        std::fs::hard_link(src, &dst).expect("hardlink");
        dst.display().to_string()
    }

    #[must_use]
    pub fn symlink(&self, src: &str, name: &str) -> String {
        let dst = self.path.join(name);
        std::os::unix::fs::symlink(src, &dst).expect("symlink");
        dst.display().to_string()
    }

    /// An executable script NAME with `text`.
    #[must_use]
    pub fn script(&self, name: &str, text: &str) -> String {
        let dst = self.path.join(name);
        std::fs::write(&dst, text).expect("script");
        std::fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod script");
        dst.display().to_string()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Run a program directly (as root, unenrolled unless its binary selects an identity),
/// returning (exit code, output).
#[must_use]
pub fn run_file(path: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(path).args(args).output().expect("run file");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// sha256 of a file, as `sha256sum` prints it.
#[must_use]
pub fn sha256_of(path: &str) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

impl Daemon {
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

/// A veth pair carrying test addresses: they are local to this host (connects to them
/// stay on the machine) but are not loopback, which DNS answers may never open.
/// Removed on drop.
pub struct Veth {
    name: String,
}

impl Veth {
    /// `name` is at most 12 characters; the peer is `<name>p`.
    #[must_use]
    pub fn new(name: &str, addrs: &[&str]) -> Self {
        let v = Self {
            name: name.to_owned(),
        };
        let _ = Command::new("ip")
            .args(["link", "del", name])
            .stderr(Stdio::null())
            .status();
        let peer = format!("{name}p");
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        for a in addrs {
            if a.contains(':') {
                ip(&["-6", "addr", "add", a, "dev", name, "nodad"]);
            } else {
                ip(&["addr", "add", a, "dev", name]);
            }
        }
        ip(&["link", "set", name, "up"]);
        ip(&["link", "set", &peer, "up"]);
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .status();
    }
}

/// dnsmasq on 127.0.0.1 at a free port, answering from a hosts file only: the
/// upstream resolver of the tests. Killed on drop.
pub struct Dnsmasq {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Dnsmasq {
    /// Serve `hosts` (address, name) with TTL `ttl` seconds.
    #[must_use]
    pub fn start(name: &str, hosts: &[(&str, &str)], ttl: u32) -> Self {
        let dir = std::env::temp_dir().join(format!("zt-dnsmasq-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dnsmasq dir");
        let text: String = hosts.iter().map(|(a, n)| format!("{a} {n}\n")).collect();
        std::fs::write(dir.join("hosts"), text).expect("hosts");
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("dnsmasq")
            .arg("--keep-in-foreground")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg(format!("--addn-hosts={}", dir.join("hosts").display()))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg(format!("--port={port}"))
            .arg(format!("--local-ttl={ttl}"))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg("--user=root")
            .arg("--log-facility=-")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq must be installed (./x test installs dnsmasq-base)");
        let d = Self { port, dir, child };
        // Ready when it answers over TCP.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    /// The daemon argument that makes this the upstream.
    #[must_use]
    pub fn upstream(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
