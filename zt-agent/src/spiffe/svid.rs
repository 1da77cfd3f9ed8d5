//! The authorities in force (the X.509 signer and bundle, the JWT keys and bundle),
//! the keeper that rotates them on schedule and persists them, and the record of the
//! latest SVIDs handed out that `zt-agent svid` shows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::SpiffeError;
use super::ca::{self, Signer};
use super::jwt::{self, SigningKey};
use super::keys::{KeyFile, Stored};

/// The record of the latest SVIDs, beside the keys.
pub const ISSUED_FILE: &str = "issued.json";

/// What signs now and what verifies, built from the key file (and the operator's CA).
pub struct Authorities {
    pub signer: Signer,
    /// DER certificates of the X.509 bundle, concatenated.
    pub x509_bundle: Vec<u8>,
    pub x509_bundle_pem: Vec<String>,
    /// Every key of the JWT bundle; the first one signs.
    pub jwt_keys: Vec<SigningKey>,
    /// The JWT bundle as a JWK set document.
    pub jwt_bundle: Vec<u8>,
}

impl Authorities {
    fn build(
        stored: &Stored,
        operator: Option<&(PathBuf, PathBuf)>,
        now: i64,
    ) -> Result<Self, SpiffeError> {
        let (signer, x509_bundle, x509_bundle_pem) = match operator {
            Some((cert, key)) => {
                let (signer, root) = Signer::operator(cert, key)?;
                let pem = pem_of(&root);
                (signer, root, vec![pem])
            }
            None => {
                let active = stored
                    .active_ca()
                    .ok_or_else(|| SpiffeError::Cert("no CA in the key file".into()))?;
                let mut der = Vec::new();
                let mut pems = Vec::new();
                for c in &stored.x509 {
                    der.extend(ca::der_of(c)?);
                    pems.push(c.cert_pem.clone());
                }
                (Signer::own(active)?, der, pems)
            }
        };
        let active = stored
            .active_jwt(now)
            .ok_or_else(|| SpiffeError::Jwt("no JWT key in the key file".into()))?;
        let mut jwt_keys = vec![SigningKey::of(active)?];
        for k in stored.jwt.iter().filter(|k| k.kid != active.kid) {
            jwt_keys.push(SigningKey::of(k)?);
        }
        let jwt_bundle = serde_json::to_vec(&jwt::bundle(&jwt_keys)).unwrap_or_default();
        Ok(Self {
            signer,
            x509_bundle,
            x509_bundle_pem,
            jwt_keys,
            jwt_bundle,
        })
    }

    #[must_use]
    pub fn jwt_signer(&self) -> &SigningKey {
        &self.jwt_keys[0]
    }
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Rotates and persists the keys.
pub struct Keeper {
    file: KeyFile,
    stored: Stored,
    operator: Option<(PathBuf, PathBuf)>,
    jwt_ttl: i64,
}

impl Keeper {
    /// Read the key file (making what is missing) and the operator's CA.
    pub fn open(
        file: KeyFile,
        operator: Option<(PathBuf, PathBuf)>,
        jwt_ttl: i64,
        now: i64,
    ) -> Result<(Self, Arc<Authorities>), SpiffeError> {
        let stored = file.read()?;
        let mut k = Self {
            file,
            stored,
            operator,
            jwt_ttl,
        };
        let auth = k
            .rotate(now, true)?
            .ok_or_else(|| SpiffeError::Cert("the key file gave no authorities".into()))?;
        Ok((k, auth))
    }

    /// Bring the keys up to date at `now`. New authorities when something changed (or
    /// when `force`), persisted before they are used.
    pub fn rotate(
        &mut self,
        now: i64,
        force: bool,
    ) -> Result<Option<Arc<Authorities>>, SpiffeError> {
        let before = self.stored.clone();
        let due = self.stored.expire(now, self.operator.is_none());
        if due.new_ca {
            self.stored.x509.push(ca::make_ca(now)?);
        }
        if due.new_jwt_key {
            self.stored.jwt.push(jwt::make_key(now, self.jwt_ttl)?);
        }
        let changed = self.stored != before;
        if changed {
            self.file.write(&self.stored)?;
            tracing::info!(
                new_ca = due.new_ca,
                new_jwt_key = due.new_jwt_key,
                "SVID signing keys rotated"
            );
        }
        if !(changed || force) {
            return Ok(None);
        }
        Authorities::build(&self.stored, self.operator.as_ref(), now).map(|a| Some(Arc::new(a)))
    }

    #[must_use]
    pub fn next_change(&self, now: i64) -> i64 {
        self.stored.next_change(now)
    }
}

/// The latest X.509-SVID handed to an identity (its public part: the key stays with
/// the workload).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IssuedX509 {
    pub spiffe_id: String,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub run_id: String,
    pub pid: u32,
    pub certificate: String,
}

/// The latest JWT-SVID handed to an identity (its claims: the token is a bearer
/// credential and is not kept).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IssuedJwtRecord {
    pub spiffe_id: String,
    pub kid: String,
    pub audience: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub run_id: String,
    pub pid: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IssuedFor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x509: Option<IssuedX509>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<IssuedJwtRecord>,
}

/// The latest SVIDs by identity name, with the bundles in force.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Issued {
    pub identities: BTreeMap<String, IssuedFor>,
    pub x509_bundle: Vec<String>,
    pub jwt_bundle: serde_json::Value,
}

impl Issued {
    /// Read the record from a state dir.
    pub fn read(state_dir: &std::path::Path) -> Result<Self, SpiffeError> {
        let path = KeyFile::of(state_dir).dir.join(ISSUED_FILE);
        let bytes = super::keys::read_private(&path, true)?;
        serde_json::from_slice(&bytes).map_err(|e| SpiffeError::Keys {
            path: path.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    pub fn write(&self, file: &KeyFile) -> Result<(), SpiffeError> {
        file.write_file(
            ISSUED_FILE,
            &serde_json::to_vec_pretty(self).unwrap_or_default(),
        )
    }

    pub fn set_bundles(&mut self, a: &Authorities) {
        self.x509_bundle.clone_from(&a.x509_bundle_pem);
        self.jwt_bundle = serde_json::from_slice(&a.jwt_bundle).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_a_reopen_and_rotate_on_schedule() {
        let dir = std::env::temp_dir().join(format!("zt-svid-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if !zt_agent_host::is_root() {
            // The key file must be root's; as another user the check refuses it.
            assert!(Keeper::open(KeyFile::of(&dir), None, 300, 1_000).is_err());
            return;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (mut k, a) = Keeper::open(KeyFile::of(&dir), None, 300, now).expect("open");
        let (_, b) = Keeper::open(KeyFile::of(&dir), None, 300, now + 5).expect("reopen");
        assert_eq!(a.x509_bundle, b.x509_bundle, "CA changed across a reopen");
        assert_eq!(a.jwt_signer().kid, b.jwt_signer().kid);
        assert!(k.rotate(now + 10, false).expect("rotate").is_none());
        let later = now + super::super::keys::JWT_KEY_LIFETIME;
        let c = k.rotate(later, false).expect("rotate").expect("new key");
        assert_ne!(c.jwt_signer().kid, a.jwt_signer().kid);
        assert_eq!(c.jwt_keys.len(), 2, "the retired key left the bundle early");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
