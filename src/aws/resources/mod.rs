//! Every kind of resource kaws makes, one module each: its desired state
//! (`Want`, part of the graph), its actual state as found (`Found`), how it
//! is discovered, diffed, created, fixed and deleted, and the unit tests of
//! its diff. To understand or add a kind, read or write its module, and
//! list it once in the enums below.
//!
//! The rest of the engine only dispatches: `world` runs every `discover`,
//! `plan` every `diff`, `apply` every `create`/`fix` (and `delete` for a
//! replaced or surplus resource), `destroy` every `delete`.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use anyhow::{anyhow, Result};

use super::key::{Key, Role};
use super::model::Node;
use super::Aws;
use crate::cluster::ClusterSpec;

pub mod ctx;
pub mod launch;

pub mod asg;
pub mod dns;
pub mod eip;
pub mod iam;
pub mod igw;
pub mod instance;
pub mod keypair;
pub mod kms;
pub mod lb;
pub mod lt;
pub mod nat;
pub mod rtb;
pub mod rules;
pub mod sg;
pub mod ssm;
pub mod subnet;
pub mod volume;
pub mod vpc;

pub use ctx::{Ctx, Inputs};

/// What a node of the graph must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Desired {
    Vpc(vpc::Want),
    Igw,
    Subnet(subnet::Want),
    Eip,
    Nat(nat::Want),
    Rtb(rtb::Want),
    Group(Role),
    Rules(Role),
    Iam(iam::Want),
    Kms(kms::Want),
    Param(ssm::Want),
    Lb(lb::Want),
    Tg,
    Listener,
    Targets(lb::TargetsWant),
    Zone,
    Record(dns::Want),
    Instance(instance::Want),
    Volume(volume::Want),
    Lt,
    Asg(asg::Want),
}

/// A resource's kind: what `destroy` orders by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Vpc,
    Igw,
    Subnet,
    Eip,
    Nat,
    Rtb,
    Group,
    Rules,
    Iam,
    Kms,
    Param,
    Lb,
    Tg,
    Listener,
    Targets,
    Zone,
    Record,
    Instance,
    Volume,
    Lt,
    Asg,
    /// Instances an Auto Scaling group launched.
    Managed,
    KeyPair,
}

impl Desired {
    pub fn kind(&self) -> Kind {
        match self {
            Desired::Vpc(_) => Kind::Vpc,
            Desired::Igw => Kind::Igw,
            Desired::Subnet(_) => Kind::Subnet,
            Desired::Eip => Kind::Eip,
            Desired::Nat(_) => Kind::Nat,
            Desired::Rtb(_) => Kind::Rtb,
            Desired::Group(_) => Kind::Group,
            Desired::Rules(_) => Kind::Rules,
            Desired::Iam(_) => Kind::Iam,
            Desired::Kms(_) => Kind::Kms,
            Desired::Param(_) => Kind::Param,
            Desired::Lb(_) => Kind::Lb,
            Desired::Tg => Kind::Tg,
            Desired::Listener => Kind::Listener,
            Desired::Targets(_) => Kind::Targets,
            Desired::Zone => Kind::Zone,
            Desired::Record(_) => Kind::Record,
            Desired::Instance(_) => Kind::Instance,
            Desired::Volume(_) => Kind::Volume,
            Desired::Lt => Kind::Lt,
            Desired::Asg(_) => Kind::Asg,
        }
    }
}

