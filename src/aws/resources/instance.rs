//! Instances kaws launches itself: the bastion and each master (at its
//! fixed address, with its etcd volume attached once it runs). A stopped
//! one is started; one that runs an older configuration is noted, never
//! replaced while it runs. Also found here:
//! the nodes the Auto Scaling group launched (`managed/…`), which destroy
//! terminates after their group.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use aws_sdk_ec2::types::{InstanceStateName, ResourceType};

use super::ctx::{by_cluster, del, ec2_key, ec2_tags, tag, unless_gone, Age, Ctx, Probe, Replay};
use super::launch::{instance_type, Launch};
use super::{kv, update, Action, Fix, State, View};
use crate::aws::key::{Host, Key};
use crate::aws::model::Node;
use crate::aws::naming::{TAG_CONFIG, TAG_GENERATION, TAG_STAGE};
use crate::aws::{wait_for, Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub host: Host,
    pub subnet: Key,
    /// A master's fixed address; the bastion takes any (and a public one).
    pub ip: Option<Ipv4Addr>,
    /// A master's etcd volume, attached once it runs.
    pub volume: Option<Key>,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    pub state: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    /// Its `kaws:config` tag.
    pub config: Option<String>,
    /// Launched by an Auto Scaling group.
    pub managed: bool,
    /// The EBS volumes attached to it.
    pub volumes: Vec<String>,
    /// What it reports of itself (instance text: untrusted, shown escaped).
    pub stage: Option<String>,
    pub generation: Option<String>,
}

fn found(i: &aws_sdk_ec2::types::Instance) -> Found {
    Found {
        state: i.state().and_then(|s| s.name()).map_or("unknown", |n| n.as_str()).to_owned(),
        private_ip: i.private_ip_address().map(String::from),
        public_ip: i.public_ip_address().map(String::from),
        config: tag(ec2_tags(i.tags()), TAG_CONFIG),
        managed: false,
        volumes: i.block_device_mappings().iter().filter_map(|m| m.ebs()?.volume_id()).map(String::from).collect(),
        stage: tag(ec2_tags(i.tags()), TAG_STAGE),
        generation: tag(ec2_tags(i.tags()), TAG_GENERATION),
    }
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let pages = crate::pages!(aws.ec2.describe_instances().filters(by_cluster(spec)), "DescribeInstances")?;
    let mut out = Vec::new();
    for i in pages.iter().flat_map(|p| p.reservations()).flat_map(|r| r.instances()) {
        // Gone, or going: a relaunch steps over a replay of its token.
        let state = i.state().and_then(|s| s.name());
        if matches!(state, Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)) {
            continue;
        }
        let mut f = found(i);
        // Nodes belong to their Auto Scaling group, which replaces them.
        let key = match tag(ec2_tags(i.tags()), "aws:autoscaling:groupName") {
            Some(group) => {
                f.managed = true;
                Key::Managed(group)
            }
            None => ec2_key(i.tags()),
        };
        out.push((key, super::Found::new(i.instance_id().unwrap_or_default(), f)));
    }
    Ok(out)
}

pub fn diff(v: &View, key: &Key, want: &Want, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((id, f)) = found else { return Some(Action::Create) };
    if matches!(f.state.as_str(), "stopped" | "stopping") {
        return update(vec![Fix::Start]);
    }
    // Its volume, made anew or detached (a replaced master's, by AWS).
    let volume = want.volume.as_ref().map(|k| v.state.id(k));
    if volume.is_some_and(|vol| vol.is_none_or(|vol| !f.volumes.iter().any(|have| have == vol))) {
        return update(vec![Fix::AttachVolume]);
    }
    (f.config.as_ref() != v.wanted.config.get(key)).then(|| {
        Action::Note(format!(
            "{id} was launched with an older configuration (user-data, type or image); new certificates and \
             trust reach it in place (its refresh agent reads them from SSM), the rest only when it is \
             replaced: terminate it and apply again to replace it"
        ))
    })
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    vec![
        kv("type", instance_type(v.spec, want.host).to_owned()),
        kv("address", want.ip.map_or_else(|| "any".into(), |ip| ip.to_string())),
        kv("subnet", v.state.refer(&want.subnet)),
        kv("image", v.wanted.image.clone().unwrap_or_else(|| "(resolved at apply)".into())),
        kv("root volume", format!("{} GiB gp3, encrypted", v.spec.aws.root_volume_gib)),
    ]
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State) -> Result<super::Found> {
    let config = cx.config(&node.key)?.clone();
    let launch = Launch::of(cx, &node.key, want.host, st)?;
    let subnet = st.need(&want.subnet)?;
    let extra = [(TAG_CONFIG.to_owned(), config.clone())];
    let request = launch
        .run(&cx.aws.ec2, &subnet, want.ip, want.host == Host::Bastion)
        .tag_specifications(cx.ec2_tags(node, ResourceType::Instance, &extra))
        .tag_specifications(cx.ec2_tags(node, ResourceType::Volume, &[]));
    // A new instance profile takes a while to reach EC2; a master's fixed
    // address stays in use while its predecessor shuts down, which may
    // take minutes.
    let retry = Retry { long: want.ip.is_some(), ..cx.settle(&[&subnet, &launch.group]).with_iam().with_in_use() };
    let found = cx
        .create_once("RunInstances", |salt| {
            let call = request.clone().client_token(cx.token(node, request.as_input(), &salt));
            async move {
                let started = std::time::SystemTime::now();
                let out = cx.aws.send(Svc::Run, "RunInstances", retry, || call.clone().send()).await?;
                let instance = out.instances().first().context("no instance")?;
                let id = instance.instance_id().context("no instance id")?.to_owned();
                cx.made(&id);
                // Targets can be registered only once the instance runs.
                running(cx, &id, Age::of(instance.launch_time(), started)).await
            }
        })
        .await?;
    let mut f = found;
    if let Some(i) = f.get_mut::<Found>() {
        i.config = Some(config);
    }
    match &want.volume {
        Some(_) => fix(cx, want, &[Fix::AttachVolume], st, f).await,
        None => Ok(f),
    }
}

