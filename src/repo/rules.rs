//! What a commit may change, beyond who signed it (the audit applies these
//! to every commit against each authenticated parent):
//! - under kaws' paths, only regular files (no symbolic link or submodule);
//! - an administrator's certificate only grows: the new file must hold
//!   everything the parent's did, so no revocation, expiry or subkey
//!   binding can be rolled back by committing an older export;
//! - under `clusters/NAME/`, a cluster's primaries (as `primaries.toml`
//!   names them in the parent) change anything; any administrator may create
//!   a new cluster, record (not remove) `outputs.toml`, and write their own
//!   request (`admins/SELF.key.pgp`, `.csr`, `.csr.sig`).
//! - a merge is judged as the change it makes against **every** parent: a
//!   cluster path that differs from any parent needs a signer who holds that
//!   authority in every parent, either the merge's signer or, for a path
//!   taken cleanly from one side (equal to that side's, unchanged on the
//!   others since their merge base), the signer of the commit that made the
//!   change on that side ([`super::carried`]). Authority granted by an older
//!   commit (a primary since demoted, a key since expired or revoked, a
//!   cluster that did not exist yet) does not travel through a side branch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use std::time::SystemTime;

use anyhow::Result;
use git2::{FileMode, Oid};
use sequoia_openpgp::policy::Policy;

use super::{Repo, CLUSTERS_DIR, MANAGED};
use crate::identity::verify::Rejection;
use crate::identity::{Admins, Fingerprint};

/// The commit being judged, as the audit established it.
pub(super) struct Judging<'a> {
    pub commit: Oid,
    /// Its authenticated parents (or their nearest authenticated
    /// ancestors), each with its administrator set.
    pub parents: &'a [(Oid, &'a Admins)],
    /// The commit's own administrator set.
    pub own: &'a Result<Admins, String>,
    /// Its signer, by name and fingerprint (the same in every parent).
    pub signer: &'a str,
    pub signer_fpr: &'a Fingerprint,
    /// When its change enters history: the newest of its signature's time
    /// and its parents' (unix seconds).
    pub at: u64,
    /// The commits authenticated so far (every ancestor is judged first).
    pub authenticated: &'a std::collections::HashMap<Oid, u64>,
    /// Each side's commits, newest first, listed once (`Repo::made_on`).
    pub walks: std::cell::RefCell<std::collections::HashMap<Oid, Vec<Oid>>>,
}

/// One path under kaws' paths that differs between a parent and a commit.
pub(super) struct Changed {
    pub path: String,
    /// Every component of the path is UTF-8 without control characters
    /// (kaws cannot read, name or remove anything else).
    pub readable: bool,
    /// Its mode in the commit; `None` when the commit deletes it.
    pub mode: Option<FileMode>,
}

/// What any administrator may change under a cluster: record its outputs
/// (not remove them: a rotation's gate asks AWS only for a cluster that has
/// them, so removing them is the primaries' `cluster destroy`), and write
/// their own request.
fn open_to_any_admin(rest: &str, signer: &str, deleted: bool) -> bool {
    (rest == "outputs.toml" && !deleted)
        || ["key.pgp", "csr", "csr.sig"].iter().any(|ext| rest == format!("admins/{signer}.{ext}"))
}

fn mode_of(m: i32) -> FileMode {
    [
        FileMode::Blob,
        FileMode::BlobExecutable,
        FileMode::BlobGroupWritable,
        FileMode::Link,
        FileMode::Commit,
        FileMode::Tree,
    ]
    .into_iter()
    .find(|f| i32::from(*f) == m)
    .unwrap_or(FileMode::Unreadable)
}

impl Repo {
    /// Every path under kaws' paths that differs between `parent` and
    /// `commit`. Entries are compared by id and mode, and only subtrees
    /// whose ids differ are walked, so a commit that touches one file costs
    /// one path's worth of reads, however large the repository.
    pub(super) fn managed_changes(&self, parent: Oid, commit: Oid) -> Result<Vec<Changed>> {
        let (a, b) = (self.git.find_commit(parent)?.tree()?, self.git.find_commit(commit)?.tree()?);
        let mut out = Vec::new();
        self.tree_changes("", Some(&a), Some(&b), &|name| MANAGED.iter().any(|m| m.as_bytes() == name), &mut out)?;
        Ok(out)
    }

