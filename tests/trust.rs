//! The trust matrix of a rotation. For every connection of a kubeadm
//! cluster, and every pair of instances that coexist while a phase rolls
//! out (settled/staged, staged/promoted, promoted/finished), a real TLS
//! handshake (`openssl s_server -Verify` against `openssl s_client
//! -verify_return_error`) or signature check (`openssl dgst`) with the
//! files each instance has at its phase: public files as SSM delivers them
//! to masters (`kaws cluster render --parameters`, the values apply writes)
//! and from a node's rendered user-data (`kaws cluster render`), keys as
//! SSM delivers them (the sealed files, opened by gpg), the
//! administrator's certificate from the repository. Every coexisting pair must work; after the rotation
//! finishes, every credential of the settled phase must fail.
//!
//! Kubelet certificates are signed in the cluster by the controller
//! manager (with the phase's ca.crt and ca.key); here openssl signs them
//! with those same files. Connections within one master (API server to its
//! local etcd, controller manager and scheduler to their local API server)
//! are checked within each phase.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// The files of one phase, laid out as on the instances: `m0/` and `m1/`
/// hold masters 0 and 1 as `/etc/kubernetes/pki` (plus bundles), `node/`
/// a node's kaws files, `admin/` the administrator's credential.
struct Phase {
    name: &'static str,
    dir: PathBuf,
    /// The CA pins a joiner of this phase accepts (kubeadm caCertHashes).
    pins: Vec<String>,
}

