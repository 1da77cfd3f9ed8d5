//! Ways around `zt-agent run`'s seccomp filter and Landlock domain that the probe
//! tries: a socket made by io_uring (no socket() system call), a 32-bit sendmmsg
//! through `int 0x80`, a signal or an abstract unix socket connection to a process of
//! the same user outside the workload.

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};

use std::os::linux::net::SocketAddrExt as _;

fn cvt(rc: libc::c_long) -> std::io::Result<libc::c_long> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// kill(PID, SIG).
pub fn signal(pid: &str, sig: &str) -> std::io::Result<()> {
    let pid: libc::pid_t = pid.parse().map_err(std::io::Error::other)?;
    let sig: libc::c_int = sig.parse().map_err(std::io::Error::other)?;
    // SAFETY: a plain kill(2).
    cvt(unsafe { libc::kill(pid, sig) }.into()).map(drop)
}

/// Listen on the abstract unix socket NAME, say so, and hold it until stdin closes.
pub fn abstract_listen(name: &str) -> std::io::Result<()> {
    let l = UnixListener::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes())?)?;
    println!("listening");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(l);
    Ok(())
}

/// Connect to the abstract unix socket NAME.
pub fn abstract_connect(name: &str) -> std::io::Result<()> {
    UnixStream::connect_addr(&UnixAddr::from_abstract_name(name.as_bytes())?).map(drop)
}

// io_uring, by hand: the ABI of include/uapi/linux/io_uring.h.
const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_OP_SOCKET: u8 = 45;

#[repr(C)]
#[derive(Default)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

/// One mmap of the ring descriptor, unmapped on drop.
struct Mapping(*mut u8, usize);

impl Mapping {
    fn new(fd: &OwnedFd, len: usize, off: libc::off_t) -> std::io::Result<Self> {
        // SAFETY: mapping a region of the ring descriptor the kernel sized for us.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(p.cast(), len))
    }

    /// The u32 at byte offset `off`, as an atomic (the ring's head and tail).
    fn u32_at(&self, off: u32) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: the kernel's offsets lie inside the mapping and are 4-byte aligned.
        unsafe {
            &*self
                .0
                .add(off as usize)
                .cast::<std::sync::atomic::AtomicU32>()
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.0.cast(), self.1) };
    }
}

/// Create a socket of `family` (SOCK_STREAM) with IORING_OP_SOCKET and close it.
pub fn uring_socket(family: &str) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    let domain: u32 = match family {
        "vsock" => libc::AF_VSOCK as u32,
        "inet" => libc::AF_INET as u32,
        _ => return Err(std::io::Error::other("family: vsock or inet")),
    };
    let mut p = Params::default();
    // SAFETY: io_uring_setup with a valid params struct.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &raw mut p) })?;
    // SAFETY: the kernel just returned this descriptor.
    let ring = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
    let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * 16;
    let sq = Mapping::new(&ring, sq_len, IORING_OFF_SQ_RING)?;
    let cq = Mapping::new(&ring, cq_len, IORING_OFF_CQ_RING)?;
    let sqes = Mapping::new(&ring, p.sq_entries as usize * 64, IORING_OFF_SQES)?;
    // The first SQE: opcode, then fd = domain, off = type, len = protocol.
    let mut sqe = [0u8; 64];
    sqe[0] = IORING_OP_SOCKET;
    sqe[4..8].copy_from_slice(&domain.to_ne_bytes());
    sqe[8..16].copy_from_slice(&u64::from(libc::SOCK_STREAM as u32).to_ne_bytes());
    sqe[32..40].copy_from_slice(&7u64.to_ne_bytes()); // user_data
    // SAFETY: slot 0 of the SQE array, 64 bytes inside the mapping.
    unsafe { std::ptr::copy_nonoverlapping(sqe.as_ptr(), sqes.0, 64) };
    let mask = sq.u32_at(p.sq_off.ring_mask).load(Ordering::Relaxed);
    let tail = sq.u32_at(p.sq_off.tail).load(Ordering::Acquire);
    sq.u32_at(p.sq_off.array + (tail & mask) * 4)
        .store(0, Ordering::Relaxed);
    sq.u32_at(p.sq_off.tail)
        .store(tail.wrapping_add(1), Ordering::Release);
    // SAFETY: io_uring_enter on our ring: submit one, wait for one.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            ring.as_raw_fd(),
            1u32,
            1u32,
            IORING_ENTER_GETEVENTS,
            std::ptr::null::<libc::sigset_t>(),
            0usize,
        )
    })?;
    let cq_mask = cq.u32_at(p.cq_off.ring_mask).load(Ordering::Relaxed);
    let head = cq.u32_at(p.cq_off.head).load(Ordering::Acquire);
    // struct io_uring_cqe: user_data u64, res i32, flags u32.
    let cqe = p.cq_off.cqes + (head & cq_mask) * 16;
    let res = cq.u32_at(cqe + 8).load(Ordering::Relaxed) as i32;
    cq.u32_at(p.cq_off.head)
        .store(head.wrapping_add(1), Ordering::Release);
    if res < 0 {
        return Err(std::io::Error::from_raw_os_error(-res));
    }
    // SAFETY: the socket the ring made for us.
    drop(unsafe { OwnedFd::from_raw_fd(res) });
    Ok(())
}

