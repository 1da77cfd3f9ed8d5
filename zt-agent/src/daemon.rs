//! `zt-agent daemon`: load or adopt the kernel side, keep the policy and cgroup
//! enrollment current, stream events, serve metrics.
//!
//! The daemon is never in the verdict path. Killing it leaves the pinned programs
//! enforcing the last policy; a new daemon adopts them without detaching anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use zt_agent_common::{
    CGROUPS_CAPACITY, DNS_ALLOW_CAPACITY, ENROLL_SCAN, EXE_SELECTORS_CAPACITY, EXEC_ALLOW_CAPACITY,
    IDENTITY_QUARANTINE, POLICY_TRIE_CAPACITY, PRINCIPALS_CAPACITY, TASKS_CAPACITY, Verdict,
    exec_verdict_index,
};

use crate::cli::{DaemonArgs, DnsArgs};
use crate::dns::server::{self, DnsPolicy, Resolver};
use crate::ebpf::loader::{self, ExecGuard, KernelMaps, LoadError, PinDir};
use crate::ebpf::maps::{Cgroups, Counters, DnsMaps, ExecMaps, PolicyMaps, Tasks};
use crate::events::decode::JsonEvent;
use crate::events::provenance::Digests;
use crate::events::{decode, sink::Sink};
use crate::exit;
use crate::identity::adopt;
use crate::identity::files::FileId;
use crate::identity::resolve::{self, HostFiles, Note, Resolved};
use crate::metrics::Metrics;
use crate::policy::{self, Compiled, Mode};
use crate::state::{IdentityState, State};
use crate::sys::{cgroup, mounts};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("zt-agent daemon must run as root (it loads eBPF programs and writes cgroups)")]
    NotRoot,
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("policy {dir}:\n{errors}")]
    Policy { dir: String, errors: String },
    #[error("installing the policy into the kernel: {0}")]
    Install(#[source] aya::maps::MapError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("event sink {spec}: {source}")]
    Sink {
        spec: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "{pin_dir} holds attached programs but not the complete set this version pins; enforcement is left as it is. Run `zt-agent daemon --teardown` (which stops enforcement) and start again"
    )]
    Incomplete { pin_dir: String },
    #[error(
        "pinned enforcement at {pin_dir} cannot be adopted: {source}. Run `zt-agent daemon --teardown` (which stops enforcement) and start again"
    )]
    AdoptWithoutState {
        pin_dir: String,
        #[source]
        source: crate::state::StateError,
    },
}

impl DaemonError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::NotRoot => exit::NOPERM,
            Self::Policy { .. } => exit::CONFIG,
            Self::Mount(_) | Self::Load(_) | Self::Incomplete { .. } => exit::UNAVAILABLE,
            Self::AdoptWithoutState { .. } => exit::UNAVAILABLE,
            Self::Sink { .. } => exit::CONFIG,
            _ => exit::OSERR,
        }
    }
}

pub fn main(args: DaemonArgs) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zt-agent: tokio runtime: {e}");
            return exit::OSERR;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("zt-agent daemon: {}", exit::chain(&e));
            e.exit_code()
        }
    }
}

/// Maps the daemon keeps using after start-up (the ring buffer goes to the reader).
struct Control {
    tasks: Tasks,
    cgroups: Cgroups,
    policy: PolicyMaps,
    exec: ExecMaps,
    counters: Counters,
    /// The policy in force, re-resolved every second to follow replaced binaries.
    current: Option<policy::Policy>,
    files: HostFiles,
    resolved: Resolved,
    /// Notes already reported, so each is reported once while it holds.
    notes_seen: BTreeSet<Note>,
    /// Events the daemon reports itself go through the same sink as the kernel's.
    notices: mpsc::UnboundedSender<JsonEvent>,
    state: State,
    state_dir: PathBuf,
    policy_dir: PathBuf,
    /// Policy source hash last seen on disk, applied or not.
    seen_sha: Option<String>,
    rules: (usize, usize),
    /// Judges DNS by the policy in force.
    resolver: Arc<Resolver>,
}

