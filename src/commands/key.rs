//! `kaws key add / update / remove / list`: the administrator set.

use std::path::Path;

use anyhow::{Context as _, Result};
use sequoia_openpgp::serialize::SerializeInto;
use serde::Serialize;

use crate::cli::Output;
use crate::cluster::{Primaries, PRIMARIES_FILE};
use crate::context::{parse_name, Ctx};
use crate::error::{failed, refused};
use crate::identity::{cert, Admins, Fingerprint};
use crate::name::{AdminName, ClusterName};
use crate::operator::Operator;
use crate::repo::{Change, Repo, CLUSTERS_DIR, CONFIG_FILE, PUBKEYS_DIR};

fn read_cert_file(path: &Path) -> Result<sequoia_openpgp::Cert> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    cert::parse_one_public(&bytes).map_err(|e| {
        refused(format!("{} cannot be added: {e}", path.display()))
            .hint("export exactly one public certificate: gpg --export --armor FINGERPRINT > FILE")
            .into()
    })
}

fn open_for_change(ctx: &Ctx) -> Result<(Repo, crate::repo::Config, Admins)> {
    // `open` authenticates HEAD before anything is read.
    let o = super::open(ctx, true)?;
    Ok((o.repo, o.config, o.admins))
}

/// The operator, which must be an administrator.
fn admin_operator(ctx: &Ctx, repo: &Repo, admins: &Admins) -> Result<(Operator, AdminName)> {
    let op = ctx.operator(repo, admins)?;
    let name = op.name().cloned().ok_or_else(|| {
        refused(format!("the operator key {} is not an administrator of this repository", op.fingerprint()))
            .hint("act as an administrator: --as NAME, or --secret-key with an administrator's key")
    })?;
    Ok((op, name))
}

/// The administrator set as it would be with `files` in place of HEAD's
/// `pubkeys/`; a set kaws would refuse to load is refused here.
fn load_candidate(
    ctx: &Ctx,
    names: &std::collections::BTreeMap<AdminName, Fingerprint>,
    files: Vec<(String, Vec<u8>)>,
) -> Result<Admins> {
    Admins::load(names, files, &ctx.policy, ctx.now).map_err(|e| {
        refused(format!("the certificate cannot be accepted: {e}"))
            .hint("every key of a certificate must be its holder's own; export a clean certificate (gpg --export FINGERPRINT)")
            .into()
    })
}

/// Existing administrators whose user ID shares a name or an email with
/// one of `cert`'s: a look-alike asks for a second look.
fn look_alikes(cert: &sequoia_openpgp::Cert, admins: &Admins) -> Vec<String> {
    let parts = |c: &sequoia_openpgp::Cert| -> Vec<String> {
        c.userids()
            .flat_map(|u| {
                let u = u.userid();
                [u.name().ok().flatten().map(str::to_lowercase), u.email_normalized().ok().flatten()]
            })
            .flatten()
            .filter(|s| !s.is_empty())
            .collect()
    };
    let mine = parts(cert);
    admins
        .iter()
        .filter_map(|a| {
            let shared: Vec<String> = parts(&a.cert).into_iter().filter(|p| mine.contains(p)).collect();
            (!shared.is_empty()).then(|| {
                format!("{} ({}) also uses {}", a.name, a.fingerprint, crate::text::escape(&shared.join(", ")))
            })
        })
        .collect()
}

