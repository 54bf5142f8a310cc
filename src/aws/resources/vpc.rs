//! The cluster's VPC: its CIDR (fixed at creation) and DNS support and
//! hostnames, both on (instances resolve the private zone and get names).

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::{self as ec2t, ResourceType};
use ipnet::Ipv4Net;

use super::ctx::{by_cluster, del, ec2_key, Ctx};
use super::{immutable, kv, update, Action, Fix};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::{Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub cidr: Ipv4Net,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    pub cidr: String,
    /// DNS support and hostnames both on.
    pub dns: bool,
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let c = &aws.ec2;
    let vpcs = c.describe_vpcs().filters(by_cluster(spec)).send().await.call("DescribeVpcs")?;
    let mut out = Vec::new();
    for v in vpcs.vpcs() {
        let id = v.vpc_id().unwrap_or_default();
        // Found by its tag, so it exists: NotFound is EC2's eventual consistency.
        let attr = |name| async move {
            let call = c.describe_vpc_attribute().vpc_id(id).attribute(name);
            aws.send(Svc::Other, "DescribeVpcAttribute", Retry::settling(true), || call.clone().send()).await
        };
        use ec2t::VpcAttributeName::{EnableDnsHostnames, EnableDnsSupport};
        // Still NotFound after that: deleted since it was listed.
        let (support, hostnames) = match tokio::try_join!(attr(EnableDnsSupport), attr(EnableDnsHostnames)) {
            Ok(both) => both,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let dns = support.enable_dns_support().and_then(|a| a.value()).unwrap_or(false)
            && hostnames.enable_dns_hostnames().and_then(|a| a.value()).unwrap_or(false);
        let found = Found { cidr: v.cidr_block().unwrap_or_default().to_owned(), dns };
        out.push((ec2_key(v.tags()), super::Found::new(id, found)));
    }
    Ok(out)
}

pub fn diff(want: &Want, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    if let Some(blocked) = immutable("CIDR", &f.cidr, &want.cidr.to_string()) {
        return Some(blocked);
    }
    update(if f.dns { vec![] } else { vec![Fix::VpcDns] })
}

pub fn attributes(want: &Want) -> Vec<String> {
    vec![kv("cidr", want.cidr.to_string()), kv("dns", "support and hostnames on".into())]
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want) -> Result<super::Found> {
    let call = cx.aws.ec2.create_vpc().cidr_block(want.cidr.to_string()).tag_specifications(cx.ec2_tags(
        node,
        ResourceType::Vpc,
        &[],
    ));
    let out = cx.named(Svc::Ec2, "CreateVpc", &[], || call.clone().send()).await?;
    let id = out.vpc().and_then(|v| v.vpc_id()).context("CreateVpc returned no id")?.to_owned();
    cx.made(&id);
    let found = super::Found::new(id, Found { cidr: want.cidr.to_string(), dns: false });
    fix(cx, &[Fix::VpcDns], found).await
}

pub async fn fix(cx: &Ctx<'_>, fixes: &[Fix], mut found: super::Found) -> Result<super::Found> {
    for f in fixes {
        debug_assert_eq!(f, &Fix::VpcDns);
        // One attribute per call, as EC2 requires; the two at once.
        let (ec2, vpc) = (&cx.aws.ec2, found.id.as_str());
        let turn_on = |support: bool| async move {
            let on = ec2t::AttributeBooleanValue::builder().value(true).build();
            let call = ec2.modify_vpc_attribute().vpc_id(vpc);
            let call = if support { call.enable_dns_support(on) } else { call.enable_dns_hostnames(on) };
            cx.named(Svc::Ec2, "ModifyVpcAttribute", &[vpc], || call.clone().send()).await
        };
        tokio::try_join!(turn_on(true), turn_on(false))?;
        if let Some(v) = found.get_mut::<Found>() {
            v.dns = true;
        }
    }
    Ok(found)
}

pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    del(aws, Svc::Ec2, "DeleteVpc", what, Retry::IN_USE, || aws.ec2.delete_vpc().vpc_id(id).send()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Want {
        Want { cidr: "10.0.0.0/16".parse().unwrap() }
    }

    #[test]
    fn a_vpc_is_created_fixed_or_blocked() {
        assert!(matches!(diff(&want(), None), Some(Action::Create)));
        let ok = Found { cidr: "10.0.0.0/16".into(), dns: true };
        assert!(diff(&want(), Some(("vpc-1", &ok))).is_none());
        let no_dns = Found { dns: false, ..ok.clone() };
        assert!(matches!(diff(&want(), Some(("vpc-1", &no_dns))), Some(Action::Update(f)) if f == [Fix::VpcDns]));
        let other = Found { cidr: "10.1.0.0/16".into(), ..ok };
        assert!(
            matches!(diff(&want(), Some(("vpc-1", &other))), Some(Action::Blocked(w)) if w.contains("10.1.0.0/16"))
        );
    }
}
