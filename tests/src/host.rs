//! The host the tests run on: root, and where cgroup2 is mounted (found the way the agent
//! finds it, with the same code).

use std::path::PathBuf;

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
