//! The programs of the eBPF object: one table of their names, kinds and attach points
//! in attach order, which the loader iterates, and their return codes.

/// Program names (the Rust function names in zt-agent-ebpf).
pub mod program_names {
    pub const CONNECT4: &str = "zt_connect4";
    pub const CONNECT6: &str = "zt_connect6";
    pub const SENDMSG4: &str = "zt_sendmsg4";
    pub const SENDMSG6: &str = "zt_sendmsg6";
    pub const SOCK_CREATE: &str = "zt_sock_create";
    pub const SETSOCKOPT: &str = "zt_setsockopt";
    pub const FORK: &str = "zt_fork";
    pub const EXIT: &str = "zt_exit";
    pub const CGROUP_ATTACH: &str = "zt_cgroup_attach";
    pub const EXEC: &str = "zt_exec";
    /// BPF LSM exec guard, used where the kernel loads it (EPERM before the exec).
    pub const EXEC_LSM: &str = "zt_exec_lsm";
    pub const SKB_EGRESS: &str = "zt_skb_egress";
    /// Inbound connections and datagrams of enrolled sockets.
    pub const SKB_INGRESS: &str = "zt_skb_ingress";
    /// Binds of enrolled sockets to a port.
    pub const BIND4: &str = "zt_bind4";
    pub const BIND6: &str = "zt_bind6";
    /// Report DNS replies from the agent's resolver as coming from where the task sent.
    pub const RECVMSG4: &str = "zt_recvmsg4";
    pub const RECVMSG6: &str = "zt_recvmsg6";
    pub const GETPEERNAME4: &str = "zt_getpeername4";
    pub const GETPEERNAME6: &str = "zt_getpeername6";
}

/// The call a cgroup sock_addr program runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockAddrHook {
    Connect4,
    Connect6,
    Sendmsg4,
    Sendmsg6,
    Recvmsg4,
    Recvmsg6,
    Getpeername4,
    Getpeername6,
    Bind4,
    Bind6,
}

impl SockAddrHook {
    /// The attach type's name, as the eBPF section names it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connect4 => "connect4",
            Self::Connect6 => "connect6",
            Self::Sendmsg4 => "sendmsg4",
            Self::Sendmsg6 => "sendmsg6",
            Self::Recvmsg4 => "recvmsg4",
            Self::Recvmsg6 => "recvmsg6",
            Self::Getpeername4 => "getpeername4",
            Self::Getpeername6 => "getpeername6",
            Self::Bind4 => "bind4",
            Self::Bind6 => "bind6",
        }
    }
}

