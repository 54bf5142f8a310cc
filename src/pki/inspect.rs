//! Inspecting certificates with x509-parser, independently of how they were
//! made: chain, validity, usages, SANs and key match. Used right after
//! issuing (every certificate is re-read and checked) and by
//! `kaws cluster certs`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

use super::table::{San, Usage};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    #[error("not a valid X.509 certificate: {0}")]
    Der(String),
}

/// The facts of one certificate.
#[derive(Debug, Clone)]
pub struct Facts {
    pub subject: String,
    pub serial: String,
    pub not_after: i64,
    pub sans: BTreeSet<San>,
    pub usages: Vec<Usage>,
    pub spki: Vec<u8>,
    /// SHA-256 of the DER, uppercase hex.
    pub sha256: String,
}

fn parse_pem(pem_text: &str) -> Result<Vec<u8>, InspectError> {
    let p = ::pem::parse(pem_text).map_err(|e| InspectError::Pem(e.to_string()))?;
    if p.tag() != "CERTIFICATE" {
        return Err(InspectError::Pem(format!("found {}", p.tag())));
    }
    Ok(p.into_contents())
}

pub fn facts_der(der: &[u8]) -> Result<Facts, InspectError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| InspectError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(InspectError::Der("trailing data".into()));
    }
    let mut sans = BTreeSet::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    sans.insert(San::Dns((*d).to_owned()));
                }
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(*b).expect("4")),
                        16 => IpAddr::from(<[u8; 16]>::try_from(*b).expect("16")),
                        _ => return Err(InspectError::Der("bad IP SAN".into())),
                    };
                    sans.insert(San::Ip(ip));
                }
                _ => {}
            }
        }
    }
    let mut usages = Vec::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        if eku.value.server_auth {
            usages.push(Usage::ServerAuth);
        }
        if eku.value.client_auth {
            usages.push(Usage::ClientAuth);
        }
    }
    Ok(Facts {
        subject: cert.subject().to_string(),
        serial: cert.raw_serial_as_string(),
        not_after: cert.validity().not_after.timestamp(),
        sans,
        usages,
        spki: cert.public_key().raw.to_vec(),
        sha256: openssl::sha::sha256(der).iter().map(|b| format!("{b:02X}")).collect(),
    })
}

pub fn facts(pem_text: &str) -> Result<Facts, InspectError> {
    facts_der(&parse_pem(pem_text)?)
}

fn chain(cert: &X509Certificate, issuer: &X509Certificate) -> Result<(), String> {
    if cert.issuer() != issuer.subject() {
        return Err(format!("issuer {} is not {}", cert.issuer(), issuer.subject()));
    }
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|_| "signature does not verify with the CA's key".to_owned())
}

/// Does `cert_pem` chain to `issuer_pem` (name and signature)?
pub fn verify_chain(cert_pem: &str, issuer_pem: &str) -> Result<(), String> {
    let der = parse_pem(cert_pem).map_err(|e| e.to_string())?;
    let issuer_der = parse_pem(issuer_pem).map_err(|e| format!("CA: {e}"))?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| e.to_string())?;
    let (_, issuer) = X509Certificate::from_der(&issuer_der).map_err(|e| format!("CA: {e}"))?;
    chain(&cert, &issuer)
}

/// What a certificate must be, as the table says.
pub struct Expect<'a> {
    pub ca: bool,
    pub common_name: &'a str,
    pub organization: Option<&'a str>,
    pub usages: &'a [Usage],
    pub sans: &'a [San],
    /// SPKI DER of the private key it must match.
    pub spki: &'a [u8],
}

/// Checks `cert_pem` against `issuer_pem` and `expect`; returns every problem found.
pub fn check(cert_pem: &str, issuer_pem: &str, expect: &Expect) -> Result<(), Vec<String>> {
    let der = parse_pem(cert_pem).map_err(|e| vec![e.to_string()])?;
    let issuer_der = parse_pem(issuer_pem).map_err(|e| vec![format!("issuer: {e}")])?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| vec![e.to_string()])?;
    let (_, issuer) = X509Certificate::from_der(&issuer_der).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let mut fail = |s: String| problems.push(s);

    if let Err(e) = chain(&cert, &issuer) {
        fail(e);
    }
    if cert.public_key().raw != expect.spki {
        fail("public key does not match its private key".into());
    }
    let cn: Vec<_> = cert.subject().iter_common_name().filter_map(|a| a.as_str().ok()).collect();
    if cn != [expect.common_name] {
        fail(format!("CN {cn:?}, expected {}", expect.common_name));
    }
    let orgs: Vec<_> = cert.subject().iter_organization().filter_map(|a| a.as_str().ok()).collect();
    if orgs != expect.organization.into_iter().collect::<Vec<_>>() {
        fail(format!("O {orgs:?}, expected {:?}", expect.organization));
    }
    match cert.basic_constraints() {
        Ok(Some(bc)) => {
            if bc.value.ca != expect.ca {
                fail(format!("basicConstraints CA:{}, expected CA:{}", bc.value.ca, expect.ca));
            }
            if expect.ca && (!bc.critical || bc.value.path_len_constraint != Some(0)) {
                fail("a CA needs critical basicConstraints with pathlen 0".into());
            }
        }
        _ => fail("no basicConstraints".into()),
    }
    match cert.key_usage() {
        Ok(Some(ku)) => {
            if !ku.critical {
                fail("keyUsage is not critical".into());
            }
            if expect.ca != ku.value.key_cert_sign() {
                fail("keyCertSign must be set on CAs and only on CAs".into());
            }
            if !ku.value.digital_signature() {
                fail("digitalSignature is missing".into());
            }
        }
        _ => fail("no keyUsage".into()),
    }
    if cert
        .get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
        .ok()
        .flatten()
        .is_none()
    {
        fail("no subjectKeyIdentifier".into());
    }
    if cert
        .get_extension_unique(&x509_parser::oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
        .ok()
        .flatten()
        .is_none()
    {
        fail("no authorityKeyIdentifier".into());
    }
    match facts_der(&der) {
        Ok(f) => {
            if f.usages != expect.usages {
                fail(format!("extended key usages {:?}, expected {:?}", f.usages, expect.usages));
            }
            let want: BTreeSet<San> = expect.sans.iter().cloned().collect();
            if f.sans != want {
                fail(format!("SANs {:?}, expected {:?}", f.sans, want));
            }
        }
        Err(e) => fail(e.to_string()),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
