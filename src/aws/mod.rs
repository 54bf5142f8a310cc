//! AWS provisioning: find actual state by tags, diff against the cluster's
//! desired resource graph, apply in dependency order (EC2, ELBv2, IAM, SSM).
//! The SDK crates join the build with the provisioning work, not before.
