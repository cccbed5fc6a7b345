//! The agent's answer to a `status` request on the hook socket: the decision core's snapshot and
//! what the agent itself knows, as one typed [`Status`] ([`crate::status_wire`], documented in
//! docs/agent.md, "Status"). Every time is relative to the moment of the answer (`..._in_ms` ahead, `..._ago_ms`
//! behind), never the core's internal clock, and `next_step` words what the core says it will do
//! next ([`lifecycle_core::NextStep`]): nothing here decides or re-derives.

use crate::duration::relative;
use crate::status_wire::{self as wire, Status};
use lifecycle_core::{
    AfterStop, Call, CallProgress, DescribeReason, DescribeStep, DescribeWhen, DrainCause, HeartbeatWhen, HoldReason,
    HookPhase, JobProtection, ListenerState, NextStep, PlanEntry, Snapshot, Step, Time,
};
use std::time::Duration;

/// What the agent knows beyond the core's snapshot.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// This instance.
    pub instance_id: String,
    /// Its region.
    pub region: String,
    /// Its Auto Scaling group, if any.
    pub group: Option<String>,
    /// The termination hook driven, if any.
    pub hook_name: Option<String>,
    /// That hook's HeartbeatTimeout.
    pub heartbeat_timeout: Option<Duration>,
    /// The listener process the agent supervises.
    pub listener_pid: Option<u32>,
    /// Its `Runner.Worker` children (one per running job).
    pub workers: Vec<u32>,
    /// The metrics endpoint's address, when it serves.
    pub metrics_listen: Option<String>,
    /// How a finished job's processes are killed (cgroup, or the `/proc` scan and why).
    pub isolation: Option<String>,
}

/// `t` as milliseconds from `now` (negative: in the past).
fn offset(t: Time, now: Time) -> i64 {
    let d = i128::from(t.as_millis()) - i128::from(now.as_millis());
    i64::try_from(d).unwrap_or(if d > 0 { i64::MAX } else { i64::MIN })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn api_name(call: Call) -> &'static str {
    match call {
        Call::SetProtection => "SetInstanceProtection",
        Call::Describe => "DescribeAutoScalingInstances",
        Call::Heartbeat => "RecordLifecycleActionHeartbeat",
        Call::Complete => "CompleteLifecycleAction",
        Call::MintJitConfig => "the controller's JIT config endpoint",
        Call::ReleaseRunner => "the controller's runner release endpoint",
        Call::LeaveGroup => "TerminateInstanceInAutoScalingGroup",
    }
}

fn agent(uptime_ms: u64, metrics_listen: Option<String>, next_step: String) -> wire::Agent {
    wire::Agent {
        schema: wire::SCHEMA,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms,
        metrics_listen,
        next_step,
    }
}

/// The answer while the agent is still discovering its instance (no core yet).
pub fn discovering(uptime: Duration, metrics_listen: Option<&str>, hooks_noted: usize) -> Status {
    Status::Discovering(wire::Discovering {
        agent: agent(
            millis(uptime),
            metrics_listen.map(str::to_string),
            "discovering the instance (IMDS, DescribeAutoScalingInstances, DescribeLifecycleHooks); \
             the listener starts after that"
                .into(),
        ),
        hooks_noted: u64::try_from(hooks_noted).unwrap_or(u64::MAX),
    })
}

