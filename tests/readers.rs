//! What kaws reads from a cluster's directory is checked by every reader
//! (issue 26): trust bundles against the rotation's phase, the API endpoint
//! of `outputs.toml` (which any administrator may record), files named
//! outside kaws' rules, administrators renamed, and primaries demoted by a
//! rotation. Played with real gpg, git and openssl and the kaws binary;
//! each refusal exits 3 with the work tree byte-identical, and the
//! legitimate flow runs beside it.

mod common;

use std::path::Path;

use common::*;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn ok(r: Run) -> Run {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    r
}

/// A self-signed CA of openssl's at `path`.
fn foreign_ca(f: &Fixture, path: &Path) {
    let key = f.file("foreign-ca.key");
    openssl_ec_key(&key);
    let out = openssl(&["req", "-x509", "-key", &s(&key), "-subj", "/CN=kubernetes", "-days", "30", "-out", &s(path)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

// 3. Planted trust bundles, keys and endpoints.
#[test]
fn every_reader_of_a_bundle_or_endpoint_applies_the_phase_rules() {
    let f = Fixture::new();
    let repo = f.repo();
    init_cluster(&f);
    let bob = add_admin(&f, "bob");
    ok(f.alice(&["admin", "create", "prod", "alice"]));
    ok(f.alice(&["admin", "sign", "prod", "alice"]));
    let base = head(&repo);
    let kc = f.file("alice.kubeconfig");
    let install = ["admin", "install", "prod", "alice", "--kubeconfig", &s(&kc)];

    // A cluster that never rotated trusts its CA alone: a bundle with a
    // second CA (committed by a primary) is refused by every reader.
    let evil = f.file("evil-ca.crt");
    foreign_ca(&f, &evil);
    let pki = repo.join("clusters/prod/pki");
    let bundle =
        format!("{}{}", std::fs::read_to_string(pki.join("ca.crt")).unwrap(), std::fs::read_to_string(&evil).unwrap());
    std::fs::write(pki.join("ca-bundle.crt"), bundle).unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "trust another CA");
    assert_eq!(audit_json(&f).0, 0);
    refused_as(&f, &f.alice_secret, &install, "ca-bundle.crt");
    assert!(!kc.exists(), "a kubeconfig was written");
    refused_as(&f, &f.alice_secret, &["cluster", "render", "prod", "--role", "node"], "ca-bundle.crt");
    rewind(&f, &repo, &base);

    // Promoted: the service-account bundle's second key is the retired
    // one, as rotation.toml records it, never any other key.
    ok(f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]));
    ok(f.alice(&["cluster", "reencrypt", "prod", "--promote"]));
    let promoted = head(&repo);
    render(&f, "prod", &["node"]);
    ok(f.alice(&install));
    let config = std::fs::read_to_string(&kc).unwrap();
    assert_eq!(config.matches("certificate-authority-data").count(), 1, "{config}");
    let text = std::fs::read_to_string(pki.join("sa-bundle.pub")).unwrap();
    let blocks = pem::parse_many(&text).unwrap();
    assert_eq!(blocks.len(), 2);
    let other = f.file("other.key");
    openssl_ec_key(&other);
    let out = openssl(&["pkey", "-in", &s(&other), "-pubout"]);
    let planted = format!("{}{}", pem::encode(&blocks[0]), String::from_utf8_lossy(&out.stdout));
    std::fs::write(pki.join("sa-bundle.pub"), planted).unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "another service-account key");
    refused_as(&f, &f.alice_secret, &["cluster", "render", "prod", "--role", "node"], "sa-bundle.pub");
    rewind(&f, &repo, &promoted);
    ok(f.alice(&["cluster", "reencrypt", "prod", "--finish-rotation"]));

    // outputs.toml, which any administrator records: its endpoint must be
    // a load balancer's name in the cluster's region.
    let outputs = |endpoint: &str| {
        format!("region = \"eu-west-1\"\napi-endpoint = \"{endpoint}\"\napi-name = \"api.prod.example.com\"\n\n[ids]\n")
    };
    std::fs::write(repo.join("clusters/prod/outputs.toml"), outputs("api.evil.example.org")).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "outputs");
    assert_eq!(audit_json(&f).0, 0, "any administrator may record outputs");
    let r = refused_as(&f, &f.alice_secret, &install, "api-endpoint \"api.evil.example.org\"");
    assert!(r.stderr.contains("is not a load balancer's name in eu-west-1"), "{}", r.stderr);
    // Another account's load balancer in the same region.
    std::fs::write(repo.join("clusters/prod/outputs.toml"), outputs("evil-1.elb.eu-west-1.amazonaws.com")).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "outputs");
    let r = refused_as(&f, &f.alice_secret, &install, "is not the name of the load balancer kaws makes (prod-api)");
    assert!(r.stderr.contains("api-endpoint"), "{}", r.stderr);
    let lb = "prod-api-0123456789abcdef.elb.eu-west-1.amazonaws.com";
    std::fs::write(repo.join("clusters/prod/outputs.toml"), outputs(lb)).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "outputs");
    ok(f.alice(&install));
    let config = std::fs::read_to_string(&kc).unwrap();
    assert!(
        config.contains(&format!("https://{lb}:6443"))
            && config.contains("\"tls-server-name\": \"api.prod.example.com\""),
        "{config}"
    );
}

