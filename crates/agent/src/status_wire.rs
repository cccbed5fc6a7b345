//! The status answer on the hook socket, typed: produced by the agent ([`crate::status`]) and
//! consumed by `runner-lifecycle status`, one struct for both (docs/agent.md, "Status", documents
//! every field). Times are relative to the answer: `..._in_ms` ahead (negative: overdue),
//! `..._ago_ms` and `..._ms` ages behind. The enums are the decision core's own, with their one
//! kebab-case spelling (the same as in the logs and the metric labels).
//!
//! Layout version [`SCHEMA`]: fields may be added without changing it; a field that changes meaning
//! or goes away bumps it.

pub use lifecycle_core::{Call, DrainCause, Timer};
use serde::{Deserialize, Serialize};

/// Version of the layout (the `schema` field).
pub const SCHEMA: u32 = 1;

/// The whole answer: `agent_state` says which kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "agent_state", rename_all = "kebab-case")]
pub enum Status {
    /// The agent is still discovering its instance: no decision core yet.
    Discovering(Discovering),
    /// The agent runs its decision core.
    Running(Box<Running>),
}

impl Status {
    /// The answer as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// What every answer carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Agent {
    /// The layout version, [`SCHEMA`].
    pub schema: u32,
    /// The agent's process id.
    pub pid: u32,
    /// The agent's version.
    pub version: String,
    /// Time since the agent started.
    pub uptime_ms: u64,
    /// The metrics endpoint's address, `None` when it is off (or could not bind).
    pub metrics_listen: Option<String>,
    /// The next thing the agent will do, in words.
    pub next_step: String,
}

/// The answer while the agent discovers its instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Discovering {
    /// The agent itself.
    #[serde(flatten)]
    pub agent: Agent,
    /// Job hooks that arrived before discovery and were noted for the core.
    pub hooks_noted: u64,
}

/// The listener, as the core sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Listener {
    /// Not running.
    #[default]
    Down,
    /// Start requested, not seen running yet.
    Starting,
    /// Running.
    Running,
    /// SIGINT (or SIGKILL) sent, not exited yet.
    Stopping,
}

/// The termination lifecycle action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookPhase {
    /// No termination hook is configured: hook actions are no-ops.
    NotConfigured,
    /// No lifecycle action pending.
    #[default]
    None,
    /// `Terminating:Wait` confirmed.
    Pending,
    /// Completed (by us or found completed or gone).
    Completed,
}

/// A failed call waiting for its retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// The call.
    pub call: Call,
    /// When it is retried.
    pub in_ms: i64,
}

/// The answer of a running agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Running {
    /// The agent itself.
    #[serde(flatten)]
    pub agent: Agent,
    /// This instance.
    pub instance_id: String,
    /// Its region.
    pub region: String,
    /// Its Auto Scaling group (`None`: in no group).
    pub group: Option<String>,
    /// The termination hook driven.
    pub hook_name: Option<String>,
    /// That hook's HeartbeatTimeout.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Last IMDS target-lifecycle-state.
    pub target_state: Option<String>,
    /// Last confirmed Auto Scaling LifecycleState.
    pub confirmed_state: Option<String>,
    /// The instance is known to be in no Auto Scaling group.
    pub not_in_group: bool,
    /// The listener.
    pub listener: Listener,
    /// Its pid.
    pub listener_pid: Option<u32>,
    /// How long it has run (running only).
    pub listener_up_ms: Option<i64>,
    /// Stopping: when SIGKILL follows (`None` once SIGKILL is sent).
    pub listener_kill_in_ms: Option<i64>,
    /// Down: when it is relaunched (`None`: it will not be).
    pub listener_relaunch_in_ms: Option<i64>,
    /// Pids of the listener's `Runner.Worker` children.
    pub workers: Vec<u32>,
    /// How a finished job's processes are killed: `cgroup: ...` (each listener in a cgroup of its
    /// own) or `proc-scan: ...` (the fallback, with the reason).
    pub isolation: Option<String>,
    /// Whether a job runs.
    pub job_alive: bool,
    /// Its age.
    pub job_age_ms: Option<i64>,
    /// How long the runner has been idle.
    pub idle_ms: Option<i64>,
    /// Believed scale-in protection.
    pub protected: Option<bool>,
    /// When protection is cleared if no job comes.
    pub unprotect_in_ms: Option<i64>,
    /// Why the runner drains.
    pub draining: Option<DrainCause>,
    /// SIGTERM received.
    pub stop_requested: bool,
    /// The stop is forced.
    pub stop_forced: bool,
    /// When `drain.stop_deadline` forces it.
    pub stop_forced_in_ms: Option<i64>,
    /// The lifecycle action.
    pub hook_phase: HookPhase,
    /// The same in the core's words.
    pub hook_detail: String,
    /// The next heartbeat.
    pub next_heartbeat_in_ms: Option<i64>,
    /// When AWS ends the wait whatever the heartbeats.
    pub global_deadline_in_ms: Option<i64>,
    /// The last successful heartbeat.
    pub last_heartbeat_ago_ms: Option<i64>,
    /// The last Auto Scaling error.
    pub last_error: Option<String>,
    /// Its age.
    pub last_error_ago_ms: Option<i64>,
    /// Calls asked for and not answered.
    pub calls_in_flight: Vec<Call>,
    /// Failed calls waiting for their retry.
    pub retries: Vec<Retry>,
    /// The core's next timer.
    pub next_deadline_in_ms: Option<i64>,
    /// Which timer that is.
    pub next_timer: Option<Timer>,
    /// The main step of the plan (`next_step` in one word, e.g. `hold-stop`; the gauge
    /// `runner_lifecycle_next_step` carries the same).
    pub step: Option<String>,
    /// The whole plan: every area's next step, in the order the core carries them out.
    pub plan: Vec<PlanPart>,
}

/// One part of the core's plan (`lifecycle_core::PlanEntry`), with its times relative.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanPart {
    /// The area: `describe`, `fetch`, `listener`, `protection`, `hook`, `leave` or `exit`.
    pub area: String,
    /// What comes next there.
    pub step: String,
    /// Why, when the core says.
    pub reason: Option<String>,
    /// When it is due (`None`: now, or when its call or condition allows).
    pub in_ms: Option<i64>,
    /// Its call is in flight.
    pub in_flight: bool,
    /// Its call failed and is retried then.
    pub retry_in_ms: Option<i64>,
}
