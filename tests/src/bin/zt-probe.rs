//! A workload for the integration tests: opens real sockets the way an attacker or an
//! ordinary client would, and reports the outcome as its exit code.
//!
//! Exit codes (`zt_agent_tests::probe::code`): 0 success, 10 EPERM/EACCES (denied),
//! 11 another error, 12 a spawned program was killed by SIGKILL, 2 bad usage.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socket,
};

use zt_agent_tests::probe::code::{DENIED, KILLED, OK, OTHER, TIMEOUT, USAGE};

#[path = "zt-probe/doors.rs"]
mod doors;

fn outcome(what: &str, r: std::io::Result<()>) -> u8 {
    match r {
        Ok(()) => {
            println!("{what}: ok");
            0
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            println!("{what}: denied ({e})");
            DENIED
        }
        Err(e) => {
            println!("{what}: error ({e})");
            OTHER
        }
    }
}

fn addr(host: &str, port: &str) -> SocketAddr {
    let ip: IpAddr = host.parse().unwrap_or_else(|_| usage());
    SocketAddr::new(ip, port.parse().unwrap_or_else(|_| usage()))
}

fn usage() -> ! {
    eprintln!(
        "usage: zt-probe tcp|udp-sendto|udp-connect ADDR PORT | raw4 | rthdr | ipopts |\n\
         child PROBE-ARGS... | move-cgroup DIR PROBE-ARGS... | fd-server UNIX-PATH |\n\
         fd-client UNIX-PATH ADDR PORT | loop-tcp ADDR PORT MILLIS |\n\
         spawn PROG ARGS... | spawn-memfd FILE ARGS... | as-uid UID PROBE-ARGS... |\n\
         wait-stdin PROBE-ARGS... | ptrace PID | proc-mem PID |\n\
         dns udp|udp-connect|tcp SERVER NAME A|AAAA | dns-raw SERVER HEX | resolve NAME |\n\
         listen [--reuseport] ADDR PORT|auto N MILLIS | bind tcp|udp ADDR PORT |\n\
         udp-recv ADDR PORT MILLIS | udp-ping ADDR PORT MILLIS |\n\
         connect-wait [--from SRC] ADDR PORT MILLIS |\n\
         listen-pass UNIX-PATH ADDR PORT | accept-fd UNIX-PATH N MILLIS | fork-storm N HOLD-MS |\n\
         inherit-listen ADDR PORT PROG ARGS... | accept-env N MILLIS |\n\
         leader-exit MILLIS ADDR PORT |\n\
         dns-labels udp|udp-connect|tcp SERVER A|AAAA LABEL... |\n\
         dns-flood SERVER NAME N SOCKETS | dns-fresh SERVER NAME N | hold ADDR PORT N SECS HEX|- |\n\
         hold-unix UNIX-PATH N SECS HEX|- |\n\
         connects udp|tcp ADDR PORT N | soak DESTFILE |\n\
         slowloris ADDR PORT HEX EVERY_MS SECS |\n\
         signal PID SIG | abstract-listen NAME | abstract-connect NAME |\n\
         uring-socket vsock|inet | int80-sendmmsg ADDR PORT"
    );
    std::process::exit(USAGE.into())
}

fn tcp(a: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(5))?;
    let _ = s.write_all(b"hi");
    Ok(())
}

fn udp_socket(a: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
}

fn udp_sendto(a: SocketAddr) -> std::io::Result<()> {
    udp_socket(a)?.send_to(b"probe", a).map(|_| ())
}

fn udp_connect(a: SocketAddr) -> std::io::Result<()> {
    let s = udp_socket(a)?;
    s.connect(a)?;
    s.send(b"probe").map(|_| ())
}

fn cvt(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn raw4() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is closed right away.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) })?;
    // SAFETY: we own fd.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// A socket of a family the cgroup hooks never see: AF_VSOCK reaches a VM's host.
fn vsock() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is closed right away.
    let fd = cvt(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) })?;
    // SAFETY: we own fd.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

fn setsockopt_bytes(fd: RawFd, level: i32, name: i32, val: &[u8]) -> std::io::Result<()> {
    // SAFETY: val is a valid buffer of the given length.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// A segment routing header (type 4) with two segments: Linux accepts it from an
/// unprivileged socket, and it sends packets via an address no hook judged.
fn rthdr() -> std::io::Result<()> {
    let s = UdpSocket::bind("[::]:0")?;
    setsockopt_bytes(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RTHDR, &srh())
}

fn srh() -> [u8; 40] {
    let mut hdr = [0u8; 40];
    hdr[1] = 4; // hdrlen in 8-octet units, not counting the first 8
    hdr[2] = 4; // type 4: segment routing
    hdr[3] = 1; // segments left
    hdr[4] = 1; // last entry
    hdr[8..24].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    hdr[24..40].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    hdr
}

/// sendmsg() to ADDR with one ancillary option: the per-call form of a socket option.
fn sendmsg_cmsg(a: SocketAddr, level: i32, ty: i32, data: &[u8]) -> std::io::Result<()> {
    let s = udp_socket(a)?;
    s.connect(a)?;
    let mut payload = *b"probe";
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(data.len() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: zeroed msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer has room for one header and `data`.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&raw const msg);
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = libc::CMSG_LEN(data.len() as u32) as usize;
        std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
    }
    // SAFETY: msg is fully initialised.
    cvt(unsafe { libc::sendmsg(s.as_raw_fd(), &raw const msg, 0) } as libc::c_int).map(|_| ())
}

fn ipopts() -> std::io::Result<()> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    // NOP, NOP, NOP, end of options.
    setsockopt_bytes(
        s.as_raw_fd(),
        libc::IPPROTO_IP,
        libc::IP_OPTIONS,
        &[1, 1, 1, 0],
    )
}

