//! Load, attach and pin the programs, or adopt what an earlier daemon pinned.
//!
//! Layout under the pin directory (default /sys/fs/bpf/zt-agent):
//!   maps/<MAP>    every map, so a restarted daemon and `zt-agent run` reach them
//!   links/<PROG>  one bpf_link per program: enforcement lasts as long as these do
//! Programs stay alive through their links; removing the links detaches them.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Map, MapData, MapError, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, Lsm, ProgramError,
        links::{FdLink, PinnedLink},
    },
};
use zt_agent_common::offsets::{CtimePart, Locate, OFFSETS};
use zt_agent_common::{PROGRAMS, ProgramKind, map_names, program_names};

use super::maps::{
    Cgroups, Counters, DnsMaps, ExecMaps, GrantMaps, PolicyMaps, Shadow, Sockets, TaskShares,
    Tasks, TrafficMaps,
};
use super::{btf, sys};
use crate::sys::fs::{self, Dir, FsError, Kind, Meta};

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/zt-agent";

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/zt-agent"));

/// How an exec outside an identity's allowlist is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecGuard {
    /// BPF LSM `bprm_check_security`: execve fails with EPERM, the caller lives on.
    Lsm,
    /// tp_btf `sched_process_exec` + SIGKILL: the task dies before the new image runs
    /// an instruction (exit status 137 to its parent).
    TracepointKill,
}