// 5. Hostile file names and renames fail no primary's command.
#[test]
fn a_hostile_file_or_a_rename_fails_no_primary_operation() {
    let f = Fixture::new();
    let repo = f.repo();
    init_cluster(&f);
    let bob = add_admin(&f, "bob");
    let carol = add_admin(&f, "carol");
    let carol_sec = f.gpg.export_secret(&carol.fpr, "", &f.file("carol.sec"));
    ok(f.alice(&["admin", "create", "prod", "alice"]));
    ok(f.alice(&["admin", "sign", "prod", "alice"]));
    std::fs::write(repo.join("clusters/prod/admins/Bad_Name.crt"), "junk\n").unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "a file named outside kaws' rules");
    let r = ok(f.alice(&["cluster", "render", "prod", "--role", "master", "--index", "0"]));
    assert!(
        r.stderr.contains("admins/Bad_Name.crt is ignored") && r.stdout.contains("rbac/alice.yaml"),
        "{}",
        r.stderr
    );
    let r = ok(f.alice(&["admin", "list", "prod"]));
    assert!(r.stdout.contains("Bad_Name") && r.stdout.contains("ignored"), "{}", r.stdout);
    ok(f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]));
    let r = ok(f.alice(&["cluster", "reencrypt", "prod", "--promote"]));
    assert!(r.stderr.contains("Bad_Name.crt is ignored"), "{}", r.stderr);
    ok(f.alice(&["cluster", "reencrypt", "prod", "--finish-rotation"]));

    // A cluster no one could work with, or ever remove, is not created.
    let base = head(&repo);
    for (path, text, why) in [
        ("clusters/Zz/x", "x", "leaves clusters/Zz as no cluster kaws can work with"),
        ("clusters/junk/primaries.toml", "garbage", "leaves clusters/junk as no cluster kaws can work with"),
        // A primary, too, cannot leave a cluster no one could change again.
        ("clusters/prod/primaries.toml", "garbage", "leaves clusters/prod as no cluster kaws can work with"),
        ("clusters/Stray", "x", "leaves clusters/Stray as no cluster kaws can work with: a file where only"),
    ] {
        std::fs::create_dir_all(repo.join(path).parent().unwrap()).unwrap();
        std::fs::write(repo.join(path), text).unwrap();
        let signer = if path.starts_with("clusters/prod/") { &f.alice.fpr } else { &bob.fpr };
        git_commit_signed(&repo, &f.gpg, signer, "plant");
        let (code, report) = audit_json(&f);
        assert_eq!(code, 3, "{report}");
        assert!(reasons(&report, &head(&repo)).contains(why), "{report}");
        git(&repo, &["reset", "-q", "--hard", &base]);
        git(&repo, &["clean", "-qfdx", "clusters"]);
    }
    // A file name kaws cannot read (not UTF-8), even where bob may write.
    use std::os::unix::ffi::OsStrExt;
    let odd = repo.join("clusters/prod/admins").join(std::ffi::OsStr::from_bytes(b"bob.\xff.csr"));
    std::fs::write(&odd, "x").unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "plant");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3, "{report}");
    assert!(reasons(&report, &head(&repo)).contains("names must be UTF-8 without control characters"), "{report}");
    git(&repo, &["reset", "-q", "--hard", &base]);

    // A request carrying another cluster's public key, without the proof
    // of possession (its own signature), holds no key: prod's primaries
    // are not stopped by it.
    let bob_sec = f.gpg.export_secret(&bob.fpr, "", &f.file("bob.sec"));
    ok(f.with_key(
        &bob_sec,
        &["cluster", "init", "dev", "--domain", "example.com", "--region", "eu-west-1", "--masters", "1"],
    ));
    ok(f.with_key(&bob_sec, &["admin", "create", "dev", "bob"]));
    let csr_path = repo.join("clusters/dev/admins/bob.csr");
    let csr = pem::parse(std::fs::read(&csr_path).unwrap()).unwrap();
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(csr.contents()).unwrap();
    let own = parsed.certification_request_info.subject_pki.raw.to_vec();
    let ca = pem::parse(std::fs::read(repo.join("clusters/prod/pki/ca.crt")).unwrap()).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(ca.contents()).unwrap();
    let theirs = ca.public_key().raw.to_vec();
    assert_eq!(own.len(), theirs.len(), "both P-256 keys");
    let at = csr.contents().windows(own.len()).position(|w| w == own.as_slice()).unwrap();
    let mut der = csr.contents().to_vec();
    der[at..at + own.len()].copy_from_slice(&theirs);
    std::fs::write(&csr_path, pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der))).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "my request");
    assert_eq!(audit_json(&f).0, 0, "anyone writes their own request");
    ok(f.alice(&["cluster", "renew", "prod", "--all"]));

    // bob renames alice to zed and gives her name to carol.
    let config = repo.join("kaws.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let (a, c) = (format!("alice = \"{}\"", f.alice.fpr), format!("carol = \"{}\"", carol.fpr));
    assert!(text.contains(&a) && text.contains(&c), "{text}");
    let swapped =
        text.replace(&a, &format!("zed = \"{}\"", f.alice.fpr)).replace(&c, &format!("alice = \"{}\"", carol.fpr));
    std::fs::write(&config, swapped).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "rename");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 0, "{report}");
    let renamed = report["admin_changes"].to_string();
    assert!(renamed.contains(&format!("alice renamed zed ({})", f.alice.fpr)), "{renamed}");
    assert!(renamed.contains(&format!("carol renamed alice ({})", carol.fpr)), "{renamed}");
    // The primary (by key) still works on the cluster ...
    ok(f.alice(&["cluster", "renew", "prod", "--all"]));
    ok(f.alice(&["cluster", "reencrypt", "prod", "--primary", "zed"]));
    // ... and the certificate issued to the old alice is not carol's.
    let kc = f.file("carol.kubeconfig");
    let r = refused_as(
        &f,
        &carol_sec,
        &["admin", "install", "prod", "alice", "--kubeconfig", &s(&kc)],
        "not to the administrator now named alice",
    );
    assert!(r.stderr.contains(&f.alice.fpr), "{}", r.stderr);
    let user_data = render(&f, "prod", &["master", "--index", "0"]);
    assert!(!user_data.contains("rbac/alice.yaml"), "the old alice's certificate is bound to the new one");
}

