//! Elastic IPs, one per NAT gateway: their addresses are also the sources
//! the API's load balancer admits instances from.

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::{self as ec2t, ResourceType};

use super::ctx::{by_cluster, del, ec2_key, Ctx};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::{Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, Default)]
pub struct Found {
    pub public_ip: Option<String>,
    /// Its association, while something holds it.
    pub association: Option<String>,
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let out = aws.ec2.describe_addresses().filters(by_cluster(spec)).send().await.call("DescribeAddresses")?;
    Ok(out
        .addresses()
        .iter()
        .map(|a| {
            let found =
                Found { public_ip: a.public_ip().map(String::from), association: a.association_id().map(String::from) };
            (ec2_key(a.tags()), super::Found::new(a.allocation_id().unwrap_or_default(), found))
        })
        .collect())
}

pub async fn create(cx: &Ctx<'_>, node: &Node) -> Result<super::Found> {
    let call = cx.aws.ec2.allocate_address().domain(ec2t::DomainType::Vpc).tag_specifications(cx.ec2_tags(
        node,
        ResourceType::ElasticIp,
        &[],
    ));
    let out = cx.named(Svc::Ec2, "AllocateAddress", &[], || call.clone().send()).await?;
    let id = out.allocation_id().context("no allocation id")?;
    cx.made(id);
    Ok(super::Found::new(id, Found { public_ip: out.public_ip().map(String::from), association: None }))
}

pub async fn delete(aws: &Aws, what: &str, id: &str, f: &Found) -> Result<()> {
    let ec2 = &aws.ec2;
    if let Some(assoc) = &f.association {
        del(aws, Svc::Ec2, "DisassociateAddress", what, Retry::IN_USE, || {
            ec2.disassociate_address().association_id(assoc).send()
        })
        .await?;
    }
    // AuthFailure right after its NAT gateway is deleted is documented as transient.
    del(aws, Svc::Ec2, "ReleaseAddress", what, Retry::IN_USE.with_auth(), || {
        ec2.release_address().allocation_id(id).send()
    })
    .await
}
