//! Grants: the cost of a connect with 0 and with many active grants, side by side, for
//! a connect a policy rule allows (grants are looked up only when no rule allows) and
//! for one a grant allows. Each round interleaves the cases on one daemon.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use super::agent::{Agent, policy};
use super::client::{client, measure, output};
use super::report::{Results, stats};
use super::{Bins, DENIED_PORT, PIN_DIR, PORT, SELECTED_CGROUP, STATE_DIR, peers};

/// The port only a grant opens.
pub(super) const GRANT_PORT: u16 = 47004;

fn grant(bins: &Bins, to: &str, port: Option<u16>) -> anyhow::Result<()> {
    let mut c = Command::new(&bins.agent);
    c.args(["grant", "bench", "--to", to]);
    if let Some(p) = port {
        c.args(["--ports", &p.to_string()]);
    }
    c.args([
        "--for",
        "1h",
        "--reason",
        "bench",
        "--pin-dir",
        PIN_DIR,
        "--state-dir",
        STATE_DIR,
    ])
    .stdout(Stdio::null());
    let out = c.output().context("zt-agent grant")?;
    if !out.status.success() {
        bail!("zt-agent grant: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Connects of a client in the benchmark identity's selected cgroup.
fn selected(bins: &Bins, cg2: &Path, a: &[&str]) -> Command {
    let mut v = vec![
        "--cgroup".to_owned(),
        cg2.join(SELECTED_CGROUP.trim_start_matches('/'))
            .display()
            .to_string(),
    ];
    v.extend(a.iter().map(|s| (*s).to_owned()));
    client(bins, &v)
}

pub fn bench(
    bins: &Bins,
    cg2: &Path,
    policy_dir: &Path,
    rounds: usize,
    n: u32,
    grants: u32,
) -> anyhow::Result<String> {
    let n = n.to_string();
    let (port, gport) = (PORT.to_string(), GRANT_PORT.to_string());
    let many = grants.max(2);
    let mut r = Results::default();
    std::fs::create_dir_all(cg2.join(SELECTED_CGROUP.trim_start_matches('/')))?;
    for round in 0..rounds {
        eprintln!("bench: grants round {}/{rounds}", round + 1);
        std::fs::write(policy_dir.join("bench.yaml"), policy(10, None))?;
        let agent = Agent::start(bins, policy_dir)?;
        let res = (|| -> anyhow::Result<()> {
            output(selected(
                bins,
                cg2,
                &["check", &gport, &DENIED_PORT.to_string()],
            ))
            .err()
            .context("the grant port is open before any grant")?;
            grant(bins, "127.0.0.1", Some(GRANT_PORT))?;
            output(selected(
                bins,
                cg2,
                &["check", &gport, &DENIED_PORT.to_string()],
            ))
            .context("the grant does not open its port")?;
            r.push(
                "connect: allowed by a rule, 0 grants",
                measure(selected(bins, cg2, &["connect", &port, &n]))?,
            );
            r.push(
                "connect: allowed by a grant, 1 grant",
                measure(selected(bins, cg2, &["connect", &gport, &n]))?,
            );
            for i in 1..many {
                grant(bins, &peers::filler(i), None)?;
            }
            r.push(
                &format!("connect: allowed by a rule, {many} grants"),
                measure(selected(bins, cg2, &["connect", &port, &n]))?,
            );
            r.push(
                &format!("connect: allowed by a grant, {many} grants"),
                measure(selected(bins, cg2, &["connect", &gport, &n]))?,
            );
            Ok(())
        })();
        agent.stop(bins);
        res?;
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Grants\n\nA connect allowed by a policy rule with 0 and with {many} grants in force, and one allowed only by a grant with 1 and with {many} for the identity (one per destination), interleaved over {rounds} rounds on one daemon. Grants are looked up only when no rule (and no learned address) allows a destination, so the first pair should not differ; the second pays one more trie lookup.\n"
    );
    let _ = writeln!(
        md,
        "| case | ns per op (median) | min | max | ns in the call |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for name in r.names() {
        let s = r.samples(name);
        let (m, lo, hi) = stats(&s.iter().map(|x| x.0).collect::<Vec<_>>());
        let (mi, _, _) = stats(&s.iter().map(|x| x.1).collect::<Vec<_>>());
        let _ = writeln!(md, "| {name} | {m:.0} | {lo:.0} | {hi:.0} | {mi:.0} |");
    }
    let ratio = |a: &str, b: &str| r.median(b).zip(r.median(a)).map(|(b, a)| b / a);
    if let (Some(rule), Some(granted)) = (
        ratio(
            "connect: allowed by a rule, 0 grants",
            &format!("connect: allowed by a rule, {many} grants"),
        ),
        ratio(
            "connect: allowed by a grant, 1 grant",
            &format!("connect: allowed by a grant, {many} grants"),
        ),
    ) {
        let _ = writeln!(
            md,
            "\n{many} grants against none: {rule:.3} for a connect a rule allows; against 1: {granted:.3} for one a grant allows."
        );
    }
    Ok(md)
}
