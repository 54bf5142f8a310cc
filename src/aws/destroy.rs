//! Deleting everything found for a cluster, in waves derived from the
//! graph's dependencies: a resource goes before every kind it depends on,
//! each wave concurrent. Rules are revoked first (they keep other groups
//! alive); network interfaces left in the VPC go before the groups and
//! subnets. Dependency violations (ENIs that AWS releases late, a group
//! still referenced) are retried with backoff. The end is a fresh
//! discovery that must find nothing.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use aws_sdk_ec2::types::Filter;
use futures::future::join_all;

use super::key::Key;
use super::model::{self, Node};
use super::resources::ctx::del;
use super::resources::{self, sg, Found, Kind};
use super::world::World;
use super::{Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

/// The destroy waves: each kind's wave is one past the latest wave of the
/// kinds that depend on it. An Auto Scaling group goes before its own
/// instances (terminated while it lives, they would be replaced), which go
/// where kaws' own instances go.
pub fn waves(graph: &[Node]) -> Vec<BTreeSet<Kind>> {
    let mut deps = model::kind_deps(graph);
    let instance = deps.get(&Kind::Instance).cloned().unwrap_or_default();
    deps.insert(Kind::Managed, instance);
    deps.entry(Kind::Asg).or_default().insert(Kind::Managed);
    deps.entry(Kind::KeyPair).or_default();
    let mut wave: BTreeMap<Kind, usize> = BTreeMap::new();
    // Longest path from the kinds nothing depends on (the graph is acyclic).
    fn level(k: Kind, deps: &BTreeMap<Kind, BTreeSet<Kind>>, memo: &mut BTreeMap<Kind, usize>) -> usize {
        if let Some(l) = memo.get(&k) {
            return *l;
        }
        let dependents: Vec<Kind> = deps.iter().filter(|(_, d)| d.contains(&k)).map(|(x, _)| *x).collect();
        let l = dependents.into_iter().map(|d| level(d, deps, memo) + 1).max().unwrap_or(0);
        memo.insert(k, l);
        l
    }
    for k in deps.keys() {
        level(*k, &deps, &mut wave);
    }
    let mut out = vec![BTreeSet::new(); wave.values().max().map_or(0, |m| m + 1)];
    for (k, l) in wave {
        out[l].insert(k);
    }
    out
}

/// Deletes everything in `world`, wave by wave; `report` hears of each.
pub async fn destroy(
    aws: &Aws,
    spec: &ClusterSpec,
    world: &World,
    force: bool,
    mut report: impl FnMut(&Key, &Found),
) -> Result<usize> {
    let all: Vec<(&Key, &Found)> = doomed(world).collect();
    // Rules that name other groups keep those groups alive: revoke them all first.
    let groups = all.iter().filter(|(_, f)| f.kind() == Kind::Group);
    for r in join_all(groups.map(|(_, f)| sg::revoke_all(aws, &f.id))).await {
        r?;
    }
    let mut count = 0;
    let vpcs: Vec<String> = world.found.get(&Key::Vpc).into_iter().flatten().map(|f| f.id.clone()).collect();
    let mut swept = false;
    for wave in waves(&model::graph(spec)) {
        // Before the groups and subnets: interfaces left detached in the VPC.
        if !swept && (wave.contains(&Kind::Group) || wave.contains(&Kind::Subnet)) {
            swept = true;
            for id in interfaces(aws, &vpcs, true).await? {
                let what = format!("eni ({id})");
                del(aws, Svc::Ec2, "DeleteNetworkInterface", &what, Retry::IN_USE, || {
                    aws.ec2.delete_network_interface().network_interface_id(&id).send()
                })
                .await?;
                eprintln!("  deleted {what}");
                count += 1;
            }
        }
        let items = all.iter().filter(|(_, f)| wave.contains(&f.kind()));
        let results =
            join_all(items.map(|(k, f)| async move { (k, f, resources::delete(aws, k, f, force).await) })).await;
        let mut errors = Vec::new();
        for (k, f, r) in results {
            match r {
                Ok(()) => {
                    count += 1;
                    report(k, f);
                }
                Err(e) => errors.push(e.context(format!("{k} ({})", f.id))),
            }
        }
        if !errors.is_empty() {
            return Err(super::error::many("destroy stopped; these deletes failed".into(), &errors));
        }
    }
    Ok(count)
}

/// What destroy deletes: everything found but others' records and keys,
/// and target registrations (they go with their target group).
pub fn doomed(world: &World) -> impl Iterator<Item = (&Key, &Found)> {
    world
        .found
        .iter()
        .flat_map(|(k, v)| v.iter().map(move |f| (k, f)))
        .filter(|(_, f)| !f.foreign() && !resources::derived(f.kind()))
}

/// What is left for the cluster after a destroy: must be nothing. Network
/// interfaces are listed too (any left in a VPC of the cluster's).
pub async fn remaining(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<String>> {
    let world = super::world::discover(aws, spec).await?;
    let mut left: Vec<String> = world
        .found
        .iter()
        .flat_map(|(k, v)| v.iter().map(move |f| (k, f)))
        .filter(|(_, f)| !f.foreign())
        .map(|(k, f)| format!("{k} ({})", f.id))
        .collect();
    let vpcs: Vec<String> = world.found.get(&Key::Vpc).into_iter().flatten().map(|f| f.id.clone()).collect();
    left.extend(interfaces(aws, &vpcs, false).await?.into_iter().map(|id| format!("eni ({id})")));
    Ok(left)
}

/// The network interfaces in `vpcs`; with `detached`, only those no
/// instance or AWS service holds (a load balancer's or NAT gateway's go
/// with them, late: the subnet deletes wait for those).
async fn interfaces(aws: &Aws, vpcs: &[String], detached: bool) -> Result<Vec<String>> {
    if vpcs.is_empty() {
        return Ok(Vec::new());
    }
    let mut call = aws
        .ec2
        .describe_network_interfaces()
        .filters(Filter::builder().name("vpc-id").set_values(Some(vpcs.to_vec())).build());
    if detached {
        call = call.filters(Filter::builder().name("status").values("available").build());
    }
    let out = call.send().await.call("DescribeNetworkInterfaces")?;
    Ok(out
        .network_interfaces()
        .iter()
        .filter(|n| !detached || n.requester_managed() != Some(true))
        .filter_map(|n| n.network_interface_id().map(String::from))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::spec::tests::spec;

    #[test]
    fn everything_goes_before_what_it_depends_on() {
        let g = model::graph(&spec());
        let waves = waves(&g);
        let at = |k: Kind| waves.iter().position(|w| w.contains(&k)).unwrap_or_else(|| panic!("{k:?} in no wave"));
        for (kind, deps) in model::kind_deps(&g) {
            for d in deps {
                assert!(at(kind) < at(d), "{kind:?} must go before {d:?}");
            }
        }
        // The group first, then its stragglers, then what instances need.
        assert!(at(Kind::Asg) < at(Kind::Managed));
        assert!(at(Kind::Managed) < at(Kind::Subnet) && at(Kind::Managed) < at(Kind::Group));
        assert_eq!(at(Kind::Vpc), waves.len() - 1);
        // Every kind has a wave.
        use Kind::*;
        for k in [
            Vpc, Igw, Subnet, Eip, Nat, Rtb, Group, Rules, Iam, Kms, Param, Lb, Tg, Listener, Targets, Zone, Record,
            Instance, Volume, Lt, Asg, Managed, KeyPair,
        ] {
            at(k);
        }
    }
}
