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

use crate::cluster::issued::{self, Issued};
use crate::context::parse_name;
use crate::error::{failed, refused};
use crate::identity::{Admin, Admins};
use crate::name::AdminName;
use crate::operator::Operator;
use crate::pki::inspect::Facts;

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

/// An administrator certificate that counts: on file, matching the record
/// kaws wrote when a primary signed it, chaining to the cluster CA.
pub(crate) struct Held {
    pub name: AdminName,
    pub pem: String,
    pub facts: Facts,
    pub record: Issued,
}

/// What [`held`] finds under `admins/`.
#[derive(Default)]
pub(crate) struct Found {
    pub held: Vec<Held>,
    /// The cluster's `revoked.toml`.
    pub revoked: Option<crate::cluster::admins::Revoked>,
    /// Each certificate file that does not count: (file, why), both
    /// escaped for a terminal.
    pub ignored: Vec<(String, String)>,
}

impl Found {
    /// Warns about each ignored file on stderr.
    pub fn warn(&self, cluster: &crate::name::ClusterName) {
        for (file, why) in &self.ignored {
            eprintln!("warning: clusters/{cluster}/admins/{file} is ignored: {why}");
        }
    }
}

/// [`held`] under the cluster CA at HEAD (`pki/ca.crt`).
pub(crate) fn held_at_head(repo: &crate::repo::Repo, loaded: &Loaded, admins: &Admins) -> Result<Found> {
    let ca = read(repo, loaded, "pki/ca.crt", || failed("pki/ca.crt is missing").into())?;
    held(repo, loaded, admins, &String::from_utf8_lossy(&ca))
}

/// Every administrator certificate of the cluster at HEAD that counts (see
/// `cluster::issued`), checked against `ca_pem`. A file with a name outside
/// kaws' rules, or one that does not count, is reported and skipped: never
/// a reason for a primary's command to fail.
pub(crate) fn held(repo: &crate::repo::Repo, loaded: &Loaded, admins: &Admins, ca_pem: &str) -> Result<Found> {
    let mut out =
        Found { revoked: repo.read_toml(&loaded.path(crate::cluster::admins::REVOKED_FILE))?, ..Found::default() };
    for (file, bytes) in repo.list_head(&loaded.path("admins"))? {
        let Some(raw) = file.strip_suffix(".crt") else { continue };
        let shown = crate::text::escape(&file).into_owned();
        let name: AdminName = match raw.parse() {
            Ok(n) => n,
            Err(e) => {
                out.ignored
                    .push((shown, crate::text::escape(&format!("not an administrator's name: {e}")).into_owned()));
                continue;
            }
        };
        let record = match repo.read_toml::<Issued>(&loaded.path(&issued::issued_file(&name))) {
            Ok(Some(r)) => r,
            Ok(None) => {
                out.ignored.push((shown, issued::UNRECORDED.to_owned()));
                continue;
            }
            Err(e) => {
                let why = format!("its issuance record is unreadable: {e:#}");
                out.ignored.push((shown, crate::text::escape(&why).into_owned()));
                continue;
            }
        };
        let pem = String::from_utf8_lossy(&bytes).into_owned();
        let holder = admins.get(&name).map(|a| &a.fingerprint);
        match issued::check(&name, &pem, &record, holder, ca_pem) {
            Ok(facts) => out.held.push(Held { name, pem, facts, record }),
            Err(why) => out.ignored.push((shown, crate::text::escape(&why).into_owned())),
        }
    }
    Ok(out)
}
