//! What the core will do next, typed: the shells word it (`status`), they never work it out.

use crate::io::{DescribeReason, DrainCause, FetchReason, HoldReason, ProtectReason, StartReason, StopReason};
use crate::time::Time;
use serde::Serialize;

/// How far a call the core waits on has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallProgress {
    /// Asked for, not answered yet.
    InFlight,
    /// Failed; retried at this time.
    RetryAt(Time),
}

/// When the describe the core waits for goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DescribeWhen {
    /// The describe call is in flight or waits for its retry.
    Call(CallProgress),
    /// A slow poll (launching, IMDS down): the next one goes out at this time.
    PollAt(Time),
    /// It goes out now.
    DueNow,
}

/// A DescribeAutoScalingInstances the core wants, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DescribeStep {
    /// Why.
    pub reason: DescribeReason,
    /// When it goes out.
    pub when: DescribeWhen,
}

/// Scale-in protection while a job runs on a serving host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobProtection {
    /// In no Auto Scaling group: nothing to protect.
    NotInGroup,
    /// SetInstanceProtection is under way.
    Call(CallProgress),
    /// Protected.
    Protected,
    /// Not protected yet.
    NotYet,
}

/// The next heartbeat while a job runs under a pending lifecycle action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeartbeatWhen {
    /// The heartbeat call is in flight or waits for its retry.
    Call(CallProgress),
    /// The next heartbeat goes out at this time.
    At(Time),
}

/// What follows once the listener is down, on a draining host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AfterStop {
    /// The lifecycle hook is completed.
    pub complete_hook: bool,
    /// The agent exits (a stop was requested).
    pub exit: bool,
}

/// The main thing the core will do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The drain is finished: the core has asked the driver to exit.
    Exited,
    /// Start (or restart) the listener now.
    StartListener,
    /// Serving, but the listener is stopping: wait for it to exit.
    WaitListenerExit,
    /// The listener exited and will not be relaunched; nothing is scheduled.
    ListenerGaveUp,
    /// The listener starts once Auto Scaling reports InService.
    AwaitInService,
    /// Just-in-time mode: the next listener starts once a fresh config is held (`None`: due now).
    AwaitJitConfig(Option<CallProgress>),
    /// Relaunch the listener at this time.
    Relaunch {
        /// When.
        at: Time,
    },
    /// A job runs on a serving host.
    JobRunning {
        /// Its protection.
        protection: JobProtection,
    },
    /// Idle: protection is cleared at `at` unless a job comes.
    Unprotect {
        /// When the delay is over.
        at: Time,
        /// The SetInstanceProtection call, if under way.
        progress: Option<CallProgress>,
    },
    /// Idle, with a SetInstanceProtection call under way.
    IdleProtectionCall(CallProgress),
    /// Idle; nothing scheduled.
    Idle,
    /// A forced stop is cancelling the running job.
    CancellingJob,
    /// SIGKILL went to the listener; waiting for it to exit.
    ListenerKilled {
        /// What follows.
        then: AfterStop,
    },
    /// A job started after the listener was told to stop: the listener cancels it.
    JobInStopWindow,
    /// Draining: wait for the job to finish, then stop the listener.
    WaitForJob {
        /// What follows the stop.
        then: AfterStop,
        /// The next heartbeat, if the lifecycle action waits.
        heartbeat: Option<HeartbeatWhen>,
        /// When the stop is forced (`drain.stop_deadline`), if it will be.
        force_at: Option<Time>,
    },
    /// Draining, idle: the stop of the listener is held because a job may be landing on it
    /// (`reason`), until `until` at the latest.
    HoldStop {
        /// Why.
        reason: HoldReason,
        /// The latest the hold lasts (`None` while the release call is in flight: its answer or
        /// its timeout ends it).
        until: Option<Time>,
        /// What follows the stop.
        then: AfterStop,
    },
    /// Draining: confirm the listener is idle (the driver's last look), then SIGINT to it.
    StopIdleListener {
        /// What follows.
        then: AfterStop,
    },
    /// Draining: wait for the listener to start, then stop it.
    WaitStartThenStop {
        /// What follows.
        then: AfterStop,
    },
    /// Draining: the idle listener got SIGINT; SIGKILL at `kill_at`.
    WaitIdleExit {
        /// When SIGKILL follows.
        kill_at: Time,
        /// What follows.
        then: AfterStop,
    },
    /// Drained: complete the lifecycle hook.
    CompleteHook(Option<CallProgress>),
    /// Drained after a stop request: clear protection, then exit (`None`: the call is not under
    /// way; it goes out once protection may be changed).
    UnprotectBeforeExit(Option<CallProgress>),
    /// One instance per job, drained after its job: clear protection, then leave the group
    /// (`None`: the call is not under way; it goes out once protection may be changed).
    UnprotectBeforeLeave(Option<CallProgress>),
    /// Drained after a stop request: exit.
    Exiting,
    /// One instance per job, drained after its job: leave the group (TerminateInstanceInAutoScalingGroup,
    /// the group launches a replacement; `None`: due now).
    LeaveGroup(Option<CallProgress>),
    /// Drained: waiting for whatever drained the host to end it.
    Drained {
        /// Why it drained.
        cause: DrainCause,
        /// The lifecycle hook was completed.
        hook_completed: bool,
        /// A termination hook is configured at all.
        hook_configured: bool,
    },
}

