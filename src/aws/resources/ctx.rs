//! What every resource module's calls share: the run's context (`Ctx`: the
//! clients, the spec, the inputs, and the ids this run made or found, whose
//! calls wait out eventual consistency), client tokens and telling a
//! replayed create from a new one, tags in each service's form, and the
//! delete call that treats "already gone" as done.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Result};
use aws_sdk_ec2::types::{self as ec2t, ResourceType, TagSpecification};
use zeroize::Zeroizing;

use super::Wanted;
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::naming::tags;
use crate::aws::{aws_error, Aws, AwsError, Retry, Svc};
use crate::cluster::ClusterSpec;

/// Everything a run needs besides the graph: the image, each instance's
/// user-data, and (only when a parameter must be written) the secrets.
#[derive(Default)]
pub struct Inputs {
    pub image: String,
    pub root_device: String,
    pub user_data: HashMap<Key, Vec<u8>>,
    pub wanted: Wanted,
    pub secrets: HashMap<Key, Zeroizing<String>>,
    /// The values of the public parameters (certificates, the generation).
    pub public: HashMap<Key, String>,
}

pub struct Ctx<'a> {
    pub aws: &'a Aws,
    pub spec: &'a ClusterSpec,
    pub inputs: &'a Inputs,
    /// The ids this run created or found: calls naming them wait out EC2's
    /// eventual consistency (`Invalid…ID.NotFound` right after the create,
    /// which may have been a killed run's seconds ago).
    fresh: Mutex<HashSet<String>>,
    /// The ids this run created.
    created: Mutex<HashSet<String>>,
}

impl<'a> Ctx<'a> {
    pub fn new(aws: &'a Aws, spec: &'a ClusterSpec, inputs: &'a Inputs) -> Ctx<'a> {
        Ctx { aws, spec, inputs, fresh: Mutex::new(HashSet::new()), created: Mutex::new(HashSet::new()) }
    }

    /// Ids found by discovery: fresh too (a killed run may have made them).
    pub fn found<'i>(&self, ids: impl IntoIterator<Item = &'i str>) {
        self.fresh.lock().expect("the fresh-id lock").extend(ids.into_iter().map(String::from));
    }

    /// Notes an id this run made.
    pub fn made(&self, id: &str) {
        self.fresh.lock().expect("the fresh-id lock").insert(id.to_owned());
        self.created.lock().expect("the created-id lock").insert(id.to_owned());
    }

    /// Whether this run created `id`. A create returns only once what it
    /// made is live (or replaced a replayed dead one), and nodes that use
    /// it start only after that.
    pub fn created(&self, id: &str) -> bool {
        self.created.lock().expect("the created-id lock").contains(id)
    }

    /// The retry policy of a call that names `ids`.
    pub fn settle(&self, ids: &[&str]) -> Retry {
        let fresh = self.fresh.lock().expect("the fresh-id lock");
        Retry::settling(ids.iter().any(|id| fresh.contains(*id)))
    }

    /// IAM calls on a role or profile this run made wait for it to propagate.
    pub fn iam_retry(&self, name: &str) -> Retry {
        if self.fresh.lock().expect("the fresh-id lock").contains(name) {
            Retry::IAM
        } else {
            Retry::NONE
        }
    }

    pub fn poll(&self) -> Duration {
        self.aws.poll
    }

