//! Route tables: the public one (default route to the internet gateway)
//! and one per private subnet (default route to its zone's NAT gateway),
//! each associated with exactly its subnets.

use anyhow::{bail, Context as _, Result};
use aws_sdk_ec2::types::{Filter, ResourceType};

use super::ctx::{by_cluster, del, ec2_key, Age, Ctx, Probe, Replay};
use super::{arrow, kv, nat, update, Action, Fix, State, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::{aws_error, Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// The internet gateway or NAT gateway `0.0.0.0/0` goes to.
    pub default_route: Key,
    pub subnets: Vec<Key>,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    /// (association id, subnet id), the main association left out.
    pub assoc: Vec<(String, String)>,
    /// (destination, target), the local route left out.
    pub routes: Vec<(String, String)>,
}

const ANYWHERE: &str = "0.0.0.0/0";

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let out = aws.ec2.describe_route_tables().filters(by_cluster(spec)).send().await.call("DescribeRouteTables")?;
    Ok(out
        .route_tables()
        .iter()
        .map(|t| {
            let assoc = t
                .associations()
                .iter()
                .filter(|a| !a.main().unwrap_or(false))
                .filter_map(|a| Some((a.route_table_association_id()?.to_owned(), a.subnet_id()?.to_owned())))
                .collect();
            let routes = t
                .routes()
                .iter()
                .filter(|r| r.gateway_id() != Some("local"))
                .filter_map(|r| {
                    let target = r.gateway_id().or(r.nat_gateway_id()).unwrap_or("blackhole");
                    Some((r.destination_cidr_block()?.to_owned(), target.to_owned()))
                })
                .collect();
            (ec2_key(t.tags()), super::Found::new(t.route_table_id().unwrap_or_default(), Found { assoc, routes }))
        })
        .collect())
}

pub fn diff(v: &View, want: &Want, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    let mut fixes = Vec::new();
    let target = v.state.id(&want.default_route).unwrap_or("(new)");
    if !f.routes.iter().any(|(d, t)| d == ANYWHERE && t == target) {
        fixes.push(Fix::Route { dest: ANYWHERE.into(), target: want.default_route.clone() });
    }
    let ids: Vec<Option<&str>> = want.subnets.iter().map(|s| v.state.id(s)).collect();
    for (s, id) in want.subnets.iter().zip(&ids) {
        if id.is_none_or(|id| !f.assoc.iter().any(|(_, sub)| sub == id)) {
            fixes.push(Fix::Associate(s.clone()));
        }
    }
    for (association, subnet) in &f.assoc {
        if !ids.contains(&Some(subnet.as_str())) {
            fixes.push(Fix::Disassociate { association: association.clone(), subnet: subnet.clone() });
        }
    }
    update(fixes)
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    vec![kv(ANYWHERE, v.state.refer(&want.default_route)), kv("subnets", v.state.refs(&want.subnets))]
}

pub fn change(v: &View, found: &Found, dest: &str, target: &Key) -> Option<String> {
    let old = found.routes.iter().find(|(d, _)| d == dest).map_or("none", |(_, t)| t.as_str());
    arrow(dest, old, &v.state.refer(target))
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State) -> Result<super::Found> {
    let (ec2, vpc) = (&cx.aws.ec2, st.need(&Key::Vpc)?);
    let request =
        ec2.create_route_table().vpc_id(&vpc).tag_specifications(cx.ec2_tags(node, ResourceType::RouteTable, &[]));
    let id = cx
        .create_once("CreateRouteTable", |salt| {
            let call = request.clone().client_token(cx.token(node, request.as_input(), &salt));
            let vpc = &vpc;
            async move {
                let out = cx.named(Svc::Ec2, "CreateRouteTable", &[vpc], || call.clone().send()).await?;
                let id = out.route_table().and_then(|t| t.route_table_id()).context("no route table id")?.to_owned();
                cx.made(&id);
                // The answer carries no time: not found for long means a
                // replay. In a VPC this run made, no earlier table can be.
                if cx.created(vpc) {
                    return Ok(Replay::Live(id));
                }
                let probe = || async {
                    let out = ec2.describe_route_tables().route_table_ids(&id).send().await;
                    out.call("DescribeRouteTables").map(|o| Probe::from(!o.route_tables().is_empty()))
                };
                Ok(cx.confirm("route table", &id, Age::Unknown, probe).await?.map(|()| id))
            }
        })
        .await?;
    let mut fixes = vec![Fix::Route { dest: ANYWHERE.into(), target: want.default_route.clone() }];
    fixes.extend(want.subnets.iter().map(|s| Fix::Associate(s.clone())));
    fix(cx, &fixes, st, super::Found::new(id, Found::default())).await
}

