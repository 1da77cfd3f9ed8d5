//! What the daemon tells `zt-agent run` and its own successor: stable identity ids,
//! the active policy's identities, and where cgroup2 is. Root-only, written atomically.
//!
//! The directory is created 0700 and the file 0600, both root's; an existing directory
//! with another owner or a looser mode is refused, and the temporary file is created
//! exclusively, never through a link (`sys::fs`). Readers (`run`, `ps`, `status`, a
//! successor daemon) trust the file only when root owns it and the directory, and no
//! one else may write either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys::fs::{Dir, FsError};

pub const DEFAULT_STATE_DIR: &str = "/run/zt-agent";
const FILE: &str = "state.json";
/// Mode of the state directory and of the file.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// Largest state file read (ids, identities and the paths a policy names).
const MAX_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("zt-agent daemon state {path} is missing: is the daemon running? ({source})")]
    Missing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("zt-agent daemon state {path} is unreadable: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("zt-agent daemon state {path} is not trusted: {source}")]
    Untrusted {
        path: String,
        #[source]
        source: FsError,
    },
    #[error("writing the daemon state in {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: FsError,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityState {
    pub name: String,
    pub id: u32,
    pub owner: String,
    pub spiffe_id: String,
    pub mode: String,
    #[serde(default)]
    pub cgroup_globs: Vec<String>,
    /// `spec.limits`, as the accountant enforces them.
    #[serde(default)]
    pub limits: Vec<crate::policy::Limit>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub cgroup_root: PathBuf,
    /// Every name ever given an id by this enforcement (removed identities keep theirs,
    /// so their live tasks stay in deny-all rather than taking someone else's id).
    pub ids: BTreeMap<String, u32>,
    /// Identities of the policy in force.
    pub identities: Vec<IdentityState>,
    pub policy_sha256: String,
    /// Where the daemon that wrote this serves metrics (the bound address, so that
    /// port 0 works), and its pid.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    #[serde(default)]
    pub daemon_pid: Option<u32>,
    /// How disallowed execs are stopped (`lsm` or `tp_btf_sigkill`).
    #[serde(default)]
    pub exec_guard: Option<String>,
    /// Port of the resolver enrolled tasks' DNS goes to, on 127.0.0.1 and ::1.
    #[serde(default)]
    pub dns_port: Option<u16>,
    /// The SPIFFE Workload API's socket, absent when it is not served.
    #[serde(default)]
    pub workload_api: Option<PathBuf>,
    /// A path for each file the policy names, keyed by "major:minor:inode" as the
    /// kernel sees it (see `identity::files`).
    #[serde(default)]
    pub paths: BTreeMap<String, String>,
}

impl State {
    #[must_use]
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Read the state file, trusted only when it and its directory are root's and no
    /// one else may write them.
    pub fn read(dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(dir);
        let shown = path.display().to_string();
        let untrusted_or_missing = |source: FsError| match source {
            FsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                StateError::Missing {
                    path: shown.clone(),
                    source,
                }
            }
            source => StateError::Untrusted {
                path: shown.clone(),
                source,
            },
        };
        let d = Dir::open(dir).map_err(untrusted_or_missing)?;
        d.require_private_writes().map_err(untrusted_or_missing)?;
        let bytes = d
            .read_trusted(FILE, MAX_BYTES)
            .map_err(untrusted_or_missing)?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
            path: shown.clone(),
            source,
        })
    }

    /// Create the state directory if it is missing, and refuse one the agent would not
    /// write to (another owner, a looser mode, a link, a path others may change).
    pub fn check_dir(dir: &Path) -> Result<(), StateError> {
        Dir::ensure(dir, DIR_MODE)
            .map(drop)
            .map_err(|source| StateError::Write {
                path: dir.display().to_string(),
                source,
            })
    }

    pub fn write(&self, dir: &Path) -> Result<(), StateError> {
        let werr = |source| StateError::Write {
            path: dir.display().to_string(),
            source,
        };
        let d = Dir::ensure(dir, DIR_MODE).map_err(werr)?;
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        d.write_atomic(FILE, &text, FILE_MODE).map_err(werr)
    }

    /// Remove the state file (never through a link) and the directory if it is empty.
    pub fn remove(dir: &Path) {
        if let Ok(d) = Dir::open(dir) {
            let _ = d.remove(FILE);
            let _ = d.remove(&format!("{FILE}.tmp"));
        }
        // rmdir does not follow a link either.
        let _ = std::fs::remove_dir(dir);
    }

    #[must_use]
    pub fn identity(&self, name: &str) -> Option<&IdentityState> {
        self.identities.iter().find(|i| i.name == name)
    }

    #[must_use]
    pub fn by_id(&self, id: u32) -> Option<&IdentityState> {
        self.identities.iter().find(|i| i.id == id)
    }

    /// The name of an identity id, the reserved quarantine included.
    #[must_use]
    pub fn label_of(&self, id: u32) -> String {
        if id == zt_agent_common::IDENTITY_QUARANTINE {
            return crate::policy::QUARANTINE_NAME.to_owned();
        }
        self.name_of(id)
            .map_or_else(|| format!("id-{id}"), str::to_owned)
    }

    #[must_use]
    pub fn name_of(&self, id: u32) -> Option<&str> {
        self.ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
    }
}
