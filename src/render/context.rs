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
/// base64-encoded (`encoding: b64`), or, for certificates and public keys,
/// as PEM that kaws encoded anew from the parsed blocks (only base64
/// characters and the labels kaws writes, in a literal block): no byte of
/// it can become YAML structure. PEM is not base64-encoded again, which
/// gzip could not undo: EC2 takes 16 KiB of user-data.
#[derive(Clone, Debug, Serialize)]
pub struct File {
    pub path: String,
    pub content_b64: Option<String>,
    pub pem: Option<String>,
}

impl File {
    fn new(path: String, content: &str) -> File {
        use base64::Engine as _;
        File { path, content_b64: Some(base64::engine::general_purpose::STANDARD.encode(content)), pem: None }
    }

    /// Certificates or public keys, re-encoded from their parsed blocks.
    fn pem(path: String, text: &str) -> Result<File, ContextError> {
        let pem = public_pem(&path, text)?;
        Ok(File { path, content_b64: None, pem: Some(pem) })
    }
}

/// Certificates or public keys (`what` names them in an error), encoded
/// anew from their parsed blocks: what an instance gets of a public file,
/// in its user-data or from SSM.
pub fn public_pem(what: &str, text: &str) -> Result<String, ContextError> {
    let blocks = ::pem::parse_many(text).map_err(|_| ContextError::NotPem(what.to_owned()))?;
    let known = ["CERTIFICATE", "PUBLIC KEY"];
    if blocks.is_empty() || blocks.iter().any(|b| !known.contains(&b.tag())) {
        return Err(ContextError::NotPem(what.to_owned()));
    }
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    Ok(::pem::encode_many_config(&blocks, config))
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

/// Public certificates every master installs (from SSM), by path under pki/.
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
    // What the control plane trusts (the signing CA, and during a rotation
    // the staged or retired one): client CAs, etcd's CAs, the front proxy's,
    // the service-account keys.
    "ca-bundle.crt",
    "front-proxy-ca-bundle.crt",
    "etcd/ca-bundle.crt",
    "sa-bundle.pub",
];

/// The cluster CA bundle, on every instance: the kubelet's client CA and its
/// kubeconfig's server CA.
pub const KUBELET_TRUST: &str = "/etc/kubernetes/kaws/pki/ca-bundle.crt";

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
    /// The description of the token the cluster is made with (the
    /// repository's), by which the masters delete it once they renew theirs.
    repository_token_description: &'static str,
    kubernetes_version: String,
    kubernetes_minor: String,
    repo_key_fingerprint: &'static str,
    endpoint: String,
    /// SHA-256 pins (hex) of the CA keys a joiner accepts: the cluster CA,
    /// and during a rotation the staged or retired one.
    ca_hashes: Vec<String>,
    kubelet_trust: &'static str,
    /// The trust generation the instance reports (see `generation`).
    generation: String,
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
    /// The public files every master installs under pki/ (from SSM).
    shared_certs: &'static [&'static str],
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
    /// SHA-256 (hex) of the DER SubjectPublicKeyInfo of each CA in the
    /// cluster CA bundle, the signing CA's first.
    pub ca_hashes: Vec<String>,
    /// When the bootstrap token expires (Unix seconds): an absolute time,
    /// so that the user-data does not change as the hours pass.
    pub token_expires: i64,
}

/// The trust generation of a cluster's public PKI: a digest of every
/// certificate, bundle and public key under `pki/` (by path), so that each
/// phase of a rotation, and a renewal, makes a new one. Instances report
/// the one they run; 16 hex digits of SHA-256.
pub fn generation(pki: &[(String, String)]) -> String {
    files_sha256(pki.iter().map(|(p, t)| (p.as_str(), t.as_str()))).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of files (path, text), by path, sorted: each path and text
/// followed by a NUL.
pub fn files_sha256<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> [u8; 32] {
    let mut files: Vec<(&str, &str)> = files.collect();
    files.sort();
    let mut h = openssl::sha::Sha256::new();
    for (path, text) in files {
        for part in [path.as_bytes(), b"\0", text.as_bytes(), b"\0"] {
            h.update(part);
        }
    }
    h.finish()
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("--index {0}: the cluster has masters 0 to {1}")]
    NoSuchMaster(u32, u32),
    #[error("the public certificate pki/{0} is missing")]
    Missing(String),
    #[error("{0} would hold something other than PEM certificates or public keys")]
    NotPem(String),
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
            ContextError::Unsafe(_) | ContextError::NotPem(_) => refused(self.to_string()).hint(
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
        if role == Role::Node {
            public_files.push(File::pem(KUBELET_TRUST.to_owned(), &find("ca-bundle.crt")?)?);
        }
        // A master's certificates come from SSM with its keys, at boot and
        // at each new generation (`aws::resources::ssm::public_files`).
        if let Role::Master(i) = role {
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
            repository_token_description: "kaws: the repository's token",
            kubernetes_version: spec.kubernetes_version.clone(),
            kubernetes_minor: minor.to_owned(),
            repo_key_fingerprint: super::REPO_KEY_FINGERPRINT,
            endpoint: endpoint.to_string(),
            ca_hashes: public.ca_hashes.clone(),
            kubelet_trust: KUBELET_TRUST,
            generation: generation(&public.pki),
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
            shared_certs: SHARED_MASTER_CERTS,
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
