//! The Debian package `./x test` (and `./x dist`) builds: it installs on this machine,
//! puts `zt-agent` on PATH with its unit, example policies, completions and man pages,
//! the installed policies pass `zt-agent policy check`, the installed unit passes
//! `systemd-analyze verify` (man page included), and a purge leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use zt_agent_tests::require_root;

fn deb() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debian"));
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with("_amd64.deb"))
                .collect()
        })
        .unwrap_or_default();
    debs.sort();
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no .deb in {}: `./x test` builds it first (`./x dist --arch amd64`)",
            dir.display()
        )
    })
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// dpkg with the agent's directories pointed at this test's own, so that the
/// package's removal script (which tears down what the agent pinned) never touches a
/// daemon running on this machine.
fn dpkg(args: &[&str]) -> (bool, String) {
    run(Command::new("dpkg")
        .args(args)
        .env("ZT_AGENT_PIN_DIR", "/sys/fs/bpf/zt-test-package")
        .env("ZT_AGENT_STATE_DIR", "/run/zt-test-package"))
}

#[test]
fn the_deb_installs_checks_and_purges_clean() {
    require_root();
    let deb = deb();
    if run(Command::new("dpkg").args(["-s", "zt-agent"])).0 {
        let (ok, out) = dpkg(&["-P", "zt-agent"]);
        assert!(ok, "purging an earlier install: {out}");
    }
    let (ok, listing) = run(Command::new("dpkg").arg("-c").arg(&deb));
    assert!(ok, "{listing}");
    let files: Vec<String> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect();
    for want in [
        "/usr/bin/zt-agent",
        "/lib/systemd/system/zt-agent.service",
        "/etc/zt-agent/policies/ai-agent.yaml",
        "/usr/share/bash-completion/completions/zt-agent",
        "/usr/share/zsh/vendor-completions/_zt-agent",
        "/usr/share/fish/vendor_completions.d/zt-agent.fish",
        "/usr/share/man/man1/zt-agent.1.gz",
        "/usr/share/man/man1/zt-agent-daemon.1.gz",
    ] {
        assert!(
            files.iter().any(|f| f == want),
            "{want} is not in the package:\n{listing}"
        );
    }

    let (ok, out) = dpkg(&["-i", &deb.display().to_string()]);
    assert!(ok, "dpkg -i: {out}");
    // On PATH, as the README calls it.
    let (ok, out) =
        run(Command::new("sh").args(["-c", "command -v zt-agent && zt-agent --version"]));
    assert!(ok && out.contains("zt-agent 0.1.0"), "{out}");
    let (ok, out) =
        run(Command::new("/usr/bin/zt-agent").args(["policy", "check", "/etc/zt-agent/policies"]));
    assert!(ok, "zt-agent policy check /etc/zt-agent/policies: {out}");
    let (ok, out) =
        run(Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/zt-agent.service"]));
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify of the installed unit: {out}"
    );
    let (ok, out) = run(Command::new("man").args(["-w", "zt-agent"]));
    assert!(
        ok && out.contains("/usr/share/man/man1/zt-agent.1.gz"),
        "man -w zt-agent: {out}"
    );

    let (ok, out) = dpkg(&["-P", "zt-agent"]);
    assert!(ok, "dpkg -P: {out}");
    for f in &files {
        assert!(!Path::new(f).exists(), "{f} is left after the purge");
    }
    assert!(
        !Path::new("/etc/zt-agent").exists(),
        "/etc/zt-agent is left after the purge"
    );
    assert!(!run(Command::new("dpkg").args(["-s", "zt-agent"])).0);
}