/// The answer of a running agent. `now` is the core's current time (the agent's uptime).
pub fn running(s: &Snapshot, now: Time, facts: &Facts) -> Status {
    let at = |t: Option<Time>| t.map(|t| offset(t, now));
    let ago = |t: Option<Time>| t.map(|t| offset(now, t));
    let (listener, core_pid, up, kill_in, relaunch_in) = match &s.listener_state {
        ListenerState::Down { relaunch_at } => (wire::Listener::Down, None, None, None, at(*relaunch_at)),
        ListenerState::Starting => (wire::Listener::Starting, None, None, None, None),
        ListenerState::Running { pid, since } => (wire::Listener::Running, Some(*pid), ago(Some(*since)), None, None),
        ListenerState::Stopping { pid, kill_at, .. } => {
            (wire::Listener::Stopping, Some(*pid), None, at(*kill_at), None)
        }
    };
    let hook_phase = match s.hook_phase {
        _ if !s.hook_configured => wire::HookPhase::NotConfigured,
        HookPhase::None => wire::HookPhase::None,
        HookPhase::Pending { .. } => wire::HookPhase::Pending,
        HookPhase::Done => wire::HookPhase::Completed,
    };
    let hook_detail = match s.hook_phase {
        HookPhase::None if !s.hook_configured => "no termination hook configured",
        HookPhase::None => "no lifecycle action pending",
        HookPhase::Pending { .. } => "Terminating:Wait",
        HookPhase::Done => "completed",
    };
    let job_edge = offset(now, s.job_or_idle_since);
    Status::Running(Box::new(wire::Running {
        agent: agent(now.as_millis(), facts.metrics_listen.clone(), next_step(s, now)),
        instance_id: facts.instance_id.clone(),
        region: facts.region.clone(),
        group: facts.group.clone(),
        hook_name: facts.hook_name.clone(),
        heartbeat_timeout_ms: facts.heartbeat_timeout.map(millis),
        target_state: s.target_state.as_ref().map(ToString::to_string),
        confirmed_state: s.confirmed_state.as_ref().map(ToString::to_string),
        not_in_group: s.not_in_group,
        listener,
        listener_pid: facts.listener_pid.or(core_pid),
        listener_up_ms: up,
        listener_kill_in_ms: kill_in,
        listener_relaunch_in_ms: relaunch_in,
        workers: facts.workers.clone(),
        isolation: facts.isolation.clone(),
        job_alive: s.job_alive,
        job_age_ms: s.job_alive.then_some(job_edge),
        idle_ms: (!s.job_alive).then_some(job_edge),
        protected: s.protected,
        unprotect_in_ms: at(s.unprotect_at),
        draining: s.draining,
        stop_requested: s.stop_requested,
        stop_forced: s.forced,
        stop_forced_in_ms: at(s.force_at),
        hook_phase,
        hook_detail: hook_detail.into(),
        next_heartbeat_in_ms: at(s.next_heartbeat),
        global_deadline_in_ms: at(s.global_deadline),
        last_heartbeat_ago_ms: ago(s.last_heartbeat),
        last_error: s.last_error.clone(),
        last_error_ago_ms: ago(s.last_error_at),
        calls_in_flight: s.in_flight.clone(),
        retries: s
            .retry_at
            .iter()
            .map(|(call, t)| wire::Retry {
                call: *call,
                in_ms: offset(*t, now),
            })
            .collect(),
        next_deadline_in_ms: at(s.next_timer.map(|(t, _)| t)),
        next_timer: s.next_timer.map(|(_, timer)| timer),
        step: s.next_step.step.map(|step| step.name().to_string()),
        plan: s.plan.entries().into_iter().map(|e| plan_part(e, now)).collect(),
    }))
}

/// One part of the plan, as the core lists it, with its times relative to `now`.
fn plan_part(e: PlanEntry, now: Time) -> wire::PlanPart {
    wire::PlanPart {
        area: e.area.name().to_string(),
        step: e.step.to_string(),
        reason: e.reason.map(str::to_string),
        in_ms: e.at.map(|t| offset(t, now)),
        in_flight: e.call == Some(CallProgress::InFlight),
        retry_in_ms: match e.call {
            Some(CallProgress::RetryAt(t)) => Some(offset(t, now)),
            _ => None,
        },
    }
}

