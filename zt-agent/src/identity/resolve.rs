//! The exec side of a policy as kernel map entries: `exe` selectors and exec allowlists
//! resolved to files, uid/gid selectors, and each identity's exec settings.
//!
//! Paths are resolved by the daemon, the way the kernel sees the files (see `files`),
//! at every policy change and again every second, so a replaced binary is followed.
//! The kernel never matches a path string: a copy is another file; a symlink or a
//! hardlink is the same file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use zt_agent_common::{
    ANY_ID, ENROLL_EXE, ENROLL_PRINCIPAL, ENROLL_QUARANTINE, EXE_FLAG_DIGEST, EXE_FLAG_QUARANTINE,
    EXE_SELECTORS_CAPACITY, EXEC_ALLOW_CAPACITY, ExeSelector, ExecAllowKey, FileKey,
    IDENTITY_FLAG_AUDIT, IDENTITY_FLAG_EXEC_RESTRICTED, IDENTITY_FLAG_IN_POLICY,
    IDENTITY_QUARANTINE, IdentityConfig, PRINCIPAL_GID, PRINCIPAL_UID, PRINCIPALS_CAPACITY,
    Principal, PrincipalKey,
};

use super::files::{self, FileId, MountDevs};
use crate::ebpf::maps::ExecEntries;
use crate::policy::{Location, Mode, Policy};

/// Looks files up. The daemon's is [`HostFiles`]; unit tests give synthetic files.
pub trait FileView {
    fn id(&mut self, path: &str) -> std::io::Result<FileId>;
    /// The digest of the file at `path`, with the identity of the file hashed.
    fn digest(&mut self, path: &str) -> std::io::Result<(FileId, String)>;
    /// Why a non-root user could change what `path` names, if one could.
    fn writable_by_others(&mut self, _path: &str) -> Option<String> {
        None
    }
}

/// Whether a non-root user may change `md`'s file (`dir`: add, remove or rename entries
/// in it). A sticky, world-writable directory (/tmp) only lets users replace their own
/// entries.
fn open_to_others(md: &std::fs::Metadata, dir: bool) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let mode = md.mode();
    let sticky = dir && mode & 0o1000 != 0;
    md.uid() != 0 || (mode & 0o020 != 0 && md.gid() != 0) || (mode & 0o002 != 0 && !sticky)
}

/// The host's files, with digests cached per file and change time.
#[derive(Default)]
pub struct HostFiles {
    mounts: MountDevs,
    digests: HashMap<FileId, String>,
}

impl HostFiles {
    /// Re-read the mount table; call before each resolution.
    pub fn refresh_mounts(&mut self) -> std::io::Result<()> {
        self.mounts = MountDevs::read(None)?;
        Ok(())
    }

    #[must_use]
    pub fn mounts(&self) -> &MountDevs {
        &self.mounts
    }
}

impl FileView for HostFiles {
    fn id(&mut self, path: &str) -> std::io::Result<FileId> {
        files::of_path(Path::new(path), &self.mounts)
    }

    fn digest(&mut self, path: &str) -> std::io::Result<(FileId, String)> {
        let id = self.id(path)?;
        if let Some(d) = self.digests.get(&id) {
            return Ok((id, d.clone()));
        }
        let (id, d) = files::digest(
            Path::new(path),
            &self.mounts,
            files::MAX_POLICY_DIGEST_BYTES,
        )?;
        if self.digests.len() > 4096 {
            self.digests.clear();
        }
        self.digests.insert(id, d.clone());
        Ok((id, d))
    }

    fn writable_by_others(&mut self, path: &str) -> Option<String> {
        // The directories of the path as written (a symlink there can be repointed) and
        // of the file it resolves to, and the file itself.
        let written = Path::new(path);
        let real = std::fs::canonicalize(written).ok()?;
        let md = std::fs::metadata(&real).ok()?;
        if open_to_others(&md, false) {
            return Some(format!("{} is writable by a non-root user", real.display()));
        }
        for p in [written, real.as_path()] {
            for dir in p.ancestors().skip(1) {
                if let Ok(md) = std::fs::metadata(dir)
                    && open_to_others(&md, true)
                {
                    return Some(format!(
                        "directory {} is writable by a non-root user",
                        dir.display()
                    ));
                }
            }
        }
        None
    }
}

