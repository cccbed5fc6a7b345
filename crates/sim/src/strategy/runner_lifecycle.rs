//! runner-lifecycle: the real decision core, driven exactly as the agent drives it.

use super::Controller;
use crate::config::timing;
use crate::world::{ApiCall, HookKind, HookRun, HostEvent, InstId, JobId, Target, World};
use lifecycle_core::{
    Action, ApiError, ApiErrorKind, ApiReply, CoreConfig, HandoverConfig, HookConfig, HookReport, Host, Input,
    RequestId, Rng, Startup, StartupAction, StartupConfig, StartupInput, TargetState, Time,
};
use std::time::Duration;

/// The job hook's round trip over the agent's Unix socket.
const HOOK_VIA_SOCKET: Duration = Duration::from_millis(2);
/// The hook when the agent is down: a refused connection, one line, exit 0.
const HOOK_AGENT_DOWN: Duration = Duration::from_millis(1);

/// An IMDS read that is answered.
const IMDS_READ: Duration = Duration::from_millis(2);
/// How long the agent's identity read retries a silent IMDS before it gives up (agent `read_identity`).
const IMDS_DEADLINE: Duration = Duration::from_secs(5);

/// One host running the runner-lifecycle agent.
#[derive(Debug)]
pub struct RunnerLifecycle {
    phase: Phase,
    replies: Vec<(Time, RequestId, Result<ApiReply, ApiError>)>,
    /// The release under way: the world answers it with `HostEvent::Released`.
    release: Option<RequestId>,
}

/// The agent before and after discovery.
#[derive(Debug)]
enum Phase {
    /// Reading the identity and discovering the group (lifecycle-core `Startup`), as the agent does.
    Starting {
        startup: Startup,
        /// The seed the core gets at hand-over.
        host_seed: u64,
        /// The answer to the identity read or discovery under way, and when it arrives.
        answer: Option<(Time, StartupInput)>,
    },
    /// The decision core runs.
    Running(Box<Host>),
    /// The agent exited before its core ran.
    Exited,
}

fn core_config(w: &World) -> CoreConfig {
    CoreConfig {
        hook: Some(HookConfig {
            name: "runner-drain".into(),
            heartbeat_timeout: w.cfg.hook_timeout,
        }),
        listener_mode: w.cfg.listener_mode,
        handover: if w.cfg.handover_guard {
            HandoverConfig::default()
        } else {
            HandoverConfig::off()
        },
        one_job_per_instance: w.cfg.one_job_per_instance,
        ..CoreConfig::default()
    }
}

fn target_input(t: Target) -> Input {
    Input::TargetState(match t {
        Target::InService => TargetState::InService,
        Target::Terminated => TargetState::Terminated,
    })
}

/// The variant name of a Debug rendering, for a timeline label.
fn short(debug: &str) -> String {
    debug.split([' ', '(', '{']).next().unwrap_or(debug).to_string()
}

impl RunnerLifecycle {
    fn feed(&mut self, w: &mut World, inst: InstId, input: Input) {
        let Phase::Running(core) = &mut self.phase else {
            return;
        };
        w.trace(inst, || format!("core <- {input:?}"));
        w.record_mark(inst, "agent", || short(&format!("{input:?}")));
        core.handle_input(input, w.now);
        self.pump(w, inst);
    }

    fn feed_startup(&mut self, w: &mut World, inst: InstId, input: StartupInput) {
        let Phase::Starting { startup, .. } = &mut self.phase else {
            return;
        };
        w.trace(inst, || format!("startup <- {input:?}"));
        w.record_mark(inst, "agent", || short(&format!("{input:?}")));
        startup.handle_input(input, w.now);
        self.pump_startup(w, inst);
    }

    /// Carry out every action the startup machine asks for, as the agent does.
    fn pump_startup(&mut self, w: &mut World, inst: InstId) {
        loop {
            let Phase::Starting {
                startup,
                host_seed,
                answer,
            } = &mut self.phase
            else {
                return;
            };
            let Some(action) = startup.poll_action() else {
                return;
            };
            w.trace(inst, || format!("startup -> {action:?}"));
            w.record_mark(inst, "agent", || format!("-> {}", short(&format!("{action:?}"))));
            match action {
                StartupAction::ReadIdentity => {
                    *answer = Some(if w.imds_up(inst) {
                        (w.now + IMDS_READ, StartupInput::IdentityRead)
                    } else {
                        (
                            w.now + IMDS_DEADLINE,
                            StartupInput::IdentityFailed {
                                error: "IMDS does not answer".into(),
                            },
                        )
                    });
                }
                StartupAction::Discover => {
                    // DescribeAutoScalingInstances, then DescribeLifecycleHooks for the group.
                    let mut took = w.latency(timing::API_LATENCY);
                    let mut result = w.call(inst, ApiCall::Describe);
                    if matches!(result, Ok(ApiReply::Described(Some(_)))) {
                        took += w.latency(timing::API_LATENCY);
                        result = w.call(inst, ApiCall::DescribeHooks);
                    }
                    let input = match result {
                        Ok(_) => StartupInput::Discovered,
                        Err(e) => StartupInput::DiscoveryFailed {
                            throttled: e.kind == ApiErrorKind::Throttled,
                            error: e.to_string(),
                        },
                    };
                    *answer = Some((w.now + took, input));
                }
                StartupAction::RetryLater { delay, .. } => w.note_startup_retry(inst, Some(w.now + delay)),
                StartupAction::AnswerHookNoted { .. } => {}
                StartupAction::HandOver { replay } => {
                    w.note_startup_retry(inst, None);
                    let core = Host::new(core_config(w), *host_seed, w.now);
                    self.phase = Phase::Running(Box::new(core));
                    self.hand_over(w, inst, replay);
                    return;
                }
                StartupAction::Exit(_) => {
                    w.note_startup_retry(inst, None);
                    self.phase = Phase::Exited;
                    return;
                }
            }
        }
    }

