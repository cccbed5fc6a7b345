//! Unit tests for every rule of the core, with time passed in explicitly.

use crate::*;
use std::time::Duration;

const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// The persistent listener: most rules are stated for it, and hold for every mode.
fn persistent() -> CoreConfig {
    CoreConfig {
        listener_mode: ListenerMode::Persistent,
        ..CoreConfig::default()
    }
}

fn hooked() -> CoreConfig {
    hooked_for(HOOK_TIMEOUT)
}

/// The persistent listener with a termination hook of this HeartbeatTimeout.
fn hooked_for(heartbeat_timeout: Duration) -> CoreConfig {
    CoreConfig {
        hook: Some(HookConfig {
            name: "drain".into(),
            heartbeat_timeout,
        }),
        ..persistent()
    }
}

/// Drives one core with an explicit clock and collects what it asks for.
struct Harness {
    host: Host,
    now: Time,
    out: Vec<Action>,
    /// What the driver's next last look ([`Action::ConfirmIdle`]) finds (nothing, by default).
    look: Vec<Input>,
    /// Last looks carried out.
    looks: u32,
}

impl Harness {
    fn new(cfg: CoreConfig) -> Self {
        Harness {
            host: Host::new(cfg, 42, Time::ZERO),
            now: Time::ZERO,
            out: Vec::new(),
            look: Vec::new(),
            looks: 0,
        }
    }

    /// A host confirmed InService with its listener running (pid 100), actions cleared.
    fn serving(cfg: CoreConfig) -> Self {
        let mut h = Harness::new(cfg);
        h.in_service_described_as("InService");
        assert!(h.starts_a_listener());
        h.input(Input::ListenerStarted { pid: 100 });
        h.take();
        h
    }

    /// IMDS says InService, and the describe that confirms it answers `state` (unprotected).
    fn in_service_described_as(&mut self, state: &str) {
        self.input(Input::TargetState(TargetState::InService));
        let id = self.expect_describe();
        self.reply(id, described(state, false));
    }

    /// Whether the actions taken now start a listener, for any reason.
    fn starts_a_listener(&mut self) -> bool {
        self.take().iter().any(|a| matches!(a, Action::StartListener { .. }))
    }

    /// Whether the actions taken now start a listener for `reason`.
    fn starts_listener(&mut self, reason: StartReason) -> bool {
        self.take()
            .iter()
            .any(|a| matches!(a, Action::StartListener { reason: r } if *r == reason))
    }

    fn input(&mut self, i: Input) {
        self.host.handle_input(i, self.now);
        self.drain();
    }

    fn reply(&mut self, id: RequestId, result: Result<ApiReply, ApiError>) {
        self.input(Input::ApiResult { id, result });
    }

    /// Move the clock forward, firing every timer on the way exactly as a driver would.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.host.poll_timeout() {
            if t > end {
                break;
            }
            assert!(t > self.now, "poll_timeout must lie in the future");
            self.now = t;
            self.host.handle_timeout(t);
            self.drain();
        }
        self.now = end;
        self.host.handle_timeout(end);
        self.drain();
    }

    fn drain(&mut self) {
        // The last look is carried out as a driver does: at once, with what it finds in one batch.
        while let Some(a) = self.host.poll_action() {
            match a {
                Action::ConfirmIdle { pid, .. } => {
                    self.looks += 1;
                    let mut batch = std::mem::take(&mut self.look);
                    batch.push(Input::ListenerLooked { pid });
                    self.host.handle_inputs(batch, self.now);
                }
                a => self.out.push(a),
            }
        }
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// Side effects only (no notices).
    fn effects(&mut self) -> Vec<Action> {
        self.take()
            .into_iter()
            .filter(|a| !matches!(a, Action::Notify(_)))
            .collect()
    }

    fn expect_describe(&mut self) -> RequestId {
        let acts = self.take();
        acts.iter()
            .find_map(|a| match a {
                Action::Describe { id, .. } => Some(*id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("expected a describe in {acts:?}"))
    }

    fn find(&mut self, pred: impl Fn(&Action) -> Option<RequestId>) -> Option<RequestId> {
        let acts = self.take();
        acts.iter().find_map(pred)
    }
}

fn described(state: &str, protected: bool) -> Result<ApiReply, ApiError> {
    Ok(ApiReply::Described(Some(DescribedInstance {
        state: AsgState::parse(state),
        protected,
    })))
}

fn err(kind: ApiErrorKind) -> Result<ApiReply, ApiError> {
    Err(ApiError::new(kind, format!("{kind:?}")))
}

fn protect_id(a: &Action, want: bool) -> Option<RequestId> {
    match a {
        Action::SetProtection { id, protect, .. } if *protect == want => Some(*id),
        _ => None,
    }
}

fn heartbeat_id(a: &Action) -> Option<RequestId> {
    match a {
        Action::Heartbeat { id, .. } => Some(*id),
        _ => None,
    }
}

fn complete_id(a: &Action) -> Option<RequestId> {
    match a {
        Action::CompleteLifecycleAction { id, .. } => Some(*id),
        _ => None,
    }
}

fn is_stop(a: &Action) -> bool {
    matches!(a, Action::StopListener { cancels_job: false, .. })
}

/// A serving host whose scale-in has been noticed through IMDS and confirmed as Terminating:Wait.
fn confirmed_wait(h: &mut Harness) {
    h.input(Input::TargetState(TargetState::Terminated));
    let id = h.expect_describe();
    h.reply(id, described("Terminating:Wait", false));
}

// ----- 6. Launch and warm pool -----

#[test]
fn listener_waits_for_confirmed_in_service() {
    let mut h = Harness::new(hooked());
    h.input(Input::TargetState(TargetState::InService));
    let id = h.expect_describe();
    // IMDS says InService during Pending:Wait already; the API says otherwise.
    h.reply(id, described("Pending:Wait", false));
    assert!(!h.starts_a_listener());
    h.advance(Duration::from_secs(10));
    let id = h.expect_describe();
    h.reply(id, described("InService", false));
    assert!(h.starts_listener(StartReason::Serving));
}

#[test]
fn warm_pool_never_starts_the_listener() {
    let mut h = Harness::new(hooked());
    h.input(Input::TargetState(TargetState::Warmed("Warmed:Running".into())));
    h.advance(Duration::from_secs(3600));
    assert!(
        h.effects().is_empty(),
        "a warmed instance makes no calls and starts nothing"
    );
}

#[test]
fn not_in_a_group_serves_without_any_aws_call() {
    let mut h = Harness::new(hooked());
    h.input(Input::TargetState(TargetState::NotInGroup));
    assert!(matches!(h.effects().as_slice(), [Action::StartListener { .. }]));
    h.input(Input::ListenerStarted { pid: 7 });
    h.input(Input::WorkerStarted { pid: 8 });
    h.input(Input::WorkerExited { pid: 8 });
    h.advance(Duration::from_secs(3600));
    assert!(h.effects().is_empty());
}

/// Regression (found by the agent's end-to-end race test): one 404 from IMDS made "not in a group"
/// sticky, so the termination that followed was never confirmed and the hook never completed.
#[test]
fn a_404_blip_from_imds_does_not_hide_a_later_termination() {
    let mut h = Harness::serving(hooked());
    h.input(Input::TargetState(TargetState::NotInGroup));
    h.take();
    h.input(Input::TargetState(TargetState::Terminated));
    let id = h.expect_describe();
    h.reply(id, described("Terminating:Wait", false));
    h.input(Input::ListenerExited { code: Some(0) });
    let complete = h.find(|a| match a {
        Action::CompleteLifecycleAction { id, .. } => Some(*id),
        _ => None,
    });
    assert!(complete.is_some(), "the hook must be completed");
}

#[test]
fn a_refused_protection_proves_membership_after_a_404() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 1 });
    let id = h.find(|a| protect_id(a, true)).expect("protect");
    // IMDS blips to 404 while the protection call is in flight...
    h.input(Input::TargetState(TargetState::NotInGroup));
    h.take();
    // ...and the call is refused because the instance is terminating.
    h.reply(
        id,
        Err(ApiError::new(
            ApiErrorKind::NotInService,
            "The instance i-1 is not in InService or EnteringStandby or Standby.",
        )),
    );
    let describe = h.expect_describe();
    h.reply(describe, described("Terminating:Wait", false));
    h.input(Input::WorkerExited { pid: 1 });
    assert!(h.take().iter().any(|a| matches!(a, Action::StopListener { .. })));
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(h
        .take()
        .iter()
        .any(|a| matches!(a, Action::CompleteLifecycleAction { .. })));
}

#[test]
fn idle_in_service_host_makes_no_api_calls() {
    let mut h = Harness::serving(hooked());
    h.advance(Duration::from_secs(24 * 3600));
    assert!(h.effects().is_empty(), "idle hosts use IMDS only");
}

// ----- 1. Protection -----

#[test]
fn job_is_protected_and_unprotected_after_idle_delay() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 200 });
    let id = h.find(|a| protect_id(a, true)).expect("protect on worker start");
    h.reply(id, Ok(ApiReply::Done));
    // The job-started hook reporting later changes nothing.
    h.input(Input::JobStartedHook);
    assert!(h.effects().is_empty());
    h.advance(Duration::from_secs(600));
    assert!(h.effects().is_empty());
    h.input(Input::JobCompletedHook);
    h.input(Input::WorkerExited { pid: 200 });
    h.advance(Duration::from_secs(29));
    assert!(h.effects().is_empty(), "waits the unprotect delay for the next job");
    h.advance(Duration::from_secs(1));
    let id = h.find(|a| protect_id(a, false)).expect("unprotect after 30 s idle");
    h.reply(id, Ok(ApiReply::Done));
    h.advance(Duration::from_secs(3600));
    assert!(h.effects().is_empty());
}

#[test]
fn next_job_within_delay_keeps_protection_without_calls() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 1 });
    let id = h.find(|a| protect_id(a, true)).expect("protect");
    h.reply(id, Ok(ApiReply::Done));
    h.input(Input::WorkerExited { pid: 1 });
    h.advance(Duration::from_secs(10));
    h.input(Input::WorkerStarted { pid: 2 });
    h.advance(Duration::from_secs(100));
    assert!(h.effects().is_empty());
}

#[test]
fn hook_report_alone_counts_as_a_job() {
    let mut h = Harness::serving(hooked());
    h.input(Input::JobStartedHook);
    assert!(h.find(|a| protect_id(a, true)).is_some());
    assert!(h.host.job_alive());
    h.input(Input::JobCompletedHook);
    assert!(!h.host.job_alive());
}

