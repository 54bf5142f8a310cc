//! Checking an administrator's OpenPGP certificate: what it must be to be
//! accepted into `pubkeys/`, and whether it is usable at a given time.

use std::time::SystemTime;

use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::policy::Policy;
use openpgp::types::RevocationStatus;
use sequoia_openpgp as openpgp;

/// Why a file cannot be an administrator's certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    #[error("it is not an OpenPGP certificate ({0})")]
    NotOpenPgp(String),
    #[error("it holds {0} certificates; exactly one is needed")]
    NotOne(usize),
    #[error("it contains secret key material, which would be committed to the repository; export the public certificate only (gpg --export FINGERPRINT)")]
    HasSecret,
}

/// Why a certificate cannot act as an administrator now.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Unusable {
    #[error("not valid under the standard policy: {0}")]
    Invalid(String),
    #[error("expired or not yet valid: {0}")]
    NotAlive(String),
    #[error("revoked")]
    Revoked,
    #[error("no live signing-capable key")]
    NoSigningKey,
    #[error("no live encryption-capable subkey")]
    NoEncryptionSubkey,
}

/// Parses a file that must hold exactly one public OpenPGP certificate.
pub fn parse_one_public(bytes: &[u8]) -> Result<Cert, CertFileError> {
    let parser = CertParser::from_bytes(bytes).map_err(|e| CertFileError::NotOpenPgp(e.to_string()))?;
    let mut certs = Vec::new();
    for c in parser {
        certs.push(c.map_err(|e| CertFileError::NotOpenPgp(e.to_string()))?);
    }
    if certs.is_empty() {
        return Err(CertFileError::NotOpenPgp("no certificate found".into()));
    }
    if certs.len() != 1 {
        return Err(CertFileError::NotOne(certs.len()));
    }
    let cert = certs.pop().expect("one");
    if cert.is_tsk() {
        return Err(CertFileError::HasSecret);
    }
    Ok(cert)
}

/// `cert` without the subkeys and user IDs that no self-signature valid
/// under `policy` binds to it at `now`. Anyone can append an unbound
/// component (another person's key, say) to a certificate; kept, it would
/// make signatures by that key look like this certificate's.
pub fn bound_only(cert: Cert, policy: &dyn Policy, now: SystemTime) -> Cert {
    if cert.with_policy(policy, now).is_err() {
        return cert.retain_subkeys(|_| false).retain_userids(|_| false);
    }
    cert.retain_subkeys(|ka| ka.with_policy(policy, now).is_ok())
        .retain_userids(|ua| ua.with_policy(policy, now).is_ok())
}

/// Checks that `cert` can serve as an administrator at `time`: valid
/// self-signatures, alive, not revoked, a live signing key and a live
/// encryption subkey.
pub fn check_usable<'a>(cert: &'a Cert, policy: &'a dyn Policy, time: SystemTime) -> Result<ValidCert<'a>, Unusable> {
    let vc = cert.with_policy(policy, time).map_err(|e| Unusable::Invalid(e.to_string()))?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err(Unusable::Revoked);
    }
    vc.alive().map_err(|e| Unusable::NotAlive(e.to_string()))?;
    if vc.keys().for_signing().alive().revoked(false).next().is_none() {
        return Err(Unusable::NoSigningKey);
    }
    let has_encryption = vc
        .keys()
        .subkeys()
        .key_flags(openpgp::types::KeyFlags::empty().set_transport_encryption().set_storage_encryption())
        .alive()
        .revoked(false)
        .next()
        .is_some();
    if !has_encryption {
        return Err(Unusable::NoEncryptionSubkey);
    }
    Ok(vc)
}

/// The armored public certificate, as stored under `pubkeys/`.
pub fn armored(cert: &Cert) -> anyhow::Result<Vec<u8>> {
    use openpgp::serialize::SerializeInto;
    Ok(cert.armored().to_vec()?)
}

/// Informational user IDs (never used to identify anyone).
pub fn user_ids(cert: &Cert) -> Vec<String> {
    cert.userids().map(|u| crate::text::escape(&String::from_utf8_lossy(u.userid().value())).into_owned()).collect()
}

pub fn creation_time(cert: &Cert) -> SystemTime {
    cert.primary_key().key().creation_time()
}

/// The primary key's expiration under `policy` at `time`, if it has one.
pub fn expiration_time(cert: &Cert, policy: &dyn Policy, time: SystemTime) -> Option<SystemTime> {
    cert.with_policy(policy, time).ok().and_then(|vc| vc.primary_key().key_expiration_time())
}