    /// One mutating call of `svc` naming EC2 `ids`, which it (or, for
    /// another service, that service) may not see yet.
    pub async fn named<T, E, R, F, Fut>(&self, svc: Svc, call: &'static str, ids: &[&str], f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, aws_sdk_ec2::error::SdkError<E, R>>>,
        E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + 'static,
        R: std::fmt::Debug + 'static,
    {
        Ok(self.aws.send(svc, call, self.settle(ids), f).await?)
    }

    /// The configuration digest the inputs want for a node.
    pub fn config(&self, key: &Key) -> Result<&String> {
        self.inputs.wanted.config.get(key).ok_or_else(|| anyhow::anyhow!("no configuration for {key}"))
    }

    /// A deterministic client token for `node`'s create (see `token`).
    pub fn token(&self, node: &Node, request: &impl std::fmt::Debug, salt: &[String]) -> String {
        token(self.spec, &node.key, request, salt)
    }

    /// Polls what a create answered until it is live (`Ready`) or gone: a
    /// dead state, or NotFound for longer than EC2's eventual consistency
    /// explains, means the client token replayed an old resource.
    ///
    /// `age` says whether the answer is this call's own resource: a new one
    /// that dies is an error with AWS's reason (a new token would not help),
    /// and a new one not found yet is only slow to appear, for as long as
    /// EC2's eventual consistency lasts; an old one (a replay) that is dead
    /// or not found is stepped over at once.
    pub async fn confirm<T, F, Fut>(&self, what: &str, id: &str, age: Age, mut probe: F) -> Result<Replay<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Probe<T>>>,
    {
        let start = tokio::time::Instant::now();
        loop {
            match probe().await {
                Ok(Probe::Ready(v)) => return Ok(Replay::Live(v)),
                Ok(Probe::Failed(why)) => {
                    return Err(crate::error::failed(format!("{what} {id} was made and then {why}"))
                        .hint("see AWS's reason above; run `kaws cluster apply` again once it is dealt with")
                        .into())
                }
                Ok(Probe::Dead) => return Ok(Replay::Dead(id.to_owned())),
                Ok(Probe::Wait) => {}
                // Not found past EC2's eventual consistency: gone. A replay
                // minutes after the first call still looks new (its time is
                // within the clock skew kaws allows), and a resource that is
                // deleted outright (a volume) answers NotFound, not a state.
                Err(e) if aws_error(&e).is_some_and(AwsError::is_not_found) => {
                    if age == Age::Old || start.elapsed() >= self.aws.settle {
                        return Ok(Replay::Dead(id.to_owned()));
                    }
                }
                Err(e) => return Err(e),
            }
            if start.elapsed() >= READY {
                bail!("timed out after {}s waiting for {what} {id}", READY.as_secs());
            }
            tokio::time::sleep(self.poll()).await;
        }
    }

    /// Creates with a client token until the answer is live: each replayed
    /// dead resource salts the next token. `attempt` sends the create with
    /// the token it is given and confirms what it answered.
    pub async fn create_once<T, F, Fut>(&self, call: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<Replay<T>>>,
    {
        let mut dead: Vec<String> = Vec::new();
        loop {
            match attempt(dead.clone()).await? {
                Replay::Live(v) => return Ok(v),
                Replay::Dead(id) => replayed(&mut dead, id, call)?,
            }
        }
    }

    pub fn ec2_tags(&self, node: &Node, rt: ResourceType, extra: &[(String, String)]) -> TagSpecification {
        let k8s = (rt != ResourceType::SecurityGroup).then(|| crate::aws::naming::k8s_cluster_tag(self.spec));
        let tags =
            tags(self.spec, node.role, &node.key.to_string()).into_iter().chain(k8s).chain(extra.iter().cloned());
        TagSpecification::builder()
            .resource_type(rt)
            .set_tags(Some(tags.map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build()).collect()))
            .build()
    }

    /// The node's tags as `(key, value)` pairs, for services with tag types of their own.
    pub fn tags(&self, node: &Node) -> Vec<(String, String)> {
        tags(self.spec, node.role, &node.key.to_string())
    }
}

/// A deterministic client token: the same create, retried (by the SDK, or
/// by a run after a killed one), is one create. It is a digest of the
/// request itself (`request`: its Debug form, without the token), so that
/// any change of parameters (a new VPC, subnet or group id, a new
/// configuration) is a new token, never an `IdempotentParameterMismatch`;
/// and of `salt`: any dead resource a replay already returned (EC2
/// remembers a token for at least 24 hours after its resource is gone and
/// answers a replay with the old resource; see `Replay`).
pub fn token(spec: &ClusterSpec, key: &Key, request: &impl std::fmt::Debug, salt: &[String]) -> String {
    let (request, key) = (format!("{request:?}"), key.to_string());
    let mut parts: Vec<&[u8]> = vec![spec.name.as_str().as_bytes(), key.as_bytes(), request.as_bytes()];
    parts.extend(salt.iter().map(|s| s.as_bytes()));
    format!("kaws-{}", crate::aws::digest(&parts))
}

/// How a create's answer relates to the call: made by it, or older (a
/// replay of an earlier call's token). Unknown where AWS gives no time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Age {
    New,
    Old,
    Unknown,
}

