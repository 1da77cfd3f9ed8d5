//! Kernel event records: the wire format, checked, and the facts of the task read
//! when a record arrives.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zt_agent_common::{Event, EventKind, Reason, Verdict};
use zt_agent_host::proc;

use super::provenance::{self, Digests};
use super::{ExecFacts, KernelEvent};
use crate::identity::files::FileId;
use crate::state::State;

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

#[must_use]
pub fn comm(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

/// The task's exe and cgroup, read from /proc while the task may still be alive.
pub fn proc_facts(tgid: u32) -> (Option<String>, Option<String>) {
    let exe = proc::exe(tgid);
    let cgroup = std::fs::read_to_string(format!("/proc/{tgid}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        });
    (exe, cgroup)
}

/// The event's address with its port, as `ip:port`.
#[must_use]
pub fn dst(ev: &Event) -> Option<String> {
    addr_port(ev, ev.port)
}

/// The event's address with `port`, as `ip:port` (`[ip]:port` for IPv6).
#[must_use]
pub fn addr_port(ev: &Event, port: u16) -> Option<String> {
    match ev.family {
        2 => {
            let a = Ipv4Addr::new(ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]);
            Some(format!("{a}:{port}"))
        }
        10 => {
            let a = Ipv6Addr::from(ev.addr);
            Some(format!("[{}]:{port}", IpAddr::V6(a)))
        }
        _ => None,
    }
}

#[must_use]
pub fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A record with its codes checked, and what /proc and the file system tell about its
/// task, read as soon as the record arrives (the task may exit any moment, or be
/// killed by this very exec). `None` when a code is not one this build knows.
#[must_use]
pub fn enrich(raw: &Event, state: &State, digests: &mut Digests) -> Option<KernelEvent> {
    let kind = EventKind::try_from(raw.kind).ok()?;
    let verdict = Verdict::try_from(raw.verdict).ok()?;
    let reason = Reason::try_from(raw.reason).ok()?;
    // An inbound packet is judged in no task's context: there is no task to read.
    let (mut exe, cgroup) = if kind == EventKind::Inbound {
        (None, None)
    } else {
        proc_facts(raw.tgid)
    };
    let exec = (kind == EventKind::Exec).then(|| {
        let file_key = raw.file;
        let file_id = FileId {
            key: raw.file,
            stamp: raw.file_stamp,
        };
        let exec_path = c_str(&raw.path);
        // Name the file from the task, else from the policy, else from what was
        // exec'd, once a path is seen to lead to the very file the kernel reported
        // (device, inode and change time).
        let known = state.paths.get(&FileId::describe(&file_key)).cloned();
        let mut candidates = vec![format!("/proc/{}/exe", raw.tgid)];
        candidates.extend(known);
        if exec_path.starts_with('/') {
            candidates.push(exec_path);
        }
        let mut facts = ExecFacts {
            ancestors: provenance::ancestors(&raw.ancestors),
            sha256: None,
        };
        if let Some((via, digest)) = digests.of(&file_id, &candidates) {
            facts.sha256 = Some(digest);
            if exe.is_none() && !via.starts_with("/proc/") {
                exe = Some(via);
            }
        }
        facts
    });
    Some(KernelEvent {
        raw: *raw,
        kind,
        verdict,
        reason,
        exe,
        cgroup,
        exec,
    })
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
            limits: vec![],
        });
        let k = enrich(&back, &state, &mut Digests::default()).expect("known codes");
        let j = super::super::json::JsonEvent::of(
            &crate::bus::Event::now(crate::bus::Body::Kernel(Box::new(k))),
            &state,
        );
        assert_eq!(j.identity, "coder");
        assert_eq!(j.dst.as_deref(), Some("10.1.2.3:443"));
        assert_eq!(j.verdict, Some("deny"));
        assert_eq!(j.protocol, Some("tcp"));
        assert_eq!(j.comm, "curl");
        assert_eq!(j.owner.as_deref(), Some("alice@example.com"));
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
