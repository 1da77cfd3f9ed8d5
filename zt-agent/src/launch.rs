//! Launching a workload under an identity (`zt-agent run --identity NAME -- CMD`).
//!
//! CMD starts in a fresh cgroup `<cgroup2>/zt/NAME/<run id>`, is enrolled in the kernel
//! before it executes its first instruction, and runs without capabilities, with
//! no_new_privs, as a non-root user. When it exits, whatever it left behind is killed
//! and the cgroup removed; its exit status is passed through.

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::Command;

use aya::maps::{Array, MapData};
use zt_agent_common::{
    ENROLL_RUN, IDENTITY_FLAG_IN_POLICY, IDENTITY_NONE, IDENTITY_QUARANTINE, IdentityConfig,
    map_names,
};

use crate::cli::RunArgs;
use crate::ebpf::loader::{self, PinDir, Pins};
use crate::ebpf::maps::{Cgroups, Tasks};
use crate::exit;
use crate::policy::LAUNCH_CGROUP_ROOT;
use crate::state::State;
use crate::sys::{cgroup, user};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("zt-agent run must be started as root (use sudo); CMD itself runs unprivileged")]
    NotRoot,
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("unknown identity {name:?}: the policy in force defines {known}")]
    UnknownIdentity { name: String, known: String },
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(
        "refusing to run the workload as root; pass `--user root` to do it anyway, or `--user NAME`"
    )]
    RootWorkload,
    #[error("{0} (is the daemon running with the same --pin-dir?)")]
    Pinned(#[source] crate::ebpf::loader::LoadError),
    #[error("pinned map {path}: {source} (is the daemon running with the same --pin-dir?)")]
    Map {
        path: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("launch cgroup: {0}")]
    LaunchCgroup(#[source] crate::sys::fs::FsError),
    #[error(transparent)]
    Mount(crate::sys::mounts::MountError),
    #[error(
        "no complete enforcement is pinned at {pin_dir}: is the daemon running (with the same --pin-dir)?"
    )]
    NoEnforcement { pin_dir: String },
    #[error(
        "pin directory {pin_dir} is not trusted: {why} (is the daemon running with the same --pin-dir?)"
    )]
    PinsNotTrusted { pin_dir: String, why: String },
    #[error(
        "identity {name:?} (id {id} in the daemon's state) does not match the kernel: {why}; refusing to enroll under it"
    )]
    IdentityNotInKernel { name: String, id: u32, why: String },
    #[error(
        "zt-agent run must run in the host's pid namespace: the kernel tags tasks by their host pid"
    )]
    PidNamespace,
    #[error("cannot start {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotRoot => exit::NOPERM,
            Self::State(_) | Self::Map { .. } | Self::Pinned(_) => exit::UNAVAILABLE,
            Self::UnknownIdentity { .. } => exit::CONFIG,
            Self::User(_) => exit::NOUSER,
            Self::RootWorkload => exit::USAGE,
            Self::Cgroup(_) | Self::LaunchCgroup(_) | Self::Mount(_) => exit::OSERR,
            Self::PinsNotTrusted { .. }
            | Self::NoEnforcement { .. }
            | Self::IdentityNotInKernel { .. } => exit::UNAVAILABLE,
            Self::PidNamespace => exit::USAGE,
            Self::Spawn { source, .. } => {
                if source.kind() == std::io::ErrorKind::NotFound {
                    exit::NOT_FOUND
                } else {
                    exit::CANNOT_EXEC
                }
            }
        }
    }
}

/// The account CMD runs as: `--user`, else SUDO_UID, else the invoking user.
fn target_account(args: &RunArgs) -> Result<user::Account, RunError> {
    let explicit = args.user.is_some();
    let acct = match &args.user {
        Some(u) => user::lookup(u)?,
        None => match std::env::var("SUDO_UID") {
            Ok(uid) => user::lookup(&uid)?,
            // SAFETY: getuid has no preconditions.
            Err(_) => user::lookup(&unsafe { libc::getuid() }.to_string())?,
        },
    };
    if acct.uid == 0 && !explicit {
        return Err(RunError::RootWorkload);
    }
    Ok(acct)
}