    fn tree_changes(
        &self,
        prefix: &str,
        a: Option<&git2::Tree>,
        b: Option<&git2::Tree>,
        keep: &dyn Fn(&[u8]) -> bool,
        out: &mut Vec<Changed>,
    ) -> Result<()> {
        let entries = |t: Option<&git2::Tree>| -> BTreeMap<Vec<u8>, (Oid, i32)> {
            t.map(|t| {
                t.iter()
                    .filter(|e| keep(e.name_bytes()))
                    .map(|e| (e.name_bytes().to_vec(), (e.id(), e.filemode())))
                    .collect()
            })
            .unwrap_or_default()
        };
        let (ea, eb) = (entries(a), entries(b));
        let names: BTreeSet<&Vec<u8>> = ea.keys().chain(eb.keys()).collect();
        let is_tree = |m: i32| m == i32::from(FileMode::Tree);
        for name in names {
            let (x, y) = (ea.get(name), eb.get(name));
            if x == y {
                continue;
            }
            let path = format!("{prefix}{}", String::from_utf8_lossy(name));
            let sub = |e: Option<&(Oid, i32)>| -> Result<Option<git2::Tree>> {
                Ok(match e {
                    Some((id, m)) if is_tree(*m) => Some(self.git.find_tree(*id)?),
                    _ => None,
                })
            };
            let (ta, tb) = (sub(x)?, sub(y)?);
            if ta.is_some() || tb.is_some() {
                self.tree_changes(&format!("{path}/"), ta.as_ref(), tb.as_ref(), &|_| true, out)?;
            }
            let (fx, fy) = (x.filter(|(_, m)| !is_tree(*m)), y.filter(|(_, m)| !is_tree(*m)));
            if fx.is_some() || fy.is_some() {
                // (Invalid UTF-8 became U+FFFD in `path`.)
                let readable = !path.chars().any(|c| c == '\u{FFFD}' || c.is_control());
                out.push(Changed { path, readable, mode: fy.map(|(_, m)| mode_of(*m)) });
            }
        }
        Ok(())
    }

    /// The entry (id, mode) at `path` in `commit`'s tree.
    pub(super) fn entry_at(&self, commit: Oid, path: &str) -> Result<Option<(Oid, i32)>> {
        let tree = self.git.find_commit(commit)?.tree()?;
        Ok(tree.get_path(Path::new(path)).ok().map(|e| (e.id(), e.filemode())))
    }

    /// In a merge, is `path` taken cleanly from one side: equal to parent
    /// P's, while every other parent still has it as at its merge base with
    /// P? Then the change was made on P's side, which is returned.
    pub(super) fn clean_side(&self, commit: Oid, parents: &[Oid], path: &str) -> Result<Option<Oid>> {
        if parents.len() < 2 {
            return Ok(None);
        }
        let mine = self.entry_at(commit, path)?;
        for p in parents {
            if self.entry_at(*p, path)? != mine {
                continue;
            }
            let mut clean = true;
            for q in parents.iter().filter(|q| *q != p) {
                let base = self.git.merge_base(*p, *q).ok();
                let at_base = match base {
                    Some(b) => self.entry_at(b, path)?,
                    None => None,
                };
                if base.is_none() || self.entry_at(*q, path)? != at_base {
                    clean = false;
                    break;
                }
            }
            if clean {
                return Ok(Some(*p));
            }
        }
        Ok(None)
    }

    /// The primaries' fingerprints of `cluster` at `commit`; `None` when the
    /// cluster does not exist there.
    pub(super) fn primaries_at(
        &self,
        commit: Oid,
        cluster: &str,
    ) -> Result<Option<Result<BTreeSet<Fingerprint>, String>>> {
        let tree = self.git.find_commit(commit)?.tree()?;
        let dir = format!("{CLUSTERS_DIR}/{cluster}");
        match tree.get_path(Path::new(&dir)) {
            Ok(e) if e.kind() == Some(git2::ObjectType::Tree) => {}
            _ => return Ok(None),
        }
        let file = format!("{dir}/{}", crate::cluster::PRIMARIES_FILE);
        let parsed = (|| -> Result<BTreeSet<Fingerprint>, String> {
            let name: crate::name::ClusterName = cluster.parse().map_err(|e| format!("{dir}: {e}"))?;
            let entry = tree.get_path(Path::new(&file)).map_err(|_| format!("{file} is missing"))?;
            let blob = entry.to_object(&self.git).and_then(|o| o.peel_to_blob()).map_err(|e| e.to_string())?;
            let p = crate::cluster::Primaries::parse(&name, &String::from_utf8_lossy(blob.content()))
                .map_err(|e| e.to_string())?;
            Ok(p.primaries.into_values().collect())
        })();
        Ok(Some(parsed))
    }

