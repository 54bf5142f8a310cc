//! What exists: every resource tagged `kaws:cluster=CLUSTER` (EC2, Auto
//! Scaling, ELBv2, Route 53), under the cluster's IAM path, or under its SSM
//! prefix, found by each kind's `discover`, all at once. Resources are
//! matched to the graph by their `kaws:key` tag, never by assumption; a key
//! found twice (a create whose answer was lost) is kept once and the rest
//! is deleted by `apply`.

use std::collections::BTreeMap;

use anyhow::Result;
use aws_sdk_ec2::types::Filter;

use super::key::Key;
use super::resources::Found;
use super::resources::{
    asg, dns, eip, iam, igw, instance, keypair, kms, lb, lt, nat, rtb, sg, ssm, subnet, volume, vpc,
};
use super::{Aws, Call};
use crate::cluster::ClusterSpec;

/// Everything found for a cluster.
#[derive(Debug, Default)]
pub struct World {
    /// The region's Availability Zones (or, once resolved, the cluster's), in order.
    pub zones: Vec<String>,
    pub found: BTreeMap<Key, Vec<Found>>,
}

/// The region's Availability Zones: not its opted-in Local and Wavelength
/// Zones, which sort among them but lack most services.
async fn zones(aws: &Aws) -> Result<Vec<String>> {
    let out = aws
        .ec2
        .describe_availability_zones()
        .filters(Filter::builder().name("state").values("available").build())
        .filters(Filter::builder().name("zone-type").values("availability-zone").build())
        .send()
        .await
        .call("DescribeAvailabilityZones")?;
    let mut names: Vec<String> =
        out.availability_zones().iter().filter_map(|z| z.zone_name()).map(String::from).collect();
    names.sort();
    Ok(names)
}

/// Finds everything of the cluster. Read-only: Describe, List and Get calls.
pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<World> {
    let (zones, found) = tokio::try_join!(zones(aws), async {
        let all = tokio::try_join!(
            vpc::discover(aws, spec),
            igw::discover(aws, spec),
            subnet::discover(aws, spec),
            eip::discover(aws, spec),
            nat::discover(aws, spec),
            rtb::discover(aws, spec),
            sg::discover(aws, spec),
            instance::discover(aws, spec),
            volume::discover(aws, spec),
            lt::discover(aws, spec),
            keypair::discover(aws, spec),
            asg::discover(aws, spec),
            lb::discover(aws, spec),
            iam::discover(aws, spec),
            ssm::discover(aws, spec),
            dns::discover(aws, spec),
            kms::discover(aws, spec),
        )?;
        let (a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q) = all;
        let each = [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q];
        Ok::<_, anyhow::Error>(each.into_iter().flatten().collect::<Vec<_>>())
    })?;
    let mut world = World { zones, found: BTreeMap::new() };
    for (key, f) in found {
        world.found.entry(key).or_default().push(f);
    }
    // The one kept of a key found twice is a live one: a failed NAT
    // gateway beside an available one is the surplus, not the other way.
    for found in world.found.values_mut() {
        found.sort_by_key(|f| f.get::<nat::Found>().is_some_and(nat::Found::failed));
    }
    Ok(world)
}