/// A report without a worker (forged by anything running as the runner's user, or an early hook
/// noted during discovery) holds the job open for the grace only; then protection is cleared as if
/// it had never come.
#[test]
fn a_started_hook_without_a_worker_is_dropped_after_the_grace() {
    let mut h = Harness::serving(hooked());
    h.advance(Duration::from_secs(60)); // idle long past the unprotect delay
    h.input(Input::JobStartedHook);
    let id = h.find(|a| protect_id(a, true)).expect("the hint protects at once");
    h.reply(id, Ok(ApiReply::Done));
    h.advance(Duration::from_millis(999));
    assert!(h.host.job_alive(), "within the grace");
    h.advance(Duration::from_millis(1));
    let acts = h.take();
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Notify(Notice::HookClaimDropped))),
        "{acts:?}"
    );
    assert!(!h.host.job_alive());
    // Idle since long before the report: protection goes at once, not after another delay.
    let id = acts
        .iter()
        .find_map(|a| protect_id(a, false))
        .expect("unprotect right after the drop");
    h.reply(id, Ok(ApiReply::Done));
    // More forged reports are ignored until a worker is seen: no protect/unprotect churn.
    for _ in 0..10 {
        h.input(Input::JobStartedHook);
        h.advance(Duration::from_millis(500));
    }
    assert!(h.effects().is_empty());
    assert!(!h.host.job_alive());
    // A real job restores trust.
    h.input(Input::WorkerStarted { pid: 9 });
    assert!(h.find(|a| protect_id(a, true)).is_some());
    h.input(Input::JobStartedHook);
    h.input(Input::WorkerExited { pid: 9 });
    assert!(!h.host.job_alive());
    h.input(Input::JobStartedHook);
    assert!(h.host.job_alive(), "trusted again for the grace");
}

#[test]
fn a_worker_seen_within_the_grace_backs_the_report() {
    let mut h = Harness::serving(hooked());
    h.input(Input::JobStartedHook);
    let id = h.find(|a| protect_id(a, true)).expect("protect");
    h.reply(id, Ok(ApiReply::Done));
    h.advance(Duration::from_millis(300));
    h.input(Input::WorkerStarted { pid: 4 });
    h.advance(Duration::from_secs(600));
    assert!(h.host.job_alive());
    assert!(h.effects().is_empty());
}

/// On a terminating host the forged report must not hold the lifecycle hook: once dropped, the
/// idle listener is stopped and the hook completed.
#[test]
fn a_dropped_report_on_a_terminating_host_completes_as_idle() {
    let mut h = Harness::serving(hooked());
    h.input(Input::JobStartedHook);
    h.take();
    confirmed_wait(&mut h);
    assert!(!h.take().iter().any(is_stop), "held while the claim stands");
    h.advance(Duration::from_secs(1));
    let acts = h.take();
    assert!(acts.iter().any(is_stop), "{acts:?}");
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(h.find(complete_id).is_some());
}

#[test]
fn the_grace_is_configurable_and_a_completed_report_drops_the_claim_too() {
    let mut h = Harness::serving(CoreConfig {
        hook_grace: Duration::from_secs(3),
        ..hooked()
    });
    h.input(Input::JobStartedHook);
    h.advance(Duration::from_millis(2900));
    assert!(h.host.job_alive());
    h.advance(Duration::from_millis(100));
    assert!(!h.host.job_alive());
    let mut h = Harness::serving(hooked());
    h.input(Input::JobStartedHook);
    h.input(Input::JobCompletedHook);
    assert!(h
        .take()
        .iter()
        .any(|a| matches!(a, Action::Notify(Notice::HookClaimDropped))));
    h.input(Input::JobStartedHook);
    assert!(!h.host.job_alive(), "distrusted until a worker comes");
}

#[test]
fn protection_throttling_is_retried_with_growing_jittered_backoff() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 1 });
    let mut id = h.find(|a| protect_id(a, true)).expect("protect");
    let mut last_gap = Duration::ZERO;
    for _ in 0..6 {
        let failed_at = h.now;
        h.reply(id, err(ApiErrorKind::Throttled));
        let due = h.host.poll_timeout().expect("a retry is scheduled");
        let gap = due.since(failed_at);
        assert!(gap <= Duration::from_secs(30), "capped");
        assert!(gap >= last_gap / 2, "roughly growing: {gap:?} after {last_gap:?}");
        last_gap = gap;
        h.advance(gap);
        id = h.find(|a| protect_id(a, true)).expect("retried");
    }
    assert!(h.host.job_alive(), "the job never waits for protection");
}

#[test]
fn protection_refused_means_terminating_and_the_job_goes_on() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 1 });
    let id = h.find(|a| protect_id(a, true)).expect("protect");
    h.reply(
        id,
        Err(ApiError::new(
            ApiErrorKind::NotInService,
            "The instance i-1 is not in InService or EnteringStandby or Standby.",
        )),
    );
    let acts = h.take();
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::Describe {
            reason: DescribeReason::ProtectionRefused,
            ..
        }
    )));
    assert!(
        !acts.iter().any(|a| matches!(a, Action::StopListener { .. })),
        "never signal a busy listener"
    );
    assert_eq!(h.host.draining(), Some(DrainCause::Terminating));
}

// ----- 2 and 3. Detection and drain -----

#[test]
fn idle_scale_in_stops_at_once_and_completes_after_exit() {
    let mut h = Harness::serving(hooked());
    h.input(Input::TargetState(TargetState::Terminated));
    let acts = h.take();
    assert!(
        acts.iter().any(is_stop),
        "stop the idle listener at once, before the describe answers"
    );
    let id = acts
        .iter()
        .find_map(|a| match a {
            Action::Describe {
                id,
                reason: DescribeReason::ConfirmTermination,
            } => Some(*id),
            _ => None,
        })
        .expect("confirm with a describe");
    h.reply(id, described("Terminating:Wait", false));
    assert!(h.find(complete_id).is_none(), "not before the listener is down");
    h.input(Input::ListenerExited { code: Some(0) });
    let id = h.find(complete_id).expect("complete when idle and stopped");
    h.reply(id, Ok(ApiReply::Done));
    assert_eq!(h.host.hook_phase(), HookPhase::Done);
    h.advance(Duration::from_secs(3600));
    assert!(h.effects().is_empty(), "nothing after completion, no relaunch");
}

#[test]
fn hook_is_not_touched_before_confirmation() {
    let mut h = Harness::serving(hooked());
    h.input(Input::TargetState(TargetState::Terminated));
    let id = h.expect_describe();
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(h.find(complete_id).is_none());
    // IMDS ran ahead of the API: ask again later.
    h.reply(id, described("InService", false));
    assert!(h.find(complete_id).is_none());
    h.advance(Duration::from_secs(1));
    let id = h.expect_describe();
    h.reply(id, described("Terminating:Wait", false));
    assert!(h.find(complete_id).is_some());
}

#[test]
fn busy_scale_in_never_signals_until_the_worker_exits() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    h.take();
    confirmed_wait(&mut h);
    h.advance(Duration::from_secs(2 * 3600));
    let acts = h.take();
    assert!(!acts
        .iter()
        .any(|a| matches!(a, Action::StopListener { .. } | Action::KillListener { .. })));
    assert!(!acts.iter().any(|a| complete_id(a).is_some()));
    h.input(Input::WorkerExited { pid: 5 });
    assert!(
        h.take().iter().any(is_stop),
        "stop the listener before it takes the next job"
    );
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(h.find(complete_id).is_some());
}

#[test]
fn heartbeats_only_while_a_job_runs_at_a_third_of_the_timeout() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    h.take();
    confirmed_wait(&mut h);
    let mut beats = Vec::new();
    let start = h.now;
    let step = Duration::from_secs(1);
    for _ in 0..1000 {
        h.advance(step);
        if let Some(id) = h.find(heartbeat_id) {
            beats.push(h.now);
            h.reply(id, Ok(ApiReply::Done));
        }
    }
    assert!(beats.len() >= 10, "{} beats in 1000 s", beats.len());
    let mut prev = start;
    for b in &beats {
        let gap = b.since(prev);
        assert!(
            gap <= HOOK_TIMEOUT / 3 + step,
            "gap {gap:?} must leave two more chances"
        );
        assert!(gap >= (HOOK_TIMEOUT / 3).mul_f64(0.8) - step, "gap {gap:?} too short");
        prev = *b;
    }
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    let id = h.find(complete_id).expect("complete");
    h.reply(id, err(ApiErrorKind::Throttled));
    h.advance(Duration::from_secs(3600));
    let acts = h.take();
    assert!(
        !acts.iter().any(|a| heartbeat_id(a).is_some()),
        "no heartbeat once the job ended"
    );
}

#[test]
fn no_heartbeat_without_a_job() {
    let mut h = Harness::serving(hooked());
    confirmed_wait(&mut h);
    h.advance(Duration::from_secs(3600));
    assert!(!h.take().iter().any(|a| heartbeat_id(a).is_some()));
}

#[test]
fn heartbeat_failures_retry_and_a_gone_hook_stops_them() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    confirmed_wait(&mut h);
    h.advance(HOOK_TIMEOUT / 3);
    let id = h.find(heartbeat_id).expect("heartbeat");
    h.reply(id, err(ApiErrorKind::Transient));
    h.advance(Duration::from_secs(2));
    let id = h.find(heartbeat_id).expect("retried soon");
    h.reply(
        id,
        Err(ApiError::new(
            ApiErrorKind::NoActiveLifecycleAction,
            "No active Lifecycle Action found",
        )),
    );
    assert_eq!(h.host.hook_phase(), HookPhase::Done);
    h.advance(Duration::from_secs(3600));
    assert!(!h.take().iter().any(|a| heartbeat_id(a).is_some()));
}