impl serde::Serialize for ExecGuard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl ExecGuard {
    /// The `mechanism` label and the word `zt-agent status` prints.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Lsm => "lsm",
            Self::TracepointKill => "tp_btf_sigkill",
        }
    }

    /// What the mechanism does, for logs and `zt-agent status`.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Lsm => "BPF LSM bprm_check_security: a disallowed exec fails with EPERM",
            Self::TracepointKill => {
                "tp_btf sched_process_exec + SIGKILL: a disallowed exec kills the task before the new image runs"
            }
        }
    }

    /// The mechanism of a pinned enforcement: the LSM link is pinned only when it loaded.
    #[must_use]
    pub fn of_pins(pins: &PinDir) -> Self {
        if pins.link(program_names::EXEC_LSM).exists() {
            Self::Lsm
        } else {
            Self::TracepointKill
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object failed: {0} (is this root, with BPF allowed by the kernel?)")]
    Object(#[source] aya::EbpfError),
    #[error("eBPF program {name} was not found in the object")]
    MissingProgram { name: String },
    #[error("eBPF map {name} was not found")]
    MissingMap { name: String },
    #[error("eBPF program {name}: {source}")]
    Program {
        name: String,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: String,
        #[source]
        source: MapError,
    },
    #[error("kernel BTF for tp_btf programs: {0}")]
    KernelBtf(#[source] aya::BtfError),
    #[error("pin directory {path}: {source}")]
    Pin {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pin directory {path}: {source}")]
    PinDir {
        path: String,
        #[source]
        source: FsError,
    },
    #[error("pinning {path}: {source}")]
    PinObject {
        path: String,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("cgroup2 root {path}: {source}")]
    CgroupRoot {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Paths of the pinned objects.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub root: PathBuf,
}

/// What the pin directory holds, judged without following a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pins {
    Absent,
    /// What this agent pins and nothing else: root's directories (mode 0700) holding
    /// root's pinned objects, as an earlier run left them. `complete`: every map and
    /// every link this version pins is there.
    Agent {
        complete: bool,
        links: usize,
    },
    /// Something the agent did not make: the directory or an entry of it has another
    /// owner, is a symlink, a looser mode or an unknown kind. bpffs is world-writable
    /// (sticky) on many distributions, so any local user can create the directory
    /// first. `found` describes each such entry.
    Foreign {
        owner: u32,
        found: Vec<String>,
    },
}

/// Most foreign entries a message lists.
const FOUND_SHOWN: usize = 16;

impl Pins {
    /// The foreign entries, one per line, for messages.
    #[must_use]
    pub fn describe_found(found: &[String]) -> String {
        let mut s: Vec<String> = found.iter().take(FOUND_SHOWN).cloned().collect();
        if found.len() > FOUND_SHOWN {
            s.push(format!("and {} more", found.len() - FOUND_SHOWN));
        }
        s.join("; ")
    }
}

fn describe(rel: &str, m: &Meta) -> String {
    let kind = match m.kind {
        Kind::File => "object",
        Kind::Dir => "directory",
        Kind::Symlink => "symbolic link",
        Kind::CharDevice | Kind::Other => "special file",
    };
    format!("{rel} ({kind}, uid {}, mode {:04o})", m.uid, m.mode)
}

impl PinDir {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    #[must_use]
    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }
    #[must_use]
    pub fn link(&self, name: &str) -> PathBuf {
        self.root.join("links").join(name)
    }

    fn fs_err(&self) -> impl FnOnce(FsError) -> LoadError + '_ {
        |source| LoadError::PinDir {
            path: self.root.display().to_string(),
            source,
        }
    }

    fn parent(&self) -> Result<(Dir, String), LoadError> {
        let (parent, name) = fs::split(&self.root).map_err(self.fs_err())?;
        let parent = Dir::open(&parent).map_err(self.fs_err())?;
        Ok((parent, name.to_string_lossy().into_owned()))
    }

    /// Look at what the pin directory holds, following no link and trusting nothing
    /// another user made.
    ///
    /// # Errors
    /// The directories above it cannot be walked or are not root's.
    pub fn inspect(&self) -> Result<Pins, LoadError> {
        let (parent, name) = self.parent()?;
        let Some(top) = parent.stat(&name).map_err(self.fs_err())? else {
            return Ok(Pins::Absent);
        };
        let private = |m: &Meta| m.kind == Kind::Dir && m.uid == 0 && m.mode & 0o7077 == 0;
        if top.kind != Kind::Dir {
            return Ok(Pins::Foreign {
                owner: top.uid,
                found: vec![describe(&name, &top)],
            });
        }
        let mut found = Vec::new();
        if !private(&top) {
            found.push(describe(&format!("{name}/"), &top));
        }
        let root = parent.subdir(&name).map_err(self.fs_err())?;
        let (mut links, mut maps) = (BTreeSet::new(), BTreeSet::new());
        for entry in root.entries().map_err(self.fs_err())? {
            let Some(m) = root.stat(&entry).map_err(self.fs_err())? else {
                continue;
            };
            let known = entry == "maps" || entry == "links";
            if !known || !private(&m) {
                found.push(describe(&entry, &m));
                if !known || m.kind != Kind::Dir {
                    continue;
                }
            }
            let sub = root.subdir(&entry).map_err(self.fs_err())?;
            for obj in sub.entries().map_err(self.fs_err())? {
                let Some(om) = sub.stat(&obj).map_err(self.fs_err())? else {
                    continue;
                };
                // A pinned object is a regular file of root's on bpffs; a user can
                // make directories and links there, never one of these.
                if om.kind != Kind::File || om.uid != 0 {
                    found.push(describe(&format!("{entry}/{obj}"), &om));
                } else if entry == "links" {
                    links.insert(obj);
                } else {
                    maps.insert(obj);
                }
            }
        }
        if !found.is_empty() {
            return Ok(Pins::Foreign {
                owner: top.uid,
                found,
            });
        }
        let complete = map_names::ALL.iter().all(|m| maps.contains(*m))
            && PROGRAMS
                .iter()
                .filter(|p| !p.kind.is_optional())
                .all(|p| links.contains(p.name));
        Ok(Pins::Agent {
            complete,
            links: links.len(),
        })
    }

    /// Every map and every link is pinned, by the agent: a running enforcement to
    /// adopt or to open.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        matches!(self.inspect(), Ok(Pins::Agent { complete: true, .. }))
    }

    /// Remove every pin, never following a link: links first, which detaches the
    /// programs, then everything else, whoever made it (a directory another user
    /// planted included).
    pub fn remove_all(&self) -> Result<(), LoadError> {
        let (parent, name) = self.parent()?;
        if let Ok(root) = parent.subdir(&name)
            && let Ok(links) = root.subdir("links")
        {
            for l in links.entries().map_err(self.fs_err())? {
                links.remove(&l).map_err(self.fs_err())?;
            }
        }
        parent.remove(&name).map_err(self.fs_err())
    }
}

/// Handles to every map the daemon and the launcher use.
pub struct KernelMaps {
    pub tasks: Tasks,
    pub task_shares: TaskShares,
    pub sockets: Sockets,
    pub cgroups: Cgroups,
    pub policy: PolicyMaps,
    pub exec: ExecMaps,
    pub counters: Counters,
    pub traffic: TrafficMaps,
    pub shadow: Shadow,
    pub dns: DnsMaps,
    pub grants: GrantMaps,
    pub events: RingBuf<MapData>,
}

fn prog_err(name: &str) -> impl FnOnce(ProgramError) -> LoadError + '_ {
    move |source| LoadError::Program {
        name: name.to_owned(),
        source,
    }
}

