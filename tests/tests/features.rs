//! Every kernel feature the programs need is probed at start-up: a kernel that lacks
//! one is refused with its name and exit 69 (EX_UNAVAILABLE), before anything is loaded.
//! The kernel here has them all, so each probe is made to fail with the daemon's
//! `ZT_AGENT_PROBE_FAIL`; and with none forced, the same probes pass.

use std::process::Command;

use zt_agent_tests::{agent_bin, require_root};

/// Every probe, by key, and words its message must carry.
const FEATURES: [(&str, &str); 12] = [
    ("btf", "kernel BTF"),
    ("ringbuf", "BPF ring buffer maps (Linux 5.8"),
    ("sk_storage", "socket-local storage"),
    ("lpm_trie", "LPM trie maps"),
    ("array_of_maps", "arrays of maps"),
    ("cgroup_sock_addr", "cgroup sock_addr programs"),
    ("cgroup_sock", "cgroup sock programs"),
    ("cgroup_sockopt", "cgroup sockopt programs"),
    ("cgroup_skb", "cgroup skb programs"),
    ("tp_btf", "BTF tracepoints"),
    (
        "exit_group_dead",
        "group_dead argument of the sched_process_exit tracepoint (Linux 6.16",
    ),
    ("statx_mnt_id", "statx mount ids"),
];

#[test]
fn a_missing_kernel_feature_is_named_and_nothing_is_loaded() {
    require_root();
    let pin_dir = "/sys/fs/bpf/zt-test-features";
    let state_dir = "/run/zt-test-features";
    let policies = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
    for (key, words) in FEATURES {
        let out = Command::new(agent_bin())
            .args([
                "daemon",
                "--policy",
                policies,
                "--pin-dir",
                pin_dir,
                "--state-dir",
                state_dir,
            ])
            .env("ZT_AGENT_PROBE_FAIL", key)
            .output()
            .expect("zt-agent daemon");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{key}: {err}");
        assert!(
            err.contains(words) && err.contains(&format!("probe `{key}`")),
            "{key}: {err}"
        );
        assert!(
            !std::path::Path::new(pin_dir).exists(),
            "{key}: something was pinned"
        );
    }
    // An unknown key forces nothing: the probes of this kernel pass, and the daemon
    // gets as far as its policy (here: a policy directory that does not exist, 78).
    let out = Command::new(agent_bin())
        .args([
            "daemon",
            "--policy",
            "/nonexistent/zt-test-features",
            "--pin-dir",
            pin_dir,
            "--state-dir",
            state_dir,
        ])
        .env("ZT_AGENT_PROBE_FAIL", "no-such-probe")
        .output()
        .expect("zt-agent daemon");
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!std::path::Path::new(pin_dir).exists());
}
