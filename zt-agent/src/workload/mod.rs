//! Workloads that host facts name rather than paths: containers (Docker, Podman,
//! containerd), Kubernetes pods through the labels their CRI runtime records, and
//! systemd units. Each resolves to cgroups: `select` matches selectors against them
//! (pure), `docker` talks to the Docker Engine API (Docker's, and Podman's compatible
//! one) over a Unix socket, `watch` keeps the list of containers current from the
//! runtimes' events.

pub mod docker;
pub mod select;
pub mod watch;

use std::collections::BTreeMap;

pub use crate::policy::Runtime;

/// Labels kubelet (and the CRI runtimes) give every container of a pod.
pub mod cri_labels {
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// cri-dockerd: `podsandbox` or `container`.
    pub const DOCKER_TYPE: &str = "io.kubernetes.docker.type";
    /// containerd's CRI plugin: `sandbox` or `container`.
    pub const CONTAINERD_KIND: &str = "io.cri-containerd.kind";
}

/// One container as its runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub runtime: Runtime,
    /// The full id (64 hex digits): the runtimes name the container's cgroup after it.
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// Where the runtime will make its cgroup, below the cgroup2 mount, when it uses the
    /// cgroupfs driver (the daemon can then make it first and enroll it before the
    /// container's first task enters); `None` where systemd makes it.
    pub cgroup: Option<String>,
    /// Created, not started: its cgroup may not exist yet.
    pub created: bool,
}

/// A pod's container, with what the pod selector matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodContainer<'a> {
    pub namespace: &'a str,
    pub container: &'a str,
    /// The pod's labels: those its sandbox container carries.
    pub labels: &'a BTreeMap<String, String>,
}

impl Container {
    /// A pod sandbox (the pause container), which runs none of the pod's code.
    #[must_use]
    pub fn is_sandbox(&self) -> bool {
        self.labels.get(cri_labels::DOCKER_TYPE).map(String::as_str) == Some("podsandbox")
            || self
                .labels
                .get(cri_labels::CONTAINERD_KIND)
                .map(String::as_str)
                == Some("sandbox")
    }
}

/// The pod of each pod container of `all` (joined to its sandbox by pod uid, for the
/// pod's labels); `None` for containers outside pods and for sandboxes.
#[must_use]
pub fn pod_of<'a>(c: &'a Container, all: &'a [Container]) -> Option<PodContainer<'a>> {
    if c.is_sandbox() {
        return None;
    }
    let uid = c.labels.get(cri_labels::POD_UID)?;
    let sandbox = all.iter().find(|s| {
        s.is_sandbox() && s.runtime == c.runtime && s.labels.get(cri_labels::POD_UID) == Some(uid)
    })?;
    Some(PodContainer {
        namespace: c.labels.get(cri_labels::POD_NAMESPACE)?,
        container: c.labels.get(cri_labels::CONTAINER_NAME)?,
        labels: &sandbox.labels,
    })
}

/// The container id a cgroup directory name carries, for the layouts of Docker and
/// containerd (`<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`), Podman
/// (`libpod-<id>`, `libpod-<id>.scope`) and CRI-O (`crio-<id>.scope`). Podman's
/// `libpod-conmon-<id>` holds the runtime's monitor, not the container.
#[must_use]
pub fn container_id_of(dir_name: &str) -> Option<&str> {
    let stem = dir_name.strip_suffix(".scope").unwrap_or(dir_name);
    let id = ["docker-", "libpod-", "cri-containerd-", "crio-"]
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .unwrap_or(stem);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ff8c35a0635890ce2b72f928de222cc98f08609972f9448d395d4929f05ab973";

    #[test]
    fn container_ids_in_every_runtime_layout() {
        for name in [
            ID.to_owned(),
            format!("docker-{ID}.scope"),
            format!("libpod-{ID}"),
            format!("libpod-{ID}.scope"),
            format!("cri-containerd-{ID}.scope"),
            format!("crio-{ID}.scope"),
        ] {
            assert_eq!(container_id_of(&name), Some(ID), "{name}");
        }
        assert_eq!(container_id_of(&format!("libpod-conmon-{ID}.scope")), None);
        assert_eq!(container_id_of("system.slice"), None);
        assert_eq!(container_id_of(&ID[1..]), None);
    }

    fn c(id: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            runtime: Runtime::Docker,
            id: id.to_owned(),
            name: id.to_owned(),
            image: "img".to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            cgroup: None,
            created: false,
        }
    }

    #[test]
    fn pod_containers_take_their_sandbox_labels() {
        use cri_labels as l;
        let all = [
            c(
                "sandbox",
                &[
                    (l::DOCKER_TYPE, "podsandbox"),
                    (l::POD_UID, "u1"),
                    ("app", "web"),
                ],
            ),
            c(
                "app",
                &[
                    (l::DOCKER_TYPE, "container"),
                    (l::POD_UID, "u1"),
                    (l::POD_NAMESPACE, "prod"),
                    (l::CONTAINER_NAME, "server"),
                ],
            ),
            c("plain", &[("app", "web")]),
        ];
        let pod = pod_of(&all[1], &all).expect("a pod container");
        assert_eq!(pod.namespace, "prod");
        assert_eq!(pod.container, "server");
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
        assert!(
            pod_of(&all[0], &all).is_none(),
            "the sandbox runs no pod code"
        );
        assert!(pod_of(&all[2], &all).is_none());
    }
}
