//! What the core knows about Auto Scaling: lifecycle states, IMDS target states, and API errors
//! sorted into the kinds that change a decision.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The instance's state as `DescribeAutoScalingInstances` reports it, grouped by what it means for a
/// runner host. The raw text is kept for logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AsgState {
    /// `Pending`, `Pending:Wait`, `Pending:Proceed`, `Quarantined`: launching; the runner must not start
    /// yet (a resumed warm-pool instance passes `Pending:Wait` again).
    Launching(String),
    /// `InService`: may run jobs.
    InService,
    /// `EnteringStandby`, `Standby`: taken out of service by an operator to update or troubleshoot the
    /// instance; no runner may start and no config is minted ([`AsgState::runner`]). Protection is
    /// still valid there (AWS SetInstanceProtection docs).
    Standby(String),
    /// `Terminating:Wait`: a termination hook holds the instance; it needs heartbeats while a job runs
    /// and one CompleteLifecycleAction when idle.
    TerminatingWait,
    /// `Terminating`, `Terminating:Proceed`, `Terminated`: on its way out with no hook left to complete.
    TerminatingProceed(String),
    /// `Warmed:*`: in the warm pool; no runner may start. `Warmed:Terminating*` is a pool trim, handled
    /// centrally because no agent runs on a stopped host.
    Warmed(String),
    /// `Detaching`, `Detached`: leaving the group; no hook will come.
    Detached(String),
    /// Any state AWS adds later; the raw text is kept and the core treats it conservatively.
    Other(String),
}

impl AsgState {
    /// Parse a `LifecycleState` string as the Auto Scaling API returns it.
    pub fn parse(s: &str) -> AsgState {
        let owned = s.to_string();
        match s {
            "InService" => AsgState::InService,
            "Terminating:Wait" => AsgState::TerminatingWait,
            "Terminating" | "Terminating:Proceed" | "Terminated" => AsgState::TerminatingProceed(owned),
            "EnteringStandby" | "Standby" => AsgState::Standby(owned),
            "Detaching" | "Detached" => AsgState::Detached(owned),
            _ if s.starts_with("Warmed:") => AsgState::Warmed(owned),
            _ if s.starts_with("Pending") || s == "Quarantined" => AsgState::Launching(owned),
            _ => AsgState::Other(owned),
        }
    }

    /// Whether the instance is on the scale-in path (no way back: AWS lifecycle docs).
    pub fn is_terminating(&self) -> bool {
        matches!(self, AsgState::TerminatingWait | AsgState::TerminatingProceed(_))
    }

    /// Whether this state may hold a runner: the one rule the core (start a listener, fetch a JIT
    /// config), the controller's JIT route (mint) and the simulator all call.
    ///
    /// Only `InService` holds one. `Pending`, `Pending:Wait` and `Pending:Proceed` become `InService`
    /// without anyone acting, so a config may be minted for them ([`RunnerRule::may_mint`]); the core
    /// still starts its listener only once InService is confirmed. Everything else holds none:
    /// `Terminating*` and `Detaching`/`Detached` are on their way out, `Warmed:*` is a stopped pool
    /// host, an unknown new state is treated conservatively, and `EnteringStandby`/`Standby` is out of
    /// service by AWS's definition: an operator moved the instance there "to update or troubleshoot
    /// the instance, and then return the instance to service"; Auto Scaling by default decrements the
    /// desired capacity for it (Amazon EC2 Auto Scaling User Guide, "Temporarily remove instances
    /// from your Auto Scaling group", as-enter-exit-standby.html). Jobs there would run on capacity
    /// the group does not count, on a host someone is working on.
    pub fn runner(&self) -> RunnerRule {
        match self {
            AsgState::InService => RunnerRule::Holds,
            AsgState::Launching(s) if s == "Pending" || s.starts_with("Pending:") => RunnerRule::Soon,
            _ => RunnerRule::Never,
        }
    }

    /// `runner() == RunnerRule::Holds`: a runner may serve jobs in this state now.
    pub fn may_hold_runner(&self) -> bool {
        self.runner() == RunnerRule::Holds
    }

