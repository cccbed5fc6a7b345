//! The agent's answer to a `status` request on the hook socket: the decision core's snapshot and
//! what the agent itself knows, as one JSON object with stable field names (docs/agent.md,
//! "Status"). Every time is relative to the moment of the answer (`..._in_ms` ahead, `..._ago_ms`
//! behind), never the core's internal clock, and `next_step` says in words what the agent will do
//! next, derived from the same snapshot.

use crate::duration::relative;
use lifecycle_core::{AsgState, Call, DrainCause, HookPhase, ListenerState, Reason, Snapshot, Time};
use serde_json::{json, Value};
use std::time::Duration;

/// Version of the JSON layout. New fields do not change it; a field that changes meaning or goes
/// away does.
pub const SCHEMA: u32 = 1;

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
}

/// `t` as milliseconds from `now` (negative: in the past).
fn offset(t: Time, now: Time) -> i64 {
    let d = i128::from(t.as_millis()) - i128::from(now.as_millis());
    i64::try_from(d).unwrap_or(if d > 0 { i64::MAX } else { i64::MIN })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wire name of a call (as in the log's `action` field).
pub fn call_name(call: Call) -> &'static str {
    match call {
        Call::SetProtection => "set-protection",
        Call::Describe => "describe",
        Call::Heartbeat => "heartbeat",
        Call::Complete => "complete",
    }
}

fn api_name(call: Call) -> &'static str {
    match call {
        Call::SetProtection => "SetInstanceProtection",
        Call::Describe => "DescribeAutoScalingInstances",
        Call::Heartbeat => "RecordLifecycleActionHeartbeat",
        Call::Complete => "CompleteLifecycleAction",
    }
}

/// The wire name of a drain cause.
pub fn cause_name(cause: DrainCause) -> &'static str {
    match cause {
        DrainCause::Terminating => "terminating",
        DrainCause::StopRequested => "stop-requested",
        DrainCause::SpotInterruption => "spot-interruption",
        DrainCause::Rebalance => "rebalance",
    }
}

/// A `kill_at` the core has set to "never again" after sending SIGKILL.
fn killed(kill_at: Time) -> bool {
    kill_at.as_millis() == u64::MAX
}

/// The answer while the agent is still discovering its instance (no core yet).
pub fn discovering(uptime: Duration, metrics_listen: Option<&str>, hooks_noted: usize) -> Value {
    json!({
        "schema": SCHEMA,
        "agent_state": "discovering",
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": millis(uptime),
        "metrics_listen": metrics_listen,
        "hooks_noted": hooks_noted,
        "next_step": "discovering the instance (IMDS, DescribeAutoScalingInstances, DescribeLifecycleHooks); \
                      the listener starts after that",
    })
}

