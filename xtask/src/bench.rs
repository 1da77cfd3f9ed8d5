//! `cargo xtask bench`: connect() cost with no hook, for an unenrolled task while the
//! agent is loaded, and for an enrolled task whose destination is allowed, at several
//! rule counts. Cases are interleaved within each round so that drift on this noisy
//! machine hits them all alike; results are medians with min and max.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{cargo, root, run};

const PORT: u16 = 47001;
const PIN_DIR: &str = "/sys/fs/bpf/zt-bench";
const STATE_DIR: &str = "/run/zt-bench";
/// Programs that run on the benchmark's path.
const PROGS: [&str; 3] = ["zt_connect4", "zt_sock_create", "zt_skb_egress"];

struct Bins {
    agent: PathBuf,
    bench: PathBuf,
}

fn policy(rules: u32) -> String {
    // One rule for the benchmark listener plus filler /32s elsewhere, so the trie has
    // `rules` entries for this identity.
    let mut to = String::from("127.0.0.1");
    for i in 1..rules {
        let _ = write!(
            to,
            ", 10.{}.{}.{}",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        );
    }
    format!(
        "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: bench\n  owner: bench@example.com\nspec:\n  egress:\n    - to: [{to}]\n      ports: [{PORT}]\n      protocol: tcp\n"
    )
}