    /// The first of `parents` in which administrator `fpr` may not make
    /// this change to `clusters/CLUSTER/REST`; `None` when it may in all.
    pub(super) fn lacks_authority(
        &self,
        parents: &[(Oid, &Admins)],
        fpr: &Fingerprint,
        (cluster, rest, deleted): (&str, &str, bool),
    ) -> Result<Option<Oid>> {
        for (parent, admins) in parents {
            let Some(admin) = admins.by_fingerprint(fpr) else { return Ok(Some(*parent)) };
            if open_to_any_admin(rest, admin.name.as_str(), deleted) {
                continue;
            }
            match self.primaries_at(*parent, cluster)? {
                None => continue, // not in this parent: any administrator may create a cluster
                Some(Ok(p)) if p.contains(fpr) => continue,
                _ => return Ok(Some(*parent)),
            }
        }
        Ok(None)
    }

    /// Every rule the commit being judged breaks against its authenticated
    /// parents (each with its administrator set).
    pub(super) fn content_rules(&self, j: &Judging, policy: &dyn Policy, now: SystemTime) -> Result<Vec<Rejection>> {
        let mut out = Vec::new();
        // clusters/CLUSTER/REST that differs from any parent → does the commit delete it?
        let mut cluster_paths: BTreeMap<(String, String), bool> = BTreeMap::new();
        let mut irregular = BTreeSet::new();
        let mut pubkeys_changed = false;
        let oids: Vec<Oid> = j.parents.iter().map(|(o, _)| *o).collect();
        let (mut all_changes, mut seen): (Vec<Changed>, BTreeSet<String>) = (Vec::new(), BTreeSet::new());
        for (parent, _) in j.parents {
            for c in self.managed_changes(*parent, j.commit)? {
                if matches!(c.mode, Some(m) if !super::txn::is_regular(m)) {
                    irregular.insert(c.path.clone());
                }
                pubkeys_changed |= c.path.starts_with("pubkeys/");
                if let Some((cluster, rest)) = c.path.strip_prefix("clusters/").and_then(|p| p.split_once('/')) {
                    cluster_paths.insert((cluster.to_owned(), rest.to_owned()), c.mode.is_none());
                }
                if seen.insert(c.path.clone()) {
                    all_changes.push(c);
                }
            }
        }
        if !irregular.is_empty() {
            out.push(Rejection::NotRegularFile { paths: irregular.into_iter().collect() });
        }
        out.extend(self.cluster_rules(j, &all_changes)?);
        // (cluster, parent where the signer lacks authority) → (paths, where the changes came from)
        let mut refused: BTreeMap<(String, Oid), (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
        for ((cluster, rest), deleted) in cluster_paths {
            let change = (cluster.as_str(), rest.as_str(), deleted);
            let Some(parent) = self.lacks_authority(j.parents, j.signer_fpr, change)? else { continue };
            let path = format!("{CLUSTERS_DIR}/{cluster}/{rest}");
            let mut from = None;
            if let Some(side) = self.clean_side(j.commit, &oids, &path)? {
                match self.carried_by(side, &path, change, j, (policy, now))? {
                    None => continue, // made by someone with the authority in every parent
                    why => from = why,
                }
            }
            let entry = refused.entry((cluster, parent)).or_default();
            entry.0.insert(rest);
            entry.1.extend(from);
        }
        for ((cluster, parent), (paths, from)) in refused {
            out.push(Rejection::NotAPrimary {
                admin: j.signer.to_owned(),
                cluster,
                parent: parent.to_string(),
                paths: paths.into_iter().collect(),
                carried_from: from.into_iter().collect(),
            });
        }
        let (parents, own) = (j.parents, j.own);
        if let (true, Ok(own)) = (pubkeys_changed, own) {
            for (parent, admins) in parents {
                for before in admins.iter() {
                    let Some(after) = own.by_fingerprint(&before.fingerprint) else { continue };
                    if after.cert == before.cert {
                        continue;
                    }
                    let grown = after.cert.clone().merge_public(before.cert.clone());
                    if grown.as_ref().ok() != Some(&after.cert) {
                        out.push(Rejection::CertificateShrank {
                            admin: format!("{} ({})", after.name, after.fingerprint),
                            parent: parent.to_string(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
