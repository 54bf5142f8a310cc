//! The typed template context. Built only from the validated spec, public
//! certificates and validated names: no field can carry a secret, and no
//! string in it can break out of YAML or shell quoting.

use serde::Serialize;

use crate::cluster::ClusterSpec;
use crate::name::DnsName;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Bastion,
    Master(u32),
    Node,
}

/// A public file written by cloud-init. Its content reaches the YAML only
/// base64-encoded (`encoding: b64`): no byte of it can become YAML structure.
#[derive(Clone, Debug, Serialize)]
pub struct File {
    pub path: String,
    pub content_b64: String,
}

impl File {
    fn new(path: String, content: &str) -> File {
        use base64::Engine as _;
        File { path, content_b64: base64::engine::general_purpose::STANDARD.encode(content) }
    }
}

/// Keys every master fetches from `/kaws/CLUSTER/master/shared/` (kubeadm
/// needs the CA keys present to join a control plane it did not mint).
pub const SHARED_MASTER_KEYS: &[&str] = &[
    "ca.key",
    "sa.key",
    "front-proxy-ca.key",
    "etcd/ca.key",
    "apiserver.key",
    "apiserver-kubelet-client.key",
    "front-proxy-client.key",
    "apiserver-etcd-client.key",
    "etcd/healthcheck-client.key",
    "controller-manager.key",
    "scheduler.key",
];

/// Public certificates every master gets in its user-data, by path under pki/.
pub const SHARED_MASTER_CERTS: &[&str] = &[
    "ca.crt",
    "front-proxy-ca.crt",
    "etcd/ca.crt",
    "apiserver.crt",
    "apiserver-kubelet-client.crt",
    "front-proxy-client.crt",
    "apiserver-etcd-client.crt",
    "etcd/healthcheck-client.crt",
    "controller-manager.crt",
    "scheduler.crt",
    "sa.pub",
];

#[derive(Debug, Serialize)]
pub struct Context {
    #[serde(skip)]
    pub role: Role,
    cluster: String,
    region: String,
    ssm_prefix: String,
    /// The cluster's KMS key, by alias, and the description of a token the
    /// masters renew (see aws::resources::ssm).
    kms_alias: String,
    renewed_marker: &'static str,
    kubernetes_version: String,
    kubernetes_minor: String,
    repo_key_fingerprint: &'static str,
    endpoint: String,
    ca_hash: String,
    service_cidr: String,
    pod_cidr: String,
    cluster_domain: String,
    token_expires: String,
    cni_version: &'static str,
    cni_url: &'static str,
    cni_sha256: &'static str,
    index: u32,
    hostname: String,
    /// The device name a master's etcd volume is attached as.
    etcd_device: &'static str,
    master_ip: String,
    /// The addresses of the masters before this one: a control-plane join
    /// waits until each of their etcd members is healthy (one at a time).
    earlier_masters: Vec<String>,
    /// The addresses of the other masters: before master 0 makes a cluster,
    /// it asks their etcd members (over mutual TLS) whether one exists.
    other_masters: Vec<String>,
    shared_keys: &'static [&'static str],
    #[serde(skip)]
    public_files: Vec<File>,
}

/// Public inputs to a render, read from the repository by the caller.
pub struct Public {
    /// `(path under pki/, PEM)` of the public certificates (and `sa.pub`).
    pub pki: Vec<(String, String)>,
    /// The administrators holding a certificate: each gets the binding
    /// kaws renders from its name (never a file copied from the repository).
    pub admins: Vec<crate::name::AdminName>,
    /// SHA-256 (hex) of the cluster CA's DER SubjectPublicKeyInfo.
    pub ca_hash: String,
    /// When the bootstrap token expires (Unix seconds): an absolute time,
    /// so that the user-data does not change as the hours pass.
    pub token_expires: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("--index {0}: the cluster has masters 0 to {1}")]
    NoSuchMaster(u32, u32),
    #[error("the public certificate pki/{0} is missing")]
    Missing(String),
    #[error(transparent)]
    Unsafe(#[from] crate::text::UnsafeText),
}

