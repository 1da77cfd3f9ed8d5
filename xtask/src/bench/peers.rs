//! The alternatives a host admin would pick instead, set up with rules equivalent to
//! the agent's: the client's cgroup may open TCP connections only to an allowed set of
//! (address, port). Each peer judges new connections (SYN packets), as the agent judges
//! connect(); neither turns on conntrack.
//!
//! Everything runs inside the benchmark's own network namespace, so no rule touches the
//! host's traffic, and the namespace takes the rules with it when the benchmark ends.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Filler destinations: rule `i` of `n` (the allowed one is 127.0.0.1).
pub fn filler(i: u32) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

fn pipe_to(cmd: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// How nftables names a cgroup: a path below /sys/fs/cgroup (it resolves it there,
/// whatever the cgroup2 mount), and the cgroup's depth in the cgroup2 hierarchy.
fn nft_cgroup(cg2: &Path, cgroup_rel: &str) -> (String, usize) {
    let below = cg2
        .strip_prefix("/sys/fs/cgroup")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = [below.as_str(), cgroup_rel.trim_start_matches('/')]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    let level = cgroup_rel.split('/').filter(|s| !s.is_empty()).count();
    (path, level)
}

/// nftables as an expert writes it: one rule with a concatenated set lookup.
pub fn nft_load(cg2: &Path, cgroup_rel: &str, port: u16, rules: u32) -> anyhow::Result<()> {
    let (path, level) = nft_cgroup(cg2, cgroup_rel);
    let mut elems = format!("127.0.0.1 . {port}");
    for i in 1..rules {
        let _ = write!(elems, ", {} . {port}", filler(i));
    }
    let ruleset = format!(
        "table inet ztbench {{\n\
         set allow4 {{ type ipv4_addr . inet_service; elements = {{ {elems} }} }}\n\
         chain out {{ type filter hook output priority 0; policy accept;\n\
         socket cgroupv2 level {level} \"{path}\" tcp flags & (syn | ack) == syn ip daddr . tcp dport != @allow4 reject\n\
         }}\n}}\n"
    );
    nft_flush();
    pipe_to("nft", &["-f", "-"], &ruleset)
}

pub fn nft_flush() {
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", "ztbench"])
        .stderr(Stdio::null())
        .status();
}

/// iptables as most hosts have it: one rule per allowed destination, the allowed one
/// last, behind a cgroup match. Debian's default (nf_tables) backend.
pub fn iptables_load(cgroup_rel: &str, port: u16, rules: u32) -> anyhow::Result<()> {
    iptables_flush();
    let mut r = String::from("*filter\n:ZTBENCH - [0:0]\n");
    let _ = writeln!(
        r,
        "-A OUTPUT -p tcp --tcp-flags SYN,ACK SYN -m cgroup --path {cgroup_rel} -j ZTBENCH"
    );
    for i in 1..rules {
        let _ = writeln!(
            r,
            "-A ZTBENCH -d {}/32 -p tcp --dport {port} -j RETURN",
            filler(i)
        );
    }
    let _ = writeln!(
        r,
        "-A ZTBENCH -d 127.0.0.1/32 -p tcp --dport {port} -j RETURN"
    );
    r.push_str("-A ZTBENCH -j REJECT\nCOMMIT\n");
    pipe_to("iptables-restore", &["-w", "--noflush"], &r)
}

pub fn iptables_flush() {
    for args in [
        &[
            "-w",
            "-D",
            "OUTPUT",
            "-p",
            "tcp",
            "--tcp-flags",
            "SYN,ACK",
            "SYN",
            "-m",
            "cgroup",
            "--path",
            "/zt-bench-peer",
            "-j",
            "ZTBENCH",
        ][..],
        &["-w", "-F", "ZTBENCH"][..],
        &["-w", "-X", "ZTBENCH"][..],
    ] {
        let _ = Command::new("iptables")
            .args(args)
            .stderr(Stdio::null())
            .status();
    }
    // The nf_tables backend leaves hooked base chains behind after -F/-X.
    let _ = Command::new("nft")
        .args(["delete", "table", "ip", "filter"])
        .stderr(Stdio::null())
        .status();
}

/// Install the peers from Debian when they are missing.
pub fn ensure_installed() -> anyhow::Result<()> {
    let have = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if have("nft") && have("iptables-restore") && have("bpftool") {
        return Ok(());
    }
    eprintln!("bench: installing nftables, iptables and bpftool from Debian");
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nftables iptables bpftool >/dev/null",
        ])
        .status()?;
    if !status.success() {
        bail!("installing nftables and iptables failed");
    }
    Ok(())
}

/// OpenSnitch, judging each new connection in userspace through NFQUEUE. Its iptables
/// mode is the one this kernel supports (no NFT_QUEUE); its eBPF process monitor does
/// not load here, so it reads /proc. Its configuration file has a fixed path, so it is
/// replaced for the run and restored afterwards.
pub struct OpenSnitch {
    child: std::process::Child,
}

const OS_CONFIG: &str = "/etc/opensnitchd/default-config.json";
const OS_BACKUP: &str = "/tmp/zt-bench-opensnitch-config.orig";
const OS_RULES: &str = "/tmp/zt-bench-opensnitch-rules";

