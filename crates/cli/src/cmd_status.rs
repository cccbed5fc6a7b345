//! `runner-lifecycle status [--json] [--socket PATH]`: ask the running agent over its hook socket
//! (a plain blocking Unix socket, like the job hooks: no async runtime) and print its state at a
//! glance, or its JSON answer as is. Field names: docs/agent.md, "Status".

use crate::exit_code::ExitCode;
use clap::Args;
use lifecycle_agent::config::{self, Env};
use lifecycle_agent::duration::{human, relative};
use lifecycle_agent::hook::ask_agent;
use lifecycle_agent::socket::Request;
use lifecycle_agent::status_wire::{Call, DrainCause, HookPhase, Listener, Status, SCHEMA};
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Show what the running agent sees and what it will do next.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the agent's answer as one JSON object (fields documented in docs/agent.md, "Status").
    #[arg(long)]
    json: bool,
    /// The agent's socket [default: agent.socket from the configuration; env RUNNER_LIFECYCLE_AGENT_SOCKET].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Configuration file, read for agent.socket [default: /etc/runner-lifecycle/config.toml; env RUNNER_LIFECYCLE_CONFIG].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

const HINT: &str = "  start it:           systemctl start runner-lifecycle\n  \
                    see why it stopped: systemctl status runner-lifecycle; journalctl -u runner-lifecycle\n  \
                    another socket:     runner-lifecycle status --socket PATH (the agent's agent.socket)";

pub fn run(args: &StatusArgs) -> ExitCode {
    let socket = match socket_path(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("runner-lifecycle status: configuration error: {e}");
            return ExitCode::Config;
        }
    };
    let reply = match ask_agent(&socket, Request::Status) {
        Ok(r) => r,
        Err(e) => return unreachable(&socket, &e),
    };
    // Everything from the socket is untrusted text: escaped before it reaches the terminal.
    let Some(text) = reply.strip_prefix("ok ") else {
        let shown = lifecycle_escape::clip(&reply, 200);
        eprintln!(
            "runner-lifecycle status: the agent at {} answered `{shown}` instead of its status",
            socket.display()
        );
        return ExitCode::AgentNoAnswer;
    };
    if args.json {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
            return not_a_status(&socket, &e);
        }
        // The same JSON value, with C1 and bidirectional controls inside strings as \u escapes.
        println!("{}", lifecycle_escape::escape_json_text(text));
        return ExitCode::Ok;
    }
    match serde_json::from_str::<Status>(text) {
        Ok(status) => {
            print!("{}", render(&status));
            ExitCode::Ok
        }
        Err(e) => not_a_status(&socket, &e),
    }
}

fn not_a_status(socket: &Path, e: &serde_json::Error) -> ExitCode {
    eprintln!(
        "runner-lifecycle status: the answer on {} is not a status of layout {} ({}); is this a runner-lifecycle agent of another version?",
        socket.display(),
        SCHEMA,
        lifecycle_escape::escape(&e.to_string())
    );
    ExitCode::AgentNoAnswer
}

/// `--socket`, else `agent.socket` picked as the agent picks it (environment > file > default),
/// reading nothing else. An unusable source is reported and skipped: the agent may well run on an
/// older file.
fn socket_path(args: &StatusArgs) -> Result<PathBuf, config::ConfigError> {
    if let Some(p) = &args.socket {
        return Ok(p.clone());
    }
    let (socket, skipped) = config::socket_path(None, args.config.as_deref(), &Env::from_process())?;
    if let Some(e) = skipped {
        eprintln!("runner-lifecycle status: configuration ignored ({e})");
    }
    Ok(socket)
}

fn unreachable(socket: &Path, e: &std::io::Error) -> ExitCode {
    let shown = socket.display();
    match e.kind() {
        ErrorKind::NotFound => {
            eprintln!("runner-lifecycle status: the agent is not running: {shown} does not exist\n{HINT}");
            ExitCode::AgentNotRunning
        }
        ErrorKind::ConnectionRefused => {
            eprintln!(
                "runner-lifecycle status: the agent is not running: nothing listens on {shown} (left by an agent that exited)\n{HINT}"
            );
            ExitCode::AgentNotRunning
        }
        ErrorKind::PermissionDenied => {
            eprintln!(
                "runner-lifecycle status: permission denied on {shown}: run as root, as the agent's user, or as a member of agent.socket_group"
            );
            ExitCode::AgentNoAnswer
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            eprintln!(
                "runner-lifecycle status: the agent on {shown} did not answer in time; it may be wedged (systemd's watchdog restarts it)\n  \
                 check: systemctl status runner-lifecycle; journalctl -u runner-lifecycle"
            );
            ExitCode::AgentNoAnswer
        }
        _ => {
            eprintln!("runner-lifecycle status: cannot ask the agent on {shown}: {e}");
            ExitCode::AgentNoAnswer
        }
    }
}

