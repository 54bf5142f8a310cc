//! Security groups, one per role, and their rules (found on the group,
//! diffed and fixed as a node of their own, `rules/ROLE`, which waits for
//! every group its rules name). The rules themselves are in `rules`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{bail, Context as _, Result};
use aws_sdk_ec2::types::{self as ec2t, Filter, IpPermission, ResourceType};

use super::ctx::{by_cluster, del, ec2_key, ec2_tags, tag, unless_gone, Ctx};
pub use super::rules::{Peer, Proto, Rule};
use super::{kv, rules, update, Action, Fix, State, View};
use crate::aws::key::{Key, Role};
use crate::aws::model::Node;
use crate::aws::naming::{self, TAG_CLUSTER};
use crate::aws::{aws_error, Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, Default)]
pub struct Found {
    pub ingress: BTreeSet<Rule>,
    pub egress: BTreeSet<Rule>,
}

/// Security group rules in kaws' terms; groups of the cluster become roles.
fn found_rules(perms: &[IpPermission], groups: &HashMap<String, Role>) -> BTreeSet<Rule> {
    let mut out = BTreeSet::new();
    for p in perms {
        let proto = Proto::from_aws(p.ip_protocol().unwrap_or("-1"));
        let rule = |peer| Rule::new(proto.clone(), p.from_port(), p.to_port(), peer);
        for r in p.ip_ranges() {
            let cidr = r.cidr_ip().unwrap_or_default();
            out.insert(rule(cidr.parse().map(Peer::Cidr).unwrap_or_else(|_| Peer::Foreign(cidr.to_owned()))));
        }
        for r in p.ipv6_ranges() {
            out.insert(rule(Peer::Foreign(r.cidr_ipv6().unwrap_or_default().to_owned())));
        }
        for r in p.prefix_list_ids() {
            out.insert(rule(Peer::Foreign(r.prefix_list_id().unwrap_or_default().to_owned())));
        }
        for g in p.user_id_group_pairs() {
            let id = g.group_id().unwrap_or_default();
            out.insert(rule(groups.get(id).map_or_else(|| Peer::Foreign(id.to_owned()), |r| Peer::Group(*r))));
        }
    }
    out
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let out =
        aws.ec2.describe_security_groups().filters(by_cluster(spec)).send().await.call("DescribeSecurityGroups")?;
    let groups: HashMap<String, Role> = out
        .security_groups()
        .iter()
        .filter_map(|g| Some((g.group_id()?.to_owned(), Role::parse(&tag(ec2_tags(g.tags()), naming::TAG_ROLE)?)?)))
        .collect();
    Ok(out
        .security_groups()
        .iter()
        .map(|g| {
            let found = Found {
                ingress: found_rules(g.ip_permissions(), &groups),
                egress: found_rules(g.ip_permissions_egress(), &groups),
            };
            (ec2_key(g.tags()), super::Found::new(g.group_id().unwrap_or_default(), found))
        })
        .collect())
}

/// The group's name in its VPC.
fn name(spec: &ClusterSpec, role: Role) -> String {
    format!("kaws-{}-{}", spec.name, role.as_str())
}

pub fn attributes(v: &View, role: Role) -> Vec<String> {
    vec![
        kv("name", name(v.spec, role)),
        kv("vpc", v.state.refer(&Key::Vpc)),
        kv("rules", format!("{} (no rule until then)", Key::Rules(role))),
    ]
}

/// The rule changes a role's group needs (every rule, while it is missing).
pub fn diff_rules(v: &View, role: Role) -> Option<Action> {
    let empty = Found::default();
    let found = v.state.get::<Found>(&Key::Group(role)).map_or(&empty, |(_, f)| f);
    let nat = v.state.nat_ips(v.spec);
    let mut fixes = Vec::new();
    for (egress, want, have) in
        [(false, rules::ingress(v.spec, role, &nat), &found.ingress), (true, rules::egress(role), &found.egress)]
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
    update(fixes)
}

