//! Samples, their medians, and the markdown report of one run (bench/RESULTS.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use super::Plan;

/// Daemon footprint: (when, RSS in KiB, CPU as a share of one core).
pub type Footprint = (String, u64, f64);
/// Policy reload: (rules, ms to enforced, worst connect in µs, failed connects).
pub type Reload = (u32, f64, f64, f64);
/// Exec storm: (case, execs per second).
pub type ExecRow = (String, f64);
/// Exec storm: (case, execs, events delivered or counted lost, lost).
pub type ExecAccounting = (String, f64, f64, f64);

/// Samples of one case: (ns per operation, ns inside the system call).
#[derive(Default)]
pub struct Samples(Vec<(f64, f64)>);

#[derive(Default)]
pub struct Results {
    /// Case name -> samples, in first-seen order.
    order: Vec<String>,
    cases: BTreeMap<String, Samples>,
}

impl Results {
    pub fn push(&mut self, name: &str, s: (f64, f64)) {
        if !self.cases.contains_key(name) {
            self.order.push(name.to_owned());
        }
        self.cases.entry(name.to_owned()).or_default().0.push(s);
    }
    /// Case names in first-seen order.
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// Samples of a case: (ns per operation, ns inside the call).
    pub fn samples(&self, name: &str) -> &[(f64, f64)] {
        self.cases.get(name).map_or(&[], |s| s.0.as_slice())
    }

    pub fn median(&self, name: &str) -> Option<f64> {
        self.cases
            .get(name)
            .map(|s| stats(&s.0.iter().map(|x| x.0).collect::<Vec<_>>()).0)
    }
}

pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let med = if s.is_empty() { 0.0 } else { s[s.len() / 2] };
    (
        med,
        s.first().copied().unwrap_or(0.0),
        s.last().copied().unwrap_or(0.0),
    )
}

/// Everything one run measured, for the report.
#[derive(Default)]
pub struct Measured {
    pub cases: Results,
    pub reloads: Vec<Reload>,
    pub exec_rows: Vec<ExecRow>,
    pub exec_accounting: Vec<ExecAccounting>,
    pub footprints: Vec<Footprint>,
    /// (program and caller, ns per call).
    pub prog_costs: Vec<(String, f64)>,
}

