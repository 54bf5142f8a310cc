//! Test harness: a throwaway gpg home (the independent OpenPGP peer), keys
//! made by real gpg, and a runner for the kaws binary with a clean
//! environment. Everything a test starts (gpg-agent) is stopped on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub struct Gpg {
    pub home: TempDir,
}

/// A key made by gpg.
#[derive(Clone, Debug)]
pub struct Key {
    pub fpr: String,
    pub email: String,
}

pub struct KeyOpts<'a> {
    pub uid: &'a str,
    pub encrypt: bool,
    pub expire: &'a str,
    pub faked_time: Option<&'a str>,
    pub passphrase: &'a str,
}

impl Default for KeyOpts<'_> {
    fn default() -> Self {
        KeyOpts { uid: "", encrypt: true, expire: "1y", faked_time: None, passphrase: "" }
    }
}

impl Gpg {
    pub fn new() -> Gpg {
        // Short path: the agent's socket must fit in sun_path.
        let home = tempfile::Builder::new().prefix("kg").tempdir_in("/tmp").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(home.path().join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        Gpg { home }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path()).args(["--batch", "--quiet", "--no-tty"]);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("gpg runs");
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    pub fn gen(&self, name: &str) -> Key {
        self.gen_with(name, KeyOpts::default())
    }

    pub fn gen_with(&self, name: &str, o: KeyOpts) -> Key {
        let email = format!("{name}@example.org");
        let uid = if o.uid.is_empty() { format!("{name} <{email}>") } else { o.uid.to_owned() };
        let mut base: Vec<String> =
            vec!["--pinentry-mode".into(), "loopback".into(), "--passphrase".into(), o.passphrase.into()];
        if let Some(t) = o.faked_time {
            base.push("--faked-system-time".into());
            base.push(t.into());
        }
        let mut args = base.clone();
        args.extend(["--quick-gen-key".into(), uid.clone(), "ed25519".into(), "sign".into(), o.expire.into()]);
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let fpr = self.fpr_of(&uid);
        if o.encrypt {
            let mut args = base;
            args.extend(["--quick-add-key".into(), fpr.clone(), "cv25519".into(), "encr".into(), o.expire.into()]);
            self.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        Key { fpr, email }
    }

    fn fpr_of(&self, uid: &str) -> String {
        let out = self.run(&["--with-colons", "--list-keys", &format!("={uid}")]);
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find(|l| l.starts_with("fpr:"))
            .map(|l| l.split(':').nth(9).unwrap().to_owned())
            .expect("fingerprint")
    }

    /// Writes `gpg --export [--armor]` of `fprs` to `dir/file`.
    pub fn export(&self, fprs: &[&str], armor: bool, path: &Path) -> PathBuf {
        let mut args = vec!["--export"];
        if armor {
            args.push("--armor");
        }
        args.extend(fprs);
        std::fs::write(path, self.run(&args).stdout).unwrap();
        path.to_path_buf()
    }

    pub fn export_secret(&self, fpr: &str, passphrase: &str, path: &Path) -> PathBuf {
        let out = self.run(&["--pinentry-mode", "loopback", "--passphrase", passphrase, "--export-secret-keys", fpr]);
        let _ = std::fs::remove_file(path);
        write_secret(path, &out.stdout);
        path.to_path_buf()
    }

    /// Imports the revocation certificate gpg made at key generation.
    pub fn revoke(&self, fpr: &str) {
        let rev = self.home.path().join("openpgp-revocs.d").join(format!("{fpr}.rev"));
        let text = std::fs::read_to_string(rev).unwrap().replace(":-----BEGIN", "-----BEGIN");
        let tmp = self.home.path().join("rev.asc");
        std::fs::write(&tmp, text).unwrap();
        self.run(&["--import", tmp.to_str().unwrap()]);
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").env("GNUPGHOME", self.home.path()).args(["--kill", "all"]).output();
    }
}

/// The kaws binary with an environment that holds nothing of the user's.
pub fn kaws(gpg: &Gpg, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kaws"));
    c.current_dir(dir)
        .env_remove("KAWS_SECRET_KEY")
        .env_remove("KAWS_PASSPHRASE_FILE")
        .env_remove("KAWS_TEST_ABORT_AFTER")
        .env("GNUPGHOME", gpg.home())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("XDG_STATE_HOME")
        // The user's home (where kaws keeps its audit-cache key) is outside
        // every repository, as it is for a real user.
        .env("HOME", gpg.home().join("user-home"))
        .env("NO_COLOR", "1");
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut c: Command) -> Run {
    let out = c.output().expect("kaws runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `git add -A && git commit -S` as the holder of `fpr` (a key in `gpg`):
/// how an administrator, or anyone with push access, changes the repository
/// behind kaws' back.
pub fn git_commit_signed(dir: &Path, gpg: &Gpg, fpr: &str, message: &str) {
    git(dir, &["add", "-A"]);
    let out = git_signing(dir, gpg, fpr).args(["commit", "-S", "-q", "-m", message]).output().unwrap();
    assert!(out.status.success(), "git commit -S: {}", String::from_utf8_lossy(&out.stderr));
}

/// `git` in `dir` that signs as the holder of `fpr` (a key in `gpg`).
pub fn git_signing(dir: &Path, gpg: &Gpg, fpr: &str) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GNUPGHOME", gpg.home())
        .args(["-c", "user.name=someone", "-c", "user.email=someone@example.org", "-c"])
        .arg(format!("user.signingkey={fpr}"));
    c
}

/// `git reset --hard REV` of an authenticated commit, then `kaws trust
/// --accept-rewind`: how a team deliberately goes back (the clone's
/// ratchet refuses a rewind it was not told about).
pub fn rewind(f: &Fixture, dir: &Path, rev: &str) {
    git(dir, &["reset", "-q", "--hard", rev]);
    let r = run(f.kaws_as_alice(dir, &["trust", "--accept-rewind"]));
    assert_eq!(r.code, 0, "accepting the rewind to {rev}: {}", r.stderr);
}

/// Every commit reachable from HEAD passes `git verify-commit` with gpg.
pub fn assert_all_commits_verify(repo: &Path, gpg: &Gpg) {
    for commit in git(repo, &["rev-list", "HEAD"]).lines() {
        let ok = Command::new("git")
            .current_dir(repo)
            .env("GNUPGHOME", gpg.home())
            .args(["verify-commit", commit])
            .status()
            .unwrap();
        assert!(ok.success(), "commit {commit} does not verify");
    }
}

/// HEAD, `git status`, and a listing of every file with its content: what
/// "the repository is unchanged" compares.
pub fn snapshot(dir: &Path) -> String {
    let head = Command::new("git").current_dir(dir).args(["rev-parse", "HEAD"]).output().unwrap();
    let status = git(dir, &["status", "--porcelain", "--untracked-files=all", "--ignored"]);
    let mut files = Vec::new();
    for entry in walk(dir) {
        let rel = entry.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        if rel.starts_with(".git/") || rel == ".git" {
            continue;
        }
        // Content, not only size: a refusal must leave every byte as it was.
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&bytes, &mut h);
        files.push(format!("{rel}:{}:{:016x}", bytes.len(), std::hash::Hasher::finish(&h)));
    }
    files.sort();
    format!("{}\n{status}\n{}", String::from_utf8_lossy(&head.stdout), files.join("\n"))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().unwrap() != ".git" {
                out.extend(walk(&p));
            }
        } else {
            out.push(p);
        }
    }
    out
}

