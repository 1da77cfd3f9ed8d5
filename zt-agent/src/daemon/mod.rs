//! `zt-agent daemon`: the kernel side loaded or adopted, then a few parts that each
//! own one job: the enforcer (the one writer of the policy maps), the reconciler with
//! its ticker (policy, files, cgroups), the event pump and the sink around the bus, the
//! resolver, metrics, the tamper guard (programs attached, pins in place), the grant
//! manager with its control socket, and the SPIFFE Workload API.
//!
//! The daemon is never in the verdict path. Killing it leaves the pinned programs
//! enforcing the last policy; a new daemon adopts them without detaching anything.

mod boot;
mod control;
mod enforcer;
mod event_pump;
mod guard;
mod metrics;
mod parts;
mod reconciler;
mod resolver;
mod sockets;
mod start;
mod ticker;

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::DaemonArgs;
use crate::ebpf::loader::{LoadError, PinDir, Pins};
use crate::exit;
use crate::metrics::Metrics;
use crate::state::State;
use crate::sys::mounts;
use parts::Parts;

pub use enforcer::Enforcer;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("zt-agent daemon must run as root (it loads eBPF programs and writes cgroups)")]
    NotRoot,
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Feature(#[from] crate::ebpf::features::Missing),
    #[error("policy {dir}:\n{errors}")]
    Policy { dir: String, errors: String },
    #[error("installing the policy into the kernel: {0}")]
    Install(#[source] aya::maps::MapError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("event sink {spec}: {source}")]
    Sink {
        spec: String,
        #[source]
        source: crate::sys::fs::FsError,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "{pin_dir} holds attached programs but not the complete set this version pins; enforcement is left as it is. Run `zt-agent daemon --teardown` (which stops enforcement) and start again"
    )]
    Incomplete { pin_dir: String },
    #[error(
        "{pin_dir} was not made by zt-agent (its owner is uid {owner}; found: {found}): another user may have created it first, since bpffs is world-writable. Nothing was loaded. Run `zt-agent daemon --teardown` to remove it, then start again"
    )]
    Planted {
        pin_dir: String,
        owner: u32,
        found: String,
    },
    #[error(
        "pinned enforcement at {pin_dir} cannot be adopted: {source}. Run `zt-agent daemon --teardown` (which stops enforcement) and start again"
    )]
    AdoptWithoutState {
        pin_dir: String,
        #[source]
        source: crate::state::StateError,
    },
    #[error(transparent)]
    EnforcerStopped(#[from] enforcer::Stopped),
    #[error(transparent)]
    Store(#[from] crate::grants::store::StoreError),
    #[error(transparent)]
    Observe(crate::observe::ObserveError),
    #[error("control socket {path}: {source}")]
    Control {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Workload(#[from] crate::spiffe::SpiffeError),
    #[error("{part} stopped: {why}; enforcement stays in place")]
    PartStopped { part: &'static str, why: String },
    #[error("tamper guard: {0}")]
    Guard(#[from] crate::tamper::GuardError),
}

impl DaemonError {
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::NotRoot => exit::NOPERM,
            Self::Policy { .. } | Self::Sink { .. } => exit::CONFIG,
            Self::Store(_) | Self::Observe(_) | Self::Control { .. } => exit::CANTCREAT,
            Self::State(
                crate::state::StateError::Untrusted { .. } | crate::state::StateError::Write { .. },
            ) => exit::CONFIG,
            Self::Mount(_)
            | Self::Load(_)
            | Self::Feature(_)
            | Self::Incomplete { .. }
            | Self::Planted { .. }
            | Self::AdoptWithoutState { .. } => exit::UNAVAILABLE,
            Self::PartStopped { .. } | Self::EnforcerStopped(_) => exit::SOFTWARE,
            _ => exit::OSERR,
        }
    }
}

/// Detach and remove everything pinned, and the state file.
pub fn teardown(args: &DaemonArgs) -> Result<(), DaemonError> {
    if !zt_agent_host::is_root() {
        return Err(DaemonError::NotRoot);
    }
    let pins = PinDir::new(&args.dirs.pin_dir);
    match pins.inspect() {
        Ok(Pins::Foreign { owner, found }) => tracing::warn!(
            pin_dir = %pins.root.display(),
            owner,
            found = %Pins::describe_found(&found),
            "removing a pin directory zt-agent did not make"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %exit::chain(&e), "inspecting the pin directory"),
    }
    pins.remove_all()?;
    // Grants, requests and the audit head belong to this enforcement: start afresh.
    for f in [
        crate::grants::store::Store::path(&args.dirs.state_dir),
        crate::events::chain::head_path(&args.dirs.state_dir),
        control::socket_path(&args.dirs.state_dir),
    ] {
        let _ = std::fs::remove_file(&f);
        for suffix in ["-wal", "-shm"] {
            let mut side = f.clone().into_os_string();
            side.push(suffix);
            let _ = std::fs::remove_file(side);
        }
    }
    crate::spiffe::remove_keys(&args.dirs.state_dir);
    crate::spiffe::remove_socket(&args.workload.socket);
    State::remove(&args.dirs.state_dir);
    tracing::info!(pin_dir = %pins.root.display(), "removed all pinned programs, links and maps");
    Ok(())
}

/// How long the sink may take to write what is queued when the daemon stops.
const DRAIN: Duration = Duration::from_secs(2);

/// Start, serve until SIGTERM or SIGINT (or until a part stops), drain the events,
/// and leave enforcement in place.
pub async fn run(args: DaemonArgs) -> Result<(), DaemonError> {
    if !zt_agent_host::is_root() {
        return Err(DaemonError::NotRoot);
    }
    // Take the signals before anything else: once state.json says the daemon runs, a
    // SIGHUP (reload) or SIGTERM must find a handler, not the default action that ends
    // the process. The handlers stay installed; the parts take their own streams.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let _hup = signal(SignalKind::hangup())?;
    let sink = start::open_sink(&args)?;
    let metrics = Metrics::new();
    let booted = boot::boot(&args, &metrics.policy)?;
    let started = start::start(&args, booted, sink, metrics).await?;
    let mut parts = Parts::spawn(started)?;
    tracing::info!("zt-agent daemon running");
    crate::sys::notify::ready();
    let outcome = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        (part, why) = parts.stopped() => Err(DaemonError::PartStopped { part, why }),
    };
    parts.drain(DRAIN).await;
    // Enforcement stays pinned: stopping the daemon never opens the gates.
    tracing::info!(
        "zt-agent daemon stopped; enforcement stays in place (use --teardown to remove it)"
    );
    outcome
}
