//! `cargo xtask bench [--quick]`: zt-agent against the kernel with no hook and against
//! the peers a host admin would pick instead, every case in one run.
//!
//! Cases are interleaved within each round (set up, measure, tear down), so drift on
//! this noisy machine hits them alike; figures are medians with min and max over the
//! rounds. Everything runs in a private network namespace. The full run writes
//! bench/RESULTS.md; `--quick` (small counts, what CI runs) only prints.

mod dns;
mod peers;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{cargo, root, run};

const PORT: u16 = 47001;
const DENIED_PORT: u16 = 47003;
const METRICS: &str = "127.0.0.1:47002";
const PIN_DIR: &str = "/sys/fs/bpf/zt-bench";
const STATE_DIR: &str = "/run/zt-bench";
const PEER_CGROUP: &str = "/zt-bench-peer";
/// Selected by the benchmark identity's cgroup selector: enrolled the way a service is,
/// with no `zt-agent run` (and so no seccomp filter) in the way, like the peers' client.
const SELECTED_CGROUP: &str = "/zt-bench-selected";
/// Programs on the benchmark's path, for their own run time.
const PROGS: [&str; 3] = ["zt_connect4", "zt_sock_create", "zt_skb_egress"];

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
};

struct Bins {
    agent: PathBuf,
    bench: PathBuf,
}

/// Samples of one case: (ns per operation, ns inside the system call).
#[derive(Default)]
struct Samples(Vec<(f64, f64)>);

#[derive(Default)]
struct Results {
    /// Case name -> samples, in first-seen order.
    order: Vec<String>,
    cases: BTreeMap<String, Samples>,
}

impl Results {
    fn push(&mut self, name: &str, s: (f64, f64)) {
        if !self.cases.contains_key(name) {
            self.order.push(name.to_owned());
        }
        self.cases.entry(name.to_owned()).or_default().0.push(s);
    }
    fn median(&self, name: &str) -> Option<f64> {
        self.cases
            .get(name)
            .map(|s| stats(&s.0.iter().map(|x| x.0).collect::<Vec<_>>()).0)
    }
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

fn policy(rules: u32, extra_port: Option<u16>) -> String {
    let mut to = String::from("127.0.0.1");
    for i in 1..rules {
        let _ = write!(to, ", {}", peers::filler(i));
    }
    let ports = match extra_port {
        Some(p) => format!("{PORT}, {p}"),
        None => PORT.to_string(),
    };
    format!(
        "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: bench\n  owner: bench@example.com\nspec:\n  selectors:\n    - cgroup: {SELECTED_CGROUP}\n  egress:\n    - to: [{to}]\n      ports: [{ports}]\n      protocol: any\n"
    )
}

struct Agent {
    child: Child,
}

impl Agent {
    fn start(bins: &Bins, policy_dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(bins, policy_dir, &[])
    }

    fn start_with(bins: &Bins, policy_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
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
            ])
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .context("starting the daemon")?;
        let mut a = Self { child };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(METRICS).is_err() {
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self, bins: &Bins) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        teardown(bins);
    }
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

fn client(bins: &Bins, args: &[String]) -> Command {
    let mut c = Command::new(&bins.bench);
    c.args(args);
    c
}

fn enrolled(bins: &Bins, args: &[String]) -> Command {
    enrolled_as(bins, "bench", args)
}

/// Identity of the exec storm with an exec allowlist: the client and /bin/true only.
const EXEC_IDENTITY: &str = "bench-exec";

fn exec_policy(bins: &Bins) -> String {
    format!(
        "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: {EXEC_IDENTITY}\n  owner: bench@example.com\nspec:\n  exec:\n    allow: [{}, /bin/true]\n",
        bins.bench.display()
    )
}

fn enrolled_as(bins: &Bins, identity: &str, args: &[String]) -> Command {
    let mut c = Command::new(&bins.agent);
    c.args([
        "run",
        "--identity",
        identity,
        "--user",
        "nobody",
        "--pin-dir",
        PIN_DIR,
        "--state-dir",
        STATE_DIR,
        "--",
    ])
    .arg(&bins.bench)
    .args(args);
    c
}

fn output(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd.output().context("bench client")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "bench client failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

fn field(text: &str, k: &str) -> anyhow::Result<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {k} in {text}"))
}

