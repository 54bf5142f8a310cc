//! `kaws admin sign CLUSTER NAME`, run by a primary: the CSR is checked
//! against NAME's fingerprint-pinned OpenPGP key before anything is issued.

use anyhow::{Context as _, Result};

use super::{admin, read};
use crate::cluster::admins::{cert_file, csr_file, rbac_file, rbac_manifest, sig_file};
use crate::cluster::issued::{issued_file, Grant, Issued};
use crate::commands::cluster::{open_cluster, primary_operator};
use crate::context::Ctx;
use crate::error::{failed, refused, UserError};
use crate::identity::{cert, verify};
use crate::name::AdminName;
use crate::pki::{self, csr, inspect, table::Usage};
use crate::repo::{Change, Repo};
use crate::tomlfile::TomlFile;

pub fn sign(ctx: &Ctx, cluster: &str, raw: &str, days: u32) -> Result<()> {
    if !(1..=csr::MAX_DAYS).contains(&days) {
        return Err(UserError::usage(format!("--days {days}: between 1 and {}", csr::MAX_DAYS)).into());
    }
    let (crate::commands::Opened { repo, admins, .. }, loaded) = open_cluster(ctx, cluster, true)?;
    let (name, admin) = admin(&admins, raw)?;
    let op = primary_operator(ctx, &repo, &admins, &loaded)?;
    let actor = op.name().cloned().context("a primary is an administrator")?;
    cert::check_usable(&admin.cert, &ctx.policy, ctx.now).map_err(|e| {
        refused(format!("{name}'s OpenPGP certificate is not usable now: {e}"))
            .hint("their key must be valid to bind a CSR; `kaws key update` with a renewed certificate")
    })?;
    let missing = || {
        failed(format!("{name} has not requested a certificate for {}", loaded.name))
            .hint(format!("{name} runs `kaws admin create {} {name}`", loaded.name))
            .into()
    };
    // A name given to another key holder since the last certificate (a
    // rename): the binding is by name, so the primary decides knowingly.
    if let Some(before) = repo.read_toml::<Issued>(&loaded.path(&issued_file(&name)))? {
        if before.fingerprint != admin.fingerprint {
            return Err(refused(format!(
                "{}/{}: {name}'s certificate was issued to {}, and the administrator named {name} now is {} (renamed since?)",
                loaded.name,
                issued_file(&name),
                before.fingerprint,
                admin.fingerprint
            ))
            .hint(format!(
                "check with your team who {name} is; to grant the new holder access, first `kaws admin revoke {} {name}`, then sign again",
                loaded.name
            ))
            .into());
        }
    }
    let csr_bytes = read(&repo, &loaded, &csr_file(&name), missing)?;
    let sig_bytes = read(&repo, &loaded, &sig_file(&name), missing)?;

    verify::detached(&csr_bytes, &sig_bytes, &admin.cert, &ctx.policy, ctx.now).map_err(|e| {
        refused(format!("{}/{}: {e}", loaded.name, csr_file(&name)))
            .hint(format!("{name} signs the exact CSR with their own key ({}); nothing was issued", admin.fingerprint))
    })?;
    let csr_pem = String::from_utf8(csr_bytes).map_err(|_| refused("the CSR is not PEM text"))?;
    let spki = csr::check_request(&csr_pem, name.as_str())
        .map_err(|e| refused(format!("{}: {e}", csr_file(&name))).hint("nothing was issued"))?;
    if let Some(owner) = spki_owner(&repo, &name, &spki)? {
        return Err(refused(format!("{name}'s CSR reuses the public key of {owner}"))
            .hint(format!("{name} makes a fresh key with `kaws admin create`"))
            .into());
    }

    let alg = loaded.spec.key_algorithm;
    let ca_pem = String::from_utf8(read(&repo, &loaded, "pki/ca.crt", || failed("pki/ca.crt is missing").into())?)?;
    let ca_key = crate::commands::cluster::open_checked(ctx, &repo, &loaded, &op, "pki/ca.key.pgp")?;
    let ca = pki::authority(alg, ca_pem.clone(), std::str::from_utf8(&ca_key).context("CA key is not PEM")?)?;
    let cert_pem = csr::issue_admin(&csr_pem, name.as_str(), alg, &ca, ctx.now, days)?;
    let expect = inspect::Expect {
        ca: false,
        common_name: name.as_str(),
        organization: None,
        usages: &[Usage::ClientAuth],
        sans: &[],
        spki: &spki,
    };
    inspect::check(&cert_pem, &ca_pem, &expect)
        .map_err(|p| anyhow::anyhow!("the issued certificate fails its own checks: {}", p.join("; ")))?;

    let facts = inspect::facts(&cert_pem)?;
    let issued_at = crate::context::rfc3339(ctx.now);
    let granter = op.fingerprint();
    let grant = Grant {
        cluster: &loaded.name,
        name: &name,
        holder: &admin.fingerprint,
        granted_by: &granter,
        at: &issued_at,
        key: &facts.spki,
        until: facts.not_after,
    };
    let grant_signature = op.sign_detached(grant.statement().as_bytes()).context("signing the grant")?;
    let record = Issued {
        name: name.clone(),
        fingerprint: admin.fingerprint.clone(),
        serial: facts.serial,
        sha256: facts.sha256,
        signed_by: granter.clone(),
        issued_at: issued_at.clone(),
        reissued_by: None,
        granted_until: facts.not_after,
        grant_signature,
    };
    let mut change = Change::default();
    change
        .write(loaded.path(&cert_file(&name)), cert_pem)
        .write(loaded.path(&issued_file(&name)), record.to_toml())
        .write(loaded.path(&rbac_file(&name)), rbac_manifest(&name));
    let message = format!(
        "kaws admin sign: certificate for {name} on {} ({days} days)\n\nCSR signature verified against {}\nSigned by: {actor} ({})\n",
        loaded.name,
        admin.fingerprint,
        op.fingerprint()
    );
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &actor), &op)?.context("nothing changed")?;
    println!("Issued {name}'s certificate for {} ({days} days) in commit {oid}", loaded.name);
    println!("Apply the binding in the cluster: kubectl apply -f {}", loaded.path(&rbac_file(&name)));
    println!("Then {name} runs: kaws admin install {} {name}", loaded.name);
    Ok(())
}

/// Who else in the repository holds this public key, if anyone: another
/// administrator's CSR or certificate, or any cluster certificate or
/// service-account key, in any cluster.
fn spki_owner(repo: &Repo, name: &AdminName, spki: &[u8]) -> Result<Option<String>> {
    let own = [csr_file(name), cert_file(name)];
    crate::commands::cluster::public_key_holder(repo, spki, |_, path| own.iter().any(|o| o == path))
}
