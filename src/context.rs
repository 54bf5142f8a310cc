//! What every command gets: the parsed global flags, one OpenPGP policy and
//! one reference time (built once, passed down), and helpers that open the
//! repository and resolve the operator.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Result;
use sequoia_openpgp::policy::StandardPolicy;

use crate::cli::{Global, Output};
use crate::error::refused;
use crate::identity::Admins;
use crate::name::AdminName;
use crate::operator::{KeySource, Operator, Selector};
use crate::repo::{Author, Repo};

pub struct Ctx {
    pub policy: StandardPolicy<'static>,
    pub now: SystemTime,
    pub output: Output,
    pub verbose: bool,
    repo_dir: Option<PathBuf>,
    secret_key: Option<PathBuf>,
    pub as_name: Option<AdminName>,
}

impl Ctx {
    pub fn new(global: Global) -> Result<Ctx> {
        let as_name = global.as_name.as_deref().map(|s| parse_name::<AdminName>(s, "--as")).transpose()?;
        Ok(Ctx {
            policy: StandardPolicy::new(),
            now: SystemTime::now(),
            output: global.output,
            verbose: global.verbose,
            repo_dir: global.repo,
            secret_key: global.secret_key,
            as_name,
        })
    }

    pub fn key_source(&self) -> KeySource {
        match &self.secret_key {
            Some(p) => KeySource::File(p.clone()),
            None => KeySource::Agent,
        }
    }

    /// The repository, *not yet authenticated*: only `commands::open` (which
    /// authenticates HEAD first), `audit` and `trust` call this.
    pub fn repo(&self) -> Result<Repo> {
        match &self.repo_dir {
            Some(d) => Repo::discover(d),
            None => Repo::discover(&std::env::current_dir()?),
        }
    }

    pub fn operator(&self, repo: &Repo, admins: &Admins) -> Result<Operator> {
        let sel = Selector {
            source: self.key_source(),
            as_name: self.as_name.as_ref(),
            signing_key: repo.signing_key(),
            policy: &self.policy,
            now: self.now,
        };
        let op = Operator::resolve(&sel, admins)?;
        if self.verbose {
            eprintln!(
                "kaws: operator {} ({})",
                op.name().map_or("not an administrator", |n| n.as_str()),
                op.fingerprint()
            );
        }
        Ok(op)
    }

    /// The reference time as unix seconds.
    pub fn unix_now(&self) -> i64 {
        self.now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    }

    /// Commit authorship for `name`: git's user.email when set.
    pub fn author(&self, repo: &Repo, name: &AdminName) -> Author {
        Author { name: name.to_string(), email: repo.user_email().unwrap_or_else(|| format!("{name}@kaws.invalid")) }
    }
}

/// Parses a user-supplied name; a bad one is refused (exit 3) before it can
/// reach a path, a tag, a template or a shell line.
pub fn parse_name<T>(raw: &str, what: &str) -> Result<T>
where
    T: std::str::FromStr<Err = crate::name::NameError>,
{
    raw.parse::<T>().map_err(|e| {
        refused(format!("{what} {raw:?} is not an acceptable name: {e}"))
            .hint("names are 2-32 characters: lowercase letters, digits and '-', starting with a letter")
            .into()
    })
}

/// A time as RFC 3339 (UTC, whole seconds), as kaws prints and records times.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Unix seconds (as found in certificates and records) as RFC 3339.
pub fn rfc3339_unix(secs: i64) -> String {
    rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64))
}