/// Whether an OpenSnitch daemon the benchmark did not start is running: then its
/// configuration must not be touched.
pub fn opensnitch_busy() -> bool {
    Command::new("pgrep")
        .args(["-x", "opensnitchd"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn opensnitch_install() -> anyhow::Result<()> {
    if Path::new("/usr/bin/opensnitchd").exists() {
        return Ok(());
    }
    eprintln!("bench: installing opensnitch from Debian");
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends opensnitch >/dev/null \
             && if command -v systemctl >/dev/null; then systemctl disable --now opensnitch >/dev/null 2>&1 || true; fi",
        ])
        .status()?;
    if !status.success() {
        bail!("installing opensnitch failed");
    }
    Ok(())
}

fn os_rule(name: &str, operands: &[(&str, String)]) -> String {
    let list: Vec<String> = operands
        .iter()
        .map(|(operand, data)| {
            format!(
                r#"{{"type":"simple","operand":"{operand}","sensitive":false,"data":"{data}"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"created":"2026-01-01T00:00:00Z","updated":"2026-01-01T00:00:00Z","name":"{name}","enabled":true,"precedence":true,"action":"allow","duration":"always","operator":{{"type":"list","operand":"list","sensitive":false,"data":"","list":[{}]}}}}"#,
        list.join(",")
    )
}

impl OpenSnitch {
    /// Start OpenSnitch denying everything but `rules` allow rules for the client
    /// binary, the allowed one for 127.0.0.1:`port`.
    pub fn start(client: &Path, port: u16, rules: u32) -> anyhow::Result<Self> {
        if !Path::new(OS_BACKUP).exists() {
            std::fs::copy(OS_CONFIG, OS_BACKUP).context("backing up the OpenSnitch config")?;
        }
        std::fs::write(
            OS_CONFIG,
            r#"{"Server":{"Address":"unix:///tmp/zt-bench-osui.sock","LogFile":"/tmp/zt-bench-opensnitch.log"},"DefaultAction":"deny","DefaultDuration":"once","InterceptUnknown":false,"ProcMonitorMethod":"proc","LogLevel":3,"Firewall":"iptables","Stats":{"MaxEvents":150,"MaxStats":25}}"#,
        )?;
        let _ = std::fs::remove_dir_all(OS_RULES);
        std::fs::create_dir_all(OS_RULES)?;
        let path = client.display().to_string();
        for i in 1..rules {
            std::fs::write(
                Path::new(OS_RULES).join(format!("filler-{i}.json")),
                os_rule(
                    &format!("filler-{i}"),
                    &[
                        ("process.path", path.clone()),
                        ("dest.ip", filler(i)),
                        ("dest.port", port.to_string()),
                    ],
                ),
            )?;
        }
        std::fs::write(
            Path::new(OS_RULES).join("allow-bench.json"),
            os_rule(
                "allow-bench",
                &[("process.path", path), ("dest.port", port.to_string())],
            ),
        )?;
        let child = Command::new("opensnitchd")
            .args([
                "-rules-path",
                OS_RULES,
                "-process-monitor-method",
                "proc",
                "-ui-socket",
                "unix:///tmp/zt-bench-osui.sock",
                "-log-file",
                "/tmp/zt-bench-opensnitch.log",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting opensnitchd")?;
        let me = Self { child };
        // Ready once its NFQUEUE rule is in place.
        // It loads every rule file first: 10,000 take about 9 s here.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let out = Command::new("iptables")
                .args(["-w", "-t", "mangle", "-S", "OUTPUT"])
                .output()?;
            if String::from_utf8_lossy(&out.stdout).contains("NFQUEUE") {
                // Let it settle before the check.
                std::thread::sleep(std::time::Duration::from_secs(1));
                return Ok(me);
            }
            if std::time::Instant::now() > deadline {
                me.stop();
                bail!("opensnitchd did not install its NFQUEUE rule");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stop it (it takes a few seconds), restore its config and clear its chains.
    pub fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        opensnitch_restore();
        for t in ["mangle", "filter"] {
            let _ = Command::new("iptables")
                .args(["-w", "-t", t, "-F"])
                .status();
            let _ = Command::new("iptables")
                .args(["-w", "-t", t, "-X"])
                .status();
            // It leaves hooked base chains behind.
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", t])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Put the original OpenSnitch configuration back (also after a failed run).
pub fn opensnitch_restore() {
    if Path::new(OS_BACKUP).exists() && std::fs::copy(OS_BACKUP, OS_CONFIG).is_ok() {
        let _ = std::fs::remove_file(OS_BACKUP);
    }
    let _ = std::fs::remove_dir_all(OS_RULES);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_paths_follow_the_cgroup2_mount() {
        assert_eq!(
            nft_cgroup(Path::new("/sys/fs/cgroup/unified"), "/zt-bench-peer"),
            ("unified/zt-bench-peer".to_owned(), 1)
        );
        assert_eq!(
            nft_cgroup(Path::new("/sys/fs/cgroup"), "/zt-bench-peer"),
            ("zt-bench-peer".to_owned(), 1)
        );
    }
}
