//! A seccomp filter for workloads started by `zt-agent run`: sockets only of the
//! families the kernel hooks judge (IPv4, IPv6) or that stay on this host (Unix,
//! netlink).
//!
//! The cgroup socket hooks see only inet sockets. Without this filter a workload could
//! open, say, an AF_VSOCK connection to its VM host. The filter is classic BPF, which
//! seccomp requires; it is installed after no_new_privs, right before exec.
//!
//! The system call numbers are those of the architecture built for (x86_64 or
//! aarch64, whose numbers differ), checked against the native audit architecture.
//!
//! 32-bit system calls (int 0x80 from a 64-bit process, or a 32-bit binary) reach the
//! socket API through socketcall and the compat entry points, which skip some cgroup
//! hooks on some kernels: they are refused outright. x32 system calls likewise.
//!
//! It also refuses ptrace, process_vm_writev and pidfd_getfd: with them a workload
//! could drive, or take sockets from, an unenrolled process of the same user, whose
//! connections no policy judges.

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
pub use arch::*;

/// x86_64, with i386 as its compat ABI and x32 as a third.
#[cfg(target_arch = "x86_64")]
mod arch {
    pub const NATIVE_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    pub const COMPAT_ARCH: u32 = 0x4000_0003; // AUDIT_ARCH_I386
    pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    pub const NR_SOCKET: u32 = 41;
    pub const NR_SOCKETPAIR: u32 = 53;
    pub const NR_PTRACE: u32 = 101;
    pub const NR_PROCESS_VM_WRITEV: u32 = 311;
    pub const NR_PIDFD_GETFD: u32 = 438;
    pub const NR_COMPAT_PTRACE: u32 = 26;
    pub const NR_COMPAT_PROCESS_VM_WRITEV: u32 = 348;
    // i386: socketcall and the direct socket system calls (socket .. shutdown).
    pub const NR_COMPAT_SOCKETCALL: u32 = 102;
    pub const NR_COMPAT_SOCKET_FIRST: u32 = 359;
    pub const NR_COMPAT_SOCKET_LAST: u32 = 373;
}

/// aarch64 (the generic system call table), with 32-bit ARM (EABI) as its compat ABI.
#[cfg(target_arch = "aarch64")]
mod arch {
    pub const NATIVE_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64
    pub const COMPAT_ARCH: u32 = 0x4000_0028; // AUDIT_ARCH_ARM
    /// No x32-like ABI: no system call number reaches it.
    pub const X32_SYSCALL_BIT: u32 = u32::MAX;
    pub const NR_SOCKET: u32 = 198;
    pub const NR_SOCKETPAIR: u32 = 199;
    pub const NR_PTRACE: u32 = 117;
    pub const NR_PROCESS_VM_WRITEV: u32 = 271;
    pub const NR_PIDFD_GETFD: u32 = 438;
    pub const NR_COMPAT_PTRACE: u32 = 26;
    pub const NR_COMPAT_PROCESS_VM_WRITEV: u32 = 377;
    // ARM: socketcall (OABI) and the direct socket system calls (socket .. recvmsg).
    pub const NR_COMPAT_SOCKETCALL: u32 = 102;
    pub const NR_COMPAT_SOCKET_FIRST: u32 = 281;
    pub const NR_COMPAT_SOCKET_LAST: u32 = 297;
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

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program. Built before fork so the child only installs it.
/// Jump offsets count from the next instruction; the index of each is in a comment.
#[must_use]
pub fn socket_filter() -> Vec<libc::sock_filter> {
    let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let ja = 0x05; // BPF_JMP | BPF_JA
    let [unix, inet, inet6, netlink] = ALLOWED_FAMILIES;
    vec![
        stmt(LD_W_ABS, OFF_ARCH),                       // 0
        jump(JEQ_K, NATIVE_ARCH, 2, 0),                 // 1: -> 4
        jump(JEQ_K, COMPAT_ARCH, 0, 25),                // 2: -> 3, else -> 28 allow
        stmt(ja, 16),                                   // 3: -> 20 (compat block)
        stmt(LD_W_ABS, OFF_NR),                         // 4
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),             // 5: x32 -> 6 deny, else -> 7
        stmt(RET_K, deny),                              // 6
        jump(JEQ_K, NR_PTRACE, 10, 0),                  // 7: -> 18 deny
        jump(JEQ_K, NR_PROCESS_VM_WRITEV, 9, 0),        // 8: -> 18 deny
        jump(JEQ_K, NR_PIDFD_GETFD, 8, 0),              // 9: -> 18 deny
        jump(JEQ_K, NR_SOCKET, 2, 0),                   // 10: -> 13
        jump(JEQ_K, NR_SOCKETPAIR, 1, 0),               // 11: -> 13
        stmt(RET_K, SECCOMP_RET_ALLOW),                 // 12
        stmt(LD_W_ABS, OFF_ARG0_LO),                    // 13: the family
        jump(JEQ_K, unix, 4, 0),                        // 14: -> 19
        jump(JEQ_K, inet, 3, 0),                        // 15: -> 19
        jump(JEQ_K, inet6, 2, 0),                       // 16: -> 19
        jump(JEQ_K, netlink, 1, 0),                     // 17: -> 19
        stmt(RET_K, deny),                              // 18
        stmt(RET_K, SECCOMP_RET_ALLOW),                 // 19
        stmt(LD_W_ABS, OFF_NR),                         // 20: compat
        jump(JEQ_K, NR_COMPAT_SOCKETCALL, 5, 0),        // 21: -> 27 deny
        jump(JEQ_K, NR_COMPAT_PTRACE, 4, 0),            // 22: -> 27 deny
        jump(JEQ_K, NR_COMPAT_PROCESS_VM_WRITEV, 3, 0), // 23: -> 27 deny
        jump(JEQ_K, NR_PIDFD_GETFD, 2, 0),              // 24: -> 27 deny (same number)
        jump(JGE_K, NR_COMPAT_SOCKET_FIRST, 0, 2),      // 25: below the range -> 28
        jump(JGT_K, NR_COMPAT_SOCKET_LAST, 1, 0),       // 26: above the range -> 28
        stmt(RET_K, deny),                              // 27: in the range, or listed
        stmt(RET_K, SECCOMP_RET_ALLOW),                 // 28
    ]
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

