//! The decision core for one runner host: a level-triggered, sans-IO state machine.
//!
//! Drive it like this: feed every observation with [`Host::handle_input`], call
//! [`Host::handle_timeout`] when [`Host::poll_timeout`] comes due, and after either, drain
//! [`Host::poll_action`] until it returns `None`. Each decision is re-derived from what is known now
//! (is a job alive? is termination confirmed? is a call in flight?), so a freshly started core that is
//! told what a dead one observed reaches the same decisions: nothing needed for safety lives only in
//! memory.

use crate::aws::{ApiError, ApiErrorKind, AsgState, TargetState};
use crate::backoff::Backoff;
use crate::config::{CoreConfig, ListenerMode};
use crate::io::{
    Action, ApiReply, Call, CompleteReason, DescribeReason, Detection, DrainCause, FetchReason, HeartbeatReason,
    HoldReason, Input, JobLoss, KillReason, LifecycleResult, Notice, ProtectReason, Release, RequestId, StartReason,
    StopReason,
};
use crate::rng::Rng;
use crate::step::{
    AfterStop, CallProgress, DescribeStep, DescribeWhen, ExitStep, FetchStep, HeartbeatWhen, HookStep, JobProtection,
    LeaveStep, ListenerStep, NextStep, Plan, ProtectionStep, Step,
};
use crate::time::Time;
use crate::timer::Timer;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// What the core believes about the listener process.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ListenerState {
    /// Not running. `relaunch_at` is when it may be (re)started; `None` once it gave up or drained.
    Down {
        /// Earliest start, if it may start at all.
        relaunch_at: Option<Time>,
    },
    /// Start requested, not yet seen running.
    Starting,
    /// Running with this pid.
    Running {
        /// Its pid.
        pid: u32,
        /// When it was seen running.
        since: Time,
    },
    /// SIGINT sent; waiting for it to exit.
    Stopping {
        /// Its pid.
        pid: u32,
        /// When the grace period ends and SIGKILL follows (if no job is alive); `None` once SIGKILL
        /// has been sent.
        kill_at: Option<Time>,
        /// Whether the stop was forced while a job ran.
        forced: bool,
    },
}

/// The termination lifecycle action as the core tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HookPhase {
    /// No lifecycle action known to be pending.
    None,
    /// Confirmed `Terminating:Wait`; heartbeat while a job runs, complete when idle.
    Pending {
        /// When the wait was confirmed.
        since: Time,
        /// When AWS will apply the default result whatever we do.
        global_deadline: Time,
    },
    /// Completed by us, found completed, or found gone. Terminal.
    Done,
}

/// One kind of Auto Scaling call: at most one in flight, and a not-before gate for retries.
#[derive(Clone, Debug, Default)]
struct CallSlot {
    inflight: Option<RequestId>,
    not_before: Option<Time>,
    failures: u32,
}

/// The handover guard of one listener incarnation (shared/docs/handover-window.md section 6): the
/// perf-log latch and the release of its registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Handover {
    /// The first job message not yet followed by a worker. The first, not the newest: a streak of
    /// forged lines holds a stop no longer than one genuine message.
    message_at: Option<Time>,
    /// A hold by a job message ran out during this drain: later lines of this listener are
    /// ignored, so a forger delays a drain by at most one bound.
    latch_spent: bool,
    /// Where the release of this incarnation's registration stands.
    release: ReleaseState,
    /// This JIT listener is being stopped as a ghost: it is replaced when it exits.
    replacing_ghost: bool,
    /// The hold last reported (`Notice::StopHeld`).
    held_for: Option<HoldReason>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ReleaseState {
    /// Not asked (yet).
    #[default]
    NotAsked,
    /// Asked; the answer is awaited.
    Asked(RequestId),
    /// Deleted: watch for a message already in transit until then, then stop.
    Removed { watch_until: Time },
    /// Refused (or not found without the latch): a job may be landing; wait for its worker until
    /// then, and count the job if none comes.
    Landing { reason: HoldReason, until: Time },
    /// Not found while the latch runs: an assignment that consumed the registration shows as a job
    /// message within a message's transit, so watch until then (no loss is counted: a ghost's
    /// registration is not found either).
    NotFound { watch_until: Time },
    /// The controller could not be asked: fall back to the latch and the last look.
    Failed,
}

/// Whether an idle listener of a draining host may be signalled now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopGate {
    /// Not yet: a job may be landing.
    Hold { reason: HoldReason, until: Option<Time> },
    /// Ask GitHub first (release the registration).
    Release,
    /// Yes.
    Stop,
}

/// A stop of an idle listener waiting for the driver's last look ([`Action::ConfirmIdle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingStop {
    pid: u32,
    reason: StopReason,
}

/// A `job-started` hook report that no `Runner.Worker` has backed yet, and what it changed, so that
/// dropping it leaves the core as if it had never come.
#[derive(Clone, Copy, Debug)]
struct HookClaim {
    /// When the claim is dropped if no worker has been seen by then.
    drop_at: Time,
    /// When the runner became idle, if it was idle when the report came.
    idle_since: Option<Time>,
    /// `listener_ran_job` before the report.
    ran_job: bool,
}

/// A read-only summary of the core's view, for `status` and tests.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Snapshot {
    /// The core's clock when the snapshot was taken: every time below is on this timeline.
    pub now: Time,
    /// Last IMDS target state.
    pub target_state: Option<TargetState>,
    /// Last confirmed Auto Scaling state.
    pub confirmed_state: Option<AsgState>,
    /// Whether a job is assigned.
    pub job_alive: bool,
    /// Since when (job start, or idle start).
    pub job_or_idle_since: Time,
    /// Believed protection.
    pub protected: Option<bool>,
    /// Why it drains, if it does.
    pub draining: Option<DrainCause>,
    /// Next heartbeat, if one is scheduled.
    pub next_heartbeat: Option<Time>,
    /// When the hook's global timeout hits, if pending.
    pub global_deadline: Option<Time>,
    /// Last Auto Scaling error.
    pub last_error: Option<String>,
    /// The next timer to come due, and which one it is.
    pub next_timer: Option<(Time, Timer)>,
    /// What the core will do next: the main step.
    pub next_step: NextStep,
    /// Every area's next step: the plan `decide` carries out.
    pub plan: Plan,
    /// The listener, structured.
    pub listener_state: ListenerState,
    /// The hook phase, structured.
    pub hook_phase: HookPhase,
    /// Whether a termination hook is configured at all.
    pub hook_configured: bool,
    /// When the last heartbeat succeeded.
    pub last_heartbeat: Option<Time>,
    /// When `last_error` happened.
    pub last_error_at: Option<Time>,
    /// Auto Scaling calls asked for and not answered yet.
    pub in_flight: Vec<Call>,
    /// Calls that failed and wait for their retry, with the earliest retry time.
    pub retry_at: Vec<(Call, Time)>,
    /// When protection will be cleared if no job comes (an idle, protected, serving host).
    pub unprotect_at: Option<Time>,
    /// Why the core wants a DescribeAutoScalingInstances, if it does.
    pub describe_wanted: Option<DescribeReason>,
    /// Whether a stop was requested (SIGTERM).
    pub stop_requested: bool,
    /// Whether the stop is forced (second request or the stop deadline).
    pub forced: bool,
    /// When the stop will be forced (`drain.stop_deadline`), if it will.
    pub force_at: Option<Time>,
    /// Whether the core has asked the driver to exit.
    pub exited: bool,
    /// Whether the instance is known to be in no Auto Scaling group (serving without protection).
    pub not_in_group: bool,
    /// Just-in-time mode: whether a fresh config is held for the next listener (`None` in other modes).
    pub jit_config_held: Option<bool>,
    /// When the listener's perf log showed a job message that has no worker yet.
    pub job_message_at: Option<Time>,
}

/// The decision core for one host.
#[derive(Debug)]
pub struct Host {
    cfg: CoreConfig,
    rng: Rng,
    now: Time,

    // What Auto Scaling says.
    target: Option<TargetState>,
    confirmed: Option<AsgState>,
    not_in_group: bool,
    imds_failing_since: Option<Time>,
    terminating: Option<Detection>,
    describe: CallSlot,
    next_describe_poll: Option<Time>,

