//! AWS errors as kaws sees them: the call, the resource it named, and AWS's
//! own error code and message. Every decision (gone, busy, not visible yet,
//! propagating) is made on the code, in this one module; the only message
//! texts consulted are those AWS gives no code of their own (IAM instance
//! profile propagation), as terraform-provider-aws matches them too.

use std::fmt;
use std::time::Duration;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// One failed AWS call.
#[derive(Debug, Clone)]
pub struct AwsError {
    pub call: &'static str,
    /// The resource the call named, when there is one worth naming.
    pub resource: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// Without a code (a transport failure): the error on one line.
    pub detail: Option<String>,
}

impl AwsError {
    pub fn new<E, R>(call: &'static str, e: &SdkError<E, R>) -> AwsError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
        R: fmt::Debug + 'static,
    {
        let code = e.code().map(String::from);
        let detail = code.is_none().then(|| super::one_line(e));
        AwsError { call, resource: None, code, message: e.message().map(String::from), detail }
    }

    pub fn on(mut self, resource: impl Into<String>) -> AwsError {
        self.resource = Some(resource.into());
        self
    }

    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }

    fn message(&self) -> &str {
        self.message.as_deref().unwrap_or("")
    }

    /// The resource does not exist (or is not visible yet, right after its
    /// create: EC2 is eventually consistent).
    pub fn is_not_found(&self) -> bool {
        let c = self.code();
        c.ends_with(".NotFound")
            || c.ends_with(".NotFoundException")
            || matches!(
                c,
                "NatGatewayNotFound"
                    // KMS
                    | "NotFoundException"
                    | "NoSuchEntity"
                    | "ParameterNotFound"
                    | "NoSuchHostedZone"
                    | "LoadBalancerNotFound"
                    | "TargetGroupNotFound"
                    | "ListenerNotFound"
            )
    }

    /// Another service cannot see an EC2 resource yet: ELBv2 a subnet,
    /// group or instance (terraform-provider-aws retries InvalidTarget for
    /// minutes), Route 53 a VPC.
    pub fn is_not_visible_elsewhere(&self) -> bool {
        matches!(
            self.code(),
            "InvalidTarget" | "SubnetNotFound" | "InvalidSubnet" | "InvalidSecurityGroup" | "InvalidVPCId"
        )
    }

    /// Something still uses the resource; AWS releases it late (ENIs of a
    /// load balancer or NAT gateway, a group still referenced).
    pub fn is_in_use(&self) -> bool {
        matches!(
            self.code(),
            "DependencyViolation"
                | "ResourceInUse"
                | "ResourceInUseFault"
                | "InvalidIPAddress.InUse"
                | "InvalidGroup.InUse"
                | "DeleteConflict"
                | "ScalingActivityInProgress"
                | "InvalidNetworkInterface.InUse"
                | "VolumeInUse"
        )
    }

    /// A new instance profile is not visible to EC2 or Auto Scaling yet.
    pub fn is_iam_propagating(&self) -> bool {
        let (c, m) = (self.code(), self.message());
        (c == "InvalidParameterValue"
            && (m.contains("Invalid IAM Instance Profile")
                || m.contains("iamInstanceProfile")
                || m.contains("has no associated IAM Roles")))
            || (c == "ValidationError" && m.contains("Invalid IAM Instance Profile"))
            // KMS does not know a role the key policy names yet.
            || (c == "MalformedPolicyDocumentException" && m.contains("invalid principals"))
    }

    /// The credentials are wrong or expired: retrying cannot help.
    fn is_credentials(&self) -> bool {
        matches!(
            self.code(),
            "AuthFailure"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "InvalidClientTokenId"
                | "UnrecognizedClientException"
                | "SignatureDoesNotMatch"
                | "RequestExpired"
        )
    }

    fn is_permission(&self) -> bool {
        matches!(self.code(), "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException")
    }

    /// The next step for the user.
    pub fn hint(&self) -> &'static str {
        if self.is_credentials() {
            "the AWS credentials were refused or have expired: refresh them (`aws sso login`, or new keys) and run \
             the command again"
        } else if self.is_permission() {
            "the AWS identity lacks a permission this call needs: see docs/aws.md for the policy kaws needs"
        } else if matches!(self.code(), "RequestLimitExceeded" | "Throttling" | "ThrottlingException") {
            "AWS throttled the calls beyond the SDK's retries (another client may share the account's rate): \
             wait a minute and run the command again"
        } else if self.code() == "IdempotentParameterMismatch" {
            "a client token kaws derives from the request was used with other parameters in the last day: \
             report this as a kaws bug; a later run with any changed parameter proceeds"
        } else if self.code().ends_with("LimitExceeded") {
            "an account quota is reached: raise it in Service Quotas, or free resources, then run the command again"
        } else {
            "run the command again: kaws finds what exists and carries on from there"
        }
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.call)?;
        if let Some(r) = &self.resource {
            write!(f, " {r}")?;
        }
        match (&self.code, &self.message, &self.detail) {
            (Some(c), Some(m), _) => write!(f, ": {c}: {m}"),
            (Some(c), None, _) => write!(f, ": {c}"),
            (None, _, Some(d)) => write!(f, ": {d}"),
            (None, _, None) => write!(f, ": failed"),
        }
    }
}

