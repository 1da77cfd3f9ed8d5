//! Containers take the identity their runtime's metadata selects: Docker and Podman
//! from Debian's packages, each private to its test, run containers from a root
//! filesystem built here. A selected container's connects and execs follow its
//! identity, another container's do not; a container started after the daemon is
//! enrolled before its first connect; an exec allowlist names paths inside the
//! container; a removed container leaves nothing behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use zt_agent_tests::containers::{Docker, Podman, Rootfs};
use zt_agent_tests::{
    DENIED, Daemon, Identity, KILLED, OK, Rule, Selector, TcpServer, cgroup2_root,
};

/// The selected container's identity may reach `allowed`; the exec one may exec only
/// the probe and busybox, as the container sees them.
fn policy(runtime: &str, allowed: u16) -> impl std::fmt::Display {
    Identity::new(format!("{runtime}-web"))
        .selector(Selector::container_labels(runtime, &[("zt-test", "web")]))
        .egress(Rule::to(["127.0.0.1"]).ports([allowed]).tcp())
        .and(
            Identity::new(format!("{runtime}-exec"))
                .selector(Selector::container_labels(runtime, &[("zt-test", "exec")]))
                .exec_allow(["/zt-probe", "/bin/busybox"]),
        )
}

fn cgroups_enrolled(d: &Daemon) -> f64 {
    d.metric("zt_agent_map_entries{map=\"cgroups\"}")
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn enrolled_as(d: &Daemon, identity: &str) -> usize {
    d.ps()["enrolled"]
        .as_array()
        .map(|a| a.iter().filter(|t| t["identity"] == identity).count())
        .unwrap_or(0)
}

/// A container started with a label and a command: (exit code, output).
type RunIn<'a> = &'a dyn Fn(&str, &[&str]) -> (i32, String);

/// What every runtime must do; `run` runs a container with the host's network and
/// the given label, `run_detached` one that sleeps, returning its id.
struct Case<'a> {
    runtime: &'static str,
    d: &'a Daemon,
    run: RunIn<'a>,
    /// Create a container, wait until the daemon has made its cgroup, then start it:
    /// what `docker run` does, with Podman's events (read from its event log) given
    /// the time to arrive.
    create_then_start: RunIn<'a>,
    run_detached: &'a dyn Fn(&str) -> String,
    remove: &'a dyn Fn(&str),
    /// Where the runtime's cgroupfs driver puts a container's cgroup.
    cgroup_of: &'a dyn Fn(&str) -> PathBuf,
}

fn check(c: &Case<'_>, allowed: u16, other: u16) {
    let (a, o) = (allowed.to_string(), other.to_string());
    // Started after the daemon: its very first act is the connect.
    let (code, out) = (c.create_then_start)("web", &["/zt-probe", "tcp", "127.0.0.1", &o]);
    assert_eq!(
        code,
        DENIED,
        "{}: a selected container's first connect follows its identity: {out}\n{}",
        c.runtime,
        c.d.log()
    );
    let (code, out) = (c.run)("web", &["/zt-probe", "tcp", "127.0.0.1", &a]);
    assert_eq!(code, OK, "{}: the identity allows this: {out}", c.runtime);
    let (code, out) = (c.run)("unselected", &["/zt-probe", "tcp", "127.0.0.1", &o]);
    assert_eq!(
        code, OK,
        "{}: another container is not enrolled: {out}",
        c.runtime
    );
    let ev = c.d.wait_event("the container's denied connect", |e| {
        e["kind"] == "connect"
            && e["verdict"] == "deny"
            && e["identity"] == format!("{}-web", c.runtime)
    });
    assert!(ev["cgroup_id"].as_u64().is_some_and(|g| g > 0), "{ev}");

    // Exec: `/zt-probe` and `/bin/busybox` are the container's files (the host has no
    // /zt-probe, and its busybox is another file); `/opt/busybox` (a copy) is not listed.
    let (code, out) = (c.run)(
        "exec",
        &[
            "/bin/sh",
            "-c",
            "sleep 2; /zt-probe spawn /bin/busybox true || exit 99; /zt-probe spawn /opt/busybox true",
        ],
    );
    assert_eq!(
        code,
        KILLED,
        "{}: the unlisted exec is killed, the listed ones run: {out}\n{}",
        c.runtime,
        c.d.log()
    );
    let (code, out) = (c.run)(
        "unselected",
        &["/bin/sh", "-c", "/zt-probe spawn /opt/busybox true"],
    );
    assert_eq!(
        code, OK,
        "{}: another container's exec is not judged: {out}",
        c.runtime
    );

    // A removed container leaves nothing behind. (The containers above are gone: their
    // cgroups leave the map as their runtime reports them removed.)
    wait_until("the earlier containers' cgroups leave the map", || {
        cgroups_enrolled(c.d) == 0.0
    });
    let base = 0.0;
    let id = (c.run_detached)("web");
    wait_until("the running container and its cgroup are enrolled", || {
        enrolled_as(c.d, &format!("{}-web", c.runtime)) == 1 && cgroups_enrolled(c.d) == base + 1.0
    });
    (c.remove)(&id);
    wait_until("the removed container's cgroup leaves the map", || {
        cgroups_enrolled(c.d) == base
    });
    assert_eq!(enrolled_as(c.d, &format!("{}-web", c.runtime)), 0);
    assert!(
        !(c.cgroup_of)(&id).exists(),
        "{}: cgroup left behind",
        c.runtime
    );
}

