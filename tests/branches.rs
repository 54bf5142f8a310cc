//! Side branches and merges (issue 26), each attack played with real gpg,
//! real git and the kaws binary by an administrator with push access: a
//! primary demoted by a rotation, an administrator added before a cluster
//! existed, a holder of a key revoked since. A merge is judged as the change
//! it makes against every parent; what it carries in from a side counts
//! only if its signer, or the signer of the commit that made the change,
//! holds that authority in every parent. Every refusal: exit 3, the work
//! tree byte-identical, the object named with the next step. Beside each
//! rule, the legitimate flow it must keep working.

mod common;

use std::path::Path;

use common::*;

/// `git merge -S --no-ff BRANCH` into the current branch as the holder of `fpr`.
fn merge_signed(repo: &Path, gpg: &Gpg, fpr: &str, branch: &str) -> String {
    let merge = ["merge", "-q", "-S", "--no-ff", "-m", &format!("Merge {branch}"), branch];
    let out = git_signing(repo, gpg, fpr).args(merge).output().unwrap();
    assert!(out.status.success(), "git merge: {}", String::from_utf8_lossy(&out.stderr));
    head(repo)
}

/// The audit refuses HEAD for `commit`, with every `needle` among its reasons.
fn audit_refuses(f: &Fixture, commit: &str, needles: &[&str]) {
    let (code, report) = audit_json(f);
    assert_eq!(code, 3, "{report}");
    let why = reasons(&report, commit);
    for n in needles {
        assert!(why.contains(n), "expected {n:?} among the reasons for {commit}: {why}");
    }
    refused_as(f, &f.alice_secret, &["cluster", "render", "prod", "--role", "node"], "is not authenticated");
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} holds no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Opens the API to the world in `clusters/prod/cluster.toml`.
fn open_to_world(repo: &Path) {
    edit(
        &repo.join("clusters/prod/cluster.toml"),
        "admin-cidrs = [\"203.0.113.0/24\"]",
        "admin-cidrs = [\"0.0.0.0/0\"]\nallow-world-admin = true",
    );
}

