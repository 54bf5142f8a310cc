//! `kaws cluster plan / apply / destroy`: the AWS footprint of a cluster.
//! This module resolves the inputs (from HEAD of an authenticated
//! repository: the user-data of each host; secrets are decrypted, by a
//! primary, in memory, only when a parameter must be written), asks for
//! confirmation, prints, and commits what apply made (`outputs.toml`, and
//! the pinned image and zones). What AWS is asked is in `crate::aws`.

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::{Context as _, Result};
use zeroize::Zeroizing;

use super::{open_cluster, primary_operator, Loaded};
use crate::aws::apply::Done;
use crate::aws::image::{self, Image};
use crate::aws::key::{Host, Key};
use crate::aws::model::{self, Node};
use crate::aws::outputs::{Outputs, OUTPUTS_FILE};
use crate::aws::plan::{self, Change};
use crate::aws::resources::ssm::{self, Source, RENEWED_TTL_SECS};
use crate::aws::resources::{launch, Action, Ctx as AwsCtx, Desired, Inputs, Wanted};
use crate::aws::world::{self, World};
use crate::aws::{self as cloud, Aws};
use crate::cli::Output;
use crate::commands::Opened;
use crate::context::Ctx;
use crate::error::{failed, UserError};
use crate::render::{self, Context, Role};
use crate::repo::Change as RepoChange;

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// Everything but the secrets: user-data per instance, digests, markers;
/// and the trust generation they make.
fn inputs(opened: &Opened, loaded: &Loaded, graph: &[Node], image: &Image) -> Result<(Inputs, String)> {
    let spec = &loaded.spec;
    let public = super::render::public_inputs(&opened.repo, loaded, &opened.admins)?;
    let repo = &opened.repo;
    let endpoint: crate::name::DnsName = spec.api_name().parse().expect("a valid spec's API name");
    let mut user_data = HashMap::new();
    let mut wanted = Wanted::default();
    let mut public_values = HashMap::new();
    let mut parameters: HashMap<String, String> =
        super::render::public_parameters(loaded, &public)?.into_iter().collect();
    for node in graph {
        let host = match &node.want {
            Desired::Instance(w) => w.host,
            Desired::Lt => Host::Node,
            Desired::Param(p) => {
                let marker = match &p.source {
                    Source::Sealed(source) => {
                        let bytes =
                            repo.read_head(&loaded.path(source))?.with_context(|| format!("{source} is missing"))?;
                        // Which sealed file, and which key encrypts it: a
                        // change of either rewrites the parameter.
                        format!("kaws source {} key {}", cloud::digest(&[&bytes]), crate::aws::naming::kms_alias(spec))
                    }
                    _ => {
                        let value = parameters.remove(&p.name).with_context(|| format!("no value for {}", p.name))?;
                        let marker = match p.source {
                            Source::Generation => format!("kaws generation {value}"),
                            _ => format!("kaws public {}", cloud::digest(&[value.as_bytes()])),
                        };
                        public_values.insert(node.key.clone(), value);
                        marker
                    }
                };
                wanted.markers.insert(node.key.clone(), marker);
                continue;
            }
            _ => continue,
        };
        let role = match host {
            Host::Bastion => Role::Bastion,
            Host::Master(i) => Role::Master(i),
            Host::Node => Role::Node,
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
        wanted.config.insert(node.key.clone(), launch::config(spec, host, &bytes, &image.id, &image.root_device));
        user_data.insert(node.key.clone(), bytes);
    }
    wanted.image = Some(image.id.clone());
    let inputs = Inputs {
        image: image.id.clone(),
        root_device: image.root_device.clone(),
        user_data,
        wanted,
        secrets: HashMap::new(),
        public: public_values,
    };
    Ok((inputs, render::context::generation(&public.pki)))
}

/// Decrypts the values of the parameters the plan writes.
fn secrets(
    ctx: &Ctx,
    opened: &Opened,
    loaded: &Loaded,
    graph: &[Node],
    changes: &[Change],
) -> Result<HashMap<Key, Zeroizing<String>>> {
    let needed: Vec<(&Key, &crate::aws::resources::ssm::Want)> = graph
        .iter()
        .filter_map(|n| match &n.want {
            Desired::Param(p) if p.source.secret() && changes.iter().any(|c| c.key == n.key && c.writes_value()) => {
                Some((&n.key, p))
            }
            _ => None,
        })
        .collect();
    let mut out = HashMap::new();
    if needed.is_empty() {
        return Ok(out);
    }
    let op = primary_operator(ctx, &opened.repo, &opened.admins, loaded)?;
    for (key, p) in needed {
        let Source::Sealed(source) = &p.source else { continue };
        let plain = super::open_checked(ctx, &opened.repo, loaded, &op, source)?;
        // Copied once into zeroizing memory; no plain copy outlives this loop.
        let text = Zeroizing::new(
            std::str::from_utf8(&plain).map_err(|_| failed(format!("{} is not text", p.source)))?.to_owned(),
        );
        if text.len() > super::render::SSM_LIMIT {
            return Err(failed(format!(
                "{}: {} bytes is over SSM's 4 KiB standard parameter limit",
                p.name,
                text.len()
            ))
            .into());
        }
        out.insert(key.clone(), text);
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
    graph: Vec<Node>,
    world: World,
    inputs: Inputs,
    /// The trust generation the inputs make: what every instance should run.
    generation: String,
    changes: Vec<Change>,
    /// The spec's AWS choices with the image and zones pinned, when that
    /// changes `cluster.toml`.
    pin: Option<crate::cluster::spec::AwsSpec>,
}

async fn prepare(opened: &Opened, loaded: &Loaded, update_image: bool) -> Result<Prepared> {
    let repo = &opened.repo;
    let spec = &loaded.spec;
    let aws = Aws::connect(spec).await?;
    let graph = model::graph(spec);
    let (mut world, image) = tokio::try_join!(world::discover(&aws, spec), image::resolve(&aws, spec, update_image))?;
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
    let (inputs, generation) = inputs(opened, loaded, &graph, &image)?;
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
            changes.push(Change::new(
                Key::Other("spec/image".into()),
                Action::Note(format!(
                    "apply pins {now}, the latest Amazon Linux 2023, in cluster.toml (pinned: {was})"
                )),
            ));
        }
        if p.zones != spec.aws.zones {
            changes.push(Change::new(
                Key::Other("spec/zones".into()),
                Action::Note(format!("apply pins the zones {} in cluster.toml", p.zones.join(", "))),
            ));
        }
    }
    // Instances made now join with the repository's bootstrap token until
    // the masters renew it in the cluster: an expired one would leave them
    // outside the cluster.
    let record: Option<crate::cluster::token::Record> =
        repo.read_toml(&loaded.path(crate::cluster::token::RECORD_FILE))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    // Once renewed, the parameter holds 2-hour tokens: its last renewal is
    // what expires (renewals stopped: the masters' kaws-token.service).
    let renewed = ssm::renewed(spec, world.found.values().flatten());
    let record = match renewed {
        Some(at) => Some(crate::cluster::token::Record { created: String::new(), expires: at + RENEWED_TTL_SECS }),
        None => record,
    };
    let name = loaded.name.to_string();
    if let Some(c) = record.and_then(|r| expired_token(&r, now, &changes, &name, renewed.is_some())) {
        changes.push(c);
    }
    if let Some(newer) = image.newer {
        changes.push(Change::new(
            Key::Other("spec/image".into()),
            Action::Note(format!(
                "a newer Amazon Linux 2023 image exists ({newer}; cluster.toml pins {}): \
                 `kaws cluster apply --update-image` pins it; running instances keep theirs until replaced",
                image.id
            )),
        ));
    }
    Ok(Prepared { aws, graph, world, inputs, generation, changes, pin })
}

