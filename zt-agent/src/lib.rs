//! zt-agent: zero-trust egress and exec enforcement for non-human identities on Linux.
//!
//! Folders by job: `policy` (parse, validate, compile), `plan` (policy + host facts ->
//! what the kernel gets), `identity` (files as the kernel sees them, exec selectors and
//! allowlists, adoption of running tasks), `ebpf` (load, attach, pin, maps), `dns` (the
//! resolver of enrolled tasks' DNS), `bus` and `events` (typed events, their JSON and
//! sinks), `metrics`, `daemon` (its parts), `launch` (`zt-agent run`), `inventory`
//! (`ps` and `status`), `sys` (mounts, cgroups, users), `tamper` (programs and pins
//! kept in place), `grants` (just-in-time access), `spiffe` (the Workload API),
//! `workload` (containers, pods and systemd units as host facts that resolve to
//! cgroups), and `cmd`, one file per command.
pub mod bus;
pub mod cli;
pub mod cmd;
pub mod daemon;
pub mod dns;
pub mod ebpf;
pub mod events;
pub mod exit;
pub mod grants;
pub mod identity;
pub mod inventory;
pub mod launch;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod spiffe;
pub mod state;
pub mod sys;
pub mod tamper;
pub mod traffic;
pub mod workload;
