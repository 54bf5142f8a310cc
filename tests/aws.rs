//! `kaws cluster plan / apply / destroy` against a real AWS API emulator
//! (moto, on loopback), behind a recording proxy that counts every call.
//! What kaws built is checked through the AWS API by an independent script
//! (tests/fixtures/awscheck.py, boto3), never through kaws' own view.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ADMIN: &str = "203.0.113.0/24";
const MASTER_IPS: [&str; 3] = ["10.0.0.10", "10.0.32.10", "10.0.64.10"];

/// moto and the recording proxy in front of it; both stopped when dropped.
struct Emulator {
    _moto: Child,
    _proxy: Child,
    port: u16,
    log: PathBuf,
    /// The real-AWS behaviours the proxy plays (tests/fixtures/strict.py).
    strict: String,
    _dir: tempfile::TempDir,
}

/// How long a window of a real-AWS behaviour lasts in the strict proxy; kaws
/// waits out such states for `SETTLE_MS` in these tests (2 minutes on AWS).
const WINDOW_MS: &str = "1000";
const SETTLE_MS: &str = "5000";

impl Emulator {
    fn start() -> Emulator {
        Emulator::strict("")
    }

    fn strict(behaviours: &str) -> Emulator {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let moto_port = free_port();
        let moto = Child(
            Command::new(tool("moto_server"))
                .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
                .env("MOTO_ENABLE_AMI_VALIDATION", "true")
                .env("MOTO_AMIS_PATH", fixtures.join("amis.json"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts"),
        );
        let port = free_port();
        let log = dir.path().join("calls.jsonl");
        let proxy = Child(
            Command::new(tool("kaws-python"))
                .arg(fixtures.join("awsproxy.py"))
                .args(["--port", &port.to_string(), "--upstream", &format!("http://127.0.0.1:{moto_port}")])
                .arg("--log")
                .arg(&log)
                .args(["--strict", behaviours, "--window-ms", WINDOW_MS, "--seed", "7"])
                .spawn()
                .expect("the proxy starts"),
        );
        wait_port(moto_port);
        wait_port(port);
        Emulator { _moto: moto, _proxy: proxy, port, log, strict: behaviours.to_owned(), _dir: dir }
    }

    /// How often each real-AWS behaviour was played since the last `clear`.
    fn injected(&self) -> std::collections::BTreeMap<String, usize> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = std::collections::BTreeMap::new();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(b) = v["strict"].as_str() {
                *out.entry(b.to_owned()).or_insert(0) += 1;
            }
        }
        out
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every call since the last `clear`, as "service Action".
    fn calls(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["service"].as_str().unwrap().to_owned(), v["action"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    fn mutating(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(_, a)| !["Describe", "List", "Get"].iter().any(|p| a.starts_with(p)))
            .map(|(s, a)| format!("{s} {a}"))
            .collect()
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.log);
    }

    /// tests/fixtures/awscheck.py with `args`, for cluster prod in eu-west-1.
    fn check(&self, args: &[&str]) -> Run {
        self.check_in("eu-west-1", args)
    }

    fn check_in(&self, region: &str, args: &[&str]) -> Run {
        let mut c = Command::new(tool("kaws-python"));
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/awscheck.py"))
            .args([self.url().as_str(), region, "prod"])
            .args(args);
        run(c)
    }

    /// Changes AWS behind kaws' back, with boto3; answers what it prints.
    fn by_hand(&self, script: &str) -> String {
        let prelude = format!(
            "import boto3\nkw=dict(endpoint_url='{}', region_name='eu-west-1', aws_access_key_id='t', aws_secret_access_key='t')\n\
             ec2=boto3.client('ec2', **kw); ssm=boto3.client('ssm', **kw); r53=boto3.client('route53', **kw)\n\
             elb=boto3.client('elbv2', **kw)\n\
             T=[{{'Name':'tag:kaws:cluster','Values':['prod']}}]\n\
             def key(k, items): return [x for x in items if {{t['Key']:t['Value'] for t in x.get('Tags',[])}}.get('kaws:key')==k]\n",
            self.url()
        );
        let out = Command::new(tool("kaws-python")).arg("-c").arg(prelude + script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

struct Cluster {
    f: Fixture,
    aws: std::rc::Rc<Emulator>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::with(Emulator::start())
    }

    /// Behind the strict proxy, playing `behaviours` of real AWS.
    fn strict(behaviours: &str) -> Cluster {
        Cluster::with(Emulator::strict(behaviours))
    }

    fn with(aws: Emulator) -> Cluster {
        Cluster::in_region(std::rc::Rc::new(aws), "eu-west-1")
    }

    /// Cluster `prod` of a new repository, in `region`, on the emulator `aws`.
    fn in_region(aws: std::rc::Rc<Emulator>, region: &str) -> Cluster {
        Cluster::init_with(aws, region, &[])
    }

    /// The same, with more `cluster init` options.
    fn init_with(aws: std::rc::Rc<Emulator>, region: &str, extra: &[&str]) -> Cluster {
        let f = Fixture::new();
        let mut args = vec![
            "cluster",
            "init",
            "prod",
            "--domain",
            "example.com",
            "--region",
            region,
            "--admin-cidr",
            ADMIN,
            "--masters",
            "3",
            "--nodes",
            "2",
        ];
        args.extend_from_slice(extra);
        let r = f.alice(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        Cluster { f, aws }
    }

    fn kaws(&self, args: &[&str]) -> Command {
        let mut c = self.f.kaws_as_alice(&self.f.repo(), args);
        c.env("AWS_ENDPOINT_URL", self.aws.url())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .env("KAWS_AWS_POLL_MS", "50");
        if !self.aws.strict.is_empty() {
            c.env("KAWS_AWS_SETTLE_MS", SETTLE_MS);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        run(self.kaws(args))
    }

    /// `kaws cluster apply`, killed once it prints a line holding `line`;
    /// answers what it printed.
    fn apply_until(&self, line: &str) -> String {
        let mut child = self
            .kaws(&["cluster", "apply", "prod", "--yes", "--wait-minutes", "5"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut seen = String::new();
        for l in std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap())) {
            let l = l.unwrap();
            seen.push_str(&l);
            seen.push('\n');
            if l.contains(line) {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        seen
    }

    fn apply(&self) {
        let r = self.run(&["cluster", "apply", "prod", "--yes"]);
        assert_eq!(r.code, 0, "apply: {}\n{}", r.stdout, r.stderr);
    }

    fn assert_design(&self) {
        let mut args = vec!["topology", "3", "2", ADMIN];
        args.extend(MASTER_IPS);
        let r = self.aws.check(&args);
        assert_eq!(r.code, 0, "the AWS footprint differs from the design:\n{}", r.stderr);
    }

    fn counts(&self) -> serde_json::Value {
        let r = self.aws.check(&["counts"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    }

    /// Starts an apply and kills it once it has made `n` mutating calls.
    fn kill_apply_after(&self, n: usize) {
        let mut child = self
            .kaws(&["cluster", "apply", "prod", "--yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while self.aws.mutating().len() < n {
            assert!(start.elapsed() < Duration::from_secs(120), "apply made only {} calls", self.aws.mutating().len());
            assert!(child.try_wait().unwrap().is_none(), "apply finished before it could be killed");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn destroy(&self) {
        self.destroy_in("eu-west-1");
    }

    /// Destroys and checks, in `region`, that nothing is left.
    fn destroy_in(&self, region: &str) {
        let r = self.run(&["cluster", "destroy", "prod", "--yes"]);
        assert_eq!(r.code, 0, "destroy: {}\n{}", r.stdout, r.stderr);
        let left = self.aws.check_in(region, &["leftovers"]);
        assert_eq!(left.code, 0, "{}", left.stderr);
        assert_eq!(left.stdout.trim(), "", "left behind:\n{}", left.stdout);
    }

    fn plan(&self) -> String {
        let r = self.run(&["cluster", "plan", "prod"]);
        assert_eq!(r.code, 0, "plan: {}", r.stderr);
        r.stdout
    }
}

fn expected_counts() -> serde_json::Value {
    serde_json::json!({"eip": 3, "igw": 1, "instance": 4, "kms": 1, "lb": 1, "lt": 1, "nat": 3, "rtb": 4, "sg": 4,
                       "subnet": 6, "tg": 1, "volume": 3, "vpc": 1, "zone": 1})
}

const NOTHING: &str = "Plan: 0 to create, 0 to update, 0 to delete, 0 blocked, 0 notes.";

#[test]
fn apply_builds_the_design_and_a_second_apply_makes_no_mutating_call() {
    let c = Cluster::new();
    let plan = c.plan();
    assert!(plan.contains("+ vpc") && plan.contains("+ instance/master-2"), "{plan}");
    // What each create makes, Terraform-style; the same in JSON.
    for want in [
        "cidr           = 10.0.0.0/16",
        "address        = 10.0.32.10",
        "image          = ami-087fc0fcee2c7570a",
        "zone           = eu-west-1b",
        "authorize ingress from 22/tcp 203.0.113.0/24",
    ] {
        assert!(plan.contains(want), "the plan misses {want:?}:\n{plan}");
    }
    let r = c.run(&["--output", "json", "cluster", "plan", "prod"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let vpc = rows.as_array().unwrap().iter().find(|r| r["resource"] == "vpc").unwrap();
    assert_eq!(vpc["action"], "create");
    assert!(vpc["details"].to_string().contains("10.0.0.0/16"), "{vpc}");
    assert!(c.aws.mutating().is_empty(), "plan mutated: {:?}", c.aws.mutating());
    c.apply();
    c.assert_design();
    assert_eq!(c.counts(), expected_counts());

    // The secrets in SSM are the sealed keys, decrypted.
    let pki = c.f.repo().join("clusters/prod/pki");
    for (param, sealed) in
        [("master/shared/ca.key", "ca.key.pgp"), ("master/1/etcd/server.key", "etcd/server-1.key.pgp")]
    {
        let r = c.aws.check(&["param", &format!("/kaws/prod/{param}")]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.stdout.as_bytes(), c.f.gpg.decrypt(&pki.join(sealed)).unwrap(), "{param}");
    }
    // The outputs are committed, signed.
    let outputs = std::fs::read_to_string(c.f.repo().join("clusters/prod/outputs.toml")).unwrap();
    assert!(outputs.contains("api-endpoint = ") && outputs.contains("elb.amazonaws.com"), "{outputs}");
    assert_all_commits_verify(&c.f.repo(), &c.f.gpg);

    c.aws.clear();
    c.apply();
    assert_eq!(c.aws.mutating(), Vec::<String>::new(), "a second apply changed something");
    assert!(!c.aws.calls().is_empty(), "the proxy saw no call at all");
    assert!(c.plan().contains(NOTHING));

    // kubeconfigs reach the load balancer and verify the API's own name.
    for args in [["admin", "create", "prod", "alice"], ["admin", "sign", "prod", "alice"]] {
        assert_eq!(c.run(&args).code, 0);
    }
    let kc = c.f.file("kubeconfig");
    let r = c.run(&["admin", "install", "prod", "alice", "--kubeconfig", kc.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(&kc).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let cluster = &doc["clusters"][0]["cluster"];
    assert!(cluster["server"].as_str().unwrap().ends_with("elb.amazonaws.com:6443"), "{text}");
    assert_eq!(cluster["tls-server-name"], "api.prod.example.com", "{text}");
}

/// Changes behind kaws' back: an open rule, a lost route, a lost master, a
/// lost secret, lost reservations.
const DRIFT: &str = "node = key('sg/node', ec2.describe_security_groups(Filters=T)['SecurityGroups'])[0]\n\
     ec2.authorize_security_group_ingress(GroupId=node['GroupId'], IpPermissions=[{'IpProtocol':'tcp','FromPort':22,'ToPort':22,'IpRanges':[{'CidrIp':'0.0.0.0/0'}]}])\n\
     rtb = key('rtb/public', ec2.describe_route_tables(Filters=T)['RouteTables'])[0]\n\
     ec2.delete_route(RouteTableId=rtb['RouteTableId'], DestinationCidrBlock='0.0.0.0/0')\n\
     m1 = key('instance/master-1', [i for r in ec2.describe_instances(Filters=T)['Reservations'] for i in r['Instances']])[0]\n\
     ec2.terminate_instances(InstanceIds=[m1['InstanceId']])\n\
     ssm.delete_parameter(Name='/kaws/prod/node/bootstrap-token')\n\
     s2 = key('subnet/private-2', ec2.describe_subnets(Filters=T)['Subnets'])[0]\n\
     for r in ec2.get_subnet_cidr_reservations(SubnetId=s2['SubnetId'])['SubnetIpv4CidrReservations']:\n\
     \x20   ec2.delete_subnet_cidr_reservation(SubnetCidrReservationId=r['SubnetCidrReservationId'])\n\
     ec2.delete_tags(Resources=[s2['SubnetId']], Tags=[{'Key':'kubernetes.io/role/internal-elb'}])\n\
     tg = [t for t in elb.describe_target_groups()['TargetGroups'] if t['Port'] == 6443][0]\n\
     elb.modify_target_group(TargetGroupArn=tg['TargetGroupArn'], HealthCheckProtocol='TCP')\n";

#[test]
fn drift_shows_in_the_plan_and_apply_repairs_it() {
    let c = Cluster::new();
    c.apply();
    const ETCD_1: &str = "v = key('volume/etcd-1', ec2.describe_volumes(Filters=T)['Volumes'])[0]\n\
         print(v['VolumeId'], *[a['InstanceId'] for a in v['Attachments']])";
    let before = c.aws.by_hand(ETCD_1);
    c.aws.by_hand(DRIFT);
    let plan = c.plan();
    for want in [
        "revoke ingress from 22/tcp 0.0.0.0/0",
        "route 0.0.0.0/0 to igw",
        "+ instance/master-1",
        "0.0.0.0/0: none → igw (igw-",
        "+ ssm/node/bootstrap-token",
        "register instance/master-1",
        "reserve 10.0.64.10/32 for the masters",
        "health check: TCP",
        "check /readyz over HTTPS",
        "tag it for the Kubernetes cloud provider",
    ] {
        assert!(plan.contains(want), "the plan misses {want:?}:\n{plan}");
    }
    let r = c.aws.check(&{
        let mut a = vec!["topology", "3", "2", ADMIN];
        a.extend(MASTER_IPS);
        a
    });
    assert_ne!(r.code, 0, "the checker did not see the drift");
    c.apply();
    c.assert_design();
    assert_eq!(c.counts(), expected_counts());
    assert!(c.plan().contains(NOTHING));
    // The replaced master has its predecessor's etcd volume, and with it its data.
    let after = c.aws.by_hand(ETCD_1);
    let (b, a): (Vec<&str>, Vec<&str>) = (before.split(' ').collect(), after.split(' ').collect());
    assert_eq!((a.len(), b.len()), (2, 2), "{before} / {after}");
    assert_eq!(a[0], b[0], "the volume was replaced");
    assert_ne!(a[1], b[1], "the volume is not attached to the new master");
}

#[test]
fn a_killed_apply_converges_without_duplicates() {
    let c = Cluster::new();
    c.kill_apply_after(30);
    let partial = c.counts();
    assert_ne!(partial, expected_counts(), "the kill came too late to test anything");
    let plan = c.plan();
    assert!(!plan.lines().any(|l| l.trim_start().starts_with("- ")), "a killed run left duplicates: {plan}");
    c.apply();
    assert_eq!(c.counts(), expected_counts());
    c.assert_design();
    assert!(c.plan().contains(NOTHING));
}

#[test]
fn destroy_leaves_nothing_tagged() {
    let c = Cluster::new();
    c.apply();
    let r = c.run(&["cluster", "destroy", "prod"]);
    assert_eq!(r.code, 2, "destroy without --yes off a terminal: {}", r.stderr);
    assert!(c.aws.mutating().iter().all(|m| !m.contains("Delete") && !m.contains("Terminate")));
    let r = c.run(&["cluster", "destroy", "prod", "--yes"]);
    assert_eq!(r.code, 0, "destroy: {}\n{}", r.stdout, r.stderr);
    let left = c.aws.check(&["leftovers"]);
    assert_eq!(left.code, 0, "{}", left.stderr);
    assert_eq!(left.stdout.trim(), "", "left behind:\n{}", left.stdout);
    assert!(!c.f.repo().join("clusters/prod/outputs.toml").exists());
    let again = c.run(&["cluster", "destroy", "prod", "--yes"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_all_commits_verify(&c.f.repo(), &c.f.gpg);
}

#[test]
fn only_a_primary_writes_secrets() {
    let c = Cluster::new();
    let bob = c.f.gpg.gen("bob");
    c.f.gpg.export(&[&bob.fpr], true, &c.f.file("bob.asc"));
    assert_eq!(c.run(&["key", "add", "bob", c.f.file("bob.asc").to_str().unwrap()]).code, 0);
    let bob_secret = c.f.gpg.export_secret(&bob.fpr, "", &c.f.file("bob.sec"));
    let mut cmd = c.kaws(&["cluster", "apply", "prod", "--yes"]);
    // The last --secret-key wins: bob is the operator.
    cmd.arg("--secret-key").arg(&bob_secret);
    let r = run(cmd);
    assert_eq!(r.code, 3, "a non-primary applied secrets: {}", r.stderr);
    assert!(r.stderr.contains("not a primary"), "{}", r.stderr);
    assert_eq!(c.aws.mutating(), Vec::<String>::new(), "AWS was changed before the refusal");
}

/// No AWS credentials anywhere: one short message that says so, which
/// sources were tried and what to do, never the SDK's debug dump.
#[test]
fn no_credentials_is_one_clear_message() {
    let f = Fixture::new();
    init_cluster(&f);
    let mut c = f.kaws_as_alice(&f.repo(), &["cluster", "plan", "prod"]);
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"] {
        c.env_remove(var);
    }
    let missing = f.tmp.path().join("no-such-aws-file");
    c.env("AWS_CONFIG_FILE", &missing)
        .env("AWS_SHARED_CREDENTIALS_FILE", &missing)
        // Not on EC2: the instance-metadata source is off rather than timing out.
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let before = snapshot(&f.repo());
    let r = run(c);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("no AWS credentials were found"), "{}", r.stderr);
    assert!(r.stderr.contains("AWS_PROFILE") && r.stderr.contains("quickstart"), "{}", r.stderr);
    assert!(!r.stderr.contains("DispatchFailure") && !r.stderr.contains("ProviderError"), "{}", r.stderr);
    assert!(r.stderr.len() < 800, "{} characters:\n{}", r.stderr.len(), r.stderr);
    assert_eq!(before, snapshot(&f.repo()));
}

/// The whole life of a cluster behind a proxy that plays what real AWS does
/// and moto does not (tests/fixtures/strict.py): eventual consistency, IAM
/// propagation, client-token replay, pending and provisioning states,
/// throttling bursts, an opted-in Local Zone. A killed apply, its repair, a
/// second apply that changes nothing, drift repaired, a destroy, and a new
/// cluster of the same name the "next day" (the proxy still remembers every
/// client token of the first one).
#[test]
fn the_whole_life_of_a_cluster_on_real_aws_behaviours() {
    let c = Cluster::strict("notfound,iam,tokens,pending,throttle,localzone");
    c.kill_apply_after(25);
    let plan = c.plan();
    assert!(!plan.lines().any(|l| l.trim_start().starts_with("- ")), "a killed run left duplicates: {plan}");
    c.apply();
    c.assert_design();
    assert_eq!(c.counts(), expected_counts());
    // Token replays happen only when an answer was lost, a Local Zone only
    // when kaws asks without the zone-type filter; the rest must have been met.
    let fired = c.aws.injected();
    for b in ["notfound", "iam-role", "pending", "throttle"] {
        assert!(fired.contains_key(b), "the proxy never played {b}: {fired:?}");
    }
    assert!(!fired.contains_key("localzone"), "kaws listed zones without the zone-type filter");

    c.aws.clear();
    c.apply();
    assert_eq!(c.aws.mutating(), Vec::<String>::new(), "a second apply changed something");

    // The lost master's relaunch sends its old request again: EC2 replays
    // the terminated instance, which kaws steps over.
    c.aws.by_hand(DRIFT);
    c.apply();
    c.assert_design();
    assert!(c.plan().contains(NOTHING));
    assert!(c.aws.injected().contains_key("tokens"), "no client token was replayed: {:?}", c.aws.injected());

    c.destroy();
    c.apply();
    c.assert_design();
    assert_eq!(c.counts(), expected_counts());
    c.destroy();
}

/// A NAT gateway that fails (as real ones do in a subnet without a free
/// address) is an error naming AWS's failure code; the next apply shows it
/// as a replacement and makes it anew, stepping over the client token that
/// replays the failed one.
#[test]
fn a_failed_nat_gateway_is_named_and_replaced() {
    let c = Cluster::strict("failnat,tokens");
    let r = c.run(&["cluster", "apply", "prod", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("InsufficientFreeAddressesInSubnet"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    let plan = c.plan();
    assert!(plan.contains("replace") && plan.contains("InsufficientFreeAddressesInSubnet"), "{plan}");
    c.apply();
    c.assert_design();
    assert_eq!(c.counts(), expected_counts());
    assert!(c.aws.injected().contains_key("tokens"), "the replacement did not meet the old token");
}

/// One real-AWS behaviour at a time: an apply behind it builds the design,
/// and the behaviour was met (each failed kaws before it was handled).
fn apply_behind(behaviour: &str) -> Cluster {
    let c = Cluster::strict(behaviour);
    c.apply();
    c.assert_design();
    assert_eq!(c.counts(), expected_counts());
    let fired = c.aws.injected();
    assert!(fired.keys().any(|k| k.starts_with(behaviour)), "the proxy never played {behaviour}: {fired:?}");
    c
}

/// EC2 answers `Invalid…ID.NotFound` right after a create, and the load
/// balancer's and the private zone's creates cannot see new subnets, groups
/// or VPCs at once either.
#[test]
fn ids_a_run_created_are_waited_for() {
    let c = apply_behind("notfound");
    let text = std::fs::read_to_string(&c.aws.log).unwrap_or_default();
    let elsewhere: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["strict"] == "notfound" && v["service"] != "ec2")
        .map(|v| format!("{} {}", v["service"], v["action"]))
        .collect();
    assert!(!elsewhere.is_empty(), "no other service was made to wait for an EC2 id");
}

/// A new instance profile is not usable by EC2 at once.
#[test]
fn iam_propagation_is_waited_for() {
    let fired = apply_behind("iam").aws.injected();
    // Both: a role not yet visible to IAM, a profile not yet visible to EC2.
    assert!(fired.contains_key("iam-role") && fired.contains_key("iam-run"), "{fired:?}");
}

/// New NAT gateways and instances are pending, load balancers provisioning.
#[test]
fn pending_resources_are_waited_for() {
    apply_behind("pending");
}

/// Throttling bursts are backed off, and the apply still converges.
#[test]
fn throttling_is_backed_off() {
    apply_behind("throttle");
}

/// An opted-in Local Zone is never listed to kaws, so never receives a subnet.
#[test]
fn local_zones_are_not_used() {
    let c = Cluster::strict("localzone");
    c.apply();
    c.assert_design();
    assert!(c.aws.calls().iter().any(|(_, a)| a == "DescribeAvailabilityZones"));
    assert!(!c.aws.injected().contains_key("localzone"), "kaws listed zones without the zone-type filter");
}

/// EC2 remembers client tokens for a day after their resources are gone: a
/// cluster destroyed and made again the next day must not replay them.
#[test]
fn client_tokens_of_a_destroyed_cluster_are_not_replayed() {
    let c = Cluster::strict("tokens");
    c.apply();
    c.destroy();
    c.apply();
    c.assert_design();
    assert_eq!(c.counts(), expected_counts());
}

/// IAM and Route 53 are global: a cluster `prod` in another region of the
/// same account (another repository) gets its own roles and zone, and its
/// destroy leaves this one's alone.
#[test]
fn clusters_of_one_name_in_two_regions_keep_apart() {
    let c = Cluster::new();
    c.apply();
    let other = Cluster::in_region(c.aws.clone(), "us-east-1");
    other.apply();
    c.assert_design();
    other.destroy_in("us-east-1");
    c.assert_design();
    assert_eq!(c.counts(), expected_counts());
    let plan = c.plan();
    assert!(plan.contains(NOTHING), "{plan}");
}

/// A private zone a killed run made but could not tag (Route 53 tags in a
/// second call) is found by its VPC and adopted, not made twice.
#[test]
fn an_untagged_private_zone_of_the_vpc_is_adopted() {
    let c = Cluster::new();
    c.apply();
    c.aws.by_hand(
        "r53=boto3.client('route53', **kw)\n\
         z=[z for z in r53.list_hosted_zones()['HostedZones'] if z['Name']=='prod.example.com.'][0]['Id'].split('/')[-1]\n\
         keys=[t['Key'] for t in r53.list_tags_for_resource(ResourceType='hostedzone', ResourceId=z)['ResourceTagSet']['Tags']]\n\
         r53.change_tags_for_resource(ResourceType='hostedzone', ResourceId=z, RemoveTagKeys=keys)\n",
    );
    assert!(c.plan().contains("+ zone/private"));
    c.apply();
    assert_eq!(c.counts(), expected_counts());
    assert!(c.plan().contains(NOTHING));
}

/// The image is the latest Amazon Linux 2023 from AWS's public SSM
/// parameter, pinned in cluster.toml by the first apply, so that a new
/// release changes nothing by itself: the plan only says a newer image
/// exists, and `apply --update-image` moves the pin (a new node template
/// version; running instances keep theirs).
#[test]
fn the_image_is_pinned_and_a_newer_one_only_noted() {
    const LATEST: &str = "ami-087fc0fcee2c7570a"; // moto's AL2023 parameter in eu-west-1
    const OLDER: &str = "ami-0a1b2c3d4e5f60718"; // an older AL2023 (tests/fixtures/amis.json)
    let c = Cluster::new();
    assert!(c.plan().contains(&format!("apply pins {LATEST}")));
    c.apply();
    let spec = c.f.repo().join("clusters/prod/cluster.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains(&format!("image = \"{LATEST}\"")), "{text}");
    assert!(c.plan().contains(NOTHING));
    assert_all_commits_verify(&c.f.repo(), &c.f.gpg);

    // The team pinned an older release; AWS has published a newer one since.
    std::fs::write(&spec, text.replace(LATEST, OLDER)).unwrap();
    git_commit_signed(&c.f.repo(), &c.f.gpg, &c.f.alice.fpr, "pin an older image");
    let plan = c.plan();
    assert!(plan.contains(&format!("a newer Amazon Linux 2023 image exists ({LATEST}")), "{plan}");
    c.apply();
    assert!(std::fs::read_to_string(&spec).unwrap().contains(OLDER), "apply moved the pin by itself");
    c.aws.clear();
    let r = c.run(&["cluster", "apply", "prod", "--yes", "--update-image"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(std::fs::read_to_string(&spec).unwrap().contains(LATEST));
    assert!(
        c.aws.mutating().iter().any(|m| m.ends_with("CreateLaunchTemplateVersion")),
        "{:?} {} {}",
        c.aws.mutating(),
        r.stdout,
        r.stderr
    );
    assert!(!c.aws.mutating().iter().any(|m| m.ends_with("RunInstances")), "{:?}", c.aws.mutating());
}

/// The availability zones are picked once and pinned in cluster.toml with
/// the image, in the apply's signed commit.
#[test]
fn the_zones_are_pinned() {
    let c = Cluster::new();
    assert!(c.plan().contains("apply pins the zones eu-west-1a, eu-west-1b, eu-west-1c"));
    c.apply();
    let text = std::fs::read_to_string(c.f.repo().join("clusters/prod/cluster.toml")).unwrap();
    let spec: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(spec["aws"]["zones"], toml::Value::from(vec!["eu-west-1a", "eu-west-1b", "eu-west-1c"]), "{text}");
    assert!(c.plan().contains(NOTHING));
    assert_all_commits_verify(&c.f.repo(), &c.f.gpg);
}

/// Records someone else put in the cluster's private zone are not emptied
/// silently: destroy names them and stops; `--force` deletes them too.
#[test]
fn destroy_names_records_it_did_not_make() {
    let c = Cluster::new();
    c.apply();
    c.aws.by_hand(
        "z=[z for z in r53.list_hosted_zones()['HostedZones'] if z['Name']=='prod.example.com.'][0]['Id']\n\
         r53.change_resource_record_sets(HostedZoneId=z, ChangeBatch={'Changes':[{'Action':'CREATE','ResourceRecordSet':\
         {'Name':'db.prod.example.com.','Type':'A','TTL':60,'ResourceRecords':[{'Value':'10.0.0.99'}]}}]})\n",
    );
    let r = c.run(&["cluster", "destroy", "prod", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("db.prod.example.com.") && r.stderr.contains("--force"), "{}", r.stderr);
    let r = c.run(&["cluster", "destroy", "prod", "--yes", "--force"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let left = c.aws.check(&["leftovers"]);
    assert_eq!(left.stdout.trim(), "", "left behind:\n{}", left.stdout);
}

/// In a public zone, a record kaws did not make (no ownership marker) is
/// never overwritten or deleted; one it made is, with its marker.
#[test]
fn a_public_record_kaws_did_not_make_is_left_alone() {
    let aws = std::rc::Rc::new(Emulator::start());
    let zone = aws.by_hand(
        "z=r53.create_hosted_zone(Name='example.com.', CallerReference='public')['HostedZone']['Id'].split('/')[-1]\n\
         r53.change_resource_record_sets(HostedZoneId=z, ChangeBatch={'Changes':[{'Action':'CREATE','ResourceRecordSet':\
         {'Name':'api.prod.example.com.','Type':'A','TTL':60,'ResourceRecords':[{'Value':'192.0.2.1'}]}}]})\n\
         print(z)\n",
    );
    let c = Cluster::init_with(aws, "eu-west-1", &["--hosted-zone", &zone]);
    let plan = c.plan();
    assert!(plan.contains("! dns/public") && plan.contains("kaws did not make"), "{plan}");
    let r = c.run(&["cluster", "apply", "prod", "--yes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let records = |c: &Cluster| {
        c.aws.by_hand(&format!(
            "print(sorted((r['Type'], str(r.get('ResourceRecords')) + str(r.get('AliasTarget'))) for r in \
             r53.list_resource_record_sets(HostedZoneId='{zone}')['ResourceRecordSets'] if r['Name']=='api.prod.example.com.'))"
        ))
    };
    assert!(records(&c).contains("192.0.2.1"), "{}", records(&c));

    // Its owner deletes it, and keeps a TXT record of theirs at that name:
    // kaws makes its own, adds its marker beside their value, and at
    // destroy takes away only what it added.
    c.aws.by_hand(&format!(
        "r53.change_resource_record_sets(HostedZoneId='{zone}', ChangeBatch={{'Changes':[{{'Action':'DELETE','ResourceRecordSet':\
         {{'Name':'api.prod.example.com.','Type':'A','TTL':60,'ResourceRecords':[{{'Value':'192.0.2.1'}}]}}}},\
         {{'Action':'CREATE','ResourceRecordSet':{{'Name':'api.prod.example.com.','Type':'TXT','TTL':60,\
         'ResourceRecords':[{{'Value':'\"v=spf1 -all\"'}}]}}}}]}})\n"
    ));
    c.apply();
    let mine = records(&c);
    assert!(mine.contains("kaws-owner=eu-west-1/prod") && mine.contains("elb.amazonaws.com"), "{mine}");
    assert!(mine.contains("v=spf1 -all"), "{mine}");
    c.destroy();
    let left = records(&c);
    assert!(left.contains("v=spf1 -all") && !left.contains("kaws-owner") && !left.contains("'A'"), "{left}");
}

/// A network interface left detached in the VPC (a crashed instance's, one
/// a person made) is deleted before the groups and subnets it would hold.
#[test]
fn destroy_sweeps_detached_interfaces() {
    let c = Cluster::new();
    c.apply();
    let eni = c.aws.by_hand(
        "s=key('subnet/private-0', ec2.describe_subnets(Filters=T)['Subnets'])[0]\n\
         g=key('sg/node', ec2.describe_security_groups(Filters=T)['SecurityGroups'])[0]\n\
         print(ec2.create_network_interface(SubnetId=s['SubnetId'], Groups=[g['GroupId']])['NetworkInterface']['NetworkInterfaceId'])\n",
    );
    c.destroy();
    let gone = c.aws.by_hand(&format!(
        "import botocore\ntry:\n    ec2.describe_network_interfaces(NetworkInterfaceIds=['{eni}'])\n    print('still there')\n\
         except botocore.exceptions.ClientError as e:\n    print(e.response['Error']['Code'])\n"
    ));
    assert_eq!(gone, "InvalidNetworkInterfaceID.NotFound");
}

/// The cluster's KMS key made anew (the old one scheduled for deletion by
/// hand): every parameter is written again under the new key, which the
/// parameters name by ARN (an alias can be moved).
#[test]
fn parameters_follow_a_new_key() {
    let c = Cluster::new();
    c.apply();
    c.aws.by_hand(
        "kms=boto3.client('kms', **kw)\n\
         k=kms.describe_key(KeyId='alias/kaws/prod')['KeyMetadata']['KeyId']\n\
         kms.delete_alias(AliasName='alias/kaws/prod')\n\
         kms.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)\n",
    );
    let plan = c.plan();
    assert!(plan.contains("+ kms/secrets") && plan.contains("~ ssm/node/bootstrap-token"), "{plan}");
    c.apply();
    c.assert_design();
    assert!(c.plan().contains(NOTHING));
}

/// `kaws cluster status`: the instances as EC2 shows them, and the API
/// endpoint's certificate through a real TLS handshake with `openssl
/// s_server` serving what a master serves (the load balancer's name does
/// not resolve here: `--endpoint` names the server).
#[test]
fn status_shows_the_instances_and_what_the_api_serves() {
    let c = Cluster::new();
    c.apply();
    let pki = c.f.repo().join("clusters/prod/pki");
    let key = c.f.tmp.path().join("apiserver.pem");
    write_secret(&key, &c.f.gpg.decrypt(&pki.join("apiserver.key.pgp")).expect("a primary opens the key"));
    let serve = |cert: &Path, key: &Path| {
        let port = free_port();
        let child = Child(
            Command::new("openssl")
                .args(["s_server", "-quiet", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
                .arg(cert)
                .arg("-key")
                .arg(key)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port(port);
        (child, port)
    };
    let status = |port: u16| -> serde_json::Value {
        let endpoint = format!("127.0.0.1:{port}");
        let r = c.run(&["--output", "json", "cluster", "status", "prod", "--endpoint", &endpoint]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let (_server, port) = serve(&pki.join("apiserver.crt"), &key);
    let s = status(port);
    assert_eq!(s["token"]["written_by"], "kaws", "{s}");
    // A master's renewal (by hand, as kaws-token.sh writes it): the cluster's, live.
    c.aws.by_hand(
        "ssm.put_parameter(Name='/kaws/prod/node/bootstrap-token', Value='abcdef.0123456789abcdef', Type='SecureString', \
         Tier='Standard', KeyId='alias/kaws/prod', Overwrite=True, Description='kaws: renewed in the cluster')",
    );
    let renewed = status(port)["token"].clone();
    assert_eq!((renewed["written_by"].as_str(), renewed["live"].as_bool()), (Some("cluster"), Some(true)), "{renewed}");
    assert!(c.plan().lines().all(|l| !l.contains("node/bootstrap-token")), "apply would overwrite the renewed token");
    let instances = s["instances"].as_array().unwrap();
    let masters: Vec<&serde_json::Value> =
        instances.iter().filter(|i| i["key"].as_str().unwrap().starts_with("instance/master-")).collect();
    assert_eq!(masters.len(), 3, "{s}");
    for m in &masters {
        assert!(m["etcd_volume"].as_str().unwrap().ends_with(" attached"), "{m}");
        assert_eq!(m["state"], "running");
    }
    assert!(MASTER_IPS.iter().all(|ip| masters.iter().any(|m| m["private_ip"] == *ip)), "{s}");
    assert!(instances.iter().any(|i| i["key"] == "instance/bastion" && i["public_ip"].is_string()), "{s}");
    let api = &s["api"];
    assert_eq!(api["verified"], true, "{api}");
    assert_eq!((api["subject"].as_str(), api["issuer"].as_str()), (Some("kube-apiserver"), Some("kubernetes")));
    let end = openssl(&["x509", "-noout", "-enddate", "-in", pki.join("apiserver.crt").to_str().unwrap()]).stdout;
    assert_eq!(format!("notAfter={}", api["not_after"].as_str().unwrap()), String::from_utf8_lossy(&end).trim());

    // A certificate from elsewhere, for the right name: shown, not verified.
    let (other_cert, other_key) = (c.f.tmp.path().join("other.crt"), c.f.tmp.path().join("other.key"));
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=impostor",
        "-addext",
        "subjectAltName=DNS:api.prod.example.com",
        "-keyout",
        other_key.to_str().unwrap(),
        "-out",
        other_cert.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (_other, port) = serve(&other_cert, &other_key);
    let api = status(port)["api"].clone();
    assert_eq!((api["verified"].as_bool(), api["subject"].as_str()), (Some(false), Some("impostor")), "{api}");
    assert!(api["error"].as_str().unwrap().contains("certificate verify failed"), "{api}");
}

/// A rotation's next phase waits until every instance of the cluster (but
/// the bastion) reports the repository's current trust generation, as the
/// instances report it: a tag on themselves (written here by hand). A
/// refused step names each instance behind and leaves the repository as
/// it was.
#[test]
fn a_rotation_phase_waits_until_every_instance_reports_the_current_generation() {
    let c = Cluster::new();
    c.apply();
    let status = || -> serde_json::Value {
        let r = c.run(&["--output", "json", "cluster", "status", "prod"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let before = status();
    let ids = |s: &serde_json::Value| -> Vec<(String, String)> {
        s["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["key"] != "instance/bastion" && i["state"] == "running")
            .map(|i| (i["key"].as_str().unwrap().to_owned(), i["id"].as_str().unwrap().to_owned()))
            .collect()
    };
    let report = |ids: &[&str], generation: &str| {
        c.aws.by_hand(&format!(
            "ec2.create_tags(Resources={ids:?}, Tags=[{{'Key':'kaws:stage','Value':'up'}},{{'Key':'kaws:generation','Value':'{generation}'}}])"
        ));
    };
    let all = ids(&before);
    assert!(all.len() >= 5, "{before}");
    let every: Vec<&str> = all.iter().map(|(_, id)| id.as_str()).collect();
    report(&every, before["generation"].as_str().unwrap());
    assert!(status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["key"] != "instance/bastion")
        .all(|i| i["current"] == true));

    let r = c.run(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let staged = status();
    assert_eq!(staged["rotation"], "staged");
    let want = staged["generation"].as_str().unwrap().to_owned();
    assert_ne!(want, before["generation"].as_str().unwrap(), "staging makes a new generation");
    assert!(staged["instances"].as_array().unwrap().iter().all(|i| i["current"] == false));

    // All but master 1 report the staged generation: --promote is refused, naming it.
    let (m1_key, m1) = all.iter().find(|(k, _)| k == "instance/master-1").unwrap().clone();
    let others: Vec<&str> = every.iter().copied().filter(|id| *id != m1).collect();
    report(&others, &want);
    let repo_before = snapshot(&c.f.repo());
    let r = c.run(&["cluster", "reencrypt", "prod", "--promote"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("waits until every instance") && r.stderr.contains(&format!("{m1_key} {m1}")),
        "{}",
        r.stderr
    );
    assert_eq!(others.iter().filter(|id| r.stderr.contains(*id)).count(), 0, "{}", r.stderr);
    assert_eq!(snapshot(&c.f.repo()), repo_before, "a refused step changed the repository");

    report(&[m1.as_str()], &want);
    let r = c.run(&["cluster", "reencrypt", "prod", "--promote"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Promoting makes the next generation: finishing waits for it in turn.
    let r = c.run(&["cluster", "reencrypt", "prod", "--finish-rotation"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains(&m1), "{}", r.stderr);
    let promoted = status()["generation"].as_str().unwrap().to_owned();
    report(&every, &promoted);
    let r = c.run(&["cluster", "reencrypt", "prod", "--finish-rotation"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// A phase reaches the instances through SSM: apply writes every public
/// file each role installs and the generation (exactly what `kaws cluster
/// render --parameters` shows), then waits until every instance reports
/// running it, starting the node group's instance refresh; killed while it
/// waits, it resumes from what the instances report; one that never gets
/// there is named, with the next step.
#[test]
fn apply_pushes_a_phase_through_ssm_and_waits_for_every_instance_resuming_when_killed() {
    let c = Cluster::new();
    c.apply();
    let ssm = || -> serde_json::Value {
        let printed = c.aws.by_hand(
            "import json\nout={}\n\
             for page in ssm.get_paginator('get_parameters_by_path').paginate(Path='/kaws/prod', Recursive=True):\n\
             \x20   out.update({p['Name']: [p['Type'], p['Value']] for p in page['Parameters'] if p['Type'] == 'String'})\n\
             print(json.dumps(out))",
        );
        serde_json::from_str(&printed).unwrap()
    };
    let rendered = || -> serde_json::Value {
        let r = c.run(&["cluster", "render", "prod", "--parameters"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
        v.into_iter().map(|(k, v)| (k, serde_json::json!(["String", v]))).collect()
    };
    let same = |a: &serde_json::Value, b: &serde_json::Value, what: &str| {
        let (a, b) = (a.as_object().unwrap(), b.as_object().unwrap());
        let differ: Vec<&String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).collect();
        assert!(differ.is_empty(), "{what}: SSM and render --parameters differ at {differ:?}");
    };
    let settled = ssm();
    same(&settled, &rendered(), "settled");
    assert_eq!(settled.as_object().unwrap().len(), 15 + 2 * 3 + 1 + 2);
    let ids: Vec<(String, String)> = {
        let r = c.run(&["--output", "json", "cluster", "status", "prod"]);
        let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        s["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["key"] != "instance/bastion")
            .map(|i| (i["key"].as_str().unwrap().to_owned(), i["id"].as_str().unwrap().to_owned()))
            .collect()
    };
    let report = |ids: &[String], stage: &str, generation: &str| {
        c.aws.by_hand(&format!(
            "ec2.create_tags(Resources={ids:?}, Tags=[{{'Key':'kaws:stage','Value':'{stage}'}},{{'Key':'kaws:generation','Value':'{generation}'}}])"
        ));
    };
    let generation = |v: &serde_json::Value, role: &str| -> String {
        let value = v[format!("/kaws/prod/{role}/generation")][1].as_str().unwrap().to_owned();
        value.split(' ').next().unwrap().to_owned()
    };
    let g0 = generation(&settled, "master/shared");
    let every: Vec<String> = ids.iter().map(|(_, i)| i.clone()).collect();
    report(&every, "up", &g0);

    let r = c.run(&["cluster", "reencrypt", "prod", "--primary", "alice", "--rotate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Apply writes the staged phase, then waits: killed while it waits.
    let seen = c.apply_until("do not run");
    assert!(seen.contains("rolling trust generation"), "{seen}");
    assert!(!seen.contains("started instance refresh"), "nodes wait for every master: {seen}");
    let staged = ssm();
    same(&staged, &rendered(), "staged");
    let g1 = generation(&staged, "master/shared");
    assert_ne!(g1, g0);
    assert_eq!(generation(&staged, "node"), g1);
    let bundle = staged["/kaws/prod/master/shared/pki/ca-bundle.crt"][1].as_str().unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "the staged bundle trusts both CAs");

    // The masters run it (their agents): the next apply starts the nodes'
    // refresh, as AWS takes it (rolling, one at a time, launch before
    // terminate, only older nodes); killed again.
    let masters: Vec<String> =
        ids.iter().filter(|(k, _)| k.starts_with("instance/master-")).map(|(_, i)| i.clone()).collect();
    let nodes: Vec<String> =
        ids.iter().filter(|(k, _)| !k.starts_with("instance/master-")).map(|(_, i)| i.clone()).collect();
    assert_eq!((masters.len(), nodes.len()), (3, 2));
    report(&masters, "up", &g1);
    c.aws.clear();
    let seen = c.apply_until("started instance refresh");
    assert!(seen.contains("kaws-prod-node: started instance refresh"), "{seen}");
    let log = std::fs::read_to_string(&c.aws.log).unwrap();
    let starts: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["action"] == "StartInstanceRefresh")
        .collect();
    assert_eq!(starts.len(), 1, "{starts:?}");
    let p = &starts[0]["params"];
    assert_eq!(p["AutoScalingGroupName"], "kaws-prod-node");
    assert_eq!(p["Strategy"], "Rolling");
    for (k, v) in [
        ("MinHealthyPercentage", "100"),
        ("MaxHealthyPercentage", "110"),
        ("InstanceWarmup", "300"),
        ("SkipMatching", "true"),
    ] {
        assert_eq!(p[format!("Preferences.{k}")], v, "{p}");
    }

    // The nodes are replaced: a new apply finds nothing to change and
    // returns once the last reports it, starting no second refresh while
    // the first is under way.
    report(&nodes[..1], "up", &g1);
    c.aws.clear();
    let child = c
        .kaws(&["cluster", "apply", "prod", "--yes", "--wait-minutes", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    report(&nodes[1..], "up", &g1);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains(&format!("every instance runs trust generation {g1}")), "{text}");
    assert!(text.contains("is Pending"), "the refresh under way is left to finish: {text}");
    let calls = c.aws.calls();
    assert!(!calls.iter().any(|(_, a)| a == "StartInstanceRefresh"), "{calls:?}");
    assert!(!calls.iter().any(|(_, a)| a == "PutParameter"), "nothing left to write");
    let ids: Vec<String> = ids.into_iter().map(|(_, i)| i).collect();

    // --promote; master 1's agent fails: apply names it, with the next step.
    let r = c.run(&["cluster", "reencrypt", "prod", "--promote"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    same(&ssm(), &staged, "a phase reaches SSM only through apply");
    let r = c.run(&["cluster", "apply", "prod", "--yes", "--no-wait"]);
    assert!(r.code == 0 && r.stderr.contains("run an older trust generation"), "{}", r.stderr);
    let promoted = ssm();
    same(&promoted, &rendered(), "promoted");
    let g2 = generation(&promoted, "master/shared");
    let m1 = c.aws.by_hand(
        "print(key('instance/master-1', [i for r in ec2.describe_instances(Filters=T)['Reservations'] for i in r['Instances'] if i['State']['Name']=='running'])[0]['InstanceId'])",
    );
    let others: Vec<String> = ids.iter().filter(|i| **i != m1).cloned().collect();
    report(&others, "up", &g2);
    report(std::slice::from_ref(&m1), "refreshing", &g1);
    let r = c.run(&["cluster", "apply", "prod", "--yes", "--wait-minutes", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("instance/master-1 {m1} runs {g1}"))
            && r.stderr.contains("kaws-refresh.log")
            && !others.iter().any(|o| r.stderr.contains(&format!("{o} runs"))),
        "{}",
        r.stderr
    );
}
