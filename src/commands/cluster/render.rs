//! `kaws cluster render` (user-data for review, tests and provisioning) and
//! `kaws cluster token` (the bootstrap token's lifetime).

use std::path::Path;

use crate::tomlfile::TomlFile;
use anyhow::{Context as _, Result};

use super::{open_cluster, primary_operator, Loaded};
use crate::cli::RenderRole;
use crate::cluster::rotation::{Record, State, ROTATION_FILE};
use crate::cluster::token;
use crate::commands::Opened;
use crate::context::Ctx;
use crate::error::{failed, refused, UserError};
use crate::name::DnsName;
use crate::pki::inspect;
use crate::render::{self, Context, Role};
use crate::repo::{Change, Repo};

/// Every public certificate, bundle and key under the cluster's `pki/` at
/// HEAD, with the bundles checked against the rotation's phase (and made
/// from the CA when none is on file), and the cluster CA bundle's pins.
pub(crate) fn verified_pki(repo: &Repo, loaded: &Loaded) -> Result<(Vec<(String, String)>, Vec<String>)> {
    let mut pki = Vec::new();
    for (path, bytes) in repo.walk_head(&loaded.path("pki"))? {
        if path.ends_with(".crt") || path.ends_with(".pub") {
            pki.push((path, String::from_utf8(bytes).context("a certificate is not text")?));
        }
    }
    let record: Record = repo.read_toml(&loaded.path(ROTATION_FILE))?.unwrap_or_default();
    let ca_hashes = trust_bundles(loaded, &record, &mut pki)?;
    Ok((pki, ca_hashes))
}

/// The CAs a client of the cluster's API trusts now: the cluster CA
/// bundle, as the phase rules of [`trust_bundles`] allow it (a bundle
/// planted beside a cluster that is not rotating is refused).
pub(crate) fn ca_bundle(repo: &Repo, loaded: &Loaded) -> Result<String> {
    let (pki, _) = verified_pki(repo, loaded)?;
    pki.into_iter().find(|(p, _)| p == "ca-bundle.crt").map(|(_, t)| t).context("the cluster CA bundle is missing")
}

/// The public inputs of a render, from HEAD.
pub(crate) fn public_inputs(
    repo: &Repo,
    loaded: &Loaded,
    admins: &crate::identity::Admins,
) -> Result<render::context::Public> {
    let (pki, ca_hashes) = verified_pki(repo, loaded)?;
    // Bindings are rendered for the administrators who hold a certificate
    // kaws issued (see `cluster::issued`); no manifest text is copied from
    // the repository, and a file that does not count is named and skipped.
    let ca = pki.iter().find(|(p, _)| p == "ca.crt").map(|(_, t)| t.as_str()).context("pki/ca.crt is missing")?;
    let found = crate::commands::admin::held(repo, loaded, admins, ca)?;
    found.warn(&loaded.name);
    let admins = found.held.into_iter().map(|h| h.name).collect();
    let record: token::Record =
        repo.read_toml(&loaded.path(token::RECORD_FILE))?.context("bootstrap-token.toml is missing")?;
    Ok(render::context::Public { pki, admins, ca_hashes, token_expires: record.expires })
}

