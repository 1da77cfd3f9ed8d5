//! The JSON line of an event: the same schema on stdout, in a file and for every
//! reader. Field names are a contract (see the README's Events section).

use std::time::Duration;

use serde::Serialize;
use zt_agent_common::{
    ENROLL_EXE, ENROLL_PRINCIPAL, ENROLL_QUARANTINE, EventKind, ip_protocol_name,
};

use super::decode::{addr_port, c_str, comm, dst};
use super::limit::Suppressed;
use super::provenance::Ancestor;
use super::{
    AnomalyEvent, AnomalyEvidence, DnsDetail, DnsEvent, FileEvent, GrantEvent, KernelEvent,
    SvidDetail, SvidEvent, TaskFacts,
};
use crate::bus::{Body, Event};
use crate::identity::files::FileId;
use crate::state::State;

/// One event line.
#[derive(Clone, Debug, Serialize)]
pub struct JsonEvent {
    pub time: String,
    /// Position in the audit trail (see `chain`); the sink numbers the lines.
    pub seq: u64,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<&'static str>,
    pub identity: String,
    pub spiffe_id: Option<String>,
    pub owner: Option<String>,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    pub tid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub cgroup: Option<String>,
    pub cgroup_id: u64,
    pub policy_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// Inbound events: the peer, as `ip:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// Bind events: the address and port bound, as `ip:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// Bind and inbound events: the local port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Exec events: the parent chain, parent first, up to 4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ancestors: Option<Vec<Ancestor>>,
    /// Exec events: the path passed to execve (`exe` is the file that runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Exec events: sha256 of the binary that runs (the interpreter, for a script).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Exec events: the binary as "major:minor:inode" in the kernel's numbering.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Exec events: the selector kind that gave the task its identity by this exec
    /// (`exe`, `uid_gid` or `quarantine`); absent when it had one before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrolled_by: Option<&'static str>,
    /// DNS events: the query and what the resolver did with it.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDetail>,
    /// SVID events: what was handed out or refused.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub svid: Option<SvidDetail>,
    /// Summaries (`kind` `suppressed`): the kind of the events left out ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed_kind: Option<&'static str>,
    /// ... and how many, within `interval_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// Grant events: what happened to which grant or request, by whom and why.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantDetail>,
    /// Anomaly events: how serious, what was done, and the figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<AnomalyEvidence>,
}

/// The fields of a `grant` event.
#[derive(Clone, Debug, Serialize)]
pub struct GrantDetail {
    /// issued, requested, approved, denied, timed_out, expired or revoked.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub who: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// `identity`, `run:RUN_ID` or `pid:PID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 3339: when the grant ends, or when the request times out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<String>>,
    /// The `ask` rule of a request: where it is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl JsonEvent {
    /// The line of `ev`, with the identity's owner and SPIFFE id and the policy hash
    /// from `state`.
    #[must_use]
    pub fn of(ev: &Event, state: &State) -> Self {
        match &ev.body {
            Body::Kernel(k) => kernel(&ev.time, k, state),
            Body::Dns(d) => dns(&ev.time, d, state),
            Body::File(f) => file(&ev.time, f, state),
            Body::Tamper(t) => {
                // No identity: the daemon's own enforcement was the target.
                let mut j = daemon(&ev.time, "tamper", "", t.what, state);
                j.detail = Some(t.detail.clone());
                j
            }
            Body::Grant(g) => grant(&ev.time, g, state),
            Body::Svid(v) => svid(&ev.time, v, state),
            Body::Anomaly(a) => anomaly(&ev.time, a, state),
        }
    }

    /// The summary line of events the limits left out.
    #[must_use]
    pub fn suppressed(time: &str, s: &Suppressed, interval: Duration, state: &State) -> Self {
        let mut j = daemon(time, "suppressed", &s.identity, s.reason, state);
        j.verdict = Some(s.verdict);
        j.suppressed_kind = Some(s.kind);
        j.suppressed = Some(s.count);
        j.interval_seconds = Some(interval.as_secs());
        j
    }
}