#[test]
fn global_timeout_is_warned_about_before_it_hits() {
    let mut cfg = hooked();
    cfg.global_timeout_warning = Duration::from_secs(600);
    let mut h = Harness::serving(cfg);
    h.input(Input::WorkerStarted { pid: 5 });
    confirmed_wait(&mut h);
    let global = HOOK_TIMEOUT * 100; // 30000 s < 48 h
    let mut warned_at = None;
    let mut elapsed = Duration::ZERO;
    while elapsed < global {
        h.advance(Duration::from_secs(60));
        elapsed += Duration::from_secs(60);
        for a in h.take() {
            if let Some(id) = heartbeat_id(&a) {
                h.reply(id, Ok(ApiReply::Done));
            }
            if matches!(a, Action::Notify(Notice::GlobalTimeoutNear { .. })) {
                warned_at.get_or_insert(elapsed);
            }
        }
    }
    let warned_at = warned_at.expect("warned");
    assert!(warned_at >= global - Duration::from_secs(660) && warned_at <= global - Duration::from_secs(540));
}

#[test]
fn completion_retries_until_done_and_treats_no_active_action_as_done() {
    let mut h = Harness::serving(hooked());
    confirmed_wait(&mut h);
    h.input(Input::ListenerExited { code: Some(0) });
    let mut id = h.find(complete_id).expect("complete");
    for _ in 0..5 {
        h.reply(id, err(ApiErrorKind::Throttled));
        let due = h.host.poll_timeout().expect("retry");
        assert!(
            due.since(h.now) <= Duration::from_secs(4),
            "completion retries stay quick"
        );
        h.advance(due.since(h.now));
        id = h.find(complete_id).expect("retried");
    }
    h.reply(
        id,
        Err(ApiError::new(
            ApiErrorKind::NoActiveLifecycleAction,
            "No active Lifecycle Action found",
        )),
    );
    assert_eq!(h.host.hook_phase(), HookPhase::Done);
    h.advance(Duration::from_secs(600));
    assert!(h.find(complete_id).is_none(), "exactly once");
}

#[test]
fn access_denied_on_complete_is_retried_slowly() {
    let mut h = Harness::serving(hooked());
    confirmed_wait(&mut h);
    h.input(Input::ListenerExited { code: Some(0) });
    let id = h.find(complete_id).expect("complete");
    h.reply(id, err(ApiErrorKind::AccessDenied));
    h.advance(Duration::from_secs(59));
    assert!(h.find(complete_id).is_none());
    h.advance(Duration::from_secs(1));
    assert!(h.find(complete_id).is_some());
}

#[test]
fn no_hook_configured_makes_hook_actions_no_ops() {
    let mut h = Harness::serving(persistent());
    h.input(Input::WorkerStarted { pid: 5 });
    h.take();
    confirmed_wait(&mut h);
    h.advance(Duration::from_secs(3600));
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    h.advance(Duration::from_secs(3600));
    let acts = h.take();
    assert!(!acts
        .iter()
        .any(|a| heartbeat_id(a).is_some() || complete_id(a).is_some()));
}

#[test]
fn terminating_proceed_means_nothing_to_complete() {
    let mut h = Harness::serving(hooked());
    h.input(Input::TargetState(TargetState::Terminated));
    let id = h.expect_describe();
    h.reply(id, described("Terminating:Proceed", false));
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(h.find(complete_id).is_none());
    assert_eq!(h.host.hook_phase(), HookPhase::Done);
}

#[test]
fn job_in_the_stop_window_is_not_killed_early() {
    let mut h = Harness::serving(hooked());
    confirmed_wait(&mut h);
    h.take();
    // SIGINT went out; a job landed before the listener acted on it. The listener cancels it; we wait.
    h.input(Input::WorkerStarted { pid: 9 });
    h.advance(Duration::from_secs(31));
    assert!(!h.take().iter().any(|a| matches!(a, Action::KillListener { .. })));
    h.input(Input::WorkerExited { pid: 9 });
    h.advance(Duration::from_secs(31));
    assert!(h.take().iter().any(|a| matches!(
        a,
        Action::KillListener {
            reason: KillReason::GraceExpired
        }
    )));
}

#[test]
fn spot_notice_stops_new_jobs_and_lets_the_running_one_run() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    h.take();
    h.input(Input::SpotInterruption);
    assert!(!h.take().iter().any(|a| matches!(a, Action::StopListener { .. })));
    h.input(Input::WorkerExited { pid: 5 });
    assert!(h.take().iter().any(is_stop));
}

#[test]
fn idle_spot_notice_stops_at_once() {
    let mut h = Harness::serving(hooked());
    h.input(Input::SpotInterruption);
    assert!(h.take().iter().any(|a| matches!(
        a,
        Action::StopListener {
            reason: StopReason::SpotInterruptionIdle,
            ..
        }
    )));
}

#[test]
fn rebalance_only_warns_by_default() {
    let mut h = Harness::serving(hooked());
    h.input(Input::RebalanceRecommendation);
    let acts = h.take();
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Notify(Notice::RebalanceRecommended))));
    assert!(!acts.iter().any(|a| matches!(a, Action::StopListener { .. })));
    let mut h = Harness::serving(CoreConfig {
        drain_on_rebalance: true,
        ..hooked()
    });
    h.input(Input::RebalanceRecommendation);
    assert!(h.take().iter().any(is_stop));
}

// ----- Stop requests (SIGTERM) -----

#[test]
fn sigterm_mid_job_drains_then_unprotects_then_exits() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    let id = h.find(|a| protect_id(a, true)).expect("protect");
    h.reply(id, Ok(ApiReply::Done));
    h.input(Input::StopRequested);
    h.advance(Duration::from_secs(3600));
    let acts = h.effects();
    assert!(acts.is_empty(), "the job runs on: {acts:?}");
    h.input(Input::WorkerExited { pid: 5 });
    let acts = h.take();
    assert!(acts.iter().any(is_stop));
    let id = acts
        .iter()
        .find_map(|a| protect_id(a, false))
        .expect("unprotect at once when draining");
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(
        !h.take().iter().any(|a| matches!(a, Action::Exit { .. })),
        "not while protection is in flight"
    );
    h.reply(id, Ok(ApiReply::Done));
    assert!(h.take().contains(&Action::Exit { forced: false }));
}

#[test]
fn second_sigterm_forces_the_stop() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    h.take();
    h.input(Input::StopRequested);
    h.input(Input::StopRequested);
    assert!(h.take().iter().any(|a| matches!(
        a,
        Action::StopListener {
            cancels_job: true,
            reason: StopReason::Forced
        }
    )));
    h.input(Input::ListenerExited { code: None });
    assert!(h.take().contains(&Action::Exit { forced: true }));
}

#[test]
fn stop_deadline_forces_the_stop() {
    let mut cfg = hooked();
    cfg.stop_deadline = Some(Duration::from_secs(600));
    let mut h = Harness::serving(cfg);
    h.input(Input::WorkerStarted { pid: 5 });
    h.take();
    h.input(Input::StopRequested);
    h.advance(Duration::from_secs(599));
    assert!(!h.take().iter().any(|a| matches!(a, Action::StopListener { .. })));
    h.advance(Duration::from_secs(1));
    assert!(h
        .take()
        .iter()
        .any(|a| matches!(a, Action::StopListener { cancels_job: true, .. })));
}

#[test]
fn sigterm_on_a_terminating_host_completes_the_hook_before_exit() {
    let mut h = Harness::serving(hooked());
    h.input(Input::StopRequested);
    h.input(Input::TargetState(TargetState::Terminated));
    let id = h.expect_describe();
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(
        !h.take().iter().any(|a| matches!(a, Action::Exit { .. })),
        "confirm and complete first"
    );
    h.reply(id, described("Terminating:Wait", false));
    let id = h.find(complete_id).expect("complete");
    h.reply(id, Ok(ApiReply::Done));
    assert!(h.take().contains(&Action::Exit { forced: false }));
}

// ----- Listener supervision -----

#[test]
fn relaunch_codes_follow_runner_service_js() {
    for (code, relaunch) in [
        (Some(0), false),
        (Some(1), false),
        (Some(5), false),
        (Some(2), true),
        (Some(3), true),
        (Some(4), true),
        (Some(77), true),
        (None, true),
    ] {
        let mut h = Harness::serving(hooked());
        h.input(Input::ListenerExited { code });
        h.advance(Duration::from_secs(4));
        assert!(
            !h.take().iter().any(|a| matches!(a, Action::StartListener { .. })),
            "{code:?}: waits 5 s"
        );
        h.advance(Duration::from_secs(1));
        let started = h.take().iter().any(|a| {
            matches!(
                a,
                Action::StartListener {
                    reason: StartReason::Relaunch
                }
            )
        });
        assert_eq!(started, relaunch, "exit code {code:?}");
    }
}

#[test]
fn relaunching_gives_up_after_ten_failures_in_a_row() {
    let mut h = Harness::serving(hooked());
    let mut starts = 0;
    for _ in 0..15 {
        h.input(Input::ListenerExited { code: Some(2) });
        h.advance(Duration::from_secs(5));
        if h.take().iter().any(|a| matches!(a, Action::StartListener { .. })) {
            starts += 1;
            h.input(Input::ListenerStarted { pid: 100 + starts });
        }
    }
    assert_eq!(starts, 10);
}

#[test]
fn one_job_mode_relaunches_after_each_job_unless_draining() {
    let cfg = CoreConfig {
        listener_mode: ListenerMode::OneJob,
        ..hooked()
    };
    let mut h = Harness::serving(cfg);
    h.input(Input::WorkerStarted { pid: 5 });
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(h.starts_listener(StartReason::NextJob));
    h.input(Input::ListenerStarted { pid: 101 });
    h.input(Input::WorkerStarted { pid: 6 });
    h.take();
    confirmed_wait(&mut h);
    h.input(Input::WorkerExited { pid: 6 });
    h.input(Input::ListenerExited { code: Some(0) });
    let acts = h.take();
    assert!(!acts.iter().any(|a| matches!(a, Action::StartListener { .. })));
    assert!(acts.iter().any(|a| complete_id(a).is_some()));
}

#[test]
fn listener_crash_with_a_job_ends_the_job() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    h.input(Input::JobStartedHook);
    h.take();
    h.input(Input::ListenerExited { code: Some(2) });
    assert!(h
        .take()
        .iter()
        .any(|a| matches!(a, Action::Notify(Notice::ListenerDiedWithJob))));
    assert!(!h.host.job_alive());
}

#[test]
fn worker_exit_clears_a_started_hook_whose_completion_never_came() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    h.input(Input::JobStartedHook);
    h.input(Input::WorkerExited { pid: 5 });
    assert!(!h.host.job_alive());
}

// ----- 7. Restart -----