    /// Whether SetInstanceProtection is valid in this state: `InService`, `EnteringStandby`, `Standby`
    /// (the API's own error text: "not in InService or EnteringStandby or Standby").
    pub fn protection_valid(&self) -> bool {
        matches!(self, AsgState::InService | AsgState::Standby(_))
    }
}

/// What [`AsgState::runner`] says about a lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerRule {
    /// `InService`: may hold a runner now.
    Holds,
    /// `Pending*`: will be InService without anyone acting; a config minted now is used then.
    Soon,
    /// Every other state, `Standby` included: no runner, no config.
    Never,
}

impl RunnerRule {
    /// Whether a JIT config may be minted for an instance in this state.
    pub fn may_mint(self) -> bool {
        self != RunnerRule::Never
    }
}

/// Every `LifecycleState` the Auto Scaling API can return (its `LifecycleState` enumeration), for
/// the tests that hold each state to its rule.
pub const LIFECYCLE_STATES: &[&str] = &[
    "Pending",
    "Pending:Wait",
    "Pending:Proceed",
    "Quarantined",
    "InService",
    "Terminating",
    "Terminating:Wait",
    "Terminating:Proceed",
    "Terminating:Retained",
    "Terminated",
    "Detaching",
    "Detached",
    "EnteringStandby",
    "Standby",
    "ReplacingRootVolume",
    "ReplacingRootVolume:Wait",
    "ReplacingRootVolume:Proceed",
    "RootVolumeReplaced",
    "Warmed:Pending",
    "Warmed:Pending:Wait",
    "Warmed:Pending:Proceed",
    "Warmed:Pending:Retained",
    "Warmed:Terminating",
    "Warmed:Terminating:Wait",
    "Warmed:Terminating:Proceed",
    "Warmed:Terminating:Retained",
    "Warmed:Terminated",
    "Warmed:Stopped",
    "Warmed:Running",
    "Warmed:Hibernated",
];

/// [`AsgState::runner`] for a `LifecycleState` string as the Auto Scaling API returns it: whether the
/// controller may mint a JIT config for an instance in that state.
pub fn lifecycle_state_may_mint(state: &str) -> bool {
    AsgState::parse(state).runner().may_mint()
}

impl fmt::Display for AsgState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AsgState::InService => f.write_str("InService"),
            AsgState::TerminatingWait => f.write_str("Terminating:Wait"),
            AsgState::Launching(s)
            | AsgState::Standby(s)
            | AsgState::TerminatingProceed(s)
            | AsgState::Warmed(s)
            | AsgState::Detached(s)
            | AsgState::Other(s) => f.write_str(s),
        }
    }
}

/// The value of IMDS `autoscaling/target-lifecycle-state`: where the instance is *going*. It cannot
/// tell `Terminating:Wait` from `Terminating:Proceed` (AWS docs, "Retrieve the target lifecycle state
/// through instance metadata"), and during `Pending:Wait` it already says `InService`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetState {
    /// `InService` (also while still in `Pending:Wait`).
    InService,
    /// `Terminated`: scale-in has picked this instance (Terminating, :Wait or :Proceed).
    Terminated,
    /// `Standby`.
    Standby,
    /// `Detached`.
    Detached,
    /// `Warmed:Hibernated|Running|Stopped|Terminated`.
    Warmed(String),
    /// IMDS answered 404: the instance belongs to no Auto Scaling group (or the feature is absent).
    /// The runner then serves without any Auto Scaling calls.
    NotInGroup,
    /// A value we do not know; kept for logs, treated as "no change".
    Other(String),
}

impl TargetState {
    /// Parse the IMDS body (whitespace trimmed).
    pub fn parse(s: &str) -> TargetState {
        let s = s.trim();
        match s {
            "InService" => TargetState::InService,
            "Terminated" => TargetState::Terminated,
            "Standby" => TargetState::Standby,
            "Detached" => TargetState::Detached,
            _ if s.starts_with("Warmed:") => TargetState::Warmed(s.to_string()),
            _ => TargetState::Other(s.to_string()),
        }
    }
}

