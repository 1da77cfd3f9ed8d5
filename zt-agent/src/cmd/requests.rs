//! `zt-agent requests [--json]`.

use crate::cli::Dirs;
use crate::grants::client;
use crate::grants::control::Request;

pub fn execute(dirs: &Dirs, json: bool) -> u8 {
    client::run(&dirs.state_dir, "requests", &Request::Requests, |list| {
        if json {
            println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
            return;
        }
        println!(
            "{:<16} {:<16} {:<10} {:>8} {:<16} {:<32} RULE",
            "ID", "IDENTITY", "STATE", "PID", "COMM", "DESTINATION"
        );
        for r in list.as_array().into_iter().flatten() {
            let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
            let dest = match r["port"].as_u64() {
                Some(p) if p > 0 => format!("{} {}/{}", s("destination"), p, s("protocol")),
                _ => format!("{} (DNS)", s("destination")),
            };
            println!(
                "{:<16} {:<16} {:<10} {:>8} {:<16} {:<32} {}",
                s("id"),
                s("identity"),
                s("state"),
                r["pid"].as_u64().unwrap_or(0),
                s("comm"),
                dest,
                s("rule")
            );
        }
    })
}
