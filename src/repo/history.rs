//! Authenticating history from the pinned trust root (after sequoia-git).
//!
//! A commit is authenticated when it is the trust root, or when it has at
//! least one authenticated parent and, against **every** authenticated
//! parent: its one `gpgsig` header verifies as made by a signing key of the
//! same administrator (as `kaws.toml` and `pubkeys/` stand in that parent),
//! a key not revoked there, alive at the signature's time; that time is no
//! earlier than the parent's own signature and no later than now plus
//! [`CLOCK_SKEW`]; and what it changes the signer may change (see
//! [`super::rules`]). A parent that is not authenticated (an outsider's
//! proposal) is judged through its nearest authenticated ancestors: the
//! signer must be an administrator there too, so an unsigned commit cannot
//! hide the current administrator set from a merge.
//!
//! Results are cached in `.git/kaws/audit.json` under the user's MAC key
//! ([`super::cachekey`]); HEAD's own signature is checked on every run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use git2::{Oid, Sort};
use sequoia_openpgp::policy::Policy;
use serde::{Deserialize, Serialize};

use super::cachekey::CacheKey;
use super::signed::{self, unix, Signed};
use super::{txn::write_atomic, Config, Repo, CONFIG_FILE, PUBKEYS_DIR};
use crate::error::refused;
use crate::identity::verify::{by_any, signer_valid_at, Rejection};
use crate::identity::{Admins, Fingerprint};

/// How far a signature's claimed time may run ahead of this machine's clock.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminChange {
    pub commit: String,
    /// The parent the change is measured against (every authenticated parent is).
    pub parent: String,
    pub signed_by: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Keys kept under another name: "OLD renamed NEW (FPR)".
    #[serde(default)]
    pub renamed: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Problem {
    pub commit: String,
    pub summary: String,
    /// Every reason the commit is not authenticated.
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

/// Bumped whenever the rules change: verdicts reached under other rules are
/// not reused.
const CACHE_VERSION: u32 = 4;

/// What `.git/kaws/audit.json` holds (inside a MAC'd envelope).
#[derive(Serialize, Deserialize, Default)]
struct Cache {
    version: u32,
    trust_root: String,
    git_dir: String,
    head: String,
    /// Authenticated commit → its signature's claimed time (unix seconds).
    authenticated: BTreeMap<String, u64>,
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
    signed: Result<Option<Signed>, String>,
}

type Verdict = Result<String, Rejection>;

/// `p`'s verdict against the administrators of `parent` (one of its parents,
/// or the nearest authenticated ancestor of one).
fn verdict(p: &Pending, parent: Oid, set: &AdminSet, policy: &dyn Policy, now: SystemTime) -> Verdict {
    let admins = set.as_ref().as_ref().map_err(|e| Rejection::InconsistentAdmins {
        detail: format!("the administrator set at parent {parent} is inconsistent: {e}"),
    })?;
    let s = match &p.signed {
        Ok(Some(s)) => s,
        Ok(None) => return Err(Rejection::Unsigned),
        Err(e) => return Err(Rejection::Malformed { detail: e.clone() }),
    };
    // A signature from the future proves nothing about now.
    let claimed = signed::claimed_unix(&s.signature);
    if claimed > unix(now + CLOCK_SKEW) {
        return Err(Rejection::SignedInFuture { signed: claimed });
    }
    let list: Vec<(String, &sequoia_openpgp::Cert)> = admins.iter().map(|a| (a.name.to_string(), &a.cert)).collect();
    // Verified as of the latest time a signature may claim.
    by_any(&s.payload, &s.signature, &list, policy, now + CLOCK_SKEW).cloned()
}

/// Each commit's verdict against each parent's administrators, computed on
/// all cores.
fn judge_all(pending: &[Pending], policy: &dyn Policy, now: SystemTime) -> Vec<Vec<Verdict>> {
    let judge = |p: &Pending| -> Vec<Verdict> {
        p.parents.iter().map(|(parent, set)| verdict(p, *parent, set, policy, now)).collect()
    };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = pending.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> =
            pending.chunks(chunk).map(|part| s.spawn(move || part.iter().map(judge).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().expect("a verifying thread panicked")).collect()
    })
}

