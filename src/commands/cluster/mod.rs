//! `kaws cluster …`: one file per subcommand, sharing how a cluster's
//! directory is read from HEAD.

mod certs;
mod init;
mod provision;
mod reencrypt;
mod render;
mod renew;
mod rollout;
mod sealed;
mod status;

pub use crate::aws::outputs::{Outputs, OUTPUTS_FILE};
pub use certs::certs;
pub use init::init;
pub use provision::{apply, destroy, plan};
pub use reencrypt::{reencrypt, Mode};
pub(crate) use render::ca_bundle;
pub use render::{render, render_parameters, token};
pub use renew::renew;
pub(crate) use sealed::{open_checked, public_key_holder};
pub use status::status;

use anyhow::{Context as _, Result};
use sequoia_openpgp::Cert;

use crate::cluster::{ClusterSpec, Primaries, PRIMARIES_FILE};
use crate::context::{parse_name, Ctx};
use crate::error::{failed, refused};
use crate::identity::{cert, Admins};
use crate::name::ClusterName;
use crate::operator::Operator;
use crate::repo::{Repo, CLUSTERS_DIR};

/// A cluster as committed at HEAD.
pub(crate) struct Loaded {
    pub name: ClusterName,
    pub spec: ClusterSpec,
    pub primaries: Primaries,
}

impl Loaded {
    pub fn path(&self, rel: &str) -> String {
        cluster_path(&self.name, rel)
    }
}

pub(crate) fn cluster_path(name: &ClusterName, rel: &str) -> String {
    format!("{CLUSTERS_DIR}/{name}/{rel}")
}

pub(crate) fn load(repo: &Repo, raw: &str) -> Result<Loaded> {
    let name: ClusterName = parse_name(raw, "cluster name")?;
    let spec_bytes = repo.read_head(&cluster_path(&name, crate::cluster::spec::SPEC_FILE))?.ok_or_else(|| {
        failed(format!("no cluster named {name} in this repository")).hint("create it with `kaws cluster init`")
    })?;
    let spec = ClusterSpec::parse(std::str::from_utf8(&spec_bytes).context("cluster.toml is not UTF-8")?)
        .map_err(|e| refused(format!("clusters/{name}/cluster.toml is not valid: {e:#}")))?;
    if spec.name != name {
        return Err(refused(format!("clusters/{name}/cluster.toml names the cluster {}", spec.name)).into());
    }
    let prim_bytes = repo
        .read_head(&cluster_path(&name, PRIMARIES_FILE))?
        .ok_or_else(|| refused(format!("clusters/{name}/{PRIMARIES_FILE} is missing")))?;
    let primaries = Primaries::parse(&name, &String::from_utf8_lossy(&prim_bytes))?;
    Ok(Loaded { name, spec, primaries })
}

/// The repository and one of its clusters, as `open` gives them.
pub(crate) fn open_cluster(ctx: &Ctx, raw: &str, change: bool) -> Result<(super::Opened, Loaded)> {
    let opened = super::open(ctx, change)?;
    let loaded = load(&opened.repo, raw)?;
    Ok((opened, loaded))
}

/// The primaries named on the command line, each an administrator.
pub(crate) fn primaries_from(admins: &Admins, names: &[crate::name::AdminName]) -> Result<Primaries> {
    let mut primaries = Primaries::default();
    for n in names {
        let admin = admins.get(n).ok_or_else(|| {
            refused(format!("--primary {n}: no administrator of that name")).hint("list them with `kaws key list`")
        })?;
        primaries.primaries.insert(n.clone(), admin.fingerprint.clone());
    }
    Ok(primaries)
}

/// The certificates of the cluster's primaries, each usable now.
pub(crate) fn primary_certs<'a>(ctx: &Ctx, admins: &'a Admins, primaries: &Primaries) -> Result<Vec<&'a Cert>> {
    let mut out = Vec::new();
    for (name, fpr) in &primaries.primaries {
        // By fingerprint: the name primaries.toml recorded is informational
        // (an administrator renamed since is still the same key holder).
        let admin = admins.by_fingerprint(fpr).ok_or_else(|| {
            refused(format!("primary {name} ({fpr}) is not an administrator of this repository"))
                .hint("change the primaries with `kaws cluster reencrypt`")
        })?;
        cert::check_usable(&admin.cert, &ctx.policy, ctx.now).map_err(|e| {
            refused(format!("primary {name} ({fpr}) is not usable: {e}"))
                .hint("renew or replace the key (`kaws key update`), or change the primaries")
        })?;
        out.push(&admin.cert);
    }
    Ok(out)
}

/// The operator, which must be one of the cluster's primaries.
pub(crate) fn primary_operator(ctx: &Ctx, repo: &Repo, admins: &Admins, loaded: &Loaded) -> Result<Operator> {
    let op = ctx.operator(repo, admins)?;
    if !loaded.primaries.contains(&op.fingerprint()) {
        let names: Vec<String> = loaded.primaries.primaries.keys().map(|n| n.to_string()).collect();
        return Err(refused(format!(
            "the operator ({}) is not a primary of cluster {}; only primaries can read its keys",
            op.name().map_or_else(|| op.fingerprint().to_string(), |n| n.to_string()),
            loaded.name
        ))
        .hint(format!("ask a primary ({}) to run this", names.join(", ")))
        .into());
    }
    Ok(op)
}
