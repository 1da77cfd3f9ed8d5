//! A seccomp filter for workloads started by `zt-agent run`: sockets only of the
//! families the kernel hooks judge (IPv4, IPv6) or that stay on this host (Unix,
//! netlink).
//!
//! The cgroup socket hooks see only inet sockets. Without this filter a workload could
//! open, say, an AF_VSOCK connection to its VM host. The filter is classic BPF, which
//! seccomp requires; it is installed after no_new_privs, right before exec.
//!
//! 32-bit system calls (int 0x80 from a 64-bit process, or a 32-bit binary) reach the
//! socket API through socketcall and the compat entry points, which skip some cgroup
//! hooks on some kernels: every one of them is refused (socketcall, the direct socket
//! calls, sendmmsg and recvmmsg). x32 system calls likewise, and any other
//! architecture the kernel may report.
//!
//! io_uring is refused: `IORING_OP_SOCKET` creates sockets without the socket() system
//! call, so this filter never sees their family, and no hook that loads on kernels
//! without BPF LSM sees it either (the cgroup sock_create hook runs for inet sockets
//! only). With io_uring a workload would get the AF_VSOCK socket socket() refuses it.
//!
//! It also refuses ptrace, process_vm_writev and pidfd_getfd: with them a workload
//! could drive, or take sockets from, an unenrolled process of the same user, whose
//! connections no policy judges.

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the seccomp filter of `zt-agent run` knows x86_64 and aarch64 only");

/// x86_64's x32 ABI: the same architecture, system call numbers with this bit set.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const fn nr(n: libc::c_long) -> u32 {
    n as u32
}

const NR_SOCKET: u32 = nr(libc::SYS_socket);
const NR_SOCKETPAIR: u32 = nr(libc::SYS_socketpair);

/// Native system calls refused outright.
const NATIVE_DENIED: [u32; 6] = [
    nr(libc::SYS_ptrace),
    nr(libc::SYS_process_vm_writev),
    nr(libc::SYS_pidfd_getfd),
    nr(libc::SYS_io_uring_setup),
    nr(libc::SYS_io_uring_enter),
    nr(libc::SYS_io_uring_register),
];

/// The i386 ABI on x86_64 kernels (int 0x80, 32-bit binaries).
#[cfg(target_arch = "x86_64")]
mod i386 {
    pub const AUDIT_ARCH: u32 = 0x4000_0003;
    /// Refused outright: socketcall (every socket call in one), the compat mmsg calls,
    /// ptrace and friends, io_uring.
    pub const DENIED: [u32; 10] = [
        102, // socketcall
        345, // sendmmsg
        337, // recvmmsg
        417, // recvmmsg_time64
        26,  // ptrace
        348, // process_vm_writev
        438, // pidfd_getfd
        425, // io_uring_setup
        426, // io_uring_enter
        427, // io_uring_register
    ];
    /// The direct socket calls: socket, socketpair, bind, connect, listen, accept4,
    /// getsockopt, setsockopt, getsockname, getpeername, sendto, sendmsg, recvfrom,
    /// recvmsg, shutdown.
    pub const SOCKET_FIRST: u32 = 359;
    pub const SOCKET_LAST: u32 = 373;
}

const ALLOWED_FAMILIES: [u32; 4] = [
    libc::AF_UNIX as u32,
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
    libc::AF_NETLINK as u32,
];

// seccomp_data offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Where a conditional jump goes: the next instruction, or a labelled block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum To {
    Next,
    Deny,
    Allow,
    Family,
    #[cfg(target_arch = "x86_64")]
    Compat,
}

/// A small assembler: jumps name blocks, offsets are worked out at the end, so that no
/// offset is counted by hand.
#[derive(Default)]
struct Asm {
    ins: Vec<(libc::sock_filter, To, To)>,
    labels: Vec<(To, usize)>,
}

impl Asm {
    fn label(&mut self, l: To) {
        self.labels.push((l, self.ins.len()));
    }
    fn load(&mut self, off: u32) {
        self.ins.push((stmt(LD_W_ABS, off), To::Next, To::Next));
    }
    fn ret(&mut self, k: u32) {
        self.ins.push((stmt(RET_K, k), To::Next, To::Next));
    }
    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.ins.push((stmt(code, k), jt, jf));
    }
    fn finish(self) -> Vec<libc::sock_filter> {
        let at = |l: To| {
            self.labels
                .iter()
                .find(|(x, _)| *x == l)
                .map_or(0, |(_, i)| *i)
        };
        self.ins
            .iter()
            .enumerate()
            .map(|(i, (ins, jt, jf))| {
                let off = |t: To| match t {
                    To::Next => 0,
                    // Jumps only go forward, to a label placed later.
                    l => u8::try_from(at(l).saturating_sub(i + 1)).unwrap_or(0),
                };
                libc::sock_filter {
                    jt: off(*jt),
                    jf: off(*jf),
                    ..*ins
                }
            })
            .collect()
    }
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The filter program. Built before fork so the child only installs it.
#[must_use]
pub fn socket_filter() -> Vec<libc::sock_filter> {
    let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let mut a = Asm::default();
    a.load(OFF_ARCH);
    #[cfg(target_arch = "x86_64")]
    a.jump(JEQ_K, i386::AUDIT_ARCH, To::Compat, To::Next);
    // Any architecture but the native one (and i386 on x86_64) is refused.
    a.jump(JEQ_K, AUDIT_ARCH_NATIVE, To::Next, To::Deny);
    a.load(OFF_NR);
    #[cfg(target_arch = "x86_64")]
    a.jump(JGE_K, X32_SYSCALL_BIT, To::Deny, To::Next);
    for n in NATIVE_DENIED {
        a.jump(JEQ_K, n, To::Deny, To::Next);
    }
    a.jump(JEQ_K, NR_SOCKET, To::Family, To::Next);
    a.jump(JEQ_K, NR_SOCKETPAIR, To::Family, To::Allow);
    a.label(To::Family);
    a.load(OFF_ARG0_LO);
    for f in ALLOWED_FAMILIES {
        a.jump(JEQ_K, f, To::Allow, To::Next);
    }
    a.ret(deny);
    #[cfg(target_arch = "x86_64")]
    {
        a.label(To::Compat);
        a.load(OFF_NR);
        for n in i386::DENIED {
            a.jump(JEQ_K, n, To::Deny, To::Next);
        }
        a.jump(JGE_K, i386::SOCKET_FIRST, To::Next, To::Allow);
        a.jump(JGT_K, i386::SOCKET_LAST, To::Allow, To::Deny);
    }
    a.label(To::Deny);
    a.ret(deny);
    a.label(To::Allow);
    a.ret(SECCOMP_RET_ALLOW);
    a.finish()
}