fn measure(cmd: Command) -> anyhow::Result<(f64, f64)> {
    let text = output(cmd)?;
    Ok((field(&text, "ns_per_op")?, field(&text, "ns_in_call")?))
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// One series of the daemon's metrics, 0 when absent.
fn scrape(series: &str) -> f64 {
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

/// Resident memory (KiB) and CPU time (clock ticks) of a process.
fn footprint(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
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

fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    for line in info.lines() {
        let mut parts = line.split(" - ");
        if let (Some(l), Some(r)) = (parts.next(), parts.next())
            && r.split_whitespace().next() == Some("cgroup2")
            && let Some(mp) = l.split_whitespace().nth(4)
        {
            return Ok(PathBuf::from(mp));
        }
    }
    bail!("no cgroup2 mount")
}

/// A private network namespace for this process and everything it starts.
fn enter_private_netns() -> anyhow::Result<()> {
    // SAFETY: unshare affects only this (single-threaded) process.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    }
    run({
        let mut c = Command::new("ip");
        c.args(["link", "set", "lo", "up"]);
        c
    })
}

pub fn main(argv: &[String]) -> anyhow::Result<()> {
    let quick = argv.iter().any(|a| a == "--quick");
    let plan = if quick { &QUICK } else { &FULL };
    peers::ensure_installed()?;
    peers::opensnitch_install()?;
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
    enter_private_netns()?;
    let cg2 = cgroup2_root()?;
    let peer_cg = cg2.join(PEER_CGROUP.trim_start_matches('/'));
    std::fs::create_dir_all(&peer_cg)?;
    let work = std::env::temp_dir().join("zt-bench");
    let policy_dir = work.join("policy");
    std::fs::create_dir_all(&policy_dir)?;
    let result = bench(plan, quick, &bins, &cg2, &peer_cg, &policy_dir);
    peers::nft_flush();
    peers::iptables_flush();
    peers::opensnitch_restore();
    teardown(&bins);
    let _ = std::fs::remove_dir(cg2.join(SELECTED_CGROUP.trim_start_matches('/')));
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let _ = std::fs::remove_dir(&peer_cg);
    let md = result?;
    println!("{md}");
    if !quick {
        let dir = root().join("bench");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("RESULTS.md"), &md)?;
        eprintln!("bench: wrote bench/RESULTS.md");
    }
    Ok(())
}

#[expect(
    clippy::too_many_lines,
    reason = "the benchmark's plan, read top to bottom"
)]
fn bench(
    plan: &Plan,
    quick: bool,
    bins: &Bins,
    cg2: &Path,
    peer_cg: &Path,
    policy_dir: &Path,
) -> anyhow::Result<String> {
    let n = plan.n.to_string();
    let port = PORT.to_string();
    let in_cgroup = |cg: &Path, a: &[&str]| -> Vec<String> {
        let mut v = vec!["--cgroup".to_owned(), cg.display().to_string()];
        v.extend(a.iter().map(|s| (*s).to_owned()));
        v
    };
    let in_peer = |a: &[&str]| in_cgroup(peer_cg, a);
    let selected_cg = cg2.join(SELECTED_CGROUP.trim_start_matches('/'));
    std::fs::create_dir_all(&selected_cg)?;
    let in_selected = |a: &[&str]| in_cgroup(&selected_cg, a);
    let mut r = Results::default();
    let mut footprints: Vec<(String, u64, f64)> = Vec::new();

    for round in 0..plan.rounds {
        eprintln!("bench: round {}/{}", round + 1, plan.rounds);
        teardown(bins);
        r.push(
            "connect: no hook",
            measure(client(bins, &args(&["connect", &port, &n])))?,
        );
        r.push(
            "udp: no hook",
            measure(client(bins, &args(&["udp", &port, &n])))?,
        );
        for &rules in plan.agent_rules {
            std::fs::write(policy_dir.join("bench.yaml"), policy(rules, None))?;
            let agent = Agent::start(bins, policy_dir)?;
            let res = (|| -> anyhow::Result<()> {
                output(enrolled(
                    bins,
                    &args(&["check", &port, &DENIED_PORT.to_string()]),
                ))
                .context("zt-agent does not enforce the benchmark policy")?;
                r.push(
                    &format!("connect: zt-agent, unenrolled task ({rules} rules)"),
                    measure(client(bins, &args(&["connect", &port, &n])))?,
                );
                let (cpu0, t0) = (footprint(agent.pid()).1, Instant::now());
                r.push(
                    &format!("connect: zt-agent, allowed, zt-agent run ({rules} rules)"),
                    measure(enrolled(bins, &args(&["connect", &port, &n])))?,
                );
                if round == 0 {
                    let (rss, cpu1) = footprint(agent.pid());
                    let ticks = 100.0; // USER_HZ
                    let busy = (cpu1 - cpu0) as f64 / ticks / t0.elapsed().as_secs_f64();
                    footprints.push((format!("under the connect loop, {rules} rules"), rss, busy));
                }
                output(client(
                    bins,
                    &in_selected(&["check", &port, &DENIED_PORT.to_string()]),
                ))
                .context("zt-agent does not enforce the benchmark policy by cgroup")?;
                r.push(
                    &format!("connect: zt-agent, allowed, cgroup selector ({rules} rules)"),
                    measure(client(bins, &in_selected(&["connect", &port, &n])))?,
                );
                r.push(
                    &format!("udp: zt-agent, allowed, cgroup selector ({rules} rules)"),
                    measure(client(bins, &in_selected(&["udp", &port, &n])))?,
                );
                r.push(
                    &format!("connect: zt-agent, denied ({rules} rules)"),
                    measure(enrolled(
                        bins,
                        &args(&["denied", &DENIED_PORT.to_string(), &n]),
                    ))?,
                );
                r.push(
                    &format!("udp: zt-agent, allowed, zt-agent run ({rules} rules)"),
                    measure(enrolled(bins, &args(&["udp", &port, &n])))?,
                );
                Ok(())
            })();
            agent.stop(bins);
            res?;
        }
        for &rules in plan.nft_rules {
            peers::nft_load(cg2, PEER_CGROUP, PORT, rules)?;
            let m = output(client(
                bins,
                &in_peer(&["check", &port, &DENIED_PORT.to_string()]),
            ))
            .context("nftables does not enforce the benchmark rules")
            .and_then(|_| measure(client(bins, &in_peer(&["connect", &port, &n]))));
            peers::nft_flush();
            r.push(&format!("connect: nftables set ({rules} rules)"), m?);
        }
        for &rules in plan.iptables_rules {
            peers::iptables_load(PEER_CGROUP, PORT, rules)?;
            // A linear chain gets slow: keep each case to a couple of seconds.
            let iters = (plan.n / (1 + rules / 500)).max(200).to_string();
            let m = output(client(
                bins,
                &in_peer(&["check", &port, &DENIED_PORT.to_string()]),
            ))
            .context("iptables does not enforce the benchmark rules")
            .and_then(|_| measure(client(bins, &in_peer(&["connect", &port, &iters]))));
            peers::iptables_flush();
            r.push(
                &format!("connect: iptables, one rule per entry ({rules} rules)"),
                m?,
            );
        }
        for &rules in plan.opensnitch_rules {
            if peers::opensnitch_busy() {
                eprintln!("bench: an OpenSnitch daemon is already running; its case is left out");
                continue;
            }
            let os = peers::OpenSnitch::start(&bins.bench, PORT, rules)?;
            // Userspace verdicts take hundreds of microseconds per connect.
            let iters = (plan.n / 20).max(100).to_string();
            let m = output(client(
                bins,
                &args(&["check", &port, &DENIED_PORT.to_string()]),
            ))
            .context("OpenSnitch does not enforce the benchmark rules")
            .and_then(|_| measure(client(bins, &args(&["connect", &port, &iters]))));
            os.stop();
            r.push(&format!("connect: OpenSnitch ({rules} rules)"), m?);
        }
        r.push(
            "connect: no hook (end of round)",
            measure(client(bins, &args(&["connect", &port, &n])))?,
        );
    }

    // Policy reload: time from the file change (plus SIGHUP) to the new policy in the
    // kernel, and the worst connect() latency of a client running meanwhile.
    let mut reloads: Vec<(u32, f64, f64, f64)> = Vec::new();
    for &rules in plan.reload_rules {
        std::fs::write(policy_dir.join("bench.yaml"), policy(rules, None))?;
        let agent = Agent::start(bins, policy_dir)?;
        let res = (|| -> anyhow::Result<(f64, f64, f64)> {
            let mut lat = enrolled(bins, &args(&["latency", &port, "4000"]));
            lat.stdout(Stdio::piped());
            let lat = lat.spawn()?;
            std::thread::sleep(Duration::from_millis(1000));
            let state = Path::new(STATE_DIR).join("state.json");
            let before = std::fs::read_to_string(&state)?;
            let t0 = Instant::now();
            std::fs::write(
                policy_dir.join("bench.yaml"),
                policy(rules, Some(DENIED_PORT)),
            )?;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
            while std::fs::read_to_string(&state).unwrap_or_default() == before {
                if t0.elapsed() > Duration::from_secs(60) {
                    bail!("reload of {rules} rules did not finish");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let took = t0.elapsed().as_secs_f64() * 1e3;
            let out = lat.wait_with_output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            Ok((took, field(&text, "max_ns")? / 1e3, field(&text, "failed")?))
        })();
        agent.stop(bins);
        let (ms, worst_us, failed) = res?;
        reloads.push((rules, ms, worst_us, failed));
    }

    // Exec storm: fork + exec throughput of a workload, with and without the agent.
    let execs = plan.execs.to_string();
    let mut exec_rows: Vec<(String, f64)> = Vec::new();
    let mut exec_accounting: Vec<(String, f64, f64, f64)> = Vec::new();
    teardown(bins);
    let base = output(client(bins, &args(&["exec", &execs])))?;
    exec_rows.push(("no hook".into(), field(&base, "execs_per_s")?));
    std::fs::write(
        policy_dir.join("bench.yaml"),
        policy(10_000.min(*plan.agent_rules.last().unwrap_or(&10)), None),
    )?;
    std::fs::write(policy_dir.join("exec.yaml"), exec_policy(bins))?;
    let agent = Agent::start(bins, policy_dir)?;
    let res = (|| -> anyhow::Result<()> {
        let (rss, _) = footprint(agent.pid());
        let (c0, t0) = (footprint(agent.pid()).1, Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        let idle = (footprint(agent.pid()).1 - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
        footprints.insert(0, ("idle".into(), rss, idle));
        let t = output(client(bins, &args(&["exec", &execs])))?;
        exec_rows.push((
            "zt-agent loaded, unenrolled".into(),
            field(&t, "execs_per_s")?,
        ));
        let lost = || scrape(r#"zt_agent_events_lost_total{reason="ringbuf_full"}"#);
        let counted = || scrape(r#"zt_agent_events_total{kind="exec",verdict="allow"}"#) + lost();
        let mut busy = 0.0;
        for (name, identity) in [
            ("zt-agent, enrolled", "bench"),
            ("zt-agent, enrolled, exec allowlist", EXEC_IDENTITY),
        ] {
            let (before, lost_before) = (counted(), lost());
            let (c0, t0) = (footprint(agent.pid()).1, Instant::now());
            let t = output(enrolled_as(bins, identity, &args(&["exec", &execs])))?;
            busy = (footprint(agent.pid()).1 - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
            exec_rows.push((name.into(), field(&t, "execs_per_s")?));
            // Every exec is an event, delivered or counted lost: the storm's execs plus
            // the exec of the client itself.
            let expected = f64::from(plan.execs) + 1.0;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut seen = counted() - before;
            while seen < expected && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                seen = counted() - before;
            }
            if (seen - expected).abs() > 0.5 {
                bail!(
                    "exec storm ({name}): {expected} execs but {seen} events delivered or counted lost"
                );
            }
            exec_accounting.push((name.into(), expected, seen, lost() - lost_before));
        }
        footprints.push((
            "under the exec storm".into(),
            footprint(agent.pid()).0,
            busy,
        ));
        Ok(())
    })();
    agent.stop(bins);
    res?;

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
    agent.stop(bins);
    res?;

    let dns_md = dns::bench(bins, policy_dir, plan.rounds, plan.dns_queries)?;
    Ok(report(
        plan,
        quick,
        &r,
        &reloads,
        (&exec_rows, exec_accounting),
        &footprints,
        &prog_costs,
    ) + &dns_md)
}

/// Exec storm rows (case, execs per second) and (execs, events delivered or lost).
type ExecResults<'a> = (&'a [(String, f64)], Vec<(String, f64, f64, f64)>);

fn report(
    plan: &Plan,
    quick: bool,
    r: &Results,
    reloads: &[(u32, f64, f64, f64)],
    (exec_rows, exec_accounting): ExecResults<'_>,
    footprints: &[(String, u64, f64)],
    prog_costs: &[(String, f64)],
) -> String {
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
        "connect = socket + connect + accept + close (SO_LINGER 0) on loopback in a private network namespace, one client thread pinned to CPU 1; udp = sendto without connect + recv. \
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

#[cfg(test)]
mod tests {
    use super::*;

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
