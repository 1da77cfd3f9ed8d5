//! Policy + ids + host facts -> [`Plan`]. Pure but for the file view, which unit tests
//! replace with synthetic files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Plan;
use crate::dns::server::DnsPolicy;
use crate::identity::resolve::{self, FileView, ResolveError};
use crate::policy::{self, CompileError, Policy};
use crate::state::IdentityState;
use crate::workload::select::Workloads;
use crate::workload::{Container, container_id_of};

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
    let workloads = Workloads::of(policy, &ids);
    Ok(Plan {
        ids,
        compiled,
        exec,
        dns,
        workloads,
    })
}

/// A cgroup an identity selects, and the container it belongs to, if it is one's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupClaim<'t, 'c> {
    pub dir: &'t Path,
    pub identity: u32,
    pub container: Option<&'c Container>,
}

/// The cgroups of `tree` (relative path below the cgroup2 mount, directory) that an
/// identity selects, with its id. First an identity's explicit `cgroup` globs and its
/// launch cgroup `/zt/<name>/**` (the first identity in order wins; validation keeps
/// globs apart); then, for the other cgroups, the deepest path component that is a
/// selected container's cgroup (a `pod` selector before a `container` selector) or a
/// selected systemd unit, so a container keeps its identity below a selected slice or
/// unit, and everything below a selected cgroup is selected with it.
#[must_use]
pub fn cgroups<'t, 'c>(
    identities: &[IdentityState],
    workloads: &Workloads,
    tree: &'t [(String, PathBuf)],
    containers: &'c [Container],
) -> Vec<CgroupClaim<'t, 'c>> {
    let globs: Vec<(u32, Vec<String>)> = identities
        .iter()
        .map(|i| {
            let mut g = i.cgroup_globs.clone();
            g.push(policy::launch_cgroup_glob(&i.name));
            (i.id, g)
        })
        .collect();
    let by_id: std::collections::HashMap<&str, &Container> =
        containers.iter().map(|c| (c.id.as_str(), c)).collect();
    tree.iter()
        .filter_map(|(rel, dir)| {
            let dir = dir.as_path();
            if let Some((id, _)) = globs
                .iter()
                .find(|(_, globs)| globs.iter().any(|g| policy::cgroup_glob_matches(g, rel)))
            {
                return Some(CgroupClaim {
                    dir,
                    identity: *id,
                    container: None,
                });
            }
            if workloads.is_empty() {
                return None;
            }
            rel.rsplit('/').filter(|c| !c.is_empty()).find_map(|comp| {
                if let Some(c) = container_id_of(comp).and_then(|id| by_id.get(id)) {
                    return workloads.container(c, containers).map(|w| CgroupClaim {
                        dir,
                        identity: w.id,
                        container: Some(*c),
                    });
                }
                workloads.unit(comp).map(|w| CgroupClaim {
                    dir,
                    identity: w.id,
                    container: None,
                })
            })
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
            limits: vec![],
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
        let got: Vec<(String, u32)> = cgroups(&identities, &Workloads::default(), &tree, &[])
            .into_iter()
            .map(|c| (c.dir.display().to_string(), c.identity))
            .collect();
        assert_eq!(
            got,
            [
                ("/cg/system.slice/svc-1.scope".to_owned(), 1),
                ("/cg/zt/coder/42-1".to_owned(), 2)
            ]
        );
    }

    #[test]
    fn units_and_containers_resolve_wherever_their_cgroups_are() {
        let text = doc("svc", "  selectors:\n    - systemdUnit: nginx.service\n")
            + "---\n"
            + &doc("web", "  selectors:\n    - container: {name: \"web-*\"}\n")
            + "---\n"
            + &doc(
                "slice",
                "  selectors:\n    - cgroup: /machine.slice/pinned/**\n",
            );
        let p = policy::load_str("p.yaml", &text).expect("valid");
        let plan = build(&p, &BTreeMap::new(), &mut NoFiles).expect("plans");
        let identities: Vec<IdentityState> = plan
            .compiled
            .identities
            .iter()
            .map(|i| IdentityState {
                name: i.name.clone(),
                id: i.id,
                owner: String::new(),
                spiffe_id: String::new(),
                mode: "enforce".to_owned(),
                cgroup_globs: i.cgroup_globs.clone(),
                limits: vec![],
            })
            .collect();
        let web = "a".repeat(64);
        let db = "b".repeat(64);
        let pinned = "c".repeat(64);
        let container = |id: &str, name: &str| Container {
            runtime: crate::policy::Runtime::Docker,
            id: id.to_owned(),
            name: name.to_owned(),
            image: "i".to_owned(),
            labels: BTreeMap::new(),
            cgroup: None,
            created: false,
        };
        let containers = [
            container(&web, "web-1"),
            container(&db, "db"),
            container(&pinned, "web-2"),
        ];
        let tree: Vec<(String, PathBuf)> = [
            "/system.slice/nginx.service".to_owned(),
            "/system.slice/nginx.service/worker".to_owned(),
            "/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service".to_owned(),
            "/system.slice/other.service".to_owned(),
            format!("/docker/{web}"),
            format!("/system.slice/nginx.service/docker-{web}.scope"),
            format!("/docker/{db}"),
            format!("/machine.slice/pinned/libpod-{pinned}"),
        ]
        .into_iter()
        .map(|r| (r.clone(), PathBuf::from(format!("/cg{r}"))))
        .collect();
        let got: Vec<(String, String, Option<String>)> =
            cgroups(&identities, &plan.workloads, &tree, &containers)
                .into_iter()
                .map(|c| {
                    let name = plan
                        .ids
                        .iter()
                        .find(|(_, v)| **v == c.identity)
                        .map(|(k, _)| k.clone())
                        .unwrap_or_default();
                    (
                        c.dir.display().to_string(),
                        name,
                        c.container.map(|c| c.name.clone()),
                    )
                })
                .collect();
        let want = |d: &str, n: &str, c: Option<&str>| {
            (format!("/cg{d}"), n.to_owned(), c.map(str::to_owned))
        };
        assert_eq!(
            got,
            [
                want("/system.slice/nginx.service", "svc", None),
                want("/system.slice/nginx.service/worker", "svc", None),
                want(
                    "/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service",
                    "svc",
                    None
                ),
                want(&format!("/docker/{web}"), "web", Some("web-1")),
                // The container keeps its own identity below the selected unit.
                want(
                    &format!("/system.slice/nginx.service/docker-{web}.scope"),
                    "web",
                    Some("web-1")
                ),
                // An explicit cgroup glob wins over a container selector.
                want(
                    &format!("/machine.slice/pinned/libpod-{pinned}"),
                    "slice",
                    None
                ),
            ]
        );
    }
}
