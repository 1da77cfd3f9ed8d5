//! zt-agent: zero-trust egress and exec enforcement for non-human identities on Linux.
//!
//! Folders by job: `policy` (parse, validate, compile), `identity` (files as the kernel
//! sees them, exec selectors and allowlists, adoption of running tasks), `ebpf` (load,
//! attach, pin, maps), `dns` (the resolver of enrolled tasks' DNS), `events`, `metrics`, `sys` (mounts, cgroups, users), and one
//! module per command: `daemon`, `run`, `ps` (with `status`).
pub mod cli;
pub mod daemon;
pub mod dns;
pub mod ebpf;
pub mod events;
pub mod exit;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod ps;
pub mod run;
pub mod state;
pub mod sys;