// 1. A primary demoted by a rotation changes the spec through a side branch.
#[test]
fn a_demoted_primary_cannot_change_a_cluster_through_a_side_branch() {
    let f = Fixture::new();
    let repo = f.repo();
    let bob = add_admin(&f, "bob");
    let carol = add_admin(&f, "carol");
    let dave = add_admin(&f, "dave");
    let (bob_sec, carol_sec) = (
        f.gpg.export_secret(&bob.fpr, "", &f.file("bob.sec")),
        f.gpg.export_secret(&carol.fpr, "", &f.file("carol.sec")),
    );
    let r = f.alice(&[
        "cluster",
        "init",
        "prod",
        "--domain",
        "example.com",
        "--region",
        "eu-west-1",
        "--masters",
        "1",
        "--admin-cidr",
        "203.0.113.0/24",
        "--primary",
        "alice",
        "--primary",
        "bob",
        "--primary",
        "carol",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let while_primary = head(&repo);
    let r = f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--primary", "carol", "--rotate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let main = head(&repo);

    // bob, from a commit where he was still a primary, opens the API to
    // the world and signs it; then signs the merge into main.
    git(&repo, &["switch", "-q", "-c", "bob-side", &while_primary]);
    open_to_world(&repo);
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "open the API");
    let side = head(&repo);
    git(&repo, &["switch", "-q", "main"]);
    let merge = merge_signed(&repo, &f.gpg, &bob.fpr, "bob-side");
    let carried = format!("comes from commit {side}, signed by bob");
    audit_refuses(&f, &merge, &[&format!("bob is not a primary of cluster prod in parent {main}"), &carried]);
    // The same merge signed by dave, an administrator who is no primary.
    git(&repo, &["reset", "-q", "--hard", &main]);
    let merge = merge_signed(&repo, &f.gpg, &dave.fpr, "bob-side");
    audit_refuses(&f, &merge, &["dave is not a primary of cluster prod", &carried]);

    // Legitimate: a primary's branch merged by another primary ...
    git(&repo, &["reset", "-q", "--hard", &main]);
    git(&repo, &["switch", "-q", "-c", "alice-side", &main]);
    let r = f.alice(&["cluster", "renew", "prod", "--all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    git(&repo, &["switch", "-q", "main"]);
    assert_eq!(audit_json(&f).0, 0);
    merge_signed(&repo, &f.gpg, &carol.fpr, "alice-side");
    assert_eq!(audit_json(&f).0, 0, "{}", audit_json(&f).1);
    // ... an administrator's signed proposal (his own request) on a branch,
    // merged by a primary ...
    let base = head(&repo);
    git(&repo, &["switch", "-q", "-c", "bob-request", &base]);
    let r = f.with_key(&bob_sec, &["admin", "create", "prod", "bob"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    git(&repo, &["switch", "-q", "main"]);
    merge_signed(&repo, &f.gpg, &f.alice.fpr, "bob-request");
    assert_eq!(audit_json(&f).0, 0, "{}", audit_json(&f).1);
    // ... and a primary's change pulled into a non-primary's branch by him:
    // the change is the primary's, who holds the authority in both parents.
    let base = head(&repo);
    git(&repo, &["switch", "-q", "-c", "dave-work", &base]);
    std::fs::write(repo.join("NOTES"), "dave's notes\n").unwrap();
    git_commit_signed(&repo, &f.gpg, &dave.fpr, "dave's notes");
    git(&repo, &["switch", "-q", "main"]);
    assert_eq!(f.alice(&["cluster", "renew", "prod", "--all"]).code, 0);
    git(&repo, &["switch", "-q", "dave-work"]);
    merge_signed(&repo, &f.gpg, &dave.fpr, "main");
    assert_eq!(audit_json(&f).0, 0, "{}", audit_json(&f).1);
    let main = head(&repo);

    // A key revoked at main: carol's commit from before her revocation,
    // merged by dave, is refused too (the revocation is judged in main).
    git(&repo, &["switch", "-q", "-c", "carol-side", &main]);
    open_to_world(&repo);
    git_commit_signed(&repo, &f.gpg, &carol.fpr, "open the API");
    let carol_side = head(&repo);
    git(&repo, &["switch", "-q", "dave-work"]);
    f.gpg.revoke(&carol.fpr);
    f.gpg.export(&[&carol.fpr], true, &f.file("carol-revoked.asc"));
    let r = f.alice(&["key", "update", f.file("carol-revoked.asc").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let revoked = head(&repo);
    let merge = merge_signed(&repo, &f.gpg, &dave.fpr, "carol-side");
    audit_refuses(&f, &merge, &[&format!("commit {carol_side} (against parent {revoked}"), "revoked"]);
    drop(carol_sec);
}

// 2. A certificate planted on a branch from before the cluster existed.
#[test]
fn a_certificate_kaws_did_not_issue_grants_nothing() {
    let f = Fixture::new();
    let repo = f.repo();
    let bob = add_admin(&f, "bob");
    let bob_sec = f.gpg.export_secret(&bob.fpr, "", &f.file("bob.sec"));
    let before_cluster = head(&repo);
    init_cluster(&f);
    let main = head(&repo);
    // bob's own certificate, self-issued, with a record that claims alice signed it.
    let key = f.file("bob.key");
    openssl_ec_key(&key);
    let crt = f.file("bob.crt");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let out = openssl(&["req", "-x509", "-key", &s(&key), "-subj", "/CN=bob", "-days", "30", "-out", &s(&crt)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plant = |repo: &Path| {
        std::fs::create_dir_all(repo.join("clusters/prod/admins")).unwrap();
        std::fs::copy(&crt, repo.join("clusters/prod/admins/bob.crt")).unwrap();
        let record = format!(
            "name = \"bob\"\nfingerprint = \"{}\"\nserial = \"01\"\nsha256 = \"00\"\nsigned-by = \"{}\"\nissued-at = \"2026-01-01T00:00:00Z\"\ngrant-signature = \"x\"\n",
            bob.fpr, f.alice.fpr
        );
        std::fs::write(repo.join("clusters/prod/admins/bob.issued.toml"), record).unwrap();
    };
    // bob, on a branch from before prod existed, makes a prod of his own
    // (any administrator may create a cluster) holding his certificate, and
    // merges that file into main's prod.
    git(&repo, &["switch", "-q", "-c", "bob-side", &before_cluster]);
    let init = ["cluster", "init", "prod", "--domain", "example.com", "--region", "eu-west-1", "--masters", "1"];
    let r = f.with_key(&bob_sec, &init);
    assert_eq!(r.code, 0, "{}", r.stderr);
    plant(&repo);
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "my certificate");
    let side = head(&repo);
    git(&repo, &["switch", "-q", "main"]);
    plant(&repo);
    git(&repo, &["add", "-A"]);
    let tree = git(&repo, &["write-tree"]).trim().to_owned();
    let out = git_signing(&repo, &f.gpg, &bob.fpr)
        .args(["commit-tree", &tree, "-p", &main, "-p", &side, "-m", "Merge bob-side"])
        .arg(format!("-S{}", bob.fpr))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let merge = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    git(&repo, &["update-ref", "refs/heads/main", &merge]);
    git(&repo, &["reset", "-q", "--hard", &merge]);
    audit_refuses(
        &f,
        &merge,
        &[
            &format!("bob is not a primary of cluster prod in parent {main}"),
            "admins/bob.crt",
            &format!("commit {side}, signed by bob"),
        ],
    );
    // The same files, planted straight into a prod that does not exist, make no cluster.
    git(&repo, &["reset", "-q", "--hard", &before_cluster]);
    plant(&repo);
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "my certificate");
    audit_refuses(&f, &head(&repo), &["leaves clusters/prod as no cluster kaws can work with"]);

    // The same files committed by a primary (a careless merge, a stolen
    // workstation): authenticated, but the certificate counts for nothing.
    git(&repo, &["reset", "-q", "--hard", &main]);
    assert_eq!(f.alice(&["admin", "create", "prod", "alice"]).code, 0);
    assert_eq!(f.alice(&["admin", "sign", "prod", "alice"]).code, 0);
    plant(&repo);
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "plant");
    assert_eq!(audit_json(&f).0, 0);
    let r = f.alice(&["--output", "json", "admin", "list", "prod"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let row = |name: &str| rows.as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap();
    assert_eq!(row("bob")["status"], "ignored", "{rows}");
    assert!(row("bob")["problem"].as_str().unwrap().contains("not the certificate its record names"), "{rows}");
    assert_eq!(row("alice")["status"], "issued", "{rows}");
    let user_data = render(&f, "prod", &["master", "--index", "0"]);
    assert!(user_data.contains("rbac/alice.yaml") && !user_data.contains("rbac/bob.yaml"), "bob is bound");
    let kc = f.file("bob.kubeconfig");
    refused_as(&f, &bob_sec, &["admin", "install", "prod", "bob", "--kubeconfig", s(&kc).as_str()], "admins/bob.crt");
    assert!(!kc.exists());
    // A record that matches the certificate does not make it the CA's.
    let der = pem::parse(std::fs::read(&crt).unwrap()).unwrap().into_contents();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = parsed.raw_serial_as_string();
    let sha: String = openssl::sha::sha256(&der).iter().map(|b| format!("{b:02X}")).collect();
    edit(
        &repo.join("clusters/prod/admins/bob.issued.toml"),
        "serial = \"01\"\nsha256 = \"00\"",
        &format!("serial = \"{serial}\"\nsha256 = \"{sha}\""),
    );
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "a matching record");
    let r = refused_as(
        &f,
        &bob_sec,
        &["admin", "install", "prod", "bob", "--kubeconfig", s(&kc).as_str()],
        "does not chain to the cluster CA",
    );
    assert!(r.stderr.contains("kaws admin sign prod bob"), "{}", r.stderr);
    // A rotation neither re-issues nor fails on it.
    let planted = std::fs::read(repo.join("clusters/prod/admins/bob.crt")).unwrap();
    assert_eq!(f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]).code, 0);
    let r = f.alice(&["cluster", "reencrypt", "prod", "--promote"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("admins/bob.crt is ignored"), "{}", r.stderr);
    assert_eq!(std::fs::read(repo.join("clusters/prod/admins/bob.crt")).unwrap(), planted, "re-issued");
    let alice_crt = repo.join("clusters/prod/admins/alice.crt");
    let ca = repo.join("clusters/prod/pki/ca.crt");
    assert!(openssl(&["verify", "-CAfile", &s(&ca), &s(&alice_crt)]).status.success(), "alice's is re-issued");

    // Legitimate: a new cluster created on a branch and merged by an
    // administrator who is not among its primaries.
    let base = head(&repo);
    git(&repo, &["switch", "-q", "-c", "bob-cluster", &base]);
    let r = f.with_key(
        &bob_sec,
        &["cluster", "init", "dev", "--domain", "example.com", "--region", "eu-west-1", "--masters", "1"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    git(&repo, &["switch", "-q", "main"]);
    merge_signed(&repo, &f.gpg, &f.alice.fpr, "bob-cluster");
    assert_eq!(audit_json(&f).0, 0, "{}", audit_json(&f).1);
}
