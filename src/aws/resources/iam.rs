//! IAM: per host role (bastion, each master, the nodes) a role, its
//! instance profile and its inline policy `kaws`, all of one name, under
//! the cluster's path. IAM is global: names and path carry the region, and
//! a role of the name that is not this cluster's is never taken over.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};

use super::ctx::{del, tag, Ctx};
use super::{kv, update, Action, Fix, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::naming::{self, POLICY, TAG_CLUSTER};
use crate::aws::{Aws, AwsError, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub name: String,
    /// The SSM parameters its instances may read and write.
    pub ssm: Access,
    /// Whether its instances may list EC2 instances (the masters' approver
    /// of serving certificates checks a node's name and address with it).
    pub sees_instances: bool,
    /// Whether its instances report their bootstrap stage and trust
    /// generation, as tags on themselves.
    pub reports: bool,
}

/// SSM parameter paths a role's instances may read (GetParameter, and
/// Decrypt through SSM) and write (PutParameter, and Encrypt through SSM).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub reads: Vec<String>,
    pub writes: Vec<String>,
}

impl Access {
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty()
    }
}

/// The ARNs of SSM parameter paths, in the account and partition of `arn`.
pub fn parameter_arns(spec: &ClusterSpec, arn: &str, paths: &[String]) -> Vec<String> {
    let (partition, account) = partition_account(arn).unwrap_or(("aws", "*"));
    let region = &spec.region;
    paths.iter().map(|p| format!("arn:{partition}:ssm:{region}:{account}:parameter{p}")).collect()
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The role's ARN, when the role exists.
    pub arn: Option<String>,
    /// Its inline policy `kaws`.
    pub policy: Option<serde_json::Value>,
    /// Whether the instance profile exists, and the roles it holds.
    pub profile: bool,
    pub profile_roles: Vec<String>,
}

const ASSUME_EC2: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let c = &aws.iam;
    let path = naming::iam_path(spec);
    let (roles, profiles) =
        tokio::try_join!(async { c.list_roles().path_prefix(&path).send().await.call("ListRoles") }, async {
            c.list_instance_profiles().path_prefix(&path).send().await.call("ListInstanceProfiles")
        },)?;
    let prefix = naming::iam_name(spec, "");
    let key = |name: &str| Key::from_tag(Some(&format!("iam/{}", name.strip_prefix(&prefix).unwrap_or(name))));
    let mut map: BTreeMap<String, Found> = BTreeMap::new();
    // Exactly the cluster's path (the prefix would also match a cluster
    // whose name extends this one's), whatever the listing let through.
    let ours = |p: &str, name: &str| p == path && name.starts_with(&prefix);
    for r in roles.roles().iter().filter(|r| ours(r.path(), r.role_name())) {
        let name = r.role_name();
        let policy = match c.get_role_policy().role_name(name).policy_name(POLICY).send().await {
            Ok(p) => {
                let doc = percent_encoding::percent_decode_str(p.policy_document()).decode_utf8_lossy().into_owned();
                Some(serde_json::from_str(&doc).context("an IAM policy that is not JSON")?)
            }
            // The role has no inline policy of that name.
            Err(e) => match AwsError::new("GetRolePolicy", &e) {
                a if a.code() == "NoSuchEntity" => None,
                a => return Err(a.on(name).into()),
            },
        };
        let f = map.entry(name.to_owned()).or_default();
        f.arn = Some(r.arn().to_owned());
        f.policy = policy;
    }
    for p in profiles.instance_profiles().iter().filter(|p| ours(p.path(), p.instance_profile_name())) {
        let f = map.entry(p.instance_profile_name().to_owned()).or_default();
        f.profile = true;
        f.profile_roles = p.roles().iter().map(|r| r.role_name().to_owned()).collect();
    }
    Ok(map.into_iter().map(|(name, f)| (key(&name), super::Found::new(name, f))).collect())
}

