//! NAT gateways (one, or one per zone): the private subnets' way out. A
//! pending one (a killed run's) is waited for before routes use it; a
//! failed one is reported with AWS's reason and replaced.

use std::time::Duration;

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::{self as ec2t, Filter, ResourceType};

use super::ctx::{by_cluster, del, ec2_key, unless_gone, Age, Ctx, Probe, Replay};
use super::{kv, Action, State, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::{wait_for, Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

/// How many NAT gateways the spec wants.
pub fn count(spec: &ClusterSpec) -> usize {
    if spec.aws.single_nat {
        1
    } else {
        spec.azs as usize
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub subnet: Key,
    pub address: Key,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    pub state: String,
    /// Why it failed, when it did: AWS's code and message.
    pub failure: Option<String>,
}

impl Found {
    pub fn failed(&self) -> bool {
        self.state == "failed"
    }
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let live =
        Filter::builder().name("state").set_values(Some(vec!["pending".into(), "available".into(), "failed".into()]));
    let call = aws.ec2.describe_nat_gateways().filter(by_cluster(spec)).filter(live.build());
    let out = call.send().await.call("DescribeNatGateways")?;
    Ok(out
        .nat_gateways()
        .iter()
        .map(|n| {
            let found = Found {
                state: n.state().map_or("unknown", |s| s.as_str()).to_owned(),
                failure: n.failure_code().map(|c| format!("{c}: {}", n.failure_message().unwrap_or(""))),
            };
            (ec2_key(n.tags()), super::Found::new(n.nat_gateway_id().unwrap_or_default(), found))
        })
        .collect())
}

pub fn diff(found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((id, f)) = found else { return Some(Action::Create) };
    f.failed().then(|| Action::Replace {
        found: Box::new(super::Found::new(id, f.clone())),
        why: format!("{id} failed ({})", f.failure.as_deref().unwrap_or("no reason given")),
    })
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    vec![kv("subnet", v.state.refer(&want.subnet)), kv("address", v.state.refer(&want.address))]
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State) -> Result<super::Found> {
    let (sid, aid) = (st.need(&want.subnet)?, st.need(&want.address)?);
    let request = cx.aws.ec2.create_nat_gateway().subnet_id(&sid).allocation_id(&aid).tag_specifications(cx.ec2_tags(
        node,
        ResourceType::Natgateway,
        &[],
    ));
    let id = cx
        .create_once("CreateNatGateway", |salt| {
            let call = request.clone().client_token(cx.token(node, request.as_input(), &salt));
            let (sid, aid) = (&sid, &aid);
            async move {
                let started = std::time::SystemTime::now();
                let out = cx.named(Svc::Ec2, "CreateNatGateway", &[sid, aid], || call.clone().send()).await?;
                let nat = out.nat_gateway().context("no NAT gateway")?;
                let id = nat.nat_gateway_id().context("no NAT gateway id")?.to_owned();
                cx.made(&id);
                // Routes to a NAT gateway that is not available yet go nowhere.
                Ok(available(cx, &id, Age::of(nat.create_time(), started)).await?.map(|()| id))
            }
        })
        .await?;
    let found = Found { state: "available".into(), failure: None };
    Ok(super::Found::new(id, found))
}

/// Waits until NAT gateway `id` is available (a killed run may have left
/// it pending); a failed one is an error with AWS's reason.
pub async fn available(cx: &Ctx<'_>, id: &str, age: Age) -> Result<Replay<()>> {
    let ec2 = &cx.aws.ec2;
    cx.confirm("NAT gateway", id, age, || async {
        let out = ec2.describe_nat_gateways().nat_gateway_ids(id).send().await.call("DescribeNatGateways")?;
        let Some(n) = out.nat_gateways().first() else { return Ok(Probe::Wait) };
        use ec2t::NatGatewayState as S;
        match n.state() {
            Some(S::Available) => Ok(Probe::Ready(())),
            // Only a person (or kaws' replace) deletes one: a replay.
            Some(S::Deleting | S::Deleted) => Ok(Probe::Dead),
            Some(S::Failed) => Err(crate::error::failed(format!(
                "NAT gateway {id} failed: {}: {}",
                n.failure_code().unwrap_or("no code"),
                n.failure_message().unwrap_or("no message")
            ))
            .hint("run `kaws cluster apply` again: it replaces a failed NAT gateway")
            .into()),
            _ => Ok(Probe::Wait),
        }
    })
    .await
}

pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    let ec2 = &aws.ec2;
    del(aws, Svc::Ec2, "DeleteNatGateway", what, Retry::IN_USE, || ec2.delete_nat_gateway().nat_gateway_id(id).send())
        .await?;
    wait_for("the NAT gateway to be deleted", aws.poll, Duration::from_secs(600), || async {
        let out = ec2.describe_nat_gateways().nat_gateway_ids(id).send().await.call("DescribeNatGateways");
        let Some(out) = unless_gone(out)? else { return Ok(Some(())) };
        let state = out.nat_gateways().first().and_then(|n| n.state().cloned());
        Ok(matches!(state, None | Some(ec2t::NatGatewayState::Deleted)).then_some(()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_gateway_is_replaced_with_its_reason() {
        assert!(matches!(diff(None), Some(Action::Create)));
        let pending = Found { state: "pending".into(), ..Found::default() };
        assert!(diff(Some(("nat-1", &pending))).is_none(), "a pending one is waited for, not replaced");
        let failed = Found { state: "failed".into(), failure: Some("Gateway.NotAttached: no IGW".into()) };
        match diff(Some(("nat-1", &failed))) {
            Some(Action::Replace { why, found }) => {
                assert!(why.contains("Gateway.NotAttached"), "{why}");
                assert_eq!(found.id, "nat-1");
            }
            other => panic!("{other:?}"),
        }
    }
}
