//! DNS: the VPC's private hosted zone `CLUSTER.DOMAIN`, where instances
//! find the API, and `api.CLUSTER.DOMAIN` as an alias of the load balancer
//! in it and, if the spec names one, in a public zone. Beside each A
//! record, a TXT marker says kaws made it: a public record without it is
//! someone else's, never overwritten or deleted.

use anyhow::{Context as _, Result};
use aws_sdk_route53::types::{self as r53t, ResourceRecordSet, RrType};

use super::ctx::{del, tag, Ctx};
use super::{arrow, kv, update, Action, Fix, State, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::naming::{self, api_record, owner_marker, zone_name, TAG_CLUSTER, TAG_KEY};
use crate::aws::{Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub public: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ZoneFound {
    /// Records in it that kaws did not make: destroy names them.
    pub foreign_records: Vec<ResourceRecordSet>,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The alias target's DNS name, lower case, as kaws compares it.
    pub target: Option<String>,
    /// The A record has no ownership marker (a public zone only).
    pub foreign: bool,
    /// The record sets as found: the A record and its marker.
    pub records: Vec<ResourceRecordSet>,
}

fn is_marker(r: &ResourceRecordSet, spec: &ClusterSpec) -> bool {
    r.resource_records().iter().any(|v| v.value() == owner_marker(spec))
}

/// Records of the private zone kaws made: the zone's own SOA and NS, the
/// API's A record and its marker.
fn kaws_made(r: &ResourceRecordSet, spec: &ClusterSpec) -> bool {
    let at_api = r.name() == api_record(spec);
    (r.name() == zone_name(spec) && matches!(r.r#type(), RrType::Soa | RrType::Ns))
        || (at_api && r.r#type() == &RrType::A && r.alias_target().is_some())
        || (at_api && r.r#type() == &RrType::Txt && r.resource_records().len() == 1 && is_marker(r, spec))
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let c = &aws.r53;
    let zones = c.list_hosted_zones_by_name().dns_name(zone_name(spec)).send().await.call("ListHostedZonesByName")?;
    let mut out = Vec::new();
    let candidates: Vec<String> = zones
        .hosted_zones()
        .iter()
        .filter(|z| z.name() == zone_name(spec) && z.config().is_some_and(|c| c.private_zone()))
        .map(|z| z.id().trim_start_matches("/hostedzone/").to_owned())
        .collect();
    let mut private = None;
    if !candidates.is_empty() {
        let tags = c
            .list_tags_for_resources()
            .resource_type(r53t::TagResourceType::Hostedzone)
            .set_resource_ids(Some(candidates))
            .send()
            .await
            .call("ListTagsForResources")?;
        for set in tags.resource_tag_sets() {
            let t = || set.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
            // Zones are global: another region's cluster of this name has its own.
            if tag(t(), TAG_CLUSTER).as_deref() == Some(spec.name.as_str())
                && tag(t(), naming::TAG_REGION).as_deref() == Some(spec.region.as_str())
            {
                let id = set.resource_id().unwrap_or_default().to_owned();
                private.get_or_insert(id.clone());
                out.push((Key::from_tag(tag(t(), TAG_KEY).as_deref()), super::Found::new(id, ZoneFound::default())));
            }
        }
    }
    // The private zone is kaws' own: records in it that kaws did not make
    // are kept on the zone's record, so that destroy can say what blocks.
    if let Some(z) = &private {
        let mut foreign = Vec::new();
        let mut next: Option<(String, RrType, Option<String>)> = None;
        // Pages follow the last record's name, type and identifier.
        for _ in 0..1000 {
            let mut call = c.list_resource_record_sets().hosted_zone_id(z).max_items(300);
            if let Some((name, kind, id)) = next.take() {
                call = call.start_record_name(name).start_record_type(kind).set_start_record_identifier(id);
            }
            let page = call.send().await.call("ListResourceRecordSets")?;
            foreign.extend(page.resource_record_sets().iter().filter(|r| !kaws_made(r, spec)).cloned());
            if !page.is_truncated() {
                break;
            }
            next = page
                .next_record_name()
                .zip(page.next_record_type())
                .map(|(n, t)| (n.to_owned(), t.clone(), page.next_record_identifier().map(String::from)));
            if next.is_none() {
                break;
            }
        }
        if let Some((_, f)) = out.iter_mut().find(|(_, f)| &f.id == z) {
            f.is = ZoneFound { foreign_records: foreign }.into();
        }
    }
    let mut records = Vec::new();
    if let Some(z) = private {
        records.push((false, z));
    }
    if let Some(z) = &spec.aws.hosted_zone {
        records.push((true, z.clone()));
    }
    for (public, zone) in records {
        let sets = c
            .list_resource_record_sets()
            .hosted_zone_id(&zone)
            .start_record_name(api_record(spec))
            .start_record_type(RrType::A)
            .max_items(20)
            .send()
            .await
            .call("ListResourceRecordSets")?;
        let at_name: Vec<_> = sets.resource_record_sets().iter().filter(|r| r.name() == api_record(spec)).collect();
        let Some(a) = at_name.iter().find(|r| r.r#type() == &RrType::A) else { continue };
        let marker = at_name.iter().find(|r| r.r#type() == &RrType::Txt && is_marker(r, spec));
        let target = a
            .alias_target()
            .map(|a| a.dns_name().trim_end_matches('.').trim_start_matches("dualstack.").to_lowercase());
        let found = Found {
            target,
            // In a public zone, only a record with kaws' ownership marker is kaws'.
            foreign: public && marker.is_none(),
            records: std::iter::once(*a).chain(marker.copied()).cloned().collect(),
        };
        out.push((Key::Record { public }, super::Found::new(zone, found)));
    }
    Ok(out)
}

/// The load balancer's DNS name and zone, once it exists.
fn load_balancer(st: &State) -> Option<(String, String)> {
    st.get::<super::lb::Found>(&Key::Lb).and_then(|(_, l)| l.dns.clone())
}

pub fn diff(v: &View, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    if f.foreign {
        return Some(Action::Blocked(format!(
            "{} already has an A record that kaws did not make (no ownership marker); kaws does not overwrite it: \
             delete it, or drop hosted-zone from the spec",
            api_record(v.spec)
        )));
    }
    let lb = load_balancer(v.state).map(|(d, _)| d.to_lowercase());
    update(if lb.is_none() || f.target != lb { vec![Fix::Alias] } else { vec![] })
}

pub fn zone_attributes(v: &View) -> Vec<String> {
    vec![kv("name", zone_name(v.spec)), kv("vpc", v.state.refer(&Key::Vpc))]
}

pub fn attributes(v: &View) -> Vec<String> {
    vec![kv("name", api_record(v.spec)), kv("alias of", v.state.refer(&Key::Lb))]
}

pub fn change(v: &View, f: &Found) -> Option<String> {
    let lb = load_balancer(v.state).map_or("?".into(), |(d, _)| d.to_lowercase());
    arrow("alias of", f.target.as_deref().unwrap_or("none"), &lb)
}

pub async fn create_zone(cx: &Ctx<'_>, node: &Node, st: &State) -> Result<super::Found> {
    let (spec, r53, vpc) = (cx.spec, &cx.aws.r53, st.need(&Key::Vpc)?);
    let region = r53t::VpcRegion::from(spec.region.as_str());
    // A zone of this name on this VPC is the cluster's: made by a run
    // killed before it could tag it. It is adopted (tagged).
    let zones = r53
        .list_hosted_zones_by_vpc()
        .vpc_id(&vpc)
        .vpc_region(region.clone())
        .send()
        .await
        .call("ListHostedZonesByVPC")?;
    let name = zone_name(spec);
    let adopted = zones
        .hosted_zone_summaries()
        .iter()
        .find(|z| z.name() == name)
        .map(|z| z.hosted_zone_id().trim_start_matches("/hostedzone/").to_owned());
    let id = match adopted {
        Some(id) => id,
        None => {
            // A caller reference is never reused (Route 53 refuses a second
            // zone with one), so it carries the time of the call.
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let create = r53
                .create_hosted_zone()
                .name(&name)
                .caller_reference(format!("kaws-{}-{vpc}-{nanos}", spec.name))
                .vpc(r53t::Vpc::builder().vpc_id(&vpc).vpc_region(region).build())
                .hosted_zone_config(
                    r53t::HostedZoneConfig::builder().private_zone(true).comment(format!("kaws {}", spec.name)).build(),
                );
            let out = cx.named(Svc::Other, "CreateHostedZone", &[&vpc], || create.clone().send()).await?;
            out.hosted_zone().context("no zone")?.id().trim_start_matches("/hostedzone/").to_owned()
        }
    };
    // Adding tags is idempotent: a killed run's zone gets them now.
    let tags: Vec<r53t::Tag> =
        cx.tags(node).into_iter().map(|(k, v)| r53t::Tag::builder().key(k).value(v).build()).collect();
    r53.change_tags_for_resource()
        .resource_type(r53t::TagResourceType::Hostedzone)
        .resource_id(&id)
        .set_add_tags(Some(tags))
        .send()
        .await
        .call("ChangeTagsForResource")?;
    Ok(super::Found::new(id, ZoneFound::default()))
}

pub async fn create(cx: &Ctx<'_>, _: &Node, want: &Want, st: &State) -> Result<super::Found> {
    fix(cx, want, &[Fix::Alias], st, super::Found::new("", Found::default())).await
}

/// Points the record at the load balancer, with its marker in the same batch.
pub async fn fix(cx: &Ctx<'_>, want: &Want, fixes: &[Fix], st: &State, found: super::Found) -> Result<super::Found> {
    if !fixes.contains(&Fix::Alias) {
        return Ok(found);
    }
    let (spec, r53) = (cx.spec, &cx.aws.r53);
    let lb = load_balancer(st).context("the load balancer's DNS name is unknown")?;
    let zone = if want.public { spec.aws.hosted_zone.clone().context("no hosted zone")? } else { st.need(&Key::Zone)? };
    let record = ResourceRecordSet::builder()
        .name(api_record(spec))
        .r#type(RrType::A)
        .alias_target(
            r53t::AliasTarget::builder().dns_name(&lb.0).hosted_zone_id(&lb.1).evaluate_target_health(false).build()?,
        )
        .build()?;
    // With it, in the same batch, the marker that says kaws made it, added
    // to any TXT values others keep at that name.
    let txt = r53
        .list_resource_record_sets()
        .hosted_zone_id(&zone)
        .start_record_name(api_record(spec))
        .start_record_type(RrType::Txt)
        .max_items(1)
        .send()
        .await
        .call("ListResourceRecordSets")?;
    let existing =
        txt.resource_record_sets().first().filter(|r| r.name() == api_record(spec) && r.r#type() == &RrType::Txt);
    let mut values: Vec<String> =
        existing.map(|r| r.resource_records().iter().map(|v| v.value().to_owned()).collect()).unwrap_or_default();
    if !values.contains(&owner_marker(spec)) {
        values.push(owner_marker(spec));
    }
    let mut marker = ResourceRecordSet::builder()
        .name(api_record(spec))
        .r#type(RrType::Txt)
        .ttl(existing.and_then(|r| r.ttl()).unwrap_or(300));
    for v in values {
        marker = marker.resource_records(r53t::ResourceRecord::builder().value(v).build()?);
    }
    let marker = marker.build()?;
    // The private zone is kaws' own, and so is a public record found with
    // its marker: upserted. A new public record is created, and Route 53
    // refuses if someone made one meanwhile.
    let had = found.get::<Found>().is_some_and(|f| !f.records.is_empty());
    let action = if want.public && !had { r53t::ChangeAction::Create } else { r53t::ChangeAction::Upsert };
    let batch = r53t::ChangeBatch::builder()
        .changes(r53t::Change::builder().action(action).resource_record_set(record.clone()).build()?)
        .changes(
            r53t::Change::builder().action(r53t::ChangeAction::Upsert).resource_record_set(marker.clone()).build()?,
        )
        .build()?;
    r53.change_resource_record_sets()
        .hosted_zone_id(&zone)
        .change_batch(batch)
        .send()
        .await
        .call("ChangeResourceRecordSets")?;
    let f = Found { target: Some(lb.0.to_lowercase()), foreign: false, records: vec![record, marker] };
    Ok(super::Found::new(zone, f))
}

/// Deletes record sets of zone `zone`, in one batch.
async fn delete_records(aws: &Aws, zone: &str, records: &[ResourceRecordSet], what: &str) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut batch = r53t::ChangeBatch::builder();
    for r in records {
        batch = batch.changes(
            r53t::Change::builder().action(r53t::ChangeAction::Delete).resource_record_set(r.clone()).build()?,
        );
    }
    let batch = batch.build()?;
    del(aws, Svc::Other, "ChangeResourceRecordSets", what, Retry::NONE, || {
        aws.r53.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch.clone()).send()
    })
    .await
}

/// Records kaws did not make are named, and deleted only when asked (`force`).
pub async fn delete_zone(aws: &Aws, what: &str, id: &str, f: &ZoneFound, force: bool) -> Result<()> {
    if !f.foreign_records.is_empty() {
        let list: Vec<String> =
            f.foreign_records.iter().map(|r| format!("{} {}", r.name(), r.r#type().as_str())).collect();
        if !force {
            return Err(crate::error::failed(format!("{what} holds records kaws did not make: {}", list.join(", ")))
                .hint("delete them, or run `kaws cluster destroy --force` to delete them with the zone")
                .into());
        }
        delete_records(aws, id, &f.foreign_records, what).await?;
    }
    del(aws, Svc::Other, "DeleteHostedZone", what, Retry::NONE, || aws.r53.delete_hosted_zone().id(id).send()).await
}

/// The API's record and its marker, exactly as found; never a record kaws
/// did not make. Others' TXT values beside the marker stay.
pub async fn delete(aws: &Aws, what: &str, zone: &str, f: &Found) -> Result<()> {
    if f.foreign {
        return Ok(());
    }
    let is_marker = |v: &r53t::ResourceRecord| v.value().starts_with("\"kaws-owner=");
    let (shared, alone): (Vec<_>, Vec<_>) = f
        .records
        .iter()
        .cloned()
        .partition(|r| r.r#type() == &RrType::Txt && r.resource_records().iter().any(|v| !is_marker(v)));
    for r in shared {
        let kept: Vec<r53t::ResourceRecord> = r.resource_records().iter().filter(|v| !is_marker(v)).cloned().collect();
        let set = ResourceRecordSet::builder()
            .name(r.name())
            .r#type(RrType::Txt)
            .set_ttl(r.ttl())
            .set_resource_records(Some(kept))
            .build()?;
        let batch = r53t::ChangeBatch::builder()
            .changes(r53t::Change::builder().action(r53t::ChangeAction::Upsert).resource_record_set(set).build()?)
            .build()?;
        del(aws, Svc::Other, "ChangeResourceRecordSets", what, Retry::NONE, || {
            aws.r53.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch.clone()).send()
        })
        .await?;
    }
    delete_records(aws, zone, &alone, what).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::{lb, Wanted};

    #[test]
    fn a_record_follows_the_load_balancer_unless_it_is_someone_elses() {
        let spec = crate::cluster::spec::tests::spec();
        let mut state = State::default();
        let lb = lb::Found { dns: Some(("API-1.elb.amazonaws.com".into(), "Z2".into())), ..lb::Found::default() };
        state.found.insert(Key::Lb, super::super::Found::new("arn:lb", lb));
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        let ok = Found { target: Some("api-1.elb.amazonaws.com".into()), ..Found::default() };
        assert!(diff(&v, Some(("Z1", &ok))).is_none());
        let stale = Found { target: Some("old.elb.amazonaws.com".into()), ..Found::default() };
        assert!(matches!(diff(&v, Some(("Z1", &stale))), Some(Action::Update(f)) if f == [Fix::Alias]));
        let theirs = Found { foreign: true, ..stale };
        assert!(matches!(diff(&v, Some(("Z1", &theirs))), Some(Action::Blocked(w)) if w.contains("ownership marker")));
    }
}
