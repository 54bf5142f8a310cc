//! Every name kaws gives in AWS, in one place: tags, resource names (IAM,
//! load balancer, groups), SSM paths, the KMS alias, DNS names. Pure
//! functions of the spec: nothing here calls AWS or imports another module
//! of the engine, and every one of them takes its names from here.

use crate::cluster::ClusterSpec;

/// Tag keys kaws reads and writes.
pub const TAG_CLUSTER: &str = "kaws:cluster";
pub const TAG_ROLE: &str = "kaws:role";
pub const TAG_KEY: &str = "kaws:key";
/// The region a resource belongs to: IAM and Route 53 are global, so two
/// clusters of one name in two regions must tell theirs apart.
pub const TAG_REGION: &str = "kaws:region";

/// The IAM role (and instance profile) name of a role's instances. IAM is
/// global: the region is in the name, so that clusters of one name in two
/// regions never share a role (at most 5+32+1+14+1+8 = 61 of IAM's 64).
pub fn iam_name(spec: &ClusterSpec, which: &str) -> String {
    format!("kaws-{}-{}-{which}", spec.name, spec.region)
}

/// The IAM path every role and profile of the cluster lives under.
pub fn iam_path(spec: &ClusterSpec) -> String {
    format!("/kaws/{}/{}/", spec.region, spec.name)
}

/// The alias the cluster's KMS key is found by (KMS aliases are regional).
pub fn kms_alias(spec: &ClusterSpec) -> String {
    format!("alias/kaws/{}", spec.name)
}

/// The SSM parameter prefix of the cluster.
pub fn ssm_prefix(spec: &ClusterSpec) -> String {
    format!("/kaws/{}", spec.name)
}

/// An instance's configuration digest (user-data, type, image, …).
pub const TAG_CONFIG: &str = "kaws:config";

/// What an instance reports of itself, as tags it may set on itself only
/// (see `resources::iam`): the bootstrap step it is at (`up` once done)...
pub const TAG_STAGE: &str = "kaws:stage";
/// ...and the trust generation it runs (`render::generation`).
pub const TAG_GENERATION: &str = "kaws:generation";
/// The tags an instance reports.
pub const REPORTED: [&str; 2] = [TAG_GENERATION, TAG_STAGE];

/// Names AWS limits to 32 characters (load balancer, target group).
pub fn short_name(spec: &ClusterSpec, suffix: &str) -> String {
    let name = spec.name.as_str();
    let room = 32 - suffix.len() - 1;
    format!("{}-{suffix}", name[..name.len().min(room)].trim_end_matches('-'))
}

/// The tags of every resource kaws makes for the graph node `key`, of `role`.
pub fn tags(spec: &ClusterSpec, role: &str, key: &str) -> Vec<(String, String)> {
    vec![
        (TAG_CLUSTER.into(), spec.name.to_string()),
        (TAG_ROLE.into(), role.into()),
        (TAG_KEY.into(), key.into()),
        (TAG_REGION.into(), spec.region.clone()),
        ("Name".into(), format!("{}-{}", spec.name, key.replace('/', "-"))),
    ]
}

/// The tag by which the AWS cloud controller manager and the EBS CSI driver
/// know the cluster's instances, subnets and volumes. Security groups do not
/// get it: the cloud controller would add rules to a group so tagged, and
/// the groups' rules are kaws' alone (see `docs/aws.md`).
pub fn k8s_cluster_tag(spec: &ClusterSpec) -> (String, String) {
    (format!("kubernetes.io/cluster/{}", spec.name), "owned".into())
}

/// The subnets a Service's load balancer goes to: public ones for an
/// internet-facing one, private ones for an internal one.
pub fn k8s_subnet_role_tag(public: bool) -> (String, String) {
    let key = if public { "kubernetes.io/role/elb" } else { "kubernetes.io/role/internal-elb" };
    (key.into(), "1".into())
}

/// The inline policy's name on every kaws role.
pub const POLICY: &str = "kaws";

/// The TXT record, beside the API's A record, that says kaws made it (and
/// for which cluster): public zones hold records of others too.
pub fn owner_marker(spec: &ClusterSpec) -> String {
    format!("\"kaws-owner={}/{}\"", spec.region, spec.name)
}

/// The record name kaws manages, as Route 53 writes it (trailing dot).
pub fn api_record(spec: &ClusterSpec) -> String {
    format!("{}.", spec.api_name())
}

/// The private zone's name.
pub fn zone_name(spec: &ClusterSpec) -> String {
    format!("{}.{}.", spec.name, spec.domain)
}
