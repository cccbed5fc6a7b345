//! The knobs of the decision core. Defaults are chosen from the numbers in the comments.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The defaults of the core's settings that the agent exposes as keys (its keys table,
/// crates/agent/src/config.rs), each written once: `X` is the value [`CoreConfig::default`] and
/// [`HandoverConfig::default`] use, `X_TEXT` the same default as the keys table (and so the docs
/// and `--help`) writes it and the agent parses back.
pub mod defaults {
    use super::ListenerMode;
    use std::time::Duration;

    /// Whole-second defaults: the value and its text (`30s`).
    macro_rules! seconds {
        ($($(#[$doc:meta])* $name:ident, $text:ident = $n:literal;)+) => {$(
            $(#[$doc])*
            pub const $name: Duration = Duration::from_secs($n);
            #[doc = concat!("[`", stringify!($name), "`] as the keys table writes it.")]
            pub const $text: &str = concat!($n, "s");
        )+};
    }

    /// On/off defaults: the value and its text (`true`, `false`).
    macro_rules! flags {
        ($($(#[$doc:meta])* $name:ident, $text:ident = $b:literal;)+) => {$(
            $(#[$doc])*
            pub const $name: bool = $b;
            #[doc = concat!("[`", stringify!($name), "`] as the keys table writes it.")]
            pub const $text: &str = concat!($b);
        )+};
    }

    seconds! {
        /// [`CoreConfig::unprotect_delay`](super::CoreConfig::unprotect_delay) (`drain.unprotect_delay`).
        UNPROTECT_DELAY, UNPROTECT_DELAY_TEXT = 30;
        /// [`CoreConfig::stop_grace`](super::CoreConfig::stop_grace) (`runner.stop_grace`;
        /// RunnerService.js also waits 30 s).
        STOP_GRACE, STOP_GRACE_TEXT = 30;
        /// [`CoreConfig::relaunch_delay`](super::CoreConfig::relaunch_delay) (`runner.relaunch_delay`;
        /// RunnerService.js: 5 s).
        RELAUNCH_DELAY, RELAUNCH_DELAY_TEXT = 5;
        /// [`HandoverConfig::bound`](super::HandoverConfig::bound) (`drain.handover_bound`).
        HANDOVER_BOUND, HANDOVER_BOUND_TEXT = 120;
    }

    flags! {
        /// [`CoreConfig::drain_on_rebalance`](super::CoreConfig::drain_on_rebalance)
        /// (`drain.on_rebalance`).
        DRAIN_ON_REBALANCE, DRAIN_ON_REBALANCE_TEXT = false;
        /// [`CoreConfig::one_job_per_instance`](super::CoreConfig::one_job_per_instance)
        /// (`runner.one_job_per_instance`).
        ONE_JOB_PER_INSTANCE, ONE_JOB_PER_INSTANCE_TEXT = false;
        /// [`HandoverConfig::latch`](super::HandoverConfig::latch) (`drain.handover_latch`).
        HANDOVER_LATCH, HANDOVER_LATCH_TEXT = true;
        /// [`HandoverConfig::release`](super::HandoverConfig::release) (`drain.release_registration`).
        RELEASE_REGISTRATION, RELEASE_REGISTRATION_TEXT = true;
    }

    /// [`CoreConfig::listener_mode`](super::CoreConfig::listener_mode) (`runner.mode`): just-in-time
    /// runners.
    pub const LISTENER_MODE: ListenerMode = ListenerMode::Jit;
    /// [`LISTENER_MODE`] as the keys table writes it.
    pub const LISTENER_MODE_TEXT: &str = LISTENER_MODE.name();
}

/// The termination lifecycle hook the agent drives, as DescribeLifecycleHooks reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookConfig {
    /// The hook's name (`LifecycleHookName`).
    pub name: String,
    /// The hook's `HeartbeatTimeout` (AWS: 30 to 7200 s, default 3600).
    pub heartbeat_timeout: Duration,
}

impl HookConfig {
    /// The global timeout after which AWS applies the default result whatever the heartbeats:
    /// `min(48 h, 100 x HeartbeatTimeout)` (AWS docs, "Amazon EC2 Auto Scaling lifecycle hooks").
    pub fn global_timeout(&self) -> Duration {
        (self.heartbeat_timeout * 100).min(Duration::from_secs(48 * 3600))
    }

    /// The heartbeat period before jitter: a third of HeartbeatTimeout, so two heartbeats can fail in a
    /// row before the hook expires (keikoproj/lifecycle-manager uses a half; we keep one more chance).
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_timeout / 3
    }
}

/// How the runner listener is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerMode {
    /// Just-in-time runners (the default): every listener incarnation is a fresh ephemeral registration
    /// from GitHub's `generate-jitconfig`, takes at most one job and exits 0 after it
    /// (actions/runner src/Runner.Listener/Runner.cs: `RunOnce || settings.Ephemeral`). The driver
    /// fetches the next config while the job runs ([`Action::FetchJitConfig`](crate::Action)), so the host
    /// serves again within seconds of the job's end; a draining host starts no next listener, so there
    /// is no next job to race.
    Jit,
    /// `run --startuptype service`: one long-lived listener takes job after job. Between a worker's exit
    /// and our stop signal it can take the next job (actions/runner src/Runner.Listener/Runner.cs).
    Persistent,
    /// `run --once`: the listener takes one job and exits 0 when it completes; the agent relaunches it
    /// unless draining. Closes the "next job lands while we stop a busy runner" window.
    OneJob,
}

impl ListenerMode {
    /// Every mode's one spelling, in the order the docs list them: the agent's `runner.mode`
    /// choices, `install --runner-mode` and the serde spelling all come from here.
    pub const NAMES: [&'static str; 3] = ["jit", "persistent", "one-job"];

    /// Its one spelling.
    pub const fn name(self) -> &'static str {
        match self {
            ListenerMode::Jit => Self::NAMES[0],
            ListenerMode::Persistent => Self::NAMES[1],
            ListenerMode::OneJob => Self::NAMES[2],
        }
    }

