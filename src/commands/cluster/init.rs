//! `kaws cluster init`: spec, CAs, the control-plane certificate set and
//! every private key sealed to the primaries, in one signed commit.

use crate::tomlfile::TomlFile;
use anyhow::{Context as _, Result};

use super::cluster_path;
use crate::cli::ClusterInitArgs;
use crate::cluster::spec::{AwsSpec, ClusterSpec, Validity, FORMAT, SPEC_FILE};
use crate::cluster::{token, PRIMARIES_FILE};
use crate::context::{parse_name, Ctx};
use crate::error::{failed, refused, UserError};
use crate::name::{AdminName, ClusterName};
use crate::pki;
use crate::repo::{Change, CLUSTERS_DIR};

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    UserError::usage(e.to_string()).hint("nothing was written; correct the option and run again").into()
}

fn parse_net(raw: &str, what: &str) -> Result<ipnet::Ipv4Net> {
    raw.parse().map_err(|_| usage(format!("{what} {raw:?} is not an IPv4 CIDR (like 10.0.0.0/16)")))
}

/// Builds and validates the spec from the command line, before anything else.
fn spec_from(args: &ClusterInitArgs, name: ClusterName, default_alg: pki::KeyAlgorithm) -> Result<ClusterSpec> {
    let spec = ClusterSpec {
        format: FORMAT,
        name,
        domain: args.domain.parse().map_err(|e| usage(format!("--domain: {e}")))?,
        region: args.region.clone(),
        kubernetes_version: args.kubernetes_version.clone(),
        masters: args.masters,
        nodes: args.nodes,
        azs: args.azs,
        vpc_cidr: parse_net(&args.vpc_cidr, "--vpc-cidr")?,
        service_cidr: parse_net(&args.service_cidr, "--service-cidr")?,
        pod_cidr: parse_net(&args.pod_cidr, "--pod-cidr")?,
        cluster_domain: args.cluster_domain.parse().map_err(|e| usage(format!("--cluster-domain: {e}")))?,
        admin_cidrs: args.admin_cidrs.iter().map(|c| parse_net(c, "--admin-cidr")).collect::<Result<_>>()?,
        allow_world_admin: args.allow_world_admin,
        key_algorithm: match &args.key_algorithm {
            Some(a) => a.parse().map_err(|e| usage(format!("--key-algorithm: {e}")))?,
            None => default_alg,
        },
        validity: Validity { ca_days: args.ca_days, leaf_days: args.leaf_days },
        aws: AwsSpec {
            image: args.aws.image.clone(),
            bastion_type: args.aws.bastion_type.clone(),
            master_type: args.aws.master_type.clone(),
            node_type: args.aws.node_type.clone(),
            root_volume_gib: args.aws.root_volume_gib,
            single_nat: args.aws.single_nat,
            nodeport_cidrs: args
                .aws
                .nodeport_cidrs
                .iter()
                .map(|c| parse_net(c, "--nodeport-cidr"))
                .collect::<Result<_>>()?,
            hosted_zone: args.aws.hosted_zone.clone(),
            // Picked and pinned by the first apply.
            zones: Vec::new(),
        },
    };
    spec.validate().map_err(usage)?;
    Ok(spec)
}

/// A bootstrap-token record valid for `hours` from now.
pub(crate) fn token_record(ctx: &Ctx, hours: u32) -> Result<token::Record> {
    let now = ctx.unix_now();
    Ok(token::Record { created: crate::context::rfc3339(ctx.now), expires: now + i64::from(hours) * 3600 })
}

pub fn init(ctx: &Ctx, args: ClusterInitArgs) -> Result<()> {
    let name: ClusterName = parse_name(&args.cluster, "cluster name")?;
    let primary_names: Vec<AdminName> =
        args.primaries.iter().map(|p| parse_name(p, "--primary")).collect::<Result<_>>()?;
    let crate::commands::Opened { repo, config, admins } = crate::commands::open(ctx, true)?;
    let spec = spec_from(&args, name.clone(), config.defaults.key_algorithm)?;
    if repo.list_head_dirs(CLUSTERS_DIR)?.iter().any(|d| d == name.as_str()) {
        return Err(failed(format!("the cluster {name} exists already"))
            .hint(format!("inspect it with `kaws cluster certs {name}`"))
            .into());
    }

    let op = ctx.operator(&repo, &admins)?;
    let actor = op
        .name()
        .cloned()
        .ok_or_else(|| refused(format!("the operator key {} is not an administrator", op.fingerprint())))?;
    let names = if primary_names.is_empty() { vec![actor.clone()] } else { primary_names };
    let primaries = super::primaries_from(&admins, &names)?;
    let readers = super::primary_certs(ctx, &admins, &primaries)?;
    if args.admin_cidrs.iter().any(|c| c.ends_with("/0")) {
        eprintln!(
            "warning: the bastion and the API will accept connections from the whole internet (--allow-world-admin)"
        );
    }

    let material = pki::issue_cluster(&spec, ctx.now).context("issuing the cluster's certificates")?;
    let mut change = Change::default();
    change.write(cluster_path(&name, SPEC_FILE), spec.to_toml());
    change.write(cluster_path(&name, PRIMARIES_FILE), primaries.to_toml());
    for (path, pem) in &material.certs {
        change.write(cluster_path(&name, &format!("pki/{path}.crt")), pem.as_bytes());
    }
    change.write(cluster_path(&name, "pki/sa.pub"), material.sa_pub.as_bytes());
    let token = token::generate();
    let mut plains: Vec<&[u8]> = material.keys.iter().map(|k| k.pem.as_bytes()).collect();
    plains.push(token.as_bytes());
    let mut sealed =
        crate::vault::seal_all(&plains, &readers, &ctx.policy, ctx.now).context("sealing the cluster's keys")?;
    change.write(cluster_path(&name, token::SEALED_FILE), sealed.pop().expect("the token is sealed"));
    change.write(cluster_path(&name, token::RECORD_FILE), token_record(ctx, token::DEFAULT_TTL_HOURS)?.to_toml());
    for (key, armored) in material.keys.iter().zip(sealed) {
        change.write(cluster_path(&name, &format!("pki/{}.key.pgp", key.path)), armored);
    }
    let primary_list: Vec<String> = primaries.primaries.keys().map(|n| n.to_string()).collect();
    let message = format!(
        "kaws cluster init: {name} ({} certificates, {} sealed keys)\n\nPrimaries: {}\nBy: {actor} ({})\n",
        material.certs.len(),
        material.keys.len(),
        primary_list.join(", "),
        op.fingerprint()
    );
    let oid = repo.commit(&change, &message, &ctx.author(&repo, &actor), &op)?.context("nothing changed")?;
    println!("Created cluster {name} in commit {oid}");
    println!("  API name: {}", spec.api_name());
    println!(
        "  {} certificates under clusters/{name}/pki/, {} keys sealed to {}",
        material.certs.len(),
        material.keys.len(),
        primary_list.join(", ")
    );
    for i in 0..spec.masters {
        println!("  master {i}: {} ({})", spec.master_node_name(i), spec.master_ip(i));
    }
    if spec.admin_cidrs.is_empty() {
        eprintln!(
            "note: no --admin-cidr given; nobody will be able to reach the bastion or the API until one is added"
        );
    }
    Ok(())
}
