//! The cluster's own KMS key, `alias/kaws/CLUSTER`, which encrypts its SSM
//! parameters. Its key policy lets each reader role (an `iam/…` node)
//! decrypt only through SSM and only its own parameter paths; the account
//! administers it and encrypts with it, but may not decrypt. Destroy
//! schedules its deletion (KMS waits at least 7 days) and deletes the alias.

use anyhow::{Context as _, Result};
use aws_sdk_kms::types::KeyState;

use super::ctx::{del, tag, Ctx};
use super::iam::{self, normalized, parameter_arns, partition_account, Access};
use super::{kv, update, Action, Fix, State, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::naming::{self, TAG_CLUSTER};
use crate::aws::{Aws, AwsError, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// Each role with parameters and the paths it may decrypt and encrypt.
    pub readers: Vec<(Key, Access)>,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    pub state: String,
    /// The alias names a key whose tags are not this cluster's.
    pub foreign: bool,
    pub policy: Option<serde_json::Value>,
    pub alias: String,
}

/// The key, by its alias. A key scheduled for deletion is gone.
pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let c = &aws.kms;
    let alias = naming::kms_alias(spec);
    let out = match c.describe_key().key_id(&alias).send().await {
        Ok(o) => o,
        Err(e) => match AwsError::new("DescribeKey", &e) {
            a if a.is_not_found() => return Ok(vec![]),
            a => return Err(a.on(alias).into()),
        },
    };
    let Some(meta) = out.key_metadata() else { return Ok(vec![]) };
    if matches!(meta.key_state(), Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion)) {
        return Ok(vec![]);
    }
    let id = meta.key_id();
    let (tags, policy) =
        tokio::try_join!(async { c.list_resource_tags().key_id(id).send().await.call("ListResourceTags") }, async {
            c.get_key_policy().key_id(id).policy_name("default").send().await.call("GetKeyPolicy")
        },)?;
    let t = || tags.tags().iter().map(|t| (t.tag_key(), t.tag_value()));
    let ours = tag(t(), TAG_CLUSTER).as_deref() == Some(spec.name.as_str())
        && tag(t(), naming::TAG_REGION).as_deref() == Some(spec.region.as_str());
    let policy = policy.policy().map(serde_json::from_str).transpose().context("a key policy that is not JSON")?;
    let found =
        Found { state: meta.key_state().map_or("unknown", |s| s.as_str()).to_owned(), foreign: !ours, policy, alias };
    Ok(vec![(Key::Kms, super::Found::new(meta.arn().unwrap_or(id), found))])
}

/// The key policy (see the module). `None` until every reader role's ARN is known.
pub fn key_policy(spec: &ClusterSpec, readers: &[(Key, Access)], st: &State) -> Option<serde_json::Value> {
    let arns: Vec<String> =
        readers.iter().map(|(k, _)| st.get::<iam::Found>(k).and_then(|(_, r)| r.arn.clone())).collect::<Option<_>>()?;
    let (partition, account) = partition_account(arns.first()?)?;
    let region = &spec.region;
    let mut statements = vec![serde_json::json!({
        "Sid": "AccountAdministersAndEncrypts",
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:{partition}:iam::{account}:root")},
        "Action": ["kms:CreateAlias", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                   "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
                   "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:Encrypt",
                   "kms:GenerateDataKey*"],
        "Resource": "*"
    })];
    // Not kms:Create* (CreateGrant would let an IAM policy grant Decrypt
    // outside this policy), nor ReEncrypt* (it decrypts): CreateAlias only.
    for ((key, access), arn) in readers.iter().zip(&arns) {
        let sid: String = key.to_string().chars().filter(char::is_ascii_alphanumeric).collect();
        for (action, verb, paths) in
            [("kms:Decrypt", "Decrypts", &access.reads), ("kms:Encrypt", "Encrypts", &access.writes)]
        {
            if paths.is_empty() {
                continue;
            }
            statements.push(serde_json::json!({
                "Sid": format!("{sid}{verb}ItsOwnThroughSsm"),
                "Effect": "Allow",
                "Principal": {"AWS": arn},
                "Action": action,
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:ViaService": format!("ssm.{region}.amazonaws.com")},
                    "StringLike": {"kms:EncryptionContext:PARAMETER_ARN": parameter_arns(spec, arn, paths)}
                }
            }));
        }
    }
    Some(serde_json::json!({"Version": "2012-10-17", "Statement": statements}))
}

