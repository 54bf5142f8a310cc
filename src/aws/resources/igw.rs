//! The internet gateway, attached to the cluster's VPC.

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::ResourceType;

use super::ctx::{by_cluster, del, ec2_key, Ctx};
use super::{update, Action, Fix, State, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::{Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The VPCs it is attached to.
    pub vpcs: Vec<String>,
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let out =
        aws.ec2.describe_internet_gateways().filters(by_cluster(spec)).send().await.call("DescribeInternetGateways")?;
    Ok(out
        .internet_gateways()
        .iter()
        .map(|g| {
            let vpcs = g.attachments().iter().filter_map(|a| a.vpc_id()).map(String::from).collect();
            (ec2_key(g.tags()), super::Found::new(g.internet_gateway_id().unwrap_or_default(), Found { vpcs }))
        })
        .collect())
}

pub fn diff(v: &View, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    let vpc = v.state.id(&Key::Vpc).unwrap_or_default();
    update(if f.vpcs.iter().any(|x| x == vpc) { vec![] } else { vec![Fix::Attach] })
}

pub async fn create(cx: &Ctx<'_>, node: &Node, st: &State) -> Result<super::Found> {
    let call =
        cx.aws.ec2.create_internet_gateway().tag_specifications(cx.ec2_tags(node, ResourceType::InternetGateway, &[]));
    let out = cx.named(Svc::Ec2, "CreateInternetGateway", &[], || call.clone().send()).await?;
    let id = out.internet_gateway().and_then(|g| g.internet_gateway_id()).context("no IGW id")?;
    cx.made(id);
    fix(cx, &[Fix::Attach], st, super::Found::new(id, Found::default())).await
}

pub async fn fix(cx: &Ctx<'_>, fixes: &[Fix], st: &State, mut found: super::Found) -> Result<super::Found> {
    if fixes.contains(&Fix::Attach) {
        let vpc = st.need(&Key::Vpc)?;
        let call = cx.aws.ec2.attach_internet_gateway().internet_gateway_id(&found.id).vpc_id(&vpc);
        cx.named(Svc::Ec2, "AttachInternetGateway", &[&found.id, &vpc], || call.clone().send()).await?;
        found.is = Found { vpcs: vec![vpc] }.into();
    }
    Ok(found)
}

pub async fn delete(aws: &Aws, what: &str, id: &str, f: &Found) -> Result<()> {
    let ec2 = &aws.ec2;
    for vpc in &f.vpcs {
        del(aws, Svc::Ec2, "DetachInternetGateway", what, Retry::IN_USE, || {
            ec2.detach_internet_gateway().internet_gateway_id(id).vpc_id(vpc).send()
        })
        .await?;
    }
    del(aws, Svc::Ec2, "DeleteInternetGateway", what, Retry::IN_USE, || {
        ec2.delete_internet_gateway().internet_gateway_id(id).send()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::{vpc, Wanted};

    #[test]
    fn a_detached_gateway_is_attached() {
        let spec = crate::cluster::spec::tests::spec();
        let mut state = State::default();
        state.found.insert(Key::Vpc, super::super::Found::new("vpc-1", vpc::Found::default()));
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        assert!(matches!(diff(&v, None), Some(Action::Create)));
        let attached = Found { vpcs: vec!["vpc-1".into()] };
        assert!(diff(&v, Some(("igw-1", &attached))).is_none());
        let elsewhere = Found { vpcs: vec!["vpc-2".into()] };
        assert!(matches!(diff(&v, Some(("igw-1", &elsewhere))), Some(Action::Update(f)) if f == [Fix::Attach]));
    }
}
