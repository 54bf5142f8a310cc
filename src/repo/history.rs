//! Authenticating history from the pinned trust root (after sequoia-git).
//!
//! A commit is authenticated when it is the trust root, or when it is
//! signed by a usable administrator according to `kaws.toml` and `pubkeys/`
//! as they stand in one of its parents, and that parent is authenticated.
//! Commits are judged parents first; results are cached in
//! `.git/kaws/audit.json`, keyed by the trust root, so a check on a long
//! history costs almost nothing once done.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use git2::{Oid, Sort};
use sequoia_openpgp::policy::Policy;
use serde::{Deserialize, Serialize};

use super::{txn::write_atomic, Config, Repo, CONFIG_FILE, PUBKEYS_DIR};
use crate::error::refused;
use crate::identity::verify::{by_any, Rejection};
use crate::identity::Admins;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminChange {
    pub commit: String,
    pub signed_by: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Problem {
    pub commit: String,
    pub summary: String,
    /// One reason per authenticated parent tried (or why none could be).
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Audit {
    pub trust_root: String,
    pub head: String,
    pub authenticated: bool,
    pub commits_checked: usize,
    pub problems: Vec<Problem>,
    pub admin_changes: Vec<AdminChange>,
}

/// What `.git/kaws/audit.json` holds.
#[derive(Serialize, Deserialize, Default)]
struct Cache {
    trust_root: String,
    head: String,
    authenticated: Vec<String>,
    problems: Vec<Problem>,
    admin_changes: Vec<AdminChange>,
}

type AdminSet = Rc<Result<Admins, String>>;

impl Repo {
    fn cache_path(&self) -> std::path::PathBuf {
        self.git.path().join("kaws").join("audit.json")
    }

    fn load_cache(&self, root: Oid) -> Cache {
        std::fs::read(self.cache_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Cache>(&b).ok())
            .filter(|c| c.trust_root == root.to_string())
            .unwrap_or_default()
    }

    /// The administrator set as committed in `commit`, or why it is unusable.
    fn admins_at(&self, commit: Oid, memo: &mut HashMap<(Option<Oid>, Option<Oid>), AdminSet>) -> Result<AdminSet> {
        let tree = self.git.find_commit(commit)?.tree()?;
        let id = |p: &str| tree.get_path(Path::new(p)).ok().map(|e| e.id());
        let key = (id(CONFIG_FILE), id(PUBKEYS_DIR));
        if let Some(set) = memo.get(&key) {
            return Ok(set.clone());
        }
        let set = (|| -> Result<Admins, String> {
            let blob = key.0.ok_or("no kaws.toml")?;
            let text = self.git.find_blob(blob).map_err(|e| e.to_string())?;
            let config = Config::parse(&String::from_utf8_lossy(text.content())).map_err(|e| e.to_string())?;
            let mut files = Vec::new();
            if let Some(dir) = key.1 {
                let dir = self.git.find_tree(dir).map_err(|e| e.to_string())?;
                for e in dir.iter() {
                    let blob = e.to_object(&self.git).and_then(|o| o.peel_to_blob()).map_err(|e| e.to_string())?;
                    files.push((e.name().unwrap_or("?").to_owned(), blob.content().to_vec()));
                }
            }
            Admins::load(&config.admins, files).map_err(|e| e.to_string())
        })();
        let set = Rc::new(set);
        memo.insert(key, set.clone());
        Ok(set)
    }

    /// Walks from HEAD back to `root` and judges every commit in between.
    pub fn audit(&self, root: Oid, policy: &dyn Policy, now: SystemTime) -> Result<Audit> {
        let head = self.head().context("the repository has no commits")?;
        let mut report = Audit {
            trust_root: root.to_string(),
            head: head.to_string(),
            authenticated: false,
            commits_checked: 0,
            problems: Vec::new(),
            admin_changes: Vec::new(),
        };
        if head != root && !self.git.graph_descendant_of(head, root)? {
            report.problems.push(Problem {
                commit: head.to_string(),
                summary: String::new(),
                reasons: vec![format!("the trust root {root} is not an ancestor of HEAD")],
            });
            return Ok(report);
        }
        let cache = self.load_cache(root);
        let mut auth: HashSet<Oid> = cache.authenticated.iter().filter_map(|s| Oid::from_str(s).ok()).collect();
        auth.insert(root);
        report.problems = cache.problems;
        report.admin_changes = cache.admin_changes;

        let mut walk = self.git.revwalk()?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
        walk.push(head)?;
        walk.hide(root)?;
        if let Ok(prev) = Oid::from_str(&cache.head) {
            if auth.contains(&prev) {
                walk.hide(prev)?;
            }
        }
        let mut memo = HashMap::new();
        // Every key of every administrator seen, to tell "not an administrator
        // (any more, or yet)" from "a key nobody knows".
        let mut known_keys: HashSet<String> = HashSet::new();
        for oid in walk {
            let oid = oid?;
            if auth.contains(&oid) {
                continue;
            }
            report.commits_checked += 1;
            let commit = self.git.find_commit(oid)?;
            let signature = self.git.extract_signature(&oid, Some("gpgsig")).ok();
            let mut reasons = Vec::new();
            let mut signer = None;
            let parents: Vec<Oid> = commit.parent_ids().filter(|p| auth.contains(p)).collect();
            if parents.is_empty() {
                reasons.push("no authenticated parent".to_owned());
            }
            for parent in parents {
                let set = self.admins_at(parent, &mut memo)?;
                let admins = match set.as_ref() {
                    Ok(a) => a,
                    Err(e) => {
                        reasons.push(format!("the administrator set at parent {parent} is inconsistent: {e}"));
                        continue;
                    }
                };
                for a in admins.iter() {
                    known_keys.extend(a.cert.keys().map(|k| k.key().fingerprint().to_hex()));
                }
                let Some((sig, data)) = &signature else {
                    reasons.push(Rejection::Unsigned.to_string());
                    break;
                };
                let list: Vec<(String, &sequoia_openpgp::Cert)> =
                    admins.iter().map(|a| (a.name.to_string(), &a.cert)).collect();
                match by_any(data, sig, &list, policy, now) {
                    Ok(name) => {
                        signer = Some((parent, name.clone()));
                        break;
                    }
                    Err(Rejection::UnknownKey { key }) => {
                        if let Ok(own) = self.admins_at(oid, &mut memo)?.as_ref() {
                            known_keys.extend(own.iter().flat_map(|a| a.cert.keys().map(|k| k.key().fingerprint().to_hex())));
                        }
                        let known = known_keys.iter().any(|f| f.ends_with(&key));
                        let r = if known { Rejection::NotAnAdministrator { key } } else { Rejection::UnknownKey { key } };
                        reasons.push(r.to_string());
                    }
                    Err(r) => reasons.push(r.to_string()),
                }
            }
            match signer {
                Some((parent, name)) => {
                    auth.insert(oid);
                    if let Some(change) = self.admin_change(parent, oid, &name, &mut memo)? {
                        report.admin_changes.push(change);
                    }
                }
                None => report.problems.push(Problem {
                    commit: oid.to_string(),
                    summary: commit.summary().unwrap_or("").to_owned(),
                    reasons,
                }),
            }
        }
        report.authenticated = auth.contains(&head);
        let cache = Cache {
            trust_root: root.to_string(),
            head: head.to_string(),
            authenticated: auth.iter().filter(|o| **o != root).map(|o| o.to_string()).collect(),
            problems: report.problems.clone(),
            admin_changes: report.admin_changes.clone(),
        };
        // A cache that cannot be written only costs time next run.
        let _ = write_atomic(&self.cache_path(), &serde_json::to_vec(&cache)?, 0o600);
        Ok(report)
    }

    fn admin_change(
        &self,
        parent: Oid,
        commit: Oid,
        signer: &str,
        memo: &mut HashMap<(Option<Oid>, Option<Oid>), AdminSet>,
    ) -> Result<Option<AdminChange>> {
        let before = self.admins_at(parent, memo)?;
        let after = self.admins_at(commit, memo)?;
        let entries = |s: &AdminSet| -> HashSet<String> {
            match s.as_ref() {
                Ok(a) => a.iter().map(|x| format!("{} ({})", x.name, x.fingerprint)).collect(),
                Err(e) => HashSet::from([format!("<inconsistent: {e}>")]),
            }
        };
        let (b, a) = (entries(&before), entries(&after));
        if a == b {
            return Ok(None);
        }
        let mut added: Vec<String> = a.difference(&b).cloned().collect();
        let mut removed: Vec<String> = b.difference(&a).cloned().collect();
        added.sort();
        removed.sort();
        Ok(Some(AdminChange { commit: commit.to_string(), signed_by: signer.to_owned(), added, removed }))
    }

    /// Fails closed unless HEAD is authenticated from the pinned trust root.
    pub fn authenticate(&self, policy: &dyn Policy, now: SystemTime) -> Result<()> {
        let Some(root) = self.trust_root()? else {
            return Err(refused("this clone has no pinned trust root, so its history cannot be authenticated")
                .hint("get the trust root commit id from your team out of band, then run `kaws trust COMMIT`")
                .into());
        };
        let report = self.audit(root, policy, now)?;
        if !report.authenticated {
            return Err(refused(format!("HEAD ({}) is not authenticated from the trust root {root}", report.head))
                .hint(format!("run `kaws audit` (in {}) to see which commits are not signed by an administrator", self.root.display()))
                .into());
        }
        Ok(())
    }

    /// The commit this clone trusts, from the local git config.
    pub fn trust_root(&self) -> Result<Option<Oid>> {
        let cfg = self.git.config()?;
        match cfg.get_string(super::TRUST_ROOT_KEY) {
            Ok(s) => Ok(Some(Oid::from_str(&s).context("kaws.trustroot is not a commit id")?)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Does `commit` hold a `kaws.toml`?
    pub fn git_commit_has_config(&self, commit: Oid) -> Result<bool> {
        Ok(self.git.find_commit(commit)?.tree()?.get_path(Path::new(CONFIG_FILE)).is_ok())
    }

    /// Resolves `rev` to a commit that HEAD descends from.
    pub fn resolve_ancestor(&self, rev: &str) -> Result<Oid> {
        let oid = self
            .git
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|_| refused(format!("{rev} is not a commit of this repository")))?
            .id();
        let head = self.head().context("the repository has no commits")?;
        if oid != head && !self.git.graph_descendant_of(head, oid)? {
            return Err(refused(format!("{oid} is not an ancestor of HEAD ({head})"))
                .hint("check the commit id with your team; the trust root must be in this branch's history")
                .into());
        }
        Ok(oid)
    }
}