impl fmt::Display for TargetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetState::InService => f.write_str("InService"),
            TargetState::Terminated => f.write_str("Terminated"),
            TargetState::Standby => f.write_str("Standby"),
            TargetState::Detached => f.write_str("Detached"),
            TargetState::NotInGroup => f.write_str("(not in a group)"),
            TargetState::Warmed(s) | TargetState::Other(s) => f.write_str(s),
        }
    }
}

/// PutLifecycleHook's default `HeartbeatTimeout` (API reference): what a hook has when none was
/// set, and what the agent and the controller assume when they cannot read it.
pub const DEFAULT_HEARTBEAT_TIMEOUT_S: u64 = 3600;

/// A hook's `HeartbeatTimeout` in seconds from the API's optional (signed) field: unset or
/// negative is [`DEFAULT_HEARTBEAT_TIMEOUT_S`].
pub fn heartbeat_timeout_s(api: Option<i32>) -> u64 {
    api.and_then(|s| u64::try_from(s).ok())
        .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT_S)
}

/// Auto Scaling API failures, sorted by what the core does about them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiErrorKind {
    /// `ValidationError: The instance i-... is not in InService or EnteringStandby or Standby.`:
    /// SetInstanceProtection on an instance already terminating. Means "switch to draining".
    NotInService,
    /// `ValidationError: No active Lifecycle Action found with instance ID ...`: nothing pending; a
    /// completion counts as done (exactly-once effect), a heartbeat means the hook is gone.
    NoActiveLifecycleAction,
    /// The instance is not in any Auto Scaling group (describe returned nothing, or a validation error
    /// naming an unknown instance).
    InstanceNotFound,
    /// `Throttling` / `Rate exceeded`: all Auto Scaling calls of an account share one token bucket.
    Throttled,
    /// 5xx, timeouts, connection errors: retry.
    Transient,
    /// `AccessDenied` / `UnauthorizedOperation`: retried slowly, loudly; an operator must fix IAM.
    AccessDenied,
    /// Anything else: retried slowly, loudly.
    Other,
}

wire_names! {
    ApiErrorKind {
        NotInService => "not-in-service",
        NoActiveLifecycleAction => "no-active-lifecycle-action",
        InstanceNotFound => "instance-not-found",
        Throttled => "throttled",
        Transient => "transient",
        AccessDenied => "access-denied",
        Other => "other",
    }
}

impl ApiErrorKind {
    /// Whether retrying soon can help.
    pub fn is_retryable_soon(self) -> bool {
        matches!(self, ApiErrorKind::Throttled | ApiErrorKind::Transient)
    }

    /// Sort an AWS error code and message into a kind. Shared by every driver so they agree.
    pub fn classify(code: &str, message: &str) -> ApiErrorKind {
        let lower = message.to_ascii_lowercase();
        match code {
            "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequestsException" => {
                ApiErrorKind::Throttled
            }
            "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => ApiErrorKind::AccessDenied,
            "InternalFailure" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" => ApiErrorKind::Transient,
            "ValidationError" if lower.contains("no active lifecycle action") => ApiErrorKind::NoActiveLifecycleAction,
            "ValidationError" if lower.contains("is not in inservice") => ApiErrorKind::NotInService,
            "ValidationError" if lower.contains("not found") || lower.contains("invalid instance id") => {
                ApiErrorKind::InstanceNotFound
            }
            _ if lower.contains("rate exceeded") => ApiErrorKind::Throttled,
            _ => ApiErrorKind::Other,
        }
    }
}

