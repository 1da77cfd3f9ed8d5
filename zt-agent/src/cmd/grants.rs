//! `zt-agent grants [--json]`.

use crate::cli::Dirs;
use crate::grants::client;
use crate::grants::control::Request;

pub fn execute(dirs: &Dirs, json: bool) -> u8 {
    client::run(&dirs.state_dir, "grants", &Request::Grants, |list| {
        if json {
            println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
            return;
        }
        println!(
            "{:<16} {:<16} {:<8} {:<24} {:<12} {:<24} TO",
            "ID", "IDENTITY", "STATE", "EXPIRES", "SCOPE", "PORTS"
        );
        for g in list.as_array().into_iter().flatten() {
            let s = |k: &str| g[k].as_str().unwrap_or("-").to_owned();
            let join = |k: &str| {
                g[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            };
            println!(
                "{:<16} {:<16} {:<8} {:<24} {:<12} {:<24} {}",
                s("id"),
                s("identity"),
                s("state"),
                s("expires"),
                s("scope"),
                format!("{}/{}", join("ports"), s("protocol")),
                join("to")
            );
        }
    })
}
