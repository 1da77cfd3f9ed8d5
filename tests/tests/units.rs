//! systemd: a `systemdUnit` selector resolves to the unit's cgroup wherever its slice
//! puts it (systemd is not PID 1 here, so the test builds the cgroup tree systemd would:
//! a system service, a user service below its user manager, a unit made after the
//! daemon); and the agent's own unit file passes `systemd-analyze verify`.

use std::process::Command;
use std::time::{Duration, Instant};

use zt_agent_tests::{Cgroup, DENIED, Daemon, Identity, OK, Rule, Selector, TcpServer, agent_bin};

#[test]
fn a_unit_is_enrolled_wherever_its_slice_puts_it() {
    let server = TcpServer::new("127.0.0.1");
    let port = server.port.to_string();
    let policy = Identity::new("unit-web")
        .selector(Selector::systemd_unit("zt-unit-web.service"))
        .egress(Rule::to(["127.0.0.1"]).ports([1]).tcp());
    // Dropped last: removes the slices made below it too.
    let _tree = Cgroup::new("units");
    let system = Cgroup::new("units/system.slice/zt-unit-web.service");
    let worker = Cgroup::new("units/system.slice/zt-unit-web.service/worker");
    let user = Cgroup::new(
        "units/user.slice/user-1000.slice/user@1000.service/app.slice/zt-unit-web.service",
    );
    let other = Cgroup::new("units/system.slice/zt-unit-other.service");
    let d = Daemon::start("units", policy);
    for (cg, want, what) in [
        (&system, DENIED, "the system service"),
        (&worker, DENIED, "a cgroup below the unit"),
        (&user, DENIED, "the same unit under a user manager"),
        (&other, OK, "another unit"),
    ] {
        let (code, out) = cg.run_probe(&["tcp", "127.0.0.1", &port]);
        assert_eq!(code, want, "{what}: {out}\n{}", d.log());
    }
    // Started the way systemd starts a service: born in the unit's cgroup.
    assert_eq!(system.clone3_probe(&["tcp", "127.0.0.1", &port]), DENIED);
    // A unit whose cgroup appears after the daemon started: enrolled at the next scan
    // (every second).
    let before = d.metric("zt_agent_map_entries{map=\"cgroups\"}");
    let later = Cgroup::new("units/system.slice/later.slice/zt-unit-web.service");
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.metric("zt_agent_map_entries{map=\"cgroups\"}") <= before {
        assert!(
            Instant::now() < deadline,
            "the new unit's cgroup was not enrolled:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out) = later.run_probe(&["tcp", "127.0.0.1", &port]);
    assert_eq!(code, DENIED, "a unit made after the daemon: {out}");
    drop(d);
}

#[test]
fn the_unit_file_verifies() {
    // ExecStart must name an executable that exists; the man page the unit's
    // Documentation= names is installed by the package (the package test verifies the
    // installed unit with it).
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/zt-agent.service"
    ))
    .expect("unit file");
    assert!(unit.contains("Restart=always") && unit.contains("Type=notify"));
    let dir = std::env::temp_dir().join(format!("zt-test-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join("zt-agent.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/zt-agent", &agent_bin().display().to_string()),
    )
    .expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
