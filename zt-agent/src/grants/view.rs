//! What the grant manager works from and hands out: the `ask` and `when` rules of the
//! policy in force (from the plan), and, for the resolver, the names each identity may
//! resolve right now through a grant or an open window, and the names it may ask for.

use std::collections::BTreeMap;

use zt_agent_common::PortRange;

use super::model::Scope;
use crate::policy::{Compiled, DnsName, DynamicKind, DynamicRule, Mode};

/// One identity of the policy in force, as grants see it.
#[derive(Clone, Debug)]
pub struct PolicyIdentity {
    pub id: u32,
    pub name: String,
    pub owner: String,
    pub audit: bool,
    /// `spec.grants.maxDuration`, seconds.
    pub max_grant: u64,
    pub dynamic: Vec<DynamicRule>,
}

/// The policy in force, by name.
#[derive(Clone, Debug, Default)]
pub struct GrantPolicy {
    pub by_name: BTreeMap<String, PolicyIdentity>,
}

impl GrantPolicy {
    #[must_use]
    pub fn from_compiled(c: &Compiled) -> Self {
        Self {
            by_name: c
                .identities
                .iter()
                .map(|i| {
                    (
                        i.name.clone(),
                        PolicyIdentity {
                            id: i.id,
                            name: i.name.clone(),
                            owner: i.owner.clone(),
                            audit: i.mode == Mode::Audit,
                            max_grant: i.max_grant,
                            dynamic: i.dynamic.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    #[must_use]
    pub fn by_id(&self, id: u32) -> Option<&PolicyIdentity> {
        self.by_name.values().find(|i| i.id == id)
    }
}

impl PolicyIdentity {
    /// The `ask` rules, with their position in `spec.egress`.
    pub fn asks(&self) -> impl Iterator<Item = (&DynamicRule, u64)> {
        self.dynamic.iter().filter_map(|r| match r.kind {
            DynamicKind::Ask { max_grant } => Some((r, max_grant)),
            DynamicKind::Window(_) => None,
        })
    }
}

/// Where a name allowance comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Grant(String),
    /// An open window of the rule at this position in `spec.egress`.
    Window(usize),
}

/// Names an identity may resolve now, for some ports, for a scope, until a deadline.
#[derive(Clone, Debug)]
pub struct NameAllowance {
    pub names: Vec<DnsName>,
    pub ranges: Vec<PortRange>,
    pub scope: Scope,
    /// Boot-clock nanoseconds.
    pub deadline_ns: u64,
    pub source: Source,
}

/// An `ask` rule's names.
#[derive(Clone, Debug)]
pub struct AskNames {
    pub rule: usize,
    pub names: Vec<DnsName>,
}

#[derive(Clone, Debug, Default)]
pub struct IdentityNames {
    pub allowances: Vec<NameAllowance>,
    pub asks: Vec<AskNames>,
}

/// The resolver's view, by identity id.
#[derive(Clone, Debug, Default)]
pub struct NameView {
    pub by_id: BTreeMap<u32, IdentityNames>,
}
