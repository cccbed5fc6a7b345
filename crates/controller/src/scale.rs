//! Demand scaling: `workflow_job` webhooks and a periodic reconcile keep a per-group demand record
//! in the DynamoDB state table, and [`lifecycle_core::scaling::DemandPolicy`] (the same function the
//! simulator drives) turns demand into the group's desired capacity. Design: docs/controller.md,
//! "Scaling".
//!
//! - **State** (one item per group, optimistic locking on a version): the jobs queued and running
//!   for the group's labels, recently completed job ids (out-of-order deliveries), the policy's
//!   [`ScalingState`], the capacity last seen or applied, and when the last apply and reconcile were.
//! - **Coalescing**: Auto Scaling is called only when the decision differs from the capacity last
//!   applied, and at most once per `apply_interval` per group: the first change in a window applies
//!   at once (leading edge) and claims the window in the table; later changes in the window make
//!   one invocation (the one that wins the conditional write on `deferred_until`) wait for the
//!   window's end and apply the latest decision then (trailing edge). A burst of N events over T
//!   seconds makes at most T / apply_interval + 2 DescribeAutoScalingGroups and as many
//!   SetDesiredCapacity calls, whatever N.
//! - **Missing data never lowers capacity**: webhook demand may lower capacity only while a
//!   reconcile succeeded within `fresh_for`; a failed reconcile (GitHub down) or an unavailable
//!   table lets demand raise capacity but never lower it.

use crate::error::HandlerError;
use crate::handler::Controller;
use crate::ports::{Aws, Capacity, GitHub};
use crate::settings::ScaleSettings;
use crate::webhook::{self, Delivery, HttpRequest, JobAction, JobEvent};
use lifecycle_core::scaling::{Demand, DemandPolicy, ScaleDecision, ScaleReason, ScalingState};
use lifecycle_core::{ApiError, ApiErrorKind, Time};
use lifecycle_github::WorkflowJob;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{error, info, warn};

/// Jobs tracked per group at most (keeps the item far below DynamoDB's 400 KB; demand beyond any
/// sane MaxSize does not change the decision).
pub const MAX_JOBS: usize = 4000;
/// Completed job ids remembered at most, and for how long (a `queued` delivered after its
/// `completed` must not count again).
pub const MAX_DONE: usize = 2000;
/// Seconds a completed job id is remembered.
pub const DONE_KEEP_S: i64 = 3600;
/// Trailing-edge rounds one invocation waits at most.
const TRAILING_ROUNDS: u32 = 3;
/// Conditional-write attempts per state update before giving up (retryable).
const WRITE_ATTEMPTS: u32 = 20;

/// One job the group serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Running (in progress) rather than queued.
    #[serde(rename = "r")]
    pub running: bool,
    /// When it was queued (epoch s).
    #[serde(rename = "q")]
    pub queued_at: i64,
    /// When a webhook last told of it (epoch s; 0: known from a reconcile only).
    #[serde(rename = "s")]
    pub seen_at: i64,
}

/// A group's scaling state, as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// Jobs queued or running, by id.
    #[serde(default)]
    pub jobs: BTreeMap<u64, Job>,
    /// Completed job ids and when.
    #[serde(default)]
    pub done: BTreeMap<u64, i64>,
    /// The policy's memory.
    #[serde(default)]
    pub scaling: ScalingState,
    /// The capacity last seen or applied.
    #[serde(default)]
    pub capacity: Option<StoredCapacity>,
    /// When the last apply window opened (epoch s).
    #[serde(default)]
    pub applied_at: Option<i64>,
    /// An invocation waits to apply at this time (the trailing edge).
    #[serde(default)]
    pub deferred_until: Option<i64>,
    /// The last successful reconcile (epoch s).
    #[serde(default)]
    pub reconciled_at: Option<i64>,
}

/// [`Capacity`], stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCapacity {
    /// DesiredCapacity.
    pub desired: u32,
    /// MinSize.
    pub min: u32,
    /// MaxSize.
    pub max: u32,
}

impl From<Capacity> for StoredCapacity {
    fn from(c: Capacity) -> Self {
        StoredCapacity {
            desired: c.desired,
            min: c.min,
            max: c.max,
        }
    }
}

impl GroupState {
    /// The demand the jobs make.
    pub fn demand(&self) -> Demand {
        let running = self.jobs.values().filter(|j| j.running).count();
        let n = |c: usize| u32::try_from(c).unwrap_or(u32::MAX);
        Demand {
            queued: n(self.jobs.len() - running),
            running: n(running),
        }
    }

