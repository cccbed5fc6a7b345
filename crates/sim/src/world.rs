//! The simulated world: an Auto Scaling group with a termination hook and an idle-runner scaling
//! policy, IMDS that lags, a GitHub job broker, runner listeners and workers that behave as upstream
//! does, and faults. Strategies act on it only through the methods a real host could use.

use crate::config::{timing, Scaling, SimConfig, Unacquired};
use crate::jobs::{JobSource, JobStore};
use crate::metrics::{JobOutcome, Metrics, Violation};
use crate::queue::EventQueue;
use crate::streams::{self, Streams};
use crate::timeline::TimelineRecorder;
use lifecycle_core::{ApiError, ApiErrorKind, ApiReply, AsgState, DescribedInstance, ListenerMode, Rng, Time};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

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
    /// RecordLifecycleActionHeartbeat.
    Heartbeat,
    /// CompleteLifecycleAction.
    Complete,
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

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Listener {
    Down,
    Starting,
    Polling,
    /// The broker handed it a job that is on its way.
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
    Deliver(InstId, JobId),
    HookStart(InstId, JobId),
    JobDone(InstId, JobId),
    WorkerExit(InstId, JobId, bool),
    HookExpire(InstId, u32),
    BusyFlag(InstId, u32, JobId),
    DemandEval,
    Requeue(JobId),
    ThrottleEpisode,
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
            Ev::Arrival(_) | Ev::ScalingEval | Ev::DemandEval | Ev::Requeue(_) | Ev::ThrottleEpisode | Ev::WarmTrim => {
                None
            }
            Ev::Boot(i)
            | Ev::ListenerReady(i, _)
            | Ev::ListenerExit(i, _, _)
            | Ev::Relaunch(i, _)
            | Ev::Deliver(i, _)
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

/// The world, without the strategies' per-host controllers (those live beside it, see `sim.rs`).
#[derive(Debug)]
pub struct World {
    /// The run's parameters.
    pub cfg: SimConfig,
    /// The fake clock.
    pub now: Time,
    /// The strategies' own randomness (their timers, the cores' seeds).
    pub rng: Rng,
    /// The world's randomness, one stream per concern so that strategies face the same world.
    streams: Streams,
    pub(crate) queue: EventQueue<Ev>,
    pub(crate) instances: Vec<Instance>,
    jobs: JobStore,
    job_queue: VecDeque<JobId>,
    /// Listeners polling for a job: the broker's dispatch pool. A host picked for scale-in stays in
    /// it until its listener is signalled (the listener long-polls until it is stopped).
    idle: IndexedSet,
    /// Listeners online (polling, handed a job, or running one), as GitHub's runner list shows them.
    online: u32,
    /// Online listeners whose job GitHub's `busy` flag already shows.
    busy_flagged: u32,
    /// Until then an account-wide throttling episode is under way.
    throttled_until: Time,
    /// Stopped instances in the warm pool, oldest first.
    warm: VecDeque<InstId>,
    /// Instances launching into the warm pool.
    warm_pending: u32,
    /// Whether the strategy's central handler completes warm-pool trims.
    central_completes_trims: bool,
    /// One instance's timeline (`--trace-instance` with `--plot`).
    pub(crate) timeline: Option<TimelineRecorder>,
    /// InService and unprotected: the scale-in candidates.
    candidates: IndexedSet,
    /// In Terminating:Wait.
    waiting: BTreeSet<InstId>,
    pending: u32,
    in_service: u32,
    alive: u32,
    desired: u32,
    above_target_periods: u32,
    below_target_periods: u32,
    /// Workers alive (jobs running).
    workers: u32,
    /// The demand policy's memory.
    demand_state: lifecycle_core::scaling::ScalingState,
    /// A webhook-triggered demand evaluation is already on its way.
    demand_eval_pending: bool,
    last_scale_in: Option<Time>,
    last_scale_out: Option<Time>,
    /// What happened.
    pub metrics: Metrics,
    /// Whether the strategy promises the invariants (runner-lifecycle does).
    pub check_invariants: bool,
    /// How runner listeners run in this world.
    pub listener_mode: ListenerMode,
    /// Invariant violations found so far.
    pub violations: Vec<Violation>,
    pid_seq: u32,
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
            desired: cfg.idle_target,
            streams: Streams::new(cfg.seed),
            timeline: cfg.trace_instance.map(TimelineRecorder::new),
            cfg,
            now: Time::ZERO,
            rng,
            queue: EventQueue::default(),
            instances: Vec::new(),
            jobs: JobStore::new(source),
            job_queue: VecDeque::new(),
            idle: IndexedSet::default(),
            online: 0,
            busy_flagged: 0,
            throttled_until: Time::ZERO,
            warm: VecDeque::new(),
            warm_pending: 0,
            central_completes_trims,
            candidates: IndexedSet::default(),
            waiting: BTreeSet::new(),
            pending: 0,
            in_service: 0,
            alive: 0,
            above_target_periods: 0,
            below_target_periods: 0,
            workers: 0,
            demand_state: Default::default(),
            demand_eval_pending: false,
            last_scale_in: None,
            last_scale_out: None,
            metrics: Metrics::default(),
            check_invariants,
            listener_mode,
            violations: Vec::new(),
            pid_seq: 1000,
        }
    }

    /// Start the run: the group at its minimum, already InService, and the first events.
    pub(crate) fn start(&mut self) {
        if let Some((id, at)) = self.jobs.pull_next() {
            self.queue.push(at, Ev::Arrival(id));
        }
        self.queue.push(Time::ZERO + timing::SCALING_PERIOD, Ev::ScalingEval);
        for _ in 0..self.desired {
            self.launch(true);
        }
        for _ in 0..self.cfg.warm_pool {
            self.launch_into_pool(true);
        }
        let f = &self.cfg.faults;
        if let Some(at) = next_fault(&mut self.streams.account, Time::ZERO, f.throttle_episodes_per_day) {
            self.queue.push(at, Ev::ThrottleEpisode);
        }
        let trims = if self.cfg.warm_pool > 0 {
            self.cfg.warm_trims_per_day
        } else {
            0.0
        };
        if let Some(at) = next_fault(&mut self.streams.account, Time::ZERO, trims) {
            self.queue.push(at, Ev::WarmTrim);
        }
    }

    /// Set a listener's state, keeping the broker's pool and GitHub's view in step.
    fn set_listener(&mut self, inst: InstId, new: Listener) {
        let idx = inst as usize;
        let old = std::mem::replace(&mut self.instances[idx].listener, new);
        let online = |l: Listener| matches!(l, Listener::Polling | Listener::Claimed(_) | Listener::Busy(_));
        match (online(old), online(new)) {
            (false, true) => self.online += 1,
            (true, false) => self.online -= 1,
            _ => {}
        }
        if self.instances[idx].busy_flag && !matches!(new, Listener::Busy(_)) {
            self.instances[idx].busy_flag = false;
            self.busy_flagged -= 1;
        }
        if new == Listener::Polling {
            self.idle.insert(inst);
        } else {
            self.idle.remove(inst);
        }
        if old != new {
            let state = match new {
                Listener::Down => "Down".to_string(),
                Listener::Starting => "Starting".to_string(),
                Listener::Polling => "Polling".to_string(),
                Listener::Claimed(j) => format!("Handed job {j}"),
                Listener::Busy(j) => format!("Busy job {j}"),
                Listener::Exiting => "Exiting".to_string(),
            };
            self.record_span(inst, "listener", state);
        }
    }

    /// Record a state change on one lane of the traced instance's timeline.
    fn record_span(&mut self, inst: InstId, lane: &'static str, state: String) {
        if let Some(t) = self.timeline.as_mut().filter(|t| t.instance() == inst) {
            t.state(lane, self.now, state);
        }
    }

    /// Record a point event on the traced instance's timeline.
    pub fn record_mark(&mut self, inst: InstId, lane: &'static str, label: impl FnOnce() -> String) {
        if let Some(t) = self.timeline.as_mut().filter(|t| t.instance() == inst) {
            t.mark(lane, self.now, label());
        }
    }

    /// Run a strategy's step on `inst` after `after` (work that takes time before its effect).
    pub fn defer(&mut self, inst: InstId, after: Duration, what: Deferred) {
        let gen = self.instances[inst as usize].agent_gen;
        self.queue.push(self.now + after, Ev::Deferred(inst, gen, what));
    }

    /// The latency of one `aws` CLI call from a bash script (the source PR's hooks and units).
    pub fn cli_latency(&mut self) -> Duration {
        timing::AWS_CLI.mul_f64(0.8 + 0.4 * self.streams.lat.unit())
    }

    /// A duration drawn from the world's latency stream, uniform in the range.
    pub fn latency(&mut self, range: (Duration, Duration)) -> Duration {
        between(&mut self.streams.lat, range)
    }

    fn next_pid(&mut self) -> u32 {
        self.pid_seq += 1;
        self.pid_seq
    }

    // ----- what a host can observe and do -----

    /// What a freshly started agent finds on its host.
    pub fn observe(&mut self, inst: InstId) -> Observation {
        let i = &mut self.instances[inst as usize];
        i.worker_seen |= i.worker.is_some();
        let i = &self.instances[inst as usize];
        let listener_pid = match i.listener {
            Listener::Down | Listener::Starting => None,
            _ => Some(i.listener_pid),
        };
        Observation {
            listener_pid,
            worker_pid: i.worker.map(|(_, pid, _)| pid),
            target: if self.now >= i.imds_down_until {
                Some(self.visible_target(i))
            } else {
                None
            },
            spot_notice: i.spot_notice,
        }
    }

    fn visible_target(&self, i: &Instance) -> Target {
        if self.now >= i.target_visible_at {
            i.target
        } else {
            Target::InService
        }
    }

    /// Start the listener (no-op unless it is down and the host running).
    pub fn start_listener(&mut self, inst: InstId) {
        let now = self.now;
        let i = &self.instances[inst as usize];
        if i.listener != Listener::Down || !running(i.asg) {
            return;
        }
        self.set_listener(inst, Listener::Starting);
        let i = &mut self.instances[inst as usize];
        i.listener_gen += 1;
        let gen = i.listener_gen;
        let d = between(&mut self.streams.lat, timing::LISTENER_START);
        self.queue.push(now + d, Ev::ListenerReady(inst, gen));
    }

    /// SIGINT to the listener. Upstream, that cancels a running job (actions/runner
    /// src/Runner.Listener/Runner.cs); a job already handed to it is lost the same way.
    pub fn signal_listener(&mut self, inst: InstId) {
        let now = self.now;
        let idx = inst as usize;
        let exit_after = match self.instances[idx].listener {
            Listener::Down | Listener::Exiting => return,
            Listener::Starting | Listener::Polling => timing::IDLE_EXIT,
            Listener::Claimed(job) => {
                self.drop_unacquired(job, JobOutcome::LostInStopWindow);
                timing::IDLE_EXIT
            }
            Listener::Busy(job) => {
                // A worker the host's software was not yet told about is the stop window; one it knew
                // of is a cancel.
                let seen = self.instances[idx].worker_seen;
                let outcome = if seen {
                    JobOutcome::Cancelled
                } else {
                    JobOutcome::LostInStopWindow
                };
                self.finish_job(job, outcome);
                let exit = between(&mut self.streams.lat, timing::CANCEL_EXIT);
                self.queue.push(now + exit, Ev::WorkerExit(inst, job, false));
                exit
            }
        };
        self.record_mark(inst, "listener", || "SIGINT".into());
        self.set_listener(inst, Listener::Exiting);
        let gen = self.instances[idx].listener_gen;
        self.queue.push(now + exit_after, Ev::ListenerExit(inst, gen, Some(0)));
    }

    /// SIGKILL to the listener: it is gone at once, and its worker with it.
    pub fn kill_listener(&mut self, inst: InstId) {
        self.listener_dies(inst, None, JobOutcome::Failed(crate::metrics::FailCause::Killed));
    }

    /// An Auto Scaling call, answered as AWS would, with injected faults. The effect applies now; the
    /// caller models the round trip.
    pub fn call(&mut self, inst: InstId, call: ApiCall) -> Result<ApiReply, ApiError> {
        let result = self.call_inner(inst, call);
        self.trace(inst, || format!("api {call:?} -> {result:?}"));
        self.record_mark(inst, "api", || {
            let ok = if result.is_ok() { "" } else { " (failed)" };
            format!("{call:?}{ok}")
        });
        result
    }

    fn call_inner(&mut self, inst: InstId, call: ApiCall) -> Result<ApiReply, ApiError> {
        self.metrics.asg_api_calls += 1;
        let faults = &self.cfg.faults;
        let (mut throttle, error) = (faults.throttle_rate, faults.error_rate);
        if self.now < self.throttled_until {
            throttle = throttle.max(timing::EPISODE_THROTTLE);
        }
        if self.streams.api.chance(throttle) {
            self.note_api_fault(inst, call);
            return Err(ApiError::new(ApiErrorKind::Throttled, "Rate exceeded"));
        }
        if self.streams.api.chance(error) {
            self.note_api_fault(inst, call);
            return Err(ApiError::new(ApiErrorKind::Transient, "InternalFailure (500)"));
        }
        let now = self.now;
        let idx = inst as usize;
        let asg = self.instances[idx].asg;
        match call {
            ApiCall::Describe => Ok(ApiReply::Described(match asg {
                AsgPhase::Gone => None,
                phase => Some(DescribedInstance {
                    state: asg_state(phase),
                    protected: self.instances[idx].protected,
                }),
            })),
            ApiCall::SetProtection(true) => match asg {
                AsgPhase::InService => {
                    self.set_protected(inst, true);
                    Ok(ApiReply::Done)
                }
                _ => Err(ApiError::new(
                    ApiErrorKind::NotInService,
                    format!("The instance i-{inst} is not in InService or EnteringStandby or Standby."),
                )),
            },
            ApiCall::SetProtection(false) => {
                self.set_protected(inst, false);
                // A scale-in deferred because everything was protected takes this instance at once.
                self.reconcile();
                Ok(ApiReply::Done)
            }
            ApiCall::Heartbeat => match asg {
                AsgPhase::Wait { seq, since, global, .. } => {
                    if self.check_invariants {
                        let i = &self.instances[idx];
                        let job_recent =
                            i.worker.is_some() || now.since(i.last_worker_exit) <= timing::WORKER_OBSERVATION * 2;
                        if !job_recent {
                            self.violate(inst, "heartbeat while no job was alive");
                        }
                    }
                    let deadline = (now + self.cfg.hook_timeout).min(global);
                    self.instances[idx].asg = AsgPhase::Wait {
                        seq,
                        since,
                        deadline,
                        global,
                    };
                    self.metrics.heartbeats += 1;
                    Ok(ApiReply::Done)
                }
                _ => Err(no_active_action(inst)),
            },
            ApiCall::Complete => match asg {
                AsgPhase::WarmTrimWait { .. } => {
                    self.metrics.warm_trims_completed += 1;
                    self.leave_trim_wait(inst);
                    self.gone(inst, false);
                    Ok(ApiReply::Done)
                }
                AsgPhase::Wait { .. } => {
                    self.metrics.hooks_completed += 1;
                    if self.check_invariants {
                        if self.instances[idx].worker.is_some() {
                            self.violate(inst, "lifecycle action completed while a job was alive");
                        }
                        self.check_idle_wait(inst, true);
                    }
                    self.proceed(inst);
                    Ok(ApiReply::Done)
                }
                _ => Err(no_active_action(inst)),
            },
        }
    }

    /// A call made through a client that retries throttling and 5xx by itself, up to `attempts` tries
    /// in all (AWS CLI legacy retry mode: 5; AWS SDKs' standard mode: 3). Every try is an API call.
    pub fn call_retrying(&mut self, inst: InstId, call: ApiCall, attempts: u32) -> Result<ApiReply, ApiError> {
        let mut result = self.call(inst, call);
        for _ in 1..attempts {
            match &result {
                Err(e) if e.kind.is_retryable_soon() => result = self.call(inst, call),
                _ => break,
            }
        }
        result
    }

    fn note_api_fault(&mut self, inst: InstId, call: ApiCall) {
        // Retries after a failure are part of the idle-wait allowance: describe backs off up to 30 s,
        // completion up to 4 s (lifecycle-core CoreConfig defaults).
        let extra = match call {
            ApiCall::Describe => Duration::from_secs(30),
            ApiCall::Complete => Duration::from_secs(4),
            _ => Duration::ZERO,
        };
        self.instances[inst as usize].fault_allowance += extra;
    }

    // ----- the group -----

    fn launch(&mut self, in_service: bool) -> InstId {
        if let Some(inst) = self.warm.pop_front() {
            // Scale-out takes a stopped instance from the warm pool first; the pool is refilled.
            self.set_phase(inst, AsgPhase::Pending);
            self.alive += 1;
            let boot = between(&mut self.streams.lat, timing::WARM_START);
            self.queue.push(self.now + boot, Ev::Boot(inst));
            self.launch_into_pool(false);
            return inst;
        }
        let inst = self.new_instance();
        self.alive += 1;
        self.set_phase(inst, AsgPhase::Pending);
        let boot = if in_service {
            Duration::ZERO
        } else {
            between(&mut self.streams.lat, timing::BOOT)
        };
        self.queue.push(self.now + boot, Ev::Boot(inst));
        inst
    }

    /// Launch an instance into the warm pool: it boots, then is stopped (not billed as running).
    fn launch_into_pool(&mut self, at_start: bool) {
        let inst = self.new_instance();
        self.instances[inst as usize].asg = AsgPhase::WarmPending;
        self.warm_pending += 1;
        let boot = if at_start {
            Duration::ZERO
        } else {
            between(&mut self.streams.lat, timing::BOOT)
        };
        self.queue.push(self.now + boot, Ev::WarmReady(inst));
    }

    fn new_instance(&mut self) -> InstId {
        let inst = self.instances.len() as InstId;
        let poll_phase = self.streams.lat.jitter(timing::IMDS_POLL, 0.0, 1.0);
        self.instances.push(Instance {
            // Not yet counted anywhere: the caller moves it to Pending or keeps it in the pool.
            asg: AsgPhase::WarmPending,
            protected: false,
            target: Target::InService,
            target_visible_at: Time::ZERO,
            imds_down_until: Time::ZERO,
            poll_phase,
            spot_notice: false,
            listener: Listener::Down,
            listener_gen: 0,
            listener_pid: 0,
            worker: None,
            last_worker_exit: Time::ZERO,
            agent_up: false,
            agent_gen: 0,
            wake_at: None,
            idle_in_wait_since: None,
            fault_allowance: Duration::ZERO,
            global_timeout_hit: false,
            terminations: 0,
            busy_flag: false,
            worker_seen: false,
            faults_rng: streams::instance_faults(self.cfg.seed, inst),
        });
        inst
    }

    /// Move an instance to a new Auto Scaling phase, keeping the counters and candidate sets true.
    fn set_phase(&mut self, inst: InstId, phase: AsgPhase) {
        let old = std::mem::replace(&mut self.instances[inst as usize].asg, phase);
        for (p, sign) in [(old, -1i64), (phase, 1)] {
            let counter = match p {
                AsgPhase::Pending => Some(&mut self.pending),
                AsgPhase::InService => Some(&mut self.in_service),
                _ => None,
            };
            if let Some(c) = counter {
                *c = (i64::from(*c) + sign) as u32;
            }
        }
        if matches!(old, AsgPhase::Wait { .. }) && !matches!(phase, AsgPhase::Wait { .. }) {
            self.waiting.remove(&inst);
        }
        if matches!(phase, AsgPhase::Wait { .. }) {
            self.waiting.insert(inst);
        }
        if phase == AsgPhase::Gone && running(old) {
            self.alive -= 1;
        }
        if old != phase {
            self.record_span(inst, "asg", phase_name(phase).to_string());
        }
        self.refresh_candidate(inst);
    }

    fn set_protected(&mut self, inst: InstId, protected: bool) {
        self.instances[inst as usize].protected = protected;
        self.refresh_candidate(inst);
    }

    fn refresh_candidate(&mut self, inst: InstId) {
        let i = &self.instances[inst as usize];
        if i.asg == AsgPhase::InService && !i.protected {
            self.candidates.insert(inst);
        } else {
            self.candidates.remove(inst);
        }
    }

    /// Launch or pick instances until the group matches its desired capacity.
    fn reconcile(&mut self) {
        let active = self.pending + self.in_service;
        for _ in active..self.desired {
            self.launch(false);
        }
        if active <= self.desired {
            return;
        }
        for _ in self.desired..active {
            // The default termination policy (AZ balance, oldest launch template, nearest billing hour)
            // is arbitrary within one AZ and template: pick at random among the unprotected.
            if self.candidates.is_empty() {
                return; // all protected: termination deferred until one is unprotected
            }
            let pick = self
                .candidates
                .get(self.streams.asg.below(self.candidates.len() as u64) as usize);
            self.begin_termination(pick);
        }
    }

    fn begin_termination(&mut self, inst: InstId) {
        let now = self.now;
        let global = now
            + self
                .cfg
                .hook_timeout
                .saturating_mul(100)
                .min(Duration::from_secs(48 * 3600));
        let idx = inst as usize;
        self.metrics.scale_ins += 1;
        self.instances[idx].terminations += 1;
        let seq = self.instances[idx].terminations;
        self.set_phase(
            inst,
            AsgPhase::Wait {
                seq,
                since: now,
                deadline: now + self.cfg.hook_timeout,
                global,
            },
        );
        let i = &mut self.instances[idx];
        i.target = Target::Terminated;
        i.target_visible_at = now + self.cfg.imds_lag;
        // Faults already under way delay this drain too.
        i.fault_allowance = if i.agent_up {
            Duration::ZERO
        } else {
            timing::AGENT_RESTART
        };
        if i.imds_down_until > now {
            i.fault_allowance += i.imds_down_until.since(now) + Duration::from_secs(40);
        }
        self.queue.push(now + self.cfg.hook_timeout, Ev::HookExpire(inst, seq));
        let seen = self.next_poll_after(inst, now + self.cfg.imds_lag);
        let gen = self.instances[idx].agent_gen;
        self.queue
            .push(seen, Ev::Host(inst, gen, HostEvent::Imds(Target::Terminated)));
        // The fire-and-forget stop path of the designs that need one (EventBridge -> Lambda -> SSM).
        // Drawn from the instance's own stream, so every strategy faces the same losses.
        let i = &mut self.instances[idx];
        let stop_after = self
            .cfg
            .event_to_stop
            .mul_f64((timing::EVENT_TO_STOP_SIGMA * i.faults_rng.normal()).exp());
        if i.faults_rng.chance(self.cfg.faults.stop_path_failure_rate) {
            self.metrics.stop_paths_lost += 1;
        } else {
            self.queue
                .push(now + stop_after, Ev::Host(inst, gen, HostEvent::TerminationEvent));
        }
        // The listener stays in the broker's pool: it long-polls until something stops it.
        self.update_idle_wait(inst);
    }

    /// When the agent's once-a-second IMDS poll first sees something visible from `t` on.
    pub(crate) fn next_poll_after(&self, inst: InstId, t: Time) -> Time {
        let i = &self.instances[inst as usize];
        let t = t.max(i.imds_down_until);
        let period = timing::IMDS_POLL.as_millis() as u64;
        let phase = i.poll_phase.as_millis() as u64;
        let ms = t.as_millis();
        let k = ms.saturating_sub(phase).div_ceil(period);
        Time::from_millis(phase + k * period).max(t)
    }

    fn proceed(&mut self, inst: InstId) {
        self.leave_wait(inst);
        self.set_phase(inst, AsgPhase::Proceed);
        self.queue.push(self.now + timing::SHUTDOWN, Ev::Gone(inst));
    }

    fn leave_wait(&mut self, inst: InstId) {
        self.update_idle_wait_to(inst, false);
    }

    fn scaling_eval(&mut self) {
        let now = self.now;
        self.queue.push(now + timing::SCALING_PERIOD, Ev::ScalingEval);
        let period = timing::SCALING_PERIOD.as_secs_f64();
        self.metrics.instance_seconds += f64::from(self.alive) * period;
        self.metrics.idle_instance_seconds += f64::from(self.alive.saturating_sub(self.workers)) * period;
        match self.cfg.scaling {
            Scaling::IdleAlarms => self.idle_alarms(),
            // The minute's reconcile: demand read back from GitHub's API repairs dropped webhooks.
            Scaling::Demand => self.demand_eval(),
        }
        if self.check_invariants {
            let waiting: Vec<InstId> = self.waiting.iter().copied().collect();
            for inst in waiting {
                self.check_idle_wait(inst, false);
            }
        }
    }

    /// A `workflow_job` webhook (queued, in progress, completed) for the demand policy: it reaches the
    /// controller after a short delay unless dropped; webhooks arriving meanwhile are coalesced into
    /// the same evaluation.
    fn webhook(&mut self) {
        if self.cfg.scaling != Scaling::Demand || self.demand_eval_pending {
            return;
        }
        if self.streams.account.chance(self.cfg.webhook_drop_rate) {
            self.metrics.webhooks_dropped += 1;
            return;
        }
        self.demand_eval_pending = true;
        let d = between(&mut self.streams.lat, timing::WEBHOOK_LATENCY);
        self.queue.push(self.now + d, Ev::DemandEval);
    }

    fn demand_eval(&mut self) {
        use lifecycle_core::scaling::{Demand, DemandPolicy, ScaleDecision};
        let policy = DemandPolicy {
            idle_target: self.cfg.demand_idle_target,
            min: self.cfg.idle_target,
            max: self.cfg.instances,
            scale_in_after: self.cfg.scale_in_after,
        };
        // Jobs GitHub shows as queued (including those handed to a listener but not yet started) and
        // in progress.
        let demand = Demand {
            queued: (self.job_queue.len() as u32)
                .saturating_add(self.online.saturating_sub(self.idle.len() as u32 + self.workers)),
            running: self.workers,
        };
        let now = self.now;
        if let ScaleDecision::Set { desired, .. } =
            policy.decide(&mut self.demand_state, self.desired, Some(demand), now)
        {
            if desired != self.desired {
                self.desired = desired;
                self.metrics.scale_actions += 1;
                self.reconcile();
            }
        }
    }

    fn idle_alarms(&mut self) {
        let now = self.now;
        // The source PR's metric: GitHub's `online && !busy` runners, sampled once a minute. It counts
        // listeners on hosts already picked for termination, and a just-started job's runner until its
        // busy flag shows (config `busy_flag_lag`).
        let idle = self.online - self.busy_flagged;
        let pending = self.pending;
        let target = self.cfg.idle_target;
        let (min, max) = (target, self.cfg.instances);
        self.above_target_periods = if idle > target {
            self.above_target_periods + 1
        } else {
            0
        };
        self.below_target_periods = if idle + pending < target {
            self.below_target_periods + 1
        } else {
            0
        };
        let cooled = |last: Option<Time>, cd: Duration| last.is_none_or(|t| now.since(t) >= cd);
        if self.above_target_periods >= timing::SCALE_IN_PERIODS
            && cooled(self.last_scale_in, timing::SCALE_IN_COOLDOWN)
            && self.desired > min
        {
            self.desired -= 1;
            self.last_scale_in = Some(now);
            self.metrics.scale_actions += 1;
        } else if self.below_target_periods >= timing::SCALE_IN_PERIODS
            && cooled(self.last_scale_out, timing::SCALE_OUT_COOLDOWN)
            && self.desired < max
        {
            self.desired += 1;
            self.last_scale_out = Some(now);
            self.metrics.scale_actions += 1;
        }
        self.reconcile();
    }

    // ----- the job broker and the runner -----

    fn arrival(&mut self, job: JobId) {
        if let Some((id, at)) = self.jobs.pull_next() {
            self.queue.push(at, Ev::Arrival(id));
        }
        self.metrics.jobs_total += 1;
        self.webhook();
        self.job_queue.push_back(job);
        self.dispatch();
    }

    fn make_idle(&mut self, inst: InstId) {
        self.set_listener(inst, Listener::Polling);
        self.dispatch();
    }

    /// A job handed to a listener that stopped or died before acquiring it (config `unacquired`).
    fn drop_unacquired(&mut self, job: JobId, outcome: JobOutcome) {
        match self.cfg.unacquired {
            Unacquired::Lost => self.finish_job(job, outcome),
            Unacquired::Requeue { after } => {
                self.metrics.jobs_requeued += 1;
                self.queue.push(self.now + after, Ev::Requeue(job));
            }
        }
    }

    /// GitHub hands queued jobs to polling listeners; which one is not ours to choose.
    fn dispatch(&mut self) {
        while !self.idle.is_empty() {
            let Some(job) = self.job_queue.pop_front() else { return };
            let pick = self
                .idle
                .get(self.streams.dispatch.below(self.idle.len() as u64) as usize);
            if matches!(
                self.instances[pick as usize].asg,
                AsgPhase::Wait { .. } | AsgPhase::Proceed
            ) {
                self.metrics.jobs_dispatched_after_pick += 1;
            }
            self.set_listener(pick, Listener::Claimed(job));
            let d = between(&mut self.streams.lat, timing::DISPATCH);
            self.queue.push(self.now + d, Ev::Deliver(pick, job));
        }
    }

    fn deliver(&mut self, inst: InstId, job: JobId) {
        let now = self.now;
        let idx = inst as usize;
        if self.instances[idx].listener != Listener::Claimed(job) {
            return; // the listener stopped or died meanwhile; the job was accounted for then
        }
        let pid = self.next_pid();
        self.set_listener(inst, Listener::Busy(job));
        self.record_span(inst, "worker", format!("job {job}"));
        self.workers += 1;
        self.webhook();
        let i = &mut self.instances[idx];
        i.worker = Some((job, pid, now));
        i.worker_seen = false;
        self.jobs.start(job, now);
        let gen = i.agent_gen;
        let lgen = i.listener_gen;
        self.queue.push(
            now + timing::WORKER_OBSERVATION,
            Ev::Host(inst, gen, HostEvent::WorkerStarted(pid)),
        );
        let flag = between(&mut self.streams.lat, self.cfg.busy_flag_lag);
        self.queue.push(now + flag, Ev::BusyFlag(inst, lgen, job));
        let setup = between(&mut self.streams.lat, timing::SETUP);
        self.queue.push(now + setup, Ev::HookStart(inst, job));
        self.update_idle_wait(inst);
    }

    fn worker_alive_with(&self, inst: InstId, job: JobId) -> bool {
        self.instances[inst as usize].worker.is_some_and(|(j, _, _)| j == job) && !self.jobs.finished(job)
    }

    /// A job hook finished; a strategy whose hook takes effect later calls this itself.
    pub fn hook_finished(&mut self, inst: InstId, job: JobId, kind: HookKind, run: HookRun) {
        let now = self.now;
        if !self.worker_alive_with(inst, job) {
            return;
        }
        if run.fails_job {
            self.finish_job(job, JobOutcome::Failed(crate::metrics::FailCause::HookFailed));
            self.queue
                .push(now + run.took + timing::TEARDOWN, Ev::WorkerExit(inst, job, false));
            return;
        }
        match kind {
            HookKind::Started => {
                let d = self.jobs.duration(job);
                self.queue.push(now + run.took + d, Ev::JobDone(inst, job));
            }
            HookKind::Completed => {
                self.queue
                    .push(now + run.took + timing::TEARDOWN, Ev::WorkerExit(inst, job, true));
            }
        }
    }

    pub(crate) fn hook_due(&self, inst: InstId, job: JobId) -> bool {
        self.worker_alive_with(inst, job)
    }

    fn worker_exit(&mut self, inst: InstId, job: JobId, succeeded: bool) {
        let now = self.now;
        let idx = inst as usize;
        let Some((j, pid, _)) = self.instances[idx].worker else {
            return;
        };
        if j != job {
            return;
        }
        if succeeded {
            self.finish_job(job, JobOutcome::Succeeded);
        }
        if let Some(t) = self.timeline.as_mut().filter(|t| t.instance() == inst) {
            t.end("worker", now);
        }
        self.workers -= 1;
        self.webhook();
        let i = &mut self.instances[idx];
        i.worker = None;
        i.last_worker_exit = now;
        let gen = i.agent_gen;
        self.queue.push(
            now + timing::WORKER_OBSERVATION,
            Ev::Host(inst, gen, HostEvent::WorkerExited(pid)),
        );
        if self.instances[idx].listener == Listener::Busy(job) {
            match self.listener_mode {
                // A persistent listener polls again at once and may take the next job right away
                // (actions/runner src/Runner.Listener/Runner.cs message loop).
                ListenerMode::Persistent => self.make_idle(inst),
                // In one-job mode it exits 0 once its job completes (Runner.cs, runOnceJobReceived).
                ListenerMode::OneJob => {
                    self.set_listener(inst, Listener::Exiting);
                    let gen = self.instances[idx].listener_gen;
                    self.queue
                        .push(now + timing::IDLE_EXIT, Ev::ListenerExit(inst, gen, Some(0)));
                }
            }
        }
        self.update_idle_wait(inst);
    }

    fn listener_exit(&mut self, inst: InstId, gen: u32, code: Option<i32>) {
        let idx = inst as usize;
        let i = &self.instances[idx];
        if i.listener_gen != gen || i.listener != Listener::Exiting {
            return;
        }
        self.set_listener(inst, Listener::Down);
        let agent_gen = self.instances[idx].agent_gen;
        self.queue
            .push(self.now, Ev::Host(inst, agent_gen, HostEvent::ListenerExited(code)));
    }

    fn listener_dies(&mut self, inst: InstId, code: Option<i32>, job_outcome: JobOutcome) {
        let now = self.now;
        let idx = inst as usize;
        match self.instances[idx].listener {
            Listener::Down => return,
            Listener::Claimed(job) => self.drop_unacquired(job, job_outcome),
            _ => {}
        }
        self.set_listener(inst, Listener::Down);
        let i = &mut self.instances[idx];
        i.listener_gen += 1;
        if let Some((job, _, _)) = self.instances[idx].worker {
            // The worker loses its channel to the listener and the job fails.
            self.finish_job(job, job_outcome);
            self.worker_exit(inst, job, false);
        }
        let i = &mut self.instances[idx];
        let gen = i.agent_gen;
        self.queue
            .push(now, Ev::Host(inst, gen, HostEvent::ListenerExited(code)));
        self.update_idle_wait(inst);
    }

    fn finish_job(&mut self, job: JobId, outcome: JobOutcome) {
        let now = self.now;
        let Some((arrival, started)) = self.jobs.finish(job) else {
            return; // already accounted for
        };
        self.metrics.record_job(outcome, arrival, started, now);
        if self.check_invariants && outcome.is_tool_fault() {
            self.violations.push(Violation {
                strategy: String::new(),
                seed: self.cfg.seed,
                at: now,
                instance: None,
                what: format!("job {job} ended {outcome:?}"),
            });
        }
    }

    // ----- idle time in Terminating:Wait -----

    fn update_idle_wait(&mut self, inst: InstId) {
        let i = &self.instances[inst as usize];
        let waiting = matches!(i.asg, AsgPhase::Wait { .. });
        let idle = i.worker.is_none() && !matches!(i.listener, Listener::Claimed(_));
        self.update_idle_wait_to(inst, waiting && idle);
    }

    fn update_idle_wait_to(&mut self, inst: InstId, idle_now: bool) {
        let now = self.now;
        let i = &mut self.instances[inst as usize];
        match (i.idle_in_wait_since, idle_now) {
            (None, true) => i.idle_in_wait_since = Some(now),
            (Some(since), false) => {
                self.metrics.terminating_idle_seconds += now.since(since).as_secs_f64();
                i.idle_in_wait_since = None;
            }
            _ => {}
        }
    }

    /// The invariant: an idle runner leaves Terminating:Wait within a few seconds (plus the time its
    /// faults cost). `final_check` is the moment of completion.
    fn check_idle_wait(&mut self, inst: InstId, final_check: bool) {
        let now = self.now;
        let i = &self.instances[inst as usize];
        let (Some(idle_since), AsgPhase::Wait { since, .. }) = (i.idle_in_wait_since, i.asg) else {
            return;
        };
        // The clock starts when the agent can know: IMDS shows the change, or the runner went idle.
        let start = idle_since.max(since + self.cfg.imds_lag);
        let limit = self.cfg.idle_wait_limit() + i.fault_allowance;
        let waited = now.since(start);
        if waited > limit {
            let what = format!(
                "idle runner left in Terminating:Wait for {:.1} s (limit {:.1} s){}",
                waited.as_secs_f64(),
                limit.as_secs_f64(),
                if final_check { "" } else { ", still waiting" }
            );
            self.violate(inst, &what);
            // Report each stuck host once.
            self.instances[inst as usize].fault_allowance += Duration::from_secs(86400 * 365);
        }
    }

    /// Print a line about `inst` if it is being traced.
    pub fn trace(&self, inst: InstId, what: impl FnOnce() -> String) {
        if self.cfg.trace_instance == Some(inst) {
            eprintln!("{} i{inst} {}", self.now, what());
        }
    }

    fn violate(&mut self, inst: InstId, what: &str) {
        self.violations.push(Violation {
            strategy: String::new(),
            seed: self.cfg.seed,
            at: self.now,
            instance: Some(inst),
            what: what.to_string(),
        });
    }

    // ----- faults -----

    pub(crate) fn schedule_faults(&mut self, inst: InstId) {
        let f = self.cfg.faults.clone();
        let now = self.now;
        let rng = &mut self.instances[inst as usize].faults_rng;
        let plan = [
            (next_fault(rng, now, f.agent_crashes_per_day), Ev::AgentCrash(inst)),
            (next_fault(rng, now, f.runner_crashes_per_day), Ev::RunnerCrash(inst)),
            (next_fault(rng, now, f.imds_outages_per_day), Ev::ImdsOutage(inst)),
            (next_fault(rng, now, f.spot_interruptions_per_day), Ev::SpotNotice(inst)),
        ];
        for (at, ev) in plan {
            if let Some(at) = at {
                self.queue.push(at, ev);
            }
        }
    }

    fn reschedule_fault(&mut self, inst: InstId, rate: f64, ev: Ev) {
        let rng = &mut self.instances[inst as usize].faults_rng;
        if let Some(at) = next_fault(rng, self.now, rate) {
            self.queue.push(at, ev);
        }
    }

    /// Handle a world event; returns host events and hook runs for the driver to route.
    pub(crate) fn handle(&mut self, ev: Ev) -> Routed {
        let now = self.now;
        match ev {
            Ev::Arrival(job) => self.arrival(job),
            Ev::ScalingEval => self.scaling_eval(),
            Ev::DemandEval => {
                self.demand_eval_pending = false;
                self.demand_eval();
            }
            Ev::Boot(inst) => {
                if self.instances[inst as usize].asg == AsgPhase::Pending {
                    self.set_phase(inst, AsgPhase::InService);
                    self.schedule_faults(inst);
                    return Routed::Booted(inst);
                }
            }
            Ev::ListenerReady(inst, gen) => {
                let i = &mut self.instances[inst as usize];
                if i.listener_gen == gen && i.listener == Listener::Starting && running(i.asg) {
                    let pid = self.next_pid();
                    let i = &mut self.instances[inst as usize];
                    i.listener_pid = pid;
                    let agent_gen = i.agent_gen;
                    self.make_idle(inst);
                    self.queue
                        .push(now, Ev::Host(inst, agent_gen, HostEvent::ListenerStarted(pid)));
                }
            }
            Ev::ListenerExit(inst, gen, code) => self.listener_exit(inst, gen, code),
            Ev::Relaunch(inst, gen) => {
                if self.instances[inst as usize].listener_gen == gen {
                    self.start_listener(inst);
                }
            }
            Ev::Deliver(inst, job) => self.deliver(inst, job),
            Ev::HookStart(inst, job) => return Routed::Hook(inst, job, HookKind::Started),
            Ev::JobDone(inst, job) => return Routed::Hook(inst, job, HookKind::Completed),
            Ev::WorkerExit(inst, job, ok) => self.worker_exit(inst, job, ok),
            Ev::HookExpire(inst, seq) => {
                if let AsgPhase::Wait {
                    seq: s,
                    deadline,
                    global,
                    ..
                } = self.instances[inst as usize].asg
                {
                    if s == seq {
                        let due = deadline.min(global);
                        if now >= global {
                            // The global timeout, min(48 h, 100 x HeartbeatTimeout): no heartbeat can
                            // extend it (AWS lifecycle hook docs). A job longer than that is lost by
                            // configuration, not by the tool, which warned an hour before.
                            self.metrics.hooks_hit_global_timeout += 1;
                            self.instances[inst as usize].global_timeout_hit = true;
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
                let i = &mut self.instances[inst as usize];
                if i.listener_gen == lgen && i.listener == Listener::Busy(job) && !i.busy_flag {
                    i.busy_flag = true;
                    self.busy_flagged += 1;
                }
            }
            Ev::Requeue(job) => {
                if !self.jobs.finished(job) {
                    self.job_queue.push_front(job);
                    self.dispatch();
                }
            }
            Ev::ThrottleEpisode => {
                let len = between(&mut self.streams.account, timing::EPISODE_LENGTH);
                self.throttled_until = now + len;
                self.metrics.throttle_episodes += 1;
                let rate = self.cfg.faults.throttle_episodes_per_day;
                if let Some(at) = next_fault(&mut self.streams.account, now + len, rate) {
                    self.queue.push(at, Ev::ThrottleEpisode);
                }
            }
            Ev::WarmReady(inst) => {
                if self.instances[inst as usize].asg == AsgPhase::WarmPending {
                    self.warm_pending -= 1;
                    self.set_phase(inst, AsgPhase::Warmed);
                    self.warm.push_back(inst);
                }
            }
            Ev::WarmTrim => self.warm_trim(),
            Ev::TrimEvent(inst) => {
                if self.central_completes_trims {
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
                if let AsgPhase::WarmTrimWait { deadline } = self.instances[inst as usize].asg {
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
                let i = &mut self.instances[inst as usize];
                if let (HostEvent::WorkerStarted(pid), Some((_, current, _))) = (hev, i.worker) {
                    // Delivered to the host's software if it is up (the driver checks the generation).
                    if pid == current && i.agent_up && i.agent_gen == gen {
                        i.worker_seen = true;
                    }
                }
                return Routed::Host(inst, gen, hev);
            }
            Ev::Wake(inst, gen, at) => return Routed::Wake(inst, gen, at),
            Ev::AgentCrash(inst) => {
                if !running(self.instances[inst as usize].asg) {
                    return Routed::Nothing;
                }
                let rate = self.cfg.faults.agent_crashes_per_day;
                self.reschedule_fault(inst, rate, ev);
                return Routed::AgentCrash(inst);
            }
            Ev::AgentRestart(inst) => {
                if running(self.instances[inst as usize].asg) {
                    return Routed::AgentRestart(inst);
                }
            }
            Ev::RunnerCrash(inst) => {
                if running(self.instances[inst as usize].asg) {
                    let rate = self.cfg.faults.runner_crashes_per_day;
                    self.reschedule_fault(inst, rate, ev);
                    let outcome = JobOutcome::Failed(crate::metrics::FailCause::RunnerCrash);
                    self.listener_dies(inst, Some(2), outcome);
                }
            }
            Ev::ImdsOutage(inst) => {
                if running(self.instances[inst as usize].asg) {
                    let rate = self.cfg.faults.imds_outages_per_day;
                    self.reschedule_fault(inst, rate, ev);
                    let i = &mut self.instances[inst as usize];
                    let len = between(&mut i.faults_rng, (Duration::from_secs(5), Duration::from_secs(60)));
                    i.imds_down_until = now + len;
                    // IMDS down costs its length, the 10 s before the fallback poll starts, and one 30 s
                    // poll period (lifecycle-core CoreConfig defaults).
                    i.fault_allowance += len + Duration::from_secs(40);
                    let gen = i.agent_gen;
                    self.queue.push(now, Ev::Host(inst, gen, HostEvent::ImdsDown));
                    // When it comes back, the next poll reads whatever is visible then.
                    let back = self.next_poll_after(inst, now + len);
                    let target = self.instances[inst as usize].target;
                    let visible_at = self.instances[inst as usize].target_visible_at;
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
                let i = &mut self.instances[inst as usize];
                if running(i.asg) && !i.spot_notice {
                    i.spot_notice = true;
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

    fn gone(&mut self, inst: InstId, interrupted: bool) {
        let idx = inst as usize;
        if self.instances[idx].asg == AsgPhase::Gone {
            return;
        }
        let in_pool = !running(self.instances[idx].asg);
        let outcome = if interrupted {
            JobOutcome::KilledByInterruption
        } else if self.instances[idx].global_timeout_hit {
            JobOutcome::Failed(crate::metrics::FailCause::GlobalTimeout)
        } else {
            JobOutcome::Failed(crate::metrics::FailCause::InstanceTerminated)
        };
        if let Listener::Claimed(job) = self.instances[idx].listener {
            self.drop_unacquired(job, outcome);
        }
        if let Some((job, _, _)) = self.instances[idx].worker {
            self.finish_job(job, outcome);
            self.instances[idx].worker = None;
            self.workers -= 1;
        }
        if interrupted && matches!(self.instances[idx].asg, AsgPhase::Wait { .. }) {
            self.metrics.hooks_lost_to_interruption += 1;
        }
        self.leave_wait(inst);
        self.set_listener(inst, Listener::Down);
        self.set_phase(inst, AsgPhase::Gone);
        if let Some(t) = self.timeline.as_mut().filter(|t| t.instance() == inst) {
            t.gone(self.now);
        }
        let i = &mut self.instances[idx];
        i.agent_up = false;
        i.agent_gen += 1;
        if in_pool {
            // A trimmed pool instance is replaced in the pool.
            self.launch_into_pool(false);
        } else {
            // A dead host is replaced to keep the desired capacity.
            self.reconcile();
        }
    }

    /// A warm-pool trim: the oldest stopped instance enters `Warmed:Terminating:Wait`.
    fn warm_trim(&mut self) {
        let now = self.now;
        let rate = self.cfg.warm_trims_per_day * f64::from(self.cfg.warm_pool);
        if let Some(at) = next_fault(&mut self.streams.account, now, rate) {
            self.queue.push(at, Ev::WarmTrim);
        }
        let Some(inst) = self.warm.pop_front() else { return };
        self.metrics.warm_trims += 1;
        let deadline = now + self.cfg.hook_timeout;
        self.set_phase(inst, AsgPhase::WarmTrimWait { deadline });
        let to_handler = between(&mut self.streams.lat, timing::EVENT_TO_HANDLER);
        self.queue.push(now + to_handler, Ev::TrimEvent(inst));
        self.queue.push(deadline, Ev::TrimExpire(inst));
        self.instances[inst as usize].idle_in_wait_since = Some(now);
    }

    fn leave_trim_wait(&mut self, inst: InstId) {
        if let Some(since) = self.instances[inst as usize].idle_in_wait_since.take() {
            self.metrics.warm_trim_wait_seconds += self.now.since(since).as_secs_f64();
        }
    }

    /// Schedule a relaunch of the listener (RunnerService.js style), used by strategies without the core.
    pub fn relaunch_listener_later(&mut self, inst: InstId, after: Duration) {
        let gen = self.instances[inst as usize].listener_gen;
        self.queue.push(self.now + after, Ev::Relaunch(inst, gen));
    }

    /// The Auto Scaling state of an instance, as a describe would show it.
    pub fn asg_state(&self, inst: InstId) -> Option<AsgState> {
        match self.instances[inst as usize].asg {
            AsgPhase::Gone => None,
            phase => Some(asg_state(phase)),
        }
    }

    /// Jobs still queued for a runner right now.
    pub fn queued_jobs(&self) -> usize {
        self.job_queue.len()
    }

    /// Close the books at the end of the run.
    pub(crate) fn finish(&mut self) {
        let waiting: Vec<InstId> = self.waiting.iter().copied().collect();
        for inst in waiting {
            if self.check_invariants {
                self.check_idle_wait(inst, false);
            }
            self.leave_wait(inst);
        }
        self.metrics.jobs_unfinished += self.jobs.unfinished(self.now);
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