    /// The core's first inputs: what the agent finds (processes, then the early hooks it noted, then
    /// IMDS; docs/agent.md, "Restart").
    fn hand_over(&mut self, w: &mut World, inst: InstId, replay: Vec<Input>) {
        let obs = w.observe(inst);
        // The agent reads the listener's perf log from its start: every line is known from here.
        w.take_unseen_job_message(inst);
        if let Some(pid) = obs.listener_pid {
            self.feed(w, inst, Input::ListenerStarted { pid });
        }
        if let Some(pid) = obs.worker_pid {
            self.feed(w, inst, Input::WorkerStarted { pid });
        } else if obs.job_message && w.cfg.handover_guard {
            // The perf log shows a job message and no worker has appeared: a job is landing.
            self.feed(w, inst, Input::JobMessageReceived);
        }
        for input in replay {
            self.feed(w, inst, input);
        }
        match obs.target {
            Some(t) => self.feed(w, inst, target_input(t)),
            None => self.feed(w, inst, Input::ImdsUnavailable),
        }
        if obs.spot_notice {
            self.feed(w, inst, Input::SpotInterruption);
        }
    }

    /// Carry out every action the core asks for.
    fn pump(&mut self, w: &mut World, inst: InstId) {
        let Phase::Running(core) = &mut self.phase else {
            return;
        };
        while let Some(action) = core.poll_action() {
            w.trace(inst, || format!("core -> {action:?}"));
            w.record_mark(inst, "agent", || format!("-> {}", short(&format!("{action:?}"))));
            let (id, call) = match action {
                Action::StartListener { .. } => {
                    w.start_listener(inst);
                    continue;
                }
                Action::ConfirmIdle { pid, .. } => {
                    // The agent's last look (agent.rs `last_look`): a worker the core was not told
                    // about yet (assigned within the last /proc poll), or a job message in the
                    // listener's perf log since its last poll (the agent reads the log only with the
                    // guard on: it sets RUNNER_PERFLOG), reported with the look in one batch; the
                    // core decides whether the stop goes out.
                    let obs = w.observe(inst);
                    let mut batch = Vec::with_capacity(2);
                    if obs.listener_pid.is_some() {
                        if let Some(worker) = obs.worker_pid {
                            batch.push(Input::WorkerStarted { pid: worker });
                        } else if w.cfg.handover_guard && w.take_unseen_job_message(inst) {
                            batch.push(Input::JobMessageReceived);
                        }
                    }
                    batch.push(Input::ListenerLooked { pid });
                    w.trace(inst, || format!("core <- {batch:?}"));
                    core.handle_inputs(batch, w.now);
                    continue;
                }
                Action::StopListener { .. } => {
                    w.signal_listener(inst);
                    continue;
                }
                Action::KillListener { .. } => {
                    w.kill_listener(inst);
                    continue;
                }
                Action::Notify(_) | Action::Exit { .. } => continue,
                Action::ReleaseRunner { id } => {
                    // The controller's second route: function URL, GitHub GET and DELETE of this
                    // listener's registration (world/controller.rs `release_runner`).
                    self.release = Some(id);
                    w.release_runner(inst);
                    continue;
                }
                Action::SetProtection { id, protect, .. } => (id, ApiCall::SetProtection(protect)),
                Action::Describe { id, .. } => (id, ApiCall::Describe),
                Action::Heartbeat { id, .. } => (id, ApiCall::Heartbeat),
                Action::CompleteLifecycleAction { id, .. } => (id, ApiCall::Complete),
                Action::LeaveGroup { id } => (id, ApiCall::TerminateInGroup),
                Action::FetchJitConfig { id, .. } => {
                    // The controller's function URL: describe, refuse unless InService, mint.
                    let (took, result) = w.mint_jit_config(inst);
                    self.replies.push((w.now + took, id, result));
                    continue;
                }
            };
            let result = w.call(inst, call);
            let latency = w.latency(timing::API_LATENCY);
            self.replies.push((w.now + latency, id, result));
        }
    }
}

