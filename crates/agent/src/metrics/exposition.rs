//! The Prometheus text exposition format (version 0.0.4) of the agent's metrics: the one table of
//! metric families ([`Family`]) and the writers of HELP, TYPE and sample lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// A cumulative Prometheus histogram.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; summed when rendered).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (from 0 at the agent's start).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, sum and count.
    Histogram,
}

impl Kind {
    /// Its name in the exposition format.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// What defines a metric family: name (without the `runner_lifecycle_` prefix), type, label names
/// and HELP text.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Its name, without [`PREFIX`].
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its label names.
    pub labels: &'static [&'static str],
    /// Its HELP text.
    pub help: &'static str,
}

/// The one table of the agent's metric families: rendering, the docs test and the order of the
/// exposition all come from here.
macro_rules! families {
    ($($variant:ident => $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)+) => {
        /// A metric family of the agent.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Family {
            $(
                #[doc = $help]
                $variant,
            )+
        }

        impl Family {
            /// Every family, in exposition order.
            pub const ALL: &'static [Family] = &[$(Family::$variant),+];

            /// Its definition.
            pub fn spec(self) -> Spec {
                match self {
                    $(Family::$variant => Spec {
                        name: $name,
                        kind: Kind::$kind,
                        labels: &[$($label),*],
                        help: $help,
                    },)+
                }
            }
        }
    };
}

families! {
    BuildInfo => "build_info", Gauge, ["version"], "Always 1; the label carries the agent's version.";
    JobsAssigned => "jobs_assigned_total", Counter, [],
        "Jobs that became assigned on this host (a Runner.Worker appeared or the job-started hook reported).";
    JobsEnded => "jobs_ended_total", Counter, [],
        "Assigned jobs that ended (no worker left and no open job-started hook).";
    JobsLost => "jobs_lost_total", Counter, ["cause"],
        "Jobs lost on this host, by cause: stop-window (a worker appeared after a non-forced stop signal), listener-died (the listener exited under a job), forced-stop (a forced stop cancelled a job), handover-timeout (a job message or a refused release produced no worker within the bound; the job may have gone to another runner).";
    ProtectionCalls => "protection_calls_total", Counter, ["action", "result"],
        "Finished SetInstanceProtection calls, by action (protect, unprotect) and result (ok, or the error kind).";
    TerminationDetected => "termination_detected_total", Counter, ["via"],
        "Terminations noticed, by the signal that revealed them first (imds, protection-refused, describe).";
    DrainsStarted => "drains_started_total", Counter, ["cause"],
        "Drains started, by cause (terminating, stop-requested, spot-interruption, rebalance).";
    TerminationDetectionSeconds => "termination_detection_seconds", Histogram, [],
        "From the IMDS read that saw target-lifecycle-state Terminated to the stop signal to the idle listener (hosts idle at detection only).";
    DrainSeconds => "drain_seconds", Histogram, [],
        "From the start of a drain to the completion of the lifecycle hook.";
    HeartbeatsSent => "heartbeats_sent_total", Counter, [], "RecordLifecycleActionHeartbeat calls made.";
    HeartbeatsFailed => "heartbeats_failed_total", Counter, [],
        "RecordLifecycleActionHeartbeat calls that failed (any error, including no active lifecycle action).";
    HooksCompleted => "hooks_completed_total", Counter, ["already_done"],
        "Lifecycle actions completed; already_done=\"true\" when AWS said none was active any more.";
    HooksGone => "hooks_gone_total", Counter, [],
        "Heartbeats that found no active lifecycle action (completed elsewhere or timed out).";
    GlobalTimeoutWarnings => "global_timeout_warnings_total", Counter, [],
        "Warnings that a lifecycle action's global timeout is near while a job runs.";
    ApiCalls => "api_calls_total", Counter, ["call"],
        "Finished Auto Scaling calls, by call (set-protection, describe, heartbeat, complete).";
    ApiErrors => "api_errors_total", Counter, ["call", "kind"], "Failed Auto Scaling calls, by call and error kind.";
    ListenerStarts => "listener_starts_total", Counter, ["reason"],
        "Listener launches, by reason: serving (first start), relaunch (after an exit asking for it), next-job (one-job mode).";
    StopsHeld => "stops_held_total", Counter, ["reason"],
        "Stops of an idle listener held because a job may be landing, by reason: job-message (perf-log latch), registration-busy, registration-not-found, watch-after-release, releasing.";
    Releases => "runner_releases_total", Counter, ["outcome"],
        "Answers to the release of this host's JIT registration before a stop: removed, busy, not-found.";
    JobAlive => "job_alive", Gauge, [], "1 while a job is assigned.";
    Draining => "draining", Gauge, [], "1 while the runner drains (no new jobs).";
    Protected => "protected", Gauge, [], "1 if the instance is protected from scale-in, 0 if not; absent while unknown.";
    HookPending => "hook_pending", Gauge, [],
        "1 while a termination lifecycle action waits for this host (Terminating:Wait).";
    NextStep => "next_step", Gauge, ["step"],
        "1 for the main step the decision core's plan says comes next (the `step` of `status`), 0 for every other step.";
}

/// The prefix of every metric name.
pub const PREFIX: &str = "runner_lifecycle_";

pub fn header(o: &mut String, spec: Spec) {
    let (name, kind, help) = (spec.name, spec.kind.name(), spec.help);
    let _ = writeln!(o, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(o, "# TYPE {PREFIX}{name} {kind}");
}

/// One sample. Label values are the core's wire spellings and this module's constants: nothing to
/// escape.
pub fn sample(o: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    let _ = write!(o, "{PREFIX}{name}");
    if !labels.is_empty() {
        let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let _ = write!(o, "{{{}}}", inner.join(","));
    }
    let _ = writeln!(o, " {value}");
}

/// The samples of a family with one label, one per value.
pub fn counts(o: &mut String, spec: Spec, values: &BTreeMap<&'static str, u64>) {
    for (value, n) in values {
        sample(o, spec.name, &[(spec.labels[0], value)], *n);
    }
}

pub fn histogram(o: &mut String, spec: Spec, h: &Histogram) {
    header(o, spec);
    let name = spec.name;
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0;
    for (bound, n) in h.bounds.iter().zip(&h.counts) {
        cumulative += n;
        sample(o, &bucket, &[("le", &bound.to_string())], cumulative);
    }
    sample(o, &bucket, &[("le", "+Inf")], h.count);
    sample(o, &format!("{name}_sum"), &[], h.sum);
    sample(o, &format!("{name}_count"), &[], h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut h = Histogram::new(&[0.5, 1.0, 5.0]);
        for ms in [200, 300, 900, 4000, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut o = String::new();
        let spec = Spec {
            name: "x_seconds",
            kind: Kind::Histogram,
            labels: &[],
            help: "test",
        };
        histogram(&mut o, spec, &h);
        assert_eq!(
            o,
            "# HELP runner_lifecycle_x_seconds test\n\
             # TYPE runner_lifecycle_x_seconds histogram\n\
             runner_lifecycle_x_seconds_bucket{le=\"0.5\"} 2\n\
             runner_lifecycle_x_seconds_bucket{le=\"1\"} 3\n\
             runner_lifecycle_x_seconds_bucket{le=\"5\"} 4\n\
             runner_lifecycle_x_seconds_bucket{le=\"+Inf\"} 5\n\
             runner_lifecycle_x_seconds_sum 65.4\n\
             runner_lifecycle_x_seconds_count 5\n"
        );
    }
}
