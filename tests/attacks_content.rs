//! Attacks on what kaws reads from the repository's content (issue 13,
//! continued from tests/attacks.rs): certificates that smuggle another
//! administrator's key, repository text that would become cloud-init keys
//! or terminal escapes, kubeconfigs, signatures git and kaws read
//! differently, outputs and trust bundles. Real gpg, git and the kaws
//! binary; every refusal exits 3 with the work tree byte-identical.

mod common;

use std::process::Command;

use common::*;
use sequoia_openpgp as openpgp;

/// Runs `args` as alice and checks the refusal: exit 3, `needle` in the
/// message, a hint, and a work tree byte-identical to before.
fn refused(f: &Fixture, args: &[&str], needle: &str) -> Run {
    refused_as(f, &f.alice_secret, args, needle)
}

// 7. A hidden subkey lets one administrator block another.
#[test]
fn another_administrators_key_in_a_certificate_is_stripped_or_refused() {
    use openpgp::parse::Parse;
    use openpgp::serialize::SerializeInto;
    let f = Fixture::new();
    let repo = f.repo();
    let eve = f.gpg.gen("eve");
    let alice_cert = openpgp::Cert::from_bytes(&f.gpg.run(&["--export", &f.alice.fpr]).stdout).unwrap();
    let eve_tsk = openpgp::Cert::from_file(f.gpg.export_secret(&eve.fpr, "", &f.file("eve.sec"))).unwrap();
    let eve_cert = eve_tsk.clone().strip_secret_key_material();
    let alice_primary = alice_cert.primary_key().key().clone().role_into_subordinate();

    // Unbound: alice's primary key appended to eve's certificate.
    let (hidden, _) = eve_cert.clone().insert_packets(vec![openpgp::Packet::from(alice_primary.clone())]).unwrap();
    assert!(hidden.keys().any(|k| k.key().fingerprint() == alice_cert.fingerprint()), "the attack certificate");
    std::fs::write(f.file("eve.asc"), hidden.armored().to_vec().unwrap()).unwrap();
    let r = f.alice(&["key", "add", "eve", f.file("eve.asc").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stored = openpgp::Cert::from_file(repo.join(format!("pubkeys/{}.asc", eve.fpr))).unwrap();
    assert!(!stored.keys().any(|k| k.key().fingerprint() == alice_cert.fingerprint()), "stripped on add");
    // eve commits it anyway, behind kaws' back: stripped on load.
    std::fs::write(repo.join(format!("pubkeys/{}.asc", eve.fpr)), hidden.armored().to_vec().unwrap()).unwrap();
    git_commit_signed(&repo, &f.gpg, &eve.fpr, "my certificate");
    // alice's signatures are still alice's.
    std::fs::write(repo.join("clusters/README.md"), "alice").unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "alice still signs");
    let (code, report) = audit_json(&f);
    assert_eq!(code, 0, "{report}");
    assert_eq!(f.alice(&["key", "list"]).code, 0);

    // Bound: eve binds alice's primary key as her encryption subkey (no
    // cooperation from alice needed). Refused: a key belongs to one person.
    use openpgp::packet::signature::SignatureBuilder;
    use openpgp::types::{KeyFlags, SignatureType};
    let mut signer = eve_tsk.primary_key().key().clone().parts_into_secret().unwrap().into_keypair().unwrap();
    let binding = alice_primary
        .bind(
            &mut signer,
            &eve_cert,
            SignatureBuilder::new(SignatureType::SubkeyBinding)
                .set_key_flags(KeyFlags::empty().set_storage_encryption())
                .unwrap(),
        )
        .unwrap();
    let (bound, _) =
        eve_cert.insert_packets(vec![openpgp::Packet::from(alice_primary), openpgp::Packet::from(binding)]).unwrap();
    std::fs::write(f.file("eve-bound.asc"), bound.armored().to_vec().unwrap()).unwrap();
    let r = refused(&f, &["key", "update", f.file("eve-bound.asc").to_str().unwrap()], "both carry the key");
    assert!(r.stderr.contains(&f.alice.fpr), "{}", r.stderr);
    std::fs::write(repo.join(format!("pubkeys/{}.asc", eve.fpr)), bound.armored().to_vec().unwrap()).unwrap();
    git_commit_signed(&repo, &f.gpg, &eve.fpr, "my certificate, bound");
    refused(&f, &["key", "list"], "both carry the key");
}

// 8. Repository files go verbatim into master user-data.
#[test]
fn repository_text_cannot_become_cloud_init_keys() {
    let f = Fixture::new();
    let repo = f.repo();
    init_cluster(&f);
    assert_eq!(f.alice(&["admin", "create", "prod", "alice"]).code, 0);
    assert_eq!(f.alice(&["admin", "sign", "prod", "alice"]).code, 0);
    let base = head(&repo);
    let render = |f: &Fixture| f.alice(&["cluster", "render", "prod", "--role", "master", "--index", "0"]);

    // A manifest with CR line breaks: to a YAML reader, top-level keys.
    std::fs::write(
        repo.join("clusters/prod/rbac/alice.yaml"),
        "kind: ClusterRoleBinding\rbootcmd:\r  - [sh, -c, 'touch /pwned']\r",
    )
    .unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "rbac");
    let r = render(&f);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_yaml::Value = serde_yaml::from_str(&r.stdout).unwrap();
    assert!(doc.get("bootcmd").is_none() && !r.stdout.contains("pwned"), "{}", r.stdout);
    // The binding is rendered from alice's record, and base64 in the YAML.
    let file = doc["write_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|w| w["path"] == "/etc/kubernetes/kaws/rbac/alice.yaml")
        .unwrap();
    assert_eq!(file["encoding"], "b64");
    use base64::Engine as _;
    let manifest = base64::engine::general_purpose::STANDARD.decode(file["content"].as_str().unwrap()).unwrap();
    let manifest: serde_yaml::Value = serde_yaml::from_slice(&manifest).unwrap();
    assert_eq!(manifest["subjects"][0]["name"], "alice");

    // A certificate carrying a CR, NEL or U+2028: refused, nothing rendered.
    for bad in ["\r", "\u{85}", "\u{2028}"] {
        rewind(&f, &repo, &base);
        let path = repo.join("clusters/prod/pki/front-proxy-ca.crt");
        let mut pem = std::fs::read_to_string(&path).unwrap();
        pem.push_str(&format!("{bad}bootcmd:{bad}  - [reboot]{bad}"));
        std::fs::write(&path, pem).unwrap();
        git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "ca");
        // What the masters install from SSM (apply writes what this prints).
        let r = refused(
            &f,
            &["cluster", "render", "prod", "--parameters"],
            "pki/front-proxy-ca.crt contains the character U+",
        );
        assert!(r.stdout.is_empty());
    }
}

