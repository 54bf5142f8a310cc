//! What a merge carries in from one side: the commit that made a change on
//! that side, and whether its signer may make that change in **every**
//! parent of the merge. A side branch is judged against its own, older
//! parents; when it is merged, what it changed lands on top of the other
//! parents too, so the authority it needs is judged there again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use git2::{Oid, Sort};
use sequoia_openpgp::policy::Policy;

use super::history::CLOCK_SKEW;
use super::rules::Judging;
use super::signed;
use super::Repo;
use crate::identity::verify::{by_any, signer_valid_at};
use crate::identity::Fingerprint;

impl Repo {
    /// The newest commit on `side` (not reachable from the merge's other
    /// parents) that changed `path`: its entry differs from a parent's.
    /// The side's own merges count as commits that made the change (their
    /// signer vouched for it when they were judged). The side's commits are
    /// listed once per merge (`j.walks`), however many paths it carries.
    pub(super) fn made_on(&self, side: Oid, j: &Judging, path: &str) -> Result<Option<Oid>> {
        let mut walks = j.walks.borrow_mut();
        if !walks.contains_key(&side) {
            let mut walk = self.git.revwalk()?;
            walk.set_sorting(Sort::TOPOLOGICAL)?;
            walk.push(side)?;
            for (o, _) in j.parents.iter().filter(|(o, _)| *o != side) {
                walk.hide(*o)?;
            }
            walks.insert(side, walk.collect::<Result<Vec<Oid>, _>>()?);
        }
        for oid in &walks[&side] {
            let commit = self.git.find_commit(*oid)?;
            let mine = self.entry_at(*oid, path)?;
            if commit.parent_count() == 0 && mine.is_some() {
                return Ok(Some(*oid));
            }
            for parent in commit.parent_ids() {
                if self.entry_at(parent, path)? != mine {
                    return Ok(Some(*oid));
                }
            }
        }
        Ok(None)
    }

    /// The signer of `commit`, the same administrator (by fingerprint) in
    /// every parent of the merge being judged, with a key valid there when
    /// the change enters history (`j.at`), or why not.
    fn signer_in_every_parent(
        &self,
        commit: Oid,
        j: &Judging,
        (policy, now): (&dyn Policy, SystemTime),
    ) -> Result<Fingerprint, String> {
        let s = signed::of_commit(&self.git, commit)?.ok_or("unsigned")?;
        let when = UNIX_EPOCH + Duration::from_secs(signed::claimed_unix(&s.signature).max(j.at));
        let mut who: Option<Fingerprint> = None;
        for (parent, admins) in j.parents {
            let list: Vec<(String, &sequoia_openpgp::Cert)> =
                admins.iter().map(|a| (a.name.to_string(), &a.cert)).collect();
            let name = by_any(&s.payload, &s.signature, &list, policy, now + CLOCK_SKEW)
                .map_err(|r| format!("against parent {parent}: {r}"))?;
            let admin = admins.iter().find(|a| a.name.as_str() == name.as_str()).ok_or("no such administrator")?;
            signer_valid_at(name, &admin.cert, &s.signature, policy, when)
                .map_err(|r| format!("against parent {parent}: {r}"))?;
            match &who {
                Some(f) if *f != admin.fingerprint => {
                    return Err(format!("signed by another administrator against parent {parent}"))
                }
                _ => who = Some(admin.fingerprint.clone()),
            }
        }
        who.ok_or_else(|| "no parent to judge it against".to_owned())
    }

    /// Whether the change to `path`, taken cleanly from `side`, was made by
    /// someone who may make it in every parent of the merge: `None` when it
    /// was, else where it came from and why that does not count.
    pub(super) fn carried_by(
        &self,
        side: Oid,
        path: &str,
        change: (&str, &str, bool),
        j: &Judging,
        at: (&dyn Policy, SystemTime),
    ) -> Result<Option<String>> {
        let Some(made) = self.made_on(side, j, path)? else {
            return Ok(Some(format!("parent {side}, where no commit since the merge base made it")));
        };
        // Only a change history vouches for: a commit signed elsewhere (another
        // repository, an orphan root) and pulled in by a side branch counts for nothing.
        if !j.authenticated.contains_key(&made) {
            return Ok(Some(format!("commit {made}, which is not authenticated from the trust root")));
        }
        Ok(match self.signer_in_every_parent(made, j, at) {
            Err(why) => Some(format!("commit {made} ({why})")),
            Ok(fpr) => match self.lacks_authority(j.parents, &fpr, change)? {
                None => None,
                Some(parent) => {
                    let who = j.parents.iter().find_map(|(_, a)| a.by_fingerprint(&fpr)).map(|a| a.name.to_string());
                    Some(format!(
                        "commit {made}, signed by {} ({fpr}), who may not make it in parent {parent}",
                        who.unwrap_or_default()
                    ))
                }
            },
        })
    }
}
