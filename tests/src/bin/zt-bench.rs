//! Benchmark client, one thread pinned to one CPU, closed loops only.
//!
//!   zt-bench [--cgroup DIR] connect PORT N   socket, connect, accept, close (SO_LINGER 0)
//!                                            against a listener in this process
//!   zt-bench [--cgroup DIR] denied PORT N    socket and a connect the policy refuses
//!   zt-bench [--cgroup DIR] udp PORT N       sendto without connect, then recv
//!   zt-bench [--cgroup DIR] latency PORT MS  connect loop for MS ms; the worst latency
//!   zt-bench [--cgroup DIR] exec N           fork + exec /bin/true, waited for
//!   zt-bench [--cgroup DIR] check PORT OTHER PORT connects, OTHER is refused
//!   zt-bench [--cgroup DIR] serve PORT N     a listener that accepts N connections (plus
//!                                            a warm-up) and resets each, on CPU 0
//!   zt-bench dial PORT N                     connects to that listener, waits for the
//!                                            reset: inbound connections per second
//!   zt-bench dns ADDR:PORT NAME N THREADS    N A queries for NAME, THREADS closed loops
//!                                            on connected UDP sockets, as stubs do
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

/// Connections the inbound cases make before timing.
const WARMUP: u32 = 200;

/// The listener side of the inbound case: accept, reset (SO_LINGER 0), again.
fn serve(port: u16, n: u32) {
    pin_cpu(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| fail("bind", e));
    println!("ready");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    for _ in 0..n + WARMUP {
        let (s, _) = listener.accept().unwrap_or_else(|e| fail("accept", e));
        linger0(s.as_raw_fd());
        drop(s);
    }
}

/// The peer of `serve`: connect, wait for the listener's reset, again.
fn dial(port: u16, n: u32) {
    use std::io::Read as _;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let once = || -> Duration {
        let t = Instant::now();
        match TcpStream::connect(addr) {
            Ok(mut c) => {
                let took = t.elapsed();
                let mut b = [0u8; 1];
                let _ = c.read(&mut b);
                took
            }
            // The listener, on the other CPU, accepted and reset the connection before
            // connect() returned: a whole connection all the same.
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => t.elapsed(),
            Err(e) => fail("connect", e),
        }
    };
    for _ in 0..WARMUP {
        once();
    }
    let mut in_connect = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..n {
        in_connect += once();
    }
    let total = start.elapsed();
    println!(
        "ns_per_op={} ns_in_call={} conns_per_s={:.0}",
        total.as_nanos() / u128::from(n),
        in_connect.as_nanos() / u128::from(n),
        f64::from(n) / total.as_secs_f64()
    );
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

/// One A query with a fresh id.
fn dns_query(name: &str, id: u16) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap_or_else(|e| fail("name", e)),
        RecordType::A,
    ));
    m.to_vec().unwrap_or_else(|e| fail("encode", e))
}

fn dns_loop(server: &str, name: &str, n: u32, threads: u32) {
    let server: SocketAddr = server.parse().unwrap_or_else(|e| fail("server", e));
    let per = n / threads.max(1);
    let run = |count: u32| -> (Vec<u64>, u32) {
        let s = UdpSocket::bind(if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })
        .unwrap_or_else(|e| fail("bind", e));
        s.connect(server).unwrap_or_else(|e| fail("connect", e));
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| fail("timeout", e));
        let mut buf = [0u8; 1500];
        let mut lat = Vec::with_capacity(count as usize);
        let mut failed = 0;
        for i in 0..count {
            let id = (i & 0xffff) as u16;
            let q = dns_query(name, id);
            let t = Instant::now();
            s.send(&q).unwrap_or_else(|e| fail("send", e));
            match s.recv(&mut buf) {
                // Answered, by this query's id, without an error code.
                Ok(len) if len > 4 && buf[..2] == id.to_be_bytes() && buf[3] & 0x0f == 0 => {
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                _ => failed += 1,
            }
        }
        (lat, failed)
    };
    // Warm-up: the first answer also installs the address, as for any first lookup.
    let _ = run(50);
    let start = Instant::now();
    let results: Vec<(Vec<u64>, u32)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads.max(1)).map(|_| sc.spawn(|| run(per))).collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| fail("thread", "panicked")))
            .collect()
    });
    let total = start.elapsed();
    let mut lat: Vec<u64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let failed: u32 = results.iter().map(|r| r.1).sum();
    lat.sort_unstable();
    let pct = |p: usize| lat.get(lat.len() * p / 100).copied().unwrap_or(0);
    let done = per * threads.max(1);
    println!(
        "ns_per_op={} ns_in_call={} qps={:.0} p50_ns={} p99_ns={} failed={failed}",
        total.as_nanos() / u128::from(done.max(1)),
        pct(50),
        f64::from(done) / total.as_secs_f64(),
        pct(50),
        pct(99)
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
        Some("serve") => serve(num(1) as u16, num(2) as u32),
        Some("dial") => dial(num(1) as u16, num(2) as u32),
        Some("dns") => dns_loop(
            args.get(1).map_or("", String::as_str),
            args.get(2).map_or("", String::as_str),
            num(3) as u32,
            num(4) as u32,
        ),
        _ => fail(
            "usage",
            "connect|denied|udp|serve|dial PORT N, latency PORT MS, exec N, dns ADDR NAME N THREADS",
        ),
    }
}