#[expect(
    clippy::too_many_lines,
    reason = "the report's sections, in the order they are read"
)]
pub fn render(plan: &Plan, quick: bool, m: &Measured) -> String {
    let Measured {
        cases: r,
        reloads,
        exec_rows,
        exec_accounting,
        footprints,
        prog_costs,
    } = m;
    let mut md = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let _ = writeln!(md, "# zt-agent benchmark results\n");
    let _ = writeln!(
        md,
        "Machine: {cpus} CPUs, kernel {}, {date}. {} interleaved rounds of {} operations per case{}. Produced by `sudo ./x bench`.\n",
        kernel.trim(),
        plan.rounds,
        plan.n,
        if quick { " (quick mode)" } else { "" }
    );
    let _ = writeln!(
        md,
        "connect = socket + connect + accept + close (SO_LINGER 0) on loopback in a private network namespace, one client thread pinned to CPU 1; udp = sendto without connect + recv; inbound = an unenrolled client's connect to a listener in another process (on CPU 0), which accepts and resets it: the listener's side of a connection. \
         Ratios are to the same operation with no hook at all (1.00 is the physical limit). \
         Enrolled cases run under `zt-agent run`, so they also pay its seccomp filter on every system call. \
         Peers judge the client's cgroup and only SYN packets (no conntrack), as zt-agent judges connect(); iptables uses Debian's default nf_tables backend.\n"
    );
    let _ = writeln!(
        md,
        "| case | ns per op (median) | min | max | ratio to no hook | ns in the call | ratio |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    let base = |kind: &str| -> (f64, f64) {
        r.cases
            .get(&format!("{kind}: no hook"))
            .map_or((1.0, 1.0), |s| {
                (
                    stats(&s.0.iter().map(|x| x.0).collect::<Vec<_>>()).0,
                    stats(&s.0.iter().map(|x| x.1).collect::<Vec<_>>()).0,
                )
            })
    };
    for name in &r.order {
        let Some(s) = r.cases.get(name) else { continue };
        let kind = name.split(':').next().unwrap_or("connect");
        let (b, bi) = base(kind);
        let (m, lo, hi) = stats(&s.0.iter().map(|x| x.0).collect::<Vec<_>>());
        let (mi, _, _) = stats(&s.0.iter().map(|x| x.1).collect::<Vec<_>>());
        let _ = writeln!(
            md,
            "| {name} | {m:.0} | {lo:.0} | {hi:.0} | {:.3} | {mi:.0} | {:.3} |",
            m / b,
            mi / bi
        );
    }
    let _ = writeln!(
        md,
        "\n## Peers against zt-agent (connect, destination allowed, the client enrolled by its cgroup in every case)\n"
    );
    let _ = writeln!(
        md,
        "| rules | nftables / zt-agent | iptables / zt-agent | OpenSnitch / zt-agent |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|");
    for &rules in plan.agent_rules {
        let zt = r.median(&format!(
            "connect: zt-agent, allowed, cgroup selector ({rules} rules)"
        ));
        let nft = r.median(&format!("connect: nftables set ({rules} rules)"));
        let ipt = r.median(&format!(
            "connect: iptables, one rule per entry ({rules} rules)"
        ));
        let ratio = |p: Option<f64>| match (p, zt) {
            (Some(p), Some(z)) => format!("{:.3}", p / z),
            _ => "-".into(),
        };
        let os = r.median(&format!("connect: OpenSnitch ({rules} rules)"));
        let _ = writeln!(
            md,
            "| {rules} | {} | {} | {} |",
            ratio(nft),
            ratio(ipt),
            ratio(os)
        );
    }
    let _ = writeln!(
        md,
        "\n## Policy reload (file change + SIGHUP until the new policy is in the kernel)\n"
    );
    let _ = writeln!(
        md,
        "| rules | ms to enforced | worst connect() during it, µs | failed connects |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|");
    for (rules, ms, worst, failed) in reloads {
        let _ = writeln!(md, "| {rules} | {ms:.0} | {worst:.0} | {failed:.0} |");
    }
    let _ = writeln!(md, "\n## Exec storm (fork + exec /bin/true, waited for)\n");
    let _ = writeln!(md, "| case | execs per second | ratio to no hook |");
    let _ = writeln!(md, "|---|---:|---:|");
    let eb = exec_rows.first().map_or(1.0, |x| x.1);
    for (name, rate) in exec_rows {
        let _ = writeln!(md, "| {name} | {rate:.0} | {:.3} |", rate / eb);
    }
    let _ = writeln!(md);
    for (name, execs, events, lost) in exec_accounting {
        let _ = writeln!(
            md,
            "{name}: {execs:.0} execs, {events:.0} exec events delivered or counted lost (checked equal), {lost:.0} lost."
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "## Daemon footprint\n");
    let _ = writeln!(md, "| when | RSS, MiB | CPU, share of one core |");
    let _ = writeln!(md, "|---|---:|---:|");
    for (when, rss, cpu) in footprints {
        let _ = writeln!(md, "| {when} | {:.1} | {:.3} |", *rss as f64 / 1024.0, cpu);
    }
    if !prog_costs.is_empty() {
        let (b, _) = base("connect");
        let _ = writeln!(
            md,
            "\n## Programs' own run time (kernel.bpf_stats_enabled, a separate pass)\n"
        );
        let _ = writeln!(
            md,
            "| program, caller | ns per call | share of a no-hook connect |"
        );
        let _ = writeln!(md, "|---|---:|---:|");
        for (name, ns) in prog_costs {
            let _ = writeln!(md, "| {name} | {ns:.0} | {:.2}% |", 100.0 * ns / b);
        }
    }
    md
}
