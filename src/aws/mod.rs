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
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::cluster::ClusterSpec;
use crate::error::failed;

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

/// The credential sources aws-config's default chain tries, in order.
const CREDENTIAL_SOURCES: &str = "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the shared profile \
(AWS_PROFILE in ~/.aws/config and ~/.aws/credentials, SSO included), a web identity token, the ECS container \
endpoint and EC2 instance metadata";

/// Loads credentials once, before any call: a missing or broken credential
/// is one message naming what was tried and what to do, not a dispatch
/// failure on the first call.
async fn check_credentials(config: &aws_config::SdkConfig) -> Result<()> {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_sdk_ec2::config::ProvideCredentials;
    let hint = "set AWS_PROFILE to a configured profile (`aws configure`, or `aws sso login --profile NAME`), \
                or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; to try kaws without an AWS account, \
                scripts/quickstart.sh runs the whole job against a local emulator";
    let Some(provider) = config.credentials_provider() else {
        return Err(failed(format!("no AWS credentials were found (tried {CREDENTIAL_SOURCES})")).hint(hint).into());
    };
    match provider.provide_credentials().await {
        Ok(_) => Ok(()),
        Err(CredentialsError::CredentialsNotLoaded(_)) => {
            Err(failed(format!("no AWS credentials were found (tried {CREDENTIAL_SOURCES})")).hint(hint).into())
        }
        Err(e) => Err(failed(format!("the AWS credentials could not be loaded: {}", one_line(&e))).hint(hint).into()),
    }
}

/// An error and its sources on one line, each cut at its first line break
/// and the whole at 300 characters: what went wrong, without debug dumps.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        let first = text.lines().next().unwrap_or("").trim().to_owned();
        if !first.is_empty() && !parts.iter().any(|p| p.contains(&first)) {
            parts.push(first);
        }
        cur = err.source();
    }
    let mut line = parts.join(": ");
    if line.len() > 300 {
        let mut end = 300;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

impl Aws {
    pub async fn connect(spec: &ClusterSpec) -> Result<Aws> {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(spec.region.clone()))
            // Throttling and transient errors back off; the adaptive mode
            // also slows down when AWS says the account is over its rate.
            .retry_config(RetryConfig::adaptive().with_max_attempts(8))
            .load()
            .await;
        check_credentials(&config).await?;
        let poll = std::env::var("KAWS_AWS_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(5), Duration::from_millis);
        Ok(Aws {
            ec2: aws_sdk_ec2::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            asg: aws_sdk_autoscaling::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            r53: aws_sdk_route53::Client::new(&config),
            poll,
        })
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
            _ => anyhow!("{what}: {}", one_line(&e)),
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
