//! Rollback protection. Anyone who can push can reset a branch to an older
//! authenticated commit (from before a `key remove` and a rotation); each
//! clone therefore remembers, per branch, the newest authenticated commit it
//! has accepted (`.git/kaws/accepted.json`, never in the work tree) and
//! refuses a HEAD that does not descend from it. Accepting a rewind is an
//! explicit act (`kaws trust --accept-rewind`), logged to
//! `.git/kaws/rewinds.log`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use git2::Oid;

use super::{txn::write_atomic, Repo};
use crate::error::refused;

impl Repo {
    fn ratchet_path(&self) -> PathBuf {
        self.git.path().join("kaws").join("accepted.json")
    }

    /// The branch HEAD names (`refs/heads/main`), or `HEAD` when detached.
    pub fn branch_name(&self) -> String {
        self.git
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().map(str::to_owned))
            .unwrap_or_else(|| "HEAD".to_owned())
    }

    fn ratchets(&self) -> Result<BTreeMap<String, String>> {
        match std::fs::read(self.ratchet_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                refused(format!(".git/kaws/accepted.json is unreadable ({e})"))
                    .hint("restore it, or delete it and run `kaws trust --accept-rewind` to accept HEAD as it is")
                    .into()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).context("reading .git/kaws/accepted.json"),
        }
    }

    /// The newest commit this clone accepted on the current branch.
    pub fn accepted(&self) -> Result<Option<Oid>> {
        let branch = self.branch_name();
        Ok(self.ratchets()?.get(&branch).and_then(|s| Oid::from_str(s).ok()))
    }

    /// Why `head` is a rewind of what this clone accepted, if it is one.
    pub fn rewind_of(&self, head: Oid) -> Result<Option<String>> {
        let Some(accepted) = self.accepted()? else { return Ok(None) };
        if self.descends_from(head, accepted) {
            return Ok(None);
        }
        Ok(Some(format!(
            "{} was rewound or rewritten: HEAD {head} does not descend from {accepted}, the newest commit this clone accepted",
            self.branch_name()
        )))
    }

    /// Records `head` as accepted when it moves the branch forward.
    pub fn advance_ratchet(&self, head: Oid) -> Result<()> {
        if self.rewind_of(head)?.is_some() || self.accepted()? == Some(head) {
            return Ok(());
        }
        self.set_accepted(head)
    }

    fn set_accepted(&self, head: Oid) -> Result<()> {
        let mut all = self.ratchets().unwrap_or_default();
        all.insert(self.branch_name(), head.to_string());
        write_atomic(&self.ratchet_path(), &serde_json::to_vec_pretty(&all)?, 0o600)
    }

    /// Accepts `head` although it does not descend from the accepted commit;
    /// returns the commit given up. Logged.
    pub fn accept_rewind(&self, head: Oid, now: std::time::SystemTime) -> Result<Option<Oid>> {
        let old = self.accepted()?;
        let line = format!(
            "{} {} accepted {head} in place of {}\n",
            crate::context::rfc3339(now),
            self.branch_name(),
            old.map_or("nothing".to_owned(), |o| o.to_string())
        );
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.git.path().join("kaws").join("rewinds.log"))
            .context("opening .git/kaws/rewinds.log")?;
        log.write_all(line.as_bytes())?;
        log.sync_all()?;
        self.set_accepted(head)?;
        Ok(old)
    }
}