/// The answer of a running agent. `now` is the core's current time (the agent's uptime).
pub fn running(s: &Snapshot, now: Time, facts: &Facts) -> Value {
    let at = |t: Option<Time>| t.map(|t| offset(t, now));
    let ago = |t: Option<Time>| t.map(|t| offset(now, t));
    let (listener, core_pid, up, kill_in, relaunch_in) = match &s.listener_state {
        ListenerState::Down { relaunch_at } => ("down", None, None, None, at(*relaunch_at)),
        ListenerState::Starting => ("starting", None, None, None, None),
        ListenerState::Running { pid, since } => ("running", Some(*pid), ago(Some(*since)), None, None),
        ListenerState::Stopping { pid, kill_at, .. } => {
            let kill = (!killed(*kill_at)).then_some(*kill_at);
            ("stopping", Some(*pid), None, at(kill), None)
        }
    };
    let hook_phase = match s.hook_phase {
        _ if !s.hook_configured => "not-configured",
        HookPhase::None => "none",
        HookPhase::Pending { .. } => "pending",
        HookPhase::Done => "completed",
    };
    let retries: Vec<Value> = s
        .retry_at
        .iter()
        .map(|(call, t)| json!({ "call": call_name(*call), "in_ms": offset(*t, now) }))
        .collect();
    let job_edge = offset(now, s.job_or_idle_since);
    json!({
        "schema": SCHEMA,
        "agent_state": "running",
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": now.as_millis(),
        "metrics_listen": facts.metrics_listen,
        "instance_id": facts.instance_id,
        "region": facts.region,
        "group": facts.group,
        "hook_name": facts.hook_name,
        "heartbeat_timeout_ms": facts.heartbeat_timeout.map(millis),
        "target_state": s.target_state,
        "confirmed_state": s.confirmed_state,
        "not_in_group": s.not_in_group,
        "listener": listener,
        "listener_pid": facts.listener_pid.or(core_pid),
        "listener_up_ms": up,
        "listener_kill_in_ms": kill_in,
        "listener_relaunch_in_ms": relaunch_in,
        "workers": facts.workers,
        "job_alive": s.job_alive,
        "job_age_ms": s.job_alive.then_some(job_edge),
        "idle_ms": (!s.job_alive).then_some(job_edge),
        "protected": s.protected,
        "unprotect_in_ms": at(s.unprotect_at),
        "draining": s.draining.map(cause_name),
        "stop_requested": s.stop_requested,
        "stop_forced": s.forced,
        "stop_forced_in_ms": at(s.force_at),
        "hook_phase": hook_phase,
        "hook_detail": s.hook,
        "next_heartbeat_in_ms": at(s.next_heartbeat),
        "global_deadline_in_ms": at(s.global_deadline),
        "last_heartbeat_ago_ms": ago(s.last_heartbeat),
        "last_error": s.last_error,
        "last_error_ago_ms": ago(s.last_error_at),
        "calls_in_flight": s.in_flight.iter().map(|c| call_name(*c)).collect::<Vec<_>>(),
        "retries": retries,
        "next_step": next_step(s, now),
        "next_deadline_in_ms": at(s.next_deadline),
    })
}

fn in_flight(s: &Snapshot, call: Call) -> bool {
    s.in_flight.contains(&call)
}

fn retry_at(s: &Snapshot, call: Call) -> Option<Time> {
    s.retry_at.iter().find(|(c, _)| *c == call).map(|(_, t)| *t)
}

/// "CompleteLifecycleAction in flight" or "CompleteLifecycleAction failed; retry in 2s".
fn call_progress(s: &Snapshot, call: Call, now: Time) -> Option<String> {
    if in_flight(s, call) {
        Some(format!("{} in flight", api_name(call)))
    } else {
        retry_at(s, call).map(|t| format!("{} failed; retry {}", api_name(call), relative(offset(t, now))))
    }
}