// 6. A primary removed with --rotate keeps only what a current primary granted.
#[test]
fn a_demoted_primary_keeps_only_access_a_current_primary_granted() {
    let f = Fixture::new();
    let repo = f.repo();
    let bob = add_admin(&f, "bob");
    let carol = add_admin(&f, "carol");
    let (bob_sec, carol_sec) = (
        f.gpg.export_secret(&bob.fpr, "", &f.file("bob.sec")),
        f.gpg.export_secret(&carol.fpr, "", &f.file("carol.sec")),
    );
    init_cluster_with(&f, &["--masters", "1", "--primary", "alice", "--primary", "bob"]);
    for (who, secret, signer) in [
        ("alice", &f.alice_secret, &f.alice_secret),
        ("bob", &bob_sec, &bob_sec),
        ("carol", &carol_sec, &f.alice_secret),
    ] {
        ok(f.with_key(secret, &["admin", "create", "prod", who]));
        ok(f.with_key(signer, &["admin", "sign", "prod", who]));
    }
    // While a primary, bob claims in his record that alice granted his
    // access: the record's grant signature is still his own.
    let record = repo.join("clusters/prod/admins/bob.issued.toml");
    let text = std::fs::read_to_string(&record).unwrap();
    let forged = text.replace(&format!("signed-by = \"{}\"", bob.fpr), &format!("signed-by = \"{}\"", f.alice.fpr));
    assert_ne!(text, forged);
    std::fs::write(&record, forged).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "granted by alice");
    assert_eq!(audit_json(&f).0, 0, "bob is a primary");
    let r = ok(f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]));
    assert!(r.stdout.contains("not proven: the granter's signature over the grant does not verify"), "{}", r.stdout);
    let alice_signed = format!("(signed by alice ({}))", f.alice.fpr);
    assert!(r.stdout.contains(&format!("alice {alice_signed}, carol {alice_signed}")), "{}", r.stdout);
    let lost = format!(
        "Not carried over (granted by someone no longer a primary, or not proven): bob (signed by alice ({}), not proven: the granter's signature over the grant does not verify)",
        f.alice.fpr
    );
    assert!(r.stdout.contains(&lost), "{}", r.stdout);
    let r = ok(f.alice(&["cluster", "reencrypt", "prod", "--promote"]));
    assert!(r.stdout.contains(&lost), "{}", r.stdout);
    let admins = repo.join("clusters/prod/admins");
    for gone in ["bob.crt", "bob.issued.toml"] {
        assert!(!admins.join(gone).exists(), "{gone} is carried over");
    }
    assert!(!repo.join("clusters/prod/rbac/bob.yaml").exists());
    let ca = repo.join("clusters/prod/pki/ca.crt");
    for kept in ["alice", "carol"] {
        let crt = admins.join(format!("{kept}.crt"));
        assert!(openssl(&["verify", "-CAfile", &s(&ca), &s(&crt)]).status.success(), "{kept}'s is not re-issued");
    }
    let r = f.with_key(&bob_sec, &["admin", "install", "prod", "bob", "--kubeconfig", &s(&f.file("bob.kc"))]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("bob has no certificate for prod"), "{}", r.stderr);
    // A current primary grants it again.
    ok(f.alice(&["admin", "sign", "prod", "bob"]));
}