/// The `identity` of a kernel event: the identity's name, or a label for an id the
/// policy no longer has.
#[must_use]
pub fn identity_label(state: &State, id: u32) -> String {
    state
        .by_id(id)
        .map_or_else(|| state.label_of(id), |i| i.name.clone())
}

/// An event the daemon reports itself.
fn daemon(
    time: &str,
    kind: &'static str,
    identity: &str,
    reason: &'static str,
    state: &State,
) -> JsonEvent {
    let ident = state.identity(identity);
    JsonEvent {
        time: time.to_owned(),
        seq: 0,
        kind,
        verdict: None,
        identity: identity.to_owned(),
        spiffe_id: ident.map(|i| i.spiffe_id.clone()),
        owner: ident.map(|i| i.owner.clone()),
        pid: std::process::id(),
        ppid: None,
        tid: std::process::id(),
        uid: 0,
        comm: "zt-agent".to_owned(),
        exe: None,
        cgroup: None,
        cgroup_id: 0,
        policy_sha256: state.policy_sha256.clone(),
        dst: None,
        src: None,
        local: None,
        port: None,
        protocol: None,
        reason,
        socket_identity: None,
        detail: None,
        ancestors: None,
        path: None,
        sha256: None,
        file: None,
        enrolled_by: None,
        dns: None,
        grant: None,
        svid: None,
        suppressed_kind: None,
        suppressed: None,
        interval_seconds: None,
        severity: None,
        response: None,
        evidence: None,
    }
}

fn grant(time: &str, g: &GrantEvent, state: &State) -> JsonEvent {
    let identity = g
        .grant
        .as_ref()
        .map(|x| x.identity.as_str())
        .or_else(|| g.request.as_ref().map(|r| r.identity.as_str()))
        .unwrap_or_default();
    let mut j = daemon(time, "grant", identity, g.reason, state);
    let mut d = GrantDetail {
        action: g.action.as_str(),
        grant_id: None,
        request_id: None,
        who: g.who.clone(),
        why: g.why.clone(),
        scope: None,
        expires: None,
        to: None,
        ports: None,
        rule: None,
    };
    if let Some(r) = &g.request {
        d.request_id = Some(r.id.clone());
        d.scope = Some(r.scope.to_string());
        d.rule = Some(r.rule_at.clone());
        d.to = Some(vec![r.destination.clone()]);
        d.expires = Some(crate::grants::model::rfc3339(r.expires_ms));
        d.grant_id.clone_from(&r.grant);
        j.pid = r.pid;
        j.tid = r.pid;
        j.comm.clone_from(&r.comm);
        j.exe.clone_from(&r.exe);
        j.cgroup.clone_from(&r.cgroup);
        j.protocol = Some(match r.protocol.as_str() {
            "tcp" => "tcp",
            "udp" => "udp",
            "dns" => "dns",
            _ => "other",
        });
        if r.port != 0 {
            j.dst = Some(if r.destination.contains(':') {
                format!("[{}]:{}", r.destination, r.port)
            } else {
                format!("{}:{}", r.destination, r.port)
            });
        }
        j.ancestors = Some(
            r.ancestors
                .iter()
                .map(|a| Ancestor {
                    pid: a.pid,
                    exe: a.exe.clone(),
                })
                .collect(),
        );
    }
    if let Some(x) = &g.grant {
        d.grant_id = Some(x.id.clone());
        d.scope = Some(x.scope.to_string());
        d.expires = Some(crate::grants::model::rfc3339(x.expires_ms));
        d.to = Some(x.to.clone());
        d.ports = Some(
            x.ports
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect(),
        );
        j.protocol = Some(x.protocol.as_str());
        if d.why.is_none() {
            d.why = Some(x.reason.clone());
        }
    }
    j.grant = Some(d);
    j
}

/// The task fields of an event the daemon reports about task `tgid`.
fn about_task(j: &mut JsonEvent, tgid: u32, task: &TaskFacts) {
    j.pid = tgid;
    j.tid = tgid;
    j.comm.clone_from(&task.comm);
    j.exe.clone_from(&task.exe);
    j.cgroup.clone_from(&task.cgroup);
    j.uid = task.uid;
}

