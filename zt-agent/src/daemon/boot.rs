//! Boot: the kernel side loaded fresh, or adopted from what an earlier daemon pinned.
//! Either way nothing is attached before a policy can be installed, and nothing that
//! is attached is ever detached here.

use std::path::PathBuf;

use super::DaemonError;
use crate::cli::DaemonArgs;
use crate::ebpf::loader::{self, KernelMaps, Loaded, PinDir, Pins};
use crate::metrics::PolicyMetrics;
use crate::policy::{self, Policy, PolicyErrors};
use crate::state::State;
use crate::sys::mounts;

/// The kernel side, ready for the policy.
pub struct Booted {
    pub pins: PinDir,
    pub maps: KernelMaps,
    /// Programs loaded but not attached yet: a fresh start. `None`: adopted.
    pub loaded: Option<Loaded>,
    /// The recorded state of an adopted enforcement, or a fresh one.
    pub state: State,
    /// The policy directory as found at start-up.
    pub policy: Result<Policy, PolicyErrors>,
    pub cgroup_root: PathBuf,
}

impl Booted {
    #[must_use]
    pub const fn adopted(&self) -> bool {
        self.loaded.is_none()
    }
}

pub fn boot(args: &DaemonArgs, metrics: &PolicyMetrics) -> Result<Booted, DaemonError> {
    let pins = PinDir::new(&args.dirs.pin_dir);
    // Every feature the programs need, by name, before anything is loaded or adopted.
    crate::ebpf::features::probe_all()?;
    mounts::ensure_bpffs()?;
    let cgroup_root = mounts::cgroup2_mount()?;
    let policy = policy::load_dir(&args.policy, policy::Trust::Root);

    // The state directory is checked before anything is loaded: one the agent will
    // not write is found before the programs are attached, not after.
    State::check_dir(&args.dirs.state_dir)?;

    let (maps, loaded) = match pins.inspect()? {
        Pins::Agent { complete: true, .. } => {
            tracing::info!(pin_dir = %pins.root.display(), "adopting pinned enforcement");
            (KernelMaps::open_pinned(&pins)?, None)
        }
        Pins::Agent { links, .. } if links > 0 => {
            // Something is attached, but not the set this binary expects (a crash
            // mid-start, or another version). Removing it would drop enforcement and
            // every identity; leave that to the operator.
            return Err(DaemonError::Incomplete {
                pin_dir: pins.root.display().to_string(),
            });
        }
        Pins::Foreign { owner, found } => {
            return Err(DaemonError::Planted {
                pin_dir: pins.root.display().to_string(),
                owner,
                found: Pins::describe_found(&found),
            });
        }
        found @ (Pins::Agent { .. } | Pins::Absent) => {
            if found != Pins::Absent {
                // A half-finished start-up of the agent's with nothing attached: start over.
                pins.remove_all()?;
            }
            // A fresh start needs a valid policy before anything is attached.
            if let Err(errs) = &policy {
                metrics.rejected();
                return Err(DaemonError::Policy {
                    dir: args.policy.display().to_string(),
                    errors: errs.to_string(),
                });
            }
            let (loaded, maps) = loader::load(&pins)?;
            (maps, Some(loaded))
        }
    };
    let mut state = if loaded.is_none() {
        // Without the recorded ids the kernel's entries cannot be matched to names;
        // guessing would judge tasks by another identity's rules.
        State::read(&args.dirs.state_dir).map_err(|e| DaemonError::AdoptWithoutState {
            pin_dir: pins.root.display().to_string(),
            source: e,
        })?
    } else {
        State::default()
    };
    state.cgroup_root.clone_from(&cgroup_root);
    Ok(Booted {
        pins,
        maps,
        loaded,
        state,
        policy,
        cgroup_root,
    })
}
