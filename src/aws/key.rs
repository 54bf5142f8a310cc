//! The typed name of every resource of a cluster's graph, written to and
//! read from its `kaws:key` tag (`subnet/private-1`, `sg/master`, …), and
//! the roles (`kaws:role`) that security groups and instances play.
//!
//! A tag is text anyone with access to the account may write: it is parsed
//! here, strictly, and a tag kaws does not know becomes `Key::Other`, which
//! no graph node has (so its resource is surplus, never used).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A security group's role (also its `kaws:role` tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Bastion,
    Api,
    Master,
    Node,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Bastion, Role::Api, Role::Master, Role::Node];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Bastion => "bastion",
            Role::Api => "api",
            Role::Master => "master",
            Role::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Which hosts an instance role or an instance is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    Bastion,
    Master(u32),
    Node,
}

impl Host {
    pub fn role(self) -> Role {
        match self {
            Host::Bastion => Role::Bastion,
            Host::Master(_) => Role::Master,
            Host::Node => Role::Node,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Host::Bastion => f.write_str("bastion"),
            Host::Master(i) => write!(f, "master-{i}"),
            Host::Node => f.write_str("node"),
        }
    }
}

impl FromStr for Host {
    type Err = ();
    fn from_str(s: &str) -> Result<Host, ()> {
        match s {
            "bastion" => Ok(Host::Bastion),
            "node" => Ok(Host::Node),
            _ => s.strip_prefix("master-").and_then(number).map(Host::Master).ok_or(()),
        }
    }
}

/// A decimal index without sign or leading zeros (so each has one spelling).
fn number<T: FromStr>(s: &str) -> Option<T> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// One resource of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Vpc,
    Igw,
    Subnet {
        public: bool,
        zone: usize,
    },
    /// The Elastic IP of NAT gateway `n`.
    Eip(usize),
    Nat(usize),
    PublicRoutes,
    PrivateRoutes(usize),
    Group(Role),
    /// The rules of a group (they live on the group).
    Rules(Role),
    Iam(Host),
    Kms,
    /// An SSM parameter: its name below the cluster's prefix (`/node/bootstrap-token`).
    Param(String),
    Lb,
    Tg,
    Listener,
    /// The API's target registrations (they live on the target group).
    Targets,
    Zone,
    Record {
        public: bool,
    },
    Instance(Host),
    /// Master `i`'s etcd data volume.
    Volume(u32),
    Lt,
    Asg,
    /// An instance an Auto Scaling group launched (`managed/GROUP`).
    Managed(String),
    /// A tag kaws does not know, or none (`unknown`).
    Other(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let tier = |public: bool| if public { "public" } else { "private" };
        match self {
            Key::Vpc => f.write_str("vpc"),
            Key::Igw => f.write_str("igw"),
            Key::Subnet { public, zone } => write!(f, "subnet/{}-{zone}", tier(*public)),
            Key::Eip(n) => write!(f, "eip/nat-{n}"),
            Key::Nat(n) => write!(f, "nat/{n}"),
            Key::PublicRoutes => f.write_str("rtb/public"),
            Key::PrivateRoutes(z) => write!(f, "rtb/private-{z}"),
            Key::Group(r) => write!(f, "sg/{}", r.as_str()),
            Key::Rules(r) => write!(f, "rules/{}", r.as_str()),
            Key::Iam(h) => write!(f, "iam/{h}"),
            Key::Kms => f.write_str("kms/secrets"),
            Key::Param(p) => write!(f, "ssm{p}"),
            Key::Lb => f.write_str("lb/api"),
            Key::Tg => f.write_str("tg/api"),
            Key::Listener => f.write_str("listener/api"),
            Key::Targets => f.write_str("targets/api"),
            Key::Zone => f.write_str("zone/private"),
            Key::Record { public } => write!(f, "dns/{}", tier(*public)),
            Key::Instance(h) => write!(f, "instance/{h}"),
            Key::Volume(i) => write!(f, "volume/etcd-{i}"),
            Key::Lt => f.write_str("lt/node"),
            Key::Asg => f.write_str("asg/node"),
            Key::Managed(g) => write!(f, "managed/{g}"),
            Key::Other(s) => f.write_str(s),
        }
    }
}

