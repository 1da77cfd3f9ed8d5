//! The enforcer: the one writer of the policy, exec, task, cgroup and grant maps. Other parts
//! send it what the kernel should hold and wait for the answer; it runs on a thread of
//! its own, so that building a large trie never holds up the daemon's runtime.
//!
//! (The resolver writes the learned-address map itself, on its own thread: a DNS answer
//! waits for its addresses to be installed, and a hop to another thread per answer
//! would be on every lookup's path. No other part writes that map.)

use std::collections::BTreeMap;

use aya::maps::MapError;
use tokio::sync::{mpsc, oneshot};
use zt_agent_common::{
    KeyV4, KeyV6, MAX_IDENTITIES, PolicyValue, TASKS_CAPACITY, TaskIdentity, TaskShare,
};

use crate::ebpf::maps::{
    Cgroups, ExecEntries, ExecMaps, GrantMaps, PolicyMaps, Sockets, TaskShares, Tasks, TrieEntries,
    TrieEntry,
};
use crate::grants::entries::Tries;
use crate::identity::sockets;

/// The maps the enforcer owns.
pub struct Maps {
    pub tasks: Tasks,
    pub task_shares: TaskShares,
    pub sockets: Sockets,
    pub cgroups: Cgroups,
    pub policy: PolicyMaps,
    pub exec: ExecMaps,
    pub grants: GrantMaps,
}

/// What the maps hold, for metrics and status.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub tasks: Vec<(u32, TaskIdentity)>,
    pub cgroups: usize,
    pub exe_selectors: usize,
    pub principals: usize,
    pub exec_allow: usize,
    pub policy_v4: usize,
    pub policy_v6: usize,
    pub ingress_v4: usize,
    pub ingress_v6: usize,
    /// The share of the task table each identity may hold now.
    pub task_share: u64,
    /// Per identity: tasks the daemon found that it killed rather than enroll past
    /// the share.
    pub refused: BTreeMap<u32, u64>,
    /// Entries removed because their task was gone.
    pub swept: u64,
    pub grants_v4: usize,
    pub grants_v6: usize,
}

/// A task to enroll: (tgid, identity, how).
pub type Enrollment = (u32, u32, u32);

/// What one policy puts into the kernel through the enforcer.
pub struct Install {
    pub v4: Vec<TrieEntry<KeyV4>>,
    pub v6: Vec<TrieEntry<KeyV6>>,
    pub in_v4: Vec<TrieEntry<KeyV4>>,
    pub in_v6: Vec<TrieEntry<KeyV6>>,
    pub bind: BTreeMap<u32, PolicyValue>,
    pub exec: ExecEntries,
    /// Identities that may hold tasks: every id ever given out (a removed identity's
    /// tasks live on), for the share each gets.
    pub holders: usize,
}

enum Command {
    Install {
        install: Box<Install>,
        reply: oneshot::Sender<Result<(), MapError>>,
    },
    SyncExec {
        exec: ExecEntries,
        reply: oneshot::Sender<Result<(), MapError>>,
    },
    SyncCgroups {
        want: BTreeMap<u64, u32>,
        prune: bool,
        reply: oneshot::Sender<Result<(), MapError>>,
    },
    Enroll {
        tasks: Vec<Enrollment>,
        reply: oneshot::Sender<Vec<Result<bool, MapError>>>,
    },
    Sweep {
        reply: oneshot::Sender<Result<usize, MapError>>,
    },
    TagSockets {
        tgid: u32,
        identity: u32,
        reply: oneshot::Sender<usize>,
    },
    SyncGrants {
        tries: Box<Tries>,
        reply: oneshot::Sender<Result<(), MapError>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
}

/// The enforcer stopped (its thread ended): nothing can change the kernel's state.
#[derive(Debug, thiserror::Error)]
#[error("the enforcer has stopped")]
pub struct Stopped;

impl From<oneshot::error::RecvError> for Stopped {
    fn from(_: oneshot::error::RecvError) -> Self {
        Self
    }
}

/// How other parts reach the enforcer.
#[derive(Clone)]
pub struct Enforcer {
    tx: mpsc::Sender<Command>,
}

impl Enforcer {
    /// Start the enforcer's thread over `maps`, with at most `task_share` task-table
    /// entries per identity. The receiver completes when the thread ends, however it
    /// ends.
    pub fn spawn(maps: Maps, task_share: u64) -> std::io::Result<(Self, oneshot::Receiver<()>)> {
        let (tx, rx) = mpsc::channel(64);
        let (alive, ended) = oneshot::channel::<()>();
        let mut state = State::new(maps, task_share);
        // Every identity has its share before anything is attached or adopted.
        if let Err(e) = state.write_shares() {
            return Err(std::io::Error::other(format!("task shares: {e}")));
        }
        std::thread::Builder::new()
            .name("zt-enforcer".into())
            .spawn(move || {
                // Dropped when the thread ends, a panic included.
                let _alive = alive;
                state.serve(rx);
            })?;
        Ok((Self { tx }, ended))
    }

    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(cmd(reply)).await.map_err(|_| Stopped)?;
        Ok(rx.await?)
    }

