//! runner-lifecycle: the real decision core, driven exactly as the agent drives it.

use super::Controller;
use crate::config::timing;
use crate::world::{ApiCall, HookKind, HookRun, HostEvent, InstId, JobId, Target, World};
use lifecycle_core::{Action, ApiError, ApiReply, CoreConfig, HookConfig, Host, Input, RequestId, TargetState, Time};
use std::time::Duration;

/// The job hook's round trip over the agent's Unix socket.
const HOOK_VIA_SOCKET: Duration = Duration::from_millis(2);
/// The hook when the agent is down: a refused connection, one line, exit 0.
const HOOK_AGENT_DOWN: Duration = Duration::from_millis(1);

/// One host running the runner-lifecycle agent.
#[derive(Debug)]
pub struct RunnerLifecycle {
    core: Host,
    replies: Vec<(Time, RequestId, Result<ApiReply, ApiError>)>,
}

fn core_config(w: &World) -> CoreConfig {
    CoreConfig {
        hook: Some(HookConfig {
            name: "runner-drain".into(),
            heartbeat_timeout: w.cfg.hook_timeout,
        }),
        listener_mode: w.cfg.listener_mode,
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
        w.trace(inst, || format!("core <- {input:?}"));
        w.record_mark(inst, "agent", || short(&format!("{input:?}")));
        self.core.handle_input(input, w.now);
        self.pump(w, inst);
    }

    /// Carry out every action the core asks for.
    fn pump(&mut self, w: &mut World, inst: InstId) {
        while let Some(action) = self.core.poll_action() {
            w.trace(inst, || format!("core -> {action:?}"));
            w.record_mark(inst, "agent", || format!("-> {}", short(&format!("{action:?}"))));
            let (id, call) = match action {
                Action::StartListener { .. } => {
                    w.start_listener(inst);
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
                Action::SetProtection { id, protect, .. } => (id, ApiCall::SetProtection(protect)),
                Action::Describe { id, .. } => (id, ApiCall::Describe),
                Action::Heartbeat { id, .. } => (id, ApiCall::Heartbeat),
                Action::CompleteLifecycleAction { id, .. } => (id, ApiCall::Complete),
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
        let seed = w.rng.next_u64();
        let mut host = RunnerLifecycle {
            core: Host::new(core_config(w), seed, w.now),
            replies: Vec::new(),
        };
        // What a (re)started agent finds: processes first, then IMDS (docs/agent.md, "Restart").
        let obs = w.observe(inst);
        if let Some(pid) = obs.listener_pid {
            host.feed(w, inst, Input::ListenerStarted { pid });
        }
        if let Some(pid) = obs.worker_pid {
            host.feed(w, inst, Input::WorkerStarted { pid });
        }
        match obs.target {
            Some(t) => host.feed(w, inst, target_input(t)),
            None => host.feed(w, inst, Input::ImdsUnavailable),
        }
        if obs.spot_notice {
            host.feed(w, inst, Input::SpotInterruption);
        }
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
        let reply = self.replies.iter().map(|r| r.0).min();
        match (self.core.poll_timeout(), reply) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_wake(&mut self, w: &mut World, inst: InstId) {
        let now = w.now;
        self.replies.sort_by_key(|r| (r.0, r.1));
        while self.replies.first().is_some_and(|r| r.0 <= now) {
            let (_, id, result) = self.replies.remove(0);
            self.feed(w, inst, Input::ApiResult { id, result });
        }
        self.core.handle_timeout(now);
        self.pump(w, inst);
    }
}