/// A core that died mid-drain is replaced by a fresh one fed what the new agent observes. Both must
/// reach the same external decisions.
#[test]
fn restart_mid_drain_with_a_running_job_resumes_heartbeats_and_completes_once() {
    let mut h = Harness::new(hooked());
    // The new agent finds the listener and its worker still running (KillMode=process).
    h.input(Input::ListenerStarted { pid: 100 });
    h.input(Input::WorkerStarted { pid: 5 });
    h.input(Input::TargetState(TargetState::Terminated));
    let acts = h.take();
    assert!(!acts
        .iter()
        .any(|a| matches!(a, Action::StopListener { .. } | Action::StartListener { .. })));
    let id = acts.iter().find_map(|a| {
        if let Action::Describe { id, .. } = a {
            Some(*id)
        } else {
            None
        }
    });
    h.reply(id.expect("describe"), described("Terminating:Wait", true));
    h.advance(HOOK_TIMEOUT / 2);
    assert!(h.find(heartbeat_id).is_some(), "heartbeats resume");
    h.input(Input::WorkerExited { pid: 5 });
    assert!(h.take().iter().any(is_stop));
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(h.find(complete_id).is_some());
}

#[test]
fn restart_after_completion_does_nothing_twice() {
    let mut h = Harness::new(hooked());
    h.input(Input::TargetState(TargetState::Terminated));
    let id = h.expect_describe();
    // The previous incarnation completed the hook before it died.
    h.reply(id, described("Terminating:Proceed", false));
    h.advance(Duration::from_secs(600));
    let acts = h.effects();
    assert!(
        acts.iter()
            .all(|a| complete_id(a).is_none() && !matches!(a, Action::StartListener { .. })),
        "{acts:?}"
    );
}

#[test]
fn restart_with_an_idle_adopted_listener_on_a_terminating_host_stops_it() {
    let mut h = Harness::new(hooked());
    h.input(Input::ListenerStarted { pid: 100 });
    h.input(Input::TargetState(TargetState::Terminated));
    assert!(h.take().iter().any(is_stop));
}

#[test]
fn restart_learns_protection_from_describe() {
    let mut h = Harness::new(hooked());
    h.input(Input::TargetState(TargetState::InService));
    let id = h.expect_describe();
    h.reply(id, described("InService", true));
    h.take();
    h.advance(Duration::from_secs(30));
    assert!(
        h.find(|a| protect_id(a, false)).is_some(),
        "a stale protection is cleared on an idle host"
    );
}

// ----- IMDS trouble -----

#[test]
fn imds_down_falls_back_to_slow_describe_polls() {
    let mut h = Harness::serving(hooked());
    h.input(Input::ImdsUnavailable);
    h.advance(Duration::from_secs(9));
    assert!(h.effects().is_empty(), "a short IMDS blip costs nothing");
    h.advance(Duration::from_secs(1));
    let id = h.expect_describe();
    h.reply(id, described("InService", false));
    h.advance(Duration::from_secs(29));
    assert!(h.effects().is_empty());
    h.advance(Duration::from_secs(1));
    let id = h.expect_describe();
    h.reply(id, described("Terminating:Wait", false));
    assert!(h.take().iter().any(is_stop), "termination found by the fallback poll");
    h.input(Input::TargetState(TargetState::Terminated));
    h.advance(Duration::from_secs(600));
    assert!(
        !h.take().iter().any(|a| matches!(a, Action::Describe { .. })),
        "IMDS back: polls stop"
    );
}

#[test]
fn unknown_reply_ids_are_ignored() {
    let mut h = Harness::serving(hooked());
    h.reply(RequestId(999), Ok(ApiReply::Done));
    assert!(h.effects().is_empty());
}

#[test]
fn poll_timeout_is_always_in_the_future() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 1 });
    let id = h.find(|a| protect_id(a, true)).expect("protect");
    h.reply(id, err(ApiErrorKind::Throttled));
    for _ in 0..100 {
        if let Some(t) = h.host.poll_timeout() {
            assert!(t > h.now);
        }
        h.advance(Duration::from_millis(250));
        for a in h.take() {
            if let Some(id) = protect_id(&a, true) {
                h.reply(id, Ok(ApiReply::Done));
            }
        }
    }
}

/// Simulation seed 116 (30 s HeartbeatTimeout, IMDS outage): the fallback poll must notice a wait
/// well within the hook's timeout.
#[test]
fn imds_fallback_poll_is_faster_than_a_short_hook_timeout() {
    let cfg = hooked_for(Duration::from_secs(30));
    let mut h = Harness::serving(cfg);
    h.input(Input::ImdsUnavailable);
    h.advance(Duration::from_secs(10));
    let id = h.expect_describe();
    h.reply(id, described("InService", false));
    h.advance(Duration::from_secs(9));
    assert!(h.effects().is_empty());
    h.advance(Duration::from_secs(1));
    let id = h.expect_describe();
    h.reply(id, described("Terminating:Wait", false));
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(
        h.find(complete_id).is_some(),
        "detected and completed 10 s after the last poll"
    );
}

// ----- Snapshot (what `status` shows) -----

#[test]
fn snapshot_reports_heartbeats_errors_calls_and_timers() {
    let mut h = Harness::serving(hooked());
    let s = h.host.snapshot();
    assert_eq!(s.listener_state, ListenerState::Running { pid: 100, since: h.now });
    assert!(s.hook_configured && s.in_flight.is_empty() && s.retry_at.is_empty());
    assert_eq!(
        (s.last_heartbeat, s.last_error_at, s.describe_wanted),
        (None, None, None)
    );
    assert_eq!(s.unprotect_at, None, "not protected: nothing to clear");

    // A job: protection in flight, then held; after the job, cleared at job end + the delay.
    h.input(Input::WorkerStarted { pid: 7 });
    let id = h.find(|a| protect_id(a, true)).expect("protect");
    assert_eq!(h.host.snapshot().in_flight, vec![Call::SetProtection]);
    h.reply(id, Ok(ApiReply::Done));
    h.advance(Duration::from_secs(5));
    h.input(Input::WorkerExited { pid: 7 });
    let ended = h.now;
    let s = h.host.snapshot();
    assert_eq!(s.protected, Some(true));
    assert_eq!(s.unprotect_at, Some(ended + Duration::from_secs(30)));
    h.advance(Duration::from_millis(29_999));
    assert!(h.effects().is_empty());
    h.advance(Duration::from_millis(1));
    let id = h
        .find(|a| protect_id(a, false))
        .expect("unprotect exactly at unprotect_at");
    h.reply(id, Ok(ApiReply::Done));
    assert_eq!(h.host.snapshot().unprotect_at, None);

    // Scale-in under a new job: a heartbeat succeeds, the next one fails and waits for its retry.
    h.input(Input::WorkerStarted { pid: 8 });
    let id = h.find(|a| protect_id(a, true)).expect("protect again");
    h.reply(id, Ok(ApiReply::Done));
    h.input(Input::TargetState(TargetState::Terminated));
    let s = h.host.snapshot();
    assert_eq!(s.describe_wanted, Some(DescribeReason::ConfirmTermination));
    assert_eq!(s.in_flight, vec![Call::Describe]);
    let id = h.expect_describe();
    h.reply(id, described("Terminating:Wait", true));
    let s = h.host.snapshot();
    assert!(matches!(s.hook_phase, HookPhase::Pending { .. }));
    assert_eq!((s.describe_wanted, s.unprotect_at), (None, None));
    let first = s.next_heartbeat.expect("a heartbeat is scheduled while the job runs");
    h.advance(first.since(h.now));
    let id = h.find(heartbeat_id).expect("heartbeat");
    h.reply(id, Ok(ApiReply::Done));
    assert_eq!(h.host.snapshot().last_heartbeat, Some(first));
    let next = h.host.snapshot().next_heartbeat.expect("next heartbeat");
    h.advance(next.since(h.now));
    let id = h.find(heartbeat_id).expect("second heartbeat");
    h.reply(id, err(ApiErrorKind::Throttled));
    let s = h.host.snapshot();
    assert_eq!(s.last_heartbeat, Some(first), "only a successful heartbeat counts");
    assert_eq!(s.last_error_at, Some(next));
    assert!(s.last_error.as_deref().is_some_and(|e| e.contains("Throttled")));
    let retry = s.retry_at.iter().find(|(c, _)| *c == Call::Heartbeat).expect("retry").1;
    assert!(retry > next && s.in_flight.is_empty(), "{s:?}");

    // SIGTERM with a stop deadline shows when the stop will be forced.
    let mut cfg = hooked();
    cfg.stop_deadline = Some(Duration::from_secs(60));
    let mut h = Harness::serving(cfg);
    h.input(Input::WorkerStarted { pid: 9 });
    h.input(Input::StopRequested);
    let s = h.host.snapshot();
    assert!(s.stop_requested && !s.forced && !s.exited);
    assert_eq!(s.force_at, Some(h.now + Duration::from_secs(60)));
    assert_eq!(s.draining, Some(DrainCause::StopRequested));
}

// ----- Named timers, the next step, lost jobs (what the shells word and count) -----

fn lost(acts: &[Action]) -> Vec<JobLoss> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Notify(Notice::JobLost { cause }) => Some(*cause),
            _ => None,
        })
        .collect()
}

#[test]
fn next_timer_names_the_deadline_poll_timeout_gives() {
    let mut h = Harness::serving(hooked());
    assert_eq!(
        h.host.next_timer().map(|(_, t)| t),
        Some(Timer::DescribePoll),
        "an idle unprotected host only keeps its (harmless) poll schedule"
    );
    h.input(Input::WorkerStarted { pid: 7 });
    let id = h.find(|a| protect_id(a, true)).expect("protect");
    h.reply(id, err(ApiErrorKind::Throttled));
    let (at, timer) = h.host.next_timer().expect("a retry");
    assert_eq!(timer, Timer::Retry(Call::SetProtection));
    assert_eq!(h.host.poll_timeout(), Some(at));
    assert_eq!(h.host.timer(timer), Some(at));
    h.advance(at.since(h.now));
    let id = h.find(|a| protect_id(a, true)).expect("protect again");
    h.reply(id, Ok(ApiReply::Done));
    h.input(Input::WorkerExited { pid: 7 });
    assert_eq!(h.host.timer(Timer::Unprotect), Some(h.now + Duration::from_secs(30)));
    h.advance(Duration::from_secs(20));
    assert_eq!(
        h.host.next_timer(),
        Some((h.now + Duration::from_secs(10), Timer::Unprotect))
    );

    // The stop grace is a timer until SIGKILL goes out; then no timer is left for the listener.
    confirmed_wait(&mut h);
    assert!(matches!(
        h.host.listener(),
        ListenerState::Stopping { kill_at: Some(_), .. }
    ));
    let kill_at = h.host.timer(Timer::ListenerKill).expect("kill timer");
    h.advance(kill_at.since(h.now));
    assert!(h.take().iter().any(|a| matches!(a, Action::KillListener { .. })));
    assert!(matches!(
        h.host.listener(),
        ListenerState::Stopping { kill_at: None, .. }
    ));
    assert_eq!(h.host.timer(Timer::ListenerKill), None);
    assert_eq!(
        h.host.next_step().step,
        Some(Step::ListenerKilled {
            then: AfterStop {
                complete_hook: true,
                exit: false
            }
        })
    );
}

