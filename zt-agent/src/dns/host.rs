//! The host's own addresses: every address on any interface of the daemon's network
//! namespace, IPv4 and IPv6, and the IPv4 broadcast addresses of its networks. A DNS
//! answer never opens one of them (rebinding a name to the host itself), unless a
//! literal rule of the identity covers it.
//!
//! Kept current: a netlink subscription to address changes reads them again at once,
//! and the resolver's tick reads them every second besides, in case a notification was
//! lost.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The current addresses, sorted, and how often they changed.
#[derive(Clone, Default)]
pub struct HostAddrs {
    current: Arc<RwLock<Arc<Vec<IpAddr>>>>,
    generation: Arc<AtomicU64>,
}

/// Every address on the interfaces, sorted and without duplicates.
#[must_use]
pub fn read() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&raw mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        // ifa_ifu is the broadcast address where IFF_BROADCAST is set.
        let broadcast = (ifa.ifa_flags & libc::IFF_BROADCAST as u32) != 0;
        for sa in [
            ifa.ifa_addr,
            if broadcast {
                ifa.ifa_ifu
            } else {
                std::ptr::null_mut()
            },
        ] {
            // SAFETY: a sockaddr of the family it names, from getifaddrs.
            if let Some(a) = unsafe { ip_of(sa) } {
                out.push(a);
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort_unstable();
    out.dedup();
    out
}

/// The address of an IPv4 or IPv6 sockaddr; `None` for other families or null.
///
/// # Safety
/// `sa` is null or points to a sockaddr as long as its family says.
unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller's promise; the family decides how much is read.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let v4 = &*sa.cast::<libc::sockaddr_in>();
                Some(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()))
            }
            libc::AF_INET6 => {
                let v6 = &*sa.cast::<libc::sockaddr_in6>();
                Some(IpAddr::from(v6.sin6_addr.s6_addr).to_canonical())
            }
            _ => None,
        }
    }
}

impl HostAddrs {
    /// Read the addresses now, and follow their changes on a thread of their own.
    #[must_use]
    pub fn follow() -> Self {
        let me = Self::default();
        me.refresh();
        let follower = me.clone();
        let spawned = std::thread::Builder::new()
            .name("zt-addrs".into())
            .spawn(move || follower.watch());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot follow address changes; they are read every second");
        }
        me
    }

    /// The addresses as last read, sorted.
    #[must_use]
    pub fn get(&self) -> Arc<Vec<IpAddr>> {
        self.current.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// A number that changes whenever the addresses do.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Read the addresses again; true if they changed.
    pub fn refresh(&self) -> bool {
        let now = read();
        let Ok(mut cur) = self.current.write() else {
            return false;
        };
        if **cur == now {
            return false;
        }
        *cur = Arc::new(now);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Block on netlink address notifications, reading the addresses after each burst.
    fn watch(&self) {
        let Some(fd) = subscribe() else {
            tracing::warn!(
                "no netlink address notifications; host addresses are read every second"
            );
            return;
        };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: reading into a buffer we own, of the length we pass.
            let n = unsafe { libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOBUFS) {
                // ENOBUFS: notifications were lost; read anyway. Anything else: wait.
                std::thread::sleep(Duration::from_secs(1));
            }
            // Let a burst (an interface coming up with several addresses) settle.
            // SAFETY: as above; MSG_DONTWAIT never blocks.
            while unsafe {
                libc::recv(fd.0, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            } > 0
            {}
            self.refresh();
        }
    }
}

struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor this struct owns.
        unsafe { libc::close(self.0) };
    }
}

/// A netlink socket subscribed to IPv4 and IPv6 address changes.
fn subscribe() -> Option<Fd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return None;
    }
    let fd = Fd(fd);
    // SAFETY: a zeroed sockaddr_nl is valid; its fields are set below.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    // SAFETY: binding the socket we own to a sockaddr_nl of the right size.
    let r = unsafe {
        libc::bind(
            fd.0,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    (r == 0).then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_among_the_host_addresses() {
        let a = read();
        assert!(a.contains(&IpAddr::from([127, 0, 0, 1])), "{a:?}");
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
    }
}
