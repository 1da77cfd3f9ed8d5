//! The last doors of `zt-agent run`, tried as its workload would: the caller's
//! environment, signals and abstract unix sockets of processes of its own user, a
//! socket made through io_uring, a 32-bit sendmmsg, and launch cgroups made under a
//! loose umask.

use std::io::BufRead as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};

use zt_agent_tests::{
    DENIED, Daemon, Identity, OK, Rule, UdpServer, cgroup2_root, probe_bin, run_probe_unenrolled,
};

/// An unenrolled zt-probe as nobody, like the workload, holding on until it is killed
/// or its stdin closes; started once it printed its first line. Its stdout comes back
/// too, to stay open until it ends.
fn victim(args: &[&str]) -> (Child, impl std::io::BufRead + use<>) {
    let mut c = Command::new(probe_bin())
        .args(["as-uid", "65534"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("victim");
    let mut line = String::new();
    let mut out = std::io::BufReader::new(c.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("victim output");
    assert!(line.contains("listening"), "victim: {line}");
    (c, out)
}

#[test]
fn the_callers_environment_does_not_reach_the_workload() {
    let d = Daemon::start(
        "doors-env",
        Identity::new("dr-env").egress(Rule::to(["127.0.0.1"]).ports([9])),
    );
    let out = d
        .run_command(
            "dr-env",
            &[
                "--user",
                "nobody",
                "--env",
                "ZT_PASSED",
                "--env",
                "ZT_SET=given",
            ],
            &["/usr/bin/env"],
        )
        .env("LD_PRELOAD", "/nonexistent/libzt-preload.so")
        .env("ZT_SECRET_TOKEN", "hunter2")
        .env("PATH", "/root/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("ZT_PASSED", "from-caller")
        .env("TERM", "xterm-zt")
        .env("LANG", "C.UTF-8")
        .output()
        .expect("run env");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    let mut vars: Vec<&str> = text.lines().collect();
    vars.sort_unstable();
    // The one variable `run` adds: where the daemon serves the SPIFFE Workload API.
    let spiffe = format!(
        "SPIFFE_ENDPOINT_SOCKET=unix://{}",
        d.workload_socket.display()
    );
    assert_eq!(
        vars,
        [
            "HOME=/nonexistent",
            "LANG=C.UTF-8",
            "LOGNAME=nobody",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            spiffe.as_str(),
            "TERM=xterm-zt",
            "USER=nobody",
            "ZT_PASSED=from-caller",
            "ZT_SET=given",
        ],
        "the workload's environment; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn workload_cannot_signal_or_reach_abstract_sockets_of_its_users_other_processes() {
    let d = Daemon::start(
        "doors-scope",
        Identity::new("dr-scope").egress(Rule::to(["127.0.0.1"]).ports([9])),
    );
    let name = format!("zt-test-doors-{}", std::process::id());
    let (mut v, mut v_out) = victim(&["abstract-listen", &name]);
    let pid = v.id().to_string();
    // Another process of the same user outside any workload can do both: the probe
    // works, and what stops the workload below is its domain.
    let (code, out) = run_probe_unenrolled(&["as-uid", "65534", "abstract-connect", &name]);
    assert_eq!(code, OK, "{out}");
    let (code, out) = run_probe_unenrolled(&["as-uid", "65534", "signal", &pid, "0"]);
    assert_eq!(code, OK, "{out}");

    let (code, out) = d.run("dr-scope", &["abstract-connect", &name]);
    assert_eq!(
        code, DENIED,
        "the workload reached an abstract socket outside it: {out}"
    );
    let (code, out) = d.run("dr-scope", &["signal", &pid, "15"]);
    assert_eq!(
        code, DENIED,
        "the workload signalled a process outside it: {out}"
    );
    assert!(
        v.try_wait().expect("victim").is_none(),
        "the victim died of the workload's signal"
    );
    // Inside its own domain it still signals itself and its children.
    let (code, out) = d.run("dr-scope", &["child", "signal", "0", "0"]);
    assert_eq!(code, OK, "{out}");
    drop(v.stdin.take());
    let _ = std::io::Read::read_to_end(&mut v_out, &mut Vec::new());
    let _ = v.wait();
}

#[test]
fn io_uring_is_refused_so_no_socket_escapes_the_family_check() {
    let d = Daemon::start(
        "doors-uring",
        Identity::new("dr-uring").egress(Rule::to(["127.0.0.1"]).ports([9])),
    );
    // Unenrolled, io_uring makes an AF_VSOCK socket here (this kernel has vsock).
    let (code, out) = run_probe_unenrolled(&["uring-socket", "vsock"]);
    assert_eq!(
        code, OK,
        "io_uring or AF_VSOCK missing on this kernel: {out}"
    );
    assert_eq!(d.run("dr-uring", &["vsock"]).0, DENIED, "socket(AF_VSOCK)");
    let (code, out) = d.run("dr-uring", &["uring-socket", "vsock"]);
    assert_eq!(code, DENIED, "AF_VSOCK socket through io_uring: {out}");
    // io_uring is refused as a whole, not by family: no hook here could judge one.
    let (code, out) = d.run("dr-uring", &["uring-socket", "inet"]);
    assert_eq!(code, DENIED, "{out}");
}

#[test]
fn a_32_bit_sendmmsg_is_refused() {
    let u = UdpServer::new("127.0.0.1");
    let port = u.port.to_string();
    let d = Daemon::start(
        "doors-compat",
        Identity::new("dr-compat").egress(Rule::to(["127.0.0.1"]).ports([u.port]).udp()),
    );
    // The i386 entry works on this kernel, and the destination is allowed.
    let (code, out) = run_probe_unenrolled(&["int80-sendmmsg", "127.0.0.1", &port]);
    assert_eq!(code, OK, "int 0x80 sendmmsg unenrolled: {out}");
    assert_eq!(u.received(), 1);
    assert_eq!(
        d.run("dr-compat", &["udp-sendto", "127.0.0.1", &port]).0,
        OK
    );
    assert_eq!(u.received(), 1);
    let (code, out) = d.run("dr-compat", &["int80-sendmmsg", "127.0.0.1", &port]);
    assert_eq!(code, DENIED, "a 32-bit sendmmsg left the workload: {out}");
    assert_eq!(u.received(), 0, "the 32-bit datagram arrived");
}

#[test]
fn launch_cgroups_are_roots_and_0755_whatever_the_umask() {
    let d = Daemon::start(
        "doors-umask",
        Identity::new("dr-umask").egress(Rule::to(["127.0.0.1"]).ports([9])),
    );
    let root = cgroup2_root().display().to_string();
    // The workload looks at its own cgroup and the identity's, and tries to make a
    // cgroup of its own inside.
    let script = format!(
        "d={root}$(grep '^0::' /proc/self/cgroup | cut -d: -f3); stat -c '%a %u' \"$d\" \"$(dirname \"$d\")\"; if mkdir \"$d/mine\" 2>/dev/null; then echo made; fi"
    );
    for umask in [0o000, 0o077] {
        let mut c = d.run_command("dr-umask", &["--user", "nobody"], &["sh", "-c", &script]);
        // SAFETY: umask between fork and exec.
        unsafe {
            c.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        let out = c.output().expect("run");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["755 0", "755 0"],
            "umask {umask:03o}: {out:?}"
        );
    }
}
