//! The simulated world: an Auto Scaling group with a termination hook and an idle-runner scaling
//! policy, IMDS that lags, a GitHub job broker, runner listeners and workers that behave as upstream
//! does, and faults. Strategies act on it only through the methods a real host could use.

use crate::config::{timing, DemandScaleIn, ReleaseWhileAssigned, Scaling, SimConfig, Unacquired};
use crate::jobs::{JobSource, JobStore};
use crate::metrics::{JobOutcome, Metrics, Violation};
use crate::queue::EventQueue;
use crate::streams::{self, Streams};
use crate::timeline::TimelineRecorder;
use lifecycle_core::{
    ApiError, ApiErrorKind, ApiReply, AsgState, DescribedInstance, HandoverConfig, ListenerMode, Release, Rng, Time,
};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

mod asg;
mod broker;
mod controller;
mod faults;
mod invariants;
mod job_log;
mod runner;
mod scaling;

use asg::Fleet;
use broker::Broker;
use faults::FaultState;
use scaling::ControlPlane;

/// Index of an instance in the world.
pub type InstId = u32;
/// Index of a job in the workload.
pub type JobId = u32;

/// What IMDS `target-lifecycle-state` shows (the subset the simulation produces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `InService`.
    InService,
    /// `Terminated`.
    Terminated,
}

/// Something a host's software notices, delivered to its controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// The listener is up.
    ListenerStarted(u32),
    /// The listener exited with this code (`None`: killed).
    ListenerExited(Option<i32>),
    /// A worker appeared.
    WorkerStarted(u32),
    /// A worker exited.
    WorkerExited(u32),
    /// An IMDS poll saw a new target state.
    Imds(Target),
    /// An IMDS poll failed.
    ImdsDown,
    /// An IMDS poll saw a spot interruption notice.
    SpotNotice,
    /// The EventBridge termination event reached the strategy's central handler (Lambda) and its stop
    /// command reached the host.
    TerminationEvent,
    /// A step the strategy deferred with `World::defer` is due.
    Deferred(Deferred),
    /// The listener's perf log has a new `MessageReceived_RunnerJobRequest` line (its poll saw it).
    JobMessage,
    /// The controller answered the release of the listener's registration (`None`: it failed).
    Released(Option<Release>),
}

/// A step a strategy scheduled for later on its host (work that takes time before its effect).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deferred {
    /// The job-started hook's Auto Scaling call, after the work the hook does first.
    PrerunCall(JobId),
    /// ExecStopPost's describe, after the unit stopped.
    StopPostDescribe,
    /// ExecStopPost's completion, after its describe.
    StopPostComplete,
}

/// The Auto Scaling calls a strategy can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiCall {
    /// SetInstanceProtection.
    SetProtection(bool),
    /// DescribeAutoScalingInstances.
    Describe,
    /// DescribeLifecycleHooks (the agent's discovery of its termination hook).
    DescribeHooks,
    /// RecordLifecycleActionHeartbeat.
    Heartbeat,
    /// CompleteLifecycleAction.
    Complete,
    /// TerminateInstanceInAutoScalingGroup for the caller's own instance, without decrementing the
    /// desired capacity (one instance per job): the group launches a replacement.
    TerminateInGroup,
}

/// Which job hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// `ACTIONS_RUNNER_HOOK_JOB_STARTED`.
    Started,
    /// `ACTIONS_RUNNER_HOOK_JOB_COMPLETED`.
    Completed,
}

/// What a job hook did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HookRun {
    /// How long it ran (the job waits).
    pub took: Duration,
    /// A non-zero exit: the job fails (actions/runner src/Runner.Worker/JobExtension.cs).
    pub fails_job: bool,
}

/// The Auto Scaling side of an instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AsgPhase {
    Pending,
    InService,
    /// The termination hook holds it. `seq` identifies this lifecycle action.
    Wait {
        seq: u32,
        since: Time,
        deadline: Time,
        global: Time,
    },
    Proceed,
    Gone,
    /// Launching into the warm pool (boot, then stopped).
    WarmPending,
    /// Stopped in the warm pool.
    Warmed,
    /// A pool trim holds it in `Warmed:Terminating:Wait`; no agent runs on a stopped host.
    WarmTrimWait {
        deadline: Time,
    },
}

