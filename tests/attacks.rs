//! Attacks on what kaws trusts, one test per class (issue 13), each played
//! with real gpg, real git and the kaws binary: an attacker with push access
//! to the shared repository, a removed administrator, a non-primary
//! administrator. After every refusal the work tree is byte-identical, the
//! exit code is 3 and the message names the object and the next step.
//! Where a rule changes behaviour, the legitimate flow is tested beside it.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use sequoia_openpgp as openpgp;

/// An administrator whose key was made two hours ago (so that it may sign
/// with earlier dates than now).
fn add_old_admin(f: &Fixture, name: &str) -> Key {
    let made = gpg_time(-7200);
    add_admin_key(f, name, f.gpg.gen_with(name, KeyOpts { faked_time: Some(&made), ..Default::default() }))
}

/// Runs `args` as alice and checks the refusal: exit 3, `needle` in the
/// message, a hint, and a work tree byte-identical to before.
fn refused(f: &Fixture, args: &[&str], needle: &str) -> Run {
    refused_as(f, &f.alice_secret, args, needle)
}

/// `git commit-tree -S` as `fpr`: a commit with any tree and parents.
fn commit_tree(repo: &Path, gpg: &Gpg, fpr: &str, tree: &str, parents: &[&str], msg: &str) -> String {
    let mut c = Command::new("git");
    c.current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", repo)
        .env("GNUPGHOME", gpg.home())
        .args(["-c", "user.name=x", "-c", "user.email=x@example.org", "commit-tree", tree, "-m", msg])
        .arg(format!("-S{fpr}"));
    for p in parents {
        c.args(["-p", p]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "commit-tree: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A gpg wrapper that signs as if the clock said `time` (gpg's
/// --faked-system-time: the signer chooses a signature's time).
fn faked_gpg(dir: &Path, time: &str) -> std::path::PathBuf {
    let path = dir.join(format!("gpg-at-{time}"));
    std::fs::write(&path, format!("#!/bin/sh\nexec gpg --faked-system-time {time} \"$@\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `git commit -S` of every change as `fpr`, with signatures dated `time`.
fn commit_signed_at(repo: &Path, gpg: &Gpg, fpr: &str, time: &str, msg: &str) {
    git(repo, &["add", "-A"]);
    let wrapper = faked_gpg(gpg.home(), time);
    let out = Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", repo)
        .env("GNUPGHOME", gpg.home())
        .args(["-c", "user.name=x", "-c", "user.email=x@example.org", "-c"])
        .arg(format!("gpg.program={}", wrapper.display()))
        .args(["-c"])
        .arg(format!("user.signingkey={fpr}"))
        .args(["commit", "-S", "-q", "--allow-empty", "-m", msg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn gpg_time(offset_secs: i64) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + offset_secs;
    chrono::DateTime::from_timestamp(t, 0).unwrap().format("%Y%m%dT%H%M%S").to_string()
}

// 1. A removed administrator re-admits herself with a signed merge.
#[test]
fn a_removed_administrator_cannot_readmit_herself_with_a_merge() {
    let f = Fixture::new();
    let repo = f.repo();
    let bob = add_admin(&f, "bob");
    let before_removal = head(&repo);
    assert_eq!(f.alice(&["key", "remove", "bob"]).code, 0);
    let removal = head(&repo);
    let old_tree = git(&repo, &["rev-parse", &format!("{before_removal}^{{tree}}")]).trim().to_owned();

    // bob signs a merge of main with a commit from before his removal,
    // taking that commit's tree (his kaws.toml entry and pubkeys/ file).
    for (what, parents) in [
        ("merge", vec![removal.as_str(), before_removal.as_str()]),
        ("octopus", vec![removal.as_str(), before_removal.as_str(), &format!("{before_removal}~1")]),
    ] {
        let parents: Vec<String> = parents.iter().map(|p| git(&repo, &["rev-parse", p]).trim().to_owned()).collect();
        let refs: Vec<&str> = parents.iter().map(String::as_str).collect();
        let evil = commit_tree(&repo, &f.gpg, &bob.fpr, &old_tree, &refs, "Merge: bob is back");
        git(&repo, &["update-ref", "refs/heads/main", &evil]);
        let (code, report) = audit_json(&f);
        assert_eq!(code, 3, "{what}: {report}");
        assert!(reasons(&report, &evil).contains("not an administrator's key in the parent"), "{what}: {report}");
        let r = refused(&f, &["key", "list"], "is not authenticated");
        assert!(r.stderr.contains("kaws audit"), "{}", r.stderr);
        git(&repo, &["update-ref", "refs/heads/main", &removal]);
    }
    // An unsigned child of main hides the current administrators from the
    // merge: the merge is judged through its nearest authenticated ancestor.
    let main_tree = git(&repo, &["rev-parse", "HEAD^{tree}"]);
    let hidden = git_stdin(&repo, &["commit-tree", main_tree.trim(), "-p", &removal, "-m", "wip"], b"");
    let evil = commit_tree(&repo, &f.gpg, &bob.fpr, &old_tree, &[&hidden, &before_removal], "Merge");
    git(&repo, &["update-ref", "refs/heads/main", &evil]);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3, "{report}");
    assert!(reasons(&report, &evil).contains("not an administrator's key in the parent"), "{report}");
    refused(&f, &["key", "list"], "is not authenticated");
    git(&repo, &["update-ref", "refs/heads/main", &removal]);

    // The legitimate flow: an outsider proposes her key, alice merges it
    // signed; the change is reported against the authenticated parent.
    let (dana, _) = propose_own_key(&f, "dana");
    git(&repo, &["switch", "-q", "main"]);
    let merged = commit_tree(
        &repo,
        &f.gpg,
        &f.alice.fpr,
        git(&repo, &["rev-parse", "add-dana^{tree}"]).trim(),
        &[&removal, git(&repo, &["rev-parse", "add-dana"]).trim()],
        "Review: add dana",
    );
    git(&repo, &["merge", "-q", "--ff-only", &merged]);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 0, "{report}");
    let change = report["admin_changes"].as_array().unwrap().iter().find(|c| c["commit"] == merged.as_str()).unwrap();
    assert_eq!(change["parent"], removal.as_str());
    assert_eq!(change["added"][0], format!("dana ({})", dana.fpr));
}

// 2. No rollback protection.
#[test]
fn a_rewound_branch_is_refused_until_the_rewind_is_accepted() {
    let f = Fixture::new();
    let repo = f.repo();
    add_admin(&f, "bob");
    let before_removal = head(&repo);
    assert_eq!(f.alice(&["key", "remove", "bob"]).code, 0);
    let removal = head(&repo);

    // Someone force-pushes main back to before the removal; the clone pulls.
    git(&repo, &["reset", "-q", "--hard", &before_removal]);
    let r = refused(&f, &["key", "list"], "was rewound or rewritten");
    assert!(r.stderr.contains(&removal) && r.stderr.contains("--accept-rewind"), "{}", r.stderr);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &before_removal).contains("rewound"), "{report}");

    // Going forward again is fine; an intended rewind is accepted, logged.
    git(&repo, &["reset", "-q", "--hard", &removal]);
    assert_eq!(f.alice(&["key", "list"]).code, 0);
    git(&repo, &["reset", "-q", "--hard", &before_removal]);
    let r = f.alice(&["trust", "--accept-rewind"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("warning: accepted"), "{}", r.stderr);
    let log = std::fs::read_to_string(repo.join(".git/kaws/rewinds.log")).unwrap();
    assert!(log.contains(&before_removal) && log.contains(&removal), "{log}");
    assert_eq!(f.alice(&["key", "list"]).code, 0);

    // Re-pinning after a removal: the trust root advances to the removal,
    // and no history from before it can be accepted again.
    git(&repo, &["reset", "-q", "--hard", &removal]);
    let r = f.alice(&["trust", &removal]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("Advanced the trust root"), "{}", r.stdout);
    git(&repo, &["reset", "-q", "--hard", &before_removal]);
    let before = snapshot(&repo);
    let r = f.alice(&["trust", "--accept-rewind"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert_eq!(before, snapshot(&repo));
}

// 3. Sealed files are never checked against their public halves.
#[test]
fn a_swapped_sealed_key_is_never_used() {
    let f = Fixture::new();
    let repo = f.repo();
    init_cluster(&f);
    let bob = add_admin(&f, "bob");
    let base = head(&repo);

    // bob (an administrator, not a primary) puts a key of his own, sealed
    // to alice, in place of the break-glass key.
    let mine = f.file("bob-super-admin.pem");
    openssl_ec_key(&mine);
    let sealed = repo.join("clusters/prod/pki/super-admin.key.pgp");
    let enc = f.gpg.run(&[
        "--trust-model",
        "always",
        "--armor",
        "--encrypt",
        "-r",
        &f.alice.fpr,
        "--output",
        "-",
        mine.to_str().unwrap(),
    ]);
    std::fs::write(&sealed, &enc.stdout).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "renew super-admin key");
    let swap = head(&repo);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(
        reasons(&report, &swap).contains("bob is not a primary of cluster prod")
            && reasons(&report, &swap).contains("clusters/prod/pki/super-admin.key.pgp"),
        "{report}"
    );
    refused(&f, &["cluster", "renew", "prod", "--all"], "is not authenticated");

    // The same swap landed by a primary (a compromised workstation, a bad
    // merge): authenticated, but the key is checked before any use.
    rewind(&f, &repo, &base);
    std::fs::write(&sealed, &enc.stdout).unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "renew super-admin key");
    assert_eq!(audit_json(&f).0, 0);
    let r = refused(
        &f,
        &["cluster", "renew", "prod", "--all"],
        "does not hold the private key of clusters/prod/pki/super-admin.crt",
    );
    assert!(r.stderr.contains("reencrypt prod --rotate"), "{}", r.stderr);
    let r = f.alice(&["--output", "json", "cluster", "certs", "prod"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stdout.contains("key mismatch"), "{}", r.stdout);
    refused(
        &f,
        &["cluster", "reencrypt", "prod", "--primary", "alice", "--primary", "bob"],
        "does not hold the private key",
    );
    // And the CA key: nothing is signed with a key that is not ca.crt's.
    rewind(&f, &repo, &base);
    std::fs::write(repo.join("clusters/prod/pki/ca.key.pgp"), &enc.stdout).unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "swap the CA key");
    assert_eq!(f.alice(&["admin", "create", "prod", "alice"]).code, 0);
    refused(&f, &["admin", "sign", "prod", "alice"], "does not hold the private key of clusters/prod/pki/ca.crt");

    // bob merges the current main with an older commit, taking the older
    // certificates: a change to the cluster like any other.
    rewind(&f, &repo, &base);
    assert_eq!(f.alice(&["cluster", "renew", "prod", "--all"]).code, 0);
    let renewed = head(&repo);
    let old_tree = git(&repo, &["rev-parse", &format!("{base}^{{tree}}")]);
    let merge = commit_tree(&repo, &f.gpg, &bob.fpr, old_tree.trim(), &[&renewed, &base], "Merge old certs");
    git(&repo, &["update-ref", "refs/heads/main", &merge]);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &merge).contains("bob is not a primary of cluster prod"), "{report}");
    // The same, with an unsigned child of the renewal as the second parent:
    // the renewal is still judged (the nearest authenticated ancestor).
    let hidden = git_stdin(&repo, &["commit-tree", old_tree.trim(), "-p", &renewed, "-m", "wip"], b"");
    let merge = commit_tree(&repo, &f.gpg, &bob.fpr, old_tree.trim(), &[&base, &hidden], "Merge");
    git(&repo, &["update-ref", "refs/heads/main", &merge]);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &merge).contains("bob is not a primary of cluster prod"), "{report}");
    // A symbolic link among a cluster's files, even one anyone may write.
    rewind(&f, &repo, &base);
    std::os::unix::fs::symlink("/etc/passwd", repo.join("clusters/prod/outputs.toml")).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "outputs");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &head(&repo)).contains("symbolic link or submodule"), "{report}");
    // A copy of the cluster, with bob among its primaries: its keys are
    // prod's, and are never opened as prod2's.
    rewind(&f, &repo, &base);
    copy_dir(&repo.join("clusters/prod"), &repo.join("clusters/prod2"));
    let spec = std::fs::read_to_string(repo.join("clusters/prod2/cluster.toml")).unwrap();
    std::fs::write(repo.join("clusters/prod2/cluster.toml"), spec.replace("name = \"prod\"", "name = \"prod2\""))
        .unwrap();
    let mut primaries = std::fs::read_to_string(repo.join("clusters/prod2/primaries.toml")).unwrap();
    primaries.push_str(&format!("bob = \"{}\"\n", bob.fpr));
    std::fs::write(repo.join("clusters/prod2/primaries.toml"), primaries).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "a new cluster");
    // Any administrator may create a cluster, but not one carrying another
    // cluster's keys (the copy would stop prod's primaries, whose keys are
    // checked against every other cluster's before they are opened).
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3, "{report}");
    let why = reasons(&report, &head(&repo));
    assert!(
        why.contains("writes a public key another cluster carries")
            && why.contains("clusters/prod2/pki/ca.crt (also in clusters/prod"),
        "{why}"
    );
    refused(&f, &["cluster", "renew", "prod", "--all"], "is not authenticated");

    // The legitimate flow: a non-primary writes his own request only.
    rewind(&f, &repo, &base);
    let bob_sec = f.gpg.export_secret(&bob.fpr, "", &f.file("bob.sec"));
    let r = f.with_key(&bob_sec, &["admin", "create", "prod", "bob"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(audit_json(&f).0, 0);
    // ... and merges it with a branch on which a primary renewed the
    // cluster's certificates: an ordinary merge, authenticated.
    let request = head(&repo);
    git(&repo, &["switch", "-q", "-c", "bob-work", &base]);
    let r = f.alice(&["cluster", "renew", "prod", "--all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let renewed = head(&repo);
    let out = Command::new("git")
        .current_dir(&repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", &repo)
        .env("GNUPGHOME", f.gpg.home())
        .args(["-c", "user.name=bob", "-c", "user.email=bob@example.org", "-c"])
        .arg(format!("user.signingkey={}", bob.fpr))
        .args(["merge", "-q", "-S", "--no-ff", "-m", "Merge main", &request])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, report) = audit_json(&f);
    assert_eq!(code, 0, "{report}");
    assert_ne!(head(&repo), renewed);
    assert_eq!(f.alice(&["admin", "sign", "prod", "bob"]).code, 0);
}

// 4. Expired and soft-revoked keys still authenticate commits.
#[test]
fn backdated_future_and_soft_revoked_signatures_do_not_count() {
    let f = Fixture::new();
    let repo = f.repo();
    let bob = add_old_admin(&f, "bob");
    let carol = add_old_admin(&f, "carol");
    let base = head(&repo);
    let note = |t: &str| std::fs::write(repo.join("clusters/README.md"), t).unwrap();

    // carol, a valid administrator, dates her signature before its parent's.
    note("backdated");
    commit_signed_at(&repo, &f.gpg, &carol.fpr, &gpg_time(-3600), "backdated");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &head(&repo)).contains("earlier than parent"), "{report}");
    git(&repo, &["reset", "-q", "--hard", &base]);
    // ... or a day ahead.
    note("future");
    commit_signed_at(&repo, &f.gpg, &carol.fpr, &gpg_time(86_400), "from the future");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &head(&repo)).contains("in the future"), "{report}");
    git(&repo, &["reset", "-q", "--hard", &base]);
    // A few seconds ahead (clock skew) is fine.
    note("skew");
    commit_signed_at(&repo, &f.gpg, &carol.fpr, &gpg_time(60), "slightly ahead");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 0, "{report}");
    rewind(&f, &repo, &base);

    // bob's key is soft-revoked ("superseded"); he signs anyway, dating the
    // signature before the revocation, from a gpg home that never saw it.
    let bob_home = f.gpg.with_only(&bob.fpr);
    let revoked = soft_revoke(&f.gpg, &bob.fpr, &f.file("bob-superseded.asc"));
    let r = f.alice(&["key", "update", revoked.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    note("bob after his key was superseded");
    commit_signed_at(&repo, &bob_home, &bob.fpr, &gpg_time(-3600), "bob, backdated");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &head(&repo)).contains("revoked in the parent"), "{report}");
    refused(&f, &["key", "list"], "is not authenticated");
    // carol rolls bob's certificate back to the export from before the
    // revocation: refused, a certificate only grows.
    git(&repo, &["reset", "-q", "--hard", "HEAD~1"]);
    std::fs::copy(f.file("bob.asc"), repo.join(format!("pubkeys/{}.asc", bob.fpr))).unwrap();
    git_commit_signed(&repo, &f.gpg, &carol.fpr, "refresh bob's certificate");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    assert!(reasons(&report, &head(&repo)).contains("lacking part of parent"), "{report}");
}

