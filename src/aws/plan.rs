//! The difference between the graph and what exists: per resource, create,
//! update (with each fix and its reason), delete, or blocked (a change kaws
//! will not make in place). Pure: it reads a `State`, calls nothing.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::model::{self, Kind, Node, Rule};
use super::naming;
use super::world::{Found, World};
use crate::cluster::ClusterSpec;

/// What exists now: the world as found, overlaid with what this run made.
pub struct State<'a> {
    pub world: &'a World,
    pub made: HashMap<String, Found>,
}

impl State<'_> {
    pub fn get(&self, key: &str) -> Option<&Found> {
        self.made.get(key).or_else(|| self.world.get(key))
    }

    pub fn id(&self, key: &str) -> Option<&str> {
        self.get(key).map(|f| f.id.as_str())
    }

    /// The public addresses of the cluster's NAT gateways' Elastic IPs.
    pub fn nat_ips(&self, spec: &ClusterSpec) -> Vec<Ipv4Addr> {
        let n = if spec.aws.single_nat { 1 } else { spec.azs };
        (0..n).filter_map(|z| self.get(&format!("eip/nat-{z}"))?.public_ip.as_ref()?.parse().ok()).collect()
    }
}

/// What the spec wants beyond the graph: the configuration digest of each
/// instance and of the launch template, and the source marker of each
/// SSM parameter.
#[derive(Default)]
pub struct Wanted {
    pub config: HashMap<String, String>,
    pub markers: HashMap<String, String>,
    /// The image instances and the node template run (for the plan to show).
    pub image: Option<String>,
}

/// One fix to an existing resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fix {
    VpcDns,
    Attach,
    Route { dest: String, target: String },
    Associate(String),
    Disassociate { association: String, subnet: String },
    Authorize { egress: bool, rules: Vec<Rule> },
    Reserve(Vec<String>),
    Revoke { egress: bool, rules: Vec<Rule> },
    Policy,
    KeyPolicy,
    Profile,
    ProfileRole,
    Value,
    Start,
    Register(Vec<String>),
    Deregister(Vec<String>),
    Size,
    Version,
    Alias,
    SecurityGroups,
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let list = |rules: &[Rule]| rules.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
        let dir = |egress: &bool| if *egress { "egress to" } else { "ingress from" };
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
            Fix::Register(t) => write!(f, "register {} (not registered)", t.join(", ")),
            Fix::Deregister(t) => write!(f, "deregister {} (not a master of the spec)", t.join(", ")),
            Fix::Size => write!(f, "set size and subnets (differ from the spec)"),
            Fix::Version => write!(f, "new launch template version (configuration changed)"),
            Fix::Alias => write!(f, "point the alias at the load balancer (missing or elsewhere)"),
            Fix::SecurityGroups => write!(f, "set the security group (differs)"),
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

#[derive(Clone, Debug)]
pub struct Change {
    pub key: String,
    pub action: Action,
    /// What matters of it (see `details`): attributes of a create, `old →
    /// new` of an update.
    pub details: Vec<String>,
    /// The resources it waits for (graph keys).
    pub depends_on: Vec<String>,
}

impl Change {
    pub fn new(key: impl Into<String>, action: Action) -> Change {
        Change { key: key.into(), action, details: Vec::new(), depends_on: Vec::new() }
    }

    pub fn mutates(&self) -> bool {
        !matches!(self.action, Action::Note(_))
    }
}

fn rule_fixes(spec: &ClusterSpec, role: model::Role, found: Option<&Found>, nat: &[Ipv4Addr]) -> Vec<Fix> {
    let empty = Found::default();
    let found = found.unwrap_or(&empty);
    let mut fixes = Vec::new();
    for (egress, want, have) in
        [(false, model::ingress(spec, role, nat), &found.ingress), (true, model::egress(role), &found.egress)]
    {
        let missing: Vec<Rule> = want.difference(have).cloned().collect();
        let extra: Vec<Rule> = have.difference(&want).cloned().collect();
        if !extra.is_empty() {
            fixes.push(Fix::Revoke { egress, rules: extra });
        }
        if !missing.is_empty() {
            fixes.push(Fix::Authorize { egress, rules: missing });
        }
    }
    fixes
}

