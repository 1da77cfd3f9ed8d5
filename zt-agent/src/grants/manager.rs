//! The grant manager: a daemon part that owns the grants, requests and decisions (in
//! the store and in memory), turns them with the policy's `ask` and `when` rules into
//! the grant tries' content, and has the enforcer install it. It answers the control
//! socket, raises requests from the kernel's `ask_required` denials and the resolver's
//! held lookups, remembers the latest denials for `why`, and sweeps every second:
//! grants that lapsed or whose task ended, requests that timed out, windows that
//! opened or closed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot, watch};
use zt_agent_common::{GRANT_KIND_GRANT, GRANT_KIND_WINDOW, PortRange};

use super::entries::{self, Allowance, Tries};
use super::model::{Grant, GrantState, Request, RequestState, Scope, now_ms};
use super::store::{Store, StoreError};
use super::view::{AskNames, GrantPolicy, IdentityNames, NameAllowance, NameView, Source};
use super::why::Why;
use crate::bus::{self, Body, Bus};
use crate::daemon::Enforcer;
use crate::dns::learned::boot_ns;
use crate::ebpf::maps::Tasks;
use crate::events::{GrantAction, GrantEvent};
use crate::metrics::GrantMetrics;
use crate::policy::{DynamicKind, port_ranges};

/// Settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a request waits for a decision.
    pub ask_timeout: Duration,
    /// How long the resolver holds a lookup under `ask`.
    pub ask_hold: Duration,
    pub webhook: Option<String>,
    /// How long ended grants and decided requests are kept (for `why` and listings).
    pub retention: Duration,
    /// The cgroup2 mount, where `--run` finds launch cgroups.
    pub cgroup_root: PathBuf,
}

/// What the resolver asks of the manager.
pub enum DnsCall {
    /// A lookup only an `ask` rule covers: raise (or join) a request and say whether
    /// it was approved within the hold.
    Ask {
        identity: u32,
        tgid: u32,
        name: String,
        rule: usize,
        reply: oneshot::Sender<bool>,
    },
    /// Addresses an allowed lookup answered under a grant or a window: install them
    /// for that scope until `deadline_ns`, then reply.
    Learn {
        identity: u32,
        addrs: Vec<IpAddr>,
        ranges: Vec<PortRange>,
        scope: Scope,
        source: Source,
        deadline_ns: u64,
        reply: oneshot::Sender<()>,
    },
}

/// One control request and where its answer goes.
pub struct ControlCall {
    pub request: super::control::Request,
    /// Who asks, as the control socket saw the peer.
    pub peer: String,
    pub reply: oneshot::Sender<super::control::Response>,
}

/// How the resolver and the control socket reach the manager.
#[derive(Clone)]
pub struct Handle {
    pub control: mpsc::Sender<ControlCall>,
    pub dns: mpsc::Sender<DnsCall>,
    pub view: watch::Receiver<Arc<NameView>>,
    pub ask_hold: Duration,
}

/// An address a lookup installed under a grant or window.
#[derive(Clone, Debug)]
pub(super) struct LearnedAddr {
    pub identity: u32,
    pub addr: IpAddr,
    pub ranges: Vec<PortRange>,
    pub scope: Scope,
    pub source: Source,
    pub deadline_ns: u64,
}

/// A pending request's clock and the lookups waiting on it.
#[derive(Default)]
pub(super) struct Waiting {
    pub deadline_ns: u64,
    pub waiters: Vec<oneshot::Sender<bool>>,
}