    /// Count one webhook; the job's queue time (s) when it started.
    pub fn apply_event(&mut self, ev: &JobEvent, now: i64) -> Option<i64> {
        self.prune(now);
        if self.done.contains_key(&ev.job_id) {
            return None;
        }
        match ev.action {
            JobAction::Completed => {
                self.jobs.remove(&ev.job_id);
                self.done.insert(ev.job_id, now);
                None
            }
            JobAction::Queued => {
                if !self.jobs.contains_key(&ev.job_id) && self.jobs.len() < MAX_JOBS {
                    self.jobs.insert(
                        ev.job_id,
                        Job {
                            running: false,
                            queued_at: ev.created_at.unwrap_or(now),
                            seen_at: now,
                        },
                    );
                }
                None
            }
            JobAction::InProgress => {
                if !self.jobs.contains_key(&ev.job_id) && self.jobs.len() >= MAX_JOBS {
                    return None;
                }
                let job = self.jobs.entry(ev.job_id).or_insert(Job {
                    running: false,
                    queued_at: ev.created_at.unwrap_or(now),
                    seen_at: now,
                });
                let was_running = std::mem::replace(&mut job.running, true);
                job.seen_at = now;
                let started = ev.started_at.unwrap_or(now);
                (!was_running).then(|| started.saturating_sub(ev.created_at.unwrap_or(job.queued_at)).max(0))
            }
        }
    }

    /// Replace the jobs with the REST API's view (`jobs` already filtered to the group's labels),
    /// keeping what a webhook told since `since` (it may be newer than the API's answer). Returns
    /// how many jobs were repaired: missing, extra, or in the wrong state.
    pub fn replace_jobs(&mut self, jobs: &[WorkflowJob], since: i64, now: i64) -> u32 {
        self.prune(now);
        let mut next: BTreeMap<u64, Job> = BTreeMap::new();
        let mut repaired = 0u32;
        for j in jobs {
            if next.len() >= MAX_JOBS || self.done.contains_key(&j.id) {
                continue;
            }
            let running = j.status == "in_progress";
            let queued_at = j
                .created_at
                .as_deref()
                .and_then(lifecycle_github::time::parse_rfc3339)
                .unwrap_or(now);
            match self.jobs.get(&j.id) {
                Some(old) if old.seen_at >= since => {
                    next.insert(j.id, *old);
                    continue;
                }
                Some(old) if old.running == running => {}
                _ => repaired += 1,
            }
            next.insert(
                j.id,
                Job {
                    running,
                    queued_at,
                    seen_at: 0,
                },
            );
        }
        for (id, old) in &self.jobs {
            if next.contains_key(id) {
                continue;
            }
            if old.seen_at >= since {
                next.insert(*id, *old);
            } else {
                repaired += 1;
            }
        }
        self.jobs = next;
        repaired
    }

    fn prune(&mut self, now: i64) {
        self.done.retain(|_, t| now.saturating_sub(*t) <= DONE_KEEP_S);
        while self.done.len() > MAX_DONE {
            let oldest = self.done.iter().min_by_key(|(_, t)| **t).map(|(id, _)| *id);
            match oldest {
                Some(id) => self.done.remove(&id),
                None => break,
            };
        }
    }

    fn fresh(&self, s: &ScaleSettings, now: i64) -> bool {
        self.reconciled_at
            .is_some_and(|t| now.saturating_sub(t) <= i64::try_from(s.fresh_for.as_secs()).unwrap_or(i64::MAX))
    }
}

/// The policy for `cap`.
pub fn policy(s: &ScaleSettings, cap: StoredCapacity) -> DemandPolicy {
    DemandPolicy {
        idle_target: s.idle_target,
        min: cap.min,
        max: cap.max,
        scale_in_after: s.scale_in_after,
    }
}

/// The demand the policy may act on: all of it when it is trusted (`fresh`), else only enough to
/// raise capacity (stale data may show a queue; it must not show an idle fleet): the policy then
/// sees "unknown", which never lowers capacity.
pub fn gate(p: &DemandPolicy, demand: Demand, current: u32, fresh: bool) -> Option<Demand> {
    (fresh || p.wanted(demand) > current).then_some(demand)
}

fn time(epoch: i64) -> Time {
    Time::from_secs(u64::try_from(epoch).unwrap_or(0))
}

