//! Harness for the privileged integration tests.
//!
//! Each test starts its own daemon with its own pin directory, state directory, policy
//! and identity names, so tests run in parallel without seeing each other. Everything
//! is torn down on drop, also when the test fails: the daemon is killed, its pins
//! removed (which detaches its programs), and the cgroups it made removed.
//!
//! Modules by job: `daemon` (the daemon under test and its commands), `policy` (typed
//! policy documents), `cgroup` (test cgroups and probes started in them), `containers`
//! (Docker and Podman of one test, and the root filesystem their containers run), `net`
//! (listeners, veth pairs, peers in a network namespace), `dnsmasq` (the upstream
//! resolver), `fs` (test files), `maps` (the pinned maps and links, read and changed
//! directly), `probe` (the binaries under test, zt-probe's exit codes), `host` (root,
//! cgroup2, the unprivileged user tests attack as).

pub mod cgroup;
pub mod containers;
pub mod daemon;
pub mod dnsmasq;
pub mod fs;
pub mod host;
pub mod maps;
pub mod net;
pub mod policy;
pub mod probe;

pub use cgroup::{Cgroup, remove_cgroup_tree};
pub use daemon::Daemon;
pub use dnsmasq::Dnsmasq;
pub use fs::{TestDir, sha256_of};
pub use host::{NOBODY, cgroup2_root, require_root, sh_as_nobody};
pub use net::{Peer, TcpServer, UdpServer, Veth, free_port, send_udp};
pub use policy::{Identity, InRule, Policy, Rule, Selector};
pub use probe::{
    Background, DENIED, KILLED, OK, TEST_VENV, TIMEOUT, agent_bin, code_and_output, probe_bin,
    reported, run_file, run_probe_unenrolled, spawn_probe_unenrolled,
};
