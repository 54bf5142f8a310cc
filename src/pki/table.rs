//! The certificate set of a cluster, as one declarative table (after
//! kubeadm's certlist.go). Each entry names its CA, subject, usages and
//! where its SANs come from; file paths are kubeadm's, under
//! `clusters/CLUSTER/pki/`, so kubeadm on a master accepts them as they are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::cluster::ClusterSpec;

/// The three certificate authorities of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaId {
    Kubernetes,
    FrontProxy,
    Etcd,
}

impl CaId {
    pub const ALL: [CaId; 3] = [CaId::Kubernetes, CaId::FrontProxy, CaId::Etcd];

    /// Path under `pki/`, without extension.
    pub fn path(self) -> &'static str {
        match self {
            CaId::Kubernetes => "ca",
            CaId::FrontProxy => "front-proxy-ca",
            CaId::Etcd => "etcd/ca",
        }
    }

    /// The bundle that trusts this CA and, during a rotation, the retired one.
    pub fn bundle_path(self) -> &'static str {
        match self {
            CaId::Kubernetes => "ca-bundle",
            CaId::FrontProxy => "front-proxy-ca-bundle",
            CaId::Etcd => "etcd/ca-bundle",
        }
    }

    pub fn common_name(self) -> &'static str {
        match self {
            CaId::Kubernetes => "kubernetes",
            CaId::FrontProxy => "front-proxy-ca",
            CaId::Etcd => "etcd-ca",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Usage {
    ServerAuth,
    ClientAuth,
}

const SERVER: &[Usage] = &[Usage::ServerAuth];
const CLIENT: &[Usage] = &[Usage::ClientAuth];
const BOTH: &[Usage] = &[Usage::ServerAuth, Usage::ClientAuth];

/// Where a certificate's subject alternative names come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanSource {
    None,
    /// The API server's names and addresses.
    ApiServer,
    /// One etcd member: that master's node name and IP, and loopback.
    EtcdMember(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl std::fmt::Display for San {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(i) => write!(f, "IP:{i}"),
        }
    }
}

/// One leaf certificate of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Path under `pki/`, without extension (`etcd/server-0`).
    pub path: String,
    pub ca: CaId,
    pub common_name: String,
    pub organization: Option<&'static str>,
    pub usages: &'static [Usage],
    pub sans: SanSource,
    /// The master this certificate belongs to, if only one.
    pub master: Option<u32>,
}

/// The service-account signing key pair (`sa.key` / `sa.pub`).
pub const SA: &str = "sa";

fn leaf(path: &str, ca: CaId, cn: &str, org: Option<&'static str>, usages: &'static [Usage], sans: SanSource) -> Leaf {
    Leaf { path: path.into(), ca, common_name: cn.into(), organization: org, usages, sans, master: None }
}

/// Every leaf certificate of `spec`'s cluster, grouped under its CA.
pub fn leaves(spec: &ClusterSpec) -> Vec<Leaf> {
    use CaId::*;
    use SanSource::None as NoSans;
    let mut out = vec![
        leaf("apiserver", Kubernetes, "kube-apiserver", None, SERVER, SanSource::ApiServer),
        // kubeadm binds this group to cluster-admin for the API server's
        // calls to kubelets; it is not system:masters.
        leaf(
            "apiserver-kubelet-client",
            Kubernetes,
            "kube-apiserver-kubelet-client",
            Some("kubeadm:cluster-admins"),
            CLIENT,
            NoSans,
        ),
        leaf("controller-manager", Kubernetes, "system:kube-controller-manager", None, CLIENT, NoSans),
        leaf("scheduler", Kubernetes, "system:kube-scheduler", None, CLIENT, NoSans),
        // Break-glass: readable by primaries only, never delivered to an instance.
        leaf("super-admin", Kubernetes, "kubernetes-super-admin", Some("system:masters"), CLIENT, NoSans),
        leaf("front-proxy-client", FrontProxy, "front-proxy-client", None, CLIENT, NoSans),
        leaf("apiserver-etcd-client", Etcd, "kube-apiserver-etcd-client", None, CLIENT, NoSans),
        leaf("etcd/healthcheck-client", Etcd, "kube-etcd-healthcheck-client", None, CLIENT, NoSans),
    ];
    for i in 0..spec.masters {
        let host = spec.master_node_name(i);
        for kind in ["server", "peer"] {
            let mut l = leaf(&format!("etcd/{kind}-{i}"), Etcd, &host, None, BOTH, SanSource::EtcdMember(i));
            l.master = Some(i);
            out.push(l);
        }
    }
    out
}

/// Resolves a SAN source against the spec.
pub fn sans(source: SanSource, spec: &ClusterSpec) -> Vec<San> {
    let loopback = [
        San::Dns("localhost".into()),
        San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        San::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    let mut out: Vec<San> = match source {
        SanSource::None => return Vec::new(),
        SanSource::ApiServer => {
            let mut v: Vec<San> = [
                "kubernetes".to_owned(),
                "kubernetes.default".to_owned(),
                "kubernetes.default.svc".to_owned(),
                format!("kubernetes.default.svc.{}", spec.cluster_domain),
                spec.api_name(),
            ]
            .into_iter()
            .map(San::Dns)
            .collect();
            // Each master's node name and address: kubeadm checks the shared
            // certificate against the one it runs on (GetAPIServerAltNames).
            v.extend((0..spec.masters).map(|i| San::Dns(spec.master_node_name(i))));
            v.push(San::Ip(IpAddr::V4(spec.kubernetes_service_ip())));
            v.extend(spec.master_ips().into_iter().map(San::Ip));
            v
        }
        SanSource::EtcdMember(i) => {
            vec![San::Dns(spec.master_node_name(i)), San::Ip(IpAddr::V4(spec.master_ip(i)))]
        }
    };
    out.extend(loopback);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_has_a_known_ca_and_a_unique_path() {
        let spec = crate::cluster::spec::tests::spec();
        let all = leaves(&spec);
        let mut paths: Vec<_> = all.iter().map(|l| l.path.clone()).collect();
        paths.extend(CaId::ALL.iter().map(|c| c.path().to_owned()));
        let n = paths.len();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), n);
        assert_eq!(all.len(), 8 + 2 * 3);
        // Only the break-glass certificate is in system:masters.
        let masters: Vec<_> = all.iter().filter(|l| l.organization == Some("system:masters")).collect();
        assert_eq!(masters.len(), 1);
        assert_eq!(masters[0].path, "super-admin");
        let api = sans(SanSource::ApiServer, &spec);
        assert!(api.contains(&San::Dns("api.prod.example.com".into())));
        assert!(api.contains(&San::Ip("10.96.0.1".parse().unwrap())));
        assert!(api.contains(&San::Ip("10.0.64.10".parse().unwrap())));
        for i in 0..spec.masters {
            assert!(api.contains(&San::Dns(spec.master_node_name(i))), "master {i}'s node name");
        }
        let virginia = ClusterSpec { region: "us-east-1".into(), ..spec.clone() };
        assert_eq!(virginia.master_node_name(1), "ip-10-0-32-10.ec2.internal");
        assert_eq!(spec.master_node_name(0), "ip-10-0-0-10.eu-west-1.compute.internal");
    }
}
