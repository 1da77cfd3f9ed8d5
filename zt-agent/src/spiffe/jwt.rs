//! JWT-SVIDs: ES256 tokens with `sub` (the SPIFFE ID), `aud`, `exp`, `iat` and the
//! run id, signed by a key whose public half is in the JWT bundle (a JWK set, each
//! key with its `kid` and `"use": "jwt-svid"`), and their validation.

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use serde::{Deserialize, Serialize};

use super::SpiffeError;
use super::keys::{JWT_KEY_LIFETIME, StoredJwtKey};

fn jwt_err(what: &str) -> impl FnOnce(jsonwebtoken::errors::Error) -> SpiffeError + '_ {
    move |e| SpiffeError::Jwt(format!("{what}: {e}"))
}

/// A new signing key, signing from `now`, in the bundle for `ttl` past its retirement.
pub fn make_key(now: i64, ttl: i64) -> Result<StoredJwtKey, SpiffeError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| SpiffeError::Jwt(format!("JWT key: {e}")))?;
    let id: [u8; 16] = rand::random();
    Ok(StoredJwtKey {
        kid: hex::encode(id),
        key_pem: key.serialize_pem(),
        created: now,
        retire_at: now + JWT_KEY_LIFETIME,
        drop_at: now + JWT_KEY_LIFETIME + ttl,
    })
}

/// A key ready to sign, and its public JWK.
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Jwk,
}

impl SigningKey {
    pub fn of(stored: &StoredJwtKey) -> Result<Self, SpiffeError> {
        let encoding =
            EncodingKey::from_ec_pem(stored.key_pem.as_bytes()).map_err(jwt_err("stored key"))?;
        let mut jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(jwt_err("public key"))?;
        jwk.common.key_id = Some(stored.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Other("jwt-svid".into()));
        Ok(Self {
            kid: stored.kid.clone(),
            encoding,
            jwk,
        })
    }
}

/// The claims of a JWT-SVID.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    /// The `zt-agent run` launch (its cgroup name) or task the token was issued to.
    pub run_id: String,
    /// The identity's name in the policy.
    pub identity: String,
}

/// A signed token and what it says.
#[derive(Clone, Debug)]
pub struct IssuedJwt {
    pub token: String,
    pub claims: Claims,
    pub kid: String,
}

/// Sign a JWT-SVID.
pub fn sign(key: &SigningKey, claims: Claims) -> Result<IssuedJwt, SpiffeError> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(jwt_err("sign"))?;
    Ok(IssuedJwt {
        token,
        claims,
        kid: key.kid.clone(),
    })
}

/// The JWT bundle: every key that may have signed a live token.
#[must_use]
pub fn bundle(keys: &[SigningKey]) -> JwkSet {
    JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    }
}

/// Why a token does not validate.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token is signed by key {0:?}, which is not in the bundle")]
    UnknownKey(Option<String>),
    #[error("{0}")]
    Rejected(String),
    #[error("subject {0:?} is not a SPIFFE ID")]
    Subject(String),
}

/// Check `token` against the bundle and `audience`, as the JWT-SVID standard asks:
/// ES256 (the one algorithm this trust domain signs with), a key from the bundle,
/// `aud` containing the audience, `exp` in the future, `sub` a SPIFFE ID.
pub fn validate(
    keys: &[SigningKey],
    token: &str,
    audience: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Invalid> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| Invalid::Malformed(e.to_string()))?;
    let key = keys
        .iter()
        .find(|k| header.kid.as_deref() == Some(k.kid.as_str()))
        .ok_or_else(|| Invalid::UnknownKey(header.kid.clone()))?;
    let decoding = DecodingKey::from_jwk(&key.jwk).map_err(|e| Invalid::Rejected(e.to_string()))?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "aud", "sub"]);
    v.leeway = 0;
    let data =
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &decoding, &v)
            .map_err(|e| Invalid::Rejected(e.to_string()))?;
    let sub = data
        .claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    if !sub.starts_with("spiffe://") {
        return Err(Invalid::Subject(sub.to_owned()));
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims(aud: &str, exp: i64) -> Claims {
        Claims {
            sub: "spiffe://example.org/coder".into(),
            aud: vec![aud.into()],
            exp,
            iat: now(),
            run_id: "run-1".into(),
            identity: "coder".into(),
        }
    }

    #[test]
    fn signs_and_validates_with_the_bundle() {
        let t = now();
        let key = SigningKey::of(&make_key(t, 300).expect("key")).expect("signing key");
        let jwt = sign(&key, claims("db", t + 300)).expect("sign");
        let keys = [key];
        let c = validate(&keys, &jwt.token, "db").expect("valid");
        assert_eq!(c["sub"], "spiffe://example.org/coder");
        assert_eq!(c["run_id"], "run-1");
        // The bundle publishes the key with its id and use.
        let set = serde_json::to_value(bundle(&keys)).expect("json");
        assert_eq!(set["keys"][0]["kid"], keys[0].kid.as_str());
        assert_eq!(set["keys"][0]["use"], "jwt-svid");
        assert_eq!(set["keys"][0]["crv"], "P-256");
        assert!(set["keys"][0].get("d").is_none(), "private key published");
    }

    #[test]
    fn refuses_wrong_audience_expiry_and_foreign_keys() {
        let t = now();
        let key = SigningKey::of(&make_key(t, 300).expect("key")).expect("signing key");
        let other = SigningKey::of(&make_key(t, 300).expect("key")).expect("signing key");
        let keys = [key];
        let jwt = sign(&keys[0], claims("db", t + 300)).expect("sign");
        assert!(matches!(
            validate(&keys, &jwt.token, "web"),
            Err(Invalid::Rejected(_))
        ));
        let expired = sign(&keys[0], claims("db", t - 10)).expect("sign");
        assert!(validate(&keys, &expired.token, "db").is_err());
        let foreign = sign(&other, claims("db", t + 300)).expect("sign");
        assert!(matches!(
            validate(&keys, &foreign.token, "db"),
            Err(Invalid::UnknownKey(_))
        ));
        assert!(matches!(
            validate(&keys, "not.a.token", "db"),
            Err(Invalid::Malformed(_))
        ));
    }
}