impl std::error::Error for AwsError {}

/// Several failures as one error: each on its line, and each one's next
/// step, once, as the hint.
pub fn many(headline: String, errors: &[anyhow::Error]) -> anyhow::Error {
    let list: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
    let mut hints: Vec<String> = Vec::new();
    for e in errors {
        let hint = e
            .chain()
            .find_map(|c| c.downcast_ref::<crate::error::UserError>())
            .and_then(|u| u.hint.clone())
            .or_else(|| aws_error(e).map(|a| a.hint().to_owned()));
        if let Some(h) = hint.filter(|h| !hints.contains(h)) {
            hints.push(h);
        }
    }
    let mut err = crate::error::failed(format!("{headline}:\n  {}", list.join("\n  ")));
    if !hints.is_empty() {
        err = err.hint(hints.join("; "));
    }
    err.into()
}

/// The AWS error anywhere in an error's chain.
pub fn aws_error(e: &anyhow::Error) -> Option<&AwsError> {
    e.chain().find_map(|c| c.downcast_ref::<AwsError>())
}

/// Which errors of one call are worth waiting out, and for how long. The
/// SDK itself retries throttling and server errors (standard mode); these
/// are the states real AWS passes through that the SDK cannot know of.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// An id this run created is not visible yet (`Invalid…ID.NotFound`,
    /// or another service's word for an EC2 id it cannot see yet).
    pub not_found: bool,
    /// A new instance profile or role has not reached EC2/Auto Scaling yet.
    pub iam: bool,
    /// Something still holds the resource (deletes, relaunch at a fixed IP).
    pub in_use: bool,
    /// AuthFailure, only where AWS documents it as transient (ReleaseAddress
    /// while the NAT gateway that used the address is being deleted).
    pub auth: bool,
    /// Wait long (deletes, where AWS may take many minutes to let go);
    /// otherwise for the client's settle window (about 2 minutes).
    pub long: bool,
}

/// About two minutes: EC2's eventual consistency and IAM propagation settle
/// well within it (terraform-provider-aws waits 2 minutes for both).
pub const SETTLE: Duration = Duration::from_secs(120);

impl Retry {
    pub const NONE: Retry = Retry { not_found: false, iam: false, in_use: false, auth: false, long: false };

    /// Retry NotFound when the call names something this run created.
    pub const fn settling(fresh: bool) -> Retry {
        Retry { not_found: fresh, ..Retry::NONE }
    }

    pub const IAM: Retry = Retry { iam: true, ..Retry::NONE };

    /// Deletes: wait for AWS to release what holds the resource.
    pub const IN_USE: Retry = Retry { in_use: true, long: true, ..Retry::NONE };

    /// How long a long wait lasts.
    pub const LONG: Duration = Duration::from_secs(900);

    pub fn with_iam(self) -> Retry {
        Retry { iam: true, ..self }
    }

    pub fn with_in_use(self) -> Retry {
        Retry { in_use: true, ..self }
    }

    pub fn with_auth(self) -> Retry {
        Retry { auth: true, ..self }
    }

    pub fn allows(&self, e: &AwsError) -> bool {
        (self.not_found && (e.is_not_found() || e.is_not_visible_elsewhere()))
            || (self.iam && (e.is_iam_propagating() || e.code() == "NoSuchEntity"))
            || (self.in_use && e.is_in_use())
            || (self.auth && e.code() == "AuthFailure")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, message: &str) -> AwsError {
        AwsError { call: "X", resource: None, code: Some(code.into()), message: Some(message.into()), detail: None }
    }

    #[test]
    fn decisions_are_made_on_the_code() {
        assert!(err("InvalidVpcID.NotFound", "").is_not_found());
        assert!(err("InvalidGroup.NotFound", "").is_not_found());
        assert!(err("NatGatewayNotFound", "").is_not_found());
        // A message that merely mentions NotFound is not NotFound.
        assert!(!err("InvalidParameterValue", "NotFound").is_not_found());
        assert!(!err("AuthFailure", "").is_in_use());
        assert!(err(
            "InvalidParameterValue",
            "Value (x) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
        )
        .is_iam_propagating());
        assert!(!err("InvalidParameterValue", "Invalid value for instanceType").is_iam_propagating());
    }

    #[test]
    fn auth_failure_is_retried_only_where_asked() {
        let e = err("AuthFailure", "");
        assert!(!Retry::IN_USE.allows(&e));
        assert!(Retry::IN_USE.with_auth().allows(&e));
        assert!(!Retry::settling(true).allows(&err("InvalidParameterValue", "")));
        assert!(Retry::settling(true).allows(&err("InvalidSubnetID.NotFound", "")));
        assert!(!Retry::settling(false).allows(&err("InvalidSubnetID.NotFound", "")));
    }

    #[test]
    fn one_line_names_call_resource_code_and_message() {
        let e = err("InvalidVpcID.NotFound", "The vpc ID 'vpc-1' does not exist").on("vpc (vpc-1)");
        assert_eq!(e.to_string(), "X vpc (vpc-1): InvalidVpcID.NotFound: The vpc ID 'vpc-1' does not exist");
    }
}
