//! Tasks cargo alone cannot do. Run through `./x`, which installs prerequisites first.
//!
//!   cargo xtask daemon [ARGS]  build and run the agent with the policies in policies/
//!   cargo xtask test           build and run every test, privileged eBPF tests included
//!   cargo xtask bench [--quick] connect() cost with and without the agent

mod bench;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut c: Command) -> anyhow::Result<()> {
    let status = c.status().with_context(|| format!("running {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("daemon") => {
            let mut b = cargo();
            b.args(["build", "--release", "-p", "zt-agent"]);
            run(b)?;
            let bin = root().join("target/release/zt-agent");
            let mut d = Command::new(bin);
            d.current_dir(root())
                .args(["daemon", "--policy", "policies"])
                .args(&args[1..]);
            // Hand the terminal to the daemon; its exit code is ours.
            let status = d.status().context("starting zt-agent daemon")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Some("test") => {
            if !is_root() {
                bail!("the test suite loads eBPF programs and needs root: sudo ./x test");
            }
            // The integration tests run the real binaries.
            let mut b = cargo();
            b.args(["build", "-p", "zt-agent", "-p", "zt-agent-tests", "--bins"]);
            run(b)?;
            let mut t = cargo();
            t.args([
                "test",
                "--workspace",
                "--exclude",
                "zt-agent-ebpf",
                "--no-fail-fast",
            ])
            .args(&args[1..]);
            run(t)
        }
        Some("bench") => bench::main(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask daemon [ARGS] | test [CARGO TEST ARGS] | bench [--quick]"
            );
            std::process::exit(64);
        }
    }
}
