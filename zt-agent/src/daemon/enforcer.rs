//! The enforcer: the one writer of the policy, exec, task, cgroup and grant maps. Other parts
//! send it what the kernel should hold and wait for the answer; it runs on a thread of
//! its own, so that building a large trie never holds up the daemon's runtime.
//!
//! (The resolver writes the learned-address map itself, on its own thread: a DNS answer
//! waits for its addresses to be installed, and a hop to another thread per answer
//! would be on every lookup's path. No other part writes that map.)

use std::collections::BTreeMap;
use std::path::Path;

use aya::maps::MapError;
use tokio::sync::{mpsc, oneshot};
use zt_agent_common::{KeyV4, KeyV6, TaskIdentity};

use crate::ebpf::maps::{Cgroups, ExecEntries, ExecMaps, GrantMaps, PolicyMaps, Tasks, TrieEntry};
use crate::grants::entries::Tries;

/// The maps the enforcer owns.
pub struct Maps {
    pub tasks: Tasks,
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
    pub grants_v4: usize,
    pub grants_v6: usize,
}

/// A task to enroll: (tgid, identity, how).
pub type Enrollment = (u32, u32, u32);

enum Command {
    Install {
        v4: Vec<TrieEntry<KeyV4>>,
        v6: Vec<TrieEntry<KeyV6>>,
        exec: ExecEntries,
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
    /// Start the enforcer's thread over `maps`. The receiver completes when the
    /// thread ends, however it ends.
    pub fn spawn(maps: Maps) -> std::io::Result<(Self, oneshot::Receiver<()>)> {
        let (tx, rx) = mpsc::channel(64);
        let (alive, ended) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("zt-enforcer".into())
            .spawn(move || {
                // Dropped when the thread ends, a panic included.
                let _alive = alive;
                State::new(maps).serve(rx);
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
    pub async fn install(
        &self,
        v4: Vec<TrieEntry<KeyV4>>,
        v6: Vec<TrieEntry<KeyV6>>,
        exec: ExecEntries,
    ) -> Result<Result<(), MapError>, Stopped> {
        self.ask(|reply| Command::Install {
            v4,
            v6,
            exec,
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
    rules: (usize, usize),
}

impl State {
    fn new(maps: Maps) -> Self {
        Self {
            maps,
            exec: ExecEntries::default(),
            rules: (0, 0),
        }
    }

    fn serve(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.blocking_recv() {
            // A caller that gave up waiting is no reason to stop.
            match cmd {
                Command::Install {
                    v4,
                    v6,
                    exec,
                    reply,
                } => {
                    let _ = reply.send(self.install(&v4, &v6, exec));
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
                        policy_v4: self.rules.0,
                        policy_v6: self.rules.1,
                        grants_v4,
                        grants_v6,
                    });
                }
            }
        }
    }

    fn install(
        &mut self,
        v4: &[TrieEntry<KeyV4>],
        v6: &[TrieEntry<KeyV6>],
        exec: ExecEntries,
    ) -> Result<(), MapError> {
        // All or nothing: on failure put the previous exec entries back.
        if let Err(e) = self.maps.exec.sync(&exec) {
            let _ = self.maps.exec.sync(&self.exec);
            return Err(e);
        }
        if let Err(e) = self.maps.policy.install(v4, v6) {
            let _ = self.maps.exec.sync(&self.exec);
            return Err(e);
        }
        self.exec = exec;
        self.rules = (v4.len(), v6.len());
        Ok(())
    }

    fn enroll(&mut self, (tgid, identity, how): Enrollment) -> Result<bool, MapError> {
        let added = self.maps.tasks.enroll_if_absent(tgid, identity, how)?;
        // The task may have exited between the scan and the insert, after its exit hook
        // ran: never leave an entry a later holder of the pid would inherit.
        if added && !Path::new(&format!("/proc/{tgid}")).exists() {
            let _ = self.maps.tasks.remove(tgid);
            return Ok(false);
        }
        Ok(added)
    }
}