/// Attaches the master's volume. A volume AWS is still detaching from a
/// replaced master (shutting down) is in use until it has let go.
async fn attach(cx: &Ctx<'_>, instance: &str, volume: &str) -> Result<()> {
    // Attached already, by a run that was killed before it was recorded.
    if attached_to(cx, volume).await?.as_deref() == Some(instance) {
        return Ok(());
    }
    let call = cx.aws.ec2.attach_volume().instance_id(instance).volume_id(volume).device(super::volume::DEVICE);
    // VolumeInUse while the predecessor shuts down is waited out, for long.
    let retry = Retry { long: true, ..cx.settle(&[instance, volume]).with_in_use() };
    cx.aws.send(Svc::Ec2, "AttachVolume", retry, || call.clone().send()).await?;
    Ok(())
}

/// The instance a volume is attached to.
async fn attached_to(cx: &Ctx<'_>, volume: &str) -> Result<Option<String>> {
    let out = cx.aws.ec2.describe_volumes().volume_ids(volume).send().await.call("DescribeVolumes")?;
    let v = out.volumes().first();
    Ok(v.and_then(|v| v.attachments().first()).and_then(|a| a.instance_id()).map(String::from))
}

/// Waits until instance `id` runs (targets register only then).
pub async fn running(cx: &Ctx<'_>, id: &str, age: Age) -> Result<Replay<super::Found>> {
    let ec2 = &cx.aws.ec2;
    cx.confirm("instance", id, age, || async {
        let out = ec2.describe_instances().instance_ids(id).send().await.call("DescribeInstances")?;
        let Some(i) = out.reservations().first().and_then(|r| r.instances().first()) else {
            return Ok(Probe::Wait);
        };
        use InstanceStateName as S;
        match i.state().and_then(|s| s.name()) {
            Some(S::Running) => Ok(Probe::Ready(super::Found::new(id, found(i)))),
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

pub async fn fix(
    cx: &Ctx<'_>,
    want: &Want,
    fixes: &[Fix],
    st: &State,
    mut found: super::Found,
) -> Result<super::Found> {
    if fixes.contains(&Fix::Start) {
        let call = cx.aws.ec2.start_instances().instance_ids(&found.id);
        cx.named(Svc::Ec2, "StartInstances", &[&found.id], || call.clone().send()).await?;
    }
    if let (true, Some(key)) = (fixes.contains(&Fix::AttachVolume), &want.volume) {
        let volume = st.need(key)?;
        attach(cx, &found.id, &volume).await?;
        if let Some(i) = found.get_mut::<Found>() {
            i.volumes.push(volume);
        }
    }
    Ok(found)
}

pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    let ec2 = &aws.ec2;
    del(aws, Svc::Ec2, "TerminateInstances", what, Retry::IN_USE, || ec2.terminate_instances().instance_ids(id).send())
        .await?;
    wait_for("the instance to terminate", aws.poll, Duration::from_secs(900), || async {
        let out = ec2.describe_instances().instance_ids(id).send().await.call("DescribeInstances");
        let Some(out) = unless_gone(out)? else { return Ok(Some(())) };
        let state =
            out.reservations().iter().flat_map(|r| r.instances()).next().and_then(|i| i.state()?.name().cloned());
        Ok(matches!(state, None | Some(InstanceStateName::Terminated)).then_some(()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::Wanted;

    #[test]
    fn a_stopped_instance_is_started_and_an_outdated_one_noted() {
        let spec = crate::cluster::spec::tests::spec();
        let state = State::default();
        let key = Key::Instance(Host::Master(0));
        let mut wanted = Wanted::default();
        wanted.config.insert(key.clone(), "abc".into());
        let v = View { spec: &spec, state: &state, wanted: &wanted };
        let want = Want { host: Host::Master(0), subnet: Key::Vpc, ip: None, volume: None };
        let current = Found { state: "running".into(), config: Some("abc".into()), ..Found::default() };
        assert!(diff(&v, &key, &want, Some(("i-1", &current))).is_none());
        let stopped = Found { state: "stopped".into(), ..current.clone() };
        assert!(matches!(diff(&v, &key, &want, Some(("i-1", &stopped))), Some(Action::Update(f)) if f == [Fix::Start]));
        let old = Found { config: Some("xyz".into()), ..current.clone() };
        assert!(matches!(diff(&v, &key, &want, Some(("i-1", &old))), Some(Action::Note(n)) if n.contains("i-1")));
        // A master without its etcd volume (a replacement) gets it attached.
        let mut state = State::default();
        let volume = super::super::volume::Found::default();
        state.found.insert(Key::Volume(0), super::super::Found::new("vol-1", volume));
        let v = View { spec: &spec, state: &state, wanted: &wanted };
        let want = Want { volume: Some(Key::Volume(0)), ..want };
        let attach = Some(Action::Update(vec![Fix::AttachVolume]));
        assert_eq!(format!("{:?}", diff(&v, &key, &want, Some(("i-1", &current)))), format!("{attach:?}"));
        let attached = Found { volumes: vec!["vol-0".into(), "vol-1".into()], ..current };
        assert!(diff(&v, &key, &want, Some(("i-1", &attached))).is_none());
    }
}