/// Completes and checks the trust bundles among `pki` (paths under pki/),
/// against the rotation's phase: a cluster not rotating trusts its CAs (and
/// service-account key) alone, and one that never rotated has no bundle
/// files; a staged rotation trusts the current and the staged one; a
/// promoted rotation the current and the one it retired (by the SHA-256
/// `rotation.toml` records; for the service-account key, one other key).
/// Returns the SHA-256 pins of the cluster CA bundle's keys (hex), the
/// current CA's first, which joiners accept (any match).
fn trust_bundles(loaded: &Loaded, record: &Record, pki: &mut Vec<(String, String)>) -> Result<Vec<String>> {
    use crate::pki::table::{CaId, SA};
    let find = |pki: &[(String, String)], p: &str| pki.iter().find(|(path, _)| path == p).map(|(_, t)| t.clone());
    let bad = |file: &str, what: String| {
        refused(format!("{}: {what}", loaded.path(&format!("pki/{file}"))))
            .hint("restore it from a reviewed commit (git log -p), or finish the rotation; nothing was rendered")
    };
    let retired = |ca: &str| -> Vec<String> {
        let last = record.rotations.last().map(|r| r.retired_ca.as_slice()).unwrap_or_default();
        last.iter().filter(|r| r.path == ca).map(|r| r.sha256.clone()).collect()
    };
    let mut ca_hashes = Vec::new();
    let kinds = CaId::ALL.iter().map(|id| (id.path().to_owned(), "crt", format!("{}.crt", id.bundle_path())));
    for (path, ext, bundle) in kinds.chain([(SA.to_owned(), "pub", "sa-bundle.pub".to_owned())]) {
        let own = format!("{path}.{ext}");
        let current = find(pki, &own).ok_or_else(|| failed(format!("pki/{own} is missing")))?;
        let text = find(pki, &bundle).unwrap_or_else(|| current.clone());
        // (key, SHA-256 of the certificate) of each PEM block of a file.
        let entries = |file: &str, text: &str| -> Result<Vec<(Vec<u8>, String)>> {
            let blocks = pem::parse_many(text).map_err(|e| bad(file, format!("not PEM ({e})")))?;
            blocks
                .iter()
                .map(|p| match (p.tag(), ext) {
                    ("CERTIFICATE", "crt") => {
                        let f = inspect::facts_der(p.contents()).map_err(|e| bad(file, e.to_string()))?;
                        Ok((f.spki, f.sha256))
                    }
                    ("PUBLIC KEY", "pub") => {
                        Ok((p.contents().to_vec(), crate::cluster::rotate::key_sha256(p.contents())))
                    }
                    (tag, _) => Err(bad(file, format!("holds a {tag}")).into()),
                })
                .collect()
        };
        let keys = entries(&bundle, &text)?;
        let own_key = entries(&own, &current)?.into_iter().next().ok_or_else(|| bad(&own, "is empty".into()))?.0;
        let others: Vec<&(Vec<u8>, String)> = keys.iter().filter(|(k, _)| *k != own_key).collect();
        let other_ok = |(key, sha): &(Vec<u8>, String)| -> Result<bool> {
            Ok(match record.state {
                State::Settled => false,
                State::Staged => {
                    let file = format!("{}/{path}.{ext}", crate::cluster::rotate::STAGED);
                    let text = find(pki, &file).ok_or_else(|| failed(format!("pki/{file} is missing")))?;
                    entries(&file, &text)?.first().is_some_and(|(k, _)| k == key)
                }
                // The retired key by its recorded SHA-256: the service-account
                // key's too, never any other key.
                // (A rotation promoted by a kaws that recorded no retired
                // service-account key: one other key, as that kaws allowed.)
                State::Promoted => retired(&path).contains(sha) || (ext == "pub" && retired(&path).is_empty()),
            })
        };
        let want = if record.state == State::Settled { 1 } else { 2 };
        if keys.len() != want || others.len() != want - 1 || !keys.iter().any(|(k, _)| *k == own_key) {
            return Err(bad(
                &bundle,
                format!(
                    "while the rotation is {}, it holds pki/{own}{}; this one holds {} keys",
                    record.state.label(),
                    if want == 2 { " and one other" } else { " alone" },
                    keys.len()
                ),
            )
            .into());
        }
        for other in others {
            if !other_ok(other)? {
                return Err(bad(
                    &bundle,
                    format!(
                        "it trusts a key that is neither pki/{own} nor the one the {} rotation {}",
                        record.state.label(),
                        if record.state == State::Staged { "staged" } else { "retired" }
                    ),
                )
                .into());
            }
        }
        if path == "ca" {
            let mut ordered = vec![own_key.clone()];
            ordered.extend(keys.into_iter().map(|(k, _)| k).filter(|k| *k != own_key));
            ca_hashes =
                ordered.iter().map(|k| openssl::sha::sha256(k).iter().map(|b| format!("{b:02x}")).collect()).collect();
        }
        if find(pki, &bundle).is_none() {
            pki.push((bundle, current));
        }
    }
    Ok(ca_hashes)
}

/// The public SSM parameters (name, value) apply writes: each certificate,
/// bundle and public key a role installs, re-encoded from its parsed PEM
/// blocks, and for each role the trust generation they make with the
/// SHA-256 of that role's files (`GENERATION DIGEST`): an agent installs
/// nothing that is not exactly what the generation names (an apply under
/// way has written some files and not others).
pub(crate) fn public_parameters(loaded: &Loaded, public: &render::context::Public) -> Result<Vec<(String, String)>> {
    use crate::aws::resources::ssm::{parameters, Source};
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, source) in parameters(&loaded.spec) {
        let value = match source {
            Source::Sealed(_) => continue,
            Source::Public(path) => {
                let text = public.pki.iter().find(|(p, _)| *p == path).map(|(_, t)| t);
                let text = text.ok_or_else(|| failed(format!("the public certificate pki/{path} is missing")))?;
                let what = format!("pki/{path}");
                crate::text::check_plain(&what, text)
                    .map_err(|e| render::context::ContextError::from(e).into_user())?;
                let value = render::context::public_pem(&what, text).map_err(|e| e.into_user())?;
                if value.len() > SSM_LIMIT {
                    return Err(failed(format!(
                        "pki/{path}: {} bytes is over SSM's 4 KiB standard parameter limit",
                        value.len()
                    ))
                    .into());
                }
                value
            }
            Source::Generation => {
                let role = name.strip_suffix("/generation").expect("a generation parameter's name");
                let files =
                    out.iter().filter_map(|(n, v)| Some((n.strip_prefix(&format!("{role}/pki/"))?, v.as_str())));
                format!("{} {}", render::context::generation(&public.pki), files_digest(files))
            }
        };
        out.push((name, value));
    }
    Ok(out)
}

