//! Policy reload under load: from the file change (plus SIGHUP) to the new policy in the
//! kernel, with a client measuring its connects meanwhile.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::agent::{Agent, policy};
use super::client::{args, enrolled, field};
use super::report::Reload;
use super::{Bins, DENIED_PORT, PORT, Plan, STATE_DIR};

pub fn reloads(plan: &Plan, bins: &Bins, policy_dir: &Path) -> anyhow::Result<Vec<Reload>> {
    let port = PORT.to_string();
    // Policy reload: time from the file change (plus SIGHUP) to the new policy in the
    // kernel, and the worst connect() latency of a client running meanwhile.
    let mut reloads: Vec<Reload> = Vec::new();
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
    Ok(reloads)
}
