//! The API's network load balancer (internet-facing, in the public
//! subnets, behind the `api` group), its target group, its listener, and
//! the masters registered as targets (found on the target group).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use aws_sdk_elasticloadbalancingv2::types as elbt;

use super::ctx::{del, tag, unless_gone, Age, Ctx, Replay};
use super::rules::API_PORT;
use super::{arrow, instance, kv, update, Action, Fix, State, View};
use crate::aws::key::{Key, Role};
use crate::aws::model::Node;
use crate::aws::naming::{short_name, TAG_CLUSTER, TAG_KEY};
use crate::aws::{aws_error, wait_for, Aws, AwsError, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub subnets: Vec<Key>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetsWant {
    pub instances: Vec<Key>,
}

#[derive(Clone, Debug, Default)]
pub struct Found {
    /// Its DNS name and canonical hosted zone (what alias records name).
    pub dns: Option<(String, String)>,
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct TgFound {
    /// Its health check as found: protocol, path, interval (seconds).
    pub health: HealthCheck,
}

/// The target group's health check. The API's `/readyz` over HTTPS, not a
/// TCP connect: a master whose API server listens but whose etcd is gone
/// answers 500 there and stops receiving traffic. `/readyz` is open to
/// anonymous requests (the system:public-info-viewer role); NLB health
/// checks do not verify the certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthCheck {
    pub protocol: String,
    pub path: Option<String>,
    pub interval: Option<i32>,
}

const READYZ: &str = "/readyz";
const INTERVAL: i32 = 10;

/// Sets the health check on a create or modify call (one definition for both).
macro_rules! readyz {
    ($call:expr) => {
        $call
            .health_check_protocol(elbt::ProtocolEnum::Https)
            .health_check_port(API_PORT.to_string())
            .health_check_path(READYZ)
            .health_check_interval_seconds(INTERVAL)
            .health_check_timeout_seconds(5)
            .healthy_threshold_count(2)
            .unhealthy_threshold_count(2)
            .matcher(elbt::Matcher::builder().http_code("200").build())
    };
}

impl HealthCheck {
    fn wanted() -> HealthCheck {
        HealthCheck {
            protocol: elbt::ProtocolEnum::Https.as_str().into(),
            path: Some(READYZ.into()),
            interval: Some(INTERVAL),
        }
    }

    fn of(tg: &elbt::TargetGroup) -> HealthCheck {
        HealthCheck {
            protocol: tg.health_check_protocol().map_or("", |p| p.as_str()).to_owned(),
            path: tg.health_check_path().map(String::from),
            interval: tg.health_check_interval_seconds(),
        }
    }
}

impl std::fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{} {} every {}s", self.protocol, self.path.as_deref().unwrap_or("-"), self.interval.unwrap_or(0))
    }
}

#[derive(Clone, Debug, Default)]
pub struct ListenerFound;

#[derive(Clone, Debug, Default)]
pub struct TargetsFound {
    /// The registered instances, sorted.
    pub ids: Vec<String>,
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let c = &aws.elb;
    let (lbs, tgs) =
        tokio::try_join!(async { crate::pages!(c.describe_load_balancers(), "DescribeLoadBalancers") }, async {
            crate::pages!(c.describe_target_groups(), "DescribeTargetGroups")
        },)?;
    let mut arns: Vec<String> =
        lbs.iter().flat_map(|p| p.load_balancers()).filter_map(|l| l.load_balancer_arn()).map(String::from).collect();
    arns.extend(tgs.iter().flat_map(|p| p.target_groups()).filter_map(|t| t.target_group_arn()).map(String::from));
    // Which of them are the cluster's: ELBv2 has no tag filter.
    let mut keys: HashMap<String, Key> = HashMap::new();
    for chunk in arns.chunks(20) {
        let out = c.describe_tags().set_resource_arns(Some(chunk.to_vec())).send().await.call("DescribeTags")?;
        for d in out.tag_descriptions() {
            let tags = || d.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")));
            if tag(tags(), TAG_CLUSTER).as_deref() == Some(spec.name.as_str()) {
                keys.insert(
                    d.resource_arn().unwrap_or_default().into(),
                    Key::from_tag(tag(tags(), TAG_KEY).as_deref()),
                );
            }
        }
    }
    let mut out = Vec::new();
    for lb in lbs.iter().flat_map(|p| p.load_balancers()) {
        let arn = lb.load_balancer_arn().unwrap_or_default();
        let Some(k) = keys.get(arn) else { continue };
        let listeners = c.describe_listeners().load_balancer_arn(arn).send().await.call("DescribeListeners")?;
        for l in listeners.listeners() {
            // The API's load balancer's listener; another's is surplus with it.
            let key = if *k == Key::Lb { Key::Listener } else { Key::Other(format!("listener of {k}")) };
            out.push((key, super::Found::new(l.listener_arn().unwrap_or_default(), ListenerFound)));
        }
        let found = Found {
            dns: lb.dns_name().zip(lb.canonical_hosted_zone_id()).map(|(d, z)| (d.to_owned(), z.to_owned())),
            groups: lb.security_groups().to_vec(),
        };
        out.push((k.clone(), super::Found::new(arn, found)));
    }
    for tg in tgs.iter().flat_map(|p| p.target_groups()) {
        let arn = tg.target_group_arn().unwrap_or_default();
        let Some(k) = keys.get(arn) else { continue };
        if *k == Key::Tg {
            let health = c.describe_target_health().target_group_arn(arn).send().await.call("DescribeTargetHealth")?;
            let mut ids: Vec<String> =
                health.target_health_descriptions().iter().filter_map(|d| d.target()?.id()).map(String::from).collect();
            ids.sort();
            out.push((Key::Targets, super::Found::new(arn, TargetsFound { ids })));
        }
        out.push((k.clone(), super::Found::new(arn, TgFound { health: HealthCheck::of(tg) })));
    }
    Ok(out)
}