fn dur(ms: i64) -> String {
    human(Duration::from_millis(ms.unsigned_abs()))
}

/// Milliseconds from now as words.
fn when(ms: Option<i64>) -> Option<String> {
    ms.map(relative)
}

fn ago(ms: Option<i64>) -> Option<String> {
    ms.map(|ms| relative(ms.saturating_neg()))
}

/// One line of the status. Every value passes through here, and values carry text from the socket
/// (group, states, errors, next step): control characters are escaped so a hostile answer cannot
/// drive the terminal.
fn row(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "{label:<12} {}", lifecycle_escape::escape(value));
}

/// The status as text, one line per aspect.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let a = match status {
        Status::Discovering(d) => &d.agent,
        Status::Running(r) => &r.agent,
    };
    let agent = format!(
        "pid {}, version {}, up {}",
        a.pid,
        a.version,
        human(Duration::from_millis(a.uptime_ms))
    );
    let metrics = match &a.metrics_listen {
        Some(addr) => format!("; metrics on http://{addr}/metrics"),
        None => String::new(),
    };
    let v = match status {
        Status::Discovering(d) => {
            row(
                &mut out,
                "agent",
                &format!("{agent}{metrics}; still discovering its instance"),
            );
            if d.hooks_noted > 0 {
                row(
                    &mut out,
                    "job hooks",
                    &format!(
                        "{} noted before discovery (acted on once the instance is known)",
                        d.hooks_noted
                    ),
                );
            }
            row(&mut out, "next", &a.next_step);
            return out;
        }
        Status::Running(r) => r,
    };
    row(&mut out, "agent", &format!("{agent}{metrics}"));

    let mut instance = v.instance_id.clone();
    match &v.group {
        Some(g) => {
            let _ = write!(instance, " in group {g}");
        }
        None => instance.push_str(" in no Auto Scaling group"),
    }
    let _ = write!(instance, " ({})", v.region);
    match (&v.hook_name, v.heartbeat_timeout_ms) {
        (Some(h), Some(t)) => {
            let _ = write!(
                instance,
                "; termination hook {h} (heartbeat timeout {})",
                human(Duration::from_millis(t))
            );
        }
        (Some(h), None) => {
            let _ = write!(instance, "; termination hook {h}");
        }
        (None, _) => instance.push_str("; no termination hook"),
    }
    row(&mut out, "instance", &instance);

    let lifecycle = format!(
        "IMDS target {}; confirmed {}",
        v.target_state.as_deref().unwrap_or("unknown"),
        v.confirmed_state.as_deref().unwrap_or("not yet"),
    );
    row(&mut out, "lifecycle", &lifecycle);

    let pid = v.listener_pid.map(|p| format!(", pid {p}")).unwrap_or_default();
    let listener = match v.listener {
        Listener::Running => format!(
            "running{pid}{}",
            v.listener_up_ms
                .map(|ms| format!(", up {}", dur(ms)))
                .unwrap_or_default()
        ),
        Listener::Stopping => match when(v.listener_kill_in_ms) {
            Some(k) => format!("stopping{pid} (SIGINT sent; SIGKILL {k} unless it exits)"),
            None => format!("stopping{pid} (SIGKILL sent)"),
        },
        Listener::Down => match when(v.listener_relaunch_in_ms) {
            Some(r) => format!("down (relaunch {r})"),
            None => "down".to_string(),
        },
        Listener::Starting => "starting".to_string(),
    };
    row(&mut out, "listener", &listener);
    if let Some(isolation) = &v.isolation {
        row(&mut out, "isolation", isolation);
    }

    let workers: Vec<String> = v.workers.iter().map(ToString::to_string).collect();
    let job = if v.job_alive {
        let age = v.job_age_ms.map(|ms| format!(" for {}", dur(ms))).unwrap_or_default();
        match workers.as_slice() {
            [] => format!("running{age} (reported by the job-started hook)"),
            [w] => format!("running{age} (Runner.Worker pid {w})"),
            ws => format!("running{age} (Runner.Worker pids {})", ws.join(", ")),
        }
    } else {
        let idle = v
            .idle_ms
            .map(|ms| format!(", idle for {}", dur(ms)))
            .unwrap_or_default();
        format!("none{idle}")
    };
    row(&mut out, "job", &job);

    let mut protection = match v.protected {
        Some(true) => "protected from scale-in".to_string(),
        Some(false) => "not protected".to_string(),
        None if v.not_in_group => "n/a (no group)".to_string(),
        None => "unknown (not set or described yet)".to_string(),
    };
    if let Some(u) = when(v.unprotect_in_ms) {
        let _ = write!(protection, "; cleared {u} unless a job comes");
    } else if v.draining == Some(DrainCause::Terminating) && v.hook_phase == HookPhase::Pending {
        protection.push_str(" (no longer matters: the lifecycle hook holds the instance)");
    }
    row(&mut out, "protection", &protection);

    let mut draining = match v.draining {
        None => "no".to_string(),
        Some(DrainCause::Terminating) => "yes: the instance is terminating (scale-in)".to_string(),
        Some(DrainCause::StopRequested) => "yes: the agent was asked to stop (SIGTERM)".to_string(),
        Some(DrainCause::SpotInterruption) => "yes: spot interruption notice".to_string(),
        Some(DrainCause::Rebalance) => "yes: rebalance recommendation".to_string(),
        Some(DrainCause::JobDone) => {
            "yes: one instance per job, its job is done (the host leaves the group)".to_string()
        }
    };
    if v.stop_forced {
        draining.push_str("; the stop is forced");
    } else if let Some(f) = when(v.stop_forced_in_ms) {
        let _ = write!(draining, "; the stop is forced {f} (drain.stop_deadline)");
    }
    row(&mut out, "draining", &draining);

    let hook = match v.hook_phase {
        HookPhase::Pending => {
            let mut h = "pending (Terminating:Wait)".to_string();
            let beating = v.calls_in_flight.contains(&Call::Heartbeat);
            match v.next_heartbeat_in_ms {
                _ if beating => h.push_str("; heartbeat in flight"),
                Some(ms) if ms < 0 => {
                    let _ = write!(h, "; heartbeat overdue by {}", dur(ms));
                }
                Some(ms) => {
                    let _ = write!(h, "; next heartbeat {}", relative(ms));
                }
                None => h.push_str("; no heartbeat due (none while idle)"),
            }
            if let Some(g) = when(v.global_deadline_in_ms) {
                let _ = write!(h, "; global deadline {g}");
            }
            h
        }
        HookPhase::Completed => "completed".to_string(),
        HookPhase::NotConfigured => "none (no termination hook: hook actions are no-ops)".to_string(),
        HookPhase::None => "no lifecycle action pending".to_string(),
    };
    row(&mut out, "hook", &hook);
    row(
        &mut out,
        "heartbeat",
        &ago(v.last_heartbeat_ago_ms).map_or("none sent".to_string(), |a| format!("last {a}")),
    );
    let error = match (&v.last_error, ago(v.last_error_ago_ms)) {
        (Some(e), Some(a)) => format!("{e} ({a})"),
        (Some(e), None) => e.clone(),
        (None, _) => "none".to_string(),
    };
    row(&mut out, "last error", &error);

    let calls: Vec<&str> = v.calls_in_flight.iter().map(|c| c.name()).collect();
    let retries: Vec<String> = v
        .retries
        .iter()
        .map(|r| format!("{} {}", r.call, relative(r.in_ms)))
        .collect();
    if !calls.is_empty() || !retries.is_empty() {
        let mut api = Vec::new();
        if !calls.is_empty() {
            api.push(format!("in flight: {}", calls.join(", ")));
        }
        if !retries.is_empty() {
            api.push(format!("retry: {}", retries.join(", ")));
        }
        row(&mut out, "api calls", &api.join("; "));
    }
    row(&mut out, "next", &a.next_step);
    for part in &v.plan {
        row(&mut out, "plan", &plan_line(part));
    }
    out
}

