//! What exists: every resource tagged `kaws:cluster=CLUSTER` (EC2, Auto
//! Scaling, ELBv2, Route 53), under the cluster's IAM path, or under its SSM
//! prefix, found with one listing call per resource type, all at once.
//! Resources are matched to the graph by their `kaws:key` tag, never by
//! assumption; a key found twice (a create whose answer was lost) is kept
//! once and the rest is deleted by `apply`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::{Filter, InstanceStateName, IpPermission};

use super::model::{Peer, Proto, Role, Rule};
use super::naming::{self, api_record, owner_marker, zone_name, POLICY, TAG_CLUSTER, TAG_KEY};
use super::{Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

/// One resource as found. Fields that do not apply to its kind stay empty.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The id AWS addresses it by (an id, an ARN or a name).
    pub id: String,
    pub state: Option<String>,
    pub cidr: Option<String>,
    pub zone: Option<String>,
    pub public_ip: Option<String>,
    /// Load balancer: DNS name and canonical hosted zone.
    pub dns: Option<(String, String)>,
    /// `kaws:config` tag (instances, launch template), the source marker
    /// (SSM parameter), the alias target (DNS record).
    pub config: Option<String>,
    /// Attachments: IGW → VPCs; NAT → allocation; instance profile → roles;
    /// target group → registered instances; ASG → subnets.
    pub links: Vec<String>,
    /// Route table: (association id, subnet id), and (destination, target).
    pub assoc: Vec<(String, String)>,
    /// Subnet: its explicit CIDR reservations, (reservation id, CIDR).
    pub reserved: Vec<(String, String)>,
    pub routes: Vec<(String, String)>,
    pub ingress: BTreeSet<Rule>,
    pub egress: BTreeSet<Rule>,
    /// ASG: (min, max, desired).
    pub size: Option<(i32, i32, i32)>,
    /// Route 53: a record's sets as found (the API's A record and its
    /// ownership marker), or the records in a zone that kaws did not make.
    pub records: Vec<aws_sdk_route53::types::ResourceRecordSet>,
    /// IAM: the inline policy `kaws`, and whether the instance profile exists.
    pub policy: Option<serde_json::Value>,
    pub profile: bool,
}

/// Everything found for a cluster.
#[derive(Debug, Default)]
pub struct World {
    /// The region's availability zones kaws uses, in order.
    pub zones: Vec<String>,
    pub found: BTreeMap<String, Vec<Found>>,
}

impl World {
    pub fn get(&self, key: &str) -> Option<&Found> {
        self.found.get(key).and_then(|v| v.first())
    }

    fn put(&mut self, key: impl Into<String>, f: Found) {
        self.found.entry(key.into()).or_default().push(f);
    }
}

pub fn tag<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>, key: &str) -> Option<String> {
    tags.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_owned())
}

fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> impl Iterator<Item = (&str, &str)> {
    tags.iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")))
}

fn by_cluster(spec: &ClusterSpec) -> Filter {
    Filter::builder().name(format!("tag:{TAG_CLUSTER}")).values(spec.name.to_string()).build()
}

/// Security group rules in kaws' terms; groups of the cluster become roles.
fn rules(perms: &[IpPermission], groups: &HashMap<String, Role>) -> BTreeSet<Rule> {
    let mut out = BTreeSet::new();
    for p in perms {
        let proto = Proto::from_aws(p.ip_protocol().unwrap_or("-1"));
        let rule = |peer| Rule::new(proto.clone(), p.from_port(), p.to_port(), peer);
        for r in p.ip_ranges() {
            let cidr = r.cidr_ip().unwrap_or_default();
            out.insert(rule(cidr.parse().map(Peer::Cidr).unwrap_or_else(|_| Peer::Foreign(cidr.to_owned()))));
        }
        for r in p.ipv6_ranges() {
            out.insert(rule(Peer::Foreign(r.cidr_ipv6().unwrap_or_default().to_owned())));
        }
        for r in p.prefix_list_ids() {
            out.insert(rule(Peer::Foreign(r.prefix_list_id().unwrap_or_default().to_owned())));
        }
        for g in p.user_id_group_pairs() {
            let id = g.group_id().unwrap_or_default();
            out.insert(rule(groups.get(id).map_or_else(|| Peer::Foreign(id.to_owned()), |r| Peer::Group(*r))));
        }
    }
    out
}

