//! The control protocol: what `zt-agent grant`, `grants`, `revoke`, `requests`,
//! `approve`, `deny` and `why` send to the daemon and what comes back, as frames of
//! one JSON document each (a 4-byte big-endian length, then the JSON, at most
//! `MAX_FRAME` bytes), and the manager's side of each operation but approvals.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::manager::{Manager, grant_allowances};
use super::model::{Destinations, Grant, GrantState, Scope, TaskScope, boot_id, new_id, rfc3339};
use crate::events::GrantAction;
use crate::policy::{self, Protocol, format_duration, parse_duration, parse_port_str};

/// The largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// The socket's file name in the state dir.
pub const SOCKET: &str = "control.sock";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GrantArgs {
    pub identity: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    pub duration: String,
    pub reason: String,
    #[serde(default)]
    pub run: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Grant(GrantArgs),
    Grants,
    Revoke {
        id: Option<String>,
        identity: Option<String>,
    },
    Requests,
    Approve {
        id: String,
        duration: Option<String>,
        reason: Option<String>,
    },
    Deny {
        id: String,
        reason: Option<String>,
    },
    Why {
        pid: Option<u32>,
        identity: Option<String>,
    },
}

/// Why a request failed; each has its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A destination, duration, port or protocol that does not parse.
    BadInput,
    UnknownIdentity,
    UnknownGrant,
    UnknownRequest,
    /// `--run` or `--pid` names no task of the identity.
    UnknownTask,
    /// A duration over the rule's or identity's ceiling.
    OverCeiling,
    /// The request was decided already, or timed out.
    AlreadyDecided,
    /// The kernel's grant entries cannot take it.
    TooMany,
    /// The peer may not use the control socket.
    Refused,
    Internal,
}

impl ErrorKind {
    /// The sysexits code the command exits with.
    #[must_use]
    pub const fn exit_code(self) -> u8 {
        use crate::exit;
        match self {
            Self::BadInput => exit::USAGE,
            Self::UnknownIdentity => exit::CONFIG,
            Self::UnknownGrant
            | Self::UnknownRequest
            | Self::UnknownTask
            | Self::OverCeiling
            | Self::AlreadyDecided
            | Self::TooMany => exit::DATAERR,
            Self::Refused => exit::NOPERM,
            Self::Internal => exit::SOFTWARE,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub result: serde_json::Value,
}

impl Response {
    #[must_use]
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            ok: true,
            error: None,
            message: String::new(),
            result,
        }
    }

    #[must_use]
    pub fn err(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(kind),
            message: message.into(),
            result: serde_json::Value::Null,
        }
    }
}

