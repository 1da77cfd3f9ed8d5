//! The Workload API under load: SVID fetches per second by the official SPIFFE client
//! for Python inside `zt-agent run` (one and two clients at once, each over its own
//! channel), and the daemon's resident memory while it serves them.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};

use super::agent::{Agent, footprint, identity};
use super::client::field;
use super::report::stats;
use super::{Bins, PIN_DIR, STATE_DIR};

const IDENTITY: &str = "bench-svid";
/// The virtualenv scripts/setup.sh makes with the `spiffe` package.
const PYTHON: &str = "/opt/zt-agent/test-venv/bin/python3";
const SCRIPT: &str = include_str!("svid_fetch.py");

fn fetcher(bins: &Bins, script: &Path, kind: &str, n: &str) -> anyhow::Result<Child> {
    Command::new(&bins.agent)
        .args(["run", "--identity", IDENTITY, "--user", "nobody"])
        .args(["--pin-dir", PIN_DIR, "--state-dir", STATE_DIR, "--"])
        .arg(PYTHON)
        .arg(script)
        .args([kind, n])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("zt-agent run")
}

fn per_second(c: Child) -> anyhow::Result<f64> {
    let out = c.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "SVID fetcher failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    field(&text, "per_second")
}

/// Run the cases and return their section of the report.
pub fn bench(bins: &Bins, policy_dir: &Path, rounds: usize, n: u32) -> anyhow::Result<String> {
    if !Path::new(PYTHON).exists() {
        bail!("{PYTHON} is missing: run scripts/setup.sh (the SPIFFE client for Python)");
    }
    let work = policy_dir.parent().unwrap_or(policy_dir).to_path_buf();
    let dir = work.join("svid-policy");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("svid.yaml"),
        identity(IDENTITY, "  mode: enforce\n"),
    )?;
    // The workload runs as nobody: the script must be readable where it lies.
    let script = work.join("svid_fetch.py");
    std::fs::write(&script, SCRIPT)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644))?;
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755))?;
    let agent = Agent::start(bins, &dir)?;
    let (idle_rss, _) = footprint(agent.pid());
    let n_s = n.to_string();
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let mut peak_rss = idle_rss;
    let result = (|| -> anyhow::Result<()> {
        for round in 0..rounds {
            eprintln!("bench: svid round {}/{rounds}", round + 1);
            for kind in ["x509", "jwt"] {
                for clients in [1usize, 2] {
                    let children: Vec<Child> = (0..clients)
                        .map(|_| fetcher(bins, &script, kind, &n_s))
                        .collect::<Result<_, _>>()?;
                    // Sample the daemon's memory while the clients run.
                    let mut total = 0.0;
                    for c in children {
                        peak_rss = peak_rss.max(footprint(agent.pid()).0);
                        total += per_second(c)?;
                    }
                    peak_rss = peak_rss.max(footprint(agent.pid()).0);
                    let name = format!("{kind}, {clients} client(s)");
                    match rows.iter_mut().find(|r| r.0 == name) {
                        Some(r) => r.1.push(total),
                        None => rows.push((name, vec![total])),
                    }
                }
            }
        }
        Ok(())
    })();
    let (after_rss, _) = footprint(agent.pid());
    let hwm = zt_agent_host::proc::Status::of(agent.pid())
        .and_then(|s| s.first::<u64>("VmHWM"))
        .unwrap_or(0);
    agent.stop(bins);
    result?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## SPIFFE Workload API: SVID fetches\n\n{n} fetches per client and round with the official SPIFFE client for Python (py-spiffe) inside `zt-agent run`, each client over its own channel to the unix socket, in a closed loop: every X.509 fetch is a new FetchX509SVID stream, for which the daemon attests the caller (pidfd, task table), makes a P-256 key and signs a certificate; every JWT fetch attests and signs an ES256 token. The figures include the Python client's own work (parsing the certificate, the token). Medians over {rounds} round(s).\n"
    );
    let _ = writeln!(
        md,
        "| case | fetches per second (all clients) | min | max |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for (name, v) in &rows {
        let (med, lo, hi) = stats(v);
        let _ = writeln!(md, "| {name} | {med:.0} | {lo:.0} | {hi:.0} |");
    }
    let _ = writeln!(
        md,
        "\nDaemon resident memory: {} KiB idle, {} KiB at most while serving (sampled), {} KiB after; high-water mark {} KiB.",
        idle_rss, peak_rss, after_rss, hwm
    );
    Ok(md)
}
