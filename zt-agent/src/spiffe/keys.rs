//! The signing keys on disk and their rotation: one root-only file in the state dir,
//! so that a restarted daemon signs with the same keys and rotates them on the same
//! schedule, and what it handed out before still verifies against its bundle.
//!
//! The directory is made 0700 and the file 0600 by the daemon, both owned by root;
//! neither is followed through a symlink, and one owned by anyone else, or open to
//! group or others, is refused rather than used.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SpiffeError;

/// How long a CA the daemon makes itself is valid; a new one takes over when the
/// active one has half of this left, and the old one stays in the bundle until it
/// expires (every SVID it signed expires before it does).
pub const CA_LIFETIME: i64 = 30 * 86_400;
/// How long a JWT signing key signs before the next one takes over; it stays in the
/// bundle for one JWT lifetime more, so that tokens it signed still verify.
pub const JWT_KEY_LIFETIME: i64 = 86_400;

const DIR: &str = "svid";
const FILE: &str = "keys.json";

/// A CA the daemon made, as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// A JWT signing key, as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredJwtKey {
    pub kid: String,
    pub key_pem: String,
    pub created: i64,
    /// From then on it no longer signs.
    pub retire_at: i64,
    /// From then on it leaves the bundle.
    pub drop_at: i64,
}

/// Everything the key file holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stored {
    #[serde(default)]
    pub x509: Vec<StoredCa>,
    #[serde(default)]
    pub jwt: Vec<StoredJwtKey>,
}

/// What a rotation needs made: kept apart from the key generation, so that the
/// schedule is a pure function of the clock.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub new_ca: bool,
    pub new_jwt_key: bool,
}

impl Stored {
    /// Drop what has expired at `now`, and say what must be made.
    pub fn expire(&mut self, now: i64, self_signed_ca: bool) -> Due {
        self.x509.retain(|c| c.not_after > now);
        self.jwt.retain(|k| k.drop_at > now);
        let new_ca = self_signed_ca
            && self
                .x509
                .iter()
                .map(|c| c.not_after - (c.not_after - c.not_before) / 2)
                .max()
                .is_none_or(|half| half <= now);
        let new_jwt_key = self.jwt.iter().all(|k| k.retire_at <= now);
        Due {
            new_ca,
            new_jwt_key,
        }
    }

    /// When the schedule next changes something (a key retires, expires, or is due).
    #[must_use]
    pub fn next_change(&self, now: i64) -> i64 {
        let ca = self
            .x509
            .iter()
            .flat_map(|c| [c.not_after - (c.not_after - c.not_before) / 2, c.not_after]);
        let jwt = self.jwt.iter().flat_map(|k| [k.retire_at, k.drop_at]);
        ca.chain(jwt)
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + 3_600)
    }

    /// The CA that signs now: the newest.
    #[must_use]
    pub fn active_ca(&self) -> Option<&StoredCa> {
        self.x509.iter().max_by_key(|c| c.not_before)
    }

    /// The JWT key that signs now: the newest that has not retired.
    #[must_use]
    pub fn active_jwt(&self, now: i64) -> Option<&StoredJwtKey> {
        self.jwt
            .iter()
            .filter(|k| k.retire_at > now)
            .max_by_key(|k| k.created)
    }
}

/// The key file of a state dir.
pub struct KeyFile {
    pub dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpiffeError + '_ {
    move |source| SpiffeError::Keys {
        path: path.display().to_string(),
        source,
    }
}

fn refuse(path: &Path, why: &str) -> SpiffeError {
    SpiffeError::Keys {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, why.to_owned()),
    }
}

/// Open a file that must be root's and private to it, without following a symlink
/// when `nofollow`.
pub fn read_private(path: &Path, nofollow: bool) -> Result<Vec<u8>, SpiffeError> {
    let flags = if nofollow { libc::O_NOFOLLOW } else { 0 };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err(path))?;
    let m = f.metadata().map_err(io_err(path))?;
    if !m.is_file() {
        return Err(refuse(path, "not a regular file"));
    }
    if m.uid() != 0 {
        return Err(refuse(path, "not owned by root"));
    }
    if m.mode() & 0o077 != 0 {
        return Err(refuse(
            path,
            "readable or writable by group or others (chmod 600)",
        ));
    }
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(io_err(path))?;
    Ok(buf)
}

