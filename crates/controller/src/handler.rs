//! The handler core: one event in, one [`Outcome`] out, over the narrow [`Aws`] and [`GitHub`]
//! traits. It takes the wall clock as an argument (epoch seconds) so tests and the benchmark drive
//! it deterministically.
//!
//! Call budget (issue: "at most one Auto Scaling call per event and no GitHub call on the hot
//! path"): a termination event makes one CompleteLifecycleAction for a warm-pool trim and no call
//! at all otherwise; a spot warning makes none; a launch event makes one GitHub call (the token),
//! one Secrets Manager write (two when the secret exists already) and one CompleteLifecycleAction
//! (CONTINUE, or ABANDON instead when the token could not be minted or stored). When minting or
//! storing fails for a reason a retry can fix, the launch is retried with backoff within the
//! hook's and the invocation's time ([`crate::retry`]), heartbeating the hook if needed; those
//! extra calls happen only on that failure path.

use crate::error::HandlerError;
use crate::event::{self, ControllerEvent, LifecycleAction};
use crate::ports::{Aws, Completion, GitHub, LifecycleResult};
use crate::retry::{self, Decision, ErrorClass, TimeLeft, Why};
use crate::settings::Settings;
use crate::sweep::{self, SweepReport};
use lifecycle_core::{ApiError, ApiErrorKind};
use lifecycle_github::{GitHubError, Secret};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// What handling one event did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A warm-pool trim was completed with CONTINUE (no agent runs on a stopped host).
    WarmPoolTrimCompleted {
        /// The instance.
        instance_id: String,
        /// Whether AWS said nothing was pending any more (already completed or timed out).
        already_done: bool,
    },
    /// A termination is left to the host agent; the sweep completes it if no runner is alive on
    /// the instance after the grace period.
    LeftToAgent {
        /// The instance.
        instance_id: String,
    },
    /// A launch: a registration token is stored in the instance's secret and the hook continued.
    LaunchContinued {
        /// The instance.
        instance_id: String,
        /// The secret written.
        secret: String,
        /// Whether AWS said nothing was pending any more.
        already_done: bool,
    },
    /// A launch whose token could not be minted or stored: the hook was abandoned, so the group
    /// replaces the instance instead of keeping a host that can never register.
    LaunchAbandoned {
        /// The instance.
        instance_id: String,
        /// Why.
        reason: String,
    },
    /// A launch whose lifecycle action was no longer pending when the controller tried to extend
    /// it (it timed out, or something else completed it): nothing is left to complete.
    LaunchExpired {
        /// The instance.
        instance_id: String,
        /// The last failure.
        reason: String,
    },
    /// A spot interruption warning: noted; the host agent drains (it reads the same notice from
    /// IMDS), and the termination hook that follows arrives as its own event.
    SpotNoted {
        /// The instance.
        instance_id: String,
        /// `terminate`, `stop` or `hibernate`.
        action: String,
    },
    /// The event concerns a group this controller does not manage.
    Ignored {
        /// The group.
        group: String,
    },
    /// The schedule ran the sweep.
    Swept {
        /// One report per managed group.
        groups: Vec<SweepReport>,
    },
}

/// The controller: settings plus the two ports.
#[derive(Debug)]
pub struct Controller<A, G> {
    settings: Settings,
    aws: A,
    github: G,
}

