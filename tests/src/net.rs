//! Network fixtures: listeners that stand in for real servers, and a veth pair that
//! carries test addresses.

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A TCP listener that accepts and drops connections until the test ends.
pub struct TcpServer {
    pub port: u16,
}

impl TcpServer {
    #[must_use]
    pub fn new(ip: &str) -> Self {
        let l = TcpListener::bind((ip, 0)).expect("bind tcp");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
        Self { port }
    }
}

/// A UDP socket that counts what reaches it.
pub struct UdpServer {
    sock: UdpSocket,
    pub port: u16,
}

impl UdpServer {
    #[must_use]
    pub fn new(ip: &str) -> Self {
        let sock = UdpSocket::bind((ip, 0)).expect("bind udp");
        let port = sock.local_addr().expect("addr").port();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        Self { sock, port }
    }

    /// Datagrams received within the read timeout.
    #[must_use]
    pub fn received(&self) -> usize {
        let mut n = 0;
        let mut buf = [0u8; 64];
        while self.sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }
}

/// A veth pair carrying test addresses: they are local to this host (connects to them
/// stay on the machine) but are not loopback, which DNS answers may never open.
/// Removed on drop.
pub struct Veth {
    name: String,
}

impl Veth {
    /// `name` is at most 12 characters; the peer is `<name>p`.
    #[must_use]
    pub fn new(name: &str, addrs: &[&str]) -> Self {
        let v = Self {
            name: name.to_owned(),
        };
        let _ = Command::new("ip")
            .args(["link", "del", name])
            .stderr(Stdio::null())
            .status();
        let peer = format!("{name}p");
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        for a in addrs {
            if a.contains(':') {
                ip(&["-6", "addr", "add", a, "dev", name, "nodad"]);
            } else {
                ip(&["addr", "add", a, "dev", name]);
            }
        }
        ip(&["link", "set", name, "up"]);
        ip(&["link", "set", &peer, "up"]);
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .status();
    }
}

/// A TCP and UDP port free on 127.0.0.1 and ::1 just now, for a listener a workload
/// opens later (policies name it before it exists).
#[must_use]
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = l.local_addr().expect("addr").port();
        let free = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("::1", port)).is_ok()
            && UdpSocket::bind(("::1", port)).is_ok();
        if free {
            return port;
        }
    }
}

/// Send `n` datagrams to `to` from a socket bound to `from` (port 0).
pub fn send_udp(from: &str, to: std::net::SocketAddr, n: usize) {
    let s = UdpSocket::bind((from, 0)).expect("bind udp sender");
    for _ in 0..n {
        s.send_to(b"datagram", to).expect("send_to");
    }
}