/// An expired bootstrap token: blocks an apply that makes masters or the
/// node group (they could not join), and is a note otherwise.
fn expired_token(
    r: &crate::cluster::token::Record,
    now: i64,
    changes: &[Change],
    name: &str,
    renewed: bool,
) -> Option<Change> {
    if r.expires > now {
        return None;
    }
    let launches = changes.iter().any(|c| {
        matches!(c.key, Key::Instance(Host::Master(_)) | Key::Asg)
            && matches!(c.action, Action::Create | Action::Replace { .. })
    });
    let why = if renewed {
        format!(
            "the masters last renewed the node bootstrap token at {} (2-hour tokens): it has expired, so \
             masters and nodes made now could not join; see `journalctl -u kaws-token.service` on the masters",
            crate::context::rfc3339_unix(r.expires - RENEWED_TTL_SECS)
        )
    } else {
        format!(
            "the bootstrap token expired at {}: masters and nodes made now could not join; \
             run `kaws cluster token {name} --renew`, then apply",
            crate::context::rfc3339_unix(r.expires)
        )
    };
    let action = if launches { Action::Blocked(why) } else { Action::Note(why) };
    Some(Change::new(Key::Other("spec/token".into()), action))
}

fn show(ctx: &Ctx, changes: &[Change]) {
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan::to_json(changes)).expect("json")),
        Output::Text => print!("{}", plan::to_text(changes, std::io::stdout().is_terminal())),
    }
}

pub fn plan(ctx: &Ctx, raw: &str) -> Result<()> {
    let (opened, loaded) = open_cluster(ctx, raw, false)?;
    let p = runtime()?.block_on(prepare(&opened, &loaded, false))?;
    show(ctx, &p.changes);
    Ok(())
}

