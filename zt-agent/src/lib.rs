//! zt-agent: zero-trust egress enforcement for non-human identities on Linux.
//!
//! Folders by job: `policy` (parse, validate, compile), `ebpf` (load, attach, pin,
//! maps), `events`, `metrics`, `sys` (mounts, cgroups, users), and one module per
//! command: `daemon`, `run`.
pub mod cli;
pub mod daemon;
pub mod ebpf;
pub mod events;
pub mod exit;
pub mod metrics;
pub mod policy;
pub mod run;
pub mod state;
pub mod sys;
