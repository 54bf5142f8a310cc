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

pub async fn resolve(aws: &Aws, spec: &ClusterSpec, update: bool) -> Result<Image> {
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
