//! The boot harness (tests/fixtures/boot/harness.py): the real user-data
//! that `kaws cluster apply` gave each instance in the AWS emulator, run as
//! it runs on the instances, each in its own network namespace with its
//! real private IP on an isolated test bridge, with real etcd, real SSM and
//! EC2 (moto) through the real AWS CLI and a loopback IMDSv2. What cannot
//! run here is a SIMULATION, named so in sim/: kubeadm, the kubelet, the
//! API server (backed by the real etcd), dnf, systemd, the disks, the
//! load balancer, the VPC's DNS and the Internet. See the README.

mod common;

use std::process::Command;

use common::*;

/// The booted cluster's name and region: neither the other tests' (`prod`,
/// eu-west-1) nor the quickstart's, so a harness or script that assumes a
/// literal name or region fails here.
const CLUSTER: &str = "edge";
const REGION: &str = "us-west-2";

/// Runs `scenario` of the harness on a new cluster (3 masters, 2 nodes);
/// returns its report, or fails with what the harness saw.
fn boot(scenario: &str, extra: &[&str]) -> serde_json::Value {
    let f = Fixture::new();
    init_cluster_named(&f, CLUSTER, REGION, &["--admin-cidr", "203.0.113.0/24", "--masters", "3", "--nodes", "2"]);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    // KAWS_BOOT_KEEP=1 keeps the harness's directory (instances' disks, logs) for a look.
    if std::env::var_os("KAWS_BOOT_KEEP").is_some() {
        eprintln!("boot harness directory kept: {}", tmp.keep().display());
    }
    let python = tool("kaws-python");
    let cache = python.parent().and_then(|p| p.parent()).unwrap().to_path_buf();
    let like = f.kaws_as_alice(&f.repo(), &[]);
    let mut c = Command::new("unshare");
    c.arg("--net")
        .arg("--")
        .arg(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/boot/harness.py"))
        .arg(scenario)
        .arg("--work")
        .arg(&work)
        .arg("--repo")
        .arg(f.repo())
        .arg("--kaws")
        .arg(env!("CARGO_BIN_EXE_kaws"))
        .arg("--secret-key")
        .arg(&f.alice_secret)
        .arg("--cluster")
        .arg(CLUSTER)
        .args(extra)
        .env("KAWS_CACHE", &cache);
    for (k, v) in like.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.output().expect("the harness runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = std::fs::read(work.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("the harness wrote no report:\n{stderr}"));
    assert!(out.status.success() && report["ok"] == true, "{}\n{stderr}", report["failure"].as_str().unwrap_or(""));
    report
}

#[test]
fn all_instances_at_once_with_a_slow_first_master_make_one_cluster() {
    let r = boot("concurrent", &[]);
    assert_eq!(r["members"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["nodes"].as_array().unwrap().len(), 5, "{r}");
}

#[test]
fn a_reboot_mid_bootstrap_finishes_without_repeating_steps() {
    let r = boot("reboot", &[]);
    assert_eq!(r["reboots"]["instance/master-1"], 2, "{r}");
}

#[test]
fn ssm_answering_5xx_heals() {
    boot("ssm-faults", &["--ssm-faults", "2"]);
}

#[test]
fn a_replaced_first_master_joins_and_makes_no_second_cluster() {
    boot("replace-master-0", &[]);
}

#[test]
fn a_replaced_master_rejoins_with_its_volume_and_is_re_added_when_its_data_is_lost() {
    let r = boot("replace-master-1", &[]);
    assert!(r["writes"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn a_foreign_package_repository_key_is_refused() {
    boot("wrong-repo-key", &["--wrong-repo-key", "0123456789ABCDEF0123456789ABCDEF01234567"]);
}

#[test]
fn a_node_launched_25_hours_later_joins_with_a_token_the_masters_renewed() {
    let r = boot("node-after-25h", &[]);
    assert!(r["renewals"].as_u64().unwrap() >= 1, "{r}");
}

#[test]
fn serving_certificates_are_approved_only_for_a_running_instances_own_name_and_address() {
    let r = boot("serving-certificates", &[]);
    assert_eq!(r["approved"], 5, "{r}");
    assert_eq!(r["denied"].as_array().unwrap().len(), 3, "{r}");
}

/// A rotation's three phases, each rolled out by `kaws cluster apply`:
/// masters refreshed in place by their agent, one at a time, nodes replaced
/// by the instance refresh apply starts; etcd keeps quorum and every key,
/// each next phase is refused until the last reached every instance, and
/// at the end the old CA's etcd client is refused.
#[test]
fn a_rotation_reaches_every_instance_in_three_phases_without_losing_etcd() {
    let r = boot("rotation", &[]);
    for phase in ["staged", "promoted", "finished"] {
        assert_eq!(r["phases"][phase]["nodes_replaced"], 2, "{r}");
    }
    assert!(r["writes"].as_u64().unwrap() > 0, "{r}");
}
