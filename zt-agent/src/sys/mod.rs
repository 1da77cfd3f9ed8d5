//! Host facts and host changes: mounts, cgroups, users and privileges.
pub mod cgroup;
pub mod landlock;
pub mod mounts;
pub mod seccomp;
pub mod user;