/// The desired inline policy of an instance role: read its own parameters,
/// write those it renews (the masters, the node bootstrap token), and list
/// instances when it `sees_instances`.
pub fn policy(spec: &ClusterSpec, role_arn: &str, want: &Want) -> Option<serde_json::Value> {
    let ssm = &want.ssm;
    if ssm.is_empty() && !want.sees_instances && !want.reports {
        return None;
    }
    let mut statements = Vec::new();
    if !ssm.reads.is_empty() {
        let resources = parameter_arns(spec, role_arn, &ssm.reads);
        statements.push(
            serde_json::json!({"Sid": "ReadOwnSecrets", "Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": resources}),
        );
    }
    if !ssm.writes.is_empty() {
        let resources = parameter_arns(spec, role_arn, &ssm.writes);
        statements.push(
            serde_json::json!({"Sid": "RenewOwnSecrets", "Effect": "Allow", "Action": ["ssm:PutParameter"], "Resource": resources}),
        );
    }
    if want.sees_instances {
        // DescribeInstances has no resource-level permissions: "*" is the only resource AWS takes.
        statements.push(
            serde_json::json!({"Sid": "SeeInstances", "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"}),
        );
    }
    if want.reports {
        // Its own instance only, as AWS's managed policies that act on the
        // calling instance write it (ec2:SourceInstanceARN, present only
        // for an instance profile's credentials; ${ec2:InstanceID}, the
        // target's), and the reported keys only.
        let (partition, account) = partition_account(role_arn).unwrap_or(("aws", "*"));
        let instances = format!("arn:{partition}:ec2:{}:{account}:instance/", spec.region);
        statements.push(serde_json::json!({
            "Sid": "ReportOwnState",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": format!("{instances}*"),
            "Condition": {
                "ArnEquals": {"ec2:SourceInstanceARN": format!("{instances}${{ec2:InstanceID}}")},
                "ForAllValues:StringEquals": {"aws:TagKeys": crate::aws::naming::REPORTED},
                "Null": {"aws:TagKeys": "false"}
            }
        }));
    }
    Some(serde_json::json!({"Version": "2012-10-17", "Statement": statements}))
}

/// The partition and account of an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:…`).
pub fn partition_account(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.split(':').collect();
    Some((parts.get(1)?, parts.get(4)?))
}

/// A policy document as AWS may give it back: one-element lists as their
/// element, lists of strings in order.
pub fn normalized(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Array(items) if items.len() == 1 => normalized(&items[0]),
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(normalized).collect();
            if items.iter().all(Value::is_string) {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
            Value::Array(items)
        }
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), normalized(v))).collect()),
        other => other.clone(),
    }
}

pub fn diff(v: &View, want: &Want, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    let mut fixes = Vec::new();
    let wanted = f.arn.as_deref().and_then(|arn| policy(v.spec, arn, want));
    if f.arn.is_none() || f.policy.as_ref().map(normalized) != wanted.as_ref().map(normalized) {
        fixes.push(Fix::Policy);
    }
    if !f.profile {
        fixes.push(Fix::Profile);
    }
    if !f.profile_roles.contains(&want.name) {
        fixes.push(Fix::ProfileRole);
    }
    update(fixes)
}

fn reads(want: &Want) -> String {
    let mut out = if want.ssm.reads.is_empty() { "nothing".to_owned() } else { want.ssm.reads.join(", ") };
    if !want.ssm.writes.is_empty() {
        out += &format!("; writes {}", want.ssm.writes.join(", "));
    }
    if want.sees_instances {
        out += "; lists EC2 instances";
    }
    out
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    vec![kv("name", want.name.clone()), kv("path", naming::iam_path(v.spec)), kv("reads", reads(want))]
}

pub fn change(v: &View, want: &Want) -> Option<String> {
    Some(format!("inline policy: now reads {} (under {})", reads(want), naming::ssm_prefix(v.spec)))
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want) -> Result<super::Found> {
    let arn = create_role(cx, node, want).await?;
    let found = super::Found::new(&want.name, Found { arn: Some(arn), ..Found::default() });
    fix(cx, node, want, &[Fix::Policy, Fix::Profile, Fix::ProfileRole], found).await
}

