//! Full OpenPGP fingerprints: the only way kaws names a key.

use std::fmt;
use std::str::FromStr;

use sequoia_openpgp as openpgp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A v4 (40 hex digits) or v6 (64 hex digits) fingerprint. Short key IDs and
/// user-ID fragments are never accepted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(openpgp::Fingerprint);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a full OpenPGP fingerprint (40 or 64 hexadecimal digits, no spaces, no short key IDs)")]
pub struct FingerprintError(pub String);

impl Fingerprint {
    pub fn inner(&self) -> &openpgp::Fingerprint {
        &self.0
    }

    /// The file under `pubkeys/` that holds this certificate.
    pub fn file_name(&self) -> String {
        format!("{self}.asc")
    }
}

impl From<openpgp::Fingerprint> for Fingerprint {
    fn from(f: openpgp::Fingerprint) -> Self {
        Fingerprint(f)
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || FingerprintError(s.to_owned());
        if !(s.len() == 40 || s.len() == 64) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        match openpgp::Fingerprint::from_hex(s).map_err(|_| err())? {
            f @ (openpgp::Fingerprint::V4(_) | openpgp::Fingerprint::V6(_)) => Ok(Fingerprint(f)),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_fingerprints() {
        let v4 = "C03FA6411B03AE12576461187223B56678E02528";
        assert_eq!(v4.parse::<Fingerprint>().unwrap().to_string(), v4);
        let lower = v4.to_lowercase();
        assert_eq!(lower.parse::<Fingerprint>().unwrap().to_string(), v4);
        for bad in [
            "7223B56678E02528",
            "0x7223B56678E02528",
            "C03F A641 1B03 AE12 5764 6118 7223 B566 78E0 2528",
            "alice@example.org",
            "",
            "G03FA6411B03AE12576461187223B56678E02528",
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
        let v6 = "CB186C4F0609A697E4D52DFA6C722B0C1F1E27C18A56708F6525EC27BAD9ACC9";
        assert_eq!(v6.parse::<Fingerprint>().unwrap().to_string(), v6);
    }
}
