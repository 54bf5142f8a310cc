//! The operator: the administrator kaws acts as. Its secret key comes from a
//! key file (`--secret-key` / `KAWS_SECRET_KEY`, passphrase from the terminal
//! or `KAWS_PASSPHRASE_FILE`) or from the user's gpg-agent (so smartcards
//! work). Secret material is never read from argv, never logged, and lives
//! only in sequoia's protected, zeroizing memory.

mod keyfile;

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use openpgp::cert::amalgamation::key::PrimaryKey;
use openpgp::crypto::Signer;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::packet::Key;
use openpgp::policy::Policy;
use openpgp::serialize::stream::{Armorer, Message};
use openpgp::Cert;
use sequoia_openpgp as openpgp;

use crate::error::refused;
use crate::identity::{Admins, Fingerprint};
use crate::name::AdminName;
use crate::repo::CommitSigner;

/// Where the operator's secret key lives.
#[derive(Clone, Debug)]
pub enum KeySource {
    File(PathBuf),
    Agent,
}

/// The operator's identity and a handle on its signing key.
pub struct Operator {
    cert: Cert,
    name: Option<AdminName>,
    signer: Mutex<Box<dyn Signer + Send + Sync>>,
    secrets: Secrets,
}

/// Where decryption keys come from.
enum Secrets {
    /// The key file's secret keys; encrypted ones are unlocked on first use
    /// with the passphrase (asked once) and kept in sequoia's protected memory.
    File {
        tsk: Cert,
        password: Mutex<Option<openpgp::crypto::Password>>,
        unlocked: Mutex<Vec<openpgp::crypto::KeyPair>>,
    },
    Agent,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("fingerprint", &self.cert.fingerprint().to_hex())
            .field("name", &self.name)
            .field("signer", &"[elided]")
            .finish()
    }
}

/// How the command line chose the operator.
pub struct Selector<'a> {
    pub source: KeySource,
    /// `--as NAME`.
    pub as_name: Option<&'a AdminName>,
    /// git's `user.signingkey`, consulted for the agent when `--as` is absent.
    pub signing_key: Option<String>,
    pub policy: &'a dyn Policy,
    pub now: SystemTime,
}

impl Operator {
    /// Resolves the operator against the repository's administrators.
    pub fn resolve(sel: &Selector, admins: &Admins) -> Result<Operator> {
        let named = sel
            .as_name
            .map(|n| {
                admins.get(n).ok_or_else(|| {
                    refused(format!("--as {n}: no administrator of that name")).hint("list them with `kaws key list`")
                })
            })
            .transpose()?;
        let mut op = match &sel.source {
            KeySource::File(path) => {
                let op = keyfile::load(path, sel.policy, sel.now)?;
                if let Some(a) = named {
                    if a.fingerprint != op.fingerprint() {
                        return Err(refused(format!(
                            "--as {}: the key in {} is {}, not {}'s key {}",
                            a.name,
                            path.display(),
                            op.fingerprint(),
                            a.name,
                            a.fingerprint
                        ))
                        .into());
                    }
                }
                op
            }
            KeySource::Agent => {
                let cert = match named {
                    Some(a) => a.cert.clone(),
                    None => agent_cert_from_signing_key(sel.signing_key.as_deref(), admins)?,
                };
                Operator::from_agent(cert, sel.policy, sel.now)?
            }
        };
        op.name = admins.by_fingerprint(&op.fingerprint()).map(|a| a.name.clone());
        Ok(op)
    }

    /// The operator from a key file, before any repository exists.
    pub fn from_key_file(path: &std::path::Path, policy: &dyn Policy, now: SystemTime) -> Result<Operator> {
        keyfile::load(path, policy, now)
    }

    /// The operator whose secret keys the running gpg-agent holds for `cert`.
    pub fn from_agent(cert: Cert, policy: &dyn Policy, now: SystemTime) -> Result<Operator> {
        let candidates = live_signing_keys(&cert, policy, now)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let chosen = rt.block_on(async {
            let mut agent = sequoia_gpg_agent::Agent::connect_to_default()
                .await
                .context("connecting to gpg-agent (is GNUPGHOME right?)")?;
            for key in &candidates {
                if agent.has_key(key).await.unwrap_or(false) {
                    return Ok::<_, anyhow::Error>(Some(key.clone()));
                }
            }
            Ok(None)
        })?;
        let key = chosen.ok_or_else(|| {
            refused(format!("gpg-agent holds no secret signing key of {}", cert.fingerprint().to_hex()))
                .hint("import the secret key into gpg (or insert the smartcard), or pass --secret-key FILE")
        })?;
        let ctx = sequoia_gpg_agent::gnupg::Context::new()?;
        let pair = sequoia_gpg_agent::KeyPair::new_for_gnupg_context(&ctx, &key)?;
        Ok(Operator { cert, name: None, signer: Mutex::new(Box::new(pair)), secrets: Secrets::Agent })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::from(self.cert.fingerprint())
    }

    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    pub fn name(&self) -> Option<&AdminName> {
        self.name.as_ref()
    }

