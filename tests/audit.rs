//! History authentication: histories built with real `git commit -S` and
//! `git merge -S` (throwaway gpg homes) and with kaws, judged by kaws.

mod common;

use std::process::Command;

use common::*;

fn head(f: &Fixture) -> String {
    git(&f.repo(), &["rev-parse", "HEAD"]).trim().to_owned()
}

#[test]
fn administrators_changes_are_authenticated_and_reported() {
    let f = Fixture::new();
    let bob = add_admin(&f, "bob");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 0);
    assert_eq!(report["authenticated"], true);
    let change = &report["admin_changes"][0];
    assert_eq!(change["signed_by"], "alice");
    assert_eq!(change["added"][0], format!("bob ({})", bob.fpr));
    // A commit by bob, made with real git and gpg, is authenticated too.
    std::fs::write(f.repo().join("clusters/README.md"), "hello").unwrap();
    git_commit_signed(&f.repo(), &f.gpg, &bob.fpr, "bob's note");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["commits_checked"], 1, "only the new commit is checked");
    // Warm: only HEAD's own signature is checked again.
    let (code, report) = audit_json(&f);
    assert_eq!(code, 0);
    assert_eq!(report["commits_checked"], 1);
}

#[test]
fn an_outsiders_unsigned_key_is_refused_until_an_administrator_merges_it_signed() {
    let f = Fixture::new();
    init_cluster(&f);
    let repo = f.repo();
    let root_head = head(&f);
    // dana proposes her own key on a branch, signed by herself (kaws key add).
    let (_, r) = propose_own_key(&f, "dana");
    assert!(r.stderr.contains("not authenticated until an existing administrator reviews it"), "{}", r.stderr);
    let proposal = head(&f);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &proposal).contains("not an administrator's key in the parent"), "{report}");

    // Every decision refuses on this branch, and changes nothing.
    let before = snapshot(&repo);
    for args in [
        vec!["cluster", "init", "dev", "--domain", "example.com", "--region", "eu-west-1"],
        vec!["admin", "sign", "prod", "alice"],
        vec!["key", "list"],
    ] {
        let r = f.alice(&args);
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("is not authenticated") && r.stderr.contains("kaws audit"), "{}", r.stderr);
    }
    assert_eq!(before, snapshot(&repo));

    // An unsigned outsider commit is refused the same way.
    git(&repo, &["switch", "-q", "main"]);
    std::fs::write(repo.join("clusters/prod/pki/ca.crt"), "not a CA").unwrap();
    git(&repo, &["-c", "user.name=eve", "-c", "user.email=e@x", "commit", "-qam", "unsigned"]);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &head(&f)).contains("unsigned"), "{report}");
    git(&repo, &["reset", "-q", "--hard", &root_head]);

    // alice reviews and merges with a signed merge commit: authenticated.
    let out = Command::new("git")
        .current_dir(&repo)
        .env("GNUPGHOME", f.gpg.home())
        .env("HOME", &repo)
        .args(["-c", "user.name=alice", "-c", "user.email=alice@example.org", "-c"])
        .arg(format!("user.signingkey={}", f.alice.fpr))
        .args(["merge", "-q", "-S", "--no-ff", "-m", "Review: add dana", "add-dana"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, report) = audit_json(&f);
    assert_eq!(code, 0, "{report}");
    let r = f.alice(&["key", "list"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("dana"));
}

#[test]
fn removed_revoked_forged_and_unknown_signers_are_not_authenticated() {
    let f = Fixture::new();
    init_cluster(&f);
    let repo = f.repo();
    let bob = add_admin(&f, "bob");
    let carol = add_admin(&f, "carol");
    let base = head(&f);
    let tweak = |n: &str| std::fs::write(repo.join("clusters/README.md"), n).unwrap();
    // Going back to `base` is a rewind this clone must be told to accept.
    let back = || {
        rewind(&f, &repo, &base);
    };

    // bob signs after alice removed him.
    assert_eq!(f.alice(&["key", "remove", "bob"]).code, 0);
    tweak("bob was here");
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "by a removed admin");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &head(&f)).contains("not an administrator's key in the parent"), "{report}");
    back();

    // carol's key is revoked (and the revocation merged); she signs anyway
    // from a gpg home that never saw the revocation.
    let carol_home = f.gpg.with_only(&carol.fpr);
    f.gpg.revoke(&carol.fpr);
    f.gpg.export(&[&carol.fpr], true, &f.file("carol-rev.asc"));
    assert_eq!(f.alice(&["key", "update", f.file("carol-rev.asc").to_str().unwrap()]).code, 0);
    tweak("carol was here");
    git_commit_signed(&repo, &carol_home, &carol.fpr, "by a revoked key");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &head(&f)).contains("revoked in the parent"), "{report}");
    back();

    // A forged commit: alice's gpgsig on a changed commit.
    let raw = git(&repo, &["cat-file", "commit", "HEAD"]);
    let forged = raw.replacen("kaws key add: administrator carol", "kaws key add: administrator mallory", 1);
    assert_ne!(raw, forged);
    let path = f.file("forged");
    std::fs::write(&path, forged).unwrap();
    let oid = git(&repo, &["hash-object", "-t", "commit", "-w", path.to_str().unwrap()]);
    git(&repo, &["update-ref", "refs/heads/main", oid.trim()]);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, oid.trim()).contains("bad signature claiming to be alice"), "{report}");
    back();

    // Someone who is no administrator rewrites ca.crt, signed with their own key.
    let eve_home = Gpg::new();
    let eve = eve_home.gen("eve");
    std::fs::write(repo.join("clusters/prod/pki/ca.crt"), "evil CA").unwrap();
    git_commit_signed(&repo, &eve_home, &eve.fpr, "rotate CA");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &head(&f)).contains("unknown key"), "{report}");
    let before = snapshot(&repo);
    let r = f.alice(&["admin", "create", "prod", "alice"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(before, snapshot(&repo));
    back();
    assert_eq!(audit_json(&f).0, 0);
}

#[test]
fn a_clone_must_pin_a_trust_root_that_is_an_ancestor() {
    let f = Fixture::new();
    let root = head(&f);
    add_admin(&f, "bob");
    let clone = f.tmp.path().join("clone");
    git(f.tmp.path(), &["clone", "-q", f.repo().to_str().unwrap(), clone.to_str().unwrap()]);
    let in_clone = |args: &[&str]| run(f.kaws_as_alice(&clone, args));
    let r = in_clone(&["key", "list"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("kaws trust COMMIT"), "{}", r.stderr);

    // A commit that is not an ancestor of HEAD cannot be pinned.
    git(&clone, &["switch", "-q", "--orphan", "elsewhere"]);
    std::fs::write(clone.join("kaws.toml"), "format = 1\n").unwrap();
    git(&clone, &["add", "kaws.toml"]);
    git(&clone, &["-c", "user.name=m", "-c", "user.email=m@x", "commit", "-qm", "other root"]);
    let other = git(&clone, &["rev-parse", "HEAD"]).trim().to_owned();
    git(&clone, &["switch", "-q", "main"]);
    let r = in_clone(&["trust", &other]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not an ancestor of HEAD"), "{}", r.stderr);
    let r = in_clone(&["audit", "--trust-root", &other]);
    assert_eq!(r.code, 3, "{}", r.stderr);

    let r = in_clone(&["trust", &root]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = in_clone(&["key", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("bob"));
}