/// Creates the role (or takes over a killed run's); returns its ARN.
async fn create_role(cx: &Ctx<'_>, node: &Node, want: &Want) -> Result<String> {
    let (spec, name) = (cx.spec, &want.name);
    let call = cx
        .aws
        .iam
        .create_role()
        .role_name(name)
        .path(naming::iam_path(spec))
        .assume_role_policy_document(ASSUME_EC2)
        .description(format!("kaws {}: {}", spec.name, node.key))
        .set_tags(Some(tags(cx, node)?));
    // Fresh either way: a role a killed run made may still be propagating.
    cx.made(name);
    match cx.aws.send(Svc::Iam, "CreateRole", Retry::NONE, || call.clone().send()).await {
        Ok(o) => o.role().map(|r| r.arn().to_owned()).context("CreateRole returned no role"),
        // Created by a run that was killed before it was recorded.
        Err(e) if e.code() == "EntityAlreadyExists" => adopt(cx, name).await,
        Err(e) => Err(e.into()),
    }
}

/// A role of this name exists: taken over only if it is this cluster's,
/// in this region, on kaws' path.
async fn adopt(cx: &Ctx<'_>, name: &str) -> Result<String> {
    let spec = cx.spec;
    let out = cx.aws.iam.get_role().role_name(name).send().await.call("GetRole")?;
    let role = out.role().context("no role")?;
    let tags: Vec<(&str, &str)> = role.tags().iter().map(|t| (t.key(), t.value())).collect();
    let owner = tag(tags.iter().copied(), TAG_CLUSTER);
    let region = tag(tags.iter().copied(), naming::TAG_REGION);
    if owner.as_deref() != Some(spec.name.as_str())
        || region.as_deref() != Some(spec.region.as_str())
        || role.path() != naming::iam_path(spec)
    {
        return Err(crate::error::failed(format!(
            "IAM role {name} exists but is not this cluster's (path {}, tags kaws:cluster={}, kaws:region={}); \
             kaws does not touch it",
            role.path(),
            owner.as_deref().unwrap_or("none"),
            region.as_deref().unwrap_or("none")
        ))
        .hint("rename the cluster, or delete that role if nothing uses it")
        .into());
    }
    Ok(role.arn().to_owned())
}

fn tags(cx: &Ctx<'_>, node: &Node) -> Result<Vec<aws_sdk_iam::types::Tag>> {
    cx.tags(node).into_iter().map(|(k, v)| Ok(aws_sdk_iam::types::Tag::builder().key(k).value(v).build()?)).collect()
}

