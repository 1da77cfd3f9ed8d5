//! The Kubernetes manifests in deploy/kubernetes validate offline against the
//! Kubernetes schemas (`kubernetes-validate --strict`, from PyPI); the two kinds it has
//! no schema for (the Prometheus Operator's PodMonitor, the Kustomization) are checked
//! against the objects they point at; and the policy the ConfigMap ships passes
//! `zt-agent policy check`.

use std::path::Path;
use std::process::Command;

use zt_agent_tests::agent_bin;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes");

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(DIR).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_manifests_validate() {
    let files = [
        "namespace.yaml",
        "rbac.yaml",
        "configmap.yaml",
        "daemonset.yaml",
    ];
    let out = Command::new(format!("{}/bin/python3", zt_agent_tests::TEST_VENV))
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(files.iter().map(|f| Path::new(DIR).join(f)))
        .output()
        .expect("kubernetes-validate (scripts/setup.sh installs it from PyPI)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    for f in files {
        assert!(
            said.lines().any(|l| l.contains(f) && l.contains("passed")),
            "{f} was not validated: {said}"
        );
    }
    assert!(!said.contains("WARN") && !said.contains("ERROR"), "{said}");

    // The DaemonSet has what the agent needs from the node.
    let ds = read("daemonset.yaml");
    for want in [
        "hostPID: true",
        "path: /sys/fs/bpf",
        "mountPropagation: Bidirectional",
        "path: /sys/fs/cgroup",
        "path: /run/zt-agent",
        "name: zt-agent-policies",
        "containerPort: 9464",
    ] {
        assert!(ds.contains(want), "daemonset.yaml lacks `{want}`");
    }
    // The PodMonitor scrapes the DaemonSet's pods on its named port.
    let pm = read("podmonitor.yaml");
    assert!(pm.contains("kind: PodMonitor") && pm.contains("- port: metrics"));
    assert!(
        pm.contains("app.kubernetes.io/name: zt-agent")
            && ds.contains("app.kubernetes.io/name: zt-agent")
    );
    assert!(ds.contains("- name: metrics"));
    // The Kustomization names every manifest, and they exist.
    let k = read("kustomization.yaml");
    let resources: Vec<&str> = k
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|r| r.ends_with(".yaml"))
        .collect();
    for r in [
        "namespace.yaml",
        "rbac.yaml",
        "configmap.yaml",
        "daemonset.yaml",
        "podmonitor.yaml",
    ] {
        assert!(resources.contains(&r), "kustomization.yaml misses {r}");
        assert!(Path::new(DIR).join(r).exists());
    }
}

#[test]
fn the_configmap_policy_checks() {
    // Every `NAME.yaml: |` block of the ConfigMap's data is one policy file.
    let cm = read("configmap.yaml");
    let dir = std::env::temp_dir().join(format!("zt-test-k8s-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let mut lines = cm.lines().peekable();
    let mut written = 0;
    while let Some(l) = lines.next() {
        let Some(name) = l
            .trim()
            .strip_suffix(": |")
            .filter(|n| n.ends_with(".yaml"))
        else {
            continue;
        };
        let mut text = String::new();
        while let Some(body) = lines
            .peek()
            .filter(|b| b.starts_with("    ") || b.is_empty())
        {
            text.push_str(body.strip_prefix("    ").unwrap_or(""));
            text.push('\n');
            lines.next();
        }
        std::fs::write(dir.join(name), text).expect("write policy");
        written += 1;
    }
    assert!(written > 0, "no policy in configmap.yaml");
    let out = Command::new(agent_bin())
        .args(["policy", "check"])
        .arg(&dir)
        .output()
        .expect("zt-agent policy check");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
