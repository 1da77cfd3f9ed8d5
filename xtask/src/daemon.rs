//! `cargo xtask daemon [ARGS]`: build the agent and run its daemon with the policies in
//! policies/, handing it the terminal.

use std::process::Command;

use anyhow::Context as _;

use crate::cmd;

/// Never returns on success: the daemon's exit code is this process's.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut b = cmd::cargo();
    b.args(["build", "--release", "-p", "zt-agent"]);
    cmd::run(b)?;
    let bin = cmd::root().join("target/release/zt-agent");
    let mut d = Command::new(bin);
    d.current_dir(cmd::root())
        .args(["daemon", "--policy", "policies"])
        .args(args);
    // Hand the terminal to the daemon; its exit code is ours.
    let status = d.status().context("starting zt-agent daemon")?;
    std::process::exit(status.code().unwrap_or(1));
}
