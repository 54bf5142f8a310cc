//! Administrators' access to one cluster: the per-user RBAC binding that
//! grants it, and the record of revoked certificates (`revoked.toml`).

use serde::{Deserialize, Serialize};

use crate::name::AdminName;

pub const REVOKED_FILE: &str = "revoked.toml";

/// Files of administrator NAME under `clusters/CLUSTER/`.
pub fn key_file(name: &AdminName) -> String {
    format!("admins/{name}.key.pgp")
}
pub fn csr_file(name: &AdminName) -> String {
    format!("admins/{name}.csr")
}
pub fn sig_file(name: &AdminName) -> String {
    format!("admins/{name}.csr.sig")
}
pub fn cert_file(name: &AdminName) -> String {
    format!("admins/{name}.crt")
}
pub fn rbac_file(name: &AdminName) -> String {
    format!("rbac/{name}.yaml")
}

/// The binding's name in the cluster.
pub fn binding_name(name: &AdminName) -> String {
    format!("kaws-admin-{name}")
}

/// A ClusterRoleBinding of user NAME to cluster-admin, labelled as kaws'.
/// NAME is a validated name, so it is safe in YAML as it is.
pub fn rbac_manifest(name: &AdminName) -> String {
    format!(
        "# Grants administrator {name} cluster-admin. Managed by kaws: deleting this\n\
         # binding from the cluster revokes {name}'s access at once.\n\
         apiVersion: rbac.authorization.k8s.io/v1\n\
         kind: ClusterRoleBinding\n\
         metadata:\n  name: {binding}\n  labels:\n    app.kubernetes.io/managed-by: kaws\n    kaws.io/admin: {name}\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n\
         subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: {name}\n",
        binding = binding_name(name)
    )
}

/// `clusters/CLUSTER/revoked.toml`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    #[serde(default, rename = "revoked")]
    pub entries: Vec<RevokedCert>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RevokedCert {
    pub name: AdminName,
    pub serial: String,
    /// SHA-256 of the certificate's DER, uppercase hex.
    pub sha256: String,
    pub revoked_at: String,
    pub revoked_by: AdminName,
}

impl crate::tomlfile::TomlFile for Revoked {
    const HEADER: &'static str = "Administrator certificates revoked by `kaws admin revoke`.";
}

impl Revoked {
    pub fn contains_serial(&self, serial: &str) -> bool {
        self.entries.iter().any(|e| e.serial == serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_yaml_with_one_binding() {
        let name: AdminName = "alice".parse().unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&rbac_manifest(&name)).unwrap();
        assert_eq!(doc["kind"], "ClusterRoleBinding");
        assert_eq!(doc["metadata"]["name"], "kaws-admin-alice");
        assert_eq!(doc["roleRef"]["name"], "cluster-admin");
        assert_eq!(doc["subjects"][0]["name"], "alice");
        assert_eq!(doc["subjects"][0]["kind"], "User");
        assert_eq!(doc["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kaws");
    }
}
