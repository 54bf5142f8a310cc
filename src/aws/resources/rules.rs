//! What may talk to what: the security group rules of each role, the single
//! source of truth for the cluster's network policy (see `docs/aws.md`),
//! in kaws' own terms (a role's group, a CIDR) rather than EC2's.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::aws::key::Role;
use crate::cluster::ClusterSpec;

/// The Kubernetes API port, on the load balancer and the masters.
pub const API_PORT: u16 = 6443;

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
pub const ANYWHERE: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::spec::tests::spec;

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
