//! EC2 key pairs tagged for the cluster: kaws makes none now (an earlier
//! version did), so any found is surplus, and deleted.

use anyhow::Result;

use super::ctx::{by_cluster, del, ec2_key};
use crate::aws::key::Key;
use crate::aws::{Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, Default)]
pub struct Found;

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let out = aws.ec2.describe_key_pairs().filters(by_cluster(spec)).send().await.call("DescribeKeyPairs")?;
    Ok(out
        .key_pairs()
        .iter()
        .map(|k| (ec2_key(k.tags()), super::Found::new(k.key_pair_id().unwrap_or_default(), Found)))
        .collect())
}

pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    del(aws, Svc::Ec2, "DeleteKeyPair", what, Retry::IN_USE, || aws.ec2.delete_key_pair().key_pair_id(id).send()).await
}
