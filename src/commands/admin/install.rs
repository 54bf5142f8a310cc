//! `kaws admin install` (a kubeconfig entry) and `kaws admin credential`
//! (the exec plugin kubectl runs), both run by NAME.

use anyhow::{Context as _, Result};

use super::{admin, read, require_self};
use crate::cluster::admins::{cert_file, key_file, Revoked, REVOKED_FILE};
use crate::commands::cluster::{open_cluster, Loaded};
use crate::context::Ctx;
use crate::error::{failed, refused};
use crate::kubeconfig::{self, Entry, UserAuth};
use crate::name::AdminName;
use crate::operator::Operator;
use crate::pki::{inspect, issue};
use crate::repo::Repo;

/// NAME's certificate, refusing one that is missing, expired, revoked, or
/// not one kaws issued to NAME under the cluster CA (see `cluster::issued`).
fn current_cert(
    ctx: &Ctx,
    (repo, admins): (&Repo, &crate::identity::Admins),
    loaded: &Loaded,
    name: &AdminName,
) -> Result<(String, inspect::Facts)> {
    let found = super::held_at_head(repo, loaded, admins)?;
    let Some(held) = found.held.into_iter().find(|h| h.name == *name) else {
        let file = format!("{name}.crt");
        return Err(match found.ignored.into_iter().find(|(f, _)| *f == file) {
            Some((_, why)) => refused(format!("{}/{}: {why}", loaded.name, cert_file(name)))
                .hint(format!("a primary runs `kaws admin sign {} {name}` again", loaded.name)),
            None => failed(format!("{name} has no certificate for {}", loaded.name))
                .hint(format!("a primary runs `kaws admin sign {} {name}` (after `kaws admin create`)", loaded.name)),
        }
        .into());
    };
    let (pem, facts) = (held.pem, held.facts);
    if let Some(revoked) = repo.read_toml::<Revoked>(&loaded.path(REVOKED_FILE))? {
        if revoked.contains_serial(&facts.serial) {
            return Err(refused(format!(
                "{name}'s certificate for {} (serial {}) is revoked",
                loaded.name, facts.serial
            ))
            .into());
        }
    }
    let now = ctx.unix_now();
    if facts.not_after <= now {
        return Err(failed(format!("{name}'s certificate for {} expired", loaded.name))
            .hint(format!("a primary runs `kaws admin sign {} {name}` again", loaded.name))
            .into());
    }
    Ok((pem, facts))
}

/// NAME's private key, opened by the operator (who must be NAME) and
/// checked against the certificate.
fn private_key(
    ctx: &Ctx,
    repo: &Repo,
    loaded: &Loaded,
    name: &AdminName,
    op: &Operator,
    spki: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let sealed = read(repo, loaded, &key_file(name), || failed(format!("{} is missing", key_file(name))).into())?;
    let key = crate::vault::open(&sealed, op, &ctx.policy).with_context(|| format!("opening {}", key_file(name)))?;
    let pem = std::str::from_utf8(&key).context("the key is not PEM")?;
    if issue::public_key_of(loaded.spec.key_algorithm, pem)? != spki {
        return Err(refused(format!("{} does not match {name}'s certificate", key_file(name))).into());
    }
    Ok(key)
}

