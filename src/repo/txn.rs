//! One repository change = one signed commit, safe against a crash at any
//! instant.
//!
//! The commit is built entirely in the object database first. A journal in
//! `.git/kaws/journal` then names the old and new commit; the branch is moved
//! with a compare-and-swap; only then are the changed files written into the
//! working tree (each by temporary file and rename). Every kaws command
//! starts with [`recover`]: if the branch already points at the new commit
//! the working tree is rolled forward, otherwise the journal is dropped, and
//! the working tree was never touched. Either way the result is exactly the
//! old state or exactly the new one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use git2::{build::TreeUpdateBuilder, FileMode, Oid, Repository, Tree};
use serde::{Deserialize, Serialize};

use crate::error::failed;
use crate::fault;

/// Signs commits: returns an ASCII-armored detached OpenPGP signature.
pub trait CommitSigner {
    fn sign_commit(&self, payload: &[u8]) -> Result<String>;
}

/// Files to write (`Some`) or delete (`None`), by repository-relative path.
#[derive(Default)]
pub struct Change {
    entries: BTreeMap<String, Option<Vec<u8>>>,
}

impl Change {
    pub fn write(&mut self, path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.entries.insert(path.into(), Some(bytes.into()));
        self
    }

    pub fn remove(&mut self, path: impl Into<String>) -> &mut Self {
        self.entries.insert(path.into(), None);
        self
    }
}

/// Who made a commit (shown by git; the signature is what counts).
pub struct Author {
    pub name: String,
    pub email: String,
}

#[derive(Serialize, Deserialize)]
struct Journal {
    branch: String,
    old: Option<String>,
    new: String,
}

fn journal_path(git: &Repository) -> std::path::PathBuf {
    git.path().join("kaws").join("journal")
}

/// The branch HEAD points at, and its commit if it has one.
fn head_branch(git: &Repository) -> Result<(String, Option<Oid>)> {
    let head = git.find_reference("HEAD").context("reading HEAD")?;
    let Some(branch) = head.symbolic_target() else {
        return Err(failed("HEAD is detached")
            .hint("check out the branch kaws should commit to (git switch main)")
            .into());
    };
    let branch = branch.to_owned();
    let oid = match git.find_reference(&branch) {
        Ok(r) => r.target(),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(e).context("reading the current branch"),
    };
    Ok((branch, oid))
}

fn tree_of(git: &Repository, commit: Option<Oid>) -> Result<Tree<'_>> {
    match commit {
        Some(oid) => Ok(git.find_commit(oid)?.tree()?),
        None => {
            let empty = git.treebuilder(None)?.write()?;
            Ok(git.find_tree(empty)?)
        }
    }
}

/// Builds, signs and lands `change` as one commit on the current branch.
/// Returns `None` if the change would not alter the tree.
pub fn commit(
    git: &Repository,
    change: &Change,
    message: &str,
    author: &Author,
    signer: &dyn CommitSigner,
) -> Result<Option<Oid>> {
    let (branch, old) = head_branch(git)?;
    let base = tree_of(git, old)?;
    let mut update = TreeUpdateBuilder::new();
    for (path, content) in &change.entries {
        match content {
            Some(bytes) => {
                let blob = git.blob(bytes)?;
                update.upsert(path.as_str(), blob, FileMode::Blob);
            }
            None => {
                update.remove(path.as_str());
            }
        }
    }
    let tree_id = update.create_updated(git, &base)?;
    if tree_id == base.id() {
        return Ok(None);
    }
    let tree = git.find_tree(tree_id)?;
    let sig = git2::Signature::now(&author.name, &author.email)?;
    let parent = old.map(|o| git.find_commit(o)).transpose()?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let buf = git.commit_create_buffer(&sig, &sig, message, &tree, &parents)?;
    let armored = signer.sign_commit(&buf).context("signing the commit")?;
    let payload = std::str::from_utf8(&buf).context("commit buffer is not UTF-8")?;
    let new = git.commit_signed(payload, &armored, Some("gpgsig"))?;
    fault::point();

    let journal = Journal { branch: branch.clone(), old: old.map(|o| o.to_string()), new: new.to_string() };
    write_atomic(&journal_path(git), toml::to_string(&journal)?.as_bytes(), 0o600)?;
    fs::File::open(journal_path(git))?.sync_all()?;
    fault::point();

    let log = format!("kaws: {}", message.lines().next().unwrap_or(""));
    match old {
        Some(o) => git.reference_matching(&branch, new, true, o, &log),
        None => git.reference(&branch, new, false, &log),
    }
    .context("moving the branch to the new commit (did another process change it?)")?;
    fault::point();

    materialize(git, &base, &tree)?;
    fs::remove_file(journal_path(git)).context("removing the change journal")?;
    Ok(Some(new))
}

/// Finishes or discards a change that a crash interrupted.
pub fn recover(git: &Repository) -> Result<()> {
    let path = journal_path(git);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("reading .git/kaws/journal"),
    };
    let journal: Journal = toml::from_str(&text).context("parsing .git/kaws/journal")?;
    let current = git.find_reference(&journal.branch).ok().and_then(|r| r.target());
    let new = Oid::from_str(&journal.new)?;
    let old = journal.old.as_deref().map(Oid::from_str).transpose()?;
    if current == Some(new) {
        let (base, tree) = (tree_of(git, old)?, tree_of(git, Some(new))?);
        materialize(git, &base, &tree)?;
        eprintln!("kaws: finished an interrupted change (commit {new})");
    } else if current != old {
        bail!(failed(format!(
            "an interrupted kaws change ({}) was found, but {} has moved since",
            journal.new, journal.branch
        ))
        .hint("inspect with `git status` and `git log`, then delete .git/kaws/journal"));
    }
    fs::remove_file(&path).context("removing .git/kaws/journal")?;
    Ok(())
}

/// Makes the working tree and index match `to` wherever it differs from `from`.
fn materialize(git: &Repository, from: &Tree, to: &Tree) -> Result<()> {
    let root = git.workdir().context("the repository has no working tree")?.to_path_buf();
    let diff = git.diff_tree_to_tree(Some(from), Some(to), None)?;
    let mut index = git.index()?;
    for delta in diff.deltas() {
        let old_path = delta.old_file().path().map(Path::to_path_buf);
        let new_file = delta.new_file();
        if delta.status() == git2::Delta::Deleted || delta.status() == git2::Delta::Renamed {
            if let Some(p) = &old_path {
                remove_file(&root, p)?;
                index.remove_path(p)?;
            }
        }
        if let (Some(p), true) = (new_file.path(), new_file.exists()) {
            let blob = git.find_blob(new_file.id())?;
            write_atomic(&root.join(p), blob.content(), 0o644)?;
            fault::point();
            index.add_path(p)?;
        }
    }
    index.write()?;
    Ok(())
}

fn remove_file(root: &Path, rel: &Path) -> Result<()> {
    let path = root.join(rel);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    fault::point();
    // Drop directories the removal emptied, up to the repository root.
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so readers see the old content or the new, never a part.
/// (No fsync: the committed objects are the truth, and recovery rewrites
/// working-tree files from them.)
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("path has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".kaws-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