    /// The mode spelled `word`; `None` for any other word (never a silent fallback to JIT).
    pub fn from_name(word: &str) -> Option<ListenerMode> {
        [ListenerMode::Jit, ListenerMode::Persistent, ListenerMode::OneJob]
            .into_iter()
            .find(|m| m.name() == word)
    }
}

impl Default for ListenerMode {
    fn default() -> Self {
        defaults::LISTENER_MODE
    }
}

/// Everything the core needs to decide, fixed for a host's life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoreConfig {
    /// The termination hook, or `None` when the group has none: every hook action is then a no-op
    /// (the source PR's backward-compatible mode).
    pub hook: Option<HookConfig>,
    /// How long a runner stays protected after its job ends, waiting for the next job, before the
    /// protection is cleared. Saves an API call pair per job in busy periods.
    pub unprotect_delay: Duration,
    /// After SIGINT to an idle listener, how long before SIGKILL. The listener exits in well under a
    /// second when idle; 30 s matches RunnerService.js's own SIGKILL delay.
    pub stop_grace: Duration,
    /// After a stop request (SIGTERM to the agent), the longest a running job may delay the stop before
    /// it is forced (which cancels the job). `None`: wait as long as the job runs.
    pub stop_deadline: Option<Duration>,
    /// How the listener is run.
    pub listener_mode: ListenerMode,
    /// Whether a rebalance recommendation starts a drain (default: only a warning).
    pub drain_on_rebalance: bool,
    /// First retry delay for a failed Auto Scaling call; doubles per failure, with jitter.
    pub retry_base: Duration,
    /// Longest retry delay for protection and describe calls.
    pub retry_cap: Duration,
    /// Longest retry delay for CompleteLifecycleAction: kept short because an idle host in
    /// Terminating:Wait is money burning.
    pub complete_retry_cap: Duration,
    /// Retry delay after AccessDenied or an unknown error: slow, because a person has to act.
    pub slow_retry: Duration,
    /// How often to re-describe while the instance is launching (Pending:Wait).
    pub describe_poll: Duration,
    /// How often to describe while IMDS is down: slow, because every host of an account shares one
    /// Auto Scaling token bucket (AWS recommends events over polling).
    pub imds_fallback_poll: Duration,
    /// IMDS failing for this long switches termination detection to DescribeAutoScalingInstances polls.
    pub imds_down_after: Duration,
    /// Warn this long before the lifecycle action's global timeout.
    pub global_timeout_warning: Duration,
    /// Relaunch delay after a listener exit that asks for one (RunnerService.js: 5 s).
    pub relaunch_delay: Duration,
    /// Give up relaunching after this many failed starts in a row (RunnerService.js: 10).
    pub relaunch_limit: u32,
    /// How long a `job-started` hook report may wait for a `Runner.Worker` to be seen before its claim
    /// is dropped. A hook report is a hint (anything running as the runner's user can send one); the
    /// worker is the truth. The started hook runs as a step of the job inside the worker process
    /// (actions/runner src/Runner.Worker/JobExtension.cs), so a genuine report always has a worker
    /// already: the grace only covers the driver's `/proc` polling (the agent uses 2 x
    /// `runner.worker_poll`, at least 1 s).
    #[serde(default = "default_hook_grace")]
    pub hook_grace: Duration,
    /// How the stop of an idle listener guards the handover from a job message to `Runner.Worker`.
    #[serde(default)]
    pub handover: HandoverConfig,
    /// One instance per job (just-in-time mode only; default off): once the listener's one job has
    /// ended (it exits 0 having run it), the host starts no next listener and fetches no next
    /// config, drains ([`DrainCause::JobDone`](crate::DrainCause)) and leaves its group
    /// ([`Action::LeaveGroup`](crate::Action): terminate without decrementing the desired capacity,
    /// so the group launches a fresh instance). The termination hook is then completed at once (the
    /// host is idle, its listener down). A host in no group exits instead. For operators who want a
    /// fresh machine for every job; it costs a boot per job.
    #[serde(default)]
    pub one_job_per_instance: bool,
}

