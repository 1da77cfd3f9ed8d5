//! The benchmark client (zt-bench): unenrolled, or launched by `zt-agent run` under an
//! identity; its one line of key=value results.

use std::process::Command;

use anyhow::{Context as _, bail};

use super::{Bins, PIN_DIR, STATE_DIR};

pub fn client(bins: &Bins, args: &[String]) -> Command {
    let mut c = Command::new(&bins.bench);
    c.args(args);
    c
}

pub fn enrolled(bins: &Bins, args: &[String]) -> Command {
    enrolled_as(bins, "bench", args)
}

pub fn enrolled_as(bins: &Bins, identity: &str, args: &[String]) -> Command {
    let mut c = Command::new(&bins.agent);
    c.args([
        "run",
        "--identity",
        identity,
        "--user",
        "nobody",
        "--pin-dir",
        PIN_DIR,
        "--state-dir",
        STATE_DIR,
        "--",
    ])
    .arg(&bins.bench)
    .args(args);
    c
}

pub fn output(mut cmd: Command) -> anyhow::Result<String> {
    let out = cmd.output().context("bench client")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "bench client failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

pub fn field(text: &str, k: &str) -> anyhow::Result<f64> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {k} in {text}"))
}

pub fn measure(cmd: Command) -> anyhow::Result<(f64, f64)> {
    let text = output(cmd)?;
    Ok((field(&text, "ns_per_op")?, field(&text, "ns_in_call")?))
}

/// One inbound case: a listener started with `server` (its arguments end in
/// `serve PORT N`), and an unenrolled client dialling it N times.
pub fn inbound(bins: &Bins, mut server: Command, port: u16, n: u32) -> anyhow::Result<(f64, f64)> {
    use std::io::BufRead as _;
    let mut child = server
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("inbound listener")?;
    let mut ready = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut ready);
    }
    if ready.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the inbound listener did not start");
    }
    let m = measure(client(
        bins,
        &args(&["dial", &port.to_string(), &n.to_string()]),
    ));
    if m.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let m = m?;
    if !status.success() {
        bail!("the inbound listener failed ({status})");
    }
    Ok(m)
}

pub fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}
