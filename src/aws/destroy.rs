//! Deleting: one resource (`delete`, also used by `apply` for surplus), or
//! everything found for a cluster, in reverse dependency order, phase by
//! phase, each phase concurrent. Dependency violations (ENIs that AWS
//! releases late, a group still referenced) are retried with backoff. The
//! end is a fresh discovery that must find nothing.

use std::time::Duration;

use anyhow::{bail, Result};
use futures::future::join_all;

use super::naming::POLICY;
use super::world::{Found, World};
use super::{aws_error, wait_for, Aws, AwsError, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

/// The kind of a found resource: its key's prefix, or for resources tagged
/// for the cluster without a key, the prefix of their id.
fn kind(key: &str, id: &str) -> String {
    if key != "unknown" {
        return key.split('/').next().unwrap_or(key).to_owned();
    }
    let by_id = [
        ("vpc-", "vpc"),
        ("igw-", "igw"),
        ("subnet-", "subnet"),
        ("eipalloc-", "eip"),
        ("nat-", "nat"),
        ("rtb-", "rtb"),
        ("sg-", "sg"),
        ("i-", "instance"),
        ("lt-", "lt"),
        ("key-", "key"),
    ];
    by_id.iter().find(|(p, _)| id.starts_with(p)).map_or("unknown", |(_, k)| k).to_owned()
}

/// Destroy phases: each waits for the one before.
/// The Auto Scaling group's own instances come after the group: terminated
/// while it lives, it would launch replacements that nobody deletes (its
/// deletion with ForceDelete terminates them anyway; these are stragglers).
const PHASES: &[&[&str]] = &[
    &["dns", "asg", "instance", "listener", "ssm", "key"],
    &["zone", "lt", "lb", "iam", "targets", "kms", "managed"],
    &["tg", "nat"],
    &["eip", "rtb"],
    &["igw", "sg"],
    &["subnet"],
    &["vpc"],
];

/// One delete call: a resource already gone counts as deleted; what AWS
/// still holds (ENIs released late, a group still referenced) is waited
/// out, as `retry` says. Credentials errors fail at once, except where
/// `retry` names AuthFailure as transient (ReleaseAddress, see `Retry`).
async fn del<T, E, R, F, Fut>(aws: &Aws, svc: Svc, call: &'static str, what: &str, retry: Retry, f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, aws_sdk_ec2::error::SdkError<E, R>>>,
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    match aws.send(svc, call, retry, f).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.on(what).into()),
    }
}

