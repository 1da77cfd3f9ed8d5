//! A workload for the integration tests: opens real sockets the way an attacker or an
//! ordinary client would, and reports the outcome as its exit code.
//!
//! Exit codes (`zt_agent_tests::probe::code`): 0 success, 10 EPERM/EACCES (denied),
//! 11 another error, 12 a spawned program was killed by SIGKILL, 2 bad usage.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socket,
};

use zt_agent_tests::probe::code::{DENIED, KILLED, OTHER, USAGE};

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
         dns-labels udp|udp-connect|tcp SERVER A|AAAA LABEL... |\n\
         dns-flood SERVER NAME N SOCKETS | hold ADDR PORT N SECS HEX|- |\n\
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
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    // The peer may be an unprivileged workload.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    // Never wait forever for a peer that failed.
    l.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let sock = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
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
    let fds = [sock.as_raw_fd()];
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

/// Receive a socket over UNIX-PATH and connect it to ADDR:PORT.
fn fd_client(path: &str, a: SocketAddr) -> std::io::Result<()> {
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
    let s = unsafe { TcpStream::from_raw_fd(fd) };
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

fn dispatch(args: &[String]) -> u8 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["tcp", h, p] => outcome("tcp", tcp(addr(h, p))),
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
        ["spawn", prog, ..] => spawn(prog, &args[2..]),
        ["spawn-memfd", file, ..] => spawn_memfd(file, &args[2..]),
        ["as-uid", uid, ..] => as_uid(uid, &args[2..]),
        ["wait-stdin", ..] => wait_stdin(&args[1..]),
        ["ptrace", pid] => outcome("ptrace", ptrace_attach(pid)),
        ["proc-mem", pid] => outcome("proc-mem", proc_mem(pid)),
        ["dns", how, server, name, qtype] => dns(how, server, name, qtype),
        ["dns-labels", how, server, qtype, labels @ ..] => dns_labels(how, server, qtype, labels),
        ["dns-flood", server, name, n, socks] => dns_flood(server, name, num(n), num(socks)),
        ["hold", h, p, n, secs, hex] => hold(addr(h, p), num(n), num(secs), hex),
        ["connects", proto, h, p, n] => connects(proto, addr(h, p), num(n)),
        ["slowloris", h, p, hex, every, secs] => slowloris(addr(h, p), hex, num(every), num(secs)),
        ["soak", file] => soak::run(file),
        ["dns-raw", server, hex] => dns_raw(server, hex),
        ["resolve", name] => resolve(name),
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
fn dns_flood(server: &str, name: &str, n: usize, socks: usize) -> u8 {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let server = dns_server(server);
    let Ok(qname) = Name::from_ascii(name) else {
        usage()
    };
    let socks: Vec<UdpSocket> = (0..socks.max(1))
        .filter_map(|_| udp_socket(server).ok())
        .collect();
    let mut sent = 0usize;
    for i in 0..n {
        let mut m = Message::query();
        m.metadata.id = u16::try_from(i % 65536).unwrap_or(0);
        m.add_query(Query::query(qname.clone(), RecordType::A));
        let Ok(q) = m.to_vec() else { return OTHER };
        if socks[i % socks.len()].send_to(&q, server).is_ok() {
            sent += 1;
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
    println!("sent={sent} replies={replies}");
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
