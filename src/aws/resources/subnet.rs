//! Subnets: a public and a private one per zone, their CIDR and zone fixed
//! at creation; private ones reserve the masters' fixed addresses (explicit
//! CIDR reservations) so that AWS gives them to nothing else, such as a
//! node the Auto Scaling group launches while a master is down.

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::{self as ec2t, ResourceType};
use ipnet::Ipv4Net;

use super::ctx::{by_cluster, del, ec2_key, ec2_tags, Ctx};
use super::{immutable, kv, update, Action, Fix, State, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::naming;
use crate::aws::{Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub cidr: Ipv4Net,
    /// The index of its zone among the cluster's.
    pub zone: usize,
    pub public: bool,
    /// The masters' fixed addresses in it.
    pub reserved: Vec<Ipv4Net>,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    pub cidr: String,
    pub zone: String,
    /// Its explicit CIDR reservations: (reservation id, CIDR).
    pub reserved: Vec<(String, String)>,
    /// It carries the tags the Kubernetes cloud provider looks for.
    pub k8s_tagged: bool,
}

/// The tags the Kubernetes cloud provider finds the cluster's subnets by.
fn k8s_tags(spec: &ClusterSpec, public: bool) -> [(String, String); 2] {
    [naming::k8s_cluster_tag(spec), naming::k8s_subnet_role_tag(public)]
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let c = &aws.ec2;
    let subnets = c.describe_subnets().filters(by_cluster(spec)).send().await.call("DescribeSubnets")?;
    // Each subnet's reservations, all at once.
    let reservations = futures::future::try_join_all(subnets.subnets().iter().map(|s| async move {
        let call = c.get_subnet_cidr_reservations().subnet_id(s.subnet_id().unwrap_or_default());
        let out = match aws
            .send(Svc::Other, "GetSubnetCidrReservations", Retry::settling(true), || call.clone().send())
            .await
        {
            Ok(out) => out,
            // Deleted since it was listed.
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let explicit = out
            .subnet_ipv4_cidr_reservations()
            .iter()
            .filter(|r| r.reservation_type() == Some(&ec2t::SubnetCidrReservationType::Explicit))
            .filter_map(|r| Some((r.subnet_cidr_reservation_id()?.to_owned(), r.cidr()?.to_owned())))
            .collect::<Vec<_>>();
        Ok::<_, anyhow::Error>(Some(explicit))
    }))
    .await?;
    Ok(subnets
        .subnets()
        .iter()
        .zip(reservations)
        .filter_map(|(s, reserved)| {
            let have: Vec<(&str, &str)> = ec2_tags(s.tags()).collect();
            let public = matches!(ec2_key(s.tags()), Key::Subnet { public: true, .. });
            let found = Found {
                cidr: s.cidr_block().unwrap_or_default().to_owned(),
                zone: s.availability_zone().unwrap_or_default().to_owned(),
                reserved: reserved?,
                k8s_tagged: k8s_tags(spec, public).iter().all(|(k, v)| have.contains(&(k.as_str(), v.as_str()))),
            };
            Some((ec2_key(s.tags()), super::Found::new(s.subnet_id().unwrap_or_default(), found)))
        })
        .collect())
}

/// The wanted reservations that no found one covers.
fn missing(wanted: &[Ipv4Net], found: &[(String, String)]) -> Vec<String> {
    let have: Vec<Ipv4Net> = found.iter().filter_map(|(_, c)| c.parse().ok()).collect();
    wanted.iter().filter(|w| !have.iter().any(|h| h.contains(*w))).map(|w| w.to_string()).collect()
}

pub fn diff(v: &View, want: &Want, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    let zone = v.state.zones.get(want.zone).cloned().unwrap_or_default();
    if let Some(b) = immutable("CIDR", &f.cidr, &want.cidr.to_string()).or_else(|| immutable("zone", &f.zone, &zone)) {
        return Some(b);
    }
    let missing = missing(&want.reserved, &f.reserved);
    let mut fixes = if missing.is_empty() { vec![] } else { vec![Fix::Reserve(missing)] };
    if !f.k8s_tagged {
        fixes.push(Fix::Tags);
    }
    update(fixes)
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    let zone = v.state.zones.get(want.zone).cloned().unwrap_or_else(|| format!("zone {}", want.zone));
    let mut out = vec![kv("cidr", want.cidr.to_string()), kv("zone", zone), kv("public", want.public.to_string())];
    if !want.reserved.is_empty() {
        let list: Vec<String> = want.reserved.iter().map(|r| r.to_string()).collect();
        out.push(kv("reserved", format!("{} (the masters' addresses)", list.join(", "))));
    }
    out
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State) -> Result<super::Found> {
    let az = st.zones.get(want.zone).with_context(|| {
        format!("the region has {} availability zones; the spec wants {}", st.zones.len(), cx.spec.azs)
    })?;
    let vpc = st.need(&Key::Vpc)?;
    let call = cx
        .aws
        .ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block(want.cidr.to_string())
        .availability_zone(az)
        .tag_specifications(cx.ec2_tags(node, ResourceType::Subnet, &[naming::k8s_subnet_role_tag(want.public)]));
    let out = cx.named(Svc::Ec2, "CreateSubnet", &[&vpc], || call.clone().send()).await?;
    let id = out.subnet().and_then(|s| s.subnet_id()).context("no subnet id")?;
    cx.made(id);
    let found = Found { cidr: want.cidr.to_string(), zone: az.clone(), reserved: vec![], k8s_tagged: true };
    let found = super::Found::new(id, found);
    if want.reserved.is_empty() {
        return Ok(found);
    }
    fix(cx, want, &[Fix::Reserve(want.reserved.iter().map(|c| c.to_string()).collect())], found).await
}

pub async fn fix(cx: &Ctx<'_>, want: &Want, fixes: &[Fix], mut found: super::Found) -> Result<super::Found> {
    if fixes.contains(&Fix::Tags) {
        let tags = k8s_tags(cx.spec, want.public).map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build());
        let call = cx.aws.ec2.create_tags().resources(&found.id).set_tags(Some(tags.to_vec()));
        cx.named(Svc::Ec2, "CreateTags", &[&found.id], || call.clone().send()).await?;
        if let Some(s) = found.get_mut::<Found>() {
            s.k8s_tagged = true;
        }
    }
    for f in fixes {
        let Fix::Reserve(cidrs) = f else { continue };
        let subnet = found.id.as_str();
        let made = futures::future::try_join_all(cidrs.iter().map(|cidr| async move {
            let call = cx
                .aws
                .ec2
                .create_subnet_cidr_reservation()
                .subnet_id(subnet)
                .cidr(cidr)
                .reservation_type(ec2t::SubnetCidrReservationType::Explicit)
                .description("kaws: the masters' fixed addresses");
            let out = cx.named(Svc::Ec2, "CreateSubnetCidrReservation", &[subnet], || call.clone().send()).await?;
            let id = out.subnet_cidr_reservation().and_then(|r| r.subnet_cidr_reservation_id());
            Ok::<_, anyhow::Error>((id.unwrap_or_default().to_owned(), cidr.clone()))
        }))
        .await?;
        if let Some(s) = found.get_mut::<Found>() {
            s.reserved.extend(made);
        }
    }
    Ok(found)
}

pub async fn delete(aws: &Aws, what: &str, id: &str, f: &Found) -> Result<()> {
    let ec2 = &aws.ec2;
    // Reservations first, so that the subnet has nothing left in it.
    for (reservation, _) in &f.reserved {
        del(aws, Svc::Ec2, "DeleteSubnetCidrReservation", what, Retry::IN_USE, || {
            ec2.delete_subnet_cidr_reservation().subnet_cidr_reservation_id(reservation).send()
        })
        .await?;
    }
    del(aws, Svc::Ec2, "DeleteSubnet", what, Retry::IN_USE, || ec2.delete_subnet().subnet_id(id).send()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::Wanted;

    #[test]
    fn a_subnet_keeps_its_place_and_gets_its_reservations() {
        let spec = crate::cluster::spec::tests::spec();
        let state = State { zones: vec!["eu-west-1a".into()], ..State::default() };
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        let want = Want {
            cidr: "10.0.0.0/19".parse().unwrap(),
            zone: 0,
            public: false,
            reserved: vec!["10.0.0.10/32".parse().unwrap()],
        };
        let found = |cidr: &str, zone: &str, reserved: &[&str]| Found {
            cidr: cidr.into(),
            zone: zone.into(),
            reserved: reserved.iter().map(|c| ("r".to_owned(), c.to_string())).collect(),
            k8s_tagged: true,
        };
        assert!(matches!(diff(&v, &want, None), Some(Action::Create)));
        assert!(diff(&v, &want, Some(("s", &found("10.0.0.0/19", "eu-west-1a", &["10.0.0.8/29"])))).is_none());
        let none = found("10.0.0.0/19", "eu-west-1a", &[]);
        assert!(
            matches!(diff(&v, &want, Some(("s", &none))), Some(Action::Update(f)) if f == [Fix::Reserve(vec!["10.0.0.10/32".into()])])
        );
        let untagged = Found { k8s_tagged: false, ..found("10.0.0.0/19", "eu-west-1a", &["10.0.0.10/32"]) };
        assert!(matches!(diff(&v, &want, Some(("s", &untagged))), Some(Action::Update(f)) if f == [Fix::Tags]));
        let moved = found("10.0.0.0/19", "eu-west-1b", &["10.0.0.10/32"]);
        assert!(matches!(diff(&v, &want, Some(("s", &moved))), Some(Action::Blocked(w)) if w.contains("zone")));
        let renumbered = found("10.0.32.0/19", "eu-west-1a", &["10.0.0.10/32"]);
        assert!(matches!(diff(&v, &want, Some(("s", &renumbered))), Some(Action::Blocked(w)) if w.contains("CIDR")));
    }
}
