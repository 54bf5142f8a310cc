//! What an instance is launched with, shared by the masters and bastion
//! (RunInstances) and the nodes' launch template: image, type, instance
//! profile, group, network, metadata options (IMDSv2 only, one hop), an
//! encrypted gp3 root volume, and the user-data. One description, two
//! renderings, so that the two can never drift apart.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use aws_sdk_ec2::types as ec2t;
use base64::Engine as _;

use super::{Ctx, State};
use crate::aws::key::{Host, Key};
use crate::cluster::ClusterSpec;

/// The instance type of a host.
pub fn instance_type(spec: &ClusterSpec, host: Host) -> &str {
    match host {
        Host::Bastion => &spec.aws.bastion_type,
        Host::Master(_) => &spec.aws.master_type,
        Host::Node => &spec.aws.node_type,
    }
}

/// The configuration digest of a host (its `kaws:config` tag, or the
/// launch template's version description): any change of what it runs.
pub fn config(spec: &ClusterSpec, host: Host, user_data: &[u8], image: &str, root_device: &str) -> String {
    let (size, iam) = (spec.aws.root_volume_gib.to_string(), Key::Iam(host).to_string());
    crate::aws::digest(&[
        user_data,
        instance_type(spec, host).as_bytes(),
        image.as_bytes(),
        root_device.as_bytes(),
        size.as_bytes(),
        iam.as_bytes(),
    ])
}

pub struct Launch {
    pub image: String,
    pub itype: String,
    pub profile: String,
    pub group: String,
    pub root_device: String,
    pub root_gib: i32,
    /// Base64, as EC2 takes it.
    pub user_data: String,
}

/// What every instance runs with, whichever API launches it: instance
/// metadata through IMDSv2 only, one hop (containers cannot reach it), an
/// encrypted gp3 root volume that goes with the instance, and the user-data.
/// One definition for both builders, whose types differ only in name.
trait Hardened: Sized {
    fn hardened(self, l: &Launch) -> Self;
}

macro_rules! hardened {
    ($builder:ty, $meta:ident, $tokens:ident, $endpoint:ident, $mapping:ident, $ebs:ident) => {
        impl Hardened for $builder {
            fn hardened(self, l: &Launch) -> Self {
                self.metadata_options(
                    ec2t::$meta::builder()
                        .http_tokens(ec2t::$tokens::Required)
                        .http_put_response_hop_limit(1)
                        .http_endpoint(ec2t::$endpoint::Enabled)
                        .build(),
                )
                .block_device_mappings(
                    ec2t::$mapping::builder()
                        .device_name(&l.root_device)
                        .ebs(
                            ec2t::$ebs::builder()
                                .volume_size(l.root_gib)
                                .volume_type(ec2t::VolumeType::Gp3)
                                .encrypted(true)
                                .delete_on_termination(true)
                                .build(),
                        )
                        .build(),
                )
                .user_data(&l.user_data)
            }
        }
    };
}

hardened!(
    aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder,
    InstanceMetadataOptionsRequest,
    HttpTokensState,
    InstanceMetadataEndpointState,
    BlockDeviceMapping,
    EbsBlockDevice
);
hardened!(
    ec2t::builders::RequestLaunchTemplateDataBuilder,
    LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateHttpTokensState,
    LaunchTemplateInstanceMetadataEndpointState,
    LaunchTemplateBlockDeviceMappingRequest,
    LaunchTemplateEbsBlockDeviceRequest
);

impl Launch {
    pub fn of(cx: &Ctx<'_>, key: &Key, host: Host, st: &State) -> Result<Launch> {
        let bytes = cx.inputs.user_data.get(key).with_context(|| format!("no user-data for {key}"))?;
        Ok(Launch {
            image: cx.inputs.image.clone(),
            itype: instance_type(cx.spec, host).to_owned(),
            profile: st.need(&Key::Iam(host))?,
            group: st.need(&Key::Group(host.role()))?,
            root_device: cx.inputs.root_device.clone(),
            root_gib: cx.spec.aws.root_volume_gib as i32,
            user_data: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    /// RunInstances of one instance in `subnet`, at `ip` if given.
    pub fn run(
        &self,
        ec2: &aws_sdk_ec2::Client,
        subnet: &str,
        ip: Option<Ipv4Addr>,
        public: bool,
    ) -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder {
        let mut nic = ec2t::InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .subnet_id(subnet)
            .groups(&self.group)
            .associate_public_ip_address(public)
            .delete_on_termination(true);
        if let Some(ip) = ip {
            nic = nic.private_ip_address(ip.to_string());
        }
        ec2.run_instances()
            .image_id(&self.image)
            .instance_type(ec2t::InstanceType::from(self.itype.as_str()))
            .min_count(1)
            .max_count(1)
            .network_interfaces(nic.build())
            .iam_instance_profile(ec2t::IamInstanceProfileSpecification::builder().name(&self.profile).build())
            .hardened(self)
    }

    /// A launch template's data; instances and volumes get `tags`.
    pub fn template(&self, tags: Vec<ec2t::Tag>) -> ec2t::RequestLaunchTemplateData {
        let tagged = |rt: ec2t::ResourceType| {
            ec2t::LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(rt)
                .set_tags(Some(tags.clone()))
                .build()
        };
        ec2t::RequestLaunchTemplateData::builder()
            .image_id(&self.image)
            .instance_type(ec2t::InstanceType::from(self.itype.as_str()))
            .iam_instance_profile(
                ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(&self.profile).build(),
            )
            .network_interfaces(
                ec2t::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(false)
                    .delete_on_termination(true)
                    .groups(&self.group)
                    .build(),
            )
            .hardened(self)
            .tag_specifications(tagged(ec2t::ResourceType::Instance))
            .tag_specifications(tagged(ec2t::ResourceType::Volume))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_renderings_are_hardened_alike() {
        let l = Launch {
            image: "ami-1".into(),
            itype: "t3.small".into(),
            profile: "p".into(),
            group: "sg-1".into(),
            root_device: "/dev/xvda".into(),
            root_gib: 20,
            user_data: "dXNlcg==".into(),
        };
        let client = aws_sdk_ec2::Client::from_conf(aws_sdk_ec2::Config::builder().behavior_version_latest().build());
        let run = l.run(&client, "subnet-1", Some("10.0.0.10".parse().unwrap()), false);
        let run = run.as_input();
        let meta = run.get_metadata_options().as_ref().unwrap();
        assert_eq!(meta.http_tokens(), Some(&ec2t::HttpTokensState::Required));
        assert_eq!(meta.http_put_response_hop_limit(), Some(1));
        let ebs = run.get_block_device_mappings().as_ref().unwrap()[0].ebs().unwrap();
        assert_eq!((ebs.encrypted(), ebs.volume_size()), (Some(true), Some(20)));
        let t = l.template(vec![]);
        let meta = t.metadata_options().unwrap();
        assert_eq!(meta.http_tokens(), Some(&ec2t::LaunchTemplateHttpTokensState::Required));
        assert_eq!(meta.http_put_response_hop_limit(), Some(1));
        let ebs = t.block_device_mappings()[0].ebs().unwrap();
        assert_eq!((ebs.encrypted(), ebs.volume_size()), (Some(true), Some(20)));
        assert_eq!((t.user_data(), run.get_user_data().as_deref()), (Some("dXNlcg=="), Some("dXNlcg==")));
    }
}