/// Install `prog` for the calling thread. Requires no_new_privs (or CAP_SYS_ADMIN).
pub fn install(prog: &[libc::sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(std::io::Error::other)?,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: fprog points at a valid filter that outlives the call.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const fprog,
            0,
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every jump lands inside the program, on an instruction after it, and every
    /// path ends in a return.
    #[test]
    fn jumps_stay_in_the_program() {
        let p = socket_filter();
        for (i, ins) in p.iter().enumerate() {
            if ins.code == JEQ_K || ins.code == JGE_K || ins.code == JGT_K {
                assert!(i + 1 + usize::from(ins.jt) < p.len(), "jt at {i}");
                assert!(i + 1 + usize::from(ins.jf) < p.len(), "jf at {i}");
            }
        }
        assert_eq!(p.last().map(|i| i.code), Some(RET_K));
    }

    /// Run the classic BPF program over one seccomp_data (nr, arch, arg0).
    fn verdict(p: &[libc::sock_filter], nr: u32, arch: u32, arg0: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = p[pc];
            pc += 1;
            match ins.code {
                LD_W_ABS => {
                    acc = match ins.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0_LO => arg0,
                        k => panic!("load of offset {k}"),
                    }
                }
                JEQ_K | JGE_K | JGT_K => {
                    let taken = match ins.code {
                        JEQ_K => acc == ins.k,
                        JGE_K => acc >= ins.k,
                        _ => acc > ins.k,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                RET_K => return ins.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn what_the_filter_allows_and_refuses() {
        let p = socket_filter();
        let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let native = |nr, arg0| verdict(&p, nr, AUDIT_ARCH_NATIVE, arg0);
        assert_eq!(native(NR_SOCKET, libc::AF_INET as u32), SECCOMP_RET_ALLOW);
        assert_eq!(native(NR_SOCKET, libc::AF_INET6 as u32), SECCOMP_RET_ALLOW);
        assert_eq!(native(NR_SOCKET, libc::AF_UNIX as u32), SECCOMP_RET_ALLOW);
        assert_eq!(
            native(NR_SOCKET, libc::AF_NETLINK as u32),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(native(NR_SOCKET, libc::AF_VSOCK as u32), deny);
        assert_eq!(native(NR_SOCKETPAIR, libc::AF_PACKET as u32), deny);
        assert_eq!(
            native(NR_SOCKETPAIR, libc::AF_UNIX as u32),
            SECCOMP_RET_ALLOW
        );
        for n in NATIVE_DENIED {
            assert_eq!(native(n, 0), deny, "native {n}");
        }
        assert_eq!(native(nr(libc::SYS_io_uring_setup), 0), deny);
        assert_eq!(native(nr(libc::SYS_read), 0), SECCOMP_RET_ALLOW);
        assert_eq!(native(nr(libc::SYS_sendmmsg), 0), SECCOMP_RET_ALLOW);
        assert_eq!(verdict(&p, 0, 0xdead, 0), deny, "unknown architecture");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_compat_and_x32_socket_call_is_refused() {
        let p = socket_filter();
        let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let i386 = |nr| verdict(&p, nr, i386::AUDIT_ARCH, 0);
        // socketcall, sendmmsg, recvmmsg (both), socket .. shutdown, io_uring, ptrace.
        for n in [
            102, 345, 337, 417, 359, 362, 370, 373, 425, 426, 427, 26, 348, 438,
        ] {
            assert_eq!(i386(n), deny, "i386 {n}");
        }
        assert_eq!(i386(3 /* read */), SECCOMP_RET_ALLOW);
        assert_eq!(i386(374 /* userfaultfd */), SECCOMP_RET_ALLOW);
        assert_eq!(i386(358 /* execveat */), SECCOMP_RET_ALLOW);
        let x32 = |nr| verdict(&p, X32_SYSCALL_BIT | nr, AUDIT_ARCH_NATIVE, 2);
        assert_eq!(x32(41), deny);
        assert_eq!(x32(0), deny);
    }
}
