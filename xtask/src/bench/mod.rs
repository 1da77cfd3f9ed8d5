//! `cargo xtask bench [--quick]`: zt-agent against the kernel with no hook and against
//! the peers a host admin would pick instead, every case in one run.
//!
//! Cases are interleaved within each round (set up, measure, tear down), so drift on
//! this noisy machine hits them alike; figures are medians with min and max over the
//! rounds. Everything runs in a private network namespace. The full run writes
//! bench/RESULTS.md; `--quick` (small counts, what CI runs) only prints.
//!
//! Sections by file: `connect` (the interleaved rounds), `reload`, `exec` (the exec
//! storm), `progs` (programs' own run time), `dns`, `grants` (connects with 0 and
//! with many active grants), `svid` (the Workload API); `agent` is the daemon under
//! bench, `client` the zt-bench client, `peers` the alternatives, `report` the markdown.

mod agent;
mod client;
mod connect;
mod dns;
mod exec;
mod grants;
mod peers;
mod progs;
mod reload;
mod report;
mod svid;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

use crate::cmd;
use agent::teardown;
use report::Measured;

const PORT: u16 = 47001;
const DENIED_PORT: u16 = 47003;
const METRICS: &str = "127.0.0.1:47002";
const PIN_DIR: &str = "/sys/fs/bpf/zt-bench";
const STATE_DIR: &str = "/run/zt-bench";
const PEER_CGROUP: &str = "/zt-bench-peer";
/// Selected by the benchmark identity's cgroup selector: enrolled the way a service is,
/// with no `zt-agent run` (and so no seccomp filter) in the way, like the peers' client.
const SELECTED_CGROUP: &str = "/zt-bench-selected";

struct Plan {
    rounds: usize,
    n: u32,
    agent_rules: &'static [u32],
    nft_rules: &'static [u32],
    iptables_rules: &'static [u32],
    opensnitch_rules: &'static [u32],
    reload_rules: &'static [u32],
    execs: u32,
    dns_queries: u32,
    /// Grants in force in the grants section's "many" cases.
    grants: u32,
    svid_fetches: u32,
}

const FULL: Plan = Plan {
    rounds: 5,
    n: 20_000,
    agent_rules: &[10, 1_000, 10_000, 100_000],
    nft_rules: &[10, 1_000, 10_000, 100_000],
    iptables_rules: &[10, 1_000, 10_000],
    opensnitch_rules: &[10, 1_000, 10_000],
    reload_rules: &[1_000, 10_000, 100_000],
    execs: 2_000,
    dns_queries: 20_000,
    grants: 1_000,
    svid_fetches: 2_000,
};

const QUICK: Plan = Plan {
    rounds: 2,
    n: 1_000,
    agent_rules: &[10],
    nft_rules: &[10],
    iptables_rules: &[10],
    opensnitch_rules: &[10],
    reload_rules: &[1_000],
    execs: 200,
    dns_queries: 400,
    grants: 20,
    svid_fetches: 100,
};

struct Bins {
    agent: PathBuf,
    bench: PathBuf,
}

/// A private network namespace for this process and everything it starts.
fn enter_private_netns() -> anyhow::Result<()> {
    // SAFETY: unshare affects only this (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    }
    cmd::run({
        let mut c = Command::new("ip");
        c.args(["link", "set", "lo", "up"]);
        c
    })
}

/// Hold the host's bench lock until the returned file is dropped (waits for a bench
/// that holds it).
fn one_at_a_time() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/zt-agent-bench.lock")?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(f)
}

/// A section of the run, as `--only` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Connect,
    Reload,
    Exec,
    Progs,
    Dns,
    Grants,
    Svid,
}

pub fn run(quick: bool, only: &[Section]) -> anyhow::Result<()> {
    let plan = if quick { &QUICK } else { &FULL };
    peers::ensure_installed()?;
    peers::opensnitch_install()?;
    let mut b = cmd::cargo();
    b.args([
        "build",
        "--release",
        "-p",
        "zt-agent",
        "-p",
        "zt-agent-tests",
        "--bins",
    ]);
    cmd::run(b)?;
    // One bench at a time on this host: they share the bench's pins, cgroups and peers'
    // rules, and one would skew the other's figures anyway.
    let _lock = one_at_a_time()?;
    let bins = Bins {
        agent: cmd::root().join("target/release/zt-agent"),
        bench: cmd::root().join("target/release/zt-bench"),
    };
    enter_private_netns()?;
    let cg2 = zt_agent_host::mounts::cgroup2_mount()?;
    let peer_cg = cg2.join(PEER_CGROUP.trim_start_matches('/'));
    std::fs::create_dir_all(&peer_cg)?;
    let work = std::env::temp_dir().join("zt-bench");
    let policy_dir = work.join("policy");
    std::fs::create_dir_all(&policy_dir)?;
    let result = bench(plan, quick, only, &bins, &cg2, &peer_cg, &policy_dir);
    peers::nft_flush();
    peers::iptables_flush();
    peers::opensnitch_restore();
    teardown(&bins);
    let _ = std::fs::remove_dir(cg2.join(SELECTED_CGROUP.trim_start_matches('/')));
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let _ = std::fs::remove_dir(&peer_cg);
    let md = result?;
    println!("{md}");
    if !quick && only.is_empty() {
        let dir = cmd::root().join("bench");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("RESULTS.md"), &md)?;
        eprintln!("bench: wrote bench/RESULTS.md");
    }
    Ok(())
}

fn bench(
    plan: &Plan,
    quick: bool,
    only: &[Section],
    bins: &Bins,
    cg2: &Path,
    peer_cg: &Path,
    policy_dir: &Path,
) -> anyhow::Result<String> {
    let runs = |s: Section| only.is_empty() || only.contains(&s);
    let mut m = Measured::default();
    if runs(Section::Connect) {
        connect::rounds(
            plan,
            bins,
            cg2,
            peer_cg,
            policy_dir,
            &mut m.cases,
            &mut m.footprints,
        )?;
    }
    if runs(Section::Reload) {
        m.reloads = reload::reloads(plan, bins, policy_dir)?;
    }
    if runs(Section::Exec) {
        (m.exec_rows, m.exec_accounting) = exec::storm(plan, bins, policy_dir, &mut m.footprints)?;
    }
    if runs(Section::Progs) {
        m.prog_costs = progs::costs(plan, bins, cg2, policy_dir)?;
    }
    let mut md = if [
        Section::Connect,
        Section::Reload,
        Section::Exec,
        Section::Progs,
    ]
    .into_iter()
    .any(runs)
    {
        report::render(plan, quick, &m)
    } else {
        String::new()
    };
    if runs(Section::Dns) {
        md += &dns::bench(bins, policy_dir, plan.rounds, plan.dns_queries)?;
    }
    if runs(Section::Grants) {
        md += &grants::bench(bins, cg2, policy_dir, plan.rounds, plan.n, plan.grants)?;
    }
    if runs(Section::Svid) {
        md += &svid::bench(bins, policy_dir, plan.rounds, plan.svid_fetches)?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::agent::policy;
    use super::client::field;
    use super::report::stats;

    #[test]
    fn medians_and_fields() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(
            field("ns_per_op=12 ns_in_call=7", "ns_in_call").ok(),
            Some(7.0)
        );
        assert!(field("x=1", "ns_per_op").is_err());
        assert!(policy(3, Some(9)).contains("10.0.0.2"));
    }
}
