//! What a run measured, and what it found wrong.

use hdrhistogram::Histogram;
use lifecycle_core::Time;
use serde::Serialize;

/// Why a job failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FailCause {
    /// The runner listener crashed (an injected fault, not the strategy's doing).
    RunnerCrash,
    /// The instance was terminated under the job (hook completed or timed out while it ran).
    InstanceTerminated,
    /// A job hook exited non-zero.
    HookFailed,
    /// The strategy SIGKILLed the listener while a job ran.
    Killed,
    /// The job outlived the lifecycle action's global timeout, min(48 h, 100 x HeartbeatTimeout),
    /// which nothing can extend: a configuration limit, not a tool's doing.
    GlobalTimeout,
}

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum JobOutcome {
    /// Ran to completion.
    Succeeded,
    /// Cancelled by a stop signal while its worker was visible to the host.
    Cancelled,
    /// Cancelled by a stop signal that raced the job's dispatch: the unavoidable window.
    LostInStopWindow,
    /// Failed.
    Failed(FailCause),
    /// Killed by a spot interruption (not a strategy's doing).
    KilledByInterruption,
}

impl JobOutcome {
    /// Whether this outcome breaks runner-lifecycle's promise.
    pub fn is_tool_fault(self) -> bool {
        matches!(
            self,
            JobOutcome::Cancelled
                | JobOutcome::Failed(FailCause::InstanceTerminated | FailCause::HookFailed | FailCause::Killed)
        )
    }
}

/// An invariant violation, with what is needed to reproduce it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// The strategy that broke the invariant.
    pub strategy: String,
    /// Re-run with this seed (and the same flags) to reproduce.
    pub seed: u64,
    /// Simulated time of the violation.
    pub at: Time,
    /// The instance, if one is involved.
    pub instance: Option<u32>,
    /// What went wrong.
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} seed {} at {}: ", self.strategy, self.seed, self.at)?;
        if let Some(i) = self.instance {
            write!(f, "instance {i}: ")?;
        }
        f.write_str(&self.what)
    }
}

