//! The plan, checked against what happens: random inputs (the core's own seeded [`Rng`]) drive one
//! core at a time, a toy driver carries out its actions, and after every pass the plan
//! ([`Host::next_step`], [`Host::next_timer`]) must say what happens next: nothing it calls due now
//! is left undone by the pass that just ran, another pass at the same instant does nothing new, and
//! every step it times has a timer armed for that time or earlier.

use crate::*;
use std::time::Duration;

/// A driver that carries out the core's actions on a toy host, answering calls at random.
struct Toy {
    rng: Rng,
    host: Host,
    now: Time,
    /// Calls asked for and not answered yet.
    calls: Vec<(RequestId, Call)>,
    /// A start was asked for and not reported yet.
    start_asked: bool,
    /// The listener's pid, once reported running.
    listener: Option<u32>,
    workers: Vec<u32>,
    next_pid: u32,
    exited: bool,
    seed: u64,
    trail: Vec<String>,
}

fn configs(rng: &mut Rng) -> CoreConfig {
    let hook = rng.chance(0.8).then(|| HookConfig {
        name: "drain".into(),
        heartbeat_timeout: Duration::from_secs(if rng.chance(0.5) { 30 } else { 300 }),
    });
    let listener_mode = match rng.below(3) {
        0 => ListenerMode::Persistent,
        1 => ListenerMode::OneJob,
        _ => ListenerMode::Jit,
    };
    CoreConfig {
        hook,
        listener_mode,
        one_job_per_instance: rng.chance(0.3),
        drain_on_rebalance: rng.chance(0.5),
        stop_deadline: rng.chance(0.5).then(|| Duration::from_secs(600)),
        handover: if rng.chance(0.7) {
            HandoverConfig::default()
        } else {
            HandoverConfig::off()
        },
        ..CoreConfig::default()
    }
}

fn error(rng: &mut Rng) -> ApiError {
    let kinds = [
        ApiErrorKind::NotInService,
        ApiErrorKind::NoActiveLifecycleAction,
        ApiErrorKind::InstanceNotFound,
        ApiErrorKind::Throttled,
        ApiErrorKind::Transient,
        ApiErrorKind::AccessDenied,
        ApiErrorKind::Other,
    ];
    let kind = kinds[rng.below(kinds.len() as u64) as usize];
    ApiError::new(kind, "random failure")
}

impl Toy {
    fn new(seed: u64) -> Toy {
        let mut rng = Rng::new(seed);
        let cfg = configs(&mut rng);
        Toy {
            host: Host::new(cfg, rng.next_u64(), Time::ZERO),
            rng,
            now: Time::ZERO,
            calls: Vec::new(),
            start_asked: false,
            listener: None,
            workers: Vec::new(),
            next_pid: 100,
            exited: false,
            seed,
            trail: Vec::new(),
        }
    }

    fn pid(&mut self) -> u32 {
        self.next_pid += 1;
        self.next_pid
    }

    /// Carry out every action, as the agent does (the last look at once, in one batch).
    fn settle(&mut self) -> Vec<Action> {
        let mut done = Vec::new();
        while let Some(action) = self.host.poll_action() {
            match &action {
                Action::ConfirmIdle { pid, .. } => {
                    let mut batch = Vec::new();
                    if self.listener == Some(*pid) && self.rng.chance(0.2) {
                        let w = self.pid();
                        self.workers.push(w);
                        batch.push(Input::WorkerStarted { pid: w });
                    }
                    batch.push(Input::ListenerLooked { pid: *pid });
                    self.trail.push(format!("{:?} look {batch:?}", self.now));
                    self.host.handle_inputs(batch, self.now);
                }
                Action::StartListener { .. } => self.start_asked = true,
                Action::SetProtection { id, .. } => self.calls.push((*id, Call::SetProtection)),
                Action::Describe { id, .. } => self.calls.push((*id, Call::Describe)),
                Action::Heartbeat { id, .. } => self.calls.push((*id, Call::Heartbeat)),
                Action::CompleteLifecycleAction { id, .. } => self.calls.push((*id, Call::Complete)),
                Action::FetchJitConfig { id, .. } => self.calls.push((*id, Call::MintJitConfig)),
                Action::ReleaseRunner { id } => self.calls.push((*id, Call::ReleaseRunner)),
                Action::LeaveGroup { id } => self.calls.push((*id, Call::LeaveGroup)),
                Action::Exit { .. } => self.exited = true,
                Action::StopListener { .. } | Action::KillListener { .. } | Action::Notify(_) => {}
            }
            done.push(action);
        }
        done
    }

    fn answer(&mut self, id: RequestId, call: Call) -> Input {
        let result = if self.rng.chance(0.25) {
            Err(error(&mut self.rng))
        } else {
            Ok(match call {
                Call::Describe => {
                    let states = [
                        "InService",
                        "Pending",
                        "Standby",
                        "Terminating:Wait",
                        "Terminating:Proceed",
                    ];
                    if self.rng.chance(0.1) {
                        ApiReply::Described(None)
                    } else {
                        let state = states[self.rng.below(states.len() as u64) as usize];
                        ApiReply::Described(Some(DescribedInstance {
                            state: AsgState::parse(state),
                            protected: self.rng.chance(0.5),
                        }))
                    }
                }
                Call::ReleaseRunner => ApiReply::Released(match self.rng.below(3) {
                    0 => Release::Removed,
                    1 => Release::Busy,
                    _ => Release::NotFound,
                }),
                _ => ApiReply::Done,
            })
        };
        Input::ApiResult { id, result }
    }