/// What the core will do next: a describe it waits for, and/or its main step. At least one is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NextStep {
    /// A describe the core waits for.
    pub describe: Option<DescribeStep>,
    /// The main step; `None` when the describe is all there is.
    pub step: Option<Step>,
}

/// A just-in-time config the plan wants fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FetchStep {
    /// Why.
    pub reason: FetchReason,
    /// The call (`None`: due now).
    pub progress: Option<CallProgress>,
}

/// The listener's next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerStep {
    /// Start it at `at` (due once `at` has come).
    Start {
        /// When it may start.
        at: Time,
        /// Why.
        reason: StartReason,
    },
    /// Confirm the idle listener is idle (the driver's last look), then SIGINT to it: due now.
    ConfirmThenStop {
        /// Its pid.
        pid: u32,
        /// Why.
        reason: StopReason,
        /// GitHub said a job is landing and none came within the bound: it is counted lost.
        landing_lost: bool,
    },
    /// The last look is under way: its answer sends the stop or takes it back.
    Confirming,
    /// Ask the controller to release the listener's registration first (`None`: due now).
    Release(Option<CallProgress>),
    /// Hold the stop: a job may be landing (`until`: the latest the hold lasts; `None` while the
    /// release call is in flight).
    Hold {
        /// Why.
        reason: HoldReason,
        /// Until when, at the latest.
        until: Option<Time>,
    },
    /// A forced stop while a job runs: SIGINT now, the job is cancelled.
    ForceStop {
        /// Its pid.
        pid: u32,
    },
    /// SIGKILL at `at`, unless a job landed in the stop window (then the grace starts again).
    Kill {
        /// When the grace ends.
        at: Time,
        /// A job landed in the stop window: the grace is extended instead.
        extend: bool,
    },
}

/// Scale-in protection the plan wants changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProtectionStep {
    /// Set (`true`) or clear.
    pub protect: bool,
    /// Why.
    pub reason: ProtectReason,
    /// When it is due.
    pub at: Time,
    /// The call, if under way.
    pub progress: Option<CallProgress>,
}

/// The lifecycle hook's next step, while its action waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookStep {
    /// A job (or a held stop) keeps the hook waiting: heartbeat.
    Heartbeat {
        /// When the next beat goes out (`None`: not scheduled yet; this pass schedules it).
        at: Option<Time>,
        /// The call, if under way.
        progress: Option<CallProgress>,
        /// The global timeout is near and has not been warned about yet.
        warn_global: bool,
    },
    /// Complete once the listener is down (`listener_down`; `progress`: the call, if under way).
    Complete {
        /// Whether the listener is down already.
        listener_down: bool,
        /// The call, if under way.
        progress: Option<CallProgress>,
    },
}

/// One instance per job, drained after its job: leave the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LeaveStep {
    /// Protection is cleared first (three failed attempts are enough).
    pub unprotect_first: bool,
    /// The call, if under way.
    pub progress: Option<CallProgress>,
}

