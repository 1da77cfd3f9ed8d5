//! Kernel event record -> the JSON event of DESIGN.md.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use zt_agent_common::{
    ENROLL_EXE, ENROLL_PRINCIPAL, ENROLL_QUARANTINE, Event, EventKind, Reason, Verdict,
    ip_protocol_name,
};

use super::provenance::{self, Ancestor, Digests};
use crate::identity::files::FileId;
use crate::state::State;

/// One event line. Field names are a contract (DESIGN.md, Events).
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
}

/// The fields of a `dns` event.
#[derive(Clone, Debug, Serialize)]
pub struct DnsDetail {
    /// The queried name, lowercase, without the trailing dot.
    pub query: Option<String>,
    pub qtype: Option<String>,
    /// DNS response code sent to the task (NOERROR, NXDOMAIN, REFUSED, ...).
    pub rcode: String,
    /// Addresses installed for the identity, with their TTL in seconds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub installed: Vec<String>,
    /// Addresses on the answer that DNS may never open (loopback, link-local, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<String>,
}

impl JsonEvent {
    /// An event the daemon itself reports (policy and file checks).
    #[must_use]
    pub fn daemon(
        kind: &'static str,
        identity: &str,
        reason: &'static str,
        detail: String,
        state: &State,
    ) -> Self {
        let ident = state.identity(identity);
        Self {
            time: now_rfc3339(),
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
            detail: Some(detail),
            ancestors: None,
            path: None,
            sha256: None,
            file: None,
            enrolled_by: None,
            dns: None,
        }
    }

    /// A query the resolver answered or refused, on behalf of task `tgid`.
    #[must_use]
    pub fn dns(
        verdict: &'static str,
        identity: &str,
        reason: &'static str,
        tgid: u32,
        protocol: &'static str,
        detail: DnsDetail,
        state: &State,
    ) -> Self {
        let mut ev = Self::daemon("dns", identity, reason, String::new(), state);
        ev.verdict = Some(verdict);
        ev.detail = None;
        ev.protocol = Some(protocol);
        ev.pid = tgid;
        ev.tid = tgid;
        if tgid != 0 {
            let (exe, cgroup) = proc_facts(tgid);
            ev.exe = exe;
            ev.cgroup = cgroup;
            ev.comm = std::fs::read_to_string(format!("/proc/{tgid}/comm"))
                .map(|c| c.trim_end().to_owned())
                .unwrap_or_default();
            ev.uid = proc_uid(tgid).unwrap_or(0);
        } else {
            ev.comm = String::new();
        }
        ev.dns = Some(detail);
        ev
    }
}

