//! `kaws admin …`: administrators' client credentials, one file per verb.

mod create;
mod install;
mod list;
mod revoke;
mod sign;

pub use create::create;
pub use install::{credential, install};
pub use list::list;
pub use revoke::revoke;
pub use sign::sign;

use anyhow::Result;

use crate::context::parse_name;
use crate::error::{failed, refused};
use crate::identity::{Admin, Admins};
use crate::name::AdminName;
use crate::operator::Operator;

use super::cluster::Loaded;

/// The administrator named `raw`, who must exist.
fn admin<'a>(admins: &'a Admins, raw: &str) -> Result<(AdminName, &'a Admin)> {
    let name: AdminName = parse_name(raw, "administrator name")?;
    let admin = admins
        .get(&name)
        .ok_or_else(|| failed(format!("no administrator named {name}")).hint("list them with `kaws key list`"))?;
    Ok((name, admin))
}

/// Refuses unless the operator is `admin` itself.
fn require_self(op: &Operator, admin: &Admin, verb: &str) -> Result<()> {
    if op.fingerprint() != admin.fingerprint {
        return Err(refused(format!(
            "`kaws admin {verb}` for {} must be run by {} with their own key ({}); the operator is {}",
            admin.name,
            admin.name,
            admin.fingerprint,
            op.fingerprint()
        ))
        .hint(format!("{} runs it: --as {} or --secret-key with their key", admin.name, admin.name))
        .into());
    }
    Ok(())
}

/// A file of the cluster at HEAD, which must exist.
fn read(
    repo: &crate::repo::Repo,
    loaded: &Loaded,
    rel: &str,
    missing: impl FnOnce() -> anyhow::Error,
) -> Result<Vec<u8>> {
    repo.read_head(&loaded.path(rel))?.ok_or_else(missing)
}