impl Age {
    /// Older than the call by more than the clock skew SigV4 allows (5
    /// minutes): a replay. Anything later is this call's own.
    pub fn of(created: Option<&aws_smithy_types::DateTime>, started: std::time::SystemTime) -> Age {
        let Some(created) = created else { return Age::Unknown };
        let started = aws_smithy_types::DateTime::from(started).secs();
        if created.secs() < started - 300 {
            Age::Old
        } else {
            Age::New
        }
    }
}

/// What a create with a client token answered: a live resource, or a
/// replay of one that is gone (its id then salts the next token).
pub enum Replay<T> {
    Live(T),
    Dead(String),
}

impl<T> Replay<T> {
    /// The live answer made into another, a dead one kept as it is.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Replay<U> {
        match self {
            Replay::Live(v) => Replay::Live(f(v)),
            Replay::Dead(id) => Replay::Dead(id),
        }
    }
}

/// How many replayed dead resources a create steps over before giving up:
/// each incarnation of a resource in the last day (EC2 remembers a token
/// that long) costs one step.
pub const REPLAYS: usize = 32;

/// How long a new resource may take to become ready (NAT gateways take
/// minutes).
pub const READY: Duration = Duration::from_secs(600);

/// One look at a resource a create answered with.
pub enum Probe<T> {
    Ready(T),
    Wait,
    /// Gone because someone deleted it: a replay of an earlier create.
    Dead,
    /// This call's own resource, which failed, and AWS's reason.
    Failed(String),
}

impl From<bool> for Probe<()> {
    fn from(exists: bool) -> Probe<()> {
        if exists {
            Probe::Ready(())
        } else {
            Probe::Wait
        }
    }
}

/// Notes a replayed dead resource, so that the next token differs.
fn replayed(dead: &mut Vec<String>, id: String, call: &str) -> Result<()> {
    if dead.len() >= REPLAYS {
        bail!(
            "{call} answered {REPLAYS} times with a resource that is gone ({}): more incarnations in a day than kaws \
             steps over; replace the resource by hand or wait a day for EC2 to forget the client tokens",
            dead.join(", ")
        );
    }
    if std::env::var_os("KAWS_VERBOSE").is_some() {
        eprintln!("{call} replayed {id}, which is gone: creating anew");
    }
    dead.push(id);
    Ok(())
}

/// A tag's value among `(key, value)` pairs.
pub fn tag<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>, key: &str) -> Option<String> {
    tags.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_owned())
}

pub fn ec2_tags(tags: &[ec2t::Tag]) -> impl Iterator<Item = (&str, &str)> {
    tags.iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")))
}

/// The key an EC2 resource's tags name.
pub fn ec2_key(tags: &[ec2t::Tag]) -> Key {
    Key::from_tag(tag(ec2_tags(tags), crate::aws::naming::TAG_KEY).as_deref())
}

/// EC2's filter for everything tagged for the cluster.
pub fn by_cluster(spec: &ClusterSpec) -> ec2t::Filter {
    ec2t::Filter::builder()
        .name(format!("tag:{}", crate::aws::naming::TAG_CLUSTER))
        .values(spec.name.to_string())
        .build()
}

/// One delete call: a resource already gone counts as deleted; what AWS
/// still holds (ENIs released late, a group still referenced) is waited
/// out, as `retry` says. Credentials errors fail at once, except where
/// `retry` names AuthFailure as transient (ReleaseAddress, see `Retry`).
pub async fn del<T, E, R, F, Fut>(aws: &Aws, svc: Svc, call: &'static str, what: &str, retry: Retry, f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, aws_sdk_ec2::error::SdkError<E, R>>>,
    E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    match aws.send(svc, call, retry, f).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.on(what).into()),
    }
}

/// A read's answer, or `None` when AWS says the resource does not exist.
pub fn unless_gone<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if aws_error(&e).is_some_and(AwsError::is_not_found) => Ok(None),
        Err(e) => Err(e),
    }
}

/// All pages of a paginated listing, as one result.
#[macro_export]
macro_rules! pages {
    ($call:expr, $name:literal) => {{
        use $crate::aws::Call as _;
        let pages: Vec<_> = $call.into_paginator().send().collect::<Vec<_>>().await;
        pages.into_iter().collect::<Result<Vec<_>, _>>().call($name)
    }};
}
