//! What a commit may put under `clusters/` whoever signs it, so that no
//! administrator can plant something that makes a primary's command fail
//! or that no commit can remove again:
//! - a path kaws can read: UTF-8, no control character;
//! - nothing but `README.md` and clusters' directories directly under
//!   `clusters/`;
//! - every cluster written to has a name kaws accepts and a
//!   `primaries.toml` that parses and names someone; new content of that
//!   file names administrators of the commit; it goes only with its cluster;
//! - no key new to a cluster is one another cluster carries (a copied
//!   certificate, public key or self-signed request): keys are checked
//!   against every other cluster's before they are opened, so a copy would
//!   stop the original cluster's primaries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use anyhow::Result;
use git2::Oid;

use super::rules::{Changed, Judging};
use super::{Repo, CLUSTERS_DIR};
use crate::cluster::PRIMARIES_FILE;
use crate::identity::verify::Rejection;

/// SPKI → the files (`CLUSTER/PATH`) that carry it.
type Keys = BTreeMap<Vec<u8>, BTreeSet<String>>;

/// Does a file of this name carry a public key kaws compares?
fn keyed(name: &str) -> bool {
    [".crt", ".pub", ".csr"].iter().any(|e| name.ends_with(e))
}

fn under(c: &Changed) -> Option<(&str, &str)> {
    c.path.strip_prefix("clusters/").and_then(|p| p.split_once('/'))
}

impl Repo {
    /// The public key a blob carries, by its file name; memoized by blob id
    /// for the whole process (a blob id names its content).
    fn key_of(&self, blob: Oid, name: &str) -> Option<Vec<u8>> {
        static MEMO: OnceLock<Mutex<HashMap<(Oid, bool, bool), Option<Vec<u8>>>>> = OnceLock::new();
        let kind = (blob, name.ends_with(".csr"), name.ends_with(".pub"));
        let memo = MEMO.get_or_init(Default::default);
        if let Some(k) = memo.lock().expect("key memo").get(&kind) {
            return k.clone();
        }
        let key = self
            .git
            .find_blob(blob)
            .ok()
            .and_then(|b| crate::pki::public_key_in(name, &String::from_utf8_lossy(b.content())));
        memo.lock().expect("key memo").insert(kind, key.clone());
        key
    }

