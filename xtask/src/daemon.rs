//! `cargo xtask daemon [ARGS]`: build the agent, put it on PATH as
//! /usr/local/bin/zt-agent (a link to the build), and run its daemon with the policies
//! in policies/, handing it the terminal.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use crate::cmd;

/// Where the policies go when the checkout is not root's (the daemon reads policy only
/// from directories and files that root owns and no one else may write).
const COPY: &str = "/run/zt-agent-dev/policies";

/// Never returns on success: the daemon's exit code is this process's.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut b = cmd::cargo();
    b.args(["build", "--release", "-p", "zt-agent"]);
    cmd::run(b)?;
    let bin = cmd::root().join("target/release/zt-agent");
    link_on_path(&bin)?;
    let policies = policy_dir()?;
    let mut d = Command::new(bin);
    d.current_dir(cmd::root())
        .arg("daemon")
        .arg("--policy")
        .arg(&policies)
        .args(args);
    // Hand the terminal to the daemon; its exit code is ours.
    let status = d.status().context("starting zt-agent daemon")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// policies/ itself when root owns it and every directory above it, none writable by
/// others; otherwise a root-only copy (edits to policies/ then need another `./x daemon`).
fn policy_dir() -> anyhow::Result<PathBuf> {
    let src = cmd::root().join("policies");
    let trusted = |p: &Path| {
        std::fs::metadata(p)
            .is_ok_and(|m| m.uid() == 0 && (m.mode() & 0o022 == 0 || m.mode() & 0o1000 != 0))
    };
    let files: Vec<PathBuf> = std::fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    if src.ancestors().all(trusted) && files.iter().all(|f| trusted(f)) {
        return Ok(src);
    }
    let copy = PathBuf::from(COPY);
    let _ = std::fs::remove_dir_all(&copy);
    for dir in [copy.parent().unwrap_or(&copy), copy.as_path()] {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    for f in &files {
        if let Some(name) = f.file_name() {
            let dst = copy.join(name);
            std::fs::copy(f, &dst)?;
            std::fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        }
    }
    eprintln!(
        "policies/ is not root's alone, so the daemon would refuse it; running on a copy in {COPY}"
    );
    Ok(copy)
}

/// Where `./x daemon` puts `zt-agent`, so that the README's `zt-agent run ...` works as
/// written.
const ON_PATH: &str = "/usr/local/bin/zt-agent";

/// Link /usr/local/bin/zt-agent to the build, replacing an earlier link (never a file
/// something else installed there).
fn link_on_path(bin: &Path) -> anyhow::Result<()> {
    let on_path = Path::new(ON_PATH);
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