pub fn diff_tg(found: Option<(&str, &TgFound)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    update(if f.health == HealthCheck::wanted() { vec![] } else { vec![Fix::HealthCheck] })
}

pub fn diff(v: &View, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    let sg = v.state.id(&Key::Group(Role::Api)).unwrap_or_default();
    update(if f.groups.len() == 1 && f.groups[0] == sg { vec![] } else { vec![Fix::SecurityGroups] })
}

pub fn diff_targets(v: &View, want: &TargetsWant, found: Option<(&str, &TargetsFound)>) -> Option<Action> {
    let have: BTreeSet<&str> = found.map(|(_, f)| f.ids.iter().map(String::as_str).collect()).unwrap_or_default();
    let ids: Vec<Option<&str>> = want.instances.iter().map(|k| v.state.id(k)).collect();
    let missing: Vec<Key> = want
        .instances
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
    update(fixes)
}

pub fn attributes(v: &View, want: &Want) -> Vec<String> {
    vec![
        kv("type", "network, internet-facing".into()),
        kv("subnets", v.state.refs(&want.subnets)),
        kv("group", v.state.refer(&Key::Group(Role::Api))),
    ]
}

pub fn tg_attributes(v: &View) -> Vec<String> {
    vec![
        kv("port", format!("{API_PORT}/tcp")),
        kv("health check", HealthCheck::wanted().to_string()),
        kv("vpc", v.state.refer(&Key::Vpc)),
    ]
}

pub fn tg_change(f: &TgFound) -> Option<String> {
    arrow("health check", &f.health.to_string(), &HealthCheck::wanted().to_string())
}

pub fn listener_attributes(v: &View) -> Vec<String> {
    vec![kv("port", format!("{API_PORT}/tcp")), kv("forwards to", v.state.refer(&Key::Tg))]
}

pub fn change(v: &View, f: &Found) -> Option<String> {
    arrow("security groups", &f.groups.join(","), &v.state.refer(&Key::Group(Role::Api)))
}

fn tags(cx: &Ctx<'_>, node: &Node) -> Vec<elbt::Tag> {
    cx.tags(node).into_iter().map(|(k, v)| elbt::Tag::builder().key(k).value(v).build()).collect()
}

pub async fn create(cx: &Ctx<'_>, node: &Node, want: &Want, st: &State) -> Result<super::Found> {
    let subnets: Vec<String> = want.subnets.iter().map(|s| st.need(s)).collect::<Result<_>>()?;
    let sg = st.need(&Key::Group(Role::Api))?;
    let call = cx
        .aws
        .elb
        .create_load_balancer()
        .name(short_name(cx.spec, "api"))
        .r#type(elbt::LoadBalancerTypeEnum::Network)
        .scheme(elbt::LoadBalancerSchemeEnum::InternetFacing)
        .set_subnets(Some(subnets.clone()))
        .security_groups(&sg)
        .set_tags(Some(tags(cx, node)));
    let ids: Vec<&str> = subnets.iter().chain([&sg]).map(String::as_str).collect();
    let out = cx.named(Svc::Other, "CreateLoadBalancer", &ids, || call.clone().send()).await?;
    let lb = out.load_balancers().first().context("no load balancer")?;
    let arn = lb.load_balancer_arn().context("no ARN")?;
    // Its listener waits for it to be active: the DNS records and the
    // masters need only its name, known already.
    let found = Found {
        dns: lb.dns_name().zip(lb.canonical_hosted_zone_id()).map(|(d, z)| (d.to_owned(), z.to_owned())),
        groups: vec![sg],
    };
    Ok(super::Found::new(arn, found))
}

