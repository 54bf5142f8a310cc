//! What a key rotation changes in a cluster, as data, in the three phases
//! of kOps' keypair rotation and Kubernetes' manual CA rotation:
//! - `stage`: new CAs and service-account key under `pki/staged/`, and
//!   bundles that trust the current and the staged ones; nothing signs
//!   with the new ones yet, so every instance can take the bundles first;
//! - `promote`: the staged CAs and key become the cluster's, every leaf is
//!   issued anew under them with a fresh key, a new bootstrap token; the
//!   bundles still trust the retired ones, which old leaves chain to;
//! - `finish`: the bundles trust only the current CAs and key.
//!
//! Nothing here touches the repository or seals anything: `kaws cluster
//! reencrypt` reads the current files, seals the keys, and commits.
//! Paths are relative to the cluster's directory.

use std::time::SystemTime;

use anyhow::{ensure, Context as _, Result};
use sequoia_openpgp::policy::Policy;
use zeroize::Zeroizing;

use super::rotation::RetiredCa;
use super::spec::ClusterSpec;
use super::token;
use crate::identity::{cert, verify};
use crate::pki::{self, csr, inspect, table::CaId, table::SA};

/// Where the new CAs and service-account key wait between `--rotate` and
/// `--promote`, below `pki/`.
pub const STAGED: &str = "staged";

/// The public file of a CA (`ca`) or of the service-account key (`sa`).
pub fn public_file(path: &str) -> String {
    if path == SA || path.ends_with("/sa") {
        format!("pki/{path}.pub")
    } else {
        format!("pki/{path}.crt")
    }
}

/// The sealed file of a key, by its path under `pki/` (no extension).
pub fn sealed_file(path: &str) -> String {
    format!("pki/{path}.key.pgp")
}

/// The signing material a rotation phase writes: public files (certificates,
/// bundles, public keys) and private keys to seal, each at the path of its
/// sealed file.
pub struct Files {
    pub public: Vec<(String, String)>,
    pub keys: Vec<(String, Zeroizing<String>)>,
}

/// `--rotate`: new CAs and service-account key, staged; bundles of the
/// current and staged. `current` reads a public file of the cluster now.
pub fn stage(spec: &ClusterSpec, now: SystemTime, current: impl Fn(&str) -> Result<String>) -> Result<Files> {
    let (material, _) = pki::issue_cas(spec, now).context("issuing the new CAs")?;
    let (sa_pub, sa_key) = pki::issue::new_sa_key(spec.key_algorithm)?;
    let mut out = Files { public: Vec::new(), keys: Vec::new() };
    for (id, (path, pem)) in CaId::ALL.iter().zip(&material.certs) {
        ensure!(path == id.path(), "the CAs are issued in table order");
        out.public.push((bundle_file(*id), format!("{}{pem}", current(&public_file(path))?)));
        out.public.push((public_file(&format!("{STAGED}/{path}")), pem.clone()));
    }
    out.public.push(("pki/sa-bundle.pub".to_owned(), format!("{}{sa_pub}", current(&public_file(SA))?)));
    out.public.push((public_file(&format!("{STAGED}/{SA}")), sa_pub));
    for key in material.keys.into_iter().map(|k| (k.path, k.pem)).chain([(SA.to_owned(), sa_key)]) {
        out.keys.push((sealed_file(&format!("{STAGED}/{}", key.0)), key.1));
    }
    Ok(out)
}

/// What `--promote` writes and removes.
pub struct Promoted {
    pub files: Files,
    /// The staged files, which now live at the CAs' own paths.
    pub removed: Vec<String>,
    pub token: Zeroizing<String>,
    /// The new cluster CA, which re-issues the administrators' certificates.
    pub ca: pki::issue::Authority,
    /// The CAs this rotation retires (still trusted until it finishes).
    pub retired: Vec<RetiredCa>,
}

