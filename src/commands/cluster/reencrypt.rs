//! `kaws cluster reencrypt`: change who can decrypt a cluster's keys.
//!
//! Git keeps every old ciphertext, so resealing to fewer people revokes
//! nothing. Removing anyone therefore needs `--rotate` (fresh keys for
//! everything they could read: CAs, leaves, service-account key), or an
//! explicit `--no-rotate` that is recorded as an exposure. A rotation runs
//! in three phases (see `cluster::rotate`), so that a running cluster never
//! meets a credential it does not trust: `--rotate` stages new CAs that the
//! bundles trust, `--promote` signs everything with them, and
//! `--finish-rotation` drops the retired ones. Each step lands as one
//! signed commit.

use std::collections::BTreeSet;

use crate::tomlfile::TomlFile;
use anyhow::{Context as _, Result};
use zeroize::Zeroizing;

use super::{open_cluster, primaries_from, primary_certs, primary_operator, Loaded};
use crate::cluster::admins::{cert_file, csr_file, rbac_file, sig_file};
use crate::cluster::issued::{issued_file, Issued};
use crate::cluster::rotation::{Exposure, Record, Rotation, State, ROTATION_FILE};
use crate::cluster::{rotate, token, PRIMARIES_FILE};
use crate::commands::Opened;
use crate::context::{parse_name, Ctx};
use crate::error::refused;
use crate::identity::{Admins, Fingerprint};
use crate::name::AdminName;
use crate::operator::Operator;
use crate::repo::{Change, Repo};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reseal only; refused if anyone is removed.
    Reseal,
    /// Stage a rotation.
    Rotate,
    NoRotate,
    Promote,
    Finish,
}

