//! Each program's own run time per call, from the kernel's bpf_stats.

use std::path::Path;
use std::process::Command;

use zt_agent_common::PROGRAMS;

use super::agent::{Agent, policy};
use super::client::{args, client, enrolled, measure};
use super::{Bins, PORT, Plan};

/// run_time_ns and run_cnt of one program, from bpftool (bpf_stats on).
fn prog_stats(name: &str) -> Option<(u64, u64)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "name", name])
        .output()
        .ok()?;
    if !out.status.success() || out.stdout.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // bpftool leaves the counters out while they are zero.
    let num = |k: &str| {
        text.split_whitespace()
            .skip_while(|w| *w != k)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some((num("run_time_ns"), num("run_cnt")))
}

/// (program and caller, ns per call) of every program that ran on the connect path.
pub fn costs(plan: &Plan, bins: &Bins, policy_dir: &Path) -> anyhow::Result<Vec<(String, f64)>> {
    let n = plan.n.to_string();
    let port = PORT.to_string();
    // Each program's own cost; bpf_stats cost two clock reads per run, so they are
    // on only for this pass.
    let mut prog_costs: Vec<(String, f64)> = Vec::new();
    let rules = *plan.agent_rules.last().unwrap_or(&10);
    std::fs::write(policy_dir.join("bench.yaml"), policy(rules, None))?;
    let agent = Agent::start(bins, policy_dir)?;
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let res = (|| -> anyhow::Result<()> {
        for (who, cmd) in [
            ("unenrolled", client(bins, &args(&["connect", &port, &n]))),
            ("enrolled", enrolled(bins, &args(&["connect", &port, &n]))),
        ] {
            // Every program of the agent's table that runs on each connect gets a row
            // (fork, exec and exit run once, for the client itself).
            let names = PROGRAMS.iter().map(|p| p.name);
            let before: Vec<_> = names.clone().map(|p| (p, prog_stats(p))).collect();
            measure(cmd)?;
            for (p, b) in before {
                if let (Some((t0, c0)), Some((t1, c1))) = (b, prog_stats(p))
                    && c1 - c0 >= u64::from(plan.n / 2)
                {
                    prog_costs.push((
                        format!("{p}, {who} task ({rules} rules)"),
                        (t1 - t0) as f64 / (c1 - c0) as f64,
                    ));
                }
            }
        }
        Ok(())
    })();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    agent.stop(bins);
    res?;
    Ok(prog_costs)
}
