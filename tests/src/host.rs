//! The host the tests run on: root, and where cgroup2 is mounted (found the way the agent
//! finds it, with the same code).

use std::path::{Path, PathBuf};

/// Privileged tests never skip: without root and a loadable BPF program they fail.
pub fn require_root() {
    assert!(
        zt_agent_host::is_root(),
        "privileged eBPF tests need root: run them with `sudo ./x test`"
    );
}

/// The cgroup2 mount point.
#[must_use]
pub fn cgroup2_root() -> PathBuf {
    zt_agent_host::mounts::cgroup2_mount().expect("cgroup2 mount")
}

/// This test process's tag. The names of what a test makes (pin and state directories,
/// work directories, cgroups) carry it, so that suites running side by side never share
/// one, and what a run that died left behind is known by its tag.
#[must_use]
pub fn tag() -> u32 {
    std::process::id()
}

/// Whether `tag` is the tag of a test process that is gone.
#[must_use]
pub fn is_stale_tag(tag: &str) -> bool {
    tag.parse::<u32>()
        .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}
/// Run `sh -c SCRIPT` as `nobody` (uid and gid 65534, no other groups), the local user
/// an attacker is in these tests: (exit code, stdout and stderr).
#[must_use]
pub fn sh_as_nobody(script: &str) -> (i32, String) {
    use std::os::unix::process::CommandExt as _;
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", script])
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/")
        .output()
        .expect("sh as nobody");
    crate::probe::code_and_output(&out)
}

/// uid and gid of `nobody`.
pub const NOBODY: u32 = 65534;
