//! The handler core: one event in, one [`Outcome`] out, over the narrow [`Aws`] and [`GitHub`]
//! traits. It takes the wall clock as an argument (epoch seconds) so tests and the benchmark drive
//! it deterministically.
//!
//! Call budget (issue: "at most one Auto Scaling call per event and no GitHub call on the hot
//! path"): a termination event makes one CompleteLifecycleAction for a warm-pool trim and no call
//! at all otherwise; a spot warning makes none; a launch event makes one GitHub call (the token),
//! one Secrets Manager write (two when the secret exists already) and one CompleteLifecycleAction
//! (CONTINUE, or ABANDON instead when the token could not be minted or stored).

use crate::event::{self, ControllerEvent, EventError, LifecycleAction};
use crate::ports::{Aws, Completion, GitHub, LifecycleResult};
use crate::settings::Settings;
use crate::sweep::{self, SweepReport};
use lifecycle_core::{ApiError, ApiErrorKind};
use lifecycle_github::{GitHubError, Secret};
use serde::Serialize;
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

/// Why handling failed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event is malformed or of a kind the controller does not handle. Not retryable.
    #[error("event rejected: {0}")]
    Event(#[from] EventError),
    /// An AWS call failed.
    #[error("{call} failed: {error}")]
    Aws {
        /// The API action.
        call: &'static str,
        /// The classified failure.
        error: ApiError,
    },
    /// A GitHub call failed.
    #[error("GitHub: {0}")]
    GitHub(#[from] GitHubError),
}

impl HandlerError {
    /// Whether invoking again may succeed (throttling, 5xx, timeouts, GitHub rate limits). A
    /// malformed event, AccessDenied or a configuration problem is not: retrying only repeats it.
    pub fn is_retryable(&self) -> bool {
        match self {
            HandlerError::Event(_) => false,
            HandlerError::Aws { error, .. } => error.kind.is_retryable_soon(),
            HandlerError::GitHub(e) => e.is_retryable(),
        }
    }
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

    /// Handle one typed event at wall-clock `now` (epoch seconds).
    pub async fn handle(&self, event: ControllerEvent, now: i64) -> Result<Outcome, HandlerError> {
        match event {
            ControllerEvent::Terminate(action) => self.terminate(action).await,
            ControllerEvent::Launch(action) => self.launch(action, now).await,
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
        let c = Completion {
            group: action.group.clone(),
            hook: action.hook.clone(),
            instance_id: action.instance_id.clone(),
            token: action.token.clone(),
            result,
        };
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

    async fn launch(&self, action: LifecycleAction, now: i64) -> Result<Outcome, HandlerError> {
        if !self.manages(&action.group) {
            info!(group = %lifecycle_escape::clip(&action.group, 255), instance_id = %action.instance_id, "launch in an unmanaged group; ignored");
            return Ok(Outcome::Ignored { group: action.group });
        }
        let secret = self.settings.secret_template.name(&action.group, &action.instance_id);
        let stored = match self.github.registration_token().await {
            Ok(token) => {
                let value = token_secret_value(&token.token, &token.expires_at, now);
                self.aws
                    .put_secret(&secret, &value)
                    .await
                    .map_err(|e| format!("storing the token in secret {secret}: {e}"))
            }
            Err(e) => Err(format!("minting a registration token: {e}")),
        };
        match stored {
            Ok(()) => {
                let already_done = self.complete(&action, LifecycleResult::Continue).await?;
                if already_done {
                    warn!(instance_id = %action.instance_id, "launch action no longer pending (timed out?); token stored anyway");
                }
                info!(instance_id = %action.instance_id, secret, "registration token stored; launch continued");
                Ok(Outcome::LaunchContinued {
                    instance_id: action.instance_id,
                    secret,
                    already_done,
                })
            }
            Err(reason) => {
                error!(instance_id = %action.instance_id, group = %action.group, reason, "launch abandoned: the instance could not get a registration token and would never serve");
                self.complete(&action, LifecycleResult::Abandon).await?;
                Ok(Outcome::LaunchAbandoned {
                    instance_id: action.instance_id,
                    reason,
                })
            }
        }
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