pub fn install(ctx: &Ctx, cluster: &str, raw: &str, path: Option<&std::path::Path>, embed_key: bool) -> Result<()> {
    let (crate::commands::Opened { repo, admins, .. }, loaded) = open_cluster(ctx, cluster, false)?;
    let (name, admin) = admin(&admins, raw)?;
    let (cert_pem, facts) = current_cert(ctx, (&repo, &admins), &loaded, &name)?;
    // The CAs the rotation's phase allows (a bundle on file is checked
    // against it, as for the instances): during a rotation the current
    // and the staged or retired one.
    let ca_pem = crate::commands::cluster::ca_bundle(&repo, &loaded)?.into_bytes();
    let entry_name = format!("kaws-{}-{name}", loaded.name);

    let user = if embed_key {
        let op = ctx.operator(&repo, &admins)?;
        require_self(&op, admin, "install --embed-key")?;
        let key_pem = private_key(ctx, &repo, &loaded, &name, &op, &facts.spki)?;
        UserAuth::Embedded { cert_pem: cert_pem.into_bytes(), key_pem }
    } else {
        let exe = std::env::current_exe().context("locating the kaws binary for the exec plugin")?;
        let mut args = vec!["--repo".to_owned(), repo.root().display().to_string()];
        if let crate::operator::KeySource::File(p) = ctx.key_source() {
            args.push("--secret-key".into());
            args.push(std::path::absolute(&p)?.display().to_string());
        }
        if let Some(n) = &ctx.as_name {
            args.extend(["--as".to_owned(), n.to_string()]);
        }
        args.extend(["admin", "credential", loaded.name.as_str(), name.as_str()].map(String::from));
        UserAuth::Exec { command: exe.display().to_string(), args }
    };
    // Without a public zone, the API is reached at the load balancer's name
    // (from `cluster apply`'s outputs) and verified as api.CLUSTER.DOMAIN.
    let outputs: Option<crate::commands::cluster::Outputs> =
        repo.read_toml(&loaded.path(crate::commands::cluster::OUTPUTS_FILE))?;
    let (server, tls_server_name) = match outputs {
        Some(o) if loaded.spec.aws.hosted_zone.is_none() => {
            let host = o.checked_endpoint(&loaded.spec).map_err(|why| {
                refused(why).hint(format!(
                    "restore clusters/{0}/outputs.toml from a reviewed commit, or run `kaws cluster apply {0}` again",
                    loaded.name
                ))
            })?;
            (host.to_string(), Some(loaded.spec.api_name()))
        }
        _ => (loaded.spec.api_name(), None),
    };
    let entry =
        Entry { name: entry_name.clone(), server: format!("https://{server}:6443"), tls_server_name, ca_pem, user };
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => kubeconfig::default_path()?,
    };
    let existing = match std::fs::read_to_string(&path) {
        Ok(t) => Some(zeroize::Zeroizing::new(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let merged = kubeconfig::merge(existing.as_deref().map(String::as_str), &entry)
        .with_context(|| format!("merging into {}", path.display()))?;
    kubeconfig::write_private(&path, &merged)?;
    println!("Added context {entry_name} to {} (mode 0600)", path.display());
    if embed_key {
        eprintln!("warning: {} now holds {name}'s private key unencrypted", path.display());
    }
    println!("Try: kubectl --context {entry_name} get --raw /version");
    Ok(())
}

pub fn credential(ctx: &Ctx, cluster: &str, raw: &str) -> Result<()> {
    let (crate::commands::Opened { repo, admins, .. }, loaded) = open_cluster(ctx, cluster, false)?;
    let (name, admin) = admin(&admins, raw)?;
    let (cert_pem, facts) = current_cert(ctx, (&repo, &admins), &loaded, &name)?;
    let op = ctx.operator(&repo, &admins)?;
    require_self(&op, admin, "credential")?;
    let key = private_key(ctx, &repo, &loaded, &name, &op, &facts.spki)?;
    let key = std::str::from_utf8(&key).context("the key is not PEM")?;
    let expires = crate::context::rfc3339_unix(facts.not_after);
    // Built by hand into one pre-sized zeroizing buffer, so no copy of the
    // key outlives this function.
    let quoted_key = zeroize::Zeroizing::new(serde_json::to_string(key)?);
    let mut out = zeroize::Zeroizing::new(String::with_capacity(quoted_key.len() + cert_pem.len() * 2 + 512));
    out.push_str(
        r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"#,
    );
    out.push_str(&serde_json::to_string(&cert_pem)?);
    out.push_str(r#","clientKeyData":"#);
    out.push_str(&quoted_key);
    out.push_str(r#","expirationTimestamp":"#);
    out.push_str(&serde_json::to_string(&expires)?);
    out.push_str("}}");
    println!("{}", out.as_str());
    Ok(())
}