fn join_then(steps: &[&str]) -> String {
    match steps {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The next thing the agent will do, in words, derived from the core's snapshot.
pub fn next_step(s: &Snapshot, now: Time) -> String {
    if s.exited {
        return "exiting: the drain is finished".into();
    }
    let describe = describe_step(s, now);
    match s.draining {
        Some(cause) => draining_step(s, cause, now, describe),
        None => serving_step(s, now, describe),
    }
}

/// A describe the core waits for, with its progress.
fn describe_step(s: &Snapshot, now: Time) -> Option<String> {
    let reason = s.describe_wanted?;
    let what = match reason {
        Reason::ConfirmTermination => "confirming the termination with DescribeAutoScalingInstances",
        Reason::ProtectionRefused => {
            "protection was refused (instance not InService): confirming the termination with DescribeAutoScalingInstances"
        }
        Reason::AwaitInService => "waiting for Auto Scaling to confirm InService before serving jobs",
        Reason::ImdsDown => "IMDS is not answering: watching for termination with DescribeAutoScalingInstances",
        _ => "describing the instance",
    };
    let poll = reason == Reason::ImdsDown || (reason == Reason::AwaitInService && s.confirmed_state.is_some());
    let when = match call_progress(s, Call::Describe, now) {
        Some(p) => p,
        None => match s.next_describe_poll.filter(|t| poll && *t > now) {
            Some(t) => format!("next describe {}", relative(offset(t, now))),
            None => "describe due now".into(),
        },
    };
    Some(format!("{what} ({when})"))
}

fn may_serve(s: &Snapshot) -> bool {
    s.not_in_group
        || s.confirmed_state
            .as_deref()
            .is_some_and(|c| AsgState::parse(c).may_serve())
}

fn serving_step(s: &Snapshot, now: Time, describe: Option<String>) -> String {
    match &s.listener_state {
        ListenerState::Running { .. } => serving_running(s, now, describe),
        ListenerState::Starting => "starting the listener".into(),
        ListenerState::Stopping { .. } => "waiting for the listener to exit".into(),
        ListenerState::Down { relaunch_at: None } => {
            "the listener exited and will not be relaunched (see the log); nothing scheduled".into()
        }
        ListenerState::Down { relaunch_at: Some(t) } => {
            if let Some(d) = describe {
                d
            } else if !may_serve(s) {
                format!(
                    "waiting: the listener starts once Auto Scaling reports InService (now {})",
                    s.confirmed_state
                        .as_deref()
                        .or(s.target_state.as_deref())
                        .unwrap_or("unknown")
                )
            } else if *t > now {
                format!("relaunching the listener {}", relative(offset(*t, now)))
            } else {
                "starting the listener".into()
            }
        }
    }
}

fn serving_running(s: &Snapshot, now: Time, describe: Option<String>) -> String {
    let main = if s.job_alive {
        let protection = match (s.protected, call_progress(s, Call::SetProtection, now)) {
            _ if s.not_in_group => "in no Auto Scaling group, nothing to protect".to_string(),
            (_, Some(p)) => format!("protecting it: {p}"),
            (Some(true), None) => "protected from scale-in".to_string(),
            (_, None) => "not protected yet".to_string(),
        };
        format!("job running ({protection}); when it ends, protection is kept for drain.unprotect_delay in case the next job comes")
    } else if let Some(t) = s.unprotect_at {
        match call_progress(s, Call::SetProtection, now) {
            Some(p) => format!("idle: clearing scale-in protection ({p})"),
            None => format!(
                "idle: clearing scale-in protection {} unless a job comes",
                relative(offset(t, now))
            ),
        }
    } else if let Some(p) = call_progress(s, Call::SetProtection, now) {
        format!("idle: {p}")
    } else {
        "idle: nothing scheduled (watching IMDS for scale-in and the listener for jobs)".into()
    };
    match describe {
        Some(d) => format!("{d}; {main}"),
        None => main,
    }
}

/// What is left after the listener stops, for a draining host.
fn after_stop(s: &Snapshot, cause: DrainCause) -> Vec<&'static str> {
    let mut steps = Vec::new();
    let hook_left = s.hook_configured
        && match s.hook_phase {
            HookPhase::Pending { .. } => true,
            HookPhase::None => cause == DrainCause::Terminating && !s.not_in_group,
            HookPhase::Done => false,
        };
    if hook_left {
        steps.push("complete the lifecycle hook");
    }
    if s.stop_requested {
        steps.push("exit");
    }
    steps
}

fn draining_step(s: &Snapshot, cause: DrainCause, now: Time, describe: Option<String>) -> String {
    let prefix = |text: String| match &describe {
        Some(d) => format!("{d}; {text}"),
        None => text,
    };
    if s.job_alive {
        return prefix(busy_drain(s, cause, now));
    }
    let then = after_stop(s, cause);
    let then_text = if then.is_empty() {
        String::new()
    } else {
        format!(", then {}", join_then(&then))
    };
    match &s.listener_state {
        ListenerState::Running { .. } => prefix(format!("stopping the idle listener{then_text}")),
        ListenerState::Starting => prefix(format!(
            "waiting for the listener to start, then stopping it{then_text}"
        )),
        ListenerState::Stopping { kill_at, .. } if killed(*kill_at) => {
            prefix(format!("SIGKILL sent; waiting for the listener to exit{then_text}"))
        }
        ListenerState::Stopping { kill_at, .. } => prefix(format!(
            "waiting for the idle listener to exit after SIGINT (SIGKILL {}){then_text}",
            relative(offset(*kill_at, now))
        )),
        ListenerState::Down { .. } => match describe {
            Some(d) => d,
            None => drained(s, cause, now),
        },
    }
}

fn busy_drain(s: &Snapshot, cause: DrainCause, now: Time) -> String {
    if let ListenerState::Stopping { forced, kill_at, .. } = &s.listener_state {
        return if *forced {
            "stop forced: the listener was signalled while a job runs; the job is being cancelled".into()
        } else if killed(*kill_at) {
            "SIGKILL sent; waiting for the listener to exit".into()
        } else {
            "a job started after the listener was told to stop: the listener cancels it (lost in the stop window)"
                .into()
        };
    }
    let mut steps = vec!["stop the listener"];
    steps.extend(after_stop(s, cause));
    let mut text = format!("waiting for the job to finish, then {}", join_then(&steps));
    if let Some(p) = call_progress(s, Call::Heartbeat, now) {
        text.push_str(&format!("; {p}"));
    } else if let Some(t) = s.next_heartbeat {
        text.push_str(&format!("; heartbeat {}", relative(offset(t, now))));
    }
    if let Some(t) = s.force_at.filter(|_| !s.forced) {
        text.push_str(&format!(
            "; the stop is forced {} (drain.stop_deadline), cancelling the job",
            relative(offset(t, now))
        ));
    }
    text
}

/// A drained host: the listener is down and no job runs.
fn drained(s: &Snapshot, cause: DrainCause, now: Time) -> String {
    if matches!(s.hook_phase, HookPhase::Pending { .. }) {
        return match call_progress(s, Call::Complete, now) {
            Some(p) => format!("completing the lifecycle hook ({p})"),
            None => "completing the lifecycle hook".into(),
        };
    }
    if s.stop_requested {
        return match call_progress(s, Call::SetProtection, now) {
            Some(p) => format!("clearing scale-in protection before exiting ({p})"),
            None => "exiting".into(),
        };
    }
    match (cause, s.hook_phase) {
        (_, HookPhase::Done) => {
            "drained and the lifecycle hook completed: waiting for Auto Scaling to terminate the instance".into()
        }
        (DrainCause::Terminating, _) if !s.hook_configured => {
            "drained (no termination hook): waiting for Auto Scaling to terminate the instance".into()
        }
        (DrainCause::Terminating, _) => "drained: waiting for Auto Scaling to terminate the instance".into(),
        (DrainCause::SpotInterruption, _) => "drained: waiting for the spot interruption to stop the instance".into(),
        (DrainCause::Rebalance, _) => {
            "drained after the rebalance recommendation: nothing scheduled (restart the agent to serve again)".into()
        }
        (DrainCause::StopRequested, _) => "exiting".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle_core::{Action, ApiErrorKind, ApiReply, CoreConfig, DescribedInstance, HookConfig, Host, Input};
    use lifecycle_core::{ApiError, RequestId, TargetState};

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
            while let Some(a) = self.host.poll_action() {
                self.actions.push(a);
            }
        }

        fn advance(&mut self, d: Duration) {
            self.now = self.now + d;
            self.host.handle_timeout(self.now);
            while let Some(a) = self.host.poll_action() {
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

        fn json(&self) -> Value {
            running(&self.host.snapshot(), self.now, &Facts::default())
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
        assert_eq!(j["job_age_ms"], Value::Null);

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
