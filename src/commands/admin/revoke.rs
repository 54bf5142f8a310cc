//! `kaws admin revoke CLUSTER NAME`, run by a primary.

use crate::tomlfile::TomlFile;
use anyhow::{Context as _, Result};

use super::{admin, read};
use crate::cluster::admins::{
    binding_name, cert_file, csr_file, key_file, rbac_file, sig_file, Revoked, RevokedCert, REVOKED_FILE,
};
use crate::commands::cluster::{open_cluster, primary_operator};
use crate::context::Ctx;
use crate::error::failed;
use crate::pki::inspect;
use crate::repo::Change;

pub fn revoke(ctx: &Ctx, cluster: &str, raw: &str) -> Result<()> {
    let (crate::commands::Opened { repo, admins, .. }, loaded) = open_cluster(ctx, cluster, true)?;
    let (name, _) = admin(&admins, raw)?;
    let op = primary_operator(ctx, &repo, &admins, &loaded)?;
    let actor = op.name().cloned().context("a primary is an administrator")?;
    let pem = read(&repo, &loaded, &cert_file(&name), || {
        failed(format!("{name} holds no certificate for {}", loaded.name)).hint("see `kaws admin list`").into()
    })?;
    let facts = inspect::facts(&String::from_utf8_lossy(&pem)).context("reading the certificate")?;

    let mut revoked: Revoked = repo.read_toml(&loaded.path(REVOKED_FILE))?.unwrap_or_default();
    revoked.entries.push(RevokedCert {
        name: name.clone(),
        serial: facts.serial.clone(),
        sha256: facts.sha256.clone(),
        revoked_at: crate::context::rfc3339(ctx.now),
        revoked_by: actor.clone(),
    });
    let mut change = Change::default();
    change.write(loaded.path(REVOKED_FILE), revoked.to_toml());
    let record = crate::cluster::issued::issued_file(&name);
    for rel in [cert_file(&name), record, csr_file(&name), sig_file(&name), key_file(&name), rbac_file(&name)] {
        change.remove(loaded.path(&rel));
    }
    let message = format!(
        "kaws admin revoke: {name} on {} (serial {})\n\nRevoked by: {actor} ({})\n",
        loaded.name,
        facts.serial,
        op.fingerprint()
    );
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &actor), &op)?.context("nothing changed")?;
    println!("Revoked {name}'s certificate for {} (serial {}) in commit {oid}", loaded.name, facts.serial);
    println!("Remove the binding from the live cluster now:");
    println!("  kubectl delete clusterrolebinding {}", binding_name(&name));
    println!(
        "The certificate stays cryptographically valid until it expires; to end it before then, rotate the CA: \
         kaws cluster reencrypt {} --primary ... --rotate",
        loaded.name
    );
    Ok(())
}