/// The route and each association at once: they touch different parts.
pub async fn fix(cx: &Ctx<'_>, fixes: &[Fix], st: &State, mut found: super::Found) -> Result<super::Found> {
    let table = found.id.clone();
    let mut f = found.get::<Found>().cloned().unwrap_or_default();
    let routes = fixes.iter().filter_map(|x| match x {
        Fix::Route { dest, target } => Some(route(cx, st, &table, &f, dest, target)),
        _ => None,
    });
    let assocs = fixes.iter().filter_map(|x| match x {
        Fix::Associate(subnet) => Some(associate(cx, st, &table, subnet)),
        _ => None,
    });
    let gone = fixes.iter().filter_map(|x| match x {
        Fix::Disassociate { association, .. } => Some(async move {
            let call = cx.aws.ec2.disassociate_route_table().association_id(association);
            call.send().await.call("DisassociateRouteTable")?;
            Ok::<_, anyhow::Error>(association.clone())
        }),
        _ => None,
    });
    let (routes, added, removed) = tokio::try_join!(
        futures::future::try_join_all(routes),
        futures::future::try_join_all(assocs),
        futures::future::try_join_all(gone)
    )?;
    for (dest, target) in routes {
        f.routes.retain(|(d, _)| *d != dest);
        f.routes.push((dest, target));
    }
    f.assoc.retain(|(a, _)| !removed.contains(a));
    f.assoc.extend(added);
    found.is = f.into();
    Ok(found)
}

/// Points `dest` at `target`; returns the route as it now is.
async fn route(cx: &Ctx<'_>, st: &State, table: &str, f: &Found, dest: &str, target: &Key) -> Result<(String, String)> {
    let target_id = st.need(target)?;
    let nat = matches!(target, Key::Nat(_));
    // A killed run may have left the NAT gateway pending (one this run
    // made was waited for when it was made).
    if nat && !cx.created(&target_id) {
        if let Replay::Dead(id) = nat::available(cx, &target_id, Age::Old).await? {
            bail!("NAT gateway {id} is gone; run `kaws cluster apply` again to replace it");
        }
    }
    let ec2 = &cx.aws.ec2;
    let ids = [table, target_id.as_str()];
    macro_rules! send {
        ($call:expr, $name:literal) => {{
            let call = $call.route_table_id(table).destination_cidr_block(dest);
            let call = if nat { call.nat_gateway_id(&target_id) } else { call.gateway_id(&target_id) };
            cx.named(Svc::Ec2, $name, &ids, || call.clone().send()).await?;
        }};
    }
    if f.routes.iter().any(|(d, _)| d == dest) {
        send!(ec2.replace_route(), "ReplaceRoute");
    } else {
        send!(ec2.create_route(), "CreateRoute");
    }
    Ok((dest.to_owned(), target_id))
}

/// Associates `subnet`, moving it from another table if it is in one.
async fn associate(cx: &Ctx<'_>, st: &State, table: &str, subnet: &Key) -> Result<(String, String)> {
    let (ec2, sid) = (&cx.aws.ec2, st.need(subnet)?);
    let call = ec2.associate_route_table().route_table_id(table).subnet_id(&sid);
    let assoc = match cx.named(Svc::Ec2, "AssociateRouteTable", &[table, &sid], || call.clone().send()).await {
        Ok(o) => o.association_id().unwrap_or_default().to_owned(),
        // The subnet is in another of the cluster's tables (drift): move it.
        Err(e) if aws_error(&e).is_some_and(|a| a.code() == "Resource.AlreadyAssociated") => {
            let filter = Filter::builder().name("association.subnet-id").values(&sid).build();
            let tables = ec2.describe_route_tables().filters(filter).send().await.call("DescribeRouteTables")?;
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
                .route_table_id(table)
                .send()
                .await
                .call("ReplaceRouteTableAssociation")?;
            o.new_association_id().unwrap_or_default().to_owned()
        }
        Err(e) => return Err(e),
    };
    Ok((assoc, sid))
}

pub async fn delete(aws: &Aws, what: &str, id: &str, f: &Found) -> Result<()> {
    let ec2 = &aws.ec2;
    for (assoc, _) in &f.assoc {
        del(aws, Svc::Ec2, "DisassociateRouteTable", what, Retry::IN_USE, || {
            ec2.disassociate_route_table().association_id(assoc).send()
        })
        .await?;
    }
    del(aws, Svc::Ec2, "DeleteRouteTable", what, Retry::IN_USE, || ec2.delete_route_table().route_table_id(id).send())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::{nat, subnet, Wanted};

    #[test]
    fn routes_and_associations_are_repaired_one_by_one() {
        let spec = crate::cluster::spec::tests::spec();
        let mut state = State::default();
        let s0 = Key::Subnet { public: false, zone: 0 };
        state.found.insert(s0.clone(), super::super::Found::new("subnet-0", subnet::Found::default()));
        state.found.insert(Key::Nat(0), super::super::Found::new("nat-0", nat::Found::default()));
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        let want = Want { default_route: Key::Nat(0), subnets: vec![s0.clone()] };
        let good =
            Found { assoc: vec![("a-0".into(), "subnet-0".into())], routes: vec![(ANYWHERE.into(), "nat-0".into())] };
        assert!(diff(&v, &want, Some(("rtb", &good))).is_none());
        let drifted =
            Found { assoc: vec![("a-9".into(), "subnet-9".into())], routes: vec![(ANYWHERE.into(), "igw-1".into())] };
        let Some(Action::Update(fixes)) = diff(&v, &want, Some(("rtb", &drifted))) else { panic!() };
        assert_eq!(
            fixes,
            [
                Fix::Route { dest: ANYWHERE.into(), target: Key::Nat(0) },
                Fix::Associate(s0),
                Fix::Disassociate { association: "a-9".into(), subnet: "subnet-9".into() },
            ]
        );
    }
}
