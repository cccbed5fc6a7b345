//! The core's vocabulary: what drivers tell it (`Input`) and what it asks them to do (`Action`).

use crate::aws::{ApiError, AsgState, TargetState};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one requested side effect, so its result can be matched when it comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req-{}", self.0)
    }
}

/// What happened, as the driver observed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// IMDS `autoscaling/target-lifecycle-state` answered (only report changes or the first reading).
    TargetState(TargetState),
    /// IMDS could not be read (timeout, 5xx, connection refused).
    ImdsUnavailable,
    /// IMDS `spot/instance-action` turned up: the instance dies about two minutes later.
    SpotInterruption,
    /// IMDS `events/recommendations/rebalance` turned up.
    RebalanceRecommendation,
    /// The listener process is running (started by us or found at startup).
    ListenerStarted {
        /// Its process id.
        pid: u32,
    },
    /// The listener process exited.
    ListenerExited {
        /// Its exit code; `None` if a signal ended it.
        code: Option<i32>,
    },
    /// A `Runner.Worker` process appeared: a job is assigned (earlier than the job-started hook).
    WorkerStarted {
        /// Its process id.
        pid: u32,
    },
    /// A `Runner.Worker` process exited: its job is over.
    WorkerExited {
        /// Its process id.
        pid: u32,
    },
    /// The driver carried out [`Action::ConfirmIdle`]: it looked at the listener's children and its
    /// perf log once more. Feed it last in one batch ([`Host::handle_inputs`](crate::Host)) with
    /// what that look found that was not reported yet (`WorkerStarted`, `JobMessageReceived`, exits):
    /// the core then stops the listener ([`Action::StopListener`], carried out next) or, if a job
    /// sign came in the batch, does not.
    ListenerLooked {
        /// The listener's pid, as the action named it.
        pid: u32,
    },
    /// The listener's perf log (`$RUNNER_PERFLOG/Runner.perf`) gained a
    /// `MessageReceived_RunnerJobRequest` line: a job message reached this listener, and its
    /// acknowledge, acquire and first renewal are under way before `Runner.Worker` spawns
    /// (actions/runner src/Runner.Listener/Runner.cs:606-607, the first thing it does with the
    /// message; shared/docs/handover-window.md section 1.2). The file is writable by the runner's
    /// user, so this is a hint: it holds a stop for at most
    /// [`HandoverConfig::bound`](crate::HandoverConfig), never protects a host, never keeps one.
    JobMessageReceived,
    /// The job-started hook reported in.
    JobStartedHook,
    /// The job-completed hook reported in.
    JobCompletedHook,
    /// The agent was asked to stop (SIGTERM from systemd). A second request forces the stop.
    StopRequested,
    /// A requested Auto Scaling call finished.
    ApiResult {
        /// The request this answers.
        id: RequestId,
        /// Its outcome.
        result: Result<ApiReply, ApiError>,
    },
}

/// A successful Auto Scaling answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiReply {
    /// The call succeeded and carries nothing the core needs.
    Done,
    /// `DescribeAutoScalingInstances` answered: the instance, or `None` if it is in no group.
    Described(Option<DescribedInstance>),
    /// The controller answered a release of this listener's registration.
    Released(Release),
}

/// What GitHub said when asked to remove the listener's registration before its stop
/// ([`Action::ReleaseRunner`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Release {
    /// Deleted: from now on GitHub assigns it nothing (a message already in transit may still
    /// arrive: the core watches for it for [`HandoverConfig::release_watch`](crate::HandoverConfig)).
    Removed,
    /// Refused because the runner has a job (REST 422; the Actions service refuses once a job is
    /// *assigned*): a job is landing.
    Busy,
    /// Not found. For a JIT registration an assignment may consume it (actions/runner#4617,
    /// handover-window.md section 1.4), so this means "a job may be landing" too, not success.
    NotFound,
}

/// One instance as `DescribeAutoScalingInstances` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribedInstance {
    /// Its `LifecycleState`.
    pub state: AsgState,
    /// Its `ProtectedFromScaleIn`.
    pub protected: bool,
}

/// Result of a lifecycle action, the one type of the agent and the controller (`CONTINUE` or
/// `ABANDON`; on a termination hook both terminate, on a launch hook ABANDON terminates the new
/// instance). The core itself only ever completes with `CONTINUE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleResult {
    /// `CONTINUE`: let the termination proceed (and any later hooks run); a launch goes on.
    Continue,
    /// `ABANDON`: give up on this instance (the controller's launch hook, when no runner can be
    /// registered for it).
    Abandon,
}

impl LifecycleResult {
    /// The API's spelling (`LifecycleActionResult`).
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleResult::Continue => "CONTINUE",
            LifecycleResult::Abandon => "ABANDON",
        }
    }
}

