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
    // Refused before anything is signed or moved, not half-way through.
    check_diff(git, &base, &tree)?;
    let sig = git2::Signature::now(&author.name, &author.email)?;
    let parent = old.map(|o| git.find_commit(o)).transpose()?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let buf = git.commit_create_buffer(&sig, &sig, message, &tree, &parents)?;
    let armored = signer.sign_commit(&buf).context("signing the commit")?;
    let payload = std::str::from_utf8(&buf).context("commit buffer is not UTF-8")?;
    let new = git.commit_signed(payload, &armored, Some("gpgsig"))?;
    // The new objects reach the disk before anything names them.
    sync_filesystem(git.path())?;
    fault::point();

    let journal = Journal { branch: branch.clone(), old: old.map(|o| o.to_string()), new: new.to_string() };
    write_atomic(&journal_path(git), toml::to_string(&journal)?.as_bytes(), 0o600)?;
    // The journal and the directory entry that names it reach the disk
    // before the branch moves.
    fs::File::open(journal_path(git))?.sync_all()?;
    sync_dir(journal_path(git).parent().expect("the journal has a directory"))?;
    fault::point();

    let log = format!("kaws: {}", message.lines().next().unwrap_or(""));
    match old {
        Some(o) => git.reference_matching(&branch, new, true, o, &log),
        None => git.reference(&branch, new, false, &log),
    }
    .context("moving the branch to the new commit (did another process change it?)")?;
    // The moved branch is durable before the work tree changes: a power loss
    // cannot revert it under files already rewritten.
    sync_filesystem(git.path())?;
    fault::point();

    materialize(git, &base, &tree)?;
    fs::remove_file(journal_path(git)).context("removing the change journal")?;
    Ok(Some(new))
}

/// Flushes everything written to the filesystem holding `dir` (syncfs(2)):
/// one call covers every loose object, ref and directory libgit2 wrote,
/// where an fsync per object would cost one disk flush each.
fn sync_filesystem(dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let d = fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    // SAFETY: syncfs on a descriptor we own; it has no other preconditions.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("syncing {}", dir.display()));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

/// Finishes or discards a change that a crash interrupted. Runs only after
/// HEAD is authenticated: the journal lives in `.git/`, which a copied or
/// shared repository lets someone else write, so it is believed only when
/// it names the branch HEAD is on, a new commit whose only parent is the
/// old one, and that new commit is the (authenticated) HEAD; every path it
/// would write is checked by [`safe_path`].
pub fn recover(git: &Repository) -> Result<()> {
    let path = journal_path(git);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("reading .git/kaws/journal"),
    };
    let bad = |why: String| {
        crate::error::refused(format!(".git/kaws/journal cannot be trusted: {why}"))
            .hint("nothing was written; inspect it (cat .git/kaws/journal), then delete it and run the command again")
    };
    let journal: Journal = toml::from_str(&text).map_err(|e| bad(format!("it does not parse ({e})")))?;
    let (branch, _) = head_branch(git)?;
    if journal.branch != branch {
        return Err(bad(format!("it names {}, but HEAD is on {branch}", journal.branch)).into());
    }
    let current = git.find_reference(&journal.branch).ok().and_then(|r| r.target());
    let new = Oid::from_str(&journal.new).map_err(|e| bad(e.to_string()))?;
    let old = journal.old.as_deref().map(Oid::from_str).transpose().map_err(|e| bad(e.to_string()))?;
    if current == Some(new) {
        let parents: Vec<Oid> = git.find_commit(new)?.parent_ids().collect();
        if parents != old.into_iter().collect::<Vec<_>>() {
            return Err(bad(format!("its new commit {new} is not a child of its old one")).into());
        }
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

/// A file mode kaws writes and accepts: a regular file (no symbolic link
/// or submodule).
pub(super) fn is_regular(mode: FileMode) -> bool {
    matches!(mode, FileMode::Blob | FileMode::BlobExecutable | FileMode::BlobGroupWritable)
}

/// Refuses a path kaws would write or delete that could leave the work
/// tree: empty, `.` or `..` components, `.git` in any case, an absolute
/// path, NUL, a first component outside kaws' paths, or a mode other than a
/// regular file.
fn safe_path(path: &Path, mode: FileMode) -> Result<()> {
    use std::path::Component;
    let shown = crate::text::escape(&path.to_string_lossy()).into_owned();
    let refuse = |why: &str| -> Result<()> {
        Err(crate::error::refused(format!("the change would write {shown}: {why}"))
            .hint("nothing was written; the commit or journal naming it was not made by kaws")
            .into())
    };
    if !is_regular(mode) {
        return refuse("not a regular file (a symbolic link or submodule)");
    }
    let mut components = path.components().peekable();
    match components.peek() {
        Some(Component::Normal(first)) if super::MANAGED.iter().any(|m| first.to_str() == Some(m)) => {}
        _ => return refuse("outside kaws.toml, .gitignore, pubkeys/ and clusters/"),
    }
    for c in components {
        let Component::Normal(name) = c else { return refuse("a '.', '..' or absolute component") };
        let bytes = name.as_encoded_bytes();
        if bytes.is_empty() || bytes.contains(&0) || name.eq_ignore_ascii_case(".git") {
            return refuse("an empty, NUL or .git component");
        }
    }
    Ok(())
}

/// The directory `dir` (relative to `root`), made where missing, without
/// following a symbolic link anywhere on the way.
fn real_dir_beneath(root: &Path, dir: &Path) -> Result<std::path::PathBuf> {
    let mut at = root.to_path_buf();
    for c in dir.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(crate::error::refused(format!(
                    "{} is not a directory (a symbolic link?); kaws writes only beneath the repository",
                    crate::text::escape(&at.to_string_lossy())
                ))
                .hint("remove it (git status shows what it is), then run the command again")
                .into())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", at.display())),
        }
    }
    Ok(at)
}

/// Checks every path that differs between `from` and `to` with [`safe_path`].
fn check_diff(git: &Repository, from: &Tree, to: &Tree) -> Result<()> {
    let diff = git.diff_tree_to_tree(Some(from), Some(to), None)?;
    for delta in diff.deltas() {
        for f in [delta.old_file(), delta.new_file()] {
            if let (Some(p), true) = (f.path(), f.exists()) {
                safe_path(p, f.mode())?;
            }
        }
    }
    Ok(())
}

/// Makes the working tree and index match `to` wherever it differs from `from`.
fn materialize(git: &Repository, from: &Tree, to: &Tree) -> Result<()> {
    let root = git.workdir().context("the repository has no working tree")?.to_path_buf();
    // Every path is checked before any is touched.
    check_diff(git, from, to)?;
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
            let dir = real_dir_beneath(&root, p.parent().unwrap_or(Path::new("")))?;
            write_atomic(&dir.join(p.file_name().context("a path without a file name")?), blob.content(), 0o644)?;
            fault::point();
            index.add_path(p)?;
        }
    }
    index.write()?;
    Ok(())
}

fn remove_file(root: &Path, rel: &Path) -> Result<()> {
    let dir = match rel.parent() {
        Some(d) if fs::symlink_metadata(root.join(d)).is_err() => return Ok(()), // already gone
        Some(d) => real_dir_beneath(root, d)?,
        None => root.to_path_buf(),
    };
    let path = dir.join(rel.file_name().context("a path without a file name")?);
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