pub fn reencrypt(ctx: &Ctx, raw: &str, names: &[String], mode: Mode) -> Result<()> {
    let (Opened { repo, admins, .. }, loaded) = open_cluster(ctx, raw, true)?;
    let op = primary_operator(ctx, &repo, &admins, &loaded)?;
    let actor = op.name().cloned().context("a primary is an administrator")?;
    let mut record: Record = repo.read_toml(&loaded.path(ROTATION_FILE))?.unwrap_or_default();
    match mode {
        Mode::Finish => return finish(ctx, &repo, &loaded, &op, &actor, record),
        Mode::Promote => {
            let readers = primary_certs(ctx, &admins, &loaded.primaries)?;
            let job = Job { ctx, repo: &repo, loaded: &loaded, admins: &admins, readers: &readers };
            return job.promote(&op, &actor, record);
        }
        _ => {}
    }

    let names: Vec<AdminName> = names.iter().map(|n| parse_name(n, "--primary")).collect::<Result<_>>()?;
    let new = primaries_from(&admins, &names)?;
    let readers = primary_certs(ctx, &admins, &new)?;
    let old: BTreeSet<&Fingerprint> = loaded.primaries.primaries.values().collect();
    let removed: Vec<Fingerprint> = old.iter().filter(|f| !new.contains(f)).map(|f| (*f).clone()).collect();
    if !removed.is_empty() && mode == Mode::Reseal {
        let who: Vec<String> = removed.iter().map(|f| describe(&admins, f)).collect();
        return Err(refused(format!(
            "this removes {} from the primaries of {}. Git keeps every old ciphertext, so they could still read \
             every current key from history: resealing alone revokes nothing",
            who.join(", "),
            loaded.name
        ))
        .hint("add --rotate to generate fresh keys for everything they could read (or --no-rotate to accept and record the exposure)")
        .into());
    }
    if !removed.is_empty() && mode != Mode::Rotate && record.state != State::Settled {
        let who: Vec<String> = removed.iter().map(|f| describe(&admins, f)).collect();
        return Err(refused(format!(
            "this removes {} from the primaries of {} while a rotation is under way ({}): they can read its new keys",
            who.join(", "),
            loaded.name,
            record.state.label()
        ))
        .hint(format!(
            "finish the rotation under way first (next: `kaws cluster reencrypt {} {}`), then remove them with --rotate",
            loaded.name,
            record.state.next_step()
        ))
        .into());
    }
    if mode == Mode::Rotate && record.state != State::Settled {
        return Err(refused(format!("a rotation of {} is under way ({})", loaded.name, record.state.label()))
            .hint(format!(
                "once the cluster has rolled, run `kaws cluster reencrypt {} {}`",
                loaded.name,
                record.state.next_step()
            ))
            .into());
    }

    let mut change = Change::default();
    change.write(loaded.path(PRIMARIES_FILE), new.to_toml());
    let job = Job { ctx, repo: &repo, loaded: &loaded, admins: &admins, readers: &readers };
    job.reseal(&op, &mut change)?;
    let summary = if mode == Mode::Rotate {
        job.stage(&mut change)?;
        record.generation += 1;
        record.state = State::Staged;
        record.rotations.push(Rotation {
            generation: record.generation,
            date: crate::context::rfc3339(ctx.now),
            by: actor.clone(),
            removed: removed.clone(),
            retired_ca: Vec::new(),
            promoted: None,
            finished: None,
        });
        format!("staged rotation {} (new CAs and service-account key, trusted beside the current)", record.generation)
    } else {
        if !removed.is_empty() {
            record.exposures.push(Exposure {
                date: crate::context::rfc3339(ctx.now),
                by: actor.clone(),
                removed: removed.clone(),
                note: "removed without rotation: they can still read every key of this generation from git history"
                    .into(),
            });
        }
        "resealed every key".to_owned()
    };
    change.write(loaded.path(ROTATION_FILE), record.to_toml());
    let list: Vec<String> = new.primaries.keys().map(|n| n.to_string()).collect();
    let gone: Vec<String> = removed.iter().map(|f| describe(&admins, f)).collect();
    let message = format!(
        "kaws cluster reencrypt: {} {summary}\n\nPrimaries: {}\nRemoved: {}\nBy: {actor} ({})\n",
        loaded.name,
        list.join(", "),
        if gone.is_empty() { "nobody".to_owned() } else { gone.join(", ") },
        op.fingerprint()
    );
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &actor), &op)?.context("nothing changed")?;
    println!("{}: {summary} for {} in commit {oid}", loaded.name, list.join(", "));
    if mode == Mode::NoRotate && !removed.is_empty() {
        println!(
            "WARNING: {} can still read every current key of {} from git history. This is recorded in {}.",
            gone.join(", "),
            loaded.name,
            loaded.path(ROTATION_FILE)
        );
    }
    if mode == Mode::Rotate {
        let found = crate::commands::admin::held_at_head(&repo, &loaded, &admins)?;
        print_access(&loaded, &access(ctx, &loaded, &found, &admins, &new));
        println!("New CAs and a new service-account key are staged (pki/staged/); the bundles trust them beside the");
        println!(
            "current ones, which still sign everything. Roll the bundles out with `kaws cluster apply {}`,",
            loaded.name
        );
        println!("then sign with the new CAs: kaws cluster reencrypt {} --promote", loaded.name);
        println!(
            "Administrators run `kaws admin install {} NAME` again now: their kubeconfig then trusts API servers of both CAs.",
            loaded.name
        );
    }
    Ok(())
}

fn describe(admins: &Admins, fpr: &Fingerprint) -> String {
    match admins.by_fingerprint(fpr) {
        Some(a) => format!("{} ({fpr})", a.name),
        None => fpr.to_string(),
    }
}

/// The sealed cluster secrets (`pki/**/*.key.pgp`, `secrets/*.pgp`), by path under the cluster.
fn sealed_files(repo: &Repo, loaded: &Loaded) -> Result<Vec<(String, Vec<u8>)>> {
    Ok(repo
        .walk_head(&loaded.path(""))?
        .into_iter()
        .filter(|(p, _)| {
            (p.starts_with("pki/") && p.ends_with(".key.pgp")) || (p.starts_with("secrets/") && p.ends_with(".pgp"))
        })
        .collect())
}

/// What one reencrypt works on.
struct Job<'a> {
    ctx: &'a Ctx,
    repo: &'a Repo,
    loaded: &'a Loaded,
    admins: &'a Admins,
    /// The new primaries' certificates.
    readers: &'a [&'a sequoia_openpgp::Cert],
}

