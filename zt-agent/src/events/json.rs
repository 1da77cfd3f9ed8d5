//! The JSON line of an event: the same schema on stdout, in a file and for every
//! reader. Field names are a contract (see the README's Events section).

use std::time::Duration;

use serde::Serialize;
use zt_agent_common::{
    ENROLL_EXE, ENROLL_PRINCIPAL, ENROLL_QUARANTINE, EventKind, ip_protocol_name,
};

use super::decode::{c_str, comm, dst};
use super::limit::Suppressed;
use super::provenance::Ancestor;
use super::{DnsDetail, DnsEvent, FileEvent, KernelEvent};
use crate::bus::{Body, Event};
use crate::identity::files::FileId;
use crate::state::State;

/// One event line.
#[derive(Clone, Debug, Serialize)]
pub struct JsonEvent {
    pub time: String,
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
    /// Summaries (`kind` `suppressed`): the kind of the events left out ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed_kind: Option<&'static str>,
    /// ... and how many, within `interval_seconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
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
        suppressed_kind: None,
        suppressed: None,
        interval_seconds: None,
    }
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
    j.pid = d.tgid;
    j.tid = d.tgid;
    j.comm.clone_from(&d.task.comm);
    j.exe.clone_from(&d.task.exe);
    j.cgroup.clone_from(&d.task.cgroup);
    j.uid = d.task.uid;
    j.dns = Some(d.detail.clone());
    j
}

fn kernel(time: &str, k: &KernelEvent, state: &State) -> JsonEvent {
    let ev = &k.raw;
    let ident = state.by_id(ev.identity);
    let name = identity_label(state, ev.identity);
    let is_exec = k.kind == EventKind::Exec;
    let is_addr = matches!(k.kind, EventKind::Connect | EventKind::Sendmsg);
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
        protocol: is_addr.then(|| ip_protocol_name(ev.protocol)),
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
        suppressed_kind: None,
        suppressed: None,
        interval_seconds: None,
    }
}