    // What the runner does.
    listener: ListenerState,
    workers: BTreeSet<u32>,
    hook_job_open: bool,
    /// The open hook report is not backed by a worker yet.
    hook_claim: Option<HookClaim>,
    /// A claim was dropped and no worker has been seen since: later unbacked reports are ignored
    /// (one protect/unprotect pair per forgery streak, not one per report).
    hooks_distrusted: bool,
    /// Set when a claim is dropped: the idle time to restore once the job edge has been tracked.
    restore_idle_since: Option<Time>,
    job_alive: bool,
    job_edge_at: Time,
    /// The current job has been reported lost (`Notice::JobLost`): once per job.
    job_lost: bool,
    listener_ran_job: bool,
    relaunch_streak: u32,
    /// Just-in-time mode: the driver holds an unused config for the next listener.
    jit_held: bool,
    jit: CallSlot,
    /// The current listener's handover guard.
    handover: Handover,
    /// The stop of the idle listener waits for the driver's last look.
    confirming: Option<PendingStop>,
    /// The batch being applied carries a sign of a job (a worker start or a job message).
    job_sign_in_batch: bool,
    release: CallSlot,
    /// One instance per job: TerminateInstanceInAutoScalingGroup, and whether the group accepted it.
    leave: CallSlot,
    left_group: bool,

    // Drain.
    drain: Option<DrainCause>,
    force_at: Option<Time>,
    forced: bool,
    stop_requested: bool,
    exited: bool,

    // Protection.
    protected: Option<bool>,
    protection: CallSlot,
    protection_target: Option<bool>,

    // Termination hook.
    hook: HookPhase,
    heartbeat: CallSlot,
    next_heartbeat: Option<Time>,
    complete: CallSlot,
    warned_global: bool,

    last_heartbeat: Option<Time>,
    last_error: Option<String>,
    last_error_at: Option<Time>,
    next_id: u64,
    inflight: BTreeMap<RequestId, Call>,
    actions: VecDeque<Action>,
}