impl Controller for RunnerLifecycle {
    const NAME: &'static str = "runner-lifecycle";
    const HAS_AGENT: bool = true;
    const CHECKS_INVARIANTS: bool = true;
    // The controller (crates/controller) completes trims with CONTINUE.
    const CENTRAL_COMPLETES_TRIMS: bool = true;

    fn start(w: &mut World, inst: InstId, _restart: bool) -> Self {
        let host_seed = w.rng.next_u64();
        // What a (re)started agent finds first: a listener left by the previous agent (adopted).
        let have_listener = w.observe(inst).listener_pid.is_some();
        let mut host = RunnerLifecycle {
            phase: Phase::Starting {
                startup: Startup::new(StartupConfig { have_listener }, Rng::new(host_seed).next_u64(), w.now),
                host_seed,
                answer: None,
            },
            replies: Vec::new(),
            release: None,
        };
        host.pump_startup(w, inst);
        host
    }

    fn on_event(&mut self, w: &mut World, inst: InstId, ev: HostEvent) {
        let input = match ev {
            HostEvent::ListenerStarted(pid) => Input::ListenerStarted { pid },
            HostEvent::ListenerExited(code) => Input::ListenerExited { code },
            HostEvent::WorkerStarted(pid) => Input::WorkerStarted { pid },
            HostEvent::WorkerExited(pid) => Input::WorkerExited { pid },
            HostEvent::Imds(t) => target_input(t),
            HostEvent::ImdsDown => Input::ImdsUnavailable,
            HostEvent::SpotNotice => Input::SpotInterruption,
            HostEvent::JobMessage => Input::JobMessageReceived,
            HostEvent::Released(outcome) => {
                let Some(id) = self.release.take() else { return };
                let result = outcome.map(ApiReply::Released).ok_or_else(|| {
                    ApiError::new(ApiErrorKind::Transient, "controller: GitHub did not answer the release")
                });
                Input::ApiResult { id, result }
            }
            // The agent needs no central event path: it sees termination through IMDS.
            HostEvent::TerminationEvent | HostEvent::Deferred(_) => return,
        };
        self.feed(w, inst, input);
    }

    fn job_hook(host: Option<&mut Self>, w: &mut World, inst: InstId, _job: JobId, kind: HookKind) -> Option<HookRun> {
        let input = match kind {
            HookKind::Started => Input::JobStartedHook,
            HookKind::Completed => Input::JobCompletedHook,
        };
        match host {
            Some(
                h @ RunnerLifecycle {
                    phase: Phase::Starting { .. },
                    ..
                },
            ) => {
                // Before discovery the agent answers "noted" (the hook prints it and exits 0; it
                // makes no AWS call of its own) and replays the report to the core at hand-over.
                let report = match kind {
                    HookKind::Started => HookReport::Started,
                    HookKind::Completed => HookReport::Completed,
                };
                h.feed_startup(w, inst, StartupInput::Hook(report));
                Some(HookRun {
                    took: HOOK_VIA_SOCKET,
                    fails_job: false,
                })
            }
            Some(h) => {
                h.feed(w, inst, input);
                Some(HookRun {
                    took: HOOK_VIA_SOCKET,
                    fails_job: false,
                })
            }
            None => {
                // Agent down: the hook finds no socket, prints one line and exits 0 at once; it makes
                // no AWS call of its own (the job's user is fenced off IMDS). The restarted agent's
                // /proc scan sees the worker and protects the host.
                Some(HookRun {
                    took: HOOK_AGENT_DOWN,
                    fails_job: false,
                })
            }
        }
    }

    fn next_wake(&self) -> Option<Time> {
        match &self.phase {
            Phase::Starting { startup, answer, .. } => {
                let answer = answer.as_ref().map(|a| a.0);
                match (startup.poll_timeout(), answer) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Running(core) => {
                let reply = self.replies.iter().map(|r| r.0).min();
                match (core.poll_timeout(), reply) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Exited => None,
        }
    }

    fn on_wake(&mut self, w: &mut World, inst: InstId) {
        let now = w.now;
        if let Phase::Starting { answer, .. } = &mut self.phase {
            if let Some((_, input)) = answer.take_if(|a| a.0 <= now) {
                self.feed_startup(w, inst, input);
            }
            if let Phase::Starting { startup, .. } = &mut self.phase {
                startup.handle_timeout(now);
                self.pump_startup(w, inst);
            }
            return;
        }
        self.replies.sort_by_key(|r| (r.0, r.1));
        while self.replies.first().is_some_and(|r| r.0 <= now) {
            let (_, id, result) = self.replies.remove(0);
            self.feed(w, inst, Input::ApiResult { id, result });
        }
        if let Phase::Running(core) = &mut self.phase {
            core.handle_timeout(now);
        }
        self.pump(w, inst);
    }
}
