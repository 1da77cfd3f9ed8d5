//! Tamper detection: a process with full capabilities can detach the programs (a
//! cgroup link detached by id, `bpftool link detach`) or remove their pins (which,
//! once nothing else holds a link, detaches it). The guard holds a descriptor of every
//! pinned link, program and map, so that a removed pin detaches nothing while the
//! daemon runs, and checks them often: a detached program is attached again from the
//! program it holds, a removed pin is pinned again, and each is reported.

use std::fs::File;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use zt_agent_common::{PROGRAMS, Program, map_names};

use crate::ebpf::loader::PinDir;
use crate::ebpf::sys;

/// What was found tampered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// A program's link was detached from its hook.
    LinkDetached,
    /// A link's pin was removed or replaced.
    LinkPin,
    /// A map's pin was removed or replaced.
    MapPin,
}

impl What {
    /// The `what` label and the event's reason.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LinkDetached => "link_detached",
            Self::LinkPin => "link_pin_removed",
            Self::MapPin => "map_pin_removed",
        }
    }

    pub const ALL: [Self; 3] = [Self::LinkDetached, Self::LinkPin, Self::MapPin];
}

/// One finding and what the guard did about it.
#[derive(Clone, Debug)]
pub struct Finding {
    pub what: What,
    /// The program or map.
    pub object: &'static str,
    /// `Ok`: restored; `Err`: why it could not be.
    pub repaired: Result<(), String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("opening pinned {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A link the guard holds, with the program behind it.
struct HeldLink {
    program: Program,
    link: OwnedFd,
    link_id: u32,
    prog: OwnedFd,
}

struct HeldMap {
    name: &'static str,
    map: OwnedFd,
}

pub struct Guard {
    pins: PinDir,
    root: File,
    root_id: u64,
    links: Vec<HeldLink>,
    maps: Vec<HeldMap>,
}

fn open_pin(path: &Path) -> Result<OwnedFd, GuardError> {
    sys::obj_get(path).map_err(|source| GuardError::Open {
        path: path.display().to_string(),
        source,
    })
}

impl Guard {
    /// Take hold of every pinned link (and its program) and map of `pins`. The
    /// optional programs that were not attached are left out.
    pub fn open(pins: &PinDir, cgroup_root: &Path) -> Result<Self, GuardError> {
        let open_err = |source| GuardError::Open {
            path: cgroup_root.display().to_string(),
            source,
        };
        let root = File::open(cgroup_root).map_err(open_err)?;
        let root_id = root.metadata().map_err(open_err)?.ino();
        let mut links = Vec::new();
        for p in PROGRAMS {
            let path = pins.link(p.name);
            if p.kind.is_optional() && !path.exists() {
                continue;
            }
            let link = open_pin(&path)?;
            let info = sys::link_info(link.as_fd()).map_err(|source| GuardError::Open {
                path: path.display().to_string(),
                source,
            })?;
            let prog = sys::prog_by_id(info.prog_id).map_err(|source| GuardError::Open {
                path: path.display().to_string(),
                source,
            })?;
            links.push(HeldLink {
                program: p,
                link,
                link_id: info.id,
                prog,
            });
        }
        let mut maps = Vec::new();
        for name in map_names::ALL {
            maps.push(HeldMap {
                name,
                map: open_pin(&pins.map(name))?,
            });
        }
        Ok(Self {
            pins: pins.clone(),
            root,
            root_id,
            links,
            maps,
        })
    }

    /// Check every link and pin once; restore what was changed and say what it was.
    pub fn check(&mut self) -> Vec<Finding> {
        let mut found = Vec::new();
        for dir in ["links", "maps"] {
            let d = self.pins.root.join(dir);
            if !d.is_dir() {
                // A whole directory removed: put it back, as private as at start (a
                // directory someone else made there first is refused, not trusted).
                let _ = crate::sys::fs::Dir::create_new(&d, 0o700);
            }
        }
        for i in 0..self.links.len() {
            if let Some(f) = self.check_link(i) {
                found.push(f);
            }
            let h = &self.links[i];
            let path = self.pins.link(h.program.name);
            if !pin_holds(&path, h.link_id, sys::link_id) {
                found.push(Finding {
                    what: What::LinkPin,
                    object: h.program.name,
                    repaired: repin(h.link.as_fd(), &path),
                });
            }
        }
        for m in &self.maps {
            let path = self.pins.map(m.name);
            let Ok(id) = sys::map_id(m.map.as_fd()) else {
                continue;
            };
            if !pin_holds(&path, id, sys::map_id) {
                found.push(Finding {
                    what: What::MapPin,
                    object: m.name,
                    repaired: repin(m.map.as_fd(), &path),
                });
            }
        }
        found
    }

    /// A cgroup link detached from the root: attach the program again with a new link
    /// (the old one is spent), and pin that instead.
    fn check_link(&mut self, i: usize) -> Option<Finding> {
        let h = &self.links[i];
        if !h.program.kind.is_cgroup() {
            // Tracepoint links cannot be detached; only their pins can go.
            return None;
        }
        let attached = sys::link_info(h.link.as_fd()).is_ok_and(|l| l.cgroup_id == self.root_id);
        if attached {
            return None;
        }
        let name = h.program.name;
        let repaired = (|| {
            let link = sys::link_create(
                h.prog.as_fd(),
                Some(self.root.as_fd()),
                h.program.kind.attach_type(),
            )
            .map_err(|e| format!("attaching {name} again: {e}"))?;
            let id = sys::link_info(link.as_fd())
                .map_err(|e| format!("{name}: {e}"))?
                .id;
            let path = self.pins.link(name);
            repin(link.as_fd(), &path)?;
            Ok((link, id))
        })();
        Some(Finding {
            what: What::LinkDetached,
            object: name,
            repaired: repaired.map(|(link, id)| {
                let h = &mut self.links[i];
                h.link = link;
                h.link_id = id;
            }),
        })
    }
}

/// Whether the pin at `path` is the object `id` (as `id_of` names an open one).
fn pin_holds(
    path: &Path,
    id: u32,
    id_of: fn(std::os::fd::BorrowedFd<'_>) -> std::io::Result<u32>,
) -> bool {
    sys::obj_get(path)
        .and_then(|fd| id_of(fd.as_fd()))
        .is_ok_and(|pinned| pinned == id)
}

/// Pin `fd` at `path`, in place of whatever is there now.
fn repin(fd: std::os::fd::BorrowedFd<'_>, path: &PathBuf) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing {}: {e}", path.display())),
    }
    sys::obj_pin(fd, path).map_err(|e| format!("pinning {}: {e}", path.display()))
}