// 9. kaws corrupts the user's kubeconfig.
#[test]
fn kubectl_still_reads_a_kubeconfig_kaws_rewrote() {
    let f = Fixture::new();
    init_cluster(&f);
    assert_eq!(f.alice(&["admin", "create", "prod", "alice"]).code, 0);
    assert_eq!(f.alice(&["admin", "sign", "prod", "alice"]).code, 0);
    let kc = f.file("kubeconfig");
    // As kubectl writes it: strings that YAML 1.1 would read as something
    // else are quoted; plus a comment and extensions.
    let hazards = ["y", "n", "yes", "off", "null", "0755", "1e3", "~"];
    let mut text = String::from("# my clusters\napiVersion: v1\nkind: Config\ncurrent-context: \"y\"\nclusters:\n");
    for h in hazards {
        text.push_str(&format!(
            "- cluster:\n    server: https://127.0.0.1:6443\n    extensions:\n    - name: \"{h}\"\n      extension:\n        mode: \"{h}\"\n  name: \"{h}\"\n"
        ));
    }
    text.push_str("contexts:\n");
    for h in hazards {
        text.push_str(&format!("- context:\n    cluster: \"{h}\"\n    user: \"{h}\"\n  name: \"{h}\"\n"));
    }
    text.push_str("users:\n");
    for h in hazards {
        text.push_str(&format!("- name: \"{h}\"\n  user:\n    token: \"{h}\"\n"));
    }
    std::fs::write(&kc, &text).unwrap();
    let view = || {
        let out = Command::new("kubectl")
            .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
            .arg(&kc)
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl cannot load the file: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let before = view();
    let r = f.alice(&["admin", "install", "prod", "alice", "--kubeconfig", kc.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after = view();
    assert_eq!(after["current-context"], "y");
    let named = |v: &serde_json::Value, field: &str, name: &str| {
        v[field].as_array().unwrap().iter().find(|e| e["name"] == name).cloned()
    };
    for field in ["clusters", "contexts", "users"] {
        for h in hazards {
            let was = named(&before, field, h);
            assert!(was.is_some(), "{field} {h}");
            assert_eq!(named(&after, field, h), was, "{field} {h}");
        }
    }
    assert_eq!(after["contexts"].as_array().unwrap().len(), hazards.len() + 1);
}

// 10. What kaws and git consider signed differ.
#[test]
fn only_one_gpgsig_header_is_a_signature() {
    let f = Fixture::new();
    let repo = f.repo();
    std::fs::write(repo.join("clusters/README.md"), "x").unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "signed");
    let signed = head(&repo);
    let raw = git(&repo, &["cat-file", "commit", "HEAD"]);
    let (headers, message) = raw.split_once("\n\n").unwrap();
    let start = headers.find("gpgsig ").unwrap();
    let sig_block = &headers[start..];
    let plain_headers = &headers[..start];
    // The signature moved from the headers into the message.
    let moved = format!("{plain_headers}\n{message}{sig_block}\n");
    // Two gpgsig headers.
    let doubled = format!("{headers}\n{sig_block}\n\n{message}");
    for (what, forged) in [("moved into the message", moved), ("doubled", doubled)] {
        let path = f.file("forged");
        std::fs::write(&path, &forged).unwrap();
        let oid = git(&repo, &["hash-object", "-t", "commit", "-w", "--literally", path.to_str().unwrap()]);
        let oid = oid.trim();
        git(&repo, &["update-ref", "refs/heads/main", oid]);
        let verify = Command::new("git")
            .current_dir(&repo)
            .env("GNUPGHOME", f.gpg.home())
            .args(["verify-commit", oid])
            .output()
            .unwrap();
        let (code, report) = audit_json(&f);
        assert_eq!(code, 3, "{what}: {report}");
        let why = reasons(&report, oid);
        assert!(why.contains("unsigned") || why.contains("gpgsig headers"), "{what}: {report}");
        if what == "moved into the message" {
            assert!(!verify.status.success(), "git does not take it as signed either");
        }
        git(&repo, &["update-ref", "refs/heads/main", &signed]);
    }
}

// 11. Terminal escapes.
#[test]
fn control_and_bidi_characters_are_printed_escaped() {
    let f = Fixture::new();
    let repo = f.repo();
    let mallory = f
        .gpg
        .gen_with("mallory", KeyOpts { uid: "mallory \u{202e}nimda\u{202c} <m@example.org>", ..Default::default() });
    let cert = f.gpg.export(&[&mallory.fpr], true, &f.file("mallory.asc"));
    assert_eq!(f.alice(&["key", "add", "mallory", cert.to_str().unwrap()]).code, 0);
    let r = f.alice(&["key", "list"]);
    assert_eq!(r.code, 0);
    assert!(!r.stdout.contains('\u{202e}') && r.stdout.contains("\\u{202e}"), "{}", r.stdout);
    // A file name with a terminal escape, committed by an administrator.
    std::fs::write(repo.join("pubkeys/\u{1b}]0;owned\u{7}.asc"), "x").unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "\u{1b}[2J");
    let r = f.alice(&["key", "list"]);
    assert_eq!(r.code, 3);
    assert!(!r.stderr.contains('\u{1b}') && !r.stderr.contains('\u{7}'), "{:?}", r.stderr);
    // The audit refuses the name (kaws' paths hold readable names only) and
    // prints it, and the commit's summary, escaped.
    let r = f.alice(&["audit"]);
    assert_eq!(r.code, 3);
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("pubkeys/\\u{001b}]0;owned\\u{0007}.asc") && out.contains("names must be UTF-8"), "{out}");
}

