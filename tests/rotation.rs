//! `kaws cluster reencrypt`: resealing, real revocation by rotation, the
//! transition bundles, and crash safety, checked by gpg, openssl and kubectl.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

struct World {
    f: Fixture,
    bob: Key,
    carol: Key,
    carol_secret: PathBuf,
}

impl World {
    /// prod's primaries are alice and bob; carol holds an issued admin certificate.
    fn new() -> World {
        let f = Fixture::new();
        let mut keys = Vec::new();
        for n in ["bob", "carol"] {
            let k = f.gpg.gen(n);
            f.gpg.export(&[&k.fpr], true, &f.file(&format!("{n}.asc")));
            assert_eq!(f.alice(&["key", "add", n, f.file(&format!("{n}.asc")).to_str().unwrap()]).code, 0);
            keys.push(k);
        }
        init_cluster_with(&f, &["--masters", "1", "--primary", "alice", "--primary", "bob"]);
        let carol_secret = f.gpg.export_secret(&keys[1].fpr, "", &f.file("carol.sec"));
        let w = World { bob: keys.remove(0), carol: keys.remove(0), f, carol_secret };
        assert_eq!(w.carol(&["admin", "create", "prod", "carol"]).code, 0);
        let r = w.f.alice(&["admin", "sign", "prod", "carol"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        w
    }

    fn carol(&self, args: &[&str]) -> Run {
        let mut c = kaws(&self.f.gpg, &self.f.repo());
        c.arg("--secret-key").arg(&self.carol_secret).args(args);
        run(c)
    }

    fn pki(&self) -> PathBuf {
        self.f.repo().join("clusters/prod/pki")
    }

    fn sealed(&self) -> Vec<PathBuf> {
        // Every sealed cluster secret: keys and the bootstrap token (not the
        // administrators' own keys, which only their owners read).
        let out = git(&self.f.repo(), &["ls-files", "clusters/prod"]);
        out.lines().filter(|l| l.ends_with(".pgp") && !l.contains("/admins/")).map(|l| self.f.repo().join(l)).collect()
    }
}

fn leaf_pairs() -> Vec<(String, &'static str)> {
    common::leaves(1)
}

fn verifies(ca: &Path, cert: &Path) -> bool {
    openssl(&["verify", "-CAfile", ca.to_str().unwrap(), cert.to_str().unwrap()]).status.success()
}

fn apiserver(w: &World, trust: &Path) -> (Child, u16) {
    common::apiserver(&w.f.gpg, &w.pki(), w.f.tmp.path(), trust)
}

#[test]
fn removing_a_primary_requires_rotation_and_rotation_really_revokes() {
    let w = World::new();
    let f = &w.f;
    let tmp = f.tmp.path();
    let refused = |args: &[&str], who: Option<&Path>, needle: &str| {
        let before = snapshot(&f.repo());
        let r = match who {
            None => f.alice(args),
            Some(_) => w.carol(args),
        };
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: expected {needle:?} in {}", r.stderr);
        assert_eq!(before, snapshot(&f.repo()), "{args:?} changed the repository");
    };
    refused(&["cluster", "reencrypt", "prod", "--primary", "alice"], None, "resealing alone revokes nothing");
    refused(
        &["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"],
        Some(Path::new("carol")),
        "not a primary",
    );
    refused(
        &["cluster", "reencrypt", "prod", "--primary", "alice", "--primary", "nobody"],
        None,
        "no administrator of that name",
    );
    refused(&["cluster", "reencrypt", "prod", "--finish-rotation"], None, "no promoted rotation of prod to finish");
    refused(&["cluster", "reencrypt", "prod", "--promote"], None, "no staged rotation of prod to promote");

    // Before: carol's certificate and key, and every old leaf.
    let old = tmp.join("old-pki");
    copy_dir(&w.pki(), &old);
    let carol_only = f.gpg.with_only(&w.carol.fpr);
    let carol_key = tmp.join("carol.pem");
    write_secret(&carol_key, &carol_only.decrypt(&f.repo().join("clusters/prod/admins/carol.key.pgp")).unwrap());
    let carol_old_cert = tmp.join("carol-old.crt");
    std::fs::copy(f.repo().join("clusters/prod/admins/carol.crt"), &carol_old_cert).unwrap();

    let token_file = f.repo().join("clusters/prod/secrets/bootstrap-token.pgp");
    let old_token = f.gpg.decrypt(&token_file).unwrap();
    let bob_only = f.gpg.with_only(&w.bob.fpr);
    let alice_only = f.gpg.with_only(&f.alice.fpr);
    let opens_only_alice = |what: &str, count: usize| {
        let sealed = w.sealed();
        assert_eq!(sealed.len(), count, "{what}");
        for file in &sealed {
            assert!(bob_only.decrypt(file).is_err(), "{what}: bob still opens {}", file.display());
            assert!(alice_only.decrypt(file).is_ok(), "{what}: alice cannot open {}", file.display());
        }
    };

    // Stage: new CAs and service-account key, trusted beside the current
    // ones, which still sign everything. Every ciphertext at HEAD is alice's only.
    let r = f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("--promote"), "{}", r.stdout);
    assert_eq!(std::fs::read(w.pki().join("ca.crt")).unwrap(), std::fs::read(old.join("ca.crt")).unwrap());
    assert_eq!(
        std::fs::read(f.repo().join("clusters/prod/admins/carol.crt")).unwrap(),
        std::fs::read(&carol_old_cert).unwrap()
    );
    assert_eq!(f.gpg.decrypt(&token_file).unwrap(), old_token, "staging changes no token");
    let staged_ca = std::fs::read_to_string(w.pki().join("staged/ca.crt")).unwrap();
    let bundle = std::fs::read_to_string(w.pki().join("ca-bundle.crt")).unwrap();
    assert_eq!(bundle, std::fs::read_to_string(old.join("ca.crt")).unwrap() + &staged_ca);
    opens_only_alice("staged", 15 + 4);
    let certs = f.alice(&["--output", "json", "cluster", "certs", "prod"]);
    let report: serde_json::Value = serde_json::from_str(&certs.stdout).unwrap();
    assert_eq!(report["rotation_state"], "staged");
    refused(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"], None, "--promote");
    refused(&["cluster", "reencrypt", "prod", "--finish-rotation"], None, "no promoted rotation");

    // Promote: the staged CAs sign a new generation of everything.
    let r = f.alice(&["cluster", "reencrypt", "prod", "--promote"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_all_commits_verify(&f.repo(), &f.gpg);
    assert_ne!(f.gpg.decrypt(&token_file).unwrap(), old_token, "the bootstrap token was not rotated");
    assert_eq!(std::fs::read_to_string(w.pki().join("ca.crt")).unwrap(), staged_ca);
    assert!(!w.pki().join("staged").exists(), "the staged files stay behind");
    opens_only_alice("promoted", 15);
    // New CAs verify every new leaf and no old one.
    for (leaf, ca) in leaf_pairs() {
        let new_ca = w.pki().join(format!("{ca}.crt"));
        assert!(verifies(&new_ca, &w.pki().join(format!("{leaf}.crt"))), "{leaf}");
        assert!(!verifies(&new_ca, &old.join(format!("{leaf}.crt"))), "old {leaf} verifies under the new CA");
    }
    let new_cert = f.repo().join("clusters/prod/admins/carol.crt");
    assert!(verifies(&w.pki().join("ca.crt"), &new_cert));
    assert!(!verifies(&w.pki().join("ca.crt"), &carol_old_cert));
    let bundle = std::fs::read_to_string(w.pki().join("ca-bundle.crt")).unwrap();
    assert!(bundle.starts_with(&std::fs::read_to_string(w.pki().join("ca.crt")).unwrap()));
    assert!(bundle.ends_with(&std::fs::read_to_string(old.join("ca.crt")).unwrap()));
    let certs = f.alice(&["--output", "json", "cluster", "certs", "prod"]);
    let report: serde_json::Value = serde_json::from_str(&certs.stdout).unwrap();
    assert_eq!(report["rotation_state"], "promoted");
    assert_eq!(report["rotation_generation"], 1);
    let record = std::fs::read_to_string(f.repo().join("clusters/prod/rotation.toml")).unwrap();
    assert!(record.contains(&w.bob.fpr), "{record}");

    // kubectl: a server trusting only the new CA takes carol's re-issued
    // certificate and refuses her old one; one trusting the bundle takes both.
    let (_new_only, port) = apiserver(&w, &w.pki().join("ca.crt"));
    let ca_bundle = w.pki().join("ca-bundle.crt");
    assert!(kubectl_ok(&kubeconfig(tmp, "new", port, &ca_bundle, &new_cert, &carol_key)));
    assert!(!kubectl_ok(&kubeconfig(tmp, "old", port, &ca_bundle, &carol_old_cert, &carol_key)));
    let (_bundle, bport) = apiserver(&w, &ca_bundle);
    assert!(kubectl_ok(&kubeconfig(tmp, "new-b", bport, &ca_bundle, &new_cert, &carol_key)));
    assert!(kubectl_ok(&kubeconfig(tmp, "old-b", bport, &ca_bundle, &carol_old_cert, &carol_key)));
    // carol's own `admin install` (exec plugin) works against the new CA.
    let kc = tmp.join("carol.kubeconfig");
    assert_eq!(w.carol(&["admin", "install", "prod", "carol", "--kubeconfig", kc.to_str().unwrap()]).code, 0);
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["config", "set-cluster", "kaws-prod-carol", &format!("--server=https://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["--context", "kaws-prod-carol", "get", "--raw", "/version"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A second rotation waits for the first to finish.
    refused(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"], None, "--finish-rotation");
    let r = f.alice(&["cluster", "reencrypt", "prod", "--finish-rotation"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(w.pki().join("ca-bundle.crt")).unwrap(), std::fs::read(w.pki().join("ca.crt")).unwrap());
    assert_eq!(std::fs::read(w.pki().join("sa-bundle.pub")).unwrap(), std::fs::read(w.pki().join("sa.pub")).unwrap());
    refused(&["cluster", "reencrypt", "prod", "--finish-rotation"], None, "no promoted rotation");
}

#[test]
fn adding_reseals_and_no_rotate_is_recorded() {
    let w = World::new();
    let f = &w.f;
    // Adding carol only reseals: the certificates stay, carol can now read.
    let before_ca = std::fs::read(w.pki().join("ca.crt")).unwrap();
    let r = f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--primary", "bob", "--primary", "carol"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(w.pki().join("ca.crt")).unwrap(), before_ca);
    let carol_only = f.gpg.with_only(&w.carol.fpr);
    for file in w.sealed() {
        assert!(carol_only.decrypt(&file).is_ok(), "{}", file.display());
    }
    // carol's own admin key stays hers alone.
    let alice_only = f.gpg.with_only(&f.alice.fpr);
    assert!(alice_only.decrypt(&f.repo().join("clusters/prod/admins/carol.key.pgp")).is_err());

    let r = f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--primary", "carol", "--no-rotate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("can still read every current key"), "{}", r.stdout);
    let record = std::fs::read_to_string(f.repo().join("clusters/prod/rotation.toml")).unwrap();
    assert!(record.contains("[[exposure]]") && record.contains(&w.bob.fpr), "{record}");
    assert_eq!(std::fs::read(w.pki().join("ca.crt")).unwrap(), before_ca);
}

#[test]
fn a_rotation_killed_at_any_point_leaves_the_old_or_the_new_state() {
    let w = World::new();
    let f = &w.f;
    let repo = f.repo();
    let old_head = git(&repo, &["rev-parse", "HEAD"]);
    let old = snapshot(&repo);
    let alice_only = f.gpg.with_only(&f.alice.fpr);
    let bob_only = f.gpg.with_only(&w.bob.fpr);
    let args = ["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"];
    let check = |what: &str| -> bool {
        let r = f.alice(&["key", "list"]);
        assert_eq!(r.code, 0, "{what}: {}", r.stderr);
        let rotated = git(&repo, &["rev-parse", "HEAD"]) != old_head;
        if rotated {
            assert_eq!(git(&repo, &["rev-parse", "HEAD~1"]), old_head, "{what}");
            assert_eq!(git(&repo, &["status", "--porcelain", "--untracked-files=all"]), "", "{what}");
        } else {
            assert_eq!(snapshot(&repo), old, "{what}: neither old nor new");
        }
        for file in w.sealed() {
            assert!(alice_only.decrypt(&file).is_ok(), "{what}: alice cannot open {}", file.display());
            assert_eq!(bob_only.decrypt(&file).is_ok(), !rotated, "{what}: bob and {}", file.display());
        }
        if rotated {
            rewind(f, &repo, old_head.trim());
        }
        rotated
    };
    let mut outcomes = (0, 0);
    for step in [1, 2, 3, 4, 8, 15, 25, 40] {
        let mut c = f.kaws_as_alice(&repo, &args);
        c.env("KAWS_TEST_ABORT_AFTER", step.to_string());
        let _ = run(c);
        if check(&format!("abort after step {step}")) {
            outcomes.1 += 1
        } else {
            outcomes.0 += 1
        }
    }
    for delay in [0u64, 10, 30, 60, 120, 250] {
        let mut c = f.kaws_as_alice(&repo, &args);
        let mut child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        check(&format!("SIGKILL after {delay} ms"));
    }
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
    // A re-run after all that succeeds.
    let r = f.alice(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn primaries_join_a_staged_rotation_but_leave_only_once_it_finishes() {
    let w = World::new();
    let f = &w.f;
    let r = f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // carol joins while it is staged: she reads the staged keys too.
    let r = f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--primary", "carol"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let carol_only = f.gpg.with_only(&w.carol.fpr);
    assert!(carol_only.decrypt(&w.pki().join("staged/ca.key.pgp")).is_ok());
    // Leaving now would leave her holding the keys the cluster is about to sign with.
    for mode in ["--no-rotate", "--rotate"] {
        let before = snapshot(&f.repo());
        let r = f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", mode]);
        assert_eq!(r.code, 3, "{mode}: {}", r.stderr);
        assert!(r.stderr.contains("--promote"), "{mode}: {}", r.stderr);
        assert_eq!(before, snapshot(&f.repo()), "{mode}");
    }
}