#[test]
fn every_timer_has_one_wire_name() {
    let names: std::collections::BTreeSet<&str> = Timer::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names.len(), Timer::ALL.len());
    for t in Timer::ALL {
        assert!(!t.to_string().contains(char::is_uppercase), "{t}");
    }
    assert_eq!(DrainCause::StopRequested.name(), "stop-requested");
    assert_eq!(Call::SetProtection.to_string(), "set-protection");
    assert_eq!(JobLoss::ALL.len(), 4);
}

#[test]
fn a_job_in_the_stop_window_is_lost_once_even_when_the_stop_is_then_forced() {
    let mut h = Harness::serving(hooked());
    h.input(Input::StopRequested);
    assert!(h.take().iter().any(is_stop));
    h.input(Input::WorkerStarted { pid: 9 });
    assert_eq!(lost(&h.take()), vec![JobLoss::StopWindow]);
    assert_eq!(h.host.next_step().step, Some(Step::JobInStopWindow));
    // Regression (metrics.rs counted it twice): the second SIGTERM forces the stop of a listener
    // that is already cancelling that job, and then the listener exits under it.
    h.input(Input::StopRequested);
    let acts = h.take();
    assert!(acts.contains(&Action::Notify(Notice::ForcingStopWithJob)));
    assert!(lost(&acts).is_empty(), "{acts:?}");
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(lost(&h.take()).is_empty());
}

#[test]
fn each_lost_job_is_reported_with_its_cause() {
    // A crash under a job.
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    h.take();
    h.input(Input::ListenerExited { code: Some(2) });
    assert_eq!(lost(&h.take()), vec![JobLoss::ListenerDied]);

    // A forced stop under a job: lost to the force, not again when the listener exits.
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    h.take();
    h.input(Input::StopRequested);
    assert!(lost(&h.take()).is_empty(), "a drain waits for the job");
    assert!(matches!(h.host.next_step().step, Some(Step::WaitForJob { .. })));
    h.input(Input::StopRequested);
    assert_eq!(lost(&h.take()), vec![JobLoss::ForcedStop]);
    assert_eq!(h.host.next_step().step, Some(Step::CancellingJob));
    h.input(Input::ListenerExited { code: None });
    assert!(lost(&h.take()).is_empty());

    // A job that ends normally is not lost, and the next one starts with a clean slate.
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::WorkerStarted { pid: 6 });
    h.input(Input::ListenerExited { code: Some(2) });
    assert_eq!(lost(&h.take()), vec![JobLoss::ListenerDied]);
}

#[test]
fn next_step_follows_the_decisions() {
    let mut h = Harness::new(hooked());
    h.input(Input::TargetState(TargetState::InService));
    let step = h.host.next_step();
    assert_eq!(
        step.describe,
        Some(DescribeStep {
            reason: DescribeReason::AwaitInService,
            when: DescribeWhen::Call(CallProgress::InFlight)
        })
    );
    let id = h.expect_describe();
    h.reply(id, described("InService", false));
    assert_eq!(h.host.next_step().step, Some(Step::StartListener));
    h.input(Input::ListenerStarted { pid: 100 });
    assert_eq!(
        h.host.next_step(),
        NextStep {
            describe: None,
            step: Some(Step::Idle)
        }
    );
    h.input(Input::WorkerStarted { pid: 5 });
    assert_eq!(
        h.host.next_step().step,
        Some(Step::JobRunning {
            protection: JobProtection::Call(CallProgress::InFlight)
        })
    );
    let id = h.find(|a| protect_id(a, true)).expect("protect");
    h.reply(id, Ok(ApiReply::Done));
    h.input(Input::WorkerExited { pid: 5 });
    let at = h.now + Duration::from_secs(30);
    assert_eq!(h.host.next_step().step, Some(Step::Unprotect { at, progress: None }));
    assert_eq!(h.host.snapshot().unprotect_at, Some(at));

    // IMDS down: the slow describe poll is named with its time, the same rule the core polls by.
    h.advance(Duration::from_secs(31));
    let id = h.find(|a| protect_id(a, false)).expect("unprotect");
    h.reply(id, Ok(ApiReply::Done));
    h.input(Input::ImdsUnavailable);
    h.advance(Duration::from_secs(10));
    let id = h.expect_describe();
    h.reply(id, described("InService", false));
    let poll = h.host.timer(Timer::DescribePoll).expect("poll");
    assert_eq!(
        h.host.next_step().describe,
        Some(DescribeStep {
            reason: DescribeReason::ImdsDown,
            when: DescribeWhen::PollAt(poll)
        })
    );
    assert_eq!(h.host.next_timer(), Some((poll, Timer::DescribePoll)));

    // A drained host whose hook completed.
    let mut h = Harness::serving(hooked());
    confirmed_wait(&mut h);
    h.input(Input::ListenerExited { code: Some(0) });
    let id = h.find(complete_id).expect("complete");
    assert_eq!(
        h.host.next_step().step,
        Some(Step::CompleteHook(Some(CallProgress::InFlight)))
    );
    h.reply(id, Ok(ApiReply::Done));
    assert_eq!(
        h.host.next_step().step,
        Some(Step::Drained {
            cause: DrainCause::Terminating,
            hook_completed: true,
            hook_configured: true
        })
    );
}

// ----- One /proc scan, and just-in-time runners -----

/// The race of issue 11, end to end: on a draining persistent host, job A's worker exits and the
/// listener at once takes job B; one `/proc` scan sees both. Fed one by one, the core decides between
/// them on a state that never existed (no worker) and signals the listener: B is cancelled.
#[test]
fn one_scan_with_a_worker_exit_and_a_worker_start_never_signals_the_listener() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    confirmed_wait(&mut h);
    h.take();
    h.host
        .handle_inputs([Input::WorkerExited { pid: 5 }, Input::WorkerStarted { pid: 6 }], h.now);
    h.drain();
    let acts = h.effects();
    assert!(
        !acts.iter().any(|a| matches!(a, Action::StopListener { .. })),
        "{acts:?}"
    );
    assert!(h.host.job_alive());
    // B ends with nothing after it: now the idle listener is stopped and the hook completed.
    h.input(Input::WorkerExited { pid: 6 });
    assert!(h
        .effects()
        .iter()
        .any(|a| matches!(a, Action::StopListener { cancels_job: false, .. })));
}

/// The same observations fed one decision at a time: this is the design that loses B (the test
/// above would be vacuous if this one did not lose it).
#[test]
fn the_same_scan_fed_one_by_one_loses_the_next_job_in_the_stop_window() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 5 });
    confirmed_wait(&mut h);
    h.take();
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::WorkerStarted { pid: 6 });
    let acts = h.take();
    assert!(acts.iter().any(|a| matches!(a, Action::StopListener { .. })));
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::Notify(Notice::JobLost {
            cause: JobLoss::StopWindow
        })
    )));
}

fn jit_hooked() -> CoreConfig {
    CoreConfig {
        listener_mode: ListenerMode::Jit,
        ..hooked()
    }
}

fn fetch_id(a: &Action) -> Option<(RequestId, FetchReason)> {
    match a {
        Action::FetchJitConfig { id, reason } => Some((*id, *reason)),
        _ => None,
    }
}

/// A JIT host confirmed InService, holding no config and running no listener yet.
fn jit_in_service() -> (Harness, RequestId) {
    jit_in_service_with(jit_hooked())
}

/// [`jit_in_service`] with `cfg`.
fn jit_in_service_with(cfg: CoreConfig) -> (Harness, RequestId) {
    let mut h = Harness::new(cfg);
    h.in_service_described_as("InService");
    let acts = h.take();
    assert!(
        !acts.iter().any(|a| matches!(a, Action::StartListener { .. })),
        "{acts:?}"
    );
    let (fetch, reason) = acts
        .iter()
        .find_map(fetch_id)
        .unwrap_or_else(|| panic!("no fetch in {acts:?}"));
    assert_eq!(reason, FetchReason::NextListener);
    (h, fetch)
}

/// A JIT host serving: its first config arrived and its listener (pid 100) runs, idle.
fn jit_listening() -> Harness {
    jit_listening_with(jit_hooked())
}

/// [`jit_listening`] with `cfg`.
fn jit_listening_with(cfg: CoreConfig) -> Harness {
    let (mut h, fetch) = jit_in_service_with(cfg);
    h.reply(fetch, Ok(ApiReply::Done));
    h.input(Input::ListenerStarted { pid: 100 });
    h
}

/// [`jit_listening`] running a job (worker pid 5).
fn jit_running_job() -> Harness {
    let mut h = jit_listening();
    h.input(Input::WorkerStarted { pid: 5 });
    h
}

/// The config fetch among the actions taken now; `what` names it in the panic when there is none.
fn next_fetch(h: &mut Harness, what: &str) -> (RequestId, FetchReason) {
    h.take().iter().find_map(fetch_id).unwrap_or_else(|| panic!("{what}"))
}

/// Standby is out of service (AsgState::runner): a JIT host there asks for no config and starts no
/// listener, makes no Auto Scaling calls while it waits, and serves again once IMDS says InService.
#[test]
fn a_jit_host_in_standby_mints_nothing_and_serves_again_after_it() {
    let mut h = Harness::new(jit_hooked());
    h.input(Input::TargetState(TargetState::Standby));
    h.advance(Duration::from_secs(3600));
    let acts = h.effects();
    assert!(
        acts.is_empty(),
        "a Standby host makes no calls and starts nothing: {acts:?}"
    );
    assert_eq!(h.host.snapshot().next_step.step, Some(Step::AwaitInService));
    h.in_service_described_as("InService");
    assert!(
        h.take().iter().any(|a| fetch_id(a).is_some()),
        "back in service: a config"
    );
}

