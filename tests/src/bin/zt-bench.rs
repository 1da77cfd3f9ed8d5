//! Benchmark client: a closed loop of socket, connect, accept and close (SO_LINGER 0)
//! in one thread pinned to one CPU, against a listener in the same process.
//!
//!   zt-bench connect PORT ITERATIONS   prints "ns_per_connect=N ns_in_connect=M"
//!
//! The listener is bound by the caller's port choice on 127.0.0.1 so the policy can
//! name it.

use std::net::{TcpListener, TcpStream};
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some("connect"), Some(port), Some(n)) = (
        args.first().map(String::as_str),
        args.get(1).and_then(|p| p.parse::<u16>().ok()),
        args.get(2).and_then(|n| n.parse::<u32>().ok()),
    ) else {
        eprintln!("usage: zt-bench connect PORT ITERATIONS");
        std::process::exit(2);
    };
    pin_cpu(1);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Warm up.
    for _ in 0..200 {
        let c = TcpStream::connect(addr).expect("connect");
        let (s, _) = listener.accept().expect("accept");
        linger0(c.as_raw_fd());
        drop((c, s));
    }
    let mut in_connect = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let c = match TcpStream::connect(addr) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("connect: {e}");
                std::process::exit(10);
            }
        };
        in_connect += t.elapsed();
        let (s, _) = listener.accept().expect("accept");
        linger0(c.as_raw_fd());
        drop((c, s));
    }
    let total = start.elapsed();
    println!(
        "ns_per_connect={} ns_in_connect={}",
        total.as_nanos() / u128::from(n),
        in_connect.as_nanos() / u128::from(n)
    );
}
