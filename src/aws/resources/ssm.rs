//! SSM parameters: each secret an instance fetches at boot, its value
//! decrypted from a sealed file of the repository, a SecureString under the
//! cluster's KMS key; each public certificate (and bundle, and public key)
//! an instance installs, a String, which the refresh agent reads to bring a
//! running instance to a new trust generation; and the generation itself,
//! written after every other parameter (the agents act on it). Its
//! description is a marker of what it holds (and under which key): a change
//! writes it again.
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
use crate::render::context::{SHARED_MASTER_CERTS, SHARED_MASTER_KEYS};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub name: String,
    pub source: Source,
}

/// Where a parameter's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A sealed file (under the cluster directory): a SecureString.
    Sealed(String),
    /// A public certificate, bundle or key, by path under `pki/`: a String.
    Public(String),
    /// The cluster's trust generation (`render::context::generation`): a
    /// String, written once every other parameter holds its value.
    Generation,
}

impl Source {
    pub fn secret(&self) -> bool {
        matches!(self, Source::Sealed(_))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Sealed(p) => f.write_str(p),
            Source::Public(p) => write!(f, "pki/{p}"),
            Source::Generation => f.write_str("the trust generation"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The description: the source marker it was written with.
    pub marker: Option<String>,
    /// The KMS key that encrypts it, as SSM reports it.
    pub key: Option<String>,
    /// Whether it is a SecureString of the Standard tier, as kaws writes
    /// secrets (and the masters' renewal; a master could write another kind).
    pub standard_secure: bool,
    /// Whether it is a String of the Standard tier, as kaws writes public values.
    pub standard_plain: bool,
    /// When it was last written (Unix seconds).
    pub modified: Option<i64>,
}

/// Every SSM parameter and where its value comes from; the generations last.
pub fn parameters(spec: &ClusterSpec) -> Vec<(String, Source)> {
    let prefix = naming::ssm_prefix(spec);
    let token = crate::cluster::token::SEALED_FILE.to_owned();
    let mut out: Vec<(String, Source)> = SHARED_MASTER_KEYS
        .iter()
        .map(|k| (format!("{prefix}/master/shared/{k}"), Source::Sealed(format!("pki/{k}.pgp"))))
        .collect();
    for i in 0..spec.masters {
        for kind in ["server", "peer"] {
            let sealed = Source::Sealed(format!("pki/etcd/{kind}-{i}.key.pgp"));
            out.push((format!("{prefix}/master/{i}/etcd/{kind}.key"), sealed));
        }
    }
    out.push((node_token(spec), Source::Sealed(token)));
    for (name, path) in public_files(spec) {
        out.push((format!("{prefix}/{name}"), Source::Public(path)));
    }
    for role in ["master/shared", "node"] {
        out.push((format!("{prefix}/{role}/generation"), Source::Generation));
    }
    out
}

/// The public files each role installs, as (parameter name below the
/// prefix, path under `pki/`): the parameter's path below `ROLE/pki/` is
/// the file's path on the instance below `/etc/kubernetes/pki/` (for nodes,
/// `/etc/kubernetes/kaws/pki/`).
pub fn public_files(spec: &ClusterSpec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        SHARED_MASTER_CERTS.iter().map(|p| (format!("master/shared/pki/{p}"), (*p).to_owned())).collect();
    for i in 0..spec.masters {
        for kind in ["server", "peer"] {
            out.push((format!("master/{i}/pki/etcd/{kind}.crt"), format!("etcd/{kind}-{i}.crt")));
        }
    }
    out.push(("node/pki/ca-bundle.crt".into(), "ca-bundle.crt".into()));
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
                standard_plain: p.r#type() == Some(&ParameterType::String)
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

pub fn diff(v: &View, key: &Key, want: &Want, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((name, f)) = found else { return Some(Action::Create) };
    if !want.source.secret() {
        // Public: a Standard String, as kaws writes it; another kind is
        // not kaws' (SSM changes no type on an overwrite).
        if !f.standard_plain {
            return Some(Action::Blocked(format!(
                "{name} holds {} but is not a Standard String parameter, as kaws writes it: delete the \
                 parameter and apply",
                want.source
            )));
        }
        return update(if f.marker.as_ref() != v.wanted.markers.get(key) { vec![Fix::Value] } else { vec![] });
    }
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
    let mut out = vec![kv("name", want.name.clone()), kv("from", want.source.to_string())];
    if want.source.secret() {
        out.push(kv("key", naming::kms_alias(v.spec)));
    }
    out
}

pub fn change(v: &View, key: &Key, found: &Found) -> Option<String> {
    arrow("source", found.marker.as_deref().unwrap_or("none"), v.wanted.markers.get(key).map_or("?", String::as_str))
}

/// Writes the value: `overwrite` for one that exists.
async fn put(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State, overwrite: bool) -> Result<super::Found> {
    let marker = cx.inputs.wanted.markers.get(&node.key).context("no source marker")?;
    let mut call = cx.aws.ssm.put_parameter().name(&want.name).tier(ParameterTier::Standard).description(marker);
    let key = if want.source.secret() {
        let value = cx.inputs.secrets.get(&node.key);
        let value = value.with_context(|| format!("the value of {} was not decrypted", want.name))?;
        let key = st.need(&Key::Kms)?;
        call = call.value(value.as_str()).r#type(ParameterType::SecureString).key_id(&key);
        Some(key)
    } else {
        let value = cx.inputs.public.get(&node.key).with_context(|| format!("no value for {}", want.name))?;
        call = call.value(value).r#type(ParameterType::String);
        None
    };
    if overwrite {
        call = call.overwrite(true);
    } else {
        // Tags only on a create: SSM refuses them with Overwrite.
        let tags = cx.tags(node).into_iter().map(|(k, v)| aws_sdk_ssm::types::Tag::builder().key(k).value(v).build());
        call = call.set_tags(Some(tags.collect::<Result<_, _>>()?));
    }
    cx.aws.send(Svc::Other, "PutParameter", Retry::NONE, || call.clone().send()).await?;
    let secret = want.source.secret();
    let found =
        Found { marker: Some(marker.clone()), key, standard_secure: secret, standard_plain: !secret, modified: None };
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
        let sealed = Want { name: "p".into(), source: Source::Sealed("secrets/bootstrap-token.pgp".into()) };
        let current = Found {
            marker: Some("kaws source A".into()),
            key: Some("1234".into()),
            standard_secure: true,
            standard_plain: false,
            modified: None,
        };
        assert!(diff(&v, &key, &sealed, Some(("p", &current))).is_none());
        let older = Found { marker: Some("kaws source B".into()), ..current.clone() };
        assert!(matches!(diff(&v, &key, &sealed, Some(("p", &older))), Some(Action::Update(f)) if f == [Fix::Value]));
        let by_alias = Found { key: Some("alias/kaws/x".into()), ..current.clone() };
        assert!(
            matches!(diff(&v, &key, &sealed, Some(("p", &by_alias))), Some(Action::Update(_))),
            "an alias can move"
        );
        // Once the masters renew the node token, it is theirs; no other parameter is.
        let renewed = Found { marker: Some(RENEWED.into()), key: Some(naming::kms_alias(&spec)), ..current };
        assert!(diff(&v, &key, &sealed, Some((&node_token(&spec), &renewed))).is_none());
        assert!(diff(&v, &key, &sealed, Some(("/kaws/x/master/0/etcd/peer.key", &renewed))).is_some());
        // A renewed token a master wrote in plain text, or under another key, is named.
        let plain = Found { standard_secure: false, ..renewed.clone() };
        assert!(matches!(diff(&v, &key, &sealed, Some((&node_token(&spec), &plain))), Some(Action::Blocked(_))));
        let other = Found { key: Some("alias/aws/ssm".into()), ..renewed };
        assert!(matches!(diff(&v, &key, &sealed, Some((&node_token(&spec), &other))), Some(Action::Blocked(_))));
    }

    #[test]
    fn a_public_value_is_a_standard_string() {
        let spec = crate::cluster::spec::tests::spec();
        let state = State::default();
        let key = key(&spec, &format!("{}/master/shared/pki/ca.crt", naming::ssm_prefix(&spec))).unwrap();
        let mut wanted = Wanted::default();
        wanted.markers.insert(key.clone(), "kaws public A".into());
        let v = View { spec: &spec, state: &state, wanted: &wanted };
        let public = Want { name: "p".into(), source: Source::Public("ca.crt".into()) };
        let current = Found {
            marker: Some("kaws public A".into()),
            key: None,
            standard_secure: false,
            standard_plain: true,
            modified: None,
        };
        assert!(diff(&v, &key, &public, Some(("p", &current))).is_none(), "no KMS key is asked of a String");
        let older = Found { marker: Some("kaws public B".into()), ..current.clone() };
        assert!(matches!(diff(&v, &key, &public, Some(("p", &older))), Some(Action::Update(f)) if f == [Fix::Value]));
        let secure = Found { standard_plain: false, standard_secure: true, ..current };
        assert!(
            matches!(diff(&v, &key, &public, Some(("p", &secure))), Some(Action::Blocked(m)) if m.contains("pki/ca.crt"))
        );
    }

    #[test]
    fn the_generations_come_after_every_value_they_announce() {
        let spec = crate::cluster::spec::tests::spec();
        let all = parameters(&spec);
        let first = all.iter().position(|(_, s)| *s == Source::Generation).unwrap();
        assert!(all[first..].iter().all(|(_, s)| *s == Source::Generation));
        assert_eq!(all.len() - first, 2);
        // Every file a role installs has its parameter, readable by that role's path.
        let n = public_files(&spec).len();
        assert_eq!(n, SHARED_MASTER_CERTS.len() + 2 * spec.masters as usize + 1);
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
