//! Events: what the kernel reports (`decode`), the typed events the bus carries (here),
//! the JSON line every sink writes (`json`), the budgets that bound them (`limit`), the
//! sink itself (`sink`), and the exec provenance the decoder adds (`provenance`).

pub mod decode;
pub mod json;
pub mod limit;
pub mod provenance;
pub mod sink;

use serde::Serialize;
use zt_agent_common::{EventKind, Reason, Verdict};

use provenance::Ancestor;

/// A kernel record and what /proc told about its task when it arrived.
#[derive(Clone, Debug)]
pub struct KernelEvent {
    pub raw: zt_agent_common::Event,
    pub kind: EventKind,
    pub verdict: Verdict,
    pub reason: Reason,
    /// The binary the task runs, or for an exec whose task is gone, a path that led to
    /// the very file the kernel reported.
    pub exe: Option<String>,
    /// The task's cgroup v2 path.
    pub cgroup: Option<String>,
    /// Exec events: the ancestors' binaries and the digest of the file that runs.
    pub exec: Option<ExecFacts>,
}

#[derive(Clone, Debug, Default)]
pub struct ExecFacts {
    pub ancestors: Vec<Ancestor>,
    pub sha256: Option<String>,
}

/// A task as /proc shows it, read after the fact (for events the daemon reports about
/// a task, such as DNS).
#[derive(Clone, Debug, Default)]
pub struct TaskFacts {
    pub comm: String,
    pub exe: Option<String>,
    pub cgroup: Option<String>,
    pub uid: u32,
}

impl TaskFacts {
    /// What /proc says of `tgid` now; empty when the task is gone.
    #[must_use]
    pub fn read(tgid: u32) -> Self {
        let (exe, cgroup) = decode::proc_facts(tgid);
        Self {
            comm: zt_agent_host::proc::comm(tgid).unwrap_or_default(),
            exe,
            cgroup,
            uid: zt_agent_host::proc::uid(tgid).unwrap_or(0),
        }
    }
}

/// A query the resolver answered or refused, on behalf of task `tgid`.
#[derive(Clone, Debug)]
pub struct DnsEvent {
    pub verdict: &'static str,
    pub identity: String,
    pub reason: &'static str,
    /// The task the kernel recorded as the sender; 0 when unknown.
    pub tgid: u32,
    pub protocol: &'static str,
    pub detail: DnsDetail,
    pub task: TaskFacts,
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

/// A file the policy names that the daemon found missing or failing its digest.
#[derive(Clone, Debug)]
pub struct FileEvent {
    pub identity: String,
    /// `file_unresolved` or `digest_mismatch`.
    pub reason: &'static str,
    /// The policy location, field, path and what is wrong.
    pub detail: String,
}