/// bob's certificate with a soft revocation (key superseded) made now, by
/// bob's own key (sequoia, from gpg's export).
fn soft_revoke(gpg: &Gpg, fpr: &str, out: &Path) -> std::path::PathBuf {
    use openpgp::cert::prelude::*;
    use openpgp::parse::Parse;
    use openpgp::serialize::SerializeInto;
    use openpgp::types::ReasonForRevocation;
    let sec = gpg.export_secret(fpr, "", &out.with_extension("sec"));
    let tsk = openpgp::Cert::from_file(&sec).unwrap();
    let mut signer = tsk.primary_key().key().clone().parts_into_secret().unwrap().into_keypair().unwrap();
    let rev = CertRevocationBuilder::new()
        .set_reason_for_revocation(ReasonForRevocation::KeySuperseded, b"moved to a new key")
        .unwrap()
        .build(&mut signer, &tsk, None)
        .unwrap();
    let (cert, _) = tsk.strip_secret_key_material().insert_packets(vec![rev]).unwrap();
    std::fs::write(out, cert.armored().to_vec().unwrap()).unwrap();
    out.to_path_buf()
}

// 5. The audit cache is trusted blindly.
#[test]
fn a_forged_audit_cache_authenticates_nothing() {
    let f = Fixture::new();
    let repo = f.repo();
    let root = head(&repo);
    assert_eq!(audit_json(&f).0, 0);
    let key = f.gpg.home().join("user-home/.local/state/kaws/cache.key");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600, "the cache key is private");
    assert!(!key.starts_with(&repo));

    // An unsigned commit, and a cache claiming it is authenticated: the
    // old plain format, and the new one with a made-up tag.
    std::fs::write(repo.join("clusters/README.md"), "unsigned").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["-c", "user.name=m", "-c", "user.email=m@x", "commit", "-qm", "unsigned"]);
    let evil = head(&repo);
    let mut authenticated = serde_json::Map::new();
    authenticated.insert(evil.clone(), 0.into());
    let body = serde_json::json!({
        "trust_root": root, "git_dir": repo.join(".git").canonicalize().unwrap(), "head": evil,
        "head_authenticated": true, "authenticated": authenticated, "problems": [], "admin_changes": []
    });
    for forged in [body.to_string(), serde_json::json!({"body": body.to_string(), "mac": "00".repeat(32)}).to_string()]
    {
        std::fs::write(repo.join(".git/kaws/audit.json"), forged).unwrap();
        refused(&f, &["key", "list"], "is not authenticated");
    }
    // A cache tagged under another user's key is no cache either.
    git(&repo, &["reset", "-q", "--hard", &root]);
    assert_eq!(audit_json(&f).0, 0);
    let theirs = std::fs::read(repo.join(".git/kaws/audit.json")).unwrap();
    let other = Gpg::new();
    let mut c = kaws(&other, &repo);
    c.arg("--secret-key").arg(&f.alice_secret).args(["--output", "json", "audit"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_ne!(theirs, std::fs::read(repo.join(".git/kaws/audit.json")).unwrap(), "re-checked and re-tagged");
    // `kaws trust` drops the cache.
    assert_eq!(f.alice(&["trust", &root]).code, 0);
    assert!(!repo.join(".git/kaws/audit.json").exists());
}

// 6. A crafted journal writes outside the work tree before authentication.
#[test]
fn a_crafted_journal_writes_nothing_outside_the_work_tree() {
    let f = Fixture::new();
    let repo = f.repo();
    let base = head(&repo);
    let outside = f.tmp.path().join("escape.txt");
    // A tree whose entry `..` holds escape.txt: materialized, ../escape.txt.
    let blob = git_stdin(&repo, &["hash-object", "-w", "--stdin"], b"owned\n");
    let up = git_stdin(&repo, &["mktree"], format!("100644 blob {blob}\tescape.txt\n").as_bytes());
    let mut listing = git(&repo, &["ls-tree", "HEAD"]);
    listing.push_str(&format!("040000 tree {up}\t..\n"));
    let tree = git_stdin(&repo, &["mktree"], listing.as_bytes());
    let journal = |new: &str, old: &str| {
        std::fs::write(
            repo.join(".git/kaws/journal"),
            format!("branch = \"refs/heads/main\"\nold = \"{old}\"\nnew = \"{new}\"\n"),
        )
        .unwrap();
        git(&repo, &["update-ref", "refs/heads/main", new]);
        // Each attempt starts from a clean ratchet (an authenticated
        // attempt moved it forward).
        let _ = f.alice(&["trust", "--accept-rewind"]);
    };

    // Unsigned: refused before the journal is even read.
    let unsigned = git_stdin(&repo, &["commit-tree", &tree, "-p", &base, "-m", "x"], b"");
    journal(&unsigned, &base);
    let r = f.alice(&["key", "list"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!outside.exists(), "wrote outside the work tree");

    // Signed by an administrator: authenticated, but the path is refused.
    let signed = commit_tree(&repo, &f.gpg, &f.alice.fpr, &tree, &[&base], "x");
    journal(&signed, &base);
    let r = f.alice(&["key", "list"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("../escape.txt") && r.stderr.contains("hint:"), "{}", r.stderr);
    assert!(!outside.exists(), "wrote outside the work tree");

    // A symbolic link in the new tree is refused as well.
    let link = git_stdin(&repo, &["hash-object", "-w", "--stdin"], b"/etc\n");
    let mut listing = git(&repo, &["ls-tree", "HEAD"]);
    listing.push_str(&format!("120000 blob {link}\tkaws-link\n"));
    let tree = git_stdin(&repo, &["mktree"], listing.as_bytes());
    let signed = commit_tree(&repo, &f.gpg, &f.alice.fpr, &tree, &[&base], "x");
    journal(&signed, &base);
    let r = f.alice(&["key", "list"]);
    assert_eq!(r.code, 3, "{}", r.stderr);

    // A journal whose new commit is not a child of its old one.
    let t = git(&repo, &["rev-parse", "HEAD~0^{tree}"]);
    let orphan = commit_tree(&repo, &f.gpg, &f.alice.fpr, t.trim(), &[&base], "y");
    let grandchild = commit_tree(&repo, &f.gpg, &f.alice.fpr, t.trim(), &[&orphan], "z");
    journal(&grandchild, &base);
    let r = f.alice(&["key", "list"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not a child of its old one"), "{}", r.stderr);
}

fn git_stdin(dir: &Path, args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .args(["-c", "user.name=m", "-c", "user.email=m@x"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