/// A parameter name below the prefix: `/`-separated segments of letters,
/// digits, `.`, `_` and `-`, none empty, `.` or `..`.
fn param_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 200
        && p[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

impl FromStr for Key {
    type Err = ();
    /// Exactly the spellings `Display` writes for the graph's keys; anything
    /// else (`Managed` and `Other` included) is `Err`.
    fn from_str(s: &str) -> Result<Key, ()> {
        let zone = |t: &str, prefix: &str| t.strip_prefix(prefix).and_then(number::<usize>);
        let key = match s {
            "vpc" => Key::Vpc,
            "igw" => Key::Igw,
            "rtb/public" => Key::PublicRoutes,
            "kms/secrets" => Key::Kms,
            "lb/api" => Key::Lb,
            "tg/api" => Key::Tg,
            "listener/api" => Key::Listener,
            "targets/api" => Key::Targets,
            "zone/private" => Key::Zone,
            "dns/private" => Key::Record { public: false },
            "dns/public" => Key::Record { public: true },
            "lt/node" => Key::Lt,
            "asg/node" => Key::Asg,
            _ => {
                let (kind, rest) = s.split_once('/').ok_or(())?;
                match kind {
                    "subnet" => match (zone(rest, "public-"), zone(rest, "private-")) {
                        (Some(z), _) => Key::Subnet { public: true, zone: z },
                        (_, Some(z)) => Key::Subnet { public: false, zone: z },
                        _ => return Err(()),
                    },
                    "eip" => Key::Eip(zone(rest, "nat-").ok_or(())?),
                    "nat" => Key::Nat(number(rest).ok_or(())?),
                    "rtb" => Key::PrivateRoutes(zone(rest, "private-").ok_or(())?),
                    "sg" => Key::Group(Role::parse(rest).ok_or(())?),
                    "rules" => Key::Rules(Role::parse(rest).ok_or(())?),
                    "iam" => Key::Iam(rest.parse()?),
                    "instance" => match rest.parse()? {
                        Host::Node => return Err(()),
                        h => Key::Instance(h),
                    },
                    "volume" => Key::Volume(rest.strip_prefix("etcd-").and_then(number).ok_or(())?),
                    "ssm" if param_path(&s[3..]) => Key::Param(s[3..].to_owned()),
                    _ => return Err(()),
                }
            }
        };
        Ok(key)
    }
}

impl Key {
    /// The key a `kaws:key` tag names; an unknown or missing tag is `Other`.
    pub fn from_tag(tag: Option<&str>) -> Key {
        match tag {
            Some(t) => t.parse().unwrap_or_else(|()| Key::Other(t.to_owned())),
            None => Key::Other("unknown".into()),
        }
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_key_of_a_graph_reads_back_as_itself() {
        for spec in [crate::cluster::spec::tests::spec(), {
            let mut s = crate::cluster::spec::tests::spec();
            s.aws.hosted_zone = Some("Z123".into());
            s
        }] {
            for node in crate::aws::model::graph(&spec) {
                let text = node.key.to_string();
                assert_eq!(text.parse::<Key>(), Ok(node.key.clone()), "{text}");
            }
        }
    }

    #[test]
    fn other_spellings_are_not_keys() {
        for bad in [
            "subnet/public-01",
            "volume/etcd-",
            "volume/master-0",
            "subnet/public-",
            "nat/-1",
            "sg/admin",
            "instance/node",
            "iam/master-",
            "ssm/../x",
            "ssm",
            "ssm/a//b",
            "ssm/a b",
            "managed/x",
            "unknown",
            "VPC",
        ] {
            assert_eq!(bad.parse::<Key>(), Err(()), "{bad}");
            assert_eq!(Key::from_tag(Some(bad)), Key::Other(bad.into()));
        }
    }

    proptest! {
        #[test]
        fn a_parsed_key_prints_as_its_tag(s in "[a-z/0-9.-]{0,24}") {
            if let Ok(k) = s.parse::<Key>() {
                prop_assert_eq!(k.to_string(), s);
            }
        }
    }
}