/// Write one frame.
///
/// # Errors
/// The frame is too large or the write fails.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let n = u32::try_from(body.len())
        .ok()
        .filter(|n| *n as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    w.write_all(&n.to_be_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// Read one frame.
///
/// # Errors
/// The peer sent more than `MAX_FRAME`, or the read fails.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// `--ports` as ranges: all ports when none are given.
fn ports(given: &[String]) -> Result<Vec<(u16, u16)>, String> {
    if given.is_empty() {
        return Ok(vec![policy::ALL_PORTS]);
    }
    given
        .iter()
        .flat_map(|p| p.split(','))
        .map(|p| parse_port_str(p.trim()).map_err(|e| format!("--ports: {e}")))
        .collect()
}

fn protocol(given: Option<&str>) -> Result<Protocol, String> {
    match given {
        None | Some("any") => Ok(Protocol::Any),
        Some("tcp") => Ok(Protocol::Tcp),
        Some("udp") => Ok(Protocol::Udp),
        Some(p) => Err(format!(
            "--protocol {p}: invalid protocol, expected tcp, udp or any"
        )),
    }
}

/// A grant as `zt-agent grants --json` shows it.
#[must_use]
pub fn grant_json(g: &Grant) -> serde_json::Value {
    json!({
        "id": g.id,
        "identity": g.identity,
        "to": g.to,
        "ports": g.ports.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect::<Vec<_>>(),
        "protocol": g.protocol.as_str(),
        "scope": g.scope.to_string(),
        "reason": g.reason,
        "who": g.who,
        "request": g.request,
        "issued": rfc3339(g.issued_ms),
        "expires": rfc3339(g.expires_ms),
        "state": g.state.as_str(),
        "ended": g.ended,
    })
}

impl Manager {
    /// Serve one control request from `peer`.
    pub fn control(&mut self, req: Request, peer: &str) -> Response {
        match req {
            Request::Grant(args) => self.grant(&args, peer),
            Request::Grants => Response::ok(json!(
                self.grants.iter().map(grant_json).collect::<Vec<_>>()
            )),
            Request::Revoke { id, identity } => self.revoke_cmd(id, identity, peer),
            Request::Requests => Response::ok(json!(
                self.requests
                    .iter()
                    .map(super::approve::request_json)
                    .collect::<Vec<_>>()
            )),
            Request::Approve {
                id,
                duration,
                reason,
            } => self.approve(&id, duration.as_deref(), reason.as_deref(), peer),
            Request::Deny { id, reason } => self.deny(&id, reason.as_deref(), peer),
            Request::Why { pid, identity } => self.why_cmd(pid, identity.as_deref()),
        }
    }

    /// `zt-agent grant`: check everything, then store, announce and (by the caller's
    /// sync) install.
    fn grant(&mut self, a: &GrantArgs, peer: &str) -> Response {
        let Some(ident) = self.policy.by_name.get(&a.identity).cloned() else {
            return Response::err(
                ErrorKind::UnknownIdentity,
                format!(
                    "unknown identity `{}`: the policy in force defines {}",
                    a.identity,
                    self.known_identities()
                ),
            );
        };
        if let Err(e) = Destinations::parse(&a.to) {
            return Response::err(ErrorKind::BadInput, e);
        }
        let ports = match ports(&a.ports) {
            Ok(p) => p,
            Err(e) => return Response::err(ErrorKind::BadInput, e),
        };
        let protocol = match protocol(a.protocol.as_deref()) {
            Ok(p) => p,
            Err(e) => return Response::err(ErrorKind::BadInput, e),
        };
        let secs = match parse_duration(&a.duration) {
            Ok(s) => s,
            Err(e) => return Response::err(ErrorKind::BadInput, format!("--for: {e}")),
        };
        if secs > ident.max_grant {
            return Response::err(
                ErrorKind::OverCeiling,
                format!(
                    "--for {}: longer than the ceiling of identity `{}` (spec.grants.maxDuration {})",
                    format_duration(secs),
                    ident.name,
                    format_duration(ident.max_grant)
                ),
            );
        }
        if a.reason.trim().is_empty() {
            return Response::err(ErrorKind::BadInput, "--reason must not be empty");
        }
        if policy::port_ranges(&ports, protocol).len() > zt_agent_common::GRANT_SLOTS {
            return Response::err(
                ErrorKind::BadInput,
                format!("--ports: more than {} ranges", zt_agent_common::GRANT_SLOTS),
            );
        }
        let scope = match (&a.run, a.pid) {
            (Some(_), Some(_)) => {
                return Response::err(ErrorKind::BadInput, "--run and --pid exclude each other");
            }
            (Some(run), None) => match self.run_scope(&ident.name, run) {
                Ok(s) => s,
                Err(e) => return Response::err(ErrorKind::UnknownTask, e),
            },
            (None, Some(pid)) => match self.pid_scope(ident.id, &ident.name, pid) {
                Ok(s) => s,
                Err(e) => return Response::err(ErrorKind::UnknownTask, e),
            },
            (None, None) => Scope::Identity,
        };
        let g = self.new_grant(NewGrant {
            identity: ident.name.clone(),
            to: a.to.clone(),
            ports,
            protocol,
            scope,
            secs,
            reason: a.reason.clone(),
            who: peer.to_owned(),
            request: None,
        });
        if let Err(e) = self.fits(&grant_allowances(&g, ident.id)) {
            return Response::err(ErrorKind::TooMany, e.to_string());
        }
        let out = grant_json(&g);
        self.issue(g);
        Response::ok(out)
    }

    /// A grant record, not yet in force.
    pub(super) fn new_grant(&self, n: NewGrant) -> Grant {
        let now = Self::ms_now();
        let ms = i64::try_from(n.secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Grant {
            id: new_id("g"),
            identity: n.identity,
            to: n.to,
            ports: n.ports,
            protocol: n.protocol,
            scope: n.scope,
            reason: n.reason,
            who: n.who,
            request: n.request,
            issued_ms: now,
            expires_ms: now.saturating_add(ms),
            expires_boot_ns: Self::now_boot().saturating_add(n.secs.saturating_mul(1_000_000_000)),
            boot_id: boot_id(),
            state: GrantState::Active,
            ended: None,
        }
    }

    /// Put a grant in force: store, record, announce.
    pub(super) fn issue(&mut self, g: Grant) {
        self.save_grant(&g);
        self.log(
            "issued",
            Some(&g.id),
            g.request.as_deref(),
            &g.who,
            &g.reason,
        );
        let mut e = self.event_of(GrantAction::Issued, "issued");
        e.who = Some(g.who.clone());
        e.why = Some(g.reason.clone());
        e.grant = Some(g.clone());
        self.announce(e);
        tracing::info!(grant = %g.id, identity = %g.identity, to = ?g.to, scope = %g.scope, expires = %rfc3339(g.expires_ms), "grant issued");
        self.grants.push(g);
    }

    fn known_identities(&self) -> String {
        let names: Vec<&str> = self.policy.by_name.keys().map(String::as_str).collect();
        if names.is_empty() {
            "no identities".into()
        } else {
            names.join(", ")
        }
    }

    /// `--run RUN_ID`: the launch cgroup `/zt/IDENTITY/RUN_ID`, which must exist.
    fn run_scope(&self, identity: &str, run: &str) -> Result<Scope, String> {
        if run.is_empty() || run.contains('/') || run == "." || run == ".." {
            return Err(format!("--run {run}: not a run id"));
        }
        let dir = self
            .settings
            .cgroup_root
            .join(policy::LAUNCH_CGROUP_ROOT.trim_start_matches('/'))
            .join(identity)
            .join(run);
        match crate::sys::cgroup::cgroup_id(&dir) {
            Ok(cgroup_id) => Ok(Scope::Run {
                run_id: run.to_owned(),
                cgroup_id,
            }),
            Err(_) => Err(format!(
                "--run {run}: no run of identity `{identity}` has that id (no cgroup {})",
                dir.display()
            )),
        }
    }

    /// `--pid PID`: a live thread group enrolled under the identity.
    fn pid_scope(&self, id: u32, identity: &str, pid: u32) -> Result<Scope, String> {
        let enrolled = self.tasks.get(pid).map(|t| t.identity);
        if enrolled != Some(id) {
            return Err(format!("--pid {pid}: not a task of identity `{identity}`"));
        }
        let task = TaskScope::read(pid);
        match task.start_ticks {
            Some(start_ticks) => Ok(Scope::Pid { pid, start_ticks }),
            None => Err(format!("--pid {pid}: no such process")),
        }
    }

    fn revoke_cmd(&mut self, id: Option<String>, identity: Option<String>, peer: &str) -> Response {
        let chosen: Vec<usize> = match (&id, &identity) {
            (Some(id), None) => {
                match self
                    .grants
                    .iter()
                    .position(|g| &g.id == id && g.state == GrantState::Active)
                {
                    Some(i) => vec![i],
                    None => {
                        return Response::err(
                            ErrorKind::UnknownGrant,
                            format!("unknown grant `{id}` (or not in force)"),
                        );
                    }
                }
            }
            (None, Some(name)) => {
                if !self.policy.by_name.contains_key(name)
                    && !self.grants.iter().any(|g| &g.identity == name)
                {
                    return Response::err(
                        ErrorKind::UnknownIdentity,
                        format!("unknown identity `{name}`"),
                    );
                }
                self.grants
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| &g.identity == name && g.state == GrantState::Active)
                    .map(|(i, _)| i)
                    .collect()
            }
            _ => {
                return Response::err(
                    ErrorKind::BadInput,
                    "give a grant id or --identity NAME, not both",
                );
            }
        };
        let mut ids = Vec::new();
        for i in chosen {
            ids.push(self.grants[i].id.clone());
            self.end_grant(i, GrantState::Revoked, "revoked", Some(peer));
        }
        Response::ok(json!({ "revoked": ids }))
    }
}

/// What a new grant is made of.
pub(super) struct NewGrant {
    pub identity: String,
    pub to: Vec<String>,
    pub ports: Vec<(u16, u16)>,
    pub protocol: Protocol,
    pub scope: Scope,
    pub secs: u64,
    pub reason: String,
    pub who: String,
    pub request: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{\"op\":\"grants\"}").expect("write");
        let back = read_frame(&mut buf.as_slice()).expect("read");
        let r: Request = serde_json::from_slice(&back).expect("json");
        assert!(matches!(r, Request::Grants));
        let mut big = (u32::try_from(MAX_FRAME).expect("fits") + 1)
            .to_be_bytes()
            .to_vec();
        big.extend_from_slice(&[0; 8]);
        assert!(read_frame(&mut big.as_slice()).is_err());
        assert!(write_frame(&mut Vec::new(), &vec![0; MAX_FRAME + 1]).is_err());
    }

    #[test]
    fn ports_and_protocols_parse() {
        assert_eq!(ports(&[]), Ok(vec![(0, 65535)]));
        assert_eq!(
            ports(&["443".into(), "8000-8100,22".into()]),
            Ok(vec![(443, 443), (8000, 8100), (22, 22)])
        );
        assert!(ports(&["http".into()]).is_err());
        assert!(protocol(Some("icmp")).is_err());
        assert_eq!(protocol(Some("udp")), Ok(Protocol::Udp));
        assert_eq!(ErrorKind::UnknownIdentity.exit_code(), crate::exit::CONFIG);
    }
}
