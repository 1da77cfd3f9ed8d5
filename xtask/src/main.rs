//! Tasks cargo alone cannot do. Run through `./x`, which installs prerequisites first.
//!
//!   cargo xtask daemon [ARGS]  build and run the agent with the policies in policies/
//!   cargo xtask test           build and run every test, privileged eBPF tests included,
//!                              then the benchmark in quick mode as a smoke test
//!   cargo xtask bench [--quick] zt-agent against no hook and against nftables/iptables

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

/// Run `cargo test`, passing its output through, and add up its result lines.
fn run_counting(mut c: Command) -> anyhow::Result<(u64, u64, bool)> {
    use std::io::BufRead as _;
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {c:?}"))?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().context("stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word))
                    .and_then(|n| n.trim().rsplit(' ').next().and_then(|v| v.parse().ok()))
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
        }
    }
    let status = child.wait()?;
    Ok((passed, failed, status.success()))
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
            let (passed, failed, ok) = run_counting(t)?;
            // The benchmark harness in quick mode, so that it cannot rot.
            let bench = if ok && args.len() == 1 {
                bench::main(&["--quick".to_owned()])
            } else {
                Ok(())
            };
            // One closing line for the whole suite (cargo's last line is a doc-test run).
            println!("tests: {passed} passed, {failed} failed");
            if !ok {
                bail!("tests failed");
            }
            bench.context("the benchmark smoke test failed")
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
