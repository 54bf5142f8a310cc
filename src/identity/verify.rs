//! Detached OpenPGP signatures pinned to one certificate: a signature counts
//! only if a signing-capable key of exactly that certificate made it, and
//! that key was alive and not revoked when it signed. User IDs play no part.

use std::time::SystemTime;

use sequoia_openpgp as openpgp;
use openpgp::parse::stream::{DetachedVerifierBuilder, MessageLayer, MessageStructure, VerificationHelper};
use openpgp::parse::Parse;
use openpgp::policy::Policy;
use openpgp::{Cert, KeyHandle};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no valid signature by {0} (signed by another key, altered data, or a key expired or revoked when it signed)")]
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
pub fn detached(data: &[u8], signature: &[u8], cert: &Cert, policy: &dyn Policy, now: SystemTime) -> Result<(), VerifyError> {
    let helper = Pinned { cert, good: false };
    let mut v = DetachedVerifierBuilder::from_bytes(signature)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .with_policy(policy, Some(now), helper)
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let by = || VerifyError::NotBy(cert.fingerprint().to_hex());
    v.verify_bytes(data).map_err(|_| by())?;
    if v.into_helper().good { Ok(()) } else { Err(by()) }
}