/// sendmmsg through the i386 system call entry (`int 0x80`, number 345) from this
/// 64-bit process, one datagram to `dst` on a UDP socket made the ordinary way. The
/// compat structures hold 32-bit pointers, so they live in memory below 4 GiB.
#[cfg(target_arch = "x86_64")]
pub fn int80_sendmmsg(dst: std::net::SocketAddrV4) -> std::io::Result<()> {
    const NR_I386_SENDMMSG: u32 = 345;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: an anonymous private mapping below 4 GiB (MAP_32BIT), unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let base = page as usize;
    let at = |off: usize| u32::try_from(base + off).unwrap_or(0);
    // Layout: sockaddr_in at 0, payload at 64, compat_iovec at 128, compat_mmsghdr at 192.
    let mut mem = [0u8; 256];
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: dst.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*dst.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in is plain bytes, 16 long.
    let sin_bytes: [u8; 16] = unsafe { std::mem::transmute(sin) };
    mem[0..16].copy_from_slice(&sin_bytes);
    mem[64..69].copy_from_slice(b"probe");
    // compat_iovec { base, len }
    mem[128..132].copy_from_slice(&at(64).to_ne_bytes());
    mem[132..136].copy_from_slice(&5u32.to_ne_bytes());
    // compat_mmsghdr { compat_msghdr { name, namelen, iov, iovlen, control,
    // controllen, flags }, len }
    let hdr = [at(0), 16, at(128), 1, 0, 0, 0, 0];
    for (i, v) in hdr.iter().enumerate() {
        mem[192 + i * 4..196 + i * 4].copy_from_slice(&v.to_ne_bytes());
    }
    // SAFETY: 256 bytes into our 4096-byte mapping.
    unsafe { std::ptr::copy_nonoverlapping(mem.as_ptr(), page.cast::<u8>(), mem.len()) };
    let fd = sock.as_raw_fd() as u32;
    let ret: i32;
    // SAFETY: the i386 system call ABI: eax number, ebx/ecx/edx/esi the arguments. rbx
    // is reserved by the compiler, so it is swapped in and out around the trap.
    unsafe {
        std::arch::asm!(
            "xchg {a1:r}, rbx",
            "int 0x80",
            "xchg {a1:r}, rbx",
            a1 = inout(reg) u64::from(fd) => _,
            inlateout("eax") NR_I386_SENDMMSG => ret,
            in("ecx") at(192),
            in("edx") 1u32,
            in("esi") 0u32,
        );
    }
    // SAFETY: our own mapping.
    unsafe { libc::munmap(page, 4096) };
    match ret {
        1 => Ok(()),
        r if r < 0 => Err(std::io::Error::from_raw_os_error(-r)),
        r => Err(std::io::Error::other(format!("sendmmsg sent {r} messages"))),
    }
}