/// Finds everything of the cluster. Read-only: Describe, List and Get calls.
pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<World> {
    let (ec2, other) = tokio::try_join!(discover_ec2(aws, spec), discover_rest(aws, spec))?;
    let mut world = ec2;
    for (k, v) in other.found {
        world.found.entry(k).or_default().extend(v);
    }
    // The one kept of a key found twice is a live one: a failed NAT
    // gateway beside an available one is the surplus, not the other way.
    for found in world.found.values_mut() {
        found.sort_by_key(|f| f.state.as_deref() == Some("failed"));
    }
    Ok(world)
}

async fn discover_ec2(aws: &Aws, spec: &ClusterSpec) -> Result<World> {
    let c = &aws.ec2;
    let f = || by_cluster(spec);
    let live_nats = Filter::builder()
        .name("state")
        .set_values(Some(vec!["pending".into(), "available".into(), "failed".into()]))
        .build();
    let (zones, vpcs, igws, subnets, addrs, nats, rtbs, sgs, instances, lts, keys) = tokio::try_join!(
        async {
            // Availability Zones only: an account's opted-in Local and
            // Wavelength Zones sort among them but lack most services.
            c.describe_availability_zones()
                .filters(Filter::builder().name("state").values("available").build())
                .filters(Filter::builder().name("zone-type").values("availability-zone").build())
                .send()
                .await
                .call("DescribeAvailabilityZones")
        },
        async { c.describe_vpcs().filters(f()).send().await.call("DescribeVpcs") },
        async { c.describe_internet_gateways().filters(f()).send().await.call("DescribeInternetGateways") },
        async { c.describe_subnets().filters(f()).send().await.call("DescribeSubnets") },
        async { c.describe_addresses().filters(f()).send().await.call("DescribeAddresses") },
        async {
            c.describe_nat_gateways().filter(f()).filter(live_nats.clone()).send().await.call("DescribeNatGateways")
        },
        async { c.describe_route_tables().filters(f()).send().await.call("DescribeRouteTables") },
        async { c.describe_security_groups().filters(f()).send().await.call("DescribeSecurityGroups") },
        async {
            let pages: Vec<_> = c.describe_instances().filters(f()).into_paginator().send().collect::<Vec<_>>().await;
            pages.into_iter().collect::<Result<Vec<_>, _>>().call("DescribeInstances")
        },
        async { c.describe_launch_templates().filters(f()).send().await.call("DescribeLaunchTemplates") },
        async { c.describe_key_pairs().filters(f()).send().await.call("DescribeKeyPairs") },
    )?;
    let mut w = World::default();
    let mut names: Vec<String> =
        zones.availability_zones().iter().filter_map(|z| z.zone_name()).map(String::from).collect();
    names.sort();
    w.zones = names;
    let key = |tags: &[aws_sdk_ec2::types::Tag]| tag(ec2_tags(tags), TAG_KEY).unwrap_or_else(|| "unknown".into());
    for v in vpcs.vpcs() {
        let id = v.vpc_id().unwrap_or_default();
        // DNS support and hostnames: both on, or the VPC needs a fix.
        // Found by its tag, so it exists: NotFound is EC2's eventual consistency.
        let attr = |name| async move {
            let call = c.describe_vpc_attribute().vpc_id(id).attribute(name);
            aws.send(Svc::Other, "DescribeVpcAttribute", Retry::settling(true), || call.clone().send()).await
        };
        use aws_sdk_ec2::types::VpcAttributeName::{EnableDnsHostnames, EnableDnsSupport};
        // Still NotFound after that: deleted since it was listed.
        let (support, hostnames) = match tokio::try_join!(attr(EnableDnsSupport), attr(EnableDnsHostnames)) {
            Ok(both) => both,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let on = support.enable_dns_support().and_then(|a| a.value()).unwrap_or(false)
            && hostnames.enable_dns_hostnames().and_then(|a| a.value()).unwrap_or(false);
        w.put(
            key(v.tags()),
            Found {
                id: id.into(),
                cidr: v.cidr_block().map(String::from),
                state: Some(if on { "dns" } else { "no-dns" }.into()),
                ..Default::default()
            },
        );
    }
    for g in igws.internet_gateways() {
        let links = g.attachments().iter().filter_map(|a| a.vpc_id()).map(String::from).collect();
        w.put(
            key(g.tags()),
            Found { id: g.internet_gateway_id().unwrap_or_default().into(), links, ..Default::default() },
        );
    }
    // Each subnet's reservations, all at once.
    let reservations = futures::future::try_join_all(subnets.subnets().iter().map(|s| async move {
        let call = c.get_subnet_cidr_reservations().subnet_id(s.subnet_id().unwrap_or_default());
        let out = match aws
            .send(Svc::Other, "GetSubnetCidrReservations", Retry::settling(true), || call.clone().send())
            .await
        {
            Ok(out) => out,
            // Deleted since it was listed.
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let explicit = out
            .subnet_ipv4_cidr_reservations()
            .iter()
            .filter(|r| r.reservation_type() == Some(&aws_sdk_ec2::types::SubnetCidrReservationType::Explicit))
            .filter_map(|r| Some((r.subnet_cidr_reservation_id()?.to_owned(), r.cidr()?.to_owned())))
            .collect::<Vec<_>>();
        Ok::<_, anyhow::Error>(Some(explicit))
    }))
    .await?;
    for (s, reserved) in subnets.subnets().iter().zip(reservations) {
        let Some(reserved) = reserved else { continue };
        w.put(
            key(s.tags()),
            Found {
                id: s.subnet_id().unwrap_or_default().into(),
                cidr: s.cidr_block().map(String::from),
                zone: s.availability_zone().map(String::from),
                reserved,
                ..Default::default()
            },
        );
    }
    for a in addrs.addresses() {
        w.put(
            key(a.tags()),
            Found {
                id: a.allocation_id().unwrap_or_default().into(),
                public_ip: a.public_ip().map(String::from),
                state: a.association_id().map(String::from),
                ..Default::default()
            },
        );
    }
    for n in nats.nat_gateways() {
        let links = n.nat_gateway_addresses().iter().filter_map(|a| a.allocation_id()).map(String::from).collect();
        w.put(
            key(n.tags()),
            Found {
                id: n.nat_gateway_id().unwrap_or_default().into(),
                state: n.state().map(|s| s.as_str().to_owned()),
                // Why it failed, when it did.
                config: n.failure_code().map(|c| format!("{c}: {}", n.failure_message().unwrap_or(""))),
                zone: n.subnet_id().map(String::from),
                links,
                ..Default::default()
            },
        );
    }
    for t in rtbs.route_tables() {
        let assoc = t
            .associations()
            .iter()
            .filter(|a| !a.main().unwrap_or(false))
            .filter_map(|a| Some((a.route_table_association_id()?.to_owned(), a.subnet_id()?.to_owned())))
            .collect();
        let routes = t
            .routes()
            .iter()
            .filter(|r| r.gateway_id() != Some("local"))
            .filter_map(|r| {
                let target = r.gateway_id().or(r.nat_gateway_id()).unwrap_or("blackhole");
                Some((r.destination_cidr_block()?.to_owned(), target.to_owned()))
            })
            .collect();
        w.put(
            key(t.tags()),
            Found { id: t.route_table_id().unwrap_or_default().into(), assoc, routes, ..Default::default() },
        );
    }
    let groups: HashMap<String, Role> = sgs
        .security_groups()
        .iter()
        .filter_map(|g| Some((g.group_id()?.to_owned(), Role::parse(&tag(ec2_tags(g.tags()), naming::TAG_ROLE)?)?)))
        .collect();
    for g in sgs.security_groups() {
        w.put(
            key(g.tags()),
            Found {
                id: g.group_id().unwrap_or_default().into(),
                ingress: rules(g.ip_permissions(), &groups),
                egress: rules(g.ip_permissions_egress(), &groups),
                ..Default::default()
            },
        );
    }
    for page in &instances {
        for r in page.reservations() {
            for i in r.instances() {
                // Nodes belong to their Auto Scaling group, which replaces them.
                let k = match tag(ec2_tags(i.tags()), "aws:autoscaling:groupName") {
                    Some(group) => format!("managed/{group}"),
                    None => key(i.tags()),
                };
                let state = i.state().and_then(|s| s.name());
                // Gone, or going: a relaunch steps over a replay of its token.
                if matches!(state, Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)) {
                    continue;
                }
                w.put(
                    k,
                    Found {
                        id: i.instance_id().unwrap_or_default().into(),
                        state: state.map(|n| n.as_str().to_owned()),
                        public_ip: i.public_ip_address().map(String::from),
                        config: tag(ec2_tags(i.tags()), naming::TAG_CONFIG),
                        ..Default::default()
                    },
                );
            }
        }
    }
    // Each template's configuration is its latest version's description,
    // written in the same call as the version (a tag could lag behind it).
    let latest = futures::future::try_join_all(lts.launch_templates().iter().map(|t| async move {
        let call = c.describe_launch_template_versions().launch_template_id(t.launch_template_id().unwrap_or_default());
        let out = call.versions("$Latest").send().await.call("DescribeLaunchTemplateVersions")?;
        let v = out.launch_template_versions().first();
        Ok::<_, anyhow::Error>(v.and_then(|v| v.version_description()).map(String::from))
    }))
    .await?;
    for (t, config) in lts.launch_templates().iter().zip(latest) {
        w.put(
            key(t.tags()),
            Found {
                id: t.launch_template_id().unwrap_or_default().into(),
                // Its latest version: the next version's client token follows it.
                state: t.latest_version_number().map(|v| v.to_string()),
                config,
                ..Default::default()
            },
        );
    }
    for k in keys.key_pairs() {
        w.put(key(k.tags()), Found { id: k.key_pair_id().unwrap_or_default().into(), ..Default::default() });
    }
    Ok(w)
}

async fn discover_rest(aws: &Aws, spec: &ClusterSpec) -> Result<World> {
    let (asg, elb, iam, ssm, dns, kms) = tokio::try_join!(
        discover_asg(aws, spec),
        discover_elb(aws, spec),
        discover_iam(aws, spec),
        discover_ssm(aws, spec),
        discover_dns(aws, spec),
        discover_kms(aws, spec)
    )?;
    let mut w = World::default();
    for (k, f) in asg.into_iter().chain(elb).chain(iam).chain(ssm).chain(dns).chain(kms) {
        w.put(k, f);
    }
    Ok(w)
}

async fn discover_asg(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(String, Found)>> {
    let filter = aws_sdk_autoscaling::types::Filter::builder()
        .name(format!("tag:{TAG_CLUSTER}"))
        .values(spec.name.to_string())
        .build();
    let out = aws.asg.describe_auto_scaling_groups().filters(filter).send().await.call("DescribeAutoScalingGroups")?;
    Ok(out
        .auto_scaling_groups()
        .iter()
        .map(|g| {
            let tags = g.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
            let k = tag(tags, TAG_KEY).unwrap_or_else(|| "unknown".into());
            let mut subnets: Vec<String> = g
                .vpc_zone_identifier()
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            subnets.sort();
            let found = Found {
                id: g.auto_scaling_group_name().unwrap_or_default().into(),
                size: Some((g.min_size().unwrap_or(0), g.max_size().unwrap_or(0), g.desired_capacity().unwrap_or(0))),
                links: subnets,
                state: g.status().map(String::from),
                ..Default::default()
            };
            (k, found)
        })
        .collect())
}

async fn discover_elb(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(String, Found)>> {
    let c = &aws.elb;
    let (lbs, tgs) = tokio::try_join!(
        async {
            let pages: Vec<_> = c.describe_load_balancers().into_paginator().send().collect::<Vec<_>>().await;
            pages.into_iter().collect::<Result<Vec<_>, _>>().call("DescribeLoadBalancers")
        },
        async {
            let pages: Vec<_> = c.describe_target_groups().into_paginator().send().collect::<Vec<_>>().await;
            pages.into_iter().collect::<Result<Vec<_>, _>>().call("DescribeTargetGroups")
        },
    )?;
    let mut arns: Vec<String> =
        lbs.iter().flat_map(|p| p.load_balancers()).filter_map(|l| l.load_balancer_arn()).map(String::from).collect();
    arns.extend(tgs.iter().flat_map(|p| p.target_groups()).filter_map(|t| t.target_group_arn()).map(String::from));
    // Which of them are the cluster's: ELBv2 has no tag filter.
    let mut keys: HashMap<String, String> = HashMap::new();
    for chunk in arns.chunks(20) {
        let out = c.describe_tags().set_resource_arns(Some(chunk.to_vec())).send().await.call("DescribeTags")?;
        for d in out.tag_descriptions() {
            let tags = || d.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
            if tag(tags(), TAG_CLUSTER).as_deref() == Some(spec.name.as_str()) {
                keys.insert(
                    d.resource_arn().unwrap_or_default().into(),
                    tag(tags(), TAG_KEY).unwrap_or_else(|| "unknown".into()),
                );
            }
        }
    }
    let mut out = Vec::new();
    for lb in lbs.iter().flat_map(|p| p.load_balancers()) {
        let arn = lb.load_balancer_arn().unwrap_or_default();
        let Some(k) = keys.get(arn) else { continue };
        let listeners = c.describe_listeners().load_balancer_arn(arn).send().await.call("DescribeListeners")?;
        for l in listeners.listeners() {
            let tg = l.default_actions().iter().filter_map(|a| a.target_group_arn()).map(String::from).collect();
            out.push((
                format!("listener/{}", k.trim_start_matches("lb/")),
                Found { id: l.listener_arn().unwrap_or_default().into(), links: tg, ..Default::default() },
            ));
        }
        out.push((
            k.clone(),
            Found {
                id: arn.into(),
                state: lb.state().and_then(|s| s.code()).map(|c| c.as_str().to_owned()),
                dns: lb.dns_name().zip(lb.canonical_hosted_zone_id()).map(|(d, z)| (d.to_owned(), z.to_owned())),
                links: lb.security_groups().to_vec(),
                ..Default::default()
            },
        ));
    }
    for tg in tgs.iter().flat_map(|p| p.target_groups()) {
        let arn = tg.target_group_arn().unwrap_or_default();
        let Some(k) = keys.get(arn) else { continue };
        let health = c.describe_target_health().target_group_arn(arn).send().await.call("DescribeTargetHealth")?;
        let mut links: Vec<String> =
            health.target_health_descriptions().iter().filter_map(|d| d.target()?.id()).map(String::from).collect();
        links.sort();
        out.push((
            format!("targets/{}", k.trim_start_matches("tg/")),
            Found { id: arn.into(), links, ..Default::default() },
        ));
        out.push((k.clone(), Found { id: arn.into(), ..Default::default() }));
    }
    Ok(out)
}

async fn discover_iam(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(String, Found)>> {
    let c = &aws.iam;
    let path = naming::iam_path(spec);
    let (roles, profiles) =
        tokio::try_join!(async { c.list_roles().path_prefix(&path).send().await.call("ListRoles") }, async {
            c.list_instance_profiles().path_prefix(&path).send().await.call("ListInstanceProfiles")
        },)?;
    let prefix = naming::iam_name(spec, "");
    let key = |name: &str| format!("iam/{}", name.strip_prefix(&prefix).unwrap_or(name));
    let mut map: BTreeMap<String, Found> = BTreeMap::new();
    // Exactly the cluster's path (the prefix would also match a cluster
    // whose name extends this one's), whatever the listing let through.
    let ours = |p: &str, name: &str| p == path && name.starts_with(&prefix);
    for r in roles.roles().iter().filter(|r| ours(r.path(), r.role_name())) {
        let name = r.role_name();
        let policy = match c.get_role_policy().role_name(name).policy_name(POLICY).send().await {
            Ok(p) => {
                let doc = percent_encoding::percent_decode_str(p.policy_document()).decode_utf8_lossy().into_owned();
                Some(serde_json::from_str(&doc).context("an IAM policy that is not JSON")?)
            }
            // The role has no inline policy of that name.
            Err(e) => match super::AwsError::new("GetRolePolicy", &e) {
                a if a.code() == "NoSuchEntity" => None,
                a => return Err(a.on(name).into()),
            },
        };
        let f = map.entry(key(name)).or_default();
        f.id = name.to_owned();
        f.config = Some(r.arn().to_owned());
        f.policy = policy;
    }
    for p in profiles.instance_profiles().iter().filter(|p| ours(p.path(), p.instance_profile_name())) {
        let f = map.entry(key(p.instance_profile_name())).or_default();
        f.id = p.instance_profile_name().to_owned();
        f.profile = true;
        f.links = p.roles().iter().map(|r| r.role_name().to_owned()).collect();
    }
    Ok(map.into_iter().collect())
}

async fn discover_ssm(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(String, Found)>> {
    use aws_sdk_ssm::types::ParameterStringFilter;
    let prefix = naming::ssm_prefix(spec);
    let filter = ParameterStringFilter::builder().key("Path").option("Recursive").values(&prefix).build()?;
    let pages: Vec<_> =
        aws.ssm.describe_parameters().parameter_filters(filter).into_paginator().send().collect::<Vec<_>>().await;
    let pages = pages.into_iter().collect::<Result<Vec<_>, _>>().call("DescribeParameters")?;
    Ok(pages
        .iter()
        .flat_map(|p| p.parameters())
        .filter_map(|p| {
            let name = p.name()?;
            let key = format!("ssm{}", name.strip_prefix(&prefix)?);
            Some((
                key,
                Found {
                    id: name.to_owned(),
                    config: p.description().map(String::from),
                    // The KMS key that encrypts it.
                    links: p.key_id().map(String::from).into_iter().collect(),
                    ..Default::default()
                },
            ))
        })
        .collect())
}

/// The cluster's KMS key, by its alias: its ARN, state, key policy, and
/// (in `config`) the alias. A key scheduled for deletion is gone; a key the
/// alias names but whose tags are another cluster's is `foreign`.
async fn discover_kms(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(String, Found)>> {
    let c = &aws.kms;
    let alias = naming::kms_alias(spec);
    let out = match c.describe_key().key_id(&alias).send().await {
        Ok(o) => o,
        Err(e) => match super::AwsError::new("DescribeKey", &e) {
            a if a.is_not_found() => return Ok(vec![]),
            a => return Err(a.on(alias).into()),
        },
    };
    let Some(meta) = out.key_metadata() else { return Ok(vec![]) };
    use aws_sdk_kms::types::KeyState;
    if matches!(meta.key_state(), Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion)) {
        return Ok(vec![]);
    }
    let id = meta.key_id();
    let (tags, policy) =
        tokio::try_join!(async { c.list_resource_tags().key_id(id).send().await.call("ListResourceTags") }, async {
            c.get_key_policy().key_id(id).policy_name("default").send().await.call("GetKeyPolicy")
        },)?;
    let t = || tags.tags().iter().map(|t| (t.tag_key(), t.tag_value()));
    let ours = tag(t(), TAG_CLUSTER).as_deref() == Some(spec.name.as_str())
        && tag(t(), naming::TAG_REGION).as_deref() == Some(spec.region.as_str());
    let policy = policy.policy().map(serde_json::from_str).transpose().context("a key policy that is not JSON")?;
    let state = if ours { meta.key_state().map_or("unknown", |s| s.as_str()) } else { "foreign" };
    Ok(vec![(
        "kms/secrets".to_owned(),
        Found {
            id: meta.arn().unwrap_or(id).to_owned(),
            state: Some(state.to_owned()),
            policy,
            config: Some(alias),
            ..Default::default()
        },
    )])
}

/// The state of a record kaws found but did not make: never changed or deleted.
pub const FOREIGN: &str = "foreign";

fn is_marker(r: &aws_sdk_route53::types::ResourceRecordSet, spec: &ClusterSpec) -> bool {
    r.resource_records().iter().any(|v| v.value() == owner_marker(spec))
}

/// Records of the private zone kaws made: the zone's own SOA and NS, the
/// API's A record and its marker.
fn kaws_made(r: &aws_sdk_route53::types::ResourceRecordSet, spec: &ClusterSpec) -> bool {
    use aws_sdk_route53::types::RrType;
    let at_api = r.name() == api_record(spec);
    (r.name() == zone_name(spec) && matches!(r.r#type(), RrType::Soa | RrType::Ns))
        || (at_api && r.r#type() == &RrType::A && r.alias_target().is_some())
        || (at_api && r.r#type() == &RrType::Txt && r.resource_records().len() == 1 && is_marker(r, spec))
}

async fn discover_dns(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(String, Found)>> {
    let c = &aws.r53;
    let zones = c.list_hosted_zones_by_name().dns_name(zone_name(spec)).send().await.call("ListHostedZonesByName")?;
    let mut out = Vec::new();
    let candidates: Vec<String> = zones
        .hosted_zones()
        .iter()
        .filter(|z| z.name() == zone_name(spec) && z.config().is_some_and(|c| c.private_zone()))
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_owned())
        .collect();
    let mut private = None;
    if !candidates.is_empty() {
        let tags = c
            .list_tags_for_resources()
            .resource_type(aws_sdk_route53::types::TagResourceType::Hostedzone)
            .set_resource_ids(Some(candidates))
            .send()
            .await
            .call("ListTagsForResources")?;
        for set in tags.resource_tag_sets() {
            let t = || set.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
            // Zones are global: another region's cluster of this name has its own.
            if tag(t(), TAG_CLUSTER).as_deref() == Some(spec.name.as_str())
                && tag(t(), naming::TAG_REGION).as_deref() == Some(spec.region.as_str())
            {
                let id = set.resource_id().unwrap_or_default().to_owned();
                private.get_or_insert(id.clone());
                out.push((tag(t(), TAG_KEY).unwrap_or_else(|| "unknown".into()), Found { id, ..Default::default() }));
            }
        }
    }
    // The private zone is kaws' own: records in it that kaws did not make
    // are kept on the zone's record, so that destroy can say what blocks.
    if let Some(z) = &private {
        let mut foreign = Vec::new();
        let mut next: Option<(String, aws_sdk_route53::types::RrType, Option<String>)> = None;
        // Pages follow the last record's name, type and identifier.
        for _ in 0..1000 {
            let mut call = c.list_resource_record_sets().hosted_zone_id(z).max_items(300);
            if let Some((name, kind, id)) = next.take() {
                call = call.start_record_name(name).start_record_type(kind).set_start_record_identifier(id);
            }
            let page = call.send().await.call("ListResourceRecordSets")?;
            foreign.extend(page.resource_record_sets().iter().filter(|r| !kaws_made(r, spec)).cloned());
            if !page.is_truncated() {
                break;
            }
            next = page
                .next_record_name()
                .zip(page.next_record_type())
                .map(|(n, t)| (n.to_owned(), t.clone(), page.next_record_identifier().map(String::from)));
            if next.is_none() {
                break;
            }
        }
        if let Some((_, f)) = out.iter_mut().find(|(_, f)| &f.id == z) {
            f.config = Some(zone_name(spec));
            f.records = foreign;
        }
    }
    let mut records = Vec::new();
    if let Some(z) = private {
        records.push(("dns/private", z));
    }
    if let Some(z) = &spec.aws.hosted_zone {
        records.push(("dns/public", z.clone()));
    }
    for (key, zone) in records {
        use aws_sdk_route53::types::RrType;
        let sets = c
            .list_resource_record_sets()
            .hosted_zone_id(&zone)
            .start_record_name(api_record(spec))
            .start_record_type(RrType::A)
            .max_items(20)
            .send()
            .await
            .call("ListResourceRecordSets")?;
        let at_name: Vec<_> = sets.resource_record_sets().iter().filter(|r| r.name() == api_record(spec)).collect();
        let Some(a) = at_name.iter().find(|r| r.r#type() == &RrType::A) else { continue };
        let marker = at_name.iter().find(|r| r.r#type() == &RrType::Txt && is_marker(r, spec));
        let alias = a.alias_target().map(|a| (a.dns_name().to_owned(), a.hosted_zone_id().to_owned()));
        let target =
            alias.as_ref().map(|(d, _)| d.trim_end_matches('.').trim_start_matches("dualstack.").to_lowercase());
        // In a public zone, only a record with kaws' ownership marker is kaws'.
        let foreign = key == "dns/public" && marker.is_none();
        out.push((
            key.to_owned(),
            Found {
                id: zone,
                config: target,
                dns: alias,
                state: foreign.then(|| FOREIGN.to_owned()),
                records: std::iter::once(*a).chain(marker.copied()).cloned().collect(),
                ..Default::default()
            },
        ));
    }
    Ok(out)
}
