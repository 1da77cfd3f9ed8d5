//! Test cgroups below `<cgroup2>/zt-test/`, and starting zt-probe inside one: by a write
//! to cgroup.procs before exec, or born there with clone3(CLONE_INTO_CGROUP).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::host::{cgroup2_root, is_stale_tag, tag};
use crate::probe::{code_and_output, probe_bin};

/// Remove a cgroup and everything below it, killing what runs there. Best effort, as
/// clean-up on drop must be.
pub fn remove_cgroup_tree(dir: &Path) {
    let _ = zt_agent_host::cgroup::kill_and_remove(dir);
}

/// Remove the test cgroups of test processes that died. Once per test process.
fn sweep_stale_cgroups() {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| {
        let Ok(rd) = std::fs::read_dir(cgroup2_root().join("zt-test")) else {
            return;
        };
        for e in rd.flatten() {
            if is_stale_tag(&e.file_name().to_string_lossy()) {
                remove_cgroup_tree(&e.path());
            }
        }
    });
}

/// A cgroup made by a test, below `<cgroup2>/zt-test/<tag>/`. Removed on drop.
pub struct Cgroup {
    pub path: PathBuf,
    /// Path relative to the cgroup2 mount, as policy selectors write it.
    pub rel: String,
}

impl Cgroup {
    #[must_use]
    pub fn new(name: &str) -> Self {
        sweep_stale_cgroups();
        let rel = format!("/zt-test/{}/{name}", tag());
        let path = cgroup2_root().join(rel.trim_start_matches('/'));
        remove_cgroup_tree(&path);
        std::fs::create_dir_all(&path).expect("create cgroup");
        Self { path, rel }
    }

    /// Start `zt-probe ARGS` as root inside this cgroup (before it executes).
    #[must_use]
    pub fn spawn_probe(&self, args: &[&str]) -> Child {
        let procs = self.path.join("cgroup.procs");
        let mut cmd = Command::new(probe_bin());
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: only a file write between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd.spawn().expect("spawn probe in cgroup")
    }

    /// Start `zt-probe ARGS` as root directly inside this cgroup with
    /// clone3(CLONE_INTO_CGROUP), the way systemd starts services: the task never
    /// enters the cgroup by a write to cgroup.procs. Returns the probe's exit code.
    #[must_use]
    pub fn clone3_probe(&self, args: &[&str]) -> i32 {
        use std::ffi::CString;
        use std::os::fd::AsRawFd as _;
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
            cgroup: u64,
        }
        const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
        let dir = std::fs::File::open(&self.path).expect("open cgroup dir");
        let prog = CString::new(probe_bin().display().to_string()).expect("path");
        let argv_c: Vec<CString> = std::iter::once(prog.clone())
            .chain(args.iter().map(|a| CString::new(*a).expect("arg")))
            .collect();
        let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        let cl = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with a valid argument block; the child only calls execve and
        // _exit, both async-signal-safe, on memory prepared before the call.
        let pid = unsafe { libc::syscall(libc::SYS_clone3, &raw const cl, size_of::<CloneArgs>()) };
        assert!(pid >= 0, "clone3: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid as i32, &raw mut status, 0) };
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        }
    }

    /// Run `zt-probe ARGS` as root inside this cgroup and return (exit code, output).
    #[must_use]
    pub fn run_probe(&self, args: &[&str]) -> (i32, String) {
        let out = self
            .spawn_probe(args)
            .wait_with_output()
            .expect("wait probe");
        code_and_output(&out)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}