#[test]
fn a_serving_jit_host_entering_standby_takes_no_next_job() {
    let mut h = jit_listening();
    h.take();
    h.input(Input::TargetState(TargetState::Standby));
    h.input(Input::WorkerStarted { pid: 5 });
    let acts = h.take();
    assert!(
        !acts.iter().any(|a| fetch_id(a).is_some()),
        "no prefetch in Standby: {acts:?}"
    );
    h.advance(Duration::from_secs(120));
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    h.advance(Duration::from_secs(600));
    let acts = h.take();
    assert!(
        !acts
            .iter()
            .any(|a| fetch_id(a).is_some() || matches!(a, Action::StartListener { .. })),
        "{acts:?}"
    );
    h.input(Input::TargetState(TargetState::InService));
    assert!(
        h.take().iter().any(|a| fetch_id(a).is_some()),
        "back in service: a config"
    );
}

#[test]
fn a_host_described_in_standby_starts_no_listener() {
    let mut h = Harness::new(hooked());
    h.in_service_described_as("Standby");
    assert!(!h.starts_a_listener());
    h.advance(Duration::from_secs(10));
    let id = h.expect_describe();
    h.reply(id, described("InService", false));
    assert!(h.starts_a_listener());
}

#[test]
fn jit_listener_starts_only_with_a_config() {
    let (mut h, fetch) = jit_in_service();
    assert_eq!(
        h.host.snapshot().next_step.step,
        Some(Step::AwaitJitConfig(Some(CallProgress::InFlight)))
    );
    h.reply(fetch, Ok(ApiReply::Done));
    assert!(h.starts_listener(StartReason::Serving));
    assert_eq!(h.host.snapshot().jit_config_held, Some(false), "the start consumed it");
}

#[test]
fn jit_fetches_the_next_config_while_the_job_runs_and_serves_again_at_once() {
    let mut h = jit_listening();
    let idle = h.effects();
    assert!(
        !idle.iter().any(|a| fetch_id(a).is_some()),
        "an idle listener needs no successor yet"
    );
    h.input(Input::WorkerStarted { pid: 5 });
    let (next, reason) = next_fetch(&mut h, "no prefetch");
    assert_eq!(reason, FetchReason::Prefetch);
    h.reply(next, Ok(ApiReply::Done));
    h.advance(Duration::from_secs(120));
    h.input(Input::WorkerExited { pid: 5 });
    h.take();
    h.input(Input::ListenerExited { code: Some(0) });
    assert!(h.starts_listener(StartReason::NextJob));
}

#[test]
fn a_draining_jit_host_starts_no_next_listener_and_completes_its_hook() {
    let mut h = jit_running_job();
    let (next, _) = next_fetch(&mut h, "no prefetch");
    confirmed_wait(&mut h);
    let acts = h.effects();
    assert!(
        !acts.iter().any(|a| matches!(a, Action::StopListener { .. })),
        "{acts:?}"
    );
    // The prefetched config arrives during the drain: held, never used.
    h.reply(next, Ok(ApiReply::Done));
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    let acts = h.effects();
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::StartListener { .. } | Action::FetchJitConfig { .. })),
        "{acts:?}"
    );
    assert!(acts.iter().any(|a| complete_id(a).is_some()), "{acts:?}");
}

#[test]
fn a_draining_jit_host_fetches_nothing_for_a_job_that_ends_it() {
    let mut h = jit_listening();
    confirmed_wait(&mut h);
    h.take();
    // A job dispatched in the instant of the stop: the idle listener was already signalled.
    h.input(Input::WorkerStarted { pid: 5 });
    assert!(!h.take().iter().any(|a| fetch_id(a).is_some()));
}

#[test]
fn a_failing_mint_leaves_the_host_idle_retrying_and_its_hook_is_still_completed() {
    let (mut h, mut fetch) = jit_in_service();
    let mut fetches = 1;
    for _ in 0..5 {
        h.reply(fetch, err(ApiErrorKind::Throttled));
        let snap = h.host.snapshot();
        assert!(snap.retry_at.iter().any(|(c, _)| *c == Call::MintJitConfig), "{snap:?}");
        h.advance(Duration::from_secs(31));
        fetch = next_fetch(&mut h, "no retry").0;
        fetches += 1;
    }
    assert_eq!(fetches, 6);
    // Scale-in of the idle, listener-less host: the hook is completed at once, nothing is fetched.
    h.reply(fetch, err(ApiErrorKind::Other));
    confirmed_wait(&mut h);
    let acts = h.effects();
    assert!(acts.iter().any(|a| complete_id(a).is_some()), "{acts:?}");
    h.advance(Duration::from_secs(120));
    assert!(!h.take().iter().any(|a| fetch_id(a).is_some()));
}

#[test]
fn a_refused_jit_config_is_replaced_after_the_relaunch_delay() {
    let mut h = jit_listening();
    // Exit 1 without a job: the service refused the config (already used, or deleted).
    h.input(Input::ListenerExited { code: Some(1) });
    let (next, reason) = next_fetch(&mut h, "no fetch");
    assert_eq!(reason, FetchReason::NextListener);
    h.reply(next, Ok(ApiReply::Done));
    assert!(!h.starts_a_listener());
    h.advance(Duration::from_secs(5));
    assert!(h.starts_listener(StartReason::Relaunch));
}

/// A JIT listener's exit 0 after its job, seen before the worker's exit (the next `/proc` scan is
/// up to `runner.worker_poll` away): the job completed, nothing was lost.
#[test]
fn a_jit_listener_exiting_0_before_its_worker_is_seen_gone_lost_nothing() {
    let mut h = jit_running_job();
    h.take();
    h.input(Input::ListenerExited { code: Some(0) });
    let acts = h.take();
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::Notify(Notice::JobLost { .. } | Notice::ListenerDiedWithJob))),
        "{acts:?}"
    );
    assert!(!h.host.job_alive());
    // A crash (any other exit) under a job is still a loss.
    let mut h = jit_running_job();
    h.take();
    h.input(Input::ListenerExited { code: Some(2) });
    assert!(h.take().iter().any(|a| matches!(
        a,
        Action::Notify(Notice::JobLost {
            cause: JobLoss::ListenerDied
        })
    )));
}

/// The driver's last look before SIGINT found a worker its previous scan (up to
/// `runner.worker_poll` ago) had not: the job was assigned in that instant. Reported with the worker
/// in one batch, the stop is taken back and the job runs under the hook; nothing is lost.
#[test]
fn a_worker_found_in_the_last_look_before_the_stop_takes_the_stop_back() {
    let mut h = Harness::serving(hooked());
    h.look = vec![Input::WorkerStarted { pid: 7 }];
    let acts = terminate(&mut h);
    assert!(!acts.iter().any(is_stop), "{acts:?}");
    assert_eq!(h.looks, 1);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Notify(Notice::JobLost { .. }))),
        "{acts:?}"
    );
    assert!(
        matches!(h.host.listener(), ListenerState::Running { pid: 100, .. }),
        "{:?}",
        h.host.listener()
    );
    assert!(h.host.job_alive());
    // The job ends: now the idle listener is stopped (and this time it is idle).
    h.input(Input::WorkerExited { pid: 7 });
    assert!(h
        .effects()
        .iter()
        .any(|a| matches!(a, Action::StopListener { cancels_job: false, .. })));
    assert_eq!(h.looks, 2);
    // A stale look (another pid, or no stop waiting) changes nothing.
    h.input(Input::ListenerLooked { pid: 999 });
    h.input(Input::ListenerLooked { pid: 100 });
    assert!(matches!(h.host.listener(), ListenerState::Stopping { .. }));
    assert!(h.effects().is_empty());
}

/// GitHub rate-limited the mint for ten minutes (the JIT endpoint's 429 with `Retry-After: 600`):
/// the next fetch waits that long, not the 30 s backoff cap.
#[test]
fn a_mint_retry_never_comes_before_the_services_retry_after() {
    let (mut h, fetch) = jit_in_service();
    let limited =
        ApiError::new(ApiErrorKind::Throttled, "GitHub rate limit").with_retry_after(Some(Duration::from_secs(600)));
    h.reply(fetch, Err(limited));
    h.advance(Duration::from_secs(599));
    assert!(
        !h.take().iter().any(|a| fetch_id(a).is_some()),
        "retried before Retry-After"
    );
    h.advance(Duration::from_secs(1));
    assert!(h.take().iter().any(|a| fetch_id(a).is_some()));
}

// ----- the handover: perf-log latch and release (shared/docs/handover-window.md section 6) -----

/// A JIT host serving with its listener running (pid 100), idle, actions cleared.
fn jit_serving() -> Harness {
    let (mut h, fetch) = jit_in_service();
    h.reply(fetch, Ok(ApiReply::Done));
    assert!(h.starts_a_listener());
    h.input(Input::ListenerStarted { pid: 100 });
    h.take();
    h
}

/// Scale-in noticed (IMDS) and confirmed: every action of both steps.
fn terminate(h: &mut Harness) -> Vec<Action> {
    h.input(Input::TargetState(TargetState::Terminated));
    let mut acts = h.take();
    let id = acts
        .iter()
        .find_map(|a| match a {
            Action::Describe { id, .. } => Some(*id),
            _ => None,
        })
        .expect("a describe");
    h.reply(id, described("Terminating:Wait", false));
    acts.extend(h.take());
    acts
}

fn release_id(a: &Action) -> Option<RequestId> {
    match a {
        Action::ReleaseRunner { id } => Some(*id),
        _ => None,
    }
}

fn held(h: &Harness) -> Option<HoldReason> {
    match h.host.next_step().step {
        Some(Step::HoldStop { reason, .. }) => Some(reason),
        _ => None,
    }
}

