//! Issuing: CAs, leaves and the service-account key, built with rcgen from
//! the table. Private keys leave this module only as zeroizing PEM.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::table::{CaId, Leaf, San, Usage};
use super::KeyAlgorithm;

/// A certificate and its private key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem).field("key_pem", &"[elided]").finish()
    }
}

/// A CA that can sign: its certificate and key.
pub struct Authority {
    pub cert_pem: String,
    key: KeyPair,
}

impl Authority {
    pub fn new(cert_pem: String, key: KeyPair) -> Authority {
        Authority { cert_pem, key }
    }

    pub(super) fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, rcgen::Error> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)
    }
}

/// A random, positive 128-bit serial number.
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    openssl::rand::rand_bytes(&mut bytes).expect("the system RNG works");
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn window(now: SystemTime, days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::from(now);
    // A little slack for clocks that run behind.
    (now - Duration::minutes(5), now + Duration::days(days.into()))
}

pub(super) fn base_params(cn: &str, org: Option<&str>, now: SystemTime, days: u32) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    (p.not_before, p.not_after) = window(now, days);
    p.serial_number = Some(serial());
    p.use_authority_key_identifier_extension = true;
    p
}

/// A new self-signed CA: pathlen 0, keyCertSign + cRLSign + digitalSignature.
pub fn new_ca(id: CaId, alg: KeyAlgorithm, now: SystemTime, days: u32) -> Result<(Issued, Authority), rcgen::Error> {
    let key = alg.generate()?;
    let mut p = base_params(id.common_name(), None, now, days);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = p.self_signed(&key)?;
    let issued = Issued { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) };
    Ok((issued, Authority { cert_pem: cert.pem(), key }))
}

/// The parameters of a leaf: kaws' template, nothing from outside.
fn leaf_params(
    leaf: &Leaf,
    sans: &[San],
    alg: KeyAlgorithm,
    now: SystemTime,
    days: u32,
) -> Result<CertificateParams, rcgen::Error> {
    let mut p = base_params(&leaf.common_name, leaf.organization, now, days);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if alg == KeyAlgorithm::Rsa3072 {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    p.extended_key_usages = leaf
        .usages
        .iter()
        .map(|u| match u {
            Usage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    for san in sans {
        p.subject_alt_names.push(match san {
            San::Dns(d) => SanType::DnsName(d.clone().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        });
    }
    Ok(p)
}

/// A new leaf with a fresh key, signed by `ca`.
pub fn new_leaf(
    leaf: &Leaf,
    sans: &[San],
    alg: KeyAlgorithm,
    ca: &Authority,
    now: SystemTime,
    days: u32,
) -> Result<Issued, rcgen::Error> {
    let key = alg.generate()?;
    let cert = leaf_params(leaf, sans, alg, now, days)?.signed_by(&key, &ca.issuer()?)?;
    Ok(Issued { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) })
}

/// Re-issues a leaf for an existing key (renewal): a new certificate with a
/// new serial and validity, same subject and SANs.
pub fn renew_leaf(
    leaf: &Leaf,
    sans: &[San],
    alg: KeyAlgorithm,
    key: &KeyPair,
    ca: &Authority,
    now: SystemTime,
    days: u32,
) -> Result<String, rcgen::Error> {
    Ok(leaf_params(leaf, sans, alg, now, days)?.signed_by(key, &ca.issuer()?)?.pem())
}

/// A new service-account signing key: (public key PEM, private key PEM).
pub fn new_sa_key(alg: KeyAlgorithm) -> Result<(String, Zeroizing<String>), rcgen::Error> {
    let key = alg.generate()?;
    let public = pem_encode("PUBLIC KEY", &key.subject_public_key_info());
    Ok((public, Zeroizing::new(key.serialize_pem())))
}

/// The public key (SPKI DER) of a PEM private key.
pub fn public_key_of(alg: KeyAlgorithm, key_pem: &str) -> Result<Vec<u8>, rcgen::Error> {
    Ok(alg.load(key_pem)?.subject_public_key_info())
}

fn pem_encode(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}
