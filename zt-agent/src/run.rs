//! `zt-agent run --identity NAME -- CMD`: launch a workload under an identity.
//!
//! CMD starts in a fresh cgroup `<cgroup2>/zt/NAME/<run id>`, is enrolled in the kernel
//! before it executes its first instruction, and runs without capabilities, with
//! no_new_privs, as a non-root user. When it exits, whatever it left behind is killed
//! and the cgroup removed; its exit status is passed through.

use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::Command;

use aya::maps::{HashMap, Map, MapData};
use zt_agent_common::{ENROLL_RUN, TaskIdentity, map_names};

use crate::cli::RunArgs;
use crate::ebpf::loader::PinDir;
use crate::exit;
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
    #[error("pinned map {path}: {source} (is the daemon running with the same --pin-dir?)")]
    Map {
        path: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error("cannot start {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::NotRoot => exit::NOPERM,
            Self::State(_) | Self::Map { .. } => exit::UNAVAILABLE,
            Self::UnknownIdentity { .. } => exit::CONFIG,
            Self::User(_) => exit::NOUSER,
            Self::RootWorkload => exit::USAGE,
            Self::Cgroup(_) => exit::OSERR,
            Self::Spawn { source, .. } => {
                if source.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                }
            }
        }
    }
}

pub fn main(args: &RunArgs) -> u8 {
    match launch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("zt-agent run: {}", exit::chain(&e));
            e.exit_code()
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

fn launch(args: &RunArgs) -> Result<u8, RunError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(RunError::NotRoot);
    }
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

    let pins = PinDir::new(&args.dirs.pin_dir);
    let open = |name: &str| -> Result<Map, RunError> {
        let path = pins.map(name);
        let err = |source| RunError::Map {
            path: path.display().to_string(),
            source,
        };
        Map::from_map_data(MapData::from_pin(&path).map_err(err)?).map_err(err)
    };
    let mut tasks: HashMap<MapData, u32, TaskIdentity> = open(map_names::TASKS)?
        .try_into()
        .map_err(|source| RunError::Map {
            path: pins.map(map_names::TASKS).display().to_string(),
            source,
        })?;
    let mut cgroups: HashMap<MapData, u64, u32> =
        open(map_names::CGROUPS)?
            .try_into()
            .map_err(|source| RunError::Map {
                path: pins.map(map_names::CGROUPS).display().to_string(),
                source,
            })?;

    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let dir: PathBuf = state.cgroup_root.join("zt").join(&ident.name).join(run_id);
    cgroup::create(&dir)?;
    let cg_id = cgroup::cgroup_id(&dir)?;
    // Anything placed in this cgroup later is enrolled too.
    let _ = cgroups.insert(&cg_id, &ident.id, 0);

    let procs = dir.join("cgroup.procs");
    let mut cmd = Command::new(&args.cmd[0]);
    cmd.args(&args.cmd[1..]);
    let identity = ident.id;
    // SAFETY: the closure runs in the forked child before exec; the launcher is
    // single-threaded, so the calls below cannot deadlock on a lock held by another
    // thread.
    unsafe {
        cmd.pre_exec(move || {
            // Enter the cgroup, then enroll, then drop privileges: by the time CMD runs
            // its first instruction the kernel already judges it by its identity.
            std::fs::write(&procs, b"0")?;
            let tgid = libc::getpid() as u32;
            tasks
                .insert(
                    &tgid,
                    &TaskIdentity {
                        identity,
                        how: ENROLL_RUN,
                    },
                    0,
                )
                .map_err(std::io::Error::other)?;
            user::drop_privileges(acct)
        });
    }
    let spawned = cmd.spawn();
    let result = match spawned {
        Ok(mut child) => {
            // Ctrl-C reaches CMD through the terminal's process group; the launcher
            // stays to clean up after it.
            // SAFETY: setting a signal disposition to SIG_IGN.
            unsafe {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                libc::signal(libc::SIGQUIT, libc::SIG_IGN);
            }
            let status = loop {
                match child.wait() {
                    Ok(s) => break Ok(s),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            match status {
                Ok(s) => Ok(s
                    .code()
                    .map(|c| u8::try_from(c).unwrap_or(1))
                    .or_else(|| s.signal().map(|sig| (128 + sig) as u8))
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
    let _ = cgroups.remove(&cg_id);
    result
}