/// What a program is and where it attaches. Every cgroup program attaches once, at
/// the cgroup2 root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// cgroup sock_addr, on one call.
    CgroupSockAddr(SockAddrHook),
    /// cgroup sock, at socket creation (`sock_create`).
    CgroupSock,
    /// cgroup sockopt, on `setsockopt`.
    CgroupSockopt,
    /// cgroup skb, on egress.
    CgroupSkbEgress,
    /// cgroup skb, on ingress (every packet delivered to a socket of the host).
    CgroupSkbIngress,
    /// BTF raw tracepoint (tp_btf) on this tracepoint.
    TpBtf(&'static str),
    /// BPF LSM program on this hook. Optional: used where the kernel loads it.
    Lsm(&'static str),
}

impl ProgramKind {
    /// The first part of the program's ELF section: the program type.
    #[must_use]
    pub const fn section_prefix(self) -> &'static str {
        match self {
            Self::CgroupSockAddr(_) | Self::CgroupSock | Self::CgroupSockopt => "cgroup",
            Self::CgroupSkbEgress | Self::CgroupSkbIngress => "cgroup_skb",
            Self::TpBtf(_) => "tp_btf",
            Self::Lsm(_) => "lsm",
        }
    }

    /// The attach type, tracepoint or hook: the second part of the ELF section.
    #[must_use]
    pub const fn attach_point(self) -> &'static str {
        match self {
            Self::CgroupSockAddr(hook) => hook.as_str(),
            Self::CgroupSock => "sock_create",
            Self::CgroupSockopt => "setsockopt",
            Self::CgroupSkbEgress => "egress",
            Self::CgroupSkbIngress => "ingress",
            Self::TpBtf(point) | Self::Lsm(point) => point,
        }
    }

    /// The kernel's `enum bpf_attach_type` value a link of the program is made with.
    #[must_use]
    pub const fn attach_type(self) -> u32 {
        use SockAddrHook as H;
        match self {
            Self::CgroupSkbIngress => 0,
            Self::CgroupSkbEgress => 1,
            Self::CgroupSock => 2,
            Self::CgroupSockAddr(H::Bind4) => 8,
            Self::CgroupSockAddr(H::Bind6) => 9,
            Self::CgroupSockAddr(H::Connect4) => 10,
            Self::CgroupSockAddr(H::Connect6) => 11,
            Self::CgroupSockAddr(H::Sendmsg4) => 14,
            Self::CgroupSockAddr(H::Sendmsg6) => 15,
            Self::CgroupSockAddr(H::Recvmsg4) => 19,
            Self::CgroupSockAddr(H::Recvmsg6) => 20,
            Self::CgroupSockopt => 22,
            Self::TpBtf(_) => 23,
            Self::Lsm(_) => 27,
            Self::CgroupSockAddr(H::Getpeername4) => 29,
            Self::CgroupSockAddr(H::Getpeername6) => 30,
        }
    }

    /// Attached to the cgroup2 root (as opposed to a tracepoint or an LSM hook).
    #[must_use]
    pub const fn is_cgroup(self) -> bool {
        !matches!(self, Self::TpBtf(_) | Self::Lsm(_))
    }

    /// Enforcement is complete without it (the BPF LSM exec guard: many kernels refuse
    /// BPF LSM, and the tp_btf exec hook judges every exec anyway).
    #[must_use]
    pub const fn is_optional(self) -> bool {
        matches!(self, Self::Lsm(_))
    }
}

/// One program of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    pub name: &'static str,
    pub kind: ProgramKind,
}

/// Every program of the object, in attach order.
pub const PROGRAMS: [Program; 19] = {
    use ProgramKind::{
        CgroupSkbEgress, CgroupSkbIngress, CgroupSock, CgroupSockAddr, CgroupSockopt, Lsm, TpBtf,
    };
    use SockAddrHook as H;
    use program_names as n;
    const fn p(name: &'static str, kind: ProgramKind) -> Program {
        Program { name, kind }
    }
    [
        p(n::SKB_EGRESS, CgroupSkbEgress),
        // Inbound before binds: a listener never accepts before its packets are judged.
        p(n::SKB_INGRESS, CgroupSkbIngress),
        p(n::BIND4, CgroupSockAddr(H::Bind4)),
        p(n::BIND6, CgroupSockAddr(H::Bind6)),
        // Reply rewriting before redirection, so no redirected query's answer is seen
        // with the resolver's address.
        p(n::RECVMSG4, CgroupSockAddr(H::Recvmsg4)),
        p(n::RECVMSG6, CgroupSockAddr(H::Recvmsg6)),
        p(n::GETPEERNAME4, CgroupSockAddr(H::Getpeername4)),
        p(n::GETPEERNAME6, CgroupSockAddr(H::Getpeername6)),
        p(n::CONNECT4, CgroupSockAddr(H::Connect4)),
        p(n::CONNECT6, CgroupSockAddr(H::Connect6)),
        p(n::SENDMSG4, CgroupSockAddr(H::Sendmsg4)),
        p(n::SENDMSG6, CgroupSockAddr(H::Sendmsg6)),
        p(n::SOCK_CREATE, CgroupSock),
        p(n::SETSOCKOPT, CgroupSockopt),
        p(n::EXEC_LSM, Lsm("bprm_check_security")),
        p(n::EXEC, TpBtf("sched_process_exec")),
        p(n::FORK, TpBtf("sched_process_fork")),
        p(n::EXIT, TpBtf("sched_process_exit")),
        p(n::CGROUP_ATTACH, TpBtf("cgroup_attach_task")),
    ]
};

/// Return codes of cgroup sock_addr, sock and sockopt programs.
pub const CGROUP_REJECT: i32 = 0;
pub const CGROUP_ALLOW: i32 = 1;
/// Return codes of cgroup skb programs.
pub const SKB_PASS: i32 = 1;
pub const SKB_DROP: i32 = 0;