/// SHA-256 (hex) of files (path, text) by path, sorted, each text without
/// trailing white space; as the refresh agent computes it (`shared_digest`).
fn files_digest<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let sha = render::context::files_sha256(files.map(|(p, t)| (p, t.trim_end())));
    sha.iter().map(|b| format!("{b:02x}")).collect()
}

/// SSM's limit on a Standard parameter's value.
pub(crate) const SSM_LIMIT: usize = 4096;

/// `kaws cluster render --parameters`: what the instances read from SSM.
pub fn render_parameters(ctx: &Ctx, raw: &str) -> Result<()> {
    let (Opened { repo, admins, .. }, loaded) = open_cluster(ctx, raw, false)?;
    let public = public_inputs(&repo, &loaded, &admins)?;
    let values: std::collections::BTreeMap<String, String> = public_parameters(&loaded, &public)?.into_iter().collect();
    println!("{}", serde_json::to_string_pretty(&values)?);
    Ok(())
}

pub fn render(
    ctx: &Ctx,
    raw: &str,
    role: RenderRole,
    index: Option<u32>,
    endpoint: Option<&str>,
    out: Option<&Path>,
) -> Result<()> {
    let (Opened { repo, admins, .. }, loaded) = open_cluster(ctx, raw, false)?;
    let role = match (role, index) {
        (RenderRole::Master, Some(i)) => Role::Master(i),
        (RenderRole::Master, None) => return Err(UserError::usage("--role master needs --index I").into()),
        (_, Some(_)) => return Err(UserError::usage("--index goes with --role master only").into()),
        (RenderRole::Bastion, None) => Role::Bastion,
        (RenderRole::Node, None) => Role::Node,
    };
    let endpoint: DnsName = match endpoint {
        Some(e) => e.parse().map_err(|e| UserError::usage(format!("--endpoint: {e}")))?,
        None => loaded.spec.api_name().parse().expect("the API name of a valid spec is a DNS name"),
    };
    let public = public_inputs(&repo, &loaded, &admins)?;
    let context = Context::new(&loaded.spec, role, &endpoint, &public).map_err(|e| e.into_user())?;
    let text = render::user_data(&context).context("rendering the user-data")?;
    match out {
        None => print!("{text}"),
        Some(path) => {
            let bytes = render::encode(&text)?;
            if bytes.len() > render::USER_DATA_LIMIT {
                return Err(failed(format!(
                    "the user-data is {} bytes even compressed; EC2 takes at most {}",
                    bytes.len(),
                    render::USER_DATA_LIMIT
                ))
                .into());
            }
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} bytes of user-data ({} as text) to {}", bytes.len(), text.len(), path.display());
        }
    }
    Ok(())
}

pub fn token(ctx: &Ctx, raw: &str, renew: Option<u32>) -> Result<()> {
    let (Opened { repo, admins, .. }, loaded) = open_cluster(ctx, raw, renew.is_some())?;
    let now = ctx.unix_now();
    let Some(hours) = renew else {
        let record: token::Record =
            repo.read_toml(&loaded.path(token::RECORD_FILE))?.context("bootstrap-token.toml is missing")?;
        let when = crate::context::rfc3339_unix(record.expires);
        if record.expires <= now {
            return Err(failed(format!("the bootstrap token of {} expired at {when}", loaded.name))
                .hint(format!("renew it: kaws cluster token {} --renew", loaded.name))
                .into());
        }
        println!("The bootstrap token of {} expires at {when} ({} hours left)", loaded.name, record.hours_left(now));
        return Ok(());
    };
    if !(1..=24 * 365).contains(&hours) {
        return Err(UserError::usage("--ttl-hours: between 1 and 8760").into());
    }
    let op = primary_operator(ctx, &repo, &admins, &loaded)?;
    let actor = op.name().cloned().context("a primary is an administrator")?;
    let record = super::init::token_record(ctx, hours)?;
    let mut change = Change::default();
    change.write(loaded.path(token::RECORD_FILE), record.to_toml());
    let message = format!(
        "kaws cluster token: {} bootstrap token renewed for {hours} hours\n\nBy: {actor} ({})\n",
        loaded.name,
        op.fingerprint()
    );
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &actor), &op)?.context("nothing changed")?;
    println!("Renewed the bootstrap token of {} for {hours} hours in commit {oid}", loaded.name);
    // The token ID (its first six characters) is public by design: it names
    // the Secret; the secret half never leaves this process.
    let value = super::open_checked(ctx, &repo, &loaded, &op, token::SEALED_FILE)?;
    let value = std::str::from_utf8(&value)
        .ok()
        .filter(|v| token::is_valid(v))
        .context("the sealed bootstrap token is malformed")?;
    let expires = crate::context::rfc3339_unix(record.expires);
    println!("Extend it in the live cluster:");
    println!(
        "  kubectl -n kube-system patch secret bootstrap-token-{} --type merge -p '{{\"stringData\":{{\"expiration\":\"{expires}\"}}}}'",
        &value[..6]
    );
    Ok(())
}