/// The desired inline policy of an instance role.
pub fn policy(spec: &ClusterSpec, role_arn: &str, ssm_paths: &[String]) -> Option<serde_json::Value> {
    if ssm_paths.is_empty() {
        return None;
    }
    // arn:PARTITION:iam::ACCOUNT:role/…
    let parts: Vec<&str> = role_arn.split(':').collect();
    let (partition, account) = (parts.get(1).copied().unwrap_or("aws"), parts.get(4).copied().unwrap_or("*"));
    let region = &spec.region;
    let resources: Vec<String> =
        ssm_paths.iter().map(|p| format!("arn:{partition}:ssm:{region}:{account}:parameter{p}")).collect();
    Some(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadOwnSecrets", "Effect": "Allow", "Action": ["ssm:GetParameter"], "Resource": resources}
        ]
    }))
}

/// What the node template's latest version records as its configuration:
/// the digest of what it runs and the group it is in (a group made anew
/// must reach the template too).
pub fn template_config(config: &str, group: &str) -> String {
    format!("{config} {group}")
}

/// Whether `have` (a key id, ARN or alias as SSM reports it) is the key
/// whose ARN is `arn`. An alias is not: it can be moved to another key.
fn same_key(have: &str, arn: &str) -> bool {
    have == arn || arn.rsplit_once('/').is_some_and(|(_, id)| id == have)
}

/// The partition and account of an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:…`).
fn partition_account(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.split(':').collect();
    Some((parts.get(1)?, parts.get(4)?))
}

/// The key policy of the cluster's KMS key: the account administers it and
/// encrypts with it (PutParameter), but may not decrypt; each reader role
/// decrypts only through SSM, and only parameters under its own paths (SSM
/// binds each ciphertext to its parameter's ARN as encryption context).
/// `None` until every reader role's ARN is known.
pub fn key_policy(
    spec: &ClusterSpec,
    readers: &[(String, Vec<String>)],
    arn_of: impl Fn(&str) -> Option<String>,
) -> Option<serde_json::Value> {
    let arns: Vec<String> = readers.iter().map(|(k, _)| arn_of(k)).collect::<Option<_>>()?;
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
    for ((key, paths), arn) in readers.iter().zip(&arns) {
        let params: Vec<String> =
            paths.iter().map(|p| format!("arn:{partition}:ssm:{region}:{account}:parameter{p}")).collect();
        let sid: String = key.chars().filter(char::is_ascii_alphanumeric).collect();
        statements.push(serde_json::json!({
            "Sid": format!("{sid}DecryptsItsOwnThroughSsm"),
            "Effect": "Allow",
            "Principal": {"AWS": arn},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"kms:ViaService": format!("ssm.{region}.amazonaws.com")},
                "StringLike": {"kms:EncryptionContext:PARAMETER_ARN": params}
            }
        }));
    }
    Some(serde_json::json!({"Version": "2012-10-17", "Statement": statements}))
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

/// The change one node needs, if any.
/// The wanted reservations that no found one covers.
fn missing_reservations(wanted: &[ipnet::Ipv4Net], found: &[(String, String)]) -> Vec<String> {
    let have: Vec<ipnet::Ipv4Net> = found.iter().filter_map(|(_, c)| c.parse().ok()).collect();
    wanted.iter().filter(|w| !have.iter().any(|h| h.contains(*w))).map(|w| w.to_string()).collect()
}

