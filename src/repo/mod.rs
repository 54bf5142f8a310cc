//! The kaws repository on disk: a git work tree whose root holds
//! `kaws.toml`, `pubkeys/` and `clusters/`. Decisions are made from what is
//! committed at HEAD (the working tree must match it for the paths kaws
//! manages); changes land through [`txn`] as one signed commit.

mod cachekey;
mod carried;
pub mod config;
mod creation;
pub mod history;
mod ratchet;
mod rules;
pub mod signed;
pub mod txn;

use std::fs::File;
use std::path::{Path, PathBuf};

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use git2::{Oid, Repository};
use sequoia_openpgp::policy::Policy;

use crate::error::{failed, refused};
use crate::identity::Admins;
pub use config::Config;
pub use txn::{Author, Change, CommitSigner};

pub const CONFIG_FILE: &str = "kaws.toml";
pub const PUBKEYS_DIR: &str = "pubkeys";
pub const CLUSTERS_DIR: &str = "clusters";
/// The paths kaws owns; a dirty working tree here stops every change.
pub const MANAGED: [&str; 4] = [CONFIG_FILE, ".gitignore", PUBKEYS_DIR, CLUSTERS_DIR];
pub(crate) const TRUST_ROOT_KEY: &str = "kaws.trustroot";

pub struct Repo {
    git: Repository,
    root: PathBuf,
    /// Held for the life of the value: one kaws process changes a repository at a time.
    _lock: File,
}

impl Repo {
    /// Finds the kaws repository containing `start` (the nearest ancestor
    /// with a `kaws.toml` at the root of a git work tree).
    pub fn discover(start: &Path) -> Result<Repo> {
        let start = start.canonicalize().with_context(|| format!("{} does not exist", start.display()))?;
        for dir in start.ancestors() {
            if dir.join(CONFIG_FILE).is_file() && dir.join(".git").exists() {
                return Repo::open(dir);
            }
        }
        Err(failed(format!("{} is not inside a kaws repository", start.display()))
            .hint("run `kaws init DIR --admin NAME` to make one, or pass --repo DIR")
            .into())
    }

    /// Opens the git repository whose work tree root is `root`.
    pub fn open(root: &Path) -> Result<Repo> {
        let git = Repository::open(root).with_context(|| format!("{} is not a git repository", root.display()))?;
        let workdir = git.workdir().context("the git repository is bare; kaws needs a working tree")?.canonicalize()?;
        if workdir != root.canonicalize()? {
            return Err(failed(format!(
                "{} is inside the git work tree {}, not at its root",
                root.display(),
                workdir.display()
            ))
            .into());
        }
        let lock = lock(&git)?;
        Ok(Repo { git, root: workdir, _lock: lock })
    }

