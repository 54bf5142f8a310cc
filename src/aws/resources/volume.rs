//! Each master's etcd data volume: an encrypted gp3 EBS volume in the
//! master's zone, made before the master and attached to it once it runs
//! (see `instance`). It is not the instance's own: a replaced master gets
//! the same volume, and with it the etcd data of its member, so that it
//! rejoins under its old identity instead of starting an empty member
//! (raft refuses a member whose log went back: "tocommit out of range").
//! Destroy deletes it after the master.

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::{self as ec2t, Filter, ResourceType, VolumeState};

use super::ctx::{by_cluster, del, ec2_key, Age, Ctx, Probe};
use super::{immutable, kv, Action, State, View};
use crate::aws::key::Key;
use crate::aws::model::Node;
use crate::aws::{Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

/// The size of an etcd volume. etcd's database stays under its 8 GiB
/// quota; gp3's baseline (3,000 IOPS, 125 MB/s) does not depend on size.
pub const GIB: i32 = 20;

/// The device name it is attached as (a Nitro instance sees it as an NVMe
/// device whose serial is the volume id; the bootstrap finds it so).
pub const DEVICE: &str = "/dev/sdf";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// The index of its zone among the cluster's (its master's).
    pub zone: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    pub zone: String,
}

/// Volumes tagged as a master's etcd volume. Instances' root volumes carry
/// their instance's key (and go with it): they are not listed here.
pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let live = Filter::builder()
        .name("status")
        .set_values(Some(vec!["creating".into(), "available".into(), "in-use".into()]))
        .build();
    let pages = crate::pages!(aws.ec2.describe_volumes().filters(by_cluster(spec)).filters(live), "DescribeVolumes")?;
    Ok(pages
        .iter()
        .flat_map(|p| p.volumes())
        .filter_map(|v| {
            let key = ec2_key(v.tags());
            matches!(key, Key::Volume(_)).then(|| (key, super::Found::new(v.volume_id().unwrap_or_default(), found(v))))
        })
        .collect())
}

fn found(v: &ec2t::Volume) -> Found {
    Found { zone: v.availability_zone().unwrap_or_default().to_owned() }
}

/// A volume cannot move to another zone: a master whose zone changed is
/// blocked rather than given an empty volume.
pub fn diff(v: &View, want: &Want, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    let zone = v.state.zones.get(want.zone).cloned().unwrap_or_default();
    immutable("zone", &f.zone, &zone)
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    let zone = v.state.zones.get(want.zone).cloned().unwrap_or_else(|| format!("zone {}", want.zone));
    vec![kv("size", format!("{GIB} GiB gp3, encrypted")), kv("zone", zone), kv("mounted at", "/var/lib/etcd".into())]
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State) -> Result<super::Found> {
    let zone = st.zones.get(want.zone).context("the cluster's zones are not known")?.clone();
    let ec2 = &cx.aws.ec2;
    let request = ec2
        .create_volume()
        .availability_zone(&zone)
        .size(GIB)
        .volume_type(ec2t::VolumeType::Gp3)
        .encrypted(true)
        .tag_specifications(cx.ec2_tags(node, ResourceType::Volume, &[]));
    cx.create_once("CreateVolume", |salt| {
        let call = request.clone().client_token(cx.token(node, request.as_input(), &salt));
        async move {
            let started = std::time::SystemTime::now();
            let out = cx.named(Svc::Ec2, "CreateVolume", &[], || call.clone().send()).await?;
            let id = out.volume_id().context("no volume id")?.to_owned();
            cx.made(&id);
            let age = Age::of(out.create_time(), started);
            let probe = || async {
                let out = ec2.describe_volumes().volume_ids(&id).send().await.call("DescribeVolumes")?;
                let Some(v) = out.volumes().first() else { return Ok(Probe::Wait) };
                Ok(match v.state() {
                    Some(VolumeState::Available | VolumeState::InUse) => Probe::Ready(found(v)),
                    // Only a person deletes one: a replay of an earlier create.
                    Some(VolumeState::Deleting | VolumeState::Deleted) => Probe::Dead,
                    Some(VolumeState::Error) => Probe::Failed("failed (state error)".into()),
                    _ => Probe::Wait,
                })
            };
            Ok(cx.confirm("volume", &id, age, probe).await?.map(|f| super::Found::new(id, f)))
        }
    })
    .await
}

pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    // In use until its instance has terminated (destroy deletes that first).
    del(aws, Svc::Ec2, "DeleteVolume", what, Retry::IN_USE, || aws.ec2.delete_volume().volume_id(id).send()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::Wanted;

    #[test]
    fn a_volume_stays_in_its_zone() {
        let spec = crate::cluster::spec::tests::spec();
        let state = State { zones: vec!["eu-west-1a".into(), "eu-west-1b".into()], ..State::default() };
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        let want = Want { zone: 1 };
        assert!(matches!(diff(&v, &want, None), Some(Action::Create)));
        let here = Found { zone: "eu-west-1b".into() };
        assert!(diff(&v, &want, Some(("vol-1", &here))).is_none());
        let elsewhere = Found { zone: "eu-west-1a".into() };
        assert!(matches!(diff(&v, &want, Some(("vol-1", &elsewhere))), Some(Action::Blocked(w)) if w.contains("zone")));
    }
}