fn svid(time: &str, v: &SvidEvent, state: &State) -> JsonEvent {
    let mut j = daemon(time, "svid", &v.identity, v.reason, state);
    j.verdict = Some(v.verdict);
    about_task(&mut j, v.tgid, &v.task);
    j.svid = Some(v.detail.clone());
    j
}

fn anomaly(time: &str, a: &AnomalyEvent, state: &State) -> JsonEvent {
    let mut j = daemon(time, "anomaly", &a.identity, a.kind, state);
    j.dst.clone_from(&a.dst);
    j.protocol = a.protocol;
    j.detail = Some(a.detail.clone());
    j.severity = Some(a.severity);
    j.response = Some(a.response);
    j.evidence = Some(a.evidence.clone());
    j
}

fn file(time: &str, f: &FileEvent, state: &State) -> JsonEvent {
    let mut j = daemon(time, "file", &f.identity, f.reason, state);
    j.detail = Some(f.detail.clone());
    j
}

fn dns(time: &str, d: &DnsEvent, state: &State) -> JsonEvent {
    let mut j = daemon(time, "dns", &d.identity, d.reason, state);
    j.verdict = Some(d.verdict);
    j.protocol = Some(d.protocol);
    about_task(&mut j, d.tgid, &d.task);
    j.dns = Some(d.detail.clone());
    j
}

fn kernel(time: &str, k: &KernelEvent, state: &State) -> JsonEvent {
    let ev = &k.raw;
    let ident = state.by_id(ev.identity);
    let name = identity_label(state, ev.identity);
    let is_exec = k.kind == EventKind::Exec;
    let is_addr = matches!(k.kind, EventKind::Connect | EventKind::Sendmsg);
    let inbound = k.kind == EventKind::Inbound;
    let bind = k.kind == EventKind::Bind;
    let detail = match k.kind {
        EventKind::SockCreate => Some(format!(
            "family={} type={} protocol={}",
            ev.family, ev.detail, ev.protocol
        )),
        EventKind::Setsockopt => Some(format!("level={} optname={}", ev.protocol, ev.detail)),
        _ => None,
    };
    let enrolled_by = match ev.detail {
        _ if !is_exec => None,
        ENROLL_EXE => Some("exe"),
        ENROLL_PRINCIPAL => Some("uid_gid"),
        ENROLL_QUARANTINE => Some("quarantine"),
        _ => None,
    };
    JsonEvent {
        time: time.to_owned(),
        seq: 0,
        kind: k.kind.as_str(),
        verdict: Some(k.verdict.as_str()),
        identity: name,
        spiffe_id: ident.map(|i| i.spiffe_id.clone()),
        owner: ident.map(|i| i.owner.clone()),
        pid: ev.tgid,
        ppid: is_exec.then_some(ev.ancestors[0]),
        tid: ev.pid,
        uid: ev.uid,
        comm: comm(&ev.comm),
        exe: k.exe.clone(),
        cgroup: k.cgroup.clone(),
        cgroup_id: ev.cgroup_id,
        policy_sha256: state.policy_sha256.clone(),
        dst: if is_addr { dst(ev) } else { None },
        // The peer's port travels in `detail`.
        src: inbound
            .then(|| addr_port(ev, u16::try_from(ev.detail).unwrap_or(0)))
            .flatten(),
        local: if bind { dst(ev) } else { None },
        port: (inbound || bind).then_some(ev.port),
        protocol: (is_addr || inbound || bind).then(|| ip_protocol_name(ev.protocol)),
        reason: k.reason.as_str(),
        socket_identity: (ev.sock_identity != 0 && ev.sock_identity != ev.identity)
            .then(|| state.label_of(ev.sock_identity)),
        detail,
        ancestors: k.exec.as_ref().map(|e| e.ancestors.clone()),
        path: is_exec.then(|| c_str(&ev.path)),
        sha256: k.exec.as_ref().and_then(|e| e.sha256.clone()),
        file: is_exec.then(|| FileId::describe(&ev.file)),
        enrolled_by,
        dns: None,
        grant: None,
        svid: None,
        suppressed_kind: None,
        suppressed: None,
        interval_seconds: None,
        severity: None,
        response: None,
        evidence: None,
    }
}
