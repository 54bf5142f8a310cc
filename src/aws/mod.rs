//! AWS provisioning, in the style of a task graph: the desired resources
//! come from the spec alone (`model`), the actual ones are found by their
//! `kaws:cluster` tag (`world`), their difference is the plan (`plan`), and
//! `apply` runs every change whose dependencies are done, concurrently.
//! `destroy` deletes everything tagged for the cluster, in the graph's
//! reverse order, and checks that nothing is left. What each kind of
//! resource is, and how it is found, diffed, made and deleted, is in its
//! own module under `resources`; every name kaws gives is in `naming`.
//!
//! Settings come from aws-config's standard chain (profiles, SSO, the
//! environment, IMDS, `AWS_ENDPOINT_URL`); the region is always the spec's.

pub mod apply;
pub mod destroy;
pub mod error;
pub mod image;
pub mod key;
pub mod model;
pub mod naming;
pub mod outputs;
pub mod plan;
pub mod resources;
pub mod world;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

pub use self::error::{aws_error, AwsError, Retry};
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
    pub kms: aws_sdk_kms::Client,
    /// How long to wait between polls of a resource that is not ready yet.
    pub poll: Duration,
    /// How long to wait out what real AWS settles within about two minutes
    /// (eventual consistency, IAM propagation); shorter in the tests.
    pub settle: Duration,
    buckets: Arc<Buckets>,
}

/// The services whose mutating calls kaws paces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Svc {
    Ec2,
    /// EC2's RunInstances, which has a bucket of its own.
    Run,
    Iam,
    Other,
}

/// A token bucket: `cap` calls at once, then `rate` per second.
struct Bucket {
    tokens: f64,
    cap: f64,
    rate: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(cap: f64, rate: f64) -> Mutex<Bucket> {
        Mutex::new(Bucket { tokens: cap, cap, rate, at: tokio::time::Instant::now() })
    }
}

/// EC2 throttles each account by token buckets ("Request throttling for the
/// Amazon EC2 API"): mutating actions 200 then 5/s, RunInstances 5 then 2/s.
/// kaws stays inside them (a 100-node cluster must not spend the account's
/// budget); IAM's unpublished write limit is treated as 20 then 5/s. The
/// SDK's standard retry still backs off if another client shares them.
struct Buckets {
    ec2: Mutex<Bucket>,
    run: Mutex<Bucket>,
    iam: Mutex<Bucket>,
}

impl Buckets {
    fn new() -> Buckets {
        Buckets { ec2: Bucket::new(200.0, 5.0), run: Bucket::new(5.0, 2.0), iam: Bucket::new(20.0, 5.0) }
    }

    /// Waits for a token of `svc`'s bucket (RunInstances takes from both of EC2's).
    async fn take(&self, svc: Svc) {
        let buckets: &[&Mutex<Bucket>] = match svc {
            Svc::Ec2 => &[&self.ec2],
            Svc::Run => &[&self.run, &self.ec2],
            Svc::Iam => &[&self.iam],
            Svc::Other => &[],
        };
        for b in buckets {
            loop {
                let wait = {
                    let mut b = b.lock().expect("a bucket lock");
                    let now = tokio::time::Instant::now();
                    b.tokens = (b.tokens + (now - b.at).as_secs_f64() * b.rate).min(b.cap);
                    b.at = now;
                    if b.tokens >= 1.0 {
                        b.tokens -= 1.0;
                        break;
                    }
                    Duration::from_secs_f64((1.0 - b.tokens) / b.rate)
                };
                tokio::time::sleep(wait).await;
            }
        }
    }
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
            // Throttling and transient errors back off (standard mode, as
            // terraform-provider-aws uses); kaws paces its mutating calls to
            // EC2's documented buckets itself (`Buckets`). Not the adaptive
            // mode: its client-side limiter is shared by every call to the
            // service, waiters' polls included, and after one throttle it
            // slowed a whole apply eightfold (scripts/bench-apply.sh).
            .retry_config(RetryConfig::standard().with_max_attempts(8))
            .load()
            .await;
        check_credentials(&config).await?;
        let poll = std::env::var("KAWS_AWS_POLL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(5), Duration::from_millis);
        let settle = std::env::var("KAWS_AWS_SETTLE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(error::SETTLE, Duration::from_millis);
        Ok(Aws {
            ec2: aws_sdk_ec2::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            asg: aws_sdk_autoscaling::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            r53: aws_sdk_route53::Client::new(&config),
            kms: aws_sdk_kms::Client::new(&config),
            poll,
            settle,
            buckets: Arc::new(Buckets::new()),
        })
    }

    /// One mutating call of `svc`: paced to AWS's rate limits, and retried
    /// while `retry` says its error is a state AWS passes through, for at
    /// most its window. The SDK itself retries throttling and server errors.
    pub async fn send<T, E, R, F, Fut>(
        &self,
        svc: Svc,
        call: &'static str,
        retry: Retry,
        mut f: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SdkError<E, R>>>,
        E: std::error::Error + ProvideErrorMetadata + 'static,
        R: std::fmt::Debug + 'static,
    {
        let start = tokio::time::Instant::now();
        let window = if retry.long { Retry::LONG } else { self.settle };
        let mut delay = self.poll.min(Duration::from_secs(1));
        loop {
            self.buckets.take(svc).await;
            let err = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => AwsError::new(call, &e),
            };
            if !retry.allows(&err) || start.elapsed() + delay > window {
                return Err(err);
            }
            if std::env::var_os("KAWS_VERBOSE").is_some() {
                eprintln!("waiting to retry {err}");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// Turns an SDK error into one that names the call and AWS's own message.
pub trait Call<T> {
    fn call(self, what: &'static str) -> Result<T>;
}

impl<T, E, R> Call<T> for std::result::Result<T, SdkError<E, R>>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn call(self, what: &'static str) -> Result<T> {
        self.map_err(|e| AwsError::new(what, &e).into())
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