impl ContextError {
    /// As the user sees it: a bad `--index` is a usage error, repository
    /// text that could break the YAML a refusal, a missing file a failure.
    pub fn into_user(self) -> crate::error::UserError {
        use crate::error::{failed, refused, UserError};
        match self {
            ContextError::NoSuchMaster(..) => UserError::usage(self.to_string()),
            ContextError::Unsafe(_) => refused(self.to_string()).hint(
                "restore the file from a reviewed commit (git log -p -- clusters/CLUSTER/pki); nothing was rendered",
            ),
            ContextError::Missing(_) => failed(self.to_string()),
        }
    }
}

impl Context {
    pub fn new(spec: &ClusterSpec, role: Role, endpoint: &DnsName, public: &Public) -> Result<Context, ContextError> {
        let index = match role {
            Role::Master(i) if i >= spec.masters => return Err(ContextError::NoSuchMaster(i, spec.masters - 1)),
            Role::Master(i) => i,
            _ => 0,
        };
        let minor = spec.kubernetes_version.rsplit_once('.').map_or(spec.kubernetes_version.as_str(), |(m, _)| m);
        let mut public_files = Vec::new();
        if let Role::Master(i) = role {
            let find = |p: &str| -> Result<String, ContextError> {
                let pem = public
                    .pki
                    .iter()
                    .find(|(path, _)| path == p)
                    .map(|(_, pem)| pem.clone())
                    .ok_or_else(|| ContextError::Missing(p.to_owned()))?;
                crate::text::check_plain(&format!("pki/{p}"), &pem)?;
                Ok(pem)
            };
            for p in SHARED_MASTER_CERTS {
                public_files.push(File::new(format!("/etc/kubernetes/kaws/pki/{p}"), &find(p)?));
            }
            for kind in ["server", "peer"] {
                public_files.push(File::new(
                    format!("/etc/kubernetes/kaws/pki/etcd/{kind}.crt"),
                    &find(&format!("etcd/{kind}-{i}.crt"))?,
                ));
            }
            if i == 0 {
                for name in &public.admins {
                    public_files.push(File::new(
                        format!("/etc/kubernetes/kaws/rbac/{name}.yaml"),
                        &crate::cluster::admins::rbac_manifest(name),
                    ));
                }
            }
        }
        Ok(Context {
            role,
            cluster: spec.name.to_string(),
            region: spec.region.clone(),
            ssm_prefix: crate::aws::naming::ssm_prefix(spec),
            kms_alias: crate::aws::naming::kms_alias(spec),
            renewed_marker: crate::aws::resources::ssm::RENEWED,
            kubernetes_version: spec.kubernetes_version.clone(),
            kubernetes_minor: minor.to_owned(),
            repo_key_fingerprint: super::REPO_KEY_FINGERPRINT,
            endpoint: endpoint.to_string(),
            ca_hash: public.ca_hash.clone(),
            service_cidr: spec.service_cidr.to_string(),
            pod_cidr: spec.pod_cidr.to_string(),
            cluster_domain: spec.cluster_domain.to_string(),
            token_expires: crate::context::rfc3339_unix(public.token_expires),
            cni_version: super::CNI_VERSION,
            cni_url: super::CNI_URL,
            cni_sha256: super::CNI_SHA256,
            index,
            hostname: spec.master_node_name(index),
            etcd_device: crate::aws::resources::volume::DEVICE,
            master_ip: spec.master_ip(index).to_string(),
            earlier_masters: (0..index).map(|i| spec.master_ip(i).to_string()).collect(),
            other_masters: (0..spec.masters).filter(|i| *i != index).map(|i| spec.master_ip(i).to_string()).collect(),
            shared_keys: SHARED_MASTER_KEYS,
            public_files,
        })
    }

    /// The public files cloud-init writes: certificates, and on the first
    /// master the default-deny policy and the administrators' bindings.
    pub fn files(&self, default_deny: &str) -> Vec<File> {
        let mut files = self.public_files.clone();
        if self.role == Role::Master(0) {
            files.push(File::new("/etc/kubernetes/kaws/default-deny.yaml".into(), default_deny));
        }
        files
    }
}
