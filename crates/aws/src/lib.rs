//! # lifecycle-aws
//!
//! The two things every AWS caller of runner-lifecycle shares, so the agent, `register` and the
//! controller configure the official SDK the same way and sort its failures the same way:
//!
//! - [`sdk_config`]: one `SdkConfig` with an explicit region, retry policy and timeouts;
//! - [`api_error`]: an SDK failure sorted into the decision core's [`ApiErrorKind`]s, using
//!   [`ApiErrorKind::classify`] so every driver agrees on what AWS's error texts mean.
//!
//! It depends on `aws-config` and the smithy runtime types only, and on a service crate only
//! behind a feature, so a binary pays for each service SDK only where that service is called.
//!
//! With the `autoscaling` feature, [`autoscaling`] holds the Auto Scaling reads those three all
//! make (DescribeAutoScalingInstances, DescribeLifecycleHooks), written once; with
//! `secretsmanager`, [`secrets`] the Secrets Manager call `register` and the controller share.
//!
//! [`function_url`] is the agent's client of the controller's `POST /jit-config` and
//! `POST /jit-config/release` (SigV4-signed requests to a Lambda function URL), built on the same
//! HTTP/TLS stack as the SDK.

#[cfg(feature = "autoscaling")]
pub mod autoscaling;
pub mod function_url;
#[cfg(feature = "secretsmanager")]
pub mod secrets;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use lifecycle_core::{ApiError, ApiErrorKind};
use std::time::Duration;

/// How the SDK retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryPolicy {
    /// No SDK retries: the caller owns the retry schedule (the agent's core: capped exponential
    /// backoff with jitter per call kind). Stacking the SDK's retries under it would multiply the
    /// calls a fleet sends into the one Auto Scaling token bucket its account shares.
    CoreRetries,
    /// The SDK's standard mode with three attempts: for one-shot callers that have no retry loop
    /// of their own (the job hook's fallback, `register`, the controller's Lambda invocations).
    Standard,
}

/// Build the SDK configuration: explicit region, retry and timeouts; credentials from the SDK's
/// default chain (environment, profile, then the instance profile through IMDS, or the Lambda
/// execution role's variables).
pub async fn sdk_config(
    region: &str,
    endpoint_url: Option<&str>,
    api_timeout: Duration,
    retry: RetryPolicy,
) -> SdkConfig {
    let retry_config = match retry {
        RetryPolicy::CoreRetries => RetryConfig::disabled(),
        RetryPolicy::Standard => RetryConfig::standard().with_max_attempts(3),
    };
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3).min(api_timeout))
        .operation_attempt_timeout(api_timeout)
        .operation_timeout(api_timeout * 3)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .retry_config(retry_config)
        .timeout_config(timeouts);
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Sort an SDK failure into the core's kinds, keeping AWS's code and message for the logs.
pub fn api_error<E>(err: &SdkError<E, Response>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let message = service.err().message().unwrap_or_default();
            let status = service.raw().status().as_u16();
            let mut kind = ApiErrorKind::classify(code, message);
            // An unknown error code on a 5xx answer is the service's trouble, not ours: retry soon.
            if kind == ApiErrorKind::Other && status >= 500 {
                kind = ApiErrorKind::Transient;
            }
            if kind == ApiErrorKind::Other && status == 429 {
                kind = ApiErrorKind::Throttled;
            }
            let text = if code.is_empty() {
                format!("HTTP {status}: {message}")
            } else {
                format!("{code}: {message}")
            };
            ApiError::new(kind, text)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ApiError::new(ApiErrorKind::Transient, DisplayErrorContext(err).to_string())
        }
        _ => ApiError::new(ApiErrorKind::Other, DisplayErrorContext(err).to_string()),
    }
}