impl Promoted {
    /// The sealed files the new set covers: anything else sealed is not carried over.
    pub fn sealed_paths(&self) -> Vec<String> {
        let mut out: Vec<String> = self.files.keys.iter().map(|(p, _)| p.clone()).collect();
        out.push(token::SEALED_FILE.to_owned());
        out
    }
}

/// `--promote`: the staged CAs and key take over; every leaf is issued
/// anew under them. `staged_key` opens a staged sealed file, checked
/// against its public half.
pub fn promote(
    spec: &ClusterSpec,
    now: SystemTime,
    current: impl Fn(&str) -> Result<String>,
    staged_key: impl Fn(&str) -> Result<Zeroizing<String>>,
) -> Result<Promoted> {
    let mut files = Files { public: Vec::new(), keys: Vec::new() };
    let mut removed = Vec::new();
    let mut authorities = Vec::new();
    for path in CaId::ALL.iter().map(|id| id.path()).chain([SA]) {
        let staged = format!("{STAGED}/{path}");
        let (public, sealed) = (current(&public_file(&staged))?, sealed_file(&staged));
        let key = staged_key(&sealed).with_context(|| format!("opening the staged {path}"))?;
        // A staged key is new: never the one it replaces.
        let old = current(&public_file(path))?;
        ensure!(public.trim() != old.trim(), "{} is the current {path}, not a new one", public_file(&staged));
        let bundle = match CaId::ALL.iter().find(|id| id.path() == path) {
            Some(id) => {
                pki::verify_ca(*id, &public, spec.key_algorithm, &key)
                    .with_context(|| format!("{} is not a {} CA", public_file(&staged), id.path()))?;
                ensure!(
                    inspect::facts(&public)?.spki != inspect::facts(&old)?.spki,
                    "{} has the key of the current {path}",
                    public_file(&staged)
                );
                authorities.push((*id, pki::authority(spec.key_algorithm, public.clone(), &key)?));
                bundle_file(*id)
            }
            None => "pki/sa-bundle.pub".to_owned(),
        };
        files.public.push((bundle, format!("{public}{old}")));
        files.public.push((public_file(path), public));
        files.keys.push((sealed_file(path), key));
        removed.extend([public_file(&staged), sealed]);
    }
    let leaves = pki::issue_leaves(spec, now, &authorities).context("issuing the leaves under the new CAs")?;
    files.public.extend(leaves.certs.into_iter().map(|(path, pem)| (public_file(&path), pem)));
    files.keys.extend(leaves.keys.into_iter().map(|k| (sealed_file(&k.path), k.pem)));
    let pos = authorities.iter().position(|(id, _)| *id == CaId::Kubernetes).context("the cluster CA is staged")?;
    let ca = authorities.swap_remove(pos).1;
    Ok(Promoted { files, removed, token: token::generate(), ca, retired: retired_cas(&current)? })
}

/// `--finish-rotation`: the bundles trust the current CAs and key only.
pub fn finish(current: impl Fn(&str) -> Result<String>) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for id in CaId::ALL {
        out.push((bundle_file(id), current(&public_file(id.path()))?));
    }
    out.push(("pki/sa-bundle.pub".to_owned(), current(&public_file(SA))?));
    Ok(out)
}

fn bundle_file(id: CaId) -> String {
    format!("pki/{}.crt", id.bundle_path())
}

/// The current CAs and service-account key, as a rotation retires them
/// (the key by the SHA-256 of its DER, and no serial).
fn retired_cas(current: &impl Fn(&str) -> Result<String>) -> Result<Vec<RetiredCa>> {
    let mut out: Vec<RetiredCa> = CaId::ALL
        .iter()
        .map(|id| {
            let f = inspect::facts(&current(&public_file(id.path()))?)?;
            Ok(RetiredCa { path: id.path().to_owned(), serial: f.serial, sha256: f.sha256 })
        })
        .collect::<Result<_>>()?;
    let sa = pem::parse(current(&public_file(SA))?).context("the service-account key is not PEM")?;
    out.push(RetiredCa { path: SA.to_owned(), serial: "-".to_owned(), sha256: key_sha256(sa.contents()) });
    Ok(out)
}

