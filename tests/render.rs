//! `kaws cluster render`: user-data checked by `cloud-init schema`,
//! `shellcheck`, a YAML parser and openssl, and scanned for secrets with the
//! real decrypted key material.

mod common;

use std::process::Command;

use common::*;

fn cluster(f: &Fixture, name: &str, masters: &str) {
    let r = f.alice(&[
        "cluster",
        "init",
        name,
        "--domain",
        "example.com",
        "--region",
        "eu-west-1",
        "--masters",
        masters,
        "--admin-cidr",
        "203.0.113.0/24",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The base64 body lines of every PEM private key and the bootstrap token, decrypted by gpg.
fn secrets(f: &Fixture, name: &str) -> Vec<String> {
    let dir = f.repo().join("clusters").join(name);
    let listed = git(&f.repo(), &["ls-files", dir.to_str().unwrap()]);
    let mut out = Vec::new();
    for file in listed.lines().filter(|l| l.ends_with(".pgp")) {
        let plain = String::from_utf8(f.gpg.decrypt(&f.repo().join(file)).unwrap()).unwrap();
        if file.ends_with("bootstrap-token.pgp") {
            assert_eq!(plain.len(), 23);
            out.push(plain.clone());
            out.push(plain[7..].to_owned());
        } else {
            out.extend(plain.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16).map(str::to_owned));
        }
    }
    assert!(out.len() > 20);
    out
}

#[test]
fn every_role_passes_cloud_init_shellcheck_and_the_size_limit_and_carries_no_secret() {
    let f = Fixture::new();
    cluster(&f, "one", "1");
    cluster(&f, "three", "3");
    let scratch = f.tmp.path();
    for (name, masters) in [("one", 1), ("three", 3)] {
        let secrets = secrets(&f, name);
        let mut roles: Vec<Vec<String>> = vec![vec!["bastion".into()], vec!["node".into()]];
        for i in 0..masters {
            roles.push(vec!["master".into(), "--index".into(), i.to_string()]);
        }
        for role in roles {
            let role: Vec<&str> = role.iter().map(String::as_str).collect();
            let what = format!("{name} {role:?}");
            let text = render(&f, name, &role);
            assert!(text.starts_with("#cloud-config\n"), "{what}");
            let file = scratch.join(format!("{name}-{}.yaml", role.join("-")));
            std::fs::write(&file, &text).unwrap();
            let schema = Command::new("cloud-init").args(["schema", "--config-file"]).arg(&file).output().unwrap();
            assert!(
                schema.status.success(),
                "{what}: {}{}",
                String::from_utf8_lossy(&schema.stdout),
                String::from_utf8_lossy(&schema.stderr)
            );

            for (path, content) in write_files(&text) {
                if content.starts_with("#!") {
                    let script = scratch.join("script.sh");
                    std::fs::write(&script, &content).unwrap();
                    let sc = Command::new("shellcheck").arg(&script).output().unwrap();
                    assert!(sc.status.success(), "{what} {path}: {}", String::from_utf8_lossy(&sc.stdout));
                    assert!(content.contains("set -euo pipefail"), "{what} {path}");
                }
            }
            // What EC2 gets fits its 16 KiB limit (gzip when needed).
            let out = scratch.join("user-data.bin");
            let mut args = vec!["cluster", "render", name, "--out", out.to_str().unwrap(), "--role"];
            args.extend(&role);
            let r = f.alice(&args);
            assert_eq!(r.code, 0, "{what}: {}", r.stderr);
            assert!(std::fs::metadata(&out).unwrap().len() <= 16 * 1024, "{what}");

            assert!(!text.contains("PRIVATE KEY"), "{what}");
            for s in &secrets {
                assert!(!text.contains(s.as_str()), "{what}: user-data holds secret material");
            }
            if role[0] != "bastion" {
                assert!(text.contains("169.254.169.254/latest/api/token"), "{what}: IMDSv2 token first");
                assert!(text.contains("fetch_secret"), "{what}: secrets come from SSM at boot");
            }
        }
    }
}

fn kubeadm_docs(user_data: &str) -> Vec<serde_yaml::Value> {
    let (_, content) =
        write_files(user_data).into_iter().find(|(p, _)| p == "/etc/kubernetes/kaws/kubeadm.yaml").unwrap();
    serde_yaml::Deserializer::from_str(&content).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn kubeadm_configuration_and_the_ca_hash_match_openssl() {
    let f = Fixture::new();
    cluster(&f, "prod", "3");
    let ca = f.repo().join("clusters/prod/pki/ca.crt");
    // openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum
    let pubkey = openssl(&["x509", "-pubkey", "-noout", "-in", ca.to_str().unwrap()]).stdout;
    let pem = f.tmp.path().join("ca.pub");
    std::fs::write(&pem, pubkey).unwrap();
    let der = openssl(&["pkey", "-pubin", "-in", pem.to_str().unwrap(), "-outform", "der"]).stdout;
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(&der).unwrap();
    let hash = String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()[..64].to_owned();

    let init = kubeadm_docs(&render(&f, "prod", &["master", "--index", "0"]));
    let cc = kind(&init, "ClusterConfiguration");
    assert_eq!(cc["controlPlaneEndpoint"], "api.prod.example.com:6443");
    assert_eq!(cc["networking"]["serviceSubnet"], "10.96.0.0/12");
    assert_eq!(cc["networking"]["podSubnet"], "192.168.0.0/16");
    assert_eq!(cc["networking"]["dnsDomain"], "cluster.local");
    assert_eq!(cc["certificatesDir"], "/etc/kubernetes/pki");
    assert_eq!(cc["kubernetesVersion"], "v1.34.1");
    let args: Vec<(String, String)> = cc["apiServer"]["extraArgs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_owned(), a["value"].as_str().unwrap().to_owned()))
        .collect();
    assert!(args.contains(&("authorization-mode".into(), "Node,RBAC".into())));
    assert!(args.iter().any(|(n, _)| n == "audit-policy-file"));
    let ic = kind(&init, "InitConfiguration");
    assert_eq!(ic["localAPIEndpoint"]["advertiseAddress"], "10.0.0.10");
    assert_eq!(ic["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(kind(&init, "KubeletConfiguration")["serverTLSBootstrap"], true);

    let join = kubeadm_docs(&render(&f, "prod", &["master", "--index", "2"]));
    let jc = kind(&join, "JoinConfiguration");
    assert_eq!(jc["controlPlane"]["localAPIEndpoint"]["advertiseAddress"], "10.0.64.10");
    assert_eq!(jc["discovery"]["bootstrapToken"]["caCertHashes"][0], format!("sha256:{hash}"));
    let node = kubeadm_docs(&render(&f, "prod", &["node"]));
    assert_eq!(
        kind(&node, "JoinConfiguration")["discovery"]["bootstrapToken"]["caCertHashes"][0],
        format!("sha256:{hash}")
    );
    assert!(kind(&node, "JoinConfiguration").get("controlPlane").is_none());

    // A load balancer's name as the endpoint (known after provisioning).
    let r = f.alice(&[
        "cluster",
        "render",
        "prod",
        "--role",
        "node",
        "--endpoint",
        "kaws-prod-123.elb.eu-west-1.amazonaws.com",
    ]);
    assert!(r.stdout.contains("kaws-prod-123.elb.eu-west-1.amazonaws.com:6443"), "{}", r.stderr);
}

#[test]
fn hostile_values_never_reach_a_template() {
    let f = Fixture::new();
    cluster(&f, "prod", "1");
    for endpoint in ["x\"; rm -rf /", "a b", "$(id).example.com", "EXAMPLE.com", "x\n- evil"] {
        let r = f.alice(&["cluster", "render", "prod", "--role", "node", "--endpoint", endpoint]);
        assert_eq!(r.code, 2, "{endpoint:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
    let r = f.alice(&["cluster", "render", "prod", "--role", "master", "--index", "1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // A spec edited to carry YAML and shell (committed by an administrator)
    // is refused when read, before any rendering.
    let spec = f.repo().join("clusters/prod/cluster.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    for (from, to) in [
        ("domain = \"example.com\"", "domain = \"example.com\\n  evil: true\""),
        ("region = \"eu-west-1\"", "region = \"eu-west-1$(id)\""),
        ("name = \"prod\"", "name = \"prod\\\"; reboot; \\\"\""),
    ] {
        std::fs::write(&spec, text.replace(from, to)).unwrap();
        git_commit_signed(&f.repo(), &f.gpg, &f.alice.fpr, "hostile spec");
        let r = f.alice(&["cluster", "render", "prod", "--role", "node"]);
        assert_eq!(r.code, 3, "{to}: {}", r.stderr);
        assert!(r.stderr.contains("cluster.toml is not valid"), "{}", r.stderr);
        assert!(r.stdout.is_empty());
        rewind(&f, &f.repo(), "HEAD~1");
    }
}

#[test]
fn the_bootstrap_token_is_sealed_and_renewable() {
    let f = Fixture::new();
    cluster(&f, "prod", "1");
    let token =
        String::from_utf8(f.gpg.decrypt(&f.repo().join("clusters/prod/secrets/bootstrap-token.pgp")).unwrap()).unwrap();
    let shape = |t: &str| {
        let (id, secret) = t.split_once('.').unwrap();
        id.len() == 6
            && secret.len() == 16
            && t.bytes().all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    assert!(shape(&token), "{token}");
    let r = f.alice(&["cluster", "token", "prod"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("(24 hours left)"), "{}", r.stdout);
    let r = f.alice(&["cluster", "token", "prod", "--renew", "--ttl-hours", "72"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&format!("bootstrap-token-{}", &token[..6])), "{}", r.stdout);
    assert!(!r.stdout.contains(&token[7..]), "the token's secret half was printed");
    assert!(f.alice(&["cluster", "token", "prod"]).stdout.contains("(72 hours left)"));
    let node = render(&f, "prod", &["node"]);
    assert!(!node.contains(&token[7..]));
    // The kubeadm token expires when the record says, as an absolute time:
    // the user-data does not change as the hours pass.
    let record = std::fs::read_to_string(f.repo().join("clusters/prod/bootstrap-token.toml")).unwrap();
    let expires: i64 = record
        .lines()
        .find_map(|l| l.strip_prefix("expires = "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{record}"));
    let date = Command::new("date").args(["-u", "-d", &format!("@{expires}"), "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    let date = String::from_utf8(date.stdout).unwrap();
    let master = render(&f, "prod", &["master", "--index", "0"]);
    assert!(master.contains(&format!("expires: \"{}\"", date.trim())), "the kubeadm token follows the record");
    assert_eq!(master, render(&f, "prod", &["master", "--index", "0"]));
}

/// Runs tests/fixtures/kubeadm_certs.py (kubeadm's checks of pre-placed
/// certificates, replicated) for master `index`: exit code and output.
fn kubeadm_check(f: &Fixture, name: &str, index: u32, etcd_of: u32) -> (bool, String) {
    let dir = f.tmp.path();
    let own = dir.join(format!("kubeadm-{name}-{index}.yaml"));
    let first = dir.join(format!("kubeadm-{name}-0.yaml"));
    for (i, path) in [(index, &own), (0, &first)] {
        let text = render(f, name, &["master", "--index", &i.to_string()]);
        let (_, content) =
            write_files(&text).into_iter().find(|(p, _)| p == "/etc/kubernetes/kaws/kubeadm.yaml").unwrap();
        std::fs::write(path, content).unwrap();
    }
    let pki = f.repo().join("clusters").join(name).join("pki");
    let p = |rel: &str| pki.join(rel).to_str().unwrap().to_owned();
    let pairs = [
        format!("apiserver={}:{}", p("apiserver.crt"), p("ca.crt")),
        format!("etcd/server={}:{}", p(&format!("etcd/server-{etcd_of}.crt")), p("etcd/ca.crt")),
        format!("etcd/peer={}:{}", p(&format!("etcd/peer-{etcd_of}.crt")), p("etcd/ca.crt")),
        format!("apiserver-kubelet-client={}:{}", p("apiserver-kubelet-client.crt"), p("ca.crt")),
        format!("front-proxy-client={}:{}", p("front-proxy-client.crt"), p("front-proxy-ca.crt")),
        format!("apiserver-etcd-client={}:{}", p("apiserver-etcd-client.crt"), p("etcd/ca.crt")),
        format!("etcd/healthcheck-client={}:{}", p("etcd/healthcheck-client.crt"), p("etcd/ca.crt")),
    ];
    let out = Command::new(tool("kaws-python"))
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubeadm_certs.py"))
        .arg(&own)
        .arg(&first)
        .args(&pairs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn kubeadm_accepts_every_masters_pre_placed_certificates() {
    let f = Fixture::new();
    cluster(&f, "prod", "3");
    for i in 0..3 {
        let (ok, out) = kubeadm_check(&f, "prod", i, i);
        assert!(ok, "master {i}: {out}");
    }
    // The checker refuses what kubeadm refuses: another master's etcd certificate.
    let (ok, out) = kubeadm_check(&f, "prod", 0, 1);
    assert!(!ok && out.contains("etcd/server") && out.contains("10.0.0.10"), "{out}");
    // Master 0 joins when a cluster answers (it was replaced): its join
    // configuration names it and its address exactly as its init one does.
    let text = render(&f, "prod", &["master", "--index", "0"]);
    let all = write_files(&text);
    let join =
        &all.iter().find(|(p, _)| p == "/etc/kubernetes/kaws/kubeadm-join.yaml").expect("a join configuration").1;
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(join).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let jc = kind(&docs, "JoinConfiguration");
    assert_eq!(jc["controlPlane"]["localAPIEndpoint"]["advertiseAddress"], "10.0.0.10");
    assert_eq!(jc["nodeRegistration"]["name"], "ip-10-0-0-10.eu-west-1.compute.internal");
    // The bootstrap is a unit that retries until it succeeds.
    let unit = &all.iter().find(|(p, _)| p == "/etc/systemd/system/kaws-bootstrap.service").expect("the unit").1;
    assert!(unit.contains("Restart=on-failure") && unit.contains("ExecStart=/usr/local/sbin/kaws-bootstrap.sh"));
    assert!(text.contains("[systemctl, enable, --now, --no-block, kaws-bootstrap.service]"), "{text}");
    // Node names are the instances' private DNS names, as the AWS cloud provider expects.
    let init = kubeadm_docs(&render(&f, "prod", &["master", "--index", "0"]));
    assert_eq!(kind(&init, "InitConfiguration")["nodeRegistration"]["name"], "ip-10-0-0-10.eu-west-1.compute.internal");
}