    /// Install a policy's tries and exec entries, all or nothing: on failure the
    /// previous entries stay in force.
    pub async fn install(&self, install: Install) -> Result<Result<(), MapError>, Stopped> {
        self.ask(|reply| Command::Install {
            install: Box::new(install),
            reply,
        })
        .await
    }

    /// Replace the exec entries (the files the policy names changed on disk).
    pub async fn sync_exec(&self, exec: ExecEntries) -> Result<Result<(), MapError>, Stopped> {
        self.ask(|reply| Command::SyncExec { exec, reply }).await
    }

    /// Enroll the cgroups in `want`; with `prune`, drop the ones no identity selects.
    pub async fn sync_cgroups(
        &self,
        want: BTreeMap<u64, u32>,
        prune: bool,
    ) -> Result<Result<(), MapError>, Stopped> {
        self.ask(|reply| Command::SyncCgroups { want, prune, reply })
            .await
    }

    /// Enroll tasks that are not enrolled yet; `Ok(true)` for each one that was.
    pub async fn enroll(
        &self,
        tasks: Vec<Enrollment>,
    ) -> Result<Vec<Result<bool, MapError>>, Stopped> {
        self.ask(|reply| Command::Enroll { tasks, reply }).await
    }

    /// Remove the entries of thread groups that are gone; how many were removed.
    pub async fn sweep(&self) -> Result<Result<usize, MapError>, Stopped> {
        self.ask(|reply| Command::Sweep { reply }).await
    }

    /// Give the identity to the sockets `tgid` had before the kernel enrolled it (by
    /// an exec); how many had none.
    pub async fn tag_sockets(&self, tgid: u32, identity: u32) -> Result<usize, Stopped> {
        self.ask(|reply| Command::TagSockets {
            tgid,
            identity,
            reply,
        })
        .await
    }

    /// Make the grant tries hold exactly `tries` (grants, windows, `ask` markers).
    pub async fn sync_grants(&self, tries: Tries) -> Result<Result<(), MapError>, Stopped> {
        self.ask(|reply| Command::SyncGrants {
            tries: Box::new(tries),
            reply,
        })
        .await
    }

    pub async fn stats(&self) -> Result<Stats, Stopped> {
        self.ask(|reply| Command::Stats { reply }).await
    }
}

/// The enforcer's own state: the maps and what it last installed.
struct State {
    maps: Maps,
    /// The exec entries in force, to return to when an install fails half-way.
    exec: ExecEntries,
    rules: [usize; 4],
    /// The configured share, and the one in force (lower when many identities must fit).
    task_share: u64,
    share_now: u64,
    /// Per identity id: the entries this daemon (and its predecessors) added, less
    /// those they removed; mirrors the kernel map's `user` fields, which only the
    /// enforcer writes.
    users: Vec<u64>,
    refused: BTreeMap<u32, u64>,
    swept: u64,
    /// Nanoseconds per /proc clock tick.
    tick_ns: u64,
}

impl State {
    fn new(maps: Maps, task_share: u64) -> Self {
        // An adopted enforcement keeps the counts its predecessor left.
        let users = (0..MAX_IDENTITIES)
            .map(|id| maps.task_shares.share.get(&id, 0).map_or(0, |s| s.user))
            .collect();
        Self {
            maps,
            exec: ExecEntries::default(),
            rules: [0; 4],
            task_share,
            share_now: task_share,
            users,
            refused: BTreeMap::new(),
            swept: 0,
            tick_ns: 1_000_000_000 / zt_agent_host::proc::clock_ticks(),
        }
    }