/// One part of the core's plan: `area: step (reason), in 5s; retry in 2s`.
fn plan_line(p: &lifecycle_agent::status_wire::PlanPart) -> String {
    let mut text = format!("{}: {}", p.area, p.step);
    if let Some(r) = &p.reason {
        let _ = write!(text, " ({r})");
    }
    if let Some(ms) = p.in_ms {
        let _ = write!(text, ", {}", relative(ms));
    }
    if p.in_flight {
        text.push_str("; call in flight");
    }
    if let Some(ms) = p.retry_in_ms {
        let _ = write!(text, "; retry {}", relative(ms));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle_agent::status::{self, Facts};
    use lifecycle_core::{
        ApiReply, AsgState, CoreConfig, DescribedInstance, HookConfig, Host, Input, ListenerMode, TargetState, Time,
    };

    fn facts() -> Facts {
        Facts {
            instance_id: "i-0abc".into(),
            region: "us-east-1".into(),
            group: Some("runners".into()),
            hook_name: Some("drain".into()),
            heartbeat_timeout: Some(Duration::from_secs(300)),
            listener_pid: Some(4321),
            workers: vec![],
            metrics_listen: None,
            isolation: None,
        }
    }

    /// A real core brought to InService with its listener running.
    fn serving() -> Host {
        let cfg = CoreConfig {
            hook: Some(HookConfig {
                name: "drain".into(),
                heartbeat_timeout: Duration::from_secs(300),
            }),
            listener_mode: ListenerMode::Persistent,
            ..CoreConfig::default()
        };
        let mut host = Host::new(cfg, 1, Time::ZERO);
        host.handle_input(Input::TargetState(TargetState::InService), Time::ZERO);
        reply_describe(&mut host, "InService", false, Time::ZERO);
        host.handle_input(Input::ListenerStarted { pid: 4321 }, Time::ZERO);
        while host.poll_action().is_some() {}
        host
    }

    /// Answer every call the core asks for: describes with `state` and `protected`, the others with
    /// success.
    fn reply_describe(host: &mut Host, state: &str, protected: bool, now: Time) {
        let mut ids = Vec::new();
        while let Some(a) = host.poll_action() {
            match a {
                lifecycle_core::Action::Describe { id, .. } => ids.push((id, true)),
                lifecycle_core::Action::SetProtection { id, .. } => ids.push((id, false)),
                _ => {}
            }
        }
        for (id, describe) in ids {
            let result = if describe {
                Ok(ApiReply::Described(Some(DescribedInstance {
                    state: AsgState::parse(state),
                    protected,
                })))
            } else {
                Ok(ApiReply::Done)
            };
            host.handle_input(Input::ApiResult { id, result }, now);
        }
    }

    fn line<'a>(text: &'a str, label: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(&format!("{label:<12} ")))
            .map(|l| &l[13..])
            .unwrap_or_else(|| panic!("no `{label}` line in\n{text}"))
    }

    #[test]
    fn idle_host_at_a_glance() {
        let host = serving();
        let now = Time::from_secs(3 * 3600 + 12 * 60);
        let v = status::running(
            &host.snapshot(),
            now,
            &Facts {
                metrics_listen: Some("127.0.0.1:9464".into()),
                ..facts()
            },
        );
        let text = render(&v);
        assert!(
            line(&text, "agent").ends_with("up 3h12m; metrics on http://127.0.0.1:9464/metrics"),
            "{text}"
        );
        assert_eq!(
            line(&text, "instance"),
            "i-0abc in group runners (us-east-1); termination hook drain (heartbeat timeout 5m00s)"
        );
        assert_eq!(line(&text, "lifecycle"), "IMDS target InService; confirmed InService");
        assert_eq!(line(&text, "listener"), "running, pid 4321, up 3h12m");
        assert_eq!(line(&text, "job"), "none, idle for 3h12m");
        assert_eq!(line(&text, "protection"), "not protected");
        assert_eq!(line(&text, "draining"), "no");
        assert_eq!(line(&text, "hook"), "no lifecycle action pending");
        assert_eq!(line(&text, "heartbeat"), "none sent");
        assert_eq!(line(&text, "last error"), "none");
        assert!(!text.contains("api calls"), "{text}");
        assert!(line(&text, "next").starts_with("idle: nothing scheduled"), "{text}");
        assert!(!text.contains("t+"), "no core times: {text}");
    }

    fn v_step(v: &Status) -> Option<&str> {
        match v {
            Status::Running(r) => r.step.as_deref(),
            Status::Discovering(_) => None,
        }
    }

    #[test]
    fn busy_host_in_terminating_wait() {
        let mut host = serving();
        let t0 = Time::from_secs(60);
        host.handle_input(Input::WorkerStarted { pid: 5555 }, t0);
        reply_describe(&mut host, "InService", false, t0);
        let t1 = Time::from_secs(250);
        host.handle_input(Input::TargetState(TargetState::Terminated), t1);
        reply_describe(&mut host, "Terminating:Wait", true, t1);
        let now = Time::from_secs(60 + 252);
        host.handle_timeout(now);
        while host.poll_action().is_some() {}
        let v = status::running(
            &host.snapshot(),
            now,
            &Facts {
                workers: vec![5555],
                ..facts()
            },
        );
        let text = render(&v);
        assert_eq!(line(&text, "job"), "running for 4m12s (Runner.Worker pid 5555)");
        assert_eq!(
            line(&text, "lifecycle"),
            "IMDS target Terminated; confirmed Terminating:Wait"
        );
        assert_eq!(line(&text, "draining"), "yes: the instance is terminating (scale-in)");
        assert_eq!(
            line(&text, "protection"),
            "protected from scale-in (no longer matters: the lifecycle hook holds the instance)"
        );
        let hook = line(&text, "hook");
        assert!(
            hook.starts_with("pending (Terminating:Wait); next heartbeat in "),
            "{hook}"
        );
        assert!(hook.ends_with("; global deadline in 8h18m"), "{hook}");
        assert!(
            line(&text, "next").starts_with(
                "waiting for the job to finish, then stop the listener and complete the lifecycle hook; heartbeat in "
            ),
            "{text}"
        );
        // The plan, area by area, read from the core: the heartbeat keeps the hook while the job runs.
        assert_eq!(v_step(&v), Some("wait-for-job"));
        let plan: Vec<&str> = text.lines().filter(|l| l.starts_with("plan ")).collect();
        assert!(
            plan.iter()
                .any(|l| l.trim_start_matches("plan").trim().starts_with("hook: heartbeat, in ")),
            "{text}"
        );

        // The heartbeat comes due and goes out.
        let due = Time::from_secs(250 + 100);
        host.handle_timeout(due);
        let v = status::running(&host.snapshot(), due, &facts());
        let text = render(&v);
        assert!(
            line(&text, "hook").starts_with("pending (Terminating:Wait); heartbeat in flight;"),
            "{text}"
        );
        assert_eq!(line(&text, "api calls"), "in flight: heartbeat");
        assert!(
            line(&text, "next").ends_with("; RecordLifecycleActionHeartbeat in flight"),
            "{text}"
        );
    }

    #[test]
    fn discovering_agent_and_calls_in_flight() {
        let v = status::discovering(Duration::from_millis(4200), None, 1);
        let text = render(&v);
        assert!(
            line(&text, "agent").ends_with("up 4.2s; still discovering its instance"),
            "{text}"
        );
        assert!(line(&text, "job hooks").starts_with("1 noted"), "{text}");
        assert!(line(&text, "next").starts_with("discovering the instance"), "{text}");

        let mut host = serving();
        host.handle_input(Input::JobStartedHook, Time::ZERO);
        let v = status::running(&host.snapshot(), Time::from_millis(800), &facts());
        let text = render(&v);
        assert_eq!(line(&text, "api calls"), "in flight: set-protection");
        assert_eq!(
            line(&text, "job"),
            "running for 800ms (reported by the job-started hook)"
        );
        assert_eq!(line(&text, "protection"), "not protected");
    }

    #[test]
    fn control_characters_from_the_socket_are_escaped() {
        // Regression: these reached the terminal raw (clear screen, OSC 52 clipboard write, a
        // carriage return that overwrites the line, 8-bit CSI).
        let hostile = "x\u{1b}[2J\u{1b}]52;c;Zm9v\u{7}\roverwritten\u{9b}31m\u{7f}\u{202e}";
        let v = serde_json::json!({
            "agent_state": "running",
            "version": hostile,
            "instance_id": hostile,
            "group": hostile,
            "region": hostile,
            "hook_name": hostile,
            "target_state": hostile,
            "confirmed_state": hostile,
            "hook_detail": hostile,
            "last_error": hostile,
            "next_step": hostile,
            "metrics_listen": hostile,
        });
        let text = render(&serde_json::from_value(v).expect("a status"));
        assert!(
            !text.chars().any(|c| lifecycle_escape::is_unsafe(c) && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("x\\u{1b}[2J"), "{text}");
        assert_eq!(text.lines().count(), text.matches('\n').count());
        let discovering = serde_json::json!({"agent_state": "discovering", "version": hostile, "next_step": hostile, "hooks_noted": 3});
        let text = render(&serde_json::from_value(discovering).expect("a status"));
        // A value outside the one spelling of an enum is not a status of this layout.
        let bad = serde_json::json!({"agent_state": "running", "draining": hostile});
        assert!(serde_json::from_value::<Status>(bad).is_err());
        assert!(
            !text.chars().any(|c| lifecycle_escape::is_unsafe(c) && c != '\n'),
            "{text:?}"
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::Value;

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1i64)].prop_map(Value::from),
                any::<String>().prop_map(Value::String),
                prop_oneof![
                    Just("running"),
                    Just("pending"),
                    Just("stopping"),
                    Just("down"),
                    Just("terminating"),
                    Just("heartbeat")
                ]
                .prop_map(|s| Value::String(s.to_string())),
                proptest::collection::vec(any::<String>().prop_map(Value::String), 0..3).prop_map(Value::Array),
            ]
        }

        const KEYS: &[&str] = &[
            "agent_state",
            "pid",
            "version",
            "uptime_ms",
            "metrics_listen",
            "hooks_noted",
            "next_step",
            "instance_id",
            "region",
            "group",
            "hook_name",
            "heartbeat_timeout_ms",
            "target_state",
            "confirmed_state",
            "not_in_group",
            "listener",
            "listener_pid",
            "listener_up_ms",
            "listener_kill_in_ms",
            "listener_relaunch_in_ms",
            "workers",
            "isolation",
            "job_alive",
            "job_age_ms",
            "idle_ms",
            "protected",
            "unprotect_in_ms",
            "draining",
            "stop_forced",
            "stop_forced_in_ms",
            "hook_phase",
            "next_heartbeat_in_ms",
            "global_deadline_in_ms",
            "last_heartbeat_ago_ms",
            "last_error",
            "last_error_ago_ms",
            "calls_in_flight",
            "retries",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any status answer renders without a panic and without a control character.
            #[test]
            fn any_answer_renders_safely(
                fields in proptest::collection::vec((0..KEYS.len(), value()), 0..24),
                running in any::<bool>(),
            ) {
                let mut map = serde_json::Map::new();
                for (i, v) in fields {
                    map.insert(KEYS[i].to_string(), v);
                }
                let state = if running { "running" } else { "discovering" };
                map.insert("agent_state".into(), Value::String(state.into()));
                if let Ok(status) = serde_json::from_value::<Status>(Value::Object(map)) {
                    let text = render(&status);
                    prop_assert!(!text.chars().any(|c| lifecycle_escape::is_unsafe(c) && c != '\n'), "{:?}", text);
                }
            }

            #[test]
            fn any_json_value_renders(s in any::<String>()) {
                if let Ok(v) = serde_json::from_str::<Status>(&s) {
                    let _ = render(&v);
                }
            }
        }
    }

    /// The field names in docs/agent.md's status table.
    fn documented_fields() -> std::collections::BTreeSet<String> {
        let docs = include_str!("../../../docs/agent.md");
        let table = lifecycle_agent::doc_table::table(docs, "| field | meaning |").expect("the status table");
        lifecycle_agent::doc_table::rows(table)
            .filter_map(|cells| cells.first().copied())
            .flat_map(|cell| cell.split(',').map(|n| n.trim().trim_matches('`').to_string()))
            .collect()
    }

    #[test]
    fn the_docs_table_lists_exactly_the_status_fields() {
        let host = serving();
        let mut fields = std::collections::BTreeSet::new();
        for v in [
            status::running(&host.snapshot(), Time::from_secs(1), &facts()),
            status::discovering(Duration::from_secs(1), Some("127.0.0.1:9464"), 0),
        ] {
            let text = v.to_json();
            assert_eq!(serde_json::from_str::<Status>(&text).expect("round trip"), v);
            let serde_json::Value::Object(map) = serde_json::from_str(&text).expect("json") else {
                panic!("not an object: {text}")
            };
            fields.extend(map.keys().cloned());
        }
        assert_eq!(documented_fields(), fields);
    }
}
