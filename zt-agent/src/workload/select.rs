//! Which identity a container or a unit's cgroup belongs to: the `container`, `pod` and
//! `systemdUnit` selectors of a policy, matched against what the runtimes report. Pure.

use std::collections::BTreeMap;

use super::{Container, pod_of};
use crate::policy::{ContainerSelector, PodSelector, Policy, text_glob_matches};

/// One identity's selectors that resolve through host facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityWorkloads {
    pub id: u32,
    pub name: String,
    pub units: Vec<String>,
    pub containers: Vec<ContainerSelector>,
    pub pods: Vec<PodSelector>,
    /// `exec.allow` is set: the container's files must be resolved before its tasks
    /// are enrolled (its next exec is judged against them).
    pub exec_restricted: bool,
}

/// Every identity's workload selectors, in policy order (names sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workloads(pub Vec<IdentityWorkloads>);

impl Workloads {
    /// The workload selectors of `policy`; identities without an id are left out.
    #[must_use]
    pub fn of(policy: &Policy, ids: &BTreeMap<String, u32>) -> Self {
        Self(
            policy
                .identities
                .iter()
                .filter_map(|i| {
                    let id = *ids.get(&i.name)?;
                    let w = IdentityWorkloads {
                        id,
                        name: i.name.clone(),
                        units: i.unit_selectors.iter().map(|u| u.unit.clone()).collect(),
                        containers: i.container_selectors.clone(),
                        pods: i.pod_selectors.clone(),
                        exec_restricted: i.exec_allow.is_some(),
                    };
                    let any = !w.units.is_empty() || !w.containers.is_empty() || !w.pods.is_empty();
                    any.then_some(w)
                })
                .collect(),
        )
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The identity of a unit's cgroup.
    #[must_use]
    pub fn unit(&self, name: &str) -> Option<&IdentityWorkloads> {
        self.0.iter().find(|w| w.units.iter().any(|u| u == name))
    }

    /// The identity of a container: a pod selector first (the more specific), then a
    /// container selector.
    #[must_use]
    pub fn container(&self, c: &Container, all: &[Container]) -> Option<&IdentityWorkloads> {
        if c.is_sandbox() {
            return None;
        }
        if let Some(pod) = pod_of(c, all)
            && let Some(w) = self.0.iter().find(|w| {
                w.pods.iter().any(|s| {
                    s.namespace
                        .as_ref()
                        .is_none_or(|g| text_glob_matches(g, pod.namespace))
                        && s.container.as_ref().is_none_or(|n| n == pod.container)
                        && labels_match(&s.labels, pod.labels)
                })
            })
        {
            return Some(w);
        }
        self.0
            .iter()
            .find(|w| w.containers.iter().any(|s| container_matches(s, c)))
    }
}

fn labels_match(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// Whether a container selector matches a container.
#[must_use]
pub fn container_matches(s: &ContainerSelector, c: &Container) -> bool {
    s.runtime.admits(c.runtime)
        && s.name
            .as_ref()
            .is_none_or(|g| text_glob_matches(g, &c.name))
        && s.image
            .as_ref()
            .is_none_or(|g| text_glob_matches(g, &c.image))
        && labels_match(&s.labels, &c.labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Runtime, load_str};

    fn doc(name: &str, selectors: &str) -> String {
        format!(
            "apiVersion: zt-agent/v1\nkind: Identity\nmetadata: {{name: {name}, owner: o}}\nspec:\n  selectors:\n{selectors}\n"
        )
    }

    fn container(runtime: Runtime, name: &str, image: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            runtime,
            id: format!("{name:0>64}"),
            name: name.to_owned(),
            image: image.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            cgroup: None,
            created: false,
        }
    }

    #[test]
    fn containers_pods_and_units_find_their_identity() {
        let text = doc(
            "web",
            "    - container: {runtime: docker, name: \"web-*\", image: \"registry.example/web:*\"}\n    - systemdUnit: nginx.service",
        ) + "---\n"
            + &doc(
                "labelled",
                "    - container: {runtime: podman, labels: {team: payments}}",
            )
            + "---\n"
            + &doc(
                "api",
                "    - pod: {namespace: \"prod-*\", labels: {app: api}, container: server}",
            );
        let p = load_str("p.yaml", &text).expect("valid");
        let ids = crate::policy::assign_ids(&BTreeMap::new(), &p);
        let w = Workloads::of(&p, &ids);
        let name_of =
            |c: &Container, all: &[Container]| w.container(c, all).map(|i| i.name.clone());
        let web = container(Runtime::Docker, "web-1", "registry.example/web:1.2", &[]);
        assert_eq!(name_of(&web, &[]).as_deref(), Some("web"));
        // All fields must match: another runtime, name or image is not selected.
        for other in [
            container(Runtime::Podman, "web-1", "registry.example/web:1.2", &[]),
            container(Runtime::Docker, "db-1", "registry.example/web:1.2", &[]),
            container(Runtime::Docker, "web-1", "registry.example/db:1", &[]),
        ] {
            assert_eq!(name_of(&other, &[]), None, "{other:?}");
        }
        let paid = container(
            Runtime::Podman,
            "x",
            "y",
            &[("team", "payments"), ("tier", "1")],
        );
        assert_eq!(name_of(&paid, &[]).as_deref(), Some("labelled"));
        let unpaid = container(Runtime::Podman, "x", "y", &[("team", "other")]);
        assert_eq!(name_of(&unpaid, &[]), None);
        assert_eq!(
            w.unit("nginx.service").map(|i| i.name.as_str()),
            Some("web")
        );
        assert!(w.unit("other.service").is_none());

        use crate::workload::cri_labels as l;
        let pod = [
            container(
                Runtime::Containerd,
                "sandbox",
                "pause",
                &[
                    (l::CONTAINERD_KIND, "sandbox"),
                    (l::POD_UID, "u"),
                    ("app", "api"),
                ],
            ),
            container(
                Runtime::Containerd,
                "server",
                "api:1",
                &[
                    (l::CONTAINERD_KIND, "container"),
                    (l::POD_UID, "u"),
                    (l::POD_NAMESPACE, "prod-eu"),
                    (l::CONTAINER_NAME, "server"),
                ],
            ),
            container(
                Runtime::Containerd,
                "sidecar",
                "proxy:1",
                &[
                    (l::CONTAINERD_KIND, "container"),
                    (l::POD_UID, "u"),
                    (l::POD_NAMESPACE, "prod-eu"),
                    (l::CONTAINER_NAME, "proxy"),
                ],
            ),
        ];
        assert_eq!(name_of(&pod[1], &pod).as_deref(), Some("api"));
        assert_eq!(name_of(&pod[2], &pod), None, "another container of the pod");
        assert_eq!(name_of(&pod[0], &pod), None, "the sandbox");
    }
}