/// Run another probe in a child process and pass its exit code on.
/// Connect, send N bytes in 16 KiB writes (at most RATE bytes a second when RATE is
/// not 0), shut the sending side, then read what the peer sends back until it closes.
/// Prints `received=BYTES`. A send that fails (a limit reached) or stalls for 5 s is
/// the error.
fn tcp_transfer(to: SocketAddr, n: u64, rate: u64) -> std::io::Result<()> {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let chunk = [0x5au8; 16_384];
    let mut left = n;
    while left > 0 {
        let k = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        if let Err(e) = s.write_all(&chunk[..k]) {
            println!("sent={}", n - left);
            return Err(e);
        }
        left -= k as u64;
        if rate > 0 {
            std::thread::sleep(Duration::from_secs_f64(k as f64 / rate as f64));
        }
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    println!("sent={n} received={}", got.len());
    Ok(())
}

/// From a connected UDP socket, send N datagrams of SIZE bytes, each answered by the
/// peer; prints `received=BYTES`.
fn udp_transfer(to: SocketAddr, n: u32, size: usize) -> std::io::Result<()> {
    let s = std::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    s.connect(to)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let out = vec![0x33u8; size];
    let mut buf = vec![0u8; 65_536];
    let mut received = 0usize;
    for _ in 0..n {
        s.send(&out)?;
        received += s.recv(&mut buf)?;
    }
    println!("sent={} received={received}", u64::from(n) * size as u64);
    Ok(())
}

fn child(args: &[String]) -> u8 {
    let me = std::env::current_exe().unwrap_or_else(|_| usage());
    match Command::new(me).args(args).status() {
        Ok(s) => s.code().map_or(OTHER, |c| c as u8),
        Err(e) => {
            println!("child: error ({e})");
            OTHER
        }
    }
}

/// How a spawned program ended: its exit code, KILLED on SIGKILL, OTHER otherwise.
fn report(what: &str, status: std::io::Result<std::process::ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(s) if s.code().is_some() => {
            let c = s.code().unwrap_or_default();
            println!("{what}: exit {c}");
            c as u8
        }
        Ok(s) if s.signal() == Some(libc::SIGKILL) => {
            println!("{what}: killed by SIGKILL");
            KILLED
        }
        Ok(s) => {
            println!("{what}: {s}");
            OTHER
        }
        Err(e) => {
            println!("{what}: error ({e})");
            if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                DENIED
            } else {
                OTHER
            }
        }
    }
}

/// fork + execve PROG ARGS (argv[0] = PROG) and report how it ended.
fn spawn(prog: &str, args: &[String]) -> u8 {
    report("spawn", Command::new(prog).args(args).status())
}

/// fork, copy FILE into a memfd and fexecve it: an exec with no path at all.
fn spawn_memfd(file: &str, args: &[String]) -> u8 {
    use std::ffi::CString;
    let Ok(bytes) = std::fs::read(file) else {
        return OTHER;
    };
    let argv_c: Vec<CString> = std::iter::once(file.to_owned())
        .chain(args.iter().cloned())
        .map(|a| CString::new(a).unwrap_or_default())
        .collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: a fresh memfd, written in full before the fork.
    let fd = unsafe { libc::memfd_create(c"zt-probe-memfd".as_ptr(), 0) };
    if fd < 0 {
        return OTHER;
    }
    // SAFETY: the descriptor is ours; the File closes it.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    if f.write_all(&bytes).is_err() {
        return OTHER;
    }
    // SAFETY: the child calls only fexecve and _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            libc::fexecve(f.as_raw_fd(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    use std::os::unix::process::ExitStatusExt as _;
    report(
        "spawn-memfd",
        Ok(std::process::ExitStatus::from_raw(status)),
    )
}

/// Become UID (and gid UID, no supplementary groups), then exec this probe with the
/// rest: the exec happens with the new real uid.
fn as_uid(uid: &str, rest: &[String]) -> u8 {
    use std::os::unix::process::CommandExt as _;
    let Ok(uid) = uid.parse::<u32>() else { usage() };
    let me = std::env::current_exe().unwrap_or_else(|_| usage());
    // SAFETY: plain syscalls on this single-threaded process.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(uid) == 0
            && libc::setuid(uid) == 0
    };
    if !ok {
        println!("as-uid: error ({})", std::io::Error::last_os_error());
        return OTHER;
    }
    let e = Command::new(me).args(rest).exec();
    println!("as-uid: exec error ({e})");
    OTHER
}

/// PTRACE_ATTACH to PID (then detach): driving another process.
fn ptrace_attach(pid: &str) -> std::io::Result<()> {
    let pid: libc::pid_t = pid.parse().unwrap_or_else(|_| usage());
    // SAFETY: plain ptrace requests on another process.
    unsafe {
        if libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut st = 0;
        libc::waitpid(pid, &raw mut st, 0);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    Ok(())
}

/// Open /proc/PID/mem for writing: driving another process without ptrace(2).
fn proc_mem(pid: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .map(drop)
}

/// Read one line from stdin, then run the rest in-process.
fn wait_stdin(rest: &[String]) -> u8 {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    dispatch(rest)
}

/// Move this process into cgroup DIR (creating it), then run the rest in-process.
fn move_cgroup(dir: &str, rest: &[String]) -> u8 {
    let _ = std::fs::create_dir_all(dir);
    if let Err(e) = std::fs::write(format!("{dir}/cgroup.procs"), b"0") {
        println!("move-cgroup: error ({e})");
        return OTHER;
    }
    println!("moved to {dir}");
    dispatch(rest)
}

/// Create a TCP socket here, hand it to whoever connects to UNIX-PATH, then exit.
fn fd_server(path: &str) -> std::io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    send_fd(path, sock.as_raw_fd())
}

/// Receive a socket over UNIX-PATH and connect it to ADDR:PORT.
fn fd_client(path: &str, a: SocketAddr) -> std::io::Result<()> {
    let (conn, fd) = recv_fd(path)?;
    let s = TcpStream::from(fd);
    let sa = nix::sys::socket::SockaddrIn::from(match a {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => usage(),
    });
    let r = nix::sys::socket::connect(s.as_raw_fd(), &sa).map_err(std::io::Error::from);
    let _ = (&conn).write_all(b"done");
    r
}

