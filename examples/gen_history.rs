//! Benchmark fixture (scripts/bench.sh): appends COUNT commits to a kaws
//! repository made by `kaws init`, each signed by the founding
//! administrator, with CHANGES administrator-set changes (alternately adding
//! a fresh administrator and removing it) spread evenly among them.
//!
//! Usage: gen_history REPO SECRET_KEY_FILE COUNT CHANGES

use std::io::Write;

use anyhow::{Context, Result};
use git2::{build::TreeUpdateBuilder, FileMode, Repository};
use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Armorer, Message, Signer};
use openpgp::serialize::SerializeInto;
use sequoia_openpgp as openpgp;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo, key, count, changes] = &args[..] else {
        anyhow::bail!("usage: gen_history REPO SECRET_KEY_FILE COUNT CHANGES");
    };
    let (count, changes): (usize, usize) = (count.parse()?, changes.parse()?);
    let git = Repository::open(repo)?;
    let tsk = Cert::from_file(key)?;
    let policy = StandardPolicy::new();
    let signer = tsk
        .keys()
        .with_policy(&policy, None)
        .secret()
        .for_signing()
        .next()
        .context("no signing key")?
        .key()
        .clone()
        .into_keypair()?;
    let base_config = std::fs::read_to_string(git.workdir().unwrap().join("kaws.toml"))?;
    let every = count / changes.max(1);
    let mut parent = git.head()?.peel_to_commit()?;
    let sig = git2::Signature::now("bench", "bench@example.org")?;
    let mut added: Option<(String, String)> = None;
    for i in 0..count {
        let mut update = TreeUpdateBuilder::new();
        let message;
        if every > 0 && i % every == every - 1 {
            match added.take() {
                None => {
                    let name = format!("bench{i}");
                    let (cert, _) =
                        CertBuilder::general_purpose(Some(format!("{name} <{name}@example.org>"))).generate()?;
                    let fpr = cert.fingerprint().to_hex();
                    let blob = git.blob(&cert.armored().to_vec()?)?;
                    update.upsert(format!("pubkeys/{fpr}.asc"), blob, FileMode::Blob);
                    let config = format!("{base_config}{name} = \"{fpr}\"\n");
                    update.upsert("kaws.toml", git.blob(config.as_bytes())?, FileMode::Blob);
                    message = format!("add administrator {name}");
                    added = Some((name, fpr));
                }
                Some((name, fpr)) => {
                    update.remove(format!("pubkeys/{fpr}.asc"));
                    update.upsert("kaws.toml", git.blob(base_config.as_bytes())?, FileMode::Blob);
                    message = format!("remove administrator {name}");
                }
            }
        } else {
            let blob = git.blob(format!("note {i}\n").as_bytes())?;
            update.upsert("clusters/README.md", blob, FileMode::Blob);
            message = format!("note {i}");
        }
        let tree = git.find_tree(update.create_updated(&git, &parent.tree()?)?)?;
        let buf = git.commit_create_buffer(&sig, &sig, &message, &tree, &[&parent])?;
        let mut armored = Vec::new();
        {
            let m = Armorer::new(Message::new(&mut armored)).kind(openpgp::armor::Kind::Signature).build()?;
            let mut s = Signer::new(m, signer.clone())?.detached().build()?;
            s.write_all(&buf)?;
            s.finalize()?;
        }
        let oid = git.commit_signed(std::str::from_utf8(&buf)?, std::str::from_utf8(&armored)?, Some("gpgsig"))?;
        parent = git.find_commit(oid)?;
    }
    git.reference("refs/heads/main", parent.id(), true, "gen_history")?;
    git.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))?;
    println!("{} commits, head {}", count, parent.id());
    Ok(())
}