impl fmt::Display for LifecycleResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A side effect the driver must carry out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Start the runner listener.
    StartListener {
        /// Why.
        reason: StartReason,
    },
    /// Confirm the listener is idle, the first half of stopping an idle listener: look at its
    /// children and its perf log once more now (a `Runner.Worker` or a job message since the last
    /// scan means a job was assigned in that instant), and report what was seen with
    /// [`Input::ListenerLooked`] last, in one batch. The core decides: it stops the listener (an
    /// [`Action::StopListener`] that comes out before anything else queued) or takes the stop back.
    ConfirmIdle {
        /// The listener's pid, as the core knows it.
        pid: u32,
        /// Why it is to be stopped.
        reason: StopReason,
    },
    /// Send SIGINT to the listener now. Never sent while a job is known to run, unless
    /// `cancels_job`; a stop of an idle listener always follows an [`Action::ConfirmIdle`].
    StopListener {
        /// Why.
        reason: StopReason,
        /// True only for a forced stop: the running job will be cancelled.
        cancels_job: bool,
    },
    /// SIGKILL the listener: it ignored SIGINT for the whole grace period.
    KillListener {
        /// Why.
        reason: KillReason,
    },
    /// `SetInstanceProtection` for this instance.
    SetProtection {
        /// Answer with `Input::ApiResult` carrying this id.
        id: RequestId,
        /// Protect (`true`) or clear (`false`).
        protect: bool,
        /// Why.
        reason: ProtectReason,
    },
    /// `DescribeAutoScalingInstances` for this instance.
    Describe {
        /// Answer with `Input::ApiResult` carrying this id.
        id: RequestId,
        /// Why.
        reason: DescribeReason,
    },
    /// `RecordLifecycleActionHeartbeat` by instance id.
    Heartbeat {
        /// Answer with `Input::ApiResult` carrying this id.
        id: RequestId,
        /// Why.
        reason: HeartbeatReason,
    },
    /// `CompleteLifecycleAction` by instance id.
    CompleteLifecycleAction {
        /// Answer with `Input::ApiResult` carrying this id.
        id: RequestId,
        /// The result to send.
        result: LifecycleResult,
        /// Why.
        reason: CompleteReason,
    },
    /// Just-in-time mode: obtain one fresh runner config (the controller's `generate-jitconfig`) and
    /// hold it for the next [`Action::StartListener`]. The core never sees the config (a credential):
    /// only whether one is held.
    FetchJitConfig {
        /// Answer with `Input::ApiResult` carrying this id (`Ok(ApiReply::Done)` once it is held).
        id: RequestId,
        /// Why.
        reason: FetchReason,
    },
    /// Ask the controller to delete this listener's (JIT) registration before it is stopped, so that
    /// GitHub, which knows whether a job is assigned, arbitrates the stop. Answer with
    /// `Input::ApiResult` carrying this id: `Ok(ApiReply::Released(..))`, or an error when the
    /// controller or GitHub cannot be reached (the core then falls back to the perf-log latch and
    /// the last look, [`Action::ConfirmIdle`]).
    ReleaseRunner {
        /// The request id.
        id: RequestId,
    },
    /// One instance per job ([`CoreConfig::one_job_per_instance`](crate::CoreConfig)): the job is
    /// done, so leave the group: `TerminateInstanceInAutoScalingGroup` for this instance with
    /// `ShouldDecrementDesiredCapacity=false`, so the group launches a fresh replacement. The
    /// instance then goes through the termination hook like any scale-in. Answer with
    /// `Input::ApiResult` carrying this id (`Ok(ApiReply::Done)`).
    LeaveGroup {
        /// The request id.
        id: RequestId,
    },
    /// Something worth a log line or a metric; no side effect.
    Notify(Notice),
    /// The agent's work is done (after a stop request): exit.
    Exit {
        /// True when the stop was forced (a second SIGTERM or the stop deadline).
        forced: bool,
    },
}

// Why an action is taken: one type per action, so each action carries only the reasons that apply
// to it (logged as `reason`, counted in metric labels, in their one kebab-case spelling).

/// Why the listener is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartReason {
    /// The instance is confirmed InService (or in no group) and nothing asks us to drain.
    Serving,
    /// The listener asked to be relaunched (exit code 2, 3, 4, or unknown: RunnerService.js).
    Relaunch,
    /// One-job or just-in-time mode: the listener finished its job and exited 0.
    NextJob,
}

/// Why a just-in-time config is fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FetchReason {
    /// No listener runs and none can start without a config.
    NextListener,
    /// The running listener took its one job: its successor's config is fetched while the job runs,
    /// so the host serves again within seconds of the job's end.
    Prefetch,
}

