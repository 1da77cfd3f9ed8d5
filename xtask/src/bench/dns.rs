//! The resolver against direct resolution: the same A queries, from the same client, to
//! dnsmasq directly (an unenrolled task) and through the agent's resolver (an enrolled
//! task whose DNS the kernel redirects), interleaved per round.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Bins;
use super::agent::{Agent, identity, teardown};
use super::client::{args, client, enrolled_as, field, output};
use super::report::stats;

const DNSMASQ: &str = "127.0.0.1:47053";
const NAME: &str = "bench.dns.test";
const IDENTITY: &str = "bench-dns";
/// Any address: the kernel sends an enrolled task's port-53 traffic to the resolver.
const SOME_RESOLVER: &str = "192.0.2.53:53";

fn policy() -> String {
    identity(
        IDENTITY,
        &format!("  egress:\n    - to: [{NAME}]\n      ports: [443]\n      protocol: tcp\n"),
    )
}

struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(work: &Path) -> anyhow::Result<Self> {
        let hosts = work.join("dns-hosts");
        std::fs::write(&hosts, format!("10.250.0.1 {NAME}\n"))?;
        let port = DNSMASQ.rsplit(':').next().unwrap_or("53");
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--user=root",
                "--local-ttl=300",
                "--pid-file=",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq (Debian package dnsmasq-base)")?;
        let d = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(DNSMASQ).is_err() {
            if Instant::now() > deadline {
                bail!("dnsmasq did not start on {DNSMASQ}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One case's samples: (ns per query, p50 ns, p99 ns, queries per second).
type Row = (String, Vec<(f64, f64, f64, f64)>);

/// Run the DNS cases and return their section of the report.
pub fn bench(bins: &Bins, policy_dir: &Path, rounds: usize, n: u32) -> anyhow::Result<String> {
    let work = policy_dir.parent().unwrap_or(policy_dir).to_path_buf();
    let _upstream = Dnsmasq::start(&work)?;
    let dir = work.join("dns-policy");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("dns.yaml"), policy())?;
    let n = n.to_string();
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |name: &str, text: &str| -> anyhow::Result<()> {
        if field(text, "failed")? > 0.0 {
            bail!("{name}: failed queries: {text}");
        }
        let s = (
            field(text, "ns_per_op")?,
            field(text, "p50_ns")?,
            field(text, "p99_ns")?,
            field(text, "qps")?,
        );
        match rows.iter_mut().find(|r| r.0 == name) {
            Some(r) => r.1.push(s),
            None => rows.push((name.to_owned(), vec![s])),
        }
        Ok(())
    };
    for round in 0..rounds {
        eprintln!("bench: dns round {}/{rounds}", round + 1);
        for threads in ["1", "4"] {
            let direct = output(client(bins, &args(&["dns", DNSMASQ, NAME, &n, threads])))?;
            push(&format!("direct to dnsmasq, {threads} client(s)"), &direct)?;
            for (how, cache) in [("answer cache", "4096"), ("every query upstream", "0")] {
                let agent = Agent::start_with(
                    bins,
                    &dir,
                    &["--dns-upstream", DNSMASQ, "--dns-cache-entries", cache],
                )?;
                let via = output(enrolled_as(
                    bins,
                    IDENTITY,
                    &args(&["dns", SOME_RESOLVER, NAME, &n, threads]),
                ));
                agent.stop(bins);
                push(
                    &format!("through zt-agent, {how}, {threads} client(s)"),
                    &via?,
                )?;
            }
        }
    }
    teardown(bins);
    Ok(report(&rows, &n))
}

fn report(rows: &[Row], n: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## DNS: the agent's resolver against direct resolution\n\n{n} A queries per case and round for a name dnsmasq answers from its hosts file, over connected UDP sockets (as glibc does). Direct: an unenrolled client asks dnsmasq. Through zt-agent: an enrolled client asks any address on port 53; the kernel redirects it to the agent's resolver, which checks the name, answers from its per-identity cache or forwards a fresh query to the same dnsmasq (`--dns-cache-entries 0`: always), installs the answer in the kernel and replies. Medians over the rounds.\n"
    );
    let _ = writeln!(
        md,
        "| case | µs per query | p50 µs | p99 µs | queries per second |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    let med = |r: &Row, i: usize| {
        let v: Vec<f64> =
            r.1.iter()
                .map(|s| match i {
                    0 => s.0,
                    1 => s.1,
                    2 => s.2,
                    _ => s.3,
                })
                .collect();
        stats(&v).0
    };
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} |",
            r.0,
            med(r, 0) / 1e3,
            med(r, 1) / 1e3,
            med(r, 2) / 1e3,
            med(r, 3)
        );
    }
    let find = |name: &str| rows.iter().find(|r| r.0 == name);
    let _ = writeln!(md);
    for t in ["1", "4"] {
        for how in ["answer cache", "every query upstream"] {
            if let (Some(d), Some(v)) = (
                find(&format!("direct to dnsmasq, {t} client(s)")),
                find(&format!("through zt-agent, {how}, {t} client(s)")),
            ) {
                let _ = writeln!(
                    md,
                    "{t} client(s), {how}: the resolver adds {:.1} µs per query (p50); time per query {:.2}x direct; throughput {:.2} of direct.  ",
                    (med(v, 1) - med(d, 1)) / 1e3,
                    med(v, 0) / med(d, 0).max(1.0),
                    med(v, 3) / med(d, 3).max(1.0)
                );
            }
        }
    }
    md
}
