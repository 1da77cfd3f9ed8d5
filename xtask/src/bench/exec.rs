//! The exec storm: fork + exec throughput of a workload with no hook, with the agent
//! loaded, enrolled, and under an exec allowlist; every exec accounted for as an event
//! delivered or counted lost; the daemon's footprint meanwhile.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::agent::{Agent, EXEC_IDENTITY, exec_policy, footprint, policy, scrape, teardown};
use super::client::{args, client, enrolled_as, field, output};
use super::report::{ExecAccounting, ExecRow, Footprint};
use super::{Bins, Plan};

/// Exec storm rows (case, execs per second) and the events of each enrolled case.
pub fn storm(
    plan: &Plan,
    bins: &Bins,
    policy_dir: &Path,
    footprints: &mut Vec<Footprint>,
) -> anyhow::Result<(Vec<ExecRow>, Vec<ExecAccounting>)> {
    // Exec storm: fork + exec throughput of a workload, with and without the agent.
    let execs = plan.execs.to_string();
    let mut exec_rows: Vec<ExecRow> = Vec::new();
    let mut exec_accounting: Vec<ExecAccounting> = Vec::new();
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
    Ok((exec_rows, exec_accounting))
}
