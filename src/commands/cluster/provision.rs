//! `kaws cluster plan / apply / destroy`: the AWS footprint of a cluster.
//! Inputs come from HEAD of an authenticated repository; secrets are
//! decrypted (by a primary, in memory) only when a parameter must be
//! written; the outputs (load balancer, bastion, ids) are committed.

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{open_cluster, primary_operator, Loaded};
use crate::aws::apply::{Inputs, Runner};
use crate::aws::model::{self, Kind};
use crate::aws::plan::{self, Action, Fix, Wanted};
use crate::aws::world::{self, World};
use crate::aws::{self as cloud, Aws, Call};
use crate::cli::Output;
use crate::commands::Opened;
use crate::context::Ctx;
use crate::error::{failed, UserError};
use crate::render::{self, Context, Role};
use crate::repo::{Change, Repo};

pub const OUTPUTS_FILE: &str = "outputs.toml";

/// What `apply` records for `admin install` and people: committed.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Outputs {
    pub region: String,
    /// The load balancer's DNS name; kubeconfigs use it with
    /// `tls-server-name: api.CLUSTER.DOMAIN` when there is no public zone.
    pub api_endpoint: String,
    pub api_name: String,
    pub bastion: Option<String>,
    pub ids: std::collections::BTreeMap<String, String>,
}

