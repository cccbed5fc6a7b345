//! The simulated world's parameters. Defaults describe a realistic mid-size fleet; every number says
//! where it comes from.

use crate::workload::JobSpec;
use lifecycle_core::ListenerMode;
use serde::Serialize;
use std::sync::Arc;
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
    /// Account-wide throttling episodes per day: all Auto Scaling calls of an account and region share
    /// one token bucket whose rates are not published (shared/docs/domain.md section 2), so another
    /// tool draining it throttles every host at once. Assumption, swept; each episode lasts 1 to 10
    /// minutes and throttles `EPISODE_THROTTLE` of calls.
    pub throttle_episodes_per_day: f64,
    /// Probability that the source PR's fire-and-forget stop path (EventBridge -> Lambda -> SSM
    /// SendCommand -> `systemctl stop`) never stops the runner: a Lambda error before SendCommand, or
    /// SSM to a host whose SSM agent is offline. Nothing checks or retries it (domain brief section 4,
    /// weaknesses 2 and 4). Assumption (1 in 200), swept with `--stop-path-failure-rate`.
    pub stop_path_failure_rate: f64,
    /// Probability that one GitHub REST request of the controller (`POST .../actions/runners/
    /// generate-jitconfig`) fails with a 5xx or a timeout. The controller's client tries each request
    /// up to 3 times (lifecycle-github `Options::max_attempts`). Assumption (1 in 500), swept with
    /// `--github-error-rate`.
    pub github_error_rate: f64,
    /// GitHub rate-limit episodes per day: the GitHub App's budget is shared with every other user of
    /// the installation (primary limit: 5,000 requests an hour at least; secondary limits answer 403
    /// or 429 with `Retry-After`: GitHub REST API docs, "Rate limits for the REST API"). Each episode
    /// lasts `timing::GITHUB_RATE_LIMIT_EPISODE` and refuses every request until it ends, saying so
    /// in `Retry-After`. Assumption, swept with `--github-rate-limit-episodes-per-day`.
    pub github_rate_limit_episodes_per_day: f64,
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
            throttle_episodes_per_day: 0.5,
            stop_path_failure_rate: 0.005,
            github_error_rate: 0.002,
            github_rate_limit_episodes_per_day: 0.2,
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
            throttle_episodes_per_day: 0.0,
            stop_path_failure_rate: 0.0,
            github_error_rate: 0.0,
            github_rate_limit_episodes_per_day: 0.0,
        }
    }
}

/// What GitHub does with a job whose listener stopped (SIGINT) or died in one window of the handover
/// (shared/docs/handover-window.md sections 1.3 and 2.3): the job message in transit (W0), received
/// with `acknowledge`/`acquirejob` in flight (W1), or acquired with the worker not yet spawned (W2).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum Unacquired {
    /// Nothing completes the job: it is lost with the stopping runner (counted in
    /// `jobs_killed_by_stop`).
    Lost,
    /// GitHub offers it again (to the front of the queue) after this long; the delay counts in its
    /// queue wait.
    Requeue {
        /// Delay before the broker offers it again.
        after: Duration,
    },
}

impl Unacquired {
    /// GitHub's documented rule: "If the runner doesn't pick up the assigned job within 60 seconds,
    /// the job is re-queued so that a new runner can accept it" (github/docs
    /// `content/actions/reference/runners/self-hosted-runners.md`; handover-window.md section 2.1).
    pub const REQUEUE_60: Unacquired = Unacquired::Requeue {
        after: timing::DOCUMENTED_REQUEUE,
    };
    /// An acquired job stays leased to the dead runner until the lease lapses: renewed every 60 s
    /// about 10 minutes ahead (JobDispatcher.cs:748-776; runner#4492; handover-window.md 1.2).
    pub const REQUEUE_AFTER_LEASE: Unacquired = Unacquired::Requeue {
        after: Duration::from_secs(600),
    };
}

