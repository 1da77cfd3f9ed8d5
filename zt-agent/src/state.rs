//! What the daemon tells `zt-agent run` and its own successor: stable identity ids,
//! the active policy's identities, and where cgroup2 is. Root-only, written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_STATE_DIR: &str = "/run/zt-agent";
const FILE: &str = "state.json";

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
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
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

    pub fn read(dir: &Path) -> Result<Self, StateError> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| StateError::Missing {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn write(&self, dir: &Path) -> Result<(), StateError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = Self::path(dir);
        let werr = |source| StateError::Write {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(werr)?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(werr)?;
        f.write_all(&text).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        std::fs::rename(&tmp, &path).map_err(werr)
    }

    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(Self::path(dir));
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
