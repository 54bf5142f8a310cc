//! AWS provisioning, in the style of a task graph: the desired resources
//! come from the spec alone (`model`), the actual ones are found by their
//! `kaws:cluster` tag (`world`), their difference is the plan (`plan`), and
//! `apply` runs every change whose dependencies are done, concurrently.
//! `destroy` deletes everything tagged for the cluster and checks that
//! nothing is left.
//!
//! Settings come from aws-config's standard chain (profiles, SSO, the
//! environment, IMDS, `AWS_ENDPOINT_URL`); the region is always the spec's.

pub mod apply;
pub mod destroy;
pub mod model;
pub mod plan;
pub mod world;

use std::time::Duration;

use anyhow::{anyhow, Result};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::cluster::ClusterSpec;

/// One client per service, all for the spec's region.
#[derive(Clone)]
pub struct Aws {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub asg: aws_sdk_autoscaling::Client,
    pub iam: aws_sdk_iam::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub r53: aws_sdk_route53::Client,
    /// How long to wait between polls of a resource that is not ready yet.
    pub poll: Duration,
}

impl Aws {
    pub async fn connect(spec: &ClusterSpec) -> Aws {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(spec.region.clone()))
            // Throttling and transient errors back off; the adaptive mode
            // also slows down when AWS says the account is over its rate.
            .retry_config(RetryConfig::adaptive().with_max_attempts(8))
            .load()
            .await;
        let poll = std::env::var("KAWS_AWS_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(5), Duration::from_millis);
        Aws {
            ec2: aws_sdk_ec2::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            asg: aws_sdk_autoscaling::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            r53: aws_sdk_route53::Client::new(&config),
            poll,
        }
    }
}

/// The error code AWS answered with, if any.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.code()
}

/// Turns an SDK error into one that names the call and AWS's own message.
pub trait Call<T> {
    fn call(self, what: &str) -> Result<T>;
}

impl<T, E, R> Call<T> for std::result::Result<T, SdkError<E, R>>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn call(self, what: &str) -> Result<T> {
        self.map_err(|e| match (e.code(), e.message()) {
            (Some(code), Some(message)) => anyhow!("{what}: {code}: {message}"),
            (Some(code), None) => anyhow!("{what}: {code}"),
            _ => anyhow!("{what}: {}", DisplayErrorContext(&e)),
        })
    }
}

/// Polls `check` until it answers `Some`, every `poll`, for at most `limit`:
/// the waiters real AWS needs (NAT gateways, instances, load balancers).
pub async fn wait_for<T, F, Fut>(what: &str, poll: Duration, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() >= limit {
            return Err(anyhow!("timed out after {}s waiting for {what}", limit.as_secs()));
        }
        tokio::time::sleep(poll).await;
    }
}

/// A short hex digest: the `kaws:config` tag of instances and the launch
/// template, and the source marker of SSM parameters.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut h = openssl::sha::Sha256::new();
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finish()[..12].iter().map(|b| format!("{b:02x}")).collect()
}