fn teardown(bins: &Bins) {
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

fn start_daemon(bins: &Bins, policy_dir: &Path) -> anyhow::Result<Child> {
    let child = Command::new(&bins.agent)
        .args(["daemon", "--policy"])
        .arg(policy_dir)
        .args([
            "--pin-dir",
            PIN_DIR,
            "--state-dir",
            STATE_DIR,
            "--metrics-addr",
            "127.0.0.1:47002",
            "--events",
            "/dev/null",
        ])
        .stderr(Stdio::null())
        .spawn()
        .context("starting the daemon")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect("127.0.0.1:47002").is_err() {
        if Instant::now() > deadline {
            bail!("daemon not ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

fn measure(mut cmd: Command) -> anyhow::Result<(f64, f64)> {
    let out = cmd.output().context("bench client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "bench client failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |k: &str| -> anyhow::Result<f64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {k} in {text}"))
    };
    Ok((field("ns_per_connect=")?, field("ns_in_connect=")?))
}

fn unenrolled(bins: &Bins, n: u32) -> Command {
    let mut c = Command::new(&bins.bench);
    c.args(["connect", &PORT.to_string(), &n.to_string()]);
    c
}

fn enrolled(bins: &Bins, n: u32) -> Command {
    let mut c = Command::new(&bins.agent);
    c.args([
        "run",
        "--identity",
        "bench",
        "--user",
        "nobody",
        "--pin-dir",
        PIN_DIR,
        "--state-dir",
        STATE_DIR,
        "--",
    ])
    .arg(&bins.bench)
    .args(["connect", &PORT.to_string(), &n.to_string()]);
    c
}

/// run_time_ns and run_cnt of one program, from bpftool (with bpf_stats on).
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

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let med = if s.is_empty() { 0.0 } else { s[s.len() / 2] };
    (
        med,
        s.first().copied().unwrap_or(0.0),
        s.last().copied().unwrap_or(0.0),
    )
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, n, rule_counts): (usize, u32, &[u32]) = if quick {
        (2, 2_000, &[10])
    } else {
        (5, 20_000, &[10, 10_000, 100_000])
    };
    let mut b = cargo();
    b.args([
        "build",
        "--release",
        "-p",
        "zt-agent",
        "-p",
        "zt-agent-tests",
        "--bins",
    ]);
    run(b)?;
    let bins = Bins {
        agent: root().join("target/release/zt-agent"),
        bench: root().join("target/release/zt-bench"),
    };
    let work = std::env::temp_dir().join("zt-bench");
    let policy_dir = work.join("policy");
    std::fs::create_dir_all(&policy_dir)?;
    teardown(&bins);

    // case name -> samples of (ns per connect, ns in connect()).
    let mut cases: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let push = |cases: &mut Vec<(String, Vec<(f64, f64)>)>, name: String, s: (f64, f64)| match cases
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some((_, v)) => v.push(s),
        None => cases.push((name, vec![s])),
    };
    for round in 0..rounds {
        eprintln!("bench: round {}/{rounds}", round + 1);
        teardown(&bins);
        push(&mut cases, "no hook".into(), measure(unenrolled(&bins, n))?);
        for &rules in rule_counts {
            std::fs::write(policy_dir.join("bench.yaml"), policy(rules))?;
            let mut d = start_daemon(&bins, &policy_dir)?;
            let r = (|| -> anyhow::Result<()> {
                push(
                    &mut cases,
                    format!("unenrolled task, agent loaded ({rules} rules)"),
                    measure(unenrolled(&bins, n))?,
                );
                push(
                    &mut cases,
                    format!("enrolled, destination allowed ({rules} rules)"),
                    measure(enrolled(&bins, n))?,
                );
                Ok(())
            })();
            let _ = d.kill();
            let _ = d.wait();
            teardown(&bins);
            r?;
        }
        push(
            &mut cases,
            "no hook (again)".into(),
            measure(unenrolled(&bins, n))?,
        );
    }

    // Each program's own cost, from kernel.bpf_stats_enabled. Stats cost two clock
    // reads per program run, so they are on only for this separate pass.
    let mut prog_costs: Vec<(String, f64)> = Vec::new();
    if let Some(&rules) = rule_counts.last() {
        std::fs::write(policy_dir.join("bench.yaml"), policy(rules))?;
        let mut d = start_daemon(&bins, &policy_dir)?;
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
        let r = (|| -> anyhow::Result<()> {
            for (who, cmd) in [
                ("unenrolled", unenrolled(&bins, n)),
                ("enrolled", enrolled(&bins, n)),
            ] {
                let before: Vec<_> = PROGS.iter().map(|p| prog_stats(p)).collect();
                measure(cmd)?;
                for (p, b) in PROGS.iter().zip(before) {
                    if let (Some((t0, c0)), Some((t1, c1))) = (b, prog_stats(p))
                        && c1 > c0
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
        let _ = d.kill();
        let _ = d.wait();
        teardown(&bins);
        r?;
    }

    let base = cases
        .iter()
        .find(|(n, _)| n == "no hook")
        .map(|(_, v)| stats(&v.iter().map(|s| s.0).collect::<Vec<_>>()).0)
        .unwrap_or(1.0);
    let base_in = cases
        .iter()
        .find(|(n, _)| n == "no hook")
        .map(|(_, v)| stats(&v.iter().map(|s| s.1).collect::<Vec<_>>()).0)
        .unwrap_or(1.0);
    let mut md = String::new();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(md, "# zt-agent benchmark results\n");
    let _ = writeln!(
        md,
        "Machine: {} CPUs, kernel {}, {date}. {rounds} interleaved rounds of {n} connects each{}.\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        kernel.trim(),
        if quick { " (quick mode)" } else { "" }
    );
    let _ = writeln!(
        md,
        "One connect = socket + connect + accept + close (SO_LINGER 0) on loopback, one thread pinned to CPU 1. Enrolled cases run under `zt-agent run`, so they also pay its seccomp filter on every system call.\n"
    );
    let _ = writeln!(
        md,
        "| case | ns per connect (median) | min | max | ratio to no hook | ns in connect() (median) | ratio |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, v) in &cases {
        let (m, lo, hi) = stats(&v.iter().map(|s| s.0).collect::<Vec<_>>());
        let (mi, _, _) = stats(&v.iter().map(|s| s.1).collect::<Vec<_>>());
        let _ = writeln!(
            md,
            "| {name} | {m:.0} | {lo:.0} | {hi:.0} | {:.3} | {mi:.0} | {:.3} |",
            m / base,
            mi / base_in
        );
    }
    if !prog_costs.is_empty() {
        let _ = writeln!(
            md,
            "\nEach program's own run time per call (kernel.bpf_stats_enabled, a separate pass), as a share of a no-hook connect:\n"
        );
        let _ = writeln!(md, "| program, caller | ns per call | share of a connect |");
        let _ = writeln!(md, "|---|---:|---:|");
        for (name, ns) in &prog_costs {
            let _ = writeln!(md, "| {name} | {ns:.0} | {:.2}% |", 100.0 * ns / base);
        }
    }
    println!("{md}");
    if !quick {
        let dir = root().join("bench");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("RESULTS.md"), &md)?;
        eprintln!("bench: wrote bench/RESULTS.md");
    }
    Ok(())
}