fn map_err(name: &str) -> impl FnOnce(MapError) -> LoadError + '_ {
    move |source| LoadError::Map {
        name: name.to_owned(),
        source,
    }
}

fn open_pinned(pins: &PinDir, name: &str) -> Result<Map, LoadError> {
    let data = MapData::from_pin(pins.map(name)).map_err(map_err(name))?;
    Map::from_map_data(data).map_err(map_err(name))
}

fn typed<T: TryFrom<Map, Error = MapError>>(map: Map, name: &str) -> Result<T, LoadError> {
    T::try_from(map).map_err(map_err(name))
}

/// Open a pinned map through a read-only descriptor (BPF_F_RDONLY): the holder can
/// look entries up, and the kernel refuses it every update. aya opens pins read-write
/// only, hence the one raw BPF_OBJ_GET here.
pub fn open_pinned_read_only<T: TryFrom<Map, Error = MapError>>(
    pins: &PinDir,
    name: &str,
) -> Result<T, LoadError> {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    use std::os::unix::ffi::OsStrExt as _;
    /// The BPF_OBJ_GET part of `union bpf_attr`.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_F_RDONLY: u32 = 1 << 3;
    let path = pins.map(name);
    let pin_err = |source| LoadError::Pin {
        path: path.display().to_string(),
        source,
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| pin_err(std::io::Error::other(e)))?;
    let attr = ObjGet {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: BPF_F_RDONLY,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: BPF_OBJ_GET reads the attribute block (a valid NUL-terminated path that
    // outlives the call) and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(pin_err(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let data = MapData::from_fd(fd).map_err(map_err(name))?;
    typed(Map::from_map_data(data).map_err(map_err(name))?, name)
}

/// Open one pinned map as its typed wrapper (`zt-agent run` needs only two).
pub fn open_pinned_map<T: TryFrom<Map, Error = MapError>>(
    pins: &PinDir,
    name: &str,
) -> Result<T, LoadError> {
    typed(open_pinned(pins, name)?, name)
}

impl KernelMaps {
    /// Open the maps an earlier daemon pinned.
    pub fn open_pinned(pins: &PinDir) -> Result<Self, LoadError> {
        let get = |n| open_pinned(pins, n);
        Self::from_maps(get)
    }

    fn from_maps(
        mut get: impl FnMut(&'static str) -> Result<Map, LoadError>,
    ) -> Result<Self, LoadError> {
        use map_names as m;
        Ok(Self {
            tasks: Tasks(typed(get(m::TASKS)?, m::TASKS)?),
            task_shares: TaskShares {
                count: typed(get(m::TASK_COUNT)?, m::TASK_COUNT)?,
                share: typed(get(m::TASK_SHARE)?, m::TASK_SHARE)?,
            },
            sockets: Sockets(typed(get(m::SOCK_IDENTITY)?, m::SOCK_IDENTITY)?),
            cgroups: Cgroups(typed(get(m::CGROUPS)?, m::CGROUPS)?),
            policy: PolicyMaps {
                v4: typed(get(m::POLICY_V4)?, m::POLICY_V4)?,
                v6: typed(get(m::POLICY_V6)?, m::POLICY_V6)?,
                in_v4: typed(get(m::INGRESS_V4)?, m::INGRESS_V4)?,
                in_v6: typed(get(m::INGRESS_V6)?, m::INGRESS_V6)?,
                in_ports: typed(get(m::INGRESS_PORTS)?, m::INGRESS_PORTS)?,
            },
            exec: ExecMaps {
                identities: typed(get(m::IDENTITIES)?, m::IDENTITIES)?,
                exe: typed(get(m::EXE_SELECTORS)?, m::EXE_SELECTORS)?,
                principals: typed(get(m::PRINCIPALS)?, m::PRINCIPALS)?,
                allow: typed(get(m::EXEC_ALLOW)?, m::EXEC_ALLOW)?,
            },
            counters: Counters {
                verdicts: typed(get(m::VERDICTS)?, m::VERDICTS)?,
                ingress_verdicts: typed(get(m::INGRESS_VERDICTS)?, m::INGRESS_VERDICTS)?,
                exec_verdicts: typed(get(m::EXEC_VERDICTS)?, m::EXEC_VERDICTS)?,
                errors: typed(get(m::ERRORS)?, m::ERRORS)?,
                task_refused: typed(get(m::TASK_REFUSED)?, m::TASK_REFUSED)?,
                traffic: typed(get(m::TRAFFIC)?, m::TRAFFIC)?,
            },
            traffic: TrafficMaps {
                flows: typed(get(m::FLOWS)?, m::FLOWS)?,
                state: typed(get(m::IDENTITY_STATE)?, m::IDENTITY_STATE)?,
            },
            shadow: Shadow(typed(get(m::SHADOW)?, m::SHADOW)?),
            dns: DnsMaps {
                config: typed(get(m::DNS_CONFIG)?, m::DNS_CONFIG)?,
                clients: typed(get(m::DNS_CLIENTS)?, m::DNS_CLIENTS)?,
                allow: typed(get(m::DNS_ALLOW)?, m::DNS_ALLOW)?,
            },
            grants: GrantMaps::new(
                typed(get(m::GRANTS_V4)?, m::GRANTS_V4)?,
                typed(get(m::GRANTS_V6)?, m::GRANTS_V6)?,
            ),
            events: typed(get(m::EVENTS)?, m::EVENTS)?,
        })
    }
}

/// Programs loaded into the kernel, maps pinned, not attached yet.
pub struct Loaded {
    ebpf: Ebpf,
    pins: PinDir,
    /// What the probe found; after `attach`, `ExecGuard::of_pins` is authoritative.
    exec_guard: ExecGuard,
}

/// Load the object, verify every program, and pin every map. Nothing is attached, so
/// nothing is enforced until `attach` (the policy goes in between).
pub fn load(pins: &PinDir) -> Result<(Loaded, KernelMaps), LoadError> {
    let vmlinux = std::fs::read(btf::VMLINUX).map_err(|source| btf::BtfError::Read {
        path: btf::VMLINUX.into(),
        source,
    })?;
    let mut offsets = Vec::new();
    let mut ctime = None;
    for o in OFFSETS {
        let off = match o.locate {
            Locate::Member { strukt, member } => btf::member_offset_in(&vmlinux, strukt, member)?,
            Locate::InodeCtime(part) => {
                let (sec, nsec) = match ctime {
                    Some(c) => c,
                    None => *ctime.insert(ctime_offsets(&vmlinux)?),
                };
                match part {
                    CtimePart::Sec => sec,
                    CtimePart::Nsec => nsec,
                }
            }
        };
        offsets.push((o.global, off));
    }
    let mut loader = EbpfLoader::new();
    for (global, off) in &offsets {
        loader.override_global(global, off, true);
    }
    let mut ebpf = loader.load(OBJECT).map_err(LoadError::Object)?;
    let kernel_btf = Btf::from_sys_fs().map_err(LoadError::KernelBtf)?;

    // The BPF LSM exec guard is optional: probed once the others have loaded.
    let mut lsm = None;
    for p in PROGRAMS {
        let name = p.name;
        match p.kind {
            ProgramKind::Lsm(hook) => lsm = Some((name, hook)),
            ProgramKind::TpBtf(tp) => {
                let prog: &mut BtfTracePoint = ebpf
                    .program_mut(name)
                    .ok_or_else(|| LoadError::MissingProgram { name: name.into() })?
                    .try_into()
                    .map_err(prog_err(name))?;
                prog.load(tp, &kernel_btf).map_err(prog_err(name))?;
            }
            ProgramKind::CgroupSockAddr(_)
            | ProgramKind::CgroupSock
            | ProgramKind::CgroupSockopt
            | ProgramKind::CgroupSkbEgress
            | ProgramKind::CgroupSkbIngress => {
                let prog = ebpf
                    .program_mut(name)
                    .ok_or_else(|| LoadError::MissingProgram { name: name.into() })?;
                let res = match prog {
                    aya::programs::Program::CgroupSockAddr(p) => p.load(),
                    aya::programs::Program::CgroupSock(p) => p.load(),
                    aya::programs::Program::CgroupSockopt(p) => p.load(),
                    aya::programs::Program::CgroupSkb(p) => p.load(),
                    _ => return Err(LoadError::MissingProgram { name: name.into() }),
                };
                res.map_err(prog_err(name))?;
            }
        }
    }

    let exec_guard = lsm.map_or(ExecGuard::TracepointKill, |(name, hook)| {
        probe_lsm(&mut ebpf, &kernel_btf, name, hook)
    });

    create_private_dir(&pins.root)?;
    for sub in ["maps", "links"] {
        create_private_dir(&pins.root.join(sub))?;
    }
    let mut maps = Vec::new();
    for name in map_names::ALL {
        let map = ebpf
            .take_map(name)
            .ok_or_else(|| LoadError::MissingMap { name: name.into() })?;
        let path = pins.map(name);
        map_data(&map)
            .pin(&path)
            .map_err(|source| LoadError::PinObject {
                path: path.display().to_string(),
                source,
            })?;
        maps.push((name, map));
    }
    let kmaps = KernelMaps::from_maps(|n| {
        let i = maps
            .iter()
            .position(|(m, _)| *m == n)
            .ok_or_else(|| LoadError::MissingMap { name: n.into() })?;
        Ok(maps.swap_remove(i).1)
    })?;
    Ok((
        Loaded {
            ebpf,
            pins: pins.clone(),
            exec_guard,
        },
        kmaps,
    ))
}

/// Load the BPF LSM exec guard where the kernel allows it. Many kernels refuse BPF LSM
/// (not built in, not in `lsm=`, or trampolines unsupported): then the tp_btf exec hook
/// alone stops disallowed execs, by SIGKILL.
fn probe_lsm(ebpf: &mut Ebpf, btf: &Btf, name: &str, hook: &str) -> ExecGuard {
    // A BPF LSM program loads and attaches on kernels built with it even when the
    // `bpf` LSM is not active, and then never runs: check the active list first.
    let active = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    if !active.split(',').any(|l| l.trim() == "bpf") {
        tracing::info!(
            active_lsms = %active.trim(),
            "the bpf LSM is not active; disallowed execs are stopped by SIGKILL at sched_process_exec"
        );
        return ExecGuard::TracepointKill;
    }
    let Some(prog) = ebpf.program_mut(name) else {
        return ExecGuard::TracepointKill;
    };
    let res: Result<(), ProgramError> = <&mut Lsm>::try_from(prog).and_then(|p| p.load(hook, btf));
    match res {
        Ok(()) => ExecGuard::Lsm,
        Err(e) => {
            tracing::info!(
                reason = %crate::exit::chain(&e),
                "BPF LSM does not load on this kernel; disallowed execs are stopped by SIGKILL at sched_process_exec"
            );
            ExecGuard::TracepointKill
        }
    }
}

/// Where `struct inode` keeps its change time: `i_ctime_sec`/`i_ctime_nsec` since
/// Linux 6.11, a `struct timespec64` (`__i_ctime`, earlier `i_ctime`) before.
fn ctime_offsets(vmlinux: &[u8]) -> Result<(u32, u32), LoadError> {
    if let (Ok(sec), Ok(nsec)) = (
        btf::member_offset_in(vmlinux, "inode", "i_ctime_sec"),
        btf::member_offset_in(vmlinux, "inode", "i_ctime_nsec"),
    ) {
        return Ok((sec, nsec));
    }
    let ts = btf::member_offset_in(vmlinux, "inode", "__i_ctime")
        .or_else(|_| btf::member_offset_in(vmlinux, "inode", "i_ctime"))?;
    let sec = btf::member_offset_in(vmlinux, "timespec64", "tv_sec")?;
    let nsec = btf::member_offset_in(vmlinux, "timespec64", "tv_nsec")?;
    Ok((ts + sec, ts + nsec))
}

/// Create a root-only directory, refusing one that already exists: bpffs is
/// world-writable (1777), and a directory someone else created first would let them
/// unlink the pins, which detaches the programs.
fn create_private_dir(dir: &Path) -> Result<(), LoadError> {
    Dir::create_new(dir, 0o700)
        .map(drop)
        .map_err(|source| LoadError::PinDir {
            path: dir.display().to_string(),
            source,
        })
}

fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(m)
        | Map::PerCpuArray(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::LpmTrie(m)
        | Map::RingBuf(m)
        | Map::ArrayOfMaps(m)
        | Map::SkStorage(m)
        | Map::PerCpuHashMap(m) => m,
        Map::Unsupported(m) => m,
        _ => unreachable_map(),
    }
}

#[expect(
    clippy::panic,
    reason = "the object defines only the map types matched above"
)]
fn unreachable_map() -> ! {
    panic!("unexpected map type in the zt-agent object")
}

