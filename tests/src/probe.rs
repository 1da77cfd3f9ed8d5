//! The binaries under test (zt-agent, zt-probe), zt-probe's exit codes, and running a
//! program outside any identity.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// zt-probe's exit codes: src/bin/zt-probe.rs returns them.
pub mod code {
    pub const OK: u8 = 0;
    /// Bad usage.
    pub const USAGE: u8 = 2;
    /// EPERM or EACCES: the operation was denied.
    pub const DENIED: u8 = 10;
    /// Any other error.
    pub const OTHER: u8 = 11;
    /// A program it spawned was killed by SIGKILL.
    pub const KILLED: u8 = 12;
    /// A connect got no answer in time: what a dropped SYN looks like to the peer.
    pub const TIMEOUT: u8 = 13;
}

/// zt-probe's exit codes as `ExitStatus::code` reports them, for the tests to compare.
pub const OK: i32 = code::OK as i32;
pub const DENIED: i32 = code::DENIED as i32;
/// zt-probe: a program it spawned was killed by SIGKILL.
pub const KILLED: i32 = code::KILLED as i32;
/// zt-probe: a connect got no answer in time.
pub const TIMEOUT: i32 = code::TIMEOUT as i32;

fn target_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// The tests' Python environment scripts/setup.sh makes (the `spiffe` client,
/// kubernetes-validate), readable by the unprivileged users workloads run as.
pub const TEST_VENV: &str = "/opt/zt-agent/test-venv";

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

/// A finished program's exit code (-1 when a signal ended it) and its stdout and stderr.
#[must_use]
pub fn code_and_output(out: &Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Run `zt-probe ARGS` unenrolled, as root, in the test's own cgroup.
#[must_use]
pub fn run_probe_unenrolled(args: &[&str]) -> (i32, String) {
    let out = Command::new(probe_bin())
        .args(args)
        .output()
        .expect("probe");
    code_and_output(&out)
}

/// Run a program directly (as root, unenrolled unless its binary selects an identity),
/// returning (exit code, output).
#[must_use]
pub fn run_file(path: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(path).args(args).output().expect("run file");
    code_and_output(&out)
}

/// Start `zt-probe ARGS` unenrolled, as root, with its output piped.
#[must_use]
pub fn spawn_probe_unenrolled(args: &[&str]) -> std::process::Child {
    Command::new(probe_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("probe")
}

/// A probe running in the background that has said which port it uses (a line with
/// `port=P`); the rest of its output comes with [`Background::finish`].
pub struct Background {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    pub port: u16,
    seen: String,
}

impl Background {
    /// Wait for `child` (started with its stdout piped) to print its port.
    #[must_use]
    pub fn start(mut child: std::process::Child) -> Self {
        use std::io::BufRead as _;
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.wait();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("the probe ended before it reported a port:\n{seen}{err}");
            }
            seen.push_str(&line);
            if let Some(p) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("port="))
            {
                let port = p.parse().expect("port");
                return Self {
                    child,
                    out,
                    port,
                    seen,
                };
            }
        }
    }

    /// Wait for the probe to end: its exit code and all it printed.
    #[must_use]
    pub fn finish(mut self) -> (i32, String) {
        use std::io::Read as _;
        let mut rest = String::new();
        let _ = self.out.read_to_string(&mut rest);
        let status = self.child.wait().expect("wait probe");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (
            status.code().unwrap_or(-1),
            format!("{}{rest}{err}", self.seen),
        )
    }
}

/// The number after `key=` in a probe's output (its last such line), if any.
#[must_use]
pub fn reported(out: &str, key: &str) -> Option<u64> {
    out.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.trim().parse().ok())
}
