//! `kaws init [DIR] --admin NAME`: a new kaws repository in one signed commit.

use anyhow::{Context as _, Result};

use crate::cli::InitArgs;
use crate::context::{parse_name, Ctx};
use crate::error::{failed, refused};
use crate::identity::cert;
use crate::name::AdminName;
use crate::operator::{KeySource, Operator};
use crate::repo::{Change, Config, Repo, CLUSTERS_DIR, CONFIG_FILE, PUBKEYS_DIR};

const GITIGNORE: &str = "\
# kaws never writes plaintext private keys here; refuse to commit any by accident.
*.key
*-key.pem
*.key.pem
kubeconfig
.kaws-tmp-*
";

pub fn run(ctx: &Ctx, args: InitArgs) -> Result<()> {
    let name: AdminName = parse_name(&args.admin, "--admin")?;
    let operator = match (ctx.key_source(), &args.cert) {
        (KeySource::File(path), _) => Operator::from_key_file(&path, &ctx.policy, ctx.now)?,
        (KeySource::Agent, Some(cert_file)) => {
            let bytes = std::fs::read(cert_file)
                .with_context(|| format!("reading {}", cert_file.display()))?;
            let cert = cert::parse_one_public(&bytes)
                .map_err(|e| refused(format!("{}: {e}", cert_file.display())))?;
            Operator::from_agent(cert, &ctx.policy, ctx.now)?
        }
        (KeySource::Agent, None) => {
            return Err(refused("no operator key for the founding administrator")
                .hint("pass --secret-key FILE (or set KAWS_SECRET_KEY), or --cert FILE with the public certificate whose secret key gpg-agent holds")
                .into())
        }
    };
    cert::check_usable(operator.cert(), &ctx.policy, ctx.now).map_err(|e| {
        refused(format!("the operator's certificate {} cannot be an administrator: {e}", operator.fingerprint()))
            .hint("use a certificate with a live signing key and a live encryption subkey")
    })?;

    if let Ok(existing) = git2::Repository::open(&args.dir) {
        let root = existing.workdir().map(|w| w.join(CONFIG_FILE));
        if root.is_some_and(|p| p.exists()) {
            return Err(already(&args.dir));
        }
    }
    let repo = Repo::open_or_init(&args.dir)?;
    if repo.is_kaws_repo() {
        return Err(already(&args.dir));
    }
    repo.ensure_clean()?;

    let fpr = operator.fingerprint();
    let config = Config::new(name.clone(), fpr.clone());
    let mut change = Change::default();
    change
        .write(CONFIG_FILE, config.to_toml())
        .write(".gitignore", GITIGNORE)
        .write(format!("{PUBKEYS_DIR}/{}", fpr.file_name()), cert::armored(operator.cert())?)
        .write(format!("{PUBKEYS_DIR}/README.md"), include_str!("../../pubkeys/README.md"))
        .write(format!("{CLUSTERS_DIR}/README.md"), include_str!("../../clusters/README.md"));
    let message =
        format!("kaws init: new repository, founding administrator {name}\n\nAdministrator: {name} ({fpr})\n");
    let oid = repo
        .commit(&change, &message, &ctx.author(&repo, &name), &operator)?
        .ok_or_else(|| failed("nothing to commit"))?;
    repo.set_trust_root(oid)?;
    println!("Created kaws repository {}", repo.root().display());
    println!("Founding administrator: {name} ({fpr})");
    println!("Trust root: {oid}");
    eprintln!(
        "hint: share the trust root out of band; it is the commit from which this repository's history is verified"
    );
    Ok(())
}

fn already(dir: &std::path::Path) -> anyhow::Error {
    failed(format!("{} is already a kaws repository", dir.display()))
        .hint("add administrators with `kaws key add NAME CERTFILE`")
        .into()
}