impl crate::tomlfile::TomlFile for Outputs {
    const HEADER: &'static str = "What `kaws cluster apply` made (read by `kaws admin install`). Written by kaws.";
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// Where AWS publishes the latest Amazon Linux 2023 image id, per architecture.
const AL2023: &str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-";

/// The image instances run: the one the spec pins, or (none pinned yet, or
/// `--update-image`) the latest Amazon Linux 2023, which apply then pins in
/// `cluster.toml`, so a new release does not re-template every instance.
struct Image {
    id: String,
    root_device: String,
    /// The image to pin in the spec (the spec pins none, or is updated).
    pin: Option<String>,
    /// A newer Amazon Linux 2023 than the pinned one, for the plan to say.
    newer: Option<String>,
}

/// The one architecture of the spec's instance types.
async fn architecture(aws: &Aws, spec: &crate::cluster::ClusterSpec) -> Result<String> {
    use aws_sdk_ec2::types::{ArchitectureType, InstanceType};
    let mut types = vec![&spec.aws.master_type, &spec.aws.node_type, &spec.aws.bastion_type];
    types.sort();
    types.dedup();
    let call = aws
        .ec2
        .describe_instance_types()
        .set_instance_types(Some(types.iter().map(|t| InstanceType::from(t.as_str())).collect()));
    let out = call.send().await.call("DescribeInstanceTypes")?;
    let mut archs: Vec<(&str, &str)> = out
        .instance_types()
        .iter()
        .map(|t| {
            let arm =
                t.processor_info().is_some_and(|p| p.supported_architectures().contains(&ArchitectureType::Arm64));
            (t.instance_type().map_or("?", |t| t.as_str()), if arm { "arm64" } else { "x86_64" })
        })
        .collect();
    archs.sort();
    if archs.len() != types.len() {
        return Err(
            failed(format!("{} does not offer every instance type of the spec ({types:?})", spec.region)).into()
        );
    }
    if archs.windows(2).any(|w| w[0].1 != w[1].1) {
        return Err(failed(format!("the spec's instance types differ in architecture: {archs:?}"))
            .hint("choose bastion, master and node types of one architecture")
            .into());
    }
    Ok(archs[0].1.to_owned())
}

async fn image(aws: &Aws, spec: &crate::cluster::ClusterSpec, update: bool) -> Result<Image> {
    let arch = architecture(aws, spec).await?;
    let name = format!("{AL2023}{arch}");
    let out = aws.ssm.get_parameter().name(&name).send().await.call("GetParameter")?;
    let latest = out.parameter().and_then(|p| p.value()).context("no latest Amazon Linux 2023 image")?.to_owned();
    let (id, pin) = match (&spec.aws.image, update) {
        (Some(id), false) => (id.clone(), None),
        _ => (latest.clone(), Some(latest.clone())),
    };
    let out = aws.ec2.describe_images().image_ids(&id).send().await.call("DescribeImages")?;
    let found = out.images().first().ok_or_else(|| {
        failed(format!("the image {id} does not exist in {}", spec.region))
            .hint("pin another with `kaws cluster apply --update-image` (the latest Amazon Linux 2023)")
    })?;
    let image_arch = found.architecture().map_or("?", |a| a.as_str());
    if image_arch != arch {
        return Err(failed(format!("the image {id} is {image_arch}; the instance types are {arch}")).into());
    }
    let newer =
        (pin.is_none() && found.name().is_some_and(|n| n.starts_with("al2023-ami-")) && latest != id).then_some(latest);
    let root_device = found.root_device_name().unwrap_or("/dev/xvda").to_owned();
    Ok(Image { id, root_device, pin, newer })
}

/// Everything but the secrets: user-data per instance, digests, markers.
fn inputs(ctx: &Ctx, repo: &Repo, loaded: &Loaded, graph: &[model::Node], image: &Image) -> Result<Inputs> {
    let spec = &loaded.spec;
    let public = super::render::public_inputs(ctx, repo, loaded)?;
    let endpoint: crate::name::DnsName = spec.api_name().parse().expect("a valid spec's API name");
    let mut user_data = HashMap::new();
    let mut wanted = Wanted::default();
    for node in graph {
        let (role, itype, iam) = match &node.kind {
            Kind::Instance { index: Some(i), iam, .. } => (Role::Master(*i), &spec.aws.master_type, iam),
            Kind::Instance { index: None, iam, .. } => (Role::Bastion, &spec.aws.bastion_type, iam),
            Kind::LaunchTemplate { iam } => (Role::Node, &spec.aws.node_type, iam),
            Kind::Parameter { source, .. } => {
                let bytes = repo.read_head(&loaded.path(source))?.with_context(|| format!("{source} is missing"))?;
                // Which sealed file, and which key encrypts it: a change of
                // either rewrites the parameter.
                let marker =
                    format!("kaws source {} key {}", cloud::digest(&[&bytes]), crate::aws::naming::kms_alias(spec));
                wanted.markers.insert(node.key.clone(), marker);
                continue;
            }
            _ => continue,
        };
        let context = Context::new(spec, role, &endpoint, &public).map_err(|e| e.into_user())?;
        let bytes = render::encode(&render::user_data(&context).context("rendering user-data")?)?;
        if bytes.len() > render::USER_DATA_LIMIT {
            return Err(failed(format!(
                "{}: the user-data is {} bytes, EC2 takes {}",
                node.key,
                bytes.len(),
                render::USER_DATA_LIMIT
            ))
            .into());
        }
        let size = spec.aws.root_volume_gib.to_string();
        let config = cloud::digest(&[
            &bytes,
            itype.as_bytes(),
            image.id.as_bytes(),
            image.root_device.as_bytes(),
            size.as_bytes(),
            iam.as_bytes(),
        ]);
        wanted.config.insert(node.key.clone(), config);
        user_data.insert(node.key.clone(), bytes);
    }
    wanted.image = Some(image.id.clone());
    Ok(Inputs {
        image: image.id.clone(),
        root_device: image.root_device.clone(),
        user_data,
        wanted,
        secrets: HashMap::new(),
    })
}

/// Decrypts the values of the parameters the plan writes.
fn secrets(
    ctx: &Ctx,
    opened: &Opened,
    loaded: &Loaded,
    graph: &[model::Node],
    changes: &[plan::Change],
) -> Result<HashMap<String, Zeroizing<String>>> {
    let needed: Vec<&model::Node> = graph
        .iter()
        .filter(|n| matches!(n.kind, Kind::Parameter { .. }))
        .filter(|n| {
            changes.iter().any(|c| {
                c.key == n.key
                    && match &c.action {
                        Action::Create => true,
                        Action::Update(fixes) => fixes.contains(&Fix::Value),
                        _ => false,
                    }
            })
        })
        .collect();
    let mut out = HashMap::new();
    if needed.is_empty() {
        return Ok(out);
    }
    let op = primary_operator(ctx, &opened.repo, &opened.admins, loaded)?;
    for n in needed {
        let Kind::Parameter { source, name } = &n.kind else { continue };
        let plain = super::open_checked(ctx, &opened.repo, loaded, &op, source)?;
        // Copied once into zeroizing memory; no plain copy outlives this loop.
        let text = Zeroizing::new(
            std::str::from_utf8(&plain).map_err(|_| failed(format!("{source} is not text")))?.to_owned(),
        );
        if text.len() > 4096 {
            return Err(
                failed(format!("{name}: {} bytes is over SSM's 4 KiB standard parameter limit", text.len())).into()
            );
        }
        out.insert(n.key.clone(), text);
    }
    Ok(out)
}

fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(
            UserError::usage("standard input is not a terminal; pass --yes to go ahead without confirmation").into()
        );
    }
    eprint!("{question} Type yes to go ahead: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        return Err(failed("cancelled; nothing was changed").into());
    }
    Ok(())
}