/// What an update of the state asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing to change (or another invocation will).
    Nothing,
    /// The capacity is unknown or a change is due and the window is claimed: describe and apply.
    Apply,
    /// A change is due inside a claimed window; this invocation owns the trailing apply at `until`.
    Defer { until: i64 },
}

/// Decide on the stored capacity; claims the window (or the trailing apply) in `st`. The policy's
/// state changes only when the decision is held or applied, so a throttled scale-in stays due.
fn plan(s: &ScaleSettings, st: &mut GroupState, now: i64) -> Plan {
    let Some(cap) = st.capacity else {
        st.applied_at = Some(now);
        return Plan::Apply;
    };
    let p = policy(s, cap);
    let demand = gate(&p, st.demand(), cap.desired, st.fresh(s, now));
    let mut scaling = st.scaling;
    match p.decide(&mut scaling, cap.desired, demand, time(now)) {
        ScaleDecision::Hold { .. } => {
            st.scaling = scaling;
            Plan::Nothing
        }
        ScaleDecision::Set { desired, .. } if desired == cap.desired => Plan::Nothing,
        ScaleDecision::Set { .. } => {
            let interval = i64::try_from(s.apply_interval.as_secs()).unwrap_or(i64::MAX);
            let window_end = st.applied_at.map_or(i64::MIN, |t| t.saturating_add(interval));
            if now >= window_end {
                st.applied_at = Some(now);
                st.deferred_until = None;
                Plan::Apply
            } else if st.deferred_until.is_some_and(|d| d >= now) {
                Plan::Nothing
            } else {
                st.deferred_until = Some(window_end);
                Plan::Defer { until: window_end }
            }
        }
    }
}

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

/// One webhook's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookAnswer {
    /// HTTP status: 202 accepted, 204 ignored, 400 malformed, 401 bad signature, 409 replay,
    /// 503 state table unavailable.
    pub status: u16,
    /// The one-line reason.
    pub message: String,
}

/// Metrics of one invocation, for [`metrics_line`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScaleMetrics {
    /// Jobs queued.
    pub queued: Option<u32>,
    /// Runners busy (jobs in progress).
    pub busy: Option<u32>,
    /// Runners idle (capacity minus busy).
    pub idle: Option<u32>,
    /// Queue time of a job that started (s).
    pub queue_time_s: Option<i64>,
    /// SetDesiredCapacity calls made.
    pub scale_actions: u32,
    /// Jobs the reconcile repaired.
    pub repaired: Option<u32>,
}

/// The CloudWatch embedded-metric-format line for `metrics` (the sweep's style: namespace
/// `RunnerLifecycle`, dimension `AutoScalingGroupName`).
pub fn metrics_line(group: &str, m: &ScaleMetrics, timestamp_ms: i64) -> String {
    let mut defs = Vec::new();
    let mut doc = serde_json::Map::new();
    doc.insert("AutoScalingGroupName".into(), group.into());
    let mut put = |name: &str, unit: &str, v: Value| {
        defs.push(serde_json::json!({"Name": name, "Unit": unit}));
        doc.insert(name.into(), v);
    };
    if let Some(v) = m.queued {
        put("QueuedJobs", "Count", v.into());
    }
    if let Some(v) = m.busy {
        put("BusyRunners", "Count", v.into());
    }
    if let Some(v) = m.idle {
        put("IdleRunners", "Count", v.into());
    }
    if let Some(v) = m.queue_time_s {
        put("QueueTime", "Seconds", v.into());
    }
    put("ScaleActions", "Count", m.scale_actions.into());
    if let Some(v) = m.repaired {
        put("WebhooksRepaired", "Count", v.into());
    }
    doc.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": "RunnerLifecycle",
                "Dimensions": [["AutoScalingGroupName"]],
                "Metrics": defs,
            }]
        }),
    );
    Value::Object(doc).to_string()
}

fn gauges(m: &mut ScaleMetrics, st: &GroupState) {
    let d = st.demand();
    m.queued = Some(d.queued);
    m.busy = Some(d.running);
    m.idle = st.capacity.map(|c| c.desired.saturating_sub(d.running));
}

impl<A: Aws, G: GitHub> Controller<A, G> {
    fn scale_settings(&self) -> Result<&ScaleSettings, HandlerError> {
        self.settings().scale.as_ref().ok_or_else(|| HandlerError::Aws {
            call: "scale",
            error: ApiError::new(
                ApiErrorKind::Other,
                "scaling is not configured (--scale-table and --scale-labels)",
            ),
        })
    }

