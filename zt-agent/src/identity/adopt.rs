//! Tasks that were running before the daemon (or before a selector was added): found
//! in /proc and matched by their binary and real uid/gid, the way the exec hook would
//! have matched them.

use std::collections::HashMap;
use std::os::fd::AsFd as _;

use super::files::{self, FileId, MountDevs};
use super::resolve::Resolved;

/// A running thread group and what selects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    pub tgid: u32,
    pub identity: u32,
    pub how: u32,
}

/// Real uid and gid from /proc/PID/status.
fn ids_of(tgid: u32) -> Option<(u32, u32)> {
    let status = zt_agent_host::proc::Status::of(tgid)?;
    Some((status.first("Uid")?, status.first("Gid")?))
}

/// The binary a task runs, as the kernel sees it, read through its own mount table.
fn exe_of(tgid: u32, tables: &mut HashMap<String, Option<MountDevs>>) -> Option<FileId> {
    let ns = std::fs::read_link(format!("/proc/{tgid}/ns/mnt"))
        .ok()?
        .display()
        .to_string();
    let mounts = tables
        .entry(ns)
        .or_insert_with(|| MountDevs::read(Some(tgid)).ok())
        .as_ref()?;
    // Opening /proc/PID/exe opens the very file the task runs, even if its path is gone.
    let f = std::fs::File::open(format!("/proc/{tgid}/exe")).ok()?;
    files::of_fd(f.as_fd(), mounts).ok()
}

/// Every live thread group that a selector of `resolved` matches, except `skip`.
#[must_use]
pub fn scan(resolved: &Resolved, skip: &[u32]) -> Vec<Match> {
    if resolved.entries.exe.is_empty() && resolved.entries.principals.is_empty() {
        return Vec::new();
    }
    let mut tables = HashMap::new();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(tgid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if skip.contains(&tgid) {
            continue;
        }
        let Some((uid, gid)) = ids_of(tgid) else {
            continue;
        };
        let exe = if resolved.entries.exe.is_empty() {
            None
        } else {
            exe_of(tgid, &mut tables)
        };
        if let Some((identity, how)) = resolved.select(exe.as_ref(), uid, gid) {
            out.push(Match {
                tgid,
                identity,
                how,
            });
        }
    }
    out
}
