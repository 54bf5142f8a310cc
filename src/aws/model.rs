//! The desired resource graph of a cluster, derived from its spec alone: no
//! AWS call happens here. Each node has a stable logical key (also its
//! `kaws:key` tag), the keys it depends on, and what it must look like.
//! Security group rules are the single source of truth for what may talk to
//! what (see `docs/aws.md`).

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::naming::{iam_name, ssm_prefix};
use crate::cluster::ClusterSpec;
use crate::render::context::SHARED_MASTER_KEYS;

/// The Kubernetes API port, on the load balancer and the masters.
pub const API_PORT: u16 = 6443;

/// A security group's role (also its `kaws:role` tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Bastion,
    Api,
    Master,
    Node,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Bastion, Role::Api, Role::Master, Role::Node];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bastion => "bastion",
            Role::Api => "api",
            Role::Master => "master",
            Role::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The other end of a security group rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Cidr(Ipv4Net),
    Group(Role),
    /// Anything kaws does not manage (an IPv6 range, a prefix list, another
    /// group): only ever found in AWS, and always revoked.
    Foreign(String),
}

/// An IP protocol as EC2 names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    /// IP-in-IP (protocol 4), Calico's encapsulation between hosts.
    IpInIp,
    All,
    Other(String),
}

impl Proto {
    pub fn as_aws(&self) -> &str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::IpInIp => "4",
            Proto::All => "-1",
            Proto::Other(s) => s,
        }
    }

    pub fn from_aws(s: &str) -> Proto {
        match s {
            "tcp" | "6" => Proto::Tcp,
            "udp" | "17" => Proto::Udp,
            "4" | "ipencap" | "ipip" => Proto::IpInIp,
            "-1" | "all" => Proto::All,
            other => Proto::Other(other.to_owned()),
        }
    }

    fn has_ports(&self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

/// One security group rule: a protocol, a port range (tcp/udp only) and a peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub proto: Proto,
    pub from: i32,
    pub to: i32,
    pub peer: Peer,
}

impl Rule {
    fn tcp(from: u16, to: u16, peer: Peer) -> Rule {
        Rule { proto: Proto::Tcp, from: from.into(), to: to.into(), peer }
    }

    fn ipip(peer: Peer) -> Rule {
        Rule { proto: Proto::IpInIp, from: -1, to: -1, peer }
    }

