//! The reconciler keeps the kernel on the policy in force: it loads the policy
//! directory, builds plans from it and the host's facts, hands them to the enforcer,
//! follows the files and cgroups the policy names, and publishes the resulting state
//! (to `state.json`, for `zt-agent run` and a successor daemon, and to the other
//! parts).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use zt_agent_common::ENROLL_SCAN;

use super::DaemonError;
use super::enforcer::{Enforcer, Install, Stopped};
use crate::bus::{self, Body, Bus};
use crate::dns::server::Resolver;
use crate::events::FileEvent;
use crate::grants::GrantPolicy;
use crate::identity::adopt;
use crate::identity::files::FileId;
use crate::identity::resolve::{self, HostFiles, Note, Resolved};
use crate::metrics::PolicyMetrics;
use crate::plan::{self, Plan};
use crate::policy::{self, Mode, Policy, PolicyErrors};
use crate::state::{IdentityState, State};
use crate::sys::cgroup;
use crate::workload::select::Workloads;
use crate::workload::watch::Containers;

pub struct Reconciler {
    policy_dir: PathBuf,
    state_dir: PathBuf,
    state: State,
    published: watch::Sender<Arc<State>>,
    /// The policy and plan in force; `None` until one was installed by this daemon.
    current: Option<(Policy, Plan)>,
    files: HostFiles,
    /// Notes already reported, so each is reported once while it holds.
    notes_seen: BTreeSet<Note>,
    /// Policy source hash last seen on disk, applied or not.
    seen_sha: Option<String>,
    /// Identities reported to select more cgroups than their share.
    cgroups_over: BTreeSet<u32>,
    enforcer: Enforcer,
    resolver: Arc<Resolver>,
    bus: Bus,
    metrics: PolicyMetrics,
    grants: watch::Sender<Arc<GrantPolicy>>,
    /// The host's containers, as the runtimes last reported them.
    containers: Containers,
    /// One task of each container of each identity whose `exec.allow` applies inside
    /// its containers, by identity id: where those paths are resolved.
    roots: BTreeMap<u32, Vec<u32>>,
    /// cgroups the daemon made for created containers before their runtime did, so
    /// that their first task is enrolled as it enters; removed if the container goes
    /// without having used it.
    precreated: BTreeMap<String, PathBuf>,
}

/// The parts a reconciler works with.
pub struct Parts {
    pub enforcer: Enforcer,
    pub resolver: Arc<Resolver>,
    pub bus: Bus,
    pub metrics: PolicyMetrics,
    /// Where the policy's `ask` and `when` rules go, for the grant manager.
    pub grants: watch::Sender<Arc<GrantPolicy>>,
}

impl Reconciler {
    #[must_use]
    pub fn new(
        policy_dir: PathBuf,
        state_dir: PathBuf,
        state: State,
        parts: Parts,
    ) -> (Self, watch::Receiver<Arc<State>>) {
        let (published, rx) = watch::channel(Arc::new(state.clone()));
        let me = Self {
            policy_dir,
            state_dir,
            state,
            published,
            current: None,
            files: HostFiles::default(),
            notes_seen: BTreeSet::new(),
            seen_sha: None,
            cgroups_over: BTreeSet::new(),
            enforcer: parts.enforcer,
            resolver: parts.resolver,
            bus: parts.bus,
            metrics: parts.metrics,
            grants: parts.grants,
            containers: Containers::default(),
            roots: BTreeMap::new(),
            precreated: BTreeMap::new(),
        };
        (me, rx)
    }

    /// The containers changed (a runtime event, or the first listing).
    pub fn set_containers(&mut self, containers: Containers) {
        self.containers = containers;
    }

    /// The state the daemon records; boot adds where it serves and how execs are
    /// guarded, then calls [`Self::publish`].
    pub const fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    /// Put the first policy in force. A fresh start needs it to install; an adopted
    /// enforcement keeps its pinned policy when this one is refused.
    pub async fn start(
        &mut self,
        initial: Result<Policy, PolicyErrors>,
        adopted: bool,
    ) -> Result<(), DaemonError> {
        match initial {
            Ok(p) => match self.apply(p).await {
                Ok(sha) => {
                    let identities = self.state.identities.len();
                    tracing::info!(sha256 = %sha, identities, adopted, "policy in force");
                }
                Err(e) => {
                    self.metrics.rejected();
                    if !adopted {
                        return Err(e);
                    }
                    tracing::error!(error = %e, "policy rejected; the pinned policy stays in force");
                }
            },
            Err(errs) => {
                // Only reachable when adopting: keep what the kernel enforces now.
                self.metrics.rejected();
                tracing::error!("policy rejected; the pinned policy stays in force:\n{errs}");
                self.metrics.set_policy(&self.state.policy_sha256);
            }
        }
        Ok(())
    }