/// Who was added, removed and renamed between two administrator sets (by
/// fingerprint: a rename keeps the key and changes the name that cluster
/// files are addressed by, so it is shown like an addition).
fn admin_change(before: &AdminSet, after: &AdminSet, commit: Oid, parent: Oid, signer: &str) -> Option<AdminChange> {
    let entries = |s: &AdminSet| -> BTreeMap<String, String> {
        match s.as_ref() {
            Ok(a) => a.iter().map(|x| (x.fingerprint.to_string(), x.name.to_string())).collect(),
            Err(e) => BTreeMap::from([(format!("<inconsistent: {e}>"), String::new())]),
        }
    };
    let (b, a) = (entries(before), entries(after));
    if a == b {
        return None;
    }
    let show = |(fpr, name): (&String, &String)| format!("{name} ({fpr})");
    let added = a.iter().filter(|(f, _)| !b.contains_key(*f)).map(show).collect();
    let removed = b.iter().filter(|(f, _)| !a.contains_key(*f)).map(show).collect();
    let renamed = a
        .iter()
        .filter_map(|(f, new)| b.get(f).filter(|old| *old != new).map(|old| format!("{old} renamed {new} ({f})")))
        .collect();
    Some(AdminChange {
        commit: commit.to_string(),
        parent: parent.to_string(),
        signed_by: signer.to_owned(),
        added,
        removed,
        renamed,
    })
}

impl Repo {
    fn cache_path(&self) -> std::path::PathBuf {
        self.git.path().join("kaws").join("audit.json")
    }

    fn git_dir(&self) -> String {
        self.git.path().canonicalize().unwrap_or_else(|_| self.git.path().to_path_buf()).display().to_string()
    }

    fn load_cache(&self, key: Option<&CacheKey>, root: Oid) -> Cache {
        let Some(key) = key else { return Cache::default() };
        std::fs::read(self.cache_path())
            .ok()
            .and_then(|b| key.open(&b))
            .and_then(|body| serde_json::from_str::<Cache>(&body).ok())
            .filter(|c| c.version == CACHE_VERSION && c.trust_root == root.to_string() && c.git_dir == self.git_dir())
            .unwrap_or_default()
    }

    /// Forgets every cached verdict (on `kaws trust`).
    pub fn drop_audit_cache(&self) -> Result<()> {
        match std::fs::remove_file(self.cache_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("removing .git/kaws/audit.json"),
            _ => Ok(()),
        }
    }

