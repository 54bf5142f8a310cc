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
use std::sync::Arc;
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
    head_authenticated: bool,
    authenticated: Vec<String>,
    problems: Vec<Problem>,
    admin_changes: Vec<AdminChange>,
}

type AdminSet = Arc<Result<Admins, String>>;

/// A commit waiting to be judged.
struct Pending {
    oid: Oid,
    summary: String,
    parents: Vec<(Oid, AdminSet)>,
    own: AdminSet,
    /// (armored signature, signed payload)
    signature: Option<(Vec<u8>, Vec<u8>)>,
}

type Verdict = Result<String, Rejection>;

/// Each commit's verdict against each parent's administrators, computed on
/// all cores.
fn judge_all(pending: &[Pending], policy: &dyn Policy, now: SystemTime) -> Vec<Vec<Verdict>> {
    let judge = |p: &Pending| -> Vec<Verdict> {
        p.parents
            .iter()
            .map(|(parent, set)| {
                let admins = set.as_ref().as_ref().map_err(|e| Rejection::InconsistentAdmins {
                    detail: format!("the administrator set at parent {parent} is inconsistent: {e}"),
                })?;
                let (sig, data) = p.signature.as_ref().ok_or(Rejection::Unsigned)?;
                let list: Vec<(String, &sequoia_openpgp::Cert)> =
                    admins.iter().map(|a| (a.name.to_string(), &a.cert)).collect();
                by_any(data, sig, &list, policy, now).cloned()
            })
            .collect()
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = pending.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> =
            pending.chunks(chunk).map(|part| s.spawn(move || part.iter().map(judge).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().expect("a verifying thread panicked")).collect()
    })
}

/// Who was added and removed between two administrator sets.
fn admin_change(before: &AdminSet, after: &AdminSet, commit: Oid, signer: &str) -> Option<AdminChange> {
    let entries = |s: &AdminSet| -> HashSet<String> {
        match s.as_ref() {
            Ok(a) => a.iter().map(|x| format!("{} ({})", x.name, x.fingerprint)).collect(),
            Err(e) => HashSet::from([format!("<inconsistent: {e}>")]),
        }
    };
    let (b, a) = (entries(before), entries(after));
    if a == b {
        return None;
    }
    let mut added: Vec<String> = a.difference(&b).cloned().collect();
    let mut removed: Vec<String> = b.difference(&a).cloned().collect();
    added.sort();
    removed.sort();
    Some(AdminChange { commit: commit.to_string(), signed_by: signer.to_owned(), added, removed })
}

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
        let set = Arc::new(set);
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
        let cache = self.load_cache(root);
        if cache.head == report.head {
            // Nothing new since the last audit from this root.
            report.authenticated = cache.head_authenticated;
            report.problems = cache.problems;
            report.admin_changes = cache.admin_changes;
            return Ok(report);
        }
        if head != root && !self.git.graph_descendant_of(head, root)? {
            report.problems.push(Problem {
                commit: head.to_string(),
                summary: String::new(),
                reasons: vec![format!("the trust root {root} is not an ancestor of HEAD")],
            });
            return Ok(report);
        }
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

        // 1. Read every new commit, parents first, and the administrator set
        //    of each parent (few distinct sets: memoized by tree ids).
        let mut memo = HashMap::new();
        let mut pending = Vec::new();
        for oid in walk {
            let oid = oid?;
            if auth.contains(&oid) {
                continue;
            }
            let commit = self.git.find_commit(oid)?;
            let parents: Vec<(Oid, AdminSet)> =
                commit.parent_ids().map(|p| Ok((p, self.admins_at(p, &mut memo)?))).collect::<Result<_>>()?;
            let own = self.admins_at(oid, &mut memo)?;
            let signature =
                self.git.extract_signature(&oid, Some("gpgsig")).ok().map(|(s, d)| (s.to_vec(), d.to_vec()));
            pending.push(Pending { oid, summary: commit.summary().unwrap_or("").to_owned(), parents, own, signature });
        }
        report.commits_checked = pending.len();

        // 2. Judge each (commit, parent) signature on every core: whether a
        //    signature is an administrator's depends only on the parent's tree.
        let verdicts = judge_all(&pending, policy, now);

        // 3. Propagate authentication, parents first.
        let known_keys: HashSet<String> = memo
            .values()
            .filter_map(|s| s.as_ref().as_ref().ok())
            .flat_map(|a: &Admins| {
                a.iter().flat_map(|x| x.cert.keys().map(|k| k.key().fingerprint().to_hex())).collect::<Vec<_>>()
            })
            .collect();
        for (p, verdicts) in pending.iter().zip(verdicts) {
            let mut reasons = Vec::new();
            let mut signer = None;
            for ((parent, set), verdict) in p.parents.iter().zip(verdicts) {
                if !auth.contains(parent) {
                    continue;
                }
                match verdict {
                    Ok(name) => {
                        signer = Some((set.clone(), name));
                        break;
                    }
                    Err(Rejection::UnknownKey { key }) if known_keys.iter().any(|f| f.ends_with(&key)) => {
                        reasons.push(Rejection::NotAnAdministrator { key }.to_string())
                    }
                    Err(r) => reasons.push(r.to_string()),
                }
            }
            if reasons.is_empty() && signer.is_none() {
                reasons.push("no authenticated parent".to_owned());
            }
            match signer {
                Some((before, name)) => {
                    auth.insert(p.oid);
                    if let Some(change) = admin_change(&before, &p.own, p.oid, &name) {
                        report.admin_changes.push(change);
                    }
                }
                None => {
                    report.problems.push(Problem { commit: p.oid.to_string(), summary: p.summary.clone(), reasons })
                }
            }
        }
        report.authenticated = auth.contains(&head);
        let cache = Cache {
            trust_root: root.to_string(),
            head: head.to_string(),
            head_authenticated: report.authenticated,
            authenticated: auth.iter().filter(|o| **o != root).map(|o| o.to_string()).collect(),
            problems: report.problems.clone(),
            admin_changes: report.admin_changes.clone(),
        };
        // A cache that cannot be written only costs time next run.
        let _ = write_atomic(&self.cache_path(), &serde_json::to_vec(&cache)?, 0o600);
        Ok(report)
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
                .hint(format!(
                    "run `kaws audit` (in {}) to see which commits are not signed by an administrator",
                    self.root.display()
                ))
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