    /// An ASCII-armored detached signature over `data`.
    pub fn sign_detached(&self, data: &[u8]) -> Result<String> {
        use std::io::Write;
        let mut guard = self.signer.lock().expect("signer lock");
        let mut sink = Vec::new();
        {
            let message = Message::new(&mut sink);
            let message = Armorer::new(message).kind(openpgp::armor::Kind::Signature).build()?;
            let mut signer =
                openpgp::serialize::stream::Signer::new(message, ByRef(&mut **guard))?.detached().build()?;
            signer.write_all(data)?;
            signer.finalize()?;
        }
        Ok(String::from_utf8(sink)?)
    }
}

/// Lends a boxed signer to sequoia's streaming signer without giving it up.
struct ByRef<'a>(&'a mut (dyn Signer + Send + Sync));

impl Signer for ByRef<'_> {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        self.0.public()
    }

    fn acceptable_hashes(&self) -> &[openpgp::types::HashAlgorithm] {
        self.0.acceptable_hashes()
    }

    fn sign(
        &mut self,
        hash_algo: openpgp::types::HashAlgorithm,
        digest: &[u8],
    ) -> openpgp::Result<openpgp::crypto::mpi::Signature> {
        self.0.sign(hash_algo, digest)
    }
}

impl crate::vault::KeyRing for Operator {
    fn decryptor_for(
        &self,
        recipient: &openpgp::KeyHandle,
    ) -> Result<Option<Box<dyn openpgp::crypto::Decryptor + Send + Sync>>> {
        match &self.secrets {
            Secrets::Agent => {
                let Some(ka) = self.cert.keys().key_handle(recipient.clone()).next() else {
                    return Ok(None);
                };
                let ctx = sequoia_gpg_agent::gnupg::Context::new()?;
                let pair = sequoia_gpg_agent::KeyPair::new_for_gnupg_context(&ctx, ka.key())?;
                Ok(Some(Box::new(pair)))
            }
            Secrets::File { tsk, password, unlocked } => {
                let mut cache = unlocked.lock().expect("lock");
                if let Some(pair) = cache.iter().find(|p| recipient.aliases(p.public().key_handle())) {
                    return Ok(Some(Box::new(pair.clone())));
                }
                let Some(ka) = tsk.keys().secret().key_handle(recipient.clone()).next() else {
                    return Ok(None);
                };
                let mut key = ka.key().clone().role_into_unspecified();
                if !key.has_unencrypted_secret() {
                    let mut pw = password.lock().expect("lock");
                    if pw.is_none() {
                        *pw = Some(keyfile::read_password(tsk)?);
                    }
                    key = key
                        .decrypt_secret(pw.as_ref().expect("set"))
                        .map_err(|_| refused("the passphrase does not unlock the operator's decryption key"))?;
                }
                let pair = key.into_keypair()?;
                cache.push(pair.clone());
                Ok(Some(Box::new(pair)))
            }
        }
    }
}

impl CommitSigner for Operator {
    fn sign_commit(&self, payload: &[u8]) -> Result<String> {
        self.sign_detached(payload)
    }
}

/// The cert's live signing-capable keys, subkeys first (gpg's preference).
pub(crate) fn live_signing_keys(
    cert: &Cert,
    policy: &dyn Policy,
    now: SystemTime,
) -> Result<Vec<Key<PublicParts, UnspecifiedRole>>> {
    let vc = cert.with_policy(policy, now).map_err(|e| {
        refused(format!("the operator's certificate {} is not valid now: {e}", cert.fingerprint().to_hex()))
    })?;
    let mut keys: Vec<_> = vc
        .keys()
        .for_signing()
        .alive()
        .revoked(false)
        .map(|ka| (ka.primary(), ka.key().clone().role_into_unspecified()))
        .collect();
    keys.sort_by_key(|(primary, _)| *primary);
    if keys.is_empty() {
        return Err(refused(format!(
            "the operator's certificate {} has no live signing key",
            cert.fingerprint().to_hex()
        ))
        .into());
    }
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

/// Finds the administrator that git's `user.signingkey` names. Only a full
/// fingerprint (of the certificate or one of its subkeys) is accepted.
fn agent_cert_from_signing_key(signing_key: Option<&str>, admins: &Admins) -> Result<Cert> {
    let Some(raw) = signing_key else {
        return Err(refused("no operator key")
            .hint("pass --secret-key FILE (or set KAWS_SECRET_KEY), or use gpg-agent with --as NAME or git's user.signingkey")
            .into());
    };
    let fpr: Fingerprint = raw.trim().trim_end_matches('!').parse().map_err(|_| {
        refused(format!("git's user.signingkey is {raw:?}, which is not a full fingerprint"))
            .hint("set it to the full fingerprint (git config user.signingkey FINGERPRINT) or pass --as NAME")
    })?;
    admins
        .iter()
        .find(|a| a.cert.keys().any(|k| k.key().fingerprint() == *fpr.inner()))
        .map(|a| a.cert.clone())
        .ok_or_else(|| {
            refused(format!("git's user.signingkey {fpr} is not a key of any administrator"))
                .hint("pass --as NAME, or add the key with `kaws key add`")
                .into()
        })
}
