//! `zt-agent ps [--json]`: enrolled tasks and shadow workloads.

use crate::cli::PsArgs;
use crate::{exit, inventory};

pub fn execute(args: &PsArgs) -> u8 {
    let inv = match inventory::inventory(&args.dirs) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("zt-agent ps: {}", exit::chain(&e));
            return exit::UNAVAILABLE;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inv).unwrap_or_default());
        return exit::OK;
    }
    println!("ENROLLED");
    println!(
        "{:>8}  {:<20} {:<10} {:>6}  {:<16} EXE",
        "PID", "IDENTITY", "HOW", "UID", "COMM"
    );
    for t in &inv.enrolled {
        println!(
            "{:>8}  {:<20} {:<10} {:>6}  {:<16} {}",
            t.pid,
            t.identity,
            t.how,
            t.uid.map_or_else(|| "-".to_owned(), |u| u.to_string()),
            t.comm.as_deref().unwrap_or("(exited)"),
            t.exe.as_deref().unwrap_or("-"),
        );
    }
    println!();
    println!("SHADOW (not enrolled, made egress connections since the agent started)");
    println!(
        "{:>8}  {:>6}  {:<16} {:<32} DESTINATIONS",
        "PID", "UID", "COMM", "EXE"
    );
    for t in &inv.shadow {
        let dests: Vec<String> = t
            .destinations
            .iter()
            .take(8)
            .map(|d| format!("{}/{} x{}", d.dst, d.protocol, d.count))
            .collect();
        let more = t.destinations.len().saturating_sub(8);
        println!(
            "{:>8}  {:>6}  {:<16} {:<32} {}{}",
            t.pid,
            t.uid,
            t.comm,
            t.exe
                .as_deref()
                .unwrap_or(if t.alive { "-" } else { "(exited)" }),
            dests.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    exit::OK
}