/// The outcome of a stop in each window of the handover.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HandoverOutcomes {
    /// W0, the message in transit on the long poll: the listener drops it, the broker may count it
    /// delivered (BrokerMessageListener.cs:316-319; runner#4728). Default: re-queued after 60 s.
    pub w0: Unacquired,
    /// W1, received, `acknowledge`/`acquirejob` in flight: the cancelled acquire is skipped and the
    /// job never runs (Runner.cs:747-757); assigned, not acquired. Default: re-queued after 60 s.
    pub w1: Unacquired,
    /// W2, acquired, first `renewjob` or the worker's spawn pending: the dispatch is cancelled and
    /// `CompleteJobRequestAsync` is skipped for run-service jobs (JobDispatcher.cs:1124-1127), so the
    /// job stays leased to a dead runner. Default: lost.
    pub w2: Unacquired,
}

impl Default for HandoverOutcomes {
    fn default() -> Self {
        HandoverOutcomes {
            w0: Unacquired::REQUEUE_60,
            w1: Unacquired::REQUEUE_60,
            w2: Unacquired::Lost,
        }
    }
}

impl HandoverOutcomes {
    /// The same policy in every window (`simulate --unacquired`).
    pub fn all(p: Unacquired) -> Self {
        HandoverOutcomes { w0: p, w1: p, w2: p }
    }
}

/// What GitHub answers when the controller deletes a registration whose runner has a job assigned
/// (W0 to W2; with a worker running it always refuses: REST 422, cybozu-go/meows#136).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseWhileAssigned {
    /// Refused: the Actions service's `RemoveRunner` refuses with `JobStillRunningException` once a
    /// job is *assigned* (ARC ADR 2022-12-27; handover-window.md section 3b). For a JIT registration
    /// the assignment may have consumed it, and the answer is 404 instead (`release_not_found`).
    Refused,
    /// Accepted (the lagging REST `busy` flag, tf-aws-gh-runner #5228): the registration is gone and
    /// the job is left to GitHub, as if its listener had stopped in its window (the window's policy
    /// in `HandoverOutcomes`, counted in `jobs_released_while_assigned`).
    Accepted,
}

/// How the demand policy gives capacity back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DemandScaleIn {
    /// Lower the desired capacity and let the group pick (its default termination policy).
    Desired,
    /// Pick the victim itself: an idle host (no job by the `workflow_job` webhooks), its registration
    /// deleted first (refused: skip it), then `TerminateInstanceInAutoScalingGroup` with
    /// `ShouldDecrementDesiredCapacity`.
    Victims,
}

impl DemandScaleIn {
    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DemandScaleIn::Desired => "desired",
            DemandScaleIn::Victims => "victims",
        }
    }
}

/// How the group's desired capacity is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scaling {
    /// The source PR's: CloudWatch alarms on GitHub's idle-runner count (`online && !busy`, sampled
    /// once a minute), 3 x 60 s above or below the target, each step one instance, cooldowns 180 s
    /// (in) and 60 s (out).
    IdleAlarms,
    /// The controller's (`controller scale`, lifecycle-core `scaling`): queued plus running jobs plus
    /// the idle target, at once on each `workflow_job` webhook, reconciled every minute; scale-in after
    /// demand stayed lower for `scale_in_after`.
    Demand,
}