pub fn add(ctx: &Ctx, raw_name: &str, path: &Path, allow_duplicate_uid: bool) -> Result<()> {
    let name: AdminName = parse_name(raw_name, "administrator name")?;
    let (repo, mut config, admins) = open_for_change(ctx)?;
    let cert = cert::bound_only(read_cert_file(path)?, &ctx.policy, ctx.now);
    let fpr = Fingerprint::from(cert.fingerprint());
    cert::check_usable(&cert, &ctx.policy, ctx.now).map_err(|e| {
        refused(format!("the certificate {fpr} in {} is not usable: {e}", path.display())).hint(
            "administrators need a valid, unexpired, unrevoked certificate with a signing key and an encryption subkey",
        )
    })?;
    if let Some(a) = admins.get(&name) {
        return Err(refused(format!("an administrator named {name} exists already ({})", a.fingerprint))
            .hint("choose another name, or `kaws key update` to refresh their certificate")
            .into());
    }
    if let Some(a) = admins.by_fingerprint(&fpr) {
        return Err(refused(format!("the certificate {fpr} is already administrator {}", a.name))
            .hint("use `kaws key update CERTFILE` to merge a newer copy")
            .into());
    }

    // An outsider may propose their own key; the commit then waits for an
    // administrator's signed merge (see README, "Reviewing a new administrator").
    let mut with_candidate = config.admins.clone();
    with_candidate.insert(name.clone(), fpr.clone());
    let mut files = repo.list_head(PUBKEYS_DIR)?;
    files.push((fpr.file_name(), cert::armored(&cert)?));
    let widened = load_candidate(ctx, &with_candidate, files)?;
    let alikes = look_alikes(&cert, &admins);
    if !alikes.is_empty() && !allow_duplicate_uid {
        return Err(refused(format!(
            "the certificate {fpr} has a user ID like an existing administrator's: {}",
            alikes.join("; ")
        ))
        .hint(format!(
            "compare fingerprints with the person out of band; if {fpr} really is a different person's key, add it with --allow-duplicate-uid"
        ))
        .into());
    }
    let op = ctx.operator(&repo, &widened)?;
    let self_proposed = op.fingerprint() == fpr;
    let actor = match admins.by_fingerprint(&op.fingerprint()) {
        Some(a) => a.name.clone(),
        None if self_proposed => name.clone(),
        None => {
            return Err(refused(format!(
                "the operator key {} is neither an administrator nor the key being added",
                op.fingerprint()
            ))
            .hint("an administrator adds others; an outsider may only propose their own key")
            .into())
        }
    };

    config.admins.insert(name.clone(), fpr.clone());
    let mut change = Change::default();
    change
        .write(format!("{PUBKEYS_DIR}/{}", fpr.file_name()), cert::armored(&cert)?)
        .write(CONFIG_FILE, config.to_toml());
    // The new key is nobody's yet (refused above otherwise), so a self-signed add is a proposal.
    let by = if self_proposed { "Proposed by" } else { "Added by" };
    let message = format!("kaws key add: administrator {name} ({fpr})\n\n{by}: {actor} ({})\n", op.fingerprint());
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &actor), &op)?.context("nothing changed")?;
    println!("Added administrator {name} in commit {oid}");
    println!("  fingerprint: {fpr}");
    for u in cert::user_ids(&cert) {
        println!("  user ID (not verified, informational): {u}");
    }
    if self_proposed {
        eprintln!(
            "note: this commit is signed by the new key itself, so it is not authenticated until an \
             existing administrator reviews it and merges it with a signed merge commit (git merge -S)"
        );
    }
    Ok(())
}

pub fn update(ctx: &Ctx, path: &Path) -> Result<()> {
    let (repo, config, admins) = open_for_change(ctx)?;
    let newer = read_cert_file(path)?;
    let fpr = Fingerprint::from(newer.fingerprint());
    let admin = admins.by_fingerprint(&fpr).ok_or_else(|| {
        refused(format!("{fpr} ({}) is not an administrator's certificate", path.display()))
            .hint("add new administrators with `kaws key add NAME CERTFILE`")
    })?;
    let merged =
        admin.cert.clone().merge_public(newer).with_context(|| format!("merging {} into {fpr}", path.display()))?;
    let merged = cert::bound_only(merged, &ctx.policy, ctx.now);
    let mut files: Vec<(String, Vec<u8>)> =
        repo.list_head(PUBKEYS_DIR)?.into_iter().filter(|(f, _)| *f != fpr.file_name()).collect();
    files.push((fpr.file_name(), cert::armored(&merged)?));
    load_candidate(ctx, &config.admins, files)?;
    let (op, actor) = admin_operator(ctx, &repo, &admins)?;
    if merged.armored().to_vec()? == admin.cert.armored().to_vec()? {
        println!("{} ({fpr}) is already up to date", admin.name);
        return Ok(());
    }
    let status = match cert::check_usable(&merged, &ctx.policy, ctx.now) {
        Ok(_) => "usable".to_owned(),
        Err(e) => format!("NOT usable: {e}"),
    };
    let mut change = Change::default();
    change.write(format!("{PUBKEYS_DIR}/{}", fpr.file_name()), cert::armored(&merged)?);
    let message = format!(
        "kaws key update: certificate of {} ({fpr}), now {status}\n\nUpdated by: {actor} ({})\n",
        admin.name,
        op.fingerprint()
    );
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &actor), &op)?.context("nothing changed")?;
    println!("Updated {} ({fpr}) in commit {oid}: {status}", admin.name);
    Ok(())
}

