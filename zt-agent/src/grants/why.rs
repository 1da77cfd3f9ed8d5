//! `zt-agent why`: the latest denials of a task or an identity, each with its cause and
//! the command that would request or give access. The manager keeps them from the bus
//! in bounded rings, per identity and per pid.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use serde::Serialize;
use serde_json::json;
use zt_agent_common::{EventKind, Reason, Verdict};

use super::control::{ErrorKind, Response};
use super::manager::Manager;
use super::model::{GrantState, RequestState, cgroup_path};
use super::view::GrantPolicy;
use super::window;
use crate::bus::{self, Body};
use crate::events::decode;
use crate::policy::{self, DynamicKind, format_duration};

/// Denials kept per identity.
const PER_IDENTITY: usize = 32;
/// Denials kept per pid, and pids kept.
const PER_PID: usize = 16;
const PIDS: usize = 1024;

/// One denial as the bus reported it.
#[derive(Clone, Debug, Serialize)]
pub struct Denial {
    pub time: String,
    pub kind: &'static str,
    pub identity: String,
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip)]
    pub addr: Option<IpAddr>,
    #[serde(skip)]
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// The DNS name a refused lookup asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The exec'd path of a refused exec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub reason: &'static str,
}

#[derive(Default)]
pub struct Why {
    by_identity: BTreeMap<String, VecDeque<Denial>>,
    by_pid: BTreeMap<u32, VecDeque<Denial>>,
    /// Pids in the order they were first seen, to drop the oldest.
    pids: VecDeque<u32>,
}

fn push(ring: &mut VecDeque<Denial>, d: Denial, cap: usize) {
    if ring.len() >= cap {
        ring.pop_front();
    }
    ring.push_back(d);
}

impl Why {
    /// Keep the denial `ev` reports, if it reports one.
    pub fn record(&mut self, ev: &bus::Event, policy: &GrantPolicy) {
        let Some(d) = denial(ev, policy) else { return };
        push(
            self.by_identity.entry(d.identity.clone()).or_default(),
            d.clone(),
            PER_IDENTITY,
        );
        if !self.by_pid.contains_key(&d.pid) {
            if self.pids.len() >= PIDS
                && let Some(old) = self.pids.pop_front()
            {
                self.by_pid.remove(&old);
            }
            self.pids.push_back(d.pid);
        }
        let pid = d.pid;
        push(self.by_pid.entry(pid).or_default(), d, PER_PID);
    }