fn proc_uid(tgid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tgid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

#[must_use]
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Parse a raw ring-buffer record; `None` if it is not a whole event.
#[must_use]
pub fn parse(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: Event is plain old data and the buffer is long enough; read_unaligned
    // copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// The name of a raw verdict; anything but allow and deny reads as audit.
#[must_use]
pub fn verdict_name(v: u8) -> &'static str {
    Verdict::try_from(v).map_or(Verdict::Audit.as_str(), Verdict::as_str)
}

fn comm(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

/// The task's exe and cgroup, read from /proc while the task may still be alive.
fn proc_facts(tgid: u32) -> (Option<String>, Option<String>) {
    let exe = std::fs::read_link(format!("/proc/{tgid}/exe"))
        .ok()
        .map(|p| p.display().to_string());
    let cgroup = std::fs::read_to_string(format!("/proc/{tgid}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        });
    (exe, cgroup)
}

#[must_use]
pub fn dst(ev: &Event) -> Option<String> {
    match ev.family {
        2 => {
            let a = Ipv4Addr::new(ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]);
            Some(format!("{a}:{}", ev.port))
        }
        10 => {
            let a = Ipv6Addr::from(ev.addr);
            Some(format!("[{}]:{}", IpAddr::V6(a), ev.port))
        }
        _ => None,
    }
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Enrich a kernel event with what the policy and /proc know.
#[must_use]
pub fn enrich(ev: &Event, state: &State, digests: &mut Digests) -> JsonEvent {
    let ident = state.by_id(ev.identity);
    let name = ident.map_or_else(|| state.label_of(ev.identity), |i| i.name.clone());
    let (mut exe, cgroup) = proc_facts(ev.tgid);
    let is_exec = ev.kind == EventKind::Exec as u8;
    let (mut ancestors, mut path, mut sha256, mut file, mut enrolled_by) =
        (None, None, None, None, None);
    if is_exec {
        let file_key = ev.file;
        let file_id = FileId {
            key: ev.file,
            stamp: ev.file_stamp,
        };
        let ancestor_pids = ev.ancestors;
        let exec_path = c_str(&ev.path);
        // The task may be gone (killed by this very exec): name the file from the
        // policy, else from what was exec'd, once a path is seen to lead to the very
        // file the kernel reported (device, inode and change time).
        let known = state.paths.get(&FileId::describe(&file_key)).cloned();
        let mut candidates = vec![format!("/proc/{}/exe", ev.tgid)];
        candidates.extend(known);
        if exec_path.starts_with('/') {
            candidates.push(exec_path.clone());
        }
        if let Some((via, digest)) = digests.of(&file_id, &candidates) {
            sha256 = Some(digest);
            if exe.is_none() && !via.starts_with("/proc/") {
                exe = Some(via);
            }
        }
        ancestors = Some(provenance::ancestors(&ancestor_pids));
        file = Some(FileId::describe(&file_key));
        path = Some(exec_path);
        enrolled_by = match ev.detail {
            ENROLL_EXE => Some("exe"),
            ENROLL_PRINCIPAL => Some("uid_gid"),
            ENROLL_QUARANTINE => Some("quarantine"),
            _ => None,
        };
    }
    let is_addr = ev.kind == EventKind::Connect as u8 || ev.kind == EventKind::Sendmsg as u8;
    let detail = match ev.kind {
        x if x == EventKind::SockCreate as u8 => Some(format!(
            "family={} type={} protocol={}",
            ev.family, ev.detail, ev.protocol
        )),
        x if x == EventKind::Setsockopt as u8 => {
            Some(format!("level={} optname={}", ev.protocol, ev.detail))
        }
        _ => None,
    };
    JsonEvent {
        time: now_rfc3339(),
        kind: EventKind::try_from(ev.kind).map_or("unknown", EventKind::as_str),
        verdict: Some(verdict_name(ev.verdict)),
        identity: name,
        spiffe_id: ident.map(|i| i.spiffe_id.clone()),
        owner: ident.map(|i| i.owner.clone()),
        pid: ev.tgid,
        ppid: is_exec.then_some(ev.ancestors[0]),
        tid: ev.pid,
        uid: ev.uid,
        comm: comm(&ev.comm),
        exe,
        cgroup,
        cgroup_id: ev.cgroup_id,
        policy_sha256: state.policy_sha256.clone(),
        dst: if is_addr { dst(ev) } else { None },
        protocol: if is_addr {
            Some(ip_protocol_name(ev.protocol))
        } else {
            None
        },
        reason: Reason::try_from(ev.reason).map_or("unknown", Reason::as_str),
        socket_identity: (ev.sock_identity != 0 && ev.sock_identity != ev.identity)
            .then(|| state.label_of(ev.sock_identity)),
        detail,
        ancestors,
        path,
        sha256,
        file,
        enrolled_by,
        dns: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 1, 2, 3]);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        Event {
            ktime_ns: 1,
            cgroup_id: 7,
            identity: 3,
            sock_identity: 0,
            pid: 42,
            tgid: 42,
            uid: 1000,
            gid: 1000,
            detail: 0,
            family: 2,
            port: 443,
            kind: EventKind::Connect as u8,
            verdict: Verdict::Deny as u8,
            reason: Reason::NoRule as u8,
            protocol: 6,
            _pad: [0; 4],
            addr,
            comm,
            ancestors: [0; 4],
            file: zt_agent_common::FileKey::default(),
            file_stamp: zt_agent_common::FileStamp::default(),
            path: [0; zt_agent_common::EVENT_PATH_LEN],
        }
    }

    #[test]
    fn decodes_and_enriches() {
        let ev = sample();
        // SAFETY: viewing a POD struct as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<Event>()) };
        let back = parse(bytes).expect("whole event");
        let mut state = State::default();
        state.ids.insert("coder".into(), 3);
        state.identities.push(crate::state::IdentityState {
            name: "coder".into(),
            id: 3,
            owner: "alice@example.com".into(),
            spiffe_id: "spiffe://zt-agent.local/coder".into(),
            mode: "enforce".into(),
            cgroup_globs: vec![],
        });
        let j = enrich(&back, &state, &mut Digests::default());
        assert_eq!(j.identity, "coder");
        assert_eq!(j.dst.as_deref(), Some("10.1.2.3:443"));
        assert_eq!(j.verdict, Some("deny"));
        assert_eq!(j.protocol, Some("tcp"));
        assert_eq!(j.comm, "curl");
        assert!(parse(&bytes[..10]).is_none());
    }

    #[test]
    fn formats_v6() {
        let mut ev = sample();
        ev.family = 10;
        ev.addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(dst(&ev).as_deref(), Some("[::1]:443"));
    }
}
