//! Administrators' certificate requests and the issuing policy for their
//! client certificates. The policy takes nothing from a CSR but its public
//! key: subject, usages and validity come from kaws' own template.

use std::time::SystemTime;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose,
};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use super::issue::{base_params, Authority};
use super::KeyAlgorithm;

/// The longest an administrator's certificate may live.
pub const MAX_DAYS: u32 = 365;
pub const DEFAULT_DAYS: u32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is not valid PEM/DER: {0}")]
    Parse(String),
    #[error("the CSR's own signature does not verify")]
    Signature,
    #[error("the CSR's subject is {found:?}; it must be exactly CN={expected} and nothing else")]
    Subject { found: String, expected: String },
}

/// A new key and a CSR with subject CN=`name` and nothing else.
pub fn new_request(alg: KeyAlgorithm, name: &str) -> Result<(String, Zeroizing<String>), rcgen::Error> {
    let key = alg.generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, Zeroizing::new(key.serialize_pem())))
}

/// Checks a CSR: its signature verifies and its subject is exactly
/// CN=`expected`. Returns its public key (SPKI DER).
pub fn check_request(pem_text: &str, expected: &str) -> Result<Vec<u8>, CsrError> {
    let p = ::pem::parse(pem_text).map_err(|e| CsrError::Parse(e.to_string()))?;
    if p.tag() != "CERTIFICATE REQUEST" {
        return Err(CsrError::Parse(format!("found a {} block", p.tag())));
    }
    let (rest, csr) = X509CertificationRequest::from_der(p.contents()).map_err(|e| CsrError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Parse("trailing data".into()));
    }
    csr.verify_signature().map_err(|_| CsrError::Signature)?;
    let subject = &csr.certification_request_info.subject;
    let attrs: Vec<_> = subject.iter_attributes().collect();
    let cn: Vec<_> = subject.iter_common_name().filter_map(|a| a.as_str().ok()).collect();
    if attrs.len() != 1 || cn != [expected] {
        return Err(CsrError::Subject { found: subject.to_string(), expected: format!("{expected}") });
    }
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// The public key (SPKI DER) of a CSR whose own signature verifies (proof
/// that its maker holds the key), whatever its subject. A CSR that carries
/// someone else's public key without that proof holds no key: anyone may
/// write their own request, and a copy of another key must not make that
/// key look shared.
pub fn public_key_of_request(pem_text: &str) -> Option<Vec<u8>> {
    let p = ::pem::parse(pem_text).ok()?;
    let (_, csr) = X509CertificationRequest::from_der(p.contents()).ok()?;
    csr.verify_signature().ok()?;
    Some(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// The public key (SPKI DER) of a PEM `PUBLIC KEY`.
pub fn public_key_of_pem(pem_text: &str) -> Option<Vec<u8>> {
    let p = ::pem::parse(pem_text).ok()?;
    (p.tag() == "PUBLIC KEY").then(|| p.into_contents())
}

/// Issues an administrator's client certificate from kaws' template: CN=
/// `name`, no organization, clientAuth only, not a CA, `days` of validity,
/// random serial. Only the CSR's public key is used.
pub fn issue_admin(
    csr_pem: &str,
    name: &str,
    alg: KeyAlgorithm,
    ca: &Authority,
    now: SystemTime,
    days: u32,
) -> Result<String, rcgen::Error> {
    let request = CertificateSigningRequestParams::from_pem(csr_pem)?;
    let mut p = base_params(name, None, now, days);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if alg == KeyAlgorithm::Rsa3072 {
        p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(p.signed_by(&request.public_key, &ca.issuer()?)?.pem())
}