/// Something an operator should know about a resolution; never fatal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    pub identity: String,
    pub field: &'static str,
    pub path: String,
    pub location: Location,
    pub message: String,
}

/// Why the exec side of a policy cannot be installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error(transparent)]
    SameFile(#[from] SameFile),
    #[error("the policy needs {need} {what} entries, more than the capacity of {capacity}")]
    Capacity {
        what: &'static str,
        need: usize,
        capacity: u32,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{at}: spec.selectors: exe `{path}` of identity `{identity}` is the same file as exe `{other_path}` of identity `{other}` ({other_at}): one file can select one identity"
)]
pub struct SameFile {
    pub at: Location,
    pub identity: String,
    pub path: String,
    pub other: String,
    pub other_path: String,
    pub other_at: Location,
}

/// Map entries for the exec side of a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Every identity of the policy has its settings in `entries.configs`.
    pub entries: ExecEntries,
    /// A name for each file the policy names (for events and `zt-agent ps`).
    pub paths: BTreeMap<FileKey, String>,
    pub notes: Vec<Note>,
}

/// Resolve the exec side of `policy`. Identities without an id are skipped (compile
/// reports them).
///
/// # Errors
/// Two `exe` selectors of different identities naming one file (through hardlinks).
pub fn resolve(
    policy: &Policy,
    ids: &BTreeMap<String, u32>,
    fs: &mut dyn FileView,
) -> Result<Resolved, Vec<ResolveError>> {
    let mut r = Resolved::default();
    let mut errors = Vec::new();
    // Which selector claimed each file: (identity, path, location).
    let mut claimed: BTreeMap<FileKey, (String, String, Location)> = BTreeMap::new();
    for identity in &policy.identities {
        let Some(&id) = ids.get(&identity.name) else {
            continue;
        };
        let mut flags = IDENTITY_FLAG_IN_POLICY;
        if identity.mode == Mode::Audit {
            flags |= IDENTITY_FLAG_AUDIT;
        }
        if let Some(allow) = &identity.exec_allow {
            flags |= IDENTITY_FLAG_EXEC_RESTRICTED;
            for p in allow {
                let looked = match &p.sha256 {
                    Some(want) => fs.digest(&p.path).and_then(|(f, d)| {
                        if d == *want {
                            Ok(f)
                        } else {
                            Err(std::io::Error::other(format!(
                                "digest mismatch: the file has sha256 {d}, the policy pins {want}"
                            )))
                        }
                    }),
                    None => fs.id(&p.path),
                };
                if p.sha256.is_none()
                    && let Some(why) = fs.writable_by_others(&p.path)
                {
                    r.notes.push(Note {
                        identity: identity.name.clone(),
                        field: "spec.exec.allow",
                        path: p.path.clone(),
                        location: p.location.clone(),
                        message: format!(
                            "{why}: whoever can write it decides what this entry allows; pin its sha256 or allow a root-owned path"
                        ),
                    });
                }
                match looked {
                    Ok(f) => {
                        r.entries.allow.insert(
                            ExecAllowKey {
                                identity: id,
                                dev: f.key.dev,
                                ino: f.key.ino,
                            },
                            f.stamp,
                        );
                        r.paths.entry(f.key).or_insert_with(|| p.path.clone());
                    }
                    // A path of an identity that selects containers names a file
                    // inside them, which the host need not have.
                    Err(_) if identity.selects_containers() => {}
                    Err(e) => r.notes.push(Note {
                        identity: identity.name.clone(),
                        field: "spec.exec.allow",
                        path: p.path.clone(),
                        location: p.location.clone(),
                        message: format!("allows nothing while it cannot be resolved: {e}"),
                    }),
                }
            }
        }
        r.entries.configs.insert(id, IdentityConfig { flags });

        for s in &identity.exe_selectors {
            let looked = match &s.sha256 {
                Some(_) => fs.digest(&s.path).map(|(f, d)| (f, Some(d))),
                None => fs.id(&s.path).map(|f| (f, None)),
            };
            let (f, digest) = match looked {
                Ok(x) => x,
                Err(e) => {
                    r.notes.push(Note {
                        identity: identity.name.clone(),
                        field: "spec.selectors.exe",
                        path: s.path.clone(),
                        location: s.location.clone(),
                        message: format!("selects nothing while it cannot be resolved: {e}"),
                    });
                    continue;
                }
            };
            if s.sha256.is_none()
                && let Some(why) = fs.writable_by_others(&s.path)
            {
                r.notes.push(Note {
                    identity: identity.name.clone(),
                    field: "spec.selectors.exe",
                    path: s.path.clone(),
                    location: s.location.clone(),
                    message: format!(
                        "{why}: whoever can write it decides which program takes this identity; pin its sha256"
                    ),
                });
            }
            let mut sel_flags = 0;
            if let Some(want) = &s.sha256 {
                sel_flags |= EXE_FLAG_DIGEST;
                if digest.as_deref() != Some(want.as_str()) {
                    sel_flags |= EXE_FLAG_QUARANTINE;
                    r.notes.push(Note {
                        identity: identity.name.clone(),
                        field: "spec.selectors.sha256",
                        path: s.path.clone(),
                        location: s.location.clone(),
                        message: format!(
                            "digest mismatch: the file has sha256 {}, the policy pins {want}; tasks that exec it are quarantined (deny all)",
                            digest.unwrap_or_default()
                        ),
                    });
                }
            }
            if let Some((other, other_path, other_at)) = claimed.get(&f.key) {
                errors.push(ResolveError::SameFile(SameFile {
                    at: s.location.clone(),
                    identity: identity.name.clone(),
                    path: s.path.clone(),
                    other: other.clone(),
                    other_path: other_path.clone(),
                    other_at: other_at.clone(),
                }));
                continue;
            }
            claimed.insert(
                f.key,
                (identity.name.clone(), s.path.clone(), s.location.clone()),
            );
            r.paths.insert(f.key, s.path.clone());
            r.entries.exe.insert(
                f.key,
                ExeSelector {
                    stamp: f.stamp,
                    identity: id,
                    uid: s.uid.unwrap_or(ANY_ID),
                    gid: s.gid.unwrap_or(ANY_ID),
                    flags: sel_flags,
                },
            );
        }
        for s in &identity.principal_selectors {
            let (key, value) = match s.uid {
                Some(uid) => (
                    PrincipalKey {
                        kind: PRINCIPAL_UID,
                        id: uid,
                    },
                    Principal {
                        identity: id,
                        gid: s.gid.unwrap_or(ANY_ID),
                    },
                ),
                None => (
                    PrincipalKey {
                        kind: PRINCIPAL_GID,
                        id: s.gid.unwrap_or(ANY_ID),
                    },
                    Principal {
                        identity: id,
                        gid: ANY_ID,
                    },
                ),
            };
            r.entries.principals.insert(key, value);
        }
    }
    for (what, need, capacity) in [
        ("exe selector", r.entries.exe.len(), EXE_SELECTORS_CAPACITY),
        (
            "uid/gid selector",
            r.entries.principals.len(),
            PRINCIPALS_CAPACITY,
        ),
        ("exec allowlist", r.entries.allow.len(), EXEC_ALLOW_CAPACITY),
    ] {
        if need > capacity as usize {
            errors.push(ResolveError::Capacity {
                what,
                need,
                capacity,
            });
        }
    }
    if errors.is_empty() {
        Ok(r)
    } else {
        Err(errors)
    }
}

