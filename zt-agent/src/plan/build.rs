//! Policy + ids + host facts -> [`Plan`]. Pure but for the file view, which unit tests
//! replace with synthetic files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Plan;
use crate::dns::server::DnsPolicy;
use crate::identity::resolve::{self, FileView, ResolveError};
use crate::policy::{self, CompileError, Policy};
use crate::state::IdentityState;

/// Why a policy cannot become a plan on this host.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Resolve(Vec<ResolveError>),
    /// The `ask` and `when` rules alone do not fit the grant tries.
    #[error("the policy's ask and when rules: {0}")]
    Grants(#[from] crate::grants::entries::EntriesError),
}

/// Build the plan of `policy`. `existing` holds the ids an enforcement already gave
/// out (every name keeps its id); `files` is how the host's files are looked up.
///
/// # Errors
/// The policy does not compile (ids, port ranges, capacities), or its files do not
/// resolve into entries the kernel can hold (one file selected twice, capacities).
pub fn build(
    policy: &Policy,
    existing: &BTreeMap<String, u32>,
    files: &mut dyn FileView,
) -> Result<Plan, PlanError> {
    let ids = policy::assign_ids(existing, policy);
    let compiled = policy::compile(policy, &ids)?;
    let exec = resolve::resolve(policy, &ids, files).map_err(PlanError::Resolve)?;
    let dns = DnsPolicy::from_compiled(&compiled);
    // Windows counted open: the rules must fit the grant tries whenever they apply.
    let dynamic: Vec<_> = compiled
        .identities
        .iter()
        .flat_map(|i| crate::grants::entries::rule_allowances(i.id, &i.dynamic, |_| u64::MAX))
        .collect();
    crate::grants::entries::build(&dynamic)?;
    Ok(Plan {
        ids,
        compiled,
        exec,
        dns,
    })
}

/// The cgroups of `tree` (relative path below the cgroup2 mount, directory) that an
/// identity selects, with its id: its explicit `cgroup` globs and its launch cgroup
/// `/zt/<name>/**`. The first identity in order wins; validation keeps globs apart.
#[must_use]
pub fn cgroups<'t>(
    identities: &[IdentityState],
    tree: &'t [(String, PathBuf)],
) -> Vec<(&'t Path, u32)> {
    let globs: Vec<(u32, Vec<String>)> = identities
        .iter()
        .map(|i| {
            let mut g = i.cgroup_globs.clone();
            g.push(policy::launch_cgroup_glob(&i.name));
            (i.id, g)
        })
        .collect();
    tree.iter()
        .filter_map(|(rel, dir)| {
            globs
                .iter()
                .find(|(_, globs)| globs.iter().any(|g| policy::cgroup_glob_matches(g, rel)))
                .map(|(id, _)| (dir.as_path(), *id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::NoFiles;

    fn doc(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: {name}\n  owner: o@example.com\nspec:\n{spec}\n"
        )
    }

    #[test]
    fn plan_holds_tries_exec_side_and_names() {
        let text = doc(
            "coder",
            "  egress:\n    - to: [10.0.0.0/8, api.example.com]\n      ports: [443]\n  exec:\n    allow: [/nonexistent/git]\n",
        );
        let p = policy::load_str("p.yaml", &text).expect("valid");
        let plan = build(&p, &BTreeMap::new(), &mut NoFiles).expect("plans");
        assert_eq!(plan.ids.get("coder"), Some(&1));
        assert_eq!(plan.sha256(), p.sha256);
        assert!(!plan.compiled.v4.is_empty());
        // The missing file allows nothing, and says so.
        assert!(plan.exec.entries.allow.is_empty());
        assert_eq!(plan.exec.notes.len(), 1, "{:?}", plan.exec.notes);
        assert!(plan.exec.entries.configs.contains_key(&1));
        assert_eq!(plan.dns.by_id[&1].rules.len(), 1);
    }

    #[test]
    fn ids_stay_with_their_names() {
        let text = doc("b", "  egress: []\n") + "---\n" + &doc("a", "  egress: []\n");
        let p = policy::load_str("p.yaml", &text).expect("valid");
        let existing = BTreeMap::from([("b".to_owned(), 7), ("gone".to_owned(), 1)]);
        let plan = build(&p, &existing, &mut NoFiles).expect("plans");
        assert_eq!(plan.ids["b"], 7);
        assert_eq!(plan.ids["gone"], 1, "a removed name keeps its id");
        assert_eq!(plan.ids["a"], 2, "the lowest free id");
    }

    #[test]
    fn cgroups_match_globs_and_launch_cgroups() {
        let ident = |name: &str, id, globs: &[&str]| IdentityState {
            name: name.to_owned(),
            id,
            owner: String::new(),
            spiffe_id: String::new(),
            mode: "enforce".to_owned(),
            cgroup_globs: globs.iter().map(|g| (*g).to_owned()).collect(),
        };
        let identities = [
            ident("svc", 1, &["/system.slice/svc-*.scope"]),
            ident("coder", 2, &[]),
        ];
        let tree: Vec<(String, PathBuf)> = [
            "/",
            "/system.slice/svc-1.scope",
            "/system.slice/other.scope",
            "/zt/coder/42-1",
            "/zt/coderx/1",
        ]
        .iter()
        .map(|r| ((*r).to_owned(), PathBuf::from(format!("/cg{r}"))))
        .collect();
        let got: Vec<(String, u32)> = cgroups(&identities, &tree)
            .into_iter()
            .map(|(d, id)| (d.display().to_string(), id))
            .collect();
        assert_eq!(
            got,
            [
                ("/cg/system.slice/svc-1.scope".to_owned(), 1),
                ("/cg/zt/coder/42-1".to_owned(), 2)
            ]
        );
    }
}
