//! The simulated world's parameters. Defaults describe a realistic mid-size fleet; every number says
//! where it comes from.

use lifecycle_core::ListenerMode;
use serde::Serialize;
use std::time::Duration;

/// Fault rates. Per-instance rates are per instance-day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Faults {
    /// Probability that one Auto Scaling call is throttled (all calls of an account share one bucket).
    pub throttle_rate: f64,
    /// Probability that one Auto Scaling call fails with a 5xx.
    pub error_rate: f64,
    /// IMDS outages per instance-day (each 5 to 60 s).
    pub imds_outages_per_day: f64,
    /// Agent crashes (SIGKILL, OOM) per instance-day; systemd restarts it after 5 s.
    pub agent_crashes_per_day: f64,
    /// Runner listener crashes (exit code 2) per instance-day; the running job fails.
    pub runner_crashes_per_day: f64,
    /// Spot interruptions per instance-day (2-minute notice, AWS spot docs).
    pub spot_interruptions_per_day: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            throttle_rate: 0.02,
            error_rate: 0.005,
            imds_outages_per_day: 0.2,
            agent_crashes_per_day: 0.1,
            runner_crashes_per_day: 0.02,
            spot_interruptions_per_day: 0.05,
        }
    }
}

impl Faults {
    /// A world where nothing goes wrong.
    pub fn none() -> Self {
        Faults {
            throttle_rate: 0.0,
            error_rate: 0.0,
            imds_outages_per_day: 0.0,
            agent_crashes_per_day: 0.0,
            runner_crashes_per_day: 0.0,
            spot_interruptions_per_day: 0.0,
        }
    }
}

/// Everything that shapes one simulated run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimConfig {
    /// The one seed every random choice derives from.
    pub seed: u64,
    /// The group's maximum size.
    pub instances: u32,
    /// Simulated time.
    pub duration: Duration,
    /// How long after the Auto Scaling state changes IMDS shows the new target state.
    pub imds_lag: Duration,
    /// The termination hook's HeartbeatTimeout (source PR: 1800 s, DefaultResult ABANDON).
    pub hook_timeout: Duration,
    /// How runner-lifecycle runs the listener.
    pub listener_mode: ListenerMode,
    /// Idle runners the scaling policy aims for (and the group's minimum size).
    pub idle_target: u32,
    /// Share of `instances` kept busy at the weekday peak.
    pub peak_utilisation: f64,
    /// Fault rates.
    pub faults: Faults,
    /// Print every event and decision of this instance to stderr (to study a failing seed).
    pub trace_instance: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::fleet(42, 100, 7.0)
    }
}

impl SimConfig {
    /// A fleet of `instances` for `days`, with default faults.
    pub fn fleet(seed: u64, instances: u32, days: f64) -> Self {
        SimConfig {
            seed,
            instances,
            duration: Duration::from_secs_f64(days * 86400.0),
            imds_lag: Duration::from_secs(2),
            hook_timeout: Duration::from_secs(1800),
            listener_mode: ListenerMode::Persistent,
            idle_target: (instances / 10).max(2),
            peak_utilisation: 0.6,
            faults: Faults::default(),
            trace_instance: None,
        }
    }

    /// The longest an idle runner may sit in Terminating:Wait before the invariant fails, before fault
    /// allowances: IMDS lag, one 1 s IMDS poll, the listener's exit after SIGINT (well under 1 s when
    /// idle), one API round trip, and 2 s of slack.
    pub fn idle_wait_limit(&self) -> Duration {
        self.imds_lag + Duration::from_millis(4500)
    }
}

/// Timings of the simulated machinery, in one place.
pub mod timing {
    use std::time::Duration;

    /// IMDS is polled once a second (agent default; aws-node-termination-handler polls every 2 s).
    pub const IMDS_POLL: Duration = Duration::from_secs(1);
    /// The agent sees a Runner.Worker appear or exit this long after it does (/proc polling).
    pub const WORKER_OBSERVATION: Duration = Duration::from_millis(50);
    /// A listener needs this long to create its session before it can take jobs.
    pub const LISTENER_START: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(5));
    /// From the broker's choice to the job message in the listener's long poll.
    pub const DISPATCH: (Duration, Duration) = (Duration::from_millis(200), Duration::from_millis(1500));
    /// From the worker's start to the job-started hook (job acquired, actions downloaded).
    pub const SETUP: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(10));
    /// From the job-completed hook's end to the worker's exit.
    pub const TEARDOWN: Duration = Duration::from_millis(500);
    /// An idle listener exits this long after SIGINT.
    pub const IDLE_EXIT: Duration = Duration::from_millis(300);
    /// A busy listener cancels its job and exits this long after SIGINT.
    pub const CANCEL_EXIT: Duration = Duration::from_secs(3);
    /// Auto Scaling API round trip from the agent.
    pub const API_LATENCY: (Duration, Duration) = (Duration::from_millis(30), Duration::from_millis(120));
    /// `aws autoscaling ...` from a bash hook: 742 ms measured on loopback (shared/docs/test-infra.md).
    pub const AWS_CLI: Duration = Duration::from_millis(742);
    /// Scale-in event -> EventBridge -> Lambda -> SSM -> `systemctl stop`: about 11 s in the source PR's
    /// CloudTrail timeline (scale-in 10:31:04, stop command 10:31:15).
    pub const EVENT_TO_STOP: Duration = Duration::from_secs(11);
    /// Terminating:Proceed until the instance is gone (shutdown).
    pub const SHUTDOWN: Duration = Duration::from_secs(30);
    /// Launch to InService (boot, cloud-init, registration).
    pub const BOOT: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(120));
    /// systemd restarts a crashed agent after RestartSec.
    pub const AGENT_RESTART: Duration = Duration::from_secs(5);
    /// Spot: notice to interruption (AWS spot docs: two minutes).
    pub const SPOT_NOTICE: Duration = Duration::from_secs(120);
    /// RunnerService.js relaunches a listener after exit code 2, 3 or 4 after 5 s.
    pub const RELAUNCH: Duration = Duration::from_secs(5);
    /// The scaling policy's evaluation period (CloudWatch alarm period in the source PR: 60 s).
    pub const SCALING_PERIOD: Duration = Duration::from_secs(60);
    /// Scale-in: idle above target for 3 periods, cooldown 180 s (source PR).
    pub const SCALE_IN_PERIODS: u32 = 3;
    /// See `SCALE_IN_PERIODS`.
    pub const SCALE_IN_COOLDOWN: Duration = Duration::from_secs(180);
    /// Scale-out cooldown (source PR: 60 s).
    pub const SCALE_OUT_COOLDOWN: Duration = Duration::from_secs(60);
}