pub async fn create_tg(cx: &Ctx<'_>, node: &Node, st: &State) -> Result<super::Found> {
    let vpc = st.need(&Key::Vpc)?;
    let call = cx
        .aws
        .elb
        .create_target_group()
        .name(short_name(cx.spec, "api"))
        .protocol(elbt::ProtocolEnum::Tcp)
        .port(API_PORT.into())
        .vpc_id(&vpc)
        .target_type(elbt::TargetTypeEnum::Instance)
        .set_tags(Some(tags(cx, node)));
    let call = readyz!(call);
    let out = cx.named(Svc::Other, "CreateTargetGroup", &[&vpc], || call.clone().send()).await?;
    let arn = out.target_groups().first().and_then(|t| t.target_group_arn()).context("no target group")?;
    Ok(super::Found::new(arn, TgFound { health: HealthCheck::wanted() }))
}

pub async fn create_listener(cx: &Ctx<'_>, _: &Node, st: &State) -> Result<super::Found> {
    let (lb, tg) = (st.need(&Key::Lb)?, st.need(&Key::Tg)?);
    let call = cx
        .aws
        .elb
        .create_listener()
        .load_balancer_arn(&lb)
        .protocol(elbt::ProtocolEnum::Tcp)
        .port(API_PORT.into())
        .default_actions(elbt::Action::builder().r#type(elbt::ActionTypeEnum::Forward).target_group_arn(&tg).build());
    let out = cx.named(Svc::Other, "CreateListener", &[&lb, &tg], || call.clone().send()).await?;
    let arn = out.listeners().first().and_then(|l| l.listener_arn()).context("no listener")?.to_owned();
    let elb = &cx.aws.elb;
    wait_for("the load balancer to be active", cx.poll(), Duration::from_secs(600), || async {
        // Not found yet, right after its create: not active yet.
        let out = elb.describe_load_balancers().load_balancer_arns(&lb).send().await;
        let out = match out.call("DescribeLoadBalancers") {
            Err(e) if aws_error(&e).is_some_and(AwsError::is_not_found) => return Ok(None),
            other => other?,
        };
        match out.load_balancers().first().and_then(|l| l.state()?.code().cloned()) {
            Some(elbt::LoadBalancerStateEnum::Failed) => Err(anyhow!("load balancer {lb} failed")),
            Some(elbt::LoadBalancerStateEnum::Provisioning) => Ok(None),
            _ => Ok(Some(())),
        }
    })
    .await?;
    Ok(super::Found::new(arn, ListenerFound))
}

pub async fn fix(cx: &Ctx<'_>, fixes: &[Fix], st: &State, mut found: super::Found) -> Result<super::Found> {
    if fixes.contains(&Fix::SecurityGroups) {
        let sg = st.need(&Key::Group(Role::Api))?;
        let call = cx.aws.elb.set_security_groups().load_balancer_arn(&found.id).security_groups(&sg);
        call.send().await.call("SetSecurityGroups")?;
        if let Some(f) = found.get_mut::<Found>() {
            f.groups = vec![sg];
        }
    }
    Ok(found)
}

/// Puts the health check back to `/readyz` over HTTPS.
pub async fn fix_tg(cx: &Ctx<'_>, fixes: &[Fix], mut found: super::Found) -> Result<super::Found> {
    if fixes.contains(&Fix::HealthCheck) {
        let call = cx.aws.elb.modify_target_group().target_group_arn(&found.id);
        let call = readyz!(call);
        call.send().await.call("ModifyTargetGroup")?;
        found.is = TgFound { health: HealthCheck::wanted() }.into();
    }
    Ok(found)
}

/// Registers the missing masters (each once it runs) and deregisters the rest.
pub async fn fix_targets(cx: &Ctx<'_>, fixes: &[Fix], st: &State, found: Option<super::Found>) -> Result<super::Found> {
    use elbt::TargetDescription;
    let tg = st.need(&Key::Tg)?;
    let mut ids: Vec<String> = found.and_then(|f| f.get::<TargetsFound>().map(|t| t.ids.clone())).unwrap_or_default();
    for fix in fixes {
        match fix {
            Fix::Register(keys) => {
                let add: Vec<String> = keys.iter().map(|k| st.need(k)).collect::<Result<_>>()?;
                // A target must be running (`InvalidTarget` otherwise); a
                // killed run may have left an instance pending.
                for id in add.iter().filter(|id| !cx.created(id)) {
                    if let Replay::Dead(id) = instance::running(cx, id, Age::Old).await? {
                        bail!("instance {id} is gone; run `kaws cluster apply` again to replace it");
                    }
                }
                let targets: Vec<_> = add.iter().map(|i| TargetDescription::builder().id(i).build()).collect();
                let call = cx.aws.elb.register_targets().target_group_arn(&tg).set_targets(Some(targets));
                // ELB's view of EC2 lags: InvalidTarget for an instance that runs.
                let named: Vec<&str> = add.iter().map(String::as_str).collect();
                cx.named(Svc::Other, "RegisterTargets", &named, || call.clone().send()).await?;
                ids.extend(add);
            }
            Fix::Deregister(gone) => {
                let targets: Vec<_> = gone.iter().map(|i| TargetDescription::builder().id(i).build()).collect();
                let call = cx.aws.elb.deregister_targets().target_group_arn(&tg).set_targets(Some(targets));
                call.send().await.call("DeregisterTargets")?;
                ids.retain(|i| !gone.contains(i));
            }
            other => bail!("internal: {other:?} is not a target change"),
        }
    }
    ids.sort();
    Ok(super::Found::new(tg, TargetsFound { ids }))
}

pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    let elb = &aws.elb;
    del(aws, Svc::Other, "DeleteLoadBalancer", what, Retry::IN_USE, || {
        elb.delete_load_balancer().load_balancer_arn(id).send()
    })
    .await?;
    wait_for("the load balancer to go", aws.poll, Duration::from_secs(600), || async {
        let out = elb.describe_load_balancers().load_balancer_arns(id).send().await;
        Ok(unless_gone(out.call("DescribeLoadBalancers"))?.is_none_or(|o| o.load_balancers().is_empty()).then_some(()))
    })
    .await
}