impl Scaling {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scaling::IdleAlarms => "idle-alarms",
            Scaling::Demand => "demand",
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
    /// GitHub's REST `busy` flag shows a job this long after it started, uniform in the range: it has
    /// been seen false 25-60 s into a job (github-aws-runners #5085, PR #5228; domain brief section 3).
    /// The idle-runner scaling metric reads that flag, so a just-started runner still counts as idle.
    pub busy_flag_lag: (Duration, Duration),
    /// Median of the source PR's stop path, scale-in to `systemctl stop`: 11 s in its CloudTrail
    /// timeline (scale-in 10:31:04, stop command 10:31:15). One measurement: the spread is log-normal
    /// with sigma `timing::EVENT_TO_STOP_SIGMA` (assumption), and the median is swept.
    pub event_to_stop: Duration,
    /// What happens to a job whose listener stops in each window of the handover.
    pub handover: HandoverOutcomes,
    /// Whether runner-lifecycle's handover guard is on (the perf-log latch and the release of the
    /// registration; lifecycle-core `HandoverConfig`). Each strategy sets it (see `Strategy`).
    pub handover_guard: bool,
    /// Whether runner-lifecycle runs one instance per job (lifecycle-core
    /// `CoreConfig::one_job_per_instance`: after its job the host leaves the group, which launches a
    /// replacement). Each strategy sets it (see `Strategy`).
    pub one_job_per_instance: bool,
    /// What GitHub answers to a registration delete while a job is assigned.
    pub release_while_assigned: ReleaseWhileAssigned,
    /// With `Refused`: the probability that a JIT registration whose job is assigned answers 404
    /// (consumed by the assignment: actions/runner#4617, PR #4618; handover-window.md 1.4) rather
    /// than 422/400. Low-to-medium confidence, so the default is an even split; the core holds the
    /// stop on both alike.
    pub release_not_found: f64,
    /// Probability that one `acquirejob` attempt fails transiently (the listener retries up to 5
    /// attempts 5-15 s apart, RunServer.cs:63-72). Assumption.
    pub acquire_failure_rate: f64,
    /// How the demand policy scales in.
    pub demand_scale_in: DemandScaleIn,
    /// Instances kept stopped in a warm pool (0: no pool). Scale-out takes from it first.
    pub warm_pool: u32,
    /// Warm-pool trims per pool-day (pool resizes, instance refresh, max instance lifetime): each
    /// sends one stopped instance through `Warmed:Terminating:Wait`, where no agent runs, so a central
    /// handler must complete it (domain brief section 2). Assumption, swept.
    pub warm_trims_per_day: f64,
    /// Replay these jobs instead of the synthetic stream (`simulate --trace FILE`).
    #[serde(skip)]
    pub trace: Option<Arc<Vec<JobSpec>>>,
    /// The trace file's name, for the report.
    pub trace_file: Option<String>,
    /// The scaling policy (each strategy sets its own; see `Strategy`).
    pub scaling: Scaling,
    /// Demand scaling: idle runners kept warm beyond demand. The alarm policy's `idle_target` is a
    /// floor it reaches one instance a minute; the demand policy scales out for every queued job at
    /// once, so it needs far fewer idle runners for the same queue wait.
    pub demand_idle_target: u32,
    /// Demand scaling: how long demand must stay below capacity before capacity drops. Each scale-in is
    /// a boot later and a stop window now, so churn costs jobs; 15 minutes halves the scale-ins of 2
    /// minutes for 10% more idle time on the default world (`--scale-in-after` swept 120-1800 s).
    pub scale_in_after: Duration,
    /// Demand scaling: the share of `workflow_job` webhooks that never arrive (GitHub does not retry
    /// failed deliveries by itself; users report jobs left queued for an hour, pytorch/test-infra
    /// #5840). The minute's reconcile repairs them. Assumption, swept.
    pub webhook_drop_rate: f64,
    /// Log every finished job in `Metrics::job_log` (for crate::github_export; off otherwise).
    #[serde(skip)]
    pub record_jobs: bool,
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
            listener_mode: ListenerMode::default(),
            idle_target: (instances / 10).max(2),
            peak_utilisation: 0.6,
            faults: Faults::default(),
            trace_instance: None,
            busy_flag_lag: (Duration::from_secs(25), Duration::from_secs(60)),
            event_to_stop: timing::EVENT_TO_STOP,
            handover: HandoverOutcomes::default(),
            handover_guard: true,
            one_job_per_instance: false,
            release_while_assigned: ReleaseWhileAssigned::Refused,
            release_not_found: 0.5,
            acquire_failure_rate: 0.01,
            demand_scale_in: DemandScaleIn::Desired,
            warm_pool: 0,
            warm_trims_per_day: 1.0,
            trace: None,
            trace_file: None,
            scaling: Scaling::IdleAlarms,
            demand_idle_target: (instances / 100).max(1),
            scale_in_after: Duration::from_secs(900),
            webhook_drop_rate: 0.01,
            record_jobs: false,
        }
    }

    /// The longest an idle runner may sit in Terminating:Wait before the invariant fails, before fault
    /// allowances: IMDS lag, one 1 s IMDS poll, the listener's exit after SIGINT (well under 1 s when
    /// idle), one API round trip, and 2 s of slack. The handover guard's holds are allowances of
    /// their own, granted as they happen and nothing else (world/invariants.rs
    /// `allow_guard_hold`): the release's round trip plus the 5 s watch after it, and a job message
    /// whose acquire was skipped, up to the 120 s bound. A job in its handover is not idle time.
    pub fn idle_wait_limit(&self) -> Duration {
        self.imds_lag + Duration::from_millis(4500)
    }
}

