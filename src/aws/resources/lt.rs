//! The nodes' launch template. Its latest version's description records
//! its configuration (the digest of what it runs, and the node group it is
//! in), written in the same call as the version; a change makes a new
//! version, whose client token follows the version it comes after.

use anyhow::{bail, Context as _, Result};
use aws_sdk_ec2::types::{self as ec2t, ResourceType};

use super::ctx::{by_cluster, del, ec2_key, ec2_tags, tag, Age, Ctx, Probe, Replay};
use super::launch::Launch;
use super::{arrow, kv, update, Action, Fix, State, View};
use crate::aws::key::{Host, Key, Role};
use crate::aws::model::Node;
use crate::aws::naming::{TAG_CLUSTER, TAG_ROLE};
use crate::aws::{aws_error, Aws, Call, Retry, Svc};
use crate::cluster::ClusterSpec;

#[derive(Clone, Debug, Default)]
pub struct Found {
    /// Its latest version's number and description.
    pub latest: Option<String>,
    pub config: Option<String>,
}

/// What the template's latest version records as its configuration: the
/// digest of what it runs and the group it is in (a group made anew must
/// reach the template too).
pub fn template_config(config: &str, group: &str) -> String {
    format!("{config} {group}")
}

fn name(spec: &ClusterSpec) -> String {
    format!("kaws-{}-node", spec.name)
}

pub async fn discover(aws: &Aws, spec: &ClusterSpec) -> Result<Vec<(Key, super::Found)>> {
    let c = &aws.ec2;
    let lts = c.describe_launch_templates().filters(by_cluster(spec)).send().await.call("DescribeLaunchTemplates")?;
    // Each template's configuration is its latest version's description,
    // written in the same call as the version (a tag could lag behind it).
    let latest = futures::future::try_join_all(lts.launch_templates().iter().map(|t| async move {
        let call = c.describe_launch_template_versions().launch_template_id(t.launch_template_id().unwrap_or_default());
        let out = call.versions("$Latest").send().await.call("DescribeLaunchTemplateVersions")?;
        let v = out.launch_template_versions().first();
        Ok::<_, anyhow::Error>(v.and_then(|v| v.version_description()).map(String::from))
    }))
    .await?;
    Ok(lts
        .launch_templates()
        .iter()
        .zip(latest)
        .map(|(t, config)| {
            let found = Found { latest: t.latest_version_number().map(|v| v.to_string()), config };
            (ec2_key(t.tags()), super::Found::new(t.launch_template_id().unwrap_or_default(), found))
        })
        .collect())
}

fn wanted(v: &View, key: &Key) -> Option<String> {
    let group = v.state.id(&Key::Group(Role::Node)).unwrap_or("(new)");
    v.wanted.config.get(key).map(|c| template_config(c, group))
}

pub fn diff(v: &View, key: &Key, found: Option<(&str, &Found)>) -> Option<Action> {
    let Some((_, f)) = found else { return Some(Action::Create) };
    update(if f.config != wanted(v, key) { vec![Fix::Version] } else { vec![] })
}

pub fn attributes(v: &View) -> Vec<String> {
    vec![
        kv("type", v.spec.aws.node_type.clone()),
        kv("image", v.wanted.image.clone().unwrap_or_else(|| "(resolved at apply)".into())),
        kv("root volume", format!("{} GiB gp3, encrypted", v.spec.aws.root_volume_gib)),
    ]
}

pub fn change(v: &View, key: &Key, found: &Found) -> Option<String> {
    arrow(
        "configuration",
        found.config.as_deref().unwrap_or("none"),
        v.wanted.config.get(key).map_or("?", String::as_str),
    )
}

/// The template's data: its instances and volumes are tagged for the
/// cluster and role (the group adds its own name).
fn data(cx: &Ctx<'_>, node: &Node, st: &State) -> Result<ec2t::RequestLaunchTemplateData> {
    let tags: Vec<ec2t::Tag> =
        [(TAG_CLUSTER.to_owned(), cx.spec.name.to_string()), (TAG_ROLE.to_owned(), "node".into())]
            .into_iter()
            .chain([crate::aws::naming::k8s_cluster_tag(cx.spec)])
            .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
            .collect();
    Ok(Launch::of(cx, &node.key, Host::Node, st)?.template(tags))
}

