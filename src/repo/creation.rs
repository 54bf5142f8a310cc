//! What a commit may put under `clusters/` whoever signs it, so that no
//! administrator can plant something that makes a primary's command fail
//! or that no commit can remove again:
//! - a path kaws can read: UTF-8, no control character;
//! - a new cluster (absent in a parent) has a name kaws accepts and a
//!   `primaries.toml` that parses and names administrators of the commit;
//! - no cluster carries a public key another cluster carries (a copied
//!   certificate, public key or proven CSR): keys are checked against
//!   every other cluster's before they are opened, so a copy would stop
//!   the original cluster's primaries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Result;
use git2::Oid;

use super::rules::{Changed, Judging};
use super::{Repo, CLUSTERS_DIR};
use crate::identity::verify::Rejection;

impl Repo {
    /// Every public key under `clusters/` in `commit`'s tree: SPKI → the
    /// files (`CLUSTER/PATH`) that carry it.
    fn cluster_keys(&self, commit: Oid) -> Result<BTreeMap<Vec<u8>, BTreeSet<String>>> {
        let tree = self.git.find_commit(commit)?.tree()?;
        let mut out: BTreeMap<Vec<u8>, BTreeSet<String>> = BTreeMap::new();
        let Ok(entry) = tree.get_path(Path::new(CLUSTERS_DIR)) else { return Ok(out) };
        let Ok(clusters) = self.git.find_tree(entry.id()) else { return Ok(out) };
        clusters.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            let (Some(name), Some(git2::ObjectType::Blob)) = (e.name(), e.kind()) else {
                return git2::TreeWalkResult::Ok;
            };
            if let Ok(blob) = self.git.find_blob(e.id()) {
                if let Some(spki) = crate::pki::public_key_in(name, &String::from_utf8_lossy(blob.content())) {
                    out.entry(spki).or_default().insert(format!("{dir}{name}"));
                }
            }
            git2::TreeWalkResult::Ok
        })?;
        Ok(out)
    }

    /// The rules above, for the commit being judged and the paths that
    /// differ from any of its parents.
    pub(super) fn cluster_rules(&self, j: &Judging, changed: &[Changed]) -> Result<Vec<Rejection>> {
        let mut out = Vec::new();
        let unreadable: Vec<String> =
            changed.iter().filter(|c| !c.readable).map(|c| crate::text::escape(&c.path).into_owned()).collect();
        if !unreadable.is_empty() {
            out.push(Rejection::UnreadableName { paths: unreadable });
        }
        fn under(c: &Changed) -> Option<(&str, &str)> {
            c.path.strip_prefix("clusters/").and_then(|p| p.split_once('/'))
        }
        // New clusters: in the commit, absent in at least one parent.
        let present: BTreeSet<&str> =
            changed.iter().filter(|c| c.mode.is_some()).filter_map(|c| under(c).map(|(d, _)| d)).collect();
        for cluster in present {
            let mut absent = false;
            for (parent, _) in j.parents {
                absent |= self.primaries_at(*parent, cluster)?.is_none();
            }
            if absent {
                if let Some(why) = self.creation_problem(j, cluster)? {
                    out.push(Rejection::BadNewCluster {
                        cluster: crate::text::escape(cluster).into_owned(),
                        detail: why,
                    });
                }
            }
        }
        // Copied keys: a key file written here that another cluster carries.
        let keyed = |p: &str| [".crt", ".pub", ".csr"].iter().any(|e| p.ends_with(e));
        let written: Vec<&Changed> =
            changed.iter().filter(|c| c.mode.is_some() && under(c).is_some() && keyed(&c.path)).collect();
        if written.is_empty() {
            return Ok(out);
        }
        let keys = self.cluster_keys(j.commit)?;
        let mut copies = BTreeSet::new();
        for files in keys.values() {
            let owners: BTreeSet<&str> = files.iter().filter_map(|f| f.split_once('/').map(|(d, _)| d)).collect();
            if owners.len() < 2 {
                continue;
            }
            for c in &written {
                let rel = c.path.strip_prefix("clusters/").unwrap_or(&c.path);
                if files.contains(rel) {
                    copies.insert(format!(
                        "clusters/{rel} (also in clusters/{})",
                        owners.iter().copied().collect::<Vec<_>>().join(", clusters/")
                    ));
                }
            }
        }
        if !copies.is_empty() {
            out.push(Rejection::CopiedKey { files: copies.into_iter().collect() });
        }
        Ok(out)
    }

    /// Why `clusters/CLUSTER/` as the commit has it is no cluster kaws
    /// could work with: its name, or its `primaries.toml`.
    fn creation_problem(&self, j: &Judging, cluster: &str) -> Result<Option<String>> {
        Ok(match self.primaries_at(j.commit, cluster)? {
            None => Some("it is not a directory".to_owned()),
            Some(Err(e)) => Some(crate::text::escape(&e).into_owned()),
            Some(Ok(p)) if p.is_empty() => Some("primaries.toml names nobody".to_owned()),
            Some(Ok(p)) => match j.own {
                Ok(own) => p
                    .iter()
                    .find(|f| own.by_fingerprint(f).is_none())
                    .map(|f| format!("primaries.toml names {f}, who is no administrator")),
                Err(_) => None,
            },
        })
    }
}
