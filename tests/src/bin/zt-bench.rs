//! Benchmark client, one thread pinned to one CPU, closed loops only.
//!
//!   zt-bench [--cgroup DIR] connect PORT N   socket, connect, accept, close (SO_LINGER 0)
//!                                            against a listener in this process
//!   zt-bench [--cgroup DIR] denied PORT N    socket and a connect the policy refuses
//!   zt-bench [--cgroup DIR] udp PORT N       sendto without connect, then recv
//!   zt-bench [--cgroup DIR] latency PORT MS  connect loop for MS ms; the worst latency
//!   zt-bench [--cgroup DIR] exec N           fork + exec /bin/true, waited for
//!   zt-bench [--cgroup DIR] check PORT OTHER PORT connects, OTHER is refused
//!
//! Output is one line of key=value pairs. `--cgroup` moves the process into DIR first,
//! which is how peers that match on cgroups (nftables, iptables) see it.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

fn linger0(fd: i32) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid option buffer.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn pin_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("zt-bench: {what}: {e}");
    std::process::exit(10)
}

fn connect_loop(port: u16, n: u32) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| fail("bind", e));
    let addr = listener.local_addr().unwrap_or_else(|e| fail("addr", e));
    let once = || -> Duration {
        let t = Instant::now();
        let c = TcpStream::connect(addr).unwrap_or_else(|e| fail("connect", e));
        let took = t.elapsed();
        let (s, _) = listener.accept().unwrap_or_else(|e| fail("accept", e));
        linger0(c.as_raw_fd());
        drop((c, s));
        took
    };
    for _ in 0..200 {
        once();
    }
    let mut in_connect = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..n {
        in_connect += once();
    }
    let total = start.elapsed();
    println!(
        "ns_per_op={} ns_in_call={}",
        total.as_nanos() / u128::from(n),
        in_connect.as_nanos() / u128::from(n)
    );
}

fn denied_loop(port: u16, n: u32) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut refused = 0u32;
    let start = Instant::now();
    for _ in 0..n {
        match TcpStream::connect(addr) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => refused += 1,
            Err(_) => {}
            Ok(_) => fail("denied", "the connect was allowed"),
        }
    }
    let total = start.elapsed();
    if refused != n {
        fail("denied", format!("{refused} of {n} refused with EPERM"));
    }
    println!(
        "ns_per_op={} ns_in_call={}",
        total.as_nanos() / u128::from(n),
        total.as_nanos() / u128::from(n)
    );
}

fn udp_loop(port: u16, n: u32) {
    let rx = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| fail("bind", e));
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| fail("bind", e));
    let to = rx.local_addr().unwrap_or_else(|e| fail("addr", e));
    let mut buf = [0u8; 64];
    let mut in_send = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        tx.send_to(b"datagram", to)
            .unwrap_or_else(|e| fail("sendto", e));
        in_send += t.elapsed();
        rx.recv(&mut buf).unwrap_or_else(|e| fail("recv", e));
    }
    let total = start.elapsed();
    println!(
        "ns_per_op={} ns_in_call={}",
        total.as_nanos() / u128::from(n),
        in_send.as_nanos() / u128::from(n)
    );
}

fn latency_loop(port: u16, millis: u64) {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| fail("bind", e));
    let addr = listener.local_addr().unwrap_or_else(|e| fail("addr", e));
    let end = Instant::now() + Duration::from_millis(millis);
    let (mut worst, mut count, mut failed) = (Duration::ZERO, 0u64, 0u64);
    while Instant::now() < end {
        let t = Instant::now();
        match TcpStream::connect(addr) {
            Ok(c) => {
                worst = worst.max(t.elapsed());
                let (s, _) = listener.accept().unwrap_or_else(|e| fail("accept", e));
                linger0(c.as_raw_fd());
                drop((c, s));
                count += 1;
            }
            Err(_) => failed += 1,
        }
    }
    println!(
        "max_ns={} connects={count} failed={failed}",
        worst.as_nanos()
    );
}

/// Before timing a case: the allowed port connects, the other is refused (EPERM from
/// zt-agent, a reset from a peer's reject), with listeners on both.
fn check(allowed: u16, other: u16) {
    let _a = TcpListener::bind(("127.0.0.1", allowed)).unwrap_or_else(|e| fail("bind", e));
    let _o = TcpListener::bind(("127.0.0.1", other)).unwrap_or_else(|e| fail("bind", e));
    let to = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    // A peer that drops (rather than rejects) would leave connect() waiting.
    let wait = Duration::from_secs(3);
    if let Err(e) = TcpStream::connect_timeout(&to(allowed), wait) {
        fail("check", format!("the allowed destination failed: {e}"));
    }
    if TcpStream::connect_timeout(&to(other), wait).is_ok() {
        fail("check", "a destination outside the rules connected");
    }
    println!("check=ok");
}

fn exec_loop(n: u32) {
    let start = Instant::now();
    for _ in 0..n {
        let s = std::process::Command::new("/bin/true")
            .status()
            .unwrap_or_else(|e| fail("exec", e));
        if !s.success() {
            fail("exec", s);
        }
    }
    let total = start.elapsed();
    println!(
        "ns_per_op={} execs_per_s={:.0}",
        total.as_nanos() / u128::from(n),
        f64::from(n) / total.as_secs_f64()
    );
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--cgroup") {
        let dir = args
            .get(1)
            .cloned()
            .unwrap_or_else(|| fail("usage", "--cgroup DIR"));
        std::fs::write(format!("{dir}/cgroup.procs"), b"0").unwrap_or_else(|e| fail("cgroup", e));
        args.drain(..2);
    }
    pin_cpu(1);
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail("usage", "see the source"))
    };
    match args.first().map(String::as_str) {
        Some("connect") => connect_loop(num(1) as u16, num(2) as u32),
        Some("denied") => denied_loop(num(1) as u16, num(2) as u32),
        Some("udp") => udp_loop(num(1) as u16, num(2) as u32),
        Some("latency") => latency_loop(num(1) as u16, num(2)),
        Some("exec") => exec_loop(num(1) as u32),
        Some("check") => check(num(1) as u16, num(2) as u16),
        _ => fail(
            "usage",
            "connect|denied|udp PORT N, latency PORT MS, exec N",
        ),
    }
}