impl<A: Aws, G: GitHub> Controller<A, G> {
    /// A controller over `aws` and `github`.
    pub fn new(settings: Settings, aws: A, github: G) -> Self {
        Controller { settings, aws, github }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The AWS port (the benchmark reads its counters).
    pub fn aws(&self) -> &A {
        &self.aws
    }

    /// The GitHub port.
    pub fn github(&self) -> &G {
        &self.github
    }

    /// Parse and handle raw event bytes.
    pub async fn handle_bytes(&self, bytes: &[u8], now: i64) -> Result<Outcome, HandlerError> {
        let event = event::parse(bytes)?;
        self.handle(event, now).await
    }

    /// Handle one typed event at wall-clock `now` (epoch seconds), with no deadline but the
    /// settings' launch retry budget.
    pub async fn handle(&self, event: ControllerEvent, now: i64) -> Result<Outcome, HandlerError> {
        self.handle_until(event, now, None).await
    }

    /// Handle one typed event; `deadline` is when the invocation must have returned (a Lambda's
    /// deadline): launch retries stop before it and hand the event back (`crate::retry`).
    pub async fn handle_until(
        &self,
        event: ControllerEvent,
        now: i64,
        deadline: Option<Instant>,
    ) -> Result<Outcome, HandlerError> {
        match event {
            ControllerEvent::Terminate(action) => self.terminate(action).await,
            ControllerEvent::Launch(action) => self.launch(action, now, deadline).await,
            ControllerEvent::SpotInterruption { instance_id, action } => {
                info!(
                    instance_id,
                    action, "spot interruption warning; the host agent drains, the termination hook follows"
                );
                Ok(Outcome::SpotNoted { instance_id, action })
            }
            ControllerEvent::Scheduled { rule } => {
                info!(rule = rule.as_deref().unwrap_or("-"), "scheduled sweep");
                // One group's failure does not stop the others. A retryable failure is returned
                // after all groups were tried (the sweep is idempotent, a retry repeats no harm);
                // a permanent one (AccessDenied, a deleted group) is reported in its group's entry.
                let mut groups = Vec::new();
                let mut retry: Option<HandlerError> = None;
                for group in &self.settings.groups {
                    match sweep::sweep(&self.settings, &self.aws, &self.github, group, now).await {
                        Ok(report) => groups.push(report),
                        Err(e) => {
                            error!(group, error = %e, retryable = e.is_retryable(), "sweep of the group failed");
                            groups.push(SweepReport {
                                group: group.clone(),
                                warnings: vec![format!("sweep failed: {e}")],
                                ..SweepReport::default()
                            });
                            if e.is_retryable() && retry.is_none() {
                                retry = Some(e);
                            }
                        }
                    }
                }
                match retry {
                    Some(e) => Err(e),
                    None => Ok(Outcome::Swept { groups }),
                }
            }
        }
    }

    fn manages(&self, group: &str) -> bool {
        self.settings.groups.contains(group)
    }

    async fn complete(&self, action: &LifecycleAction, result: LifecycleResult) -> Result<bool, HandlerError> {
        let c = completion(action, result);
        match self.aws.complete(&c).await {
            Ok(()) => Ok(false),
            // Nothing pending: completed already (by an agent, an earlier delivery of this event)
            // or timed out. Either way the effect we wanted has happened once.
            Err(e) if e.kind == ApiErrorKind::NoActiveLifecycleAction => Ok(true),
            Err(error) => Err(HandlerError::Aws {
                call: "CompleteLifecycleAction",
                error,
            }),
        }
    }

    async fn terminate(&self, action: LifecycleAction) -> Result<Outcome, HandlerError> {
        if !self.manages(&action.group) {
            info!(group = %lifecycle_escape::clip(&action.group, 255), instance_id = %action.instance_id, "termination in an unmanaged group; ignored");
            return Ok(Outcome::Ignored { group: action.group });
        }
        if action.is_warm_pool_trim() {
            let already_done = self.complete(&action, LifecycleResult::Continue).await?;
            info!(instance_id = %action.instance_id, already_done, "warm-pool trim completed with CONTINUE");
            return Ok(Outcome::WarmPoolTrimCompleted {
                instance_id: action.instance_id,
                already_done,
            });
        }
        info!(instance_id = %action.instance_id, grace_s = self.settings.grace.as_secs(), "termination left to the host agent");
        Ok(Outcome::LeftToAgent {
            instance_id: action.instance_id,
        })
    }

    async fn launch(
        &self,
        action: LifecycleAction,
        now: i64,
        deadline: Option<Instant>,
    ) -> Result<Outcome, HandlerError> {
        if !self.manages(&action.group) {
            info!(group = %lifecycle_escape::clip(&action.group, 255), instance_id = %action.instance_id, "launch in an unmanaged group; ignored");
            return Ok(Outcome::Ignored { group: action.group });
        }
        let secret = self.settings.secret_template.name(&action.group, &action.instance_id);
        let tags: Vec<(String, String)> = match &action.instance_arn {
            Some(arn) => vec![(INSTANCE_TAG.to_string(), arn.clone())],
            None => {
                warn!(instance_id = %action.instance_id, "event without account or region: the token secret is not tagged with the instance ARN, so a host policy confined by that tag cannot read it");
                Vec::new()
            }
        };
        let started = Instant::now();
        let budget_end = started + self.settings.launch_retry_for;
        let invocation_end = deadline.map_or(budget_end, |d| d.min(budget_end));
        let mut clock: Option<HookClock> = None;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let epoch = now.saturating_add(i64::try_from(started.elapsed().as_secs()).unwrap_or(0));
            let failure = match self.github.registration_token().await {
                Ok(token) => {
                    let value = token_secret_value(&token.token, &token.expires_at, epoch);
                    match self.aws.put_secret(&secret, &value, &tags).await {
                        Ok(()) => None,
                        Err(error) => Some(LaunchFailure::Store(error)),
                    }
                }
                Err(e) => Some(LaunchFailure::Mint(e)),
            };
            let Some(failure) = failure else {
                let already_done = self.complete(&action, LifecycleResult::Continue).await?;
                if already_done {
                    warn!(instance_id = %action.instance_id, "launch action no longer pending (timed out?); token stored anyway");
                }
                info!(instance_id = %action.instance_id, secret, attempts = attempt, "registration token stored; launch continued");
                return Ok(Outcome::LaunchContinued {
                    instance_id: action.instance_id,
                    secret,
                    already_done,
                });
            };
            let reason = failure.describe(&secret);
            let class = failure.class();
            // Only a retryable failure needs the hook's clock (one DescribeLifecycleHooks, off the
            // happy path); a permanent one abandons at once.
            let decision = loop {
                let left = match (class, clock.as_ref()) {
                    (ErrorClass::Permanent, _) => TimeLeft {
                        hook: Duration::ZERO,
                        heartbeat: None,
                        invocation: Duration::ZERO,
                    },
                    (_, Some(c)) => c.left(invocation_end),
                    (_, None) => {
                        let c = self.hook_clock(&action, now, started).await;
                        let left = c.left(invocation_end);
                        clock = Some(c);
                        left
                    }
                };
                let d = retry::decide(attempt, class, left, jitter(&action.instance_id, attempt));
                let wants_heartbeat = matches!(
                    d,
                    Decision::RetryAfter {
                        heartbeat_first: true,
                        ..
                    } | Decision::HandBack { heartbeat_first: true }
                );
                let Some(c) = clock.as_mut().filter(|_| wants_heartbeat) else {
                    break d;
                };
                match self
                    .aws
                    .heartbeat(&completion(&action, LifecycleResult::Continue))
                    .await
                {
                    Ok(()) => {
                        c.heartbeaten();
                        info!(instance_id = %action.instance_id, heartbeat_timeout_s = c.heartbeat_timeout.as_secs(), "launch hook heartbeated while retrying");
                        break d;
                    }
                    Err(e) if e.kind == ApiErrorKind::NoActiveLifecycleAction => {
                        warn!(instance_id = %action.instance_id, reason, "launch action no longer pending (timed out or completed elsewhere); giving up on it");
                        return Ok(Outcome::LaunchExpired {
                            instance_id: action.instance_id,
                            reason,
                        });
                    }
                    Err(e) => {
                        // Decide again without heartbeats: retry only within the time the hook
                        // has by itself, else abandon while we still can.
                        warn!(instance_id = %action.instance_id, error = %e, "RecordLifecycleActionHeartbeat failed; no more heartbeats for this launch");
                        c.can_heartbeat = false;
                    }
                }
            };
            match decision {
                Decision::RetryAfter { wait, .. } => {
                    warn!(instance_id = %action.instance_id, attempt, wait_ms = wait.as_millis() as u64, reason, "launch: retryable failure; retrying");
                    tokio::time::sleep(wait).await;
                }
                Decision::HandBack { .. } => {
                    let e = failure.into_error();
                    error!(instance_id = %action.instance_id, attempt, error = %e, "launch: still failing and this invocation's time is nearly out; handing the event back for a retry (the hook stays pending)");
                    return Err(e);
                }
                Decision::Abandon(why) => {
                    let why = match why {
                        Why::Permanent => "a failure retrying cannot fix",
                        Why::HookTimeNearlyOut => "the launch hook's time is nearly out",
                    };
                    error!(instance_id = %action.instance_id, group = %action.group, attempt, reason, why, "launch abandoned: the instance could not get a registration token and would never serve");
                    self.complete(&action, LifecycleResult::Abandon).await?;
                    return Ok(Outcome::LaunchAbandoned {
                        instance_id: action.instance_id,
                        reason: format!("{reason} ({why})"),
                    });
                }
            }
        }
    }

