//! The image instances run: the one the spec pins, or (none pinned yet, or
//! `--update-image`) the latest Amazon Linux 2023 from AWS's public SSM
//! parameter for the instance types' architecture, which apply then pins in
//! `cluster.toml`, so that a new release does not re-template every instance.

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types::{ArchitectureType, InstanceType};

use super::{Aws, Call};
use crate::cluster::ClusterSpec;
use crate::error::failed;

/// Where AWS publishes the latest Amazon Linux 2023 image id, per architecture.
const AL2023: &str = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-";

pub struct Image {
    pub id: String,
    pub root_device: String,
    /// The image to pin in the spec (the spec pins none, or is updated).
    pub pin: Option<String>,
    /// A newer Amazon Linux 2023 than the pinned one, for the plan to say.
    pub newer: Option<String>,
}

/// The one architecture of the spec's instance types.
async fn architecture(aws: &Aws, spec: &ClusterSpec) -> Result<String> {
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

/// The latest Amazon Linux 2023 image of each architecture, in one call
/// (a name AWS does not know is left out of the answer, not an error).
async fn latest(aws: &Aws) -> Result<Vec<(String, String)>> {
    let names = ["x86_64", "arm64"].map(|arch| format!("{AL2023}{arch}"));
    let out = aws.ssm.get_parameters().set_names(Some(names.to_vec())).send().await.call("GetParameters")?;
    Ok(out
        .parameters()
        .iter()
        .filter_map(|p| Some((p.name()?.strip_prefix(AL2023)?.to_owned(), p.value()?.to_owned())))
        .collect())
}

async fn describe(aws: &Aws, id: &str) -> Result<Option<aws_sdk_ec2::types::Image>> {
    let out = aws.ec2.describe_images().image_ids(id).send().await.call("DescribeImages")?;
    Ok(out.images().first().cloned())
}

/// The architecture, both latest images and the pinned image's description
/// are asked at once; the latest image is described after, when it is used.
pub async fn resolve(aws: &Aws, spec: &ClusterSpec, update: bool) -> Result<Image> {
    let pinned = spec.aws.image.as_deref().filter(|_| !update);
    let (arch, latest, described) = tokio::try_join!(architecture(aws, spec), latest(aws), async {
        match pinned {
            Some(id) => describe(aws, id).await,
            None => Ok(None),
        }
    })?;
    let latest = latest
        .into_iter()
        .find(|(a, _)| *a == arch)
        .map(|(_, id)| id)
        .with_context(|| format!("AWS publishes no latest Amazon Linux 2023 image for {arch} ({AL2023}{arch})"))?;
    let (id, pin, found) = match pinned {
        Some(id) => (id.to_owned(), None, described),
        None => (latest.clone(), Some(latest.clone()), describe(aws, &latest).await?),
    };
    let found = found.ok_or_else(|| {
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