impl Job<'_> {
    /// Opens every sealed key and seals it again to the new primaries.
    fn reseal(&self, op: &Operator, change: &mut Change) -> Result<()> {
        let (ctx, repo, loaded, readers) = (self.ctx, self.repo, self.loaded, self.readers);
        let files = sealed_files(repo, loaded)?;
        let plains =
            files.iter().map(|(p, _)| super::open_checked(ctx, repo, loaded, op, p)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[u8]> = plains.iter().map(|p| p.as_slice()).collect();
        let sealed = crate::vault::seal_all(&refs, readers, &ctx.policy, ctx.now)?;
        for ((path, _), armored) in files.iter().zip(sealed) {
            change.write(loaded.path(path), armored);
        }
        Ok(())
    }

    /// `--rotate`: new CAs and service-account key, staged and sealed to
    /// the new primaries, and the bundles that trust them.
    fn stage(&self, change: &mut Change) -> Result<()> {
        let (ctx, repo, loaded) = (self.ctx, self.repo, self.loaded);
        let staged = rotate::stage(&loaded.spec, ctx.now, |rel| read_text(repo, loaded, rel))?;
        for (path, text) in &staged.public {
            change.write(loaded.path(path), text.as_bytes());
        }
        self.seal(change, &staged.keys, None)
    }

    /// Seals `keys` (and `token`) to the readers, each at its path.
    fn seal(&self, change: &mut Change, keys: &[(String, Zeroizing<String>)], token: Option<&str>) -> Result<()> {
        let mut plains: Vec<&[u8]> = keys.iter().map(|(_, pem)| pem.as_bytes()).collect();
        plains.extend(token.map(str::as_bytes));
        let mut sealed = crate::vault::seal_all(&plains, self.readers, &self.ctx.policy, self.ctx.now)?;
        if token.is_some() {
            change.write(self.loaded.path(token::SEALED_FILE), sealed.pop().expect("the token is sealed"));
        }
        for ((path, _), armored) in keys.iter().zip(sealed) {
            change.write(self.loaded.path(path), armored);
        }
        Ok(())
    }

    /// `--promote`: the staged CAs sign a new generation of every leaf and
    /// key (see `cluster::rotate`), sealed to the primaries; a new bootstrap
    /// token; administrators' certificates re-issued from their verified CSRs.
    fn promote(&self, op: &Operator, actor: &AdminName, mut record: Record) -> Result<()> {
        let (ctx, repo, loaded) = (self.ctx, self.repo, self.loaded);
        if record.state != State::Staged {
            return Err(refused(format!(
                "no staged rotation of {} to promote ({})",
                loaded.name,
                record.state.label()
            ))
            .hint(match record.state {
                State::Settled => {
                    format!("stage one first: `kaws cluster reencrypt {} --primary NAME… --rotate`", loaded.name)
                }
                _ => format!("finish the promoted one: `kaws cluster reencrypt {} --finish-rotation`", loaded.name),
            })
            .into());
        }
        super::rollout::gate(repo, loaded, "--promote")?;
        let opened = |rel: &str| -> Result<Zeroizing<String>> {
            let plain = super::open_checked(ctx, repo, loaded, op, rel)?;
            Ok(Zeroizing::new(std::str::from_utf8(&plain).context("a staged key is not PEM text")?.to_owned()))
        };
        let promoted = rotate::promote(&loaded.spec, ctx.now, |rel| read_text(repo, loaded, rel), opened)?;
        let mut change = Change::default();
        for path in &promoted.removed {
            change.remove(loaded.path(path));
        }
        for (path, text) in &promoted.files.public {
            change.write(loaded.path(path), text.as_bytes());
        }
        self.seal(&mut change, &promoted.files.keys, Some(&promoted.token))?;
        let token_record = super::init::token_record(ctx, token::DEFAULT_TTL_HOURS)?;
        change.write(loaded.path(token::RECORD_FILE), token_record.to_toml());
        // Anything sealed that the new set does not cover is not carried over.
        let fresh: BTreeSet<String> = promoted.sealed_paths().into_iter().collect();
        for (path, _) in sealed_files(repo, loaded)? {
            if !fresh.contains(&path) {
                change.remove(loaded.path(&path));
            }
        }
        // The administrators' certificates that count under the retiring CA,
        // and which of them are carried over.
        let found = crate::commands::admin::held_at_head(repo, loaded, self.admins)?;
        found.warn(&loaded.name);
        let carried = access(ctx, loaded, &found, self.admins, &loaded.primaries);
        self.reissue_admins(op, &mut change, &promoted.ca, (&found, &carried))?;
        record.state = State::Promoted;
        if let Some(last) = record.rotations.last_mut() {
            last.promoted = Some(crate::context::rfc3339(ctx.now));
            last.retired_ca = promoted.retired;
        }
        let body = "The new CAs sign every leaf and the new service-account key signs tokens; the bundles still trust the retired ones.";
        let oid = commit_phase(ctx, repo, loaded, (op, actor), &record, change, ("promoted", body))?;
        println!(
            "{}: rotation {} promoted in commit {oid}: every leaf, key and the token are new",
            loaded.name, record.generation
        );
        println!(
            "Roll it out with `kaws cluster apply {}`; administrators run `kaws admin install {} NAME` again.",
            loaded.name, loaded.name
        );
        println!("Then distrust the retired CAs: kaws cluster reencrypt {} --finish-rotation", loaded.name);
        print_access(loaded, &carried);
        Ok(())
    }

    /// Administrators' certificates re-issued under `ca` (the demotion
    /// rule): each that counts under the retiring CA (see
    /// `cluster::issued`), whose signer is still a primary and whose holder
    /// is still the administrator it was issued to. Any other is not carried
    /// over: its certificate, record and binding are removed, and named. A
    /// file that does not count is named and left alone.
    fn reissue_admins(
        &self,
        op: &Operator,
        change: &mut Change,
        ca: &crate::pki::issue::Authority,
        (found, carried): (&crate::commands::admin::Found, &Carried),
    ) -> Result<()> {
        let loaded = self.loaded;
        for h in &found.held {
            let name = &h.name;
            let drop = |change: &mut Change| {
                for rel in [cert_file(name), issued_file(name), rbac_file(name)] {
                    change.remove(loaded.path(&rel));
                }
            };
            if !carried.keeps.iter().any(|k| k.name == *name) {
                drop(change);
                continue;
            }
            match self.reissue(name, &h.pem, ca) {
                Ok(pem) => {
                    let facts = crate::pki::inspect::facts(&pem)?;
                    // The grant (who, by whose decision, when) is kept;
                    // the certificate's serial and digest are the new one's.
                    let record = Issued {
                        serial: facts.serial,
                        sha256: facts.sha256,
                        reissued_by: Some(op.fingerprint()),
                        ..h.record.clone()
                    };
                    change
                        .write(loaded.path(&cert_file(name)), pem)
                        .write(loaded.path(&issued_file(name)), record.to_toml());
                }
                Err(e) => {
                    eprintln!("warning: {name}'s certificate is not re-issued ({e:#}); {name} must run `kaws admin create` again");
                    drop(change);
                }
            }
        }
        Ok(())
    }

    /// `name`'s certificate under the new CA, from the files on record.
    fn reissue(&self, name: &AdminName, old_cert: &str, ca: &crate::pki::issue::Authority) -> Result<String> {
        let (ctx, repo, loaded) = (self.ctx, self.repo, self.loaded);
        let admin = self.admins.get(name).context("no longer an administrator")?;
        let csr = read_text(repo, loaded, &csr_file(name))?;
        let sig = repo.read_head(&loaded.path(&sig_file(name)))?.context("no CSR signature")?;
        let files =
            rotate::AdminFiles { name: name.as_str(), openpgp: &admin.cert, csr: &csr, csr_sig: &sig, cert: old_cert };
        rotate::reissue(&files, &loaded.spec, ca, &ctx.policy, ctx.now)
    }
}

