//! systemd's readiness protocol: `READY=1` on `$NOTIFY_SOCKET` once the programs are
//! attached and the policy is in force, so that units ordered after zt-agent start
//! only then (`Type=notify`). Without the variable (no systemd) it does nothing.

use std::os::unix::net::UnixDatagram;

/// Tell the service manager the daemon is ready, if one asked.
pub fn ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|s| {
        let bytes = path.as_encoded_bytes();
        // `@name` is a socket in the abstract namespace.
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            s.send_to_addr(b"READY=1", &addr)
        } else {
            s.send_to(b"READY=1", &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "telling the service manager the daemon is ready");
    }
}
