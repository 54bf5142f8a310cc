//! Deleting: one resource (`delete`, also used by `apply` for surplus), or
//! everything found for a cluster, in reverse dependency order, phase by
//! phase, each phase concurrent. Dependency violations (ENIs that AWS
//! releases late, a group still referenced) are retried with backoff. The
//! end is a fresh discovery that must find nothing.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::future::join_all;

use super::world::{Found, World, POLICY};
use super::{code, wait_for, Aws, Call};
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
const PHASES: &[&[&str]] = &[
    &["dns", "asg", "instance", "managed", "listener", "ssm", "key"],
    &["zone", "lt", "lb", "iam", "targets"],
    &["tg", "nat"],
    &["eip", "rtb"],
    &["igw", "sg"],
    &["subnet"],
    &["vpc"],
];

/// Retries `f` while AWS answers with a dependency error.
async fn retrying<F, Fut>(aws: &Aws, what: &str, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), (Option<String>, anyhow::Error)>>,
{
    let mut delay = aws.poll;
    for attempt in 0.. {
        match f().await {
            Ok(()) => return Ok(()),
            Err((Some(c), _)) if is_gone(&c) => return Ok(()),
            Err((Some(c), e)) if attempt < 30 && is_busy(&c) => {
                tracing(what, &e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err((_, e)) => return Err(e),
        }
    }
    unreachable!()
}

fn tracing(what: &str, e: &anyhow::Error) {
    if std::env::var_os("KAWS_VERBOSE").is_some() {
        eprintln!("retrying {what}: {e:#}");
    }
}

fn is_gone(code: &str) -> bool {
    code.contains("NotFound")
        || code.contains("NoSuch")
        || code == "ParameterNotFound"
        || code == "InvalidAllocationID.NotFound"
        || code == "InvalidAssociationID.NotFound"
}

fn is_busy(code: &str) -> bool {
    matches!(
        code,
        "DependencyViolation" | "ResourceInUse" | "InvalidIPAddress.InUse" | "AuthFailure" | "ResourceInUseFault"
    ) || code.contains("InUse")
        || code.contains("DeleteConflict")
        || code.contains("ScalingActivityInProgress")
}

macro_rules! attempt {
    ($call:expr, $name:literal) => {
        async {
            match $call.send().await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let c = code(&e).map(String::from);
                    Err((c, Err::<(), _>(e).call($name).unwrap_err()))
                }
            }
        }
    };
}

