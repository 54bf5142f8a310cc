//! `kaws cluster status`: what runs, as AWS and the API endpoint show it.
//! Each instance of the cluster (its key, id, state, addresses, and for a
//! master whether its etcd volume is attached), and the certificate the
//! API endpoint serves, seen through a real TLS handshake: verified against
//! the cluster's CA bundle for the API's name, or what it presented and why
//! it does not verify. And who last wrote the node bootstrap token: kaws
//! (the repository's) or the cluster (the masters' hourly renewal, a sign
//! that a control plane runs and reaches SSM), and when. Read-only:
//! Describe calls and one TLS handshake.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context as _, Result};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use serde::Serialize;

use super::{open_cluster, provision::runtime};
use crate::aws::key::Key;
use crate::aws::outputs::{Outputs, OUTPUTS_FILE};
use crate::aws::resources::{instance, ssm, volume};
use crate::aws::{world, Aws};
use crate::cli::Output;
use crate::commands::Opened;
use crate::context::Ctx;

#[derive(Serialize)]
struct Instance {
    key: String,
    id: String,
    state: String,
    private_ip: Option<String>,
    public_ip: Option<String>,
    /// A master's etcd volume: attached to it, or not.
    etcd_volume: Option<String>,
    /// The bootstrap step it reports (`up` once done), as it reports it.
    stage: Option<String>,
    /// The trust generation it reports running, and whether that is the
    /// repository's current one.
    generation: Option<String>,
    current: bool,
}

#[derive(Serialize, Default)]
struct Api {
    endpoint: String,
    name: String,
    reachable: bool,
    /// The chain verifies against the cluster's CA bundle, for the API's name.
    verified: bool,
    error: Option<String>,
    subject: Option<String>,
    issuer: Option<String>,
    not_after: Option<String>,
}

/// The node bootstrap token's parameter, as SSM describes it.
#[derive(Serialize)]
struct Token {
    /// "kaws" (the repository's token) or "cluster" (a master's renewal).
    written_by: String,
    last_written: Option<String>,
    /// A renewed token (2 hours) still live: renewed within 2 hours.
    live: Option<bool>,
}

#[derive(Serialize)]
struct Status {
    cluster: String,
    region: String,
    /// The repository's trust generation, which every instance should run.
    generation: String,
    rotation: crate::cluster::rotation::State,
    instances: Vec<Instance>,
    api: Option<Api>,
    token: Option<Token>,
}

/// Who last wrote the node token's parameter and when, `now` being Unix seconds.
fn token(found: Option<&ssm::Found>, now: i64) -> Option<Token> {
    let f = found?;
    let renewed = f.marker.as_deref() == Some(ssm::RENEWED);
    Some(Token {
        written_by: if renewed { "cluster" } else { "kaws" }.into(),
        last_written: f.modified.map(crate::context::rfc3339_unix),
        live: renewed.then(|| f.modified.is_some_and(|at| now - at < ssm::RENEWED_TTL_SECS)),
    })
}