/// Counters of one strategy's run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Jobs that arrived.
    pub jobs_total: u64,
    /// Jobs that ran to completion.
    pub jobs_succeeded: u64,
    /// Jobs cancelled by a stop signal with their worker visible.
    pub jobs_cancelled: u64,
    /// Jobs that failed, for any reason (see the `failed_*` breakdown).
    pub jobs_failed: u64,
    /// Jobs cancelled in the window between "no job assigned" and the listener acting on its stop.
    pub jobs_lost_in_stop_window: u64,
    /// Jobs killed by a spot interruption.
    pub jobs_killed_by_interruption: u64,
    /// Jobs still queued or running when the run ended.
    pub jobs_unfinished: u64,
    /// Failures by cause: runner crash (fault).
    pub failed_runner_crash: u64,
    /// Failures by cause: instance terminated under the job.
    pub failed_instance_terminated: u64,
    /// Failures by cause: a job hook failed the job.
    pub failed_hook: u64,
    /// Failures by cause: listener SIGKILLed.
    pub failed_killed: u64,
    /// Lifecycle actions completed with CompleteLifecycleAction.
    pub hooks_completed: u64,
    /// Lifecycle actions that hit HeartbeatTimeout.
    pub hooks_timed_out: u64,
    /// Lifecycle actions that hit the global timeout while a job still ran.
    pub hooks_hit_global_timeout: u64,
    /// Failures by cause: the job outlived the hook's global timeout.
    pub failed_global_timeout: u64,
    /// Lifecycle actions cut short by a spot interruption.
    pub hooks_lost_to_interruption: u64,
    /// Heartbeats accepted.
    pub heartbeats: u64,
    /// Instance-seconds in Terminating:Wait with no job running.
    pub terminating_idle_seconds: f64,
    /// Auto Scaling API calls made by the strategy (all hosts).
    pub asg_api_calls: u64,
    /// Scale-in decisions that picked an instance.
    pub scale_ins: u64,
    /// Spot interruption notices.
    pub spot_interruptions: u64,
    /// Instance-seconds the group ran (cost).
    pub instance_seconds: f64,
    /// Instance-seconds running with no job (waste).
    pub idle_instance_seconds: f64,
    /// Desired-capacity changes the scaling policy made.
    pub scale_actions: u64,
    /// `workflow_job` webhooks that never reached the controller (demand scaling).
    pub webhooks_dropped: u64,
    /// Jobs the broker handed to a host already picked for termination (its listener still polled).
    pub jobs_dispatched_after_pick: u64,
    /// Jobs handed to a listener that stopped before acquiring them, and queued again (config
    /// `unacquired = requeue`).
    pub jobs_requeued: u64,
    /// Stop paths (EventBridge -> Lambda -> SSM -> systemd) that never reached the host.
    pub stop_paths_lost: u64,
    /// Account-wide throttling episodes.
    pub throttle_episodes: u64,
    /// Warm-pool trims (`Warmed:Terminating:Wait`).
    pub warm_trims: u64,
    /// Warm-pool trims completed by a central handler.
    pub warm_trims_completed: u64,
    /// Warm-pool trims nobody completed: the hook ran to its HeartbeatTimeout.
    pub warm_trims_timed_out: u64,
    /// Instance-seconds stopped instances spent in `Warmed:Terminating:Wait`.
    pub warm_trim_wait_seconds: f64,
    /// Auto Scaling calls the controller made for JIT mints (DescribeAutoScalingInstances of the
    /// calling instance; included in `asg_api_calls`).
    pub controller_asg_calls: u64,
    /// GitHub REST requests: `generate-jitconfig` (every attempt of every mint, refused ones too)
    /// and the releases' `GET` and `DELETE` (`github_release_calls`).
    pub github_calls: u64,
    /// JIT configs minted: each is an ephemeral runner registration.
    pub jit_configs_minted: u64,
    /// JIT configs minted that no listener ever took a job with: held by a host that then drained or
    /// whose agent restarted, or given to a listener stopped idle. Each registration stays until
    /// GitHub or a sweep removes it.
    pub jit_configs_unused: u64,
    /// Mints the controller refused because the calling instance was not InService.
    pub mints_refused: u64,
    /// Mints that failed otherwise (Auto Scaling or GitHub errors after the clients' retries, a
    /// rate limit longer than the client waits): the agent retries with its backoff.
    pub mints_failed: u64,
    /// GitHub rate-limit episodes.
    pub github_rate_limit_episodes: u64,
    /// Jobs killed by a stop on a listener that had not run a job in its incarnation: a job
    /// dispatched to an idle listener in the instant it was stopped.
    pub jobs_killed_idle_listener_race: u64,
    /// Jobs killed by a stop on a listener that had already run a job: a persistent listener took
    /// the next job as its last one ended while a drain was due.
    pub jobs_killed_next_job_race: u64,
    /// Jobs killed by a stop, by the handover window they were in: W0 (message in transit), W1
    /// (received, acknowledge/acquire in flight), W2 (acquired, worker not spawned), W3 (worker
    /// spawned, not yet seen by the host's software). Sums to `jobs_lost_in_stop_window`.
    pub jobs_killed_in_window: [u64; 4],
    /// Jobs re-queued by GitHub after a stop, a death or an accepted delete in W0, W1, W2.
    pub jobs_requeued_from_window: [u64; 3],
    /// Job messages a listener received and then skipped (acquire refused after an accepted delete,
    /// or failed every attempt): no worker follows.
    pub job_messages_skipped: u64,
    /// Jobs assigned to a runner whose registration delete GitHub accepted (config
    /// `release_while_assigned = accepted`): left to the window's policy.
    pub jobs_released_while_assigned: u64,
    /// Releases of a listener's registration the agents asked for (lifecycle-core
    /// `Action::ReleaseRunner`), and how they ended.
    pub releases: u64,
    /// See `releases`: deleted.
    pub releases_removed: u64,
    /// See `releases`: refused, a job is assigned or running.
    pub releases_busy: u64,
    /// See `releases`: not found (a JIT registration consumed by its assignment).
    pub releases_not_found: u64,
    /// See `releases`: the controller or GitHub failed (the core falls back to the latch and the
    /// last look).
    pub releases_failed: u64,
    /// GitHub requests for releases, the agents' and the demand controller's (`GET` and `DELETE`,
    /// every attempt; included in `github_calls`).
    pub github_release_calls: u64,
    /// Demand scaling with `victims`: hosts picked, refused by GitHub (a job assigned) or left
    /// because a call failed, and terminated with decrement.
    pub victims_picked: u64,
    /// See `victims_picked`.
    pub victims_refused: u64,
    /// See `victims_picked`.
    pub victims_terminated: u64,
    /// Every finished job, when `SimConfig::record_jobs` asks for it (crate::github_export).
    #[serde(skip)]
    pub job_log: Option<Vec<crate::github_export::JobRecord>>,
    /// Instances launched into the group (fresh or from the warm pool; the initial fleet included).
    pub boots: u64,
    /// One instance per job: hosts that left the group after their job (terminated without
    /// decrement, replaced by the group).
    pub group_leaves: u64,
    #[serde(skip)]
    waits_ms: Hist,
    /// From a worker's exit to the next listener ready to take a job, on hosts not draining.
    #[serde(skip)]
    serve_gaps_ms: Hist,
}