/// One administrator's cluster access, and the primary it rests on.
struct Access {
    name: AdminName,
    signed_by: String,
}

/// Who keeps cluster access through a rotation, and who does not.
struct Carried {
    keeps: Vec<Access>,
    loses: Vec<Access>,
}

/// Who keeps cluster access through a rotation to `primaries`, and who
/// loses it: a certificate is carried over only when the primary who
/// granted it is still one, proven by their signature over the grant
/// (access rests on a current primary's decision; a removed primary's own
/// grants lapse with the rotation, and a record naming another granter
/// than the one who signed it grants nothing).
fn access(
    ctx: &Ctx,
    loaded: &Loaded,
    found: &crate::commands::admin::Found,
    admins: &Admins,
    primaries: &crate::cluster::Primaries,
) -> Carried {
    let mut carried = Carried { keeps: Vec::new(), loses: Vec::new() };
    let revoked = found.revoked.as_ref().map_or(&[][..], |r| r.entries.as_slice());
    for h in &found.held {
        let r = &h.record;
        // A grant revoked since (`admin revoke` of that name) is not restored by its old record.
        let revoked_since = revoked.iter().any(|e| e.name == h.name && e.revoked_at >= r.issued_at);
        let proven = match admins.by_fingerprint(&r.signed_by) {
            None => Err("no longer an administrator".to_owned()),
            Some(_) if revoked_since => Err("the name was revoked after this grant".to_owned()),
            Some(g) => r.grant_verifies(&loaded.name, &h.facts, &g.cert, (&ctx.policy, ctx.now)),
        };
        let mut signed_by = describe(admins, &r.signed_by);
        if let Err(why) = &proven {
            signed_by += &format!(", not proven: {why}");
        }
        let a = Access { name: h.name.clone(), signed_by };
        if proven.is_ok() && primaries.contains(&r.signed_by) {
            carried.keeps.push(a);
        } else {
            carried.loses.push(a);
        }
    }
    carried
}

