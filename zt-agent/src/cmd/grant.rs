//! `zt-agent grant IDENTITY --to DEST... --for DURATION --reason TEXT [...]`.

use crate::cli::GrantArgs;
use crate::grants::client;
use crate::grants::control::{self, Request};

pub fn execute(a: GrantArgs) -> u8 {
    let req = Request::Grant(control::GrantArgs {
        identity: a.identity,
        to: a.to,
        ports: a.ports,
        protocol: a.protocol,
        duration: a.duration,
        reason: a.reason,
        run: a.run,
        pid: a.pid,
    });
    client::run(&a.dirs.state_dir, "grant", &req, |g| {
        println!("{}", g["id"].as_str().unwrap_or_default());
    })
}