pub async fn create(cx: &Ctx<'_>, node: &Node, role: Role, st: &State) -> Result<super::Found> {
    let (vpc, name) = (st.need(&Key::Vpc)?, name(cx.spec, role));
    let call = cx
        .aws
        .ec2
        .create_security_group()
        .group_name(&name)
        .description(format!("kaws {} {}", cx.spec.name, role.as_str()))
        .vpc_id(&vpc)
        .tag_specifications(cx.ec2_tags(node, ResourceType::SecurityGroup, &[]));
    let id = match cx.named(Svc::Ec2, "CreateSecurityGroup", &[&vpc], || call.clone().send()).await {
        Ok(out) => out.group_id().context("no group id")?.to_owned(),
        // Made by a killed run, and not yet visible to discovery (EC2 is
        // eventually consistent): the same name in the VPC.
        Err(e) if aws_error(&e).is_some_and(|a| a.code() == "InvalidGroup.Duplicate") => {
            own_group(cx, &vpc, &name).await?
        }
        Err(e) => return Err(e),
    };
    cx.made(&id);
    // A new group allows all egress; its rules task revokes that.
    let mut found = Found::default();
    found.egress.insert(Rule::new(Proto::All, None, None, Peer::Cidr(rules::ANYWHERE)));
    Ok(super::Found::new(id, found))
}

/// The group `name` in `vpc`, if it carries this cluster's tag.
async fn own_group(cx: &Ctx<'_>, vpc: &str, name: &str) -> Result<String> {
    let by = |k: &str, v: &str| Filter::builder().name(k).values(v).build();
    let call = cx.aws.ec2.describe_security_groups().filters(by("vpc-id", vpc)).filters(by("group-name", name));
    let out = call.send().await.call("DescribeSecurityGroups")?;
    let g = out.security_groups().first().with_context(|| format!("group {name} exists but was not found"))?;
    if tag(ec2_tags(g.tags()), TAG_CLUSTER).as_deref() != Some(cx.spec.name.as_str()) {
        bail!("a security group named {name} exists in the VPC without this cluster's tag; delete or rename it");
    }
    Ok(g.group_id().unwrap_or_default().to_owned())
}

/// EC2's form of a rule set: one permission per protocol and port range,
/// listing every peer (EC2 merges them so anyway, and moto insists).
fn ip_permissions(rules: &[Rule], st: &State) -> Result<Vec<IpPermission>> {
    let mut by_ports: BTreeMap<(&str, i32, i32), Vec<&Peer>> = BTreeMap::new();
    for r in rules {
        by_ports.entry((r.proto.as_aws(), r.from, r.to)).or_default().push(&r.peer);
    }
    by_ports
        .into_iter()
        .map(|((proto, from, to), peers)| {
            // Portless protocols take -1 (EC2 ignores their ports; moto needs them).
            let mut p = IpPermission::builder().ip_protocol(proto).from_port(from).to_port(to);
            for peer in peers {
                let pair = |id: String| ec2t::UserIdGroupPair::builder().group_id(id).build();
                p = match peer {
                    Peer::Cidr(c) => p.ip_ranges(ec2t::IpRange::builder().cidr_ip(c.to_string()).build()),
                    Peer::Group(role) => p.user_id_group_pairs(pair(st.need(&Key::Group(*role))?)),
                    Peer::Foreign(f) if f.contains(':') => {
                        p.ipv6_ranges(ec2t::Ipv6Range::builder().cidr_ipv6(f.clone()).build())
                    }
                    Peer::Foreign(f) if f.starts_with("pl-") => {
                        p.prefix_list_ids(ec2t::PrefixListId::builder().prefix_list_id(f.clone()).build())
                    }
                    Peer::Foreign(f) => p.user_id_group_pairs(pair(f.clone())),
                };
            }
            Ok(p.build())
        })
        .collect()
}

