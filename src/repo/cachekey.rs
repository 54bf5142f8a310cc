//! The audit cache under `.git/kaws/` travels with the repository (a
//! tarball, a shared disk, a CI cache), so it authenticates nothing by
//! itself: each entry carries an HMAC-SHA256 under a secret of the local
//! user, kept outside every repository (`$XDG_STATE_HOME/kaws/cache.key`,
//! else `~/.local/state/kaws/cache.key`, 0600, created with O_EXCL). A cache
//! whose tag does not verify, or a user without such a key, means no cache:
//! the history is checked in full.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub struct CacheKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey([elided])")
    }
}

fn key_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".local/state")))?;
    Some(state.join("kaws").join("cache.key"))
}

impl CacheKey {
    /// The user's key, made on first use. `None` (no cache) when there is no
    /// home, when the key would sit inside the work tree `repo_root`, or when
    /// the file is not a 0600 file of this user.
    pub fn for_user(repo_root: &Path) -> Option<CacheKey> {
        let path = key_path()?;
        let dir = path.parent()?;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).ok()?;
        if dir.canonicalize().ok()?.starts_with(repo_root) {
            return None;
        }
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut f) => {
                openssl::rand::rand_bytes(&mut secret).ok()?;
                f.write_all(&secret).ok()?;
                f.sync_all().ok()?;
                return Some(CacheKey(secret));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(_) => return None,
        }
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path).ok()?;
        let meta = f.metadata().ok()?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
            eprintln!("warning: {} is not a 0600 file of yours; the audit cache is not used", path.display());
            return None;
        }
        secret.clear();
        f.read_to_end(&mut secret).ok()?;
        (secret.len() == 32).then_some(CacheKey(secret))
    }

    fn tag(&self, body: &[u8]) -> Option<Vec<u8>> {
        let key = PKey::hmac(&self.0).ok()?;
        let mut signer = Signer::new(MessageDigest::sha256(), &key).ok()?;
        signer.update(body).ok()?;
        signer.sign_to_vec().ok()
    }

    /// `body` with its tag, as stored.
    pub fn seal(&self, body: String) -> Option<Vec<u8>> {
        let mac = hex(&self.tag(body.as_bytes())?);
        serde_json::to_vec(&Tagged { body, mac }).ok()
    }

    /// The body of a stored entry, if its tag verifies under this key.
    pub fn open(&self, stored: &[u8]) -> Option<String> {
        let t: Tagged = serde_json::from_slice(stored).ok()?;
        let want = self.tag(t.body.as_bytes())?;
        let got = unhex(&t.mac)?;
        (got.len() == want.len() && openssl::memcmp::eq(&got, &want)).then_some(t.body)
    }
}

#[derive(Serialize, Deserialize)]
struct Tagged {
    body: String,
    mac: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_binds_the_body_to_the_key() {
        let a = CacheKey(Zeroizing::new(vec![1; 32]));
        let b = CacheKey(Zeroizing::new(vec![2; 32]));
        let sealed = a.seal("{\"head\":\"x\"}".into()).unwrap();
        assert_eq!(a.open(&sealed).as_deref(), Some("{\"head\":\"x\"}"));
        assert_eq!(b.open(&sealed), None, "another user's key");
        let forged = String::from_utf8(sealed).unwrap().replace("\\\"x\\\"", "\\\"y\\\"");
        assert_eq!(a.open(forged.as_bytes()), None, "an edited body");
    }
}
