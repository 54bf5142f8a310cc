//! `clusters/CLUSTER/cluster.toml`: the validated cluster spec, and the
//! facts derived from it that certificates need before any instance exists
//! (the masters' fixed private IPs and hostnames).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::name::{ClusterName, DnsName};
use crate::pki::KeyAlgorithm;

pub const SPEC_FILE: &str = "cluster.toml";
pub const FORMAT: u32 = 1;
/// kubeadm v1beta4 configuration needs Kubernetes 1.31 or newer.
pub const MIN_MINOR: u32 = 31;
pub const DEFAULT_KUBERNETES: &str = "1.34.1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSpec {
    pub format: u32,
    pub name: ClusterName,
    pub domain: DnsName,
    pub region: String,
    pub kubernetes_version: String,
    pub masters: u32,
    pub nodes: u32,
    pub azs: u32,
    pub vpc_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub pod_cidr: Ipv4Net,
    pub cluster_domain: DnsName,
    /// Who may reach the bastion and the API.
    pub admin_cidrs: Vec<Ipv4Net>,
    /// Must be set for an admin CIDR of 0.0.0.0/0 to be accepted.
    #[serde(default)]
    pub allow_world_admin: bool,
    pub key_algorithm: KeyAlgorithm,
    pub validity: Validity,
    /// How the cluster is provisioned (`kaws cluster apply`).
    #[serde(default)]
    pub aws: AwsSpec,
}

/// The provisioning choices of a cluster; every field has a default, so a
/// spec written before they existed still reads.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AwsSpec {
    /// The AMI of every instance; unset: the newest Amazon Linux 2023 (x86_64) by Amazon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub bastion_type: String,
    pub master_type: String,
    pub node_type: String,
    /// Root volume size (encrypted gp3) of every instance.
    pub root_volume_gib: u32,
    /// One NAT gateway for all availability zones (cheaper; one zone's outage cuts every zone's egress).
    pub single_nat: bool,
    /// Who may reach NodePorts (30000-32767/tcp) on the nodes; empty: nobody.
    pub nodeport_cidrs: Vec<Ipv4Net>,
    /// A public Route 53 hosted zone (id) to hold `api.CLUSTER.DOMAIN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted_zone: Option<String>,
    /// The availability zones, in order (zone i holds subnets public-i and
    /// private-i); unset: the first apply picks them and pins them here, so
    /// that they never shift.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

impl Default for AwsSpec {
    fn default() -> Self {
        AwsSpec {
            image: None,
            bastion_type: "t3.micro".into(),
            master_type: "t3.medium".into(),
            node_type: "t3.medium".into(),
            root_volume_gib: 30,
            single_nat: false,
            nodeport_cidrs: Vec::new(),
            hosted_zone: None,
            zones: Vec::new(),
        }
    }
}