/// Window W1/W2: the job message reached the listener (its perf line) and it is acknowledging and
/// acquiring when the scale-in is noticed. SIGINT now would lose the job (Runner.cs:747-757,
/// JobDispatcher.cs:1124-1127); the latch holds the stop until the worker comes, and the job runs
/// under the hook. With the latch off, the same sequence signals the listener at once.
#[test]
fn a_job_message_without_its_worker_holds_the_stop_until_the_worker_comes() {
    for latch in [true, false] {
        let cfg = CoreConfig {
            handover: HandoverConfig {
                latch,
                ..HandoverConfig::off()
            },
            ..hooked()
        };
        let mut h = Harness::serving(cfg);
        h.input(Input::JobMessageReceived);
        assert!(
            h.effects().is_empty(),
            "a job message alone does nothing on a serving host"
        );
        let acts = terminate(&mut h);
        if !latch {
            assert!(acts.iter().any(is_stop), "{acts:?}");
            continue;
        }
        assert!(!acts.iter().any(is_stop), "{acts:?}");
        assert_eq!(held(&h), Some(HoldReason::JobMessage));
        assert!(h.host.timer(Timer::HandoverHold).is_some());
        h.advance(Duration::from_secs(3));
        assert!(!h.take().iter().any(is_stop));
        h.input(Input::WorkerStarted { pid: 7 });
        assert!(lost(&h.take()).is_empty());
        assert!(h.host.job_alive());
        h.input(Input::WorkerExited { pid: 7 });
        assert!(h.take().iter().any(is_stop));
    }
}

/// A message that never produces a worker (another runner acquired the job, Runner.cs:737-745, or
/// the line was forged by the job's user) holds the stop for the bound and no longer: then the stop
/// goes out and the hold is reported. Further lines during the drain, one every ten seconds, are
/// ignored: a forger delays a drain by one bound at most.
#[test]
fn a_job_message_holds_a_stop_for_the_bound_at_most_whatever_follows() {
    let mut h = Harness::serving(hooked());
    // Nothing was landing, but the last look finds a line: the stop is not sent.
    h.look = vec![Input::JobMessageReceived];
    assert!(!terminate(&mut h).iter().any(is_stop));
    assert_eq!(h.looks, 1);
    let bound = HandoverConfig::default().bound;
    for _ in 0..11 {
        h.advance(Duration::from_secs(10));
        h.input(Input::JobMessageReceived);
        assert!(!h.take().iter().any(is_stop), "held before the bound");
    }
    h.advance(bound - Duration::from_secs(110));
    let acts = h.take();
    assert!(acts.iter().any(is_stop), "{acts:?}");
    assert_eq!(lost(&acts), vec![JobLoss::HandoverTimeout]);
    // And once signalled, a later line changes nothing.
    h.input(Input::JobMessageReceived);
    assert!(h.effects().is_empty());
}

/// A perf line is a hint: it never protects a host, and an idle host's protection is cleared on
/// schedule whatever lines come.
#[test]
fn a_job_message_never_protects_nor_keeps_a_host_protected() {
    let mut h = Harness::serving(hooked());
    h.input(Input::JobStartedHook);
    h.input(Input::WorkerStarted { pid: 5 });
    let id = h.find(|a| protect_id(a, true)).expect("protects for a real job");
    h.reply(id, Ok(ApiReply::Done));
    h.input(Input::WorkerExited { pid: 5 });
    h.take();
    for _ in 0..10 {
        h.input(Input::JobMessageReceived);
        h.advance(Duration::from_secs(4));
    }
    let acts = h.take();
    assert!(!acts.iter().any(|a| protect_id(a, true).is_some()), "{acts:?}");
    assert!(acts.iter().any(|a| protect_id(a, false).is_some()), "{acts:?}");
}

/// JIT: before the stop, GitHub is asked to delete the registration. Deleted: a short watch for a
/// message already in transit, then the stop.
#[test]
fn a_released_jit_registration_is_watched_briefly_then_stopped() {
    let mut h = jit_serving();
    let acts = terminate(&mut h);
    assert!(!acts.iter().any(is_stop), "{acts:?}");
    let id = acts.iter().find_map(release_id).expect("release asked");
    assert_eq!(held(&h), Some(HoldReason::Releasing));
    h.reply(id, Ok(ApiReply::Released(Release::Removed)));
    assert_eq!(held(&h), Some(HoldReason::WatchAfterRelease));
    h.advance(HandoverConfig::default().release_watch - Duration::from_millis(1));
    assert!(!h.take().iter().any(is_stop));
    h.advance(Duration::from_millis(1));
    let acts = h.take();
    assert!(acts.iter().any(is_stop), "{acts:?}");
    assert!(lost(&acts).is_empty());
}

/// GitHub refuses (busy: a job is assigned): a job is landing. The stop waits for the worker; the
/// job runs under the hook. If no worker comes within the bound, the stop goes out and the loss is
/// reported. Without the latch a "not found" is treated the same way.
#[test]
fn a_refused_release_holds_the_stop_for_the_worker() {
    let no_latch = |outcome| {
        (
            outcome,
            HandoverConfig {
                latch: false,
                ..HandoverConfig::default()
            },
        )
    };
    for (outcome, handover) in [(Release::Busy, HandoverConfig::default()), no_latch(Release::NotFound)] {
        let jit_serving = || {
            let mut h = jit_serving();
            let mut cfg = h.host.config().clone();
            cfg.handover = handover;
            h.host = Host::new(cfg, 1, h.now);
            h.in_service_described_as("InService");
            let fetch = h.take().iter().find_map(fetch_id).expect("fetch").0;
            h.reply(fetch, Ok(ApiReply::Done));
            h.input(Input::ListenerStarted { pid: 100 });
            h.take();
            h
        };
        let mut h = jit_serving();
        let id = terminate(&mut h).iter().find_map(release_id).expect("release asked");
        h.reply(id, Ok(ApiReply::Released(outcome)));
        h.advance(Duration::from_secs(30));
        assert!(!h.take().iter().any(is_stop));
        h.input(Input::WorkerStarted { pid: 7 });
        assert!(h.host.job_alive());
        assert!(lost(&h.take()).is_empty());

        let mut h = jit_serving();
        let id = terminate(&mut h).iter().find_map(release_id).expect("release asked");
        h.reply(id, Ok(ApiReply::Released(outcome)));
        h.advance(HandoverConfig::default().bound);
        let acts = h.take();
        assert!(acts.iter().any(is_stop), "{acts:?}");
        assert_eq!(lost(&acts), vec![JobLoss::HandoverTimeout]);
    }
}

/// The controller or GitHub cannot be reached: no retry, no wait on the outage; the drain falls
/// back to the latch and the last look.
#[test]
fn a_failed_release_falls_back_to_the_stop_at_once() {
    let mut h = jit_serving();
    let id = terminate(&mut h).iter().find_map(release_id).expect("release asked");
    h.reply(id, err(ApiErrorKind::Transient));
    assert!(h.take().iter().any(is_stop));
}

/// An answer for a listener that has gone meanwhile (it exited, a new one started) is ignored.
#[test]
fn a_release_answer_for_a_gone_listener_changes_nothing() {
    let mut h = jit_serving();
    let id = terminate(&mut h).iter().find_map(release_id).expect("release asked");
    h.input(Input::ListenerExited { code: Some(0) });
    h.take();
    h.reply(id, Ok(ApiReply::Released(Release::Busy)));
    assert!(h.effects().is_empty());
    assert!(matches!(h.host.listener(), ListenerState::Down { .. }));
}

/// A hold can outlast a short HeartbeatTimeout (AWS minimum: 30 s): the hook is heartbeated while
/// the stop is held, so the instance is not terminated under a landing job.
#[test]
fn the_hook_is_heartbeated_while_a_stop_is_held() {
    let cfg = hooked_for(Duration::from_secs(30));
    let mut h = Harness::serving(cfg);
    h.input(Input::JobMessageReceived);
    terminate(&mut h);
    h.advance(Duration::from_secs(25));
    assert!(h.take().iter().any(|a| heartbeat_id(a).is_some()));
}

/// A forced stop (second SIGTERM, the stop deadline) skips every hold.
#[test]
fn a_forced_stop_skips_the_handover_holds() {
    let mut h = jit_serving();
    h.input(Input::JobMessageReceived);
    h.input(Input::StopRequested);
    assert!(!h.take().iter().any(is_stop));
    h.input(Input::StopRequested);
    assert!(h.take().iter().any(is_stop));
}

/// GitHub no longer knows the JIT registration. Either an assignment consumed it (actions/runner#4617:
/// then the job message reaches the listener within its transit, and the latch takes over), or the
/// listener is a ghost (nothing comes). So: a short watch, then the stop, and nothing is counted.
#[test]
fn a_missing_registration_is_watched_for_a_message_then_stopped_without_a_loss() {
    let mut h = jit_serving();
    let id = terminate(&mut h).iter().find_map(release_id).expect("release asked");
    h.reply(id, Ok(ApiReply::Released(Release::NotFound)));
    assert_eq!(held(&h), Some(HoldReason::RegistrationNotFound));
    h.advance(HandoverConfig::default().release_watch);
    let acts = h.take();
    assert!(acts.iter().any(is_stop), "{acts:?}");
    assert!(lost(&acts).is_empty(), "{acts:?}");

    // The consumed case: the message arrives during the watch, the worker after it.
    let mut h = jit_serving();
    let id = terminate(&mut h).iter().find_map(release_id).expect("release asked");
    h.reply(id, Ok(ApiReply::Released(Release::NotFound)));
    h.advance(Duration::from_secs(1));
    h.input(Input::JobMessageReceived);
    h.advance(Duration::from_secs(10));
    assert!(!h.take().iter().any(is_stop));
    h.input(Input::WorkerStarted { pid: 8 });
    assert!(h.host.job_alive());
    assert!(lost(&h.take()).is_empty());
}

/// A JIT listener that took a job message and never started a worker is a ghost (its acquire was
/// refused and its registration consumed: it polls on and will never be assigned again,
/// actions/runner#4617). After the bound it is stopped and replaced by a fresh registration, and
/// nothing is counted lost.
#[test]
fn a_ghost_jit_listener_is_replaced_after_the_bound() {
    let mut h = jit_serving();
    h.input(Input::JobMessageReceived);
    h.advance(HandoverConfig::default().bound - Duration::from_millis(1));
    assert!(h.effects().is_empty());
    h.advance(Duration::from_millis(1));
    let acts = h.take();
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::StopListener {
                reason: StopReason::Ghost,
                cancels_job: false
            }
        )),
        "{acts:?}"
    );
    assert!(lost(&acts).is_empty());
    h.input(Input::ListenerExited { code: Some(0) });
    let fetch = h.take().iter().find_map(fetch_id).expect("a fresh config is fetched").0;
    h.reply(fetch, Ok(ApiReply::Done));
    assert!(h.starts_a_listener());
}

