//! `clusters/CLUSTER/rotation.toml`: the record of key rotations and of
//! removals that were *not* rotated (whose readers can still open every
//! current key from git history).

use serde::{Deserialize, Serialize};

use crate::identity::Fingerprint;
use crate::name::AdminName;

pub const ROTATION_FILE: &str = "rotation.toml";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// No rotation, or the last one finished.
    #[default]
    Settled,
    /// New CAs and service-account key exist (`pki/staged/`) and the
    /// bundles trust them, but everything still signs with the current ones.
    Staged,
    /// The new CAs sign every leaf; bundles still trust the retired ones.
    /// (Records written before phases existed said `in-transition`.)
    #[serde(alias = "in-transition")]
    Promoted,
}

impl State {
    /// As `rotation.toml` spells it.
    pub fn label(self) -> &'static str {
        match self {
            State::Settled => "settled",
            State::Staged => "staged",
            State::Promoted => "promoted",
        }
    }

    /// The step that comes next, as `kaws cluster reencrypt` spells it.
    pub fn next_step(self) -> &'static str {
        match self {
            State::Settled => "--rotate",
            State::Staged => "--promote",
            State::Promoted => "--finish-rotation",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Record {
    /// How many rotations the cluster has had.
    pub generation: u32,
    pub state: State,
    #[serde(default, rename = "rotation")]
    pub rotations: Vec<Rotation>,
    #[serde(default, rename = "exposure")]
    pub exposures: Vec<Exposure>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rotation {
    pub generation: u32,
    pub date: String,
    pub by: AdminName,
    /// Fingerprints of the primaries removed by this rotation.
    pub removed: Vec<Fingerprint>,
    #[serde(default)]
    pub retired_ca: Vec<RetiredCa>,
    /// When the new CAs started signing (`--promote`).
    #[serde(default)]
    pub promoted: Option<String>,
    pub finished: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetiredCa {
    pub path: String,
    pub serial: String,
    pub sha256: String,
}

/// Primaries removed with `--no-rotate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Exposure {
    pub date: String,
    pub by: AdminName,
    pub removed: Vec<Fingerprint>,
    pub note: String,
}

impl crate::tomlfile::TomlFile for Record {
    const HEADER: &'static str = "Key rotations of this cluster, written by `kaws cluster reencrypt`.";
}
