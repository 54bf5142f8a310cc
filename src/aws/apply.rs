//! Runs a plan: every resource whose dependencies are done starts at once;
//! each task re-reads the state when it starts (so it sees what earlier
//! tasks made), makes only the calls its diff needs, and reports what it
//! made. Every create carries the cluster's tags in the same call (or a
//! client token where the API has one), so a killed run is found again by
//! tag and converges when re-run.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use aws_sdk_ec2::types::{self as ec2t, Filter, ResourceType, TagSpecification};
use base64::Engine as _;
use futures::stream::{FuturesUnordered, StreamExt};
use zeroize::Zeroizing;

use super::model::{self, Kind, Node, Peer, Role, Rule};
use super::naming::POLICY;
use super::naming::{self, short_name, tags, TAG_CLUSTER, TAG_CONFIG, TAG_KEY, TAG_ROLE};
use super::plan::{self, Action, Fix, State, Wanted};
use super::world::{Found, World};
use super::{aws_error, wait_for, Aws, AwsError, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

/// Everything a run needs besides the graph: the image, each instance's
/// user-data, and (only when a parameter must be written) the secrets.
pub struct Inputs {
    pub image: String,
    pub root_device: String,
    pub user_data: HashMap<String, Vec<u8>>,
    pub wanted: Wanted,
    pub secrets: HashMap<String, Zeroizing<String>>,
}

fn ec2_tags(spec: &ClusterSpec, node: &Node, rt: ResourceType, extra: &[(String, String)]) -> TagSpecification {
    let tags = tags(spec, node.role, &node.key).into_iter().chain(extra.iter().cloned());
    TagSpecification::builder()
        .resource_type(rt)
        .set_tags(Some(tags.map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build()).collect()))
        .build()
}

fn iam_tags(spec: &ClusterSpec, node: &Node) -> Result<Vec<aws_sdk_iam::types::Tag>> {
    tags(spec, node.role, &node.key)
        .into_iter()
        .map(|(k, v)| Ok(aws_sdk_iam::types::Tag::builder().key(k).value(v).build()?))
        .collect()
}

