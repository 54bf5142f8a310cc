//! `kaws cluster renew`: re-issue leaves that expire soon, keeping their keys.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

use super::primary_operator;
use crate::context::Ctx;
use crate::pki::{self, inspect, issue, table};
use crate::repo::Change;

pub fn renew(ctx: &Ctx, raw: &str, within: u32, all: bool) -> Result<()> {
    let (crate::commands::Opened { repo, admins, .. }, loaded) = super::open_cluster(ctx, raw, true)?;
    let op = primary_operator(ctx, &repo, &admins, &loaded)?;
    let actor = op.name().cloned().context("the operator is a primary, so an administrator")?;
    let spec = &loaded.spec;
    let now = ctx.unix_now();
    let read = |rel: String| -> Result<String> {
        let bytes = repo.read_head(&loaded.path(&rel))?.with_context(|| format!("{rel} is missing"))?;
        String::from_utf8(bytes).with_context(|| format!("{rel} is not text"))
    };
    // Every key is checked against its certificate before it signs or is re-certified.
    let open = |rel: String| super::open_checked(ctx, &repo, &loaded, &op, &rel);

    let mut authorities = BTreeMap::new();
    let mut change = Change::default();
    let mut renewed = Vec::new();
    for leaf in table::leaves(spec) {
        let cert_pem = read(format!("pki/{}.crt", leaf.path))?;
        let facts = inspect::facts(&cert_pem).with_context(|| format!("reading pki/{}.crt", leaf.path))?;
        if !all && facts.not_after - now >= i64::from(within) * 86_400 {
            continue;
        }
        if !authorities.contains_key(&leaf.ca) {
            let ca_pem = read(format!("pki/{}.crt", leaf.ca.path()))?;
            let ca_key = open(format!("pki/{}.key.pgp", leaf.ca.path()))?;
            let ca_key = std::str::from_utf8(&ca_key).context("CA key is not PEM")?;
            authorities.insert(leaf.ca, pki::authority(spec.key_algorithm, ca_pem, ca_key)?);
        }
        let ca = &authorities[&leaf.ca];
        let key_pem = open(format!("pki/{}.key.pgp", leaf.path))?;
        let key_pem = std::str::from_utf8(&key_pem).context("key is not PEM")?;
        let key = spec.key_algorithm.load(key_pem)?;
        let sans = table::sans(leaf.sans, spec);
        let new_pem = issue::renew_leaf(&leaf, &sans, spec.key_algorithm, &key, ca, ctx.now, spec.validity.leaf_days)?;
        pki::verify_leaf(&leaf, spec, &new_pem, &ca.cert_pem, key_pem)?;
        change.write(loaded.path(&format!("pki/{}.crt", leaf.path)), new_pem);
        renewed.push(leaf.path);
    }
    if renewed.is_empty() {
        println!("No leaf certificate of {} expires within {within} days; nothing to renew.", loaded.name);
        return Ok(());
    }
    let message = format!(
        "kaws cluster renew: {} ({} certificates)\n\nRenewed: {}\nBy: {actor} ({})\n",
        loaded.name,
        renewed.len(),
        renewed.join(", "),
        op.fingerprint()
    );
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &actor), &op)?.context("nothing changed")?;
    println!("Renewed {} certificates of {} in commit {oid}: {}", renewed.len(), loaded.name, renewed.join(", "));
    Ok(())
}
