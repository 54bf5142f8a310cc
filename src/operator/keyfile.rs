//! Loading the operator from a transferable secret key file.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use openpgp::cert::prelude::*;
use openpgp::crypto::Password;
use openpgp::parse::Parse;
use openpgp::policy::Policy;
use sequoia_openpgp as openpgp;
use zeroize::Zeroizing;

use super::{live_signing_keys, Operator, Secrets};
use crate::error::refused;

pub fn load(path: &Path, policy: &dyn Policy, now: SystemTime) -> Result<Operator> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading the secret key file {}", path.display()))?;
    if !is_private(&file)?.0 {
        eprintln!(
            "warning: the secret key file {} can be read by others; keep it 0600 (chmod 600 {})",
            path.display(),
            path.display()
        );
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(64 * 1024));
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .with_context(|| format!("reading the secret key file {}", path.display()))?;
    let bad = |why: String| {
        refused(format!("{} is not a usable OpenPGP secret key: {why}", path.display()))
            .hint("export it with `gpg --export-secret-keys FINGERPRINT > FILE` (or `sq key export`)")
    };
    let mut certs = CertParser::from_bytes(&bytes[..])
        .map_err(|e| bad(e.to_string()))?
        .collect::<openpgp::Result<Vec<Cert>>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.len() != 1 {
        return Err(bad(format!("it holds {} keys; exactly one is needed", certs.len())).into());
    }
    let tsk = certs.pop().expect("one");
    if !tsk.is_tsk() {
        return Err(bad("it holds no secret key material".into()).into());
    }
    let candidates = live_signing_keys(&tsk, policy, now)?;
    let mut password: Option<Password> = None;
    for public in candidates {
        let Some(ka) = tsk.keys().secret().key_handle(public.fingerprint()).next() else {
            continue; // gpg's "stub" for a key kept on a card
        };
        let mut key = ka.key().clone().role_into_unspecified();
        if !key.has_unencrypted_secret() {
            if password.is_none() {
                password = Some(read_password(&tsk)?);
            }
            key = key.decrypt_secret(password.as_ref().expect("set")).map_err(|_| {
                refused(format!("the passphrase does not unlock {}", path.display()))
                    .hint("check KAWS_PASSPHRASE_FILE, or type it again")
            })?;
        }
        let pair = key.into_keypair()?;
        return Ok(Operator {
            cert: tsk.clone().strip_secret_key_material(),
            name: None,
            signer: Mutex::new(Box::new(pair)),
            secrets: Secrets::File { tsk, password: Mutex::new(password), unlocked: Mutex::new(Vec::new()) },
        });
    }
    Err(bad("none of its live signing keys has secret material in the file".into()).into())
}

/// The passphrase, from `KAWS_PASSPHRASE_FILE` or the terminal.
pub(super) fn read_password(tsk: &Cert) -> Result<Password> {
    if let Some(file) = std::env::var_os("KAWS_PASSPHRASE_FILE") {
        let text = read_private_file(Path::new(&file), "KAWS_PASSPHRASE_FILE")?;
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        return Ok(Password::from(line));
    }
    let prompt = format!("Passphrase for OpenPGP key {}: ", tsk.fingerprint().to_hex());
    let typed = Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| {
        refused(format!("the secret key is passphrase-protected and no terminal can ask for it ({e})"))
            .hint("set KAWS_PASSPHRASE_FILE to a 0600 file holding the passphrase")
    })?);
    Ok(Password::from(typed.as_str()))
}

/// Is the opened file private: a regular file of this user (or root, as
/// mounted secrets are) that no group or other user can read or write?
/// Judged on the opened descriptor, so a link is judged by its target.
fn is_private(f: &std::fs::File) -> Result<(bool, std::fs::Metadata)> {
    use std::os::unix::fs::MetadataExt;
    let meta = f.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    Ok((meta.is_file() && (meta.uid() == me || meta.uid() == 0) && meta.mode() & 0o077 == 0, meta))
}

/// A secret file's text, refused unless it is private ([`is_private`]): a
/// passphrase others can read, or swap, is not one.
fn read_private_file(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {what} {shown}"))?;
    let (private, meta) = is_private(&f)?;
    if !private {
        return Err(refused(format!(
            "{what} {shown} is not a private file of yours (mode {:o}, owner uid {})",
            meta.mode() & 0o7777,
            meta.uid()
        ))
        .hint(format!("make it yours and 0600: chmod 600 {shown}"))
        .into());
    }
    let mut text = Zeroizing::new(String::new());
    f.read_to_string(&mut text).with_context(|| format!("reading {what} {shown}"))?;
    Ok(text)
}