pub fn diff(spec: &ClusterSpec, node: &Node, state: &State, wanted: &Wanted) -> Option<Action> {
    let found = state.get(&node.key);
    let Some(f) = found else {
        return Some(match &node.kind {
            // Rules live on their groups: with a group missing, every rule is a fix.
            Kind::Rules(role) => {
                let group = state.get(&format!("sg/{}", role.as_str()));
                let fixes = rule_fixes(spec, *role, group, &state.nat_ips(spec));
                return (!fixes.is_empty()).then_some(Action::Update(fixes));
            }
            Kind::Targets { instances } => Action::Update(vec![Fix::Register(instances.clone())]),
            _ => Action::Create,
        });
    };
    let blocked = |what: &str, have: &Option<String>, want: String| {
        (have.as_deref() != Some(want.as_str())).then(|| {
            Action::Blocked(format!(
                "its {what} is {}, the spec says {want}; kaws does not change that in place (destroy the cluster to renumber it)",
                have.as_deref().unwrap_or("unknown")
            ))
        })
    };
    let fixes: Vec<Fix> = match &node.kind {
        Kind::Vpc { cidr } => {
            if let Some(b) = blocked("CIDR", &f.cidr, cidr.to_string()) {
                return Some(b);
            }
            if f.state.as_deref() == Some("dns") {
                vec![]
            } else {
                vec![Fix::VpcDns]
            }
        }
        Kind::Subnet { cidr, zone, reserved, .. } => {
            let zone = state.world.zones.get(*zone).cloned().unwrap_or_default();
            if let Some(b) = blocked("CIDR", &f.cidr, cidr.to_string()).or_else(|| blocked("zone", &f.zone, zone)) {
                return Some(b);
            }
            let missing = missing_reservations(reserved, &f.reserved);
            if missing.is_empty() {
                vec![]
            } else {
                vec![Fix::Reserve(missing)]
            }
        }
        Kind::InternetGateway => {
            let vpc = state.id("vpc").unwrap_or_default();
            if f.links.iter().any(|v| v == vpc) {
                vec![]
            } else {
                vec![Fix::Attach]
            }
        }
        Kind::NatGateway { .. } if f.state.as_deref() == Some("failed") => {
            return Some(Action::Replace {
                found: Box::new(f.clone()),
                why: format!("{} failed ({})", f.id, f.config.as_deref().unwrap_or("no reason given")),
            });
        }
        Kind::Address | Kind::NatGateway { .. } | Kind::SecurityGroup(_) | Kind::TargetGroup | Kind::Listener => vec![],
        Kind::PrivateZone => vec![],
        Kind::RouteTable { default_route, subnets } => {
            let mut fixes = Vec::new();
            let target = state.id(default_route).unwrap_or("(new)").to_owned();
            if !f.routes.iter().any(|(d, t)| d == "0.0.0.0/0" && *t == target) {
                fixes.push(Fix::Route { dest: "0.0.0.0/0".into(), target: default_route.clone() });
            }
            let want: Vec<Option<&str>> = subnets.iter().map(|s| state.id(s)).collect();
            for (s, id) in subnets.iter().zip(&want) {
                if id.is_none_or(|id| !f.assoc.iter().any(|(_, sub)| sub == id)) {
                    fixes.push(Fix::Associate(s.clone()));
                }
            }
            for (association, subnet) in &f.assoc {
                if !want.contains(&Some(subnet.as_str())) {
                    fixes.push(Fix::Disassociate { association: association.clone(), subnet: subnet.clone() });
                }
            }
            fixes
        }
        Kind::Rules(_) => unreachable!("rules are found on their groups"),
        Kind::Iam { name, ssm_paths } => {
            let mut fixes = Vec::new();
            let want = f.config.as_deref().and_then(|arn| policy(spec, arn, ssm_paths));
            if f.config.is_none() || f.policy.as_ref().map(normalized) != want.as_ref().map(normalized) {
                fixes.push(Fix::Policy);
            }
            if !f.profile {
                fixes.push(Fix::Profile);
            }
            if !f.links.contains(name) {
                fixes.push(Fix::ProfileRole);
            }
            fixes
        }
        Kind::KmsKey { readers } => {
            if f.state.as_deref() == Some("foreign") {
                return Some(Action::Blocked(format!(
                    "{} names key {}, which is not this cluster's (its tags say otherwise); kaws does not use it",
                    f.config.as_deref().unwrap_or("the alias"),
                    f.id
                )));
            }
            let want = key_policy(spec, readers, |k| state.get(k).and_then(|r| r.config.clone()));
            if want.is_none() || f.policy.as_ref().map(normalized) != want.as_ref().map(normalized) {
                vec![Fix::KeyPolicy]
            } else {
                vec![]
            }
        }
        Kind::Parameter { .. } => {
            // Encrypted under the cluster's key as it is now (an alias can
            // move; a key made anew needs every value written again).
            let key = state.get("kms/secrets").filter(|k| k.state.as_deref() != Some(super::world::FOREIGN));
            let under_key = key.is_some_and(|k| f.links.iter().any(|have| same_key(have, &k.id)));
            if f.config.as_ref() != wanted.markers.get(&node.key) || !under_key {
                vec![Fix::Value]
            } else {
                vec![]
            }
        }
        Kind::Instance { .. } => {
            if matches!(f.state.as_deref(), Some("stopped" | "stopping")) {
                vec![Fix::Start]
            } else if f.config.as_ref() != wanted.config.get(&node.key) {
                return Some(Action::Note(format!(
                    "{} runs an older configuration (user-data, type or image); kaws does not replace a running \
                     instance: terminate it and apply again to replace it",
                    f.id
                )));
            } else {
                vec![]
            }
        }
        Kind::LaunchTemplate { .. } => {
            let want = wanted.config.get(&node.key).map(|c| template_config(c, state.id("sg/node").unwrap_or("(new)")));
            if f.config != want {
                vec![Fix::Version]
            } else {
                vec![]
            }
        }
        Kind::AutoScalingGroup { subnets, size } => {
            let n = *size as i32;
            let mut want: Vec<String> = subnets.iter().filter_map(|s| state.id(s)).map(String::from).collect();
            want.sort();
            if f.size != Some((n, n, n)) || f.links != want {
                vec![Fix::Size]
            } else {
                vec![]
            }
        }
        Kind::LoadBalancer { .. } => {
            let sg = state.id("sg/api").unwrap_or_default();
            if f.links.len() == 1 && f.links[0] == sg {
                vec![]
            } else {
                vec![Fix::SecurityGroups]
            }
        }
        Kind::Targets { instances } => {
            let have: BTreeSet<&str> = f.links.iter().map(String::as_str).collect();
            let ids: Vec<Option<&str>> = instances.iter().map(|k| state.id(k)).collect();
            let missing: Vec<String> = instances
                .iter()
                .zip(&ids)
                .filter(|(_, id)| id.is_none_or(|id| !have.contains(id)))
                .map(|(k, _)| k.clone())
                .collect();
            let extra: Vec<String> = have.iter().filter(|h| !ids.contains(&Some(**h))).map(|h| h.to_string()).collect();
            let mut fixes = Vec::new();
            if !missing.is_empty() {
                fixes.push(Fix::Register(missing));
            }
            if !extra.is_empty() {
                fixes.push(Fix::Deregister(extra));
            }
            fixes
        }
        Kind::ApiRecord { .. } if f.state.as_deref() == Some(super::world::FOREIGN) => {
            return Some(Action::Blocked(format!(
                "{} already has an A record that kaws did not make (no ownership marker); kaws does not \
                 overwrite it: delete it, or drop hosted-zone from the spec",
                naming::api_record(spec)
            )));
        }
        Kind::ApiRecord { .. } => {
            let lb = state.get("lb/api").and_then(|l| l.dns.as_ref()).map(|(d, _)| d.to_lowercase());
            if lb.is_none() || f.config != lb {
                vec![Fix::Alias]
            } else {
                vec![]
            }
        }
    };
    (!fixes.is_empty()).then_some(Action::Update(fixes))
}