    /// Reload if the policy files changed (or always, when `forced`: SIGHUP).
    pub async fn reload(&mut self, forced: bool) {
        // Polling hashes the raw files; only a change (or SIGHUP) parses them.
        let digest = policy::source_digest(&self.policy_dir, policy::Trust::Root);
        if !forced && self.seen_sha.as_deref() == Some(digest.as_str()) {
            return;
        }
        self.seen_sha = Some(digest.clone());
        if !forced && digest == self.state.policy_sha256 {
            return;
        }
        let result = match policy::load_dir(&self.policy_dir, policy::Trust::Root) {
            Ok(p) => self.apply(p).await.map_err(|e| e.to_string()),
            Err(errs) => Err(errs.to_string()),
        };
        match result {
            Ok(sha) => tracing::info!(sha256 = %sha, "policy reloaded"),
            Err(e) => {
                self.metrics.rejected();
                tracing::error!("policy reload rejected; the running policy stays in force:\n{e}");
            }
        }
    }

    /// Plan and install a policy: all or nothing. On any error the running policy and
    /// the state stay as they were. Returns the policy's sha256.
    async fn apply(&mut self, p: Policy) -> Result<String, DaemonError> {
        if let Err(e) = self.files.refresh_mounts() {
            tracing::warn!(error = %e, "reading the mount table");
        }
        let mut next =
            plan::build(&p, &self.state.ids, &mut self.files).map_err(|e| DaemonError::Policy {
                dir: self.policy_dir.display().to_string(),
                errors: e.to_string(),
            })?;
        resolve::add_container_files(&p, &next.ids, &self.roots, &mut next.exec);
        if let Some((_, old)) = &self.current {
            tracing::info!(change = %plan::diff(old, &next), "installing policy");
        }
        self.enforcer
            .install(Install {
                v4: next.compiled.v4.clone(),
                v6: next.compiled.v6.clone(),
                in_v4: next.compiled.in_v4.clone(),
                in_v6: next.compiled.in_v6.clone(),
                bind: next.compiled.bind.clone(),
                exec: next.exec.entries.clone(),
                holders: next.ids.len(),
            })
            .await?
            .map_err(DaemonError::Install)?;
        let sha = next.sha256().to_owned();
        self.state.ids.clone_from(&next.ids);
        self.state.identities = next
            .compiled
            .identities
            .iter()
            .map(|i| IdentityState {
                name: i.name.clone(),
                id: i.id,
                owner: i.owner.clone(),
                spiffe_id: i.spiffe_id.clone(),
                mode: match i.mode {
                    Mode::Audit => "audit".into(),
                    Mode::Enforce => "enforce".into(),
                },
                cgroup_globs: i.cgroup_globs.clone(),
                limits: i.limits.clone(),
            })
            .collect();
        self.state.policy_sha256.clone_from(&sha);
        self.seen_sha = Some(sha.clone());
        self.resolver.set_policy(next.dns.clone());
        self.grants
            .send_replace(Arc::new(GrantPolicy::from_compiled(&next.compiled)));
        self.note_files(&next.exec);
        self.current = Some((p, next));
        self.metrics.loaded(&sha);
        self.sync_cgroups(true).await;
        // After the cgroups: a task both places select takes its cgroup's identity.
        self.adopt().await;
        self.publish();
        Ok(sha)
    }

    /// Record the files of a resolution: their paths (for events and `ps`), and their
    /// notes as events, each once while it holds.
    fn note_files(&mut self, r: &Resolved) {
        self.state.paths = r
            .paths
            .iter()
            .map(|(k, p)| (FileId::describe(k), p.clone()))
            .collect();
        let now: BTreeSet<Note> = r.notes.iter().cloned().collect();
        for n in now.difference(&self.notes_seen) {
            let reason = if n.message.starts_with("digest mismatch") {
                "digest_mismatch"
            } else {
                "file_unresolved"
            };
            tracing::warn!(identity = %n.identity, path = %n.path, "{}: {}: {}", n.location, n.field, n.message);
            self.bus.publish(bus::Event::now(Body::File(FileEvent {
                identity: n.identity.clone(),
                reason,
                detail: format!("{}: {} `{}`: {}", n.location, n.field, n.path, n.message),
            })));
        }
        self.notes_seen = now;
    }

