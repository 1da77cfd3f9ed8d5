//! Who is calling: the kernel's record of the caller's thread group, found through the
//! connection's peer credentials in a way a pid reuse cannot fool.
//!
//! At accept the daemon takes the peer's pidfd (SO_PEERPIDFD): a handle on the very
//! process that called connect(), which no later process with the same pid number can
//! take over. Each call then reads the pid behind that pidfd, looks its thread group
//! up in the kernel's task table (a read-only handle on the pinned map the programs
//! fill at exec, fork and cgroup attach), and only then checks that the pidfd's process
//! is still running. While it runs its pid cannot be reused, so the entry read is its
//! own; once it has exited, its connection gets nothing, whoever holds it now.
//!
//! Kernels without SO_PEERPIDFD (before 6.5) fall back to pidfd_open on the pid of
//! SO_PEERCRED at accept, with the process's start time read then and checked at each
//! call. That leaves the window between the caller's connect() and the daemon's
//! accept(), which SO_PEERPIDFD closes.

use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::Arc;

use zt_agent_common::{IDENTITY_QUARANTINE, NS_PER_CLOCK_TICK, TaskIdentity};
use zt_agent_host::proc::start_ticks;

use crate::ebpf::maps::TasksView;
use crate::policy::LAUNCH_CGROUP_ROOT;
use crate::state::{IdentityState, State};

/// `SO_PEERPIDFD` (include/uapi/asm-generic/socket.h), Linux 6.5.
const SO_PEERPIDFD: libc::c_int = 77;

/// How the peer's process was pinned down at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinned {
    /// SO_PEERPIDFD: the kernel's own reference to the connecting process.
    PeerPidfd,
    /// pidfd_open on SO_PEERCRED's pid at accept (kernels before 6.5).
    PidfdOpen,
}

impl Pinned {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PeerPidfd => "so_peerpidfd",
            Self::PidfdOpen => "pidfd_open",
        }
    }
}

/// The peer of one Workload API connection, as the kernel saw it at connect().
#[derive(Debug)]
pub struct Peer {
    /// SO_PEERCRED's pid, uid and gid.
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// None when the peer had already exited at accept.
    pub pidfd: Option<OwnedFd>,
    pub pinned: Pinned,
    /// Start time (clock ticks since boot) of the process read at accept, for the
    /// fallback's check.
    start_ticks: Option<u64>,
}

/// Why a caller gets nothing. `as_str` is the `reason` of its `svid` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No identity: the kernel has no entry for the caller's thread group.
    Unenrolled,
    /// The caller exec'd a selected file that failed its digest.
    Quarantined,
    /// The process that connected has exited (its pid may belong to another now).
    TaskExited,
    /// The identity is no longer in the policy in force.
    NotInPolicy,
    /// The caller asked for a SPIFFE ID that is not its own.
    NotEntitled,
    /// The connection has no peer credentials (not a unix socket peer).
    NoPeer,
}

impl Refusal {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unenrolled => "unenrolled",
            Self::Quarantined => "quarantined",
            Self::TaskExited => "task_exited",
            Self::NotInPolicy => "identity_not_in_policy",
            Self::NotEntitled => "spiffe_id_not_entitled",
            Self::NoPeer => "no_peer_credentials",
        }
    }
}

/// A caller attested from the kernel's record.
#[derive(Clone, Debug)]
pub struct Attested {
    pub identity: IdentityState,
    pub tgid: u32,
    pub uid: u32,
    /// The run this task belongs to: the cgroup name of its `zt-agent run` launch, or
    /// `task-<tgid>-<start ticks>` for tasks enrolled another way.
    pub run_id: String,
}

