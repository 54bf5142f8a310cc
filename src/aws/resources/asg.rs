//! The nodes' Auto Scaling group: min = max = desired = the spec's node
//! count, across the private subnets, launching the latest template version.

use std::time::Duration;

use anyhow::Result;
use aws_sdk_autoscaling::types::{Filter, LaunchTemplateSpecification, Tag};

use super::ctx::{del, tag, Ctx};
use super::{kv, update, Action, Fix, State, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::naming::{TAG_CLUSTER, TAG_KEY};
use crate::aws::{wait_for, Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub subnets: Vec<Key>,
    pub size: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    /// (min, max, desired).
    pub size: (i32, i32, i32),
    /// Its subnets' ids, sorted.
    pub subnets: Vec<String>,
}

fn name(spec: &ClusterSpec) -> String {
    format!("kaws-{}-node", spec.name)
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let filter = Filter::builder().name(format!("tag:{TAG_CLUSTER}")).values(spec.name.to_string()).build();
    let out = aws.asg.describe_auto_scaling_groups().filters(filter).send().await.call("DescribeAutoScalingGroups")?;
    Ok(out
        .auto_scaling_groups()
        .iter()
        .map(|g| {
            let tags = g.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
            let key = Key::from_tag(tag(tags, TAG_KEY).as_deref());
            let mut subnets: Vec<String> = g
                .vpc_zone_identifier()
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            subnets.sort();
            let size = (g.min_size().unwrap_or(0), g.max_size().unwrap_or(0), g.desired_capacity().unwrap_or(0));
            (key, super::Found::new(g.auto_scaling_group_name().unwrap_or_default(), Found { size, subnets }))
        })
        .collect())
}

fn subnet_ids(st: &State, want: &Want) -> Vec<String> {
    let mut ids: Vec<String> = want.subnets.iter().filter_map(|s| st.id(s)).map(String::from).collect();
    ids.sort();
    ids
}

pub fn diff(v: &View, want: &Want, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    let n = want.size as i32;
    update(if f.size != (n, n, n) || f.subnets != subnet_ids(v.state, want) { vec![Fix::Size] } else { vec![] })
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    vec![kv("size", format!("{} (min = max = desired)", want.size)), kv("subnets", v.state.refs(&want.subnets))]
}

pub fn change(v: &View, want: &Want, f: &Found) -> Option<String> {
    let (a, b, c) = f.size;
    let size = want.size;
    Some(format!(
        "size (min/max/desired): {a}/{b}/{c} → {size}/{size}/{size}; subnets: {} → {}",
        f.subnets.join(","),
        subnet_ids(v.state, want).join(",")
    ))
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State) -> Result<super::Found> {
    let (spec, name) = (cx.spec, name(cx.spec));
    let ids: Vec<String> = want.subnets.iter().map(|s| st.need(s)).collect::<Result<_>>()?;
    let k8s = crate::aws::naming::k8s_cluster_tag(spec);
    let tags = cx.tags(node).into_iter().chain([k8s]).map(|(k, v)| {
        // Nodes get the cluster and role tags, not the group's key.
        let propagate = k != TAG_KEY;
        let v = if k == "Name" { format!("{}-node", spec.name) } else { v };
        Tag::builder()
            .key(k)
            .value(v)
            .propagate_at_launch(propagate)
            .resource_id(&name)
            .resource_type("auto-scaling-group")
            .build()
    });
    let n = want.size as i32;
    let call = cx
        .aws
        .asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .launch_template(
            LaunchTemplateSpecification::builder().launch_template_id(st.need(&Key::Lt)?).version("$Latest").build(),
        )
        .min_size(n)
        .max_size(n)
        .desired_capacity(n)
        .vpc_zone_identifier(ids.join(","))
        .health_check_type("EC2")
        .set_tags(Some(tags.collect()));
    let mut found = super::Found::new(&name, Found { size: (n, n, n), subnets: subnet_ids(st, want) });
    // Auto Scaling checks the template's instance profile, which may still be propagating.
    match cx.aws.send(Svc::Other, "CreateAutoScalingGroup", Retry::IAM, || call.clone().send()).await {
        Ok(_) => {}
        // A killed run's group: given this size and these subnets.
        Err(e) if e.code() == "AlreadyExists" => found = fix(cx, want, &[Fix::Size], st, found).await?,
        Err(e) => return Err(e.into()),
    }
    Ok(found)
}

pub async fn fix(
    cx: &Ctx<'_>,
    want: &Want,
    fixes: &[Fix],
    st: &State,
    mut found: super::Found,
) -> Result<super::Found> {
    if !fixes.contains(&Fix::Size) {
        return Ok(found);
    }
    let n = want.size as i32;
    let ids: Vec<String> = want.subnets.iter().map(|s| st.need(s)).collect::<Result<_>>()?;
    let call = cx
        .aws
        .asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(name(cx.spec))
        .min_size(n)
        .max_size(n)
        .desired_capacity(n)
        .vpc_zone_identifier(ids.join(","));
    let named: Vec<&str> = ids.iter().map(String::as_str).collect();
    cx.named(Svc::Other, "UpdateAutoScalingGroup", &named, || call.clone().send()).await?;
    found.is = Found { size: (n, n, n), subnets: subnet_ids(st, want) }.into();
    Ok(found)
}

/// Deleted with its instances (ForceDelete), waited for until it is gone.
pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    del(aws, Svc::Other, "DeleteAutoScalingGroup", what, Retry::IN_USE, || {
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
    .await
}

/// An instance refresh of the group, as AWS reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refresh {
    pub id: String,
    pub status: String,
    pub reason: String,
}

impl Refresh {
    /// Under way (a new one cannot start).
    pub fn active(&self) -> bool {
        ["Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking"].contains(&self.status.as_str())
    }

    /// Ended without replacing what it was to replace.
    pub fn failed(&self) -> bool {
        ["Failed", "Cancelled", "RollbackFailed", "RollbackSuccessful"].contains(&self.status.as_str())
    }
}

/// The group's latest instance refresh, if any (AWS lists the newest first).
pub async fn latest_refresh(aws: &Aws, group: &str) -> Result<Option<Refresh>> {
    let out = aws
        .send(Svc::Other, "DescribeInstanceRefreshes", Retry::NONE, || {
            aws.asg.describe_instance_refreshes().auto_scaling_group_name(group).max_records(1).send()
        })
        .await?;
    Ok(out.instance_refreshes().first().map(|r| Refresh {
        id: r.instance_refresh_id().unwrap_or_default().to_owned(),
        status: r.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        reason: r.status_reason().unwrap_or_default().to_owned(),
    }))
}

/// Starts an instance refresh of the node group: the nodes launched from an
/// older launch template version are replaced (SkipMatching), one at a time,
/// each new one launched before the old one terminates (healthy 100 to 110
/// percent), given 5 minutes to join before the next. A refresh already under
/// way is left to finish (InstanceRefreshInProgress). Returns its id when it
/// started one.
pub async fn refresh(aws: &Aws, group: &str) -> Result<Option<String>> {
    use aws_sdk_autoscaling::types::{RefreshPreferences, RefreshStrategy};
    let preferences = RefreshPreferences::builder()
        .min_healthy_percentage(100)
        .max_healthy_percentage(110)
        .instance_warmup(REFRESH_WARMUP_SECS)
        .skip_matching(true)
        .build();
    let call = aws
        .asg
        .start_instance_refresh()
        .auto_scaling_group_name(group)
        .strategy(RefreshStrategy::Rolling)
        .preferences(preferences);
    match aws.send(Svc::Other, "StartInstanceRefresh", Retry::NONE, || call.clone().send()).await {
        Ok(out) => Ok(out.instance_refresh_id().map(String::from)),
        Err(e) if e.code() == "InstanceRefreshInProgress" => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How long a new node is given to boot and join before the refresh goes on.
pub const REFRESH_WARMUP_SECS: i32 = 300;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::{subnet, Wanted};

    #[test]
    fn size_and_subnets_follow_the_spec() {
        let spec = crate::cluster::spec::tests::spec();
        let mut state = State::default();
        let keys: Vec<Key> = (0..2).map(|z| Key::Subnet { public: false, zone: z }).collect();
        for (z, k) in keys.iter().enumerate() {
            state.found.insert(k.clone(), super::super::Found::new(format!("subnet-{z}"), subnet::Found::default()));
        }
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        let want = Want { subnets: keys, size: 3 };
        let ok = Found { size: (3, 3, 3), subnets: vec!["subnet-0".into(), "subnet-1".into()] };
        assert!(diff(&v, &want, Some(("g", &ok))).is_none());
        let scaled = Found { size: (1, 5, 2), ..ok.clone() };
        assert!(matches!(diff(&v, &want, Some(("g", &scaled))), Some(Action::Update(f)) if f == [Fix::Size]));
        let narrowed = Found { subnets: vec!["subnet-0".into()], ..ok };
        assert!(matches!(diff(&v, &want, Some(("g", &narrowed))), Some(Action::Update(_))));
    }
}