struct Prepared {
    aws: Aws,
    graph: Vec<model::Node>,
    world: World,
    inputs: Inputs,
    changes: Vec<plan::Change>,
    /// The spec's AWS choices with the image and zones pinned, when that
    /// changes `cluster.toml`.
    pin: Option<crate::cluster::spec::AwsSpec>,
}

async fn prepare(ctx: &Ctx, repo: &Repo, loaded: &Loaded, update_image: bool) -> Result<Prepared> {
    let spec = &loaded.spec;
    let aws = Aws::connect(spec).await?;
    let graph = model::graph(spec);
    let (mut world, image) = tokio::try_join!(world::discover(&aws, spec), image(&aws, spec, update_image))?;
    // The zones: the pinned ones (each still offered), or the first of the
    // region's Availability Zones, pinned by this apply.
    let zones: Vec<String> = if spec.aws.zones.is_empty() {
        world.zones.iter().take(spec.azs as usize).cloned().collect()
    } else {
        if let Some(z) = spec.aws.zones.iter().find(|z| !world.zones.contains(z)) {
            return Err(failed(format!("the pinned availability zone {z} is not available in {}", spec.region))
                .hint("the cluster's subnets stay where they are: check the zone's status in the AWS console")
                .into());
        }
        spec.aws.zones.clone()
    };
    if zones.len() < spec.azs as usize {
        return Err(failed(format!(
            "{} has {} availability zones; the spec wants {}",
            spec.region,
            world.zones.len(),
            spec.azs
        ))
        .into());
    }
    world.zones = zones.clone();
    let inputs = inputs(ctx, repo, loaded, &graph, &image)?;
    let mut changes = plan::plan(spec, &graph, &world, &inputs.wanted);
    let pinned = crate::cluster::spec::AwsSpec {
        image: image.pin.clone().or_else(|| spec.aws.image.clone()),
        zones,
        ..spec.aws.clone()
    };
    let pin = (pinned != spec.aws).then_some(pinned);
    if let Some(p) = &pin {
        if p.image != spec.aws.image {
            let (now, was) = (p.image.as_deref().unwrap_or("none"), spec.aws.image.as_deref().unwrap_or("none"));
            changes.push(plan::Change::new(
                "spec/image",
                Action::Note(format!(
                    "apply pins {now}, the latest Amazon Linux 2023, in cluster.toml (pinned: {was})"
                )),
            ));
        }
        if p.zones != spec.aws.zones {
            changes.push(plan::Change::new(
                "spec/zones",
                Action::Note(format!("apply pins the zones {} in cluster.toml", p.zones.join(", "))),
            ));
        }
    }
    if let Some(newer) = image.newer {
        changes.push(plan::Change::new(
            "spec/image",
            Action::Note(format!(
                "a newer Amazon Linux 2023 image exists ({newer}; cluster.toml pins {}): \
                 `kaws cluster apply --update-image` pins it; running instances keep theirs until replaced",
                image.id
            )),
        ));
    }
    Ok(Prepared { aws, graph, world, inputs, changes, pin })
}