/// Durations in milliseconds in a fixed-size HDR histogram (3 significant digits): merging two runs
/// costs the same whatever their length, so sweeps stay linear in seeds.
#[derive(Clone, Debug, PartialEq)]
struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        // Auto-resizing from 1 ms; 3 significant digits keep the quantiles within 0.1%.
        Hist(Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
    }
}

impl Hist {
    fn record(&mut self, d: std::time::Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // `record` grows an auto-resizing histogram; `saturating_record` would clamp to its current
        // top (about 2 s at first) instead.
        if self.0.record(ms).is_err() {
            self.0.saturating_record(ms);
        }
    }

    /// The `q` quantile in seconds (0 when empty).
    fn quantile_s(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `Histogram::new(3)` fails only for more than 5 significant digits.
fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << 40, 2).unwrap_or_else(|e| panic!("HDR histogram bounds: {e}"))
}

impl Metrics {
    pub(crate) fn record_job(&mut self, outcome: JobOutcome, arrival: Time, started: Option<Time>, _now: Time) {
        match outcome {
            JobOutcome::Succeeded => self.jobs_succeeded += 1,
            JobOutcome::Cancelled => self.jobs_cancelled += 1,
            JobOutcome::LostInStopWindow => self.jobs_lost_in_stop_window += 1,
            JobOutcome::KilledByInterruption => self.jobs_killed_by_interruption += 1,
            JobOutcome::Failed(cause) => {
                self.jobs_failed += 1;
                *match cause {
                    FailCause::RunnerCrash => &mut self.failed_runner_crash,
                    FailCause::InstanceTerminated => &mut self.failed_instance_terminated,
                    FailCause::HookFailed => &mut self.failed_hook,
                    FailCause::Killed => &mut self.failed_killed,
                    FailCause::GlobalTimeout => &mut self.failed_global_timeout,
                } += 1;
            }
        }
        if let Some(started) = started {
            self.waits_ms.record(started.since(arrival));
        }
    }

    /// A host not draining served again (its next listener ready for a job) this long after a
    /// worker's exit.
    pub(crate) fn record_serve_gap(&mut self, gap: std::time::Duration) {
        self.serve_gaps_ms.record(gap);
    }

    /// The `q` quantile of the time from a job's end (worker exit) to the host serving again (the
    /// next listener ready to take a job), in seconds, over hosts not draining.
    pub fn job_end_to_serving_quantile(&self, q: f64) -> f64 {
        self.serve_gaps_ms.quantile_s(q)
    }

    /// How many job ends were followed by the host serving again (the sample behind the quantiles).
    pub fn serve_gaps(&self) -> u64 {
        self.serve_gaps_ms.0.len()
    }

    /// Jobs killed by a stop: cancelled by a stop signal, or lost in the stop window. To the user both
    /// are the same: a job that did not finish because a host was being stopped.
    pub fn jobs_killed_by_stop(&self) -> u64 {
        self.jobs_cancelled + self.jobs_lost_in_stop_window
    }

    /// The `q` quantile of queue wait (arrival to worker start), in seconds.
    pub fn queue_wait_quantile(&self, q: f64) -> f64 {
        self.waits_ms.quantile_s(q)
    }