/// Deletes one resource (and waits until it is gone where later deletes
/// depend on that).
pub async fn delete(aws: &Aws, key: &str, f: &Found) -> Result<()> {
    let id = f.id.as_str();
    let (ec2, what) = (&aws.ec2, format!("{key} ({id})"));
    match kind(key, id).as_str() {
        "instance" | "managed" => {
            retrying(aws, &what, || attempt!(ec2.terminate_instances().instance_ids(id), "TerminateInstances")).await?;
            wait_for("the instance to terminate", aws.poll, Duration::from_secs(900), || async {
                let out = ec2.describe_instances().instance_ids(id).send().await;
                let out = match out {
                    Err(e) if code(&e).is_some_and(is_gone) => return Ok(Some(())),
                    other => other.call("DescribeInstances")?,
                };
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
            retrying(aws, &what, || {
                attempt!(
                    aws.asg.delete_auto_scaling_group().auto_scaling_group_name(id).force_delete(true),
                    "DeleteAutoScalingGroup"
                )
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
            retrying(aws, &what, || {
                attempt!(ec2.delete_launch_template().launch_template_id(id), "DeleteLaunchTemplate")
            })
            .await?
        }
        "listener" => {
            retrying(aws, &what, || attempt!(aws.elb.delete_listener().listener_arn(id), "DeleteListener")).await?
        }
        "lb" => {
            retrying(aws, &what, || {
                attempt!(aws.elb.delete_load_balancer().load_balancer_arn(id), "DeleteLoadBalancer")
            })
            .await?;
            wait_for("the load balancer to go", aws.poll, Duration::from_secs(600), || async {
                match aws.elb.describe_load_balancers().load_balancer_arns(id).send().await {
                    Ok(out) => Ok(out.load_balancers().is_empty().then_some(())),
                    Err(e) if code(&e).is_some_and(is_gone) => Ok(Some(())),
                    Err(e) => Err(e).call("DescribeLoadBalancers"),
                }
            })
            .await?;
        }
        "tg" => {
            retrying(aws, &what, || attempt!(aws.elb.delete_target_group().target_group_arn(id), "DeleteTargetGroup"))
                .await?
        }
        "targets" => {}
        "nat" => {
            retrying(aws, &what, || attempt!(ec2.delete_nat_gateway().nat_gateway_id(id), "DeleteNatGateway")).await?;
            wait_for("the NAT gateway to be deleted", aws.poll, Duration::from_secs(600), || async {
                let out = ec2.describe_nat_gateways().nat_gateway_ids(id).send().await.call("DescribeNatGateways")?;
                let state = out.nat_gateways().first().and_then(|n| n.state().cloned());
                Ok(matches!(state, None | Some(aws_sdk_ec2::types::NatGatewayState::Deleted)).then_some(()))
            })
            .await?;
        }
        "eip" => {
            if let Some(assoc) = &f.state {
                retrying(aws, &what, || {
                    attempt!(ec2.disassociate_address().association_id(assoc), "DisassociateAddress")
                })
                .await?;
            }
            retrying(aws, &what, || attempt!(ec2.release_address().allocation_id(id), "ReleaseAddress")).await?
        }
        "rtb" => {
            for (assoc, _) in &f.assoc {
                retrying(aws, &what, || {
                    attempt!(ec2.disassociate_route_table().association_id(assoc), "DisassociateRouteTable")
                })
                .await?;
            }
            retrying(aws, &what, || attempt!(ec2.delete_route_table().route_table_id(id), "DeleteRouteTable")).await?
        }
        "igw" => {
            for vpc in &f.links {
                retrying(aws, &what, || {
                    attempt!(ec2.detach_internet_gateway().internet_gateway_id(id).vpc_id(vpc), "DetachInternetGateway")
                })
                .await?;
            }
            retrying(aws, &what, || {
                attempt!(ec2.delete_internet_gateway().internet_gateway_id(id), "DeleteInternetGateway")
            })
            .await?
        }
        "sg" => {
            retrying(aws, &what, || attempt!(ec2.delete_security_group().group_id(id), "DeleteSecurityGroup")).await?
        }
        "subnet" => {
            // Reservations first, so that the subnet has nothing left in it.
            for (reservation, _) in &f.reserved {
                retrying(aws, &what, || {
                    attempt!(
                        ec2.delete_subnet_cidr_reservation().subnet_cidr_reservation_id(reservation),
                        "DeleteSubnetCidrReservation"
                    )
                })
                .await?;
            }
            retrying(aws, &what, || attempt!(ec2.delete_subnet().subnet_id(id), "DeleteSubnet")).await?
        }
        "vpc" => retrying(aws, &what, || attempt!(ec2.delete_vpc().vpc_id(id), "DeleteVpc")).await?,
        "key" => retrying(aws, &what, || attempt!(ec2.delete_key_pair().key_pair_id(id), "DeleteKeyPair")).await?,
        "iam" => {
            let iam = &aws.iam;
            if f.profile {
                for role in &f.links {
                    retrying(aws, &what, || {
                        attempt!(
                            iam.remove_role_from_instance_profile().instance_profile_name(id).role_name(role),
                            "RemoveRoleFromInstanceProfile"
                        )
                    })
                    .await?;
                }
                retrying(aws, &what, || {
                    attempt!(iam.delete_instance_profile().instance_profile_name(id), "DeleteInstanceProfile")
                })
                .await?;
            }
            if f.config.is_some() {
                if f.policy.is_some() {
                    retrying(aws, &what, || {
                        attempt!(iam.delete_role_policy().role_name(id).policy_name(POLICY), "DeleteRolePolicy")
                    })
                    .await?;
                }
                retrying(aws, &what, || attempt!(iam.delete_role().role_name(id), "DeleteRole")).await?;
            }
        }
        "ssm" => retrying(aws, &what, || attempt!(aws.ssm.delete_parameter().name(id), "DeleteParameter")).await?,
        "zone" => retrying(aws, &what, || attempt!(aws.r53.delete_hosted_zone().id(id), "DeleteHostedZone")).await?,
        "dns" => {
            use aws_sdk_route53::types as r53t;
            let Some((dns, zone)) = &f.dns else { bail!("{what}: the record's alias target is unknown") };
            let name = format!("{}.", key_record(f));
            let record = r53t::ResourceRecordSet::builder()
                .name(name)
                .r#type(r53t::RrType::A)
                .alias_target(
                    r53t::AliasTarget::builder()
                        .dns_name(dns)
                        .hosted_zone_id(zone)
                        .evaluate_target_health(false)
                        .build()?,
                )
                .build()?;
            let batch = r53t::ChangeBatch::builder()
                .changes(
                    r53t::Change::builder().action(r53t::ChangeAction::Delete).resource_record_set(record).build()?,
                )
                .build()?;
            retrying(aws, &what, || {
                attempt!(
                    aws.r53.change_resource_record_sets().hosted_zone_id(id).change_batch(batch.clone()),
                    "ChangeResourceRecordSets"
                )
            })
            .await?
        }
        other => bail!("{what}: kaws does not know how to delete a resource of kind {other:?}; delete it by hand"),
    }
    Ok(())
}

/// The record name a DNS entry was found under (kept in `ip`).
fn key_record(f: &Found) -> &str {
    f.ip.as_deref().unwrap_or_default().trim_end_matches('.')
}

/// Deletes everything in `world`, phase by phase; `report` hears of each.
pub async fn destroy(aws: &Aws, world: &World, mut report: impl FnMut(&str, &Found)) -> Result<usize> {
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
    for phase in PHASES {
        let items: Vec<(&String, &Found)> = world
            .found
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |f| (k, f)))
            .filter(|(k, f)| phase.contains(&kind(k, &f.id).as_str()))
            .collect();
        let results = join_all(items.iter().map(|(k, f)| async move { (k, f, delete(aws, k, f).await) })).await;
        let mut errors = Vec::new();
        for (k, f, r) in results {
            match r {
                Ok(()) => {
                    count += 1;
                    report(k, f);
                }
                Err(e) => errors.push(format!("{k} ({}): {e:#}", f.id)),
            }
        }
        if !errors.is_empty() {
            return Err(anyhow!("destroy stopped; these deletes failed:\n  {}", errors.join("\n  ")));
        }
    }
    Ok(count)
}

async fn revoke_all(aws: &Aws, f: &Found) -> Result<()> {
    let out = aws.ec2.describe_security_groups().group_ids(&f.id).send().await;
    let out = match out {
        Err(e) if code(&e).is_some_and(is_gone) => return Ok(()),
        other => other.call("DescribeSecurityGroups")?,
    };
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
pub async fn remaining(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<String>> {
    let world = super::world::discover(aws, spec).await?;
    Ok(world.found.iter().flat_map(|(k, v)| v.iter().map(move |f| format!("{k} ({})", f.id))).collect())
}
