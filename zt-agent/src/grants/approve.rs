//! Requests and their decisions: a task's connect, send or lookup that only an `ask`
//! rule covers becomes a request (one per identity, rule and destination while it is
//! pending); a human approves it, which gives a grant scoped to that task for at most
//! the rule's `maxGrant`, or denies it; no decision ever changes the policy.

use std::net::IpAddr;

use serde_json::json;
use tokio::sync::oneshot;

use super::control::{ErrorKind, NewGrant, Response};
use super::manager::{Manager, Waiting, grant_allowances};
use super::model::{
    Ancestor, Request, RequestState, Scope, TaskScope, cgroup_path, new_id, rfc3339,
};
use crate::events::{GrantAction, KernelEvent};
use crate::policy::{self, format_duration, parse_duration};

/// A request as `zt-agent requests --json` shows it.
#[must_use]
pub fn request_json(r: &Request) -> serde_json::Value {
    json!({
        "id": r.id,
        "identity": r.identity,
        "owner": r.owner,
        "rule": r.rule_at,
        "destination": r.destination,
        "port": r.port,
        "protocol": r.protocol,
        "pid": r.pid,
        "comm": r.comm,
        "exe": r.exe,
        "cgroup": r.cgroup,
        "ancestors": r.ancestors,
        "scope": r.scope.to_string(),
        "created": rfc3339(r.created_ms),
        "expires": rfc3339(r.expires_ms),
        "state": r.state.as_str(),
        "decided_by": r.decided_by,
        "reason": r.decision_reason,
        "grant": r.grant,
    })
}

/// What a request is raised from.
pub(super) struct Asked {
    pub identity: u32,
    pub rule: usize,
    pub destination: String,
    pub port: u16,
    pub protocol: &'static str,
    pub tgid: u32,
    /// The task's cgroup id as the kernel reported it, if it did.
    pub cgroup_id: Option<u64>,
    /// What the event pump saw of the task, if it reported it (the task may be gone).
    pub seen: Option<(String, Option<String>, Option<String>)>,
    pub ancestors: Vec<Ancestor>,
}