    /// Opens `root` as a git repository, creating one if it is none.
    pub fn open_or_init(root: &Path) -> Result<Repo> {
        std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
        if Repository::open(root).is_err() {
            let mut opts = git2::RepositoryInitOptions::new();
            opts.initial_head("main");
            Repository::init_opts(root, &opts).with_context(|| format!("git init {}", root.display()))?;
        }
        Repo::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn head(&self) -> Option<Oid> {
        self.git.head().ok().and_then(|h| h.target())
    }

    /// Is there a `kaws.toml` committed or in the working tree?
    pub fn is_kaws_repo(&self) -> bool {
        self.root.join(CONFIG_FILE).exists() || self.read_head(CONFIG_FILE).ok().flatten().is_some()
    }

    /// A file's content as committed at HEAD.
    pub fn read_head(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(head) = self.head() else { return Ok(None) };
        let tree = self.git.find_commit(head)?.tree()?;
        match tree.get_path(Path::new(path)) {
            Ok(entry) => Ok(Some(entry.to_object(&self.git)?.peel_to_blob()?.content().to_vec())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The tree of `dir` at HEAD, if there is one.
    fn head_tree(&self, dir: &str) -> Result<Option<git2::Tree<'_>>> {
        let Some(head) = self.head() else { return Ok(None) };
        let tree = self.git.find_commit(head)?.tree()?;
        match tree.get_path(Path::new(dir)) {
            Ok(e) => Ok(Some(e.to_object(&self.git)?.peel_to_tree()?)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A TOML record as committed at HEAD; `None` if there is no such file.
    pub fn read_toml<T: crate::tomlfile::TomlFile>(&self, path: &str) -> Result<Option<T>> {
        let Some(bytes) = self.read_head(path)? else { return Ok(None) };
        let text = String::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8"))?;
        Ok(Some(T::parse(&text).map_err(|e| refused(format!("{path} is not valid: {e:#}")))?))
    }

    /// The files directly inside `dir` at HEAD, as (name, content).
    pub fn list_head(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let Some(sub) = self.head_tree(dir)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in sub.iter() {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                let name = entry.name().context("a file name is not UTF-8")?.to_owned();
                out.push((name, entry.to_object(&self.git)?.peel_to_blob()?.content().to_vec()));
            }
        }
        Ok(out)
    }

    /// Every file under `dir` at HEAD, recursively, as (path relative to `dir`, content).
    pub fn walk_head(&self, dir: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let Some(sub) = self.head_tree(dir)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let mut failure = None;
        sub.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                let blob = entry.to_object(&self.git).and_then(|o| o.peel_to_blob());
                match (blob, entry.name()) {
                    (Ok(b), Some(n)) => out.push((format!("{root}{n}"), b.content().to_vec())),
                    (Err(e), _) => failure = Some(anyhow::Error::from(e)),
                    (_, None) => failure = Some(anyhow::anyhow!("a file name under {dir} is not UTF-8")),
                }
            }
            git2::TreeWalkResult::Ok
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The directories directly inside `dir` at HEAD.
    pub fn list_head_dirs(&self, dir: &str) -> Result<Vec<String>> {
        let Some(sub) = self.head_tree(dir)? else { return Ok(Vec::new()) };
        Ok(sub
            .iter()
            .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
            .filter_map(|e| e.name().map(str::to_owned))
            .collect())
    }

    pub fn config(&self) -> Result<Config> {
        let bytes =
            self.read_head(CONFIG_FILE)?.ok_or_else(|| failed("kaws.toml is not committed").hint("run `kaws init`"))?;
        let text = String::from_utf8(bytes).context("kaws.toml is not UTF-8")?;
        Ok(Config::parse(&text).map_err(|e| refused(e.to_string()))?)
    }

    /// The administrator set at HEAD, every certificate checked against its
    /// file name and `kaws.toml`.
    pub fn admins(&self, config: &Config, policy: &dyn Policy, now: SystemTime) -> Result<Admins> {
        let files = self.list_head(PUBKEYS_DIR)?;
        Admins::load(&config.admins, files, policy, now).map_err(|e| {
            refused(format!("the repository's administrator set is inconsistent: {e}"))
                .hint("restore pubkeys/ and kaws.toml from a reviewed commit (git log -- pubkeys kaws.toml)")
                .into()
        })
    }

    /// Refuses to go on when the managed paths differ from HEAD.
    pub fn ensure_clean(&self) -> Result<()> {
        let mut opts = git2::StatusOptions::new();
        opts.include_untracked(true).recurse_untracked_dirs(true).include_ignored(false);
        for p in MANAGED {
            opts.pathspec(p);
        }
        let statuses = self.git.statuses(Some(&mut opts))?;
        let dirty: Vec<String> = statuses
            .iter()
            .filter(|s| s.status() != git2::Status::CURRENT)
            .filter_map(|s| s.path().map(str::to_owned))
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        let shown = dirty.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        Err(failed(format!("the working tree has uncommitted changes under kaws' paths: {shown}"))
            .hint("commit, stash or discard them (git status), then run the command again")
            .into())
    }

    /// Lands `change` as one signed commit; `None` if nothing changed.
    pub fn commit(
        &self,
        change: &Change,
        message: &str,
        author: &Author,
        signer: &dyn CommitSigner,
    ) -> Result<Option<Oid>> {
        let oid = txn::commit(&self.git, change, message, author, signer)?;
        if let Some(new) = oid {
            // kaws' own signed commit moves this clone's ratchet forward; if
            // the record cannot be written, the next command does it.
            let _ = self.advance_ratchet(new);
        }
        Ok(oid)
    }

    /// Finishes or discards a change a crash interrupted; call only once
    /// HEAD is authenticated (see [`txn::recover`]).
    pub fn recover(&self) -> Result<()> {
        txn::recover(&self.git)
    }

    pub fn set_trust_root(&self, oid: Oid) -> Result<()> {
        let mut cfg = self.git.config()?.open_level(git2::ConfigLevel::Local)?;
        cfg.set_str(TRUST_ROOT_KEY, &oid.to_string())?;
        Ok(())
    }

    /// git's `user.email`, if set, for commit authorship.
    pub fn user_email(&self) -> Option<String> {
        self.git.config().ok()?.get_string("user.email").ok()
    }

    /// git's `user.signingkey`, if set.
    pub fn signing_key(&self) -> Option<String> {
        self.git.config().ok()?.get_string("user.signingkey").ok()
    }
}

/// An exclusive advisory lock on `.git/kaws/lock`, released by the kernel
/// when the process ends, however it ends. kaws operations are short, so a
/// second process (say kubectl running the exec plugin twice at once) waits
/// for the first, up to a limit.
fn lock(git: &Repository) -> Result<File> {
    const WAIT: std::time::Duration = std::time::Duration::from_secs(30);
    let dir = git.path().join("kaws");
    std::fs::create_dir_all(&dir)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .context("opening .git/kaws/lock")?;
    let start = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(failed("another kaws process has held this repository for 30 seconds")
                    .hint("wait for it to finish (ps aux | grep kaws), then run the command again")
                    .into())
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).context("locking .git/kaws/lock"),
        }
    }
}