pub async fn create(cx: &Ctx<'_>, node: &Node, st: &State) -> Result<super::Found> {
    let (ec2, name) = (&cx.aws.ec2, name(cx.spec));
    let sg = st.need(&Key::Group(Role::Node))?;
    let config = template_config(cx.config(&node.key)?, &sg);
    // The configuration digest (user-data included) is the version's
    // description, so it is in the request too.
    let request = ec2
        .create_launch_template()
        .launch_template_name(&name)
        .version_description(&config)
        .launch_template_data(data(cx, node, st)?)
        .tag_specifications(cx.ec2_tags(node, ResourceType::LaunchTemplate, &[]));
    let made = cx
        .create_once("CreateLaunchTemplate", |salt| {
            let call = request.clone().client_token(cx.token(node, request.as_input(), &salt));
            let (sg, name) = (&sg, &name);
            async move {
                let started = std::time::SystemTime::now();
                let (id, age) = match cx.named(Svc::Ec2, "CreateLaunchTemplate", &[sg], || call.clone().send()).await {
                    Ok(out) => {
                        let t = out.launch_template().context("no template")?;
                        (
                            t.launch_template_id().context("no template id")?.to_owned(),
                            Age::of(t.create_time(), started),
                        )
                    }
                    // A killed run's template, not yet visible to discovery:
                    // adopted, and given a version with this configuration.
                    Err(e)
                        if aws_error(&e)
                            .is_some_and(|a| a.code() == "InvalidLaunchTemplateName.AlreadyExistsException") =>
                    {
                        let (id, latest) = adopt(cx, name).await?;
                        return Ok(Replay::Live(Made::Adopted(id, latest)));
                    }
                    Err(e) => return Err(e),
                };
                cx.made(&id);
                let probe = || async {
                    let out = cx.aws.ec2.describe_launch_templates().launch_template_ids(&id).send().await;
                    out.call("DescribeLaunchTemplates").map(|o| Probe::from(!o.launch_templates().is_empty()))
                };
                Ok(cx.confirm("launch template", &id, age, probe).await?.map(|()| Made::New(id)))
            }
        })
        .await?;
    match made {
        Made::New(id) => Ok(super::Found::new(id, Found { latest: Some("1".into()), config: Some(config) })),
        Made::Adopted(id, latest) => {
            let found = super::Found::new(id, Found { latest, config: None });
            fix(cx, node, &[Fix::Version], st, found).await
        }
    }
}

/// What the create ended with: a template of its own, or a killed run's.
enum Made {
    New(String),
    Adopted(String, Option<String>),
}

/// The template `name`, made by a killed run: its id and latest version,
/// if it carries this cluster's tag.
async fn adopt(cx: &Ctx<'_>, name: &str) -> Result<(String, Option<String>)> {
    let out = cx
        .aws
        .ec2
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
        .call("DescribeLaunchTemplates")?;
    let t = out.launch_templates().first().context("the launch template was not found")?;
    if tag(ec2_tags(t.tags()), TAG_CLUSTER).as_deref() != Some(cx.spec.name.as_str()) {
        bail!("a launch template named {name} exists without this cluster's tag; delete or rename it");
    }
    Ok((t.launch_template_id().unwrap_or_default().to_owned(), t.latest_version_number().map(|v| v.to_string())))
}

pub async fn fix(
    cx: &Ctx<'_>,
    node: &Node,
    fixes: &[Fix],
    st: &State,
    mut found: super::Found,
) -> Result<super::Found> {
    if !fixes.contains(&Fix::Version) {
        return Ok(found);
    }
    let config = template_config(cx.config(&node.key)?, &st.need(&Key::Group(Role::Node))?);
    let mut f = found.get::<Found>().cloned().unwrap_or_default();
    // Salted with the version it follows: A→B→A→B makes four versions.
    let latest = f.latest.clone().unwrap_or_default();
    let call = cx
        .aws
        .ec2
        .create_launch_template_version()
        .launch_template_id(&found.id)
        .client_token(cx.token(node, &(), &[found.id.clone(), latest, config.clone()]))
        .launch_template_data(data(cx, node, st)?)
        .version_description(&config);
    let out = cx.named(Svc::Ec2, "CreateLaunchTemplateVersion", &[&found.id], || call.clone().send()).await?;
    f.latest = out.launch_template_version().and_then(|v| v.version_number()).map(|v| v.to_string());
    f.config = Some(config);
    found.is = f.into();
    Ok(found)
}

pub async fn delete(aws: &Aws, what: &str, id: &str) -> Result<()> {
    del(aws, Svc::Ec2, "DeleteLaunchTemplate", what, Retry::IN_USE, || {
        aws.ec2.delete_launch_template().launch_template_id(id).send()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::resources::{sg, Wanted};

    #[test]
    fn a_new_configuration_or_group_is_a_new_version() {
        let spec = crate::cluster::spec::tests::spec();
        let mut state = State::default();
        state.found.insert(Key::Group(Role::Node), super::super::Found::new("sg-1", sg::Found::default()));
        let mut wanted = Wanted::default();
        wanted.config.insert(Key::Lt, "abc".into());
        let v = View { spec: &spec, state: &state, wanted: &wanted };
        let current = Found { latest: Some("3".into()), config: Some(template_config("abc", "sg-1")) };
        assert!(diff(&v, &Key::Lt, Some(("lt-1", &current))).is_none());
        let other_group = Found { config: Some(template_config("abc", "sg-0")), ..current };
        assert!(
            matches!(diff(&v, &Key::Lt, Some(("lt-1", &other_group))), Some(Action::Update(f)) if f == [Fix::Version])
        );
    }
}
