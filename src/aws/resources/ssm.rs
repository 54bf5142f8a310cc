//! SSM SecureString parameters: each secret an instance fetches at boot,
//! its value decrypted from a sealed file of the repository, encrypted
//! under the cluster's KMS key. Its description is a marker of which
//! sealed file and which key: a change of either writes it again.
//!
//! One parameter is the cluster's once it runs: the node bootstrap token,
//! which the masters renew hourly (a 2-hour token made in the cluster,
//! written with the description `RENEWED`). kaws writes it only until then:
//! the sealed token is the one master 0 makes the cluster with.

use anyhow::{Context as _, Result};
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterTier, ParameterType};

use super::ctx::{del, Ctx};
use super::{arrow, kms, kv, update, Action, Fix, State, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::naming;
use crate::aws::{aws_error, Aws, Retry, Svc};
use crate::cluster::ClusterSpec;
use crate::render::context::SHARED_MASTER_KEYS;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub name: String,
    /// The sealed file (under the cluster directory) its value comes from.
    pub source: String,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The description: the source marker it was written with.
    pub marker: Option<String>,
    /// The KMS key that encrypts it, as SSM reports it.
    pub key: Option<String>,
    /// Whether it is a SecureString of the Standard tier, as kaws writes it
    /// (and the masters' renewal; a master could write another kind).
    pub standard_secure: bool,
    /// When it was last written (Unix seconds).
    pub modified: Option<i64>,
}

/// Every SSM parameter and the sealed file (under the cluster directory) it comes from.
pub fn parameters(spec: &ClusterSpec) -> Vec<(String, String)> {
    let prefix = naming::ssm_prefix(spec);
    let token = crate::cluster::token::SEALED_FILE.to_owned();
    let mut out: Vec<(String, String)> =
        SHARED_MASTER_KEYS.iter().map(|k| (format!("{prefix}/master/shared/{k}"), format!("pki/{k}.pgp"))).collect();
    for i in 0..spec.masters {
        for kind in ["server", "peer"] {
            out.push((format!("{prefix}/master/{i}/etcd/{kind}.key"), format!("pki/etcd/{kind}-{i}.key.pgp")));
        }
    }
    out.push((node_token(spec), token));
    out
}

/// The description the masters write with the token they renew.
pub const RENEWED: &str = "kaws: renewed in the cluster";
/// How long a renewed token lives (`kubeadm token create --ttl 2h`).
pub const RENEWED_TTL_SECS: i64 = 2 * 3600;

/// The bootstrap token's parameter: every instance joins with it.
pub fn node_token(spec: &ClusterSpec) -> String {
    format!("{}/node/bootstrap-token", naming::ssm_prefix(spec))
}

/// The node token's parameter among what discovery found.
pub fn node_token_found<'a>(
    spec: &ClusterSpec,
    found: impl IntoIterator<Item = &'a super::Found>,
) -> Option<&'a Found> {
    let name = node_token(spec);
    found.into_iter().filter(|f| f.id == name).find_map(|f| f.get::<Found>())
}

/// When the cluster last renewed the node token, if it renews it (kaws
/// then leaves it alone), from what discovery found of it.
pub fn renewed<'a>(spec: &ClusterSpec, found: impl IntoIterator<Item = &'a super::Found>) -> Option<i64> {
    node_token_found(spec, found).filter(|f| f.marker.as_deref() == Some(RENEWED)).map(|f| f.modified.unwrap_or(0))
}

/// The key of the parameter `name` (under the cluster's prefix).
pub fn key(spec: &ClusterSpec, name: &str) -> Option<Key> {
    let below = name.strip_prefix(&naming::ssm_prefix(spec))?;
    match Key::from_tag(Some(&format!("ssm{below}"))) {
        k @ Key::Param(_) => Some(k),
        _ => None,
    }
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let prefix = naming::ssm_prefix(spec);
    let filter = ParameterStringFilter::builder().key("Path").option("Recursive").values(&prefix).build()?;
    let pages = crate::pages!(aws.ssm.describe_parameters().parameter_filters(filter), "DescribeParameters")?;
    Ok(pages
        .iter()
        .flat_map(|p| p.parameters())
        .filter_map(|p| {
            let name = p.name()?;
            // A name kaws would not give is not the cluster's key: surplus.
            let key = key(spec, name).unwrap_or_else(|| Key::Other(format!("ssm {name}")));
            let found = Found {
                marker: p.description().map(String::from),
                key: p.key_id().map(String::from),
                standard_secure: p.r#type() == Some(&ParameterType::SecureString)
                    && p.tier().is_none_or(|t| *t == ParameterTier::Standard),
                modified: p.last_modified_date().map(|d| d.secs()),
            };
            Some((key, super::Found::new(name, found)))
        })
        .collect())
}

/// Whether `have` (a key id, ARN or alias as SSM reports it) is the key
/// whose ARN is `arn`. An alias is not: it can be moved to another key.
fn same_key(have: &str, arn: &str) -> bool {
    have == arn || arn.rsplit_once('/').is_some_and(|(_, id)| id == have)
}

/// The cluster's key, when it is one kaws may use.
fn cluster_key(st: &State) -> Option<&str> {
    st.get::<kms::Found>(&Key::Kms).filter(|(_, k)| !k.foreign).map(|(id, _)| id)
}

