//! Sealing private keys with OpenPGP: every secret kaws stores is an
//! ASCII-armored message encrypted to every live encryption-capable subkey of
//! each intended reader, in SEIPDv1 form so that gpg 2.2 can open it.
//! Plaintext exists only in zeroizing buffers.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::SystemTime;

use anyhow::{bail, Context as _, Result};
use openpgp::crypto::{Decryptor, SessionKey};
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::packet::Key;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{DecryptionHelper, DecryptorBuilder, MessageStructure, VerificationHelper};
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::policy::Policy;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Recipient};
use openpgp::types::{Features, KeyFlags, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle, KeyID, Packet};
use sequoia_openpgp as openpgp;
use zeroize::Zeroizing;

/// Something that holds secret keys and can lend a decryptor for one.
pub trait KeyRing {
    /// A decryptor for the (sub)key `recipient`, if this holder has it.
    fn decryptor_for(&self, recipient: &KeyHandle) -> Result<Option<Box<dyn Decryptor + Send + Sync>>>;
}

/// Every live encryption-capable subkey of `cert`.
fn encryption_keys<'a>(
    cert: &'a Cert,
    policy: &'a dyn Policy,
    now: SystemTime,
) -> Result<Vec<&'a Key<PublicParts, UnspecifiedRole>>> {
    let vc = cert.with_policy(policy, now)?;
    let keys: Vec<_> = vc
        .keys()
        .subkeys()
        .key_flags(KeyFlags::empty().set_transport_encryption().set_storage_encryption())
        .alive()
        .revoked(false)
        .supported()
        .map(|ka| ka.key().role_as_unspecified())
        .collect();
    if keys.is_empty() {
        bail!("{} has no live encryption subkey", cert.fingerprint().to_hex());
    }
    Ok(keys)
}

/// The encryption subkeys of every reader, checked once for a batch.
fn recipient_keys<'a>(
    readers: &[&'a Cert],
    policy: &'a dyn Policy,
    now: SystemTime,
) -> Result<Vec<&'a Key<PublicParts, UnspecifiedRole>>> {
    let mut keys = Vec::new();
    for cert in readers {
        keys.extend(encryption_keys(cert, policy, now)?);
    }
    if keys.is_empty() {
        bail!("a sealed key needs at least one reader");
    }
    Ok(keys)
}

/// Encrypts `plain` to `keys` and checks the result names exactly those
/// subkeys before returning it.
fn seal_to(plain: &[u8], keys: &[&Key<PublicParts, UnspecifiedRole>]) -> Result<Vec<u8>> {
    let mut sink = Vec::new();
    {
        let recipients = keys.iter().map(|k| Recipient::new(Features::empty().set_seipdv1(), k.key_handle(), *k));
        let message = Message::new(&mut sink);
        let message = Armorer::new(message).build()?;
        let message =
            Encryptor::for_recipients(message, recipients).symmetric_algo(SymmetricAlgorithm::AES256).build()?;
        let mut w = LiteralWriter::new(message).build()?;
        w.write_all(plain)?;
        w.finalize()?;
    }
    let want: BTreeSet<KeyID> = keys.iter().map(|k| k.keyid()).collect();
    let got = recipients_of(&sink)?;
    if got != want {
        bail!("the sealed message's recipients {got:?} are not the intended {want:?}");
    }
    Ok(sink)
}

/// Seals many secrets to the same readers, spread over the machine's cores.
/// Results come back in input order.
pub fn seal_all<'a>(
    plains: &[&[u8]],
    readers: &[&'a Cert],
    policy: &'a dyn Policy,
    now: SystemTime,
) -> Result<Vec<Vec<u8>>> {
    let keys = recipient_keys(readers, policy, now)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(plains.len().max(1));
    let chunk = plains.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = plains
            .chunks(chunk)
            .map(|part| {
                let keys = &keys;
                s.spawn(move || part.iter().map(|p| seal_to(p, keys)).collect::<Result<Vec<_>>>())
            })
            .collect();
        let mut out = Vec::with_capacity(plains.len());
        for h in handles {
            out.extend(h.join().map_err(|_| anyhow::anyhow!("a sealing thread panicked"))??);
        }
        Ok(out)
    })
}

/// The key IDs a sealed message is encrypted to (its PKESK packets).
pub fn recipients_of(armored: &[u8]) -> Result<BTreeSet<KeyID>> {
    let mut ids = BTreeSet::new();
    let mut ppr = PacketParser::from_bytes(armored).context("not an OpenPGP message")?;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(p) => {
                let id = p
                    .recipient()
                    .map(KeyID::from)
                    .ok_or_else(|| anyhow::anyhow!("a sealed key has an anonymous recipient"))?;
                ids.insert(id);
            }
            Packet::SEIP(_) => break,
            _ => {}
        }
        ppr = pp.recurse()?.1;
    }
    Ok(ids)
}

/// Decrypts a sealed message with whatever keys `ring` holds.
pub fn open(armored: &[u8], ring: &dyn KeyRing, policy: &dyn Policy) -> Result<Zeroizing<Vec<u8>>> {
    let helper = Helper { ring };
    let mut dec = DecryptorBuilder::from_bytes(armored)?.with_policy(policy, None, helper).context("cannot decrypt")?;
    // Enough room up front that the buffer never reallocates and leaves
    // unzeroized copies behind (private keys in PEM are a few KiB).
    let mut out = Zeroizing::new(Vec::with_capacity(64 * 1024));
    dec.read_to_end(&mut out)?;
    Ok(out)
}

struct Helper<'a> {
    ring: &'a dyn KeyRing,
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, _structure: MessageStructure) -> openpgp::Result<()> {
        // Sealed files are not signed: their authenticity comes from the
        // signed commit that carries them.
        Ok(())
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for pkesk in pkesks {
            let Some(handle) = pkesk.recipient() else { continue };
            let Some(mut d) = self.ring.decryptor_for(&handle).map_err(|e| anyhow::anyhow!("{e:#}"))? else {
                continue;
            };
            if let Some((algo, sk)) = pkesk.decrypt(&mut *d, sym_algo) {
                if decrypt(algo, &sk) {
                    return Ok(None);
                }
            }
        }
        Err(anyhow::anyhow!("none of the operator's keys can decrypt it").into())
    }
}