/// The exit: due now, or what it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStep {
    /// Due now.
    Now,
    /// After the lifecycle hook (confirm the termination, then complete it).
    AfterHook,
    /// After protection is cleared (three failed attempts are enough).
    AfterUnprotect,
}

/// The plan: what the host does next, and why, one typed value the core computes per pass. Each
/// part is one area's next step with its time or its call; `decide` carries out the parts that are
/// due (in this order), [`NextStep`] words the main one for `status`, and
/// [`Host::next_timer`](crate::Host::next_timer) is the earliest time in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// A DescribeAutoScalingInstances the core wants.
    pub describe: Option<DescribeStep>,
    /// A just-in-time config the core wants.
    pub fetch: Option<FetchStep>,
    /// The listener's next step.
    pub listener: Option<ListenerStep>,
    /// A change of scale-in protection.
    pub protection: Option<ProtectionStep>,
    /// The lifecycle hook's next step.
    pub hook: Option<HookStep>,
    /// Leaving the group (one instance per job).
    pub leave: Option<LeaveStep>,
    /// The exit.
    pub exit: Option<ExitStep>,
}

/// [`Step::name`] and [`Step::NAMES`] from one list, so the two cannot disagree.
macro_rules! step_names {
    ($($step:pat => $name:literal,)+) => {
        impl Step {
            /// The step's one wire spelling (kebab-case, as serde spells it), for the `status`
            /// answer and the `runner_lifecycle_next_step` gauge.
            pub fn name(&self) -> &'static str {
                match self {
                    $($step => $name,)+
                }
            }

            /// Every name [`Step::name`] gives, so the gauge shows each from the start.
            pub const NAMES: &'static [&'static str] = &[$($name),+];
        }
    };
}

step_names! {
    Step::Exited => "exited",
    Step::StartListener => "start-listener",
    Step::WaitListenerExit => "wait-listener-exit",
    Step::ListenerGaveUp => "listener-gave-up",
    Step::AwaitInService => "await-in-service",
    Step::AwaitJitConfig(_) => "await-jit-config",
    Step::Relaunch { .. } => "relaunch",
    Step::JobRunning { .. } => "job-running",
    Step::Unprotect { .. } => "unprotect",
    Step::IdleProtectionCall(_) => "idle-protection-call",
    Step::Idle => "idle",
    Step::CancellingJob => "cancelling-job",
    Step::ListenerKilled { .. } => "listener-killed",
    Step::JobInStopWindow => "job-in-stop-window",
    Step::WaitForJob { .. } => "wait-for-job",
    Step::HoldStop { .. } => "hold-stop",
    Step::StopIdleListener { .. } => "stop-idle-listener",
    Step::WaitStartThenStop { .. } => "wait-start-then-stop",
    Step::WaitIdleExit { .. } => "wait-idle-exit",
    Step::CompleteHook(_) => "complete-hook",
    Step::UnprotectBeforeExit(_) => "unprotect-before-exit",
    Step::UnprotectBeforeLeave(_) => "unprotect-before-leave",
    Step::Exiting => "exiting",
    Step::LeaveGroup(_) => "leave-group",
    Step::Drained { .. } => "drained",
}

/// The area of the host one part of the [`Plan`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanArea {
    /// DescribeAutoScalingInstances.
    Describe,
    /// The just-in-time config for the next listener.
    Fetch,
    /// The runner listener.
    Listener,
    /// Scale-in protection.
    Protection,
    /// The lifecycle hook.
    Hook,
    /// Leaving the group (one instance per job).
    Leave,
    /// The agent's exit.
    Exit,
}

wire_names! {
    PlanArea {
        Describe => "describe",
        Fetch => "fetch",
        Listener => "listener",
        Protection => "protection",
        Hook => "hook",
        Leave => "leave",
        Exit => "exit",
    }
}

/// One part of the [`Plan`], flat: what comes next in one area, why, when, and how far its call has
/// got. `status` lists these; they are read from the plan, never worked out again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    /// The area.
    pub area: PlanArea,
    /// What comes next there (kebab-case).
    pub step: &'static str,
    /// Why, when the plan says (the reason's wire spelling).
    pub reason: Option<&'static str>,
    /// When it is due (`None`: now, or when its call or condition allows).
    pub at: Option<Time>,
    /// The call, if under way.
    pub call: Option<CallProgress>,
}

