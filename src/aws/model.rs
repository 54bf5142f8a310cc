//! The desired resource graph of a cluster, derived from its spec alone: no
//! AWS call happens here. Each node has a typed key (also its `kaws:key`
//! tag), the keys it depends on, and what it must be (`Desired`, each
//! kind's `Want` in its module under `resources`). The graph is plain data:
//! `apply` runs it in dependency order and `destroy` deletes in the reverse.

use ipnet::Ipv4Net;

use super::key::{Host, Key, Role};
use super::naming::{iam_name, ssm_prefix};
use super::resources::{asg, dns, iam, instance, kms, lb, nat, rtb, ssm, subnet, volume, vpc, Desired, Kind};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug)]
pub struct Node {
    pub key: Key,
    /// The `kaws:role` tag: a group role, or `network` or `secrets`.
    pub role: &'static str,
    pub deps: Vec<Key>,
    pub want: Desired,
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
    let mut g: Vec<Node> = Vec::new();
    let mut add = |key: Key, role: &'static str, deps: Vec<Key>, want: Desired| {
        g.push(Node { key, role, deps, want });
    };
    let azs = spec.azs as usize;
    let (private, public) = spec.subnets();
    let publics: Vec<Key> = (0..azs).map(|zone| Key::Subnet { public: true, zone }).collect();
    let privates: Vec<Key> = (0..azs).map(|zone| Key::Subnet { public: false, zone }).collect();
    add(Key::Vpc, "network", vec![], Desired::Vpc(vpc::Want { cidr: spec.vpc_cidr }));
    add(Key::Igw, "network", vec![Key::Vpc], Desired::Igw);
    for (z, (pub_key, priv_key)) in publics.iter().zip(&privates).enumerate() {
        let want = subnet::Want { cidr: public[z], zone: z, public: true, reserved: vec![] };
        add(pub_key.clone(), "network", vec![Key::Vpc], Desired::Subnet(want));
        let want = subnet::Want { cidr: private[z], zone: z, public: false, reserved: master_addresses(spec, z) };
        add(priv_key.clone(), "network", vec![Key::Vpc], Desired::Subnet(want));
    }
    let nats = nat::count(spec);
    for (z, subnet) in publics.iter().enumerate().take(nats) {
        add(Key::Eip(z), "network", vec![], Desired::Eip);
        let want = nat::Want { subnet: subnet.clone(), address: Key::Eip(z) };
        // A NAT gateway in a VPC without an internet gateway fails.
        add(Key::Nat(z), "network", vec![subnet.clone(), Key::Eip(z), Key::Igw], Desired::Nat(want));
    }
    let deps = [vec![Key::Vpc, Key::Igw], publics.clone()].concat();
    let want = rtb::Want { default_route: Key::Igw, subnets: publics.clone() };
    add(Key::PublicRoutes, "network", deps, Desired::Rtb(want));
    for (z, subnet) in privates.iter().enumerate() {
        let nat = Key::Nat(if spec.aws.single_nat { 0 } else { z });
        let want = rtb::Want { default_route: nat.clone(), subnets: vec![subnet.clone()] };
        add(Key::PrivateRoutes(z), "network", vec![Key::Vpc, nat, subnet.clone()], Desired::Rtb(want));
    }
    for role in Role::ALL {
        add(Key::Group(role), role.as_str(), vec![Key::Vpc], Desired::Group(role));
    }
    for role in Role::ALL {
        let mut deps: Vec<Key> = Role::ALL.iter().map(|r| Key::Group(*r)).collect();
        // The API admits the cluster's own NAT addresses.
        if role == Role::Api {
            deps.extend((0..nats).map(Key::Eip));
        }
        add(Key::Rules(role), role.as_str(), deps, Desired::Rules(role));
    }
    let prefix = ssm_prefix(spec);
    let token = ssm::node_token(spec);
    let mut hosts = vec![(Host::Bastion, iam::Access::default())];
    for i in 0..spec.masters {
        // Masters join with the node token too, and renew it (see ssm).
        let reads = vec![format!("{prefix}/master/shared/*"), format!("{prefix}/master/{i}/*"), token.clone()];
        hosts.push((Host::Master(i), iam::Access { reads, writes: vec![token.clone()] }));
    }
    hosts.push((Host::Node, iam::Access { reads: vec![format!("{prefix}/node/*")], writes: vec![] }));
    let mut readers = Vec::new();
    for (host, ssm) in hosts {
        if !ssm.is_empty() {
            readers.push((Key::Iam(host), ssm.clone()));
        }
        let sees_instances = matches!(host, Host::Master(_));
        let reports = host != Host::Bastion;
        let want = iam::Want { name: iam_name(spec, &host.to_string()), ssm, sees_instances, reports };
        add(Key::Iam(host), host.role().as_str(), vec![], Desired::Iam(want));
    }
    // The key policy names the reader roles, so they come first.
    let roles = readers.iter().map(|(k, _)| k.clone()).collect();
    add(Key::Kms, "secrets", roles, Desired::Kms(kms::Want { readers }));
    let mut values = Vec::new();
    for (name, source) in ssm::parameters(spec) {
        let key = ssm::key(spec, &name).expect("a parameter under the prefix");
        // The generation announces the values: the agents act on it, so it
        // is written once every other parameter holds the new value.
        let deps = match source {
            ssm::Source::Generation => [vec![Key::Kms], values.clone()].concat(),
            _ => {
                values.push(key.clone());
                vec![Key::Kms]
            }
        };
        add(key, "secrets", deps, Desired::Param(ssm::Want { name, source }));
    }
    // A new group admits nothing, so the load balancer need not wait for
    // its rules; an internet-facing one needs the gateway attached.
    let deps = [vec![Key::Group(Role::Api), Key::Igw], publics.clone()].concat();
    add(Key::Lb, "api", deps, Desired::Lb(lb::Want { subnets: publics.clone() }));
    add(Key::Tg, "api", vec![Key::Vpc], Desired::Tg);
    add(Key::Listener, "api", vec![Key::Lb, Key::Tg], Desired::Listener);
    add(Key::Zone, "network", vec![Key::Vpc], Desired::Zone);
    let private_record = Key::Record { public: false };
    add(private_record.clone(), "network", vec![Key::Zone, Key::Lb], Desired::Record(dns::Want { public: false }));
    if spec.aws.hosted_zone.is_some() {
        add(Key::Record { public: true }, "api", vec![Key::Lb], Desired::Record(dns::Want { public: true }));
    }
    // Instances boot once their network, groups, rules, secrets and the
    // API's name exist, so that bootstrap can run straight through. The
    // bastion, in a public subnet, needs only its own group's rules.
    let mut boot = vec![Key::Rules(Role::Bastion), Key::Rules(Role::Master), Key::Rules(Role::Node)];
    boot.extend((0..azs).map(Key::PrivateRoutes));
    boot.push(Key::PublicRoutes);
    let bastion = Host::Bastion;
    add(
        Key::Instance(bastion),
        "bastion",
        vec![Key::Rules(Role::Bastion), Key::PublicRoutes, Key::Iam(bastion), Key::Group(Role::Bastion)],
        Desired::Instance(instance::Want { host: bastion, subnet: publics[0].clone(), ip: None, volume: None }),
    );
    let mut boot_k8s = boot;
    // The values, not the generation: an instance that starts before the
    // generation is written waits for it (its bootstrap retries).
    boot_k8s.extend(values);
    boot_k8s.push(private_record);
    let mut masters = Vec::new();
    for i in 0..spec.masters {
        let host = Host::Master(i);
        let zone = (i % spec.azs) as usize;
        let subnet = privates[zone].clone();
        // Its etcd data outlives the instance (see `resources::volume`).
        add(Key::Volume(i), "master", vec![], Desired::Volume(volume::Want { zone }));
        let deps = [boot_k8s.clone(), vec![Key::Iam(host), Key::Group(Role::Master), Key::Volume(i)]].concat();
        let want = instance::Want { host, subnet, ip: Some(spec.master_ip(i)), volume: Some(Key::Volume(i)) };
        add(Key::Instance(host), "master", deps, Desired::Instance(want));
        masters.push(Key::Instance(host));
    }
    let deps = [vec![Key::Tg], masters.clone()].concat();
    add(Key::Targets, "api", deps, Desired::Targets(lb::TargetsWant { instances: masters }));
    add(Key::Lt, "node", vec![Key::Iam(Host::Node), Key::Group(Role::Node)], Desired::Lt);
    let deps = [boot_k8s, vec![Key::Lt], privates.clone()].concat();
    add(Key::Asg, "node", deps, Desired::Asg(asg::Want { subnets: privates, size: spec.nodes }));
    g
}

/// The kinds each kind depends on, anywhere in the graph: what destroy
/// orders by (a resource goes before every kind it depends on).
pub fn kind_deps(graph: &[Node]) -> std::collections::BTreeMap<Kind, std::collections::BTreeSet<Kind>> {
    let kind_of: std::collections::HashMap<&Key, Kind> = graph.iter().map(|n| (&n.key, n.want.kind())).collect();
    let mut out: std::collections::BTreeMap<Kind, std::collections::BTreeSet<Kind>> = Default::default();
    for n in graph {
        let entry = out.entry(n.want.kind()).or_default();
        entry.extend(n.deps.iter().map(|d| kind_of[d]).filter(|k| *k != n.want.kind()));
    }
    out
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
}
