//! What a key rotation changes in a cluster, as data: the new CAs, leaves
//! and service-account key, the trust bundles (new and retired, until the
//! rotation finishes), a new bootstrap token, and the administrators'
//! certificates re-issued under the new CA. Nothing here touches the
//! repository or seals anything: `kaws cluster reencrypt` reads the
//! current files, seals the new keys to the primaries, and commits.

use std::time::SystemTime;

use anyhow::{ensure, Context as _, Result};
use sequoia_openpgp::policy::Policy;
use zeroize::Zeroizing;

use super::rotation::RetiredCa;
use super::spec::ClusterSpec;
use super::token;
use crate::identity::{cert, verify};
use crate::pki::{self, csr, inspect, table::CaId};

/// The cluster's files a rotation writes, below its directory.
pub struct Staged {
    /// Certificates, bundles and the service-account public key.
    pub public: Vec<(String, String)>,
    /// New private keys, to be sealed at `pki/PATH.key.pgp`, and the new
    /// bootstrap token (at `token::SEALED_FILE`).
    pub keys: Vec<(String, Zeroizing<String>)>,
    pub token: Zeroizing<String>,
    /// The new cluster CA, which re-issues the administrators' certificates.
    pub ca: pki::issue::Authority,
    /// The CAs this rotation retires (still trusted until it finishes).
    pub retired: Vec<RetiredCa>,
}

impl Staged {
    /// The sealed files the new set covers: anything else sealed is not carried over.
    pub fn sealed_paths(&self) -> Vec<String> {
        let mut out: Vec<String> = self.keys.iter().map(|(p, _)| format!("pki/{p}.key.pgp")).collect();
        out.push(token::SEALED_FILE.to_owned());
        out
    }
}

/// Fresh CAs, leaves and service-account key; bundles of new and retired
/// trust. `current` reads a public file of the cluster as it is now.
pub fn stage(spec: &ClusterSpec, now: SystemTime, current: impl Fn(&str) -> Result<String>) -> Result<Staged> {
    let material = pki::issue_cluster(spec, now).context("issuing the new certificate set")?;
    let mut public = Vec::new();
    let new_cert = |path: &str| material.certs.iter().find(|(p, _)| p == path).map(|(_, pem)| pem.clone());
    for id in CaId::ALL {
        let old = current(&format!("pki/{}.crt", id.path()))?;
        let new = new_cert(id.path()).context("every CA is issued")?;
        public.push((format!("pki/{}.crt", id.bundle_path()), format!("{new}{old}")));
    }
    let old_sa = current("pki/sa.pub")?;
    public.push(("pki/sa-bundle.pub".to_owned(), format!("{}{old_sa}", material.sa_pub)));
    for (path, pem) in &material.certs {
        public.push((format!("pki/{path}.crt"), pem.clone()));
    }
    public.push(("pki/sa.pub".to_owned(), material.sa_pub.clone()));
    let ca_cert = new_cert("ca").context("the cluster CA is issued")?;
    let ca_key = &material.keys.iter().find(|k| k.path == "ca").context("the cluster CA's key is issued")?.pem;
    let ca = pki::authority(spec.key_algorithm, ca_cert, ca_key)?;
    let keys = material.keys.into_iter().map(|k| (k.path, k.pem)).collect();
    Ok(Staged { public, keys, token: token::generate(), ca, retired: retired_cas(&current)? })
}

/// The bundles once a rotation finishes: the current CAs and key only.
pub fn finish(current: impl Fn(&str) -> Result<String>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for id in CaId::ALL {
        out.push((format!("pki/{}.crt", id.bundle_path()), current(&format!("pki/{}.crt", id.path()))?));
    }
    out.push(("pki/sa-bundle.pub".to_owned(), current("pki/sa.pub")?));
    Ok(out)
}

/// The current CAs, as a rotation retires them.
fn retired_cas(current: &impl Fn(&str) -> Result<String>) -> Result<Vec<RetiredCa>> {
    CaId::ALL
        .iter()
        .map(|id| {
            let f = inspect::facts(&current(&format!("pki/{}.crt", id.path()))?)?;
            Ok(RetiredCa { path: id.path().to_owned(), serial: f.serial, sha256: f.sha256 })
        })
        .collect()
}

/// An administrator's certificate as it stands, for `reissue`.
pub struct AdminFiles<'a> {
    pub name: &'a str,
    /// Their OpenPGP certificate, as `pubkeys/` holds it.
    pub openpgp: &'a sequoia_openpgp::Cert,
    pub csr: &'a str,
    pub csr_sig: &'a [u8],
    pub cert: &'a str,
}

/// Re-issues an administrator's certificate under `ca` from the CSR on
/// file, after verifying its OpenPGP signature again, for the key it
/// already certified only, with the same expiry as before.
pub fn reissue(
    a: &AdminFiles,
    spec: &ClusterSpec,
    ca: &pki::issue::Authority,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<String> {
    cert::check_usable(a.openpgp, policy, now).map_err(|e| anyhow::anyhow!("their OpenPGP key is not usable: {e}"))?;
    verify::detached(a.csr.as_bytes(), a.csr_sig, a.openpgp, policy, now)?;
    let spki = csr::check_request(a.csr, a.name)?;
    let old = inspect::facts(a.cert)?;
    // A CSR swapped in since (say by someone who took over the name)
    // waits for a primary's `admin sign`.
    ensure!(spki == old.spki, "the CSR on file is not for the key of the certificate being re-issued");
    let unix = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let days = ((old.not_after - unix).max(0) as u64).div_ceil(86_400).clamp(1, u64::from(csr::MAX_DAYS)) as u32;
    Ok(csr::issue_admin(a.csr, a.name, spec.key_algorithm, ca, now, days)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_rotation_trusts_both_and_finishing_only_the_new() {
        let spec = crate::cluster::spec::tests::spec();
        let now = SystemTime::now();
        let old = pki::issue_cluster(&spec, now).unwrap();
        let mut files: std::collections::HashMap<String, String> =
            old.certs.iter().map(|(p, pem)| (format!("pki/{p}.crt"), pem.clone())).collect();
        files.insert("pki/sa.pub".into(), old.sa_pub.clone());
        let read = |files: &std::collections::HashMap<String, String>, rel: &str| {
            files.get(rel).cloned().with_context(|| format!("{rel} is missing"))
        };
        let staged = stage(&spec, now, |rel| read(&files, rel)).unwrap();
        let old_ca = &files["pki/ca.crt"];
        let written: std::collections::HashMap<&str, &str> =
            staged.public.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
        let new_ca = written["pki/ca.crt"];
        assert_ne!(new_ca, old_ca);
        assert_eq!(written["pki/ca-bundle.crt"], format!("{new_ca}{old_ca}"));
        assert!(written["pki/sa-bundle.pub"].ends_with(&old.sa_pub));
        assert_eq!(staged.retired.len(), CaId::ALL.len());
        assert_eq!(
            staged.retired[0].sha256,
            inspect::facts(&files[&format!("pki/{}.crt", staged.retired[0].path)]).unwrap().sha256
        );
        assert!(staged.sealed_paths().contains(&"pki/ca.key.pgp".to_owned()));
        for (p, t) in &staged.public {
            files.insert(p.clone(), t.clone());
        }
        let finished: std::collections::HashMap<String, String> =
            finish(|rel| read(&files, rel)).unwrap().into_iter().collect();
        assert_eq!(finished["pki/ca-bundle.crt"], new_ca);
        assert_eq!(finished["pki/sa-bundle.pub"], files["pki/sa.pub"]);
    }
}