fn show(ctx: &Ctx, changes: &[plan::Change]) {
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan::to_json(changes)).expect("json")),
        Output::Text => print!("{}", plan::to_text(changes, std::io::stdout().is_terminal())),
    }
}

pub fn plan(ctx: &Ctx, raw: &str) -> Result<()> {
    let (Opened { repo, .. }, loaded) = open_cluster(ctx, raw, false)?;
    let p = runtime()?.block_on(prepare(ctx, &repo, &loaded, false))?;
    show(ctx, &p.changes);
    Ok(())
}

pub fn apply(ctx: &Ctx, raw: &str, yes: bool, parallelism: u16, update_image: bool) -> Result<()> {
    let (opened, loaded) = open_cluster(ctx, raw, true)?;
    let rt = runtime()?;
    let mut p = rt.block_on(prepare(ctx, &opened.repo, &loaded, update_image))?;
    // Only a primary changes the spec: refused before anything changes.
    if p.pin.is_some() {
        primary_operator(ctx, &opened.repo, &opened.admins, &loaded)?;
    }
    if let Some(c) = p.changes.iter().find(|c| matches!(c.action, Action::Blocked(_))) {
        show(ctx, &p.changes);
        return Err(failed(format!("{} blocks the apply", c.key)).hint("see the plan above").into());
    }
    let mutating = p.changes.iter().filter(|c| c.mutates()).count();
    if mutating > 0 {
        show(ctx, &p.changes);
        confirm(&format!("Apply {mutating} changes to cluster {} in {}?", loaded.name, loaded.spec.region), yes)?;
        p.inputs.secrets = secrets(ctx, &opened, &loaded, &p.graph, &p.changes)?;
    } else {
        eprintln!("{}: AWS matches the spec; nothing to change.", loaded.name);
    }
    let progress = indicatif::ProgressBar::new(mutating as u64).with_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {pos}/{len} {wide_msg}")
            .expect("a valid template"),
    );
    let tty = std::io::stderr().is_terminal();
    if !tty {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let runner = Runner::new(&p.aws, &loaded.spec, &p.inputs, parallelism.into());
    let surplus: Vec<plan::Change> =
        p.changes.iter().filter(|c| matches!(c.action, Action::Delete { .. })).cloned().collect();
    let made = rt.block_on(async {
        let made = crate::aws::apply::run(&runner, &p.graph, &p.world, |d| {
            progress.inc(1);
            progress.set_message(d.key.clone());
            if tty {
                progress.println(format!("  done {}", d.key));
            } else {
                eprintln!("  done {}", d.key);
            }
        })
        .await?;
        // Surplus last: duplicates and resources the spec no longer has.
        for c in &surplus {
            if let Action::Delete { found, why } = &c.action {
                crate::aws::destroy::delete(&p.aws, &c.key, found, false)
                    .await
                    .with_context(|| format!("{}: delete ({why})", c.key))?;
                progress.inc(1);
                eprintln!("  deleted {} ({})", c.key, found.id);
            }
        }
        anyhow::Ok(made)
    })?;
    progress.finish_and_clear();
    // The outputs, from the state after the run.
    let mut state: HashMap<String, world::Found> =
        p.world.found.iter().filter_map(|(k, v)| Some((k.clone(), v.first()?.clone()))).collect();
    state.extend(made);
    let lb = state.get("lb/api").and_then(|l| l.dns.clone()).map(|(d, _)| d).context("the load balancer is missing")?;
    let outputs = Outputs {
        region: loaded.spec.region.clone(),
        api_endpoint: lb,
        api_name: loaded.spec.api_name(),
        bastion: state.get("instance/bastion").and_then(|b| b.public_ip.clone()),
        ids: p
            .graph
            .iter()
            .filter(|n| !matches!(n.kind, Kind::Rules(_) | Kind::Targets { .. } | Kind::Parameter { .. }))
            .filter_map(|n| Some((n.key.clone(), state.get(&n.key)?.id.clone())))
            .collect(),
    };
    let spec = p.pin.map(|aws| crate::cluster::ClusterSpec { aws, ..loaded.spec.clone() });
    record(ctx, &opened, &loaded, Some(&outputs), spec.as_ref(), "apply")?;
    println!("{}: applied.", loaded.name);
    println!("  API:     https://{}:6443 (TLS name {})", outputs.api_endpoint, outputs.api_name);
    if let Some(b) = &outputs.bastion {
        println!("  bastion: {b}");
    }
    Ok(())
}