impl PlanEntry {
    fn new(area: PlanArea, step: &'static str) -> PlanEntry {
        PlanEntry {
            area,
            step,
            reason: None,
            at: None,
            call: None,
        }
    }

    fn reason(mut self, reason: impl Into<Option<&'static str>>) -> PlanEntry {
        self.reason = reason.into();
        self
    }

    fn at(mut self, at: Option<Time>) -> PlanEntry {
        self.at = at;
        self
    }

    fn call(mut self, call: Option<CallProgress>) -> PlanEntry {
        self.call = call;
        self
    }
}

impl Plan {
    /// Every part that is set, in the order `decide` carries them out.
    pub fn entries(&self) -> Vec<PlanEntry> {
        use PlanArea as A;
        let mut out = Vec::new();
        if let Some(d) = self.describe {
            let e = PlanEntry::new(A::Describe, "describe").reason(d.reason.name());
            out.push(match d.when {
                DescribeWhen::Call(p) => e.call(Some(p)),
                DescribeWhen::PollAt(t) => e.at(Some(t)),
                DescribeWhen::DueNow => e,
            });
        }
        if let Some(f) = self.fetch {
            out.push(
                PlanEntry::new(A::Fetch, "fetch-jit-config")
                    .reason(f.reason.name())
                    .call(f.progress),
            );
        }
        if let Some(l) = self.listener {
            let e = PlanEntry::new(A::Listener, l.name());
            out.push(match l {
                ListenerStep::Start { at, reason } => e.reason(reason.name()).at(Some(at)),
                ListenerStep::ConfirmThenStop { reason, .. } => e.reason(reason.name()),
                ListenerStep::Confirming | ListenerStep::ForceStop { .. } => e,
                ListenerStep::Release(p) => e.call(p),
                ListenerStep::Hold { reason, until } => e.reason(reason.name()).at(until),
                ListenerStep::Kill { at, .. } => e.at(Some(at)),
            });
        }
        if let Some(p) = self.protection {
            let step = if p.protect { "protect" } else { "unprotect" };
            out.push(
                PlanEntry::new(A::Protection, step)
                    .reason(p.reason.name())
                    .at(Some(p.at))
                    .call(p.progress),
            );
        }
        if let Some(h) = self.hook {
            out.push(match h {
                HookStep::Heartbeat { at, progress, .. } => PlanEntry::new(A::Hook, "heartbeat").at(at).call(progress),
                HookStep::Complete {
                    listener_down,
                    progress,
                } => PlanEntry::new(A::Hook, "complete")
                    .reason((!listener_down).then_some("after-listener-stops"))
                    .call(progress),
            });
        }
        if let Some(l) = self.leave {
            out.push(PlanEntry::new(A::Leave, "leave-group").call(l.progress));
        }
        if let Some(exit) = self.exit {
            out.push(PlanEntry::new(A::Exit, "exit").reason(exit.reason()));
        }
        out
    }
}

impl ListenerStep {
    /// The step's wire spelling.
    pub fn name(&self) -> &'static str {
        match self {
            ListenerStep::Start { .. } => "start",
            ListenerStep::ConfirmThenStop { .. } => "confirm-then-stop",
            ListenerStep::Confirming => "confirming",
            ListenerStep::Release(_) => "release",
            ListenerStep::Hold { .. } => "hold",
            ListenerStep::ForceStop { .. } => "force-stop",
            ListenerStep::Kill { at: _, extend: false } => "kill",
            ListenerStep::Kill { extend: true, .. } => "extend-grace",
        }
    }
}

impl ExitStep {
    /// What the exit waits for, as the reason of the plan's exit entry (`None`: nothing).
    pub fn reason(self) -> Option<&'static str> {
        match self {
            ExitStep::Now => None,
            ExitStep::AfterHook => Some("waits-for-hook"),
            ExitStep::AfterUnprotect => Some("waits-for-unprotect"),
        }
    }
}