fn elb_tags(spec: &ClusterSpec, node: &Node) -> Vec<aws_sdk_elasticloadbalancingv2::types::Tag> {
    tags(spec, node.role, &node.key)
        .into_iter()
        .map(|(k, v)| aws_sdk_elasticloadbalancingv2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// A deterministic client token: the same create, retried (by the SDK, or
/// by a run after a killed one), is one create. It is a digest of the
/// request itself (`request`: its Debug form, without the token), so that
/// any change of parameters (a new VPC, subnet or group id, a new
/// configuration) is a new token, never an `IdempotentParameterMismatch`;
/// and of `salt`: any dead resource a replay already returned (EC2
/// remembers a token for at least 24 hours after its resource is gone and
/// answers a replay with the old resource; see `Replay`).
fn token(spec: &ClusterSpec, key: &str, request: &impl std::fmt::Debug, salt: &[&str]) -> String {
    let request = format!("{request:?}");
    let mut parts: Vec<&[u8]> = vec![spec.name.as_str().as_bytes(), key.as_bytes(), request.as_bytes()];
    parts.extend(salt.iter().map(|s| s.as_bytes()));
    format!("kaws-{}", super::digest(&parts))
}

/// How a create's answer relates to the call: made by it, or older (a
/// replay of an earlier call's token). Unknown where AWS gives no time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Age {
    New,
    Old,
    Unknown,
}

impl Age {
    /// Older than the call by more than the clock skew SigV4 allows (5
    /// minutes): a replay. Anything later is this call's own.
    fn of(created: Option<&aws_smithy_types::DateTime>, started: std::time::SystemTime) -> Age {
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
enum Replay<T> {
    Live(T),
    Dead(String),
}

/// How many replayed dead resources a create steps over before giving up:
/// each incarnation of a resource in the last day (EC2 remembers a token
/// that long) costs one step.
const REPLAYS: usize = 32;

/// How long a new resource may take to become ready (NAT gateways take
/// minutes).
const READY: Duration = Duration::from_secs(600);

/// One look at a resource a create answered with.
enum Probe<T> {
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

pub struct Runner<'a> {
    pub aws: &'a Aws,
    pub spec: &'a ClusterSpec,
    pub inputs: &'a Inputs,
    /// At most this many resources change at once.
    pub parallelism: usize,
    /// The ids this run created or found: calls naming them wait out EC2's
    /// eventual consistency (`Invalid…ID.NotFound` right after the create,
    /// which may have been a killed run's seconds ago).
    fresh: Mutex<HashSet<String>>,
    /// The ids this run created.
    created: Mutex<HashSet<String>>,
}

impl<'a> Runner<'a> {
    pub fn new(aws: &'a Aws, spec: &'a ClusterSpec, inputs: &'a Inputs, parallelism: usize) -> Runner<'a> {
        Runner {
            aws,
            spec,
            inputs,
            parallelism,
            fresh: Mutex::new(HashSet::new()),
            created: Mutex::new(HashSet::new()),
        }
    }

    fn made(&self, id: &str) {
        self.fresh.lock().expect("the fresh-id lock").insert(id.to_owned());
        self.created.lock().expect("the created-id lock").insert(id.to_owned());
    }

    /// Whether this run created `id` (and so has seen it live already).
    fn created(&self, id: &str) -> bool {
        self.created.lock().expect("the created-id lock").contains(id)
    }

    /// The retry policy of a call that names `ids`.
    fn settle(&self, ids: &[&str]) -> Retry {
        let fresh = self.fresh.lock().expect("the fresh-id lock");
        Retry::settling(ids.iter().any(|id| fresh.contains(*id)))
    }

    /// One mutating call of `svc` naming EC2 `ids`, which it (or, for
    /// another service, that service) may not see yet.
    async fn named<T, E, R, F, Fut>(&self, svc: Svc, call: &'static str, ids: &[&str], f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, aws_sdk_ec2::error::SdkError<E, R>>>,
        E: std::error::Error + aws_sdk_ec2::error::ProvideErrorMetadata + 'static,
        R: std::fmt::Debug + 'static,
    {
        Ok(self.aws.send(svc, call, self.settle(ids), f).await?)
    }
}

/// What one finished task reports.
pub struct Done {
    pub key: String,
}

type Task<'a> = Pin<Box<dyn Future<Output = (String, Result<Option<Found>>)> + 'a>>;

/// Runs the graph; `report` hears of each change as it completes. Returns
/// the state after the run, or the first errors (other tasks finish first).
pub async fn run<'a>(
    r: &'a Runner<'a>,
    graph: &'a [Node],
    world: &'a World,
    mut report: impl FnMut(&Done),
) -> Result<HashMap<String, Found>> {
    let mut state = State { world, made: HashMap::new() };
    r.fresh.lock().expect("the fresh-id lock").extend(world.found.values().flatten().map(|f| f.id.clone()));
    let mut done: HashSet<&str> = HashSet::new();
    let mut failed: HashSet<&str> = HashSet::new();
    let mut started: HashSet<&str> = HashSet::new();
    let mut running: FuturesUnordered<Task<'a>> = FuturesUnordered::new();
    let mut errors = Vec::new();
    let height = heights(graph);
    loop {
        // Start what is ready, the longest chains of work behind it first,
        // while there is room; nodes with nothing to do finish at once and
        // may make others ready.
        loop {
            let mut ready: Vec<&'a Node> = graph
                .iter()
                .filter(|n| !started.contains(n.key.as_str()) && n.deps.iter().all(|d| done.contains(d.as_str())))
                .collect();
            ready.sort_by_key(|n| std::cmp::Reverse(height[n.key.as_str()]));
            let mut progressed = false;
            for node in ready {
                match plan::diff(r.spec, node, &state, &r.inputs.wanted) {
                    None | Some(Action::Note(_)) => {
                        done.insert(&node.key);
                    }
                    Some(_) if running.len() >= r.parallelism => continue,
                    Some(action) => {
                        let snap = Snap::of(&state);
                        running.push(Box::pin(async move {
                            let what = describe(&action);
                            let res =
                                r.ensure(node, action, snap).await.with_context(|| format!("{}: {what}", node.key));
                            (node.key.clone(), res)
                        }));
                    }
                }
                started.insert(&node.key);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        let Some((key, res)) = running.next().await else { break };
        let node = graph.iter().find(|n| n.key == key).expect("a graph node");
        match res {
            Ok(made) => {
                report(&Done { key: key.clone() });
                if let Some(f) = made {
                    state.made.insert(key.clone(), f);
                }
                done.insert(&node.key);
            }
            Err(e) => {
                failed.insert(&node.key);
                errors.push(e);
            }
        }
    }
    if !errors.is_empty() {
        let skipped = graph.iter().filter(|n| !started.contains(n.key.as_str())).count();
        let headline =
            format!("{} change(s) failed ({skipped} resources waiting on them were not started)", errors.len());
        return Err(super::error::many(headline, &errors));
    }
    Ok(state.made)
}

/// Each node's height: itself plus the longest chain of nodes that depend
/// on it, directly or not (the graph lists dependencies first).
fn heights(graph: &[Node]) -> HashMap<&str, usize> {
    let mut height: HashMap<&str, usize> = HashMap::new();
    for node in graph.iter().rev() {
        let below = graph
            .iter()
            .filter(|n| n.deps.contains(&node.key))
            .map(|n| height.get(n.key.as_str()).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        height.insert(&node.key, below + 1);
    }
    height
}

fn describe(a: &Action) -> String {
    match a {
        Action::Create => "create".into(),
        Action::Update(f) => f.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "),
        Action::Delete { why, .. } => format!("delete ({why})"),
        Action::Replace { why, .. } => format!("replace ({why})"),
        Action::Blocked(w) | Action::Note(w) => w.clone(),
    }
}

/// Which fixes of one resource may run beside which (see `fix_all`).
#[derive(Clone, Copy, PartialEq)]
enum Lane {
    InOrder,
    Routes,
    Association,
    Rule,
}

/// The state a task starts from (owned: tasks run concurrently).
#[derive(Clone)]
pub struct Snap {
    found: HashMap<String, Found>,
    zones: Vec<String>,
}

impl Snap {
    fn of(state: &State) -> Snap {
        let mut found: HashMap<String, Found> =
            state.world.found.iter().filter_map(|(k, v)| Some((k.clone(), v.first()?.clone()))).collect();
        found.extend(state.made.iter().map(|(k, v)| (k.clone(), v.clone())));
        Snap { found, zones: state.world.zones.clone() }
    }

    fn get(&self, key: &str) -> Option<&Found> {
        self.found.get(key)
    }

    fn id(&self, key: &str) -> Result<String> {
        self.found.get(key).map(|f| f.id.clone()).ok_or_else(|| anyhow!("{key} does not exist (yet)"))
    }
}

/// EC2's form of a rule set: one permission per protocol and port range,
/// listing every peer (EC2 merges them so anyway, and moto insists).
fn ip_permissions(rules: &[Rule], snap: &Snap) -> Result<Vec<ec2t::IpPermission>> {
    let mut by_ports: std::collections::BTreeMap<(&str, i32, i32), Vec<&Peer>> = Default::default();
    for r in rules {
        by_ports.entry((r.proto.as_aws(), r.from, r.to)).or_default().push(&r.peer);
    }
    by_ports
        .into_iter()
        .map(|((proto, from, to), peers)| {
            // Portless protocols take -1 (EC2 ignores their ports; moto needs them).
            let mut p = ec2t::IpPermission::builder().ip_protocol(proto).from_port(from).to_port(to);
            for peer in peers {
                p = match peer {
                    Peer::Cidr(c) => p.ip_ranges(ec2t::IpRange::builder().cidr_ip(c.to_string()).build()),
                    Peer::Group(role) => p.user_id_group_pairs(
                        ec2t::UserIdGroupPair::builder().group_id(snap.id(&format!("sg/{}", role.as_str()))?).build(),
                    ),
                    Peer::Foreign(f) if f.contains(':') => {
                        p.ipv6_ranges(ec2t::Ipv6Range::builder().cidr_ipv6(f.clone()).build())
                    }
                    Peer::Foreign(f) if f.starts_with("pl-") => {
                        p.prefix_list_ids(ec2t::PrefixListId::builder().prefix_list_id(f.clone()).build())
                    }
                    Peer::Foreign(f) => {
                        p.user_id_group_pairs(ec2t::UserIdGroupPair::builder().group_id(f.clone()).build())
                    }
                };
            }
            Ok(p.build())
        })
        .collect()
}

const ASSUME_EC2: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

impl Runner<'_> {
    fn poll(&self) -> Duration {
        self.aws.poll
    }

    async fn ensure(&self, node: &Node, action: Action, snap: Snap) -> Result<Option<Found>> {
        match action {
            Action::Create => self.create(node, &snap).await.map(Some),
            Action::Update(fixes) => {
                let mut found = snap.get(&node.key).cloned().unwrap_or_default();
                self.fix_all(node, &fixes, &snap, &mut found).await?;
                Ok(Some(found))
            }
            Action::Delete { found, .. } => {
                super::destroy::delete(self.aws, &node.key, &found, false).await?;
                Ok(None)
            }
            Action::Replace { found, .. } => {
                super::destroy::delete(self.aws, &node.key, &found, false).await?;
                self.create(node, &snap).await.map(Some)
            }
            Action::Blocked(why) => Err(anyhow!("{why}")),
            Action::Note(_) => Ok(None),
        }
    }

    async fn create(&self, node: &Node, snap: &Snap) -> Result<Found> {
        let (spec, ec2) = (self.spec, &self.aws.ec2);
        let mut found = Found::default();
        match &node.kind {
            Kind::Vpc { cidr } => {
                let call = ec2.create_vpc().cidr_block(cidr.to_string()).tag_specifications(ec2_tags(
                    spec,
                    node,
                    ResourceType::Vpc,
                    &[],
                ));
                let out = self.named(Svc::Ec2, "CreateVpc", &[], || call.clone().send()).await?;
                found.id = out.vpc().and_then(|v| v.vpc_id()).context("CreateVpc returned no id")?.to_owned();
                self.made(&found.id);
                self.fix(node, &Fix::VpcDns, snap, &mut found).await?;
                found.cidr = Some(cidr.to_string());
            }
            Kind::InternetGateway => {
                let call = ec2.create_internet_gateway().tag_specifications(ec2_tags(
                    spec,
                    node,
                    ResourceType::InternetGateway,
                    &[],
                ));
                let out = self.named(Svc::Ec2, "CreateInternetGateway", &[], || call.clone().send()).await?;
                found.id = out.internet_gateway().and_then(|g| g.internet_gateway_id()).context("no IGW id")?.into();
                self.made(&found.id);
                self.fix(node, &Fix::Attach, snap, &mut found).await?;
            }
            Kind::Subnet { cidr, zone, reserved, .. } => {
                let az = snap.zones.get(*zone).with_context(|| {
                    format!("the region has {} availability zones; the spec wants {}", snap.zones.len(), spec.azs)
                })?;
                let vpc = snap.id("vpc")?;
                let call = ec2
                    .create_subnet()
                    .vpc_id(&vpc)
                    .cidr_block(cidr.to_string())
                    .availability_zone(az)
                    .tag_specifications(ec2_tags(spec, node, ResourceType::Subnet, &[]));
                let out = self.named(Svc::Ec2, "CreateSubnet", &[&vpc], || call.clone().send()).await?;
                found.id = out.subnet().and_then(|s| s.subnet_id()).context("no subnet id")?.into();
                self.made(&found.id);
                found.cidr = Some(cidr.to_string());
                found.zone = Some(az.clone());
                if !reserved.is_empty() {
                    let all = reserved.iter().map(|c| c.to_string()).collect();
                    self.fix(node, &Fix::Reserve(all), snap, &mut found).await?;
                }
            }
            Kind::Address => {
                let call = ec2.allocate_address().domain(ec2t::DomainType::Vpc).tag_specifications(ec2_tags(
                    spec,
                    node,
                    ResourceType::ElasticIp,
                    &[],
                ));
                let out = self.named(Svc::Ec2, "AllocateAddress", &[], || call.clone().send()).await?;
                found.id = out.allocation_id().context("no allocation id")?.into();
                self.made(&found.id);
                found.public_ip = out.public_ip().map(String::from);
            }
            Kind::NatGateway { subnet, address } => {
                let (sid, aid) = (snap.id(subnet)?, snap.id(address)?);
                let mut dead: Vec<String> = Vec::new();
                let request = ec2
                    .create_nat_gateway()
                    .subnet_id(&sid)
                    .allocation_id(&aid)
                    .tag_specifications(ec2_tags(spec, node, ResourceType::Natgateway, &[]));
                found.id = loop {
                    let salt: Vec<&str> = dead.iter().map(String::as_str).collect();
                    let call = request.clone().client_token(token(spec, &node.key, request.as_input(), &salt));
                    let started = std::time::SystemTime::now();
                    let out = self.named(Svc::Ec2, "CreateNatGateway", &[&sid, &aid], || call.clone().send()).await?;
                    let nat = out.nat_gateway().context("no NAT gateway")?;
                    let id = nat.nat_gateway_id().context("no NAT gateway id")?.to_owned();
                    self.made(&id);
                    // Routes to a NAT gateway that is not available yet go nowhere.
                    match self.nat_available(&id, Age::of(nat.create_time(), started)).await? {
                        Replay::Live(()) => break id,
                        Replay::Dead(id) => replayed(&mut dead, id, "CreateNatGateway")?,
                    }
                };
            }
            Kind::RouteTable { default_route, subnets } => {
                let vpc = snap.id("vpc")?;
                let mut dead: Vec<String> = Vec::new();
                let request = ec2.create_route_table().vpc_id(&vpc).tag_specifications(ec2_tags(
                    spec,
                    node,
                    ResourceType::RouteTable,
                    &[],
                ));
                found.id = loop {
                    let salt: Vec<&str> = dead.iter().map(String::as_str).collect();
                    let call = request.clone().client_token(token(spec, &node.key, request.as_input(), &salt));
                    let out = self.named(Svc::Ec2, "CreateRouteTable", &[&vpc], || call.clone().send()).await?;
                    let id =
                        out.route_table().and_then(|t| t.route_table_id()).context("no route table id")?.to_owned();
                    self.made(&id);
                    let probe = || async {
                        let out = ec2.describe_route_tables().route_table_ids(&id).send().await;
                        out.call("DescribeRouteTables").map(|o| Probe::from(!o.route_tables().is_empty()))
                    };
                    // The answer carries no time: not found for long means a
                    // replay. In a VPC this run made, no earlier table can be.
                    if self.created(&vpc) {
                        break id;
                    }
                    match self.confirm("route table", &id, Age::Unknown, probe).await? {
                        Replay::Live(()) => break id,
                        Replay::Dead(id) => replayed(&mut dead, id, "CreateRouteTable")?,
                    }
                };
                let mut fixes = vec![Fix::Route { dest: "0.0.0.0/0".into(), target: default_route.clone() }];
                fixes.extend(subnets.iter().map(|s| Fix::Associate(s.clone())));
                self.fix_all(node, &fixes, snap, &mut found).await?;
            }
            Kind::SecurityGroup(role) => {
                let (vpc, name) = (snap.id("vpc")?, format!("kaws-{}-{}", spec.name, role.as_str()));
                let call = ec2
                    .create_security_group()
                    .group_name(&name)
                    .description(format!("kaws {} {}", spec.name, role.as_str()))
                    .vpc_id(&vpc)
                    .tag_specifications(ec2_tags(spec, node, ResourceType::SecurityGroup, &[]));
                found.id = match self.named(Svc::Ec2, "CreateSecurityGroup", &[&vpc], || call.clone().send()).await {
                    Ok(out) => out.group_id().context("no group id")?.into(),
                    // Made by a killed run, and not yet visible to discovery
                    // (EC2 is eventually consistent): the same name in the VPC.
                    Err(e) if aws_error(&e).is_some_and(|a| a.code() == "InvalidGroup.Duplicate") => {
                        self.own_group(&vpc, &name).await?
                    }
                    Err(e) => return Err(e),
                };
                self.made(&found.id);
                // A new group allows all egress; its rules task revokes that.
                found.egress.insert(Rule::new(model::Proto::All, None, None, Peer::Cidr("0.0.0.0/0".parse()?)));
            }
            Kind::Iam { name, .. } => {
                let iam = &self.aws.iam;
                let call = iam
                    .create_role()
                    .role_name(name)
                    .path(naming::iam_path(spec))
                    .assume_role_policy_document(ASSUME_EC2)
                    .description(format!("kaws {}: {}", spec.name, node.key))
                    .set_tags(Some(iam_tags(spec, node)?));
                // Fresh either way: a role a killed run made may still be propagating.
                self.made(name);
                let arn = match self.aws.send(Svc::Iam, "CreateRole", Retry::NONE, || call.clone().send()).await {
                    Ok(o) => o.role().map(|r| r.arn().to_owned()),
                    // Created by a run that was killed before it was recorded.
                    Err(e) if e.code() == "EntityAlreadyExists" => None,
                    Err(e) => return Err(e.into()),
                };
                let arn = match arn {
                    Some(a) => a,
                    None => {
                        // A role of this name exists: take it over only if
                        // it is this cluster's, in this region, on kaws' path.
                        let out = iam.get_role().role_name(name).send().await.call("GetRole")?;
                        let role = out.role().context("no role")?;
                        let tags = role.tags().iter().map(|t| (t.key(), t.value()));
                        let tags: Vec<(&str, &str)> = tags.collect();
                        let owner = super::world::tag(tags.iter().copied(), TAG_CLUSTER);
                        let region = super::world::tag(tags.iter().copied(), naming::TAG_REGION);
                        if owner.as_deref() != Some(spec.name.as_str())
                            || region.as_deref() != Some(spec.region.as_str())
                            || role.path() != naming::iam_path(spec)
                        {
                            return Err(crate::error::failed(format!(
                                "IAM role {name} exists but is not this cluster's (path {}, tags kaws:cluster={}, \
                                 kaws:region={}); kaws does not touch it",
                                role.path(),
                                owner.as_deref().unwrap_or("none"),
                                region.as_deref().unwrap_or("none")
                            ))
                            .hint("rename the cluster, or delete that role if nothing uses it")
                            .into());
                        }
                        role.arn().to_owned()
                    }
                };
                found.id = name.clone();
                found.config = Some(arn);
                for fix in [Fix::Policy, Fix::Profile, Fix::ProfileRole] {
                    self.fix(node, &fix, snap, &mut found).await?;
                }
            }
            Kind::Parameter { name, .. } => {
                let value = self
                    .inputs
                    .secrets
                    .get(&node.key)
                    .with_context(|| format!("the value of {name} was not decrypted"))?;
                let marker = self.inputs.wanted.markers.get(&node.key).context("no source marker")?;
                let t: Vec<aws_sdk_ssm::types::Tag> = tags(spec, node.role, &node.key)
                    .into_iter()
                    .map(|(k, v)| aws_sdk_ssm::types::Tag::builder().key(k).value(v).build())
                    .collect::<Result<_, _>>()?;
                let out = self
                    .aws
                    .ssm
                    .put_parameter()
                    .name(name)
                    .value(value.as_str())
                    .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                    .key_id(snap.id("kms/secrets")?)
                    .description(marker)
                    .set_tags(Some(t))
                    .send()
                    .await
                    .map_err(|e| AwsError::new("PutParameter", &e));
                match out {
                    Ok(_) => {}
                    Err(e) if e.code() == "ParameterAlreadyExists" => {
                        self.fix(node, &Fix::Value, snap, &mut found).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                found.id = name.clone();
                found.config = Some(marker.clone());
                found.links = vec![snap.id("kms/secrets")?];
            }
            Kind::Instance { subnet, ip, iam, role, .. } => {
                found = self.run_instance(node, snap, subnet, *ip, iam, *role).await?;
            }
            Kind::LaunchTemplate { iam } => {
                let sg = snap.id("sg/node")?;
                let config = plan::template_config(self.config(node)?, &sg);
                let name = format!("kaws-{}-node", spec.name);
                let mut dead: Vec<String> = Vec::new();
                // The configuration digest (user-data included) is the
                // version's description, so it is in the request too.
                let request = ec2
                    .create_launch_template()
                    .launch_template_name(&name)
                    .version_description(&config)
                    .launch_template_data(self.template_data(node, snap, iam)?)
                    .tag_specifications(ec2_tags(spec, node, ResourceType::LaunchTemplate, &[]));
                loop {
                    let salt: Vec<&str> = dead.iter().map(String::as_str).collect();
                    let call = request.clone().client_token(token(spec, &node.key, request.as_input(), &salt));
                    let started = std::time::SystemTime::now();
                    let (id, age) = match self
                        .named(Svc::Ec2, "CreateLaunchTemplate", &[&sg], || call.clone().send())
                        .await
                    {
                        Ok(out) => {
                            let t = out.launch_template().context("no template")?;
                            let id = t.launch_template_id().context("no template id")?.to_owned();
                            (id, Age::of(t.create_time(), started))
                        }
                        // A killed run's template, not yet visible to discovery:
                        // adopt it and give it a version with this configuration.
                        Err(e)
                            if aws_error(&e)
                                .is_some_and(|a| a.code() == "InvalidLaunchTemplateName.AlreadyExistsException") =>
                        {
                            let out = ec2
                                .describe_launch_templates()
                                .launch_template_names(&name)
                                .send()
                                .await
                                .call("DescribeLaunchTemplates")?;
                            let t = out.launch_templates().first().context("the launch template was not found")?;
                            let tags = t.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
                            if super::world::tag(tags, TAG_CLUSTER).as_deref() != Some(spec.name.as_str()) {
                                bail!("a launch template named {name} exists without this cluster's tag; delete or rename it");
                            }
                            found.id = t.launch_template_id().unwrap_or_default().to_owned();
                            found.state = t.latest_version_number().map(|v| v.to_string());
                            self.fix(node, &Fix::Version, snap, &mut found).await?;
                            break;
                        }
                        Err(e) => return Err(e),
                    };
                    self.made(&id);
                    let probe = || async {
                        let out = ec2.describe_launch_templates().launch_template_ids(&id).send().await;
                        out.call("DescribeLaunchTemplates").map(|o| Probe::from(!o.launch_templates().is_empty()))
                    };
                    if let Replay::Dead(id) = self.confirm("launch template", &id, age, probe).await? {
                        replayed(&mut dead, id, "CreateLaunchTemplate")?;
                        continue;
                    }
                    found.id = id;
                    found.state = Some("1".into());
                    break;
                }
                found.config = Some(config);
            }
            Kind::AutoScalingGroup { subnets, size } => {
                let name = format!("kaws-{}-node", spec.name);
                let zone_ids: Vec<String> = subnets.iter().map(|s| snap.id(s)).collect::<Result<_>>()?;
                let t = tags(spec, node.role, &node.key).into_iter().map(|(k, v)| {
                    // Nodes get the cluster and role tags, not the group's key.
                    let propagate = k != TAG_KEY;
                    let v = if k == "Name" { format!("{}-node", spec.name) } else { v };
                    aws_sdk_autoscaling::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .propagate_at_launch(propagate)
                        .resource_id(&name)
                        .resource_type("auto-scaling-group")
                        .build()
                });
                let n = *size as i32;
                let call = self
                    .aws
                    .asg
                    .create_auto_scaling_group()
                    .auto_scaling_group_name(&name)
                    .launch_template(
                        aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                            .launch_template_id(snap.id("lt/node")?)
                            .version("$Latest")
                            .build(),
                    )
                    .min_size(n)
                    .max_size(n)
                    .desired_capacity(n)
                    .vpc_zone_identifier(zone_ids.join(","))
                    .health_check_type("EC2")
                    .set_tags(Some(t.collect()));
                // Auto Scaling checks the template's instance profile, which may still be propagating.
                match self.aws.send(Svc::Other, "CreateAutoScalingGroup", Retry::IAM, || call.clone().send()).await {
                    Ok(_) => {}
                    Err(e) if e.code() == "AlreadyExists" => {
                        self.fix(node, &Fix::Size, snap, &mut found).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                let mut links = zone_ids;
                links.sort();
                found = Found { id: name, size: Some((n, n, n)), links, ..found };
            }
            Kind::LoadBalancer { subnets } => {
                use aws_sdk_elasticloadbalancingv2::types as elbt;
                let call = self
                    .aws
                    .elb
                    .create_load_balancer()
                    .name(short_name(spec, "api"))
                    .r#type(elbt::LoadBalancerTypeEnum::Network)
                    .scheme(elbt::LoadBalancerSchemeEnum::InternetFacing)
                    .set_subnets(Some(subnets.iter().map(|s| snap.id(s)).collect::<Result<_>>()?))
                    .security_groups(snap.id("sg/api")?)
                    .set_tags(Some(elb_tags(spec, node)));
                let ids: Vec<String> =
                    subnets.iter().map(|s| snap.id(s)).chain([snap.id("sg/api")]).collect::<Result<_>>()?;
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                let out = self.named(Svc::Other, "CreateLoadBalancer", &ids, || call.clone().send()).await?;
                let lb = out.load_balancers().first().context("no load balancer")?;
                let arn = lb.load_balancer_arn().context("no ARN")?.to_owned();
                found.dns = lb.dns_name().zip(lb.canonical_hosted_zone_id()).map(|(d, z)| (d.to_owned(), z.to_owned()));
                found.links = vec![snap.id("sg/api")?];
                // Its listener waits for it to be active: the DNS records
                // and the masters need only its name, known already.
                found.id = arn;
            }
            Kind::TargetGroup => {
                use aws_sdk_elasticloadbalancingv2::types as elbt;
                let call = self
                    .aws
                    .elb
                    .create_target_group()
                    .name(short_name(spec, "api"))
                    .protocol(elbt::ProtocolEnum::Tcp)
                    .port(model::API_PORT.into())
                    .vpc_id(snap.id("vpc")?)
                    .target_type(elbt::TargetTypeEnum::Instance)
                    .health_check_protocol(elbt::ProtocolEnum::Tcp)
                    .health_check_port(model::API_PORT.to_string())
                    .set_tags(Some(elb_tags(spec, node)));
                let ids: Vec<String> = vec![snap.id("vpc")?];
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                let out = self.named(Svc::Other, "CreateTargetGroup", &ids, || call.clone().send()).await?;
                found.id =
                    out.target_groups().first().and_then(|t| t.target_group_arn()).context("no target group")?.into();
            }
            Kind::Listener => {
                use aws_sdk_elasticloadbalancingv2::types as elbt;
                let call = self
                    .aws
                    .elb
                    .create_listener()
                    .load_balancer_arn(snap.id("lb/api")?)
                    .protocol(elbt::ProtocolEnum::Tcp)
                    .port(model::API_PORT.into())
                    .default_actions(
                        elbt::Action::builder()
                            .r#type(elbt::ActionTypeEnum::Forward)
                            .target_group_arn(snap.id("tg/api")?)
                            .build(),
                    );
                let ids: Vec<String> = vec![snap.id("lb/api")?, snap.id("tg/api")?];
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                let out = self.named(Svc::Other, "CreateListener", &ids, || call.clone().send()).await?;
                found.id = out.listeners().first().and_then(|l| l.listener_arn()).context("no listener")?.into();
                let (elb, arn) = (&self.aws.elb, snap.id("lb/api")?);
                wait_for("the load balancer to be active", self.poll(), Duration::from_secs(600), || async {
                    // Not found yet, right after its create: not active yet.
                    let out = elb.describe_load_balancers().load_balancer_arns(&arn).send().await;
                    let out = match out.call("DescribeLoadBalancers") {
                        Err(e) if aws_error(&e).is_some_and(AwsError::is_not_found) => return Ok(None),
                        other => other?,
                    };
                    let state = out.load_balancers().first().and_then(|l| l.state()?.code().cloned());
                    match state {
                        Some(elbt::LoadBalancerStateEnum::Failed) => Err(anyhow!("load balancer {arn} failed")),
                        Some(elbt::LoadBalancerStateEnum::Provisioning) => Ok(None),
                        _ => Ok(Some(())),
                    }
                })
                .await?;
            }
            Kind::PrivateZone => {
                use aws_sdk_route53::types as r53t;
                let vpc = snap.id("vpc")?;
                let r53 = &self.aws.r53;
                // A zone of this name on this VPC is the cluster's: made by a
                // run killed before it could tag it. It is adopted (tagged).
                let zones = r53
                    .list_hosted_zones_by_vpc()
                    .vpc_id(&vpc)
                    .vpc_region(r53t::VpcRegion::from(spec.region.as_str()))
                    .send()
                    .await
                    .call("ListHostedZonesByVPC")?;
                let name = naming::zone_name(spec);
                let adopted = zones
                    .hosted_zone_summaries()
                    .iter()
                    .find(|z| z.name() == name)
                    .map(|z| z.hosted_zone_id().trim_start_matches("/hostedzone/").to_owned());
                // A caller reference is never reused (Route 53 refuses a
                // second zone with one), so it carries the time of the call.
                let nanos =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
                let create = r53
                    .create_hosted_zone()
                    .name(&name)
                    .caller_reference(format!("kaws-{}-{vpc}-{nanos}", spec.name))
                    .vpc(
                        r53t::Vpc::builder()
                            .vpc_id(&vpc)
                            .vpc_region(r53t::VpcRegion::from(spec.region.as_str()))
                            .build(),
                    )
                    .hosted_zone_config(
                        r53t::HostedZoneConfig::builder()
                            .private_zone(true)
                            .comment(format!("kaws {}", spec.name))
                            .build(),
                    );
                let id = match adopted {
                    Some(id) => id,
                    None => {
                        let out = self.named(Svc::Other, "CreateHostedZone", &[&vpc], || create.clone().send()).await?;
                        out.hosted_zone().context("no zone")?.id().trim_start_matches("/hostedzone/").to_owned()
                    }
                };
                // Adding tags is idempotent: a killed run's zone gets them now.
                let t: Vec<r53t::Tag> = tags(spec, node.role, &node.key)
                    .into_iter()
                    .map(|(k, v)| r53t::Tag::builder().key(k).value(v).build())
                    .collect();
                self.aws
                    .r53
                    .change_tags_for_resource()
                    .resource_type(r53t::TagResourceType::Hostedzone)
                    .resource_id(&id)
                    .set_add_tags(Some(t))
                    .send()
                    .await
                    .call("ChangeTagsForResource")?;
                found.id = id;
            }
            Kind::ApiRecord { .. } => {
                self.fix(node, &Fix::Alias, snap, &mut found).await?;
            }
            Kind::KmsKey { readers } => {
                let kms = &self.aws.kms;
                let policy = plan::key_policy(spec, readers, |k| snap.get(k).and_then(|r| r.config.clone()))
                    .context("the reader roles' ARNs are unknown")?;
                let t: Vec<aws_sdk_kms::types::Tag> = tags(spec, node.role, &node.key)
                    .into_iter()
                    .map(|(k, v)| aws_sdk_kms::types::Tag::builder().tag_key(k).tag_value(v).build())
                    .collect::<Result<_, _>>()?;
                let call = kms
                    .create_key()
                    .description(format!("kaws {} in {}: its SSM parameters", spec.name, spec.region))
                    .policy(policy.to_string())
                    .set_tags(Some(t));
                // The roles the policy names may not have reached KMS yet.
                let out = self.aws.send(Svc::Other, "CreateKey", Retry::IAM, || call.clone().send()).await?;
                let meta = out.key_metadata().context("CreateKey returned no key")?;
                let alias = naming::kms_alias(spec);
                let create = kms.create_alias().alias_name(&alias).target_key_id(meta.key_id());
                match self.aws.send(Svc::Other, "CreateAlias", Retry::NONE, || create.clone().send()).await {
                    Ok(_) => {}
                    // Left on a key scheduled for deletion (a destroy that was cut short).
                    Err(e) if e.code() == "AlreadyExistsException" => {
                        let update = kms.update_alias().alias_name(&alias).target_key_id(meta.key_id());
                        self.aws.send(Svc::Other, "UpdateAlias", Retry::NONE, || update.clone().send()).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                found.id = meta.arn().unwrap_or(meta.key_id()).to_owned();
                found.state = Some("Enabled".into());
                found.config = Some(alias);
                found.policy = Some(policy);
            }
            Kind::Rules(_) | Kind::Targets { .. } => unreachable!("never created, only fixed"),
        }
        Ok(found)
    }

    /// The group `name` in `vpc`, if it carries this cluster's tag.
    async fn own_group(&self, vpc: &str, name: &str) -> Result<String> {
        let by = |k: &str, v: &str| Filter::builder().name(k).values(v).build();
        let out = self
            .aws
            .ec2
            .describe_security_groups()
            .filters(by("vpc-id", vpc))
            .filters(by("group-name", name))
            .send()
            .await
            .call("DescribeSecurityGroups")?;
        let g = out.security_groups().first().with_context(|| format!("group {name} exists but was not found"))?;
        let tags = g.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
        if super::world::tag(tags, TAG_CLUSTER).as_deref() != Some(self.spec.name.as_str()) {
            bail!("a security group named {name} exists in the VPC without this cluster's tag; delete or rename it");
        }
        Ok(g.group_id().unwrap_or_default().to_owned())
    }

    /// Polls what a create answered until it is live (`Ready`) or gone: a
    /// dead state, or NotFound for longer than EC2's eventual consistency
    /// explains, means the client token replayed an old resource.
    ///
    /// `age` says whether the answer is this call's own resource: a new one
    /// that dies is an error with AWS's reason (a new token would not help),
    /// and a new one not found yet is only slow to appear; an old one (a
    /// replay) that is dead or not found is stepped over at once.
    async fn confirm<T, F, Fut>(&self, what: &str, id: &str, age: Age, mut probe: F) -> Result<Replay<T>>
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
                Err(e) if aws_error(&e).is_some_and(AwsError::is_not_found) => match age {
                    Age::Old => return Ok(Replay::Dead(id.to_owned())),
                    Age::Unknown if start.elapsed() >= self.aws.settle => return Ok(Replay::Dead(id.to_owned())),
                    _ => {}
                },
                Err(e) => return Err(e),
            }
            if start.elapsed() >= READY {
                bail!("timed out after {}s waiting for {what} {id}", READY.as_secs());
            }
            tokio::time::sleep(self.poll()).await;
        }
    }

    /// Waits until NAT gateway `id` is available (a killed run may have
    /// left it pending); a failed one is an error with AWS's reason.
    async fn nat_available(&self, id: &str, age: Age) -> Result<Replay<()>> {
        let ec2 = &self.aws.ec2;
        self.confirm("NAT gateway", id, age, || async {
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

    /// Waits until instance `id` runs (targets register only then).
    async fn running(&self, id: &str, age: Age) -> Result<Replay<Found>> {
        let ec2 = &self.aws.ec2;
        self.confirm("instance", id, age, || async {
            let out = ec2.describe_instances().instance_ids(id).send().await.call("DescribeInstances")?;
            let Some(i) = out.reservations().first().and_then(|r| r.instances().first()) else {
                return Ok(Probe::Wait);
            };
            use ec2t::InstanceStateName as S;
            match i.state().and_then(|s| s.name()) {
                Some(S::Running) => Ok(Probe::Ready(Found {
                    id: id.to_owned(),
                    state: Some("running".into()),
                    public_ip: i.public_ip_address().map(String::from),
                    config: super::world::tag(
                        i.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or(""))),
                        TAG_CONFIG,
                    ),
                    ..Default::default()
                })),
                // Terminated by someone, or launched well before this call: a
                // replay. Otherwise it is this call's instance, which failed
                // (capacity, volume limits, an internal error).
                Some(S::ShuttingDown | S::Terminated) => {
                    let reason = i.state_reason();
                    if age == Age::Old || reason.and_then(|r| r.code()) == Some("Client.UserInitiatedShutdown") {
                        Ok(Probe::Dead)
                    } else {
                        Ok(Probe::Failed(format!(
                            "terminated: {}",
                            reason.and_then(|r| r.message()).unwrap_or("no reason given")
                        )))
                    }
                }
                Some(S::Pending) => Ok(Probe::Wait),
                other => Err(anyhow!("instance {id} is {}, not running", other.map_or("unknown", |s| s.as_str()))),
            }
        })
        .await
    }

    /// IAM calls on a role or profile this run made wait for it to propagate.
    fn iam_retry(&self, name: &str) -> Retry {
        if self.fresh.lock().expect("the fresh-id lock").contains(name) {
            Retry::IAM
        } else {
            Retry::NONE
        }
    }

    fn config(&self, node: &Node) -> Result<&String> {
        self.inputs.wanted.config.get(&node.key).with_context(|| format!("no configuration for {}", node.key))
    }

    fn user_data(&self, node: &Node) -> Result<String> {
        let bytes = self.inputs.user_data.get(&node.key).with_context(|| format!("no user-data for {}", node.key))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    fn template_data(&self, node: &Node, snap: &Snap, iam: &str) -> Result<ec2t::RequestLaunchTemplateData> {
        let spec = self.spec;
        let tags: Vec<ec2t::Tag> = [(TAG_CLUSTER, spec.name.to_string()), (TAG_ROLE, "node".into())]
            .into_iter()
            .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
            .collect();
        Ok(ec2t::RequestLaunchTemplateData::builder()
            .image_id(&self.inputs.image)
            .instance_type(ec2t::InstanceType::from(spec.aws.node_type.as_str()))
            .iam_instance_profile(
                ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(snap.id(iam)?).build(),
            )
            .network_interfaces(
                ec2t::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(false)
                    .delete_on_termination(true)
                    .groups(snap.id("sg/node")?)
                    .build(),
            )
            .metadata_options(
                ec2t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(ec2t::LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .http_endpoint(ec2t::LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .block_device_mappings(
                ec2t::LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(&self.inputs.root_device)
                    .ebs(
                        ec2t::LaunchTemplateEbsBlockDeviceRequest::builder()
                            .volume_size(spec.aws.root_volume_gib as i32)
                            .volume_type(ec2t::VolumeType::Gp3)
                            .encrypted(true)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .user_data(self.user_data(node)?)
            .tag_specifications(
                ec2t::LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                ec2t::LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            )
            .build())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_instance(
        &self,
        node: &Node,
        snap: &Snap,
        subnet: &str,
        ip: Option<std::net::Ipv4Addr>,
        iam: &str,
        role: Role,
    ) -> Result<Found> {
        let (spec, ec2) = (self.spec, &self.aws.ec2);
        let itype = match role {
            Role::Bastion => &spec.aws.bastion_type,
            _ => &spec.aws.master_type,
        };
        let config = self.config(node)?.clone();
        let extra = [(TAG_CONFIG.to_owned(), config.clone())];
        let (subnet_id, sg) = (snap.id(subnet)?, snap.id(&format!("sg/{}", role.as_str()))?);
        let mut nic = ec2t::InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .subnet_id(&subnet_id)
            .groups(&sg)
            .associate_public_ip_address(role == Role::Bastion)
            .delete_on_termination(true);
        if let Some(ip) = ip {
            nic = nic.private_ip_address(ip.to_string());
        }
        // Salted with any dead instance a replay of the token returned.
        let mut dead: Vec<String> = Vec::new();
        // A new instance profile takes a while to reach EC2; a master's
        // fixed address stays in use while its predecessor shuts down, which
        // may take minutes.
        let retry = Retry { long: ip.is_some(), ..self.settle(&[&subnet_id, &sg]).with_iam().with_in_use() };
        let request = ec2
            .run_instances()
            .image_id(&self.inputs.image)
            .instance_type(ec2t::InstanceType::from(itype.as_str()))
            .min_count(1)
            .max_count(1)
            .network_interfaces(nic.clone().build())
            .iam_instance_profile(ec2t::IamInstanceProfileSpecification::builder().name(snap.id(iam)?).build())
            .metadata_options(
                ec2t::InstanceMetadataOptionsRequest::builder()
                    .http_tokens(ec2t::HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .http_endpoint(ec2t::InstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .block_device_mappings(
                ec2t::BlockDeviceMapping::builder()
                    .device_name(&self.inputs.root_device)
                    .ebs(
                        ec2t::EbsBlockDevice::builder()
                            .volume_size(spec.aws.root_volume_gib as i32)
                            .volume_type(ec2t::VolumeType::Gp3)
                            .encrypted(true)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .user_data(self.user_data(node)?)
            .tag_specifications(ec2_tags(spec, node, ResourceType::Instance, &extra))
            .tag_specifications(ec2_tags(spec, node, ResourceType::Volume, &[]));
        loop {
            let salt: Vec<&str> = dead.iter().map(String::as_str).collect();
            let call = request.clone().client_token(token(spec, &node.key, request.as_input(), &salt));
            let started = std::time::SystemTime::now();
            let out = self.aws.send(Svc::Run, "RunInstances", retry, || call.clone().send()).await?;
            let instance = out.instances().first().context("no instance")?;
            let id = instance.instance_id().context("no instance id")?.to_owned();
            self.made(&id);
            // Targets can be registered only once the instance runs.
            match self.running(&id, Age::of(instance.launch_time(), started)).await? {
                Replay::Live(found) => return Ok(Found { config: Some(config), ..found }),
                Replay::Dead(id) => replayed(&mut dead, id, "RunInstances")?,
            }
        }
    }

    /// Applies `fixes` to one resource. Those that touch different parts of
    /// it run at once: its default route and each subnet association of a
    /// route table, each rule change of a group; the rest first, in order.
    async fn fix_all(&self, node: &Node, fixes: &[Fix], snap: &Snap, found: &mut Found) -> Result<()> {
        let lane = |f: &Fix| match f {
            Fix::Route { .. } => Lane::Routes,
            Fix::Associate(_) | Fix::Disassociate { .. } => Lane::Association,
            Fix::Authorize { .. } | Fix::Revoke { .. } => Lane::Rule,
            _ => Lane::InOrder,
        };
        for fix in fixes.iter().filter(|f| lane(f) == Lane::InOrder) {
            self.fix(node, fix, snap, found).await?;
        }
        // Each on its own copy of the record; the parts they touch are merged.
        let each = |which: Lane| {
            futures::future::try_join_all(fixes.iter().filter(move |f| lane(f) == which).map(|fix| {
                let mut own = found.clone();
                async move { self.fix(node, fix, snap, &mut own).await.map(|()| own) }
            }))
        };
        let (routes, associations, rules) =
            tokio::try_join!(each(Lane::Routes), each(Lane::Association), each(Lane::Rule))?;
        // One default route per table: at most one route fix.
        if let Some(r) = routes.into_iter().last() {
            found.routes = r.routes;
        }
        let kept: Vec<_> =
            found.assoc.iter().filter(|a| associations.iter().all(|r| r.assoc.contains(a))).cloned().collect();
        let added = associations.iter().flat_map(|r| r.assoc.iter().filter(|a| !found.assoc.contains(a)));
        found.assoc = kept.into_iter().chain(added.cloned()).collect();
        if let Some(r) = rules.into_iter().last() {
            found.id = r.id;
        }
        Ok(())
    }

    async fn fix(&self, node: &Node, fix: &Fix, snap: &Snap, found: &mut Found) -> Result<()> {
        let (spec, ec2) = (self.spec, &self.aws.ec2);
        match (fix, &node.kind) {
            (Fix::Reserve(cidrs), _) => {
                let subnet = &found.id;
                let made = futures::future::try_join_all(cidrs.iter().map(|cidr| async move {
                    let call = ec2
                        .create_subnet_cidr_reservation()
                        .subnet_id(subnet)
                        .cidr(cidr)
                        .reservation_type(ec2t::SubnetCidrReservationType::Explicit)
                        .description("kaws: the masters' fixed addresses");
                    let out =
                        self.named(Svc::Ec2, "CreateSubnetCidrReservation", &[subnet], || call.clone().send()).await?;
                    let id = out.subnet_cidr_reservation().and_then(|r| r.subnet_cidr_reservation_id());
                    Ok::<_, anyhow::Error>((id.unwrap_or_default().to_owned(), cidr.clone()))
                }))
                .await?;
                found.reserved.extend(made);
            }
            (Fix::VpcDns, _) => {
                // One attribute per call, as EC2 requires; the two at once.
                let vpc = &found.id;
                let turn_on = |support: bool| async move {
                    let on = ec2t::AttributeBooleanValue::builder().value(true).build();
                    let call = ec2.modify_vpc_attribute().vpc_id(vpc);
                    let call = if support { call.enable_dns_support(on) } else { call.enable_dns_hostnames(on) };
                    self.named(Svc::Ec2, "ModifyVpcAttribute", &[vpc], || call.clone().send()).await
                };
                tokio::try_join!(turn_on(true), turn_on(false))?;
                found.state = Some("dns".into());
            }
            (Fix::Attach, _) => {
                let vpc = snap.id("vpc")?;
                let call = ec2.attach_internet_gateway().internet_gateway_id(&found.id).vpc_id(&vpc);
                self.named(Svc::Ec2, "AttachInternetGateway", &[&found.id, &vpc], || call.clone().send()).await?;
                found.links = vec![vpc];
            }
            (Fix::Route { dest, target }, _) => {
                let target_id = snap.id(target)?;
                let nat = target.starts_with("nat/");
                // A killed run may have left the NAT gateway pending.
                if nat {
                    if let Replay::Dead(id) = self.nat_available(&target_id, Age::Old).await? {
                        bail!("NAT gateway {id} is gone; run `kaws cluster apply` again to replace it");
                    }
                }
                let exists = found.routes.iter().any(|(d, _)| d == dest);
                let ids = [found.id.as_str(), target_id.as_str()];
                macro_rules! route {
                    ($call:expr, $name:literal) => {{
                        let call = $call.route_table_id(&found.id).destination_cidr_block(dest);
                        let call = if nat { call.nat_gateway_id(&target_id) } else { call.gateway_id(&target_id) };
                        self.named(Svc::Ec2, $name, &ids, || call.clone().send()).await?;
                    }};
                }
                if exists {
                    route!(ec2.replace_route(), "ReplaceRoute");
                } else {
                    route!(ec2.create_route(), "CreateRoute");
                }
                found.routes.retain(|(d, _)| d != dest);
                found.routes.push((dest.clone(), target_id));
            }
            (Fix::Associate(subnet), _) => {
                let sid = snap.id(subnet)?;
                let call = ec2.associate_route_table().route_table_id(&found.id).subnet_id(&sid);
                let out = self.named(Svc::Ec2, "AssociateRouteTable", &[&found.id, &sid], || call.clone().send()).await;
                let assoc = match out {
                    Ok(o) => o.association_id().unwrap_or_default().to_owned(),
                    // The subnet is in another of the cluster's tables (drift): move it.
                    Err(e) if aws_error(&e).is_some_and(|a| a.code() == "Resource.AlreadyAssociated") => {
                        let tables = ec2
                            .describe_route_tables()
                            .filters(Filter::builder().name("association.subnet-id").values(&sid).build())
                            .send()
                            .await
                            .call("DescribeRouteTables")?;
                        let old = tables
                            .route_tables()
                            .iter()
                            .flat_map(|t| t.associations())
                            .find(|a| a.subnet_id() == Some(sid.as_str()))
                            .and_then(|a| a.route_table_association_id())
                            .context("the subnet's association was not found")?
                            .to_owned();
                        let o = ec2
                            .replace_route_table_association()
                            .association_id(old)
                            .route_table_id(&found.id)
                            .send()
                            .await
                            .call("ReplaceRouteTableAssociation")?;
                        o.new_association_id().unwrap_or_default().to_owned()
                    }
                    Err(e) => return Err(e),
                };
                found.assoc.push((assoc, sid));
            }
            (Fix::Disassociate { association, .. }, _) => {
                ec2.disassociate_route_table()
                    .association_id(association)
                    .send()
                    .await
                    .call("DisassociateRouteTable")?;
                found.assoc.retain(|(a, _)| a != association);
            }
            (Fix::Authorize { egress, rules } | Fix::Revoke { egress, rules }, Kind::Rules(role)) => {
                let group = snap.id(&format!("sg/{}", role.as_str()))?;
                let perms = ip_permissions(rules, snap)?;
                let groups: Vec<String> =
                    Role::ALL.iter().filter_map(|r| snap.id(&format!("sg/{}", r.as_str())).ok()).collect();
                let ids: Vec<&str> = groups.iter().map(String::as_str).collect();
                macro_rules! send {
                    ($op:ident, $name:literal) => {{
                        let call = ec2.$op().group_id(&group).set_ip_permissions(Some(perms));
                        self.named(Svc::Ec2, $name, &ids, || call.clone().send()).await?
                    }};
                }
                match (matches!(fix, Fix::Authorize { .. }), egress) {
                    (true, false) => _ = send!(authorize_security_group_ingress, "AuthorizeSecurityGroupIngress"),
                    (true, true) => _ = send!(authorize_security_group_egress, "AuthorizeSecurityGroupEgress"),
                    (false, false) => _ = send!(revoke_security_group_ingress, "RevokeSecurityGroupIngress"),
                    (false, true) => _ = send!(revoke_security_group_egress, "RevokeSecurityGroupEgress"),
                }
                // The group's own record changes; the rules node records nothing.
                found.id = group;
            }
            (Fix::Policy, Kind::Iam { name, ssm_paths }) => {
                let arn = found.config.clone().context("the role's ARN is unknown")?;
                let iam = &self.aws.iam;
                // A role made moments ago may answer NoSuchEntity.
                let retry = self.iam_retry(name);
                match plan::policy(spec, &arn, ssm_paths) {
                    Some(doc) => {
                        let call =
                            iam.put_role_policy().role_name(name).policy_name(POLICY).policy_document(doc.to_string());
                        self.aws.send(Svc::Iam, "PutRolePolicy", retry, || call.clone().send()).await?;
                        found.policy = Some(doc);
                    }
                    None => {
                        if found.policy.is_some() {
                            let call = iam.delete_role_policy().role_name(name).policy_name(POLICY);
                            self.aws.send(Svc::Iam, "DeleteRolePolicy", Retry::NONE, || call.clone().send()).await?;
                        }
                        found.policy = None;
                    }
                }
            }
            (Fix::KeyPolicy, Kind::KmsKey { readers }) => {
                let policy = plan::key_policy(spec, readers, |k| snap.get(k).and_then(|r| r.config.clone()))
                    .context("the reader roles' ARNs are unknown")?;
                let call =
                    self.aws.kms.put_key_policy().key_id(&found.id).policy_name("default").policy(policy.to_string());
                self.aws.send(Svc::Other, "PutKeyPolicy", Retry::IAM, || call.clone().send()).await?;
                found.policy = Some(policy);
            }
            (Fix::Profile, Kind::Iam { name, .. }) => {
                let call = self
                    .aws
                    .iam
                    .create_instance_profile()
                    .instance_profile_name(name)
                    .path(naming::iam_path(spec))
                    .set_tags(Some(iam_tags(spec, node)?));
                self.made(name);
                match self.aws.send(Svc::Iam, "CreateInstanceProfile", Retry::NONE, || call.clone().send()).await {
                    Ok(_) => {}
                    Err(e) if e.code() == "EntityAlreadyExists" => {}
                    Err(e) => return Err(e.into()),
                }
                found.profile = true;
            }
            (Fix::ProfileRole, Kind::Iam { name, .. }) => {
                let iam = &self.aws.iam;
                let retry = self.iam_retry(name);
                let add = iam.add_role_to_instance_profile().instance_profile_name(name).role_name(name);
                match self.aws.send(Svc::Iam, "AddRoleToInstanceProfile", retry, || add.clone().send()).await {
                    Ok(_) => {}
                    Err(e) if e.code() == "LimitExceeded" => {
                        // Another role holds the profile (drift): replace it.
                        for other in found.links.clone() {
                            let call =
                                iam.remove_role_from_instance_profile().instance_profile_name(name).role_name(other);
                            self.aws
                                .send(Svc::Iam, "RemoveRoleFromInstanceProfile", Retry::NONE, || call.clone().send())
                                .await?;
                        }
                        self.aws.send(Svc::Iam, "AddRoleToInstanceProfile", retry, || add.clone().send()).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
                found.links = vec![name.clone()];
            }
            (Fix::Value, Kind::Parameter { name, .. }) => {
                let value = self
                    .inputs
                    .secrets
                    .get(&node.key)
                    .with_context(|| format!("the value of {name} was not decrypted"))?;
                let marker = self.inputs.wanted.markers.get(&node.key).context("no source marker")?;
                self.aws
                    .ssm
                    .put_parameter()
                    .name(name)
                    .value(value.as_str())
                    .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                    .key_id(snap.id("kms/secrets")?)
                    .description(marker)
                    .overwrite(true)
                    .send()
                    .await
                    .call("PutParameter")?;
                found.id = name.clone();
                found.config = Some(marker.clone());
                found.links = vec![snap.id("kms/secrets")?];
            }
            (Fix::Start, _) => {
                let call = ec2.start_instances().instance_ids(&found.id);
                self.named(Svc::Ec2, "StartInstances", &[&found.id], || call.clone().send()).await?;
            }
            (Fix::Register(keys), _) => {
                use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
                let ids: Vec<String> = keys.iter().map(|k| snap.id(k)).collect::<Result<_>>()?;
                // A target must be running (`InvalidTarget` otherwise); a
                // killed run may have left an instance pending.
                for id in ids.iter().filter(|id| !self.created(id)) {
                    if let Replay::Dead(id) = self.running(id, Age::Old).await? {
                        bail!("instance {id} is gone; run `kaws cluster apply` again to replace it");
                    }
                }
                let targets: Vec<_> = ids.iter().map(|i| TargetDescription::builder().id(i).build()).collect();
                let call =
                    self.aws.elb.register_targets().target_group_arn(snap.id("tg/api")?).set_targets(Some(targets));
                // ELB's view of EC2 lags: InvalidTarget for an instance that runs.
                let named: Vec<&str> = ids.iter().map(String::as_str).collect();
                self.named(Svc::Other, "RegisterTargets", &named, || call.clone().send()).await?;
                found.id = snap.id("tg/api")?;
                found.links.extend(ids);
                found.links.sort();
            }
            (Fix::Deregister(ids), _) => {
                use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
                let targets: Vec<_> = ids.iter().map(|i| TargetDescription::builder().id(i).build()).collect();
                self.aws
                    .elb
                    .deregister_targets()
                    .target_group_arn(snap.id("tg/api")?)
                    .set_targets(Some(targets))
                    .send()
                    .await
                    .call("DeregisterTargets")?;
                found.links.retain(|l| !ids.contains(l));
            }
            (Fix::Size, Kind::AutoScalingGroup { subnets, size }) => {
                let n = *size as i32;
                let ids: Vec<String> = subnets.iter().map(|s| snap.id(s)).collect::<Result<_>>()?;
                let call = self
                    .aws
                    .asg
                    .update_auto_scaling_group()
                    .auto_scaling_group_name(format!("kaws-{}-node", spec.name))
                    .min_size(n)
                    .max_size(n)
                    .desired_capacity(n)
                    .vpc_zone_identifier(ids.join(","));
                let named: Vec<&str> = ids.iter().map(String::as_str).collect();
                self.named(Svc::Other, "UpdateAutoScalingGroup", &named, || call.clone().send()).await?;
                found.size = Some((n, n, n));
                found.links = ids;
                found.links.sort();
            }
            (Fix::Version, Kind::LaunchTemplate { iam }) => {
                let config = plan::template_config(self.config(node)?, &snap.id("sg/node")?);
                // Salted with the version it follows: A→B→A→B makes four versions.
                let latest = found.state.clone().unwrap_or_default();
                let call = ec2
                    .create_launch_template_version()
                    .launch_template_id(&found.id)
                    .client_token(token(spec, &node.key, &(), &[&found.id, &latest, &config]))
                    .launch_template_data(self.template_data(node, snap, iam)?);
                let call = call.version_description(&config);
                let out =
                    self.named(Svc::Ec2, "CreateLaunchTemplateVersion", &[&found.id], || call.clone().send()).await?;
                found.state = out.launch_template_version().and_then(|v| v.version_number()).map(|v| v.to_string());
                found.config = Some(config);
            }
            (Fix::Alias, Kind::ApiRecord { public }) => {
                use aws_sdk_route53::types as r53t;
                let lb = snap
                    .get("lb/api")
                    .and_then(|l| l.dns.clone())
                    .context("the load balancer's DNS name is unknown")?;
                let zone = if *public {
                    spec.aws.hosted_zone.clone().context("no hosted zone")?
                } else {
                    snap.id("zone/private")?
                };
                let record = r53t::ResourceRecordSet::builder()
                    .name(naming::api_record(spec))
                    .r#type(r53t::RrType::A)
                    .alias_target(
                        r53t::AliasTarget::builder()
                            .dns_name(&lb.0)
                            .hosted_zone_id(&lb.1)
                            .evaluate_target_health(false)
                            .build()?,
                    )
                    .build()?;
                // With it, in the same batch, the marker that says kaws made
                // it, added to any TXT values others keep at that name.
                let txt = self
                    .aws
                    .r53
                    .list_resource_record_sets()
                    .hosted_zone_id(&zone)
                    .start_record_name(naming::api_record(spec))
                    .start_record_type(r53t::RrType::Txt)
                    .max_items(1)
                    .send()
                    .await
                    .call("ListResourceRecordSets")?;
                let existing = txt
                    .resource_record_sets()
                    .first()
                    .filter(|r| r.name() == naming::api_record(spec) && r.r#type() == &r53t::RrType::Txt);
                let mut values: Vec<String> = existing
                    .map(|r| r.resource_records().iter().map(|v| v.value().to_owned()).collect())
                    .unwrap_or_default();
                if !values.contains(&naming::owner_marker(spec)) {
                    values.push(naming::owner_marker(spec));
                }
                let mut marker = r53t::ResourceRecordSet::builder()
                    .name(naming::api_record(spec))
                    .r#type(r53t::RrType::Txt)
                    .ttl(existing.and_then(|r| r.ttl()).unwrap_or(300));
                for v in values {
                    marker = marker.resource_records(r53t::ResourceRecord::builder().value(v).build()?);
                }
                let marker = marker.build()?;
                // The private zone is kaws' own, and so is a public record
                // found with its marker: upserted. A new public record is
                // created, and Route 53 refuses if someone made one meanwhile.
                let action = if *public && found.records.is_empty() {
                    r53t::ChangeAction::Create
                } else {
                    r53t::ChangeAction::Upsert
                };
                let batch = r53t::ChangeBatch::builder()
                    .changes(r53t::Change::builder().action(action).resource_record_set(record.clone()).build()?)
                    .changes(
                        r53t::Change::builder()
                            .action(r53t::ChangeAction::Upsert)
                            .resource_record_set(marker.clone())
                            .build()?,
                    )
                    .build()?;
                self.aws
                    .r53
                    .change_resource_record_sets()
                    .hosted_zone_id(&zone)
                    .change_batch(batch)
                    .send()
                    .await
                    .call("ChangeResourceRecordSets")?;
                found.records = vec![record, marker];
                found.id = zone;
                found.config = Some(lb.0.to_lowercase());
                found.dns = Some(lb);
            }
            (Fix::SecurityGroups, _) => {
                let sg = snap.id("sg/api")?;
                self.aws
                    .elb
                    .set_security_groups()
                    .load_balancer_arn(&found.id)
                    .security_groups(&sg)
                    .send()
                    .await
                    .call("SetSecurityGroups")?;
                found.links = vec![sg];
            }
            (fix, kind) => bail!("internal: fix {fix:?} does not apply to {kind:?}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::spec::tests::spec;

    #[test]
    fn the_longest_chains_start_first() {
        let g = model::graph(&spec());
        let h = heights(&g);
        // The VPC heads the longest chain; what nothing waits on is last.
        assert_eq!(h.values().max(), Some(&h["vpc"]));
        assert_eq!(h["targets/api"], 1);
        assert!(h["nat/0"] > h["ssm/node/bootstrap-token"]);
        for n in &g {
            for d in &n.deps {
                assert!(h[d.as_str()] > h[n.key.as_str()], "{d} must come before {}", n.key);
            }
        }
    }
}
