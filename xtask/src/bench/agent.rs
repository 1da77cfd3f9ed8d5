//! The agent under bench: its policies, its daemon started and torn down on the
//! benchmark's own pins, its metrics scraped, its footprint.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::grants::GRANT_PORT;
use super::{Bins, DENIED_PORT, METRICS, PIN_DIR, PORT, SELECTED_CGROUP, STATE_DIR, peers};

/// An identity document of the benchmark; `spec` is its indented spec lines.
pub fn identity(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: {name}\n  owner: bench@example.com\nspec:\n{spec}"
    )
}

/// The benchmark identity: the selected cgroup may reach 127.0.0.1 on PORT (and
/// `extra_port`), among `rules` destinations, and listen on PORT and DENIED_PORT for
/// 127.0.0.1 (its clients connect to listeners of their own).
pub fn policy(rules: u32, extra_port: Option<u16>) -> String {
    let mut to = String::from("127.0.0.1");
    for i in 1..rules {
        let _ = write!(to, ", {}", peers::filler(i));
    }
    let ports = match extra_port {
        Some(p) => format!("{PORT}, {p}"),
        None => PORT.to_string(),
    };
    identity(
        "bench",
        &format!(
            "  selectors:\n    - cgroup: {SELECTED_CGROUP}\n  egress:\n    - to: [{to}]\n      ports: [{ports}]\n      protocol: any\n  ingress:\n    - from: [127.0.0.1]\n      ports: [{PORT}, {DENIED_PORT}, {GRANT_PORT}]\n"
        ),
    )
}

/// Identity of the exec storm with an exec allowlist: the client and /bin/true only.
pub const EXEC_IDENTITY: &str = "bench-exec";

pub fn exec_policy(bins: &Bins) -> String {
    identity(
        EXEC_IDENTITY,
        &format!(
            "  exec:\n    allow: [{}, /bin/true]\n",
            bins.bench.display()
        ),
    )
}

/// The bench daemon's Workload API socket, apart from a real daemon's.
pub const WORKLOAD_API: &str = "/run/zt-bench-workload/socket";

pub struct Agent {
    child: Child,
}

impl Agent {
    pub fn start(bins: &Bins, policy_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(bins, policy_dir, &[])
    }

    pub fn start_with(bins: &Bins, policy_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        teardown(bins);
        let child = Command::new(&bins.agent)
            .args(["daemon", "--policy"])
            .arg(policy_dir)
            .args([
                "--pin-dir",
                PIN_DIR,
                "--state-dir",
                STATE_DIR,
                "--metrics-addr",
                METRICS,
                "--events",
                "/dev/null",
                "--workload-api",
                WORKLOAD_API,
            ])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .context("starting the daemon")?;
        let mut a = Self { child };
        let deadline = Instant::now() + Duration::from_secs(120);
        // The daemon records its pid in its state file last, once every part is ready
        // (the control socket included); an earlier write of the file has no pid.
        let state = Path::new(STATE_DIR).join("state.json");
        let pid = format!("\"daemon_pid\": {},", a.child.id());
        while std::net::TcpStream::connect(METRICS).is_err()
            || !std::fs::read_to_string(&state).is_ok_and(|s| s.contains(&pid))
        {
            if let Ok(Some(s)) = a.child.try_wait() {
                bail!("daemon exited during start-up: {s}");
            }
            if Instant::now() > deadline {
                bail!("daemon not ready");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(a)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self, bins: &Bins) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        teardown(bins);
    }
}

pub fn teardown(bins: &Bins) {
    let _ = Command::new(&bins.agent)
        .args([
            "daemon",
            "--teardown",
            "--pin-dir",
            PIN_DIR,
            "--state-dir",
            STATE_DIR,
        ])
        .stderr(Stdio::null())
        .status();
}

/// One series of the daemon's metrics, 0 when absent.
pub fn scrape(series: &str) -> f64 {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(METRICS) else {
        return 0.0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Resident memory (KiB) and CPU time (clock ticks) of a process.
pub fn footprint(pid: u32) -> (u64, u64) {
    let rss = zt_agent_host::proc::Status::of(pid)
        .and_then(|s| s.first("VmRSS"))
        .unwrap_or(0);
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            // utime and stime are fields 14 and 15; after the comm they are 12 and 13.
            Some(after.get(11)?.parse::<u64>().ok()? + after.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    (rss, cpu)
}