pub fn status(ctx: &Ctx, raw: &str, endpoint: Option<&str>) -> Result<()> {
    let (Opened { repo, .. }, loaded) = open_cluster(ctx, raw, false)?;
    let spec = &loaded.spec;
    let generation = super::rollout::current(&repo, &loaded)?;
    let record: crate::cluster::rotation::Record =
        repo.read_toml(&loaded.path(crate::cluster::rotation::ROTATION_FILE))?.unwrap_or_default();
    let rt = runtime()?;
    let world = rt.block_on(async { world::discover(&Aws::connect(spec).await?, spec).await })?;
    let volumes: Vec<(&Key, &str)> = world
        .found
        .iter()
        .flat_map(|(k, v)| v.iter().map(move |f| (k, f)))
        .filter(|(_, f)| f.get::<volume::Found>().is_some())
        .map(|(k, f)| (k, f.id.as_str()))
        .collect();
    let mut instances = Vec::new();
    for (key, found) in world.found.iter().flat_map(|(k, v)| v.iter().map(move |f| (k, f))) {
        let Some(i) = found.get::<instance::Found>() else { continue };
        let etcd_volume = match key {
            Key::Instance(crate::aws::key::Host::Master(n)) => {
                let vol = volumes.iter().find(|(k, _)| **k == Key::Volume(*n)).map(|(_, id)| *id);
                Some(match vol {
                    Some(v) if i.volumes.iter().any(|have| have == v) => format!("{v} attached"),
                    Some(v) => format!("{v} not attached"),
                    None => "missing".into(),
                })
            }
            _ => None,
        };
        instances.push(Instance {
            key: key.to_string(),
            id: found.id.clone(),
            state: i.state.clone(),
            private_ip: i.private_ip.clone(),
            public_ip: i.public_ip.clone(),
            etcd_volume,
            stage: i.stage.clone(),
            current: i.generation.as_deref() == Some(generation.as_str()),
            generation: i.generation.clone(),
        });
    }
    let outputs: Option<Outputs> = repo.read_toml(&loaded.path(OUTPUTS_FILE))?;
    // The CAs the cluster trusts, as the rotation's phase allows them; the
    // API's name from the spec, its address from outputs (checked) or --endpoint.
    let bundle = super::ca_bundle(&repo, &loaded)?.into_bytes();
    let api = match (outputs, endpoint) {
        (None, _) => None,
        (Some(_), Some(e)) => Some(probe(e, &spec.api_name(), &bundle)),
        (Some(o), None) => Some(match o.checked_endpoint(spec) {
            Ok(host) => probe(&format!("{host}:6443"), &spec.api_name(), &bundle),
            Err(why) => {
                Api { endpoint: o.api_endpoint.clone(), name: spec.api_name(), error: Some(why), ..Api::default() }
            }
        }),
    };
    let found = ssm::node_token_found(spec, world.found.values().flatten());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let token = token(found, now);
    let status = Status {
        cluster: loaded.name.to_string(),
        region: spec.region.clone(),
        generation,
        rotation: record.state,
        instances,
        api,
        token,
    };
    match ctx.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        Output::Text => print!("{}", text(&status)),
    }
    Ok(())
}

/// One TLS handshake, verified against the cluster's CA bundle for the
/// API's name; when that fails, a second one that only shows what the
/// endpoint presents.
fn probe(target: &str, name: &str, bundle: &[u8]) -> Api {
    let mut api = Api { endpoint: target.to_owned(), name: name.to_owned(), ..Api::default() };
    match handshake(target, name, Some(bundle)) {
        Ok(cert) => {
            api.reachable = true;
            api.verified = true;
            describe(&mut api, &cert);
        }
        Err(e) => {
            api.error = Some(format!("{e:#}"));
            if let Ok(cert) = handshake(target, name, None) {
                api.reachable = true;
                describe(&mut api, &cert);
            }
        }
    }
    api
}

fn describe(api: &mut Api, cert: &X509) {
    let cn = |n: &openssl::x509::X509NameRef| {
        n.entries_by_nid(openssl::nid::Nid::COMMONNAME).next().and_then(|e| e.data().to_string().ok())
    };
    api.subject = cn(cert.subject_name());
    api.issuer = cn(cert.issuer_name());
    api.not_after = Some(cert.not_after().to_string());
}

/// The certificate the endpoint presents; with `bundle`, only if it chains
/// to it and is valid for `name`.
fn handshake(target: &str, name: &str, bundle: Option<&[u8]>) -> Result<X509> {
    let addr = target
        .to_socket_addrs()
        .with_context(|| format!("{target} does not resolve"))?
        .next()
        .with_context(|| format!("{target} has no address"))?;
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connecting to {target}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    match bundle {
        // Only the cluster's CAs: a store of their own, not the system's
        // (the builder starts from the default paths).
        Some(pem) => {
            let mut store = X509StoreBuilder::new()?;
            for ca in X509::stack_from_pem(pem).context("the CA bundle is not PEM")? {
                store.add_cert(ca)?;
            }
            builder.set_cert_store(store.build());
        }
        None => builder.set_verify(SslVerifyMode::NONE),
    }
    let mut config = builder.build().configure()?;
    if bundle.is_none() {
        config.set_verify_hostname(false);
    }
    let stream =
        config.connect(name, tcp).map_err(|e| anyhow::anyhow!("TLS handshake with {target} as {name}: {e}"))?;
    stream.ssl().peer_certificate().context("the endpoint presented no certificate")
}