impl Manager {
    /// A kernel denial with reason `ask_required`.
    pub(super) fn kernel_ask(&mut self, k: &KernelEvent) {
        let ev = &k.raw;
        let Some(ident) = self.policy.by_id(ev.identity) else {
            return;
        };
        let addr = match ev.family {
            2 => IpAddr::from([ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]]),
            10 => IpAddr::from(ev.addr),
            _ => return,
        };
        let proto_mask = match ev.protocol {
            6 => zt_agent_common::PROTO_MASK_TCP,
            17 => zt_agent_common::PROTO_MASK_UDP,
            _ => return,
        };
        // The first `ask` rule that covers it: the one the kernel's marker came from.
        let Some((rule, _)) = ident.asks().find(|(r, _)| {
            r.nets.iter().any(|n| n.contains(&addr))
                && r.ranges
                    .iter()
                    .any(|x| x.proto_mask & proto_mask != 0 && x.lo <= ev.port && ev.port <= x.hi)
        }) else {
            return;
        };
        let asked = Asked {
            identity: ev.identity,
            rule: rule.index,
            destination: addr.to_string(),
            port: ev.port,
            protocol: zt_agent_common::ip_protocol_name(ev.protocol),
            tgid: ev.tgid,
            cgroup_id: Some(ev.cgroup_id),
            seen: Some((
                crate::events::decode::comm(&ev.comm),
                k.exe.clone(),
                k.cgroup.clone(),
            )),
            ancestors: Vec::new(),
        };
        self.raise(asked);
    }

    /// A lookup the resolver holds: join or raise the request; `reply` says whether it
    /// was approved.
    pub(super) fn dns_ask(
        &mut self,
        identity: u32,
        tgid: u32,
        name: &str,
        rule: usize,
        reply: oneshot::Sender<bool>,
    ) {
        let asked = Asked {
            identity,
            rule,
            destination: name.to_owned(),
            port: 0,
            protocol: "dns",
            tgid,
            cgroup_id: None,
            seen: None,
            ancestors: Vec::new(),
        };
        match self.raise(asked) {
            Some(id) => self.waiting.entry(id).or_default().waiters.push(reply),
            None => {
                let _ = reply.send(false);
            }
        }
    }

    /// Raise a request, or find the pending one for the same identity, rule and
    /// destination. Returns its id.
    pub(super) fn raise(&mut self, a: Asked) -> Option<String> {
        let ident = self.policy.by_id(a.identity)?.clone();
        let (rule, _) = ident.asks().find(|(r, _)| r.index == a.rule)?;
        let rule_at = rule.location.to_string();
        if let Some(r) = self.requests.iter().find(|r| {
            r.state == RequestState::Pending
                && r.identity == ident.name
                && r.rule == a.rule
                && r.destination == a.destination
        }) {
            return Some(r.id.clone());
        }
        let mut task = crate::events::TaskFacts::read(a.tgid);
        let mut cgroup = cgroup_path(a.tgid).or(task.cgroup.clone());
        if let Some((comm, exe, cg)) = a.seen {
            // What the event pump read while the task was there beats a later look.
            task.comm = comm;
            task.exe = exe.or(task.exe);
            cgroup = cg.or(cgroup);
        }
        let scope = task_scope(&ident.name, a.tgid, a.cgroup_id, cgroup.as_deref());
        let now = Self::ms_now();
        let timeout_ms = i64::try_from(self.settings.ask_timeout.as_millis()).unwrap_or(i64::MAX);
        let ancestors = if a.ancestors.is_empty() {
            ancestry(a.tgid)
        } else {
            a.ancestors
        };
        let r = Request {
            id: new_id("r"),
            identity: ident.name.clone(),
            owner: ident.owner.clone(),
            rule: a.rule,
            rule_at,
            destination: a.destination,
            port: a.port,
            protocol: a.protocol.to_owned(),
            pid: a.tgid,
            comm: task.comm,
            exe: task.exe,
            cgroup,
            ancestors,
            scope,
            created_ms: now,
            expires_ms: now.saturating_add(timeout_ms),
            state: RequestState::Pending,
            decided_by: None,
            decision_reason: None,
            decided_ms: None,
            grant: None,
        };
        let deadline_ns = Self::now_boot().saturating_add(
            u64::try_from(self.settings.ask_timeout.as_nanos()).unwrap_or(u64::MAX),
        );
        self.waiting.insert(
            r.id.clone(),
            Waiting {
                deadline_ns,
                waiters: Vec::new(),
            },
        );
        self.save_request(&r);
        self.log("requested", None, Some(&r.id), &r.identity, "ask_required");
        let mut e = self.event_of(GrantAction::Requested, "ask_required");
        e.request = Some(r.clone());
        self.announce(e);
        self.webhook.post(request_json(&r));
        tracing::info!(request = %r.id, identity = %r.identity, destination = %r.destination, pid = r.pid, "access requested");
        let id = r.id.clone();
        self.requests.push(r);
        self.update_metrics();
        Some(id)
    }

    /// The pending request `id`, or why it cannot be decided.
    fn pending(&self, id: &str) -> Result<usize, Response> {
        let Some(i) = self.requests.iter().position(|r| r.id == id) else {
            return Err(Response::err(
                ErrorKind::UnknownRequest,
                format!("unknown request `{id}`"),
            ));
        };
        let r = &self.requests[i];
        if r.state != RequestState::Pending {
            return Err(Response::err(
                ErrorKind::AlreadyDecided,
                format!(
                    "request `{id}` is {} already{}",
                    r.state.as_str(),
                    r.decided_by
                        .as_deref()
                        .map(|b| format!(" (by {b})"))
                        .unwrap_or_default()
                ),
            ));
        }
        if r.expires_ms <= Self::ms_now() {
            return Err(Response::err(
                ErrorKind::AlreadyDecided,
                format!("request `{id}` has expired"),
            ));
        }
        Ok(i)
    }

    /// `zt-agent approve`: a grant for the request's destination on the rule's ports,
    /// scoped to the requesting task, for `--for` or the rule's `maxGrant`.
    pub(super) fn approve(
        &mut self,
        id: &str,
        duration: Option<&str>,
        reason: Option<&str>,
        peer: &str,
    ) -> Response {
        let i = match self.pending(id) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let r = self.requests[i].clone();
        let Some(ident) = self.policy.by_name.get(&r.identity).cloned() else {
            return Response::err(
                ErrorKind::UnknownIdentity,
                format!("identity `{}` is no longer in the policy", r.identity),
            );
        };
        let Some((rule, max)) = ident
            .asks()
            .find(|(x, _)| x.index == r.rule)
            .map(|(x, m)| (x.clone(), m))
        else {
            return Response::err(
                ErrorKind::UnknownRequest,
                format!("the `ask` rule of request `{id}` is no longer in the policy"),
            );
        };
        let secs = match duration.map(parse_duration) {
            None => max,
            Some(Ok(s)) => s,
            Some(Err(e)) => return Response::err(ErrorKind::BadInput, format!("--for: {e}")),
        };
        if secs > max {
            return Response::err(
                ErrorKind::OverCeiling,
                format!(
                    "--for {}: longer than the rule's maxGrant {} ({})",
                    format_duration(secs),
                    format_duration(max),
                    rule.location
                ),
            );
        }
        let why = reason.map_or_else(|| format!("approved request {id}"), str::to_owned);
        let g = self.new_grant(NewGrant {
            identity: r.identity.clone(),
            to: vec![r.destination.clone()],
            ports: rule.ports.clone(),
            protocol: rule.protocol,
            scope: r.scope.clone(),
            secs,
            reason: why.clone(),
            who: peer.to_owned(),
            request: Some(r.id.clone()),
        });
        if let Err(e) = self.fits(&grant_allowances(&g, ident.id)) {
            return Response::err(ErrorKind::TooMany, e.to_string());
        }
        let grant_id = g.id.clone();
        self.decide(
            i,
            RequestState::Approved,
            peer,
            &why,
            Some(grant_id.clone()),
        );
        self.issue(g);
        self.wake(id, true);
        Response::ok(json!({ "request": id, "grant": grant_id }))
    }

    /// `zt-agent deny`.
    pub(super) fn deny(&mut self, id: &str, reason: Option<&str>, peer: &str) -> Response {
        let i = match self.pending(id) {
            Ok(i) => i,
            Err(r) => return r,
        };
        let why = reason.unwrap_or("denied").to_owned();
        self.decide(i, RequestState::Denied, peer, &why, None);
        self.wake(id, false);
        Response::ok(json!({ "request": id, "state": "denied" }))
    }

    /// Record a decision on request `i` and announce it.
    pub(super) fn decide(
        &mut self,
        i: usize,
        state: RequestState,
        who: &str,
        why: &str,
        grant: Option<String>,
    ) {
        let r = &mut self.requests[i];
        r.state = state;
        r.decided_by = Some(who.to_owned());
        r.decision_reason = Some(why.to_owned());
        r.decided_ms = Some(Self::ms_now());
        r.grant = grant;
        let r = r.clone();
        self.save_request(&r);
        self.log(state.as_str(), r.grant.as_deref(), Some(&r.id), who, why);
        let action = match state {
            RequestState::Approved => GrantAction::Approved,
            RequestState::Denied => GrantAction::Denied,
            RequestState::TimedOut | RequestState::Pending => GrantAction::TimedOut,
        };
        let mut e = self.event_of(action, state.as_str());
        e.who = Some(who.to_owned());
        e.why = Some(why.to_owned());
        e.request = Some(r.clone());
        self.announce(e);
        self.metrics
            .requests
            .with_label_values(&[r.identity.as_str(), state.as_str()])
            .inc();
        self.update_metrics();
        tracing::info!(request = %r.id, state = state.as_str(), who, "request decided");
    }

    /// Tell the lookups held on request `id` how it went (after the next sync).
    pub(super) fn wake(&mut self, id: &str, approved: bool) {
        self.wakes.push((id.to_owned(), approved));
    }
}