pub struct Manager {
    pub(super) store: Store,
    pub(super) settings: Settings,
    pub(super) policy: Arc<GrantPolicy>,
    pub(super) grants: Vec<Grant>,
    pub(super) requests: Vec<Request>,
    pub(super) waiting: BTreeMap<String, Waiting>,
    /// Decided requests whose held lookups are told after the next sync.
    pub(super) wakes: Vec<(String, bool)>,
    pub(super) learned: Vec<LearnedAddr>,
    /// Per (identity id, rule position): the end of the open window, and the boot
    /// deadline given for it (kept while the end stays the same).
    pub(super) windows: BTreeMap<(u32, usize), (jiff::Timestamp, u64)>,
    pub(super) installed: Option<Tries>,
    pub(super) enforcer: Enforcer,
    pub(super) tasks: Tasks,
    pub(super) bus: Bus,
    pub(super) metrics: GrantMetrics,
    pub(super) view: watch::Sender<Arc<NameView>>,
    pub(super) why: Why,
    pub(super) webhook: super::webhook::Webhook,
}

/// The channels a manager serves, made before it is spawned.
pub struct Inbox {
    control: mpsc::Receiver<ControlCall>,
    dns: mpsc::Receiver<DnsCall>,
    events: mpsc::Receiver<Arc<bus::Event>>,
    policy: watch::Receiver<Arc<GrantPolicy>>,
}

/// Parts a manager is made of.
pub struct Parts {
    pub settings: Settings,
    pub enforcer: Enforcer,
    /// A reader of the task table (the enforcer is its only writer).
    pub tasks: Tasks,
    pub bus: Bus,
    pub events: mpsc::Receiver<Arc<bus::Event>>,
    pub policy: watch::Receiver<Arc<GrantPolicy>>,
    pub metrics: GrantMetrics,
}

impl Manager {
    /// Open the store in `state_dir` and read back what it holds.
    ///
    /// # Errors
    /// The store cannot be opened or read.
    pub fn new(
        state_dir: &std::path::Path,
        parts: Parts,
    ) -> Result<(Self, Inbox, Handle), StoreError> {
        let store = Store::open(state_dir)?;
        let grants = store.grants()?;
        let requests = store.requests()?;
        let (control_tx, control) = mpsc::channel(64);
        let (dns_tx, dns) = mpsc::channel(1024);
        let (view, view_rx) = watch::channel(Arc::new(NameView::default()));
        let handle = Handle {
            control: control_tx,
            dns: dns_tx,
            view: view_rx,
            ask_hold: parts.settings.ask_hold,
        };
        let policy = parts.policy.borrow().clone();
        let webhook = super::webhook::Webhook::new(parts.settings.webhook.clone());
        let me = Self {
            store,
            policy,
            grants,
            requests,
            waiting: BTreeMap::new(),
            wakes: Vec::new(),
            learned: Vec::new(),
            windows: BTreeMap::new(),
            installed: None,
            enforcer: parts.enforcer,
            tasks: parts.tasks,
            bus: parts.bus,
            metrics: parts.metrics,
            view,
            why: Why::default(),
            webhook,
            settings: parts.settings,
        };
        let inbox = Inbox {
            control,
            dns,
            events: parts.events,
            policy: parts.policy,
        };
        Ok((me, inbox, handle))
    }

    /// Put what the store holds and the windows open now into the kernel: before the
    /// daemon says it is ready.
    pub async fn prepare(&mut self, inbox: &mut Inbox) {
        self.policy = inbox.policy.borrow_and_update().clone();
        self.restore();
        self.windows_now(Self::now_boot());
        self.sync().await;
    }

