//! Small TOML records kaws keeps in a cluster's directory: parsed strictly,
//! written with a header comment that says what the file is.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub trait TomlFile: Serialize + DeserializeOwned {
    /// The comment written at the top of the file.
    const HEADER: &'static str;

    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("kaws' records serialize");
        format!("# {}\n{body}", Self::HEADER)
    }
}
