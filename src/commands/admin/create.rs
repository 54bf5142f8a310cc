//! `kaws admin create CLUSTER NAME`, run by NAME.

use anyhow::{Context as _, Result};

use super::{admin, require_self};
use crate::cluster::admins::{cert_file, csr_file, key_file, sig_file};
use crate::commands::cluster::open_cluster;
use crate::context::Ctx;
use crate::error::{failed, refused};
use crate::identity::cert;
use crate::pki::csr;
use crate::repo::Change;

pub fn create(ctx: &Ctx, cluster: &str, raw: &str) -> Result<()> {
    let (crate::commands::Opened { repo, admins, .. }, loaded) = open_cluster(ctx, cluster, true)?;
    let (name, admin) = admin(&admins, raw)?;
    let op = ctx.operator(&repo, &admins)?;
    require_self(&op, admin, "create")?;
    cert::check_usable(&admin.cert, &ctx.policy, ctx.now)
        .map_err(|e| refused(format!("{name}'s certificate is not usable: {e}")))?;
    for rel in [csr_file(&name), cert_file(&name)] {
        if repo.read_head(&loaded.path(&rel))?.is_some() {
            return Err(failed(format!("{name} already has credentials for {} ({rel})", loaded.name))
                .hint(format!("a primary revokes them first: `kaws admin revoke {} {name}`", loaded.name))
                .into());
        }
    }

    let (csr_pem, key_pem) = csr::new_request(loaded.spec.key_algorithm, name.as_str())?;
    let sealed = crate::vault::seal_all(&[key_pem.as_bytes()], &[&admin.cert], &ctx.policy, ctx.now)
        .context("sealing the new key to its owner")?;
    let signature = op.sign_detached(csr_pem.as_bytes()).context("signing the CSR")?;
    let mut change = Change::default();
    change
        .write(loaded.path(&key_file(&name)), sealed.into_iter().next().expect("one"))
        .write(loaded.path(&csr_file(&name)), csr_pem)
        .write(loaded.path(&sig_file(&name)), signature);
    let message = format!(
        "kaws admin create: {} requests a certificate for {}\n\nAdministrator: {name} ({})\n",
        name, loaded.name, admin.fingerprint
    );
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &name), &op)?.context("nothing changed")?;
    println!("Requested a certificate for {name} on {} in commit {oid}", loaded.name);
    println!("Next: a primary of {} runs `kaws admin sign {} {name}`", loaded.name, loaded.name);
    Ok(())
}