/// The guards of the handover window: between the job message reaching the listener and
/// `Runner.Worker` spawning, the listener acknowledges, acquires and renews the job, and SIGINT in
/// that window loses the job (shared/docs/handover-window.md sections 1.2, 1.3, 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HandoverConfig {
    /// Hold the stop while the listener's perf log shows a job message without a worker (the
    /// latch; the driver starts each listener with `RUNNER_PERFLOG` and feeds
    /// [`Input::JobMessageReceived`](crate::Input)).
    pub latch: bool,
    /// Just-in-time mode: ask the controller to delete the listener's registration before the stop,
    /// and hold the stop when GitHub refuses (busy) or no longer knows it (not found).
    pub release: bool,
    /// The longest a job message, or a refused release, holds the stop without a worker. It covers
    /// the listener's acknowledge (5 s timeout, Runner.cs:691-710) and `acquirejob` with up to 5
    /// attempts 5-15 s apart (RunServer.cs:63-72): at most 5 s + 4 x 15 s + five round trips, about
    /// 70 s, so 120 s leaves room for the first renewal and the worker's spawn. A skipped message
    /// (404/409/422 on acquire: the job went to another runner) never produces a worker, so this is
    /// also what a forged perf line can cost: one drain delayed by at most this, once per line
    /// streak.
    pub bound: Duration,
    /// After GitHub deleted the registration, how long to keep watching for a message that was
    /// already in transit before the stop (handover-window.md section 6 step 4: a few seconds
    /// cover the broker's long-poll return; the simulated transit is at most 1.5 s).
    pub release_watch: Duration,
}

impl Default for HandoverConfig {
    fn default() -> Self {
        HandoverConfig {
            latch: defaults::HANDOVER_LATCH,
            release: defaults::RELEASE_REGISTRATION,
            bound: defaults::HANDOVER_BOUND,
            release_watch: Duration::from_secs(5),
        }
    }
}

impl HandoverConfig {
    /// No guard at all: the stop goes out the moment the listener looks idle (the design before the
    /// handover issue; the simulation runs it to show the loss these guards prevent).
    pub fn off() -> Self {
        HandoverConfig {
            latch: false,
            release: false,
            ..HandoverConfig::default()
        }
    }
}

fn default_hook_grace() -> Duration {
    Duration::from_secs(1)
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            hook: None,
            unprotect_delay: defaults::UNPROTECT_DELAY,
            stop_grace: defaults::STOP_GRACE,
            stop_deadline: None,
            listener_mode: defaults::LISTENER_MODE,
            drain_on_rebalance: defaults::DRAIN_ON_REBALANCE,
            retry_base: Duration::from_millis(200),
            retry_cap: Duration::from_secs(30),
            complete_retry_cap: Duration::from_secs(4),
            slow_retry: Duration::from_secs(60),
            describe_poll: Duration::from_secs(10),
            imds_fallback_poll: Duration::from_secs(30),
            imds_down_after: Duration::from_secs(10),
            global_timeout_warning: Duration::from_secs(3600),
            relaunch_delay: defaults::RELAUNCH_DELAY,
            relaunch_limit: 10,
            hook_grace: default_hook_grace(),
            handover: HandoverConfig::default(),
            one_job_per_instance: defaults::ONE_JOB_PER_INSTANCE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_mode_names_are_one_table_and_unknown_words_are_refused() {
        for name in ListenerMode::NAMES {
            let mode = ListenerMode::from_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(mode.name(), name);
            assert_eq!(
                serde_json::to_string(&mode).ok(),
                Some(format!("\"{name}\"")),
                "serde spells it so"
            );
        }
        for word in ["", "JIT", "ephemeral", "one_job"] {
            assert_eq!(ListenerMode::from_name(word), None, "{word}");
        }
    }
}
