//! zt-agent's kernel side: per-identity egress verdicts at connect/sendmsg time,
//! socket creation and socket option guards, thread-group tagging on fork/exec/exit,
//! and the per-identity exec allowlist.
//!
//! Every program attaches once at the cgroup2 root. Unenrolled tasks pay one task
//! lookup, one socket-storage lookup and one record of where they went, and pass.
#![no_std]
#![no_main]
// Inline assembly for the one atomic add the task counts need.
#![feature(asm_experimental_arch)]

/// Counters and ring buffer events.
mod events;
/// The running kernel's struct offsets and the reads through them.
mod kernel;
/// Every map of the object.
mod maps;
/// The task table's entries and each identity's share of it.
mod tasks;
/// Bytes per identity and flow, and the limits the daemon marked as reached.
mod traffic;
/// Policy lookups: the verdict for one identity and destination.
mod verdict;
/// The entry points, one file per family, each with its logic.
mod programs {
    /// recvmsg, getpeername, and the packet side of the DNS path.
    mod dns;
    /// exec: identity by binary and user, and the exec allowlist.
    mod exec;
    /// bind, and inbound packets: what enrolled sockets may listen on, and who reaches them.
    mod ingress;
    /// Egress packets: routing options that no socket hook sees.
    mod skb;
    /// sock_create, setsockopt: which sockets and options enrolled tasks get.
    mod sock;
    /// connect, sendmsg: the egress verdict.
    mod sock_addr;
    /// fork, cgroup attach, exit: thread-group tagging.
    mod task;
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
