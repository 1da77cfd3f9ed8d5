//! Host facts and host changes: mounts, cgroups, users and privileges, opening files
//! no other user can redirect (`fs`), readiness for the service manager (`notify`), and
//! the pause after a failed accept (`backoff`).
pub mod backoff;
pub mod cgroup;
pub mod db;
pub mod fs;
pub mod landlock;
pub mod mounts;
pub mod notify;
pub mod seccomp;
pub mod user;
