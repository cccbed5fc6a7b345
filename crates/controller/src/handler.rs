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
        let mut beat_failed = false;
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
                let left = match class {
                    ErrorClass::Permanent => TimeLeft {
                        hook: Duration::ZERO,
                        hook_likely: Duration::ZERO,
                        heartbeat: None,
                        global: Duration::ZERO,
                        invocation: Duration::ZERO,
                    },
                    ErrorClass::Retryable { .. } => {
                        match clock.as_mut() {
                            // The HeartbeatTimeout could not be read before: try again (one
                            // DescribeLifecycleHooks per failed attempt until it is known).
                            Some(c) if !c.known => self.read_hook_timeout(&action, c).await,
                            Some(_) => {}
                            None => clock = Some(self.hook_clock(&action, now, started).await),
                        }
                        clock
                            .as_ref()
                            .map(|c| c.left(invocation_end, beat_failed))
                            .unwrap_or(TimeLeft {
                                hook: Duration::ZERO,
                                hook_likely: Duration::ZERO,
                                heartbeat: None,
                                global: Duration::ZERO,
                                invocation: Duration::ZERO,
                            })
                    }
                };
                let d = retry::decide(attempt, class, left, retry::jitter(&action.instance_id, attempt));
                let wants_heartbeat = matches!(
                    d,
                    Decision::RetryAfter {
                        heartbeat_first: true,
                        ..
                    } | Decision::HandBack { heartbeat_first: true }
                );
                let Some(c) = clock.as_mut().filter(|_| wants_heartbeat && !beat_failed) else {
                    break d;
                };
                match self.beat(&action, c).await {
                    Beat::Done => break d,
                    Beat::Gone => {
                        warn!(instance_id = %action.instance_id, reason, "launch action no longer pending (timed out or completed elsewhere); giving up on it");
                        return Ok(Outcome::LaunchExpired {
                            instance_id: action.instance_id,
                            reason,
                        });
                    }
                    // Decide again without a heartbeat for this round: retry only within the
                    // time the hook likely has by itself, else abandon while we still can.
                    Beat::Failed => beat_failed = true,
                }
            };
            beat_failed = false;
            match decision {
                Decision::RetryAfter { wait, .. } => {
                    warn!(instance_id = %action.instance_id, attempt, wait_ms = wait.as_millis() as u64, reason, "launch: retryable failure; retrying");
                    // Wait, heartbeating the hook whenever the rest of the wait would outlast
                    // it (a rate limit may ask for longer than its HeartbeatTimeout).
                    if let Some(c) = clock.as_mut() {
                        if !self.hold(&action, c, wait).await {
                            warn!(instance_id = %action.instance_id, reason, "launch action no longer pending (timed out or completed elsewhere); giving up on it");
                            return Ok(Outcome::LaunchExpired {
                                instance_id: action.instance_id,
                                reason,
                            });
                        }
                    } else {
                        tokio::time::sleep(wait).await;
                    }
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

    /// The hook's clock, made when a launch first fails: its HeartbeatTimeout from
    /// DescribeLifecycleHooks, counted from the event's time (when the action began) or, without
    /// one, from the start of this invocation. When the timeout cannot be read (throttled, no such
    /// hook), the AWS default (3600 s) is assumed for the limits and the hook is heartbeated as if
    /// it were the API's minimum (30 s); the next failed attempt reads it again.
    async fn hook_clock(&self, action: &LifecycleAction, now: i64, started: Instant) -> HookClock {
        let began = action
            .time
            .as_deref()
            .and_then(lifecycle_github::time::parse_rfc3339)
            .map_or(now, |t| t.min(now));
        let mut c = HookClock {
            heartbeat_timeout: Duration::from_secs(DEFAULT_HEARTBEAT_TIMEOUT_S),
            known: false,
            before_start: Duration::from_secs(u64::try_from(now.saturating_sub(began)).unwrap_or(0)),
            start: started,
            last_beat: None,
            can_heartbeat: true,
        };
        self.read_hook_timeout(action, &mut c).await;
        c
    }

    /// One DescribeLifecycleHooks for the launch hook: the clock's timeout when it answers.
    async fn read_hook_timeout(&self, action: &LifecycleAction, c: &mut HookClock) {
        match self.aws.hook_timeout(&action.group, &action.hook).await {
            Ok(Some(s)) => {
                c.heartbeat_timeout = Duration::from_secs(s.clamp(MIN_HEARTBEAT_TIMEOUT_S, MAX_HEARTBEAT_TIMEOUT_S));
                c.known = true;
            }
            Ok(None) => {
                warn!(hook = %action.hook, "launch hook not found; assuming the default HeartbeatTimeout ({DEFAULT_HEARTBEAT_TIMEOUT_S} s) and heartbeating as if it were {MIN_HEARTBEAT_TIMEOUT_S} s");
            }
            Err(e) => {
                warn!(hook = %action.hook, error = %e, "DescribeLifecycleHooks failed; assuming the default HeartbeatTimeout ({DEFAULT_HEARTBEAT_TIMEOUT_S} s) and heartbeating as if it were {MIN_HEARTBEAT_TIMEOUT_S} s");
            }
        }
    }

    /// One RecordLifecycleActionHeartbeat for the launch.
    async fn beat(&self, action: &LifecycleAction, c: &mut HookClock) -> Beat {
        match self.aws.heartbeat(&completion(action, LifecycleResult::Continue)).await {
            Ok(()) => {
                c.last_beat = Some(Instant::now());
                info!(instance_id = %action.instance_id, heartbeat_timeout_s = c.heartbeat_timeout.as_secs(), known = c.known, "launch hook heartbeated while retrying");
                Beat::Done
            }
            Err(e) if e.kind == ApiErrorKind::NoActiveLifecycleAction => Beat::Gone,
            Err(e) if e.kind.is_retryable_soon() => {
                warn!(instance_id = %action.instance_id, error = %e, "RecordLifecycleActionHeartbeat failed; trying again later");
                Beat::Failed
            }
            Err(e) => {
                warn!(instance_id = %action.instance_id, error = %e, "RecordLifecycleActionHeartbeat refused; no more heartbeats for this launch");
                c.can_heartbeat = false;
                Beat::Failed
            }
        }
    }

    /// Sleep `wait`, in slices, heartbeating the hook before a slice it would not surely outlive.
    /// `false`: the action is gone (timed out, or completed elsewhere).
    async fn hold(&self, action: &LifecycleAction, c: &mut HookClock, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        loop {
            let now = Instant::now();
            if now >= end {
                return true;
            }
            let hold = c.hold_for();
            let step = (end - now).min(hold.saturating_sub(retry::RESERVE).max(HOLD_SLICE_MIN));
            let margin = retry::RESERVE.min(hold / 2);
            if c.can_heartbeat && c.sure_left(now) < step + margin && matches!(self.beat(action, c).await, Beat::Gone) {
                return false;
            }
            tokio::time::sleep(step).await;
        }
    }
}

/// The tag the controller puts on every token secret: the instance's ARN, which the host policy
/// compares with `${ec2:SourceInstanceARN}` (docs/controller.md, "IAM").
pub const INSTANCE_TAG: &str = "runner-lifecycle-instance-arn";
/// PutLifecycleHook's lower bound for HeartbeatTimeout (API reference).
const MIN_HEARTBEAT_TIMEOUT_S: u64 = 30;
/// PutLifecycleHook's upper bound for HeartbeatTimeout (API reference).
const MAX_HEARTBEAT_TIMEOUT_S: u64 = 7200;
/// PutLifecycleHook's default HeartbeatTimeout (API reference): assumed when it cannot be read.
pub use lifecycle_core::aws::DEFAULT_HEARTBEAT_TIMEOUT_S;
/// An action waits at most 100 times its HeartbeatTimeout or 48 hours, whichever is smaller
/// (`LifecycleHook.GlobalTimeout`, API reference): heartbeats cannot pass it.
const GLOBAL_TIMEOUT_MAX_S: u64 = 172_800;
/// The shortest slice a held wait sleeps between two looks at the hook.
const HOLD_SLICE_MIN: Duration = Duration::from_secs(10);

/// What one heartbeat did.
enum Beat {
    Done,
    /// NoActiveLifecycleAction.
    Gone,
    /// Any other failure (retryable: heartbeats stay allowed; else they stop).
    Failed,
}

/// The launch hook's clock as the retry loop knows it.
#[derive(Clone, Copy, Debug)]
struct HookClock {
    /// The HeartbeatTimeout read, or the default assumed.
    heartbeat_timeout: Duration,
    /// Whether it was read.
    known: bool,
    /// How long the action had been waiting when this invocation started.
    before_start: Duration,
    /// When this invocation started.
    start: Instant,
    /// Our last heartbeat.
    last_beat: Option<Instant>,
    /// Whether heartbeats are allowed (not refused).
    can_heartbeat: bool,
}

impl HookClock {
    /// What one heartbeat surely buys: the timeout if known, else the API's minimum.
    fn hold_for(&self) -> Duration {
        if self.known {
            self.heartbeat_timeout
        } else {
            Duration::from_secs(MIN_HEARTBEAT_TIMEOUT_S)
        }
    }

    fn since_began(&self, now: Instant) -> Duration {
        self.before_start + now.saturating_duration_since(self.start)
    }

    fn since_base(&self, now: Instant) -> Duration {
        self.last_beat
            .map_or(self.since_began(now), |b| now.saturating_duration_since(b))
    }

    fn sure_left(&self, now: Instant) -> Duration {
        self.hold_for().saturating_sub(self.since_base(now))
    }

    fn left(&self, invocation_end: Instant, beat_failed: bool) -> TimeLeft {
        let now = Instant::now();
        let global = self
            .heartbeat_timeout
            .saturating_mul(100)
            .min(Duration::from_secs(GLOBAL_TIMEOUT_MAX_S));
        TimeLeft {
            hook: self.sure_left(now),
            hook_likely: self.heartbeat_timeout.saturating_sub(self.since_base(now)),
            heartbeat: (self.can_heartbeat && !beat_failed).then_some(self.heartbeat_timeout),
            global: global.saturating_sub(self.since_began(now)),
            invocation: invocation_end.saturating_duration_since(now),
        }
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