/// The AWS error code of a service error (`ResourceNotFoundException`, `ValidationError`, ...), for
/// callers that need a decision the core's kinds do not make (a secret that does not exist).
pub fn error_code<E>(err: &SdkError<E, Response>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// The default name of the per-instance registration-token secret (Secrets Manager).
pub const DEFAULT_SECRET_TEMPLATE: &str = "runner-lifecycle/{group}/{instance_id}";
/// The default name of the per-instance registration-token parameter (SSM Parameter Store).
pub const DEFAULT_PARAMETER_TEMPLATE: &str = "/runner-lifecycle/{group}/{instance_id}";

/// The name of the per-instance registration secret (or SSM parameter), from a template with
/// `{group}` and `{instance_id}` placeholders, e.g. `runner-lifecycle/{group}/{instance_id}`. The
/// controller writes it at launch, `register` reads and deletes it, the sweep deletes leftovers:
/// all three use this one type so they agree on names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate(String);

impl NameTemplate {
    /// Validate a template: it must contain `{instance_id}` once, `{group}` at most once and before
    /// it, and otherwise only characters Secrets Manager and SSM accept in names
    /// (`A-Za-z0-9/_+=.@-`).
    pub fn parse(template: &str) -> Result<NameTemplate, String> {
        let t = template.trim();
        if t.matches("{instance_id}").count() != 1 {
            return Err(format!("name template `{t}` must contain {{instance_id}} exactly once"));
        }
        if t.matches("{group}").count() > 1 {
            return Err(format!("name template `{t}` contains {{group}} more than once"));
        }
        if let (Some(g), Some(i)) = (t.find("{group}"), t.find("{instance_id}")) {
            if g > i {
                return Err(format!(
                    "name template `{t}`: {{group}} must come before {{instance_id}}"
                ));
            }
        }
        let literal = t.replace("{instance_id}", "").replace("{group}", "");
        if let Some(c) = literal
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
        {
            return Err(format!(
                "name template `{t}` contains `{c}`, which secret and parameter names cannot"
            ));
        }
        Ok(NameTemplate(t.to_string()))
    }

    /// The default secret template, [`DEFAULT_SECRET_TEMPLATE`] (valid: unit-tested).
    pub fn default_secret() -> NameTemplate {
        NameTemplate(DEFAULT_SECRET_TEMPLATE.to_string())
    }

    /// The default parameter template, [`DEFAULT_PARAMETER_TEMPLATE`] (valid: unit-tested).
    pub fn default_parameter() -> NameTemplate {
        NameTemplate(DEFAULT_PARAMETER_TEMPLATE.to_string())
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name for one instance of one group.
    pub fn name(&self, group: &str, instance_id: &str) -> String {
        self.0.replace("{group}", group).replace("{instance_id}", instance_id)
    }

    /// Every name of `group` starts with this (for listing).
    pub fn prefix(&self, group: &str) -> String {
        let head = self.0.split("{instance_id}").next().unwrap_or_default();
        head.replace("{group}", group)
    }

    /// The instance id a name of `group` was made for, if it is one of ours.
    pub fn instance_of(&self, group: &str, name: &str) -> Option<String> {
        let prefix = self.prefix(group);
        let suffix = self.0.split("{instance_id}").nth(1).unwrap_or_default();
        let id = name.strip_prefix(&prefix)?.strip_suffix(suffix)?;
        let hex = id.strip_prefix("i-")?;
        ((hex.len() == 8 || hex.len() == 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_templates_round_trip() -> Result<(), String> {
        let t = NameTemplate::parse("runner-lifecycle/{group}/{instance_id}/token")?;
        assert_eq!(
            t.name("runners", "i-0123456789abcdef0"),
            "runner-lifecycle/runners/i-0123456789abcdef0/token"
        );
        assert_eq!(t.prefix("runners"), "runner-lifecycle/runners/");
        assert_eq!(
            t.instance_of("runners", "runner-lifecycle/runners/i-0123456789abcdef0/token")
                .as_deref(),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(
            t.instance_of("runners", "runner-lifecycle/other/i-0123456789abcdef0/token"),
            None
        );
        assert_eq!(
            t.instance_of("runners", "runner-lifecycle/runners/not-an-id/token"),
            None
        );
        Ok(())
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(
            NameTemplate::parse(DEFAULT_SECRET_TEMPLATE),
            Ok(NameTemplate::default_secret())
        );
        assert_eq!(
            NameTemplate::parse(DEFAULT_PARAMETER_TEMPLATE),
            Ok(NameTemplate::default_parameter())
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "no-placeholder",
            "{instance_id}/{instance_id}",
            "{instance_id}/{group}",
            "a b/{instance_id}",
            "x/{group}{group}/{instance_id}",
        ] {
            assert!(NameTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
