//! Network fixtures: listeners that stand in for real servers, a veth pair that
//! carries test addresses of this host, and a peer: test addresses in a network
//! namespace of their own, reachable from this host but not its own.

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd as _;
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

    /// The same, listening inside network namespace `netns` (a path such as
    /// `/run/netns/NAME`): only its accepting thread enters the namespace.
    #[must_use]
    pub fn in_netns(netns: &str, ip: &str) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (netns, ip) = (netns.to_owned(), ip.to_owned());
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).expect("open netns");
            // SAFETY: setns on this thread only, with a namespace descriptor we own.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {netns}: {}", std::io::Error::last_os_error());
            let l = TcpListener::bind((ip.as_str(), 0)).expect("bind tcp in netns");
            tx.send(l.local_addr().expect("addr").port()).expect("port");
            for c in l.incoming() {
                drop(c);
            }
        });
        Self {
            port: rx.recv().expect("listener in netns"),
        }
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

/// Test addresses on the far end of a veth pair, in a network namespace of their own:
/// this host reaches them, but they are not this host's own addresses (which a DNS
/// answer may never open). The near end gets an address of each network (`.254`, or
/// `::fe`). Removed on drop.
pub struct Peer {
    veth: String,
    netns: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ADDR/LEN` with the address's last byte (IPv4) or group (IPv6) replaced: the near
/// end's address on the same network.
fn near_end(cidr: &str) -> String {
    let (a, len) = cidr.split_once('/').expect("ADDR/LEN");
    let near = match a.parse::<IpAddr>().expect("address") {
        IpAddr::V4(v4) => {
            let mut o = v4.octets();
            o[3] = 254;
            IpAddr::from(o)
        }
        IpAddr::V6(v6) => {
            let mut g = v6.segments();
            g[7] = 0xfe;
            IpAddr::from(g)
        }
    };
    format!("{near}/{len}")
}

impl Peer {
    /// `name` is at most 12 characters; the namespace is `zt-NAME`.
    #[must_use]
    pub fn new(name: &str, addrs: &[&str]) -> Self {
        let p = Self {
            veth: name.to_owned(),
            netns: format!("zt-{name}"),
        };
        p.remove();
        let far = format!("{name}p");
        ip(&["netns", "add", &p.netns]);
        ip(&["link", "add", name, "type", "veth", "peer", "name", &far]);
        ip(&["link", "set", &far, "netns", &p.netns]);
        let mut near: Vec<String> = addrs.iter().map(|a| near_end(a)).collect();
        near.dedup();
        let add = |ns: Option<&str>, a: &str, dev: &str| {
            let mut args: Vec<&str> = ns.map_or_else(Vec::new, |n| vec!["-n", n]);
            args.extend(["addr", "add", a, "dev", dev]);
            if a.contains(':') {
                args.push("nodad");
            }
            ip(&args);
        };
        for a in &near {
            add(None, a, name);
        }
        for a in addrs {
            add(Some(&p.netns), a, &far);
        }
        ip(&["link", "set", name, "up"]);
        ip(&["-n", &p.netns, "link", "set", &far, "up"]);
        ip(&["-n", &p.netns, "link", "set", "lo", "up"]);
        p
    }

    /// The namespace as a path for [`TcpServer::in_netns`].
    #[must_use]
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }

    /// A TCP listener on `ip`, one of the peer's addresses.
    #[must_use]
    pub fn tcp_server(&self, ip: &str) -> TcpServer {
        TcpServer::in_netns(&self.netns_path(), ip)
    }

    fn remove(&self) {
        for args in [
            vec!["link", "del", self.veth.as_str()],
            vec!["netns", "del", self.netns.as_str()],
        ] {
            let _ = Command::new("ip")
                .args(&args)
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.remove();
    }
}
