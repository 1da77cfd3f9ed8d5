//! Socket-local storage: who created a socket, and whose DNS the kernel redirected
//! on it.

/// Value of the socket-local storage: the identity of the task that created the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockIdentity {
    pub identity: u32,
    /// Identity the agent's resolver serves this socket's queries as: that of the task
    /// whose DNS the kernel last redirected on it (0: never redirected, refused).
    pub dns_identity: u32,
    /// That task's tgid, for the resolver's events.
    pub dns_tgid: u32,
    /// Where that task sent DNS before the kernel redirected it (port, host byte
    /// order; 0: never redirected). Replies are reported as coming from there, so that
    /// stub resolvers accept them.
    pub dns_port: u16,
    /// `AF_INET` or `AF_INET6` of `dns_addr` (IPv4 in its first 4 bytes).
    pub dns_family: u16,
    pub dns_addr: [u8; 16],
    /// TCP: the socket's received bytes (`bytes_received`) already accounted.
    pub rx_accounted: u64,
}
const _: () = assert!(core::mem::size_of::<SockIdentity>() == 40);
// SAFETY: repr(C), three u32, two u16, 16 bytes, one u64 at offset 32: no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SockIdentity {}

impl SockIdentity {
    /// A socket of `identity` that never sent DNS.
    #[must_use]
    pub const fn new(identity: u32) -> Self {
        Self {
            identity,
            dns_identity: 0,
            dns_tgid: 0,
            dns_port: 0,
            dns_family: 0,
            dns_addr: [0; 16],
            rx_accounted: 0,
        }
    }
}
