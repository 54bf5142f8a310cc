//! Opening a cluster's sealed files. A sealed file is only an OpenPGP
//! message to the primaries: anyone who can commit can replace it with a key
//! of their own encrypted to a primary. So nothing opened is used, resealed
//! or re-certified before it is checked against its committed public half:
//! `pki/X.key.pgp` against `pki/X.crt` (`sa` against `pki/sa.pub`),
//! `admins/NAME.key.pgp` against NAME's signed CSR, the bootstrap token
//! against its format. A mismatch is a refusal naming both files.

use anyhow::{Context as _, Result};
use zeroize::Zeroizing;

use super::Loaded;
use crate::cluster::token;
use crate::context::Ctx;
use crate::error::refused;
use crate::pki::issue;
use crate::repo::Repo;
use crate::vault::KeyRing;

/// The committed public half a sealed file must match.
enum Half {
    /// SPKI DER, and the file it came from.
    PublicKey(Vec<u8>, String),
    Token,
}

fn public_half(repo: &Repo, loaded: &Loaded, rel: &str) -> Result<Half> {
    if rel == token::SEALED_FILE {
        return Ok(Half::Token);
    }
    // The file holding the public half, and whether it is a cluster key.
    let (file, cluster_key) = if let Some(path) = rel.strip_prefix("pki/").and_then(|p| p.strip_suffix(".key.pgp")) {
        (crate::cluster::rotate::public_file(path), true)
    } else if let Some(name) = rel.strip_prefix("admins/").and_then(|p| p.strip_suffix(".key.pgp")) {
        (format!("admins/{name}.csr"), false)
    } else {
        return Err(refused(format!("{} is not a file kaws seals; it is not opened", loaded.path(rel)))
            .hint("remove it in a commit signed by a primary")
            .into());
    };
    let bytes = repo.read_head(&loaded.path(&file))?.with_context(|| format!("{} is missing", loaded.path(&file)))?;
    let spki = crate::pki::public_key_in(&file, &String::from_utf8_lossy(&bytes))
        .ok_or_else(|| refused(format!("{} holds no readable public key", loaded.path(&file))))?;
    if cluster_key {
        if let Some(other) = foreign_owner(repo, loaded, &spki)? {
            return Err(refused(format!(
                "{} is the key of {other}, another cluster's: a copied cluster could hand it to other primaries",
                loaded.path(rel)
            ))
            .hint("every cluster has its own keys; remove the copy in a commit signed by a primary")
            .into());
        }
    }
    Ok(Half::PublicKey(spki, file))
}

/// Which other cluster's certificate, CSR or public key carries `spki`, if any.
fn foreign_owner(repo: &Repo, loaded: &Loaded, spki: &[u8]) -> Result<Option<String>> {
    public_key_holder(repo, spki, |dir, _| dir == loaded.name.as_str())
}

/// The first file under `clusters/` (a certificate, CSR or PEM public key)
/// that carries `spki`, skipping `(cluster, path)` pairs `skip` names.
pub(crate) fn public_key_holder(repo: &Repo, spki: &[u8], skip: impl Fn(&str, &str) -> bool) -> Result<Option<String>> {
    for dir in repo.list_head_dirs(crate::repo::CLUSTERS_DIR)? {
        for (path, bytes) in repo.walk_head(&format!("{}/{dir}", crate::repo::CLUSTERS_DIR))? {
            if skip(&dir, &path) {
                continue;
            }
            if crate::pki::public_key_in(&path, &String::from_utf8_lossy(&bytes)).as_deref() == Some(spki) {
                return Ok(Some(format!("{}/{dir}/{path}", crate::repo::CLUSTERS_DIR)));
            }
        }
    }
    Ok(None)
}

/// Opens `rel` (relative to the cluster directory) with `ring`, and checks
/// it against its committed public half before returning it.
pub(crate) fn open_checked(
    ctx: &Ctx,
    repo: &Repo,
    loaded: &Loaded,
    ring: &dyn KeyRing,
    rel: &str,
) -> Result<Zeroizing<Vec<u8>>> {
    let half = public_half(repo, loaded, rel)?;
    let sealed = repo.read_head(&loaded.path(rel))?.with_context(|| format!("{} is missing", loaded.path(rel)))?;
    let plain =
        crate::vault::open(&sealed, ring, &ctx.policy).with_context(|| format!("opening {}", loaded.path(rel)))?;
    let mismatch = |what: String| {
        refused(format!("{}: {what}; it was replaced or corrupted, and is not used", loaded.path(rel))).hint(format!(
            "nothing was issued or changed; find who changed it (git log -p -- {}) and restore it from a reviewed commit, or rotate with `kaws cluster reencrypt {} --rotate`",
            loaded.path(rel),
            loaded.name
        ))
    };
    match half {
        Half::Token => {
            if !std::str::from_utf8(&plain).is_ok_and(token::is_valid) {
                return Err(mismatch("it does not hold a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})".into()).into());
            }
        }
        Half::PublicKey(spki, file) => {
            let pem = std::str::from_utf8(&plain).map_err(|_| mismatch("it does not hold a PEM key".into()))?;
            let actual = issue::public_key_of(loaded.spec.key_algorithm, pem)
                .map_err(|_| mismatch(format!("it does not hold a {} key", loaded.spec.key_algorithm)))?;
            if actual != spki {
                return Err(mismatch(format!("it does not hold the private key of {}", loaded.path(&file))).into());
            }
        }
    }
    Ok(plain)
}