pub fn apply(
    ctx: &Ctx,
    raw: &str,
    yes: bool,
    parallelism: u16,
    update_image: bool,
    wait: Option<std::time::Duration>,
) -> Result<()> {
    let (opened, loaded) = open_cluster(ctx, raw, true)?;
    let rt = runtime()?;
    let mut p = rt.block_on(prepare(&opened, &loaded, update_image))?;
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
    let cx = AwsCtx::new(&p.aws, &loaded.spec, &p.inputs);
    let state = rt.block_on(crate::aws::apply::run(&cx, &p.graph, &p.world, &p.changes, parallelism.into(), |d| {
        let line = match d {
            Done::Changed(key) => {
                progress.set_message(key.to_string());
                format!("  done {key}")
            }
            Done::Deleted(key, found) => format!("  deleted {key} ({})", found.id),
        };
        progress.inc(1);
        if tty {
            progress.println(line);
        } else {
            eprintln!("{line}");
        }
    }))?;
    progress.finish_and_clear();
    let outputs = Outputs::of(&loaded.spec, &p.graph, &state).context("the load balancer is missing")?;
    let spec = p.pin.map(|aws| crate::cluster::ClusterSpec { aws, ..loaded.spec.clone() });
    record(ctx, &opened, &loaded, Some(&outputs), spec.as_ref(), "apply")?;
    println!("{}: applied.", loaded.name);
    println!("  API:     https://{}:6443 (TLS name {})", outputs.api_endpoint, outputs.api_name);
    if let Some(b) = &outputs.bastion {
        println!("  bastion: {b}");
    }
    // A new trust generation (a rotation's phase, a renewal) reaches the
    // running instances: masters in place, nodes replaced.
    let want = p.generation;
    // The wait reads nothing more of the repository: other commands (status,
    // a colleague's) may use it meanwhile.
    drop(opened);
    let found = rt.block_on(crate::aws::resources::instance::discover(&p.aws, &loaded.spec))?;
    if super::rollout::rolling(&found, &want) {
        let Some(limit) = wait else {
            eprintln!(
                "{}: instances run an older trust generation; `kaws cluster status {}` shows each reach {want}",
                loaded.name, loaded.name
            );
            return Ok(());
        };
        eprintln!(
            "{}: rolling trust generation {want} out (masters in place, one at a time; nodes replaced by their \
             group's instance refresh)",
            loaded.name
        );
        rt.block_on(super::rollout::roll(&p.aws, &loaded.spec, &want, limit, &|line| eprintln!("  {line}")))?;
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
    let mut change = RepoChange::default();
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
    // Removing outputs.toml is a primary's change (see repo::rules).
    super::primary_operator(ctx, &opened.repo, &opened.admins, &loaded)?;
    let rt = runtime()?;
    let spec = &loaded.spec;
    let aws = rt.block_on(Aws::connect(spec))?;
    let world = rt.block_on(world::discover(&aws, spec))?;
    let items: Vec<String> = crate::aws::destroy::doomed(&world).map(|(k, f)| format!("  - {k} ({})", f.id)).collect();
    if items.is_empty() {
        eprintln!("{}: nothing tagged kaws:cluster={} exists in {}.", loaded.name, loaded.name, spec.region);
    } else {
        println!("{}", items.join("\n"));
        confirm(
            &format!("Delete these {} resources of cluster {} in {}?", items.len(), loaded.name, spec.region),
            yes,
        )?;
        let n = rt.block_on(crate::aws::destroy::destroy(&aws, spec, &world, force, |k, f| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_token_blocks_only_an_apply_that_launches() {
        let r = crate::cluster::token::Record { created: "2026-11-28T00:00:00Z".into(), expires: 1_000 };
        assert!(expired_token(&r, 999, &[], "prod", false).is_none());
        let quiet = expired_token(&r, 1_000, &[], "prod", false).unwrap();
        assert!(matches!(&quiet.action, Action::Note(n) if n.contains("kaws cluster token prod --renew")));
        let launch = [Change::new(Key::Instance(Host::Master(0)), Action::Create)];
        assert!(matches!(expired_token(&r, 2_000, &launch, "prod", false).unwrap().action, Action::Blocked(_)));
        let stale = expired_token(&r, 2_000, &launch, "prod", true).unwrap();
        assert!(matches!(&stale.action, Action::Blocked(b) if b.contains("kaws-token.service")));
        let bastion = [Change::new(Key::Instance(Host::Bastion), Action::Create)];
        assert!(matches!(expired_token(&r, 2_000, &bastion, "prod", false).unwrap().action, Action::Note(_)));
    }
}