/// Timings of the simulated machinery, in one place.
pub mod timing {
    use std::time::Duration;

    /// IMDS is polled once a second (agent default `aws.imds_poll`; aws-node-termination-handler polls
    /// every 2 s).
    pub const IMDS_POLL: Duration = Duration::from_secs(1);
    /// The agent sees a Runner.Worker appear or exit, or a new `MessageReceived_RunnerJobRequest`
    /// line in the listener's `Runner.perf` (Runner.cs:606-607), this long after it happens (its /proc
    /// and perf-log poll; agent default `runner.worker_poll` = 50 ms).
    pub const WORKER_OBSERVATION: Duration = Duration::from_millis(50);
    /// A listener needs this long to create its session before it can take jobs (assumption: .NET
    /// start plus one session round trip; it only delays the first poll, never a stop).
    pub const LISTENER_START: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(5));
    // The handover, from the broker's commit to `Runner.Worker` (shared/docs/handover-window.md
    // section 1.2, actions/runner 258d6c85). Until the windows were split it was one interval,
    // `DISPATCH` = 0.2-1.5 s (mean 0.85 s), "one long-poll return, a 5 s-bounded ack, one acquire,
    // and one renew, typically hundreds of ms" (section 1.3). The parts below sum to 0.2-1.4 s
    // (mean 0.8 s) when nothing fails, so totals stay comparable; an acquire that fails transiently
    // adds 5-15 s per retry.

    /// W0: the broker committed the job to this runner; the message is in transit on the open long
    /// poll until the listener has it (BrokerHttpClient `GetRunnerMessageAsync`; section 1.1). Nobody
    /// has measured it (section 5.6); assumption: network transit plus parsing, tens to a few hundred
    /// ms.
    pub const W0_TRANSIT: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(300));
    /// One HTTPS round trip of the listener to the broker or the run service (`acknowledge`, one
    /// `acquirejob` attempt, the first `renewjob`; Runner.cs:691-710, 735, JobDispatcher.cs:381-399).
    /// Assumption: 50-300 ms.
    pub const LISTENER_ROUND_TRIP: (Duration, Duration) = (Duration::from_millis(50), Duration::from_millis(300));
    /// `acknowledge` is bounded by a 5 s timeout, its errors logged and ignored (Runner.cs:691-710).
    pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
    /// `acquirejob` tries up to 5 attempts (RunServer.cs:63-72) ...
    pub const ACQUIRE_ATTEMPTS: u32 = 5;
    /// ... 5-15 s apart (RunServer.cs:63-72).
    pub const ACQUIRE_BACKOFF: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(15));
    /// GitHub re-queues an assigned job nobody picks up after 60 s (github/docs "Routing precedence
    /// for self-hosted runners"; handover-window.md 2.1).
    pub const DOCUMENTED_REQUEUE: Duration = Duration::from_secs(60);
    /// W2's end: after the first `renewjob` the dispatcher starts `Runner.Worker`
    /// (`StartingWorkerProcess`, JobDispatcher.cs:421,474). Assumption for a process spawn: 30-200 ms.
    pub const WORKER_SPAWN: (Duration, Duration) = (Duration::from_millis(30), Duration::from_millis(200));
    /// A stop-window kill counts as the *next-job* race when the listener had run a job that ended
    /// less than this before the stop: the persistent listener polls again the moment its job ends,
    /// so a job it takes then was dispatched within the handover (W0 to W2, at most 1.4 s without an
    /// acquire retry) of that end; 5 s covers it with room for the agent's observation delay. Anything else is the *idle-listener*
    /// race (a listener idle for longer, whatever it ran before). A classification for the report
    /// only; no decision depends on it.
    pub const NEXT_JOB_RACE_WINDOW: Duration = Duration::from_secs(5);
    /// From the worker's start to the job-started hook (job acquired, actions downloaded; domain brief
    /// section 3: the hook runs only after both). Assumption for the range.
    pub const SETUP: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(10));
    /// From the job-completed hook's end to the worker's exit (assumption: log upload and cleanup).
    pub const TEARDOWN: Duration = Duration::from_millis(500);
    /// An idle listener exits this long after SIGINT (the stand-in listener in tests/support, faithful
    /// to Runner.cs: it ends its session and exits).
    pub const IDLE_EXIT: Duration = Duration::from_millis(300);
    /// A busy listener cancels its job and exits within this range after SIGINT: the worker runs the
    /// job's cancellation and cleanup, and RunnerService.js SIGKILLs the listener 30 s after its SIGINT
    /// (domain brief section 3). The lower bound is an assumption.
    pub const CANCEL_EXIT: (Duration, Duration) = (Duration::from_secs(3), Duration::from_secs(30));
    /// Auto Scaling API round trip from the agent (assumption for an in-region HTTPS call; the agent
    /// benchmark measures 120 ms p50 from worker exit to completion on loopback, bench/agent_bench.py).
    pub const API_LATENCY: (Duration, Duration) = (Duration::from_millis(30), Duration::from_millis(120));
    /// `aws autoscaling ...` from a bash hook: 742 ms measured on loopback (shared/docs/test-infra.md).
    pub const AWS_CLI: Duration = Duration::from_millis(742);
    /// The source PR's job-started hook `chown`s the work tree before its CLI call, so protection takes
    /// effect this long after the hook starts (about 1-2 s in all, issue #8 review of gha_prerun.sh).
    pub const PRERUN_BEFORE_CALL: (Duration, Duration) = (Duration::from_millis(300), Duration::from_millis(1300));
    /// Scale-in event -> EventBridge -> Lambda -> SSM -> `systemctl stop`: about 11 s in the source PR's
    /// CloudTrail timeline (scale-in 10:31:04, stop command 10:31:15).
    pub const EVENT_TO_STOP: Duration = Duration::from_secs(11);
    /// Log-normal spread of that path (assumption: SSM delivery is asynchronous and uneven; with 0.35
    /// the middle 90% lies between 0.56x and 1.78x the median).
    pub const EVENT_TO_STOP_SIGMA: f64 = 0.35;
    /// A termination event reaches a central handler (EventBridge -> Lambda): EventBridge delivers
    /// typically within about a second, plus a Lambda start (assumption).
    pub const EVENT_TO_HANDLER: (Duration, Duration) = (Duration::from_millis(500), Duration::from_millis(3000));
    /// Throttling episodes: their length and the share of calls they throttle (assumption).
    pub const EPISODE_LENGTH: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(600));
    /// See `EPISODE_LENGTH`.
    pub const EPISODE_THROTTLE: f64 = 0.5;
    /// A warm (stopped) instance starts and reaches InService faster than a fresh launch (AWS warm pool
    /// docs: instances "start faster"; the range is an assumption).
    pub const WARM_START: (Duration, Duration) = (Duration::from_secs(20), Duration::from_secs(45));
    /// Terminating:Proceed until the instance is gone (shutdown; assumption, it only affects cost).
    pub const SHUTDOWN: Duration = Duration::from_secs(30);
    /// Launch to InService (boot, cloud-init, registration; assumption, it shapes queue waits for every
    /// strategy alike).
    pub const BOOT: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(120));
    /// systemd restarts a crashed agent after RestartSec.
    pub const AGENT_RESTART: Duration = Duration::from_secs(5);
    /// Spot: notice to interruption (AWS spot docs: two minutes).
    pub const SPOT_NOTICE: Duration = Duration::from_secs(120);
    /// RunnerService.js relaunches a listener after exit code 2, 3 or 4 after 5 s (the core's
    /// `runner.relaunch_delay` default copies it).
    pub const RELAUNCH: Duration = lifecycle_core::config::defaults::RELAUNCH_DELAY;
    /// The scaling policy's evaluation period (CloudWatch alarm period in the source PR: 60 s).
    pub const SCALING_PERIOD: Duration = Duration::from_secs(60);
    /// Scale-in: idle above target for 3 periods, cooldown 180 s (source PR). Scale-out likewise needs
    /// 3 periods below the target (its second alarm), and each alarm steps the group by one instance.
    pub const SCALE_IN_PERIODS: u32 = 3;
    /// A `workflow_job` webhook reaches the controller (GitHub delivery plus a Lambda function URL;
    /// assumption).
    pub const WEBHOOK_LATENCY: (Duration, Duration) = (Duration::from_millis(300), Duration::from_millis(2000));
    /// See `SCALE_IN_PERIODS`.
    pub const SCALE_IN_COOLDOWN: Duration = Duration::from_secs(180);
    /// Scale-out cooldown (source PR: 60 s).
    pub const SCALE_OUT_COOLDOWN: Duration = Duration::from_secs(60);

    // The controller's JIT mint: the agent calls the controller's Lambda function URL (SigV4,
    // AWS_IAM auth), which calls DescribeAutoScalingInstances for the calling instance, refuses it
    // unless InService, then calls GitHub's `POST .../actions/runners/generate-jitconfig`.

    /// HTTPS to the function URL, SigV4 checked, a warm invocation and the response (assumption for
    /// an in-region call; the function itself runs the two calls below).
    pub const MINT_FUNCTION_URL: (Duration, Duration) = (Duration::from_millis(15), Duration::from_millis(60));
    /// Share of invocations that pay a cold start: "typically under 1% of invocations" (AWS Compute
    /// Blog, "Operating Lambda: Performance optimization - Part 1").
    pub const LAMBDA_COLD_START_RATE: f64 = 0.01;
    /// A cold start's extra time: "from under 100 ms to over 1 second" (same source); a small Rust
    /// binary sits at the low end, so uniform in this range is pessimistic.
    pub const LAMBDA_COLD_START: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(1000));
    /// Attempts of the controller's Auto Scaling describe (AWS SDK standard retry mode: 3).
    pub const MINT_DESCRIBE_ATTEMPTS: u32 = 3;
    /// Median of one `generate-jitconfig` request (assumption: one authenticated REST POST that
    /// creates a runner registration; a few hundred milliseconds like GitHub's other REST writes).
    pub const GITHUB_JITCONFIG: Duration = Duration::from_millis(450);
    /// Log-normal spread of that request (assumption: with 0.5 the middle 90% lies between 0.44x and
    /// 2.3x the median, about 200 ms to 1 s).
    pub const GITHUB_JITCONFIG_SIGMA: f64 = 0.5;
    /// Attempts per GitHub request for 5xx and timeouts, with a 250 ms backoff doubling, half
    /// jittered (lifecycle-github `Options::max_attempts` and its retry loop).
    pub const GITHUB_ATTEMPTS: u32 = 3;
    // The release of a registration before a stop (lifecycle-core `Action::ReleaseRunner`): the
    // same function URL, then `GET .../actions/runners?name=` and `DELETE .../actions/runners/{id}`,
    // each a GitHub request like the mint's (`GITHUB_JITCONFIG`, its spread, retries and rate
    // limits; world/controller.rs `delete_registration`).
    /// See `GITHUB_ATTEMPTS`.
    pub const GITHUB_RETRY_BASE: Duration = Duration::from_millis(250);
    /// The cap of that backoff (lifecycle-github's `RETRY_BACKOFF`; never reached in `GITHUB_ATTEMPTS`).
    pub const GITHUB_RETRY_CAP: Duration = Duration::from_secs(30);
    /// The longest the controller's GitHub client sleeps on rate limits within one request; beyond
    /// it the request fails as rate-limited and the agent is answered "throttled"
    /// (lifecycle-github `Options::max_rate_limit_wait`).
    pub const GITHUB_MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(20);
    /// How long a GitHub rate-limit episode lasts: secondary limits ask to wait "at least one
    /// minute" (GitHub REST API docs); an exhausted primary budget waits for its hourly reset. The
    /// range is an assumption between the two.
    pub const GITHUB_RATE_LIMIT_EPISODE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(900));
}