    /// One random thing happens (or time passes to the next timer).
    fn step(&mut self) {
        let input = match self.rng.below(12) {
            0..=2 => {
                let to = match self.host.next_timer() {
                    Some((t, _)) if self.rng.chance(0.8) => t,
                    _ => self.now + Duration::from_millis(1 + self.rng.below(20_000)),
                };
                self.now = to;
                self.trail.push(format!("{to:?} timeout"));
                self.host.handle_timeout(to);
                return;
            }
            3 | 4 if !self.calls.is_empty() => {
                let i = self.rng.below(self.calls.len() as u64) as usize;
                let (id, call) = self.calls.remove(i);
                self.answer(id, call)
            }
            5 if self.start_asked => {
                self.start_asked = false;
                let pid = self.pid();
                self.listener = Some(pid);
                Input::ListenerStarted { pid }
            }
            6 if self.listener.is_some() => {
                self.listener = None;
                self.workers.clear();
                let codes = [0, 0, 1, 2, 3, 5];
                let code = codes[self.rng.below(codes.len() as u64) as usize];
                Input::ListenerExited {
                    code: self.rng.chance(0.9).then_some(code),
                }
            }
            7 if self.listener.is_some() => {
                if self.workers.is_empty() || self.rng.chance(0.3) {
                    let w = self.pid();
                    self.workers.push(w);
                    Input::WorkerStarted { pid: w }
                } else {
                    Input::WorkerExited {
                        pid: self.workers.remove(0),
                    }
                }
            }
            8 => match self.rng.below(3) {
                0 => Input::JobStartedHook,
                1 => Input::JobCompletedHook,
                _ => Input::JobMessageReceived,
            },
            // Mostly serving: a drain ends a run's interesting part, so its causes are rare.
            9 | 10 => match self.rng.below(60) {
                0 => Input::TargetState(TargetState::Terminated),
                1 => Input::SpotInterruption,
                2 => Input::RebalanceRecommendation,
                3..=5 => Input::TargetState(TargetState::NotInGroup),
                6..=9 => Input::ImdsUnavailable,
                _ => Input::TargetState(TargetState::InService),
            },
            11 if self.rng.chance(0.03) => Input::StopRequested,
            _ => return,
        };
        self.now = self.now + Duration::from_millis(self.rng.below(3_000));
        self.trail.push(format!("{:?} {input:?}", self.now));
        self.host.handle_input(input, self.now);
    }

    fn fail(&self, what: String) -> ! {
        let tail: Vec<&String> = self.trail.iter().rev().take(25).rev().collect();
        panic!(
            "seed {}: {what}\nconfig {:?}\nlast inputs:\n{tail:#?}\nsnapshot {:#?}",
            self.seed,
            self.host.config(),
            self.host.snapshot()
        );
    }