fn getsockopt_raw<T: Default>(fd: i32, opt: libc::c_int) -> std::io::Result<T> {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`.
    let r =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &raw mut len) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

#[derive(Default)]
#[repr(C)]
struct Ucred {
    pid: i32,
    uid: u32,
    gid: u32,
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Peer {
    /// The peer of an accepted unix stream.
    pub fn of(sock: &impl std::os::fd::AsFd) -> std::io::Result<Self> {
        let fd = sock.as_fd().as_raw_fd();
        let cred: Ucred = getsockopt_raw(fd, libc::SO_PEERCRED)?;
        let pid = u32::try_from(cred.pid).unwrap_or(0);
        let (pidfd, pinned) = match getsockopt_raw::<libc::c_int>(fd, SO_PEERPIDFD) {
            // SAFETY: SO_PEERPIDFD hands over a new pidfd.
            Ok(raw) if raw >= 0 => (
                Some(unsafe { OwnedFd::from_raw_fd(raw) }),
                Pinned::PeerPidfd,
            ),
            // The peer is gone already.
            Ok(_) => (None, Pinned::PeerPidfd),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => (None, Pinned::PeerPidfd),
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                (pidfd_open(pid).ok(), Pinned::PidfdOpen)
            }
            Err(e) => return Err(e),
        };
        let start_ticks = match pinned {
            Pinned::PidfdOpen => start_ticks(pid),
            Pinned::PeerPidfd => None,
        };
        Ok(Self {
            pid,
            uid: cred.uid,
            gid: cred.gid,
            pidfd,
            pinned,
            start_ticks,
        })
    }

    /// The pid of the pidfd's process in this pid namespace; None once it has exited.
    fn current_pid(&self) -> Option<u32> {
        let fd = self.pidfd.as_ref()?;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
        let pid: i64 = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))?
            .trim()
            .parse()
            .ok()?;
        u32::try_from(pid).ok().filter(|p| *p > 0)
    }

    /// Whether the process that connected is still running (a zombie counts as
    /// exited: a pidfd polls readable once the thread group has exited).
    #[must_use]
    pub fn alive(&self) -> bool {
        let Some(fd) = &self.pidfd else {
            return false;
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, no wait.
        let n = unsafe { libc::poll(&raw mut p, 1, 0) };
        if n != 0 {
            return false;
        }
        match self.pinned {
            Pinned::PeerPidfd => true,
            Pinned::PidfdOpen => start_ticks(self.pid) == self.start_ticks,
        }
    }

    /// A descriptor that polls readable when the peer exits (a copy, so that each
    /// stream can register its own with the reactor).
    pub fn exit_fd(&self) -> Option<OwnedFd> {
        self.pidfd
            .as_ref()
            .and_then(|fd| fd.as_fd().try_clone_to_owned().ok())
    }
}

/// The run a task belongs to, from its cgroup (`/zt/<identity>/<run id>` for `run`).
fn run_id(tgid: u32, identity: &str) -> String {
    let prefix = format!("{LAUNCH_CGROUP_ROOT}/{identity}/");
    let cgroup = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).unwrap_or_default();
    cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|path| path.strip_prefix(&prefix))
        .and_then(|rest| rest.split('/').next())
        .filter(|r| !r.is_empty())
        .map_or_else(
            || format!("task-{tgid}-{}", start_ticks(tgid).unwrap_or(0)),
            str::to_owned,
        )
}

/// The judgement on one table entry: pure, so that every outcome is unit-tested.
fn judge(
    entry: Option<TaskIdentity>,
    started: Option<u64>,
    state: &State,
) -> Result<IdentityState, Refusal> {
    let entry = entry.ok_or(Refusal::Unenrolled)?;
    // An entry names a process by its start time too: one left for an earlier holder
    // of the pid is not the caller's.
    if entry.start_ns != 0 && started.is_some_and(|t| entry.start_ns / NS_PER_CLOCK_TICK != t) {
        return Err(Refusal::Unenrolled);
    }
    if entry.identity == IDENTITY_QUARANTINE {
        return Err(Refusal::Quarantined);
    }
    state
        .by_id(entry.identity)
        .cloned()
        .ok_or(Refusal::NotInPolicy)
}

/// Attest the caller behind `peer`.
pub fn attest(peer: &Peer, tasks: &TasksView, state: &State) -> Result<Attested, Refusal> {
    let tgid = peer.current_pid().ok_or(Refusal::TaskExited)?;
    let identity = judge(tasks.get(tgid), start_ticks(tgid), state);
    let run = identity.as_ref().ok().map(|i| run_id(tgid, &i.name));
    // Checked after the lookup: while the process runs, `tgid` is its own, so the entry
    // (and the cgroup) read above were its own too.
    if !peer.alive() {
        return Err(Refusal::TaskExited);
    }
    let identity = identity?;
    Ok(Attested {
        identity,
        tgid,
        uid: peer.uid,
        run_id: run.unwrap_or_default(),
    })
}

/// Attestation shared with the server's calls.
pub type SharedPeer = Arc<Peer>;

#[cfg(test)]
mod tests {
    use super::*;
    use zt_agent_common::ENROLL_RUN;

    fn state() -> State {
        State {
            identities: vec![IdentityState {
                name: "coder".into(),
                id: 3,
                owner: "o".into(),
                spiffe_id: "spiffe://example.org/coder".into(),
                mode: "enforce".into(),
                cgroup_globs: vec![],
                limits: vec![],
            }],
            ..State::default()
        }
    }

    #[test]
    fn judges_entries() {
        let s = state();
        let t = |identity| {
            Some(TaskIdentity {
                identity,
                how: ENROLL_RUN,
                start_ns: 0,
            })
        };
        let j = |e, started| judge(e, started, &s);
        assert_eq!(j(None, None).expect_err("refused"), Refusal::Unenrolled);
        assert_eq!(
            j(t(IDENTITY_QUARANTINE), None).expect_err("refused"),
            Refusal::Quarantined
        );
        assert_eq!(j(t(9), None).expect_err("refused"), Refusal::NotInPolicy);
        assert_eq!(j(t(3), Some(7)).expect("coder").name, "coder");
        // An entry with a start time is the caller's only if the caller started then.
        let started = |ns| {
            Some(TaskIdentity {
                identity: 3,
                how: ENROLL_RUN,
                start_ns: ns,
            })
        };
        let at = 42 * NS_PER_CLOCK_TICK + 5;
        assert_eq!(j(started(at), Some(42)).expect("coder").name, "coder");
        assert_eq!(j(started(at), None).expect("coder").name, "coder");
        assert_eq!(
            j(started(at), Some(43)).expect_err("refused"),
            Refusal::Unenrolled
        );
    }

    #[test]
    fn own_process_is_pinned_and_alive() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let peer = Peer::of(&a).expect("peer");
        assert_eq!(peer.pid, std::process::id());
        assert_eq!(peer.current_pid(), Some(std::process::id()));
        assert!(peer.alive());
    }
}