/// Why SIGINT goes to the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The instance is terminating and no job is assigned.
    TerminatingIdle,
    /// A stop was requested (SIGTERM) and no job is assigned.
    StopRequestedIdle,
    /// A spot interruption notice arrived and no job is assigned.
    SpotInterruptionIdle,
    /// A rebalance recommendation arrived, `drain_on_rebalance` is set, and no job is assigned.
    RebalanceIdle,
    /// A second stop request or the stop deadline: stop even though a job runs.
    Forced,
    /// A JIT listener received a job message and no worker followed within the bound: its
    /// registration is gone (the assignment consumed it and the acquire was refused, so it polls on
    /// as a ghost that will never get a job, actions/runner#4617). It is replaced; nothing is lost.
    Ghost,
}

/// Why SIGKILL goes to the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillReason {
    /// SIGINT was ignored for the whole grace period.
    GraceExpired,
}

/// Why scale-in protection is set or cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectReason {
    /// A job is assigned on an InService instance.
    JobAssigned,
    /// No job for the unprotect delay (or draining with no job).
    Idle,
}

/// Why the instance is described.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DescribeReason {
    /// IMDS says `Terminated`: confirm before touching the hook.
    ConfirmTermination,
    /// SetInstanceProtection said the instance is not InService: confirm.
    ProtectionRefused,
    /// Find out whether the instance is InService yet (launching, or first start).
    AwaitInService,
    /// IMDS is down: poll the Auto Scaling API slowly instead.
    ImdsDown,
}

/// Why the lifecycle action is heartbeaten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeartbeatReason {
    /// A job runs while the termination hook waits.
    JobRunning,
}

/// Why the lifecycle action is completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompleteReason {
    /// The runner is idle and stopped while the termination hook waits.
    RunnerIdleAndStopped,
}

/// Something notable that happened inside the core.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Notice {
    /// Termination was first noticed, and how.
    TerminationDetected {
        /// The signal that revealed it.
        via: Detection,
    },
    /// The Auto Scaling API confirmed the state the core acts on.
    StateConfirmed {
        /// The confirmed state.
        state: AsgState,
    },
    /// A drain started: no new jobs from now on.
    DrainStarted {
        /// Why.
        cause: DrainCause,
    },
    /// A job became assigned (worker or hook).
    JobAssigned,
    /// The assigned job is over.
    JobEnded,
    /// A heartbeat or completion found no active lifecycle action: someone else completed it or it
    /// timed out. Nothing left to do for the hook.
    HookGone,
    /// The lifecycle action was completed (or found already completed).
    HookCompleted {
        /// True when AWS answered "No active Lifecycle Action found" (already done).
        already_done: bool,
    },
    /// An Auto Scaling call failed; it will be retried after `retry_in_ms`.
    ApiFailed {
        /// Which call.
        call: Call,
        /// The error.
        error: ApiError,
        /// Milliseconds until the retry.
        retry_in_ms: u64,
    },
    /// The lifecycle action will hit its global timeout soon; the job may be cut off.
    GlobalTimeoutNear {
        /// Milliseconds left (at most).
        remaining_ms: u64,
    },
    /// The listener exited and will not be relaunched.
    ListenerGaveUp {
        /// Its last exit code.
        code: Option<i32>,
    },
    /// The listener exited while a job was assigned (a runner crash, or a listener that was stopping).
    ListenerDiedWithJob,
    /// A job was lost, and how: emitted exactly once per lost job (what `jobs_lost_total` counts).
    JobLost {
        /// How it was lost.
        cause: JobLoss,
    },
    /// The stop was forced while a job was assigned: it will be cancelled.
    ForcingStopWithJob,
    /// A rebalance recommendation arrived (only a warning unless `drain_on_rebalance`).
    RebalanceRecommended,
    /// The instance is in no Auto Scaling group: serving without protection or hooks.
    NotInGroup,
    /// One instance per job: the group accepted this instance's termination (a replacement is
    /// launched); the termination hook follows.
    LeftGroup,
    /// A `job-started` hook report was not followed by a `Runner.Worker` within
    /// [`CoreConfig::hook_grace`](crate::CoreConfig::hook_grace): its claim of a job is dropped (the
    /// report did not come from a job of this listener).
    HookClaimDropped,
    /// The stop of an idle listener on a draining host is held: a job may be landing on it.
    StopHeld {
        /// Why.
        reason: HoldReason,
        /// How long at most, from now.
        for_ms: u64,
    },
    /// The controller answered the release of the listener's registration.
    RunnerReleased {
        /// What GitHub said.
        outcome: Release,
    },
}

