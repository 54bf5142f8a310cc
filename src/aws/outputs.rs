//! What `apply` records for `admin install` and people (`outputs.toml`,
//! committed): the API's endpoint and name, the bastion's address, and the
//! id of every resource of the graph.

use serde::{Deserialize, Serialize};

use super::key::Key;
use super::model::Node;
use super::resources::{instance, lb, Kind, State};
use crate::cluster::ClusterSpec;

pub const OUTPUTS_FILE: &str = "outputs.toml";

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Outputs {
    pub region: String,
    /// The load balancer's DNS name; kubeconfigs use it with
    /// `tls-server-name: api.CLUSTER.DOMAIN` when there is no public zone.
    pub api_endpoint: String,
    pub api_name: String,
    pub bastion: Option<String>,
    pub ids: std::collections::BTreeMap<String, String>,
}

impl crate::tomlfile::TomlFile for Outputs {
    const HEADER: &'static str = "What `kaws cluster apply` made (read by `kaws admin install`). Written by kaws.";
}

impl Outputs {
    /// The API endpoint, checked before anyone connects to it: any
    /// administrator may record `outputs.toml`, so it must be the DNS name
    /// of the cluster's own load balancer in its region (as ELB names them; a
    /// connection to it is still verified against the cluster CA for the
    /// spec's API name, never outputs' `api-name`).
    pub fn checked_endpoint(&self, spec: &ClusterSpec) -> Result<crate::name::DnsName, String> {
        let bad = |why: &str| format!("outputs.toml: api-endpoint {:?} {why}", crate::text::escape(&self.api_endpoint));
        let name: crate::name::DnsName = self.api_endpoint.parse().map_err(|_| bad("is not a DNS name"))?;
        let region = spec.region.as_str();
        let elb = [
            format!(".elb.{region}.amazonaws.com"),
            format!(".{region}.elb.amazonaws.com"),
            format!(".elb.{region}.amazonaws.com.cn"),
        ];
        if !elb.iter().any(|suffix| self.api_endpoint.ends_with(suffix.as_str())) {
            return Err(bad(&format!("is not a load balancer's name in {region}")));
        }
        // ELB names it after the load balancer kaws made: NAME-ID.… (ID
        // letters and digits only, so another cluster's NAME-more-ID is not it).
        let lb = super::naming::short_name(spec, "api").to_lowercase();
        let label = self.api_endpoint.split('.').next().unwrap_or_default();
        let id = label.strip_prefix(&format!("{lb}-")).unwrap_or_default();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad(&format!("is not the name of the load balancer kaws makes ({lb})")));
        }
        Ok(name)
    }

    /// The outputs of the state after an apply: `None` without a load balancer.
    pub fn of(spec: &ClusterSpec, graph: &[Node], state: &State) -> Option<Outputs> {
        let (_, lb) = state.get::<lb::Found>(&Key::Lb)?;
        let bastion = state.get::<instance::Found>(&Key::Instance(super::key::Host::Bastion));
        Some(Outputs {
            region: spec.region.clone(),
            api_endpoint: lb.dns.clone()?.0,
            api_name: spec.api_name(),
            bastion: bastion.and_then(|(_, b)| b.public_ip.clone()),
            ids: graph
                .iter()
                .filter(|n| !matches!(n.want.kind(), Kind::Rules | Kind::Targets | Kind::Param))
                .filter_map(|n| Some((n.key.to_string(), state.id(&n.key)?.to_owned())))
                .collect(),
        })
    }
}