    /// Every jump lands inside the program, on an instruction after it.
    #[test]
    fn jumps_stay_in_the_program() {
        let p = socket_filter();
        for (i, ins) in p.iter().enumerate() {
            if ins.code == JEQ_K || ins.code == JGE_K || ins.code == JGT_K {
                assert!(i + 1 + usize::from(ins.jt) < p.len(), "jt at {i}");
                assert!(i + 1 + usize::from(ins.jf) < p.len(), "jf at {i}");
            }
            if ins.code == 0x05 {
                assert!(i + 1 + (ins.k as usize) < p.len(), "ja at {i}");
            }
        }
        assert_eq!(p.last().map(|i| i.k), Some(SECCOMP_RET_ALLOW));
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
                0x05 => pc += ins.k as usize,
                RET_K => return ins.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn what_the_filter_allows_and_refuses() {
        let p = socket_filter();
        let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let x86 = |nr, arg0| verdict(&p, nr, NATIVE_ARCH, arg0);
        let i386 = |nr, arg0| verdict(&p, nr, COMPAT_ARCH, arg0);
        assert_eq!(x86(NR_SOCKET, libc::AF_INET as u32), SECCOMP_RET_ALLOW);
        assert_eq!(x86(NR_SOCKET, libc::AF_INET6 as u32), SECCOMP_RET_ALLOW);
        assert_eq!(x86(NR_SOCKET, libc::AF_UNIX as u32), SECCOMP_RET_ALLOW);
        assert_eq!(x86(NR_SOCKET, libc::AF_VSOCK as u32), deny);
        assert_eq!(x86(NR_SOCKETPAIR, libc::AF_PACKET as u32), deny);
        assert_eq!(x86(NR_PTRACE, 0), deny);
        assert_eq!(x86(NR_PROCESS_VM_WRITEV, 0), deny);
        assert_eq!(x86(NR_PIDFD_GETFD, 0), deny);
        assert_eq!(x86(0 /* read */, 0), SECCOMP_RET_ALLOW);
        if X32_SYSCALL_BIT != u32::MAX {
            assert_eq!(x86(X32_SYSCALL_BIT | 41, 2), deny);
        }
        assert_eq!(i386(NR_COMPAT_SOCKETCALL, 0), deny);
        assert_eq!(i386(NR_COMPAT_SOCKET_FIRST, 2), deny);
        assert_eq!(i386(NR_COMPAT_SOCKET_LAST, 2), deny);
        assert_eq!(i386(NR_COMPAT_PTRACE, 0), deny);
        assert_eq!(i386(NR_COMPAT_PROCESS_VM_WRITEV, 0), deny);
        assert_eq!(i386(3 /* read */, 0), SECCOMP_RET_ALLOW);
        assert_eq!(verdict(&p, 0, 0xdead, 0), SECCOMP_RET_ALLOW);
    }
}