// A rotation's gate asks AWS about a cluster that has outputs: removing
// them would let `--promote` run before the cluster rolled.
#[test]
fn a_non_primary_records_outputs_but_cannot_remove_them() {
    let f = Fixture::new();
    let repo = f.repo();
    init_cluster(&f);
    let bob = add_admin(&f, "bob");
    let outputs = repo.join("clusters/prod/outputs.toml");
    std::fs::write(&outputs, "region = \"eu-west-1\"\n").unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "record outputs");
    assert_eq!(audit_json(&f).0, 0, "any administrator records outputs");
    std::fs::remove_file(&outputs).unwrap();
    git_commit_signed(&repo, &f.gpg, &bob.fpr, "forget the cluster runs");
    let removal = head(&repo);
    let (code, report) = audit_json(&f);
    assert_eq!(code, 3);
    let why = reasons(&report, &removal);
    assert!(why.contains("bob is not a primary of cluster prod") && why.contains("outputs.toml"), "{report}");
    // Nor does `kaws cluster destroy` (which removes them) run for him.
    rewind(&f, &repo, git(&repo, &["rev-parse", "HEAD~1"]).trim());
    let bob_sec = f.gpg.export_secret(&bob.fpr, "", &f.file("bob.sec"));
    let before = snapshot(&repo);
    let r = f.with_key(&bob_sec, &["cluster", "destroy", "prod", "--yes"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not a primary of cluster prod"), "{}", r.stderr);
    assert_eq!(before, snapshot(&repo));
}

// A trust bundle is what the control plane trusts for client certificates:
// a CA added to it, even in a primary's commit, is refused before it
// reaches an instance.
#[test]
fn a_trust_bundle_holds_only_what_the_rotation_phase_allows() {
    let f = Fixture::new();
    let repo = f.repo();
    init_cluster(&f);
    let base = head(&repo);
    let pki = repo.join("clusters/prod/pki");
    let (key, foreign) = (f.file("foreign.key"), f.file("foreign.crt"));
    openssl_ec_key(&key);
    let made = openssl(&[
        "req",
        "-x509",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=kubernetes",
        "-days",
        "1",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-out",
        foreign.to_str().unwrap(),
    ]);
    assert!(made.status.success());
    let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let extra = std::fs::read_to_string(&foreign).unwrap();
    // Settled: the CA alone; a second CA, or the CA missing, is refused.
    for bundle in [format!("{ca}{extra}"), extra.clone()] {
        std::fs::write(pki.join("ca-bundle.crt"), &bundle).unwrap();
        git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "trust more");
        refused(&f, &["cluster", "render", "prod", "--role", "node"], "ca-bundle.crt");
        rewind(&f, &repo, &base);
    }
    // Staged: the staged CA is the one other; a foreign one is refused.
    let r = f.alice(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(f.alice(&["cluster", "render", "prod", "--role", "node"]).code, 0);
    std::fs::write(pki.join("ca-bundle.crt"), format!("{ca}{extra}")).unwrap();
    git_commit_signed(&repo, &f.gpg, &f.alice.fpr, "trust a foreign CA instead of the staged one");
    refused(
        &f,
        &["cluster", "render", "prod", "--role", "node"],
        "neither pki/ca.crt nor the one the staged rotation staged",
    );
}
