//! Kernel tables no workload can fill for others: a fork storm runs into its own
//! identity's share of the task table and stops there, while other identities fork
//! and run as ever; a killed storm leaves no entry behind; entries of processes that
//! are gone, zombies included, are swept, and nothing else is; so are the empty
//! cgroups of runs whose launcher was killed.

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use zt_agent_tests::maps::{PinnedMap, start_ns, task_entry};
use zt_agent_tests::{
    Cgroup, DENIED, Daemon, Identity, OK, Selector, TcpServer, code_and_output, reported,
};

/// The share the storm test gives every identity: small, so that the storm is fast.
const SHARE: u64 = 40;

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} after {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_fork_storm_fails_for_its_identity_alone() {
    let cg = Cgroup::new("tables-storm");
    let policy = Identity::new("storm")
        .selector(Selector::cgroup(&cg.rel))
        .and(Identity::new("calm"));
    let d = Daemon::start_with(
        "tables-storm",
        &policy,
        &["--task-share", &SHARE.to_string()],
    );
    let tasks = |id: &str| d.metric(&format!(r#"zt_agent_identity_tasks{{identity="{id}"}}"#));

    // Sleepers forked until the fork past the share: that one costs the forker its life.
    let storm = cg.spawn_probe(&["fork-storm", "400", "60000"]);
    let out = storm.wait_with_output().expect("storm");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "the storm was not stopped: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let forked = reported(&String::from_utf8_lossy(&out.stdout), "forked").unwrap_or(0);
    assert!(forked < SHARE, "forked {forked} past a share of {SHARE}");
    wait_for("the storm's sleepers are not counted", 10, || {
        tasks("storm") >= (SHARE - 1) as f64
    });
    assert!(tasks("storm") <= (SHARE + 2) as f64, "{}", tasks("storm"));

    // While the storm holds its share, its identity takes no more tasks: one that
    // enters its cgroup is killed rather than left unjudged.
    let (code, out) = cg.run_probe(&["bind", "tcp", "127.0.0.1", "0"]);
    assert_eq!(code, -1, "a task entered a full identity: {out}");
    // Another identity runs, forks and is judged as ever.
    let server = TcpServer::new("127.0.0.1");
    let port = server.port.to_string();
    let (code, out) = d.run("calm", &["child", "tcp", "127.0.0.1", &port]);
    assert_eq!(
        code, DENIED,
        "another identity failed during the storm: {out}"
    );
    let (code, out) = d.run("calm", &["child", "bind", "tcp", "127.0.0.1", "0"]);
    assert_eq!(code, OK, "{out}");
    assert!(
        d.metric(r#"zt_agent_task_share_refused_total{identity="storm"}"#) >= 2.0,
        "{}",
        d.metrics()
    );
    assert_eq!(d.metric("zt_agent_task_share"), SHARE as f64);

    // Killed, the storm leaves no entry behind, and the identity starts afresh.
    std::fs::write(cg.path.join("cgroup.kill"), b"1").expect("kill the storm");
    wait_for("entries of the killed storm are left", 15, || {
        tasks("storm") == 0.0
    });
    let (code, out) = cg.run_probe(&["bind", "tcp", "127.0.0.1", "0"]);
    assert_eq!(code, OK, "{out}");
}

#[test]
fn the_sweep_removes_entries_of_gone_processes_and_zombies_only() {
    let d = Daemon::start("tables-sweep", Identity::new("sweep"));
    let id = u32::try_from(d.state()["ids"]["sweep"].as_u64().expect("id")).expect("u32");
    let tasks = PinnedMap::open(&d.pin_dir.join("maps/ZT_TASKS"));
    let key = |pid: u32| pid.to_ne_bytes();

    // A zombie: exited, not reaped by its parent (this test) yet.
    let mut zombie = std::process::Command::new("true").spawn().expect("true");
    let zpid = zombie.id();
    let zstart = start_ns(zpid);
    wait_for("no zombie", 5, || {
        std::fs::read_to_string(format!("/proc/{zpid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    });
    // A live process, and a pid that nothing holds.
    let mut live = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let lpid = live.id();
    let gone = {
        let mut c = std::process::Command::new("true").spawn().expect("true");
        let pid = c.id();
        let _ = c.wait();
        pid
    };
    // What a scan racing with exits leaves: entries for tasks whose exit hook already
    // ran, and one whose pid another process holds now.
    tasks.set(&key(zpid), &task_entry(id, 4, zstart));
    tasks.set(&key(gone), &task_entry(id, 4, 1_000_000_000));
    tasks.set(&key(lpid), &task_entry(id, 4, start_ns(lpid)));
    // Not this test's own pid: every daemon's programs judge every process, and an
    // entry for the test process would deny its other tests' connects until swept.
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let stranger = other.id();
    tasks.set(
        &key(stranger),
        &task_entry(id, 4, start_ns(stranger) + 10_000_000_000),
    );

    // A thread group whose leader exited while another thread runs: /proc shows a
    // zombie, yet it lives and stays judged.
    let server = TcpServer::new("127.0.0.1");
    let leader = d.spawn_run(
        "sweep",
        &[
            "leader-exit",
            "12000",
            "127.0.0.1",
            &server.port.to_string(),
        ],
    );

    wait_for("the stale entries were not swept", 15, || {
        tasks.get(&key(zpid), 16).is_none()
            && tasks.get(&key(gone), 16).is_none()
            && tasks.get(&key(stranger), 16).is_none()
    });
    assert!(
        tasks.get(&key(lpid), 16).is_some(),
        "a live process lost its entry"
    );
    assert!(
        d.metric("zt_agent_tasks_swept_total") >= 3.0,
        "{}",
        d.metrics()
    );
    let (code, out) = code_and_output(&leader.wait_with_output().expect("leader"));
    assert_eq!(
        code, DENIED,
        "the thread group lost its identity to the sweep: {out}"
    );

    for c in [&mut live, &mut other] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = zombie.wait();
}

/// Launch cgroups a test made by hand, removed (with the task it put in one) however
/// the test ends.
struct Runs {
    dirs: Vec<std::path::PathBuf>,
    task: std::process::Child,
}

impl Drop for Runs {
    fn drop(&mut self) {
        let _ = self.task.kill();
        let _ = self.task.wait();
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn empty_cgroups_of_killed_runs_are_removed_and_nothing_else() {
    let d = Daemon::start("tables-orphans", Identity::new("orphans"));
    let root = zt_agent_tests::cgroup2_root().join("zt").join("orphans");
    // A pid nothing holds: the launcher of a run killed before its clean-up.
    let gone = {
        let mut c = std::process::Command::new("true").spawn().expect("true");
        let pid = c.id();
        let _ = c.wait();
        pid
    };
    let orphan = root.join(format!("{gone}-1"));
    let nested = root.join(format!("{gone}-2"));
    let live = root.join(format!("{}-3", std::process::id()));
    let busy = root.join(format!("{gone}-4"));
    let mut runs = Runs {
        dirs: vec![
            root.clone(),
            orphan.clone(),
            nested.clone(),
            nested.join("inner"),
            live.clone(),
            busy.clone(),
        ],
        task: std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep"),
    };
    for dir in &runs.dirs {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(busy.join("cgroup.procs"), runs.task.id().to_string()).expect("enter");
    // The sweep runs every 5 s.
    wait_for("the orphaned runs' cgroups are removed", 15, || {
        !orphan.exists() && !nested.exists()
    });
    assert!(live.exists(), "a run whose launcher lives keeps its cgroup");
    assert!(busy.exists(), "a cgroup that holds a task stays");
    assert!(
        d.log()
            .contains("removed the empty cgroup of a run whose launcher is gone"),
        "{}",
        d.log()
    );
    runs.dirs.retain(|p| p.exists());
}
