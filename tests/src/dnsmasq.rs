//! dnsmasq as the upstream resolver of the DNS tests.

use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// dnsmasq on 127.0.0.1 at a free port, answering from a hosts file only: the
/// upstream resolver of the tests. Killed on drop.
pub struct Dnsmasq {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Dnsmasq {
    /// Serve `hosts` (address, name) with TTL `ttl` seconds.
    #[must_use]
    pub fn start(name: &str, hosts: &[(&str, &str)], ttl: u32) -> Self {
        Self::start_with(name, hosts, ttl, &[])
    }

    /// The same, with more dnsmasq arguments (`--address=/domain/ADDR`, say).
    #[must_use]
    pub fn start_with(name: &str, hosts: &[(&str, &str)], ttl: u32, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("zt-dnsmasq-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dnsmasq dir");
        let text: String = hosts.iter().map(|(a, n)| format!("{a} {n}\n")).collect();
        std::fs::write(dir.join("hosts"), text).expect("hosts");
        // A port free for UDP may be taken for TCP (dnsmasq needs both): when dnsmasq
        // exits at once, try another.
        for _ in 0..5 {
            let port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("free port")
                .port();
            let child = Command::new("dnsmasq")
                .arg("--keep-in-foreground")
                .arg("--no-resolv")
                .arg("--no-hosts")
                .arg(format!("--addn-hosts={}", dir.join("hosts").display()))
                .arg("--listen-address=127.0.0.1")
                .arg("--bind-interfaces")
                .arg(format!("--port={port}"))
                .arg(format!("--local-ttl={ttl}"))
                .arg(format!("--pid-file={}", dir.join("pid").display()))
                .arg("--user=root")
                .arg("--log-facility=-")
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq must be installed (./x test installs dnsmasq-base)");
            let mut child = child;
            // Ready when it answers over TCP.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { port, dir, child };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("dnsmasq did not start on port {port}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("dnsmasq exited at start on five free ports");
    }

    /// The daemon argument that makes this the upstream.
    #[must_use]
    pub fn upstream(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
