//! `kaws init` and `kaws key`: administrators by verified fingerprint,
//! checked against real gpg and git.

mod common;

use common::*;

fn assert_refused(f: &Fixture, args: &[&str], needle: &str) {
    let before = snapshot(&f.repo());
    let r = f.alice(args);
    assert!(r.code == 3 || r.code == 1, "{args:?} exited {}: {}", r.code, r.stderr);
    assert!(r.stderr.contains(needle), "{args:?}: expected {needle:?} in:\n{}", r.stderr);
    assert!(r.stderr.contains("hint:") || r.code == 3, "{args:?}: no next step in:\n{}", r.stderr);
    assert_eq!(before, snapshot(&f.repo()), "{args:?} changed the repository");
}

#[test]
fn init_makes_a_signed_commit_that_git_verifies() {
    let f = Fixture::new();
    let repo = f.repo();
    let head = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(git(&repo, &["config", "--local", "kaws.trustroot"]).trim(), head);
    assert!(repo.join(format!("pubkeys/{}.asc", f.alice.fpr)).is_file());
    let toml = std::fs::read_to_string(repo.join("kaws.toml")).unwrap();
    assert!(toml.contains(&format!("alice = \"{}\"", f.alice.fpr)), "{toml}");
    // git verify-commit, with gpg knowing alice's public key.
    let out = std::process::Command::new("git")
        .current_dir(&repo)
        .env("GNUPGHOME", f.gpg.home())
        .args(["verify-commit", "--raw", "HEAD"])
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{raw}");
    assert!(raw.contains(&format!("VALIDSIG {}", f.alice.fpr)) || raw.contains("GOODSIG"), "{raw}");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");

    // A second init refuses and changes nothing.
    let before = snapshot(&repo);
    let r = run(f.kaws_as_alice(f.tmp.path(), &["init", "repo", "--admin", "alice"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("already a kaws repository"), "{}", r.stderr);
    assert_eq!(before, snapshot(&repo));
}

#[test]
fn certificates_exported_by_gpg_are_accepted_armored_and_binary() {
    let f = Fixture::new();
    let bob = f.gpg.gen("bob");
    let carol = f.gpg.gen("carol");
    let bob_file = f.gpg.export(&[&bob.fpr], true, &f.file("bob.asc"));
    let carol_file = f.gpg.export(&[&carol.fpr], false, &f.file("carol.gpg"));
    for (name, file) in [("bob", &bob_file), ("carol", &carol_file)] {
        let r = f.alice(&["key", "add", name, file.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let r = f.alice(&["--output", "json", "key", "list"]);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<_> = rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    assert!(rows.as_array().unwrap().iter().all(|r| r["usable"] == true));
    assert_eq!(rows[1]["fingerprint"], bob.fpr.as_str());
    assert_eq!(rows[1]["user_ids"][0], "bob <bob@example.org>");
    assert_all_commits_verify(&f.repo(), &f.gpg);
    let msg = git(&f.repo(), &["log", "-1", "--format=%B"]);
    assert!(msg.contains("kaws key add: administrator carol") && msg.contains("Added by: alice"), "{msg}");
}

#[test]
fn bad_certificates_are_refused_and_leave_the_repository_unchanged() {
    let f = Fixture::new();
    let no_enc = f.gpg.gen_with("noenc", KeyOpts { encrypt: false, ..Default::default() });
    let expired =
        f.gpg.gen_with("expired", KeyOpts { expire: "1d", faked_time: Some("20200101T000000"), ..Default::default() });
    let revoked = f.gpg.gen("revoked");
    f.gpg.revoke(&revoked.fpr);
    let bob = f.gpg.gen("bob");
    let carol = f.gpg.gen("carol");

    let p = |s: &str| f.file(s).to_str().unwrap().to_owned();
    f.gpg.export(&[&no_enc.fpr], true, &f.file("noenc.asc"));
    f.gpg.export(&[&expired.fpr], true, &f.file("expired.asc"));
    f.gpg.export(&[&revoked.fpr], true, &f.file("revoked.asc"));
    f.gpg.export_secret(&bob.fpr, "", &f.file("bob.sec"));
    f.gpg.export(&[&bob.fpr, &carol.fpr], true, &f.file("two.asc"));
    std::fs::write(f.file("junk.asc"), "this is not OpenPGP\n").unwrap();
    f.gpg.export(&[&f.alice.fpr], true, &f.file("alice.asc"));
    f.gpg.export(&[&bob.fpr], true, &f.file("bob.asc"));

    assert_refused(&f, &["key", "add", "noenc", &p("noenc.asc")], "no live encryption-capable subkey");
    assert_refused(&f, &["key", "add", "expired", &p("expired.asc")], "expired");
    assert_refused(&f, &["key", "add", "revoked", &p("revoked.asc")], "revoked");
    assert_refused(&f, &["key", "add", "bob", &p("bob.sec")], "secret key material");
    assert_refused(&f, &["key", "add", "bob", &p("two.asc")], "2 certificates");
    assert_refused(&f, &["key", "add", "junk", &p("junk.asc")], "not an OpenPGP certificate");
    assert_refused(&f, &["key", "add", "alice2", &p("alice.asc")], "already administrator alice");
    assert_refused(&f, &["key", "add", "alice", &p("bob.asc")], "named alice exists already");
    for hostile in ["../x", "a b", "$(id)", "A", &"a".repeat(64), "", "аlice", "ａlice", "x", "bob\n"] {
        assert_refused(&f, &["key", "add", hostile, &p("bob.asc")], "not an acceptable name");
    }
}

#[test]
fn a_renamed_pubkeys_file_refuses_the_repository() {
    let f = Fixture::new();
    let bob = f.gpg.gen("bob");
    f.gpg.export(&[&bob.fpr], true, &f.file("bob.asc"));
    assert_eq!(f.alice(&["key", "add", "bob", f.file("bob.asc").to_str().unwrap()]).code, 0);
    // Someone swaps bob's file for alice's content, keeping bob's name.
    let repo = f.repo();
    std::fs::copy(repo.join(format!("pubkeys/{}.asc", f.alice.fpr)), repo.join(format!("pubkeys/{}.asc", bob.fpr)))
        .unwrap();
    // Signed by an administrator, so authenticated: the file check must catch it.
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "swap");
    let r = f.alice(&["key", "list"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("pubkeys/{}.asc holds the certificate {}", bob.fpr, f.alice.fpr)),
        "{}",
        r.stderr
    );

    // A kaws.toml fingerprint with no file is refused as well. (On top of the
    // swap it would not even be authenticated: its parent's admin set is broken.)
    rewind(&f, &repo, "HEAD~1");
    git(&repo, &["rm", "-q", &format!("pubkeys/{}.asc", bob.fpr)]);
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "drop");
    let r = f.alice(&["key", "list"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
}

#[test]
fn update_merges_a_revocation_and_marks_the_key_unusable() {
    let f = Fixture::new();
    let bob = f.gpg.gen("bob");
    f.gpg.export(&[&bob.fpr], true, &f.file("bob.asc"));
    assert_eq!(f.alice(&["key", "add", "bob", f.file("bob.asc").to_str().unwrap()]).code, 0);
    let same = f.alice(&["key", "update", f.file("bob.asc").to_str().unwrap()]);
    assert_eq!(same.code, 0, "{}", same.stderr);
    assert!(same.stdout.contains("already up to date"));

    f.gpg.revoke(&bob.fpr);
    f.gpg.export(&[&bob.fpr], true, &f.file("bob-revoked.asc"));
    let r = f.alice(&["key", "update", f.file("bob-revoked.asc").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let list = f.alice(&["--output", "json", "key", "list"]);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows[1]["name"], "bob");
    assert_eq!(rows[1]["usable"], false);
    assert!(rows[1]["problem"].as_str().unwrap().contains("revoked"));

    // A certificate that is nobody's is not an update.
    let carol = f.gpg.gen("carol");
    f.gpg.export(&[&carol.fpr], true, &f.file("carol.asc"));
    assert_refused(&f, &["key", "update", f.file("carol.asc").to_str().unwrap()], "not an administrator");
}

#[test]
fn remove_names_the_clusters_to_rotate() {
    let f = Fixture::new();
    let bob = f.gpg.gen("bob");
    f.gpg.export(&[&bob.fpr], true, &f.file("bob.asc"));
    assert_eq!(f.alice(&["key", "add", "bob", f.file("bob.asc").to_str().unwrap()]).code, 0);
    let repo = f.repo();
    std::fs::create_dir_all(repo.join("clusters/prod")).unwrap();
    std::fs::write(
        repo.join("clusters/prod/primaries.toml"),
        format!("[primaries]\nalice = \"{}\"\nbob = \"{}\"\n", f.alice.fpr, bob.fpr),
    )
    .unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "cluster");

    assert_refused(&f, &["key", "remove", "nobody"], "no administrator named nobody");
    let r = f.alice(&["key", "remove", "bob"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("kaws cluster reencrypt prod --primary alice --rotate"), "{}", r.stdout);
    assert!(!repo.join(format!("pubkeys/{}.asc", bob.fpr)).exists());
    assert_refused(&f, &["key", "remove", "alice"], "last administrator");
}

#[test]
fn the_operator_can_be_served_by_gpg_agent() {
    let gpg = Gpg::new();
    let tmp = tempfile::tempdir().unwrap();
    let alice = gpg.gen("alice");
    let cert = gpg.export(&[&alice.fpr], true, &tmp.path().join("alice.asc"));
    let mut c = kaws(&gpg, tmp.path());
    c.args(["init", "repo", "--admin", "alice", "--cert"]).arg(&cert);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let repo = tmp.path().join("repo");

    // --as chooses the key; git's user.signingkey works as well.
    let bob = gpg.gen("bob");
    let bob_file = gpg.export(&[&bob.fpr], true, &tmp.path().join("bob.asc"));
    let mut c = kaws(&gpg, &repo);
    c.args(["--as", "alice", "key", "add", "bob"]).arg(&bob_file);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    git(&repo, &["config", "user.signingkey", &alice.fpr]);
    let mut c = kaws(&gpg, &repo);
    c.args(["key", "remove", "bob"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_all_commits_verify(&repo, &gpg);
    // A short key ID in user.signingkey is not accepted.
    git(&repo, &["config", "user.signingkey", &alice.fpr[24..]]);
    let mut c = kaws(&gpg, &repo);
    c.args(["key", "add", "bob"]).arg(&bob_file);
    let r = run(c);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not a full fingerprint"), "{}", r.stderr);
}

#[test]
fn a_passphrase_protected_key_reads_its_passphrase_from_a_file() {
    let gpg = Gpg::new();
    let tmp = tempfile::tempdir().unwrap();
    let alice = gpg.gen_with("alice", KeyOpts { passphrase: "correct horse", ..Default::default() });
    let sec = gpg.export_secret(&alice.fpr, "correct horse", &tmp.path().join("alice.sec"));
    std::fs::write(tmp.path().join("pass"), "correct horse\n").unwrap();
    write_secret(&tmp.path().join("wrong"), b"battery staple\n");

    // A passphrase file others can read is refused before it is read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path().join("pass"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = kaws(&gpg, tmp.path());
    c.env("KAWS_SECRET_KEY", &sec).env("KAWS_PASSPHRASE_FILE", tmp.path().join("pass"));
    c.args(["init", "repo", "--admin", "alice"]);
    let r = run(c);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not a private file of yours") && r.stderr.contains("chmod 600"), "{}", r.stderr);
    assert!(!tmp.path().join("repo").exists());
    std::fs::set_permissions(tmp.path().join("pass"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut c = kaws(&gpg, tmp.path());
    c.env("KAWS_SECRET_KEY", &sec).env("KAWS_PASSPHRASE_FILE", tmp.path().join("wrong"));
    c.args(["init", "repo", "--admin", "alice"]);
    let r = run(c);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("passphrase does not unlock"), "{}", r.stderr);
    assert!(!tmp.path().join("repo").exists(), "a refused init left a directory behind");

    let mut c = kaws(&gpg, tmp.path());
    c.env("KAWS_SECRET_KEY", &sec).env("KAWS_PASSPHRASE_FILE", tmp.path().join("pass"));
    c.args(["init", "repo", "--admin", "alice"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("correct horse") && !r.stdout.contains("correct horse"));
}

#[test]
fn a_dirty_working_tree_is_refused() {
    let f = Fixture::new();
    std::fs::write(f.repo().join("pubkeys/stray.asc"), "x").unwrap();
    let bob = f.gpg.gen("bob");
    f.gpg.export(&[&bob.fpr], true, &f.file("bob.asc"));
    assert_refused(&f, &["key", "add", "bob", f.file("bob.asc").to_str().unwrap()], "uncommitted changes");
}

#[test]
fn a_change_killed_at_any_step_leaves_the_old_or_the_new_state() {
    let f = Fixture::new();
    let bob = f.gpg.gen("bob");
    let bob_file = f.gpg.export(&[&bob.fpr], true, &f.file("bob.asc"));
    let old = snapshot(&f.repo());
    let old_head = git(&f.repo(), &["rev-parse", "HEAD"]);
    let (mut saw_old, mut saw_new) = (false, false);
    for step in 1..=12 {
        let mut c = f.kaws_as_alice(&f.repo(), &["key", "add", "bob", bob_file.to_str().unwrap()]);
        c.env("KAWS_TEST_ABORT_AFTER", step.to_string());
        let finished = run(c).code == 0;
        // The next command recovers; the state must then be old or new.
        let list = f.alice(&["key", "list"]);
        assert_eq!(list.code, 0, "after abort at step {step}: {}", list.stderr);
        if list.stdout.contains("bob") {
            saw_new = true;
            assert_eq!(git(&f.repo(), &["status", "--porcelain", "--untracked-files=all"]), "", "step {step}");
            assert_eq!(git(&f.repo(), &["rev-parse", "HEAD~1"]), old_head, "step {step}");
            assert!(f.repo().join(format!("pubkeys/{}.asc", bob.fpr)).is_file(), "step {step}");
            if finished {
                break;
            }
            rewind(&f, &f.repo(), "HEAD~1");
        } else {
            saw_old = true;
            assert_eq!(snapshot(&f.repo()), old, "step {step}: neither old nor new");
        }
    }
    assert!(saw_old && saw_new, "the injected crashes did not cover both outcomes");
}

#[test]
fn completions_and_man_pages_are_generated() {
    let gpg = Gpg::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut c = kaws(&gpg, tmp.path());
    c.args(["completions", "bash"]);
    let r = run(c);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("_kaws()") && r.stdout.contains("reencrypt"), "{}", &r.stdout[..200]);
    let mut c = kaws(&gpg, tmp.path());
    c.args(["man", "--out-dir"]).arg(tmp.path().join("man"));
    assert_eq!(run(c).code, 0);
    let page = std::fs::read_to_string(tmp.path().join("man/kaws-cluster-reencrypt.1")).unwrap();
    assert!(page.contains(r"\-\-rotate"), "{page}");
}
