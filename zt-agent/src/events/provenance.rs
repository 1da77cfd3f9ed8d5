//! Exec provenance: the binary's path and digest, and the ancestors' binaries.
//!
//! The kernel reports the file by (device, inode). The digest is computed here, once
//! per file version, from a path that still leads to that very file: the task's
//! /proc/PID/exe while it lives, else the policy's path for it, else the path the
//! task passed to execve.

use std::collections::HashMap;
use std::os::fd::AsFd as _;

use serde::Serialize;

/// Largest binary digested for an event. Hashing runs in the event loop, so a huge (or
/// sparse) file a workload exec'd must not stall it.
const MAX_EVENT_DIGEST_BYTES: u64 = 256 << 20;

use crate::identity::files::{self, FileId, MountDevs};

/// One ancestor of an exec'ing task.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Ancestor {
    pub pid: u32,
    pub exe: Option<String>,
}

/// Digests by file version, bounded.
#[derive(Default)]
pub struct Digests {
    mounts: MountDevs,
    mounts_read: Option<std::time::Instant>,
    cache: HashMap<FileId, String>,
}

impl Digests {
    fn mounts(&mut self) -> &MountDevs {
        let stale = self
            .mounts_read
            .is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(1));
        if stale {
            self.mounts = MountDevs::read(None).unwrap_or_default();
            self.mounts_read = Some(std::time::Instant::now());
        }
        &self.mounts
    }

    /// The digest of `file` (the very version the kernel reported) through the first
    /// candidate path that still leads to it, and that path.
    pub fn of(&mut self, file: &FileId, candidates: &[String]) -> Option<(String, String)> {
        for path in candidates {
            let Ok(f) = files::open_quietly(std::path::Path::new(path)) else {
                continue;
            };
            let mut mounts = self.mounts().clone();
            let mut id = files::of_fd(f.as_fd(), &mounts).ok();
            if id.is_none() && path.starts_with("/proc/") {
                // The task lives in another mount namespace: read its mount table.
                let pid = path.split('/').nth(2).and_then(|p| p.parse().ok());
                if let Ok(m) = MountDevs::read(pid) {
                    id = files::of_fd(f.as_fd(), &m).ok();
                    mounts = m;
                }
            }
            let Some(id) = id.filter(|i| i == file) else {
                continue;
            };
            if let Some(d) = self.cache.get(&id) {
                return Some((path.clone(), d.clone()));
            }
            let Ok((hashed, d)) =
                files::digest(std::path::Path::new(path), &mounts, MAX_EVENT_DIGEST_BYTES)
            else {
                continue;
            };
            if hashed != id {
                continue;
            }
            if self.cache.len() > 4096 {
                self.cache.clear();
            }
            self.cache.insert(id, d.clone());
            return Some((path.clone(), d));
        }
        None
    }
}

/// The ancestors' binaries, while they live.
#[must_use]
pub fn ancestors(pids: &[u32]) -> Vec<Ancestor> {
    pids.iter()
        .take_while(|&&p| p != 0)
        .map(|&pid| Ancestor {
            pid,
            exe: zt_agent_host::proc::exe(pid),
        })
        .collect()
}
