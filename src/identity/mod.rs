//! Administrators: OpenPGP certificates kept in `pubkeys/<FINGERPRINT>.asc`
//! and named in `kaws.toml`. A certificate is found by fingerprint only; its
//! user IDs are shown to people but never used to decide anything.

pub mod cert;
mod fingerprint;
pub mod verify;

use std::collections::BTreeMap;

use std::time::SystemTime;

use sequoia_openpgp::policy::Policy;
use sequoia_openpgp::Cert;

pub use fingerprint::Fingerprint;

use crate::name::AdminName;

/// One administrator: a name bound to a verified certificate.
#[derive(Clone, Debug)]
pub struct Admin {
    pub name: AdminName,
    pub fingerprint: Fingerprint,
    pub cert: Cert,
}

/// Why the `pubkeys/` directory and `kaws.toml` do not agree.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "pubkeys/{file} holds the certificate {actual}, not the one its name says; someone renamed or replaced it"
    )]
    NameMismatch { file: String, actual: Fingerprint },
    #[error("pubkeys/{file} is not a valid administrator certificate: {source}")]
    BadFile { file: String, source: cert::CertFileError },
    #[error("pubkeys/{file} is not named <FINGERPRINT>.asc")]
    UnexpectedFile { file: String },
    #[error("kaws.toml names administrator {name} with fingerprint {fingerprint}, but pubkeys/{fingerprint}.asc does not exist")]
    MissingFile { name: AdminName, fingerprint: Fingerprint },
    #[error("pubkeys/{file} is not named by any administrator in kaws.toml")]
    Orphan { file: String },
    #[error("administrators {a} and {b} share the fingerprint {fingerprint}")]
    SharedFingerprint { a: AdminName, b: AdminName, fingerprint: Fingerprint },
    #[error("the certificates of {a} and {b} both carry the key {key}; a key belongs to one administrator")]
    SharedKey { a: String, b: String, key: String },
}

/// The administrator set, checked against the certificates on file.
#[derive(Clone, Debug, Default)]
pub struct Admins {
    by_name: BTreeMap<AdminName, Admin>,
}

impl Admins {
    /// Builds the set from `kaws.toml`'s `[admins]` and the files of
    /// `pubkeys/` as `(file name, content)`. Every file's fingerprint is
    /// recomputed from its content; any disagreement refuses the whole set.
    /// Components without a valid binding are dropped, and no key may
    /// appear in two administrators' certificates.
    pub fn load(
        names: &BTreeMap<AdminName, Fingerprint>,
        files: Vec<(String, Vec<u8>)>,
        policy: &dyn Policy,
        now: SystemTime,
    ) -> Result<Admins, StoreError> {
        let mut certs: BTreeMap<Fingerprint, Cert> = BTreeMap::new();
        for (file, bytes) in files {
            if file == "README.md" {
                continue;
            }
            let claimed = file
                .strip_suffix(".asc")
                .and_then(|f| f.parse::<Fingerprint>().ok())
                .filter(|f| f.file_name() == file)
                .ok_or_else(|| StoreError::UnexpectedFile { file: file.clone() })?;
            let cert =
                cert::parse_one_public(&bytes).map_err(|source| StoreError::BadFile { file: file.clone(), source })?;
            let cert = cert::bound_only(cert, policy, now);
            let actual = Fingerprint::from(cert.fingerprint());
            if actual != claimed {
                return Err(StoreError::NameMismatch { file, actual });
            }
            certs.insert(actual, cert);
        }
        let mut by_fpr: BTreeMap<&Fingerprint, &AdminName> = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for (name, fpr) in names {
            if let Some(other) = by_fpr.insert(fpr, name) {
                return Err(StoreError::SharedFingerprint {
                    a: other.clone(),
                    b: name.clone(),
                    fingerprint: fpr.clone(),
                });
            }
            let cert = certs
                .get(fpr)
                .ok_or_else(|| StoreError::MissingFile { name: name.clone(), fingerprint: fpr.clone() })?;
            by_name.insert(name.clone(), Admin { name: name.clone(), fingerprint: fpr.clone(), cert: cert.clone() });
        }
        if let Some(orphan) = certs.keys().find(|f| !by_fpr.contains_key(f)) {
            return Err(StoreError::Orphan { file: orphan.file_name() });
        }
        let admins = Admins { by_name };
        admins.check_disjoint()?;
        Ok(admins)
    }

    /// Refuses a set in which one key (primary or subkey) belongs to two
    /// administrators' certificates.
    fn check_disjoint(&self) -> Result<(), StoreError> {
        let mut owner: BTreeMap<String, &AdminName> = BTreeMap::new();
        for a in self.by_name.values() {
            for k in a.cert.keys() {
                let key = k.key().fingerprint().to_hex();
                if let Some(other) = owner.insert(key.clone(), &a.name) {
                    if other != &a.name {
                        return Err(StoreError::SharedKey { a: other.to_string(), b: a.name.to_string(), key });
                    }
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &AdminName) -> Option<&Admin> {
        self.by_name.get(name)
    }

    pub fn by_fingerprint(&self, fpr: &Fingerprint) -> Option<&Admin> {
        self.by_name.values().find(|a| &a.fingerprint == fpr)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Admin> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}