    /// Serve until every sender is gone (restartable: the supervisor calls it again
    /// after a failure).
    pub async fn run(&mut self, inbox: &mut Inbox) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(call) = inbox.control.recv() => {
                    let response = self.control(call.request, &call.peer);
                    self.sync().await;
                    let _ = call.reply.send(response);
                }
                Some(call) = inbox.dns.recv() => self.dns(call).await,
                Some(ev) = inbox.events.recv() => self.event(&ev),
                Ok(()) = inbox.policy.changed() => {
                    self.policy = inbox.policy.borrow_and_update().clone();
                    self.sync().await;
                }
                _ = tick.tick() => {
                    self.sweep();
                    self.sync().await;
                }
            }
            // Held lookups hear of decisions only once the kernel and the resolver's view
            // hold what they gave.
            for (id, approved) in std::mem::take(&mut self.wakes) {
                if let Some(w) = self.waiting.remove(&id) {
                    for tx in w.waiters {
                        let _ = tx.send(approved);
                    }
                }
            }
        }
    }

    async fn dns(&mut self, call: DnsCall) {
        match call {
            DnsCall::Ask {
                identity,
                tgid,
                name,
                rule,
                reply,
            } => self.dns_ask(identity, tgid, &name, rule, reply),
            DnsCall::Learn {
                identity,
                addrs,
                ranges,
                scope,
                source,
                deadline_ns,
                reply,
            } => {
                for addr in addrs {
                    let same = |l: &LearnedAddr| {
                        l.identity == identity
                            && l.addr == addr
                            && l.scope == scope
                            && l.source == source
                            && l.ranges == ranges
                    };
                    match self.learned.iter_mut().find(|l| same(l)) {
                        Some(l) => l.deadline_ns = l.deadline_ns.max(deadline_ns),
                        None => self.learned.push(LearnedAddr {
                            identity,
                            addr,
                            ranges: ranges.clone(),
                            scope: scope.clone(),
                            source: source.clone(),
                            deadline_ns,
                        }),
                    }
                }
                if !self.sync().await {
                    // Too many for the tries: give up this lookup's addresses.
                    self.learned.retain(|l| l.deadline_ns != deadline_ns);
                    self.sync().await;
                }
                let _ = reply.send(());
            }
        }
    }

    /// A bus event: denials go to `why`; an `ask_required` denial raises a request.
    fn event(&mut self, ev: &bus::Event) {
        self.why.record(ev, &self.policy);
        if let Body::Kernel(k) = &ev.body
            && k.reason == zt_agent_common::Reason::AskRequired
            && k.verdict == zt_agent_common::Verdict::Deny
        {
            self.kernel_ask(k);
        }
    }

    /// Publish a grant event.
    pub(super) fn announce(&self, e: GrantEvent) {
        self.bus.publish(bus::Event::now(Body::Grant(Box::new(e))));
    }

    pub(super) fn event_of(&self, action: GrantAction, reason: &'static str) -> GrantEvent {
        GrantEvent {
            action,
            reason,
            grant: None,
            request: None,
            who: None,
            why: None,
        }
    }

    pub(super) fn save_grant(&self, g: &Grant) {
        if let Err(e) = self.store.put_grant(g) {
            tracing::error!(error = %e, grant = %g.id, "writing a grant to the store");
        }
    }

    pub(super) fn save_request(&self, r: &Request) {
        if let Err(e) = self.store.put_request(r) {
            tracing::error!(error = %e, request = %r.id, "writing a request to the store");
        }
    }

    pub(super) fn log(
        &self,
        action: &str,
        grant: Option<&str>,
        request: Option<&str>,
        who: &str,
        why: &str,
    ) {
        if let Err(e) = self.store.log(action, grant, request, who, why) {
            tracing::error!(error = %e, "recording a decision in the store");
        }
    }

    /// Every allowance in force: `ask` markers and windows of the policy, active
    /// grants' networks, and the addresses lookups installed under them.
    pub(super) fn allowances(&self) -> Vec<Allowance> {
        let mut out = Vec::new();
        for ident in self.policy.by_name.values() {
            out.extend(entries::rule_allowances(ident.id, &ident.dynamic, |rule| {
                self.windows.get(&(ident.id, rule)).map_or(0, |(_, d)| *d)
            }));
        }
        for g in self.grants.iter().filter(|g| g.state == GrantState::Active) {
            let Some(ident) = self.policy.by_name.get(&g.identity) else {
                continue;
            };
            out.extend(grant_allowances(g, ident.id));
        }
        for l in &self.learned {
            out.push(Allowance {
                identity: l.identity,
                net: IpNet::from(l.addr),
                ranges: l.ranges.clone(),
                kind: match l.source {
                    Source::Grant(_) => GRANT_KIND_GRANT,
                    Source::Window(_) => GRANT_KIND_WINDOW,
                },
                scope: l.scope.kernel(),
                deadline_ns: l.deadline_ns,
            });
        }
        out
    }

    /// The resolver's view of the names in force.
    fn names(&self) -> NameView {
        let mut v = NameView::default();
        for ident in self.policy.by_name.values() {
            let mut names = IdentityNames::default();
            for rule in ident.dynamic.iter().filter(|r| !r.names.is_empty()) {
                match &rule.kind {
                    DynamicKind::Ask { .. } => names.asks.push(AskNames {
                        rule: rule.index,
                        names: rule.names.clone(),
                    }),
                    DynamicKind::Window(_) => {
                        if let Some((_, d)) = self.windows.get(&(ident.id, rule.index)) {
                            names.allowances.push(NameAllowance {
                                names: rule.names.clone(),
                                ranges: rule.ranges.clone(),
                                scope: Scope::Identity,
                                deadline_ns: *d,
                                source: Source::Window(rule.index),
                            });
                        }
                    }
                }
            }
            for g in self
                .grants
                .iter()
                .filter(|g| g.state == GrantState::Active && g.identity == ident.name)
            {
                let d = g.destinations();
                if d.names.is_empty() {
                    continue;
                }
                names.allowances.push(NameAllowance {
                    names: d.names,
                    ranges: port_ranges(&g.ports, g.protocol),
                    scope: g.scope.clone(),
                    deadline_ns: g.expires_boot_ns,
                    source: Source::Grant(g.id.clone()),
                });
            }
            if !names.allowances.is_empty() || !names.asks.is_empty() {
                v.by_id.insert(ident.id, names);
            }
        }
        v
    }

    /// Put what is in force into the kernel and the resolver's view. `false` when it
    /// does not fit the tries (the previous content stays).
    pub(super) async fn sync(&mut self) -> bool {
        let tries = match entries::build(&self.allowances()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "grant entries do not fit; the previous ones stay in force");
                return false;
            }
        };
        if self.installed.as_ref() != Some(&tries) {
            match self.enforcer.sync_grants(tries.clone()).await {
                Ok(Ok(())) => self.installed = Some(tries),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "installing grant entries");
                    self.installed = None;
                    return false;
                }
                Err(_) => return false,
            }
        }
        self.view.send_replace(Arc::new(self.names()));
        self.update_metrics();
        true
    }

    pub(super) fn update_metrics(&self) {
        self.metrics.active.reset();
        for ident in self.policy.by_name.values() {
            let n = self
                .grants
                .iter()
                .filter(|g| g.state == GrantState::Active && g.identity == ident.name)
                .count();
            self.metrics
                .active
                .with_label_values(&[ident.name.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let pending = self
            .requests
            .iter()
            .filter(|r| r.state == RequestState::Pending)
            .count();
        self.metrics
            .pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Check that the tries can hold `allowances` and the grant `g` besides.
    pub(super) fn fits(&self, extra: &[Allowance]) -> Result<(), entries::EntriesError> {
        let mut all = self.allowances();
        all.extend_from_slice(extra);
        entries::build(&all).map(|_| ())
    }

    pub(super) fn now_boot() -> u64 {
        boot_ns()
    }

    pub(super) fn ms_now() -> i64 {
        now_ms()
    }
}

/// A grant's networks as allowances of identity `id`.
pub(super) fn grant_allowances(g: &Grant, id: u32) -> Vec<Allowance> {
    let ranges = port_ranges(&g.ports, g.protocol);
    g.destinations()
        .nets
        .into_iter()
        .map(|net| Allowance {
            identity: id,
            net,
            ranges: ranges.clone(),
            kind: GRANT_KIND_GRANT,
            scope: g.scope.kernel(),
            deadline_ns: g.expires_boot_ns,
        })
        .collect()
}