/// Add the `exec.allow` files of identities that select containers as each of their
/// containers sees them: a path in such a policy means the path inside the container,
/// resolved through `/proc/PID/root` of one of its tasks with absolute symlinks and
/// `..` kept inside the container's root. `roots` holds, per identity id, one task of
/// each of its containers. A file missing in a container allows nothing there.
pub fn add_container_files(
    policy: &Policy,
    ids: &BTreeMap<String, u32>,
    roots: &BTreeMap<u32, Vec<u32>>,
    r: &mut Resolved,
) {
    for identity in &policy.identities {
        let (Some(allow), Some(id)) = (&identity.exec_allow, ids.get(&identity.name)) else {
            continue;
        };
        let Some(pids) = roots.get(id) else {
            continue;
        };
        for pid in pids {
            let root = match files::Root::of_pid(*pid) {
                Ok(root) => root,
                Err(e) => {
                    tracing::debug!(pid, error = %e, "opening a container's root");
                    continue;
                }
            };
            for p in allow {
                let looked = match &p.sha256 {
                    Some(want) => root
                        .digest(&p.path, files::MAX_POLICY_DIGEST_BYTES)
                        .and_then(|(f, d)| {
                            if d == *want {
                                Ok(f)
                            } else {
                                Err(std::io::Error::other("digest mismatch"))
                            }
                        }),
                    None => root.id(&p.path),
                };
                match looked {
                    Ok(f) => {
                        r.entries.allow.insert(
                            ExecAllowKey {
                                identity: *id,
                                dev: f.key.dev,
                                ino: f.key.ino,
                            },
                            f.stamp,
                        );
                        r.paths.entry(f.key).or_insert_with(|| p.path.clone());
                    }
                    Err(e) => {
                        tracing::debug!(pid, path = %p.path, error = %e, "an exec.allow path in a container");
                    }
                }
            }
        }
    }
}