/// Commits outputs.toml (or its removal) when it differs from HEAD, and
/// the spec when `spec` changes it (a newly pinned image), in one commit.
fn record(
    ctx: &Ctx,
    opened: &Opened,
    loaded: &Loaded,
    outputs: Option<&Outputs>,
    spec: Option<&crate::cluster::ClusterSpec>,
    verb: &str,
) -> Result<()> {
    use crate::tomlfile::TomlFile;
    let path = loaded.path(OUTPUTS_FILE);
    let old: Option<Outputs> = opened.repo.read_toml(&path)?;
    if old.as_ref() == outputs && spec.is_none() {
        return Ok(());
    }
    let op = ctx.operator(&opened.repo, &opened.admins)?;
    let actor = op.name().cloned().context("the operator is an administrator")?;
    let mut change = Change::default();
    match outputs {
        Some(o) => change.write(path, o.to_toml()),
        None => change.remove(path),
    };
    if let Some(s) = spec {
        change.write(loaded.path(crate::cluster::spec::SPEC_FILE), s.to_toml());
    }
    let what = if spec.is_some() { "outputs and pinned image and zones" } else { "outputs" };
    let message = format!("kaws cluster {verb}: {} {what}\n\nBy: {actor} ({})\n", loaded.name, op.fingerprint());
    if let Some(oid) = opened.repo.commit(&change, &message, &ctx.author(&opened.repo, &actor), &op)? {
        eprintln!("Recorded the outputs in commit {oid}");
    }
    Ok(())
}

pub fn destroy(ctx: &Ctx, raw: &str, yes: bool, force: bool) -> Result<()> {
    let (opened, loaded) = open_cluster(ctx, raw, true)?;
    let rt = runtime()?;
    let spec = &loaded.spec;
    let aws = rt.block_on(Aws::connect(spec))?;
    let world = rt.block_on(world::discover(&aws, spec))?;
    let items: Vec<String> = world
        .found
        .iter()
        .filter(|(k, _)| !k.starts_with("targets/"))
        .flat_map(|(k, v)| v.iter().map(move |f| format!("  - {k} ({})", f.id)))
        .collect();
    if items.is_empty() {
        eprintln!("{}: nothing tagged kaws:cluster={} exists in {}.", loaded.name, loaded.name, spec.region);
    } else {
        println!("{}", items.join("\n"));
        confirm(
            &format!("Delete these {} resources of cluster {} in {}?", items.len(), loaded.name, spec.region),
            yes,
        )?;
        let n = rt.block_on(crate::aws::destroy::destroy(&aws, &world, force, |k, f| {
            eprintln!("  deleted {k} ({})", f.id)
        }))?;
        eprintln!("{}: deleted {n} resources", loaded.name);
    }
    let left = rt.block_on(crate::aws::destroy::remaining(&aws, spec))?;
    if !left.is_empty() {
        return Err(failed(format!(
            "still tagged kaws:cluster={} after destroy:\n  {}",
            loaded.name,
            left.join("\n  ")
        ))
        .hint("run `kaws cluster destroy` again; AWS releases some resources late")
        .into());
    }
    record(ctx, &opened, &loaded, None, None, "destroy")?;
    println!("{}: destroyed; nothing tagged kaws:cluster={} remains in {}.", loaded.name, loaded.name, spec.region);
    Ok(())
}