/// A read's answer, or `None` when AWS says the resource does not exist.
fn unless_gone<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if aws_error(&e).is_some_and(AwsError::is_not_found) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes one resource (and waits until it is gone where later deletes
/// depend on that).
/// `force`: also delete what kaws did not make that stands in the way (the
/// records of others in the cluster's private zone).
pub async fn delete(aws: &Aws, key: &str, f: &Found, force: bool) -> Result<()> {
    let id = f.id.as_str();
    let (ec2, what) = (&aws.ec2, format!("{key} ({id})"));
    match kind(key, id).as_str() {
        "instance" | "managed" => {
            del(aws, Svc::Ec2, "TerminateInstances", &what, Retry::IN_USE, || {
                ec2.terminate_instances().instance_ids(id).send()
            })
            .await?;
            wait_for("the instance to terminate", aws.poll, Duration::from_secs(900), || async {
                let out = ec2.describe_instances().instance_ids(id).send().await.call("DescribeInstances");
                let Some(out) = unless_gone(out)? else { return Ok(Some(())) };
                let state = out
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .next()
                    .and_then(|i| i.state()?.name().cloned());
                Ok(matches!(state, None | Some(aws_sdk_ec2::types::InstanceStateName::Terminated)).then_some(()))
            })
            .await?;
        }
        "asg" => {
            del(aws, Svc::Other, "DeleteAutoScalingGroup", &what, Retry::IN_USE, || {
                aws.asg.delete_auto_scaling_group().auto_scaling_group_name(id).force_delete(true).send()
            })
            .await?;
            wait_for("the Auto Scaling group and its instances to go", aws.poll, Duration::from_secs(900), || async {
                let out = aws
                    .asg
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(id)
                    .send()
                    .await
                    .call("DescribeAutoScalingGroups")?;
                Ok(out.auto_scaling_groups().is_empty().then_some(()))
            })
            .await?;
        }
        "lt" => {
            del(aws, Svc::Ec2, "DeleteLaunchTemplate", &what, Retry::IN_USE, || {
                ec2.delete_launch_template().launch_template_id(id).send()
            })
            .await?
        }
        "listener" => {
            del(aws, Svc::Other, "DeleteListener", &what, Retry::IN_USE, || {
                aws.elb.delete_listener().listener_arn(id).send()
            })
            .await?
        }
        "lb" => {
            del(aws, Svc::Other, "DeleteLoadBalancer", &what, Retry::IN_USE, || {
                aws.elb.delete_load_balancer().load_balancer_arn(id).send()
            })
            .await?;
            wait_for("the load balancer to go", aws.poll, Duration::from_secs(600), || async {
                let out = aws.elb.describe_load_balancers().load_balancer_arns(id).send().await;
                Ok(unless_gone(out.call("DescribeLoadBalancers"))?
                    .is_none_or(|o| o.load_balancers().is_empty())
                    .then_some(()))
            })
            .await?;
        }
        "tg" => {
            del(aws, Svc::Other, "DeleteTargetGroup", &what, Retry::IN_USE, || {
                aws.elb.delete_target_group().target_group_arn(id).send()
            })
            .await?
        }
        "targets" => {}
        "nat" => {
            del(aws, Svc::Ec2, "DeleteNatGateway", &what, Retry::IN_USE, || {
                ec2.delete_nat_gateway().nat_gateway_id(id).send()
            })
            .await?;
            wait_for("the NAT gateway to be deleted", aws.poll, Duration::from_secs(600), || async {
                let out = ec2.describe_nat_gateways().nat_gateway_ids(id).send().await.call("DescribeNatGateways");
                let Some(out) = unless_gone(out)? else { return Ok(Some(())) };
                let state = out.nat_gateways().first().and_then(|n| n.state().cloned());
                Ok(matches!(state, None | Some(aws_sdk_ec2::types::NatGatewayState::Deleted)).then_some(()))
            })
            .await?;
        }
        "eip" => {
            if let Some(assoc) = &f.state {
                del(aws, Svc::Ec2, "DisassociateAddress", &what, Retry::IN_USE, || {
                    ec2.disassociate_address().association_id(assoc).send()
                })
                .await?;
            }
            del(aws, Svc::Ec2, "ReleaseAddress", &what, Retry::IN_USE.with_auth(), || {
                ec2.release_address().allocation_id(id).send()
            })
            .await?
        }
        "rtb" => {
            for (assoc, _) in &f.assoc {
                del(aws, Svc::Ec2, "DisassociateRouteTable", &what, Retry::IN_USE, || {
                    ec2.disassociate_route_table().association_id(assoc).send()
                })
                .await?;
            }
            del(aws, Svc::Ec2, "DeleteRouteTable", &what, Retry::IN_USE, || {
                ec2.delete_route_table().route_table_id(id).send()
            })
            .await?
        }
        "igw" => {
            for vpc in &f.links {
                del(aws, Svc::Ec2, "DetachInternetGateway", &what, Retry::IN_USE, || {
                    ec2.detach_internet_gateway().internet_gateway_id(id).vpc_id(vpc).send()
                })
                .await?;
            }
            del(aws, Svc::Ec2, "DeleteInternetGateway", &what, Retry::IN_USE, || {
                ec2.delete_internet_gateway().internet_gateway_id(id).send()
            })
            .await?
        }
        "sg" => {
            del(aws, Svc::Ec2, "DeleteSecurityGroup", &what, Retry::IN_USE, || {
                ec2.delete_security_group().group_id(id).send()
            })
            .await?
        }
        "subnet" => {
            // Reservations first, so that the subnet has nothing left in it.
            for (reservation, _) in &f.reserved {
                del(aws, Svc::Ec2, "DeleteSubnetCidrReservation", &what, Retry::IN_USE, || {
                    ec2.delete_subnet_cidr_reservation().subnet_cidr_reservation_id(reservation).send()
                })
                .await?;
            }
            del(aws, Svc::Ec2, "DeleteSubnet", &what, Retry::IN_USE, || ec2.delete_subnet().subnet_id(id).send())
                .await?
        }
        "vpc" => del(aws, Svc::Ec2, "DeleteVpc", &what, Retry::IN_USE, || ec2.delete_vpc().vpc_id(id).send()).await?,
        "key" => {
            del(aws, Svc::Ec2, "DeleteKeyPair", &what, Retry::IN_USE, || ec2.delete_key_pair().key_pair_id(id).send())
                .await?
        }
        "iam" => {
            let iam = &aws.iam;
            if f.profile {
                for role in &f.links {
                    del(aws, Svc::Iam, "RemoveRoleFromInstanceProfile", &what, Retry::IN_USE, || {
                        iam.remove_role_from_instance_profile().instance_profile_name(id).role_name(role).send()
                    })
                    .await?;
                }
                del(aws, Svc::Iam, "DeleteInstanceProfile", &what, Retry::IN_USE, || {
                    iam.delete_instance_profile().instance_profile_name(id).send()
                })
                .await?;
            }
            if f.config.is_some() {
                if f.policy.is_some() {
                    del(aws, Svc::Iam, "DeleteRolePolicy", &what, Retry::IN_USE, || {
                        iam.delete_role_policy().role_name(id).policy_name(POLICY).send()
                    })
                    .await?;
                }
                del(aws, Svc::Iam, "DeleteRole", &what, Retry::IN_USE, || iam.delete_role().role_name(id).send())
                    .await?;
            }
        }
        "kms" => {
            // KMS deletes a key only after a waiting period (7 days, the
            // shortest); the alias goes now, so discovery no longer sees it.
            let kms = &aws.kms;
            match aws
                .send(Svc::Other, "ScheduleKeyDeletion", Retry::NONE, || {
                    // The key id (the ARN's last part): moto fails on an ARN here.
                    let key = id.rsplit('/').next().unwrap_or(id);
                    kms.schedule_key_deletion().key_id(key).pending_window_in_days(7).send()
                })
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.code() == "KMSInvalidStateException" => {}
                Err(e) => return Err(e.on(&what).into()),
            }
            if let Some(alias) = &f.config {
                del(aws, Svc::Other, "DeleteAlias", &what, Retry::NONE, || kms.delete_alias().alias_name(alias).send())
                    .await?;
            }
        }
        "ssm" => {
            del(aws, Svc::Other, "DeleteParameter", &what, Retry::IN_USE, || aws.ssm.delete_parameter().name(id).send())
                .await?
        }
        "zone" => {
            // Records kaws did not make: named, and deleted only when asked.
            if !f.records.is_empty() {
                let list: Vec<String> =
                    f.records.iter().map(|r| format!("{} {}", r.name(), r.r#type().as_str())).collect();
                if !force {
                    return Err(crate::error::failed(format!(
                        "{what} holds records kaws did not make: {}",
                        list.join(", ")
                    ))
                    .hint("delete them, or run `kaws cluster destroy --force` to delete them with the zone")
                    .into());
                }
                delete_records(aws, id, &f.records, &what).await?;
            }
            del(aws, Svc::Other, "DeleteHostedZone", &what, Retry::NONE, || aws.r53.delete_hosted_zone().id(id).send())
                .await?
        }
        // The API's record and its marker, exactly as found (never a
        // record kaws did not make: those are not deleted).
        "dns" if f.state.as_deref() == Some(super::world::FOREIGN) => {}
        "dns" => {
            // Others' TXT values beside the marker stay: only the marker goes.
            use aws_sdk_route53::types as r53t;
            let is_marker = |v: &r53t::ResourceRecord| v.value().starts_with("\"kaws-owner=");
            let (shared, alone): (Vec<_>, Vec<_>) =
                f.records.iter().cloned().partition(|r| {
                    r.r#type() == &r53t::RrType::Txt && r.resource_records().iter().any(|v| !is_marker(v))
                });
            for r in shared {
                let kept: Vec<r53t::ResourceRecord> =
                    r.resource_records().iter().filter(|v| !is_marker(v)).cloned().collect();
                let set = r53t::ResourceRecordSet::builder()
                    .name(r.name())
                    .r#type(r53t::RrType::Txt)
                    .set_ttl(r.ttl())
                    .set_resource_records(Some(kept))
                    .build()?;
                let batch = r53t::ChangeBatch::builder()
                    .changes(
                        r53t::Change::builder().action(r53t::ChangeAction::Upsert).resource_record_set(set).build()?,
                    )
                    .build()?;
                del(aws, Svc::Other, "ChangeResourceRecordSets", &what, Retry::NONE, || {
                    aws.r53.change_resource_record_sets().hosted_zone_id(id).change_batch(batch.clone()).send()
                })
                .await?;
            }
            delete_records(aws, id, &alone, &what).await?
        }
        other => bail!("{what}: kaws does not know how to delete a resource of kind {other:?}; delete it by hand"),
    }
    Ok(())
}

/// Deletes record sets of zone `zone`, in one batch.
async fn delete_records(
    aws: &Aws,
    zone: &str,
    records: &[aws_sdk_route53::types::ResourceRecordSet],
    what: &str,
) -> Result<()> {
    use aws_sdk_route53::types as r53t;
    if records.is_empty() {
        return Ok(());
    }
    let mut batch = r53t::ChangeBatch::builder();
    for r in records {
        batch = batch.changes(
            r53t::Change::builder().action(r53t::ChangeAction::Delete).resource_record_set(r.clone()).build()?,
        );
    }
    let batch = batch.build()?;
    del(aws, Svc::Other, "ChangeResourceRecordSets", what, Retry::NONE, || {
        aws.r53.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch.clone()).send()
    })
    .await
}

/// Deletes everything in `world`, phase by phase; `report` hears of each.
pub async fn destroy(aws: &Aws, world: &World, force: bool, mut report: impl FnMut(&str, &Found)) -> Result<usize> {
    // Rules that name other groups keep those groups alive: revoke them all first.
    let mut jobs = Vec::new();
    for (key, found) in &world.found {
        if kind(key, "") != "sg" {
            continue;
        }
        for f in found {
            jobs.push(revoke_all(aws, f));
        }
    }
    for r in join_all(jobs).await {
        r?;
    }
    let mut count = 0;
    let vpcs: Vec<String> = world.found.get("vpc").into_iter().flatten().map(|f| f.id.clone()).collect();
    for phase in PHASES {
        // Before the groups and subnets: interfaces left detached in the VPC.
        if phase.contains(&"sg") {
            for id in interfaces(aws, &vpcs, true).await? {
                let what = format!("eni ({id})");
                del(aws, Svc::Ec2, "DeleteNetworkInterface", &what, Retry::IN_USE, || {
                    aws.ec2.delete_network_interface().network_interface_id(&id).send()
                })
                .await?;
                report("eni", &Found { id, ..Default::default() });
                count += 1;
            }
        }
        let items: Vec<(&String, &Found)> = world
            .found
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |f| (k, f)))
            .filter(|(k, f)| phase.contains(&kind(k, &f.id).as_str()))
            .filter(|(_, f)| f.state.as_deref() != Some(super::world::FOREIGN))
            .collect();
        let results = join_all(items.iter().map(|(k, f)| async move { (k, f, delete(aws, k, f, force).await) })).await;
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

async fn revoke_all(aws: &Aws, f: &Found) -> Result<()> {
    let out = aws.ec2.describe_security_groups().group_ids(&f.id).send().await.call("DescribeSecurityGroups");
    let Some(out) = unless_gone(out)? else { return Ok(()) };
    for g in out.security_groups() {
        if !g.ip_permissions().is_empty() {
            aws.ec2
                .revoke_security_group_ingress()
                .group_id(&f.id)
                .set_ip_permissions(Some(g.ip_permissions().to_vec()))
                .send()
                .await
                .call("RevokeSecurityGroupIngress")?;
        }
        if !g.ip_permissions_egress().is_empty() {
            aws.ec2
                .revoke_security_group_egress()
                .group_id(&f.id)
                .set_ip_permissions(Some(g.ip_permissions_egress().to_vec()))
                .send()
                .await
                .call("RevokeSecurityGroupEgress")?;
        }
    }
    Ok(())
}

/// What is left for the cluster after a destroy: must be nothing.
/// What is left for the cluster after a destroy: must be nothing. Network
/// interfaces are listed too (any left in a VPC of the cluster's).
pub async fn remaining(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<String>> {
    let world = super::world::discover(aws, spec).await?;
    let mut left: Vec<String> = world
        .found
        .iter()
        .flat_map(|(k, v)| v.iter().map(move |f| (k, f)))
        .filter(|(_, f)| f.state.as_deref() != Some(super::world::FOREIGN))
        .map(|(k, f)| format!("{k} ({})", f.id))
        .collect();
    let vpcs: Vec<String> = world.found.get("vpc").into_iter().flatten().map(|f| f.id.clone()).collect();
    left.extend(interfaces(aws, &vpcs, false).await?.into_iter().map(|id| format!("eni ({id})")));
    Ok(left)
}

/// The network interfaces in `vpcs`; with `detached`, only those no
/// instance or AWS service holds (a load balancer's or NAT gateway's go
/// with them, late: the subnet deletes wait for those).
async fn interfaces(aws: &Aws, vpcs: &[String], detached: bool) -> Result<Vec<String>> {
    use aws_sdk_ec2::types::Filter;
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