/// Keep the entries of files that resolved before and fail to resolve now (a transient
/// error, a file briefly absent while it is replaced, a file that changed while it was
/// hashed). The kernel's change-time check still guards them: a changed file is not
/// allowed, and a changed digest-pinned file quarantines.
pub fn keep_unresolved(old: &Resolved, new: &mut Resolved) {
    let failing: std::collections::BTreeSet<&str> = new
        .notes
        .iter()
        .filter(|n| n.message.contains("cannot be resolved"))
        .map(|n| n.path.as_str())
        .collect();
    for (key, path) in &old.paths {
        if !failing.contains(path.as_str()) || new.paths.contains_key(key) {
            continue;
        }
        new.paths.insert(*key, path.clone());
        if let Some(sel) = old.entries.exe.get(key) {
            new.entries.exe.entry(*key).or_insert(*sel);
        }
        for (k, v) in old
            .entries
            .allow
            .iter()
            .filter(|(k, _)| k.dev == key.dev && k.ino == key.ino)
        {
            if new.entries.configs.contains_key(&k.identity) {
                new.entries.allow.entry(*k).or_insert(*v);
            }
        }
    }
}

impl Resolved {
    /// The identity a task takes when, unenrolled, it execs (or is found running) `file`
    /// with real `uid` and `gid`: the kernel's rule, for tasks that were there first.
    #[must_use]
    pub fn select(&self, file: Option<&FileId>, uid: u32, gid: u32) -> Option<(u32, u32)> {
        if let Some(f) = file
            && let Some(sel) = self.entries.exe.get(&f.key)
            && (sel.uid == ANY_ID || sel.uid == uid)
            && (sel.gid == ANY_ID || sel.gid == gid)
        {
            let digest_unverified = sel.stamp != f.stamp && sel.flags & EXE_FLAG_DIGEST != 0;
            let audit = self
                .entries
                .configs
                .get(&sel.identity)
                .is_some_and(|c| c.flags & IDENTITY_FLAG_AUDIT != 0);
            if (sel.flags & EXE_FLAG_QUARANTINE != 0 || digest_unverified) && !audit {
                return Some((IDENTITY_QUARANTINE, ENROLL_QUARANTINE));
            }
            return Some((sel.identity, ENROLL_EXE));
        }
        let by_uid = PrincipalKey {
            kind: PRINCIPAL_UID,
            id: uid,
        };
        if let Some(p) = self.entries.principals.get(&by_uid)
            && (p.gid == ANY_ID || p.gid == gid)
        {
            return Some((p.identity, ENROLL_PRINCIPAL));
        }
        let by_gid = PrincipalKey {
            kind: PRINCIPAL_GID,
            id: gid,
        };
        self.entries
            .principals
            .get(&by_gid)
            .map(|p| (p.identity, ENROLL_PRINCIPAL))
    }
}

#[cfg(test)]
mod tests {
    use zt_agent_common::FileStamp;

    use super::*;
    use crate::policy::load_str;

