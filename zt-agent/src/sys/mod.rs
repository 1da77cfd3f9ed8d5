//! Host facts and host changes: mounts, cgroups, users and privileges, and opening
//! files no other user can redirect (`fs`).
pub mod cgroup;
pub mod fs;
pub mod landlock;
pub mod mounts;
pub mod seccomp;
pub mod user;