/// Why the stop of an idle listener is held (shared/docs/handover-window.md section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HoldReason {
    /// The perf log shows a job message whose worker has not appeared (the latch).
    JobMessage,
    /// GitHub refused to delete the registration: a job is assigned to it.
    RegistrationBusy,
    /// GitHub no longer knows the registration: an assignment may have consumed it.
    RegistrationNotFound,
    /// The registration was deleted; a message already in transit may still arrive.
    WatchAfterRelease,
    /// The release is being asked.
    Releasing,
}

/// How a job was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobLoss {
    /// A worker appeared after a non-forced stop signal: the stopping listener cancels its job.
    StopWindow,
    /// The listener exited under a job it was not told to give up (a crash).
    ListenerDied,
    /// A forced stop (second stop request or the stop deadline) cancelled the job.
    ForcedStop,
    /// A job message (or a registration GitHub would not release) produced no `Runner.Worker`
    /// within [`HandoverConfig::bound`](crate::HandoverConfig): the listener is stopped anyway. Its
    /// job may be lost, or may never have been this listener's (a message the listener skips because
    /// another runner acquired the job, Runner.cs:737-745, or a forged perf line).
    HandoverTimeout,
}

/// How termination was detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detection {
    /// IMDS target-lifecycle-state turned `Terminated`.
    Imds,
    /// SetInstanceProtection refused with "not in InService".
    ProtectionRefused,
    /// A DescribeAutoScalingInstances answer.
    Describe,
}

/// Why the runner is draining.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainCause {
    /// Scale-in (or any termination through the group).
    Terminating,
    /// SIGTERM to the agent.
    StopRequested,
    /// A spot interruption notice.
    SpotInterruption,
    /// A rebalance recommendation with `drain_on_rebalance`.
    Rebalance,
    /// One instance per job: its one job is done; the host leaves the group for a fresh one.
    JobDone,
}

/// The calls the core makes (Auto Scaling, and the controller's JIT endpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Call {
    /// SetInstanceProtection.
    SetProtection,
    /// DescribeAutoScalingInstances.
    Describe,
    /// RecordLifecycleActionHeartbeat.
    Heartbeat,
    /// CompleteLifecycleAction.
    Complete,
    /// The controller's just-in-time config endpoint (not Auto Scaling, but the same one-in-flight,
    /// backed-off discipline).
    MintJitConfig,
    /// The controller's release of this host's JIT registration (never retried: a failure falls
    /// back to the latch and the last look).
    ReleaseRunner,
    /// TerminateInstanceInAutoScalingGroup for this instance (one instance per job).
    LeaveGroup,
}

wire_names! {
    StartReason {
        Serving => "serving",
        Relaunch => "relaunch",
        NextJob => "next-job",
    }
    StopReason {
        TerminatingIdle => "terminating-idle",
        StopRequestedIdle => "stop-requested-idle",
        SpotInterruptionIdle => "spot-interruption-idle",
        RebalanceIdle => "rebalance-idle",
        Forced => "forced",
        Ghost => "ghost",
    }
    KillReason {
        GraceExpired => "grace-expired",
    }
    ProtectReason {
        JobAssigned => "job-assigned",
        Idle => "idle",
    }
    DescribeReason {
        ConfirmTermination => "confirm-termination",
        ProtectionRefused => "protection-refused",
        AwaitInService => "await-in-service",
        ImdsDown => "imds-down",
    }
    HeartbeatReason {
        JobRunning => "job-running",
    }
    CompleteReason {
        RunnerIdleAndStopped => "runner-idle-and-stopped",
    }
    FetchReason {
        NextListener => "next-listener",
        Prefetch => "prefetch",
    }
    Call {
        SetProtection => "set-protection",
        Describe => "describe",
        Heartbeat => "heartbeat",
        Complete => "complete",
        MintJitConfig => "mint-jit-config",
        ReleaseRunner => "release-runner",
        LeaveGroup => "leave-group",
    }
    DrainCause {
        Terminating => "terminating",
        StopRequested => "stop-requested",
        SpotInterruption => "spot-interruption",
        Rebalance => "rebalance",
        JobDone => "job-done",
    }
    HoldReason {
        JobMessage => "job-message",
        RegistrationBusy => "registration-busy",
        RegistrationNotFound => "registration-not-found",
        WatchAfterRelease => "watch-after-release",
        Releasing => "releasing",
    }
    Release { Removed => "removed", Busy => "busy", NotFound => "not-found" }
    Detection { Imds => "imds", ProtectionRefused => "protection-refused", Describe => "describe" }
    JobLoss { StopWindow => "stop-window", ListenerDied => "listener-died", ForcedStop => "forced-stop", HandoverTimeout => "handover-timeout" }
}