fn instance_type_ok(t: &str) -> bool {
    let Some((family, size)) = t.split_once('.') else { return false };
    let ok = |p: &str| {
        !p.is_empty() && p.len() <= 16 && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    ok(family) && ok(size)
}

fn ami_ok(id: &str) -> bool {
    id.strip_prefix("ami-").is_some_and(|h| {
        (8..=17).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// A Route 53 hosted zone id: uppercase letters and digits (AWS's start
/// with Z; emulators' need not).
fn hosted_zone_ok(id: &str) -> bool {
    (2..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Validity {
    pub ca_days: u32,
    pub leaf_days: u32,
}

impl Default for Validity {
    fn default() -> Self {
        Validity { ca_days: 3650, leaf_days: 365 }
    }
}

/// Why a spec is refused. Each names the field and what is allowed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("--masters {0}: the master count must be odd (etcd quorum) and between 1 and 7")]
    Masters(u32),
    #[error("--azs {0}: between 1 and 6 availability zones")]
    Azs(u32),
    #[error("--nodes {0}: at most 1000 nodes")]
    Nodes(u32),
    #[error("--region {0:?} is not an AWS region name (like eu-west-1)")]
    Region(String),
    #[error(
        "aws.zones {0:?}: expected one availability zone name of the region per zone the spec uses (azs), each once"
    )]
    Zones(Vec<String>),
    #[error("--kubernetes-version {0:?}: expected MAJOR.MINOR.PATCH, 1.{MIN_MINOR}.0 or newer")]
    Version(String),
    #[error("--domain {0}: a public domain needs at least two labels")]
    Domain(String),
    #[error("the API name {0} is longer than 253 characters")]
    ApiName(String),
    #[error("--vpc-cidr {0}: the prefix must be between /16 and /24")]
    VpcPrefix(Ipv4Net),
    #[error("--service-cidr {0}: the prefix must be between /12 and /28")]
    ServicePrefix(Ipv4Net),
    #[error("--pod-cidr {0}: the prefix must be between /8 and /24")]
    PodPrefix(Ipv4Net),
    #[error("{what} {net} is not a network address (did you mean {}?)", net.trunc())]
    NotNetwork { what: &'static str, net: Ipv4Net },
    #[error("{a_what} {a} overlaps {b_what} {b}")]
    Overlap { a_what: &'static str, a: Ipv4Net, b_what: &'static str, b: Ipv4Net },
    #[error("--vpc-cidr {0} is too small for {1} availability zones")]
    VpcTooSmall(Ipv4Net, u32),
    #[error("--admin-cidr 0.0.0.0/0 opens the bastion and the API to the whole internet; pass --allow-world-admin to accept that")]
    WorldAdmin,
    #[error("validity: CA {ca} days and leaf {leaf} days; leaves need 1 day or more and must not outlive their CA (at most 36500 days)")]
    Validity { ca: u32, leaf: u32 },
    #[error("aws.{0} {1:?} is not an EC2 instance type (like t3.medium)")]
    InstanceType(&'static str, String),
    #[error("aws.image {0:?} is not an AMI id (ami- and 8 or 17 hex digits)")]
    Image(String),
    #[error("aws.root-volume-gib {0}: between 8 and 16384")]
    RootVolume(u32),
    #[error(
        "aws.nodeport-cidrs {0}: NodePorts are never opened to the whole internet; name the networks that need them"
    )]
    WorldNodePorts(Ipv4Net),
    #[error("aws.hosted-zone {0:?} is not a Route 53 hosted zone id (like Z0123456789ABCDEFGHIJ)")]
    HostedZone(String),
    #[error("cluster.toml has format {0}, this kaws reads {FORMAT}")]
    Format(u32),
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// An AWS region name; at most 16 characters (the longest today has 14), so
/// that it fits in IAM names with the cluster's (see `aws::model::iam_name`).
fn region_ok(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    r.len() <= 16
        && parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

fn version_ok(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0] == "1"
        && parts[1].parse::<u32>().is_ok_and(|m| m >= MIN_MINOR)
}

impl AwsSpec {
    fn validate(&self) -> Result<(), SpecError> {
        for (what, t) in
            [("bastion-type", &self.bastion_type), ("master-type", &self.master_type), ("node-type", &self.node_type)]
        {
            if !instance_type_ok(t) {
                return Err(SpecError::InstanceType(what, t.clone()));
            }
        }
        if let Some(image) = self.image.as_ref().filter(|i| !ami_ok(i)) {
            return Err(SpecError::Image(image.clone()));
        }
        if !(8..=16384).contains(&self.root_volume_gib) {
            return Err(SpecError::RootVolume(self.root_volume_gib));
        }
        for net in &self.nodeport_cidrs {
            if net.prefix_len() == 0 {
                return Err(SpecError::WorldNodePorts(*net));
            }
            if *net != net.trunc() {
                return Err(SpecError::NotNetwork { what: "aws.nodeport-cidrs", net: *net });
            }
        }
        if let Some(zone) = self.hosted_zone.as_ref().filter(|z| !hosted_zone_ok(z)) {
            return Err(SpecError::HostedZone(zone.clone()));
        }
        Ok(())
    }
}

impl ClusterSpec {
    /// Checks every rule; a spec that passes is safe to derive from.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.format != FORMAT {
            return Err(SpecError::Format(self.format));
        }
        if self.masters % 2 == 0 || !(1..=7).contains(&self.masters) {
            return Err(SpecError::Masters(self.masters));
        }
        if !(1..=6).contains(&self.azs) {
            return Err(SpecError::Azs(self.azs));
        }
        if self.nodes > 1000 {
            return Err(SpecError::Nodes(self.nodes));
        }
        if !region_ok(&self.region) {
            return Err(SpecError::Region(self.region.clone()));
        }
        let zone_ok = |z: &String| {
            z.strip_prefix(self.region.as_str()).is_some_and(|rest| {
                (1..=16).contains(&rest.len())
                    && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
        };
        let mut unique = self.aws.zones.clone();
        unique.sort();
        unique.dedup();
        if !self.aws.zones.is_empty()
            && (self.aws.zones.len() != self.azs as usize
                || unique.len() != self.aws.zones.len()
                || !self.aws.zones.iter().all(zone_ok))
        {
            return Err(SpecError::Zones(self.aws.zones.clone()));
        }
        if !version_ok(&self.kubernetes_version) {
            return Err(SpecError::Version(self.kubernetes_version.clone()));
        }
        if self.domain.labels() < 2 {
            return Err(SpecError::Domain(self.domain.to_string()));
        }
        if self.api_name().len() > 253 {
            return Err(SpecError::ApiName(self.api_name()));
        }
        let nets =
            [("--vpc-cidr", self.vpc_cidr), ("--service-cidr", self.service_cidr), ("--pod-cidr", self.pod_cidr)];
        for (what, net) in nets.iter().copied().chain(self.admin_cidrs.iter().map(|n| ("--admin-cidr", *n))) {
            if net != net.trunc() {
                return Err(SpecError::NotNetwork { what, net });
            }
        }
        if !(16..=24).contains(&self.vpc_cidr.prefix_len()) {
            return Err(SpecError::VpcPrefix(self.vpc_cidr));
        }
        if !(12..=28).contains(&self.service_cidr.prefix_len()) {
            return Err(SpecError::ServicePrefix(self.service_cidr));
        }
        if !(8..=24).contains(&self.pod_cidr.prefix_len()) {
            return Err(SpecError::PodPrefix(self.pod_cidr));
        }
        for (i, (a_what, a)) in nets.iter().enumerate() {
            for (b_what, b) in &nets[i + 1..] {
                if overlaps(a, b) {
                    return Err(SpecError::Overlap { a_what, a: *a, b_what, b: *b });
                }
            }
        }
        if self.vpc_cidr.prefix_len() + self.subnet_bits() > 28 {
            return Err(SpecError::VpcTooSmall(self.vpc_cidr, self.azs));
        }
        if self.admin_cidrs.iter().any(|c| c.prefix_len() == 0) && !self.allow_world_admin {
            return Err(SpecError::WorldAdmin);
        }
        self.aws.validate()?;
        let v = self.validity;
        if v.leaf_days == 0 || v.ca_days > 36500 || v.leaf_days > v.ca_days {
            return Err(SpecError::Validity { ca: v.ca_days, leaf: v.leaf_days });
        }
        Ok(())
    }

    pub fn parse(text: &str) -> anyhow::Result<ClusterSpec> {
        let spec: ClusterSpec = toml::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("spec serializes");
        format!("# The cluster spec, written by `kaws cluster init`. See clusters/README.md.\n{body}")
    }

    /// The API's public name: `api.CLUSTER.DOMAIN`.
    pub fn api_name(&self) -> String {
        format!("api.{}.{}", self.name, self.domain)
    }

    /// Bits taken from the VPC prefix to cut one private and one public
    /// subnet per availability zone.
    fn subnet_bits(&self) -> u8 {
        let n = 2 * self.azs;
        (32 - (n - 1).leading_zeros()) as u8
    }

    /// The private subnets (one per AZ) then the public ones.
    pub fn subnets(&self) -> (Vec<Ipv4Net>, Vec<Ipv4Net>) {
        let prefix = self.vpc_cidr.prefix_len() + self.subnet_bits();
        let all: Vec<Ipv4Net> = self.vpc_cidr.subnets(prefix).expect("validated prefix").collect();
        let azs = self.azs as usize;
        (all[..azs].to_vec(), all[azs..2 * azs].to_vec())
    }

    /// Master `i`'s fixed private IP: the 10th address onwards of private
    /// subnet `i mod azs` (AWS reserves the first four).
    pub fn master_ip(&self, i: u32) -> Ipv4Addr {
        let (private, _) = self.subnets();
        let subnet = private[(i % self.azs) as usize];
        Ipv4Addr::from(u32::from(subnet.network()) + 10 + i / self.azs)
    }

    /// Master `i`'s node name and hostname: its private DNS name as EC2
    /// gives it (`ip-10-0-0-10.eu-west-1.compute.internal`, or
    /// `….ec2.internal` in us-east-1), which the AWS cloud provider expects
    /// of every node, and which kubeadm expects in the API server's and the
    /// member's etcd certificates.
    pub fn master_node_name(&self, i: u32) -> String {
        let ip = self.master_ip(i).to_string().replace('.', "-");
        match self.region.as_str() {
            "us-east-1" => format!("ip-{ip}.ec2.internal"),
            region => format!("ip-{ip}.{region}.compute.internal"),
        }
    }

    pub fn master_ips(&self) -> Vec<IpAddr> {
        (0..self.masters).map(|i| IpAddr::V4(self.master_ip(i))).collect()
    }

    /// The `kubernetes` Service's cluster IP: the service range's first address.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.service_cidr.network()) + 1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn spec() -> ClusterSpec {
        ClusterSpec {
            format: FORMAT,
            name: "prod".parse().unwrap(),
            domain: "example.com".parse().unwrap(),
            region: "eu-west-1".into(),
            kubernetes_version: DEFAULT_KUBERNETES.into(),
            masters: 3,
            nodes: 3,
            azs: 3,
            vpc_cidr: "10.0.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            pod_cidr: "192.168.0.0/16".parse().unwrap(),
            cluster_domain: "cluster.local".parse().unwrap(),
            admin_cidrs: vec!["203.0.113.0/24".parse().unwrap()],
            allow_world_admin: false,
            key_algorithm: KeyAlgorithm::EcdsaP256,
            validity: Validity::default(),
            aws: AwsSpec::default(),
        }
    }

    #[test]
    fn derived_addresses() {
        let s = spec();
        s.validate().unwrap();
        let (private, public) = s.subnets();
        assert_eq!(private[0].to_string(), "10.0.0.0/19");
        assert_eq!(public[2].to_string(), "10.0.160.0/19");
        assert_eq!(s.master_ips(), ["10.0.0.10", "10.0.32.10", "10.0.64.10"].map(|a| a.parse::<IpAddr>().unwrap()));
        assert_eq!(s.kubernetes_service_ip().to_string(), "10.96.0.1");
        assert_eq!(s.api_name(), "api.prod.example.com");
        let one = ClusterSpec { azs: 1, masters: 3, ..spec() };
        assert_eq!(one.master_ip(2).to_string(), "10.0.0.12");
        assert_eq!(ClusterSpec::parse(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn refusals() {
        let bad = [
            ClusterSpec { masters: 2, ..spec() },
            ClusterSpec { masters: 9, ..spec() },
            ClusterSpec { azs: 0, ..spec() },
            ClusterSpec { region: "moon".into(), ..spec() },
            ClusterSpec { region: "eu-west-1; rm".into(), ..spec() },
            ClusterSpec { kubernetes_version: "1.29.0".into(), ..spec() },
            ClusterSpec { kubernetes_version: "latest".into(), ..spec() },
            ClusterSpec { domain: "localhost".parse().unwrap(), ..spec() },
            ClusterSpec { service_cidr: "10.0.0.0/16".parse().unwrap(), ..spec() },
            ClusterSpec { pod_cidr: "10.0.128.0/17".parse().unwrap(), ..spec() },
            ClusterSpec { vpc_cidr: "10.0.0.1/16".parse().unwrap(), ..spec() },
            ClusterSpec { vpc_cidr: "10.0.0.0/8".parse().unwrap(), ..spec() },
            ClusterSpec { admin_cidrs: vec!["0.0.0.0/0".parse().unwrap()], ..spec() },
            ClusterSpec { validity: Validity { ca_days: 10, leaf_days: 20 }, ..spec() },
            ClusterSpec { aws: AwsSpec { master_type: "t3.medium; reboot".into(), ..AwsSpec::default() }, ..spec() },
            ClusterSpec { aws: AwsSpec { image: Some("ami-XYZ".into()), ..AwsSpec::default() }, ..spec() },
            ClusterSpec { aws: AwsSpec { root_volume_gib: 4, ..AwsSpec::default() }, ..spec() },
            ClusterSpec {
                aws: AwsSpec { nodeport_cidrs: vec!["0.0.0.0/0".parse().unwrap()], ..AwsSpec::default() },
                ..spec()
            },
            ClusterSpec { aws: AwsSpec { hosted_zone: Some("zone\n".into()), ..AwsSpec::default() }, ..spec() },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
        }
        let world = ClusterSpec { admin_cidrs: vec!["0.0.0.0/0".parse().unwrap()], allow_world_admin: true, ..spec() };
        assert!(world.validate().is_ok());
    }
}
