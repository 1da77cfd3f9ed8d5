//! `cargo xtask dist [--arch amd64|arm64|all]`: the packages. For each architecture, a
//! release build of zt-agent (arm64 cross-compiled with Debian's gcc-aarch64-linux-gnu;
//! the eBPF object is the same bpfel object for both), its shell completions and man
//! pages generated from its own command line into target/dist/, and a .deb made by
//! cargo-deb in target/debian/ (the file name carries the architecture). For arm64 the unit
//! tests of the userspace crates then run under qemu-user.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd;

/// A target the packages are built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    Amd64,
    Arm64,
    All,
}

const ARM64: &str = "aarch64-unknown-linux-gnu";

/// The cargo of this task, set up to cross-build (and run) for aarch64.
fn cargo_for(triple: Option<&str>) -> Command {
    let mut c = cmd::cargo();
    if triple == Some(ARM64) {
        c.env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        )
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER",
            "qemu-aarch64-static -L /usr/aarch64-linux-gnu",
        );
    }
    c
}

pub fn run(arch: Arch) -> anyhow::Result<()> {
    let mut made = Vec::new();
    if matches!(arch, Arch::Amd64 | Arch::All) {
        made.push(deb(None)?);
    }
    if matches!(arch, Arch::Arm64 | Arch::All) {
        made.push(deb(Some(ARM64))?);
        arm64_unit_tests()?;
    }
    for d in made {
        println!("dist: {}", d.display());
    }
    Ok(())
}

/// Build the binary for `triple` (the host's when `None`), generate completions and
/// man pages, and package. Returns the .deb.
pub fn deb(triple: Option<&str>) -> anyhow::Result<PathBuf> {
    let mut b = cargo_for(triple);
    b.args(["build", "--release", "-p", "zt-agent"]);
    if let Some(t) = triple {
        b.args(["--target", t]);
    }
    cmd::run(b)?;
    generate()?;
    let mut d = cargo_for(triple);
    d.args(["deb", "-p", "zt-agent", "--no-build", "--no-strip"]);
    if let Some(t) = triple {
        d.args(["--target", t]);
    }
    let out = d
        .output()
        .context("running cargo-deb (scripts/setup.sh installs it)")?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo deb printed no package path")?;
    Ok(path)
}

/// Completions and man pages from the host's build of the same command line (the text
/// does not depend on the architecture), gzipped as Debian ships man pages.
fn generate() -> anyhow::Result<()> {
    let root = cmd::root();
    let dist = root.join("target/dist");
    let _ = std::fs::remove_dir_all(&dist);
    let host_bin = root.join("target/release/zt-agent");
    if !host_bin.exists() {
        let mut b = cmd::cargo();
        b.args(["build", "--release", "-p", "zt-agent"]);
        cmd::run(b)?;
    }
    let mut g = Command::new(&host_bin);
    g.arg("generate").arg(&dist);
    cmd::run(g)?;
    let man = dist.join("man");
    for e in std::fs::read_dir(&man).with_context(|| man.display().to_string())? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "1") {
            let mut z = Command::new("gzip");
            z.args(["-9", "-n", "-f"]).arg(&p);
            cmd::run(z)?;
        }
    }
    Ok(())
}

/// Unit tests that need statx's mount id, which Debian's qemu-user (7.2) does not copy
/// back from the kernel: they run on amd64 and on arm64 hardware, not under qemu.
const NOT_UNDER_QEMU: [&str; 2] = [
    "identity::files::tests::a_file_and_its_hardlink_and_symlink_are_one_file_a_copy_is_not",
    "identity::files::tests::paths_in_a_root_stay_inside_it",
];

/// The userspace crates' unit tests, cross-built for aarch64 and run under qemu-user
/// (the host kernel answers their system calls; nothing is loaded into it).
fn arm64_unit_tests() -> anyhow::Result<()> {
    for t in NOT_UNDER_QEMU {
        println!("dist: skipping {t} under qemu-user (statx mount ids are not emulated)");
    }
    let mut t = cargo_for(Some(ARM64));
    t.args([
        "test",
        "--target",
        ARM64,
        "-p",
        "zt-agent",
        "-p",
        "zt-agent-common",
        "-p",
        "zt-agent-host",
        "--lib",
        "--",
    ]);
    for name in NOT_UNDER_QEMU {
        t.args(["--skip", name]);
    }
    cmd::run(t)
}
