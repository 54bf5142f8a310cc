//! A cluster's recorded facts. `primaries.toml` names the administrators
//! (by fingerprint) every sealed key of the cluster is encrypted to; the
//! cluster spec (`cluster.toml`) and its resource graph join this module as
//! the PKI and provisioning work lands.

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
        toml::from_str(text).map_err(|e| {
            anyhow::anyhow!("clusters/{cluster}/{PRIMARIES_FILE} is not valid: {e}")
        })
    }

    pub fn contains(&self, fpr: &Fingerprint) -> bool {
        self.primaries.values().any(|f| f == fpr)
    }

    /// The `kaws cluster reencrypt` that takes `gone` out and rotates.
    pub fn rotate_command(&self, cluster: &ClusterName, gone: &Fingerprint) -> String {
        let keep: Vec<String> = self
            .primaries
            .iter()
            .filter(|(_, f)| *f != gone)
            .map(|(n, _)| format!("--primary {n}"))
            .collect();
        format!("kaws cluster reencrypt {cluster} {} --rotate", keep.join(" "))
    }
}
