//! `cargo xtask test [CARGO TEST ARGS]`: build the binaries the integration tests run
//! and the host's .deb,
//! run every test (privileged eBPF tests included), add up cargo's result lines into
//! one, and after a full green run smoke-test the benchmark in quick mode.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::{bench, cmd};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !zt_agent_host::is_root() {
        bail!("the test suite loads eBPF programs and needs root: sudo ./x test");
    }
    // The integration tests run the real binaries.
    let mut b = cmd::cargo();
    b.args(["build", "-p", "zt-agent", "-p", "zt-agent-tests", "--bins"]);
    cmd::run(b)?;
    // The package test installs the host's .deb (its release build is the one the
    // benchmark runs afterwards).
    crate::dist::deb(None)?;
    let mut t = cmd::cargo();
    t.args([
        "test",
        "--workspace",
        "--exclude",
        "zt-agent-ebpf",
        "--no-fail-fast",
    ])
    .args(args);
    let (passed, failed, ok) = run_counting(t)?;
    // The benchmark harness in quick mode, so that it cannot rot.
    let bench = if ok && args.is_empty() {
        bench::run(true, &[])
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

/// Run `cargo test`, passing its output through, and add up its result lines.
fn run_counting(mut c: Command) -> anyhow::Result<(u64, u64, bool)> {
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {c:?}"))?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().context("stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = result_counts(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    Ok((passed, failed, status.success()))
}

/// (passed, failed) of one `test result: ...` line of cargo test.
fn result_counts(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| -> u64 {
        rest.split(';')
            .find_map(|part| part.trim().strip_suffix(word))
            .and_then(|n| n.trim().rsplit(' ').next().and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    Some((count(" passed"), count(" failed")))
}

#[cfg(test)]
mod tests {
    use super::result_counts;

    #[test]
    fn adds_up_cargo_result_lines() {
        assert_eq!(
            result_counts(
                "test result: ok. 62 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.32s"
            ),
            Some((62, 0))
        );
        assert_eq!(
            result_counts("test result: FAILED. 3 passed; 2 failed; 0 ignored"),
            Some((3, 2))
        );
        assert_eq!(result_counts("running 3 tests"), None);
    }
}
