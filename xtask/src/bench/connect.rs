//! The interleaved rounds of the connect, udp and inbound cases: no hook, zt-agent at
//! every rule count (unenrolled, under `zt-agent run`, selected by cgroup, denied; for
//! inbound, a listener unenrolled or enrolled), and the peers (nftables, iptables,
//! OpenSnitch) judging the same connects.

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use super::agent::{Agent, footprint, policy, teardown};
use super::client::{args, client, enrolled, inbound, measure, output};
use super::report::{Footprint, Results};
use super::{Bins, DENIED_PORT, PEER_CGROUP, PORT, Plan, SELECTED_CGROUP, peers};

#[expect(
    clippy::too_many_lines,
    reason = "one round of every case, read top to bottom"
)]
pub fn rounds(
    plan: &Plan,
    bins: &Bins,
    cg2: &Path,
    peer_cg: &Path,
    policy_dir: &Path,
    r: &mut Results,
    footprints: &mut Vec<Footprint>,
) -> anyhow::Result<()> {
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
        r.push(
            "inbound: no hook",
            inbound(
                bins,
                client(bins, &args(&["serve", &port, &n])),
                PORT,
                plan.n,
            )?,
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
                // Inbound: an unenrolled client dials a listener, unenrolled or enrolled
                // by its cgroup (an ingress rule lets 127.0.0.1 in).
                r.push(
                    &format!("inbound: zt-agent, unenrolled listener ({rules} rules)"),
                    inbound(
                        bins,
                        client(bins, &args(&["serve", &port, &n])),
                        PORT,
                        plan.n,
                    )?,
                );
                r.push(
                    &format!(
                        "inbound: zt-agent, enrolled listener, cgroup selector ({rules} rules)"
                    ),
                    inbound(
                        bins,
                        client(bins, &in_selected(&["serve", &port, &n])),
                        PORT,
                        plan.n,
                    )?,
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
    Ok(())
}
