//! Events: what the kernel reports (`decode`), the typed events the bus carries (here),
//! the JSON line every sink writes (`json`), the budgets that bound them (`limit`), the
//! sink itself (`sink`), and the exec provenance the decoder adds (`provenance`).

pub mod chain;
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
    /// The addresses on the answer the task got.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
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

/// Enforcement was tampered with (a program detached, a pin removed), and what the
/// daemon did about it.
#[derive(Clone, Debug)]
pub struct TamperEvent {
    /// `link_detached`, `link_pin_removed` or `map_pin_removed`.
    pub what: &'static str,
    /// What happened and what was done, for people.
    pub detail: String,
}

/// Something an identity did departs from what it may or usually does: a limit
/// reached (`limit_exceeded`), and the other detectors of continuous verification.
#[derive(Clone, Debug)]
pub struct AnomalyEvent {
    pub identity: String,
    /// The detector: `limit_exceeded`, ...
    pub kind: &'static str,
    /// `low`, `medium` or `high`.
    pub severity: &'static str,
    /// What was done: `alert`, or `enforced` (a limit now denies).
    pub response: &'static str,
    /// The peer the evidence is about, as `ip:port`, when there is one.
    pub dst: Option<String>,
    pub protocol: Option<&'static str>,
    /// What was seen, for people.
    pub detail: String,
    /// What was seen, for machines.
    pub evidence: AnomalyEvidence,
}

/// The figures behind an anomaly.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AnomalyEvidence {
    /// `identity` or `destination`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<&'static str>,
    /// Bytes sent in the window, and the cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u64>,
}

/// What happened to a grant or a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantAction {
    Issued,
    Requested,
    Approved,
    Denied,
    TimedOut,
    Expired,
    Revoked,
}

impl GrantAction {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Requested => "requested",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::TimedOut => "timed_out",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// A grant given, requested, decided or ended.
#[derive(Clone, Debug)]
pub struct GrantEvent {
    pub action: GrantAction,
    /// Short code: `issued`, `ask_required`, `expired`, `task_ended`, ...
    pub reason: &'static str,
    pub grant: Option<crate::grants::model::Grant>,
    pub request: Option<crate::grants::model::Request>,
    /// Who did it, as the control socket saw them.
    pub who: Option<String>,
    /// Why, in their words.
    pub why: Option<String>,
}

/// A Workload API call: an SVID handed out, or a caller refused.
#[derive(Clone, Debug)]
pub struct SvidEvent {
    /// `allow` (issued) or `deny` (refused).
    pub verdict: &'static str,
    /// The identity's name; `unenrolled` or `quarantine` for callers without one.
    pub identity: String,
    /// `issued`, or why the caller was refused (`unenrolled`, `quarantined`,
    /// `task_exited`, ...).
    pub reason: &'static str,
    /// The caller's thread group (0 when unknown).
    pub tgid: u32,
    pub task: TaskFacts,
    pub detail: SvidDetail,
}

/// The fields of an `svid` event.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SvidDetail {
    /// x509, jwt, x509_bundle, jwt_bundle or validate.
    pub svid_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// X.509: the certificate's serial number, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// JWT: the signing key's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// When the SVID expires (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}