/// Resources found that the graph does not want: unknown keys and duplicates.
pub fn surplus(graph: &[Node], world: &World) -> Vec<Change> {
    let keys: BTreeSet<&str> = graph.iter().map(|n| n.key.as_str()).collect();
    let mut out = Vec::new();
    for (key, found) in &world.found {
        // Listeners and target registrations are reached through their parents.
        let derived = key.starts_with("targets/");
        if key.starts_with("managed/") {
            continue;
        }
        for (i, f) in found.iter().enumerate() {
            let why = if !keys.contains(key.as_str()) {
                "not in the spec".to_owned()
            } else if i > 0 && !derived {
                format!("a duplicate of {}", found[0].id)
            } else {
                continue;
            };
            out.push(Change::new(key.clone(), Action::Delete { found: Box::new(f.clone()), why }));
        }
    }
    out
}

/// The whole plan against the world as found.
pub fn plan(spec: &ClusterSpec, graph: &[Node], world: &World, wanted: &Wanted) -> Vec<Change> {
    let state = State { world, made: HashMap::new() };
    let mut changes: Vec<Change> = graph
        .iter()
        .filter_map(|n| {
            let action = diff(spec, n, &state, wanted)?;
            let details = super::details::details(spec, n, &state, wanted, &action);
            Some(Change { key: n.key.clone(), action, details, depends_on: n.deps.clone() })
        })
        .collect();
    changes.extend(surplus(graph, world));
    changes
}