/// Connect repeatedly for MILLIS ms; print how many attempts passed and were denied.
fn loop_tcp(a: SocketAddr, millis: u64) -> u8 {
    let end = Instant::now() + Duration::from_millis(millis);
    let (mut ok, mut denied, mut other) = (0u64, 0u64, 0u64);
    while Instant::now() < end {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(_) => ok += 1,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => denied += 1,
            Err(_) => other += 1,
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("ok={ok} denied={denied} other={other}");
    0
}

/// A socket of ADDR's family and `ty`, not bound.
fn inet_socket(a: &SocketAddr, ty: libc::c_int) -> std::io::Result<OwnedFd> {
    let family = if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is ours.
    let fd = cvt(unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: we own fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_int(fd: RawFd, level: i32, name: i32, v: libc::c_int) -> std::io::Result<()> {
    setsockopt_bytes(fd, level, name, &v.to_ne_bytes())
}

fn bind_fd(fd: RawFd, a: SocketAddr) -> std::io::Result<()> {
    let sa = nix::sys::socket::SockaddrStorage::from(a);
    nix::sys::socket::bind(fd, &sa).map_err(std::io::Error::from)
}

fn local_port(fd: RawFd) -> u16 {
    nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd)
        .ok()
        .and_then(|s| {
            s.as_sockaddr_in()
                .map(nix::sys::socket::SockaddrIn::port)
                .or_else(|| s.as_sockaddr_in6().map(nix::sys::socket::SockaddrIn6::port))
        })
        .unwrap_or(0)
}

/// A TCP listener on ADDR:PORT, or on ADDR's family with no bind at all when PORT is
/// `auto` (listen() picks a port). Prints `listening port=P`.
fn listener(a_host: &str, a_port: &str, reuseport: bool) -> std::io::Result<TcpListener> {
    let auto = a_port == "auto";
    let a = addr(a_host, if auto { "0" } else { a_port });
    let fd = inet_socket(&a, libc::SOCK_STREAM)?;
    set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuseport {
        set_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if !auto {
        bind_fd(fd.as_raw_fd(), a)?;
    }
    // SAFETY: listen on our own socket.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 64) })?;
    println!("listening port={}", local_port(fd.as_raw_fd()));
    let _ = std::io::stdout().flush();
    Ok(TcpListener::from(fd))
}

/// Accept up to N connections within MILLIS; over each, data both ways (send `hello`,
/// read what the peer sent). Prints `accepted=K`.
fn accept_loop(l: &TcpListener, n: usize, millis: u64) -> u8 {
    let end = Instant::now() + Duration::from_millis(millis);
    let _ = l.set_nonblocking(true);
    let mut accepted = 0;
    while accepted < n && Instant::now() < end {
        match l.accept() {
            Ok((mut c, peer)) => {
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = c.write_all(b"hello");
                let mut buf = [0u8; 16];
                let got = c.read(&mut buf).unwrap_or(0);
                println!("from={peer} read={got}");
                accepted += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                println!("accept: error ({e})");
                break;
            }
        }
    }
    println!("accepted={accepted}");
    0
}

fn listen(args: &[&str]) -> u8 {
    let (reuseport, rest) = match args {
        ["--reuseport", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let [host, port, n, ms] = rest else { usage() };
    match listener(host, port, reuseport) {
        Ok(l) => accept_loop(
            &l,
            n.parse().unwrap_or_else(|_| usage()),
            ms.parse().unwrap_or_else(|_| usage()),
        ),
        Err(e) => outcome("listen", Err(e)),
    }
}

fn bind_only(proto: &str, a: SocketAddr) -> std::io::Result<()> {
    let ty = match proto {
        "tcp" => libc::SOCK_STREAM,
        "udp" => libc::SOCK_DGRAM,
        _ => usage(),
    };
    let fd = inet_socket(&a, ty)?;
    bind_fd(fd.as_raw_fd(), a)
}

/// Bind UDP ADDR:PORT and count the datagrams that arrive within MILLIS.
fn udp_recv(a: SocketAddr, millis: u64) -> u8 {
    let s = match UdpSocket::bind(a) {
        Ok(s) => s,
        Err(e) => return outcome("udp-recv", Err(e)),
    };
    println!("listening port={}", local_port(s.as_raw_fd()));
    let _ = std::io::stdout().flush();
    udp_count(&s, millis)
}

/// Print `from=PEER` for each datagram within MILLIS, then `received=N`.
fn udp_count(s: &UdpSocket, millis: u64) -> u8 {
    let end = Instant::now() + Duration::from_millis(millis);
    let mut n = 0;
    let mut buf = [0u8; 512];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match s.recv_from(&mut buf) {
            Ok((_, from)) => {
                println!("from={from}");
                n += 1;
            }
            Err(_) => break,
        }
    }
    println!("received={n}");
    0
}

/// A UDP client: send `ping` to ADDR:PORT from an ephemeral port, print it, and count
/// what comes back to that port within MILLIS (replies and anyone else's datagrams).
fn udp_ping(a: SocketAddr, millis: u64) -> u8 {
    let s = match udp_socket(a) {
        Ok(s) => s,
        Err(e) => return outcome("udp-ping", Err(e)),
    };
    if let Err(e) = s.send_to(b"ping", a) {
        return outcome("udp-ping", Err(e));
    }
    println!("port={}", local_port(s.as_raw_fd()));
    let _ = std::io::stdout().flush();
    udp_count(&s, millis)
}

/// Connect to ADDR:PORT (from SRC, when given), waiting up to MILLIS: OK once
/// connected and greeted, TIMEOUT when no answer came (the SYN was dropped), OTHER
/// when refused.
fn connect_wait(src: Option<IpAddr>, a: SocketAddr, millis: u64) -> u8 {
    let connected = match src {
        None => TcpStream::connect_timeout(&a, Duration::from_millis(millis)),
        Some(ip) => connect_from(ip, a, millis),
    };
    match connected {
        Ok(mut c) => {
            let _ = c.write_all(b"hi");
            let _ = c.set_read_timeout(Some(Duration::from_millis(millis)));
            let mut buf = [0u8; 5];
            match c.read_exact(&mut buf) {
                Ok(()) => {
                    println!("connected, read {}", String::from_utf8_lossy(&buf));
                    0
                }
                Err(e) => {
                    println!("connected, no greeting ({e})");
                    OTHER
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            println!("connect: timeout");
            TIMEOUT
        }
        Err(e) => outcome("connect", Err(e)),
    }
}

/// A TCP connect from a given source address, with a timeout.
fn connect_from(src: IpAddr, a: SocketAddr, millis: u64) -> std::io::Result<TcpStream> {
    let fd = inet_socket(&a, libc::SOCK_STREAM)?;
    bind_fd(fd.as_raw_fd(), SocketAddr::new(src, 0))?;
    let s = TcpStream::from(fd);
    s.set_nonblocking(true)?;
    let sa = nix::sys::socket::SockaddrStorage::from(a);
    match nix::sys::socket::connect(s.as_raw_fd(), &sa) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = cvt(unsafe { libc::poll(&raw mut pfd, 1, millis as libc::c_int) })?;
    if n == 0 {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Send one descriptor to whoever connects to the unix socket at PATH, then wait for
/// the peer to be done with it.
fn send_fd(path: &str, fd: RawFd) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    // The peer may be an unprivileged workload.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    // Never wait forever for a peer that failed.
    l.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let conn = loop {
        match l.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(std::io::Error::other(format!("accept: {e}"))),
        }
    };
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let fds = [fd];
    let iov = [std::io::IoSlice::new(b"x")];
    sendmsg::<()>(
        conn.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    // Wait for the peer to finish with the socket before closing ours.
    let mut b = [0u8; 1];
    let _ = (&conn).read(&mut b);
    Ok(())
}

/// Receive one descriptor from the unix socket at PATH; the connection stays open, for
/// the caller to tell the sender when it is done.
fn recv_fd(path: &str) -> std::io::Result<(UnixStream, OwnedFd)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match UnixStream::connect(path) {
            Ok(c) => break c,
            // Not the verdict under test: report it as another error.
            Err(e) if Instant::now() > deadline => {
                return Err(std::io::Error::other(format!("unix connect: {e}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(v) = c {
            fd = v.first().copied();
        }
    }
    let fd = fd.ok_or_else(|| std::io::Error::other("no descriptor received"))?;
    // SAFETY: the descriptor arrived through SCM_RIGHTS and is ours now.
    Ok((conn, unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Make a listener on ADDR:PORT here and hand it to whoever connects to PATH.
fn listen_pass(path: &str, host: &str, port: &str) -> u8 {
    match listener(host, port, false) {
        Ok(l) => outcome("listen-pass", send_fd(path, l.as_raw_fd())),
        Err(e) => outcome("listen-pass", Err(e)),
    }
}

/// Make a listener on ADDR:PORT, then exec PROG ARGS with it open (its number in
/// LISTEN_FD), as socket activation hands a service its listener.
fn inherit_listen(host: &str, port: &str, prog: &str, args: &[String]) -> u8 {
    use std::os::unix::process::CommandExt as _;
    let l = match listener(host, port, false) {
        Ok(l) => l,
        Err(e) => return outcome("inherit-listen", Err(e)),
    };
    let fd = l.as_raw_fd();
    // SAFETY: clearing FD_CLOEXEC on our own descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let e = Command::new(prog)
        .args(args)
        .env("LISTEN_FD", fd.to_string())
        .exec();
    println!("inherit-listen: exec error ({e})");
    OTHER
}

/// Accept on the listener this process inherited (LISTEN_FD), as `listen` does.
fn accept_env(n: usize, millis: u64) -> u8 {
    let Some(fd) = std::env::var("LISTEN_FD")
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        usage()
    };
    // SAFETY: the descriptor was handed to this process, which owns it now.
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    println!("listening port={}", local_port(fd));
    let _ = std::io::stdout().flush();
    accept_loop(&l, n, millis)
}

/// Take a listener from PATH and accept on it, as `listen` does.
fn accept_fd(path: &str, n: usize, millis: u64) -> u8 {
    match recv_fd(path) {
        Ok((conn, fd)) => {
            let _ = (&conn).write_all(b"k");
            println!("listening port={}", local_port(fd.as_raw_fd()));
            let _ = std::io::stdout().flush();
            accept_loop(&TcpListener::from(fd), n, millis)
        }
        Err(e) => outcome("accept-fd", Err(e)),
    }
}

/// Fork N children that each sleep HOLD-MS, reporting `forked=K` as it goes; then wait
/// for them. A fork that fails ends the storm (`fork: error`).
fn fork_storm(n: u32, hold_ms: u64) -> u8 {
    let mut forked = 0u32;
    for _ in 0..n {
        // SAFETY: the child only closes descriptors, sleeps and exits, all
        // async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // Sleepers keep no pipe of the parent's open: whoever reads the parent's
            // output sees it end with the parent.
            // SAFETY: see above.
            unsafe {
                libc::close(1);
                libc::close(2);
            }
            let ts = libc::timespec {
                tv_sec: (hold_ms / 1000) as libc::time_t,
                tv_nsec: ((hold_ms % 1000) * 1_000_000) as libc::c_long,
            };
            // SAFETY: see above.
            unsafe {
                libc::nanosleep(&raw const ts, std::ptr::null_mut());
                libc::_exit(0);
            }
        }
        if pid < 0 {
            println!("fork: error ({})", std::io::Error::last_os_error());
            break;
        }
        forked += 1;
        if forked.is_multiple_of(16) {
            println!("forked={forked}");
            let _ = std::io::stdout().flush();
        }
    }
    println!("forked={forked}");
    let _ = std::io::stdout().flush();
    // SAFETY: reaping our own children.
    while unsafe { libc::wait(std::ptr::null_mut()) } > 0 {}
    0
}

/// The main thread exits at once; another sleeps MILLIS, then connects to ADDR:PORT
/// and ends the process with the outcome. Meanwhile /proc shows the thread group's
/// leader as a zombie, though the group lives on.
fn leader_exit(millis: u64, a: SocketAddr) -> u8 {
    let _t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(millis));
        let code = outcome("tcp", tcp(a));
        let _ = std::io::stdout().flush();
        std::process::exit(code.into());
    });
    println!("leader exits");
    let _ = std::io::stdout().flush();
    // exit(2), not exit_group: ends the calling (main) thread only, with no unwinding
    // through Rust frames; the other thread ends the process.
    // SAFETY: the main thread holds no lock the other thread needs.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    OTHER
}

fn dispatch(args: &[String]) -> u8 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["tcp", h, p] => outcome("tcp", tcp(addr(h, p))),
        ["tcp-transfer", h, p, n] => outcome("tcp-transfer", tcp_transfer(addr(h, p), num(n), 0)),
        ["tcp-transfer", h, p, n, rate] => {
            outcome("tcp-transfer", tcp_transfer(addr(h, p), num(n), num(rate)))
        }
        ["udp-transfer", h, p, n, size] => {
            outcome("udp-transfer", udp_transfer(addr(h, p), num(n), num(size)))
        }
        ["udp-sendto", h, p] => outcome("udp-sendto", udp_sendto(addr(h, p))),
        ["udp-connect", h, p] => outcome("udp-connect", udp_connect(addr(h, p))),
        ["raw4"] => outcome("raw4", raw4()),
        ["vsock"] => outcome("vsock", vsock()),
        ["rthdr"] => outcome("rthdr", rthdr()),
        ["ipopts"] => outcome("ipopts", ipopts()),
        ["tos-cmsg", h, p] => outcome(
            "tos-cmsg",
            sendmsg_cmsg(addr(h, p), libc::IPPROTO_IP, libc::IP_TOS, &[0x10]),
        ),
        ["ipopts-cmsg", h, p] => outcome(
            "ipopts-cmsg",
            sendmsg_cmsg(
                addr(h, p),
                libc::IPPROTO_IP,
                libc::IP_RETOPTS,
                &[1, 1, 1, 0],
            ),
        ),
        ["child", ..] => child(&args[1..]),
        ["move-cgroup", dir, ..] => move_cgroup(dir, &args[2..]),
        ["fd-server", path] => outcome("fd-server", fd_server(path)),
        ["fd-client", path, h, p] => outcome("fd-client", fd_client(path, addr(h, p))),
        ["loop-tcp", h, p, ms] => loop_tcp(addr(h, p), ms.parse().unwrap_or_else(|_| usage())),
        ["until-tcp", h, p, ms] => until_tcp(addr(h, p), ms.parse().unwrap_or_else(|_| usage())),
        ["dns-tcp", server, name, p] => lookup_then_tcp(server, name, p),
        ["spawn", prog, ..] => spawn(prog, &args[2..]),
        ["spawn-memfd", file, ..] => spawn_memfd(file, &args[2..]),
        ["as-uid", uid, ..] => as_uid(uid, &args[2..]),
        ["wait-stdin", ..] => wait_stdin(&args[1..]),
        ["ptrace", pid] => outcome("ptrace", ptrace_attach(pid)),
        ["proc-mem", pid] => outcome("proc-mem", proc_mem(pid)),
        ["dns", how, server, name, qtype] => dns(how, server, name, qtype),
        ["dns-labels", how, server, qtype, labels @ ..] => dns_labels(how, server, qtype, labels),
        ["dns-flood", server, name, n, socks] => dns_flood(server, name, num(n), num(socks)),
        ["dns-fresh", server, name, n] => dns_fresh(server, name, num(n)),
        ["hold", h, p, n, secs, hex] => hold(addr(h, p), num(n), num(secs), hex),
        ["hold-unix", path, n, secs, hex] => hold_unix(path, num(n), num(secs), hex),
        ["connects", proto, h, p, n] => connects(proto, addr(h, p), num(n)),
        ["slowloris", h, p, hex, every, secs] => slowloris(addr(h, p), hex, num(every), num(secs)),
        ["soak", file] => soak::run(file),
        ["dns-raw", server, hex] => dns_raw(server, hex),
        ["resolve", name] => resolve(name),
        ["listen", rest @ ..] => listen(rest),
        ["bind", proto, h, p] => outcome("bind", bind_only(proto, addr(h, p))),
        ["udp-recv", h, p, ms] => udp_recv(addr(h, p), ms.parse().unwrap_or_else(|_| usage())),
        ["udp-ping", h, p, ms] => udp_ping(addr(h, p), ms.parse().unwrap_or_else(|_| usage())),
        ["connect-wait", h, p, ms] => {
            connect_wait(None, addr(h, p), ms.parse().unwrap_or_else(|_| usage()))
        }
        ["connect-wait", "--from", src, h, p, ms] => connect_wait(
            Some(src.parse().unwrap_or_else(|_| usage())),
            addr(h, p),
            ms.parse().unwrap_or_else(|_| usage()),
        ),
        ["listen-pass", path, h, p] => listen_pass(path, h, p),
        ["inherit-listen", h, p, prog, ..] => inherit_listen(h, p, prog, &args[4..]),
        ["accept-env", n, ms] => accept_env(
            n.parse().unwrap_or_else(|_| usage()),
            ms.parse().unwrap_or_else(|_| usage()),
        ),
        ["accept-fd", path, n, ms] => accept_fd(
            path,
            n.parse().unwrap_or_else(|_| usage()),
            ms.parse().unwrap_or_else(|_| usage()),
        ),
        ["leader-exit", ms, h, p] => {
            leader_exit(ms.parse().unwrap_or_else(|_| usage()), addr(h, p))
        }
        ["fork-storm", n, ms] => fork_storm(
            n.parse().unwrap_or_else(|_| usage()),
            ms.parse().unwrap_or_else(|_| usage()),
        ),
        ["signal", pid, sig] => outcome("signal", doors::signal(pid, sig)),
        ["abstract-listen", name] => outcome("abstract-listen", doors::abstract_listen(name)),
        ["abstract-connect", name] => outcome("abstract-connect", doors::abstract_connect(name)),
        ["uring-socket", family] => outcome("uring-socket", doors::uring_socket(family)),
        ["int80-sendmmsg", h, p] => match addr(h, p) {
            SocketAddr::V4(a) => outcome("int80-sendmmsg", doors::int80_sendmmsg(a)),
            SocketAddr::V6(_) => usage(),
        },
        _ => usage(),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = dispatch(&args);
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}

fn num<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| usage())
}

fn dns_server(server: &str) -> SocketAddr {
    server
        .parse::<SocketAddr>()
        .unwrap_or_else(|_| SocketAddr::new(server.parse().unwrap_or_else(|_| usage()), 53))
}

fn record_type(qtype: &str) -> hickory_proto::rr::RecordType {
    use hickory_proto::rr::RecordType;
    match qtype {
        "A" => RecordType::A,
        "AAAA" => RecordType::AAAA,
        "TXT" => RecordType::TXT,
        _ => usage(),
    }
}

/// One DNS query to SERVER:53 as a stub resolver sends it. Prints a JSON line with the
/// response code, where the answer came from and the addresses in it.
fn dns(how: &str, server: &str, name: &str, qtype: &str) -> u8 {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::Name;
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap_or_else(|_| usage()),
        record_type(qtype),
    ));
    let Ok(q) = m.to_vec() else { return OTHER };
    dns_exchange(how, dns_server(server), &q, m.metadata.id)
}

/// A query whose name has exactly the wire labels given (one argument each, dots and
/// all), as no stub would send it.
fn dns_labels(how: &str, server: &str, qtype: &str, labels: &[&str]) -> u8 {
    let id: u16 = 0x5a17;
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in labels {
        let Ok(n) = u8::try_from(l.len()) else {
            usage()
        };
        q.push(n);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&u16::from(record_type(qtype)).to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    dns_exchange(how, dns_server(server), &q, id)
}

/// Send query `q` (id `id`) and print the answer as [`dns`] does.
fn dns_exchange(how: &str, server: SocketAddr, q: &[u8], id: u16) -> u8 {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RData;
    let q = q.to_vec();
    let got = match how {
        "udp" | "udp-connect" => dns_udp(server, &q, how == "udp-connect"),
        "tcp" => dns_tcp(server, &q),
        _ => usage(),
    };
    let (bytes, from) = match got {
        Ok(x) => x,
        Err(e) => return outcome("dns", Err(e)),
    };
    let Ok(r) = Message::from_vec(&bytes) else {
        println!("{{\"error\":\"unparsable answer\"}}");
        return OTHER;
    };
    let answers: Vec<String> = r
        .answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    let ttls: Vec<u32> = r.answers.iter().map(|rec| rec.ttl).collect();
    println!(
        "{}",
        serde_json::json!({
            "rcode": format!("{:?}", r.metadata.response_code).to_uppercase(),
            "id_ok": r.metadata.id == id,
            "from": from.to_string(),
            "answers": answers,
            "ttls": ttls,
        })
    );
    0
}

fn dns_udp(server: SocketAddr, q: &[u8], connect: bool) -> std::io::Result<(Vec<u8>, SocketAddr)> {
    let s = udp_socket(server)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    if connect {
        s.connect(server)?;
        s.send(q)?;
    } else {
        s.send_to(q, server)?;
    }
    let mut buf = vec![0u8; 4096];
    // recv_from, as glibc does: the address it reports is what stubs check.
    let (n, from) = s.recv_from(&mut buf)?;
    buf.truncate(n);
    Ok((buf, from))
}

fn dns_tcp(server: SocketAddr, q: &[u8]) -> std::io::Result<(Vec<u8>, SocketAddr)> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let peer = s.peer_addr()?;
    let len = u16::try_from(q.len()).map_err(std::io::Error::other)?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(q);
    s.write_all(&out)?;
    let mut l = [0u8; 2];
    s.read_exact(&mut l)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
    s.read_exact(&mut buf)?;
    Ok((buf, peer))
}

/// Raw bytes (hex) to SERVER:53 over UDP; prints the reply's response code, or that
/// none came.
fn dns_raw(server: &str, hex: &str) -> u8 {
    let server = SocketAddr::new(server.parse().unwrap_or_else(|_| usage()), 53);
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    let r = (|| {
        let s = udp_socket(server)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(&bytes, server)?;
        let mut buf = [0u8; 512];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok::<_, std::io::Error>(buf[..n].to_vec())
    })();
    match r {
        Ok(b) if b.len() >= 4 => {
            println!("rcode={}", b[3] & 0x0f);
            0
        }
        Ok(_) => {
            println!("short reply");
            OTHER
        }
        Err(e) => {
            println!("no reply ({e})");
            OTHER
        }
    }
}

/// getaddrinfo through glibc, with the host's resolv.conf.
fn resolve(name: &str) -> u8 {
    use std::net::ToSocketAddrs as _;
    match (name, 443).to_socket_addrs() {
        Ok(addrs) => {
            let list: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            println!("{}", serde_json::json!({ "addresses": list }));
            0
        }
        Err(e) => {
            println!("{}", serde_json::json!({ "error": e.to_string() }));
            OTHER
        }
    }
}

/// N queries for NAME spread over SOCKETS unconnected UDP sockets, sent without waiting,
/// then the replies that come within a second. Prints `sent=... replies=...`.
fn a_query(qname: &hickory_proto::rr::Name, i: usize) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::RecordType;
    let mut m = Message::query();
    m.metadata.id = u16::try_from(i % 65536).unwrap_or(0);
    m.add_query(Query::query(qname.clone(), RecordType::A));
    m.to_vec().unwrap_or_else(|_| usage())
}

fn is_denied(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

/// Send N A queries for NAME round-robin over SOCKETS sockets, never waiting for an
/// answer, then count the answers that come within a second. Prints `sent=S denied=D
/// replies=R`: D sends the kernel refused.
fn dns_flood(server: &str, name: &str, n: usize, socks: usize) -> u8 {
    let server = dns_server(server);
    let Ok(qname) = hickory_proto::rr::Name::from_ascii(name) else {
        usage()
    };
    let socks: Vec<UdpSocket> = (0..socks.max(1))
        .filter_map(|_| udp_socket(server).ok())
        .collect();
    let (mut sent, mut denied) = (0usize, 0usize);
    for i in 0..n {
        match socks[i % socks.len()].send_to(&a_query(&qname, i), server) {
            Ok(_) => sent += 1,
            Err(e) if is_denied(&e) => denied += 1,
            Err(_) => {}
        }
    }
    let mut replies = 0usize;
    let end = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 1500];
    for s in &socks {
        let _ = s.set_nonblocking(true);
    }
    while Instant::now() < end {
        let mut any = false;
        for s in &socks {
            while s.recv_from(&mut buf).is_ok() {
                replies += 1;
                any = true;
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    println!("sent={sent} denied={denied} replies={replies}");
    0
}

/// Send N A queries for NAME, each from a socket of its own (a new source port each
/// time), closed right after. Prints `sent=S denied=D`.
fn dns_fresh(server: &str, name: &str, n: usize) -> u8 {
    let server = dns_server(server);
    let Ok(qname) = hickory_proto::rr::Name::from_ascii(name) else {
        usage()
    };
    let (mut sent, mut denied) = (0usize, 0usize);
    for i in 0..n {
        let Ok(s) = udp_socket(server) else { continue };
        match s.send_to(&a_query(&qname, i), server) {
            Ok(_) => sent += 1,
            Err(e) if is_denied(&e) => denied += 1,
            Err(_) => {}
        }
    }
    println!("sent={sent} denied={denied}");
    0
}

/// Open N TCP connections to ADDR:PORT, write HEX (`-`: nothing) on each, print
/// `held N` once they are open, and keep them SECS seconds: a client that never
/// finishes its request.
fn hold(a: SocketAddr, n: usize, secs: u64, hex: &str) -> u8 {
    raise_nofile();
    let bytes: Vec<u8> = if hex == "-" {
        Vec::new()
    } else {
        (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect()
    };
    let mut held = Vec::new();
    let mut failed = 0usize;
    for _ in 0..n {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(mut c) => {
                let _ = c.write_all(&bytes);
                held.push(c);
            }
            Err(_) => failed += 1,
        }
    }
    println!("held {} failed {failed}", held.len());
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(secs));
    0
}

/// Open N connections to the unix socket at PATH, write HEX (`-`: nothing) on each,
/// print `held N failed F` once they are open, keep them SECS seconds, then print
/// `open M`: how many of them the server has not closed.
fn hold_unix(path: &str, n: usize, secs: u64, hex: &str) -> u8 {
    raise_nofile();
    let bytes: Vec<u8> = if hex == "-" {
        Vec::new()
    } else {
        (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect()
    };
    let mut held = Vec::new();
    let mut failed = 0usize;
    for _ in 0..n {
        match UnixStream::connect(path) {
            Ok(mut c) => {
                let _ = c.write_all(&bytes);
                held.push(c);
            }
            Err(_) => failed += 1,
        }
    }
    println!("held {} failed {failed}", held.len());
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(secs));
    let open = held.iter().filter(|c| still_open(c)).count();
    println!("open {open}");
    0
}

/// Whether the other end of `c` has not closed it (what it sent is read and dropped).
fn still_open(mut c: &UnixStream) -> bool {
    if c.set_nonblocking(true).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

/// As many descriptors as the hard limit allows.
fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading and setting this process's own limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const l);
        }
    }
}

/// N connects in a row (TCP, or connect() on a UDP socket, which sends nothing); print
/// how many passed and were denied.
fn connects(proto: &str, a: SocketAddr, n: usize) -> u8 {
    let (mut ok, mut denied, mut other) = (0usize, 0usize, 0usize);
    let udp = match proto {
        "udp" => Some(udp_socket(a).unwrap_or_else(|e| {
            println!("socket: {e}");
            std::process::exit(OTHER.into())
        })),
        "tcp" => None,
        _ => usage(),
    };
    for _ in 0..n {
        let r = match &udp {
            Some(s) => s.connect(a),
            None => TcpStream::connect_timeout(&a, Duration::from_secs(2)).map(|_| ()),
        };
        match r {
            Ok(()) => ok += 1,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => denied += 1,
            Err(_) => other += 1,
        }
    }
    println!("ok={ok} denied={denied} other={other}");
    0
}

/// The soak's client: connect verdicts on a fixed list of destinations, in rounds the
/// test asks for on stdin, while a second thread connects without pause throughout.
///
/// DESTFILE has one destination a line: `udp|tcp ADDR PORT`. UDP connects reuse one
/// socket per destination (connect() on a UDP socket runs the hook and sends nothing);
/// TCP connects are non-blocking to loopback, where a refused connection (no listener)
/// still means the hook let it pass. On stdin:
///
///   round K N    N passes over the list; prints `round K ok=... <allowed count per destination>`
///   end          prints `hammer connects=C <runs per destination>` and exits, where a run
///                list is the sequence of verdicts seen, A and D, with repeats collapsed
mod soak {
    use std::io::BufRead as _;
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd as _;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    pub struct Dest {
        udp: Option<UdpSocket>,
        addr: SocketAddr,
    }

    fn dests(file: &str) -> Vec<Dest> {
        let text = std::fs::read_to_string(file).unwrap_or_else(|_| super::usage());
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let [proto, h, p] = w.as_slice() else {
                    super::usage()
                };
                let addr = super::addr(h, p);
                let udp = (*proto == "udp").then(|| {
                    super::udp_socket(addr).unwrap_or_else(|e| {
                        println!("socket: {e}");
                        std::process::exit(super::OTHER.into())
                    })
                });
                Dest { udp, addr }
            })
            .collect()
    }

    /// Whether the hook let a connect to `d` pass.
    fn allowed(d: &Dest) -> bool {
        let r = match &d.udp {
            Some(s) => s.connect(d.addr),
            None => tcp_nonblocking(d.addr),
        };
        !matches!(
            r.map_err(|e| e.raw_os_error()),
            Err(Some(libc::EPERM | libc::EACCES))
        )
    }

    fn tcp_nonblocking(a: SocketAddr) -> std::io::Result<()> {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrStorage, connect, socket,
        };
        let family = if a.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let s = socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK, None)
            .map_err(std::io::Error::from)?;
        match connect(s.as_raw_fd(), &SockaddrStorage::from(a)) {
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn run(file: &str) -> u8 {
        let list = Arc::new(dests(file));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let runs = Arc::new(Mutex::new(vec![String::new(); list.len()]));
        let hammer = {
            let (list, stop, count, runs) =
                (list.clone(), stop.clone(), count.clone(), runs.clone());
            // Its own sockets: the main thread's UDP sockets are connected in turn too.
            let own = dests(file);
            std::thread::spawn(move || {
                let mut seen: Vec<Option<bool>> = vec![None; list.len()];
                let mut local: Vec<String> = vec![String::new(); list.len()];
                while !stop.load(Ordering::Relaxed) {
                    for (i, d) in own.iter().enumerate() {
                        let v = allowed(d);
                        if seen[i] != Some(v) {
                            seen[i] = Some(v);
                            local[i].push(if v { 'A' } else { 'D' });
                        }
                    }
                    count.fetch_add(own.len() as u64, Ordering::Relaxed);
                }
                if let Ok(mut r) = runs.lock() {
                    *r = local;
                }
            })
        };
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["round", k, n] => {
                    let n: usize = super::num(n);
                    let mut ok = vec![0usize; list.len()];
                    for _ in 0..n {
                        for (i, d) in list.iter().enumerate() {
                            if allowed(d) {
                                ok[i] += 1;
                            }
                        }
                    }
                    let ok: Vec<String> = ok.iter().map(ToString::to_string).collect();
                    println!("round {k} {}", ok.join(" "));
                }
                ["end"] => break,
                _ => super::usage(),
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        stop.store(true, Ordering::Relaxed);
        let _ = hammer.join();
        let runs = runs.lock().map(|r| r.join(" ")).unwrap_or_default();
        println!("hammer connects={} {runs}", count.load(Ordering::Relaxed));
        0
    }
}