    /// Synthetic files: path -> (inode, ctime, content digest).
    struct Files(HashMap<&'static str, (u64, i64, &'static str)>);

    impl FileView for Files {
        fn id(&mut self, path: &str) -> std::io::Result<FileId> {
            let (ino, ctime, _) = self
                .0
                .get(path)
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
            Ok(FileId {
                key: FileKey {
                    dev: 8,
                    _pad: 0,
                    ino: *ino,
                },
                stamp: FileStamp {
                    ctime_sec: *ctime,
                    ctime_nsec: 0,
                    _pad: 0,
                },
            })
        }
        fn digest(&mut self, path: &str) -> std::io::Result<(FileId, String)> {
            let id = self.id(path)?;
            Ok((id, self.0[path].2.to_owned()))
        }
    }

    const GOOD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const BAD: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn doc(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: zt-agent/v1\nkind: Identity\nmetadata:\n  name: {name}\n  owner: o@example.com\nspec:\n{spec}\n"
        )
    }

    fn files() -> Files {
        Files(HashMap::from([
            ("/usr/bin/agentd", (10, 100, GOOD)),
            ("/usr/bin/agentd-link", (10, 100, GOOD)),
            ("/usr/bin/git", (11, 100, GOOD)),
            ("/usr/bin/python3", (12, 100, GOOD)),
            ("/usr/bin/tool", (13, 100, BAD)),
        ]))
    }

    fn ids(names: &[&str]) -> BTreeMap<String, u32> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| ((*n).to_owned(), i as u32 + 1))
            .collect()
    }

    fn fid(ino: u64, ctime: i64) -> FileId {
        FileId {
            key: FileKey {
                dev: 8,
                _pad: 0,
                ino,
            },
            stamp: FileStamp {
                ctime_sec: ctime,
                ctime_nsec: 0,
                _pad: 0,
            },
        }
    }

    #[test]
    fn selectors_match_by_file_uid_and_gid_in_order() {
        let text = doc(
            "agent",
            &format!(
                "  selectors:\n    - exe: /usr/bin/agentd\n      sha256: {GOOD}\n    - exe: /usr/bin/git\n      uid: 1001\n",
            ),
        ) + "---\n"
            + &doc(
                "svc",
                "  selectors:\n    - uid: 2000\n      gid: 50\n    - gid: 77\n",
            );
        let p = load_str("p.yaml", &text).expect("valid");
        let r = resolve(&p, &ids(&["agent", "svc"]), &mut files()).expect("resolves");
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        // By file, whatever the path: the hardlink is the same file.
        assert_eq!(r.select(Some(&fid(10, 100)), 5, 5), Some((1, ENROLL_EXE)));
        // A copy (another inode) is not.
        assert_eq!(r.select(Some(&fid(99, 100)), 5, 5), None);
        // All fields of a selector must match: git only for uid 1001.
        assert_eq!(
            r.select(Some(&fid(11, 100)), 1001, 5),
            Some((1, ENROLL_EXE))
        );
        assert_eq!(r.select(Some(&fid(11, 100)), 1002, 5), None);
        // uid 2000 needs gid 50; gid 77 alone selects svc.
        assert_eq!(r.select(None, 2000, 50), Some((2, ENROLL_PRINCIPAL)));
        assert_eq!(r.select(None, 2000, 51), None);
        assert_eq!(r.select(None, 3, 77), Some((2, ENROLL_PRINCIPAL)));
        // A digest-pinned file that changed since it was verified: quarantine.
        assert_eq!(
            r.select(Some(&fid(10, 101)), 5, 5),
            Some((IDENTITY_QUARANTINE, ENROLL_QUARANTINE))
        );
    }

    #[test]
    fn a_bad_digest_quarantines_and_is_reported() {
        let text = doc(
            "agent",
            &format!("  selectors:\n    - exe: /usr/bin/tool\n      sha256: {GOOD}\n"),
        );
        let p = load_str("p.yaml", &text).expect("valid");
        let r = resolve(&p, &ids(&["agent"]), &mut files()).expect("resolves");
        assert_eq!(r.notes.len(), 1);
        assert!(
            r.notes[0].message.contains("digest mismatch"),
            "{:?}",
            r.notes
        );
        assert_eq!(r.notes[0].location.to_string(), "p.yaml:8:12");
        assert_eq!(
            r.select(Some(&fid(13, 100)), 5, 5),
            Some((IDENTITY_QUARANTINE, ENROLL_QUARANTINE))
        );
    }

    #[test]
    fn one_file_under_two_paths_in_two_identities_is_an_error_naming_both() {
        let text = doc("a", "  selectors:\n    - exe: /usr/bin/agentd\n")
            + "---\n"
            + &doc("b", "  selectors:\n    - exe: /usr/bin/agentd-link\n");
        let p = load_str("p.yaml", &text).expect("valid");
        let err = resolve(&p, &ids(&["a", "b"]), &mut files()).expect_err("same file");
        assert!(matches!(err[0], ResolveError::SameFile(_)));
        let msg = err[0].to_string();
        assert!(
            msg.contains("identity `b`") && msg.contains("identity `a`"),
            "{msg}"
        );
        assert!(msg.starts_with("p.yaml:18:12"), "{msg}");
    }

    #[test]
    fn entries_of_files_that_fail_to_resolve_for_a_moment_are_kept() {
        let text = doc(
            "agent",
            &format!(
                "  selectors:\n    - exe: /usr/bin/agentd\n      sha256: {GOOD}\n  exec:\n    allow: [/usr/bin/git]\n"
            ),
        );
        let p = load_str("p.yaml", &text).expect("valid");
        let mut fs = files();
        let before = resolve(&p, &ids(&["agent"]), &mut fs).expect("resolves");
        fs.0.remove("/usr/bin/agentd");
        fs.0.remove("/usr/bin/git");
        let mut now = resolve(&p, &ids(&["agent"]), &mut fs).expect("resolves");
        assert!(now.entries.exe.is_empty() && now.entries.allow.is_empty());
        keep_unresolved(&before, &mut now);
        assert_eq!(now.entries.exe, before.entries.exe);
        assert_eq!(now.entries.allow, before.entries.allow);
    }

    #[test]
    fn an_allow_entry_with_a_wrong_digest_allows_nothing() {
        let text = doc(
            "agent",
            &format!(
                "  exec:\n    allow:\n      - {{path: /usr/bin/git, sha256: {GOOD}}}\n      - {{path: /usr/bin/tool, sha256: {GOOD}}}\n"
            ),
        );
        let p = load_str("p.yaml", &text).expect("valid");
        let r = resolve(&p, &ids(&["agent"]), &mut files()).expect("resolves");
        assert_eq!(
            r.entries.allow.len(),
            1,
            "only the file whose digest matches"
        );
        assert!(
            r.notes
                .iter()
                .any(|n| n.path == "/usr/bin/tool" && n.message.contains("digest mismatch"))
        );
    }

    #[test]
    fn audit_mode_never_quarantines() {
        let text = doc(
            "agent",
            &format!(
                "  mode: audit\n  selectors:\n    - exe: /usr/bin/tool\n      sha256: {GOOD}\n"
            ),
        );
        let p = load_str("p.yaml", &text).expect("valid");
        let r = resolve(&p, &ids(&["agent"]), &mut files()).expect("resolves");
        assert_eq!(r.select(Some(&fid(13, 100)), 5, 5), Some((1, ENROLL_EXE)));
    }

    #[test]
    fn exec_allowlists_resolve_to_files_and_flags() {
        let text = doc(
            "agent",
            "  mode: audit\n  exec:\n    allow: [/usr/bin/git, /usr/bin/python3, /nonexistent]\n",
        ) + "---\n"
            + &doc("free", "  egress: []\n");
        let p = load_str("p.yaml", &text).expect("valid");
        let r = resolve(&p, &ids(&["agent", "free"]), &mut files()).expect("resolves");
        assert_eq!(r.entries.allow.len(), 2);
        assert!(r.entries.allow.contains_key(&ExecAllowKey {
            identity: 1,
            dev: 8,
            ino: 11
        }));
        assert_eq!(
            r.entries.configs[&1].flags,
            IDENTITY_FLAG_IN_POLICY | IDENTITY_FLAG_AUDIT | IDENTITY_FLAG_EXEC_RESTRICTED
        );
        assert_eq!(r.entries.configs[&2].flags, IDENTITY_FLAG_IN_POLICY);
        assert_eq!(r.notes.len(), 1, "the missing file is reported");
        assert_eq!(r.notes[0].path, "/nonexistent");
    }
}