    /// The plan says what happens next.
    fn check(&mut self) {
        if self.exited {
            return;
        }
        let now = self.now;
        let plan = self.host.next_step();
        let timer = self.host.next_timer().map(|(t, _)| t);
        let timed = |at: Time| timer.is_some_and(|t| t <= at);
        let mut due: Vec<Time> = Vec::new();
        let wrong = |what: &str| Some(format!("{what}: the plan says {plan:?}"));
        let mut problem = None;
        if let Some(d) = plan.describe {
            match d.when {
                DescribeWhen::DueNow => problem = wrong("a describe is due now, yet the pass did not ask for it"),
                DescribeWhen::PollAt(t) | DescribeWhen::Call(CallProgress::RetryAt(t)) => due.push(t),
                DescribeWhen::Call(CallProgress::InFlight) => {}
            }
        }
        let retry = |p: Option<CallProgress>, due: &mut Vec<Time>| {
            if let Some(CallProgress::RetryAt(t)) = p {
                due.push(t);
            }
        };
        match plan.step {
            Some(Step::StopIdleListener { .. }) => problem = wrong("a stop is due now, yet none went out"),
            Some(Step::Exiting) => problem = wrong("the exit is due now, yet the core did not exit"),
            Some(Step::LeaveGroup(None)) => problem = wrong("leaving the group is due now, yet not asked"),
            Some(Step::CompleteHook(None)) => problem = wrong("completing the hook is due now, yet not asked"),
            Some(Step::AwaitJitConfig(None)) => problem = wrong("a config fetch is due now, yet not asked"),
            Some(Step::Unprotect { at, progress: None }) if at <= now => {
                problem = wrong("clearing protection is due now, yet not asked")
            }
            Some(Step::Unprotect { at, progress }) => {
                if progress.is_none() {
                    due.push(at);
                }
                retry(progress, &mut due);
            }
            Some(Step::Relaunch { at }) => due.push(at),
            Some(Step::WaitIdleExit { kill_at, .. }) => due.push(kill_at),
            Some(Step::HoldStop { until: Some(u), .. }) => due.push(u),
            Some(Step::WaitForJob {
                heartbeat, force_at, ..
            }) => {
                if let Some(HeartbeatWhen::At(t) | HeartbeatWhen::Call(CallProgress::RetryAt(t))) = heartbeat {
                    due.push(t);
                }
                if let Some(f) = force_at {
                    due.push(f);
                }
            }
            Some(
                Step::AwaitJitConfig(p)
                | Step::CompleteHook(p)
                | Step::LeaveGroup(p)
                | Step::UnprotectBeforeExit(p)
                | Step::UnprotectBeforeLeave(p),
            ) => retry(p, &mut due),
            Some(Step::IdleProtectionCall(p)) => retry(Some(p), &mut due),
            _ => {}
        }
        // The plan itself, area by area: nothing due now is left, every time has its timer.
        let full = self.host.plan();
        // What the shells show (status, the metrics) is this plan, every part of it.
        if let Some(step) = plan.step {
            if !Step::NAMES.contains(&step.name()) {
                self.fail(format!("{step:?} is named {:?}, which Step::NAMES lacks", step.name()));
            }
        }
        let parts = [
            full.describe.is_some(),
            full.fetch.is_some(),
            full.listener.is_some(),
            full.protection.is_some(),
            full.hook.is_some(),
            full.leave.is_some(),
            full.exit.is_some(),
        ];
        let entries = full.entries();
        if entries.len() != parts.iter().filter(|p| **p).count() || self.host.snapshot().plan != full {
            self.fail(format!("the listed plan {entries:?} is not the plan {full:?}"));
        }
        let mut late = |what: &str| {
            if problem.is_none() {
                problem = Some(format!("{what} is due now, yet the pass left it: {full:?}"));
            }
        };
        if let Some(FetchStep { progress, .. }) = full.fetch {
            match progress {
                None => late("a config fetch"),
                Some(p) => retry(Some(p), &mut due),
            }
        }
        match full.listener {
            Some(ListenerStep::Start { at, .. }) if at <= now => late("the listener's start"),
            Some(ListenerStep::Start { at, .. } | ListenerStep::Kill { at, .. }) => due.push(at),
            Some(ListenerStep::ConfirmThenStop { .. } | ListenerStep::Confirming) => late("the stop"),
            Some(ListenerStep::Release(None)) => late("the release"),
            Some(ListenerStep::ForceStop { .. }) => late("the forced stop"),
            Some(ListenerStep::Hold { until: Some(u), .. }) => due.push(u),
            _ => {}
        }
        if let Some(p) = full.protection {
            match p.progress {
                None if p.at <= now => late("a protection change"),
                None => due.push(p.at),
                Some(c) => retry(Some(c), &mut due),
            }
        }
        match full.hook {
            Some(HookStep::Heartbeat { warn_global: true, .. }) => late("the global-timeout warning"),
            Some(HookStep::Heartbeat { at: None, .. }) => late("scheduling the heartbeat"),
            Some(HookStep::Heartbeat {
                at: Some(t),
                progress: None,
                ..
            }) if t <= now => late("a heartbeat"),
            Some(HookStep::Heartbeat {
                at: Some(t),
                progress: None,
                ..
            }) => due.push(t),
            Some(HookStep::Complete {
                listener_down: true,
                progress: None,
            }) => late("completing the hook"),
            Some(HookStep::Heartbeat { progress, .. } | HookStep::Complete { progress, .. }) => {
                retry(progress, &mut due)
            }
            None => {}
        }
        match full.leave {
            Some(LeaveStep {
                unprotect_first: false,
                progress: None,
            }) => late("leaving the group"),
            Some(LeaveStep { progress, .. }) => retry(progress, &mut due),
            None => {}
        }
        if full.exit == Some(ExitStep::Now) {
            late("the exit");
        }
        if let Some(p) = problem {
            self.fail(p);
        }
        for at in due {
            if !timed(at) {
                self.fail(format!(
                    "the plan times a step at {at:?}, but the next timer is {timer:?}: {plan:?}"
                ));
            }
        }
        // Another pass at the same instant does nothing new: the plan had nothing else due.
        self.host.handle_timeout(now);
        let again: Vec<Action> = std::iter::from_fn(|| self.host.poll_action())
            .filter(|a| !matches!(a, Action::Notify(_)))
            .collect();
        if !again.is_empty() {
            self.fail(format!(
                "a second pass at the same instant did {again:?}; the plan said {plan:?}"
            ));
        }
    }
}

#[test]
fn what_the_plan_says_happens_next_is_what_happens() {
    for seed in 0..400 {
        let mut toy = Toy::new(seed);
        toy.host.handle_timeout(Time::ZERO);
        toy.settle();
        for _ in 0..400 {
            if toy.exited {
                break;
            }
            toy.step();
            toy.settle();
            toy.check();
        }
    }
}
