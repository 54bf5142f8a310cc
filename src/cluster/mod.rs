//! A cluster's recorded facts: its validated spec (`cluster.toml`) and who
//! can decrypt its sealed keys (`primaries.toml`, administrators by
//! fingerprint). The resource graph for AWS joins this module with the
//! provisioning work.

pub mod admins;
pub mod issued;
pub mod rotate;
pub mod rotation;
pub mod spec;
pub mod token;

pub use spec::ClusterSpec;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::Fingerprint;
use crate::name::{AdminName, ClusterName};

/// `clusters/CLUSTER/primaries.toml`, relative to the cluster directory.
pub const PRIMARIES_FILE: &str = "primaries.toml";

/// Who can decrypt a cluster's sealed keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Primaries {
    pub primaries: BTreeMap<AdminName, Fingerprint>,
}

impl Primaries {
    pub fn parse(cluster: &ClusterName, text: &str) -> anyhow::Result<Primaries> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("clusters/{cluster}/{PRIMARIES_FILE} is not valid: {e}"))
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("primaries serialize");
        format!("# Every sealed key of this cluster is encrypted to these administrators.\n{body}")
    }

    pub fn contains(&self, fpr: &Fingerprint) -> bool {
        self.primaries.values().any(|f| f == fpr)
    }

    /// The `kaws cluster reencrypt` that takes `gone` out and rotates.
    pub fn rotate_command(&self, cluster: &ClusterName, gone: &Fingerprint) -> String {
        let keep: Vec<String> =
            self.primaries.iter().filter(|(_, f)| *f != gone).map(|(n, _)| format!("--primary {n}")).collect();
        format!("kaws cluster reencrypt {cluster} {} --rotate", keep.join(" "))
    }
}