impl Phase {
    fn m(&self, i: u32, rel: &str) -> PathBuf {
        self.dir.join(format!("m{i}")).join(rel)
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

/// Captures what the instances of the repository's current phase have.
fn capture(f: &Fixture, name: &'static str) -> Phase {
    let dir = f.tmp.path().join(name);
    let pki = f.repo().join("clusters/prod/pki");
    let mut pins = Vec::new();
    let r = f.alice(&["cluster", "render", "prod", "--parameters"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let parameters: std::collections::BTreeMap<String, String> = serde_json::from_str(&r.stdout).unwrap();
    for i in 0..2u32 {
        let m = dir.join(format!("m{i}"));
        // What the agent installs under pki/: the masters' shared files and master i's own.
        for (name, content) in &parameters {
            let Some(rel) = name
                .strip_prefix("/kaws/prod/master/shared/pki/")
                .or_else(|| name.strip_prefix(&format!("/kaws/prod/master/{i}/pki/")))
            else {
                continue;
            };
            std::fs::create_dir_all(m.join(rel).parent().unwrap()).unwrap();
            std::fs::write(m.join(rel), content).unwrap();
        }
        assert!(m.join("etcd/server.crt").is_file() && m.join("sa-bundle.pub").is_file(), "{name}: master {i}");
        std::fs::create_dir_all(m.join("etcd")).unwrap();
        // The keys SSM delivers to master i, opened as kaws seals them.
        let mut keys: Vec<(String, String)> =
            SIGNING_KEYS.iter().map(|k| (format!("{k}.key.pgp"), format!("{k}.key"))).collect();
        keys.push((format!("etcd/server-{i}.key.pgp"), "etcd/server.key".into()));
        keys.push((format!("etcd/peer-{i}.key.pgp"), "etcd/peer.key".into()));
        for (sealed, plain) in keys {
            write_secret(&m.join(plain), &f.gpg.decrypt(&pki.join(&sealed)).expect("a primary opens it"));
        }
    }
    let node_data = render(f, "prod", &["node"]);
    let node = dir.join("node");
    std::fs::create_dir_all(&node).unwrap();
    for (path, content) in write_files(&node_data) {
        if path == "/etc/kubernetes/kaws/pki/ca-bundle.crt" {
            std::fs::write(node.join("ca-bundle.crt"), &content).unwrap();
        }
        if path == "/etc/kubernetes/kaws/kubeadm.yaml" {
            let doc: serde_yaml::Value = serde_yaml::from_str(content.split("\n---").next().unwrap()).unwrap();
            for h in doc["discovery"]["bootstrapToken"]["caCertHashes"].as_sequence().unwrap() {
                pins.push(h.as_str().unwrap().to_owned());
            }
        }
    }
    assert!(node.join("ca-bundle.crt").is_file(), "{name}: the node's user-data carries no CA bundle");
    let admin = dir.join("admin");
    std::fs::create_dir_all(&admin).unwrap();
    std::fs::copy(f.repo().join("clusters/prod/admins/alice.crt"), admin.join("alice.crt")).unwrap();
    write_secret(
        &admin.join("alice.key"),
        &f.gpg.decrypt(&f.repo().join("clusters/prod/admins/alice.key.pgp")).unwrap(),
    );
    std::fs::copy(pki.join("super-admin.crt"), admin.join("super-admin.crt")).unwrap();
    write_secret(&admin.join("super-admin.key"), &f.gpg.decrypt(&pki.join("super-admin.key.pgp")).unwrap());
    let phase = Phase { name, dir, pins };
    kubelet_certs(&phase);
    phase
}

/// The private keys every master gets (render::SHARED_MASTER_KEYS, but for
/// the controller manager's and scheduler's, which live in kubeconfigs).
const SIGNING_KEYS: &[&str] = &[
    "ca",
    "sa",
    "front-proxy-ca",
    "etcd/ca",
    "apiserver",
    "apiserver-kubelet-client",
    "front-proxy-client",
    "apiserver-etcd-client",
    "etcd/healthcheck-client",
    "controller-manager",
    "scheduler",
];

/// A kubelet's client and serving certificates, as the phase's controller
/// manager signs them (ca.crt and ca.key of master 0).
fn kubelet_certs(p: &Phase) {
    let node = p.p("node");
    for (kind, eku, san) in [("client", "clientAuth", None), ("serving", "serverAuth", Some("IP:127.0.0.1"))] {
        let key = node.join(format!("kubelet-{kind}.key"));
        openssl_ec_key(&key);
        let csr = node.join(format!("kubelet-{kind}.csr"));
        let subj = "/O=system:nodes/CN=system:node:ip-10-0-1-5.eu-west-1.compute.internal";
        assert!(openssl(&["req", "-new", "-key", s(&key), "-subj", subj, "-out", s(&csr)]).status.success());
        let ext = node.join(format!("kubelet-{kind}.ext"));
        let mut text = format!("extendedKeyUsage={eku}\nkeyUsage=digitalSignature\n");
        if let Some(san) = san {
            text += &format!("subjectAltName={san}\n");
        }
        std::fs::write(&ext, text).unwrap();
        let out = openssl(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&p.m(0, "ca.crt")),
            "-CAkey",
            s(&p.m(0, "ca.key")),
            "-days",
            "1",
            "-extfile",
            s(&ext),
            "-out",
            s(&node.join(format!("kubelet-{kind}.crt"))),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One side of a TLS connection: certificate, key, and the CAs it trusts.
struct End {
    cert: PathBuf,
    key: PathBuf,
    trust: PathBuf,
}

fn end(cert: PathBuf, key: PathBuf, trust: PathBuf) -> End {
    End { cert, key, trust }
}

/// A real mutual-TLS handshake on loopback: the server demands a client
/// certificate that chains to its trust; the client checks the server's
/// chain to its own trust and the name 127.0.0.1. True when an HTTP answer
/// came back through it.
fn handshake(server: &End, client: &End) -> bool {
    let port = free_port();
    let _srv = Child(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
            .args(["-cert", s(&server.cert), "-key", s(&server.key), "-CAfile", s(&server.trust)])
            .args(["-Verify", "2", "-verify_return_error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let mut c = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-cert", s(&client.cert), "-key", s(&client.key), "-CAfile", s(&client.trust)])
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let _ = c.stdin.take().unwrap().write_all(b"GET / HTTP/1.0\r\n\r\n");
    }
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("HTTP/1.0 200 ok")
}

/// A service-account token's signature: made with `signer`'s sa.key,
/// checked against each key of `verifier`'s sa-bundle.pub (the API server
/// accepts a token any of its keys verifies).
fn sa_token_accepted(signer: &Phase, verifier: &Phase, scratch: &Path) -> bool {
    let data = scratch.join("token-claims");
    std::fs::write(&data, b"{\"iss\":\"https://kubernetes.default.svc.cluster.local\",\"sub\":\"x\"}").unwrap();
    let sig = scratch.join(format!("token-{}.sig", signer.name));
    let out = openssl(&["dgst", "-sha256", "-sign", s(&signer.m(0, "sa.key")), "-out", s(&sig), s(&data)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = split_bundle(&verifier.m(0, "sa-bundle.pub"), &scratch.join(format!("sa-{}", verifier.name)));
    keys.iter()
        .any(|key| openssl(&["dgst", "-sha256", "-verify", s(key), "-signature", s(&sig), s(&data)]).status.success())
}

/// Each PEM block of `bundle`, in a file of its own named after `prefix`.
fn split_bundle(bundle: &Path, prefix: &Path) -> Vec<PathBuf> {
    let mut blocks = vec![String::new()];
    for line in std::fs::read_to_string(bundle).unwrap().lines() {
        let last = blocks.last_mut().unwrap();
        last.push_str(line);
        last.push('\n');
        if line.starts_with("-----END ") {
            blocks.push(String::new());
        }
    }
    blocks.pop();
    blocks
        .iter()
        .enumerate()
        .map(|(n, block)| {
            let one = prefix.with_extension(format!("{n}.pem"));
            std::fs::write(&one, block).unwrap();
            one
        })
        .collect()
}

/// The pins of every certificate of a bundle.
fn bundle_pins(bundle: &Path, scratch: &Path) -> Vec<String> {
    split_bundle(bundle, &scratch.join("pin")).iter().map(|one| pin(one)).collect()
}

/// The SHA-256 pin of a certificate's key, as kubeadm computes it.
fn pin(cert: &Path) -> String {
    let pubkey = openssl(&["x509", "-pubkey", "-noout", "-in", s(cert)]).stdout;
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), pubkey).unwrap();
    let der = openssl(&["pkey", "-pubin", "-in", s(tmp.path()), "-outform", "der"]).stdout;
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(&der);
    format!("sha256:{}", hasher.finish().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Every connection that crosses instances, from a client of phase `c` to a
/// server of phase `x`: (what, whether it works).
fn across(x: &Phase, c: &Phase, scratch: &Path) -> Vec<(String, bool)> {
    let node = |p: &Phase, rel: &str| p.p(&format!("node/{rel}"));
    let api = |p: &Phase| end(p.m(0, "apiserver.crt"), p.m(0, "apiserver.key"), p.m(0, "ca-bundle.crt"));
    let out = vec![
        (
            "kubelet -> API server (through the load balancer)",
            handshake(
                &api(x),
                &end(node(c, "kubelet-client.crt"), node(c, "kubelet-client.key"), node(c, "ca-bundle.crt")),
            ),
        ),
        (
            "API server -> kubelet (logs, exec)",
            handshake(
                &end(node(x, "kubelet-serving.crt"), node(x, "kubelet-serving.key"), node(x, "ca-bundle.crt")),
                &end(
                    c.m(0, "apiserver-kubelet-client.crt"),
                    c.m(0, "apiserver-kubelet-client.key"),
                    c.m(0, "ca-bundle.crt"),
                ),
            ),
        ),
        (
            "etcd peer -> etcd peer",
            handshake(
                &end(x.m(0, "etcd/peer.crt"), x.m(0, "etcd/peer.key"), x.m(0, "etcd/ca-bundle.crt")),
                &end(c.m(1, "etcd/peer.crt"), c.m(1, "etcd/peer.key"), c.m(1, "etcd/ca-bundle.crt")),
            ),
        ),
        (
            "administrator (kaws admin credential) -> API server",
            handshake(&api(x), &end(c.p("admin/alice.crt"), c.p("admin/alice.key"), c.m(0, "ca-bundle.crt"))),
        ),
        (
            "break-glass super-admin -> API server",
            handshake(
                &api(x),
                &end(c.p("admin/super-admin.crt"), c.p("admin/super-admin.key"), c.m(0, "ca-bundle.crt")),
            ),
        ),
        (
            "front proxy (API server -> aggregated API server)",
            handshake(
                &end(x.m(0, "apiserver.crt"), x.m(0, "apiserver.key"), x.m(0, "front-proxy-ca-bundle.crt")),
                &end(c.m(0, "front-proxy-client.crt"), c.m(0, "front-proxy-client.key"), c.m(0, "ca-bundle.crt")),
            ),
        ),
        ("service-account token", sa_token_accepted(c, x, scratch)),
        // cluster-info holds the CA bundle of the last master launched
        // (master.sh publish_trust); kubeadm accepts any pinned certificate
        // in it, then trusts all of it for the API.
        (
            "a joiner's CA pin against cluster-info",
            bundle_pins(&x.m(0, "ca-bundle.crt"), scratch).iter().any(|p| c.pins.contains(p)),
        ),
        (
            "a joiner reaches the API server through cluster-info's CA",
            handshake(
                &api(x),
                &end(node(c, "kubelet-client.crt"), node(c, "kubelet-client.key"), x.m(0, "ca-bundle.crt")),
            ),
        ),
    ];
    out.into_iter().map(|(w, ok)| (format!("{w} [{} client, {} server]", c.name, x.name), ok)).collect()
}

/// Connections within one master, at one phase.
fn within(p: &Phase) -> Vec<(String, bool)> {
    let api = end(p.m(0, "apiserver.crt"), p.m(0, "apiserver.key"), p.m(0, "ca-bundle.crt"));
    let etcd = end(p.m(0, "etcd/server.crt"), p.m(0, "etcd/server.key"), p.m(0, "etcd/ca-bundle.crt"));
    let client =
        |name: &str, trust: &str| end(p.m(0, &format!("{name}.crt")), p.m(0, &format!("{name}.key")), p.m(0, trust));
    vec![
        ("API server -> etcd", handshake(&etcd, &client("apiserver-etcd-client", "etcd/ca-bundle.crt"))),
        ("etcd health check -> etcd", handshake(&etcd, &client("etcd/healthcheck-client", "etcd/ca-bundle.crt"))),
        // kubeadm's kubeconfigs embed ca.crt (it insists on it).
        ("controller manager -> API server", handshake(&api, &client("controller-manager", "ca.crt"))),
        ("scheduler -> API server", handshake(&api, &client("scheduler", "ca.crt"))),
    ]
    .into_iter()
    .map(|(w, ok)| (format!("{w} [{}]", p.name), ok))
    .collect()
}

#[test]
fn every_coexisting_pair_of_phases_connects_and_finish_refuses_every_old_credential() {
    let f = Fixture::new();
    // bob, a primary, is removed: the rotation is what revokes him.
    let bob = add_admin(&f, "bob");
    init_cluster_with(&f, &["--masters", "3", "--primary", "alice", "--primary", "bob"]);
    let bob_only = f.gpg.with_only(&bob.fpr);
    let sealed = || -> Vec<PathBuf> {
        let out = git(&f.repo(), &["ls-files", "clusters/prod"]);
        out.lines().filter(|l| l.ends_with(".pgp") && !l.contains("/admins/")).map(|l| f.repo().join(l)).collect()
    };
    assert!(sealed().iter().all(|s| bob_only.decrypt(s).is_ok()), "bob reads every key before");
    assert_eq!(f.alice(&["admin", "create", "prod", "alice"]).code, 0);
    let r = f.alice(&["admin", "sign", "prod", "alice"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let scratch = f.tmp.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    let mut phases = vec![capture(&f, "settled")];
    for (step, name) in [("--rotate", "staged"), ("--promote", "promoted"), ("--finish-rotation", "finished")] {
        let mut args = vec!["cluster", "reencrypt", "prod", step];
        if step == "--rotate" {
            args.extend(["--primary", "alice"]);
        }
        let r = f.alice(&args);
        assert_eq!(r.code, 0, "{step}: {}", r.stderr);
        phases.push(capture(&f, name));
    }

    let mut failures = Vec::new();
    let mut checked = 0;
    for p in &phases {
        for (what, ok) in within(p) {
            checked += 1;
            if !ok {
                failures.push(what);
            }
        }
    }
    for pair in phases.windows(2) {
        for (x, c) in [(&pair[0], &pair[1]), (&pair[1], &pair[0]), (&pair[0], &pair[0]), (&pair[1], &pair[1])] {
            for (what, ok) in across(x, c, &scratch) {
                checked += 1;
                if !ok {
                    failures.push(what);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} connections fail:\n{}", failures.len(), failures.join("\n"));

    // After finish, nothing of the settled phase is trusted, either way.
    let (old, done) = (&phases[0], &phases[3]);
    let still: Vec<String> = across(done, old, &scratch)
        .into_iter()
        .chain(across(old, done, &scratch))
        .filter(|(_, ok)| *ok)
        .map(|(w, _)| w)
        .collect();
    assert!(still.is_empty(), "after finish these still work with the settled phase's files:\n{}", still.join("\n"));
    // bob opens nothing the repository holds now, and everything he could
    // open before (the settled phase's keys, above) is refused.
    for s in sealed() {
        assert!(bob_only.decrypt(&s).is_err(), "bob opens {}", s.display());
    }
    // The finished phase's keys are none of the settled phase's.
    for k in SIGNING_KEYS {
        let key = |p: &Phase| std::fs::read(p.m(0, &format!("{k}.key"))).unwrap();
        assert_ne!(key(old), key(done), "{k}.key survived the rotation");
    }
}

/// kubectl (real) through the administrator's own kubeconfig and exec
/// credential (`kaws admin install`, which runs `kaws admin credential`)
/// against API server stand-ins of each phase (tests/fixtures/apiserver.py,
/// with that phase's serving certificate and bundle): every pair that
/// coexists while a phase rolls out is accepted, re-installing after
/// `--rotate` and after `--finish-rotation` as kaws says; the
/// pre-rotation certificate is refused once the rotation finished.
#[test]
fn kubectl_with_the_administrators_exec_credential_works_through_every_phase() {
    let f = Fixture::new();
    init_cluster_with(&f, &["--masters", "1"]);
    assert_eq!(f.alice(&["admin", "create", "prod", "alice"]).code, 0);
    assert_eq!(f.alice(&["admin", "sign", "prod", "alice"]).code, 0);
    let tmp = f.tmp.path();
    let pki = f.repo().join("clusters/prod/pki");
    // An API server of the repository's current phase.
    let serve = |phase: &str| -> (Child, u16) {
        let dir = tmp.join(format!("{phase}-server"));
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["apiserver.crt", "apiserver.key.pgp"] {
            std::fs::copy(pki.join(file), dir.join(file)).unwrap();
        }
        let bundle = if pki.join("ca-bundle.crt").exists() { pki.join("ca-bundle.crt") } else { pki.join("ca.crt") };
        std::fs::copy(bundle, dir.join("trust.crt")).unwrap();
        apiserver(&f.gpg, &dir, &dir, &dir.join("trust.crt"))
    };
    let install = |name: &str| -> PathBuf {
        let kc = tmp.join(format!("{name}.kubeconfig"));
        let r = f.alice(&["admin", "install", "prod", "alice", "--kubeconfig", kc.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        kc
    };
    // kubectl with `kc` (its exec credential as the repository stands now) against `port`.
    let works = |kc: &Path, port: u16| -> bool {
        let copy = tmp.join(format!("{}-{port}", kc.file_name().unwrap().to_str().unwrap()));
        std::fs::copy(kc, &copy).unwrap();
        let set = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&copy)
            .args(["config", "set-cluster", "kaws-prod-alice", &format!("--server=https://127.0.0.1:{port}")])
            .output()
            .unwrap();
        assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&copy)
            .args(["--context", "kaws-prod-alice", "get", "--raw", "/version"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let step = |args: &[&str]| {
        let r = f.alice(args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    };

    let (_s0, settled) = serve("settled");
    let k0 = install("k0");
    assert!(works(&k0, settled));
    let old_cert = tmp.join("alice-old.crt");
    std::fs::copy(f.repo().join("clusters/prod/admins/alice.crt"), &old_cert).unwrap();
    let old_key = tmp.join("alice-old.key");
    write_secret(&old_key, &f.gpg.decrypt(&f.repo().join("clusters/prod/admins/alice.key.pgp")).unwrap());

    step(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]);
    let (_s1, staged) = serve("staged");
    assert!(works(&k0, settled) && works(&k0, staged), "the kubeconfig of before, once staged");
    let k1 = install("k1");
    assert!(works(&k1, settled) && works(&k1, staged), "re-installed after --rotate");

    step(&["cluster", "reencrypt", "prod", "--promote"]);
    let (_s2, promoted) = serve("promoted");
    assert!(works(&k1, staged) && works(&k1, promoted), "staged and promoted servers, the new certificate");
    assert!(!works(&k0, promoted), "a kubeconfig that trusts the old CA alone meets a new-CA server");

    step(&["cluster", "reencrypt", "prod", "--finish-rotation"]);
    let (_s3, finished) = serve("finished");
    assert!(works(&k1, promoted) && works(&k1, finished), "promoted and finished servers");
    let k3 = install("k3");
    assert!(works(&k3, promoted) && works(&k3, finished), "re-installed after --finish-rotation");
    // Why re-install: the new kubeconfig no longer trusts a server of the
    // retired CA (whose key the removed could hold).
    assert!(!works(&k3, settled), "a kubeconfig re-installed after finish still trusts the retired CA");
    let ca = tmp.join("finished-server/trust.crt");
    assert!(!kubectl_ok(&kubeconfig(tmp, "old", finished, &ca, &old_cert, &old_key)), "the pre-rotation certificate");
    // Control: the current certificate through the same CA file is taken.
    let new_cert = f.repo().join("clusters/prod/admins/alice.crt");
    assert!(kubectl_ok(&kubeconfig(tmp, "new", finished, &ca, &new_cert, &old_key)), "the current certificate");
    // The same kubeconfig still works where that certificate was valid:
    // the refusal above is the finished server's.
    let then = tmp.join("settled-server/trust.crt");
    assert!(kubectl_ok(&kubeconfig(tmp, "old-then", settled, &then, &old_cert, &old_key)));
}