async fn run(args: DaemonArgs) -> Result<(), DaemonError> {
    if !zt_agent_host::is_root() {
        return Err(DaemonError::NotRoot);
    }
    let pins = PinDir::new(&args.dirs.pin_dir);
    if args.teardown {
        pins.remove_all()?;
        State::remove(&args.dirs.state_dir);
        tracing::info!(pin_dir = %pins.root.display(), "removed all pinned programs, links and maps");
        return Ok(());
    }
    mounts::ensure_bpffs()?;
    let cg_root = mounts::cgroup2_mount()?;
    let metrics = Metrics::new();
    let initial = policy::load_dir(&args.policy);

    let (kmaps, adopted, loaded) = if pins.is_complete() {
        tracing::info!(pin_dir = %pins.root.display(), "adopting pinned enforcement");
        (KernelMaps::open_pinned(&pins)?, true, None)
    } else {
        if pins.has_links() {
            // Something is attached, but not the set this binary expects (a crash
            // mid-start, or another version). Removing it would drop enforcement and
            // every identity; leave that to the operator.
            return Err(DaemonError::Incomplete {
                pin_dir: pins.root.display().to_string(),
            });
        }
        if pins.exists() {
            // A half-finished start-up with nothing attached: start over.
            pins.remove_all()?;
        }
        // A fresh start needs a valid policy before anything is attached.
        if let Err(errs) = &initial {
            metrics.reloads.with_label_values(&["failure"]).inc();
            return Err(DaemonError::Policy {
                dir: args.policy.display().to_string(),
                errors: errs.to_string(),
            });
        }
        let (loaded, kmaps) = loader::load(&pins)?;
        (kmaps, false, Some(loaded))
    };
    let KernelMaps {
        tasks,
        cgroups,
        policy,
        exec,
        counters,
        shadow: _,
        dns,
        events,
    } = kmaps;
    let (notice_tx, mut notice_rx) = mpsc::unbounded_channel::<JsonEvent>();
    let resolver = start_resolver(&args.dns, dns, &metrics, notice_tx.clone())?;
    let mut state = if adopted {
        // Without the recorded ids the kernel's entries cannot be matched to names;
        // guessing would judge tasks by another identity's rules.
        State::read(&args.dirs.state_dir).map_err(|e| DaemonError::AdoptWithoutState {
            pin_dir: pins.root.display().to_string(),
            source: e,
        })?
    } else {
        State::default()
    };
    state.cgroup_root.clone_from(&cg_root);
    let mut ctl = Control {
        tasks,
        cgroups,
        policy,
        exec,
        counters,
        current: None,
        files: HostFiles::default(),
        resolved: Resolved::default(),
        notes_seen: BTreeSet::new(),
        notices: notice_tx,
        state,
        state_dir: args.dirs.state_dir.clone(),
        policy_dir: args.policy.clone(),
        seen_sha: None,
        rules: (0, 0),
        resolver: resolver.clone(),
    };

    match initial {
        Ok(p) => match ctl.apply(&p) {
            Ok(c) => {
                metrics.reloads.with_label_values(&["success"]).inc();
                metrics.set_policy(&c.sha256);
                tracing::info!(sha256 = %c.sha256, identities = c.identities.len(), adopted, "policy in force");
            }
            Err(e) => {
                metrics.reloads.with_label_values(&["failure"]).inc();
                if !adopted {
                    return Err(e);
                }
                tracing::error!(error = %e, "policy rejected; the pinned policy stays in force");
            }
        },
        Err(errs) => {
            // Only reachable when adopting: keep what the kernel enforces now.
            metrics.reloads.with_label_values(&["failure"]).inc();
            tracing::error!("policy rejected; the pinned policy stays in force:\n{errs}");
            metrics.set_policy(&ctl.state.policy_sha256);
        }
    }
    if let Some(loaded) = loaded {
        // Attach only once the policy is installed, so enrolled tasks see it from
        // their first call.
        loaded.attach(&cg_root)?;
        // Tasks that entered a selected cgroup before cgroup_attach_task was hooked,
        // then tasks selected by binary or user that were running first.
        ctl.sync_cgroups(false);
        ctl.adopt();
    }
    let exec_guard = ExecGuard::of_pins(&pins);
    tracing::info!(
        mechanism = exec_guard.as_str(),
        "exec guard: {}",
        match exec_guard {
            ExecGuard::Lsm => "BPF LSM bprm_check_security (disallowed exec fails with EPERM)",
            ExecGuard::TracepointKill =>
                "tp_btf sched_process_exec + SIGKILL (a disallowed exec kills the task before the new image runs)",
        }
    );
    metrics
        .exec_guard
        .with_label_values(&[exec_guard.as_str()])
        .set(1);
    ctl.state.exec_guard = Some(exec_guard.as_str().to_owned());
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| {
            DaemonError::Io(std::io::Error::new(
                e.kind(),
                format!("metrics address {}: {e}", args.metrics_addr),
            ))
        })?;
    ctl.state.metrics_addr = listener.local_addr().ok().map(|a| a.to_string());
    ctl.state.daemon_pid = Some(std::process::id());
    ctl.state.dns_port = Some(resolver.port());
    ctl.state.write(&ctl.state_dir)?;
    metrics.reloads.with_label_values(&["success"]).inc_by(0);

    let mut sink = Sink::open(&args.events).map_err(|source| DaemonError::Sink {
        spec: args.events.clone(),
        source,
    })?;
    let ctl = Arc::new(Mutex::new(ctl));
    let metrics = Arc::new(Mutex::new(metrics));

    // Events: ring buffer -> JSON lines.
    // SAFETY: the ring buffer owns its descriptor and outlives the registration: both
    // move into the reader task together.
    let mut ring = unsafe { AsyncFd::register(events) }.map_err(|e| DaemonError::Io(e.into()))?;
    let ev_ctl = ctl.clone();
    let ev_metrics = metrics.clone();
    let events_task = tokio::spawn(async move {
        let mut digests = Digests::default();
        let mut write = |j: &JsonEvent| {
            let ok = sink.write(j).is_ok();
            if let Ok(m) = ev_metrics.lock() {
                if ok {
                    m.events
                        .with_label_values(&[j.kind, j.verdict.unwrap_or("none")])
                        .inc();
                } else {
                    m.sink_error();
                }
            }
        };
        loop {
            let mut guard = tokio::select! {
                g = ring.readable_mut() => match g {
                    Ok(g) => g,
                    Err(_) => break,
                },
                Some(j) = notice_rx.recv() => {
                    write(&j);
                    continue;
                }
            };
            let rb = guard.get_inner_mut();
            let mut batch = Vec::new();
            while let Some(item) = rb.next() {
                if let Some(ev) = decode::parse(&item) {
                    batch.push(ev);
                }
            }
            guard.clear_ready();
            if batch.is_empty() {
                continue;
            }
            let state = ev_ctl.lock().map(|c| c.state.clone()).unwrap_or_default();
            for ev in batch {
                write(&decode::enrich(&ev, &state, &mut digests));
            }
        }
    });

    // Metrics.
    let refresh_ctl = ctl.clone();
    let refresh_metrics = metrics.clone();
    let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let (Ok(c), Ok(mut m)) = (refresh_ctl.lock(), refresh_metrics.lock()) else {
            return;
        };
        c.refresh_metrics(&mut m);
    });
    let metrics_task = tokio::spawn(crate::metrics::serve(listener, metrics.clone(), refresh));

    // Reload on SIGHUP and on file change; rescan cgroups.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tracing::info!("zt-agent daemon running");
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&ctl, &metrics, true),
            _ = tick.tick() => {
                reload(&ctl, &metrics, false);
                if let Ok(mut c) = ctl.lock() {
                    c.sync_cgroups(false);
                    c.refresh_files();
                }
                resolver.tick();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        if metrics_task.is_finished() {
            return Err(DaemonError::Io(std::io::Error::other(format!(
                "metrics server on {} stopped (address in use?)",
                args.metrics_addr
            ))));
        }
    }
    events_task.abort();
    // Enforcement stays pinned: stopping the daemon never opens the gates.
    tracing::info!(
        "zt-agent daemon stopped; enforcement stays in place (use --teardown to remove it)"
    );
    Ok(())
}