impl KeyFile {
    #[must_use]
    pub fn of(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join(DIR),
        }
    }

    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Make the directory root-only if absent; refuse one that is not.
    fn ensure_dir(&self) -> Result<(), SpiffeError> {
        let dir = &self.dir;
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = dir.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err(dir))?;
                // The umask may have taken bits away, never added them; say it exactly.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err(dir))
            }
            Err(e) => Err(io_err(dir)(e)),
            Ok(m) if !m.is_dir() => Err(refuse(dir, "not a directory (a symlink?)")),
            Ok(m) if m.uid() != 0 => Err(refuse(dir, "not owned by root")),
            Ok(m) if m.mode() & 0o077 != 0 => {
                Err(refuse(dir, "open to group or others (chmod 700)"))
            }
            Ok(_) => Ok(()),
        }
    }

    /// The stored keys; empty when there is no file yet.
    pub fn read(&self) -> Result<Stored, SpiffeError> {
        self.ensure_dir()?;
        let path = self.path();
        match read_private(&path, true) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SpiffeError::Keys {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(SpiffeError::Keys { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(Stored::default())
            }
            Err(e) => Err(e),
        }
    }

    /// Replace the key file atomically.
    pub fn write(&self, stored: &Stored) -> Result<(), SpiffeError> {
        self.write_file(FILE, &serde_json::to_vec_pretty(stored).unwrap_or_default())
    }

    /// Replace `name` in the directory atomically: a fresh 0600 file, never one a
    /// symlink points at.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), SpiffeError> {
        self.ensure_dir()?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Remove the keys (teardown).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(self.path());
        let _ = std::fs::remove_file(self.dir.join(super::svid::ISSUED_FILE));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(not_before: i64) -> StoredCa {
        StoredCa {
            cert_pem: String::new(),
            key_pem: String::new(),
            not_before,
            not_after: not_before + CA_LIFETIME,
        }
    }

    fn jwt(created: i64) -> StoredJwtKey {
        StoredJwtKey {
            kid: created.to_string(),
            key_pem: String::new(),
            created,
            retire_at: created + JWT_KEY_LIFETIME,
            drop_at: created + JWT_KEY_LIFETIME + 300,
        }
    }

    #[test]
    fn private_files_open_to_others_are_refused() {
        let dir = std::env::temp_dir().join(format!("zt-keys-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("key.pem");
        std::fs::write(&f, b"k").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(read_private(&f, true).is_err(), "a 0644 key was read");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let link = dir.join("link.pem");
        std::os::unix::fs::symlink(&f, &link).expect("symlink");
        assert!(read_private(&link, true).is_err(), "a symlink was followed");
        if zt_agent_host::is_root() {
            assert_eq!(read_private(&f, true).expect("root's 0600 key"), b"k");
            assert_eq!(read_private(&link, false).expect("operator path"), b"k");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_needs_both() {
        let mut s = Stored::default();
        assert_eq!(
            s.expire(0, true),
            Due {
                new_ca: true,
                new_jwt_key: true
            }
        );
        // An operator's CA: the daemon never makes one.
        assert!(!s.expire(0, false).new_ca);
    }

    #[test]
    fn rotates_at_half_life_and_keeps_the_old_until_expiry() {
        let mut s = Stored {
            x509: vec![ca(0)],
            jwt: vec![jwt(0)],
        };
        assert_eq!(s.expire(10, true), Due::default());
        assert_eq!(s.next_change(10), JWT_KEY_LIFETIME);
        let half = CA_LIFETIME / 2;
        assert!(s.expire(half, true).new_ca);
        s.x509.push(ca(half));
        assert_eq!(s.active_ca().map(|c| c.not_before), Some(half));
        assert!(!s.expire(half + 1, true).new_ca);
        // The first CA stays in the bundle until it expires.
        assert_eq!(s.x509.len(), 2);
        s.expire(CA_LIFETIME, true);
        assert_eq!(s.x509.len(), 1);
    }

    #[test]
    fn jwt_keys_retire_then_drop() {
        let mut s = Stored {
            x509: vec![],
            jwt: vec![jwt(0)],
        };
        let t = JWT_KEY_LIFETIME;
        assert!(s.expire(t, false).new_jwt_key);
        s.jwt.push(jwt(t));
        assert_eq!(s.active_jwt(t).map(|k| k.created), Some(t));
        // The retired key still verifies for one token lifetime.
        assert_eq!(s.jwt.len(), 2);
        s.expire(t + 300, false);
        assert_eq!(s.jwt.len(), 1);
    }
}