    fn serve(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.blocking_recv() {
            // A caller that gave up waiting is no reason to stop.
            match cmd {
                Command::Install { install, reply } => {
                    let _ = reply.send(self.install(*install));
                }
                Command::SyncExec { exec, reply } => {
                    let r = self.maps.exec.sync(&exec);
                    match r {
                        Ok(()) => self.exec = exec,
                        // Whatever made it in stays; the next sync starts from scratch.
                        Err(_) => self.exec = ExecEntries::default(),
                    }
                    let _ = reply.send(r);
                }
                Command::SyncCgroups { want, prune, reply } => {
                    let _ = reply.send(self.maps.cgroups.sync(&want, prune));
                }
                Command::Enroll { tasks, reply } => {
                    let _ = reply.send(tasks.into_iter().map(|t| self.enroll(t)).collect());
                }
                Command::Sweep { reply } => {
                    let _ = reply.send(self.sweep());
                }
                Command::TagSockets {
                    tgid,
                    identity,
                    reply,
                } => {
                    let _ = reply.send(self.tag_sockets(tgid, identity));
                }
                Command::SyncGrants { tries, reply } => {
                    let _ = reply.send(self.maps.grants.sync(&tries.v4, &tries.v6).map(|_| ()));
                }
                Command::Stats { reply } => {
                    let (exe_selectors, principals, exec_allow) = self.maps.exec.counts();
                    let (grants_v4, grants_v6) = self.maps.grants.len();
                    let _ = reply.send(Stats {
                        tasks: self.maps.tasks.all(),
                        cgroups: self.maps.cgroups.len(),
                        exe_selectors,
                        principals,
                        exec_allow,
                        policy_v4: self.rules[0],
                        policy_v6: self.rules[1],
                        ingress_v4: self.rules[2],
                        ingress_v6: self.rules[3],
                        task_share: self.share_now,
                        refused: self.refused.clone(),
                        swept: self.swept,
                        grants_v4,
                        grants_v6,
                    });
                }
            }
        }
    }

    fn install(&mut self, i: Install) -> Result<(), MapError> {
        // All or nothing: on failure put the previous exec entries back.
        if let Err(e) = self.maps.exec.sync(&i.exec) {
            let _ = self.maps.exec.sync(&self.exec);
            return Err(e);
        }
        let egress = TrieEntries {
            v4: &i.v4,
            v6: &i.v6,
        };
        let ingress = TrieEntries {
            v4: &i.in_v4,
            v6: &i.in_v6,
        };
        if let Err(e) = self.maps.policy.install(egress, ingress, &i.bind) {
            let _ = self.maps.exec.sync(&self.exec);
            return Err(e);
        }
        self.exec = i.exec;
        self.rules = [i.v4.len(), i.v6.len(), i.in_v4.len(), i.in_v6.len()];
        // Shares that fit side by side: no identity can fill the table for another,
        // the quarantine identity included.
        let fit = u64::from(TASKS_CAPACITY) / (i.holders as u64 + 1).max(1);
        let share = self.task_share.min(fit);
        if share != self.share_now {
            if share < self.task_share {
                tracing::warn!(
                    share,
                    configured = self.task_share,
                    identities = i.holders,
                    "task share lowered so that every identity's share fits the task table"
                );
            }
            self.share_now = share;
            self.write_shares()?;
        }
        Ok(())
    }

    fn write_share(&mut self, identity: u32) -> Result<(), MapError> {
        let share = TaskShare {
            max: self.share_now,
            user: self.users.get(identity as usize).copied().unwrap_or(0),
        };
        self.maps.task_shares.share.set(identity, &share, 0)
    }

    fn write_shares(&mut self) -> Result<(), MapError> {
        for id in 1..MAX_IDENTITIES {
            self.write_share(id)?;
        }
        Ok(())
    }

