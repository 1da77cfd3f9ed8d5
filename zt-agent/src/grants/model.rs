//! Grants and requests as the store keeps them and the control socket shows them.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use zt_agent_common::{GRANT_SCOPE_CGROUP, GRANT_SCOPE_IDENTITY, GRANT_SCOPE_TGID};

use super::entries::KernelScope;
use crate::policy::{self, DnsName, Protocol, Target};

/// Which tasks of the identity a grant is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scope {
    /// Every task of the identity.
    Identity,
    /// The tasks of one `zt-agent run`: its launch cgroup.
    Run { run_id: String, cgroup_id: u64 },
    /// One thread group, as started at `start_ticks` (clock ticks since boot).
    Pid { pid: u32, start_ticks: u64 },
}

impl Scope {
    #[must_use]
    pub const fn kernel(&self) -> KernelScope {
        match self {
            Self::Identity => KernelScope {
                scope: GRANT_SCOPE_IDENTITY,
                id: 0,
                start: 0,
            },
            Self::Run { cgroup_id, .. } => KernelScope {
                scope: GRANT_SCOPE_CGROUP,
                id: *cgroup_id,
                start: 0,
            },
            Self::Pid { pid, start_ticks } => KernelScope {
                scope: GRANT_SCOPE_TGID,
                id: *pid as u64,
                start: *start_ticks,
            },
        }
    }

    /// Whether a task with these facts is in scope.
    #[must_use]
    pub fn takes_in(&self, task: &TaskScope) -> bool {
        match self {
            Self::Identity => true,
            Self::Run { cgroup_id, .. } => task.cgroup_id == Some(*cgroup_id),
            Self::Pid { pid, start_ticks } => {
                task.pid == *pid && task.start_ticks == Some(*start_ticks)
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity => f.write_str("identity"),
            Self::Run { run_id, .. } => write!(f, "run:{run_id}"),
            Self::Pid { pid, .. } => write!(f, "pid:{pid}"),
        }
    }
}

/// What a scope is compared with: a task's pid, cgroup and start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskScope {
    pub pid: u32,
    pub cgroup_id: Option<u64>,
    pub start_ticks: Option<u64>,
}

impl TaskScope {
    /// What /proc says of `pid` now: its cgroup v2 id and when it started.
    #[must_use]
    pub fn read(pid: u32) -> Self {
        Self {
            pid,
            cgroup_id: cgroup_path(pid).and_then(|p| cgroup_id_of(&p)),
            start_ticks: zt_agent_host::proc::start_ticks(pid),
        }
    }
}

/// The cgroup v2 path of a task, below the cgroup2 mount.
#[must_use]
pub fn cgroup_path(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
}

/// The id of the cgroup at `rel` below the cgroup2 mount.
fn cgroup_id_of(rel: &str) -> Option<u64> {
    let root = zt_agent_host::mounts::cgroup2_mount().ok()?;
    crate::sys::cgroup::cgroup_id(&root.join(rel.trim_start_matches('/'))).ok()
}

/// Destinations as `egress.to` takes them: networks and DNS names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destinations {
    pub nets: Vec<IpNet>,
    pub names: Vec<DnsName>,
}

impl Destinations {
    /// Parse every entry; the first that does not parse is the error.
    ///
    /// # Errors
    /// An entry that is not an address, a CIDR, a DNS name or a wildcard.
    pub fn parse(to: &[String]) -> Result<Self, String> {
        let mut d = Self::default();
        for t in to {
            match policy::parse_target(t).map_err(|e| format!("--to {t}: {e}"))? {
                Target::Net(n) => d.nets.push(n),
                Target::Name(n) => d.names.push(n),
            }
        }
        if d.nets.is_empty() && d.names.is_empty() {
            return Err("--to: at least one destination is needed".into());
        }
        Ok(d)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    Active,
    Expired,
    Revoked,
}

impl GrantState {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => Self::Active,
            "expired" => Self::Expired,
            _ => Self::Revoked,
        }
    }
}

/// One grant: destinations opened for an identity (or one of its tasks) until a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub identity: String,
    /// As given (`egress.to` syntax).
    pub to: Vec<String>,
    /// Inclusive ranges; all ports when the grant named none.
    pub ports: Vec<(u16, u16)>,
    pub protocol: Protocol,
    pub scope: Scope,
    /// Why access was given, in the words of who gave it.
    pub reason: String,
    /// Who gave it: the operator (by uid) or the approval of a request.
    pub who: String,
    pub request: Option<String>,
    /// Wall clock, milliseconds since the epoch.
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// The boot clock deadline the kernel checks, valid for `boot_id` only.
    pub expires_boot_ns: u64,
    pub boot_id: String,
    pub state: GrantState,
    /// Why it ended (`expired`, `revoked`, `task_ended`, ...).
    pub ended: Option<String>,
}

impl Grant {
    /// Its destinations, parsed again (they were checked when it was given).
    #[must_use]
    pub fn destinations(&self) -> Destinations {
        Destinations::parse(&self.to).unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
    TimedOut,
}

impl RequestState {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::TimedOut => "timed_out",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            _ => Self::TimedOut,
        }
    }
}

/// An ancestor of the requesting task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub exe: Option<String>,
}

/// A task's request for what only an `ask` rule allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub identity: String,
    pub owner: String,
    /// Position of the `ask` rule in `spec.egress`, and where it is written.
    pub rule: usize,
    pub rule_at: String,
    /// The address or DNS name asked for.
    pub destination: String,
    /// The port of the connect or send (0 for a DNS lookup).
    pub port: u16,
    pub protocol: String,
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub cgroup: Option<String>,
    pub ancestors: Vec<Ancestor>,
    /// The scope a grant born from this request gets.
    pub scope: Scope,
    pub created_ms: i64,
    /// When a pending request times out.
    pub expires_ms: i64,
    pub state: RequestState,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub decided_ms: Option<i64>,
    pub grant: Option<String>,
}

/// A fresh id: a prefix and 12 hex digits.
#[must_use]
pub fn new_id(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}-{:012x}", n & 0xffff_ffff_ffff)
}

/// Wall clock now, milliseconds since the epoch.
#[must_use]
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// RFC 3339, UTC, of a wall-clock time in milliseconds.
#[must_use]
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`): boot-clock deadlines recorded
/// under another boot mean nothing.
#[must_use]
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