#[derive(Serialize)]
struct JsonChange<'a> {
    resource: &'a str,
    action: &'static str,
    id: Option<&'a str>,
    reasons: Vec<String>,
    details: &'a [String],
    depends_on: &'a [String],
}

fn describe(c: &Change) -> (&'static str, char, Vec<String>) {
    match &c.action {
        Action::Create => ("create", '+', vec!["not found".into()]),
        Action::Update(fixes) => ("update", '~', fixes.iter().map(|f| f.to_string()).collect()),
        Action::Delete { why, found } => ("delete", '-', vec![format!("{} is {why}", found.id)]),
        Action::Replace { why, .. } => ("replace", '±', vec![format!("{why}; it is deleted and created anew")]),
        Action::Blocked(why) => ("blocked", '!', vec![why.clone()]),
        Action::Note(why) => ("note", '#', vec![why.clone()]),
    }
}

pub fn to_json(changes: &[Change]) -> serde_json::Value {
    let rows: Vec<JsonChange> = changes
        .iter()
        .map(|c| {
            let (action, _, reasons) = describe(c);
            let id = match &c.action {
                Action::Delete { found, .. } | Action::Replace { found, .. } => Some(found.id.as_str()),
                _ => None,
            };
            JsonChange { resource: &c.key, action, id, reasons, details: &c.details, depends_on: &c.depends_on }
        })
        .collect();
    serde_json::to_value(rows).expect("plain data")
}

/// Terraform-style text; `color` for a terminal.
pub fn to_text(changes: &[Change], color: bool) -> String {
    let mut out = String::new();
    let paint = |sign: char, s: &str| {
        if !color {
            return s.to_owned();
        }
        let code = match sign {
            '+' => "32",
            '~' | '±' => "33",
            '-' | '!' => "31",
            _ => "2",
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    };
    let mut counts = [0usize; 5];
    for c in changes {
        let (action, sign, reasons) = describe(c);
        match sign {
            '+' => counts[0] += 1,
            '~' => counts[1] += 1,
            '-' => counts[2] += 1,
            '±' => {
                counts[0] += 1;
                counts[2] += 1;
            }
            '!' => counts[3] += 1,
            _ => counts[4] += 1,
        }
        out += &paint(sign, &format!("  {sign} {:<32} {action}", c.key));
        out.push('\n');
        for r in reasons {
            out += &format!("      {r}\n");
        }
        for d in &c.details {
            out += &format!("        {d}\n");
        }
    }
    out += &format!(
        "Plan: {} to create, {} to update, {} to delete, {} blocked, {} notes.\n",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    );
    out
}