/// A failed Auto Scaling call, as the driver reports it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What the core does about it.
    pub kind: ApiErrorKind,
    /// The service's message (never carries secrets: Auto Scaling errors name instances and hooks).
    pub message: String,
    /// How long the service asked to wait (`Retry-After`), if it said: the retry never comes
    /// sooner. The JIT endpoint passes on GitHub's rate-limit reset this way; without it a fleet
    /// would retry a rate-limited GitHub App every 30 s for as long as the limit lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error of `kind` with a message.
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, with the service's `Retry-After`.
    #[must_use]
    pub fn with_retry_after(mut self, after: Option<std::time::Duration>) -> Self {
        self.retry_after = after;
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_lifecycle_state() {
        assert_eq!(AsgState::parse("InService"), AsgState::InService);
        assert_eq!(AsgState::parse("Terminating:Wait"), AsgState::TerminatingWait);
        for s in ["Terminating", "Terminating:Proceed", "Terminated"] {
            assert!(matches!(AsgState::parse(s), AsgState::TerminatingProceed(_)), "{s}");
        }
        for s in ["Pending", "Pending:Wait", "Pending:Proceed", "Quarantined"] {
            assert!(matches!(AsgState::parse(s), AsgState::Launching(_)), "{s}");
        }
        for s in [
            "Warmed:Pending:Wait",
            "Warmed:Running",
            "Warmed:Terminating:Wait",
            "Warmed:Hibernated",
        ] {
            assert!(matches!(AsgState::parse(s), AsgState::Warmed(_)), "{s}");
        }
        assert!(AsgState::parse("Standby").protection_valid());
        assert!(matches!(AsgState::parse("Detached"), AsgState::Detached(_)));
        assert_eq!(AsgState::parse("Brand:New"), AsgState::Other("Brand:New".into()));
        assert_eq!(
            AsgState::parse("Terminating:Proceed").to_string(),
            "Terminating:Proceed"
        );
    }

    #[test]
    fn only_in_service_holds_a_runner_and_standby_gets_no_config() {
        assert_eq!(AsgState::parse("InService").runner(), RunnerRule::Holds);
        for s in ["Pending", "Pending:Wait", "Pending:Proceed"] {
            assert_eq!(AsgState::parse(s).runner(), RunnerRule::Soon, "{s}");
            assert!(
                lifecycle_state_may_mint(s) && !AsgState::parse(s).may_hold_runner(),
                "{s}"
            );
        }
        let never = LIFECYCLE_STATES
            .iter()
            .copied()
            .filter(|s| *s != "InService" && !s.starts_with("Pending"));
        for s in never.chain(["Brand:New"]) {
            assert_eq!(AsgState::parse(s).runner(), RunnerRule::Never, "{s}");
            assert!(!lifecycle_state_may_mint(s), "{s}");
        }
        assert!(lifecycle_state_may_mint("InService"));
        // Protection stays valid in Standby: a job started before it keeps its protection.
        assert!(AsgState::parse("EnteringStandby").protection_valid());
    }

    #[test]
    fn an_unset_heartbeat_timeout_is_aws_default() {
        assert_eq!(heartbeat_timeout_s(None), 3600);
        assert_eq!(heartbeat_timeout_s(Some(-1)), 3600);
        assert_eq!(heartbeat_timeout_s(Some(300)), 300);
    }

    #[test]
    fn parses_target_states() {
        assert_eq!(TargetState::parse("Terminated\n"), TargetState::Terminated);
        assert_eq!(TargetState::parse("InService"), TargetState::InService);
        assert!(matches!(TargetState::parse("Warmed:Stopped"), TargetState::Warmed(_)));
        assert!(matches!(TargetState::parse("???"), TargetState::Other(_)));
    }

    #[test]
    fn classifies_aws_error_texts() {
        use ApiErrorKind::*;
        let c = ApiErrorKind::classify;
        assert_eq!(
            c(
                "ValidationError",
                "The instance i-0abc is not in InService or EnteringStandby or Standby."
            ),
            NotInService
        );
        assert_eq!(
            c(
                "ValidationError",
                "No active Lifecycle Action found with instance ID i-0abc"
            ),
            NoActiveLifecycleAction
        );
        assert_eq!(
            c("ValidationError", "No active Lifecycle Action found with token 1234"),
            NoActiveLifecycleAction
        );
        assert_eq!(c("Throttling", "Rate exceeded"), Throttled);
        assert_eq!(c("", "Rate exceeded"), Throttled);
        assert_eq!(c("InternalFailure", "boom"), Transient);
        assert_eq!(c("AccessDenied", "not authorized"), AccessDenied);
        assert_eq!(c("ValidationError", "something else"), Other);
        assert!(Throttled.is_retryable_soon() && !AccessDenied.is_retryable_soon());
    }
}