    /// Count an entry the daemon added (`add`) or removed for `identity`.
    fn count(&mut self, identity: u32, add: bool) -> Result<(), MapError> {
        if let Some(u) = self.users.get_mut(identity as usize) {
            *u = if add {
                u.wrapping_add(1)
            } else {
                u.wrapping_sub(1)
            };
        }
        self.write_share(identity)
    }

    /// The entry a live thread group gets: its start time, as /proc has it.
    fn live_entry(&self, tgid: u32, identity: u32, how: u32) -> Option<TaskIdentity> {
        let ticks = zt_agent_host::proc::live_start_ticks(tgid)?;
        Some(TaskIdentity {
            identity,
            how,
            start_ns: ticks * self.tick_ns,
        })
    }

    /// Whether an entry still names the thread group that holds its pid, alive. An
    /// entry without a start time (the kernel could not read it) is taken for whatever
    /// lives at its pid: a wrong removal would leave a task unjudged.
    fn is_current(&self, tgid: u32, t: &TaskIdentity) -> bool {
        match zt_agent_host::proc::live_start_ticks(tgid) {
            Some(_) if t.start_ns == 0 => true,
            Some(ticks) => ticks == t.start_ns / self.tick_ns,
            None => false,
        }
    }

    fn enroll(&mut self, (tgid, identity, how): Enrollment) -> Result<bool, MapError> {
        if self.maps.tasks.get(tgid).is_some() {
            return Ok(false);
        }
        let Some(entry) = self.live_entry(tgid, identity, how) else {
            return Ok(false); // gone already
        };
        if self.maps.task_shares.held(identity) >= self.share_now {
            // It must not run unjudged, and its identity may hold no more: it ends here,
            // as a fork past the share would.
            *self.refused.entry(identity).or_default() += 1;
            if kill_if_current(tgid, entry.start_ns / self.tick_ns) {
                tracing::warn!(
                    tgid,
                    identity,
                    share = self.share_now,
                    "killed a task its identity could not enroll past its share of the task table"
                );
            }
            return Ok(false);
        }
        if !self.maps.tasks.enroll_if_absent(tgid, &entry)? {
            return Ok(false);
        }
        self.count(identity, true)?;
        // The task may have exited between the scan and the insert, after its exit hook
        // ran: never leave an entry a later holder of the pid would inherit. Checked
        // after the insert, so that either this check or the exit hook sees the entry.
        if !self.is_current(tgid, &entry) {
            if self.maps.tasks.remove_if(tgid, &entry)? {
                self.count(identity, false)?;
            }
            return Ok(false);
        }
        // What it had open before is judged from now on too.
        self.tag_sockets(tgid, identity);
        Ok(true)
    }

    /// Record `identity` for the sockets `tgid` holds that have no identity yet.
    fn tag_sockets(&mut self, tgid: u32, identity: u32) -> usize {
        let mut tagged = 0;
        for s in sockets::inet_sockets(tgid) {
            match self.maps.sockets.tag(&s, identity) {
                Ok(true) => tagged += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(tgid, error = %e, "recording a socket's identity"),
            }
        }
        if tagged > 0 {
            tracing::info!(
                tgid,
                identity,
                sockets = tagged,
                "sockets opened before enrollment now carry the identity"
            );
        }
        tagged
    }

    /// Remove every entry whose thread group is gone, or is a zombie that only waits
    /// to be reaped (its exit hook ran before the daemon added it), or whose pid now
    /// belongs to another process.
    fn sweep(&mut self) -> Result<usize, MapError> {
        let mut removed = 0;
        for (tgid, t) in self.maps.tasks.all() {
            if self.is_current(tgid, &t) {
                continue;
            }
            if self.maps.tasks.remove_if(tgid, &t)? {
                self.count(t.identity, false)?;
                removed += 1;
            }
        }
        self.swept += removed as u64;
        Ok(removed)
    }
}

/// SIGKILL `tgid` if it still is the process that started at `start_ticks`; through a
/// pidfd, so that a later holder of the pid is never hit.
fn kill_if_current(tgid: u32, start_ticks: u64) -> bool {
    // SAFETY: pidfd_open takes a pid and flags; the descriptor is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: the kernel just returned this descriptor.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    if zt_agent_host::proc::live_start_ticks(tgid) != Some(start_ticks) {
        return false;
    }
    // SAFETY: signalling the process the pidfd refers to.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}