/// Declares the actual-state enum: one variant per module's `Found`, and
/// typed access to it.
macro_rules! actual {
    ($($variant:ident($ty:ty) => $kind:ident),* $(,)?) => {
        /// A resource as found, typed by its kind.
        #[derive(Clone, Debug)]
        pub enum Actual { $($variant($ty)),* }

        impl Actual {
            pub fn kind(&self) -> Kind {
                match self { $(Actual::$variant(_) => Kind::$kind),* }
            }
        }

        $(impl Typed for $ty {
            fn of(a: &Actual) -> Option<&Self> {
                match a { Actual::$variant(v) => Some(v), #[allow(unreachable_patterns)] _ => None }
            }
            fn of_mut(a: &mut Actual) -> Option<&mut Self> {
                match a { Actual::$variant(v) => Some(v), #[allow(unreachable_patterns)] _ => None }
            }
        }
        impl From<$ty> for Actual {
            fn from(v: $ty) -> Actual { Actual::$variant(v) }
        })*
    };
}

actual! {
    Vpc(vpc::Found) => Vpc,
    Igw(igw::Found) => Igw,
    Subnet(subnet::Found) => Subnet,
    Eip(eip::Found) => Eip,
    Nat(nat::Found) => Nat,
    Rtb(rtb::Found) => Rtb,
    Group(sg::Found) => Group,
    Iam(iam::Found) => Iam,
    Kms(kms::Found) => Kms,
    Param(ssm::Found) => Param,
    Lb(lb::Found) => Lb,
    Tg(lb::TgFound) => Tg,
    Listener(lb::ListenerFound) => Listener,
    Targets(lb::TargetsFound) => Targets,
    Zone(dns::ZoneFound) => Zone,
    Record(dns::Found) => Record,
    Instance(instance::Found) => Instance,
    Volume(volume::Found) => Volume,
    Lt(lt::Found) => Lt,
    Asg(asg::Found) => Asg,
    KeyPair(keypair::Found) => KeyPair,
}

/// The typed part of a found resource.
pub trait Typed: Sized {
    fn of(a: &Actual) -> Option<&Self>;
    fn of_mut(a: &mut Actual) -> Option<&mut Self>;
}

/// One resource as found: the id AWS addresses it by (an id, an ARN or a
/// name) and its typed state.
#[derive(Clone, Debug)]
pub struct Found {
    pub id: String,
    pub is: Actual,
}

impl Found {
    pub fn new(id: impl Into<String>, is: impl Into<Actual>) -> Found {
        Found { id: id.into(), is: is.into() }
    }

    pub fn get<T: Typed>(&self) -> Option<&T> {
        T::of(&self.is)
    }

    pub fn get_mut<T: Typed>(&mut self) -> Option<&mut T> {
        T::of_mut(&mut self.is)
    }

    /// Whether kaws must leave it alone (a record or key that is not its own).
    pub fn foreign(&self) -> bool {
        match &self.is {
            Actual::Record(r) => r.foreign,
            Actual::Kms(k) => k.foreign,
            _ => false,
        }
    }

    pub fn kind(&self) -> Kind {
        match &self.is {
            Actual::Instance(i) if i.managed => Kind::Managed,
            other => other.kind(),
        }
    }
}

/// What exists now, one resource per key: what discovery found (the first
/// of each key), overlaid with what this run made. Owned, so that each
/// task of a run starts from its own copy.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub found: HashMap<Key, Found>,
    /// The Availability Zones the cluster uses, in order.
    pub zones: Vec<String>,
}

impl State {
    /// The first resource found under each key that is of the key's kind
    /// (one of another kind, tagged so by someone, is never used).
    pub fn of(world: &super::world::World) -> State {
        let found = world
            .found
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.iter().find(|f| of_kind(k, f))?.clone())))
            .collect();
        State { found, zones: world.zones.clone() }
    }

    pub fn id(&self, key: &Key) -> Option<&str> {
        self.found.get(key).map(|f| f.id.as_str())
    }

    /// The id of a resource a call needs: an error if it does not exist yet.
    pub fn need(&self, key: &Key) -> Result<String> {
        self.id(key).map(String::from).ok_or_else(|| anyhow!("{key} does not exist (yet)"))
    }

    /// A resource found as the kind its key names.
    pub fn get<T: Typed>(&self, key: &Key) -> Option<(&str, &T)> {
        let f = self.found.get(key)?;
        Some((f.id.as_str(), f.get::<T>()?))
    }

    /// `key (id)` once it exists, `key (new)` before.
    pub fn refer(&self, key: &Key) -> String {
        match self.id(key) {
            Some(id) => format!("{key} ({id})"),
            None => format!("{key} (new)"),
        }
    }

    pub fn refs(&self, keys: &[Key]) -> String {
        keys.iter().map(|k| self.refer(k)).collect::<Vec<_>>().join(", ")
    }

    /// The public addresses of the cluster's NAT gateways' Elastic IPs.
    pub fn nat_ips(&self, spec: &ClusterSpec) -> Vec<std::net::Ipv4Addr> {
        (0..nat::count(spec))
            .filter_map(|z| self.get::<eip::Found>(&Key::Eip(z))?.1.public_ip.as_ref()?.parse().ok())
            .collect()
    }
}

