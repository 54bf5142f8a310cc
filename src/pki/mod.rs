//! Cluster PKI: the certificate table (`table`), issuing with rcgen
//! (`issue`), and inspection with x509-parser (`inspect`). This module knows
//! nothing of OpenPGP or git: it turns a spec into PEM, and checks PEM.

mod algorithm;
pub mod csr;
pub mod inspect;
pub mod issue;
pub mod table;

use std::time::SystemTime;

use anyhow::{anyhow, Context as _, Result};
use zeroize::Zeroizing;

pub use algorithm::KeyAlgorithm;

/// The public key (SPKI DER) a file of a cluster carries, by its extension:
/// a certificate (`.crt`, the first of a bundle), a request (`.csr`, only
/// when its own signature verifies) or a PEM public key (`.pub`).
pub fn public_key_in(path: &str, text: &str) -> Option<Vec<u8>> {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("csr") => csr::public_key_of_request(text),
        Some("crt") => inspect::facts(text).ok().map(|f| f.spki),
        Some("pub") => csr::public_key_of_pem(text),
        _ => None,
    }
}
use issue::Authority;
use table::{CaId, Leaf};

use crate::cluster::ClusterSpec;

/// A private key in PEM, by its path under `pki/` (no extension).
pub struct SecretFile {
    pub path: String,
    pub pem: Zeroizing<String>,
}

/// Everything `cluster init` writes under `pki/`, before sealing.
pub struct ClusterPki {
    /// `(path without extension, PEM)` of every certificate.
    pub certs: Vec<(String, String)>,
    /// `sa.pub`.
    pub sa_pub: String,
    pub keys: Vec<SecretFile>,
}

/// Issues the whole certificate set of `spec` and checks every certificate.
pub fn issue_cluster(spec: &ClusterSpec, now: SystemTime) -> Result<ClusterPki> {
    let (mut out, authorities) = issue_cas(spec, now)?;
    let leaves = issue_leaves(spec, now, &authorities)?;
    out.certs.extend(leaves.certs);
    out.keys.extend(leaves.keys);
    let (sa_pub, sa_key) = issue::new_sa_key(spec.key_algorithm)?;
    out.sa_pub = sa_pub;
    out.keys.push(SecretFile { path: table::SA.to_owned(), pem: sa_key });
    Ok(out)
}

/// The three CAs of a new generation (certificates and keys, checked), and
/// the authorities that sign with them.
pub fn issue_cas(spec: &ClusterSpec, now: SystemTime) -> Result<(ClusterPki, Vec<(CaId, Authority)>)> {
    let alg = spec.key_algorithm;
    let mut out = ClusterPki { certs: Vec::new(), sa_pub: String::new(), keys: Vec::new() };
    let mut authorities = Vec::new();
    for id in CaId::ALL {
        let (issued, auth) =
            issue::new_ca(id, alg, now, spec.validity.ca_days).with_context(|| format!("issuing {}", id.path()))?;
        verify_ca(id, &issued.cert_pem, alg, &issued.key_pem)?;
        out.certs.push((id.path().to_owned(), issued.cert_pem));
        out.keys.push(SecretFile { path: id.path().to_owned(), pem: issued.key_pem });
        authorities.push((id, auth));
    }
    Ok((out, authorities))
}

/// Every leaf of the table, each with a fresh key, signed by `authorities`
/// and checked (no service-account key: `sa_pub` stays empty).
pub fn issue_leaves(spec: &ClusterSpec, now: SystemTime, authorities: &[(CaId, Authority)]) -> Result<ClusterPki> {
    let (alg, v) = (spec.key_algorithm, spec.validity);
    let mut out = ClusterPki { certs: Vec::new(), sa_pub: String::new(), keys: Vec::new() };
    for leaf in table::leaves(spec) {
        let ca = &authorities.iter().find(|(id, _)| *id == leaf.ca).ok_or_else(|| anyhow!("unknown CA"))?.1;
        let sans = table::sans(leaf.sans, spec);
        let issued = issue::new_leaf(&leaf, &sans, alg, ca, now, v.leaf_days)
            .with_context(|| format!("issuing {}", leaf.path))?;
        verify_leaf(&leaf, spec, &issued.cert_pem, &ca.cert_pem, &issued.key_pem)?;
        out.certs.push((leaf.path.clone(), issued.cert_pem));
        out.keys.push(SecretFile { path: leaf.path.clone(), pem: issued.key_pem });
    }
    Ok(out)
}

/// Re-reads a freshly issued CA and checks it against the table.
pub fn verify_ca(id: CaId, cert_pem: &str, alg: KeyAlgorithm, key_pem: &str) -> Result<()> {
    let spki = issue::public_key_of(alg, key_pem)?;
    let expect = inspect::Expect {
        ca: true,
        common_name: id.common_name(),
        organization: None,
        usages: &[],
        sans: &[],
        spki: &spki,
    };
    inspect::check(cert_pem, cert_pem, &expect)
        .map_err(|p| anyhow!("{} fails its own checks: {}", id.path(), p.join("; ")))
}

/// Re-reads a freshly issued leaf and checks it against the table.
pub fn verify_leaf(leaf: &Leaf, spec: &ClusterSpec, cert_pem: &str, ca_pem: &str, key_pem: &str) -> Result<()> {
    let spki = issue::public_key_of(spec.key_algorithm, key_pem)?;
    let sans = table::sans(leaf.sans, spec);
    let expect = inspect::Expect {
        ca: false,
        common_name: &leaf.common_name,
        organization: leaf.organization,
        usages: leaf.usages,
        sans: &sans,
        spki: &spki,
    };
    inspect::check(cert_pem, ca_pem, &expect)
        .map_err(|p| anyhow!("{} fails its own checks: {}", leaf.path, p.join("; ")))
}

/// Loads a CA for signing from its certificate and (decrypted) key.
pub fn authority(alg: KeyAlgorithm, cert_pem: String, key_pem: &str) -> Result<Authority> {
    Ok(Authority::new(cert_pem, alg.load(key_pem)?))
}