/// SHA-256 of a public key's DER, uppercase hex (as certificates' are recorded).
pub fn key_sha256(der: &[u8]) -> String {
    openssl::sha::sha256(der).iter().map(|b| format!("{b:02X}")).collect()
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
    // Whole days left, rounded down: a re-issue never outlives the grant
    // (`cluster::issued`) by more than the last day.
    let days = ((old.not_after - unix).max(0) as u64 / 86_400).clamp(1, u64::from(csr::MAX_DAYS)) as u32;
    Ok(csr::issue_admin(a.csr, a.name, spec.key_algorithm, ca, now, days)?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn apply(files: &mut HashMap<String, String>, public: &[(String, String)]) {
        for (p, t) in public {
            files.insert(p.clone(), t.clone());
        }
    }

    #[test]
    fn stage_trusts_both_promote_signs_with_the_new_and_finish_trusts_only_it() {
        let spec = crate::cluster::spec::tests::spec();
        let now = SystemTime::now();
        let old = pki::issue_cluster(&spec, now).unwrap();
        let mut files: HashMap<String, String> =
            old.certs.iter().map(|(p, pem)| (public_file(p), pem.clone())).collect();
        files.insert(public_file(SA), old.sa_pub.clone());
        let read = |files: &HashMap<String, String>, rel: &str| files.get(rel).cloned().context(rel.to_owned());
        let old_ca = files["pki/ca.crt"].clone();

        let staged = stage(&spec, now, |rel| read(&files, rel)).unwrap();
        apply(&mut files, &staged.public);
        let new_ca = files["pki/staged/ca.crt"].clone();
        assert_eq!(files["pki/ca.crt"], old_ca, "staging signs nothing new");
        assert_eq!(files["pki/ca-bundle.crt"], format!("{old_ca}{new_ca}"));
        assert!(files["pki/sa-bundle.pub"].starts_with(&old.sa_pub));
        let keys: HashMap<String, Zeroizing<String>> = staged.keys.into_iter().collect();
        assert_eq!(keys.len(), CaId::ALL.len() + 1);
        assert!(keys.contains_key("pki/staged/etcd/ca.key.pgp") && keys.contains_key("pki/staged/sa.key.pgp"));

        let open = |rel: &str| keys.get(rel).cloned().context(rel.to_owned());
        let promoted = promote(&spec, now, |rel| read(&files, rel), open).unwrap();
        apply(&mut files, &promoted.files.public);
        assert_eq!(files["pki/ca.crt"], new_ca);
        assert_eq!(files["pki/ca-bundle.crt"], format!("{new_ca}{old_ca}"));
        assert!(promoted.removed.contains(&"pki/staged/ca.crt".to_owned()));
        assert!(promoted.removed.contains(&"pki/staged/sa.key.pgp".to_owned()));
        assert!(promoted.sealed_paths().contains(&"pki/etcd/server-0.key.pgp".to_owned()));
        assert_eq!(promoted.retired[0].sha256, inspect::facts(&old_ca).unwrap().sha256);
        for leaf in crate::pki::table::leaves(&spec) {
            let ca = files[&public_file(leaf.ca.path())].clone();
            let key = &promoted.files.keys.iter().find(|(p, _)| *p == sealed_file(&leaf.path)).unwrap().1;
            crate::pki::verify_leaf(&leaf, &spec, &files[&public_file(&leaf.path)], &ca, key).unwrap();
        }

        let finished: HashMap<String, String> = finish(|rel| read(&files, rel)).unwrap().into_iter().collect();
        assert_eq!(finished["pki/ca-bundle.crt"], new_ca);
        assert_eq!(finished["pki/sa-bundle.pub"], files["pki/sa.pub"]);
    }
}