    /// Normalizes what EC2 reports (ports of portless protocols vary).
    pub fn new(proto: Proto, from: Option<i32>, to: Option<i32>, peer: Peer) -> Rule {
        if proto.has_ports() {
            Rule { proto, from: from.unwrap_or(-1), to: to.unwrap_or(-1), peer }
        } else {
            Rule { proto, from: -1, to: -1, peer }
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Peer::Cidr(c) => write!(f, "{c}"),
            Peer::Group(r) => write!(f, "group {}", r.as_str()),
            Peer::Foreign(s) => write!(f, "{s}"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match (&self.proto, self.from == self.to) {
            (Proto::IpInIp, _) => write!(f, "ip-in-ip (protocol 4) {}", self.peer),
            (Proto::All, _) => write!(f, "all traffic {}", self.peer),
            (p, true) => write!(f, "{}/{} {}", self.from, p.as_aws(), self.peer),
            (p, false) => write!(f, "{}-{}/{} {}", self.from, self.to, p.as_aws(), self.peer),
        }
    }
}

/// Calico between hosts, both ways: BGP (179/tcp) and IP-in-IP (protocol 4)
/// with the master and node groups.
fn calico(rules: &mut BTreeSet<Rule>) {
    for g in [Role::Master, Role::Node] {
        rules.insert(Rule::tcp(179, 179, Peer::Group(g)));
        rules.insert(Rule::ipip(Peer::Group(g)));
    }
}

const NODEPORTS: (u16, u16) = (30000, 32767);
const ANYWHERE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);

/// What may reach a role's instances. `nat` is the cluster's own NAT
/// addresses: instances reach the API's public load balancer through them.
pub fn ingress(spec: &ClusterSpec, role: Role, nat: &[Ipv4Addr]) -> BTreeSet<Rule> {
    use Peer::Group as G;
    use Role::*;
    let admins = spec.admin_cidrs.iter().map(|c| Peer::Cidr(*c));
    let mut rules = BTreeSet::new();
    match role {
        Bastion => rules.extend(admins.map(|p| Rule::tcp(22, 22, p))),
        Api => {
            rules.extend(admins.map(|p| Rule::tcp(API_PORT, API_PORT, p)));
            for ip in nat {
                rules.insert(Rule::tcp(API_PORT, API_PORT, Peer::Cidr(Ipv4Net::from(*ip))));
            }
        }
        Master => {
            for g in [Api, Node, Master] {
                rules.insert(Rule::tcp(API_PORT, API_PORT, G(g)));
            }
            rules.insert(Rule::tcp(2379, 2380, G(Master)));
            for port in [10250, 10257, 10259] {
                rules.insert(Rule::tcp(port, port, G(Master)));
            }
            rules.insert(Rule::tcp(22, 22, G(Bastion)));
            calico(&mut rules);
        }
        Node => {
            rules.insert(Rule::tcp(10250, 10250, G(Master)));
            rules.insert(Rule::tcp(22, 22, G(Bastion)));
            calico(&mut rules);
            for c in &spec.aws.nodeport_cidrs {
                rules.insert(Rule::tcp(NODEPORTS.0, NODEPORTS.1, Peer::Cidr(*c)));
            }
        }
    }
    rules
}

/// Where a role's instances may connect: the mirror of the ingress rules,
/// plus HTTPS and the API port to the internet for the hosts (packages,
/// images, AWS APIs, and the API's public load balancer through NAT).
/// Amazon DNS, NTP and instance metadata are not filtered by groups.
pub fn egress(role: Role) -> BTreeSet<Rule> {
    use Peer::Group as G;
    use Role::*;
    let mut rules = BTreeSet::new();
    let internet = |rules: &mut BTreeSet<Rule>, ports: &[u16]| {
        for p in ports {
            rules.insert(Rule::tcp(*p, *p, Peer::Cidr(ANYWHERE)));
        }
    };
    match role {
        Bastion => {
            rules.insert(Rule::tcp(22, 22, G(Master)));
            rules.insert(Rule::tcp(22, 22, G(Node)));
            internet(&mut rules, &[443]);
        }
        Api => {
            rules.insert(Rule::tcp(API_PORT, API_PORT, G(Master)));
        }
        Master => {
            rules.insert(Rule::tcp(API_PORT, API_PORT, G(Master)));
            rules.insert(Rule::tcp(2379, 2380, G(Master)));
            for port in [10250, 10257, 10259] {
                rules.insert(Rule::tcp(port, port, G(Master)));
            }
            rules.insert(Rule::tcp(10250, 10250, G(Node)));
            calico(&mut rules);
            internet(&mut rules, &[443, API_PORT]);
        }
        Node => {
            rules.insert(Rule::tcp(API_PORT, API_PORT, G(Master)));
            calico(&mut rules);
            internet(&mut rules, &[443, API_PORT]);
        }
    }
    rules
}

/// What a node of the graph is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Vpc {
        cidr: Ipv4Net,
    },
    InternetGateway,
    Subnet {
        cidr: Ipv4Net,
        zone: usize,
        public: bool,
        /// The masters' fixed addresses in it, reserved (an explicit subnet
        /// CIDR reservation) so that AWS gives them to nothing else, such as
        /// a node the Auto Scaling group launches while a master is down.
        reserved: Vec<Ipv4Net>,
    },
    /// An Elastic IP for a NAT gateway.
    Address,
    NatGateway {
        subnet: String,
        address: String,
    },
    RouteTable {
        default_route: String,
        subnets: Vec<String>,
    },
    SecurityGroup(Role),
    Rules(Role),
    /// An IAM role, its instance profile and its inline policy, all named `name`.
    Iam {
        name: String,
        ssm_paths: Vec<String>,
    },
    /// The cluster's own KMS key, which encrypts its SSM parameters; its key
    /// policy lets each reader role (an `iam/…` key) decrypt only its own
    /// parameter paths, and only through SSM.
    KmsKey {
        readers: Vec<(String, Vec<String>)>,
    },
    /// An SSM SecureString, its value decrypted from `source` (a sealed file).
    Parameter {
        name: String,
        source: String,
    },
    Instance {
        index: Option<u32>,
        subnet: String,
        ip: Option<Ipv4Addr>,
        iam: String,
        role: Role,
    },
    LaunchTemplate {
        iam: String,
    },
    AutoScalingGroup {
        subnets: Vec<String>,
        size: u32,
    },
    LoadBalancer {
        subnets: Vec<String>,
    },
    TargetGroup,
    Listener,
    Targets {
        instances: Vec<String>,
    },
    /// The VPC's private hosted zone `CLUSTER.DOMAIN`, where instances find the API.
    PrivateZone,
    /// `api.CLUSTER.DOMAIN` as an alias of the load balancer, in the private zone or the spec's public one.
    ApiRecord {
        public: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Node {
    pub key: String,
    /// The `kaws:role` tag: a group role, or `network`, `iam`, `secrets`.
    pub role: &'static str,
    pub deps: Vec<String>,
    pub kind: Kind,
}

/// Every SSM parameter and the sealed file (under the cluster directory) it comes from.
pub fn parameters(spec: &ClusterSpec) -> Vec<(String, String)> {
    let prefix = ssm_prefix(spec);
    let token = crate::cluster::token::SEALED_FILE.to_owned();
    let mut out: Vec<(String, String)> =
        SHARED_MASTER_KEYS.iter().map(|k| (format!("{prefix}/master/shared/{k}"), format!("pki/{k}.pgp"))).collect();
    out.push((format!("{prefix}/master/shared/bootstrap-token"), token.clone()));
    for i in 0..spec.masters {
        for kind in ["server", "peer"] {
            out.push((format!("{prefix}/master/{i}/etcd/{kind}.key"), format!("pki/etcd/{kind}-{i}.key.pgp")));
        }
    }
    out.push((format!("{prefix}/node/bootstrap-token"), token));
    out
}

/// The fewest CIDR blocks that cover exactly the masters' addresses in
/// private subnet `zone` (consecutive; see `ClusterSpec::master_ip`).
fn master_addresses(spec: &ClusterSpec, zone: usize) -> Vec<Ipv4Net> {
    let ips: Vec<std::net::Ipv4Addr> =
        (0..spec.masters).filter(|i| (i % spec.azs) as usize == zone).map(|i| spec.master_ip(i)).collect();
    match (ips.first(), ips.last()) {
        (Some(first), Some(last)) => ipnet::Ipv4Subnets::new(*first, *last, 0).collect(),
        _ => vec![],
    }
}

/// The whole graph, in an order where every node comes after its dependencies.
pub fn graph(spec: &ClusterSpec) -> Vec<Node> {
    let mut g = Vec::new();
    let mut add = |key: String, role: &'static str, deps: Vec<String>, kind: Kind| {
        g.push(Node { key, role, deps, kind });
    };
    let azs = spec.azs as usize;
    let (private, public) = spec.subnets();
    add("vpc".into(), "network", vec![], Kind::Vpc { cidr: spec.vpc_cidr });
    add("igw".into(), "network", vec!["vpc".into()], Kind::InternetGateway);
    for z in 0..azs {
        add(
            format!("subnet/public-{z}"),
            "network",
            vec!["vpc".into()],
            Kind::Subnet { cidr: public[z], zone: z, public: true, reserved: vec![] },
        );
        add(
            format!("subnet/private-{z}"),
            "network",
            vec!["vpc".into()],
            Kind::Subnet { cidr: private[z], zone: z, public: false, reserved: master_addresses(spec, z) },
        );
    }
    let nats = if spec.aws.single_nat { 1 } else { azs };
    for z in 0..nats {
        add(format!("eip/nat-{z}"), "network", vec![], Kind::Address);
        let (subnet, address) = (format!("subnet/public-{z}"), format!("eip/nat-{z}"));
        // A NAT gateway in a VPC without an internet gateway fails.
        add(
            format!("nat/{z}"),
            "network",
            vec![subnet.clone(), address.clone(), "igw".into()],
            Kind::NatGateway { subnet, address },
        );
    }
    let publics: Vec<String> = (0..azs).map(|z| format!("subnet/public-{z}")).collect();
    let privates: Vec<String> = (0..azs).map(|z| format!("subnet/private-{z}")).collect();
    let mut deps = vec!["vpc".to_owned(), "igw".to_owned()];
    deps.extend(publics.iter().cloned());
    add(
        "rtb/public".into(),
        "network",
        deps,
        Kind::RouteTable { default_route: "igw".into(), subnets: publics.clone() },
    );
    for z in 0..azs {
        let nat = format!("nat/{}", if spec.aws.single_nat { 0 } else { z });
        let subnet = format!("subnet/private-{z}");
        add(
            format!("rtb/private-{z}"),
            "network",
            vec!["vpc".into(), nat.clone(), subnet.clone()],
            Kind::RouteTable { default_route: nat, subnets: vec![subnet] },
        );
    }
    for role in Role::ALL {
        add(format!("sg/{}", role.as_str()), role.as_str(), vec!["vpc".into()], Kind::SecurityGroup(role));
    }
    for role in Role::ALL {
        let mut deps: Vec<String> = Role::ALL.iter().map(|r| format!("sg/{}", r.as_str())).collect();
        if role == Role::Api {
            deps.extend((0..nats).map(|z| format!("eip/nat-{z}")));
        }
        add(format!("rules/{}", role.as_str()), role.as_str(), deps, Kind::Rules(role));
    }
    let prefix = ssm_prefix(spec);
    add("iam/bastion".into(), "bastion", vec![], Kind::Iam { name: iam_name(spec, "bastion"), ssm_paths: vec![] });
    for i in 0..spec.masters {
        add(
            format!("iam/master-{i}"),
            "master",
            vec![],
            Kind::Iam {
                name: iam_name(spec, &format!("master-{i}")),
                ssm_paths: vec![format!("{prefix}/master/shared/*"), format!("{prefix}/master/{i}/*")],
            },
        );
    }
    add(
        "iam/node".into(),
        "node",
        vec![],
        Kind::Iam { name: iam_name(spec, "node"), ssm_paths: vec![format!("{prefix}/node/*")] },
    );
    let readers: Vec<(String, Vec<String>)> = g
        .iter()
        .filter_map(|n| match &n.kind {
            Kind::Iam { ssm_paths, .. } if !ssm_paths.is_empty() => Some((n.key.clone(), ssm_paths.clone())),
            _ => None,
        })
        .collect();
    let roles: Vec<String> = readers.iter().map(|(k, _)| k.clone()).collect();
    let mut add = |key: String, role: &'static str, deps: Vec<String>, kind: Kind| {
        g.push(Node { key, role, deps, kind });
    };
    // The key policy names the reader roles, so they come first.
    add("kms/secrets".into(), "secrets", roles, Kind::KmsKey { readers });
    let mut params = Vec::new();
    for (name, source) in parameters(spec) {
        let key = format!("ssm{}", name.strip_prefix(&prefix).expect("under the prefix"));
        params.push(key.clone());
        add(key, "secrets", vec!["kms/secrets".into()], Kind::Parameter { name, source });
    }
    add(
        "lb/api".into(),
        "api",
        // A new group admits nothing, so the load balancer need not wait
        // for its rules; an internet-facing one needs the gateway attached.
        vec!["sg/api".into(), "igw".into()].into_iter().chain(publics.iter().cloned()).collect(),
        Kind::LoadBalancer { subnets: publics.clone() },
    );
    add("tg/api".into(), "api", vec!["vpc".into()], Kind::TargetGroup);
    add("listener/api".into(), "api", vec!["lb/api".into(), "tg/api".into()], Kind::Listener);
    add("zone/private".into(), "network", vec!["vpc".into()], Kind::PrivateZone);
    add(
        "dns/private".into(),
        "network",
        vec!["zone/private".into(), "lb/api".into()],
        Kind::ApiRecord { public: false },
    );
    if spec.aws.hosted_zone.is_some() {
        add("dns/public".into(), "api", vec!["lb/api".into()], Kind::ApiRecord { public: true });
    }
    // Instances boot once their network, groups, rules, secrets and the
    // API's name exist, so that bootstrap can run straight through. The
    // bastion, in a public subnet, needs only its own group's rules.
    let mut boot = vec!["rules/bastion".to_owned(), "rules/master".to_owned(), "rules/node".to_owned()];
    boot.extend((0..azs).map(|z| format!("rtb/private-{z}")));
    boot.push("rtb/public".into());
    add(
        "instance/bastion".into(),
        "bastion",
        vec!["rules/bastion".into(), "rtb/public".into(), "iam/bastion".into(), "sg/bastion".into()],
        Kind::Instance {
            index: None,
            subnet: "subnet/public-0".into(),
            ip: None,
            iam: "iam/bastion".into(),
            role: Role::Bastion,
        },
    );
    let mut masters = Vec::new();
    let mut boot_k8s = boot.clone();
    boot_k8s.extend(params.iter().cloned());
    boot_k8s.push("dns/private".into());
    for i in 0..spec.masters {
        let key = format!("instance/master-{i}");
        let subnet = format!("subnet/private-{}", i % spec.azs);
        let iam = format!("iam/master-{i}");
        add(
            key.clone(),
            "master",
            [boot_k8s.clone(), vec![iam.clone(), "sg/master".into()]].concat(),
            Kind::Instance { index: Some(i), subnet, ip: Some(spec.master_ip(i)), iam, role: Role::Master },
        );
        masters.push(key);
    }
    add(
        "targets/api".into(),
        "api",
        [vec!["tg/api".to_owned()], masters.clone()].concat(),
        Kind::Targets { instances: masters },
    );
    add(
        "lt/node".into(),
        "node",
        vec!["iam/node".into(), "sg/node".into()],
        Kind::LaunchTemplate { iam: "iam/node".into() },
    );
    add(
        "asg/node".into(),
        "node",
        [boot_k8s, vec!["lt/node".into()], privates.clone()].concat(),
        Kind::AutoScalingGroup { subnets: privates, size: spec.nodes },
    );
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::spec::tests::spec;

    #[test]
    fn graph_is_ordered_and_closed() {
        for s in [spec(), ClusterSpec { azs: 1, masters: 1, ..spec() }] {
            let g = graph(&s);
            let mut seen = std::collections::HashSet::new();
            for n in &g {
                for d in &n.deps {
                    assert!(seen.contains(d), "{} depends on {d}, which comes later or not at all", n.key);
                }
                assert!(seen.insert(n.key.clone()), "duplicate key {}", n.key);
            }
        }
    }

    #[test]
    fn the_masters_addresses_are_reserved_exactly() {
        let cidrs = |s: &ClusterSpec, z| master_addresses(s, z).iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let three = spec();
        for z in 0..3 {
            assert_eq!(cidrs(&three, z), [three.master_ip(z as u32).to_string() + "/32"]);
        }
        let one = ClusterSpec { azs: 1, masters: 7, ..spec() };
        assert_eq!(cidrs(&one, 0), ["10.0.0.10/31", "10.0.0.12/30", "10.0.0.16/32"]);
        let five = ClusterSpec { azs: 3, masters: 5, ..spec() };
        assert_eq!(cidrs(&five, 2), ["10.0.64.10/32"]);
        assert_eq!(cidrs(&five, 0), ["10.0.0.10/31"]);
    }

    #[test]
    fn no_group_is_open_to_the_world() {
        let s = spec();
        for role in Role::ALL {
            for r in ingress(&s, role, &["198.51.100.7".parse().unwrap()]) {
                assert_ne!(r.peer, Peer::Cidr(ANYWHERE), "{role:?} {r}");
                assert_ne!(r.proto, Proto::All, "{role:?} {r}");
            }
        }
        let kubelet: Vec<_> = Role::ALL
            .iter()
            .flat_map(|r| ingress(&s, *r, &[]).into_iter().map(move |rule| (*r, rule)))
            .filter(|(_, r)| r.from <= 10250 && r.to >= 10250)
            .collect();
        assert!(kubelet.iter().all(|(_, r)| r.peer == Peer::Group(Role::Master)), "{kubelet:?}");
    }
}