pub fn diff(v: &View, key: &Key, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((name, f)) = found else { return Some(Action::Create) };
    // Encrypted under the cluster's key as it is now (an alias can move; a
    // key made anew needs every value written again).
    let under_key = cluster_key(v.state).is_some_and(|arn| f.key.as_deref().is_some_and(|have| same_key(have, arn)));
    if name == node_token(v.spec) && f.marker.as_deref() == Some(RENEWED) {
        // The masters' renewal names the key by the cluster's alias, which
        // discovery checks points at the cluster's key.
        let by_alias = f.key.as_deref() == Some(naming::kms_alias(v.spec).as_str());
        if f.standard_secure && (under_key || by_alias) {
            return None;
        }
        return Some(Action::Blocked(format!(
            "{name} was renewed by a master but is not a Standard SecureString under {} (a master's \
             credentials may be misused): check the masters, then delete the parameter and apply",
            naming::kms_alias(v.spec)
        )));
    }
    update(if f.marker.as_ref() != v.wanted.markers.get(key) || !under_key { vec![Fix::Value] } else { vec![] })
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    vec![kv("name", want.name.clone()), kv("from", want.source.clone()), kv("key", naming::kms_alias(v.spec))]
}

pub fn change(v: &View, key: &Key, found: &Found) -> Option<String> {
    arrow("source", found.marker.as_deref().unwrap_or("none"), v.wanted.markers.get(key).map_or("?", String::as_str))
}

/// Writes the value: `overwrite` for one that exists.
async fn put(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State, overwrite: bool) -> Result<super::Found> {
    let value =
        cx.inputs.secrets.get(&node.key).with_context(|| format!("the value of {} was not decrypted", want.name))?;
    let marker = cx.inputs.wanted.markers.get(&node.key).context("no source marker")?;
    let key = st.need(&Key::Kms)?;
    let mut call = cx
        .aws
        .ssm
        .put_parameter()
        .name(&want.name)
        .value(value.as_str())
        .r#type(ParameterType::SecureString)
        .tier(ParameterTier::Standard)
        .key_id(&key)
        .description(marker);
    if overwrite {
        call = call.overwrite(true);
    } else {
        // Tags only on a create: SSM refuses them with Overwrite.
        let tags = cx.tags(node).into_iter().map(|(k, v)| aws_sdk_ssm::types::Tag::builder().key(k).value(v).build());
        call = call.set_tags(Some(tags.collect::<Result<_, _>>()?));
    }
    cx.aws.send(Svc::Other, "PutParameter", Retry::NONE, || call.clone().send()).await?;
    let found = Found { marker: Some(marker.clone()), key: Some(key), standard_secure: true, modified: None };
    Ok(super::Found::new(&want.name, found))
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State) -> Result<super::Found> {
    match put(cx, node, want, st, false).await {
        // A killed run wrote it: written again.
        Err(e) if aws_error(&e).is_some_and(|a| a.code() == "ParameterAlreadyExists") => {
            put(cx, node, want, st, true).await
        }
        other => other,
    }
}

pub async fn fix(
    cx: &Ctx<'_>,
    node: &Node,
    want: &Want,
    fixes: &[Fix],
    st: &State,
    found: super::Found,
) -> Result<super::Found> {
    if !fixes.contains(&Fix::Value) {
        return Ok(found);
    }
    put(cx, node, want, st, true).await
}

pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    del(aws, Svc::Other, "DeleteParameter", what, Retry::IN_USE, || aws.ssm.delete_parameter().name(id).send()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::Wanted;

    #[test]
    fn a_value_is_written_again_when_its_source_or_key_changes() {
        let spec = crate::cluster::spec::tests::spec();
        let mut state = State::default();
        let arn = "arn:aws:kms:eu-west-1:123456789012:key/1234";
        state.found.insert(Key::Kms, super::super::Found::new(arn, kms::Found::default()));
        let key = key(&spec, &format!("{}/node/bootstrap-token", naming::ssm_prefix(&spec))).unwrap();
        let mut wanted = Wanted::default();
        wanted.markers.insert(key.clone(), "kaws source A".into());
        let v = View { spec: &spec, state: &state, wanted: &wanted };
        let current = Found {
            marker: Some("kaws source A".into()),
            key: Some("1234".into()),
            standard_secure: true,
            modified: None,
        };
        assert!(diff(&v, &key, Some(("p", &current))).is_none());
        let older = Found { marker: Some("kaws source B".into()), ..current.clone() };
        assert!(matches!(diff(&v, &key, Some(("p", &older))), Some(Action::Update(f)) if f == [Fix::Value]));
        let by_alias = Found { key: Some("alias/kaws/x".into()), ..current.clone() };
        assert!(matches!(diff(&v, &key, Some(("p", &by_alias))), Some(Action::Update(_))), "an alias can move");
        // Once the masters renew the node token, it is theirs; no other parameter is.
        let renewed = Found { marker: Some(RENEWED.into()), key: Some(naming::kms_alias(&spec)), ..current };
        assert!(diff(&v, &key, Some((&node_token(&spec), &renewed))).is_none());
        assert!(diff(&v, &key, Some(("/kaws/x/master/0/etcd/peer.key", &renewed))).is_some());
        // A renewed token a master wrote in plain text, or under another key, is named.
        let plain = Found { standard_secure: false, ..renewed.clone() };
        assert!(matches!(diff(&v, &key, Some((&node_token(&spec), &plain))), Some(Action::Blocked(_))));
        let other = Found { key: Some("alias/aws/ssm".into()), ..renewed };
        assert!(matches!(diff(&v, &key, Some((&node_token(&spec), &other))), Some(Action::Blocked(_))));
    }

    #[test]
    fn only_names_under_the_prefix_are_keys() {
        let spec = crate::cluster::spec::tests::spec();
        for (name, _) in parameters(&spec) {
            assert!(matches!(key(&spec, &name), Some(Key::Param(_))), "{name}");
        }
        assert_eq!(key(&spec, "/elsewhere/x"), None);
    }
}