/// Bind the resolver and point the kernel's DNS redirection at it. Done before the
/// programs attach, so that the first redirected query finds it listening.
fn start_resolver(
    args: &DnsArgs,
    mut maps: DnsMaps,
    metrics: &Metrics,
    events: mpsc::UnboundedSender<JsonEvent>,
) -> Result<Arc<Resolver>, DaemonError> {
    let listeners = server::bind(args.dns_port)?;
    let port = listeners.port;
    let mut upstreams = if args.dns_upstreams.is_empty() {
        server::host_upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        args.dns_upstreams.clone()
    };
    // The resolver itself is no upstream: a query would loop.
    upstreams.retain(|u| !(u.ip().is_loopback() && u.port() == port));
    if upstreams.is_empty() {
        tracing::warn!(
            "no upstream DNS resolver (none in /etc/resolv.conf, none given with --dns-upstream): enrolled tasks' allowed names get SERVFAIL"
        );
    }
    tracing::info!(
        port,
        upstreams = ?upstreams,
        max_ttl = args.dns_max_ttl,
        "DNS resolver for enrolled tasks on 127.0.0.1 and ::1"
    );
    let settings = server::Settings {
        port,
        upstreams,
        max_ttl: args.dns_max_ttl,
        grace: Duration::from_secs(args.dns_grace),
        per_identity: args.dns_max_addresses,
        cache_entries: args.dns_cache_entries,
        timeout: Duration::from_secs(2),
    };
    maps.set_port(port).map_err(DaemonError::Install)?;
    let DnsMaps {
        config: _,
        clients,
        allow,
    } = maps;
    let resolver = Arc::new(Resolver::new(
        settings,
        allow,
        clients,
        metrics.dns.clone(),
        events,
    ));
    resolver.serve(listeners)?;
    Ok(resolver)
}