impl Host {
    /// A core for a host that has just started (or restarted) at `now`. `seed` drives retry and
    /// heartbeat jitter.
    pub fn new(cfg: CoreConfig, seed: u64, now: Time) -> Host {
        Host {
            cfg,
            rng: Rng::new(seed),
            now,
            target: None,
            confirmed: None,
            not_in_group: false,
            imds_failing_since: None,
            terminating: None,
            describe: CallSlot::default(),
            next_describe_poll: None,
            listener: ListenerState::Down { relaunch_at: Some(now) },
            workers: BTreeSet::new(),
            hook_job_open: false,
            hook_claim: None,
            hooks_distrusted: false,
            restore_idle_since: None,
            job_alive: false,
            job_edge_at: now,
            job_lost: false,
            listener_ran_job: false,
            relaunch_streak: 0,
            jit_held: false,
            jit: CallSlot::default(),
            handover: Handover::default(),
            confirming: None,
            job_sign_in_batch: false,
            release: CallSlot::default(),
            leave: CallSlot::default(),
            left_group: false,
            drain: None,
            force_at: None,
            forced: false,
            stop_requested: false,
            exited: false,
            protected: None,
            protection: CallSlot::default(),
            protection_target: None,
            hook: HookPhase::None,
            heartbeat: CallSlot::default(),
            next_heartbeat: None,
            complete: CallSlot::default(),
            warned_global: false,
            last_heartbeat: None,
            last_error: None,
            last_error_at: None,
            next_id: 0,
            inflight: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// The configuration this core runs with.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Whether a job is assigned right now, as far as the core knows.
    pub fn job_alive(&self) -> bool {
        self.job_alive
    }

    /// The hook phase.
    pub fn hook_phase(&self) -> HookPhase {
        self.hook
    }

    /// The listener as the core sees it.
    pub fn listener(&self) -> &ListenerState {
        &self.listener
    }

    /// Believed scale-in protection (`None` until a call or a describe tells).
    pub fn protected(&self) -> Option<bool> {
        self.protected
    }

    /// Why the host drains, if it does.
    pub fn draining(&self) -> Option<DrainCause> {
        self.drain
    }

    /// Whether the core has asked the driver to exit.
    pub fn has_exited(&self) -> bool {
        self.exited
    }

    /// Feed one observation.
    pub fn handle_input(&mut self, input: Input, now: Time) {
        self.handle_inputs([input], now);
    }

    /// Feed observations made together (one `/proc` scan: a worker's exit and the next worker's
    /// start), then decide once. Deciding after each would act on a state that never existed: a
    /// persistent listener seen with no worker between job A's exit and job B's start in the same
    /// scan would be signalled, and B cancelled.
    pub fn handle_inputs(&mut self, inputs: impl IntoIterator<Item = Input>, now: Time) {
        self.advance(now);
        self.job_sign_in_batch = false;
        for input in inputs {
            self.apply(input);
        }
        self.decide();
    }

    fn apply(&mut self, input: Input) {
        match input {
            Input::TargetState(state) => self.on_target_state(state),
            Input::ImdsUnavailable => {
                self.imds_failing_since.get_or_insert(self.now);
            }
            Input::SpotInterruption => self.start_drain(DrainCause::SpotInterruption),
            Input::RebalanceRecommendation => {
                self.notify(Notice::RebalanceRecommended);
                if self.cfg.drain_on_rebalance {
                    self.start_drain(DrainCause::Rebalance);
                }
            }
            Input::ListenerStarted { pid } => self.on_listener_started(pid),
            Input::ListenerExited { code } => self.on_listener_exited(code),
            Input::WorkerStarted { pid } => {
                // SIGINT went to the listener before this worker was seen: the listener cancels its
                // job as part of its shutdown (lost in the stop window).
                if matches!(self.listener, ListenerState::Stopping { forced: false, .. }) {
                    self.job_lost(JobLoss::StopWindow);
                }
                self.workers.insert(pid);
                self.job_sign_in_batch = true;
                self.listener_ran_job = true;
                // The message it carried out is landed: the latch has done its work.
                self.handover.message_at = None;
                // A worker backs any open report, and restores trust in the next ones.
                self.hook_claim = None;
                self.hooks_distrusted = false;
            }
            Input::WorkerExited { pid } => {
                self.workers.remove(&pid);
                // The worker is the job: once none is left, a started-hook report whose completed-hook
                // never came (the job crashed, or the hook is not configured) is over too.
                if self.workers.is_empty() {
                    self.hook_job_open = false;
                }
            }
            Input::ListenerLooked { pid } => self.on_listener_looked(pid),
            Input::JobMessageReceived => {
                self.job_sign_in_batch = true;
                self.on_job_message();
            }
            Input::JobStartedHook => self.on_job_started_hook(),
            Input::JobCompletedHook => {
                self.hook_job_open = false;
                if let Some(claim) = self.hook_claim.take() {
                    self.drop_claim(claim);
                }
            }
            Input::StopRequested => self.on_stop_requested(),
            Input::ApiResult { id, result } => self.on_api_result(id, result),
        }
    }

    /// Let time pass to `now` (call when `poll_timeout` comes due; calling early is harmless).
    pub fn handle_timeout(&mut self, now: Time) {
        self.advance(now);
        self.decide();
    }

    /// The next side effect to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should be called next. Always later than the last `now`.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_timer().map(|(t, _)| t)
    }

    /// The next timer to come due, and which one: the earliest armed timer later than the last
    /// `now` (ties go to the first in [`Timer::ALL`]).
    pub fn next_timer(&self) -> Option<(Time, Timer)> {
        let mut next: Option<(Time, Timer)> = None;
        for timer in Timer::ALL {
            if let Some(t) = self.timer(timer).filter(|t| *t > self.now) {
                if next.is_none_or(|(n, _)| t < n) {
                    next = Some((t, timer));
                }
            }
        }
        next
    }

    /// When `timer` is armed for, if it is (possibly already due).
    pub fn timer(&self, timer: Timer) -> Option<Time> {
        match timer {
            Timer::ForceStop => self.force_at,
            Timer::Retry(call) => self.slot(call).not_before,
            Timer::DescribePoll => self.next_describe_poll,
            Timer::ImdsDown => self.imds_failing_since.map(|t| t + self.cfg.imds_down_after),
            Timer::ListenerRelaunch => match self.listener {
                ListenerState::Down { relaunch_at } => relaunch_at,
                _ => None,
            },
            Timer::ListenerKill => match self.listener {
                ListenerState::Stopping { kill_at, .. } => kill_at,
                _ => None,
            },
            // The planned steps' own times.
            Timer::Unprotect => self.protection_step().filter(|p| !p.protect).map(|p| p.at),
            Timer::Heartbeat => match self.hook_step() {
                Some(HookStep::Heartbeat { at, .. }) => at,
                _ => None,
            },
            Timer::GlobalTimeoutWarning => self
                .heartbeat_pending()
                .map(|global_deadline| global_deadline - self.cfg.global_timeout_warning),
            Timer::HookClaimExpiry => self.hook_claim.map(|c| c.drop_at),
            Timer::HandoverHold => match self.listener_step() {
                Some(ListenerStep::Hold { until, .. }) => until,
                _ => self.handover.message_at.map(|t| t + self.cfg.handover.bound),
            },
        }
    }

    /// The lifecycle action's global deadline while it waits on a running job (heartbeats due).
    fn heartbeat_pending(&self) -> Option<Time> {
        match self.hook {
            HookPhase::Pending { global_deadline, .. } if self.job_alive || self.stop_held() => Some(global_deadline),
            _ => None,
        }
    }

    /// When an idle host's scale-in protection is to be cleared: the one statement of that rule.
    /// `None` while a job runs, when it is not protected, or when protection does not apply (not
    /// serving, in no group, terminating). A drain wants it cleared at once (the idle start).
    fn unprotect_at(&self) -> Option<Time> {
        let applies = self.protection_applies();
        if !applies || self.job_alive || self.protected == Some(false) {
            return None;
        }
        Some(match self.drain {
            Some(_) => self.job_edge_at,
            None => self.job_edge_at + self.cfg.unprotect_delay,
        })
    }

    /// Whether scale-in protection may be changed: it is only valid InService/Standby
    /// (SetInstanceProtection API reference), and on a terminating instance it no longer matters:
    /// the hook holds the instance.
    fn protection_applies(&self) -> bool {
        let valid = self.confirmed.as_ref().is_some_and(AsgState::protection_valid);
        valid && !self.not_in_group && self.terminating.is_none()
    }

    /// A summary of the current view.
    pub fn snapshot(&self) -> Snapshot {
        let plan = self.plan();
        let global_deadline = match self.hook {
            HookPhase::Pending { global_deadline, .. } => Some(global_deadline),
            HookPhase::None | HookPhase::Done => None,
        };
        let retry_at = [
            Call::SetProtection,
            Call::Describe,
            Call::Heartbeat,
            Call::Complete,
            Call::MintJitConfig,
            Call::LeaveGroup,
        ]
        .into_iter()
        .filter_map(|c| match self.progress(c) {
            Some(CallProgress::RetryAt(t)) => Some((c, t)),
            _ => None,
        })
        .collect();
        Snapshot {
            now: self.now,
            target_state: self.target.clone(),
            confirmed_state: self.confirmed.clone(),
            job_alive: self.job_alive,
            job_or_idle_since: self.job_edge_at,
            protected: self.protected,
            draining: self.drain,
            next_heartbeat: if self.job_alive { self.next_heartbeat } else { None },
            global_deadline,
            last_error: self.last_error.clone(),
            next_timer: self.next_timer(),
            next_step: self.next_step_of(&plan),
            plan,
            listener_state: self.listener.clone(),
            hook_phase: self.hook,
            hook_configured: self.cfg.hook.is_some(),
            last_heartbeat: self.last_heartbeat,
            last_error_at: self.last_error_at,
            in_flight: self.inflight.values().copied().collect(),
            retry_at,
            // While draining the protection is cleared at once, not at a time worth showing.
            unprotect_at: self.unprotect_at().filter(|_| self.drain.is_none()),
            describe_wanted: self.describe_reason(),
            stop_requested: self.stop_requested,
            forced: self.forced,
            force_at: self.force_at,
            exited: self.exited,
            not_in_group: self.not_in_group,
            jit_config_held: (self.cfg.listener_mode == ListenerMode::Jit).then_some(self.jit_held),
            job_message_at: self.handover.message_at,
        }
    }

    // ----- what comes next -----

    /// Where a call stands: in flight, or failed and waiting for its retry.
    fn progress(&self, call: Call) -> Option<CallProgress> {
        let slot = self.slot(call);
        if slot.inflight.is_some() {
            Some(CallProgress::InFlight)
        } else {
            slot.not_before.filter(|t| *t > self.now).map(CallProgress::RetryAt)
        }
    }

    /// What the core will do next, typed (the agent's `status` words it): the main step of the
    /// [`Plan`], read from it.
    pub fn next_step(&self) -> NextStep {
        self.next_step_of(&self.plan())
    }

    /// The main step of `plan` (this pass's [`Host::plan`]).
    fn next_step_of(&self, plan: &Plan) -> NextStep {
        if self.exited {
            return NextStep {
                describe: None,
                step: Some(Step::Exited),
            };
        }
        let (describe, step) = match self.drain {
            Some(cause) => (plan.describe, self.draining_step(plan, cause)),
            None => self.serving_step(plan),
        };
        NextStep { describe, step }
    }

    fn describe_step(&self) -> Option<DescribeStep> {
        let reason = self.describe_reason()?;
        let when = match self.progress(Call::Describe) {
            Some(p) => DescribeWhen::Call(p),
            None => match self
                .next_describe_poll
                .filter(|t| self.describe_is_poll(reason) && *t > self.now)
            {
                Some(t) => DescribeWhen::PollAt(t),
                None => DescribeWhen::DueNow,
            },
        };
        Some(DescribeStep { reason, when })
    }

    fn serving_step(&self, plan: &Plan) -> (Option<DescribeStep>, Option<Step>) {
        let describe = plan.describe;
        match self.listener {
            ListenerState::Running { .. } => (describe, Some(self.serving_running(plan))),
            ListenerState::Starting => (None, Some(Step::StartListener)),
            ListenerState::Stopping { .. } => (None, Some(Step::WaitListenerExit)),
            ListenerState::Down { relaunch_at: None } => (None, Some(Step::ListenerGaveUp)),
            ListenerState::Down { relaunch_at: Some(_) } => {
                let step = if describe.is_some() {
                    return (describe, None);
                } else if let Some(fetch) = plan.fetch {
                    Step::AwaitJitConfig(fetch.progress)
                } else {
                    match plan.listener {
                        Some(ListenerStep::Start { at, .. }) if at > self.now => Step::Relaunch { at },
                        Some(ListenerStep::Start { .. }) => Step::StartListener,
                        _ => Step::AwaitInService,
                    }
                };
                (None, Some(step))
            }
        }
    }

    fn serving_running(&self, plan: &Plan) -> Step {
        let call = self.progress(Call::SetProtection);
        if self.job_alive {
            let protection = match (self.protected, call) {
                _ if self.not_in_group => JobProtection::NotInGroup,
                (_, Some(p)) => JobProtection::Call(p),
                (Some(true), None) => JobProtection::Protected,
                (_, None) => JobProtection::NotYet,
            };
            Step::JobRunning { protection }
        } else if let Some(ProtectionStep {
            protect: false,
            at,
            progress,
            ..
        }) = plan.protection
        {
            Step::Unprotect { at, progress }
        } else if let Some(p) = call {
            Step::IdleProtectionCall(p)
        } else {
            Step::Idle
        }
    }

    /// What is left after the listener stops, for a draining host.
    fn after_stop(&self, cause: DrainCause) -> AfterStop {
        let complete_hook = self.cfg.hook.is_some()
            && match self.hook {
                HookPhase::Pending { .. } => true,
                HookPhase::None => matches!(cause, DrainCause::Terminating | DrainCause::JobDone) && !self.not_in_group,
                HookPhase::Done => false,
            };
        AfterStop {
            complete_hook,
            exit: self.stop_requested,
        }
    }

    fn draining_step(&self, plan: &Plan, cause: DrainCause) -> Option<Step> {
        let then = self.after_stop(cause);
        if self.job_alive {
            return Some(match self.listener {
                ListenerState::Stopping { forced: true, .. } => Step::CancellingJob,
                ListenerState::Stopping { kill_at: None, .. } => Step::ListenerKilled {
                    then: AfterStop::default(),
                },
                ListenerState::Stopping { .. } => Step::JobInStopWindow,
                _ => Step::WaitForJob {
                    then,
                    heartbeat: match plan.hook {
                        Some(HookStep::Heartbeat { progress: Some(p), .. }) => Some(HeartbeatWhen::Call(p)),
                        Some(HookStep::Heartbeat { at, .. }) => at.map(HeartbeatWhen::At),
                        _ => None,
                    },
                    force_at: self.force_at.filter(|_| !self.forced),
                },
            });
        }
        Some(match self.listener {
            ListenerState::Running { .. } => match plan.listener {
                Some(ListenerStep::Hold { reason, until }) => Step::HoldStop { reason, until, then },
                Some(ListenerStep::Release(_)) => Step::HoldStop {
                    reason: HoldReason::Releasing,
                    until: None,
                    then,
                },
                _ => Step::StopIdleListener { then },
            },
            ListenerState::Starting => Step::WaitStartThenStop { then },
            ListenerState::Stopping { kill_at: None, .. } => Step::ListenerKilled { then },
            ListenerState::Stopping {
                kill_at: Some(kill_at), ..
            } => Step::WaitIdleExit { kill_at, then },
            ListenerState::Down { .. } if plan.describe.is_some() => return None,
            ListenerState::Down { .. } => self.drained(plan, cause),
        })
    }

    /// A drained host: the listener is down and no job runs.
    fn drained(&self, plan: &Plan, cause: DrainCause) -> Step {
        if let Some(HookStep::Complete { progress, .. }) = plan.hook {
            return Step::CompleteHook(progress);
        }
        match (plan.exit, plan.leave) {
            (Some(ExitStep::AfterUnprotect), _) => Step::UnprotectBeforeExit(self.progress(Call::SetProtection)),
            (Some(_), _) => Step::Exiting,
            (
                None,
                Some(LeaveStep {
                    unprotect_first: true, ..
                }),
            ) => Step::UnprotectBeforeLeave(self.progress(Call::SetProtection)),
            (None, Some(LeaveStep { progress, .. })) => Step::LeaveGroup(progress),
            (None, None) => Step::Drained {
                cause,
                hook_completed: self.hook == HookPhase::Done,
                hook_configured: self.cfg.hook.is_some(),
            },
        }
    }

    // ----- inputs -----

    fn advance(&mut self, now: Time) {
        // Time never runs backwards for the core, whatever the driver's clock does.
        self.now = self.now.max(now);
        if self.force_at.is_some_and(|t| t <= self.now) && !self.forced {
            self.forced = true;
        }
    }

    fn on_target_state(&mut self, state: TargetState) {
        self.imds_failing_since = None;
        match state {
            TargetState::NotInGroup => self.mark_not_in_group(),
            // A group state after a 404 (a metadata blip, or AttachInstances) proves membership again:
            // a sticky "not in a group" would hide the termination that follows.
            TargetState::InService | TargetState::Standby | TargetState::Warmed(_) => self.not_in_group = false,
            TargetState::Terminated => {
                self.not_in_group = false;
                self.detect_termination(Detection::Imds);
            }
            TargetState::Detached | TargetState::Other(_) => {}
        }
        self.target = Some(state);
    }

    fn mark_not_in_group(&mut self) {
        if !self.not_in_group {
            self.not_in_group = true;
            self.notify(Notice::NotInGroup);
        }
    }

    fn detect_termination(&mut self, via: Detection) {
        if self.terminating.is_none() {
            self.terminating = Some(via);
            self.notify(Notice::TerminationDetected { via });
        }
        self.start_drain(DrainCause::Terminating);
    }

    fn start_drain(&mut self, cause: DrainCause) {
        if self.drain.is_none() {
            self.drain = Some(cause);
            self.notify(Notice::DrainStarted { cause });
        }
    }

    fn on_stop_requested(&mut self) {
        if self.stop_requested {
            self.forced = true;
            return;
        }
        self.stop_requested = true;
        self.force_at = self.cfg.stop_deadline.map(|d| self.now + d);
        self.start_drain(DrainCause::StopRequested);
    }

    /// A `job-started` report is a hint: anything that runs as the runner's user can send one. The
    /// started hook runs as a step of the job inside `Runner.Worker` (actions/runner
    /// src/Runner.Worker/JobExtension.cs), so a genuine report always has a worker already; without
    /// one seen, the report holds the job open only for `hook_grace` (the driver's `/proc` lag).
    fn on_job_started_hook(&mut self) {
        if !self.workers.is_empty() {
            self.hook_job_open = true;
            self.listener_ran_job = true;
            return;
        }
        if self.hooks_distrusted {
            self.notify(Notice::HookClaimDropped);
            return;
        }
        if self.hook_claim.is_none() {
            self.hook_claim = Some(HookClaim {
                drop_at: self.now + self.cfg.hook_grace,
                idle_since: (!self.job_alive).then_some(self.job_edge_at),
                ran_job: self.listener_ran_job,
            });
        }
        self.hook_job_open = true;
        self.listener_ran_job = true;
    }

    /// Forget an unbacked report: the job it opened is closed, and the idle time and one-job state it
    /// changed are restored (so protection is cleared when it would have been without the report).
    fn drop_claim(&mut self, claim: HookClaim) {
        self.hook_job_open = false;
        self.listener_ran_job = claim.ran_job;
        self.restore_idle_since = claim.idle_since;
        self.hooks_distrusted = true;
        self.notify(Notice::HookClaimDropped);
    }

    fn on_listener_started(&mut self, pid: u32) {
        self.confirming = None;
        match self.listener {
            // Found running while we want it stopped: keep the stop going, with a fresh grace.
            ListenerState::Stopping { forced, .. } => {
                self.listener = ListenerState::Stopping {
                    pid,
                    kill_at: Some(self.now + self.cfg.stop_grace),
                    forced,
                };
            }
            _ => {
                self.listener = ListenerState::Running { pid, since: self.now };
                self.listener_ran_job = false;
                self.handover = Handover::default();
            }
        }
    }

    fn on_listener_exited(&mut self, code: Option<i32>) {
        let was = std::mem::replace(&mut self.listener, ListenerState::Down { relaunch_at: None });
        self.confirming = None;
        // A one-job or JIT listener exits 0 only once its job has completed (Runner.cs: the one-job
        // loop returns Success after the job's completion): its worker's exit may simply not have
        // been seen yet (the next /proc scan is up to `runner.worker_poll` away). Not a loss.
        let finished_its_job = code == Some(0) && self.cfg.listener_mode != ListenerMode::Persistent;
        // Otherwise its workers die with it (they lose their channel to the listener): the job, if
        // any, is over.
        if self.job_alive && !finished_its_job && !matches!(was, ListenerState::Stopping { forced: true, .. }) {
            self.notify(Notice::ListenerDiedWithJob);
            self.job_lost(JobLoss::ListenerDied);
        }
        self.workers.clear();
        self.hook_job_open = false;
        self.hook_claim = None;
        let ghost = std::mem::take(&mut self.handover).replacing_ghost;
        if ghost && self.drain.is_none() {
            // A fresh registration at once (no streak: the ghost was GitHub's doing, not a crash).
            self.listener = ListenerState::Down {
                relaunch_at: Some(self.now),
            };
            return;
        }

        if matches!(was, ListenerState::Stopping { .. }) || self.drain.is_some() {
            return; // we stopped it, or we are draining: it stays down.
        }
        // One instance per job: its job done, the host starts nothing more and leaves the group.
        if self.one_job_per_instance() && code == Some(0) && self.listener_ran_job {
            self.start_drain(DrainCause::JobDone);
            return;
        }
        let ran_long =
            matches!(was, ListenerState::Running { since, .. } if self.now.since(since) >= Duration::from_secs(300));
        if self.listener_ran_job || ran_long {
            self.relaunch_streak = 0;
        }
        // Exit codes from actions/runner src/Misc/layoutbin/RunnerService.js: 0, 1 and 5 stop the
        // service; 2 (retryable), 3 and 4 (updating) and anything unknown relaunch after 5 s, at most 10
        // times in a row.
        let relaunch_at = match (self.cfg.listener_mode, code) {
            (ListenerMode::OneJob, Some(0)) if self.listener_ran_job => {
                self.push(Action::StartListener {
                    reason: StartReason::NextJob,
                });
                self.listener = ListenerState::Starting;
                return;
            }
            // Its one job done, a JIT listener exits 0 and its registration is gone: the next one
            // starts as soon as its config is held (usually already, fetched while the job ran).
            (ListenerMode::Jit, Some(0)) if self.listener_ran_job => Some(self.now),
            (ListenerMode::Persistent | ListenerMode::OneJob, Some(0 | 1 | 5)) => None,
            // Any other exit, and in JIT mode also 1 (config refused) and 5 (session conflict): a
            // fresh config and a new listener after the relaunch delay, a bounded number of times.
            _ => {
                self.relaunch_streak += 1;
                (self.relaunch_streak <= self.cfg.relaunch_limit).then(|| self.now + self.cfg.relaunch_delay)
            }
        };
        if relaunch_at.is_none() {
            self.notify(Notice::ListenerGaveUp { code });
        }
        self.listener = ListenerState::Down { relaunch_at };
    }

    fn on_api_result(&mut self, id: RequestId, result: Result<ApiReply, ApiError>) {
        // An answer to a request this core never made (a restarted agent, a confused driver) is ignored.
        let Some(call) = self.inflight.remove(&id) else { return };
        match call {
            Call::Describe => self.on_describe_result(result),
            Call::SetProtection => self.on_protection_result(result),
            Call::Heartbeat => self.on_heartbeat_result(result),
            Call::Complete => self.on_complete_result(result),
            Call::MintJitConfig => self.on_jit_result(result),
            Call::ReleaseRunner => self.on_release_result(id, result),
            Call::LeaveGroup => self.on_leave_result(result),
        }
    }

    /// The controller's answer to the release of the listener's registration.
    fn on_release_result(&mut self, id: RequestId, result: Result<ApiReply, ApiError>) {
        self.release.inflight = None;
        // Meant for a listener that has gone since: nothing to do.
        if self.handover.release != ReleaseState::Asked(id) {
            return;
        }
        let bound = self.cfg.handover.bound;
        self.handover.release = match result {
            Ok(ApiReply::Released(outcome)) => {
                self.notify(Notice::RunnerReleased { outcome });
                let landing = |reason| ReleaseState::Landing {
                    reason,
                    until: self.now + bound,
                };
                let watch_until = self.now + self.cfg.handover.release_watch;
                match outcome {
                    Release::Removed => ReleaseState::Removed { watch_until },
                    Release::Busy => landing(HoldReason::RegistrationBusy),
                    Release::NotFound if self.cfg.handover.latch => ReleaseState::NotFound { watch_until },
                    Release::NotFound => landing(HoldReason::RegistrationNotFound),
                }
            }
            Ok(_) => {
                self.release_failed(unexpected_reply());
                ReleaseState::Failed
            }
            Err(e) => {
                self.release_failed(e);
                ReleaseState::Failed
            }
        };
    }

    /// A release that could not be made is not retried: the drain falls back to the perf-log latch
    /// and the last look (the design before the release), rather than wait on an outage.
    fn release_failed(&mut self, error: ApiError) {
        self.last_error = Some(error.to_string());
        self.last_error_at = Some(self.now);
        self.notify(Notice::ApiFailed {
            call: Call::ReleaseRunner,
            error,
            retry_in_ms: 0,
        });
    }

    /// Report a hold once per reason (not once per pass, nor once per forged line).
    fn note_hold(&mut self, reason: HoldReason, until: Option<Time>) {
        if self.handover.held_for == Some(reason) {
            return;
        }
        self.handover.held_for = Some(reason);
        let for_ms = until.map_or(0, |t| u64::try_from(t.since(self.now).as_millis()).unwrap_or(u64::MAX));
        self.notify(Notice::StopHeld { reason, for_ms });
    }

    /// When the listener's perf log showed a job message that has no worker yet (for the driver's
    /// logging: a repeated line says nothing new).
    pub fn job_message_at(&self) -> Option<Time> {
        self.handover.message_at
    }

    /// A job message reached the listener (its perf log). It only ever holds a stop, and only the
    /// first line of a streak counts.
    fn on_job_message(&mut self) {
        let listening = matches!(self.listener, ListenerState::Running { .. } | ListenerState::Starting);
        // While a worker runs, the listener takes no job message (a one-job listener polls only for
        // its job's cancellation; a persistent one's next message comes after the worker exits): a
        // line now is an old one read late, or forged.
        if !listening || !self.cfg.handover.latch || self.handover.message_at.is_some() || !self.workers.is_empty() {
            return;
        }
        if self.drain.is_some() && self.handover.latch_spent {
            return;
        }
        self.handover.message_at = Some(self.now);
    }

    fn on_jit_result(&mut self, result: Result<ApiReply, ApiError>) {
        self.jit.inflight = None;
        match result {
            Ok(_) => {
                self.jit.failures = 0;
                self.jit_held = true;
            }
            Err(e) => self.retry_later(Call::MintJitConfig, e),
        }
    }

    /// The group's answer to this instance's termination (one instance per job).
    fn on_leave_result(&mut self, result: Result<ApiReply, ApiError>) {
        self.leave.inflight = None;
        match result {
            Ok(_) => {
                self.leave.failures = 0;
                self.left_group = true;
                self.notify(Notice::LeftGroup);
            }
            // In no group after all: nothing to leave; the host exits.
            Err(e) if e.kind == ApiErrorKind::InstanceNotFound => {
                self.last_error = Some(e.to_string());
                self.last_error_at = Some(self.now);
                self.mark_not_in_group();
            }
            Err(e) => self.retry_later(Call::LeaveGroup, e),
        }
    }

    fn on_describe_result(&mut self, result: Result<ApiReply, ApiError>) {
        self.describe.inflight = None;
        let described = match result {
            Ok(ApiReply::Described(d)) => d,
            Ok(ApiReply::Done | ApiReply::Released(_)) => return self.retry_later(Call::Describe, unexpected_reply()),
            Err(e) => return self.retry_later(Call::Describe, e),
        };
        self.describe.failures = 0;
        let Some(instance) = described else {
            // In no group: never was (serve without Auto Scaling), or already removed (nothing to complete).
            self.mark_not_in_group();
            if matches!(self.hook, HookPhase::Pending { .. }) {
                self.hook = HookPhase::Done;
            }
            return;
        };
        self.not_in_group = false;
        if self.confirmed.as_ref() != Some(&instance.state) {
            self.notify(Notice::StateConfirmed {
                state: instance.state.clone(),
            });
        }
        self.protected = Some(instance.protected);
        match &instance.state {
            AsgState::TerminatingWait => {
                self.detect_termination(Detection::Describe);
                if self.cfg.hook.is_some() && self.hook == HookPhase::None {
                    let since = self.now;
                    let global = self.cfg.hook.as_ref().map_or(Duration::ZERO, |h| h.global_timeout());
                    self.hook = HookPhase::Pending {
                        since,
                        global_deadline: since + global,
                    };
                    self.next_heartbeat = None;
                }
            }
            AsgState::TerminatingProceed(_) => {
                self.detect_termination(Detection::Describe);
                // Past the wait: our hook was completed (by us before a restart, or by someone else), or
                // there is none. Either way there is nothing left to complete.
                if self.hook != HookPhase::Done && self.cfg.hook.is_some() {
                    self.hook = HookPhase::Done;
                }
            }
            _ => {}
        }
        if self.terminating.is_some() && !instance.state.is_terminating() {
            // IMDS runs ahead of the API (eventual consistency): confirm again soon, with backoff.
            self.describe.failures += 1;
            self.describe.not_before = Some(self.now + self.backoff(self.describe.failures, self.cfg.retry_cap));
        }
        // Polls (launching, IMDS down) repeat at their own slow pace; confirmations never wait for it.
        let poll = if self.imds_down() {
            self.imds_fallback_poll()
        } else {
            self.cfg.describe_poll
        };
        self.next_describe_poll = Some(self.now + poll);
        self.confirmed = Some(instance.state);
    }

    fn on_protection_result(&mut self, result: Result<ApiReply, ApiError>) {
        self.protection.inflight = None;
        let target = self.protection_target.take();
        match result {
            Ok(_) => {
                self.protection.failures = 0;
                self.protected = target;
            }
            Err(e) if e.kind == ApiErrorKind::NotInService => {
                // AWS refuses protection once the instance is terminating (SetInstanceProtection API
                // reference). The job goes on; the hook keeps it safe from here. The refusal proves
                // the instance is in a group, whatever IMDS said before.
                self.not_in_group = false;
                self.last_error = Some(e.to_string());
                self.last_error_at = Some(self.now);
                self.detect_termination(Detection::ProtectionRefused);
            }
            Err(e) => self.retry_later(Call::SetProtection, e),
        }
    }

    fn on_heartbeat_result(&mut self, result: Result<ApiReply, ApiError>) {
        self.heartbeat.inflight = None;
        match result {
            Ok(_) => {
                self.heartbeat.failures = 0;
                self.last_heartbeat = Some(self.now);
                self.schedule_heartbeat();
            }
            Err(e) if e.kind == ApiErrorKind::NoActiveLifecycleAction => {
                self.hook = HookPhase::Done;
                self.notify(Notice::HookGone);
            }
            Err(e) => self.retry_later(Call::Heartbeat, e),
        }
    }

    fn on_complete_result(&mut self, result: Result<ApiReply, ApiError>) {
        self.complete.inflight = None;
        match result {
            Ok(_) => {
                self.hook = HookPhase::Done;
                self.notify(Notice::HookCompleted { already_done: false });
            }
            Err(e) if e.kind == ApiErrorKind::NoActiveLifecycleAction => {
                self.hook = HookPhase::Done;
                self.notify(Notice::HookCompleted { already_done: true });
            }
            Err(e) => self.retry_later(Call::Complete, e),
        }
    }

    /// The one heartbeat schedule: the next beat one interval (jittered down to 80 %) from now.
    /// Jitter spreads a fleet's heartbeats so a mass scale-in does not hit the shared API token
    /// bucket in lockstep.
    fn schedule_heartbeat(&mut self) {
        let interval = self
            .cfg
            .hook
            .as_ref()
            .map_or(Duration::from_secs(60), |h| h.heartbeat_interval());
        self.next_heartbeat = Some(self.now + self.rng.jitter(interval, 0.8, 1.0));
    }

    fn retry_later(&mut self, call: Call, error: ApiError) {
        let cap = if call == Call::Complete {
            self.cfg.complete_retry_cap
        } else {
            self.cfg.retry_cap
        };
        let slow = !error.kind.is_retryable_soon();
        let slot = self.slot_mut(call);
        slot.failures += 1;
        let failures = slot.failures;
        let delay = if slow {
            self.cfg.slow_retry
        } else {
            self.backoff(failures, cap)
        };
        // Never sooner than the service asked (its Retry-After), whatever the backoff says.
        let delay = delay.max(error.retry_after.unwrap_or_default());
        self.slot_mut(call).not_before = Some(self.now + delay);
        self.last_error = Some(error.to_string());
        self.last_error_at = Some(self.now);
        let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.notify(Notice::ApiFailed {
            call,
            error,
            retry_in_ms,
        });
    }

    /// Capped exponential backoff with "equal jitter": half fixed, half random, so a fleet retrying
    /// after a shared throttle spreads out (AWS Architecture Blog, "Exponential Backoff And Jitter").
    fn backoff(&mut self, failures: u32, cap: Duration) -> Duration {
        Backoff::new(self.cfg.retry_base, cap).delay(failures, &mut self.rng)
    }

    fn slot(&self, call: Call) -> &CallSlot {
        match call {
            Call::SetProtection => &self.protection,
            Call::Describe => &self.describe,
            Call::Heartbeat => &self.heartbeat,
            Call::Complete => &self.complete,
            Call::MintJitConfig => &self.jit,
            Call::ReleaseRunner => &self.release,
            Call::LeaveGroup => &self.leave,
        }
    }

    fn slot_mut(&mut self, call: Call) -> &mut CallSlot {
        match call {
            Call::SetProtection => &mut self.protection,
            Call::Describe => &mut self.describe,
            Call::Heartbeat => &mut self.heartbeat,
            Call::Complete => &mut self.complete,
            Call::MintJitConfig => &mut self.jit,
            Call::ReleaseRunner => &mut self.release,
            Call::LeaveGroup => &mut self.leave,
        }
    }

    // ----- decisions -----

    fn decide(&mut self) {
        if self.exited {
            return;
        }
        if let Some(claim) = self.hook_claim.filter(|c| c.drop_at <= self.now) {
            self.hook_claim = None;
            self.drop_claim(claim);
        }
        self.track_job_edges();
        self.expire_job_message();
        if let Some(idle_since) = self.restore_idle_since.take() {
            if !self.job_alive {
                self.job_edge_at = idle_since;
            }
        }
        self.decide_describe();
        self.decide_jit();
        self.decide_listener();
        self.decide_protection();
        self.decide_hook();
        self.decide_leave();
        self.decide_exit();
    }

    /// A job message that produced no worker within the bound is forgotten. During a drain of an
    /// idle listener that is the latch running out: the stop goes ahead, the job (if it was this
    /// listener's) is counted, and later lines are ignored for the rest of the drain.
    fn expire_job_message(&mut self) {
        let Some(at) = self.handover.message_at else { return };
        if self.now < at + self.cfg.handover.bound {
            return;
        }
        self.handover.message_at = None;
        let ListenerState::Running { pid, .. } = self.listener else {
            return;
        };
        if self.job_alive {
            return;
        }
        if self.drain.is_some() {
            self.handover.latch_spent = true;
            self.notify(Notice::JobLost {
                cause: JobLoss::HandoverTimeout,
            });
        } else if self.cfg.listener_mode == ListenerMode::Jit && !self.listener_ran_job {
            // A one-job registration that took a message and never ran it is a ghost: it will never
            // be assigned again. Replace it (SIGINT is safe: it runs nothing).
            self.handover.replacing_ghost = true;
            self.confirm_idle(pid, StopReason::Ghost);
        }
    }

    fn track_job_edges(&mut self) {
        let alive = !self.workers.is_empty() || self.hook_job_open;
        if alive == self.job_alive {
            return;
        }
        self.job_alive = alive;
        self.job_edge_at = self.now;
        if alive {
            self.notify(Notice::JobAssigned);
        } else {
            // A heartbeat is only ever due while a job runs: forget the schedule when it ends.
            self.next_heartbeat = None;
            self.job_lost = false;
            self.notify(Notice::JobEnded);
        }
    }

    /// The describe period while IMDS is down: slow, but never so slow that a scale-in missed by IMDS
    /// could outlive the hook's HeartbeatTimeout before we notice (found by simulation seed 116 with a
    /// 30 s HeartbeatTimeout: a 30 s poll noticed the wait 29.5 s in and the hook expired).
    fn imds_fallback_poll(&self) -> Duration {
        match &self.cfg.hook {
            Some(h) => self.cfg.imds_fallback_poll.min(h.heartbeat_timeout / 3),
            None => self.cfg.imds_fallback_poll,
        }
    }

    fn imds_down(&self) -> bool {
        self.imds_failing_since
            .is_some_and(|t| self.now.since(t) >= self.cfg.imds_down_after)
    }

    /// Whether a describe is wanted now, and why.
    fn describe_reason(&self) -> Option<DescribeReason> {
        if self.not_in_group || self.confirmed.as_ref().is_some_and(AsgState::is_terminating) {
            return None;
        }
        match self.terminating {
            Some(Detection::ProtectionRefused) => return Some(DescribeReason::ProtectionRefused),
            Some(_) => return Some(DescribeReason::ConfirmTermination),
            None => {}
        }
        if self.imds_down() {
            return Some(DescribeReason::ImdsDown);
        }
        let serving = self.confirmed.as_ref().is_some_and(AsgState::may_hold_runner);
        match self.target {
            // IMDS says InService already during Pending:Wait; only the API can tell when it is real.
            // A Standby host waits for IMDS to say InService again (AsgState::runner): no polls.
            Some(TargetState::InService | TargetState::Other(_)) if !serving => Some(DescribeReason::AwaitInService),
            _ => None,
        }
    }

    /// Whether a describe for `reason` waits for the slow poll period (IMDS down, or still
    /// launching after a first answer); confirmations never wait for it.
    fn describe_is_poll(&self, reason: DescribeReason) -> bool {
        reason == DescribeReason::ImdsDown || (reason == DescribeReason::AwaitInService && self.confirmed.is_some())
    }

    fn decide_describe(&mut self) {
        if let Some(DescribeStep {
            reason,
            when: DescribeWhen::DueNow,
        }) = self.describe_step()
        {
            let id = self.start_call(Call::Describe);
            self.push(Action::Describe { id, reason });
        }
    }

    /// Whether a listener may start or a config be fetched: the one rule of [`AsgState::runner`], with
    /// IMDS's `Standby` (going to or in standby) ahead of a confirmation that predates it.
    fn may_serve(&self) -> bool {
        self.drain.is_none()
            && self.target != Some(TargetState::Standby)
            && (self.not_in_group || self.confirmed.as_ref().is_some_and(AsgState::may_hold_runner))
    }

    /// Why an idle listener is stopped: the drain's cause.
    fn stop_reason(cause: DrainCause) -> StopReason {
        match cause {
            DrainCause::Terminating => StopReason::TerminatingIdle,
            DrainCause::StopRequested => StopReason::StopRequestedIdle,
            DrainCause::SpotInterruption => StopReason::SpotInterruptionIdle,
            DrainCause::Rebalance => StopReason::RebalanceIdle,
            // Never signalled: a job-done drain starts once the listener has exited.
            DrainCause::JobDone => StopReason::TerminatingIdle,
        }
    }

    /// The listener's next step: the one statement of when it starts, when it is stopped (after
    /// the last look), held, released, forced and killed.
    fn listener_step(&self) -> Option<ListenerStep> {
        match self.listener {
            ListenerState::Down { relaunch_at: Some(at) } if self.may_serve() && self.has_config() => {
                // A relaunch after a failed start counts in the streak; a JIT listener that ran its
                // job exited 0 and reset the streak: its successor is the next job's listener.
                let reason = if self.relaunch_streak > 0 {
                    StartReason::Relaunch
                } else if self.listener_ran_job {
                    StartReason::NextJob
                } else {
                    StartReason::Serving
                };
                Some(ListenerStep::Start { at, reason })
            }
            ListenerState::Running { pid, .. } if let Some(cause) = self.drain => {
                // The one rule everything else serves: SIGINT to a listener with a live worker cancels
                // the job (actions/runner src/Runner.Listener/Runner.cs shutdown path). Only an idle
                // listener is signalled, unless the stop is forced.
                if self.confirming.is_some() {
                    Some(ListenerStep::Confirming)
                } else if !self.job_alive {
                    Some(match self.idle_stop_gate() {
                        Some(StopGate::Stop) | None => ListenerStep::ConfirmThenStop {
                            pid,
                            reason: Self::stop_reason(cause),
                            // GitHub said a job is landing, and none came within the bound.
                            landing_lost: !self.forced && matches!(self.handover.release, ReleaseState::Landing { .. }),
                        },
                        Some(StopGate::Release) => ListenerStep::Release(self.progress(Call::ReleaseRunner)),
                        Some(StopGate::Hold { reason, until }) => ListenerStep::Hold { reason, until },
                    })
                } else if self.forced {
                    Some(ListenerStep::ForceStop { pid })
                } else {
                    None
                }
            }
            ListenerState::Stopping { pid, forced: false, .. } if self.forced && self.job_alive => {
                Some(ListenerStep::ForceStop { pid })
            }
            ListenerState::Stopping {
                kill_at: Some(at),
                forced,
                ..
            } => Some(ListenerStep::Kill {
                at,
                extend: self.job_alive && !forced,
            }),
            _ => None,
        }
    }

    fn decide_listener(&mut self) {
        let now = self.now;
        match self.listener_step() {
            Some(ListenerStep::Start { at, reason }) if at <= now => {
                self.jit_held = false;
                self.listener = ListenerState::Starting;
                self.push(Action::StartListener { reason });
            }
            Some(ListenerStep::ConfirmThenStop {
                pid,
                reason,
                landing_lost,
            }) => {
                if landing_lost {
                    self.notify(Notice::JobLost {
                        cause: JobLoss::HandoverTimeout,
                    });
                }
                self.confirm_idle(pid, reason);
            }
            Some(ListenerStep::Release(None)) => {
                let id = self.start_call(Call::ReleaseRunner);
                self.handover.release = ReleaseState::Asked(id);
                self.push(Action::ReleaseRunner { id });
            }
            // In flight, or waiting for its retry.
            Some(ListenerStep::Release(Some(_))) => {}
            Some(ListenerStep::Hold { reason, until }) => self.note_hold(reason, until),
            Some(ListenerStep::ForceStop { pid }) => {
                self.notify(Notice::ForcingStopWithJob);
                // A job in the stop window is already lost (and counted): the force changes nothing.
                self.job_lost(JobLoss::ForcedStop);
                self.force_stop(pid);
            }
            Some(ListenerStep::Kill { at, extend }) if at <= now => {
                let ListenerState::Stopping { pid, forced, .. } = self.listener else {
                    return;
                };
                if extend {
                    // A job landed in the stop window: the listener is cancelling it. Let it finish that.
                    self.listener = ListenerState::Stopping {
                        pid,
                        kill_at: Some(now + self.cfg.stop_grace),
                        forced,
                    };
                } else {
                    self.listener = ListenerState::Stopping {
                        pid,
                        kill_at: None,
                        forced,
                    };
                    self.push(Action::KillListener {
                        reason: KillReason::GraceExpired,
                    });
                }
            }
            _ => {}
        }
    }

    /// Whether the idle, running listener of a draining host may be signalled now (`None` when that
    /// is not the situation). The one statement of the handover rule (handover-window.md section 6):
    /// a job message without its worker holds the stop (the latch); then, for a JIT registration,
    /// GitHub is asked to delete it, and a refusal or a "not found" holds the stop for the worker,
    /// a deletion for a short watch. Every hold is bounded; a forced stop skips them all.
    fn idle_stop_gate(&self) -> Option<StopGate> {
        let idle_running =
            self.drain.is_some() && !self.job_alive && matches!(self.listener, ListenerState::Running { .. });
        if !idle_running {
            return None;
        }
        if self.forced {
            return Some(StopGate::Stop);
        }
        let guard = &self.cfg.handover;
        if let Some(at) = self.handover.message_at {
            return Some(StopGate::Hold {
                reason: HoldReason::JobMessage,
                until: Some(at + guard.bound),
            });
        }
        let hold = |reason, until: Time| {
            if self.now < until {
                StopGate::Hold {
                    reason,
                    until: Some(until),
                }
            } else {
                StopGate::Stop
            }
        };
        Some(match self.handover.release {
            ReleaseState::Asked(_) => StopGate::Hold {
                reason: HoldReason::Releasing,
                until: None,
            },
            ReleaseState::Removed { watch_until } => hold(HoldReason::WatchAfterRelease, watch_until),
            ReleaseState::NotFound { watch_until } => hold(HoldReason::RegistrationNotFound, watch_until),
            ReleaseState::Landing { reason, until } => hold(reason, until),
            // A JIT registration that ran its job is spent (the listener is exiting): nothing to release.
            ReleaseState::NotAsked
                if guard.release && self.cfg.listener_mode == ListenerMode::Jit && !self.listener_ran_job =>
            {
                StopGate::Release
            }
            ReleaseState::NotAsked | ReleaseState::Failed => StopGate::Stop,
        })
    }

    /// Whether the stop of an idle listener is being held (heartbeats keep the hook alive meanwhile:
    /// a hold may outlast a 30 s HeartbeatTimeout).
    fn stop_held(&self) -> bool {
        matches!(self.idle_stop_gate(), Some(StopGate::Hold { .. }))
    }

    /// Whether the next listener can start: always, except in JIT mode without a config held.
    fn has_config(&self) -> bool {
        self.cfg.listener_mode != ListenerMode::Jit || self.jit_held
    }

    /// JIT mode: fetch a config when the next listener will need one: now (none runs), or once the
    /// running one took its job. Never for a host that may not serve (launching, draining): a
    /// config minted for it would be a registration no listener uses.
    fn fetch_step(&self) -> Option<FetchStep> {
        if self.has_config() || !self.may_serve() {
            return None;
        }
        let reason = match self.listener {
            ListenerState::Down { relaunch_at: Some(_) } => FetchReason::NextListener,
            // One instance per job: this host runs no next listener.
            ListenerState::Running { .. } if self.listener_ran_job && !self.one_job_per_instance() => {
                FetchReason::Prefetch
            }
            _ => return None,
        };
        Some(FetchStep {
            reason,
            progress: self.progress(Call::MintJitConfig),
        })
    }

    fn decide_jit(&mut self) {
        if let Some(FetchStep { reason, progress: None }) = self.fetch_step() {
            let id = self.start_call(Call::MintJitConfig);
            self.push(Action::FetchJitConfig { id, reason });
        }
    }

    /// Stop an idle listener: first the driver's last look ([`Action::ConfirmIdle`]); its answer
    /// ([`Input::ListenerLooked`]) sends the stop or takes it back.
    fn confirm_idle(&mut self, pid: u32, reason: StopReason) {
        if self.confirming.is_none() {
            self.confirming = Some(PendingStop { pid, reason });
            self.push(Action::ConfirmIdle { pid, reason });
        }
    }

    /// The driver's last look is done. A worker or a job message in the same batch means a job was
    /// assigned in that instant: the stop is not sent (the listener counts as seen running from
    /// now) and the core decides again with the job known. Otherwise the stop goes out, before
    /// anything else queued: it is the second half of the action being carried out.
    fn on_listener_looked(&mut self, pid: u32) {
        let Some(stop) = self.confirming.filter(|s| s.pid == pid) else {
            return; // stale: another listener, or no stop waits
        };
        self.confirming = None;
        if !matches!(self.listener, ListenerState::Running { pid: p, .. } if p == pid) {
            return;
        }
        if self.job_sign_in_batch {
            self.listener = ListenerState::Running { pid, since: self.now };
            return;
        }
        self.listener = ListenerState::Stopping {
            pid,
            kill_at: Some(self.now + self.cfg.stop_grace),
            forced: false,
        };
        self.actions.push_front(Action::StopListener {
            reason: stop.reason,
            cancels_job: false,
        });
    }

    /// SIGINT now although a job runs (a second stop request or the stop deadline): the job is
    /// cancelled. The only stop that skips the last look.
    fn force_stop(&mut self, pid: u32) {
        self.listener = ListenerState::Stopping {
            pid,
            kill_at: Some(self.now + self.cfg.stop_grace),
            forced: true,
        };
        self.push(Action::StopListener {
            reason: StopReason::Forced,
            cancels_job: true,
        });
    }

    /// The change of scale-in protection the plan wants: set while a job runs, cleared at
    /// [`Host::unprotect_at`] when idle; only where protection applies.
    fn protection_step(&self) -> Option<ProtectionStep> {
        if !self.protection_applies() {
            return None;
        }
        let (protect, reason, at) = if self.job_alive {
            (true, ProtectReason::JobAssigned, self.job_edge_at)
        } else {
            (false, ProtectReason::Idle, self.unprotect_at()?)
        };
        if self.protected == Some(protect) {
            return None;
        }
        Some(ProtectionStep {
            protect,
            reason,
            at,
            progress: self.progress(Call::SetProtection),
        })
    }

    fn decide_protection(&mut self) {
        let Some(ProtectionStep {
            protect,
            reason,
            at,
            progress: None,
        }) = self.protection_step()
        else {
            return;
        };
        if at > self.now {
            return;
        }
        let id = self.start_call(Call::SetProtection);
        self.protection_target = Some(protect);
        self.push(Action::SetProtection { id, protect, reason });
    }

    /// The lifecycle hook's next step while its action waits: heartbeats while a job (or a held
    /// stop) keeps it waiting, else its completion once the listener is down.
    fn hook_step(&self) -> Option<HookStep> {
        let HookPhase::Pending { .. } = self.hook else {
            return None;
        };
        Some(match self.heartbeat_pending() {
            Some(global_deadline) => HookStep::Heartbeat {
                at: self.next_heartbeat,
                progress: self.progress(Call::Heartbeat),
                warn_global: !self.warned_global && self.now + self.cfg.global_timeout_warning >= global_deadline,
            },
            None => HookStep::Complete {
                listener_down: matches!(self.listener, ListenerState::Down { .. }),
                progress: self.progress(Call::Complete),
            },
        })
    }

    fn decide_hook(&mut self) {
        match self.hook_step() {
            Some(HookStep::Heartbeat {
                at,
                progress,
                warn_global,
            }) => {
                if let Some(global_deadline) = self.heartbeat_pending().filter(|_| warn_global) {
                    self.warned_global = true;
                    let remaining_ms = u64::try_from(global_deadline.since(self.now).as_millis()).unwrap_or(u64::MAX);
                    self.notify(Notice::GlobalTimeoutNear { remaining_ms });
                }
                if at.is_none() {
                    // The hook's timer started when the instance entered Terminating:Wait, at most
                    // the IMDS lag before we confirmed it; the first beat at one interval leaves two
                    // more chances.
                    self.schedule_heartbeat();
                }
                if self.next_heartbeat.is_some_and(|t| t <= self.now) && progress.is_none() {
                    let id = self.start_call(Call::Heartbeat);
                    self.push(Action::Heartbeat {
                        id,
                        reason: HeartbeatReason::JobRunning,
                    });
                }
            }
            Some(HookStep::Complete {
                listener_down: true,
                progress: None,
            }) => {
                let id = self.start_call(Call::Complete);
                self.push(Action::CompleteLifecycleAction {
                    id,
                    result: LifecycleResult::Continue,
                    reason: CompleteReason::RunnerIdleAndStopped,
                });
            }
            _ => {}
        }
    }

    /// One instance per job (just-in-time mode only).
    fn one_job_per_instance(&self) -> bool {
        self.cfg.one_job_per_instance && self.cfg.listener_mode == ListenerMode::Jit
    }

    /// One instance per job: once drained after its job, ask the group to terminate this instance
    /// with a replacement. Protection is cleared first (the drain clears it at once; three failed
    /// attempts are enough). Not after a stop request (the operator's stop wins), nor once
    /// termination is under way by other means (the hook is completed as for any scale-in).
    /// One instance per job: leaving the group, once drained after its job.
    fn leave_step(&self) -> Option<LeaveStep> {
        let drained = !self.job_alive && matches!(self.listener, ListenerState::Down { .. });
        if self.drain != Some(DrainCause::JobDone)
            || !drained
            || self.left_group
            || self.stop_requested
            || self.not_in_group
            || self.terminating.is_some()
        {
            return None;
        }
        Some(LeaveStep {
            unprotect_first: self.leave_waits_for_unprotect(),
            progress: self.progress(Call::LeaveGroup),
        })
    }

    fn decide_leave(&mut self) {
        if let Some(LeaveStep {
            unprotect_first: false,
            progress: None,
        }) = self.leave_step()
        {
            let id = self.start_call(Call::LeaveGroup);
            self.push(Action::LeaveGroup { id });
        }
    }

    /// Whether leaving the group (one instance per job) waits for protection to be cleared first:
    /// the one statement of that rule, for `decide_leave` and the plan. Three failed attempts are
    /// enough.
    fn leave_waits_for_unprotect(&self) -> bool {
        self.protection.inflight.is_some()
            || (self.protected == Some(true) && self.protection_applies() && self.protection.failures < 3)
    }

    /// Whether the exit after a stop request waits for protection to be cleared first: the one
    /// statement of that rule, for `decide_exit` and the plan. Three failed attempts at clearing it
    /// are enough: exiting beats hanging on broken IAM.
    fn exit_waits_for_unprotect(&self) -> bool {
        self.protection.inflight.is_some()
            || (self.protected == Some(true)
                && self.terminating.is_none()
                && !self.not_in_group
                && self.protection.failures < 3)
    }

    /// The exit, once drained after a stop request (or, one instance per job, in no group): due
    /// now, or what it waits for.
    fn exit_step(&self) -> Option<ExitStep> {
        // One instance per job on a host in no group: nothing to leave, so it exits.
        let alone = self.drain == Some(DrainCause::JobDone) && self.not_in_group;
        if !(self.stop_requested || alone) || self.job_alive || !matches!(self.listener, ListenerState::Down { .. }) {
            return None;
        }
        // Finish what termination needs first (confirm, then complete), and leave an idle InService
        // host unprotected so the group can scale it in; a forced stop skips all of that.
        Some(if self.forced {
            ExitStep::Now
        } else if matches!(self.hook, HookPhase::Pending { .. }) || self.describe_reason().is_some() {
            ExitStep::AfterHook
        } else if self.exit_waits_for_unprotect() {
            ExitStep::AfterUnprotect
        } else {
            ExitStep::Now
        })
    }

    fn decide_exit(&mut self) {
        if self.exit_step() == Some(ExitStep::Now) {
            self.exited = true;
            self.push(Action::Exit { forced: self.forced });
        }
    }

    /// The plan: every area's next step, as `decide` carries them out (in this order).
    pub fn plan(&self) -> Plan {
        if self.exited {
            return Plan::default();
        }
        Plan {
            describe: self.describe_step(),
            fetch: self.fetch_step(),
            listener: self.listener_step(),
            protection: self.protection_step(),
            hook: self.hook_step(),
            leave: self.leave_step(),
            exit: self.exit_step(),
        }
    }

    // ----- plumbing -----

    /// Ask for `call` now: its retry gate is spent, and it is in flight.
    fn start_call(&mut self, call: Call) -> RequestId {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        self.inflight.insert(id, call);
        let slot = self.slot_mut(call);
        slot.not_before = None;
        slot.inflight = Some(id);
        id
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    /// Report the current job lost, once per job whatever else befalls it.
    fn job_lost(&mut self, cause: JobLoss) {
        if !self.job_lost {
            self.job_lost = true;
            self.notify(Notice::JobLost { cause });
        }
    }

    fn notify(&mut self, notice: Notice) {
        self.actions.push_back(Action::Notify(notice));
    }
}

fn unexpected_reply() -> ApiError {
    ApiError::new(
        ApiErrorKind::Other,
        "the driver answered a describe without an instance list",
    )
}