    /// The keys under `clusters/DIR/` in `commit` (every cluster's when
    /// `dir` is `None`).
    fn keys_in(&self, commit: Oid, dir: Option<&str>) -> Result<Keys> {
        let tree = self.git.find_commit(commit)?.tree()?;
        let mut out = Keys::new();
        let Ok(entry) = tree.get_path(std::path::Path::new(CLUSTERS_DIR)) else { return Ok(out) };
        let Ok(clusters) = self.git.find_tree(entry.id()) else { return Ok(out) };
        let mut stack = vec![(String::new(), clusters)];
        while let Some((prefix, t)) = stack.pop() {
            for e in t.iter() {
                let name = String::from_utf8_lossy(e.name_bytes()).into_owned();
                if prefix.is_empty() && dir.is_some_and(|d| d != name) {
                    continue;
                }
                match e.kind() {
                    Some(git2::ObjectType::Tree) => {
                        if let Ok(sub) = self.git.find_tree(e.id()) {
                            stack.push((format!("{prefix}{name}/"), sub));
                        }
                    }
                    Some(git2::ObjectType::Blob) if keyed(&name) => {
                        if let Some(spki) = self.key_of(e.id(), &name) {
                            out.entry(spki).or_default().insert(format!("{prefix}{name}"));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// The rules above, for the commit being judged and the paths that
    /// differ from any of its parents.
    pub(super) fn cluster_rules(&self, j: &Judging, changed: &[Changed]) -> Result<Vec<Rejection>> {
        let written: Vec<&Changed> = changed.iter().filter(|c| c.mode.is_some()).collect();
        let unreadable: Vec<String> =
            written.iter().filter(|c| !c.readable).map(|c| crate::text::escape(&c.path).into_owned()).collect();
        if !unreadable.is_empty() {
            // Nothing more is read from a tree kaws cannot name.
            return Ok(vec![Rejection::UnreadableName { paths: unreadable }]);
        }
        let mut out = Vec::new();
        let bad = |cluster: &str, detail: String| Rejection::BadCluster { cluster: cluster.to_owned(), detail };
        for c in &written {
            if let Some(file) = c.path.strip_prefix("clusters/").filter(|p| !p.contains('/') && *p != "README.md") {
                out.push(bad(file, "a file where only clusters' directories go".to_owned()));
            }
        }
        let clusters: BTreeSet<&str> = written.iter().filter_map(|c| under(c).map(|(d, _)| d)).collect();
        for cluster in &clusters {
            if let Some(why) = self.cluster_problem(j, cluster)? {
                out.push(bad(cluster, why));
            }
        }
        for c in changed.iter().filter(|c| c.mode.is_none()) {
            if let Some((cluster, PRIMARIES_FILE)) = under(c) {
                if self.primaries_at(j.commit, cluster)?.is_some() {
                    out.push(bad(cluster, "primaries.toml is removed while the cluster stays".to_owned()));
                }
            }
        }
        out.extend(self.copied_keys(j, &written, &clusters)?);
        Ok(out)
    }

    /// Why `clusters/CLUSTER/` as the commit has it is no cluster kaws can
    /// work with: its name, or its `primaries.toml`; new content of that
    /// file must name administrators of the commit.
    fn cluster_problem(&self, j: &Judging, cluster: &str) -> Result<Option<String>> {
        let primaries = match self.primaries_at(j.commit, cluster)? {
            None => return Ok(Some("it is not a directory".to_owned())),
            Some(Err(e)) => return Ok(Some(crate::text::escape(&e).into_owned())),
            Some(Ok(p)) if p.is_empty() => return Ok(Some("primaries.toml names nobody".to_owned())),
            Some(Ok(p)) => p,
        };
        let path = format!("{CLUSTERS_DIR}/{cluster}/{PRIMARIES_FILE}");
        let mine = self.entry_at(j.commit, &path)?;
        for (parent, _) in j.parents {
            if self.entry_at(*parent, &path)? == mine {
                return Ok(None); // as in a parent, judged there
            }
        }
        Ok(match j.own {
            Ok(own) => primaries
                .iter()
                .find(|f| own.by_fingerprint(f).is_none())
                .map(|f| format!("primaries.toml names {f}, who is no administrator")),
            Err(e) => Some(format!("the commit's administrator set is inconsistent: {}", crate::text::escape(e))),
        })
    }

    /// Keys written to a cluster that it did not carry in any parent, and
    /// that another cluster carries in the commit.
    fn copied_keys(&self, j: &Judging, written: &[&Changed], clusters: &BTreeSet<&str>) -> Result<Vec<Rejection>> {
        let mut fresh: Vec<(String, Vec<u8>)> = Vec::new();
        for cluster in clusters {
            let mut before: Vec<Keys> = Vec::new();
            for c in written.iter().filter(|c| under(c).is_some_and(|(d, rest)| d == *cluster && keyed(rest))) {
                let Some((blob, _)) = self.entry_at(j.commit, &c.path)? else { continue };
                let Some(spki) = self.key_of(blob, &c.path) else { continue };
                if before.is_empty() {
                    for (parent, _) in j.parents {
                        before.push(self.keys_in(*parent, Some(cluster))?);
                    }
                }
                if !before.iter().any(|k| k.contains_key(&spki)) {
                    fresh.push((c.path.clone(), spki));
                }
            }
        }
        if fresh.is_empty() {
            return Ok(Vec::new());
        }
        let all = self.keys_in(j.commit, None)?;
        let mut copies = BTreeSet::new();
        for (path, spki) in &fresh {
            let own = path.strip_prefix("clusters/").and_then(|p| p.split_once('/')).map_or("", |(d, _)| d);
            let others: BTreeSet<&str> = all
                .get(spki)
                .into_iter()
                .flatten()
                .filter_map(|f| f.split_once('/').map(|(d, _)| d))
                .filter(|d| *d != own)
                .collect();
            if !others.is_empty() {
                let others: Vec<String> = others.iter().map(|d| format!("clusters/{d}")).collect();
                copies.insert(format!("{path} (also in {})", others.join(", ")));
            }
        }
        Ok(if copies.is_empty() {
            Vec::new()
        } else {
            vec![Rejection::CopiedKey { files: copies.into_iter().collect() }]
        })
    }
}
