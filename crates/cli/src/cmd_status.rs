//! `runner-lifecycle status [--json] [--socket PATH]`: ask the running agent over its hook socket
//! (a plain blocking Unix socket, like the job hooks: no async runtime) and print its state at a
//! glance, or its JSON answer as is. Field names: docs/agent.md, "Status".

use crate::exit_code::ExitCode;
use clap::Args;
use lifecycle_agent::config::{self, Env};
use lifecycle_agent::duration::{human, relative};
use lifecycle_agent::hook::ask_agent;
use lifecycle_agent::socket::Request;
use serde_json::Value;
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
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "runner-lifecycle status: the answer on {} is not JSON ({}); is this a runner-lifecycle agent of another version?",
                socket.display(),
                lifecycle_escape::escape(&e.to_string())
            );
            return ExitCode::AgentNoAnswer;
        }
    };
    if args.json {
        // The same JSON value, with C1 and bidirectional controls inside strings as \u escapes.
        println!("{}", lifecycle_escape::escape_json_text(text));
    } else {
        print!("{}", render(&value));
    }
    ExitCode::Ok
}

/// `--socket`, else `agent.socket` resolved as the agent does (flag > environment > file >
/// default). A broken config file is reported and skipped: the agent may well run on an older one.
fn socket_path(args: &StatusArgs) -> Result<PathBuf, config::ConfigError> {
    if let Some(p) = &args.socket {
        return Ok(p.clone());
    }
    let env = Env::from_process();
    match config::resolve(&[], args.config.as_deref(), &env) {
        Ok(s) => Ok(s.socket),
        Err(e) => {
            eprintln!("runner-lifecycle status: configuration ignored ({e})");
            config::resolve(&[], Some(Path::new("/dev/null")), &env).map(|s| s.socket)
        }
    }
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

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn dur(ms: i64) -> String {
    human(Duration::from_millis(ms.unsigned_abs()))
}

/// Milliseconds from now as words; `None` (JSON null or absent) as `none`.
fn when(v: &Value, key: &str) -> Option<String> {
    int(v, key).map(relative)
}

fn ago(v: &Value, key: &str) -> Option<String> {
    int(v, key).map(|ms| relative(ms.saturating_neg()))
}

fn in_flight(v: &Value) -> Vec<&str> {
    v.get("calls_in_flight")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// One line of the status. Every value passes through here, and values carry text from the socket
/// (group, states, errors, next step): control characters are escaped so a hostile answer cannot
/// drive the terminal.
fn row(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "{label:<12} {}", lifecycle_escape::escape(value));
}

/// The status as text, one line per aspect.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let agent = format!(
        "pid {}, version {}, up {}",
        int(v, "pid").map_or("?".into(), |p| p.to_string()),
        text(v, "version").unwrap_or("?"),
        int(v, "uptime_ms").map_or("?".into(), dur),
    );
    let metrics = match text(v, "metrics_listen") {
        Some(addr) => format!("; metrics on http://{addr}/metrics"),
        None => String::new(),
    };
    if text(v, "agent_state") != Some("running") {
        row(
            &mut out,
            "agent",
            &format!("{agent}{metrics}; still discovering its instance"),
        );
        if let Some(n) = int(v, "hooks_noted").filter(|n| *n > 0) {
            row(
                &mut out,
                "job hooks",
                &format!("{n} noted before discovery (acted on once the instance is known)"),
            );
        }
        row(&mut out, "next", text(v, "next_step").unwrap_or("?"));
        return out;
    }
    row(&mut out, "agent", &format!("{agent}{metrics}"));

    let mut instance = text(v, "instance_id").unwrap_or("?").to_string();
    match text(v, "group") {
        Some(g) => {
            let _ = write!(instance, " in group {g}");
        }
        None => instance.push_str(" in no Auto Scaling group"),
    }
    let _ = write!(instance, " ({})", text(v, "region").unwrap_or("?"));
    match (text(v, "hook_name"), int(v, "heartbeat_timeout_ms")) {
        (Some(h), Some(t)) => {
            let _ = write!(instance, "; termination hook {h} (heartbeat timeout {})", dur(t));
        }
        (Some(h), None) => {
            let _ = write!(instance, "; termination hook {h}");
        }
        (None, _) => instance.push_str("; no termination hook"),
    }
    row(&mut out, "instance", &instance);

    let lifecycle = format!(
        "IMDS target {}; confirmed {}",
        text(v, "target_state").unwrap_or("unknown"),
        text(v, "confirmed_state").unwrap_or("not yet"),
    );
    row(&mut out, "lifecycle", &lifecycle);

    let pid = int(v, "listener_pid").map(|p| format!(", pid {p}")).unwrap_or_default();
    let listener = match text(v, "listener") {
        Some("running") => format!(
            "running{pid}{}",
            int(v, "listener_up_ms")
                .map(|ms| format!(", up {}", dur(ms)))
                .unwrap_or_default()
        ),
        Some("stopping") => match when(v, "listener_kill_in_ms") {
            Some(k) => format!("stopping{pid} (SIGINT sent; SIGKILL {k} unless it exits)"),
            None => format!("stopping{pid} (SIGKILL sent)"),
        },
        Some("down") => match when(v, "listener_relaunch_in_ms") {
            Some(r) => format!("down (relaunch {r})"),
            None => "down".to_string(),
        },
        Some(other) => other.to_string(),
        None => "?".to_string(),
    };
    row(&mut out, "listener", &listener);

    let workers: Vec<String> = v
        .get("workers")
        .and_then(Value::as_array)
        .map(|w| w.iter().filter_map(Value::as_i64).map(|p| p.to_string()).collect())
        .unwrap_or_default();
    let job = if v.get("job_alive").and_then(Value::as_bool) == Some(true) {
        let age = int(v, "job_age_ms")
            .map(|ms| format!(" for {}", dur(ms)))
            .unwrap_or_default();
        match workers.as_slice() {
            [] => format!("running{age} (reported by the job-started hook)"),
            [w] => format!("running{age} (Runner.Worker pid {w})"),
            ws => format!("running{age} (Runner.Worker pids {})", ws.join(", ")),
        }
    } else {
        let idle = int(v, "idle_ms")
            .map(|ms| format!(", idle for {}", dur(ms)))
            .unwrap_or_default();
        format!("none{idle}")
    };
    row(&mut out, "job", &job);

    let mut protection = match v.get("protected").and_then(Value::as_bool) {
        Some(true) => "protected from scale-in".to_string(),
        Some(false) => "not protected".to_string(),
        None if v.get("not_in_group").and_then(Value::as_bool) == Some(true) => "n/a (no group)".to_string(),
        None => "unknown (not set or described yet)".to_string(),
    };
    if let Some(u) = when(v, "unprotect_in_ms") {
        let _ = write!(protection, "; cleared {u} unless a job comes");
    } else if text(v, "draining") == Some("terminating") && text(v, "hook_phase") == Some("pending") {
        protection.push_str(" (no longer matters: the lifecycle hook holds the instance)");
    }
    row(&mut out, "protection", &protection);

    let mut draining = match text(v, "draining") {
        None => "no".to_string(),
        Some("terminating") => "yes: the instance is terminating (scale-in)".to_string(),
        Some("stop-requested") => "yes: the agent was asked to stop (SIGTERM)".to_string(),
        Some("spot-interruption") => "yes: spot interruption notice".to_string(),
        Some("rebalance") => "yes: rebalance recommendation".to_string(),
        Some(other) => format!("yes: {other}"),
    };
    if v.get("stop_forced").and_then(Value::as_bool) == Some(true) {
        draining.push_str("; the stop is forced");
    } else if let Some(f) = when(v, "stop_forced_in_ms") {
        let _ = write!(draining, "; the stop is forced {f} (drain.stop_deadline)");
    }
    row(&mut out, "draining", &draining);

    let hook = match text(v, "hook_phase") {
        Some("pending") => {
            let mut h = "pending (Terminating:Wait)".to_string();
            let beating = in_flight(v).contains(&"heartbeat");
            match int(v, "next_heartbeat_in_ms") {
                _ if beating => h.push_str("; heartbeat in flight"),
                Some(ms) if ms < 0 => {
                    let _ = write!(h, "; heartbeat overdue by {}", dur(ms));
                }
                Some(ms) => {
                    let _ = write!(h, "; next heartbeat {}", relative(ms));
                }
                None => h.push_str("; no heartbeat due (none while idle)"),
            }
            if let Some(g) = when(v, "global_deadline_in_ms") {
                let _ = write!(h, "; global deadline {g}");
            }
            h
        }
        Some("completed") => "completed".to_string(),
        Some("not-configured") => "none (no termination hook: hook actions are no-ops)".to_string(),
        _ => "no lifecycle action pending".to_string(),
    };
    row(&mut out, "hook", &hook);
    row(
        &mut out,
        "heartbeat",
        &ago(v, "last_heartbeat_ago_ms").map_or("none sent".to_string(), |a| format!("last {a}")),
    );
    let error = match (text(v, "last_error"), ago(v, "last_error_ago_ms")) {
        (Some(e), Some(a)) => format!("{e} ({a})"),
        (Some(e), None) => e.to_string(),
        (None, _) => "none".to_string(),
    };
    row(&mut out, "last error", &error);

    let calls = in_flight(v);
    let retries: Vec<String> = v
        .get("retries")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|x| Some(format!("{} {}", text(x, "call")?, relative(int(x, "in_ms")?))))
                .collect()
        })
        .unwrap_or_default();
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
    row(&mut out, "next", text(v, "next_step").unwrap_or("?"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle_agent::status::{self, Facts};
    use lifecycle_core::{
        ApiReply, AsgState, CoreConfig, DescribedInstance, HookConfig, Host, Input, TargetState, Time,
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
        }
    }

    /// A real core brought to InService with its listener running.
    fn serving() -> Host {
        let cfg = CoreConfig {
            hook: Some(HookConfig {
                name: "drain".into(),
                heartbeat_timeout: Duration::from_secs(300),
            }),
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
            "listener": hostile,
            "draining": hostile,
            "last_error": hostile,
            "calls_in_flight": [hostile],
            "retries": [{"call": hostile, "in_ms": 5}],
            "next_step": hostile,
            "metrics_listen": hostile,
        });
        let text = render(&v);
        assert!(
            !text.chars().any(|c| lifecycle_escape::is_unsafe(c) && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("x\\u{1b}[2J"), "{text}");
        assert_eq!(text.lines().count(), text.matches('\n').count());
        let discovering = serde_json::json!({"agent_state": hostile, "next_step": hostile, "hooks_noted": 3});
        let text = render(&discovering);
        assert!(
            !text.chars().any(|c| lifecycle_escape::is_unsafe(c) && c != '\n'),
            "{text:?}"
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

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
                if running {
                    map.insert("agent_state".into(), Value::String("running".into()));
                }
                let text = render(&Value::Object(map));
                prop_assert!(!text.chars().any(|c| lifecycle_escape::is_unsafe(c) && c != '\n'), "{:?}", text);
            }

            #[test]
            fn any_json_value_renders(s in any::<String>()) {
                if let Ok(v) = serde_json::from_str::<Value>(&s) {
                    let _ = render(&v);
                }
                let _ = render(&Value::String(s));
            }
        }
    }

    #[test]
    fn documented_json_fields_are_all_there() {
        let host = serving();
        let docs = include_str!("../../../docs/agent.md");
        for v in [
            status::running(&host.snapshot(), Time::from_secs(1), &facts()),
            status::discovering(Duration::from_secs(1), Some("127.0.0.1:9464"), 0),
        ] {
            let Value::Object(map) = &v else {
                panic!("not an object: {v}")
            };
            assert!(map.len() > 5, "{v}");
            for key in map.keys() {
                assert!(
                    docs.contains(&format!("`{key}`")),
                    "docs/agent.md does not document `{key}`"
                );
            }
        }
    }
}