    /// Load, change and conditionally write the group's state, retrying on a concurrent write.
    async fn update_state<R>(
        &self,
        s: &ScaleSettings,
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
            // Another invocation wrote first: back off a little (jittered) and redo the change.
            let jitter = u64::from(attempt) * 7 + (std::process::id() as u64 % 13);
            tokio::time::sleep(Duration::from_millis(5 + jitter)).await;
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
    async fn apply(&self, s: &ScaleSettings, now: i64, m: &mut ScaleMetrics) -> Result<Applied, HandlerError> {
        let cap = self.aws().capacity(&s.group).await.map_err(|error| HandlerError::Aws {
            call: "DescribeAutoScalingGroups",
            error,
        })?;
        let (st, target) = self
            .update_state(s, |st| {
                st.capacity = Some(cap.into());
                let p = policy(s, cap.into());
                let demand = gate(&p, st.demand(), cap.desired, st.fresh(s, now));
                match p.decide(&mut st.scaling, cap.desired, demand, time(now)) {
                    ScaleDecision::Set { desired, reason } if desired != cap.desired => {
                        st.capacity = Some(StoredCapacity { desired, ..cap.into() });
                        Some((desired, reason))
                    }
                    _ => None,
                }
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

    /// Handle one function-URL request (a GitHub webhook delivery); the answer for the caller.
    pub async fn webhook(&self, req: &HttpRequest, now: i64) -> WebhookAnswer {
        let mut m = ScaleMetrics::default();
        let answer = self.webhook_inner(req, now, &mut m).await;
        let delivery = req.header("x-github-delivery").unwrap_or("-");
        let delivery = lifecycle_escape::clip(delivery, 64);
        match answer.status {
            202 => info!(status = answer.status, delivery = %delivery, "webhook: {}", answer.message),
            204 => info!(status = answer.status, delivery = %delivery, "webhook ignored: {}", answer.message),
            503 => error!(status = answer.status, delivery = %delivery, "webhook not counted: {}", answer.message),
            _ => warn!(status = answer.status, delivery = %delivery, "webhook refused: {}", answer.message),
        }
        if let (202, Some(s)) = (answer.status, self.settings().scale.as_ref()) {
            println!("{}", metrics_line(&s.group, &m, now.saturating_mul(1000)));
        }
        if answer.status == 202 {
            self.rerun_if_fleet_loss(req, now).await;
        }
        answer
    }

    async fn webhook_inner(&self, req: &HttpRequest, now: i64, m: &mut ScaleMetrics) -> WebhookAnswer {
        let a = |status: u16, message: String| WebhookAnswer { status, message };
        let Some(s) = self.settings().scale.as_ref() else {
            return a(404, "scaling is not configured".into());
        };
        if req.method != "POST" {
            return a(
                405,
                format!("method {} (only POST)", lifecycle_escape::clip(&req.method, 16)),
            );
        }
        let Some(secret) = s.webhook_secret.as_ref() else {
            return a(401, "no webhook secret configured: every delivery is refused".into());
        };
        if let Err(e) = webhook::check_secret(secret) {
            return a(401, format!("{e}: every delivery is refused"));
        }
        if let Err(e) = webhook::verify(secret, req.header("x-hub-signature-256"), &req.body) {
            return a(401, format!("bad signature: {e}"));
        }
        let ev = match webhook::classify(req.header("x-github-event"), &req.body) {
            Ok(Delivery::Job(ev)) => ev,
            Ok(Delivery::Ignored(why)) => return a(204, why),
            Err(e) => return a(400, e),
        };
        if !webhook::served(&ev.labels, &s.labels) {
            return a(
                204,
                format!("job {} runs on labels the group does not serve", ev.job_id),
            );
        }
        let Some(delivery) = req
            .header("x-github-delivery")
            .filter(|d| !d.is_empty() && d.len() <= 128)
        else {
            return a(400, "no X-GitHub-Delivery header".into());
        };
        let ttl = i64::try_from(s.delivery_ttl.as_secs()).unwrap_or(i64::MAX);
        let action = ev.action_str();
        // Older than the replay window: its identity may no longer be remembered, so it is not
        // counted at all (the reconcile reads the REST API's view anyway).
        if let Some(at) = ev.at.filter(|&at| now.saturating_sub(at) > ttl) {
            return a(
                409,
                format!(
                    "job {} {action} happened {} s ago, before the {ttl} s replay window: not counted",
                    ev.job_id,
                    now.saturating_sub(at)
                ),
            );
        }
        match self
            .aws()
            .claim_delivery(&s.table, delivery, now, now.saturating_add(ttl))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return a(
                    409,
                    format!("delivery {} seen before (replay)", lifecycle_escape::clip(delivery, 64)),
                )
            }
            Err(e) => return a(503, format!("state table unavailable: {e}")),
        }
        // The payload's identity, whatever delivery id carries it: a body replayed under a fresh
        // X-GitHub-Delivery is counted once. Remembered for the same window, from the later of now
        // and the event's own time, so every body the window above admits is remembered.
        let identity = ev.identity();
        let identity_until = now.max(ev.at.unwrap_or(now)).saturating_add(ttl);
        let forget = |what: &'static str| async move {
            if let Err(e2) = self.aws().release_delivery(&s.table, delivery).await {
                warn!(error = %e2, what, "could not release the delivery id; a redelivery will be refused as a replay");
            }
        };
        match self.aws().claim_key(&s.table, &identity, now, identity_until).await {
            Ok(true) => {}
            Ok(false) => {
                return a(
                    409,
                    format!(
                        "job {} {action} (run attempt {}) was counted before: a replay under delivery {}",
                        ev.job_id,
                        ev.run_attempt,
                        lifecycle_escape::clip(delivery, 64)
                    ),
                )
            }
            Err(e) => {
                forget("identity claim failed").await;
                return a(503, format!("state table unavailable: {e}"));
            }
        }
        let updated = self
            .update_state(s, |st| {
                let waited = st.apply_event(&ev, now);
                (waited, plan(s, st, now))
            })
            .await;
        let (st, (waited, next)) = match updated {
            Ok(v) => v,
            Err(e) => {
                // Not counted: forget both claims, so a redelivery is counted rather than refused.
                forget("state write failed").await;
                if let Err(e2) = self.aws().expire_key(&s.table, &identity, 0).await {
                    warn!(error = %e2, "could not release the job identity; a redelivery will be refused as a replay");
                }
                return a(503, format!("state table unavailable: {e}"));
            }
        };
        m.queue_time_s = waited;
        gauges(m, &st);
        let done = match next {
            Plan::Nothing => Ok(None),
            Plan::Apply => self.apply(s, now, m).await.map(Some),
            Plan::Defer { until } => self.trailing(s, now, until, m).await,
        };
        match done {
            Ok(Some(applied)) if applied.from != applied.to => a(
                202,
                format!(
                    "job {} {action}; desired capacity {} -> {}",
                    ev.job_id, applied.from, applied.to
                ),
            ),
            Ok(_) => a(202, format!("job {} {action}", ev.job_id)),
            // Counted; the next event or the reconcile applies it.
            Err(e) => {
                error!(group = %s.group, error = %e, "applying the decision failed; the reconcile will retry");
                a(202, format!("job {} {action}; apply failed: {e}", ev.job_id))
            }
        }
    }

    /// The trailing edge: wait for the window to open, then apply the latest decision. If another
    /// invocation applied at the window's opening and a newer change is due again, this one owns
    /// the next trailing edge too (a few rounds at most; the reconcile catches anything left).
    async fn trailing(
        &self,
        s: &ScaleSettings,
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
                .update_state(s, |st| {
                    if st.deferred_until == Some(owned) {
                        st.deferred_until = None;
                    }
                    plan(s, st, at)
                })
                .await
                .map_err(|error| HandlerError::Aws {
                    call: "DynamoDB PutItem",
                    error,
                })?;
            match next {
                Plan::Apply => return self.apply(s, at, m).await.map(Some),
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
        let decide = |st: &mut GroupState, repaired: &mut u32| -> (Option<Demand>, Option<(u32, ScaleReason)>) {
            st.capacity = Some(cap.into());
            if let Some(jobs) = &jobs {
                // Keep what a webhook told since this reconcile began: it may be newer than the
                // answers read since.
                *repaired = st.replace_jobs(jobs, now, now);
                st.reconciled_at = Some(now);
            }
            let p = policy(s, cap.into());
            let fresh = jobs.is_some();
            let demand = gate(&p, st.demand(), cap.desired, fresh);
            let target = match p.decide(&mut st.scaling, cap.desired, demand, time(now)) {
                ScaleDecision::Set { desired, reason } if desired != cap.desired => {
                    st.capacity = Some(StoredCapacity { desired, ..cap.into() });
                    st.applied_at = Some(now);
                    Some((desired, reason))
                }
                _ => None,
            };
            (fresh.then(|| st.demand()), target)
        };
        let target = match self
            .update_state(s, |st| {
                let mut repaired = 0;
                let r = decide(st, &mut repaired);
                (r, repaired)
            })
            .await
        {
            Ok((st, ((demand, target), repaired))) => {
                report.state_ok = true;
                report.repaired = repaired;
                report.demand = demand;
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
                let mut repaired = 0;
                let (demand, _) = decide(&mut st, &mut repaired);
                report.demand = demand;
                let p = policy(s, cap.into());
                let d = gate(&p, st.demand(), cap.desired, false);
                gauges(&mut m, &st);
                match p.decide(&mut ScalingState::default(), cap.desired, d, time(now)) {
                    ScaleDecision::Set { desired, reason }
                        if desired > cap.desired || reason == ScaleReason::Bounds =>
                    {
                        Some((desired, reason))
                    }
                    _ => None,
                }
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

/// Whether a Lambda event asks for the reconcile: the schedule's constant input
/// `{"runner-lifecycle": "scale"}`.
pub fn is_scale_event(event: &Value) -> bool {
    event.get("runner-lifecycle").and_then(Value::as_str) == Some("scale")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{FakeAws, FakeGitHub};
    use crate::settings::Settings;
    use lifecycle_github::Secret;

    const SECRET: &str = "webhook-secret-for-unit-tests";

    fn controller(min: u32, max: u32, desired: u32) -> Controller<FakeAws, FakeGitHub> {
        let mut settings = Settings::new(["runners".to_string()]);
        let mut s = ScaleSettings::new("runners", &["self-hosted", "linux"], "state");
        s.idle_target = 1;
        s.scale_in_after = Duration::from_secs(120);
        s.webhook_secret = Some(Secret::new(SECRET.to_string()));
        settings.scale = Some(s);
        let aws = FakeAws::default();
        *aws.capacity.lock().expect("lock") = Some(Capacity { desired, min, max });
        Controller::new(settings, aws, FakeGitHub::default())
    }

    fn request(action: &str, id: u64, delivery: &str) -> HttpRequest {
        let body = serde_json::json!({
            "action": action,
            "workflow_job": {"id": id, "run_id": 1, "status": action, "labels": ["self-hosted", "Linux"],
                             "created_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:30Z"}
        })
        .to_string()
        .into_bytes();
        HttpRequest {
            method: "POST".into(),
            headers: vec![
                ("x-github-event".into(), "workflow_job".into()),
                ("x-github-delivery".into(), delivery.into()),
                (
                    "x-hub-signature-256".into(),
                    webhook::sign(&Secret::new(SECRET.to_string()), &body),
                ),
            ],
            body,
        }
    }

    fn job(id: u64, status: &str) -> WorkflowJob {
        WorkflowJob {
            id,
            run_id: Some(1),
            status: status.into(),
            labels: vec!["self-hosted".into()],
            created_at: None,
            started_at: None,
        }
    }

    fn sets(c: &Controller<FakeAws, FakeGitHub>) -> Vec<u32> {
        c.aws()
            .set_desired
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, d)| *d)
            .collect()
    }

    #[tokio::test]
    async fn signatures_and_replays_are_refused() {
        let c = controller(0, 10, 0);
        let mut bad = request("queued", 1, "d1");
        bad.body.push(b' ');
        assert_eq!(c.webhook(&bad, 0).await.status, 401);
        let mut missing = request("queued", 1, "d1");
        missing.headers.retain(|(k, _)| k != "x-hub-signature-256");
        assert_eq!(c.webhook(&missing, 0).await.status, 401);
        assert_eq!(c.webhook(&request("queued", 1, "d1"), 0).await.status, 202);
        assert_eq!(c.webhook(&request("queued", 1, "d1"), 1).await.status, 409);
        let mut ping = request("queued", 2, "d2");
        ping.headers[0].1 = "ping".into();
        assert_eq!(c.webhook(&ping, 1).await.status, 204);
    }

    /// The events' `created_at` (2026-01-01T00:00:00Z) plus a little: inside the replay window.
    const T: i64 = 1_767_225_600 + 100;

    fn stored_jobs(c: &Controller<FakeAws, FakeGitHub>) -> usize {
        let t = c.aws().table.lock().expect("lock");
        t.get("state/runners")
            .and_then(|st| serde_json::from_str::<GroupState>(&st.json).ok())
            .map_or(0, |st| st.jobs.len())
    }

    #[tokio::test]
    async fn a_replay_under_a_new_delivery_id_is_not_counted() {
        // Issue 16: a body replayed under a fresh X-GitHub-Delivery was accepted. Here a `queued`
        // replayed after its job completed and the completion was forgotten (an hour later):
        // before, the job came back as demand.
        let c = controller(0, 10, 0);
        assert_eq!(c.webhook(&request("queued", 1, "d1"), T).await.status, 202);
        assert_eq!(c.webhook(&request("completed", 1, "d2"), T + 10).await.status, 202);
        assert_eq!(stored_jobs(&c), 0);
        let replay = c.webhook(&request("queued", 1, "d3-fresh"), T + 4000).await;
        assert_eq!(replay.status, 409, "{}", replay.message);
        assert!(replay.message.contains("counted before"), "{}", replay.message);
        assert_eq!(stored_jobs(&c), 0, "the replay resurrected the job");
        // The same body under yet another id, and the completion again: refused too.
        assert_eq!(c.webhook(&request("queued", 1, "d4"), T + 4001).await.status, 409);
        assert_eq!(c.webhook(&request("completed", 1, "d5"), T + 4002).await.status, 409);
        // A duplicate delivery id is refused as before.
        assert_eq!(c.webhook(&request("completed", 1, "d2"), T + 4003).await.status, 409);
    }

    #[tokio::test]
    async fn out_of_order_and_replayed_deliveries_count_once() {
        let c = controller(0, 10, 0);
        // `completed` first, then its `queued`: accepted once, no job resurrected.
        assert_eq!(c.webhook(&request("completed", 7, "a"), T).await.status, 202);
        assert_eq!(c.webhook(&request("queued", 7, "b"), T + 1).await.status, 202);
        assert_eq!(c.webhook(&request("in_progress", 7, "c"), T + 2).await.status, 202);
        assert_eq!(stored_jobs(&c), 0);
        // Every one of them again, each under a fresh id: refused.
        for (i, action) in ["completed", "queued", "in_progress"].iter().enumerate() {
            let out = c.webhook(&request(action, 7, &format!("again-{i}")), T + 3).await;
            assert_eq!(out.status, 409, "{action}: {}", out.message);
        }
        assert_eq!(stored_jobs(&c), 0);
        // Another job is not affected.
        assert_eq!(c.webhook(&request("queued", 8, "e"), T + 4).await.status, 202);
        assert_eq!(stored_jobs(&c), 1);
    }

    #[tokio::test]
    async fn a_stale_event_is_not_counted() {
        // Older than the replay window (3 days): refused before anything is stored.
        let c = controller(0, 10, 0);
        let late = 1_767_225_600 + 3 * 24 * 3600 + 1;
        let out = c.webhook(&request("queued", 1, "d1"), late).await;
        assert_eq!(out.status, 409, "{}", out.message);
        assert!(out.message.contains("replay window"), "{}", out.message);
        assert_eq!(c.aws().table_calls.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_short_webhook_secret_refuses_every_delivery() {
        let c = controller(0, 10, 0);
        let mut settings = c.settings().clone();
        if let Some(s) = settings.scale.as_mut() {
            s.webhook_secret = Some(Secret::new("short".to_string()));
        }
        let c = Controller::new(settings, FakeAws::default(), FakeGitHub::default());
        let mut req = request("queued", 1, "d1");
        req.headers[2].1 = webhook::sign(&Secret::new("short".to_string()), &req.body);
        let out = c.webhook(&req, T).await;
        assert_eq!(out.status, 401);
        assert!(out.message.contains("at least 16"), "{}", out.message);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_makes_a_bounded_number_of_calls() {
        let c = controller(0, 50, 0);
        // 1,000 queued jobs, one every 10 ms, one after the other (a trailing apply holds its
        // invocation until the window opens); the clock is tokio's paused one.
        let start = tokio::time::Instant::now();
        let epoch = |_: ()| i64::try_from(start.elapsed().as_secs()).unwrap_or(0);
        for i in 0..1000u64 {
            assert_eq!(
                c.webhook(&request("queued", i, &format!("d{i}")), epoch(()))
                    .await
                    .status,
                202
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = start.elapsed().as_secs();
        let calls = sets(&c);
        assert!(
            calls.len() as u64 <= elapsed / 5 + 2,
            "{} calls in {elapsed} s: {calls:?}",
            calls.len()
        );
        assert_eq!(calls.last(), Some(&50), "capped at max");
        let describes = c.aws().asg_calls() - calls.len() as u64;
        assert!(describes <= elapsed / 5 + 2, "{describes} DescribeAutoScalingGroups");
    }

    #[tokio::test]
    async fn reconcile_repairs_dropped_webhooks_and_outages_never_scale_in() {
        let c = controller(0, 20, 0);
        // Two queued webhooks arrive, three jobs exist (one webhook dropped).
        c.webhook(&request("queued", 1, "d1"), 0).await;
        c.webhook(&request("queued", 2, "d2"), 0).await;
        *c.github().jobs.lock().expect("lock") = vec![job(1, "queued"), job(2, "in_progress"), job(3, "queued")];
        let r = c.scale(100).await.expect("reconciled");
        assert_eq!(r.repaired, 2, "job 2 started, job 3 was missing");
        assert_eq!(r.demand, Some(Demand { queued: 2, running: 1 }));
        assert_eq!(r.applied.to, 4);
        // All done, but GitHub is down: no scale-in however long.
        *c.github().jobs.lock().expect("lock") = Vec::new();
        *c.github().down.lock().expect("lock") = true;
        for t in [200, 1000, 10_000] {
            let r = c.scale(t).await.expect("reconciled");
            assert_eq!(r.applied.to, 4, "no scale-in on missing data at {t}");
            assert_eq!(r.demand, None);
        }
        // Back: demand is low, and stays low for scale_in_after, then capacity drops.
        *c.github().down.lock().expect("lock") = false;
        assert_eq!(c.scale(10_100).await.expect("ok").applied.to, 4);
        assert_eq!(c.scale(10_220).await.expect("ok").applied.to, 1);
    }

    #[tokio::test]
    async fn stale_webhook_demand_never_scales_in() {
        let c = controller(0, 20, 5);
        // No reconcile ever succeeded: completed jobs must not shrink the group.
        c.webhook(&request("queued", 1, "d1"), 0).await;
        c.webhook(&request("completed", 1, "d2"), 10).await;
        c.webhook(&request("queued", 9, "d3"), 400).await;
        c.webhook(&request("completed", 9, "d4"), 800).await;
        assert!(sets(&c).is_empty(), "{:?}", sets(&c));
    }

    #[tokio::test]
    async fn without_the_table_the_reconcile_only_scales_out() {
        let c = controller(0, 20, 5);
        *c.aws().table_down.lock().expect("lock") = Some(ApiErrorKind::Transient);
        assert_eq!(c.webhook(&request("queued", 1, "d1"), 0).await.status, 503);
        let r = c.scale(0).await.expect("reconciled");
        assert!(!r.state_ok && r.applied.to == 5, "no jobs: no scale-in");
        *c.github().jobs.lock().expect("lock") = (1..=10).map(|i| job(i, "queued")).collect();
        let r = c.scale(60).await.expect("reconciled");
        assert_eq!(r.applied.to, 11);
    }

    #[tokio::test]
    async fn a_delivery_that_could_not_be_counted_can_be_redelivered() {
        let c = controller(0, 20, 5);
        // The claim succeeds, the state write fails: the claim is released.
        *c.aws().fail_next_save.lock().expect("lock") = 100;
        assert_eq!(c.webhook(&request("queued", 1, "d1"), 0).await.status, 503);
        *c.aws().fail_next_save.lock().expect("lock") = 0;
        assert_eq!(
            c.webhook(&request("queued", 1, "d1"), 1).await.status,
            202,
            "redelivered"
        );
        assert_eq!(
            c.webhook(&request("queued", 1, "d1"), 2).await.status,
            409,
            "then a replay"
        );
    }

    #[test]
    fn out_of_order_deliveries_do_not_resurrect_jobs() {
        let mut st = GroupState::default();
        let ev = |action, id| JobEvent {
            action,
            job_id: id,
            labels: vec![],
            created_at: Some(0),
            started_at: Some(30),
            run_attempt: 1,
            at: Some(30),
        };
        st.apply_event(&ev(JobAction::Completed, 1), 5);
        st.apply_event(&ev(JobAction::Queued, 1), 6);
        assert!(st.jobs.is_empty());
        st.apply_event(&ev(JobAction::Queued, 2), 6);
        assert_eq!(st.apply_event(&ev(JobAction::InProgress, 2), 40), Some(30));
        assert_eq!(st.apply_event(&ev(JobAction::InProgress, 2), 41), None, "a duplicate");
        assert_eq!(st.demand(), Demand { queued: 0, running: 1 });
        let line = metrics_line(
            "runners",
            &ScaleMetrics {
                queue_time_s: Some(30),
                ..Default::default()
            },
            0,
        );
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["QueueTime"], 30);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "RunnerLifecycle");
    }
}