/// The report as text. Every field kaws did not write itself (what EC2,
/// the instances, `outputs.toml` and the API endpoint say, TLS errors) is
/// escaped for the terminal.
fn text(s: &Status) -> String {
    let e = |t: &str| crate::text::escape(t).into_owned();
    let esc = |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_owned(), e);
    let mut out = format!(
        "{} in {}: trust generation {} (rotation {})\n",
        s.cluster,
        e(&s.region),
        s.generation,
        s.rotation.label()
    );
    out += &format!(
        "  {:<22} {:<21} {:<13} {:<15} {:<14} {:<26} {}\n",
        "instance", "id", "state", "address", "stage", "generation", "etcd volume"
    );
    for i in &s.instances {
        let generation = match &i.generation {
            Some(_) if i.current => format!("{} (current)", esc(&i.generation)),
            Some(_) => format!("{} (OLD)", esc(&i.generation)),
            None => "-".into(),
        };
        out += &format!(
            "  {:<22} {:<21} {:<13} {:<15} {:<14} {:<26} {}\n",
            e(&i.key),
            e(&i.id),
            e(&i.state),
            esc(&i.private_ip),
            esc(&i.stage),
            generation,
            e(i.etcd_volume.as_deref().unwrap_or(""))
        );
    }
    match &s.api {
        None => out += "  API: not applied yet (no outputs.toml)\n",
        Some(a) => {
            let served = match (&a.subject, &a.issuer, &a.not_after) {
                (Some(sub), Some(iss), Some(na)) => format!("{}, issued by {}, valid until {}", e(sub), e(iss), e(na)),
                _ => "nothing".into(),
            };
            let verdict = if a.verified {
                "verified against the cluster's CA bundle".to_owned()
            } else {
                format!("NOT verified: {}", e(a.error.as_deref().unwrap_or("unknown")))
            };
            out += &format!("  API {} (as {}): serves {served}; {verdict}\n", e(&a.endpoint), e(&a.name));
        }
    }
    let at = |t: &Token| t.last_written.as_deref().map_or_else(|| "an unknown time".to_owned(), e);
    out += &match &s.token {
        None => "  bootstrap token: not written to SSM yet\n".into(),
        Some(t) if t.live == Some(true) => format!("  bootstrap token: renewed by the cluster at {}\n", at(t)),
        Some(t) if t.live == Some(false) => format!(
            "  bootstrap token: last renewed by the cluster at {}, over 2 hours ago: it has expired; \
             see `journalctl -u kaws-token.service` on the masters\n",
            at(t)
        ),
        Some(t) => format!(
            "  bootstrap token: the repository's, written by kaws at {} (the masters renew it once a control plane is up)\n",
            at(t)
        ),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_shows_who_wrote_it_and_whether_it_lives() {
        let kaws = ssm::Found { marker: Some("kaws source x".into()), modified: Some(100), ..ssm::Found::default() };
        let t = token(Some(&kaws), 10_000).unwrap();
        assert_eq!((t.written_by.as_str(), t.live), ("kaws", None));
        let renewed = ssm::Found { marker: Some(ssm::RENEWED.into()), ..kaws };
        assert_eq!(token(Some(&renewed), 100 + 7_199).unwrap().live, Some(true));
        assert_eq!(token(Some(&renewed), 100 + 7_200).unwrap().live, Some(false));
        assert!(token(None, 0).is_none());
    }
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn nothing_from_outside_reaches_the_terminal_raw() {
        let evil = "x\u{1b}[2J\u{202e}y".to_owned();
        let s = Status {
            cluster: "prod".into(),
            region: evil.clone(),
            generation: "g".into(),
            rotation: crate::cluster::rotation::State::Settled,
            instances: vec![Instance {
                key: evil.clone(),
                id: evil.clone(),
                state: evil.clone(),
                private_ip: Some(evil.clone()),
                public_ip: Some(evil.clone()),
                etcd_volume: Some(evil.clone()),
                stage: Some(evil.clone()),
                generation: Some(evil.clone()),
                current: false,
            }],
            api: Some(Api {
                endpoint: evil.clone(),
                name: evil.clone(),
                reachable: true,
                verified: false,
                error: Some(evil.clone()),
                subject: Some(evil.clone()),
                issuer: Some(evil.clone()),
                not_after: Some(evil.clone()),
            }),
            token: Some(Token { written_by: "kaws".into(), last_written: Some(evil.clone()), live: None }),
        };
        let out = text(&s);
        assert!(!out.chars().any(|c| c == '\u{1b}' || c == '\u{202e}'), "{out}");
        assert!(out.contains("x\\u{001b}[2J\\u{202e}y"), "{out}");
    }
}