/// Connect and send HEX one byte every EVERY_MS ms (over and over), never finishing a
/// request; print `closed_ms=N` when the server closes the connection, or `open` if it
/// is still open after SECS seconds.
fn slowloris(a: SocketAddr, hex: &str, every: u64, secs: u64) -> u8 {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    let Ok(mut c) = TcpStream::connect_timeout(&a, Duration::from_secs(5)) else {
        println!("connect failed");
        return OTHER;
    };
    let _ = c.set_nonblocking(true);
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    for b in bytes.iter().cycle() {
        if start.elapsed() > Duration::from_secs(secs) {
            break;
        }
        let closed = loop {
            match c.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        if closed || c.write_all(&[*b]).is_err() {
            println!("closed_ms={}", start.elapsed().as_millis());
            return 0;
        }
        std::thread::sleep(Duration::from_millis(every));
    }
    println!("open");
    0
}

/// Connect every 100 ms until one passes (exit OK) or MILLIS ms have gone by (exit
/// DENIED): a task that retries while a human decides.
fn until_tcp(a: SocketAddr, millis: u64) -> u8 {
    let end = Instant::now() + Duration::from_millis(millis);
    loop {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(_) => {
                println!("tcp: ok");
                return OK;
            }
            Err(e) if Instant::now() >= end => return outcome("tcp", Err(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Look NAME up (A, over UDP to SERVER:53) and connect to the first address on PORT;
/// print the lookup's JSON line, then the connect's outcome.
fn lookup_then_tcp(server: &str, name: &str, port: &str) -> u8 {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let server = SocketAddr::new(server.parse().unwrap_or_else(|_| usage()), 53);
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap_or_else(|_| usage()),
        RecordType::A,
    ));
    let Ok(q) = m.to_vec() else { return OTHER };
    // A held lookup takes as long as the human: wait longer than a stub would.
    let got = (|| {
        let s = udp_socket(server)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.send_to(&q, server)?;
        let mut buf = vec![0u8; 4096];
        let (n, _) = s.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok::<_, std::io::Error>(buf)
    })();
    let bytes = match got {
        Ok(b) => b,
        Err(e) => return outcome("dns", Err(e)),
    };
    let Ok(r) = Message::from_vec(&bytes) else {
        return OTHER;
    };
    let first = r.answers.iter().find_map(|rec| match &rec.data {
        RData::A(a) => Some(a.0),
        _ => None,
    });
    println!(
        "{}",
        serde_json::json!({
            "rcode": format!("{:?}", r.metadata.response_code).to_uppercase(),
            "answers": first.map(|a| vec![a.to_string()]).unwrap_or_default(),
        })
    );
    match first {
        Some(a) => outcome(
            "tcp",
            tcp(SocketAddr::new(
                a.into(),
                port.parse().unwrap_or_else(|_| usage()),
            )),
        ),
        None => OTHER,
    }
}