/// Where a job handed to a listener is in the handover (shared/docs/handover-window.md section 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// The broker committed; the message is in transit on the long poll.
    W0,
    /// The listener has the message (its perf line is written); `acknowledge` and `acquirejob`.
    W1,
    /// Acquired; the first `renewjob`, then the worker's spawn.
    W2,
}

impl Window {
    fn index(self) -> usize {
        match self {
            Window::W0 => 0,
            Window::W1 => 1,
            Window::W2 => 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Listener {
    Down,
    Starting,
    Polling,
    /// The broker handed it a job that is on its way (the instance's `window` says how far).
    Claimed(JobId),
    Busy(JobId),
    Exiting,
}

#[derive(Debug)]
pub(crate) struct Instance {
    pub(crate) asg: AsgPhase,
    protected: bool,
    target: Target,
    target_visible_at: Time,
    imds_down_until: Time,
    poll_phase: Duration,
    spot_notice: bool,
    listener: Listener,
    listener_gen: u32,
    listener_pid: u32,
    worker: Option<(JobId, u32, Time)>,
    /// The host's software has been told about the current worker (its /proc scan, or a restarted
    /// agent's first look). A stop signal before that is the stop window, not a cancel.
    worker_seen: bool,
    last_worker_exit: Time,
    pub(crate) agent_up: bool,
    /// A restarted agent's startup is waiting to retry a failed step until then (throttled
    /// discovery backs off up to 30 s, lifecycle-core `startup::BACKOFF_CAP`).
    startup_retry_until: Option<Time>,
    pub(crate) agent_gen: u32,
    pub(crate) wake_at: Option<Time>,
    idle_in_wait_since: Option<Time>,
    fault_allowance: Duration,
    global_timeout_hit: bool,
    terminations: u32,
    /// GitHub's REST `busy` flag shows this listener's job (it lags the job's start).
    busy_flag: bool,
    /// This instance's own fault schedule: the same for every strategy (common random numbers).
    faults_rng: Rng,
    /// JIT configs minted for this host and not yet given to a listener.
    jit_configs_held: u32,
    /// The current JIT listener's registration has not taken a job yet.
    jit_registration_unused: bool,
    /// Jobs delivered to the current listener incarnation.
    listener_jobs: u32,
    /// A job ended here at this time on a host not draining; the host serves again when its next
    /// listener is ready.
    serve_gap_from: Option<Time>,
    /// How far the handover of the `Claimed` job is.
    window: Window,
    /// The `Claimed` job was taken back by an accepted delete of the registration: the listener
    /// will skip its acquire, and the job is no longer this listener's.
    assignment_revoked: bool,
    /// The listener's perf log has a job message line the agent has not polled yet.
    perf_unseen: bool,
    /// The current listener's registration was deleted: the broker assigns it nothing more; the
    /// listener keeps polling until stopped.
    registration_removed: bool,
    /// The demand controller picked this host as a victim and is deleting its registration.
    victim: bool,
    /// Until then the handover guard may legitimately hold this host (heartbeats allowed).
    hold_allowed_until: Time,
    /// The host's identity for its fault stream: its slot in the group and the launch count of the
    /// slot (`streams::instance_faults`).
    slot: u32,
}

/// World events. Host events carry the agent generation they were meant for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ev {
    Arrival(JobId),
    ScalingEval,
    Boot(InstId),
    ListenerReady(InstId, u32),
    ListenerExit(InstId, u32, Option<i32>),
    Relaunch(InstId, u32),
    Received(InstId, u32, JobId),
    Acquired(InstId, u32, JobId, bool),
    Deliver(InstId, JobId),
    ReleaseEffect(InstId, u32, u32),
    VictimRelease(InstId, u32),
    HookStart(InstId, JobId),
    JobDone(InstId, JobId),
    WorkerExit(InstId, JobId, bool),
    HookExpire(InstId, u32),
    BusyFlag(InstId, u32, JobId),
    DemandEval,
    Requeue(JobId),
    ThrottleEpisode,
    GitHubRateLimit,
    WarmTrim,
    TrimEvent(InstId),
    TrimExpire(InstId),
    WarmReady(InstId),
    Deferred(InstId, u32, Deferred),
    Gone(InstId),
    Host(InstId, u32, HostEvent),
    Wake(InstId, u32, Time),
    AgentCrash(InstId),
    AgentRestart(InstId),
    RunnerCrash(InstId),
    ImdsOutage(InstId),
    SpotNotice(InstId),
    SpotKill(InstId),
}

impl Ev {
    /// The instance an event concerns, if any.
    pub(crate) fn instance(&self) -> Option<InstId> {
        match *self {
            Ev::Arrival(_)
            | Ev::ScalingEval
            | Ev::DemandEval
            | Ev::Requeue(_)
            | Ev::ThrottleEpisode
            | Ev::GitHubRateLimit
            | Ev::WarmTrim => None,
            Ev::Boot(i)
            | Ev::ListenerReady(i, _)
            | Ev::ListenerExit(i, _, _)
            | Ev::Relaunch(i, _)
            | Ev::Deliver(i, _)
            | Ev::Received(i, _, _)
            | Ev::Acquired(i, _, _, _)
            | Ev::ReleaseEffect(i, _, _)
            | Ev::VictimRelease(i, _)
            | Ev::HookStart(i, _)
            | Ev::JobDone(i, _)
            | Ev::WorkerExit(i, _, _)
            | Ev::HookExpire(i, _)
            | Ev::BusyFlag(i, _, _)
            | Ev::TrimEvent(i)
            | Ev::TrimExpire(i)
            | Ev::WarmReady(i)
            | Ev::Deferred(i, _, _)
            | Ev::Gone(i)
            | Ev::Host(i, _, _)
            | Ev::Wake(i, _, _)
            | Ev::AgentCrash(i)
            | Ev::AgentRestart(i)
            | Ev::RunnerCrash(i)
            | Ev::ImdsOutage(i)
            | Ev::SpotNotice(i)
            | Ev::SpotKill(i) => Some(i),
        }
    }
}

/// The world, without the strategies' per-host controllers (those live beside it, see
/// `driver.rs`). Its state is in parts, each defined and mostly changed in its own module: the
/// group and its hosts ([`Fleet`], `asg.rs`), GitHub's job broker ([`Broker`], `broker.rs`), the
/// scaling control plane ([`ControlPlane`], `scaling.rs`), the injected faults ([`FaultState`],
/// `faults.rs`), and what is observed (`metrics`, `violations`, `timeline`).
#[derive(Debug)]
pub struct World {
    /// The run's parameters.
    pub cfg: SimConfig,
    /// The fake clock.
    pub now: Time,
    /// The strategies' own randomness (their timers, the cores' seeds).
    pub rng: Rng,
    pub(crate) queue: EventQueue<Ev>,
    /// How runner listeners run in this world.
    pub listener_mode: ListenerMode,
    /// The Auto Scaling group and its hosts.
    pub(crate) fleet: Fleet,
    /// GitHub's job broker.
    broker: Broker,
    /// The group's scaling policy and the controller's demand scaling.
    control: ControlPlane,
    /// The world's randomness and the account-wide fault episodes.
    faults: FaultState,
    /// What happened.
    pub metrics: Metrics,
    /// Whether the strategy promises the invariants (runner-lifecycle does).
    pub check_invariants: bool,
    /// Invariant violations found so far.
    pub violations: Vec<Violation>,
    /// One instance's timeline (`--trace-instance` with `--plot`).
    pub(crate) timeline: Option<TimelineRecorder>,
}

fn between(rng: &mut Rng, (lo, hi): (Duration, Duration)) -> Duration {
    lo + rng.jitter(hi - lo, 0.0, 1.0)
}

impl World {
    pub(crate) fn new(
        cfg: SimConfig,
        source: JobSource,
        check_invariants: bool,
        listener_mode: ListenerMode,
        central_completes_trims: bool,
    ) -> Self {
        let rng = streams::stream(cfg.seed, streams::CONTROLLERS);
        World {
            fleet: Fleet::new(cfg.idle_target),
            broker: Broker::new(JobStore::new(source)),
            control: ControlPlane::new(central_completes_trims),
            faults: FaultState::new(Streams::new(cfg.seed)),
            timeline: cfg.trace_instance.map(TimelineRecorder::new),
            cfg,
            now: Time::ZERO,
            rng,
            queue: EventQueue::default(),
            metrics: Metrics::default(),
            check_invariants,
            listener_mode,
            violations: Vec::new(),
        }
    }

    /// Start the run: the group at its minimum, already InService, and the first events.
    pub(crate) fn start(&mut self) {
        if let Some((id, at)) = self.broker.jobs.pull_next() {
            self.queue.push(at, Ev::Arrival(id));
        }
        self.queue.push(Time::ZERO + timing::SCALING_PERIOD, Ev::ScalingEval);
        for _ in 0..self.fleet.desired {
            self.launch(true);
        }
        for _ in 0..self.cfg.warm_pool {
            self.launch_into_pool(true);
        }
        let f = &self.cfg.faults;
        if let Some(at) = next_fault(
            &mut self.faults.streams.account,
            Time::ZERO,
            f.throttle_episodes_per_day,
        ) {
            self.queue.push(at, Ev::ThrottleEpisode);
        }
        let rate = f.github_rate_limit_episodes_per_day;
        if let Some(at) = next_fault(&mut self.faults.streams.github_episodes, Time::ZERO, rate) {
            self.queue.push(at, Ev::GitHubRateLimit);
        }
        let trims = if self.cfg.warm_pool > 0 {
            self.cfg.warm_trims_per_day
        } else {
            0.0
        };
        if let Some(at) = next_fault(&mut self.faults.streams.account, Time::ZERO, trims) {
            self.queue.push(at, Ev::WarmTrim);
        }
    }

    /// Handle a world event; returns host events and hook runs for the driver to route.
    pub(crate) fn handle(&mut self, ev: Ev) -> Routed {
        let now = self.now;
        match ev {
            Ev::Arrival(job) => self.arrival(job),
            Ev::ScalingEval => self.scaling_eval(),
            Ev::DemandEval => {
                self.control.demand_eval_pending = false;
                self.demand_eval();
            }
            Ev::Boot(inst) => {
                if self.fleet.instances[inst as usize].asg == AsgPhase::Pending {
                    self.set_phase(inst, AsgPhase::InService);
                    self.schedule_faults(inst);
                    return Routed::Booted(inst);
                }
            }
            Ev::ListenerReady(inst, gen) => {
                let i = &mut self.fleet.instances[inst as usize];
                if i.listener_gen == gen && i.listener == Listener::Starting && running(i.asg) {
                    let pid = self.fleet.next_pid();
                    let i = &mut self.fleet.instances[inst as usize];
                    i.listener_pid = pid;
                    let agent_gen = i.agent_gen;
                    self.make_idle(inst);
                    self.queue
                        .push(now, Ev::Host(inst, agent_gen, HostEvent::ListenerStarted(pid)));
                }
            }
            Ev::ListenerExit(inst, gen, code) => self.listener_exit(inst, gen, code),
            Ev::Relaunch(inst, gen) => {
                if self.fleet.instances[inst as usize].listener_gen == gen {
                    self.start_listener(inst);
                }
            }
            Ev::Received(inst, lgen, job) => self.received(inst, lgen, job),
            Ev::Acquired(inst, lgen, job, ok) => self.acquired(inst, lgen, job, ok),
            Ev::Deliver(inst, job) => self.deliver(inst, job),
            Ev::ReleaseEffect(inst, lgen, gen) => self.release_effect(inst, lgen, gen),
            Ev::VictimRelease(inst, lgen) => self.victim_release(inst, lgen),
            Ev::HookStart(inst, job) => return Routed::Hook(inst, job, HookKind::Started),
            Ev::JobDone(inst, job) => return Routed::Hook(inst, job, HookKind::Completed),
            Ev::WorkerExit(inst, job, ok) => self.worker_exit(inst, job, ok),
            Ev::HookExpire(inst, seq) => {
                if let AsgPhase::Wait {
                    seq: s,
                    deadline,
                    global,
                    ..
                } = self.fleet.instances[inst as usize].asg
                {
                    if s == seq {
                        let due = deadline.min(global);
                        if now >= global {
                            // The global timeout, min(48 h, 100 x HeartbeatTimeout): no heartbeat can
                            // extend it (AWS lifecycle hook docs). A job longer than that is lost by
                            // configuration, not by the tool, which warned an hour before.
                            self.metrics.hooks_hit_global_timeout += 1;
                            self.fleet.instances[inst as usize].global_timeout_hit = true;
                            self.proceed(inst);
                        } else if now >= due {
                            // HeartbeatTimeout passed: AWS applies the DefaultResult; on a termination
                            // hook both results terminate.
                            self.metrics.hooks_timed_out += 1;
                            if self.check_invariants {
                                self.violate(inst, "termination hook timed out");
                            }
                            self.proceed(inst);
                        } else {
                            self.queue.push(due, Ev::HookExpire(inst, seq));
                        }
                    }
                }
            }
            Ev::Gone(inst) => self.gone(inst, false),
            Ev::BusyFlag(inst, lgen, job) => {
                let i = &mut self.fleet.instances[inst as usize];
                if i.listener_gen == lgen && i.listener == Listener::Busy(job) && !i.busy_flag {
                    i.busy_flag = true;
                    self.broker.busy_flagged += 1;
                }
            }
            Ev::Requeue(job) => {
                if !self.broker.jobs.finished(job) {
                    self.broker.job_queue.push_front(job);
                    self.dispatch();
                }
            }
            Ev::ThrottleEpisode => {
                let len = between(&mut self.faults.streams.account, timing::EPISODE_LENGTH);
                self.faults.throttled_until = now + len;
                self.metrics.throttle_episodes += 1;
                let rate = self.cfg.faults.throttle_episodes_per_day;
                if let Some(at) = next_fault(&mut self.faults.streams.account, now + len, rate) {
                    self.queue.push(at, Ev::ThrottleEpisode);
                }
            }
            Ev::WarmReady(inst) => {
                if self.fleet.instances[inst as usize].asg == AsgPhase::WarmPending {
                    self.fleet.warm_pending -= 1;
                    self.set_phase(inst, AsgPhase::Warmed);
                    self.fleet.warm.push_back(inst);
                }
            }
            Ev::GitHubRateLimit => self.github_rate_limit_episode(),
            Ev::WarmTrim => self.warm_trim(),
            Ev::TrimEvent(inst) => {
                if self.control.central_completes_trims {
                    // The central handler (Lambda, retried twice by Lambda's async invocation, each
                    // call through an SDK in standard retry mode) completes with CONTINUE.
                    for _ in 0..3 {
                        if self.call_retrying(inst, ApiCall::Complete, 3).is_ok() {
                            break;
                        }
                    }
                }
            }
            Ev::TrimExpire(inst) => {
                if let AsgPhase::WarmTrimWait { deadline } = self.fleet.instances[inst as usize].asg {
                    if now >= deadline {
                        self.metrics.warm_trims_timed_out += 1;
                        self.leave_trim_wait(inst);
                        self.gone(inst, false);
                    }
                }
            }
            Ev::Deferred(inst, gen, what) => {
                return Routed::Host(inst, gen, HostEvent::Deferred(what));
            }
            Ev::Host(inst, gen, hev) => {
                let i = &mut self.fleet.instances[inst as usize];
                if let (HostEvent::WorkerStarted(pid), Some((_, current, _))) = (hev, i.worker) {
                    // Delivered to the host's software if it is up (the driver checks the generation).
                    if pid == current && i.agent_up && i.agent_gen == gen {
                        i.worker_seen = true;
                    }
                }
                if hev == HostEvent::JobMessage && i.agent_up && i.agent_gen == gen {
                    i.perf_unseen = false;
                }
                return Routed::Host(inst, gen, hev);
            }
            Ev::Wake(inst, gen, at) => return Routed::Wake(inst, gen, at),
            Ev::AgentCrash(inst) => {
                if !running(self.fleet.instances[inst as usize].asg) {
                    return Routed::Nothing;
                }
                let rate = self.cfg.faults.agent_crashes_per_day;
                self.reschedule_fault(inst, rate, ev);
                return Routed::AgentCrash(inst);
            }
            Ev::AgentRestart(inst) => {
                if running(self.fleet.instances[inst as usize].asg) {
                    return Routed::AgentRestart(inst);
                }
            }
            Ev::RunnerCrash(inst) => {
                if running(self.fleet.instances[inst as usize].asg) {
                    let rate = self.cfg.faults.runner_crashes_per_day;
                    self.reschedule_fault(inst, rate, ev);
                    let outcome = JobOutcome::Failed(crate::metrics::FailCause::RunnerCrash);
                    self.listener_dies(inst, Some(2), outcome);
                }
            }
            Ev::ImdsOutage(inst) => {
                if running(self.fleet.instances[inst as usize].asg) {
                    let rate = self.cfg.faults.imds_outages_per_day;
                    self.reschedule_fault(inst, rate, ev);
                    let i = &mut self.fleet.instances[inst as usize];
                    let len = between(&mut i.faults_rng, (Duration::from_secs(5), Duration::from_secs(60)));
                    i.imds_down_until = now + len;
                    // IMDS down costs its length, the 10 s before the fallback poll starts, and one 30 s
                    // poll period (lifecycle-core CoreConfig defaults).
                    i.fault_allowance += len + Duration::from_secs(40);
                    let gen = i.agent_gen;
                    self.queue.push(now, Ev::Host(inst, gen, HostEvent::ImdsDown));
                    // When it comes back, the next poll reads whatever is visible then.
                    let back = self.next_poll_after(inst, now + len);
                    let target = self.fleet.instances[inst as usize].target;
                    let visible_at = self.fleet.instances[inst as usize].target_visible_at;
                    if target == Target::Terminated && visible_at <= back {
                        self.queue
                            .push(back, Ev::Host(inst, gen, HostEvent::Imds(Target::Terminated)));
                    } else {
                        self.queue
                            .push(back, Ev::Host(inst, gen, HostEvent::Imds(Target::InService)));
                    }
                }
            }
            Ev::SpotNotice(inst) => {
                let i = &mut self.fleet.instances[inst as usize];
                if running(i.asg) && !i.spot_notice {
                    i.spot_notice = true;
                    i.serve_gap_from = None;
                    self.metrics.spot_interruptions += 1;
                    let gen = i.agent_gen;
                    let seen = self.next_poll_after(inst, now);
                    self.queue.push(seen, Ev::Host(inst, gen, HostEvent::SpotNotice));
                    self.queue.push(now + timing::SPOT_NOTICE, Ev::SpotKill(inst));
                }
            }
            Ev::SpotKill(inst) => self.gone(inst, true),
        }
        Routed::Nothing
    }

    /// Close the books at the end of the run.
    pub(crate) fn finish(&mut self) {
        let waiting: Vec<InstId> = self.fleet.waiting.iter().copied().collect();
        for inst in waiting {
            if self.check_invariants {
                self.check_idle_wait(inst, false);
            }
            self.leave_wait(inst);
        }
        self.metrics.jobs_unfinished += self.broker.jobs.unfinished(self.now);
        if let Some(t) = self.timeline.as_mut() {
            t.close(self.now);
        }
    }
}

impl Instance {
    pub(crate) fn fault_allowance_add(&mut self, d: Duration) {
        self.fault_allowance += d;
    }
}

/// Where the driver must route a world event.
#[derive(Debug)]
pub(crate) enum Routed {
    Nothing,
    Booted(InstId),
    Host(InstId, u32, HostEvent),
    Wake(InstId, u32, Time),
    Hook(InstId, JobId, HookKind),
    AgentCrash(InstId),
    AgentRestart(InstId),
}

/// What an agent finds when it starts.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    /// The listener's pid, if one runs.
    pub listener_pid: Option<u32>,
    /// The worker's pid, if one runs.
    pub worker_pid: Option<u32>,
    /// What IMDS shows, unless it is down.
    pub target: Option<Target>,
    /// Whether a spot notice is posted.
    pub spot_notice: bool,
    /// Whether the listener's perf log shows a job message whose worker has not appeared.
    pub job_message: bool,
}

/// Whether the instance is running (booting, in service or terminating), not gone or in the pool.
fn running(asg: AsgPhase) -> bool {
    !matches!(
        asg,
        AsgPhase::Gone | AsgPhase::WarmPending | AsgPhase::Warmed | AsgPhase::WarmTrimWait { .. }
    )
}

/// When a Poisson process of `per_day` events per day next fires after `now` (`None`: rate 0).
fn next_fault(rng: &mut Rng, now: Time, per_day: f64) -> Option<Time> {
    (per_day > 0.0).then(|| now + rng.exponential(Duration::from_secs_f64(86400.0 / per_day)))
}

fn asg_state(phase: AsgPhase) -> AsgState {
    match phase {
        AsgPhase::Pending => AsgState::Launching("Pending".into()),
        AsgPhase::InService => AsgState::InService,
        AsgPhase::Wait { .. } => AsgState::TerminatingWait,
        AsgPhase::Proceed => AsgState::TerminatingProceed("Terminating:Proceed".into()),
        AsgPhase::Gone => AsgState::TerminatingProceed("Terminated".into()),
        AsgPhase::WarmPending => AsgState::Launching("Warmed:Pending".into()),
        AsgPhase::Warmed => AsgState::Launching("Warmed:Stopped".into()),
        AsgPhase::WarmTrimWait { .. } => AsgState::TerminatingProceed("Warmed:Terminating:Wait".into()),
    }
}

fn phase_name(phase: AsgPhase) -> &'static str {
    match phase {
        AsgPhase::Pending => "Pending",
        AsgPhase::InService => "InService",
        AsgPhase::Wait { .. } => "Terminating:Wait",
        AsgPhase::Proceed => "Terminating:Proceed",
        AsgPhase::Gone => "Terminated",
        AsgPhase::WarmPending => "Warmed:Pending",
        AsgPhase::Warmed => "Warmed:Stopped",
        AsgPhase::WarmTrimWait { .. } => "Warmed:Terminating:Wait",
    }
}

fn no_active_action(inst: InstId) -> ApiError {
    ApiError::new(
        ApiErrorKind::NoActiveLifecycleAction,
        format!("No active Lifecycle Action found with instance ID i-{inst}"),
    )
}

/// A set of instances with O(1) insert, remove and random pick.
#[derive(Debug, Default)]
struct IndexedSet {
    items: Vec<InstId>,
    pos: Vec<Option<usize>>,
}

impl IndexedSet {
    fn insert(&mut self, x: InstId) {
        let i = x as usize;
        if self.pos.len() <= i {
            self.pos.resize(i + 1, None);
        }
        if self.pos[i].is_none() {
            self.pos[i] = Some(self.items.len());
            self.items.push(x);
        }
    }

    fn remove(&mut self, x: InstId) {
        let Some(p) = self.pos.get_mut(x as usize).and_then(Option::take) else {
            return;
        };
        self.items.swap_remove(p);
        if let Some(&moved) = self.items.get(p) {
            self.pos[moved as usize] = Some(p);
        }
    }

    fn get(&self, n: usize) -> InstId {
        self.items[n]
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
