//! Names that users give to things (administrators, clusters).
//!
//! A name is parsed once, at the edge, into a type that is safe to put in a
//! path, an AWS tag, a YAML document or a shell line: lowercase DNS-label
//! style, `[a-z][a-z0-9-]{0,30}[a-z0-9]` (2 to 32 characters), nothing else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is one character long; at least 2 are needed")]
    TooShort,
    #[error("the name is {0} characters long; at most 32 are allowed")]
    TooLong(usize),
    #[error("the name must start with a lowercase letter a-z")]
    BadStart,
    #[error("the name must end with a lowercase letter or a digit")]
    BadEnd,
    #[error("the name contains {0:?}; only lowercase letters a-z, digits and '-' are allowed")]
    BadChar(char),
}

/// Checks `s` against the name grammar. Shared by every name type.
fn check(s: &str) -> Result<(), NameError> {
    let len = s.chars().count();
    if len == 0 {
        return Err(NameError::Empty);
    }
    if let Some(c) = s.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
        return Err(NameError::BadChar(c));
    }
    if len > 32 {
        return Err(NameError::TooLong(len));
    }
    if len < 2 {
        return Err(NameError::TooShort);
    }
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return Err(NameError::BadStart);
    }
    if s.ends_with('-') {
        return Err(NameError::BadEnd);
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            #[allow(dead_code)] // not every name type needs every accessor yet
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                check(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|e| {
                    serde::de::Error::custom(format!("invalid {} {s:?}: {e}", $what))
                })
            }
        }
    };
}

name_type!(
    /// An administrator's name, as used in `kaws.toml` and on the command line.
    AdminName,
    "administrator name"
);
name_type!(
    /// A cluster's name: the directory under `clusters/` and the `kaws:cluster` tag.
    ClusterName,
    "cluster name"
);

/// A lowercase DNS name: labels of `[a-z0-9-]` (1-63 characters, no
/// leading or trailing `-`), at most 253 characters in all.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a lowercase DNS name (labels of a-z, 0-9 and '-', separated by dots)")]
pub struct DnsNameError(pub String);

impl DnsName {
    pub fn labels(&self) -> usize {
        self.0.split('.').count()
    }
}

impl FromStr for DnsName {
    type Err = DnsNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if s.is_empty() || s.len() > 253 || !s.split('.').all(label_ok) {
            return Err(DnsNameError(s.to_owned()));
        }
        Ok(DnsName(s.to_owned()))
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for DnsName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DnsName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "../x",
            "a b",
            "$(id)",
            "A",
            "x/y",
            "-a",
            "a-",
            "1a",
            "a_b",
            "a.b",
            "аdmin",  // Cyrillic a
            "ａdmin", // fullwidth a
            "admin\n",
            "admin\0",
            "a",
            &"a".repeat(33),
            &"a".repeat(64),
        ] {
            assert!(bad.parse::<AdminName>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn good_names_are_accepted() {
        for good in ["ab", "alice", "bob-2", "a1", &"a".repeat(32)] {
            assert_eq!(good.parse::<ClusterName>().unwrap().as_str(), good);
        }
    }

    #[test]
    fn dns_names() {
        for good in ["example.com", "a.b.c", "cluster.local", "x-1.example.org"] {
            assert!(good.parse::<DnsName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Example.com",
            "a..b",
            "-a.com",
            "a-.com",
            "a b.com",
            "a.com.",
            "ex$(id).com",
            "a\n.com",
            "é.com",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(bad.parse::<DnsName>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn accepted_names_are_path_and_shell_safe(s in "\\PC{0,40}") {
            if let Ok(n) = s.parse::<AdminName>() {
                let n = n.as_str();
                prop_assert!(n.len() <= 32);
                prop_assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(!n.starts_with('-') && !n.contains(".."));
            }
        }

        #[test]
        fn grammar_matches_regex(s in "[a-z][a-z0-9-]{0,30}[a-z0-9]") {
            prop_assert!(s.parse::<AdminName>().is_ok());
        }
    }
}