/// The policy, then the profile, then the role in it, in that order.
pub async fn fix(
    cx: &Ctx<'_>,
    node: &Node,
    want: &Want,
    fixes: &[Fix],
    mut found: super::Found,
) -> Result<super::Found> {
    let (iam, name) = (&cx.aws.iam, &want.name);
    let mut f = found.get::<Found>().cloned().unwrap_or_default();
    // A role or profile made moments ago may answer NoSuchEntity.
    let retry = cx.iam_retry(name);
    for fix in fixes {
        match fix {
            Fix::Policy => {
                // A profile without its role (deleted by hand): the role first.
                let arn = match f.arn.clone() {
                    Some(arn) => arn,
                    None => create_role(cx, node, want).await?,
                };
                f.arn = Some(arn.clone());
                match policy(cx.spec, &arn, want) {
                    Some(doc) => {
                        let call =
                            iam.put_role_policy().role_name(name).policy_name(POLICY).policy_document(doc.to_string());
                        cx.aws.send(Svc::Iam, "PutRolePolicy", retry, || call.clone().send()).await?;
                        f.policy = Some(doc);
                    }
                    None => {
                        if f.policy.is_some() {
                            let call = iam.delete_role_policy().role_name(name).policy_name(POLICY);
                            cx.aws.send(Svc::Iam, "DeleteRolePolicy", Retry::NONE, || call.clone().send()).await?;
                        }
                        f.policy = None;
                    }
                }
            }
            Fix::Profile => {
                let call = iam
                    .create_instance_profile()
                    .instance_profile_name(name)
                    .path(naming::iam_path(cx.spec))
                    .set_tags(Some(tags(cx, node)?));
                cx.made(name);
                match cx.aws.send(Svc::Iam, "CreateInstanceProfile", Retry::NONE, || call.clone().send()).await {
                    Ok(_) => {}
                    Err(e) if e.code() == "EntityAlreadyExists" => {}
                    Err(e) => return Err(e.into()),
                }
                f.profile = true;
            }
            Fix::ProfileRole => {
                let retry = cx.iam_retry(name);
                let add = iam.add_role_to_instance_profile().instance_profile_name(name).role_name(name);
                match cx.aws.send(Svc::Iam, "AddRoleToInstanceProfile", retry, || add.clone().send()).await {
                    Ok(_) => {}
                    Err(e) if e.code() == "LimitExceeded" => {
                        // Another role holds the profile (drift): replace it.
                        for other in f.profile_roles.clone() {
                            let call =
                                iam.remove_role_from_instance_profile().instance_profile_name(name).role_name(other);
                            cx.aws
                                .send(Svc::Iam, "RemoveRoleFromInstanceProfile", Retry::NONE, || call.clone().send())
                                .await?;
                        }
                        cx.aws.send(Svc::Iam, "AddRoleToInstanceProfile", retry, || add.clone().send()).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                f.profile_roles = vec![name.clone()];
            }
            other => anyhow::bail!("internal: {other:?} is not an IAM fix"),
        }
    }
    found.is = f.into();
    Ok(found)
}

pub async fn delete(aws: &Aws, what: &str, id: &str, f: &Found) -> Result<()> {
    let iam = &aws.iam;
    if f.profile {
        for role in &f.profile_roles {
            del(aws, Svc::Iam, "RemoveRoleFromInstanceProfile", what, Retry::IN_USE, || {
                iam.remove_role_from_instance_profile().instance_profile_name(id).role_name(role).send()
            })
            .await?;
        }
        del(aws, Svc::Iam, "DeleteInstanceProfile", what, Retry::IN_USE, || {
            iam.delete_instance_profile().instance_profile_name(id).send()
        })
        .await?;
    }
    if f.arn.is_some() {
        if f.policy.is_some() {
            del(aws, Svc::Iam, "DeleteRolePolicy", what, Retry::IN_USE, || {
                iam.delete_role_policy().role_name(id).policy_name(POLICY).send()
            })
            .await?;
        }
        del(aws, Svc::Iam, "DeleteRole", what, Retry::IN_USE, || iam.delete_role().role_name(id).send()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::{State, Wanted};

    #[test]
    fn a_role_gets_its_policy_profile_and_membership() {
        let spec = crate::cluster::spec::tests::spec();
        let state = State::default();
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        let want = Want {
            name: "kaws-x-node".into(),
            ssm: Access { reads: vec!["/kaws/x/node/*".into()], writes: vec![] },
            sees_instances: false,
            reports: true,
        };
        let arn = "arn:aws:iam::123456789012:role/kaws/x/kaws-x-node";
        let complete = Found {
            arn: Some(arn.into()),
            policy: policy(&spec, arn, &want),
            profile: true,
            profile_roles: vec![want.name.clone()],
        };
        assert!(diff(&v, &want, Some(("kaws-x-node", &complete))).is_none());
        // It tags its own instance only, with the reported keys only.
        let doc = complete.policy.as_ref().unwrap().to_string();
        let own = r#""ec2:SourceInstanceARN":"arn:aws:ec2:eu-west-1:123456789012:instance/${ec2:InstanceID}""#;
        assert!(doc.contains(own) && doc.contains(r#"["kaws:generation","kaws:stage"]"#), "{doc}");
        // A profile without its role, left by a killed run.
        let profile_only = Found { arn: None, policy: None, profile: true, profile_roles: vec![] };
        let Some(Action::Update(fixes)) = diff(&v, &want, Some(("kaws-x-node", &profile_only))) else { panic!() };
        assert_eq!(fixes, [Fix::Policy, Fix::ProfileRole]);
        // A policy widened by hand is put back.
        let mut widened = complete.clone();
        widened.policy = Some(serde_json::json!({"Statement": [{"Action": "ssm:*", "Resource": "*"}]}));
        assert!(matches!(diff(&v, &want, Some(("n", &widened))), Some(Action::Update(f)) if f == [Fix::Policy]));
    }

    #[test]
    fn policies_compare_as_aws_returns_them() {
        let a = serde_json::json!({"Action": ["ssm:GetParameter"], "Resource": ["b", "a"]});
        let b = serde_json::json!({"Action": "ssm:GetParameter", "Resource": ["a", "b"]});
        assert_eq!(normalized(&a), normalized(&b));
    }
}
