//! The plan: everything the kernel gets, computed from the policy, the identity ids and
//! the host's facts (the files the policy names, its cgroup tree, its containers and
//! units), without touching the
//! kernel. `policy check` builds one to report what a policy would do on this host; the
//! daemon builds one at every reload and hands it to the enforcer, which alone writes
//! the maps. Two plans can be compared with [`diff`].

mod build;
mod diff;

use std::collections::BTreeMap;

pub use build::{CgroupClaim, PlanError, build, cgroups};
pub use diff::{EntryDiff, PlanDiff, diff};

use crate::dns::server::DnsPolicy;
use crate::identity::resolve::Resolved;
use crate::policy::Compiled;
use crate::workload::select::Workloads;

/// Everything one policy puts into the kernel on this host.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Every name ever given an id by this enforcement, the policy's own included.
    pub ids: BTreeMap<String, u32>,
    /// The egress tries and what the daemon reports about each identity.
    pub compiled: Compiled,
    /// The exec side: selectors and allowlists resolved to files, identity settings,
    /// and what an operator should know about the files.
    pub exec: Resolved,
    /// The names each identity may resolve, for the resolver.
    pub dns: DnsPolicy,
    /// The selectors that resolve to cgroups through host facts: containers, pods and
    /// systemd units.
    pub workloads: Workloads,
}

impl Plan {
    /// Hex sha256 of the policy source.
    #[must_use]
    pub fn sha256(&self) -> &str {
        &self.compiled.sha256
    }
}

/// A host with no files at all, for the plan's unit tests.
#[cfg(test)]
pub(crate) struct NoFiles;

#[cfg(test)]
impl crate::identity::resolve::FileView for NoFiles {
    fn id(&mut self, _: &str) -> std::io::Result<crate::identity::files::FileId> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn digest(&mut self, _: &str) -> std::io::Result<(crate::identity::files::FileId, String)> {
        Err(std::io::ErrorKind::NotFound.into())
    }
}
