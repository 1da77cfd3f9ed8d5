//! Host facts and host changes: mounts, cgroups, users and privileges, and readiness
//! for the service manager.
pub mod cgroup;
pub mod landlock;
pub mod mounts;
pub mod notify;
pub mod seccomp;
pub mod user;
