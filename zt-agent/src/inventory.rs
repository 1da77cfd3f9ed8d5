//! What `zt-agent ps` and `zt-agent status` show, read from the pinned maps and the
//! state file.
//!
//! `ps` lists every enrolled thread group with its identity and how it got it, and
//! the shadow workloads: unenrolled tasks that made egress connections since the
//! enforcement started, each with its binary and the destinations it reached. Those
//! are the workloads an operator still has to enroll.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;
use zt_agent_common::{
    ENROLL_CGROUP, ENROLL_EXE, ENROLL_INHERIT, ENROLL_PRINCIPAL, ENROLL_QUARANTINE, ENROLL_RUN,
    ENROLL_SCAN, ShadowKey, map_names,
};
use zt_agent_host::proc;

use crate::cli::Dirs;
use crate::ebpf::loader::{self, ExecGuard, PinDir};
use crate::ebpf::maps::{Shadow, Tasks};
use crate::state::State;

#[derive(Debug, Serialize)]
pub struct EnrolledTask {
    pub pid: u32,
    pub identity: String,
    /// run, cgroup, inherit, scan, exe, uid_gid or quarantine.
    pub how: &'static str,
    pub uid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Destination {
    pub dst: String,
    pub protocol: &'static str,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct ShadowTask {
    pub pid: u32,
    pub alive: bool,
    pub uid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub destinations: Vec<Destination>,
}

#[derive(Debug, Serialize)]
pub struct Inventory {
    pub enrolled: Vec<EnrolledTask>,
    pub shadow: Vec<ShadowTask>,
}

const fn how_name(how: u32) -> &'static str {
    match how {
        ENROLL_RUN => "run",
        ENROLL_CGROUP => "cgroup",
        ENROLL_INHERIT => "inherit",
        ENROLL_SCAN => "scan",
        ENROLL_EXE => "exe",
        ENROLL_PRINCIPAL => "uid_gid",
        ENROLL_QUARANTINE => "quarantine",
        _ => "unknown",
    }
}

fn dst(k: &ShadowKey) -> String {
    let ip = if k.family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(k.addr))
    };
    SocketAddr::new(ip, k.port).to_string()
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum PsError {
    #[error(
        "zt-agent is not enforcing here: nothing is pinned at {0} (start `zt-agent daemon`, or pass --pin-dir)"
    )]
    NotRunning(String),
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    #[error("reading the daemon's state: {0}")]
    State(#[from] crate::state::StateError),
}

/// Read the inventory from the pinned maps.
pub fn inventory(dirs: &Dirs) -> Result<Inventory, PsError> {
    let pins = PinDir::new(&dirs.pin_dir);
    if !pins.is_complete() {
        return Err(PsError::NotRunning(pins.root.display().to_string()));
    }
    let state = State::read(&dirs.state_dir)?;
    let tasks = Tasks(loader::open_pinned_map(&pins, map_names::TASKS)?);
    let shadow = Shadow(loader::open_pinned_map(&pins, map_names::SHADOW)?);
    let mut enrolled: Vec<EnrolledTask> = tasks
        .all()
        .into_iter()
        .map(|(pid, t)| EnrolledTask {
            pid,
            identity: state.label_of(t.identity),
            how: how_name(t.how),
            uid: proc::uid(pid),
            comm: proc::comm(pid),
            exe: proc::exe(pid),
        })
        .collect();
    enrolled.sort_by_key(|t| t.pid);
    let enrolled_pids: std::collections::BTreeSet<u32> = enrolled.iter().map(|t| t.pid).collect();
    let mut by_pid: BTreeMap<u32, ShadowTask> = BTreeMap::new();
    for (k, v) in shadow.all() {
        if enrolled_pids.contains(&k.tgid) {
            continue; // enrolled since: not a shadow workload any more
        }
        let alive = std::path::Path::new(&format!("/proc/{}", k.tgid)).exists();
        let t = by_pid.entry(k.tgid).or_insert_with(|| ShadowTask {
            pid: k.tgid,
            alive,
            uid: v.uid,
            comm: c_str(&v.comm),
            exe: if alive { proc::exe(k.tgid) } else { None },
            destinations: Vec::new(),
        });
        t.destinations.push(Destination {
            dst: dst(&k),
            protocol: match i32::from(k.protocol) {
                libc::IPPROTO_TCP => "tcp",
                libc::IPPROTO_UDP => "udp",
                _ => "other",
            },
            count: v.count,
        });
    }
    let mut shadow: Vec<ShadowTask> = by_pid.into_values().collect();
    for t in &mut shadow {
        t.destinations
            .sort_by(|a, b| b.count.cmp(&a.count).then(a.dst.cmp(&b.dst)));
    }
    Ok(Inventory { enrolled, shadow })
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    pub enforcing: bool,
    pub daemon_pid: Option<u32>,
    pub daemon_running: bool,
    pub policy_sha256: String,
    pub identities: Vec<String>,
    /// `lsm` or `tp_btf_sigkill`.
    pub exec_guard: ExecGuard,
    pub metrics_addr: Option<String>,
    /// Port of the resolver enrolled tasks' DNS is sent to, on 127.0.0.1 and ::1.
    pub dns_port: Option<u16>,
    pub enrolled_tasks: usize,
}

/// The enforcement's status, from the pins and the state file.
///
/// # Errors
/// Nothing is pinned at the pin directory, or the state file cannot be read.
pub fn status(dirs: &Dirs) -> Result<Status, PsError> {
    let pins = PinDir::new(&dirs.pin_dir);
    if !pins.is_complete() {
        return Err(PsError::NotRunning(pins.root.display().to_string()));
    }
    let state = State::read(&dirs.state_dir)?;
    let tasks = loader::open_pinned_map(&pins, map_names::TASKS).map(Tasks);
    Ok(Status {
        pin_dir: pins.root.display().to_string(),
        enforcing: true,
        daemon_pid: state.daemon_pid,
        daemon_running: state
            .daemon_pid
            .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists()),
        policy_sha256: state.policy_sha256.clone(),
        identities: state.identities.iter().map(|i| i.name.clone()).collect(),
        exec_guard: ExecGuard::of_pins(&pins),
        metrics_addr: state.metrics_addr.clone(),
        dns_port: state.dns_port,
        enrolled_tasks: tasks.map(|t| t.all().len()).unwrap_or(0),
    })
}
