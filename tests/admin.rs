//! `kaws admin …`: CSRs bound to OpenPGP signatures, issuing policy, and
//! kubeconfigs that real kubectl uses against a loopback TLS server that
//! demands client certificates from the cluster CA.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

struct World {
    f: Fixture,
    bob: Key,
    bob_secret: PathBuf,
    carol: Key,
}

impl World {
    /// alice (founder, the only primary of `prod`), bob and carol (administrators).
    fn new() -> World {
        let f = Fixture::new();
        let bob = f.gpg.gen("bob");
        let carol = f.gpg.gen("carol");
        for (n, k) in [("bob", &bob), ("carol", &carol)] {
            f.gpg.export(&[&k.fpr], true, &f.file(&format!("{n}.asc")));
            let r = f.alice(&["key", "add", n, f.file(&format!("{n}.asc")).to_str().unwrap()]);
            assert_eq!(r.code, 0, "{}", r.stderr);
        }
        let r =
            f.alice(&["cluster", "init", "prod", "--domain", "example.com", "--region", "eu-west-1", "--masters", "1"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let bob_secret = f.gpg.export_secret(&bob.fpr, "", &f.file("bob.sec"));
        World { f, bob, bob_secret, carol }
    }

    fn bob(&self, args: &[&str]) -> Run {
        let mut c = kaws(&self.f.gpg, &self.f.repo());
        c.arg("--secret-key").arg(&self.bob_secret).args(args);
        run(c)
    }

    fn admins(&self) -> PathBuf {
        self.f.repo().join("clusters/prod/admins")
    }

    /// Replaces bob's request files as an attacker with push access would.
    fn plant(&self, csr: &[u8], sig: &[u8]) {
        std::fs::write(self.admins().join("bob.csr"), csr).unwrap();
        std::fs::write(self.admins().join("bob.csr.sig"), sig).unwrap();
        // bob is an administrator: his signed commit is authenticated, so
        // it is `admin sign`'s own checks that must catch a bad request.
        git_commit_signed(&self.f.repo(), &self.f.gpg, &self.bob.fpr, "plant");
    }

    fn gpg_sign(&self, signer: &str, file: &Path) -> Vec<u8> {
        let out = self.f.gpg.run(&[
            "--armor",
            "--local-user",
            signer,
            "--detach-sign",
            "--output",
            "-",
            file.to_str().unwrap(),
        ]);
        out.stdout
    }
}

/// An ECDSA P-256 CSR made by openssl with `subj`, for a key file (made if absent).
fn openssl_csr(dir: &Path, key: &Path, subj: &str) -> Vec<u8> {
    if !key.exists() {
        openssl_ec_key(key);
    }
    let csr = dir.join("req.csr");
    let out = openssl(&["req", "-new", "-key", key.to_str().unwrap(), "-subj", subj, "-out", csr.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(csr).unwrap()
}

/// The stand-in API server, trusting `cafile` for client certificates.
fn apiserver(w: &World, cafile: &Path) -> (Child, u16) {
    common::apiserver(&w.f.gpg, &w.f.repo().join("clusters/prod/pki"), w.f.tmp.path(), cafile)
}

fn kubectl_version(kubeconfig: &Path, context: &str, port: u16) -> Result<serde_json::Value, String> {
    let set = Command::new("kubectl")
        .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "config", "set-cluster", context])
        .arg(format!("--server=https://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let out = Command::new("kubectl")
        .args(["--kubeconfig", kubeconfig.to_str().unwrap(), "--context", context, "get", "--raw", "/version"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn kubectl_authenticates_through_the_exec_plugin_and_an_embedded_key() {
    let w = World::new();
    let r = w.bob(&["admin", "create", "prod", "bob"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // bob's key is sealed to bob only: alice (a primary) cannot open it.
    let alice_only = w.f.gpg.with_only(&w.f.alice.fpr);
    assert!(alice_only.decrypt(&w.admins().join("bob.key.pgp")).is_err());
    let r = w.f.alice(&["admin", "sign", "prod", "bob", "--days", "7"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rbac: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(w.f.repo().join("clusters/prod/rbac/bob.yaml")).unwrap())
            .unwrap();
    assert_eq!(rbac["subjects"][0]["name"], "bob");
    assert_eq!(rbac["roleRef"]["name"], "cluster-admin");

    // The issued certificate: CN=bob, no organization, clientAuth, 7 days.
    let txt = String::from_utf8(
        openssl(&["x509", "-in", w.admins().join("bob.crt").to_str().unwrap(), "-noout", "-text"]).stdout,
    )
    .unwrap();
    assert!(txt.contains("Subject: CN = bob\n"), "{txt}");
    assert!(txt.contains("TLS Web Client Authentication") && !txt.contains("Server Authentication"));
    assert!(txt.contains("CA:FALSE"));

    // A kubeconfig with an unrelated context, merged into.
    let kc = w.f.tmp.path().join("kube/config");
    std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
    let other = "apiVersion: v1\nkind: Config\ncurrent-context: other\nclusters:\n- name: other\n  cluster:\n    server: https://other.example:6443\nusers:\n- name: other\n  user:\n    token: not-a-real-token\ncontexts:\n- name: other\n  context:\n    cluster: other\n    user: other\n";
    std::fs::write(&kc, other).unwrap();
    let r = w.bob(&["admin", "install", "prod", "bob", "--kubeconfig", kc.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(!text.contains("PRIVATE KEY") && !text.contains("client-key-data"), "{text}");
    assert!(!text.contains("insecure-skip-tls-verify"));
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let before: serde_yaml::Value = serde_yaml::from_str(other).unwrap();
    assert_eq!(doc["contexts"][0], before["contexts"][0]);
    assert_eq!(doc["users"][0], before["users"][0]);
    assert_eq!(doc["current-context"], "other");
    assert_eq!(doc["clusters"][1]["cluster"]["server"], "https://api.prod.example.com:6443");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777, 0o600);

    let ca = w.f.repo().join("clusters/prod/pki/ca.crt");
    let (_server, port) = apiserver(&w, &ca);
    let v = kubectl_version(&kc, "kaws-prod-bob", port).expect("kubectl through the exec plugin");
    assert_eq!(v["clientCommonName"], "bob");
    assert_eq!(v["clientOrganizations"], serde_json::json!([]));
    assert_eq!(v["gitVersion"], "v1.34.1");

    // --embed-key: the key in the file, 0600.
    let kc2 = w.f.tmp.path().join("embedded");
    let r = w.bob(&["admin", "install", "prod", "bob", "--kubeconfig", kc2.to_str().unwrap(), "--embed-key"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(std::fs::read_to_string(&kc2).unwrap().contains("client-key-data"));
    assert_eq!(std::fs::metadata(&kc2).unwrap().permissions().mode() & 0o777, 0o600);
    let v = kubectl_version(&kc2, "kaws-prod-bob", port).expect("kubectl with an embedded key");
    assert_eq!(v["clientCommonName"], "bob");

    // kubectl may run the plugin several times at once: every run succeeds.
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let mut c = kaws(&w.f.gpg, &w.f.repo());
            c.arg("--secret-key").arg(&w.bob_secret).args(["admin", "credential", "prod", "bob"]);
            c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for child in runs {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let cred: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(cred["kind"], "ExecCredential");
    }

    // alice cannot fetch bob's credential, nor embed his key.
    let r = w.f.alice(&["admin", "credential", "prod", "bob"]);
    assert_eq!(r.code, 3, "{}", r.stderr);

    // Revoked: the exec-plugin kubeconfig stops working at once.
    let r = w.f.alice(&["admin", "revoke", "prod", "bob"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("kubectl delete clusterrolebinding kaws-admin-bob"), "{}", r.stdout);
    let revoked = std::fs::read_to_string(w.f.repo().join("clusters/prod/revoked.toml")).unwrap();
    assert!(revoked.contains("name = \"bob\"") && revoked.contains("revoked-by = \"alice\""), "{revoked}");
    let err = kubectl_version(&kc, "kaws-prod-bob", port).expect_err("revoked credential");
    assert!(err.contains("no certificate"), "{err}");
    let list = w.f.alice(&["--output", "json", "admin", "list", "prod"]);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows[0]["status"], "revoked");

    // No file kaws wrote into the repository, now or in history, holds a plaintext key.
    assert!(!git(&w.f.repo(), &["log", "-p", "--all"]).contains("PRIVATE KEY"));
    assert_all_commits_verify(&w.f.repo(), &w.f.gpg);
}

#[test]
fn only_a_csr_signed_by_the_pinned_key_with_the_right_subject_is_issued() {
    let w = World::new();
    let repo = w.f.repo();
    let refused = |what: &str, needle: &str| {
        let before = snapshot(&repo);
        let r = w.f.alice(&["admin", "sign", "prod", "bob"]);
        assert_eq!(r.code, 3, "{what}: {} {}", r.stdout, r.stderr);
        assert!(r.stderr.contains(needle), "{what}: expected {needle:?} in {}", r.stderr);
        assert!(!w.admins().join("bob.crt").exists(), "{what}: a certificate was issued");
        assert_eq!(before, snapshot(&repo), "{what}: the repository changed");
    };

    // `admin create` is bob's alone.
    let r = w.f.alice(&["admin", "create", "prod", "bob"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("must be run by bob"));
    assert_eq!(w.bob(&["admin", "create", "prod", "bob"]).code, 0);
    let csr_path = w.admins().join("bob.csr");
    let good_csr = std::fs::read(&csr_path).unwrap();

    // Signed by carol, or by a key whose user ID copies bob's.
    let sig = w.gpg_sign(&w.carol.fpr, &csr_path);
    w.plant(&good_csr, &sig);
    refused("carol's signature", "no valid signature by");
    // mallory, an administrator too, names herself "bob <bob@example.org>".
    let mhome = Gpg::new();
    let mallory = mhome.gen_with("mallory", KeyOpts { uid: "bob <bob@example.org>", ..Default::default() });
    mhome.export(&[&mallory.fpr], true, &w.f.file("mallory.asc"));
    let mallory_asc = w.f.file("mallory.asc");
    let r = w.f.alice(&["key", "add", "mallory", mallory_asc.to_str().unwrap()]);
    assert_eq!(r.code, 3, "a look-alike user ID needs --allow-duplicate-uid: {}", r.stderr);
    assert!(r.stderr.contains("bob@example.org") && r.stderr.contains("--allow-duplicate-uid"), "{}", r.stderr);
    let r = w.f.alice(&["key", "add", "mallory", mallory_asc.to_str().unwrap(), "--allow-duplicate-uid"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sig = mhome
        .run(&["--armor", "--local-user", &mallory.fpr, "--detach-sign", "--output", "-", csr_path.to_str().unwrap()])
        .stdout;
    w.plant(&good_csr, &sig);
    refused("a look-alike user ID", "no valid signature by");

    // Changed after signing.
    let dir = w.f.tmp.path();
    let sig = w.gpg_sign(&w.bob.fpr, &csr_path);
    let other_csr = openssl_csr(dir, &dir.join("k1.pem"), "/CN=bob");
    w.plant(&other_csr, &sig);
    refused("a CSR changed after signing", "no valid signature by");

    // Signed by bob but asking for more than CN=bob.
    for (subj, key) in [("/CN=carol", "k2.pem"), ("/O=system:masters/CN=bob", "k3.pem"), ("/CN=bob/OU=x", "k4.pem")] {
        let csr = openssl_csr(dir, &dir.join(key), subj);
        std::fs::write(dir.join("planted.csr"), &csr).unwrap();
        let sig = w.gpg_sign(&w.bob.fpr, &dir.join("planted.csr"));
        w.plant(&csr, &sig);
        refused(subj, "must be exactly CN=bob");
    }

    // Reusing a cluster key (the API server's) or another administrator's key.
    let api_key = dir.join("api.pem");
    write_secret(&api_key, &w.f.gpg.decrypt(&repo.join("clusters/prod/pki/apiserver.key.pgp")).unwrap());
    let csr = openssl_csr(dir, &api_key, "/CN=bob");
    std::fs::write(dir.join("planted.csr"), &csr).unwrap();
    let sig = w.gpg_sign(&w.bob.fpr, &dir.join("planted.csr"));
    w.plant(&csr, &sig);
    refused("the apiserver's key", "reuses the public key of clusters/prod/pki/apiserver.crt");
    let r = w.f.alice(&["admin", "create", "prod", "alice"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let alice_key = dir.join("alice-admin.pem");
    write_secret(&alice_key, &w.f.gpg.decrypt(&w.admins().join("alice.key.pgp")).unwrap());
    let csr = openssl_csr(dir, &alice_key, "/CN=bob");
    std::fs::write(dir.join("planted.csr"), &csr).unwrap();
    let sig = w.gpg_sign(&w.bob.fpr, &dir.join("planted.csr"));
    w.plant(&csr, &sig);
    refused("alice's admin key", "reuses the public key of clusters/prod/admins/alice.csr");

    // A signature made by gpg itself with bob's key, over an honest CSR: accepted,
    // but only by a primary.
    let csr = openssl_csr(dir, &dir.join("k5.pem"), "/CN=bob");
    std::fs::write(dir.join("planted.csr"), &csr).unwrap();
    let sig = w.gpg_sign(&w.bob.fpr, &dir.join("planted.csr"));
    w.plant(&csr, &sig);
    let before = snapshot(&repo);
    let r = w.bob(&["admin", "sign", "prod", "bob"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not a primary"));
    assert_eq!(before, snapshot(&repo));
    let r = w.f.alice(&["admin", "sign", "prod", "bob"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(w.admins().join("bob.crt").exists());

    // Once bob's OpenPGP key is revoked, nothing more is issued for him.
    let r = w.f.alice(&["admin", "revoke", "prod", "bob"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let csr = openssl_csr(dir, &dir.join("k6.pem"), "/CN=bob");
    std::fs::write(dir.join("planted.csr"), &csr).unwrap();
    let sig = w.gpg_sign(&w.bob.fpr, &dir.join("planted.csr"));
    w.plant(&csr, &sig);
    w.f.gpg.revoke(&w.bob.fpr);
    w.f.gpg.export(&[&w.bob.fpr], true, &w.f.file("bob-revoked.asc"));
    assert_eq!(w.f.alice(&["key", "update", w.f.file("bob-revoked.asc").to_str().unwrap()]).code, 0);
    refused("bob's revoked key", "not usable now");
}