/// A JIT listener whose job just ended on a draining host is exiting on its own and its registration
/// is spent: it is stopped without asking GitHub anything (no release, no hold).
#[test]
fn a_jit_listener_that_ran_its_job_is_stopped_without_a_release() {
    let mut h = jit_serving();
    h.input(Input::WorkerStarted { pid: 7 });
    let acts = terminate(&mut h);
    assert!(!acts.iter().any(is_stop));
    h.input(Input::WorkerExited { pid: 7 });
    let acts = h.take();
    assert!(acts.iter().any(is_stop), "{acts:?}");
    assert!(!acts.iter().any(|a| release_id(a).is_some()), "{acts:?}");
}

/// While a worker runs the listener takes no job message; a line read then (an old one read late by
/// a restarted agent, or a forged one) holds nothing once the job ends.
#[test]
fn a_job_message_while_a_worker_runs_holds_nothing_after_the_job() {
    let mut h = Harness::serving(hooked());
    h.input(Input::WorkerStarted { pid: 7 });
    h.input(Input::JobMessageReceived);
    terminate(&mut h);
    h.input(Input::WorkerExited { pid: 7 });
    assert!(h.take().iter().any(is_stop));
}

// ----- One instance per job -----

fn one_per_instance() -> CoreConfig {
    CoreConfig {
        one_job_per_instance: true,
        ..jit_hooked()
    }
}

fn leave_id(a: &Action) -> Option<RequestId> {
    match a {
        Action::LeaveGroup { id } => Some(*id),
        _ => None,
    }
}

/// A one-instance-per-job host whose listener (pid 100) runs its job (worker 5), protected.
fn one_job_running() -> Harness {
    let mut h = jit_listening_with(one_per_instance());
    h.input(Input::WorkerStarted { pid: 5 });
    let acts = h.take();
    assert!(
        !acts.iter().any(|a| fetch_id(a).is_some()),
        "no prefetch for a host that runs one job: {acts:?}"
    );
    let protect = acts.iter().find_map(|a| protect_id(a, true)).expect("protected");
    h.reply(protect, Ok(ApiReply::Done));
    h.take();
    h
}

/// The job ends and the listener exits 0; the drain clears protection; returns the LeaveGroup id.
fn finish_the_job(h: &mut Harness) -> RequestId {
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    let acts = h.take();
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Notify(Notice::DrainStarted {
                cause: DrainCause::JobDone
            })
        )),
        "{acts:?}"
    );
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::StartListener { .. } | Action::FetchJitConfig { .. })),
        "{acts:?}"
    );
    assert!(
        !acts.iter().any(|a| leave_id(a).is_some()),
        "protection is cleared first"
    );
    let unprotect = acts.iter().find_map(|a| protect_id(a, false)).expect("unprotect");
    h.reply(unprotect, Ok(ApiReply::Done));
    let acts = h.take();
    assert_eq!(acts.iter().filter(|a| leave_id(a).is_some()).count(), 1, "{acts:?}");
    acts.iter().find_map(leave_id).expect("a leave")
}

#[test]
fn one_instance_per_job_never_starts_a_next_listener_and_leaves_once() {
    let mut h = one_job_running();
    let leave = finish_the_job(&mut h);
    assert_eq!(
        h.host.snapshot().next_step.step,
        Some(Step::LeaveGroup(Some(CallProgress::InFlight)))
    );
    h.reply(leave, Ok(ApiReply::Done));
    assert!(h.take().iter().any(|a| matches!(a, Action::Notify(Notice::LeftGroup))));
    // Nothing more until the group's termination shows: no second leave, no listener, no config.
    h.advance(Duration::from_secs(3600));
    let acts = h.effects();
    assert!(acts.is_empty(), "{acts:?}");
    // The termination hook: the host is idle and its listener down, so it is completed at once.
    confirmed_wait(&mut h);
    let acts = h.effects();
    let complete = acts.iter().find_map(complete_id).expect("completed at once");
    assert!(!acts.iter().any(|a| matches!(a, Action::Heartbeat { .. })), "{acts:?}");
    h.reply(complete, Ok(ApiReply::Done));
    assert_eq!(h.host.hook_phase(), HookPhase::Done);
    assert!(lost(&h.take()).is_empty());
    assert!(!h.host.has_exited(), "the instance terminates under the agent");
}

#[test]
fn one_instance_per_job_retries_a_throttled_leave_with_backoff() {
    let mut h = one_job_running();
    let leave = finish_the_job(&mut h);
    h.reply(leave, err(ApiErrorKind::Throttled));
    let acts = h.take();
    assert!(acts.iter().all(|a| leave_id(a).is_none()), "not at once: {acts:?}");
    let retry = h.host.timer(Timer::Retry(Call::LeaveGroup)).expect("a retry is armed");
    assert!(retry > h.now);
    assert_eq!(
        h.host.snapshot().next_step.step,
        Some(Step::LeaveGroup(Some(CallProgress::RetryAt(retry))))
    );
    h.advance(retry.since(h.now));
    let acts = h.take();
    assert_eq!(acts.iter().filter(|a| leave_id(a).is_some()).count(), 1, "{acts:?}");
    let again = acts.iter().find_map(leave_id).expect("a leave");
    h.reply(again, Ok(ApiReply::Done));
    h.advance(Duration::from_secs(600));
    assert!(h.effects().is_empty());
}

#[test]
fn one_instance_per_job_loses_nothing_when_the_listener_exits_before_its_worker_is_seen() {
    let mut h = one_job_running();
    // Exit 0 first: the worker's exit is simply not seen yet.
    h.input(Input::ListenerExited { code: Some(0) });
    let acts = h.take();
    assert!(lost(&acts).is_empty(), "{acts:?}");
    assert_eq!(h.host.draining(), Some(DrainCause::JobDone));
    assert!(!acts.iter().any(|a| matches!(a, Action::StartListener { .. })));
}

#[test]
fn one_instance_per_job_does_not_drain_a_listener_that_ran_no_job() {
    let mut h = jit_listening_with(one_per_instance());
    h.take();
    // A refused config (exit 1), no job: a fresh config and a new listener, as in JIT mode.
    h.input(Input::ListenerExited { code: Some(1) });
    assert_eq!(h.host.draining(), None);
    h.advance(Duration::from_secs(5));
    assert!(h.take().iter().any(|a| fetch_id(a).is_some()));
}

#[test]
fn one_instance_per_job_leaves_a_drain_already_under_way_alone() {
    let mut h = one_job_running();
    // Scale-in while the job runs: the drain is the termination's, the hook is heartbeaten.
    confirmed_wait(&mut h);
    assert_eq!(h.host.draining(), Some(DrainCause::Terminating));
    h.take();
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    let acts = h.effects();
    assert!(acts.iter().all(|a| leave_id(a).is_none()), "{acts:?}");
    assert!(acts.iter().any(|a| complete_id(a).is_some()), "{acts:?}");
    assert_eq!(h.host.draining(), Some(DrainCause::Terminating));
}

#[test]
fn one_instance_per_job_in_no_group_exits() {
    let mut h = Harness::new(one_per_instance());
    h.input(Input::TargetState(TargetState::NotInGroup));
    let (fetch, _) = h.take().iter().find_map(fetch_id).expect("a config");
    h.reply(fetch, Ok(ApiReply::Done));
    h.input(Input::ListenerStarted { pid: 100 });
    h.input(Input::WorkerStarted { pid: 5 });
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    let acts = h.effects();
    assert!(acts.iter().all(|a| leave_id(a).is_none()), "{acts:?}");
    assert!(
        acts.iter().any(|a| matches!(a, Action::Exit { forced: false })),
        "{acts:?}"
    );
    assert!(h.host.has_exited());
}

#[test]
fn one_instance_per_job_is_off_by_default_and_outside_jit_mode() {
    assert!(!CoreConfig::default().one_job_per_instance);
    // One-job mode relaunches as before, even with the option set.
    let mut h = Harness::serving(CoreConfig {
        listener_mode: ListenerMode::OneJob,
        one_job_per_instance: true,
        ..hooked()
    });
    h.input(Input::WorkerStarted { pid: 5 });
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    assert_eq!(h.host.draining(), None);
}

#[test]
fn one_instance_per_job_exits_when_the_group_no_longer_knows_the_instance() {
    let mut h = one_job_running();
    let leave = finish_the_job(&mut h);
    h.reply(leave, err(ApiErrorKind::InstanceNotFound));
    let acts = h.effects();
    assert!(
        acts.iter().any(|a| matches!(a, Action::Exit { forced: false })),
        "{acts:?}"
    );
    assert!(acts.iter().all(|a| leave_id(a).is_none()), "{acts:?}");
}

#[test]
fn one_instance_per_job_lets_a_stop_request_win_over_the_leave() {
    let mut h = one_job_running();
    h.input(Input::StopRequested);
    h.input(Input::WorkerExited { pid: 5 });
    h.input(Input::ListenerExited { code: Some(0) });
    let acts = h.take();
    let unprotect = acts.iter().find_map(|a| protect_id(a, false)).expect("unprotect");
    h.reply(unprotect, Ok(ApiReply::Done));
    let acts = h.effects();
    assert!(acts.iter().all(|a| leave_id(a).is_none()), "{acts:?}");
    assert!(
        acts.iter().any(|a| matches!(a, Action::Exit { forced: false })),
        "{acts:?}"
    );
}

/// The stop of an idle listener is the second half of the last look: once the driver reports a
/// quiet look, the stop comes out next, before anything the pass queued after the look, exactly
/// when a driver that signalled at once would have sent it.
#[test]
fn the_stop_after_a_quiet_last_look_comes_out_before_anything_queued() {
    let mut h = Harness::serving(hooked());
    h.host.handle_input(Input::TargetState(TargetState::Terminated), h.now);
    let mut look = None;
    while let Some(a) = h.host.poll_action() {
        if let Action::ConfirmIdle { pid, reason } = a {
            assert_eq!(reason, StopReason::TerminatingIdle);
            look = Some(pid);
            break;
        }
    }
    let pid = look.expect("a last look before the stop");
    h.host.handle_input(Input::ListenerLooked { pid }, h.now);
    let next = h.host.poll_action();
    assert!(
        matches!(next, Some(Action::StopListener { cancels_job: false, .. })),
        "{next:?}"
    );
    assert!(matches!(
        h.host.listener(),
        ListenerState::Stopping { forced: false, .. }
    ));
}