    /// The administrator set as committed in `commit`, or why it is unusable.
    fn admins_at(
        &self,
        commit: Oid,
        memo: &mut HashMap<(Option<Oid>, Option<Oid>), AdminSet>,
        policy: &dyn Policy,
        now: SystemTime,
    ) -> Result<AdminSet> {
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
            Admins::load(&config.admins, files, policy, now).map_err(|e| e.to_string())
        })();
        let set = Arc::new(set);
        memo.insert(key, set.clone());
        Ok(set)
    }

    /// The nearest authenticated ancestors of `starts` (commits that are not
    /// authenticated), walking only through history since the trust root.
    fn authenticated_frontier(
        &self,
        starts: &[Oid],
        auth: &HashMap<Oid, u64>,
        pending: &HashSet<Oid>,
        root: Oid,
    ) -> Result<BTreeSet<Oid>> {
        let (mut stack, mut seen, mut out) = (starts.to_vec(), HashSet::new(), BTreeSet::new());
        while let Some(o) = stack.pop() {
            if !seen.insert(o) {
                continue;
            }
            if auth.contains_key(&o) {
                out.insert(o);
            } else if pending.contains(&o) || self.git.graph_descendant_of(o, root).unwrap_or(false) {
                stack.extend(self.git.find_commit(o)?.parent_ids());
            }
        }
        Ok(out)
    }

    /// The trust root's own signature time (its descendants may not sign earlier).
    fn signed_time(&self, oid: Oid) -> u64 {
        match signed::of_commit(&self.git, oid) {
            Ok(Some(s)) => signed::claimed_unix(&s.signature),
            _ => 0,
        }
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
        let key = CacheKey::for_user(&self.root);
        let cache = self.load_cache(key.as_ref(), root);
        let mut auth: HashMap<Oid, u64> =
            cache.authenticated.iter().filter_map(|(s, t)| Some((Oid::from_str(s).ok()?, *t))).collect();
        auth.insert(root, self.signed_time(root));
        // HEAD's own signature is checked on every run, cached or not.
        let head_was_authenticated = head != root && auth.remove(&head).is_some();
        let head_s = head.to_string();
        report.problems = cache.problems.into_iter().filter(|p| p.commit != head_s).collect();
        report.admin_changes = cache.admin_changes.into_iter().filter(|c| c.commit != head_s).collect();

        let head_parents: Vec<Oid> = self.git.find_commit(head)?.parent_ids().collect();
        let only_head = head != root && head_parents.iter().all(|p| auth.contains_key(p));
        // (Authenticated commits descend from the root: when HEAD's parents
        // all are, so does HEAD, and the walk down to the root is skipped.)
        if !only_head && !self.descends_from(head, root) {
            report.problems.push(Problem {
                commit: head.to_string(),
                summary: String::new(),
                reasons: vec![format!("the trust root {root} is not an ancestor of HEAD")],
            });
            report.admin_changes.clear();
            report.problems.retain(|p| p.commit == head_s);
            return Ok(report);
        }
        let walk: Vec<Oid> = if only_head {
            // The usual case once cached: only HEAD is new (a revwalk would
            // still mark the whole history behind the hidden parents).
            vec![head]
        } else {
            let mut walk = self.git.revwalk()?;
            walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
            walk.push(head)?;
            walk.hide(root)?;
            if let Ok(prev) = Oid::from_str(&cache.head) {
                // Only when HEAD moved forward from it: hiding an ancestor-or-self
                // of HEAD's re-checked commit would hide HEAD itself.
                if prev != head && auth.contains_key(&prev) && self.descends_from(head, prev) {
                    walk.hide(prev)?;
                }
            }
            for p in &head_parents {
                if auth.contains_key(p) {
                    walk.hide(*p)?;
                }
            }
            walk.collect::<Result<_, _>>()?
        };

        // 1. Read every new commit, parents first, and the administrator set
        //    of each parent (few distinct sets: memoized by tree ids).
        let mut memo = HashMap::new();
        let mut pending = Vec::new();
        for oid in walk {
            if auth.contains_key(&oid) {
                continue;
            }
            let commit = self.git.find_commit(oid)?;
            let parents: Vec<(Oid, AdminSet)> = commit
                .parent_ids()
                .map(|p| Ok((p, self.admins_at(p, &mut memo, policy, now)?)))
                .collect::<Result<_>>()?;
            let own = self.admins_at(oid, &mut memo, policy, now)?;
            let signed = signed::of_commit(&self.git, oid);
            pending.push(Pending { oid, summary: commit.summary().unwrap_or("").to_owned(), parents, own, signed });
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
        let pending_oids: HashSet<Oid> = pending.iter().map(|p| p.oid).collect();
        for (p, verdicts) in pending.iter().zip(verdicts) {
            // Judged against every authenticated parent and, for a parent
            // that is not authenticated (an outsider's proposal, or an
            // unsigned commit slipped in to hide the current state), against
            // its nearest authenticated ancestors: the signer must be an
            // administrator wherever the merge could take history from.
            let mut against: Vec<(Oid, AdminSet, Verdict)> = Vec::new();
            let mut unauthenticated = Vec::new();
            for ((parent, set), verdict) in p.parents.iter().zip(verdicts) {
                if auth.contains_key(parent) {
                    against.push((*parent, set.clone(), verdict));
                } else {
                    unauthenticated.push(*parent);
                }
            }
            let direct = against.len();
            for f in self.authenticated_frontier(&unauthenticated, &auth, &pending_oids, root)? {
                // An ancestor of a direct parent is already judged through it.
                if against[..direct].iter().any(|(d, ..)| self.descends_from(*d, f)) {
                    continue;
                }
                let set = self.admins_at(f, &mut memo, policy, now)?;
                let v = verdict(p, f, &set, policy, now);
                against.push((f, set, v));
            }
            let mut reasons: Vec<Rejection> = Vec::new();
            let mut signer: Option<(String, Fingerprint)> = None;
            for (parent, set, verdict) in &against {
                match verdict {
                    Ok(name) => {
                        let admins = set.as_ref().as_ref().expect("a verdict was reached, so the set is consistent");
                        let fpr = name.parse().ok().and_then(|n| admins.get(&n)).map(|a| a.fingerprint.clone());
                        let fpr = fpr.context("a verified signer is in the set")?;
                        match &signer {
                            Some((_, f)) if *f != fpr => {
                                reasons.push(Rejection::SignerDiffers { parent: parent.to_string() })
                            }
                            _ => signer = Some((name.clone(), fpr)),
                        }
                    }
                    Err(Rejection::UnknownKey { key }) if known_keys.iter().any(|f| f.ends_with(key.as_str())) => {
                        reasons.push(Rejection::NotAnAdministrator { key: key.clone() })
                    }
                    Err(r) => reasons.push(r.clone()),
                }
            }
            if direct == 0 {
                reasons.push(Rejection::NoAuthenticatedParent);
            }
            let mut signed_at = 0;
            if let (Some((name, fpr)), true, Ok(Some(s))) = (&signer, reasons.is_empty(), &p.signed) {
                let claimed = signed::claimed_unix(&s.signature);
                // Not before the parents' signatures (less the clock skew
                // two honest machines may have between them) ...
                for (parent, ..) in &against {
                    let before = auth[parent];
                    if claimed + CLOCK_SKEW.as_secs() < before {
                        reasons.push(Rejection::SignedBeforeParent {
                            signed: claimed,
                            parent: parent.to_string(),
                            parent_signed: before,
                        });
                    }
                }
                // ... and the key alive at the newest of the claimed time and
                // the parents' times: history's time only moves forward.
                signed_at = against.iter().map(|(o, ..)| auth[o]).fold(claimed, u64::max);
                let when = UNIX_EPOCH + Duration::from_secs(signed_at);
                for (_, set, ..) in &against {
                    let cert = set.as_ref().as_ref().ok().and_then(|a| a.by_fingerprint(fpr)).map(|a| &a.cert);
                    if let Some(cert) = cert {
                        if let Err(r) = signer_valid_at(name, cert, &s.signature, policy, when) {
                            reasons.push(r);
                            break;
                        }
                    }
                }
                let judged: Vec<(Oid, &Admins)> =
                    against.iter().filter_map(|(o, set, ..)| Some((*o, set.as_ref().as_ref().ok()?))).collect();
                let j = super::rules::Judging {
                    commit: p.oid,
                    parents: &judged,
                    own: &p.own,
                    signer: name,
                    signer_fpr: fpr,
                    at: signed_at,
                    authenticated: &auth,
                    walks: Default::default(),
                };
                reasons.extend(self.content_rules(&j, policy, now)?);
            }
            match (signer, reasons.is_empty()) {
                (Some((name, _)), true) => {
                    auth.insert(p.oid, signed_at);
                    for (parent, set, ..) in &against {
                        if let Some(change) = admin_change(set, &p.own, p.oid, *parent, &name) {
                            report.admin_changes.push(change);
                        }
                    }
                }
                _ => report.problems.push(Problem {
                    commit: p.oid.to_string(),
                    summary: crate::text::escape(&p.summary).into_owned(),
                    reasons: reasons.iter().map(ToString::to_string).collect(),
                }),
            }
        }
        report.authenticated = auth.contains_key(&head);
        let unchanged = cache.head == head_s && head_was_authenticated == report.authenticated && pending.len() <= 1;
        if let (Some(key), false) = (key, unchanged) {
            let cache = Cache {
                version: CACHE_VERSION,
                trust_root: root.to_string(),
                git_dir: self.git_dir(),
                head: head.to_string(),
                authenticated: auth.iter().filter(|(o, _)| **o != root).map(|(o, t)| (o.to_string(), *t)).collect(),
                problems: report.problems.clone(),
                admin_changes: report.admin_changes.clone(),
            };
            // A cache that cannot be written only costs time next run.
            if let Some(sealed) = key.seal(serde_json::to_string(&cache)?) {
                let _ = write_atomic(&self.cache_path(), &sealed, 0o600);
            }
        }
        Ok(report)
    }

    /// Fails closed unless HEAD is authenticated from the pinned trust root
    /// and does not rewind what this clone accepted before; then records
    /// HEAD as accepted.
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
        let head = self.head().context("the repository has no commits")?;
        if let Some(why) = self.rewind_of(head)? {
            return Err(refused(why)
                .hint("someone may have reset the branch to drop a removal or rotation: fetch and check with your team; if the rewind is intended, `kaws trust --accept-rewind` accepts HEAD (logged)")
                .into());
        }
        self.advance_ratchet(head)
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

    /// Is `later` `earlier` or one of its descendants?
    pub fn descends_from(&self, later: Oid, earlier: Oid) -> bool {
        later == earlier || self.git.graph_descendant_of(later, earlier).unwrap_or(false)
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
        if !self.descends_from(head, oid) {
            return Err(refused(format!("{oid} is not an ancestor of HEAD ({head})"))
                .hint("check the commit id with your team; the trust root must be in this branch's history")
                .into());
        }
        Ok(oid)
    }
}