/// Run CMD under the identity and return the exit status to pass on (its own, or
/// 128+N when a signal N ended it).
///
/// # Errors
/// Anything that keeps CMD from starting enrolled and confined.
pub fn launch(args: &RunArgs) -> Result<u8, RunError> {
    if !zt_agent_host::is_root() {
        return Err(RunError::NotRoot);
    }
    if !in_host_pid_namespace() {
        return Err(RunError::PidNamespace);
    }
    let pins = PinDir::new(&args.dirs.pin_dir);
    match pins.inspect().map_err(RunError::Pinned)? {
        // The agent's own pins, attached: an incomplete set (a link removed by hand)
        // still enforces with the rest, so workloads still start under it.
        Pins::Agent { links, .. } if links > 0 => {}
        Pins::Foreign { owner, found } => {
            return Err(RunError::PinsNotTrusted {
                pin_dir: pins.root.display().to_string(),
                why: format!(
                    "not made by zt-agent (owner uid {owner}; found: {})",
                    Pins::describe_found(&found)
                ),
            });
        }
        Pins::Agent { .. } | Pins::Absent => {
            return Err(RunError::NoEnforcement {
                pin_dir: pins.root.display().to_string(),
            });
        }
    }
    // The pins must be the agent's (above). The state is trusted only when root's and
    // writable by no one else (`State::read`), and then checked against the kernel:
    // the identity must be one the kernel has in its policy, and the cgroup2 root is
    // the one this host mounts, whatever the state says.
    let state = State::read(&args.dirs.state_dir)?;
    let ident = state
        .identity(&args.identity)
        .ok_or_else(|| RunError::UnknownIdentity {
            name: args.identity.clone(),
            known: {
                let names: Vec<&str> = state.identities.iter().map(|i| i.name.as_str()).collect();
                if names.is_empty() {
                    "no identities".to_owned()
                } else {
                    names.join(", ")
                }
            },
        })?
        .clone();
    let acct = target_account(args)?;

    check_identity_in_kernel(&pins, &state, &ident)?;
    let cgroup_root = crate::sys::mounts::cgroup2_mount().map_err(RunError::Mount)?;
    let mut tasks: Tasks = loader::open_pinned_map(&pins, map_names::TASKS)
        .map(Tasks)
        .map_err(RunError::Pinned)?;
    let mut cgroups: Cgroups = loader::open_pinned_map(&pins, map_names::CGROUPS)
        .map(Cgroups)
        .map_err(RunError::Pinned)?;

    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let dir: PathBuf = cgroup::create_launch(
        &cgroup_root,
        &[
            LAUNCH_CGROUP_ROOT.trim_start_matches('/'),
            &ident.name,
            &run_id,
        ],
    )
    .map_err(RunError::LaunchCgroup)?;
    let cg_id = cgroup::cgroup_id(&dir)?;
    // The kernel enrolls whatever enters this cgroup (cgroup_attach_task), CMD first.
    cgroups
        .insert_launch(cg_id, ident.id)
        .map_err(|source| RunError::Map {
            path: pins.map(map_names::CGROUPS).display().to_string(),
            source,
        })?;

    let procs = dir.join("cgroup.procs");
    let mut cmd = Command::new(&args.cmd[0]);
    cmd.args(&args.cmd[1..]);
    workload_env(&mut cmd, &acct, &args.env);
    let identity = ident.id;
    let filter = crate::sys::seccomp::socket_filter();
    let landlock = crate::sys::landlock::abi_version();
    if let Some(note) = crate::sys::landlock::missing_at(landlock) {
        eprintln!("zt-agent run: {note}");
    }
    // SAFETY: the closure runs in the forked child before exec; the launcher is
    // single-threaded, so the calls below cannot deadlock on a lock held by another
    // thread.
    unsafe {
        cmd.pre_exec(move || {
            // Enter the cgroup (which enrolls), enroll explicitly as well, then drop
            // privileges: CMD's first instruction already runs under its identity.
            std::fs::write(&procs, b"0")?;
            let tgid = libc::getpid() as u32;
            tasks
                .enroll(tgid, identity, ENROLL_RUN)
                .map_err(std::io::Error::other)?;
            // No controlling terminal: a workload must not push keystrokes into the
            // shell that started it (TIOCSTI). The launcher forwards signals instead.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Descriptors the launcher inherited do not reach CMD.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            user::drop_privileges(&acct)?;
            // No ptrace, /proc/PID/mem, signals or abstract unix sockets of processes
            // outside the workload.
            if let Some(abi) = landlock {
                crate::sys::landlock::restrict_self(abi)?;
            }
            // Sockets only of the families the kernel hooks judge or that stay local.
            crate::sys::seccomp::install(&filter)
        });
    }
    let spawned = cmd.spawn();
    let result = match spawned {
        Ok(mut child) => {
            forward_signals_to(child.id());
            let status = loop {
                match child.wait() {
                    Ok(s) => break Ok(s),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            if let Ok(s) = &status
                && s.signal() == Some(libc::SIGKILL)
            {
                // The exec guard stops disallowed execs with SIGKILL where BPF LSM is
                // unavailable; say so rather than leave a bare 137.
                eprintln!(
                    "zt-agent run: {} was killed by SIGKILL; if identity `{}` restricts exec (spec.exec.allow), it exec'd a file that is not allowed (the exec event names it)",
                    args.cmd[0], args.identity
                );
            }
            match status {
                Ok(s) => Ok(s
                    .code()
                    .map(|c| u8::try_from(c).unwrap_or(1))
                    .or_else(|| s.signal().map(exit::signalled))
                    .unwrap_or(1)),
                Err(source) => Err(RunError::Spawn {
                    cmd: args.cmd[0].clone(),
                    source,
                }),
            }
        }
        Err(source) => Err(RunError::Spawn {
            cmd: args.cmd[0].clone(),
            source,
        }),
    };
    // Kill what CMD left behind and remove the cgroup, whatever happened above.
    if let Err(e) = cgroup::kill_and_remove(&dir) {
        eprintln!("zt-agent run: cleaning up {}: {e}", dir.display());
    }
    let _ = cgroups.remove(cg_id);
    result
}

/// One pid level in NSpid: this process sees itself as the kernel does.
fn in_host_pid_namespace() -> bool {
    zt_agent_host::proc::Status::of_self()
        .and_then(|s| s.field("NSpid").map(|v| v.split_whitespace().count()))
        .is_some_and(|levels| levels == 1)
}

/// PATH of a workload: the system's directories only, none a user can write.
pub const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Variables a workload gets from the caller unless `--env` says otherwise.
const PASSED: [&str; 2] = ["LANG", "TERM"];

/// The workload's environment: a short allowlist, never the caller's whole environment
/// (LD_PRELOAD, credentials, root's PATH): PATH set to [`SAFE_PATH`], the target
/// user's HOME, USER and LOGNAME, the caller's LANG and TERM, and each `--env NAME`
/// (the caller's value) or `--env NAME=VALUE`.
fn workload_env(cmd: &mut Command, acct: &user::Account, extra: &[String]) {
    cmd.env_clear();
    cmd.env("PATH", SAFE_PATH);
    if let Some(home) = &acct.home {
        cmd.env("HOME", home);
    }
    if let Some(name) = &acct.name {
        cmd.env("USER", name).env("LOGNAME", name);
    }
    for k in PASSED {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    for e in extra {
        match e.split_once('=') {
            Some((k, v)) => {
                cmd.env(k, v);
            }
            None => {
                if let Some(v) = std::env::var_os(e) {
                    cmd.env(e, v);
                }
            }
        }
    }
}

/// The identity `state.json` names must be one the kernel enforces now: its id in
/// range, not the quarantine, recorded for that name alone, and marked in the
/// kernel's identity table as part of the installed policy.
fn check_identity_in_kernel(
    pins: &PinDir,
    state: &State,
    ident: &crate::state::IdentityState,
) -> Result<(), RunError> {
    let refuse = |why: String| RunError::IdentityNotInKernel {
        name: ident.name.clone(),
        id: ident.id,
        why,
    };
    if ident.id == IDENTITY_NONE || ident.id >= IDENTITY_QUARANTINE {
        return Err(refuse("not an id the daemon assigns".into()));
    }
    if state.ids.get(&ident.name) != Some(&ident.id) {
        return Err(refuse(
            "the state's id table gives the name another id".into(),
        ));
    }
    if let Some((other, _)) = state
        .ids
        .iter()
        .find(|(n, id)| **id == ident.id && **n != ident.name)
    {
        return Err(refuse(format!(
            "the state gives identity {other:?} the same id"
        )));
    }
    let configs: Array<MapData, IdentityConfig> =
        loader::open_pinned_map(pins, map_names::IDENTITIES).map_err(RunError::Pinned)?;
    let cfg = configs.get(&ident.id, 0).map_err(|source| RunError::Map {
        path: pins.map(map_names::IDENTITIES).display().to_string(),
        source,
    })?;
    if cfg.flags & IDENTITY_FLAG_IN_POLICY == 0 {
        return Err(refuse(
            "the kernel's identity table has no identity in force under that id".into(),
        ));
    }
    Ok(())
}

static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// CMD has its own session, so terminal signals reach the launcher only: pass them
/// on, and stay alive to clean up after CMD.
fn forward_signals_to(pid: u32) {
    CHILD.store(pid as i32, std::sync::atomic::Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: installing an async-signal-safe handler.
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
}