pub fn diff(v: &View, want: &Want, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((id, f)) = found else { return Some(Action::Create) };
    if f.foreign {
        return Some(Action::Blocked(format!(
            "{} names key {id}, which is not this cluster's (its tags say otherwise); kaws does not use it",
            f.alias
        )));
    }
    if f.state != KeyState::Enabled.as_str() {
        return Some(Action::Blocked(format!(
            "key {id} is {}, so SSM can neither encrypt nor decrypt the cluster's parameters; \
             enable it (`aws kms enable-key`) and apply again",
            f.state
        )));
    }
    let want = key_policy(v.spec, &want.readers, v.state);
    update(if want.is_none() || f.policy.as_ref().map(normalized) != want.as_ref().map(normalized) {
        vec![Fix::KeyPolicy]
    } else {
        vec![]
    })
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    let who: Vec<String> = want.readers.iter().map(|(k, _)| k.to_string()).collect();
    vec![kv("alias", naming::kms_alias(v.spec)), kv("decrypts for", format!("{} (through SSM)", who.join(", ")))]
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State) -> Result<super::Found> {
    let (spec, kms) = (cx.spec, &cx.aws.kms);
    let policy = key_policy(spec, &want.readers, st).context("the reader roles' ARNs are unknown")?;
    let t: Vec<aws_sdk_kms::types::Tag> = cx
        .tags(node)
        .into_iter()
        .map(|(k, v)| aws_sdk_kms::types::Tag::builder().tag_key(k).tag_value(v).build())
        .collect::<Result<_, _>>()?;
    let call = kms
        .create_key()
        .description(format!("kaws {} in {}: its SSM parameters", spec.name, spec.region))
        .policy(policy.to_string())
        .set_tags(Some(t));
    // The roles the policy names may not have reached KMS yet.
    let out = cx.aws.send(Svc::Other, "CreateKey", Retry::IAM, || call.clone().send()).await?;
    let meta = out.key_metadata().context("CreateKey returned no key")?;
    let alias = naming::kms_alias(spec);
    let create = kms.create_alias().alias_name(&alias).target_key_id(meta.key_id());
    match cx.aws.send(Svc::Other, "CreateAlias", Retry::NONE, || create.clone().send()).await {
        Ok(_) => {}
        // Left on a key scheduled for deletion (a destroy that was cut short).
        Err(e) if e.code() == "AlreadyExistsException" => {
            let update = kms.update_alias().alias_name(&alias).target_key_id(meta.key_id());
            cx.aws.send(Svc::Other, "UpdateAlias", Retry::NONE, || update.clone().send()).await?;
        }
        Err(e) => return Err(e.into()),
    }
    let found = Found { state: KeyState::Enabled.as_str().into(), foreign: false, policy: Some(policy), alias };
    Ok(super::Found::new(meta.arn().unwrap_or(meta.key_id()), found))
}

pub async fn fix(
    cx: &Ctx<'_>,
    want: &Want,
    fixes: &[Fix],
    st: &State,
    mut found: super::Found,
) -> Result<super::Found> {
    if fixes.contains(&Fix::KeyPolicy) {
        let policy = key_policy(cx.spec, &want.readers, st).context("the reader roles' ARNs are unknown")?;
        let call = cx.aws.kms.put_key_policy().key_id(&found.id).policy_name("default").policy(policy.to_string());
        cx.aws.send(Svc::Other, "PutKeyPolicy", Retry::IAM, || call.clone().send()).await?;
        if let Some(f) = found.get_mut::<Found>() {
            f.policy = Some(policy);
        }
    }
    Ok(found)
}

pub async fn delete(aws: &Aws, what: &str, id: &str, f: &Found) -> Result<()> {
    let kms = &aws.kms;
    let schedule = aws
        .send(Svc::Other, "ScheduleKeyDeletion", Retry::NONE, || {
            // The key id (the ARN's last part): moto fails on an ARN here.
            let key = id.rsplit('/').next().unwrap_or(id);
            kms.schedule_key_deletion().key_id(key).pending_window_in_days(7).send()
        })
        .await;
    match schedule {
        Ok(_) => {}
        Err(e) if e.is_not_found() || e.code() == "KMSInvalidStateException" => {}
        Err(e) => return Err(e.on(what).into()),
    }
    del(aws, Svc::Other, "DeleteAlias", what, Retry::NONE, || kms.delete_alias().alias_name(&f.alias).send()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::key::Host;
    use crate::aws::resources::Wanted;

    #[test]
    fn the_key_is_used_only_when_it_is_this_clusters_and_enabled() {
        let spec = crate::cluster::spec::tests::spec();
        let mut state = State::default();
        let arn = "arn:aws:iam::123456789012:role/kaws-node";
        let role = iam::Found { arn: Some(arn.into()), ..iam::Found::default() };
        state.found.insert(Key::Iam(Host::Node), super::super::Found::new("kaws-node", role));
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        let access = Access { reads: vec!["/kaws/x/node/*".into()], writes: vec![] };
        let want = Want { readers: vec![(Key::Iam(Host::Node), access)] };
        let policy = key_policy(&spec, &want.readers, &state);
        let ok =
            Found { state: "Enabled".into(), foreign: false, policy: policy.clone(), alias: "alias/kaws/x".into() };
        assert!(diff(&v, &want, Some(("k", &ok))).is_none());
        let text = policy.unwrap().to_string();
        assert!(text.contains("kms:ViaService") && text.contains(arn) && !text.contains("kms:Create*"), "{text}");
        let disabled = Found { state: "Disabled".into(), ..ok.clone() };
        assert!(
            matches!(diff(&v, &want, Some(("k", &disabled))), Some(Action::Blocked(w)) if w.contains("enable-key"))
        );
        let foreign = Found { foreign: true, ..ok.clone() };
        assert!(matches!(diff(&v, &want, Some(("k", &foreign))), Some(Action::Blocked(_))));
        let loose = Found { policy: Some(serde_json::json!({})), ..ok };
        assert!(matches!(diff(&v, &want, Some(("k", &loose))), Some(Action::Update(f)) if f == [Fix::KeyPolicy]));
    }
}
