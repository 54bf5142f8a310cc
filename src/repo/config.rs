//! `kaws.toml`: the format version, the administrator set (name →
//! fingerprint) and repository-wide defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::Fingerprint;
use crate::name::AdminName;
use crate::pki::KeyAlgorithm;

pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub format: u32,
    #[serde(default)]
    pub defaults: Defaults,
    pub admins: BTreeMap<AdminName, Fingerprint>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Defaults {
    /// Key algorithm for new clusters unless `cluster init` names one.
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("kaws.toml is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("kaws.toml has format {0}, but this kaws reads format {FORMAT}; upgrade kaws")]
    Format(u32),
    #[error("kaws.toml names no administrator")]
    NoAdmins,
}

impl Config {
    pub fn new(founder: AdminName, fingerprint: Fingerprint) -> Config {
        Config { format: FORMAT, defaults: Defaults::default(), admins: BTreeMap::from([(founder, fingerprint)]) }
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        if config.format != FORMAT {
            return Err(ConfigError::Format(config.format));
        }
        if config.admins.is_empty() {
            return Err(ConfigError::NoAdmins);
        }
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("config serializes");
        format!("# The kaws repository: administrators by OpenPGP fingerprint.\n# See pubkeys/README.md. Edited by `kaws key`, not by hand.\n{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let fpr: Fingerprint = "C03FA6411B03AE12576461187223B56678E02528".parse().unwrap();
        let c = Config::new("alice".parse().unwrap(), fpr);
        let back = Config::parse(&c.to_toml()).unwrap();
        assert_eq!(back.admins, c.admins);
        assert!(Config::parse("format = 1\n[admins]\n").is_err());
        assert!(Config::parse("format = 2\n[admins]\nab = \"C03FA6411B03AE12576461187223B56678E02528\"\n").is_err());
        assert!(
            Config::parse("format = 1\n[admins]\n\"../x\" = \"C03FA6411B03AE12576461187223B56678E02528\"\n").is_err()
        );
        assert!(Config::parse("format = 1\n[admins]\nab = \"7223B56678E02528\"\n").is_err());
    }
}
