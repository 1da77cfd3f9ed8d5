//! The X.509 authority: a CA the daemon makes and rotates itself (its key in the
//! root-only key file), or an intermediate the operator gives by path. Either way it
//! signs X.509-SVIDs: one URI SAN (the SPIFFE ID), CA:FALSE, digitalSignature, TLS
//! server and client use, as the X509-SVID standard asks.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::SpiffeError;
use super::keys::{CA_LIFETIME, StoredCa, read_private};

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> SpiffeError + '_ {
    move |e| SpiffeError::Cert(format!("{what}: {e}"))
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    // Positive, as DER INTEGER serials must be.
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

/// A new self-signed CA valid from `now` for [`CA_LIFETIME`].
pub fn make_ca(now: i64) -> Result<StoredCa, SpiffeError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err("CA key"))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "zt-agent");
    dn.push(DnType::CommonName, format!("zt-agent workload CA {now}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = at(now);
    p.not_after = at(now + CA_LIFETIME);
    p.serial_number = Some(random_serial());
    let cert = p.self_signed(&key).map_err(cert_err("CA certificate"))?;
    Ok(StoredCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_before: now,
        not_after: now + CA_LIFETIME,
    })
}

/// The signer of X.509-SVIDs, ready to sign.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// Certificates sent after the SVID: the operator's intermediates (none for the
    /// daemon's own CA, which is in the bundle).
    chain: Vec<Vec<u8>>,
    /// No SVID outlives its signer.
    pub not_after: i64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// DER certificates of a PEM file, in order.
fn pem_certs(text: &str, path: &str) -> Result<Vec<Vec<u8>>, SpiffeError> {
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(text.as_bytes()) {
        let pem = pem.map_err(|e| SpiffeError::Cert(format!("{path}: {e}")))?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err(SpiffeError::Cert(format!("{path}: no CERTIFICATE in it")));
    }
    Ok(out)
}

fn not_after_of(der: &[u8], path: &str) -> Result<(i64, bool), SpiffeError> {
    let (_, c) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| SpiffeError::Cert(format!("{path}: {e}")))?;
    let ca = c
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    Ok((c.validity().not_after.timestamp(), ca))
}

impl Signer {
    /// The daemon's own CA, from the key file.
    pub fn own(ca: &StoredCa) -> Result<Self, SpiffeError> {
        let key = KeyPair::from_pem(&ca.key_pem).map_err(cert_err("stored CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(cert_err("stored CA"))?;
        Ok(Self {
            issuer,
            chain: Vec::new(),
            not_after: ca.not_after,
        })
    }

    /// The operator's CA: `cert` holds it first, then its issuers up to the root,
    /// which is the trust bundle; `key` is its PKCS#8 key, root-only. Returns the
    /// signer and the bundle.
    pub fn operator(cert: &Path, key: &Path) -> Result<(Self, Vec<u8>), SpiffeError> {
        let cert_path = cert.display().to_string();
        let text = std::fs::read_to_string(cert).map_err(|source| SpiffeError::Keys {
            path: cert_path.clone(),
            source,
        })?;
        let certs = pem_certs(&text, &cert_path)?;
        let (not_after, is_ca) = not_after_of(&certs[0], &cert_path)?;
        if !is_ca {
            return Err(SpiffeError::Cert(format!(
                "{cert_path}: the first certificate is not a CA (basicConstraints CA:TRUE)"
            )));
        }
        let key_pem = String::from_utf8(read_private(key, false)?)
            .map_err(|e| SpiffeError::Cert(format!("{}: {e}", key.display())))?;
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err("--svid-ca-key"))?;
        let issuer = Issuer::from_ca_cert_der(&certs[0].clone().into(), key)
            .map_err(cert_err("--svid-ca-cert"))?;
        let n = certs.len();
        let bundle = certs[n - 1].clone();
        let chain = certs[..n - 1].to_vec();
        Ok((
            Self {
                issuer,
                chain,
                not_after,
            },
            bundle,
        ))
    }

    /// Sign a new X.509-SVID for `spiffe_id`, valid from `now` for `ttl` seconds (or
    /// until the signer expires). The run id goes into the subject.
    pub fn issue(
        &self,
        spiffe_id: &str,
        run_id: &str,
        now: i64,
        ttl: i64,
    ) -> Result<IssuedCert, SpiffeError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(cert_err("SVID key"))?;
        let mut p = CertificateParams::default();
        let uri = spiffe_id
            .try_into()
            .map_err(|e| SpiffeError::Cert(format!("{spiffe_id}: {e}")))?;
        p.subject_alt_names = vec![SanType::URI(uri)];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "zt-agent");
        dn.push(DnType::OrganizationalUnitName, format!("run {run_id}"));
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let not_after = (now + ttl).min(self.not_after);
        p.not_before = at(now);
        p.not_after = at(not_after);
        let serial = random_serial();
        let serial_hex = hex::encode(serial.to_bytes());
        p.serial_number = Some(serial);
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(cert_err("SVID certificate"))?;
        let mut chain = cert.der().to_vec();
        for c in &self.chain {
            chain.extend_from_slice(c);
        }
        Ok(IssuedCert {
            chain,
            leaf_pem: cert.pem(),
            key_der: key.serialize_der(),
            not_before: now,
            not_after,
            serial: serial_hex,
        })
    }
}

/// An X.509-SVID with its key.
#[derive(Clone)]
pub struct IssuedCert {
    /// DER: the SVID, then the intermediates.
    pub chain: Vec<u8>,
    pub leaf_pem: String,
    /// PKCS#8 DER.
    pub key_der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    pub serial: String,
}

/// DER of a stored CA's certificate.
pub fn der_of(ca: &StoredCa) -> Result<Vec<u8>, SpiffeError> {
    pem_certs(&ca.cert_pem, "stored CA").map(|mut v| v.swap_remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_an_svid_the_standard_describes() {
        let ca = make_ca(1_000).expect("ca");
        let signer = Signer::own(&ca).expect("signer");
        let svid = signer
            .issue("spiffe://example.org/coder", "run-1", 1_000, 3_600)
            .expect("issue");
        let (_, leaf) = x509_parser::parse_x509_certificate(&svid.chain).expect("der");
        let san = leaf
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        let uris: Vec<String> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, ["spiffe://example.org/coder"]);
        let bc = leaf.basic_constraints().expect("bc").expect("present");
        assert!(!bc.value.ca);
        let ku = leaf.key_usage().expect("ku").expect("present");
        assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());
        assert_eq!(leaf.validity().not_after.timestamp(), 4_600);
        // Signed by the CA.
        let ca_der = der_of(&ca).expect("ca der");
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).expect("ca");
        leaf.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        // Never past the signer.
        let late = signer
            .issue("spiffe://example.org/coder", "r", ca.not_after - 10, 3_600)
            .expect("issue");
        assert_eq!(late.not_after, ca.not_after);
    }
}
