//! `zt-agent why --pid PID | --identity NAME [--json]`.

use crate::cli::WhyArgs;
use crate::grants::client;
use crate::grants::control::Request;

pub fn execute(a: WhyArgs) -> u8 {
    let req = Request::Why {
        pid: a.pid,
        identity: a.identity,
    };
    let json = a.json;
    client::run(&a.dirs.state_dir, "why", &req, |list| {
        if json {
            println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
            return;
        }
        let items = list.as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            println!("no denials recorded");
        }
        for d in items {
            let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
            let what = [s("dst"), s("name"), s("path")]
                .into_iter()
                .find(|x| !x.is_empty())
                .unwrap_or_default();
            println!(
                "{} {} pid {} ({}) {} {}: {}",
                s("time"),
                s("identity"),
                d["pid"].as_u64().unwrap_or(0),
                s("comm"),
                s("kind"),
                what,
                s("cause")
            );
            if let Some(c) = d["command"].as_str() {
                println!("    {c}");
            }
            if let Some(h) = d["hint"].as_str() {
                println!("    ({h})");
            }
        }
    })
}
