//! Container runtimes for the tests, from Debian's packages, each private to one test:
//! a root filesystem built here (no image is pulled), a `dockerd` with its own data
//! root and socket, and Podman with its own storage, serving its Docker-compatible API
//! on a socket of its own. Everything is stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::probe::{code_and_output, probe_bin};

/// A root filesystem: zt-probe with the libraries it links, busybox-static for a
/// shell, and `/opt/busybox`, a copy of busybox that no policy names.
pub struct Rootfs {
    pub dir: PathBuf,
}

fn copy_into(root: &Path, file: &Path, at: &str) {
    let dst = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir in rootfs");
    std::fs::copy(file, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
}

impl Rootfs {
    #[must_use]
    pub fn build(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("zt-test-rootfs-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let probe = probe_bin();
        copy_into(&dir, &probe, "/zt-probe");
        // The shared libraries zt-probe links, at the paths the loader looks for them.
        let ldd = Command::new("ldd").arg(&probe).output().expect("ldd");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            if let Some(p) = path {
                copy_into(&dir, &p, &p.display().to_string());
            }
        }
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "busybox-static is missing (scripts/setup.sh installs it)"
        );
        copy_into(&dir, busybox, "/bin/busybox");
        copy_into(&dir, busybox, "/opt/busybox");
        for applet in ["sh", "sleep", "true", "cat"] {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).expect("applet");
        }
        for d in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(dir.join(d)).expect("rootfs dir");
        }
        Self { dir }
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} not ready after 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `dockerd` of one test: no iptables, no bridge (containers use the host's network),
/// its own data root, exec root and socket.
pub struct Docker {
    pub socket: PathBuf,
    base: PathBuf,
    child: Option<Child>,
}

impl Docker {
    #[must_use]
    pub fn start(name: &str) -> Self {
        crate::host::require_root();
        let base = PathBuf::from(format!("/tmp/zt-test-docker-{name}"));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("docker dir");
        let socket = base.join("docker.sock");
        let log = std::fs::File::create(base.join("dockerd.log")).expect("dockerd log");
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--bridge=none", "--ip-forward=false"])
            .arg("--data-root")
            .arg(base.join("data"))
            .arg("--exec-root")
            .arg(base.join("exec"))
            .arg("--pidfile")
            .arg(base.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (docker.io) must be installed: scripts/setup.sh installs it");
        let d = Self {
            socket,
            base,
            child: Some(child),
        };
        wait_for("dockerd", || {
            d.cmd()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        d
    }

    /// `docker -H unix://SOCKET` (Debian's client, whatever else is on PATH).
    #[must_use]
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("/usr/bin/docker");
        c.arg("-H").arg(format!("unix://{}", self.socket.display()));
        c
    }

    /// Import a root filesystem as image `tag`.
    pub fn import(&self, rootfs: &Rootfs, tag: &str) {
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs.dir)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar");
        let out = self
            .cmd()
            .args(["import", "-", tag])
            .stdin(tar.stdout.take().expect("tar stdout"))
            .output()
            .expect("docker import");
        assert!(
            tar.wait().is_ok_and(|s| s.success()),
            "tar of the root filesystem"
        );
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker ARGS`, waited for: (exit code, output).
    #[must_use]
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let out: Output = self.cmd().args(args).output().expect("docker");
        code_and_output(&out)
    }

    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Ok(out) = self.cmd().args(["ps", "-aq"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = self.cmd().args(["rm", "-f"]).args(&ids).output();
            }
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child; dockerd stops its containerd and
            // unmounts its layers on SIGTERM.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        unmount_below(&self.base);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Unmount whatever a runtime left mounted below `dir` (deepest first).
fn unmount_below(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

/// Podman with its own storage, run with runc and the cgroupfs manager, and its
/// Docker-compatible API served on a socket of its own.
pub struct Podman {
    pub socket: PathBuf,
    base: PathBuf,
    service: Option<Child>,
}

impl Podman {
    #[must_use]
    pub fn start(name: &str) -> Self {
        crate::host::require_root();
        let base = PathBuf::from(format!("/tmp/zt-test-podman-{name}"));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).expect("podman dir");
        let socket = base.join("podman.sock");
        let mut p = Self {
            socket,
            base,
            service: None,
        };
        let log = std::fs::File::create(p.base.join("service.log")).expect("service log");
        let service = p
            .cmd()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", p.socket.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("podman must be installed: scripts/setup.sh installs it");
        p.service = Some(service);
        let sock = p.socket.clone();
        wait_for("podman system service", || sock.exists());
        p
    }

    /// `podman` on this test's storage, with runc (crun refuses this machine's cgroup
    /// layout) and cgroupfs.
    #[must_use]
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.base.join("root"))
            .arg("--runroot")
            .arg(self.base.join("run"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
        c
    }

    /// `podman ARGS`, waited for: (exit code, output).
    #[must_use]
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let out: Output = self.cmd().args(args).output().expect("podman");
        code_and_output(&out)
    }

    /// The options every `podman run` here needs: the sandbox cannot raise limits.
    pub const RUN: [&'static str; 4] = [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-a", "-f"]).output();
        if let Some(mut c) = self.service.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        unmount_below(&self.base);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
