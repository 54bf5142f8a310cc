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
    /// The certificate's not-after when it was granted (unix seconds): a
    /// re-issue under a new CA keeps it (whole days left, rounded down).
    #[serde(default)]
    pub granted_until: i64,
    /// `signed-by`'s detached OpenPGP signature over the [`Grant`]: who
    /// granted the access is proven by their key, not by a field any primary
    /// could edit. It survives re-issue (the grant is the same); empty in a
    /// record that predates it, which proves nothing.
    #[serde(default)]
    pub grant_signature: String,
}

/// What a granting primary signs: this administrator (by fingerprint) gets a
/// certificate for this cluster, for this key, until then, by their
/// decision, at that time. Serial and digest are not in it: a re-issue
/// under a new CA keeps the grant.
pub struct Grant<'a> {
    pub cluster: &'a crate::name::ClusterName,
    pub name: &'a AdminName,
    pub holder: &'a Fingerprint,
    pub granted_by: &'a Fingerprint,
    pub at: &'a str,
    /// The certified public key (SPKI DER).
    pub key: &'a [u8],
    pub until: i64,
}

impl Grant<'_> {
    pub fn statement(&self) -> String {
        let key: String = openssl::sha::sha256(self.key).iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "kaws-grant-v1\ncluster {}\nname {}\nholder {}\ngranted-by {}\nat {}\nkey-sha256 {key}\nuntil {}\n",
            self.cluster, self.name, self.holder, self.granted_by, self.at, self.until
        )
    }
}

/// How much later than the grant a re-issued certificate may end (a
/// re-issue with less than a day left still gets one day).
const REISSUE_SLACK_SECS: i64 = 86_400;

impl Issued {
    /// Whether the grant proves itself for the certificate it now covers
    /// (`facts`): the granter's (`cert`, `signed_by`) signature over this
    /// record's grant, for that key, ending no later than granted.
    pub fn grant_verifies(
        &self,
        cluster: &crate::name::ClusterName,
        facts: &inspect::Facts,
        cert: &sequoia_openpgp::Cert,
        (policy, now): (&dyn sequoia_openpgp::policy::Policy, std::time::SystemTime),
    ) -> Result<(), String> {
        if cert.fingerprint() != *self.signed_by.inner() {
            return Err("the granter's certificate is another".to_owned());
        }
        if facts.not_after > self.granted_until + REISSUE_SLACK_SECS {
            return Err("the certificate outlives its grant".to_owned());
        }
        let grant = Grant {
            cluster,
            name: &self.name,
            holder: &self.fingerprint,
            granted_by: &self.signed_by,
            at: &self.issued_at,
            key: &facts.spki,
            until: self.granted_until,
        };
        crate::identity::verify::detached(
            grant.statement().as_bytes(),
            self.grant_signature.as_bytes(),
            cert,
            policy,
            now,
        )
        .map_err(|_| "the granter's signature over the grant does not verify".to_owned())
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