    /// The hook's clock, estimated when a launch first fails: its HeartbeatTimeout from
    /// DescribeLifecycleHooks (the API's minimum, 30 s, when that fails: heartbeats come earlier,
    /// never later), counted from the event's time (when the action began) or, without one, from
    /// the start of this invocation.
    async fn hook_clock(&self, action: &LifecycleAction, now: i64, started: Instant) -> HookClock {
        let timeout_s = match self.aws.hook_timeout(&action.group, &action.hook).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                warn!(hook = %action.hook, "launch hook not found; assuming the shortest HeartbeatTimeout (30 s)");
                MIN_HEARTBEAT_TIMEOUT_S
            }
            Err(e) => {
                warn!(hook = %action.hook, error = %e, "DescribeLifecycleHooks failed; assuming the shortest HeartbeatTimeout (30 s)");
                MIN_HEARTBEAT_TIMEOUT_S
            }
        };
        let began = action
            .time
            .as_deref()
            .and_then(lifecycle_github::time::parse_rfc3339)
            .map_or(now, |t| t.min(now));
        let elapsed = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
        let left_s = began
            .saturating_add(i64::try_from(timeout_s).unwrap_or(i64::MAX))
            .saturating_sub(now.saturating_add(elapsed))
            .max(0);
        HookClock {
            heartbeat_timeout: Duration::from_secs(timeout_s),
            expires: Instant::now() + Duration::from_secs(u64::try_from(left_s).unwrap_or(0)),
            can_heartbeat: true,
        }
    }
}