/// Each rule change of a role's group, all at once.
pub async fn fix_rules(cx: &Ctx<'_>, role: Role, fixes: &[Fix], st: &State) -> Result<()> {
    let group = st.need(&Key::Group(role))?;
    let groups: Vec<String> = Role::ALL.iter().filter_map(|r| st.id(&Key::Group(*r)).map(String::from)).collect();
    let ids: Vec<&str> = groups.iter().map(String::as_str).collect();
    let ec2 = &cx.aws.ec2;
    futures::future::try_join_all(fixes.iter().map(|fix| {
        let (group, ids) = (&group, &ids);
        async move {
            let (authorize, egress, rules) = match fix {
                Fix::Authorize { egress, rules } => (true, *egress, rules),
                Fix::Revoke { egress, rules } => (false, *egress, rules),
                other => bail!("internal: {other:?} is not a rule change"),
            };
            let perms = Some(ip_permissions(rules, st)?);
            macro_rules! send {
                ($op:ident, $name:literal) => {{
                    let call = ec2.$op().group_id(group).set_ip_permissions(perms);
                    cx.named(Svc::Ec2, $name, ids, || call.clone().send()).await.map(|_| ())
                }};
            }
            match (authorize, egress) {
                (true, false) => send!(authorize_security_group_ingress, "AuthorizeSecurityGroupIngress"),
                (true, true) => send!(authorize_security_group_egress, "AuthorizeSecurityGroupEgress"),
                (false, false) => send!(revoke_security_group_ingress, "RevokeSecurityGroupIngress"),
                (false, true) => send!(revoke_security_group_egress, "RevokeSecurityGroupEgress"),
            }
        }
    }))
    .await?;
    Ok(())
}

pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    del(aws, Svc::Ec2, "DeleteSecurityGroup", what, Retry::IN_USE, || {
        aws.ec2.delete_security_group().group_id(id).send()
    })
    .await
}

/// Revokes every rule of a group: rules that name other groups keep those
/// groups alive, so destroy revokes them all before deleting any group.
pub async fn revoke_all(aws: &Aws, id: &str) -> Result<()> {
    let out = aws.ec2.describe_security_groups().group_ids(id).send().await.call("DescribeSecurityGroups");
    let Some(out) = unless_gone(out)? else { return Ok(()) };
    for g in out.security_groups() {
        if !g.ip_permissions().is_empty() {
            let call = aws.ec2.revoke_security_group_ingress().group_id(id);
            call.set_ip_permissions(Some(g.ip_permissions().to_vec()))
                .send()
                .await
                .call("RevokeSecurityGroupIngress")?;
        }
        if !g.ip_permissions_egress().is_empty() {
            let call = aws.ec2.revoke_security_group_egress().group_id(id);
            call.set_ip_permissions(Some(g.ip_permissions_egress().to_vec()))
                .send()
                .await
                .call("RevokeSecurityGroupEgress")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::Wanted;

    #[test]
    fn a_new_groups_open_egress_is_revoked_and_its_rules_added() {
        let spec = crate::cluster::spec::tests::spec();
        let mut state = State::default();
        let mut fresh = Found::default();
        fresh.egress.insert(Rule::new(Proto::All, None, None, Peer::Cidr(rules::ANYWHERE)));
        state.found.insert(Key::Group(Role::Node), super::super::Found::new("sg-1", fresh));
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        let Some(Action::Update(fixes)) = diff_rules(&v, Role::Node) else { panic!() };
        assert!(fixes.iter().any(|f| matches!(f, Fix::Revoke { egress: true, rules } if rules[0].proto == Proto::All)));
        assert!(fixes.iter().any(|f| matches!(f, Fix::Authorize { egress: false, .. })));
        // Exactly the policy: nothing to do.
        let exact = Found { ingress: rules::ingress(&spec, Role::Node, &[]), egress: rules::egress(Role::Node) };
        state.found.insert(Key::Group(Role::Node), super::super::Found::new("sg-1", exact));
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        assert!(diff_rules(&v, Role::Node).is_none());
    }
}
