//! Host facts and host changes: mounts, cgroups, users and privileges, opening files
//! no other user can redirect (`fs`), and readiness for the service manager (`notify`).
pub mod cgroup;
pub mod db;
pub mod fs;
pub mod landlock;
pub mod mounts;
pub mod notify;
pub mod seccomp;
pub mod user;
