//! What a plan entry shows beyond its reasons, Terraform-style: for a
//! create, the attributes that matter (CIDR, zone, address, type, image,
//! ports and peers); for an update, `field: old → new` where kaws knows both.

use super::model::{self, Kind, Node, API_PORT};
use super::naming;
use super::plan::{Action, Fix, State, Wanted};
use super::world::Found;
use crate::cluster::ClusterSpec;

/// The lines to show under one entry.
pub fn details(spec: &ClusterSpec, node: &Node, state: &State, wanted: &Wanted, action: &Action) -> Vec<String> {
    match action {
        Action::Create | Action::Replace { .. } => attributes(spec, node, state, wanted),
        Action::Update(fixes) => match state.get(&node.key) {
            Some(found) => fixes.iter().filter_map(|f| change(spec, node, state, wanted, found, f)).collect(),
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// A reference to another resource of the graph: its id once it exists.
fn refer(state: &State, key: &str) -> String {
    match state.id(key) {
        Some(id) => format!("{key} ({id})"),
        None => format!("{key} (new)"),
    }
}

fn refs(state: &State, keys: &[String]) -> String {
    keys.iter().map(|k| refer(state, k)).collect::<Vec<_>>().join(", ")
}

fn attributes(spec: &ClusterSpec, node: &Node, state: &State, wanted: &Wanted) -> Vec<String> {
    let kv = |k: &str, v: String| format!("{k:<14} = {v}");
    let image = || wanted.image.clone().unwrap_or_else(|| "(resolved at apply)".into());
    match &node.kind {
        Kind::Vpc { cidr } => vec![kv("cidr", cidr.to_string()), kv("dns", "support and hostnames on".into())],
        Kind::InternetGateway => vec![kv("attached to", refer(state, "vpc"))],
        Kind::Subnet { cidr, zone, public, reserved } => {
            let mut v = vec![
                kv("cidr", cidr.to_string()),
                kv("zone", state.world.zones.get(*zone).cloned().unwrap_or_else(|| format!("zone {zone}"))),
                kv("public", public.to_string()),
            ];
            if !reserved.is_empty() {
                let list: Vec<String> = reserved.iter().map(|r| r.to_string()).collect();
                v.push(kv("reserved", format!("{} (the masters' addresses)", list.join(", "))));
            }
            v
        }
        Kind::Address => vec![kv("domain", "vpc".into())],
        Kind::NatGateway { subnet, address } => {
            vec![kv("subnet", refer(state, subnet)), kv("address", refer(state, address))]
        }
        Kind::RouteTable { default_route, subnets } => {
            vec![kv("0.0.0.0/0", refer(state, default_route)), kv("subnets", refs(state, subnets))]
        }
        Kind::SecurityGroup(role) => vec![
            kv("name", format!("kaws-{}-{}", spec.name, role.as_str())),
            kv("vpc", refer(state, "vpc")),
            kv("rules", format!("rules/{} (no rule until then)", role.as_str())),
        ],
        Kind::Iam { name, ssm_paths } => vec![
            kv("name", name.clone()),
            kv("path", naming::iam_path(spec)),
            kv("reads", if ssm_paths.is_empty() { "nothing".into() } else { ssm_paths.join(", ") }),
        ],
        Kind::KmsKey { readers } => {
            let who: Vec<&str> = readers.iter().map(|(k, _)| k.as_str()).collect();
            vec![kv("alias", naming::kms_alias(spec)), kv("decrypts for", format!("{} (through SSM)", who.join(", ")))]
        }
        Kind::Parameter { name, source } => {
            vec![kv("name", name.clone()), kv("from", source.clone()), kv("key", naming::kms_alias(spec))]
        }
        Kind::Instance { subnet, ip, role, .. } => {
            let itype = if *role == model::Role::Bastion { &spec.aws.bastion_type } else { &spec.aws.master_type };
            vec![
                kv("type", itype.clone()),
                kv("address", ip.map_or_else(|| "any".into(), |ip| ip.to_string())),
                kv("subnet", refer(state, subnet)),
                kv("image", image()),
                kv("root volume", format!("{} GiB gp3, encrypted", spec.aws.root_volume_gib)),
            ]
        }
        Kind::LaunchTemplate { .. } => vec![
            kv("type", spec.aws.node_type.clone()),
            kv("image", image()),
            kv("root volume", format!("{} GiB gp3, encrypted", spec.aws.root_volume_gib)),
        ],
        Kind::AutoScalingGroup { subnets, size } => {
            vec![kv("size", format!("{size} (min = max = desired)")), kv("subnets", refs(state, subnets))]
        }
        Kind::LoadBalancer { subnets } => vec![
            kv("type", "network, internet-facing".into()),
            kv("subnets", refs(state, subnets)),
            kv("group", refer(state, "sg/api")),
        ],
        Kind::TargetGroup => vec![kv("port", format!("{API_PORT}/tcp")), kv("vpc", refer(state, "vpc"))],
        Kind::Listener => vec![kv("port", format!("{API_PORT}/tcp")), kv("forwards to", refer(state, "tg/api"))],
        Kind::PrivateZone => vec![kv("name", naming::zone_name(spec)), kv("vpc", refer(state, "vpc"))],
        Kind::ApiRecord { .. } => {
            vec![kv("name", naming::api_record(spec)), kv("alias of", refer(state, "lb/api"))]
        }
        Kind::Rules(_) | Kind::Targets { .. } => Vec::new(),
    }
}

/// One fix as `field: old → new`, where both are known.
fn change(spec: &ClusterSpec, node: &Node, state: &State, wanted: &Wanted, found: &Found, fix: &Fix) -> Option<String> {
    let arrow = |field: &str, old: &str, new: &str| Some(format!("{field}: {old} → {new}"));
    match (fix, &node.kind) {
        (Fix::VpcDns, _) => arrow("dns support and hostnames", "off", "on"),
        (Fix::Size, Kind::AutoScalingGroup { subnets, size }) => {
            let old = found.size.map_or_else(|| "?".into(), |(a, b, c)| format!("{a}/{b}/{c}"));
            let ids: Vec<&str> = subnets.iter().filter_map(|s| state.id(s)).collect();
            Some(format!(
                "size (min/max/desired): {old} → {size}/{size}/{size}; subnets: {} → {}",
                found.links.join(","),
                ids.join(",")
            ))
        }
        (Fix::Version, _) => arrow(
            "configuration",
            found.config.as_deref().unwrap_or("none"),
            wanted.config.get(&node.key).map_or("?", String::as_str),
        ),
        (Fix::Value, _) => arrow(
            "source",
            found.config.as_deref().unwrap_or("none"),
            wanted.markers.get(&node.key).map_or("?", String::as_str),
        ),
        (Fix::Route { dest, target }, _) => {
            let old = found.routes.iter().find(|(d, _)| d == dest).map_or("none", |(_, t)| t.as_str());
            arrow(dest, old, &refer(state, target))
        }
        (Fix::SecurityGroups, _) => arrow("security groups", &found.links.join(","), &refer(state, "sg/api")),
        (Fix::Alias, _) => {
            let lb = state.get("lb/api").and_then(|l| l.dns.as_ref()).map_or("?", |(d, _)| d.as_str());
            arrow("alias of", found.config.as_deref().unwrap_or("none"), &lb.to_lowercase())
        }
        (Fix::Policy, Kind::Iam { ssm_paths, .. }) => {
            let reads = if ssm_paths.is_empty() { "nothing".into() } else { ssm_paths.join(", ") };
            Some(format!("inline policy: now reads {reads} (under {})", naming::ssm_prefix(spec)))
        }
        _ => None,
    }
}