#[test]
fn docker_containers_take_their_identity() {
    let rootfs = Rootfs::build("docker");
    let docker = Docker::start("containers");
    docker.import(&rootfs, "zt-test-probe:1");
    let (allowed, other) = (TcpServer::new("127.0.0.1"), TcpServer::new("127.0.0.1"));
    let socket = docker.socket.display().to_string();
    let d = Daemon::start_with(
        "containers-docker",
        policy("docker", allowed.port),
        &["--container-socket", &socket],
    );
    let run = |label: &str, cmd: &[&str]| {
        let l = format!("zt-test={label}");
        let mut args = vec![
            "run",
            "--rm",
            "--network",
            "host",
            "--label",
            &l,
            "zt-test-probe:1",
        ];
        args.extend_from_slice(cmd);
        docker.run(&args)
    };
    let run_detached = |label: &str| {
        let l = format!("zt-test={label}");
        let (code, out) = docker.run(&[
            "run",
            "-d",
            "--network",
            "host",
            "--label",
            &l,
            "zt-test-probe:1",
            "/bin/sleep",
            "60",
        ]);
        assert_eq!(code, 0, "{out}");
        out.trim().to_owned()
    };
    let remove = |id: &str| {
        let (code, out) = docker.run(&["rm", "-f", id]);
        assert_eq!(code, 0, "{out}");
    };
    let cgroup_of = |id: &str| cgroup2_root().join("docker").join(id);
    // `docker run` sends `create` about 30 ms before the start, a race the daemon
    // usually wins but need not under load; created, then started once the daemon
    // has made the cgroup, the container is judged from its first instruction.
    let create_then_start = |label: &str, cmd: &[&str]| {
        let l = format!("zt-test={label}");
        let mut args = vec![
            "create",
            "--network",
            "host",
            "--label",
            &l,
            "zt-test-probe:1",
        ];
        args.extend_from_slice(cmd);
        let (code, out) = docker.run(&args);
        assert_eq!(code, 0, "{out}");
        let id = out.trim().lines().last().unwrap_or_default().to_owned();
        wait_until("the created container's cgroup is made", || {
            cgroup_of(&id).exists()
        });
        let r = docker.run(&["start", "-a", &id]);
        let _ = docker.run(&["rm", "-f", &id]);
        r
    };
    let case = Case {
        runtime: "docker",
        d: &d,
        run: &run,
        create_then_start: &create_then_start,
        run_detached: &run_detached,
        remove: &remove,
        cgroup_of: &cgroup_of,
    };
    check(&case, allowed.port, other.port);

    // A created container's cgroup is made and enrolled before the container starts,
    // and goes when the container is removed without running.
    let base = 0.0;
    let (code, out) = docker.run(&[
        "create",
        "--network",
        "host",
        "--label",
        "zt-test=web",
        "zt-test-probe:1",
        "/bin/true",
    ]);
    assert_eq!(code, 0, "{out}");
    let id = out.trim().to_owned();
    wait_until(
        "the created container's cgroup is made and enrolled",
        || cgroup_of(&id).exists() && cgroups_enrolled(&d) == base + 1.0,
    );
    remove(&id);
    wait_until("the unused cgroup is removed", || {
        !cgroup_of(&id).exists() && cgroups_enrolled(&d) == base
    });
    drop(d);
    drop(docker);
}

#[test]
fn podman_containers_take_their_identity() {
    let rootfs = Rootfs::build("podman");
    let podman = Podman::start("containers");
    let (allowed, other) = (TcpServer::new("127.0.0.1"), TcpServer::new("127.0.0.1"));
    let socket = podman.socket.display().to_string();
    let d = Daemon::start_with(
        "containers-podman",
        policy("podman", allowed.port),
        &["--container-socket", &socket],
    );
    let root = rootfs.dir.display().to_string();
    let run = |label: &str, cmd: &[&str]| {
        let l = format!("zt-test={label}");
        let mut args = vec!["run", "--rm", "--network", "host", "--label", &l];
        args.extend_from_slice(&Podman::RUN);
        args.extend_from_slice(&["--rootfs", &root]);
        args.extend_from_slice(cmd);
        podman.run(&args)
    };
    let run_detached = |label: &str| {
        let l = format!("zt-test={label}");
        let mut args = vec!["run", "-d", "--network", "host", "--label", &l];
        args.extend_from_slice(&Podman::RUN);
        args.extend_from_slice(&["--rootfs", &root, "/bin/sleep", "60"]);
        let (code, out) = podman.run(&args);
        assert_eq!(code, 0, "{out}");
        out.trim().lines().last().unwrap_or_default().to_owned()
    };
    let remove = |id: &str| {
        let (code, out) = podman.run(&["rm", "-f", id]);
        assert_eq!(code, 0, "{out}");
    };
    let cgroup_of = |id: &str| {
        cgroup2_root()
            .join("libpod_parent")
            .join(format!("libpod-{id}"))
    };
    let create_then_start = |label: &str, cmd: &[&str]| {
        let l = format!("zt-test={label}");
        let mut args = vec!["create", "--network", "host", "--label", &l];
        args.extend_from_slice(&Podman::RUN);
        args.extend_from_slice(&["--rootfs", &root]);
        args.extend_from_slice(cmd);
        let (code, out) = podman.run(&args);
        assert_eq!(code, 0, "{out}");
        let id = out.trim().lines().last().unwrap_or_default().to_owned();
        wait_until("the created container's cgroup is made", || {
            cgroup_of(&id).exists()
        });
        let r = podman.run(&["start", "-a", &id]);
        let _ = podman.run(&["rm", "-f", &id]);
        r
    };
    let case = Case {
        runtime: "podman",
        d: &d,
        run: &run,
        create_then_start: &create_then_start,
        run_detached: &run_detached,
        remove: &remove,
        cgroup_of: &cgroup_of,
    };
    check(&case, allowed.port, other.port);
    drop(d);
    drop(podman);
}