pub async fn delete_tg(aws: &Aws, what: &str, id: &str) -> Result<()> {
    del(aws, Svc::Other, "DeleteTargetGroup", what, Retry::IN_USE, || {
        aws.elb.delete_target_group().target_group_arn(id).send()
    })
    .await
}

pub async fn delete_listener(aws: &Aws, what: &str, id: &str) -> Result<()> {
    del(aws, Svc::Other, "DeleteListener", what, Retry::IN_USE, || aws.elb.delete_listener().listener_arn(id).send())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::key::Host;
    use crate::aws::resources::Wanted;

    #[test]
    fn the_health_check_is_readyz_over_https() {
        assert!(matches!(diff_tg(None), Some(Action::Create)));
        let tcp = TgFound { health: HealthCheck { protocol: "TCP".into(), path: None, interval: Some(30) } };
        assert!(matches!(diff_tg(Some(("tg", &tcp))), Some(Action::Update(f)) if f == [Fix::HealthCheck]));
        assert!(diff_tg(Some(("tg", &TgFound { health: HealthCheck::wanted() }))).is_none());
    }

    #[test]
    fn exactly_the_masters_are_targets() {
        let spec = crate::cluster::spec::tests::spec();
        let mut state = State::default();
        let masters: Vec<Key> = (0..2).map(|i| Key::Instance(Host::Master(i))).collect();
        state.found.insert(masters[0].clone(), super::super::Found::new("i-0", instance::Found::default()));
        let v = View { spec: &spec, state: &state, wanted: &Wanted::default() };
        let want = TargetsWant { instances: masters.clone() };
        let found = TargetsFound { ids: vec!["i-0".into(), "i-9".into()] };
        let Some(Action::Update(fixes)) = diff_targets(&v, &want, Some(("tg", &found))) else { panic!() };
        assert_eq!(fixes, [Fix::Register(vec![masters[1].clone()]), Fix::Deregister(vec!["i-9".into()])]);
        // Nothing registered yet (no record at all): every master.
        let Some(Action::Update(fixes)) = diff_targets(&v, &want, None) else { panic!() };
        assert_eq!(fixes, [Fix::Register(masters)]);
    }
}
