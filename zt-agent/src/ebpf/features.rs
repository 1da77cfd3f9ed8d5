//! The kernel features the programs need, each probed at start-up before anything is
//! loaded, so that a kernel that lacks one is refused with its name (exit 69) rather
//! than with a verifier log. `ZT_AGENT_PROBE_FAIL=KEY[,KEY...]` makes the named probes
//! report the feature missing, so that this path is tested on kernels that have it.

use aya::maps::MapType;
use aya::programs::ProgramType;

use super::btf;

/// The environment variable that makes probes fail on purpose (for tests).
pub const FORCE_FAIL_ENV: &str = "ZT_AGENT_PROBE_FAIL";

/// One kernel feature and where it arrived upstream.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    /// Short name, as `ZT_AGENT_PROBE_FAIL` takes it.
    pub key: &'static str,
    pub what: &'static str,
    /// The upstream release that brought it.
    pub since: &'static str,
    probe: fn(&[u8]) -> Result<bool, String>,
}

/// A feature the kernel lacks.
#[derive(Debug, thiserror::Error)]
#[error(
    "this kernel lacks {what} (Linux {since} or later; probe `{key}`{detail}): zt-agent cannot enforce here, and nothing was loaded"
)]
pub struct Missing {
    pub key: &'static str,
    pub what: &'static str,
    pub since: &'static str,
    pub detail: String,
}

fn map(t: MapType) -> Result<bool, String> {
    aya::sys::is_map_supported(t).map_err(|e| e.to_string())
}

fn prog(t: ProgramType) -> Result<bool, String> {
    aya::sys::is_program_supported(t).map_err(|e| e.to_string())
}

fn tracepoint(vmlinux: &[u8], tp: &str, args: usize) -> Result<bool, String> {
    btf::tracepoint_args_in(vmlinux, tp)
        .map(|n| n.is_some_and(|n| n >= args))
        .map_err(|e| e.to_string())
}

/// Every feature, in the order they are probed. The kernel's BTF comes first: the
/// tracepoint probes read it.
pub const FEATURES: [Feature; 12] = [
    Feature {
        key: "btf",
        what: "kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)",
        since: "5.5",
        probe: |vmlinux| Ok(!vmlinux.is_empty()),
    },
    Feature {
        key: "ringbuf",
        what: "BPF ring buffer maps",
        since: "5.8",
        probe: |_| map(MapType::RingBuf),
    },
    Feature {
        key: "sk_storage",
        what: "socket-local storage maps (sk_storage)",
        since: "5.2",
        probe: |_| map(MapType::SkStorage),
    },
    Feature {
        key: "lpm_trie",
        what: "LPM trie maps",
        since: "4.11",
        probe: |_| map(MapType::LpmTrie),
    },
    Feature {
        key: "array_of_maps",
        what: "arrays of maps",
        since: "4.12",
        probe: |_| map(MapType::ArrayOfMaps),
    },
    Feature {
        key: "cgroup_sock_addr",
        what: "cgroup sock_addr programs (connect, sendmsg, recvmsg, getpeername hooks)",
        since: "5.8",
        probe: |_| prog(ProgramType::CgroupSockAddr),
    },
    Feature {
        key: "cgroup_sock",
        what: "cgroup sock programs (socket creation)",
        since: "4.10",
        probe: |_| prog(ProgramType::CgroupSock),
    },
    Feature {
        key: "cgroup_sockopt",
        what: "cgroup sockopt programs",
        since: "5.3",
        probe: |_| prog(ProgramType::CgroupSockopt),
    },
    Feature {
        key: "cgroup_skb",
        what: "cgroup skb programs (the packet guard)",
        since: "4.10",
        probe: |_| prog(ProgramType::CgroupSkb),
    },
    Feature {
        key: "tp_btf",
        what: "BTF tracepoints (tp_btf) for exec, fork and cgroup attach",
        since: "5.5",
        probe: |v| {
            Ok(tracepoint(v, "sched_process_exec", 3)?
                && tracepoint(v, "sched_process_fork", 2)?
                && tracepoint(v, "cgroup_attach_task", 4)?)
        },
    },
    Feature {
        key: "exit_group_dead",
        what: "the group_dead argument of the sched_process_exit tracepoint",
        since: "6.16",
        probe: |v| tracepoint(v, "sched_process_exit", 2),
    },
    Feature {
        key: "statx_mnt_id",
        what: "statx mount ids (STATX_MNT_ID), which tell the device a file is executed from",
        since: "5.8",
        probe: |_| Ok(statx_mount_id()),
    },
];

fn statx_mount_id() -> bool {
    // SAFETY: zeroed statx is a valid out-buffer; "/" is a valid C string.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: as above, for the duration of the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c"/".as_ptr(),
            0,
            libc::STATX_MNT_ID,
            &raw mut st,
        )
    };
    rc == 0 && st.stx_mask & libc::STATX_MNT_ID != 0
}

/// The probes that `ZT_AGENT_PROBE_FAIL` makes fail.
fn forced() -> Vec<String> {
    std::env::var(FORCE_FAIL_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Probe every feature; the first missing one is the error.
///
/// # Errors
/// A feature the kernel lacks (or whose probe could not run), by name.
pub fn probe_all() -> Result<(), Missing> {
    let vmlinux = std::fs::read(btf::VMLINUX).unwrap_or_default();
    let forced = forced();
    for f in FEATURES {
        let missing = |detail: String| Missing {
            key: f.key,
            what: f.what,
            since: f.since,
            detail,
        };
        if forced.iter().any(|k| k == f.key) {
            return Err(missing(format!(", forced by {FORCE_FAIL_ENV}")));
        }
        match (f.probe)(&vmlinux) {
            Ok(true) => {}
            Ok(false) => return Err(missing(String::new())),
            Err(e) => return Err(missing(format!(": {e}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_named_in_the_message() {
        let mut keys: Vec<&str> = FEATURES.iter().map(|f| f.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), FEATURES.len());
        let m = Missing {
            key: "ringbuf",
            what: "BPF ring buffer maps",
            since: "5.8",
            detail: String::new(),
        };
        assert_eq!(
            m.to_string(),
            "this kernel lacks BPF ring buffer maps (Linux 5.8 or later; probe `ringbuf`): zt-agent cannot enforce here, and nothing was loaded"
        );
    }
}
