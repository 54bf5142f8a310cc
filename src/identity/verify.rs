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
    let owner =
        admins.iter().find(|(_, cert)| cert.keys().any(|k| issuers.iter().any(|i| i.aliases(k.key().key_handle()))));
    let Some((name, cert)) = owner else {
        return Err(Rejection::UnknownKey { key: first.to_hex() });
    };
    if detached(data, signature, cert, policy, now).is_ok() {
        return Ok(name);
    }
    // Tell a key that was not valid then from a signature that is simply bad.
    let when = sig.signature_creation_time().unwrap_or(now);
    let admin = format!("{name} ({})", cert.fingerprint().to_hex());
    let valid_then = cert.with_policy(policy, when).map_err(|e| e.to_string()).and_then(|vc| {
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
    });
    match valid_then {
        Err(detail) => Err(Rejection::KeyNotValidAtSigning { admin, detail }),
        Ok(()) => Err(Rejection::BadSignature { admin }),
    }
}
