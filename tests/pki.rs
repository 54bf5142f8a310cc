//! `kaws cluster init / certs / renew`, checked by independent peers:
//! openssl (chains, SANs, usages, a TLS handshake), gpg (sealed keys), etcd.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const CLUSTER: &str = "prod";

struct Pki {
    f: Fixture,
    bob: Key,
}

impl Pki {
    /// alice founds the repository, bob is an administrator but not a primary.
    fn new() -> Pki {
        let f = Fixture::new();
        let bob = f.gpg.gen("bob");
        f.gpg.export(&[&bob.fpr], true, &f.file("bob.asc"));
        assert_eq!(f.alice(&["key", "add", "bob", f.file("bob.asc").to_str().unwrap()]).code, 0);
        let r = f.alice(&[
            "cluster",
            "init",
            CLUSTER,
            "--domain",
            "example.com",
            "--region",
            "eu-west-1",
            "--admin-cidr",
            "203.0.113.0/24",
            "--primary",
            "alice",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        Pki { f, bob }
    }

    fn pki(&self) -> PathBuf {
        self.f.repo().join("clusters").join(CLUSTER).join("pki")
    }

    fn p(&self, rel: &str) -> String {
        self.pki().join(rel).to_str().unwrap().to_owned()
    }

    /// Decrypts a sealed key with gpg into a 0600 file outside the repository.
    fn key_file(&self, rel: &str) -> PathBuf {
        let pem = self.f.gpg.decrypt(&self.pki().join(format!("{rel}.key.pgp"))).expect("alice decrypts");
        let out = self.f.tmp.path().join(format!("{}.pem", rel.replace('/', "_")));
        let _ = std::fs::remove_file(&out);
        write_secret(&out, &pem);
        out
    }
}

fn leaves() -> Vec<(String, &'static str)> {
    common::leaves(3)
}

fn text(cert: &str) -> String {
    let out = openssl(&["x509", "-in", cert, "-noout", "-text"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn openssl_accepts_every_leaf_and_sees_what_the_table_promises() {
    let t = Pki::new();
    for (leaf, ca) in leaves() {
        let out = openssl(&["verify", "-CAfile", &t.p(&format!("{ca}.crt")), &t.p(&format!("{leaf}.crt"))]);
        assert!(out.status.success(), "{leaf}: {}", String::from_utf8_lossy(&out.stderr));
        // ... and no other CA vouches for it.
        let other = if ca == "ca" { "etcd/ca" } else { "ca" };
        let out = openssl(&["verify", "-CAfile", &t.p(&format!("{other}.crt")), &t.p(&format!("{leaf}.crt"))]);
        assert!(!out.status.success(), "{leaf} verifies under {other}");
        let txt = text(&t.p(&format!("{leaf}.crt")));
        assert!(txt.contains("CA:FALSE"), "{leaf}");
        assert!(txt.contains("X509v3 Key Usage: critical"), "{leaf}");
        assert!(txt.contains("Authority Key Identifier") && txt.contains("Subject Key Identifier"), "{leaf}");
        assert_eq!(txt.contains("system:masters"), leaf == "super-admin", "{leaf}");
    }
    for ca in ["ca", "front-proxy-ca", "etcd/ca"] {
        let txt = text(&t.p(&format!("{ca}.crt")));
        assert!(txt.contains("CA:TRUE, pathlen:0"), "{ca}");
        assert!(txt.contains("Basic Constraints: critical"), "{ca}");
        assert!(txt.contains("Certificate Sign"), "{ca}");
    }
    let api = text(&t.p("apiserver.crt"));
    for san in [
        "DNS:kubernetes,",
        "DNS:kubernetes.default,",
        "DNS:kubernetes.default.svc,",
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:api.prod.example.com",
        "IP Address:10.96.0.1",
        "IP Address:10.0.0.10",
        "IP Address:10.0.32.10",
        "IP Address:10.0.64.10",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    ] {
        assert!(api.contains(san), "apiserver lacks {san}:\n{api}");
    }
    assert!(api.contains("TLS Web Server Authentication") && !api.contains("Client Authentication"));
    let etcd = text(&t.p("etcd/server-1.crt"));
    assert!(
        etcd.contains("DNS:ip-10-0-32-10.eu-west-1.compute.internal") && etcd.contains("IP Address:10.0.32.10"),
        "{etcd}"
    );
    assert!(!etcd.contains("10.0.0.10"), "a master's etcd certificate names another master");
    assert!(etcd.contains("TLS Web Server Authentication, TLS Web Client Authentication"));
    let client = text(&t.p("apiserver-kubelet-client.crt"));
    assert!(client.contains("TLS Web Client Authentication") && !client.contains("Server Authentication"));
    // Serials are random and 128 bits wide.
    let serial = |c: &str| String::from_utf8(openssl(&["x509", "-in", c, "-noout", "-serial"]).stdout).unwrap();
    assert_ne!(serial(&t.p("ca.crt")), serial(&t.p("apiserver.crt")));
    assert!(serial(&t.p("apiserver.crt")).trim().len() >= "serial=".len() + 31);
}

#[test]
fn gpg_opens_every_sealed_key_for_primaries_only() {
    let t = Pki::new();
    let bob_only = t.f.gpg.with_only(&t.bob.fpr);
    let mut sealed: Vec<String> = leaves().iter().map(|(l, _)| l.to_string()).collect();
    sealed.extend(["ca", "front-proxy-ca", "etcd/ca", "sa"].map(String::from));
    for rel in &sealed {
        let file = t.pki().join(format!("{rel}.key.pgp"));
        let armored = std::fs::read_to_string(&file).unwrap();
        assert!(armored.starts_with("-----BEGIN PGP MESSAGE-----"), "{rel}");
        let pem = t.f.gpg.decrypt(&file).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(String::from_utf8_lossy(&pem).contains("PRIVATE KEY"));
        let err = bob_only.decrypt(&file).expect_err("bob is not a primary");
        assert!(err.contains("No secret key") || err.contains("decryption failed"), "{err}");
        // The private key matches its certificate (or sa.pub).
        let key = t.key_file(rel);
        let from_key = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]).stdout;
        let from_cert = if rel == "sa" {
            std::fs::read(t.pki().join("sa.pub")).unwrap()
        } else {
            openssl(&["x509", "-in", &t.p(&format!("{rel}.crt")), "-pubkey", "-noout"]).stdout
        };
        assert_eq!(from_key, from_cert, "{rel}: key and certificate differ");
    }
    // No plaintext private key anywhere in the repository or its history.
    let all = git(&t.f.repo(), &["log", "-p", "--all"]);
    assert!(!all.contains("PRIVATE KEY"), "a plaintext private key reached git");
    let mut seen = 0;
    for entry in walkdir(&t.f.repo()) {
        if entry.components().any(|c| c.as_os_str() == ".git") {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"), "{}", entry.display());
        seen += 1;
    }
    assert!(seen > 30);
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[test]
fn a_tls_client_trusting_only_ca_crt_accepts_the_apiserver_by_its_public_name() {
    let t = Pki::new();
    let key = t.key_file("apiserver");
    let port = free_port();
    let _server = Child(
        Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                &t.p("apiserver.crt"),
                "-key",
            ])
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let connect = |name: &str, ca: &str| {
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-CAfile",
                &t.p(ca),
                "-verify_return_error",
                "-servername",
                name,
                "-verify_hostname",
                name,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = connect("api.prod.example.com", "ca.crt");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}{}", String::from_utf8_lossy(&ok.stderr));
    let wrong_name = connect("api.other.example.com", "ca.crt");
    assert!(!String::from_utf8_lossy(&wrong_name.stdout).contains("Verify return code: 0 (ok)"));
    let wrong_ca = connect("api.prod.example.com", "etcd/ca.crt");
    assert!(!String::from_utf8_lossy(&wrong_ca.stdout).contains("Verify return code: 0 (ok)"));
}

#[test]
fn etcd_serves_with_a_masters_certificate_and_admits_only_its_ca_clients() {
    let t = Pki::new();
    let (client_port, peer_port) = (free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let server_key = t.key_file("etcd/server-0");
    let peer_key = t.key_file("etcd/peer-0");
    let client = format!("https://127.0.0.1:{client_port}");
    let peer = format!("https://127.0.0.1:{peer_port}");
    let _etcd = Child(
        Command::new(tool("etcd"))
            .args(["--name", "prod-master-0", "--data-dir"])
            .arg(data.path())
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("prod-master-0={peer}")])
            .args(["--cert-file", &t.p("etcd/server-0.crt"), "--key-file", server_key.to_str().unwrap()])
            .args(["--client-cert-auth", "--trusted-ca-file", &t.p("etcd/ca.crt")])
            .args(["--peer-cert-file", &t.p("etcd/peer-0.crt"), "--peer-key-file", peer_key.to_str().unwrap()])
            .args(["--peer-client-cert-auth", "--peer-trusted-ca-file", &t.p("etcd/ca.crt")])
            .args(["--listen-metrics-urls", &format!("http://127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts"),
    );
    wait_port(client_port);
    let ctl = |cert: &str, key: &Path, args: &[&str]| {
        Command::new(tool("etcdctl"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &client, "--cacert", &t.p("etcd/ca.crt"), "--cert", &t.p(cert), "--key"])
            .arg(key)
            .args(["--command-timeout", "5s", "--dial-timeout", "5s"])
            .args(args)
            .output()
            .unwrap()
    };
    let client_key = t.key_file("apiserver-etcd-client");
    let mut put = ctl("apiserver-etcd-client.crt", &client_key, &["put", "kaws", "works"]);
    for _ in 0..50 {
        if put.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        put = ctl("apiserver-etcd-client.crt", &client_key, &["put", "kaws", "works"]);
    }
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let get = ctl("apiserver-etcd-client.crt", &client_key, &["get", "kaws", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "works");
    // A client certificate from another CA is refused.
    let fp_key = t.key_file("front-proxy-client");
    let denied = ctl("front-proxy-client.crt", &fp_key, &["get", "kaws"]);
    assert!(!denied.status.success(), "etcd admitted a front-proxy client");
}

fn assert_refused_cluster(f: &Fixture, args: &[&str], code: i32, needle: &str) {
    let before = snapshot(&f.repo());
    let r = f.alice(args);
    assert_eq!(r.code, code, "{args:?}: {}", r.stderr);
    assert!(r.stderr.contains(needle), "{args:?}: expected {needle:?} in:\n{}", r.stderr);
    assert_eq!(before, snapshot(&f.repo()), "{args:?} changed the repository");
}

#[test]
fn invalid_specs_and_primaries_are_refused_before_anything_is_written() {
    let t = Pki::new();
    let f = &t.f;
    let base = ["cluster", "init", "dev", "--domain", "example.com", "--region", "eu-west-1"];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (with(&["--vpc-cidr", "10.0.0.0/33"]), 2, "not an IPv4 CIDR"),
        (with(&["--vpc-cidr", "banana"]), 2, "not an IPv4 CIDR"),
        (with(&["--admin-cidr", "300.1.1.1/24"]), 2, "not an IPv4 CIDR"),
        (with(&["--service-cidr", "10.0.0.0/16"]), 2, "overlaps"),
        (with(&["--pod-cidr", "10.96.0.0/16"]), 2, "overlaps"),
        (with(&["--masters", "2"]), 2, "must be odd"),
        (with(&["--vpc-cidr", "10.0.0.5/16"]), 2, "not a network address"),
        (with(&["--admin-cidr", "0.0.0.0/0"]), 2, "--allow-world-admin"),
        (with(&["--kubernetes-version", "1.20.0"]), 2, "kubernetes-version"),
        (with(&["--key-algorithm", "dsa"]), 2, "unknown key algorithm"),
        (with(&["--leaf-days", "4000"]), 2, "validity"),
        (with(&["--primary", "nobody"]), 3, "no administrator of that name"),
        (
            vec!["cluster", "init", "dev", "--domain", "Example.COM", "--region", "eu-west-1"],
            2,
            "not a lowercase DNS name",
        ),
        (
            vec!["cluster", "init", "dev", "--domain", "example.com\nx: y", "--region", "eu-west-1"],
            2,
            "not a lowercase DNS name",
        ),
        (vec!["cluster", "init", "dev", "--domain", "localhost", "--region", "eu-west-1"], 2, "two labels"),
        (vec!["cluster", "init", "dev", "--domain", "example.com", "--region", "eu-west-1;id"], 2, "not an AWS region"),
        (
            vec!["cluster", "init", "../dev", "--domain", "example.com", "--region", "eu-west-1"],
            3,
            "not an acceptable name",
        ),
        (
            vec!["cluster", "init", "Dev", "--domain", "example.com", "--region", "eu-west-1"],
            3,
            "not an acceptable name",
        ),
        (vec!["cluster", "init", CLUSTER, "--domain", "example.com", "--region", "eu-west-1"], 1, "exists already"),
    ];
    for (args, code, needle) in cases {
        assert_refused_cluster(f, &args, code, needle);
    }
    // A primary whose key is revoked or expired is refused.
    f.gpg.revoke(&t.bob.fpr);
    f.gpg.export(&[&t.bob.fpr], true, &f.file("bob-rev.asc"));
    assert_eq!(f.alice(&["key", "update", f.file("bob-rev.asc").to_str().unwrap()]).code, 0);
    assert_refused_cluster(f, &with(&["--primary", "bob"]), 3, "primary bob");
}

#[test]
fn an_interrupted_cluster_init_leaves_no_partial_cluster() {
    let f = Fixture::new();
    let args = ["cluster", "init", "dev", "--domain", "example.com", "--region", "eu-west-1"];
    let old_head = git(&f.repo(), &["rev-parse", "HEAD"]);
    let old = snapshot(&f.repo());
    let check = |what: &str| {
        // Any next command first finishes or discards the interrupted change.
        let r = f.alice(&["key", "list"]);
        assert_eq!(r.code, 0, "{what}: {}", r.stderr);
        let dir = f.repo().join("clusters/dev");
        if git(&f.repo(), &["rev-parse", "HEAD"]) == old_head {
            assert_eq!(snapshot(&f.repo()), old, "{what}: not the old state");
            assert!(!dir.exists(), "{what}: partial cluster directory");
            false
        } else {
            assert_eq!(git(&f.repo(), &["rev-parse", "HEAD~1"]), old_head, "{what}");
            assert_eq!(git(&f.repo(), &["status", "--porcelain", "--untracked-files=all"]), "", "{what}");
            let files = git(&f.repo(), &["ls-files", "clusters/dev"]).lines().count();
            // cluster.toml, primaries.toml, 17 certificates, 18 sealed keys, sa.pub,
            // the sealed bootstrap token and its record.
            assert_eq!(files, 2 + 17 + 18 + 1 + 2, "{what}: incomplete cluster");
            rewind(&f, &f.repo(), old_head.trim());
            true
        }
    };
    // Injected aborts at many steps, including mid-way through the files.
    let mut completed = 0;
    for step in [1, 2, 3, 4, 10, 20, 30, 39, 200] {
        let mut c = f.kaws_as_alice(&f.repo(), &args);
        c.env("KAWS_TEST_ABORT_AFTER", step.to_string());
        let _ = run(c);
        completed += check(&format!("abort after step {step}")) as u32;
    }
    assert!(completed >= 1);
    // Real SIGKILLs at spread-out delays.
    for delay_ms in [0u64, 5, 20, 50, 100, 200, 400] {
        let mut c = f.kaws_as_alice(&f.repo(), &args);
        let mut child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        check(&format!("SIGKILL after {delay_ms} ms"));
    }
}

#[test]
fn certs_reports_and_renew_reissues_with_the_same_keys() {
    let t = Pki::new();
    let f = &t.f;
    let r = f.alice(&["--output", "json", "cluster", "certs", CLUSTER]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["key_match_checked"], true);
    let certs = report["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 17);
    assert!(certs.iter().all(|c| c["status"] == "ok"), "{certs:?}");
    assert_eq!(f.alice(&["cluster", "certs", CLUSTER, "--expiring-within", "30"]).code, 0);
    let soon = f.alice(&["cluster", "certs", CLUSTER, "--expiring-within", "400"]);
    assert_eq!(soon.code, 1, "{}", soon.stderr);
    assert!(soon.stderr.contains("14 certificate(s) of prod expire within 400 days"), "{}", soon.stderr);

    // bob is no primary: the report says the key match was not checked, and renew refuses.
    let bob_sec = f.gpg.export_secret(&t.bob.fpr, "", &f.file("bob.sec"));
    let as_bob = |args: &[&str]| {
        let mut c = kaws(&f.gpg, &f.repo());
        c.arg("--secret-key").arg(&bob_sec).args(args);
        run(c)
    };
    let r = as_bob(&["cluster", "certs", CLUSTER]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("Key match not checked") && r.stdout.contains("not a primary"), "{}", r.stdout);
    let before = snapshot(&f.repo());
    let r = as_bob(&["cluster", "renew", CLUSTER, "--all"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not a primary"), "{}", r.stderr);
    assert_eq!(before, snapshot(&f.repo()));

    let pubkey = |c: &str| openssl(&["x509", "-in", c, "-pubkey", "-noout"]).stdout;
    let serial = |c: &str| openssl(&["x509", "-in", c, "-noout", "-serial"]).stdout;
    let (old_pub, old_serial) = (pubkey(&t.p("apiserver.crt")), serial(&t.p("apiserver.crt")));
    let r = f.alice(&["cluster", "renew", CLUSTER, "--within", "30"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("nothing to renew"), "{}", r.stdout);
    let r = f.alice(&["cluster", "renew", CLUSTER, "--all"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(pubkey(&t.p("apiserver.crt")), old_pub);
    assert_ne!(serial(&t.p("apiserver.crt")), old_serial);
    for (leaf, ca) in leaves() {
        let out = openssl(&["verify", "-CAfile", &t.p(&format!("{ca}.crt")), &t.p(&format!("{leaf}.crt"))]);
        assert!(out.status.success(), "{leaf} after renew");
    }
    assert_all_commits_verify(&f.repo(), &f.gpg);

    // A certificate swapped for another CA's fails the chain check (exit 3).
    std::fs::copy(t.pki().join("front-proxy-client.crt"), t.pki().join("apiserver.crt")).unwrap();
    git_commit_signed(&f.repo(), &f.gpg, &f.alice.fpr, "swap");
    let r = f.alice(&["cluster", "certs", CLUSTER]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stdout.contains("chain broken"), "{}", r.stdout);
}