fn reload(ctl: &Arc<Mutex<Control>>, metrics: &Arc<Mutex<Metrics>>, forced: bool) {
    let Ok(mut c) = ctl.lock() else { return };
    // Polling hashes the raw files; only a change (or SIGHUP) parses them.
    let digest = policy::source_digest(&c.policy_dir);
    if !forced && c.seen_sha.as_deref() == Some(digest.as_str()) {
        return;
    }
    c.seen_sha = Some(digest.clone());
    if !forced && digest == c.state.policy_sha256 {
        return;
    }
    let result = match policy::load_dir(&c.policy_dir) {
        Ok(p) => c.apply(&p).map_err(|e| e.to_string()),
        Err(errs) => Err(errs.to_string()),
    };
    let Ok(m) = metrics.lock() else { return };
    match result {
        Ok(compiled) => {
            m.reloads.with_label_values(&["success"]).inc();
            m.set_policy(&compiled.sha256);
            tracing::info!(sha256 = %compiled.sha256, "policy reloaded");
        }
        Err(e) => {
            m.reloads.with_label_values(&["failure"]).inc();
            tracing::error!("policy reload rejected; the running policy stays in force:\n{e}");
        }
    }
}

impl Control {
    /// Compile and install a policy: all or nothing. On any error the running policy
    /// and the state stay as they were.
    fn apply(&mut self, p: &policy::Policy) -> Result<Compiled, DaemonError> {
        let ids = policy::assign_ids(&self.state.ids, p);
        let compiled = policy::compile(p, &ids).map_err(|e| DaemonError::Policy {
            dir: self.policy_dir.display().to_string(),
            errors: e.to_string(),
        })?;
        if let Err(e) = self.files.refresh_mounts() {
            tracing::warn!(error = %e, "reading the mount table");
        }
        let resolved =
            resolve::resolve(p, &ids, &mut self.files).map_err(|errs| DaemonError::Policy {
                dir: self.policy_dir.display().to_string(),
                errors: errs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            })?;
        // All or nothing: on failure put the previous exec entries back.
        if let Err(e) = self.exec.sync(&resolved) {
            let _ = self.exec.sync(&self.resolved);
            return Err(DaemonError::Install(e));
        }
        if let Err(e) = self.policy.install(&compiled) {
            let _ = self.exec.sync(&self.resolved);
            return Err(DaemonError::Install(e));
        }
        self.state.ids = ids;
        self.state.identities = compiled
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
            })
            .collect();
        self.state.policy_sha256.clone_from(&compiled.sha256);
        self.seen_sha = Some(compiled.sha256.clone());
        self.rules = (compiled.v4.len(), compiled.v6.len());
        self.current = Some(p.clone());
        self.set_resolved(resolved);
        self.resolver
            .set_policy(DnsPolicy::from_compiled(&compiled), &self.state);
        self.sync_cgroups(true);
        // After the cgroups: a task both places select takes its cgroup's identity.
        self.adopt();
        if let Err(e) = self.state.write(&self.state_dir) {
            tracing::error!(error = %e, "writing state");
        }
        Ok(compiled)
    }

    /// Record a resolution: the path names of its files, and its notes as events
    /// (each once while it holds).
    fn set_resolved(&mut self, r: Resolved) {
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
            let _ = self.notices.send(JsonEvent::daemon(
                "file",
                &n.identity,
                reason,
                format!("{}: {} `{}`: {}", n.location, n.field, n.path, n.message),
                &self.state,
            ));
        }
        self.notes_seen = now;
        self.resolved = r;
    }

    /// Follow the files the policy names: a replaced or rewritten binary gets new
    /// entries (and a digest check) within a second.
    fn refresh_files(&mut self) {
        let Some(p) = self.current.clone() else {
            return;
        };
        if let Err(e) = self.files.refresh_mounts() {
            tracing::warn!(error = %e, "reading the mount table");
            return;
        }
        let mut r = match resolve::resolve(&p, &self.state.ids, &mut self.files) {
            Ok(r) => r,
            Err(errs) => {
                for e in errs {
                    tracing::error!("{e}; the previous file entries stay in force");
                }
                return;
            }
        };
        resolve::keep_unresolved(&self.resolved, &mut r);
        if r == self.resolved {
            return;
        }
        if let Err(e) = self.exec.sync(&r) {
            tracing::error!(error = %e, "updating exec selectors and allowlists");
            // Make the next tick try again from scratch.
            self.resolved = Resolved::default();
            return;
        }
        tracing::info!("policy files changed on disk; exec selectors and allowlists updated");
        self.set_resolved(r);
        // A replaced binary may already run in tasks that exec'd it before this tick.
        self.adopt();
        if let Err(e) = self.state.write(&self.state_dir) {
            tracing::error!(error = %e, "writing state");
        }
    }

    /// Tag running tasks that an exe or uid/gid selector matches (tasks that were
    /// there before the daemon or before the selector). Never the daemon itself.
    fn adopt(&mut self) {
        let me = std::process::id();
        for m in adopt::scan(&self.resolved, &[me]) {
            match self.tasks.enroll_if_absent(m.tgid, m.identity, ENROLL_SCAN) {
                Ok(true) if !Path::new(&format!("/proc/{}", m.tgid)).exists() => {
                    let _ = self.tasks.remove(m.tgid);
                }
                Ok(true) => {
                    tracing::info!(tgid = m.tgid, identity = %self.state.label_of(m.identity), "adopted a running task");
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(tgid = m.tgid, error = %e, "adopting a running task"),
            }
        }
    }

    /// Enroll every cgroup that matches a selector, and the tasks already in them.
    /// `prune` (on policy changes) also drops cgroups no identity selects any more.
    fn sync_cgroups(&mut self, prune: bool) {
        let root = self.state.cgroup_root.clone();
        // Explicit selectors plus each identity's launch cgroup.
        let globs: Vec<(u32, Vec<String>)> = self
            .state
            .identities
            .iter()
            .map(|i| {
                let mut g = i.cgroup_globs.clone();
                g.push(policy::launch_cgroup_glob(&i.name));
                (i.id, g)
            })
            .collect();
        let mut want = BTreeMap::new();
        for (rel, dir) in cgroup::walk(&root) {
            let Some(id) = globs
                .iter()
                .find(|(_, globs)| globs.iter().any(|g| policy::cgroup_glob_matches(g, &rel)))
                .map(|(id, _)| *id)
            else {
                continue;
            };
            let Ok(cgid) = cgroup::cgroup_id(&dir) else {
                continue;
            };
            want.insert(cgid, id);
            for tgid in cgroup::procs(&dir) {
                match self.tasks.enroll_if_absent(tgid, id, ENROLL_SCAN) {
                    // The task may have exited between the read and the insert, after
                    // its exit hook ran: never leave an entry a later pid could inherit.
                    Ok(true) if !Path::new(&format!("/proc/{tgid}")).exists() => {
                        let _ = self.tasks.remove(tgid);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(tgid, error = %e, "enrolling a task found in an enrolled cgroup");
                    }
                }
            }
        }
        if let Err(e) = self.cgroups.sync(&want, prune) {
            tracing::warn!(error = %e, "syncing enrolled cgroups");
        }
    }

    fn refresh_metrics(&self, m: &mut Metrics) {
        self.resolver.update_gauges();
        let names: BTreeMap<u32, String> = self
            .state
            .ids
            .iter()
            .map(|(n, i)| (*i, n.clone()))
            .collect();
        m.update_verdicts(&names, |idx| {
            self.counters
                .verdicts
                .get(&idx, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        });
        m.update_errors(&self.counters.errors());
        let mut exec_names = names.clone();
        exec_names.insert(IDENTITY_QUARANTINE, policy::QUARANTINE_NAME.to_owned());
        m.update_exec(&exec_names, |id, v: Verdict| {
            self.counters
                .exec_verdicts
                .get(&exec_verdict_index(id, v as u8), 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        });
        let tasks = self.tasks.all();
        m.identity_tasks.reset();
        for (_, t) in &tasks {
            let name = self.state.label_of(t.identity);
            m.identity_tasks.with_label_values(&[name.as_str()]).inc();
        }
        let (exe, principals, allow) = self.exec.counts();
        for (map, n, cap) in [
            ("tasks", tasks.len(), TASKS_CAPACITY),
            ("cgroups", self.cgroups.len(), CGROUPS_CAPACITY),
            ("policy_v4", self.rules.0, POLICY_TRIE_CAPACITY),
            ("policy_v6", self.rules.1, POLICY_TRIE_CAPACITY),
            ("exe_selectors", exe, EXE_SELECTORS_CAPACITY),
            ("principals", principals, PRINCIPALS_CAPACITY),
            ("exec_allow", allow, EXEC_ALLOW_CAPACITY),
            ("dns_allow", self.resolver.installed(), DNS_ALLOW_CAPACITY),
        ] {
            m.map_entries
                .with_label_values(&[map])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
            m.map_capacity.with_label_values(&[map]).set(i64::from(cap));
        }
    }
}