/// The tag the controller puts on every token secret: the instance's ARN, which the host policy
/// compares with `${ec2:SourceInstanceARN}` (docs/controller.md, "IAM").
pub const INSTANCE_TAG: &str = "runner-lifecycle-instance-arn";
/// PutLifecycleHook's lower bound for HeartbeatTimeout (API reference).
const MIN_HEARTBEAT_TIMEOUT_S: u64 = 30;

/// The launch hook's clock as the retry loop knows it.
#[derive(Clone, Copy, Debug)]
struct HookClock {
    heartbeat_timeout: Duration,
    expires: Instant,
    can_heartbeat: bool,
}

impl HookClock {
    fn left(&self, invocation_end: Instant) -> TimeLeft {
        let now = Instant::now();
        TimeLeft {
            hook: self.expires.saturating_duration_since(now),
            heartbeat: self.can_heartbeat.then_some(self.heartbeat_timeout),
            invocation: invocation_end.saturating_duration_since(now),
        }
    }

    fn heartbeaten(&mut self) {
        self.expires = Instant::now() + self.heartbeat_timeout;
    }
}

/// Why one launch attempt failed.
#[derive(Debug)]
enum LaunchFailure {
    Mint(GitHubError),
    Store(ApiError),
}

impl LaunchFailure {
    fn class(&self) -> ErrorClass {
        match self {
            LaunchFailure::Mint(GitHubError::RateLimited { retry_after }) => ErrorClass::Retryable {
                hint: Some(*retry_after),
            },
            LaunchFailure::Mint(e) if e.is_retryable() => ErrorClass::Retryable { hint: None },
            LaunchFailure::Store(e) if e.kind.is_retryable_soon() => ErrorClass::Retryable { hint: None },
            _ => ErrorClass::Permanent,
        }
    }

    fn describe(&self, secret: &str) -> String {
        match self {
            LaunchFailure::Mint(e) => format!("minting a registration token: {e}"),
            LaunchFailure::Store(e) => format!("storing the token in secret {secret}: {e}"),
        }
    }

    fn into_error(self) -> HandlerError {
        match self {
            LaunchFailure::Mint(e) => HandlerError::GitHub(e),
            LaunchFailure::Store(error) => HandlerError::Aws {
                call: "CreateSecret/PutSecretValue",
                error,
            },
        }
    }
}

/// A deterministic jitter in 0..=1 per instance and attempt, so a burst of launches failing
/// together does not retry together.
fn jitter(instance_id: &str, attempt: u32) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (instance_id, attempt).hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn completion(action: &LifecycleAction, result: LifecycleResult) -> Completion {
    Completion {
        group: action.group.clone(),
        hook: action.hook.clone(),
        instance_id: action.instance_id.clone(),
        token: action.token.clone(),
        result,
    }
}

/// The secret's value: JSON with the token and its expiry, so `register` can tell an expired token
/// from a rejected one before it runs config.sh.
pub fn token_secret_value(token: &Secret, expires_at: &str, now: i64) -> Secret {
    let value = serde_json::json!({
        "token": token.expose(),
        "expires_at": expires_at,
        "minted_at": lifecycle_github::time::format_rfc3339(now),
    });
    Secret::new(value.to_string())
}
