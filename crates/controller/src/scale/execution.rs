//! Carrying the decision out: the state table's optimistic-locking loop, the apply (describe,
//! decide, set), the trailing edge of the apply window, and the reconcile.

use super::decision::{self, Plan};
use super::metrics::{gauges, metrics_line, ScaleMetrics};
use super::state::GroupState;
use crate::error::HandlerError;
use crate::handler::Controller;
use crate::ports::{Aws, Capacity, GitHub};
use crate::retry;
use crate::settings::ScaleSettings;
use crate::webhook;
use lifecycle_core::scaling::{Demand, ScaleReason};
use lifecycle_core::{ApiError, ApiErrorKind};
use serde::Serialize;
use std::time::Duration;
use tracing::{error, info, warn};

/// Trailing-edge rounds one invocation waits at most.
const TRAILING_ROUNDS: u32 = 3;
/// Conditional-write attempts per state update before giving up (retryable).
const WRITE_ATTEMPTS: u32 = 20;

/// What one apply did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Applied {
    /// The capacity before.
    pub from: u32,
    /// The capacity set (equal to `from`: no call made).
    pub to: u32,
    /// Why, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ScaleReason>,
}

/// What `controller scale` (the reconcile) reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScaleReport {
    /// The group.
    pub group: String,
    /// Demand used (`None`: unknown, GitHub unreachable).
    pub demand: Option<Demand>,
    /// Jobs whose webhook was missed, duplicated or out of date, repaired from the REST API.
    pub repaired: u32,
    /// The capacity before and after.
    pub applied: Applied,
    /// Whether the state table could be read and written.
    pub state_ok: bool,
    /// Problems that did not stop the reconcile.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl<A: Aws, G: GitHub> Controller<A, G> {
    fn scale_settings(&self) -> Result<&ScaleSettings, HandlerError> {
        self.settings()
            .scale
            .as_ref()
            .ok_or_else(|| HandlerError::Config("scaling is not configured (--scale-table and --scale-labels)".into()))
    }

    /// Load, change and conditionally write the group's state, retrying on a concurrent write.
    pub(super) async fn update_state<R>(
        &self,
        s: &ScaleSettings,
        key: &str,
        mut change: impl FnMut(&mut GroupState) -> R,
    ) -> Result<(GroupState, R), ApiError> {
        for attempt in 0..WRITE_ATTEMPTS {
            let stored = self.aws().load_state(&s.table, &s.group).await?;
            let (mut st, version) = match stored {
                Some(item) => {
                    let st = serde_json::from_str(&item.json).unwrap_or_else(|e| {
                        warn!(group = %s.group, error = %e, "stored scaling state unreadable; starting afresh");
                        GroupState::default()
                    });
                    (st, Some(item.version))
                }
                None => (GroupState::default(), None),
            };
            let r = change(&mut st);
            let json = serde_json::to_string(&st).map_err(|e| ApiError::new(ApiErrorKind::Other, e.to_string()))?;
            if self.aws().save_state(&s.table, &s.group, &json, version).await? {
                return Ok((st, r));
            }
            // Another invocation wrote first: back off a little (jittered by this invocation's
            // key) and redo the change.
            tokio::time::sleep(retry::contention_wait(attempt, key)).await;
        }
        Err(ApiError::new(
            ApiErrorKind::Throttled,
            format!(
                "scaling state of {} still contended after {WRITE_ATTEMPTS} writes",
                s.group
            ),
        ))
    }

    /// Describe the group, decide on its real capacity, and set it if that changes it. The window
    /// was claimed by the caller.
    pub(super) async fn apply(
        &self,
        s: &ScaleSettings,
        key: &str,
        now: i64,
        m: &mut ScaleMetrics,
    ) -> Result<Applied, HandlerError> {
        let cap = self.aws().capacity(&s.group).await.map_err(|error| HandlerError::Aws {
            call: "DescribeAutoScalingGroups",
            error,
        })?;
        let (st, target) = self
            .update_state(s, key, |st| {
                let fresh = st.fresh(s, now);
                decision::decide_on(s, st, cap.into(), fresh, now)
            })
            .await
            .map_err(|error| HandlerError::Aws {
                call: "DynamoDB PutItem",
                error,
            })?;
        gauges(m, &st);
        self.set(s, cap, target, m).await
    }

    async fn set(
        &self,
        s: &ScaleSettings,
        cap: Capacity,
        target: Option<(u32, ScaleReason)>,
        m: &mut ScaleMetrics,
    ) -> Result<Applied, HandlerError> {
        let Some((desired, reason)) = target else {
            return Ok(Applied {
                from: cap.desired,
                to: cap.desired,
                reason: None,
            });
        };
        self.aws()
            .set_desired_capacity(&s.group, desired)
            .await
            .map_err(|error| HandlerError::Aws {
                call: "SetDesiredCapacity",
                error,
            })?;
        m.scale_actions += 1;
        m.idle = m.busy.map(|b| desired.saturating_sub(b));
        info!(group = %s.group, from = cap.desired, to = desired, reason = ?reason, "desired capacity set");
        Ok(Applied {
            from: cap.desired,
            to: desired,
            reason: Some(reason),
        })
    }

    /// The trailing edge: wait for the window to open, then apply the latest decision. If another
    /// invocation applied at the window's opening and a newer change is due again, this one owns
    /// the next trailing edge too (a few rounds at most; the reconcile catches anything left).
    pub(super) async fn trailing(
        &self,
        s: &ScaleSettings,
        key: &str,
        now: i64,
        until: i64,
        m: &mut ScaleMetrics,
    ) -> Result<Option<Applied>, HandlerError> {
        let (mut clock, mut until) = (now, until);
        for _ in 0..TRAILING_ROUNDS {
            let wait = Duration::from_secs(u64::try_from(until.saturating_sub(clock)).unwrap_or(0));
            tokio::time::sleep(wait).await;
            clock = clock.saturating_add(i64::try_from(wait.as_secs()).unwrap_or(0));
            let at = clock;
            let owned = until;
            let (_, next) = self
                .update_state(s, key, |st| {
                    if st.deferred_until == Some(owned) {
                        st.deferred_until = None;
                    }
                    decision::plan(s, st, at)
                })
                .await
                .map_err(|error| HandlerError::Aws {
                    call: "DynamoDB PutItem",
                    error,
                })?;
            match next {
                Plan::Apply => return self.apply(s, key, at, m).await.map(Some),
                Plan::Nothing => return Ok(None),
                Plan::Defer { until: next } => until = next,
            }
        }
        Ok(None)
    }

    /// The reconcile (`controller scale`, the one-minute schedule): read demand from GitHub's REST
    /// API, replace the webhook-derived jobs with it, decide on the group's real capacity, apply.
    pub async fn scale(&self, now: i64) -> Result<ScaleReport, HandlerError> {
        let s = self.scale_settings()?;
        let mut m = ScaleMetrics::default();
        let key = format!("reconcile {now}");
        let mut report = ScaleReport {
            group: s.group.clone(),
            ..ScaleReport::default()
        };
        let cap = self.aws().capacity(&s.group).await.map_err(|error| HandlerError::Aws {
            call: "DescribeAutoScalingGroups",
            error,
        })?;
        let jobs = match self.github().jobs_in_flight(&s.repos).await {
            Ok(all) => Some(
                all.into_iter()
                    .filter(|j| webhook::served(&j.labels, &s.labels))
                    .collect::<Vec<_>>(),
            ),
            Err(e) => {
                warn!(group = %s.group, error = %e, "reconcile: demand unknown (GitHub unreachable); capacity will not be lowered");
                report.warnings.push(format!("demand unknown: {e}"));
                None
            }
        };
        // Take in GitHub's list of jobs, when it answered: the number of jobs it repaired. Keep what
        // a webhook told since this reconcile began: it may be newer than the answers read since.
        let absorb = |st: &mut GroupState| -> u32 {
            let Some(jobs) = &jobs else { return 0 };
            st.reconciled_at = Some(now);
            st.replace_jobs(jobs, now, now)
        };
        let fresh = jobs.is_some();
        let target = match self
            .update_state(s, &key, |st| {
                let repaired = absorb(st);
                let target = decision::decide_on(s, st, cap.into(), fresh, now);
                if target.is_some() {
                    st.applied_at = Some(now);
                }
                (repaired, target)
            })
            .await
        {
            Ok((st, (repaired, target))) => {
                report.state_ok = true;
                report.repaired = repaired;
                report.demand = fresh.then(|| st.demand());
                gauges(&mut m, &st);
                target
            }
            Err(e) => {
                // No table: decide from GitHub's view alone with a fresh policy memory, which can
                // raise capacity but never lower it (a lowering needs demand to stay low across
                // evaluations, which only the table remembers), and gate as stale.
                error!(group = %s.group, error = %e, "reconcile: state table unavailable; scaling out only");
                report.warnings.push(format!("state table unavailable: {e}"));
                let mut st = GroupState::default();
                absorb(&mut st);
                report.demand = fresh.then(|| st.demand());
                let target = decision::decide_on(s, &mut st, cap.into(), false, now);
                gauges(&mut m, &st);
                target
            }
        };
        m.repaired = Some(report.repaired);
        if report.repaired > 0 {
            warn!(group = %s.group, repaired = report.repaired, "reconcile repaired jobs the webhooks missed or left stale");
        }
        let set = self.set(s, cap, target, &mut m).await;
        println!("{}", metrics_line(&s.group, &m, now.saturating_mul(1000)));
        report.applied = set?;
        info!(group = %s.group, demand = ?report.demand, from = report.applied.from, to = report.applied.to, repaired = report.repaired, "reconciled");
        Ok(report)
    }
}