pub fn remove(ctx: &Ctx, raw_name: &str) -> Result<()> {
    let name: AdminName = parse_name(raw_name, "administrator name")?;
    let (repo, mut config, admins) = open_for_change(ctx)?;
    let gone = admins
        .get(&name)
        .ok_or_else(|| failed(format!("no administrator named {name}")).hint("list them with `kaws key list`"))?
        .clone();
    if admins.len() == 1 {
        return Err(refused(format!("{name} is the last administrator"))
            .hint("add another administrator first")
            .into());
    }
    let (op, actor) = admin_operator(ctx, &repo, &admins)?;
    let readable = clusters_readable_by(&repo, &gone.fingerprint)?;

    config.admins.remove(&name);
    let mut change = Change::default();
    change.remove(format!("{PUBKEYS_DIR}/{}", gone.fingerprint.file_name())).write(CONFIG_FILE, config.to_toml());
    let message = format!(
        "kaws key remove: administrator {name} ({})\n\nRemoved by: {actor} ({})\n",
        gone.fingerprint,
        op.fingerprint()
    );
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &actor), &op)?.context("nothing changed")?;
    println!("Removed administrator {name} ({}) in commit {oid}", gone.fingerprint);
    if readable.is_empty() {
        println!("{name} was a primary of no cluster: no sealed key needs rotating.");
    } else {
        println!("{name} could decrypt every sealed key of these clusters, and still can from git history:");
        for (cluster, primaries) in &readable {
            println!("  {cluster}: run  {}", primaries.rotate_command(cluster, &gone.fingerprint));
        }
    }
    Ok(())
}

/// The clusters whose sealed keys `fpr` can decrypt.
fn clusters_readable_by(repo: &Repo, fpr: &Fingerprint) -> Result<Vec<(ClusterName, Primaries)>> {
    let mut out = Vec::new();
    for dir in repo.list_head_dirs(CLUSTERS_DIR)? {
        // What kaws cannot read is named and skipped, never a reason to fail.
        let shown = crate::text::escape(&dir).into_owned();
        let Ok(cluster) = dir.parse::<ClusterName>() else {
            eprintln!("warning: clusters/{shown} is not a valid cluster name; skipped");
            continue;
        };
        let Some(bytes) = repo.read_head(&format!("{CLUSTERS_DIR}/{cluster}/{PRIMARIES_FILE}"))? else {
            continue;
        };
        let Ok(primaries) = Primaries::parse(&cluster, &String::from_utf8_lossy(&bytes)) else {
            eprintln!("warning: clusters/{cluster}/{PRIMARIES_FILE} is not valid; skipped");
            continue;
        };
        if primaries.contains(fpr) {
            out.push((cluster, primaries));
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct Row {
    name: String,
    fingerprint: String,
    user_ids: Vec<String>,
    created: String,
    expires: Option<String>,
    usable: bool,
    problem: Option<String>,
}

pub fn list(ctx: &Ctx) -> Result<()> {
    let admins = super::open(ctx, false)?.admins;
    let rows: Vec<Row> = admins
        .iter()
        .map(|a| {
            let status = cert::check_usable(&a.cert, &ctx.policy, ctx.now).map(|_| ());
            Row {
                name: a.name.to_string(),
                fingerprint: a.fingerprint.to_string(),
                user_ids: cert::user_ids(&a.cert),
                created: crate::context::rfc3339(cert::creation_time(&a.cert)),
                expires: cert::expiration_time(&a.cert, &ctx.policy, ctx.now).map(crate::context::rfc3339),
                usable: status.is_ok(),
                problem: status.err().map(|e| e.to_string()),
            }
        })
        .collect();
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Text => {
            for r in &rows {
                let state = match &r.problem {
                    None => "usable".to_owned(),
                    Some(p) => format!("NOT usable: {p}"),
                };
                println!("{}  {}  {}", r.name, r.fingerprint, state);
                println!("    created {}, expires {}", r.created, r.expires.as_deref().unwrap_or("never"));
                for u in &r.user_ids {
                    println!("    user ID (unverified): {u}");
                }
            }
        }
    }
    Ok(())
}