/// The scope a grant born from a task's request gets: its `zt-agent run` launch
/// cgroup when it runs in one of the identity's, else its thread group.
fn task_scope(identity: &str, tgid: u32, cgroup_id: Option<u64>, cgroup: Option<&str>) -> Scope {
    let prefix = format!("{}/{identity}/", policy::LAUNCH_CGROUP_ROOT);
    if let Some(run_id) = cgroup
        .and_then(|c| c.strip_prefix(&prefix))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
    {
        let task = TaskScope::read(tgid);
        if let Some(cgroup_id) = cgroup_id.or(task.cgroup_id) {
            return Scope::Run {
                run_id: run_id.to_owned(),
                cgroup_id,
            };
        }
    }
    Scope::Pid {
        pid: tgid,
        // A task already gone gets a start no task has: the grant matches nothing.
        start_ticks: TaskScope::read(tgid).start_ticks.unwrap_or(u64::MAX),
    }
}

/// The parent chain of a task, parent first, up to four, while they live.
fn ancestry(tgid: u32) -> Vec<Ancestor> {
    let mut out = Vec::new();
    let mut pid = tgid;
    for _ in 0..4 {
        let Some(ppid) = zt_agent_host::proc::Status::of(pid).and_then(|s| s.first::<u32>("PPid"))
        else {
            break;
        };
        if ppid == 0 {
            break;
        }
        out.push(Ancestor {
            pid: ppid,
            exe: zt_agent_host::proc::exe(ppid),
        });
        pid = ppid;
    }
    out
}