fn join_then(steps: &[&str]) -> String {
    match steps {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// "CompleteLifecycleAction in flight" or "CompleteLifecycleAction failed; retry in 2s".
fn progress(call: Call, p: CallProgress, now: Time) -> String {
    match p {
        CallProgress::InFlight => format!("{} in flight", api_name(call)),
        CallProgress::RetryAt(t) => format!("{} failed; retry {}", api_name(call), relative(offset(t, now))),
    }
}

/// The steps left after the listener stops, in words.
fn after_stop(then: AfterStop) -> Vec<&'static str> {
    let mut steps = Vec::new();
    if then.complete_hook {
        steps.push("complete the lifecycle hook");
    }
    if then.exit {
        steps.push("exit");
    }
    steps
}

/// ", then complete the lifecycle hook and exit", or nothing.
fn then_text(then: AfterStop) -> String {
    let steps = after_stop(then);
    if steps.is_empty() {
        String::new()
    } else {
        format!(", then {}", join_then(&steps))
    }
}

/// The next thing the agent will do, in words: the core's [`NextStep`] worded, nothing derived.
pub fn next_step(s: &Snapshot, now: Time) -> String {
    let NextStep { describe, step } = s.next_step;
    let describe = describe.map(|d| describe_text(d, now));
    let step = step.map(|st| step_text(st, s, now));
    match (describe, step) {
        (Some(d), Some(st)) => format!("{d}; {st}"),
        (Some(text), None) | (None, Some(text)) => text,
        (None, None) => "nothing scheduled".into(),
    }
}

/// A describe the core waits for, with its progress.
fn describe_text(d: DescribeStep, now: Time) -> String {
    let what = match d.reason {
        DescribeReason::ConfirmTermination => "confirming the termination with DescribeAutoScalingInstances",
        DescribeReason::ProtectionRefused => {
            "protection was refused (instance not InService): confirming the termination with DescribeAutoScalingInstances"
        }
        DescribeReason::AwaitInService => "waiting for Auto Scaling to confirm InService before serving jobs",
        DescribeReason::ImdsDown => "IMDS is not answering: watching for termination with DescribeAutoScalingInstances",
    };
    let when = match d.when {
        DescribeWhen::Call(p) => progress(Call::Describe, p, now),
        DescribeWhen::PollAt(t) => format!("next describe {}", relative(offset(t, now))),
        DescribeWhen::DueNow => "describe due now".into(),
    };
    format!("{what} ({when})")
}

fn step_text(step: Step, s: &Snapshot, now: Time) -> String {
    let rel = |t: Time| relative(offset(t, now));
    match step {
        Step::Exited => "exiting: the drain is finished".into(),
        Step::StartListener => "starting the listener".into(),
        Step::WaitListenerExit => "waiting for the listener to exit".into(),
        Step::ListenerGaveUp => {
            "the listener exited and will not be relaunched (see the log); nothing scheduled".into()
        }
        Step::AwaitInService => {
            let state = match (&s.confirmed_state, &s.target_state) {
                (Some(c), _) => c.to_string(),
                (None, Some(t)) => t.to_string(),
                (None, None) => "unknown".into(),
            };
            format!("waiting: the listener starts once Auto Scaling reports InService (now {state})")
        }
        Step::AwaitJitConfig(None) => "fetching a just-in-time runner config for the next listener".into(),
        Step::AwaitJitConfig(Some(p)) => format!(
            "out of service until a just-in-time runner config is held: {}",
            progress(Call::MintJitConfig, p, now)
        ),
        Step::Relaunch { at } => format!("relaunching the listener {}", rel(at)),
        Step::JobRunning { protection } => {
            let protection = match protection {
                JobProtection::NotInGroup => "in no Auto Scaling group, nothing to protect".to_string(),
                JobProtection::Call(p) => format!("protecting it: {}", progress(Call::SetProtection, p, now)),
                JobProtection::Protected => "protected from scale-in".to_string(),
                JobProtection::NotYet => "not protected yet".to_string(),
            };
            format!("job running ({protection}); when it ends, protection is kept for drain.unprotect_delay in case the next job comes")
        }
        Step::Unprotect { at, progress: None } => {
            format!("idle: clearing scale-in protection {} unless a job comes", rel(at))
        }
        Step::Unprotect { progress: Some(p), .. } => {
            format!(
                "idle: clearing scale-in protection ({})",
                progress(Call::SetProtection, p, now)
            )
        }
        Step::IdleProtectionCall(p) => format!("idle: {}", progress(Call::SetProtection, p, now)),
        Step::Idle => "idle: nothing scheduled (watching IMDS for scale-in and the listener for jobs)".into(),
        Step::CancellingJob => {
            "stop forced: the listener was signalled while a job runs; the job is being cancelled".into()
        }
        Step::ListenerKilled { then } => format!("SIGKILL sent; waiting for the listener to exit{}", then_text(then)),
        Step::JobInStopWindow => {
            "a job started after the listener was told to stop: the listener cancels it (lost in the stop window)"
                .into()
        }
        Step::WaitForJob {
            then,
            heartbeat,
            force_at,
        } => {
            let mut steps = vec!["stop the listener"];
            steps.extend(after_stop(then));
            let mut text = format!("waiting for the job to finish, then {}", join_then(&steps));
            match heartbeat {
                Some(HeartbeatWhen::Call(p)) => text.push_str(&format!("; {}", progress(Call::Heartbeat, p, now))),
                Some(HeartbeatWhen::At(t)) => text.push_str(&format!("; heartbeat {}", rel(t))),
                None => {}
            }
            if let Some(t) = force_at {
                text.push_str(&format!(
                    "; the stop is forced {} (drain.stop_deadline), cancelling the job",
                    rel(t)
                ));
            }
            text
        }
        Step::HoldStop { reason, until, then } => {
            let why = match reason {
                HoldReason::JobMessage => "its perf log shows a job message whose Runner.Worker has not started",
                HoldReason::RegistrationBusy => "GitHub refused to remove its registration: a job is assigned",
                HoldReason::RegistrationNotFound => "GitHub no longer knows its registration: a job may have taken it",
                HoldReason::WatchAfterRelease => {
                    "its registration was removed; watching for a job message already on its way"
                }
                HoldReason::Releasing => "asking the controller to remove its registration first",
            };
            let until = until.map_or(String::new(), |t| format!(" (until {} at the latest)", rel(t)));
            format!("holding the stop of the idle listener: {why}{until}{}", then_text(then))
        }
        Step::StopIdleListener { then } => format!("stopping the idle listener{}", then_text(then)),
        Step::WaitStartThenStop { then } => {
            format!("waiting for the listener to start, then stopping it{}", then_text(then))
        }
        Step::WaitIdleExit { kill_at, then } => format!(
            "waiting for the idle listener to exit after SIGINT (SIGKILL {}){}",
            rel(kill_at),
            then_text(then)
        ),
        Step::CompleteHook(None) => "completing the lifecycle hook".into(),
        Step::CompleteHook(Some(p)) => {
            format!("completing the lifecycle hook ({})", progress(Call::Complete, p, now))
        }
        Step::UnprotectBeforeExit(None) => {
            "clearing scale-in protection before exiting (once it may be changed)".into()
        }
        Step::UnprotectBeforeExit(Some(p)) => format!(
            "clearing scale-in protection before exiting ({})",
            progress(Call::SetProtection, p, now)
        ),
        Step::UnprotectBeforeLeave(None) => {
            "one instance per job, its job done: clearing scale-in protection before leaving the group (once it may be changed)".into()
        }
        Step::UnprotectBeforeLeave(Some(p)) => format!(
            "one instance per job, its job done: clearing scale-in protection before leaving the group ({})",
            progress(Call::SetProtection, p, now)
        ),
        Step::Exiting => "exiting".into(),
        Step::LeaveGroup(None) => {
            "one instance per job, its job done: leaving the group (the group launches a replacement)".into()
        }
        Step::LeaveGroup(Some(p)) => format!(
            "one instance per job, its job done: leaving the group ({})",
            progress(Call::LeaveGroup, p, now)
        ),
        Step::Drained {
            cause,
            hook_completed,
            hook_configured,
        } => match cause {
            _ if hook_completed => {
                "drained and the lifecycle hook completed: waiting for Auto Scaling to terminate the instance".into()
            }
            DrainCause::Terminating if !hook_configured => {
                "drained (no termination hook): waiting for Auto Scaling to terminate the instance".into()
            }
            DrainCause::Terminating => "drained: waiting for Auto Scaling to terminate the instance".into(),
            DrainCause::SpotInterruption => "drained: waiting for the spot interruption to stop the instance".into(),
            DrainCause::Rebalance => {
                "drained after the rebalance recommendation: nothing scheduled (restart the agent to serve again)"
                    .into()
            }
            DrainCause::StopRequested => "exiting".into(),
            DrainCause::JobDone => {
                "one instance per job: left the group; waiting for Auto Scaling to terminate the instance".into()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle_core::{Action, ApiErrorKind, ApiReply, CoreConfig, DescribedInstance, HookConfig, Host, Input};
    use lifecycle_core::{ApiError, AsgState, ListenerMode, RequestId, TargetState};

    /// A real core, driven by hand: the status is derived from states the core actually reaches.
    struct Core {
        host: Host,
        now: Time,
        actions: Vec<Action>,
    }

    impl Core {
        fn new(hook: bool) -> Core {
            let cfg = CoreConfig {
                hook: hook.then(|| HookConfig {
                    name: "drain".into(),
                    heartbeat_timeout: Duration::from_secs(300),
                }),
                listener_mode: ListenerMode::Persistent,
                ..CoreConfig::default()
            };
            let mut c = Core {
                host: Host::new(cfg, 7, Time::ZERO),
                now: Time::ZERO,
                actions: Vec::new(),
            };
            c.input(Input::TargetState(TargetState::InService));
            let id = c.call();
            c.reply(id, described("InService"));
            c.input(Input::ListenerStarted { pid: 100 });
            c.actions.clear();
            c
        }

        fn input(&mut self, i: Input) {
            self.host.handle_input(i, self.now);
            self.drain();
        }

        fn advance(&mut self, d: Duration) {
            self.now = self.now + d;
            self.host.handle_timeout(self.now);
            self.drain();
        }

        /// Collect the actions, carrying out last looks (which find nothing) as the agent does.
        fn drain(&mut self) {
            while let Some(a) = self.host.poll_action() {
                if let Action::ConfirmIdle { pid, .. } = a {
                    self.host.handle_input(Input::ListenerLooked { pid }, self.now);
                }
                self.actions.push(a);
            }
        }

        fn reply(&mut self, id: RequestId, result: Result<ApiReply, ApiError>) {
            self.input(Input::ApiResult { id, result });
        }

        /// The id of the last call asked for.
        fn call(&mut self) -> RequestId {
            let id = self.actions.iter().rev().find_map(|a| match a {
                Action::SetProtection { id, .. }
                | Action::Describe { id, .. }
                | Action::Heartbeat { id, .. }
                | Action::CompleteLifecycleAction { id, .. } => Some(*id),
                _ => None,
            });
            self.actions.clear();
            id.unwrap_or(RequestId(0))
        }

        fn step(&self) -> String {
            next_step(&self.host.snapshot(), self.now)
        }

        fn json(&self) -> serde_json::Value {
            serde_json::to_value(running(&self.host.snapshot(), self.now, &Facts::default())).expect("json")
        }
    }

    fn described(state: &str) -> Result<ApiReply, ApiError> {
        Ok(ApiReply::Described(Some(DescribedInstance {
            state: AsgState::parse(state),
            protected: false,
        })))
    }

    #[test]
    fn idle_then_job_then_idle_again() {
        let mut c = Core::new(true);
        assert_eq!(
            c.step(),
            "idle: nothing scheduled (watching IMDS for scale-in and the listener for jobs)"
        );
        let j = c.json();
        assert_eq!(j["listener"], "running");
        assert_eq!(j["hook_phase"], "none");
        assert_eq!(j["job_alive"], false);
        assert_eq!(j["job_age_ms"], serde_json::Value::Null);

        c.input(Input::WorkerStarted { pid: 5 });
        assert!(c
            .step()
            .starts_with("job running (protecting it: SetInstanceProtection in flight)"));
        let id = c.call();
        c.reply(id, Ok(ApiReply::Done));
        c.advance(Duration::from_secs(252));
        assert!(
            c.step().starts_with("job running (protected from scale-in)"),
            "{}",
            c.step()
        );
        let j = c.json();
        assert_eq!(
            (j["job_age_ms"].as_i64(), j["idle_ms"].is_null()),
            (Some(252_000), true)
        );
        assert_eq!(j["protected"], true);

        c.input(Input::WorkerExited { pid: 5 });
        c.advance(Duration::from_secs(10));
        assert_eq!(c.step(), "idle: clearing scale-in protection in 20s unless a job comes");
        assert_eq!(c.json()["unprotect_in_ms"], 20_000);
        c.advance(Duration::from_secs(20));
        assert_eq!(
            c.step(),
            "idle: clearing scale-in protection (SetInstanceProtection in flight)"
        );
        let id = c.call();
        c.reply(id, Err(ApiError::new(ApiErrorKind::Throttled, "Rate exceeded")));
        assert!(c
            .step()
            .starts_with("idle: clearing scale-in protection (SetInstanceProtection failed; retry in "));
        let j = c.json();
        assert_eq!(j["last_error"], "Throttled: Rate exceeded");
        assert_eq!(j["last_error_ago_ms"], 0);
        assert_eq!(j["retries"][0]["call"], "set-protection");
    }

    #[test]
    fn busy_scale_in_heartbeats_then_stops_and_completes() {
        let mut c = Core::new(true);
        c.input(Input::WorkerStarted { pid: 5 });
        let id = c.call();
        c.reply(id, Ok(ApiReply::Done));
        c.input(Input::TargetState(TargetState::Terminated));
        assert!(
            c.step().starts_with(
                "confirming the termination with DescribeAutoScalingInstances (DescribeAutoScalingInstances in flight); waiting for the job"
            ),
            "{}",
            c.step()
        );
        let id = c.call();
        c.reply(id, described("Terminating:Wait"));
        let step = c.step();
        assert!(
            step.starts_with(
                "waiting for the job to finish, then stop the listener and complete the lifecycle hook; heartbeat in "
            ),
            "{step}"
        );
        let j = c.json();
        assert_eq!(j["draining"], "terminating");
        assert_eq!(j["hook_phase"], "pending");
        let beat = j["next_heartbeat_in_ms"].as_i64().expect("heartbeat scheduled");
        assert!((80_000..=100_000).contains(&beat), "{beat}");
        let deadline = j["global_deadline_in_ms"].as_i64().expect("global deadline");
        assert_eq!(deadline, 30_000_000, "100 x HeartbeatTimeout");
        assert!(j["last_heartbeat_ago_ms"].is_null());

        c.advance(Duration::from_millis(u64::try_from(beat).unwrap_or(0)));
        assert!(
            c.step().ends_with("; RecordLifecycleActionHeartbeat in flight"),
            "{}",
            c.step()
        );
        let id = c.call();
        c.reply(id, Ok(ApiReply::Done));
        c.advance(Duration::from_secs(3));
        assert_eq!(c.json()["last_heartbeat_ago_ms"], 3000);

        c.input(Input::WorkerExited { pid: 5 });
        assert!(
            c.step().starts_with(
                "waiting for the idle listener to exit after SIGINT (SIGKILL in 30s), then complete the lifecycle hook"
            ),
            "{}",
            c.step()
        );
        assert_eq!(c.json()["listener"], "stopping");
        c.actions.clear();
        c.input(Input::ListenerExited { code: Some(0) });
        assert_eq!(
            c.step(),
            "completing the lifecycle hook (CompleteLifecycleAction in flight)"
        );
        let id = c.call();
        c.reply(id, Ok(ApiReply::Done));
        assert_eq!(
            c.step(),
            "drained and the lifecycle hook completed: waiting for Auto Scaling to terminate the instance"
        );
        assert_eq!(c.json()["hook_phase"], "completed");
    }

    #[test]
    fn sigterm_with_a_deadline_and_without_a_hook() {
        let mut c = Core {
            host: Host::new(
                CoreConfig {
                    stop_deadline: Some(Duration::from_secs(600)),
                    ..CoreConfig::default()
                },
                7,
                Time::ZERO,
            ),
            now: Time::ZERO,
            actions: Vec::new(),
        };
        c.input(Input::TargetState(TargetState::InService));
        assert_eq!(
            c.step(),
            "waiting for Auto Scaling to confirm InService before serving jobs (DescribeAutoScalingInstances in flight)"
        );
        let id = c.call();
        c.reply(id, described("InService"));
        c.input(Input::ListenerStarted { pid: 100 });
        c.input(Input::JobStartedHook);
        let id = c.call();
        c.reply(id, Ok(ApiReply::Done));
        c.input(Input::StopRequested);
        assert_eq!(
            c.step(),
            "waiting for the job to finish, then stop the listener and exit; the stop is forced in 10m00s (drain.stop_deadline), cancelling the job"
        );
        assert_eq!(c.json()["hook_phase"], "not-configured");
        assert_eq!(c.json()["stop_forced_in_ms"], 600_000);
        c.input(Input::StopRequested);
        assert_eq!(
            c.step(),
            "stop forced: the listener was signalled while a job runs; the job is being cancelled"
        );
        c.input(Input::ListenerExited { code: Some(0) });
        c.input(Input::JobCompletedHook);
        assert_eq!(c.step(), "exiting: the drain is finished");
    }

    #[test]
    fn launching_and_relaunching() {
        let mut c = Core::new(false);
        c.input(Input::ListenerExited { code: Some(2) });
        assert_eq!(c.step(), "relaunching the listener in 5.0s");
        assert_eq!(c.json()["listener_relaunch_in_ms"], 5000);
        assert_eq!(c.json()["listener"], "down");
        c.input(Input::TargetState(TargetState::Terminated));
        assert!(c.step().starts_with("confirming the termination"), "{}", c.step());
        let id = c.call();
        c.reply(id, described("Terminating:Proceed"));
        assert_eq!(
            c.step(),
            "drained (no termination hook): waiting for Auto Scaling to terminate the instance"
        );
    }
}