    /// Follow the files the policy names: a replaced or rewritten binary gets new
    /// entries (and a digest check) within a second.
    pub async fn refresh_files(&mut self) {
        let Some((p, plan)) = &self.current else {
            return;
        };
        if let Err(e) = self.files.refresh_mounts() {
            tracing::warn!(error = %e, "reading the mount table");
            return;
        }
        let mut r = match resolve::resolve(p, &self.state.ids, &mut self.files) {
            Ok(r) => r,
            Err(errs) => {
                for e in errs {
                    tracing::error!("{e}; the previous file entries stay in force");
                }
                return;
            }
        };
        resolve::keep_unresolved(&plan.exec, &mut r);
        resolve::add_container_files(p, &self.state.ids, &self.roots, &mut r);
        if r == plan.exec {
            return;
        }
        match self.enforcer.sync_exec(r.entries.clone()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "updating exec selectors and allowlists");
                // Make the next tick try again from scratch.
                if let Some((_, plan)) = &mut self.current {
                    plan.exec = Resolved::default();
                }
                return;
            }
            Err(Stopped) => return,
        }
        tracing::info!("policy files changed on disk; exec selectors and allowlists updated");
        self.note_files(&r);
        if let Some((_, plan)) = &mut self.current {
            plan.exec = r;
        }
        // A replaced binary may already run in tasks that exec'd it before this tick.
        self.adopt().await;
        self.publish();
    }

    /// Tag running tasks that an exe or uid/gid selector matches (tasks that were
    /// there before the daemon or before the selector). Never the daemon itself.
    pub async fn adopt(&mut self) {
        let Some((_, plan)) = &self.current else {
            return;
        };
        let matches = adopt::scan(&plan.exec, &[std::process::id()]);
        let tasks: Vec<_> = matches
            .iter()
            .map(|m| (m.tgid, m.identity, ENROLL_SCAN))
            .collect();
        let Ok(results) = self.enforcer.enroll(tasks).await else {
            return;
        };
        for (m, r) in matches.iter().zip(results) {
            match r {
                Ok(true) => {
                    tracing::info!(tgid = m.tgid, identity = %self.state.label_of(m.identity), "adopted a running task");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(tgid = m.tgid, error = %e, "adopting a running task"),
            }
        }
    }

    /// Enroll every cgroup that matches a selector, and the tasks already in them.
    /// `prune` (on policy and container changes) also drops cgroups no identity
    /// selects any more.
    pub async fn sync_cgroups(&mut self, prune: bool) {
        let workloads = self
            .current
            .as_ref()
            .map(|(_, plan)| plan.workloads.clone())
            .unwrap_or_default();
        let containers = self.containers.clone();
        self.precreate(&workloads);
        let tree = cgroup::walk(&self.state.cgroup_root);
        let claims = plan::cgroups(&self.state.identities, &workloads, &tree, &containers);
        // A container of an identity with an exec allowlist is enrolled only once its
        // files are resolved inside it: its tasks' next exec is judged against them.
        let mut roots: BTreeMap<u32, BTreeMap<&str, u32>> = BTreeMap::new();
        let mut not_yet = BTreeSet::new();
        for c in &claims {
            let Some(container) = c.container else {
                continue;
            };
            if !workloads
                .0
                .iter()
                .any(|w| w.id == c.identity && w.exec_restricted)
            {
                continue;
            }
            match cgroup::procs(c.dir)
                .into_iter()
                .find(|pid| in_own_root(*pid))
            {
                Some(pid) => {
                    roots
                        .entry(c.identity)
                        .or_default()
                        .entry(container.id.as_str())
                        .or_insert(pid);
                }
                None => {
                    not_yet.insert(c.dir);
                }
            }
        }
        let roots: BTreeMap<u32, Vec<u32>> = roots
            .into_iter()
            .map(|(id, by_container)| (id, by_container.into_values().collect()))
            .collect();
        if roots != self.roots {
            self.roots = roots;
            self.refresh_files().await;
        }
        let mut want = BTreeMap::new();
        let mut tasks = Vec::new();
        // One share of the cgroup table per identity (and one for launch cgroups), so
        // that a workload making cgroups below its own never fills it for others. Its
        // cgroups past the share are not in the table: the tasks found in them are
        // still enrolled here, once a second.
        let share = cgroup_share(self.state.ids.len());
        let mut per_identity: BTreeMap<u32, usize> = BTreeMap::new();
        for c in claims.iter().filter(|c| !not_yet.contains(c.dir)) {
            tasks.extend(
                cgroup::procs(c.dir)
                    .into_iter()
                    .map(|t| (t, c.identity, ENROLL_SCAN)),
            );
            let n = per_identity.entry(c.identity).or_default();
            *n += 1;
            if *n > share {
                if *n == share + 1 && self.cgroups_over.insert(c.identity) {
                    tracing::warn!(
                        identity = %self.state.label_of(c.identity),
                        share,
                        "the identity selects more cgroups than its share of the cgroup table; the rest are enrolled by the once-a-second scan only"
                    );
                }
                continue;
            }
            let Ok(cgid) = cgroup::cgroup_id(c.dir) else {
                continue;
            };
            want.insert(cgid, c.identity);
        }
        self.cgroups_over
            .retain(|id| per_identity.get(id).is_some_and(|n| *n > share));
        let Ok(results) = self.enforcer.enroll(tasks.clone()).await else {
            return;
        };
        for ((tgid, _, _), r) in tasks.iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(tgid, error = %e, "enrolling a task found in an enrolled cgroup");
            }
        }
        if let Ok(Err(e)) = self.enforcer.sync_cgroups(want, prune).await {
            tracing::warn!(error = %e, "syncing enrolled cgroups");
        }
    }

    /// Remove the task-table entries of thread groups that are gone, and the empty
    /// launch cgroups of `zt-agent run`s that were killed before their clean-up (the
    /// next cgroup sync drops their entries).
    pub async fn sweep_tasks(&mut self) {
        let launch = self
            .state
            .cgroup_root
            .join(crate::policy::LAUNCH_CGROUP_ROOT.trim_start_matches('/'));
        for dir in cgroup::remove_orphan_runs(&launch) {
            tracing::info!(cgroup = %dir.display(), "removed the empty cgroup of a run whose launcher is gone");
        }
        match self.enforcer.sweep().await {
            Ok(Ok(0)) | Err(Stopped) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "removed task entries of exited processes"),
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping the task table"),
        }
    }

    /// Make the cgroup of each created container that a selector without an exec
    /// allowlist selects, where its runtime uses the cgroupfs driver, before the
    /// runtime does: the cgroup is then enrolled before the container's first task
    /// enters it, and the cgroup_attach_task hook tags that task as it enters. Remove
    /// the ones whose container went away unused.
    fn precreate(&mut self, workloads: &Workloads) {
        let containers = self.containers.clone();
        self.precreated.retain(|id, dir| {
            if containers.iter().any(|c| c.id == *id) {
                return true;
            }
            // Fails, harmlessly, if the runtime put anything there.
            let _ = std::fs::remove_dir(&*dir);
            false
        });
        if workloads.is_empty() {
            return;
        }
        for c in containers.iter().filter(|c| c.created) {
            let Some(rel) = &c.cgroup else {
                continue;
            };
            if self.precreated.contains_key(&c.id)
                || !workloads
                    .container(c, &containers)
                    .is_some_and(|w| !w.exec_restricted)
            {
                continue;
            }
            let dir = self.state.cgroup_root.join(rel.trim_start_matches('/'));
            if dir.exists() {
                continue;
            }
            let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
            // Made root's, mode 0755, as the runtime would; the leaf must be new.
            match cgroup::create_launch(&self.state.cgroup_root, &parts) {
                Ok(_) => {
                    tracing::info!(container = %c.name, cgroup = %rel, "made the cgroup of a created container, to enroll it before it starts");
                    self.precreated.insert(c.id.clone(), dir);
                }
                Err(e) => {
                    tracing::warn!(container = %c.name, error = %e, "making a created container's cgroup")
                }
            }
        }
    }

    /// Tell the other parts, and write `state.json`.
    pub fn publish(&self) {
        self.published.send_replace(Arc::new(self.state.clone()));
        if let Err(e) = self.state.write(&self.state_dir) {
            tracing::error!(error = %e, "writing state");
        }
    }

    /// Write `state.json` now; the first write must succeed.
    pub fn write_state(&self) -> Result<(), DaemonError> {
        self.published.send_replace(Arc::new(self.state.clone()));
        self.state.write(&self.state_dir)?;
        Ok(())
    }
}

/// The cgroup-table entries one identity may take: an equal part for every identity
/// that ever had an id, and one part kept for the launch cgroups of `zt-agent run`.
fn cgroup_share(holders: usize) -> usize {
    zt_agent_common::CGROUPS_CAPACITY as usize / (holders + 1).max(1)
}

/// Whether a task runs in a root of its own (a container whose runtime has set up its
/// root filesystem), not in the host's.
fn in_own_root(pid: u32) -> bool {
    let key = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let host = key(Path::new("/proc/1/root"));
    let own = key(Path::new(&format!("/proc/{pid}/root")));
    own.is_some() && own != host
}