impl Loaded {
    /// Attach every program at the cgroup2 root and pin its link. From here on the
    /// kernel enforces, with or without this process.
    ///
    /// Cgroup bpf_links always attach in multi mode (the kernel takes no flags for
    /// them), so other programs at the root, systemd's for example, keep running too.
    pub fn attach(mut self, cgroup_root: &Path) -> Result<(), LoadError> {
        let root = File::open(cgroup_root).map_err(|source| LoadError::CgroupRoot {
            path: cgroup_root.display().to_string(),
            source,
        })?;
        for p in PROGRAMS {
            match p.kind {
                ProgramKind::Lsm(_) => {
                    if self.exec_guard == ExecGuard::Lsm {
                        self.attach_lsm(p.name)?;
                    }
                }
                ProgramKind::TpBtf(_) => self.attach_tracing(p.name)?,
                ProgramKind::CgroupSockAddr(_)
                | ProgramKind::CgroupSock
                | ProgramKind::CgroupSockopt
                | ProgramKind::CgroupSkbEgress
                | ProgramKind::CgroupSkbIngress => self.attach_cgroup(p.name, p.kind, &root)?,
            }
        }
        Ok(())
    }

    /// Attach one cgroup program at the cgroup2 root and pin its link.
    fn attach_cgroup(
        &mut self,
        name: &str,
        kind: ProgramKind,
        root: &File,
    ) -> Result<(), LoadError> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::MissingProgram { name: name.into() })?;
        // Attach one cgroup program and turn its link into a pinnable FdLink.
        macro_rules! attach_cgroup {
            ($p:expr $(, $arg:expr)*) => {{
                let id = $p
                    .attach(root, $($arg,)* CgroupAttachMode::Single)
                    .map_err(prog_err(name))?;
                let link = $p.take_link(id).map_err(prog_err(name))?;
                FdLink::try_from(link).map_err(|e| LoadError::Program {
                    name: name.into(),
                    source: e.into(),
                })?
            }};
        }
        let link: FdLink = match prog {
            aya::programs::Program::CgroupSockAddr(p) => attach_cgroup!(p),
            aya::programs::Program::CgroupSock(p) => attach_cgroup!(p),
            aya::programs::Program::CgroupSkb(p) => {
                let direction = if kind == ProgramKind::CgroupSkbIngress {
                    aya::programs::CgroupSkbAttachType::Ingress
                } else {
                    aya::programs::CgroupSkbAttachType::Egress
                };
                attach_cgroup!(p, direction)
            }
            aya::programs::Program::CgroupSockopt(p) => {
                // aya 0.16 cannot turn a sockopt link into an FdLink, so create and
                // pin this one bpf_link directly.
                let prog_fd = p.fd().map_err(prog_err(name))?;
                let path = self.pins.link(name);
                let pin_err = |source| LoadError::Pin {
                    path: path.display().to_string(),
                    source,
                };
                let link =
                    sys::link_create(prog_fd.as_fd(), Some(root.as_fd()), kind.attach_type())
                        .map_err(pin_err)?;
                return sys::obj_pin(link.as_fd(), &path).map_err(pin_err);
            }
            _ => return Err(LoadError::MissingProgram { name: name.into() }),
        };
        self.pin_link(name, link)?;
        Ok(())
    }

    /// Optional: the tp_btf exec hook judges every exec anyway. Its pin is what tells
    /// which mechanism is active (`ExecGuard::of_pins`).
    fn attach_lsm(&mut self, name: &str) -> Result<(), LoadError> {
        let attached = (|| -> Result<FdLink, ProgramError> {
            let prog: &mut Lsm = self
                .ebpf
                .program_mut(name)
                .ok_or(ProgramError::NotLoaded)?
                .try_into()?;
            let id = prog.attach()?;
            Ok(prog.take_link(id)?.into())
        })();
        match attached {
            Ok(link) => {
                self.pin_link(name, link)?;
            }
            Err(e) => tracing::warn!(
                reason = %crate::exit::chain(&e),
                "BPF LSM exec guard loaded but did not attach; disallowed execs are stopped by SIGKILL at sched_process_exec"
            ),
        }
        Ok(())
    }

    fn attach_tracing(&mut self, name: &str) -> Result<(), LoadError> {
        let prog: &mut BtfTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::MissingProgram { name: name.into() })?
            .try_into()
            .map_err(prog_err(name))?;
        let id = prog.attach().map_err(prog_err(name))?;
        let link: FdLink = prog.take_link(id).map_err(prog_err(name))?.into();
        self.pin_link(name, link)?;
        Ok(())
    }

    fn pin_link(&self, name: &str, link: FdLink) -> Result<PinnedLink, LoadError> {
        let path = self.pins.link(name);
        link.pin(&path).map_err(|source| LoadError::PinObject {
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

    use super::{OBJECT, OFFSETS, PROGRAMS};

    fn object() -> object::File<'static> {
        object::File::parse(OBJECT).expect("the eBPF object is an ELF file")
    }

    /// The object's programs are those of the table, each in the section its kind and
    /// attach point name: what the loader loads and attaches is what the kernel side built.
    #[test]
    fn program_table_matches_the_object() {
        let elf = object();
        let mut in_object = BTreeMap::new();
        for sym in elf.symbols() {
            let Some(section) = sym
                .section_index()
                .and_then(|i| elf.section_by_index(i).ok())
            else {
                continue;
            };
            let section = section.name().expect("section name");
            // .text holds the compiler's memcpy and friends, not programs.
            if sym.kind() == SymbolKind::Text && sym.is_global() && section != ".text" {
                in_object.insert(
                    sym.name().expect("symbol name").to_owned(),
                    section.to_owned(),
                );
            }
        }
        let in_table: BTreeMap<String, String> = PROGRAMS
            .iter()
            .map(|p| {
                let section = format!("{}/{}", p.kind.section_prefix(), p.kind.attach_point());
                (p.name.to_owned(), section)
            })
            .collect();
        assert_eq!(in_object, in_table);
    }

    /// Every offset the loader sets is a global of the object, and the object has no
    /// other offset global the loader would leave at 0.
    #[test]
    fn offset_table_matches_the_object() {
        let elf = object();
        let mut in_object: Vec<&str> = elf
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Data)
            .filter_map(|s| s.name().ok())
            .filter(|n| n.ends_with("_OFFSET"))
            .collect();
        let mut in_table: Vec<&str> = OFFSETS.iter().map(|o| o.global).collect();
        in_object.sort_unstable();
        in_table.sort_unstable();
        assert_eq!(in_object, in_table);
    }
}
