//! Detached OpenPGP signatures pinned to one certificate: a signature counts
//! only if a signing-capable key of exactly that certificate made it, and
//! that key was alive and not revoked when it signed. User IDs play no part.

use std::time::SystemTime;

use openpgp::parse::stream::{DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationHelper};
use openpgp::parse::Parse;
use openpgp::policy::Policy;
use openpgp::{Cert, KeyHandle};
use sequoia_openpgp as openpgp;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "no valid signature by {0} (signed by another key, altered data, or a key expired or revoked when it signed)"
    )]
    NotBy(String),
    #[error("the signature file cannot be read: {0}")]
    Malformed(String),
}

struct Pinned<'a> {
    cert: &'a Cert,
    good: bool,
}

impl VerificationHelper for Pinned<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(vec![self.cert.clone()])
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure.into_iter() {
            if let MessageLayer::SignatureGroup { results } = layer {
                for r in results.into_iter().flatten() {
                    if r.ka.cert().fingerprint() == self.cert.fingerprint() && r.ka.for_signing() {
                        self.good = true;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Verifies `signature` (armored or binary, detached) over `data` against `cert` only.
pub fn detached(
    data: &[u8],
    signature: &[u8],
    cert: &Cert,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let helper = Pinned { cert, good: false };
    let mut v = DetachedVerifierBuilder::from_bytes(signature)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .with_policy(policy, Some(now), helper)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let by = || VerifyError::NotBy(cert.fingerprint().to_hex());
    v.verify_bytes(data).map_err(|_| by())?;
    if v.into_helper().good {
        Ok(())
    } else {
        Err(by())
    }
}

/// Why a commit's signature does not make it an administrator's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Rejection {
    Unsigned,
    /// The issuer is no key of anyone kaws knows.
    UnknownKey {
        key: String,
    },
    /// The key belongs to a certificate that is not an administrator in the parent.
    NotAnAdministrator {
        key: String,
    },
    /// The key is an administrator's, but the signature does not verify.
    BadSignature {
        admin: String,
    },
    /// The administrator's key was expired, revoked or not signing-capable when it signed.
    KeyNotValidAtSigning {
        admin: String,
        detail: String,
    },
    Malformed {
        detail: String,
    },
    /// The parent's `kaws.toml` and `pubkeys/` disagree, so nobody is an administrator there.
    InconsistentAdmins {
        detail: String,
    },
    /// The administrator's certificate in the parent revokes the key (hard
    /// or soft, whenever): none of its signatures counts any more.
    KeyRevoked {
        admin: String,
    },
    /// No parent of the commit is authenticated.
    NoAuthenticatedParent,
    /// A merge verifies as different administrators against different parents.
    SignerDiffers {
        parent: String,
    },
    /// The signature claims a time before its parent's signature.
    SignedBeforeParent {
        signed: u64,
        parent: String,
        parent_signed: u64,
    },
    /// The signature claims a time beyond this machine's clock plus the skew.
    SignedInFuture {
        signed: u64,
    },
    /// The commit makes a symbolic link or submodule under kaws' paths.
    NotRegularFile {
        paths: Vec<String>,
    },
    /// The commit replaces an administrator's certificate with one that
    /// lacks something the parent's had (a revocation, a binding).
    CertificateShrank {
        admin: String,
        parent: String,
    },
    /// The commit writes a path kaws cannot read (not UTF-8, or a control character).
    UnreadableName {
        paths: Vec<String>,
    },
    /// The commit leaves a cluster in a state kaws cannot work with (or could never change again).
    BadCluster {
        cluster: String,
        detail: String,
    },
    /// The commit writes a public key that another cluster carries.
    CopiedKey {
        files: Vec<String>,
    },
    /// The commit changes a cluster's keys, certificates or primaries, and
    /// its signer is not one of that cluster's primaries in the parent; in a
    /// merge, nor is the signer of the commit that made the change on the
    /// side it comes from (`carried_from` says which, and why).
    NotAPrimary {
        admin: String,
        cluster: String,
        parent: String,
        paths: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        carried_from: Vec<String>,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Unsigned => write!(f, "unsigned"),
            Rejection::UnknownKey { key } => write!(f, "signed by an unknown key {key}"),
            Rejection::NotAnAdministrator { key } => {
                write!(f, "signed by {key}, which is not an administrator's key in the parent")
            }
            Rejection::BadSignature { admin } => write!(f, "bad signature claiming to be {admin}'s"),
            Rejection::KeyNotValidAtSigning { admin, detail } => {
                write!(f, "{admin}'s key was not valid when it signed: {detail}")
            }
            Rejection::Malformed { detail } => write!(f, "unreadable signature: {detail}"),
            Rejection::InconsistentAdmins { detail } => f.write_str(detail),
            Rejection::KeyRevoked { admin } => {
                write!(f, "{admin}'s signing key is revoked in the parent, so none of its signatures counts")
            }
            Rejection::NoAuthenticatedParent => write!(f, "no authenticated parent"),
            Rejection::SignerDiffers { parent } => {
                write!(f, "the signature is another administrator's against parent {parent}")
            }
            Rejection::SignedBeforeParent { signed, parent, parent_signed } => write!(
                f,
                "signature time {} is earlier than parent {parent}'s ({}): a backdated signature",
                crate::context::rfc3339_unix(*signed as i64),
                crate::context::rfc3339_unix(*parent_signed as i64)
            ),
            Rejection::SignedInFuture { signed } => write!(
                f,
                "signature time {} is in the future (more than 5 minutes ahead of this machine's clock)",
                crate::context::rfc3339_unix(*signed as i64)
            ),
            Rejection::NotRegularFile { paths } => {
                write!(f, "makes {} a symbolic link or submodule; kaws' paths hold regular files only", paths.join(", "))
            }
            Rejection::CertificateShrank { admin, parent } => write!(
                f,
                "replaces {admin}'s certificate with one lacking part of parent {parent}'s (a revocation, expiry or binding rolled back)"
            ),
            Rejection::UnreadableName { paths } => write!(
                f,
                "writes {} under kaws' paths: names must be UTF-8 without control characters",
                paths.join(", ")
            ),
            Rejection::BadCluster { cluster, detail } => {
                write!(f, "leaves clusters/{cluster} as no cluster kaws can work with: {detail}")
            }
            Rejection::CopiedKey { files } => write!(
                f,
                "writes a public key another cluster carries: {}; every cluster has keys of its own",
                files.join("; ")
            ),
            Rejection::NotAPrimary { admin, cluster, parent, paths, carried_from } => {
                write!(
                    f,
                    "{admin} is not a primary of cluster {cluster} in parent {parent}, so may not change {}",
                    paths.iter().map(|p| format!("clusters/{cluster}/{p}")).collect::<Vec<_>>().join(", ")
                )?;
                if !carried_from.is_empty() {
                    write!(
                        f,
                        "; the change comes from {}: authority held on a side branch does not travel into a merge",
                        carried_from.join("; ")
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Which of `admins` made the detached `signature` over `data`; each admin
/// is `(name, certificate)`. The key must be signing-capable, alive and not
/// revoked at the signature's creation time.
pub fn by_any<'a, N: std::fmt::Display>(
    data: &[u8],
    signature: &[u8],
    admins: &'a [(N, &'a Cert)],
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<&'a N, Rejection> {
    use openpgp::Packet;
    let malformed = |e: &dyn std::fmt::Display| Rejection::Malformed { detail: e.to_string() };
    let sig = match Packet::from_bytes(signature).map_err(|e| malformed(&e))? {
        Packet::Signature(s) => s,
        other => return Err(malformed(&format!("a {} packet, not a signature", other.tag()))),
    };
    let issuers = sig.get_issuers();
    let Some(first) = issuers.first() else {
        return Err(malformed(&"the signature names no issuer"));
    };
    // Only keys bound under the policy can make a signature someone's.
    let owns = |cert: &Cert| {
        cert.with_policy(policy, now)
            .map(|vc| vc.keys().any(|k| issuers.iter().any(|i| i.aliases(k.key().key_handle()))))
            .unwrap_or(false)
    };
    let owner = admins.iter().find(|(_, cert)| owns(cert));
    let Some((name, cert)) = owner else {
        return Err(Rejection::UnknownKey { key: first.to_hex() });
    };
    if revoked_now(cert, &issuers, policy, now) {
        return Err(Rejection::KeyRevoked { admin: format!("{name} ({})", cert.fingerprint().to_hex()) });
    }
    if detached(data, signature, cert, policy, now).is_ok() {
        return Ok(name);
    }
    // Tell a key that was not valid then from a signature that is simply bad.
    let when = sig.signature_creation_time().unwrap_or(now);
    let admin = format!("{name} ({})", cert.fingerprint().to_hex());
    match signing_key_valid_at(cert, &issuers, policy, when) {
        Err(detail) => Err(Rejection::KeyNotValidAtSigning { admin, detail }),
        Ok(()) => Err(Rejection::BadSignature { admin }),
    }
}

/// Was a signing key of `cert` that `issuers` names alive, unrevoked and
/// signing-capable at `when`?
fn signing_key_valid_at(
    cert: &Cert,
    issuers: &[KeyHandle],
    policy: &dyn Policy,
    when: SystemTime,
) -> Result<(), String> {
    let vc = cert.with_policy(policy, when).map_err(|e| e.to_string())?;
    if let openpgp::types::RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err("revoked".to_owned());
    }
    vc.alive().map_err(|e| e.to_string())?;
    vc.keys()
        .for_signing()
        .alive()
        .revoked(false)
        .find(|k| issuers.iter().any(|i| i.aliases(k.key().key_handle())))
        .map(|_| ())
        .ok_or_else(|| "the signing key was expired, revoked or not signing-capable".to_owned())
}

/// Was the key that made `signature` valid at `when` (a time later than the
/// one the signature claims: the newest of its parents')? A key expired by
/// then cannot sign after history has moved past its expiry.
pub fn signer_valid_at(
    admin: &str,
    cert: &Cert,
    signature: &[u8],
    policy: &dyn Policy,
    when: SystemTime,
) -> Result<(), Rejection> {
    use openpgp::Packet;
    let issuers = match Packet::from_bytes(signature) {
        Ok(Packet::Signature(s)) => s.get_issuers(),
        _ => return Err(Rejection::Malformed { detail: "not a signature".into() }),
    };
    signing_key_valid_at(cert, &issuers, policy, when).map_err(|detail| Rejection::KeyNotValidAtSigning {
        admin: format!("{admin} ({})", cert.fingerprint().to_hex()),
        detail,
    })
}

/// Is the certificate, or the subkey that `issuers` names, revoked (for any
/// reason, hard or soft) as the certificate stands at `now`? Judged at now,
/// not at the signature's time, which the signer chooses.
fn revoked_now(cert: &Cert, issuers: &[KeyHandle], policy: &dyn Policy, now: SystemTime) -> bool {
    use openpgp::types::RevocationStatus;
    let revoked = |s: RevocationStatus| matches!(s, RevocationStatus::Revoked(_));
    if revoked(cert.revocation_status(policy, now)) {
        return true;
    }
    cert.keys()
        .subkeys()
        .filter(|k| issuers.iter().any(|i| i.aliases(k.key().key_handle())))
        .any(|k| revoked(k.revocation_status(policy, now)))
}
