//! `clusters/CLUSTER/admins/NAME.issued.toml`: the record `kaws admin sign`
//! writes beside each administrator certificate it issues (and `--promote`
//! when it re-issues one). A certificate counts (bound to a role, listed,
//! installed, re-issued) only when it chains to the cluster's CA and
//! matches its record exactly, and the record's administrator is still the
//! one with that name: a certificate planted by hand, or one whose name
//! was later given to someone else, counts for nothing.

use serde::{Deserialize, Serialize};

use crate::identity::Fingerprint;
use crate::name::AdminName;
use crate::pki::inspect;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Issued {
    pub name: AdminName,
    /// The administrator whose OpenPGP signature over the CSR was verified.
    pub fingerprint: Fingerprint,
    pub serial: String,
    /// SHA-256 of the certificate's DER, uppercase hex.
    pub sha256: String,
    /// The primary who signed it: the access rests on their decision, so a
    /// rotation that removes them as a primary does not carry it over.
    pub signed_by: Fingerprint,
    pub issued_at: String,
    /// The primary who last re-issued it under a new CA (`--promote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reissued_by: Option<Fingerprint>,
    /// `signed-by`'s detached OpenPGP signature over [`Issued::grant`]: who
    /// granted the access is proven by their key, not by a field any primary
    /// could edit. It survives re-issue (the grant is the same).
    pub grant_signature: String,
}

impl Issued {
    /// The statement the granting primary signs: this administrator (by
    /// fingerprint) gets a certificate for this cluster, by their decision,
    /// at that time. Serial and digest are not in it: a re-issue under a new
    /// CA keeps the grant.
    pub fn grant(
        cluster: &crate::name::ClusterName,
        name: &AdminName,
        holder: &Fingerprint,
        granted_by: &Fingerprint,
        at: &str,
    ) -> String {
        format!("kaws-grant-v1\ncluster {cluster}\nname {name}\nholder {holder}\ngranted-by {granted_by}\nat {at}\n")
    }

    /// Whether `grant_signature` is `signed_by`'s (`cert`) over this record's grant.
    pub fn grant_verifies(
        &self,
        cluster: &crate::name::ClusterName,
        cert: &sequoia_openpgp::Cert,
        policy: &dyn sequoia_openpgp::policy::Policy,
        now: std::time::SystemTime,
    ) -> bool {
        let grant = Issued::grant(cluster, &self.name, &self.fingerprint, &self.signed_by, &self.issued_at);
        cert.fingerprint() == *self.signed_by.inner()
            && crate::identity::verify::detached(grant.as_bytes(), self.grant_signature.as_bytes(), cert, policy, now)
                .is_ok()
    }
}

impl crate::tomlfile::TomlFile for Issued {
    const HEADER: &'static str =
        "An administrator certificate kaws issued (`kaws admin sign`); the certificate counts only if it matches.";
}

/// The record's path under the cluster's directory.
pub fn issued_file(name: &AdminName) -> String {
    format!("admins/{name}.issued.toml")
}

/// Why a certificate without a record does not count.
pub const UNRECORDED: &str = "no issuance record (kaws did not issue it): a primary runs `kaws admin sign`";

/// Why the certificate `cert_pem` on file for `name` does not count, or its
/// facts when it does: it must chain to `ca_pem`, be the one `record`
/// names, and `record` must be for `name` and for `holder` (the fingerprint
/// that administrator has now).
pub fn check(
    name: &AdminName,
    cert_pem: &str,
    record: &Issued,
    holder: Option<&Fingerprint>,
    ca_pem: &str,
) -> Result<inspect::Facts, String> {
    let facts = inspect::facts(cert_pem).map_err(|e| e.to_string())?;
    if record.name != *name {
        return Err(format!("its record is for {}", record.name));
    }
    if record.sha256 != facts.sha256 || record.serial != facts.serial {
        return Err("it is not the certificate its record names".to_owned());
    }
    match holder {
        None => return Err(format!("{name} is no longer an administrator")),
        Some(f) if *f != record.fingerprint => {
            return Err(format!(
                "it was issued to {}, not to the administrator now named {name} ({f})",
                record.fingerprint
            ))
        }
        Some(_) => {}
    }
    inspect::verify_chain(cert_pem, ca_pem).map_err(|e| format!("it does not chain to the cluster CA: {e}"))?;
    Ok(facts)
}