/// What the spec wants beyond the graph: the configuration digest of each
/// instance and of the launch template, and the source marker of each
/// SSM parameter.
#[derive(Clone, Default)]
pub struct Wanted {
    pub config: HashMap<Key, String>,
    pub markers: HashMap<Key, String>,
    /// The image instances and the node template run (for the plan to show).
    pub image: Option<String>,
}

/// What a diff reads: the spec, the state, and what the inputs want.
pub struct View<'a> {
    pub spec: &'a ClusterSpec,
    pub state: &'a State,
    pub wanted: &'a Wanted,
}

/// One fix to an existing resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fix {
    VpcDns,
    Attach,
    Route { dest: String, target: Key },
    Associate(Key),
    Disassociate { association: String, subnet: String },
    Authorize { egress: bool, rules: Vec<sg::Rule> },
    Reserve(Vec<String>),
    Revoke { egress: bool, rules: Vec<sg::Rule> },
    Policy,
    KeyPolicy,
    Profile,
    ProfileRole,
    Value,
    Start,
    Register(Vec<Key>),
    Deregister(Vec<String>),
    Size,
    Version,
    Alias,
    SecurityGroups,
    HealthCheck,
    AttachVolume,
    Tags,
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let list = |rules: &[sg::Rule]| rules.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
        let dir = |egress: &bool| if *egress { "egress to" } else { "ingress from" };
        let keys = |k: &[Key]| k.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ");
        match self {
            Fix::VpcDns => write!(f, "turn on DNS support and hostnames (off)"),
            Fix::Attach => write!(f, "attach to the VPC (detached)"),
            Fix::Route { dest, target } => write!(f, "route {dest} to {target} (missing or elsewhere)"),
            Fix::Associate(s) => write!(f, "associate {s} (not associated)"),
            Fix::Disassociate { subnet, .. } => write!(f, "disassociate {subnet} (not in the spec)"),
            Fix::Authorize { egress, rules } => write!(f, "authorize {} {} (missing)", dir(egress), list(rules)),
            Fix::Reserve(cidrs) => write!(f, "reserve {} for the masters (not reserved)", cidrs.join(", ")),
            Fix::Revoke { egress, rules } => write!(f, "revoke {} {} (not in the spec)", dir(egress), list(rules)),
            Fix::Policy => write!(f, "put the inline policy (missing or changed)"),
            Fix::KeyPolicy => write!(f, "put the key policy (changed)"),
            Fix::Profile => write!(f, "create the instance profile (missing)"),
            Fix::ProfileRole => write!(f, "add the role to its instance profile (missing)"),
            Fix::Value => write!(f, "write the value (missing or from an older sealed key)"),
            Fix::Start => write!(f, "start (stopped)"),
            Fix::Register(t) => write!(f, "register {} (not registered)", keys(t)),
            Fix::Deregister(t) => write!(f, "deregister {} (not a master of the spec)", t.join(", ")),
            Fix::Size => write!(f, "set size and subnets (differ from the spec)"),
            Fix::Version => write!(f, "new launch template version (configuration changed)"),
            Fix::Alias => write!(f, "point the alias at the load balancer (missing or elsewhere)"),
            Fix::SecurityGroups => write!(f, "set the security group (differs)"),
            Fix::HealthCheck => write!(f, "check /readyz over HTTPS (differs)"),
            Fix::AttachVolume => write!(f, "attach its etcd volume (not attached)"),
            Fix::Tags => write!(f, "tag it for the Kubernetes cloud provider (untagged)"),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Action {
    Create,
    Update(Vec<Fix>),
    Delete {
        found: Box<Found>,
        why: String,
    },
    /// Delete what is found and create it anew (a failed NAT gateway).
    Replace {
        found: Box<Found>,
        why: String,
    },
    /// A difference kaws will not repair in place.
    Blocked(String),
    /// A difference worth knowing that needs no call.
    Note(String),
}

/// `Update(fixes)`, or nothing to do.
pub fn update(fixes: Vec<Fix>) -> Option<Action> {
    (!fixes.is_empty()).then_some(Action::Update(fixes))
}

/// A field AWS cannot change in place: blocked when it differs.
pub fn immutable(what: &str, have: &str, want: &str) -> Option<Action> {
    (have != want).then(|| {
        Action::Blocked(format!(
            "its {what} is {have}, the spec says {want}; kaws does not change that in place \
             (destroy the cluster to renumber it)"
        ))
    })
}

/// The kind of resource a key names (`None`: `Managed` and `Other`).
pub fn key_kind(key: &Key) -> Option<Kind> {
    Some(match key {
        Key::Vpc => Kind::Vpc,
        Key::Igw => Kind::Igw,
        Key::Subnet { .. } => Kind::Subnet,
        Key::Eip(_) => Kind::Eip,
        Key::Nat(_) => Kind::Nat,
        Key::PublicRoutes | Key::PrivateRoutes(_) => Kind::Rtb,
        Key::Group(_) => Kind::Group,
        Key::Rules(_) => Kind::Rules,
        Key::Iam(_) => Kind::Iam,
        Key::Kms => Kind::Kms,
        Key::Param(_) => Kind::Param,
        Key::Lb => Kind::Lb,
        Key::Tg => Kind::Tg,
        Key::Listener => Kind::Listener,
        Key::Targets => Kind::Targets,
        Key::Zone => Kind::Zone,
        Key::Record { .. } => Kind::Record,
        Key::Instance(_) => Kind::Instance,
        Key::Volume(_) => Kind::Volume,
        Key::Lt => Kind::Lt,
        Key::Asg => Kind::Asg,
        Key::Managed(_) | Key::Other(_) => return None,
    })
}

/// Whether `f` is of the kind its key names (any kind, for keys that name none).
pub fn of_kind(key: &Key, f: &Found) -> bool {
    key_kind(key).is_none_or(|k| k == f.kind())
}

/// The change one node needs, if any.
pub fn diff(v: &View, node: &Node) -> Option<Action> {
    use Desired as D;
    let found = v.state.found.get(&node.key);
    fn typed<T: Typed>(found: Option<&Found>) -> Option<(&str, &T)> {
        found.and_then(|f| Some((f.id.as_str(), f.get::<T>()?)))
    }
    let simple = |found: Option<&Found>| found.is_none().then_some(Action::Create);
    match &node.want {
        D::Vpc(w) => vpc::diff(w, typed(found)),
        D::Igw => igw::diff(v, typed(found)),
        D::Subnet(w) => subnet::diff(v, w, typed(found)),
        D::Eip | D::Listener | D::Zone => simple(found),
        D::Tg => lb::diff_tg(typed(found)),
        D::Group(_) => simple(found),
        D::Nat(_) => nat::diff(typed(found)),
        D::Rtb(w) => rtb::diff(v, w, typed(found)),
        D::Rules(role) => sg::diff_rules(v, *role),
        D::Iam(w) => iam::diff(v, w, typed(found)),
        D::Kms(w) => kms::diff(v, w, typed(found)),
        D::Param(w) => ssm::diff(v, &node.key, w, typed(found)),
        D::Lb(_) => lb::diff(v, typed(found)),
        D::Targets(w) => lb::diff_targets(v, w, typed(found)),
        D::Record(_) => dns::diff(v, typed(found)),
        D::Instance(w) => instance::diff(v, &node.key, w, typed(found)),
        D::Volume(w) => volume::diff(v, w, typed(found)),
        D::Lt => lt::diff(v, &node.key, typed(found)),
        D::Asg(w) => asg::diff(v, w, typed(found)),
    }
}

/// What a plan entry shows beyond its reasons, Terraform-style: for a
/// create, the attributes that matter; for an update, `field: old → new`
/// where kaws knows both.
pub fn details(v: &View, node: &Node, action: &Action) -> Vec<String> {
    use Desired as D;
    match action {
        Action::Create | Action::Replace { .. } => {
            let s = v.state;
            match &node.want {
                D::Vpc(w) => vpc::attributes(w),
                D::Igw => vec![kv("attached to", s.refer(&Key::Vpc))],
                D::Subnet(w) => subnet::attributes(v, w),
                D::Eip => vec![kv("domain", "vpc".into())],
                D::Nat(w) => nat::attributes(v, w),
                D::Rtb(w) => rtb::attributes(v, w),
                D::Group(role) => sg::attributes(v, *role),
                D::Iam(w) => iam::attributes(v, w),
                D::Kms(w) => kms::attributes(v, w),
                D::Param(w) => ssm::attributes(v, w),
                D::Instance(w) => instance::attributes(v, w),
                D::Volume(w) => volume::attributes(v, w),
                D::Lt => lt::attributes(v),
                D::Asg(w) => asg::attributes(v, w),
                D::Lb(w) => lb::attributes(v, w),
                D::Tg => lb::tg_attributes(v),
                D::Listener => lb::listener_attributes(v),
                D::Zone => dns::zone_attributes(v),
                D::Record(_) => dns::attributes(v),
                D::Rules(_) | D::Targets(_) => Vec::new(),
            }
        }
        Action::Update(fixes) => {
            let Some(found) = v.state.found.get(&node.key) else { return Vec::new() };
            fixes
                .iter()
                .filter_map(|fix| match (&node.want, fix) {
                    (_, Fix::VpcDns) => arrow("dns support and hostnames", "off", "on"),
                    (D::Asg(w), Fix::Size) => asg::change(v, w, found.get()?),
                    (D::Lt, Fix::Version) => lt::change(v, &node.key, found.get()?),
                    (D::Param(_), Fix::Value) => ssm::change(v, &node.key, found.get()?),
                    (D::Rtb(_), Fix::Route { dest, target }) => rtb::change(v, found.get()?, dest, target),
                    (D::Lb(_), Fix::SecurityGroups) => lb::change(v, found.get()?),
                    (D::Tg, Fix::HealthCheck) => lb::tg_change(found.get()?),
                    (D::Record(_), Fix::Alias) => dns::change(v, found.get()?),
                    (D::Iam(w), Fix::Policy) => iam::change(v, w),
                    _ => None,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// One attribute line of a plan entry.
pub fn kv(k: &str, v: String) -> String {
    format!("{k:<14} = {v}")
}

/// One `field: old → new` line.
pub fn arrow(field: &str, old: &str, new: &str) -> Option<String> {
    Some(format!("{field}: {old} → {new}"))
}

/// Creates a node's resource.
pub async fn create(cx: &Ctx<'_>, node: &Node, st: &State) -> Result<Found> {
    use Desired as D;
    match &node.want {
        D::Vpc(w) => vpc::create(cx, node, w).await,
        D::Igw => igw::create(cx, node, st).await,
        D::Subnet(w) => subnet::create(cx, node, w, st).await,
        D::Eip => eip::create(cx, node).await,
        D::Nat(w) => nat::create(cx, node, w, st).await,
        D::Rtb(w) => rtb::create(cx, node, w, st).await,
        D::Group(role) => sg::create(cx, node, *role, st).await,
        D::Iam(w) => iam::create(cx, node, w).await,
        D::Kms(w) => kms::create(cx, node, w, st).await,
        D::Param(w) => ssm::create(cx, node, w, st).await,
        D::Instance(w) => instance::create(cx, node, w, st).await,
        D::Volume(w) => volume::create(cx, node, w, st).await,
        D::Lt => lt::create(cx, node, st).await,
        D::Asg(w) => asg::create(cx, node, w, st).await,
        D::Lb(w) => lb::create(cx, node, w, st).await,
        D::Tg => lb::create_tg(cx, node, st).await,
        D::Listener => lb::create_listener(cx, node, st).await,
        D::Zone => dns::create_zone(cx, node, st).await,
        D::Record(w) => dns::create(cx, node, w, st).await,
        D::Rules(_) | D::Targets(_) => Err(anyhow!("internal: {} is never created, only fixed", node.key)),
    }
}

/// Applies `fixes` to a node's resource; returns its state after them.
pub async fn fix(cx: &Ctx<'_>, node: &Node, fixes: &[Fix], st: &State) -> Result<Option<Found>> {
    use Desired as D;
    let found = st.found.get(&node.key).cloned();
    let mine = || found.clone().ok_or_else(|| anyhow!("internal: {} has fixes but was not found", node.key));
    match &node.want {
        D::Rules(role) => sg::fix_rules(cx, *role, fixes, st).await.map(|()| None),
        D::Targets(_) => lb::fix_targets(cx, fixes, st, found).await.map(Some),
        D::Vpc(_) => vpc::fix(cx, fixes, mine()?).await.map(Some),
        D::Igw => igw::fix(cx, fixes, st, mine()?).await.map(Some),
        D::Subnet(w) => subnet::fix(cx, w, fixes, mine()?).await.map(Some),
        D::Rtb(_) => rtb::fix(cx, fixes, st, mine()?).await.map(Some),
        D::Iam(w) => iam::fix(cx, node, w, fixes, mine()?).await.map(Some),
        D::Kms(w) => kms::fix(cx, w, fixes, st, mine()?).await.map(Some),
        D::Param(w) => ssm::fix(cx, node, w, fixes, st, mine()?).await.map(Some),
        D::Instance(w) => instance::fix(cx, w, fixes, st, mine()?).await.map(Some),
        D::Lt => lt::fix(cx, node, fixes, st, mine()?).await.map(Some),
        D::Asg(w) => asg::fix(cx, w, fixes, st, mine()?).await.map(Some),
        D::Lb(_) => lb::fix(cx, fixes, st, mine()?).await.map(Some),
        D::Record(w) => dns::fix(cx, w, fixes, st, mine()?).await.map(Some),
        D::Tg => lb::fix_tg(cx, fixes, mine()?).await.map(Some),
        D::Eip | D::Listener | D::Zone | D::Group(_) | D::Nat(_) | D::Volume(_) => {
            Err(anyhow!("internal: {} has no fixes ({fixes:?})", node.key))
        }
    }
}

/// Deletes one resource (and waits until it is gone where later deletes
/// depend on that). `force`: also delete what kaws did not make that stands
/// in the way (others' records in the cluster's private zone).
pub async fn delete(aws: &Aws, key: &Key, f: &Found, force: bool) -> Result<()> {
    let (id, what) = (f.id.as_str(), format!("{key} ({})", f.id));
    match &f.is {
        Actual::Vpc(_) => vpc::delete(aws, &what, id).await,
        Actual::Igw(x) => igw::delete(aws, &what, id, x).await,
        Actual::Subnet(x) => subnet::delete(aws, &what, id, x).await,
        Actual::Eip(x) => eip::delete(aws, &what, id, x).await,
        Actual::Nat(_) => nat::delete(aws, &what, id).await,
        Actual::Rtb(x) => rtb::delete(aws, &what, id, x).await,
        Actual::Group(_) => sg::delete(aws, &what, id).await,
        Actual::Iam(x) => iam::delete(aws, &what, id, x).await,
        Actual::Kms(x) => kms::delete(aws, &what, id, x).await,
        Actual::Param(_) => ssm::delete(aws, &what, id).await,
        Actual::Lb(_) => lb::delete(aws, &what, id).await,
        Actual::Tg(_) => lb::delete_tg(aws, &what, id).await,
        Actual::Listener(_) => lb::delete_listener(aws, &what, id).await,
        // Registrations go with their target group.
        Actual::Targets(_) => Ok(()),
        Actual::Zone(x) => dns::delete_zone(aws, &what, id, x, force).await,
        Actual::Record(x) => dns::delete(aws, &what, id, x).await,
        Actual::Instance(_) => instance::delete(aws, &what, id).await,
        Actual::Volume(_) => volume::delete(aws, &what, id).await,
        Actual::Lt(_) => lt::delete(aws, &what, id).await,
        Actual::Asg(_) => asg::delete(aws, &what, id).await,
        Actual::KeyPair(_) => keypair::delete(aws, &what, id).await,
    }
}

/// The kinds found on another kind's record (target registrations, on
/// their target group's), never on their own.
pub fn derived(kind: Kind) -> bool {
    kind == Kind::Targets
}

/// The set of keys of a graph.
pub fn keys(graph: &[Node]) -> BTreeSet<&Key> {
    graph.iter().map(|n| &n.key).collect()
}