/// A repository founded by `alice` whose secret key is in a file.
pub struct Fixture {
    pub gpg: Gpg,
    pub tmp: TempDir,
    pub alice: Key,
    pub alice_secret: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let gpg = Gpg::new();
        let tmp = tempfile::tempdir().unwrap();
        let alice = gpg.gen("alice");
        let alice_secret = gpg.export_secret(&alice.fpr, "", &tmp.path().join("alice.sec"));
        let f = Fixture { gpg, tmp, alice, alice_secret };
        let r = run(f.kaws_as_alice(f.tmp.path(), &["init", "repo", "--admin", "alice"]));
        assert_eq!(r.code, 0, "init: {}", r.stderr);
        f
    }

    pub fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    pub fn kaws_as_alice(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = kaws(&self.gpg, dir);
        c.arg("--secret-key").arg(&self.alice_secret).args(args);
        c
    }

    /// `kaws` in the repository as alice.
    pub fn alice(&self, args: &[&str]) -> Run {
        run(self.kaws_as_alice(&self.repo(), args))
    }

    /// `kaws` in the repository as the holder of the secret key `secret`.
    pub fn with_key(&self, secret: &Path, args: &[&str]) -> Run {
        let mut c = kaws(&self.gpg, &self.repo());
        c.arg("--secret-key").arg(secret).args(args);
        run(c)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

impl Gpg {
    /// `gpg --decrypt FILE`, or the error text.
    pub fn decrypt(&self, path: &Path) -> Result<Vec<u8>, String> {
        let out = self.cmd().args(["--decrypt"]).arg(path).output().unwrap();
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A gpg home holding only `fpr`'s secret key (exported from this one).
    pub fn with_only(&self, fpr: &str) -> Gpg {
        let other = Gpg::new();
        let sec = other.home().join("only.sec");
        self.export_secret(fpr, "", &sec);
        other.run(&["--import", sec.to_str().unwrap()]);
        other
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something listens on 127.0.0.1:`port` (up to a minute: on
/// a busy 2-core machine etcd has taken over 10 s to start).
pub fn wait_port(port: u16) {
    for _ in 0..1200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// Writes `bytes` to a new 0600 file (test secrets live outside the repository).
pub fn write_secret(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

pub fn openssl(args: &[&str]) -> Output {
    Command::new("openssl").args(args).output().expect("openssl runs")
}

/// Finds a tool installed by scripts/setup.sh (on PATH via scripts/test.sh,
/// or in the default cache).
pub fn tool(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
    {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = PathBuf::from(home).join(".cache/kaws/bin").join(name);
    assert!(p.is_file(), "{name} is not installed: run scripts/setup.sh (scripts/test.sh does)");
    p
}

/// Starts tests/fixtures/apiserver.py on a free loopback port with the
/// cluster's `apiserver` certificate (its key opened by gpg into a 0600 file
/// under `scratch`), trusting `trust` for client certificates.
pub fn apiserver(gpg: &Gpg, pki: &Path, scratch: &Path, trust: &Path) -> (Child, u16) {
    let port = free_port();
    let key = scratch.join(format!("apiserver-{port}.pem"));
    write_secret(&key, &gpg.decrypt(&pki.join("apiserver.key.pgp")).expect("a primary opens the apiserver key"));
    let child = Child(
        Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apiserver.py"))
            .arg(pki.join("apiserver.crt"))
            .arg(&key)
            .arg(trust)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs"),
    );
    wait_port(port);
    (child, port)
}

/// Every leaf certificate of a cluster with `masters` masters, with the path
/// of its CA, as the table in src/pki promises (checked independently here).
pub fn leaves(masters: u32) -> Vec<(String, &'static str)> {
    let mut v: Vec<(String, &'static str)> = [
        ("apiserver", "ca"),
        ("apiserver-kubelet-client", "ca"),
        ("controller-manager", "ca"),
        ("scheduler", "ca"),
        ("super-admin", "ca"),
        ("front-proxy-client", "front-proxy-ca"),
        ("apiserver-etcd-client", "etcd/ca"),
        ("etcd/healthcheck-client", "etcd/ca"),
    ]
    .into_iter()
    .map(|(l, c)| (l.to_owned(), c))
    .collect();
    for i in 0..masters {
        v.push((format!("etcd/server-{i}"), "etcd/ca"));
        v.push((format!("etcd/peer-{i}"), "etcd/ca"));
    }
    v
}

/// `kaws --output json audit` as alice: exit code and report.
pub fn audit_json(f: &Fixture) -> (i32, serde_json::Value) {
    let r = f.alice(&["--output", "json", "audit"]);
    (r.code, serde_json::from_str(&r.stdout).unwrap_or_else(|_| panic!("{}\n{}", r.stdout, r.stderr)))
}

/// The reasons `kaws audit` gives for `commit`.
pub fn reasons(report: &serde_json::Value, commit: &str) -> String {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["commit"] == commit.trim())
        .map(|p| p["reasons"].to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Makes a key for `name` in the fixture's gpg home; alice adds it.
pub fn add_admin(f: &Fixture, name: &str) -> Key {
    add_admin_key(f, name, f.gpg.gen(name))
}

/// alice adds `k` (a key of the fixture's gpg home) as administrator `name`.
pub fn add_admin_key(f: &Fixture, name: &str, k: Key) -> Key {
    let file = f.gpg.export(&[&k.fpr], true, &f.file(&format!("{name}.asc")));
    let r = f.alice(&["key", "add", name, file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    k
}

/// `kaws cluster init prod` (one master) as alice.
pub fn init_cluster(f: &Fixture) {
    init_cluster_with(f, &["--masters", "1"]);
}

/// `kaws cluster init prod` in eu-west-1 with `extra` options, as alice.
pub fn init_cluster_with(f: &Fixture, extra: &[&str]) {
    init_cluster_named(f, "prod", "eu-west-1", extra);
}

/// `kaws cluster init NAME --region REGION` with `extra` options, as alice.
pub fn init_cluster_named(f: &Fixture, name: &str, region: &str, extra: &[&str]) {
    let mut args = vec!["cluster", "init", name, "--domain", "example.com", "--region", region];
    args.extend_from_slice(extra);
    let r = f.alice(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// An ECDSA P-256 private key in PEM made by openssl at `path`.
pub fn openssl_ec_key(path: &Path) {
    let out = openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// An outsider, `name`, proposes her own key on a new branch `add-NAME`
/// with `kaws key add` signed by herself; HEAD stays on that branch.
pub fn propose_own_key(f: &Fixture, name: &str) -> (Key, Run) {
    let repo = f.repo();
    let k = f.gpg.gen(name);
    let cert = f.gpg.export(&[&k.fpr], true, &f.file(&format!("{name}.asc")));
    let sec = f.gpg.export_secret(&k.fpr, "", &f.file(&format!("{name}.sec")));
    git(&repo, &["switch", "-q", "-c", &format!("add-{name}")]);
    let mut c = kaws(&f.gpg, &repo);
    c.arg("--secret-key").arg(&sec).args(["key", "add", name]).arg(&cert);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    (k, r)
}

/// Copies the directory tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// `kaws cluster render NAME --role ROLE…` as alice: the user-data text.
pub fn render(f: &Fixture, name: &str, role: &[&str]) -> String {
    let mut args = vec!["cluster", "render", name, "--role"];
    args.extend(role);
    let r = f.alice(&args);
    assert_eq!(r.code, 0, "{role:?}: {}", r.stderr);
    r.stdout
}

/// Every write_files entry of a cloud-config, as (path, content).
pub fn write_files(user_data: &str) -> Vec<(String, String)> {
    let doc: serde_yaml::Value = serde_yaml::from_str(user_data).unwrap();
    doc["write_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|w| {
            let content = w["content"].as_str().unwrap();
            let content = match w["encoding"].as_str() {
                Some("b64") => {
                    use base64::Engine as _;
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(content).unwrap()).unwrap()
                }
                None => content.to_owned(),
                Some(other) => panic!("unexpected encoding {other}"),
            };
            (w["path"].as_str().unwrap().to_owned(), content)
        })
        .collect()
}

/// A kubeconfig for kubectl from files: CA, client certificate and key.
pub fn kubeconfig(dir: &Path, name: &str, port: u16, ca: &Path, cert: &Path, key: &Path) -> PathBuf {
    let kc = dir.join(format!("{name}.kubeconfig"));
    let k = |args: &[&str]| {
        let out = Command::new("kubectl").arg("--kubeconfig").arg(&kc).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    k(&[
        "config",
        "set-cluster",
        "c",
        &format!("--server=https://127.0.0.1:{port}"),
        &format!("--certificate-authority={}", ca.display()),
        "--embed-certs",
    ]);
    k(&[
        "config",
        "set-credentials",
        "u",
        &format!("--client-certificate={}", cert.display()),
        &format!("--client-key={}", key.display()),
        "--embed-certs",
    ]);
    k(&["config", "set-context", "x", "--cluster=c", "--user=u"]);
    k(&["config", "use-context", "x"]);
    kc
}

/// Whether `kubectl get --raw /version` succeeds with the kubeconfig `kc`.
pub fn kubectl_ok(kc: &Path) -> bool {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kc)
        .args(["get", "--raw", "/version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// HEAD's commit id in `repo`.
pub fn head(repo: &Path) -> String {
    git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
}

/// Runs `args` as the holder of `secret` and checks a refusal: exit 3,
/// `needle` in the message, a hint, and a byte-identical work tree.
pub fn refused_as(f: &Fixture, secret: &Path, args: &[&str], needle: &str) -> Run {
    let before = snapshot(&f.repo());
    let r = f.with_key(secret, args);
    assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
    assert!(r.stderr.contains(needle), "{args:?}: expected {needle:?} in:\n{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{args:?}: no next step in:\n{}", r.stderr);
    assert_eq!(before, snapshot(&f.repo()), "{args:?} changed the work tree");
    r
}