    /// Add another run's counters (for seed sweeps).
    pub fn absorb(&mut self, o: &Metrics) {
        self.jobs_total += o.jobs_total;
        self.jobs_succeeded += o.jobs_succeeded;
        self.jobs_cancelled += o.jobs_cancelled;
        self.jobs_failed += o.jobs_failed;
        self.jobs_lost_in_stop_window += o.jobs_lost_in_stop_window;
        self.jobs_killed_by_interruption += o.jobs_killed_by_interruption;
        self.jobs_unfinished += o.jobs_unfinished;
        self.failed_runner_crash += o.failed_runner_crash;
        self.failed_instance_terminated += o.failed_instance_terminated;
        self.failed_hook += o.failed_hook;
        self.failed_killed += o.failed_killed;
        self.hooks_completed += o.hooks_completed;
        self.hooks_timed_out += o.hooks_timed_out;
        self.hooks_hit_global_timeout += o.hooks_hit_global_timeout;
        self.failed_global_timeout += o.failed_global_timeout;
        self.hooks_lost_to_interruption += o.hooks_lost_to_interruption;
        self.heartbeats += o.heartbeats;
        self.terminating_idle_seconds += o.terminating_idle_seconds;
        self.asg_api_calls += o.asg_api_calls;
        self.scale_ins += o.scale_ins;
        self.spot_interruptions += o.spot_interruptions;
        self.instance_seconds += o.instance_seconds;
        self.idle_instance_seconds += o.idle_instance_seconds;
        self.scale_actions += o.scale_actions;
        self.webhooks_dropped += o.webhooks_dropped;
        self.jobs_dispatched_after_pick += o.jobs_dispatched_after_pick;
        self.jobs_requeued += o.jobs_requeued;
        self.stop_paths_lost += o.stop_paths_lost;
        self.throttle_episodes += o.throttle_episodes;
        self.warm_trims += o.warm_trims;
        self.warm_trims_completed += o.warm_trims_completed;
        self.warm_trims_timed_out += o.warm_trims_timed_out;
        self.warm_trim_wait_seconds += o.warm_trim_wait_seconds;
        self.controller_asg_calls += o.controller_asg_calls;
        self.github_calls += o.github_calls;
        self.jit_configs_minted += o.jit_configs_minted;
        self.jit_configs_unused += o.jit_configs_unused;
        self.mints_refused += o.mints_refused;
        self.mints_failed += o.mints_failed;
        self.github_rate_limit_episodes += o.github_rate_limit_episodes;
        self.jobs_killed_idle_listener_race += o.jobs_killed_idle_listener_race;
        self.jobs_killed_next_job_race += o.jobs_killed_next_job_race;
        for (a, b) in self.jobs_killed_in_window.iter_mut().zip(o.jobs_killed_in_window) {
            *a += b;
        }
        for (a, b) in self
            .jobs_requeued_from_window
            .iter_mut()
            .zip(o.jobs_requeued_from_window)
        {
            *a += b;
        }
        self.job_messages_skipped += o.job_messages_skipped;
        self.jobs_released_while_assigned += o.jobs_released_while_assigned;
        self.releases += o.releases;
        self.releases_removed += o.releases_removed;
        self.releases_busy += o.releases_busy;
        self.releases_not_found += o.releases_not_found;
        self.releases_failed += o.releases_failed;
        self.github_release_calls += o.github_release_calls;
        self.victims_picked += o.victims_picked;
        self.victims_refused += o.victims_refused;
        self.victims_terminated += o.victims_terminated;
        self.boots += o.boots;
        self.group_leaves += o.group_leaves;
        // The histograms auto-resize, so adding cannot fail on range.
        let _ = self.waits_ms.0.add(&o.waits_ms.0);
        let _ = self.serve_gaps_ms.0.add(&o.serve_gaps_ms.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn with_waits(ms: impl Iterator<Item = u64>) -> Metrics {
        let mut m = Metrics::default();
        for w in ms {
            let arrival = Time::ZERO;
            m.record_job(
                JobOutcome::Succeeded,
                arrival,
                Some(arrival + Duration::from_millis(w)),
                arrival,
            );
        }
        m
    }

    #[test]
    fn quantiles_survive_merging() {
        let a = with_waits(200..=1000);
        let b = with_waits((1001..=1800).map(|w| if w == 1800 { 281_000 } else { w }));
        assert!(
            (a.queue_wait_quantile(0.5) - 0.6).abs() < 0.01,
            "{}",
            a.queue_wait_quantile(0.5)
        );
        let mut m = Metrics::default();
        m.absorb(&a);
        m.absorb(&b);
        assert!(
            (m.queue_wait_quantile(0.5) - 1.0).abs() < 0.01,
            "{}",
            m.queue_wait_quantile(0.5)
        );
        assert!(
            (m.queue_wait_quantile(0.95) - 1.72).abs() < 0.01,
            "{}",
            m.queue_wait_quantile(0.95)
        );
        assert!(
            (m.queue_wait_quantile(1.0) - 281.0).abs() < 0.5,
            "{}",
            m.queue_wait_quantile(1.0)
        );
    }
}