    #[must_use]
    pub fn of_pid(&self, pid: u32) -> Vec<Denial> {
        self.by_pid
            .get(&pid)
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    #[must_use]
    pub fn of_identity(&self, name: &str) -> Vec<Denial> {
        self.by_identity
            .get(name)
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

fn denial(ev: &bus::Event, policy: &GrantPolicy) -> Option<Denial> {
    match &ev.body {
        Body::Kernel(k) if k.verdict == Verdict::Deny => {
            let raw = &k.raw;
            let identity = policy
                .by_id(raw.identity)
                .map_or_else(|| format!("id-{}", raw.identity), |i| i.name.clone());
            let is_addr = matches!(k.kind, EventKind::Connect | EventKind::Sendmsg);
            let addr = match raw.family {
                2 if is_addr => Some(IpAddr::from([
                    raw.addr[0],
                    raw.addr[1],
                    raw.addr[2],
                    raw.addr[3],
                ])),
                10 if is_addr => Some(IpAddr::from(raw.addr)),
                _ => None,
            };
            Some(Denial {
                time: ev.time.clone(),
                kind: k.kind.as_str(),
                identity,
                pid: raw.tgid,
                comm: decode::comm(&raw.comm),
                exe: k.exe.clone(),
                dst: if is_addr { decode::dst(raw) } else { None },
                addr,
                port: raw.port,
                protocol: is_addr.then(|| zt_agent_common::ip_protocol_name(raw.protocol)),
                name: None,
                path: (k.kind == EventKind::Exec).then(|| decode::c_str(&raw.path)),
                reason: k.reason.as_str(),
            })
        }
        Body::Dns(d) if d.verdict == "deny" => Some(Denial {
            time: ev.time.clone(),
            kind: "dns",
            identity: d.identity.clone(),
            pid: d.tgid,
            comm: d.task.comm.clone(),
            exe: d.task.exe.clone(),
            dst: None,
            addr: None,
            port: 0,
            protocol: None,
            name: d.detail.query.clone(),
            path: None,
            reason: d.reason,
        }),
        _ => None,
    }
}

/// Quote an argument for a POSIX shell when it needs it.
fn sh(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl Manager {
    pub(super) fn why_cmd(&self, pid: Option<u32>, identity: Option<&str>) -> Response {
        let list = match (pid, identity) {
            (Some(p), None) => self.why.of_pid(p),
            (None, Some(name)) => {
                if !self.policy.by_name.contains_key(name) {
                    return Response::err(
                        ErrorKind::UnknownIdentity,
                        format!("unknown identity `{name}`"),
                    );
                }
                self.why.of_identity(name)
            }
            _ => {
                return Response::err(ErrorKind::BadInput, "give --pid PID or --identity NAME");
            }
        };
        let out: Vec<serde_json::Value> = list
            .iter()
            .map(|d| {
                let (cause, command, hint) = self.cause(d);
                let mut v = serde_json::to_value(d).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("cause".into(), json!(cause));
                    o.insert("command".into(), json!(command));
                    o.insert("hint".into(), json!(hint));
                }
                v
            })
            .collect();
        Response::ok(json!(out))
    }

    /// The cause of a denial, the command that would give (or request) access, and a
    /// hint where no command can.
    fn cause(&self, d: &Denial) -> (String, Option<String>, Option<String>) {
        let grant = |to: &str, ports: Option<String>, proto: Option<&str>| {
            let ident = self.policy.by_name.get(&d.identity);
            let secs = ident.map_or(3600, |i| i.max_grant.min(3600));
            let mut c = format!("zt-agent grant {} --to {}", sh(&d.identity), sh(to));
            if let Some(p) = ports {
                c.push_str(&format!(" --ports {p}"));
            }
            if let Some(p) = proto {
                c.push_str(&format!(" --protocol {p}"));
            }
            c.push_str(&format!(
                " --for {} --reason {}",
                format_duration(secs),
                sh("REASON")
            ));
            c.push_str(&self.scope_flag(&d.identity, d.pid));
            c
        };
        let net_grant = || {
            d.addr.map(|a| {
                grant(
                    &a.to_string(),
                    Some(d.port.to_string()),
                    d.protocol.filter(|p| *p != "other"),
                )
            })
        };
        match d.reason {
            r if r == Reason::AskRequired.as_str() => {
                let pending = self.requests.iter().find(|r| {
                    r.state == RequestState::Pending
                        && r.identity == d.identity
                        && d.addr.is_some_and(|a| r.destination == a.to_string())
                });
                match pending {
                    Some(r) => (
                        format!("request pending ({}, raised {})", r.id, super::model::rfc3339(r.created_ms)),
                        Some(format!("zt-agent approve {}", r.id)),
                        None,
                    ),
                    None => (
                        "ask rule without a grant: the next attempt raises a request".into(),
                        net_grant(),
                        None,
                    ),
                }
            }
            r if r == Reason::OutsideWindow.as_str() => {
                let next = self.next_window(d);
                (
                    match next {
                        Some(t) => format!("outside its window (opens next at {t})"),
                        None => "outside its window".into(),
                    },
                    net_grant(),
                    None,
                )
            }
            r if r == Reason::GrantExpired.as_str() => ("grant expired".into(), net_grant(), None),
            r if r == Reason::NoRule.as_str() => {
                let expired = d.addr.and_then(|a| {
                    self.grants.iter().rev().find(|g| {
                        g.identity == d.identity
                            && g.state != GrantState::Active
                            && g.destinations().nets.iter().any(|n| n.contains(&a))
                    })
                });
                match expired {
                    Some(g) => (
                        format!(
                            "grant expired ({} {})",
                            g.id,
                            g.ended.as_deref().unwrap_or("ended")
                        ),
                        net_grant(),
                        None,
                    ),
                    None => ("no rule".into(), net_grant(), None),
                }
            }
            r if r == Reason::Quarantined.as_str() => (
                "quarantined".into(),
                None,
                Some(
                    "the task exec'd a selected file that failed its digest or changed; no grant helps: fix the file or the policy's sha256 (zt-agent policy check)"
                        .into(),
                ),
            ),
            r if r == Reason::ExecNotAllowed.as_str() || r == Reason::FileChanged.as_str() => (
                "exec not allowed".into(),
                None,
                Some(format!(
                    "add {} to spec.exec.allow of identity `{}` and reload the policy",
                    d.path.as_deref().or(d.exe.as_deref()).unwrap_or("the file"),
                    d.identity
                )),
            ),
            r if r == Reason::IdentityRemoved.as_str() => (
                "identity removed from the policy".into(),
                None,
                Some("its tasks are denied everything until they exit".into()),
            ),
            "name_not_allowed" => (
                "DNS name not allowed".into(),
                d.name.as_deref().map(|n| grant(n, None, None)),
                None,
            ),
            "ask_denied" | "ask_timed_out" => (
                format!(
                    "ask rule: the request was {}",
                    if d.reason == "ask_denied" { "denied" } else { "not decided in time" }
                ),
                d.name.as_deref().map(|n| grant(n, None, None)),
                None,
            ),
            other => (
                other.replace('_', " "),
                None,
                Some("not something a grant gives".into()),
            ),
        }
    }

    /// `--run RUN` for a task of a launch run, `--pid PID` for another live task, nothing
    /// when it is gone.
    fn scope_flag(&self, identity: &str, pid: u32) -> String {
        let prefix = format!("{}/{identity}/", policy::LAUNCH_CGROUP_ROOT);
        match cgroup_path(pid) {
            Some(c) => match c.strip_prefix(&prefix) {
                Some(run) if !run.contains('/') => format!(" --run {}", sh(run)),
                _ => format!(" --pid {pid}"),
            },
            None => String::new(),
        }
    }

    /// When the window of the `when` rule covering the denial opens next.
    fn next_window(&self, d: &Denial) -> Option<String> {
        let ident = self.policy.by_name.get(&d.identity)?;
        let addr = d.addr?;
        ident.dynamic.iter().find_map(|r| match &r.kind {
            DynamicKind::Window(ws) if r.nets.iter().any(|n| n.contains(&addr)) => {
                window::next_opening(ws, jiff::Timestamp::now()).map(|t| t.to_string())
            }
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(sh("coder"), "coder");
        assert_eq!(sh("*.example.com"), "'*.example.com'");
        assert_eq!(sh("REASON"), "REASON");
        assert_eq!(sh("it's"), "'it'\\''s'");
        assert_eq!(sh("a b"), "'a b'");
    }
}
