//! `cargo xtask daemon [ARGS]`: build the agent, put it on PATH as
//! /usr/local/bin/zt-agent (a link to the build), and run its daemon with the policies
//! in policies/, handing it the terminal.

use std::process::Command;

use anyhow::Context as _;

use crate::cmd;

/// Never returns on success: the daemon's exit code is this process's.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut b = cmd::cargo();
    b.args(["build", "--release", "-p", "zt-agent"]);
    cmd::run(b)?;
    let bin = cmd::root().join("target/release/zt-agent");
    link_on_path(&bin)?;
    let mut d = Command::new(bin);
    d.current_dir(cmd::root())
        .args(["daemon", "--policy", "policies"])
        .args(args);
    // Hand the terminal to the daemon; its exit code is ours.
    let status = d.status().context("starting zt-agent daemon")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Where `./x daemon` puts `zt-agent`, so that the README's `zt-agent run ...` works as
/// written.
const ON_PATH: &str = "/usr/local/bin/zt-agent";

/// Link /usr/local/bin/zt-agent to the build, replacing an earlier link (never a file
/// something else installed there).
fn link_on_path(bin: &std::path::Path) -> anyhow::Result<()> {
    let on_path = std::path::Path::new(ON_PATH);
    match std::fs::symlink_metadata(on_path) {
        Ok(md) if md.file_type().is_symlink() => {
            std::fs::remove_file(on_path).with_context(|| format!("replacing {ON_PATH}"))?;
        }
        Ok(_) => {
            eprintln!("xtask: {ON_PATH} exists and is not a link to a build; leaving it");
            return Ok(());
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(bin, on_path).with_context(|| format!("linking {ON_PATH}"))?;
    Ok(())
}