/// Prints who keeps cluster access through the rotation, and who does not.
fn print_access(loaded: &Loaded, Carried { keeps, loses }: &Carried) {
    let list = |v: &[Access]| -> String {
        if v.is_empty() {
            return "nobody".to_owned();
        }
        v.iter().map(|a| format!("{} (signed by {})", a.name, a.signed_by)).collect::<Vec<_>>().join(", ")
    };
    println!("Cluster access carried over by this rotation (re-issued at --promote): {}", list(keeps));
    if !loses.is_empty() {
        println!(
            "Not carried over (granted by someone no longer a primary, or not proven): {}; a primary grants it again with `kaws admin sign {} NAME`",
            list(loses),
            loaded.name
        );
    }
}

fn finish(ctx: &Ctx, repo: &Repo, loaded: &Loaded, op: &Operator, actor: &AdminName, mut record: Record) -> Result<()> {
    if record.state != State::Promoted {
        return Err(refused(format!("no promoted rotation of {} to finish ({})", loaded.name, record.state.label()))
            .hint(format!("`kaws cluster certs {}` shows the rotation state", loaded.name))
            .into());
    }
    super::rollout::gate(repo, loaded, "--finish-rotation")?;
    let mut change = Change::default();
    for (path, text) in rotate::finish(|rel| read_text(repo, loaded, rel))? {
        change.write(loaded.path(&path), text);
    }
    record.state = State::Settled;
    if let Some(last) = record.rotations.last_mut() {
        last.finished = Some(crate::context::rfc3339(ctx.now));
    }
    let body = "The retired CAs and service-account key are no longer trusted.";
    let oid = commit_phase(ctx, repo, loaded, (op, actor), &record, change, ("finished", body))?;
    println!(
        "{}: rotation {} finished in commit {oid}; the bundles now trust only the current CAs",
        loaded.name, record.generation
    );
    println!(
        "Roll it out with `kaws cluster apply {0}`; administrators run `kaws admin install {0} NAME` again, so that their kubeconfig stops trusting the retired CA",
        loaded.name
    );
    Ok(())
}

/// Writes `record` into `change` and lands it as the commit of a phase
/// (`verb`) of rotation `record.generation`.
fn commit_phase(
    ctx: &Ctx,
    repo: &Repo,
    loaded: &Loaded,
    (op, actor): (&Operator, &AdminName),
    record: &Record,
    mut change: Change,
    (verb, body): (&str, &str),
) -> Result<git2::Oid> {
    change.write(loaded.path(ROTATION_FILE), record.to_toml());
    let message = format!(
        "kaws cluster reencrypt: {} {verb} rotation {}\n\n{body}\nBy: {actor} ({})\n",
        loaded.name,
        record.generation,
        op.fingerprint()
    );
    repo.commit(&change, &message, &ctx.author(repo, actor), op)?.context("nothing changed")
}

fn read_text(repo: &Repo, loaded: &Loaded, rel: &str) -> Result<String> {
    let b = repo.read_head(&loaded.path(rel))?.with_context(|| format!("{rel} is missing"))?;
    String::from_utf8(b).with_context(|| format!("{rel} is not text"))
}
