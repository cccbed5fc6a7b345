//! The loss audit's rules, pure (no IO): which jobs are the fleet's, why each one that did not
//! succeed ended, whom to blame, and the figures the simulation prints for the same period.
//! docs/audit.md explains every cause and where its text comes from.

use crate::audit::{Annotation, AuditJob};
use crate::time::parse_rfc3339;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The annotation text of a job whose runner was told to stop (SIGINT/SIGTERM to the listener):
/// actions/runner `src/Runner.Worker/JobRunner.cs`, `ShutdownReason.UserCancelled`.
pub const MSG_SHUTDOWN: &str = "the runner has received a shutdown signal";
/// The same runner code's text when the operating system shuts down (`ShutdownReason.OperatingSystemShutdown`).
pub const MSG_OS_SHUTDOWN: &str = "operating system is shutting down";
/// The Actions service's text for a runner that stopped renewing its job (the host vanished, the
/// listener was killed): "The self-hosted runner: NAME lost communication with the server."
pub const MSG_LOST: &str = "lost communication with the server";
/// The service's text for a job handed to a runner that never acquired it: "The job was not
/// acquired by Runner of type self-hosted even after multiple attempts".
pub const MSG_NOT_ACQUIRED: &str = "was not acquired by runner";
/// The service's texts for a job no runner took within a day. It has been worded three ways in
/// public reports (docs/audit.md cites them): "...there were no enabled runners online to process
/// the request for more than 1 days.", "...there were no runners enabled online to process the
/// request for more than 1 day.", and "The job has exceeded the maximum execution time while
/// awaiting a runner for 24h0m0s".
pub const MSG_NEVER_PICKED_UP: [&str; 3] = [
    "no enabled runners online",
    "no runners enabled online",
    "while awaiting a runner",
];

/// Why a job ended as it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// `conclusion: success`.
    Succeeded,
    /// Its runner received a shutdown signal while running it: a stop (scale-in drain, `systemctl stop`).
    ShutdownSignal,
    /// Its runner lost communication with the service: the host or listener vanished.
    RunnerLost,
    /// Handed to a runner that never acquired it.
    NotAcquired,
    /// No runner picked it up within a day (the service failed it).
    NeverPickedUp,
    /// It failed or timed out on its own (its steps): not the fleet's doing.
    OwnFailure,
    /// Cancelled by a person or by `concurrency`, with no runner message.
    Cancelled,
    /// `skipped` or `neutral`: never needed a runner.
    Skipped,
    /// Not completed yet.
    Unfinished,
}

impl Cause {
    /// All causes in report order.
    pub const ALL: [Cause; 9] = [
        Cause::Succeeded,
        Cause::ShutdownSignal,
        Cause::RunnerLost,
        Cause::NotAcquired,
        Cause::NeverPickedUp,
        Cause::OwnFailure,
        Cause::Cancelled,
        Cause::Skipped,
        Cause::Unfinished,
    ];

    /// Whether the job died with, or for want of, its runner (the fleet's loss).
    pub fn is_fleet_loss(self) -> bool {
        matches!(
            self,
            Cause::ShutdownSignal | Cause::RunnerLost | Cause::NotAcquired | Cause::NeverPickedUp
        )
    }

    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Succeeded => "succeeded",
            Cause::ShutdownSignal => "shutdown_signal",
            Cause::RunnerLost => "runner_lost",
            Cause::NotAcquired => "not_acquired",
            Cause::NeverPickedUp => "never_picked_up",
            Cause::OwnFailure => "own_failure",
            Cause::Cancelled => "cancelled",
            Cause::Skipped => "skipped",
            Cause::Unfinished => "unfinished",
        }
    }
}

/// Whether a job needs its annotations read to be classified: completed, and neither succeeded nor skipped.
pub fn needs_annotations(job: &AuditJob) -> bool {
    job.status == "completed"
        && !matches!(
            job.conclusion.as_deref(),
            Some("success") | Some("skipped") | Some("neutral")
        )
}

/// Why `job` ended, from its fields and its check run's annotations. Runner messages win over the
/// conclusion (a stopped runner's job may end `failure` or `cancelled`).
pub fn classify(job: &AuditJob, annotations: &[Annotation]) -> Cause {
    if job.status != "completed" {
        return Cause::Unfinished;
    }
    match job.conclusion.as_deref() {
        Some("success") => return Cause::Succeeded,
        Some("skipped") | Some("neutral") => return Cause::Skipped,
        _ => {}
    }
    let texts: Vec<String> = annotations
        .iter()
        .flat_map(|a| [a.message.as_deref(), a.title.as_deref()])
        .flatten()
        .map(str::to_ascii_lowercase)
        .collect();
    let any = |needle: &str| texts.iter().any(|t| t.contains(needle));
    if any(MSG_SHUTDOWN) || any(MSG_OS_SHUTDOWN) {
        Cause::ShutdownSignal
    } else if any(MSG_LOST) {
        Cause::RunnerLost
    } else if any(MSG_NOT_ACQUIRED) {
        Cause::NotAcquired
    } else if MSG_NEVER_PICKED_UP.iter().any(|m| any(m)) {
        Cause::NeverPickedUp
    } else if job.conclusion.as_deref() == Some("cancelled") {
        Cause::Cancelled
    } else {
        Cause::OwnFailure
    }
}

/// Which jobs are the fleet's: any of a runner group name, a set of `runs-on` labels (all of them,
/// ASCII case-insensitive), or a runner name prefix. An empty filter keeps every job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetFilter {
    /// Runner group names (`runner_group_name`).
    pub groups: Vec<String>,
    /// `runs-on` labels a job must all carry (for jobs no runner took, the only evidence).
    pub labels: Vec<String>,
    /// The runner name prefix (the JIT prefix, `rle-jit-`).
    pub prefix: Option<String>,
}

impl FleetFilter {
    /// Whether the filter is empty (keeps everything).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.labels.is_empty() && self.prefix.is_none()
    }

    /// Whether `job` ran, or was meant to run, on the fleet.
    pub fn keeps(&self, job: &AuditJob) -> bool {
        if self.is_empty() {
            return true;
        }
        if let (Some(p), Some(n)) = (&self.prefix, &job.runner_name) {
            if !p.is_empty() && n.starts_with(p.as_str()) {
                return true;
            }
        }
        if let Some(g) = &job.runner_group_name {
            if self.groups.iter().any(|x| x.eq_ignore_ascii_case(g)) {
                return true;
            }
        }
        !self.labels.is_empty()
            && self
                .labels
                .iter()
                .all(|l| job.labels.iter().any(|j| j.eq_ignore_ascii_case(l)))
    }
}

/// The EC2 instance id a runner name carries: a `-`-separated `i-` followed by 8 or 17 hex digits,
/// as the JIT names (`{prefix}{epoch}-{instance id}-{4 hex}`, crate::jit) and the persistent
/// runners (named after the instance) have it.
pub fn instance_of(runner_name: &str) -> Option<String> {
    let parts: Vec<&str> = runner_name.split('-').collect();
    parts.windows(2).find_map(|w| {
        let hex = w[1];
        (w[0].eq_ignore_ascii_case("i")
            && (hex.len() == 8 || hex.len() == 17)
            && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("i-{}", hex.to_ascii_lowercase()))
    })
}

/// What the fleet knows happened to an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Scaled in (a termination lifecycle action began).
    ScaleIn,
    /// A spot interruption (or rebalance drain that ran out of time).
    Spot,
    /// The host crashed or was lost (health check replacement, kernel panic, listener killed).
    HostCrash,
    /// Nothing is known.
    Unknown,
}

impl Fate {
    /// All, in report order.
    pub const ALL: [Fate; 4] = [Fate::ScaleIn, Fate::Spot, Fate::HostCrash, Fate::Unknown];

    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Fate::ScaleIn => "scale_in",
            Fate::Spot => "spot",
            Fate::HostCrash => "host_crash",
            Fate::Unknown => "unknown",
        }
    }
}

/// What a fleet event says: the instance was launched, or how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Happened {
    /// Launched: the start of its life (with an end, the idle instance-hours can be counted).
    Launch,
    /// Scaled in.
    ScaleIn,
    /// Spot-interrupted.
    Spot,
    /// Crashed or lost.
    HostCrash,
}

impl Happened {
    /// The fate it records, if it is an end.
    pub fn fate(self) -> Option<Fate> {
        match self {
            Happened::Launch => None,
            Happened::ScaleIn => Some(Fate::ScaleIn),
            Happened::Spot => Some(Fate::Spot),
            Happened::HostCrash => Some(Fate::HostCrash),
        }
    }
}

/// One thing the fleet recorded of an instance (`--fleet-events`, one JSON object a line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetEvent {
    /// `i-...`.
    pub instance_id: String,
    /// What happened (`"event"` is read too: `"event": "launch"` reads better than a fate).
    #[serde(alias = "event")]
    pub fate: Happened,
    /// When, RFC 3339.
    pub at: String,
}

/// How long after an event a loss on that instance is still blamed on it (a drain may last up to
/// the hook's global timeout; the service notices a lost runner within minutes).
pub const ATTRIBUTION_AFTER_S: i64 = 48 * 3600;
/// How long before an event a loss is still blamed on it (a job's completion is stamped when the
/// service gives up on the runner, and clocks differ).
pub const ATTRIBUTION_BEFORE_S: i64 = 15 * 60;

/// The fleet's record, by instance: how each ended, and when each was launched.
#[derive(Clone, Debug, Default)]
pub struct FleetRecord {
    by_instance: BTreeMap<String, Vec<(i64, Fate)>>,
    launched: BTreeMap<String, i64>,
}

/// Idle instance-hours, as far as the fleet record allows (see [`FleetRecord::idle`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Idle {
    /// Idle hours of the instances whose launch and end are both recorded; `None` if there are none.
    pub hours: Option<f64>,
    /// How many instances that is.
    pub instances: u64,
    /// Instances that ran the fleet's jobs (by runner name) but lack a recorded launch or end: left out.
    pub instances_left_out: u64,
}

/// The union's length of `spans` clipped to `[lo, hi]`.
fn covered(spans: &mut [(i64, i64)], lo: i64, hi: i64) -> i64 {
    spans.sort_unstable();
    let (mut total, mut reach) = (0, lo);
    for &(a, b) in spans.iter() {
        let (a, b) = (a.max(reach), b.min(hi));
        if b > a {
            total += b - a;
            reach = b;
        }
    }
    total
}

impl FleetRecord {
    /// From events; unparsable timestamps are dropped.
    pub fn new(events: &[FleetEvent]) -> FleetRecord {
        let mut by_instance: BTreeMap<String, Vec<(i64, Fate)>> = BTreeMap::new();
        let mut launched: BTreeMap<String, i64> = BTreeMap::new();
        for e in events {
            let Some(t) = parse_rfc3339(&e.at) else { continue };
            let id = e.instance_id.to_ascii_lowercase();
            match e.fate.fate() {
                Some(fate) => by_instance.entry(id).or_default().push((t, fate)),
                // An instance id is launched once; a repeated line keeps the earliest.
                None => {
                    let at = launched.entry(id).or_insert(t);
                    *at = (*at).min(t);
                }
            }
        }
        for v in by_instance.values_mut() {
            v.sort();
        }
        FleetRecord { by_instance, launched }
    }

    /// An instance's recorded life: its launch and its first end at or after it.
    fn life(&self, id: &str) -> Option<(i64, i64)> {
        let start = *self.launched.get(id)?;
        let end = self.by_instance.get(id)?.iter().find(|(t, _)| *t >= start)?.0;
        Some((start, end))
    }

    /// Idle instance-hours in `[since, until)`: for each instance with a recorded launch and an end
    /// after it, its life (launch to first end) in the window less the time it ran jobs (`busy`, by
    /// instance: the union of its jobs' `started_at`..`completed_at`). GitHub records no instance
    /// lives, so instances without both are left out and counted, never guessed.
    pub fn idle(&self, busy: &BTreeMap<String, Vec<(i64, i64)>>, since: i64, until: i64) -> Idle {
        let mut idle_s = 0i64;
        let mut idle = Idle::default();
        for id in self.launched.keys() {
            let Some((start, end)) = self.life(id) else { continue };
            idle.instances += 1;
            let (lo, hi) = (start.max(since), end.min(until));
            if hi > lo {
                let mut jobs = busy.get(id).cloned().unwrap_or_default();
                idle_s += (hi - lo) - covered(&mut jobs, lo, hi);
            }
        }
        idle.instances_left_out = busy.keys().filter(|id| self.life(id).is_none()).count() as u64;
        idle.hours = (idle.instances > 0).then(|| idle_s as f64 / 3600.0);
        idle
    }

    /// Scale-ins recorded.
    pub fn scale_ins(&self) -> u64 {
        self.by_instance
            .values()
            .flatten()
            .filter(|(_, f)| *f == Fate::ScaleIn)
            .count() as u64
    }

    /// Whether anything was recorded.
    pub fn is_empty(&self) -> bool {
        self.by_instance.is_empty()
    }

    /// Whom to blame for a loss on `instance` that completed at `completed`: the latest event on it at
    /// or before `completed + ATTRIBUTION_BEFORE_S`, at most `ATTRIBUTION_AFTER_S` earlier.
    pub fn attribute(&self, instance: Option<&str>, completed: Option<i64>) -> Fate {
        let (Some(i), Some(t)) = (instance, completed) else {
            return Fate::Unknown;
        };
        let Some(events) = self.by_instance.get(&i.to_ascii_lowercase()) else {
            return Fate::Unknown;
        };
        events
            .iter()
            .rev()
            .find(|(at, _)| *at <= t + ATTRIBUTION_BEFORE_S && t - *at <= ATTRIBUTION_AFTER_S)
            .map_or(Fate::Unknown, |(_, f)| *f)
    }
}

/// One classified job (for `--json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobVerdict {
    /// The job.
    pub id: u64,
    /// `owner/repo`.
    pub repository: String,
    /// Its run and attempt.
    pub run_id: u64,
    /// The attempt.
    pub run_attempt: Option<u64>,
    /// The runner's name.
    pub runner_name: Option<String>,
    /// The instance its name carries.
    pub instance_id: Option<String>,
    /// Why it ended.
    pub cause: Cause,
    /// Whom to blame (fleet losses only).
    pub fate: Option<Fate>,
    /// When it completed.
    pub completed_at: Option<String>,
}

/// The audit's figures for a period.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LossReport {
    /// Jobs read (all attempts), before the fleet filter.
    pub jobs_read: u64,
    /// The fleet's jobs.
    pub fleet_jobs: u64,
    /// The fleet's completed jobs (the denominator of the rates).
    pub completed_jobs: u64,
    /// By cause.
    pub by_cause: BTreeMap<String, u64>,
    /// Fleet losses by whom to blame.
    pub losses_by_fate: BTreeMap<String, u64>,
    /// Fleet losses (shutdown signal, runner lost, not acquired, never picked up).
    pub fleet_losses: u64,
    /// Jobs killed by a stop, as the simulation counts them: a shutdown signal, or not acquired on
    /// a host that was being scaled in (without a fleet record: every not-acquired job).
    pub jobs_killed_by_stop: u64,
    /// Fleet losses per 1,000,000 completed jobs.
    pub fleet_losses_per_million_jobs: f64,
    /// Jobs killed by a stop per 10,000 scale-ins, when the scale-in count is known.
    pub jobs_killed_by_stop_per_10k_scale_ins: Option<f64>,
    /// Scale-ins in the period, when known.
    pub scale_ins: Option<u64>,
    /// Queue wait (started_at - created_at) of the jobs a runner took, seconds.
    pub queue_wait_p50_s: Option<f64>,
    /// Its 95th percentile.
    pub queue_wait_p95_s: Option<f64>,
    /// Idle instance-hours: GitHub records no instance lives, so only from the fleet record's
    /// launches and ends (`None` without any instance having both).
    pub idle_instance_hours: Option<f64>,
    /// Over which instances, and how many were left out.
    pub idle: Idle,
    /// `(created_at, wait s)` of every wait in the quantiles, for the picture (not in `--json`).
    #[serde(skip)]
    pub queue_waits: Vec<(i64, i64)>,
    /// Every job that did not succeed for its runner's sake, and the rest that failed.
    pub verdicts: Vec<JobVerdict>,
}

/// The nearest-rank quantile of sorted `v`.
fn quantile(v: &[i64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1] as f64)
}

impl LossReport {
    /// Classify `jobs` (annotations by job id), keep the fleet's, blame losses with `fleet`, and
    /// compute the figures over `[since, until)`; `scale_ins` overrides the count the fleet record gives.
    pub fn build(
        jobs: &[AuditJob],
        annotations: &BTreeMap<u64, Vec<Annotation>>,
        filter: &FleetFilter,
        fleet: &FleetRecord,
        scale_ins: Option<u64>,
        (since, until): (i64, i64),
    ) -> LossReport {
        let mut by_cause: BTreeMap<String, u64> = Cause::ALL.iter().map(|c| (c.name().to_string(), 0)).collect();
        let mut by_fate: BTreeMap<String, u64> = Fate::ALL.iter().map(|f| (f.name().to_string(), 0)).collect();
        let (mut fleet_jobs, mut completed, mut losses, mut killed_by_stop) = (0u64, 0u64, 0u64, 0u64);
        let mut waits = Vec::new();
        let mut busy: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        let mut verdicts = Vec::new();
        let none = Vec::new();
        for job in jobs {
            if !filter.keeps(job) {
                continue;
            }
            fleet_jobs += 1;
            let notes = annotations.get(&job.id).unwrap_or(&none);
            let cause = classify(job, notes);
            *by_cause.entry(cause.name().to_string()).or_default() += 1;
            if job.status == "completed" {
                completed += 1;
            }
            let instance = job.runner_name.as_deref().and_then(instance_of);
            let done = job.completed_at.as_deref().and_then(parse_rfc3339);
            // A job a runner took (a not-acquired job's started_at is no runner's start).
            if job.runner_name.as_deref().is_some_and(|n| !n.is_empty()) && cause != Cause::NotAcquired {
                let c = job.created_at.as_deref().and_then(parse_rfc3339);
                let s = job.started_at.as_deref().and_then(parse_rfc3339);
                if let (Some(c), Some(s)) = (c, s) {
                    if s >= c {
                        waits.push((c, s - c));
                    }
                }
                if let (Some(i), Some(s), Some(d)) = (&instance, s, done) {
                    busy.entry(i.clone()).or_default().push((s, d));
                }
            }
            let fate = cause
                .is_fleet_loss()
                .then(|| fleet.attribute(instance.as_deref(), done));
            if let Some(f) = fate {
                losses += 1;
                *by_fate.entry(f.name().to_string()).or_default() += 1;
                let stop = match cause {
                    Cause::ShutdownSignal => true,
                    Cause::NotAcquired => fleet.is_empty() || f == Fate::ScaleIn,
                    _ => false,
                };
                killed_by_stop += u64::from(stop);
            }
            if !matches!(cause, Cause::Succeeded | Cause::Skipped | Cause::Unfinished) {
                verdicts.push(JobVerdict {
                    id: job.id,
                    repository: job.repository.clone(),
                    run_id: job.run_id,
                    run_attempt: job.run_attempt,
                    runner_name: job.runner_name.clone(),
                    instance_id: instance,
                    cause,
                    fate,
                    completed_at: job.completed_at.clone(),
                });
            }
        }
        let mut sorted: Vec<i64> = waits.iter().map(|w| w.1).collect();
        sorted.sort_unstable();
        let idle = fleet.idle(&busy, since, until);
        let scale_ins = scale_ins.or_else(|| (!fleet.is_empty()).then(|| fleet.scale_ins()));
        LossReport {
            jobs_read: jobs.len() as u64,
            fleet_jobs,
            completed_jobs: completed,
            by_cause,
            losses_by_fate: by_fate,
            fleet_losses: losses,
            jobs_killed_by_stop: killed_by_stop,
            fleet_losses_per_million_jobs: if completed > 0 {
                losses as f64 * 1e6 / completed as f64
            } else {
                0.0
            },
            jobs_killed_by_stop_per_10k_scale_ins: scale_ins
                .filter(|n| *n > 0)
                .map(|n| killed_by_stop as f64 * 1e4 / n as f64),
            scale_ins,
            queue_wait_p50_s: quantile(&sorted, 0.5),
            queue_wait_p95_s: quantile(&sorted, 0.95),
            idle_instance_hours: idle.hours,
            idle,
            queue_waits: waits,
            verdicts,
        }
    }

    /// The text table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<f64>| v.map_or_else(|| "unknown".to_string(), |x| format!("{x:.1}"));
        s.push_str(&format!("{:<44}{:>12}\n", "jobs read (all attempts)", self.jobs_read));
        s.push_str(&format!("{:<44}{:>12}\n", "the fleet's jobs", self.fleet_jobs));
        s.push_str(&format!("{:<44}{:>12}\n", "  completed", self.completed_jobs));
        s.push_str("by cause\n");
        for c in Cause::ALL {
            let n = self.by_cause.get(c.name()).copied().unwrap_or(0);
            let mark = if c.is_fleet_loss() { " (fleet)" } else { "" };
            s.push_str(&format!("{:<44}{:>12}\n", format!("  {}{mark}", c.name()), n));
        }
        s.push_str("fleet losses by whom to blame\n");
        for f in Fate::ALL {
            let n = self.losses_by_fate.get(f.name()).copied().unwrap_or(0);
            s.push_str(&format!("{:<44}{:>12}\n", format!("  {}", f.name()), n));
        }
        s.push_str(&format!("{:<44}{:>12}\n", "fleet losses", self.fleet_losses));
        s.push_str(&format!(
            "{:<44}{:>12.1}\n",
            "  per 1,000,000 jobs", self.fleet_losses_per_million_jobs
        ));
        s.push_str(&format!(
            "{:<44}{:>12}\n",
            "jobs killed by a stop", self.jobs_killed_by_stop
        ));
        s.push_str(&format!(
            "{:<44}{:>12}\n",
            "  per 10,000 scale-ins",
            opt(self.jobs_killed_by_stop_per_10k_scale_ins)
        ));
        s.push_str(&format!(
            "{:<44}{:>12}\n",
            "scale-ins",
            self.scale_ins.map_or_else(|| "unknown".into(), |n| n.to_string())
        ));
        s.push_str(&format!(
            "{:<44}{:>12}\n",
            "queue wait p50 (s)",
            opt(self.queue_wait_p50_s)
        ));
        s.push_str(&format!(
            "{:<44}{:>12}\n",
            "queue wait p95 (s)",
            opt(self.queue_wait_p95_s)
        ));
        s.push_str(&format!(
            "{:<44}{:>12}\n",
            "idle instance-hours",
            opt(self.idle_instance_hours)
        ));
        if self.idle.hours.is_some() {
            s.push_str(&format!(
                "  over {} instance(s) with a recorded launch and end; {} without left out\n",
                self.idle.instances, self.idle.instances_left_out
            ));
        } else {
            // Say what would make it known rather than guess (docs/audit.md, "Idle instance-hours").
            s.push_str(
                "  unknown: GitHub records no instance lives; needs each instance's launch and end in\n  \
                 --fleet-events ({\"event\": \"launch\", ...} and its scale_in/spot/host_crash)\n",
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn job(conclusion: &str, runner: Option<&str>) -> AuditJob {
        AuditJob {
            id: 1,
            status: "completed".into(),
            conclusion: Some(conclusion.into()),
            runner_name: runner.map(str::to_string),
            labels: vec!["self-hosted".into(), "linux".into()],
            created_at: Some("2026-11-02T10:00:00Z".into()),
            started_at: Some("2026-11-02T10:00:30Z".into()),
            completed_at: Some("2026-11-02T10:10:00Z".into()),
            ..AuditJob::default()
        }
    }

    fn note(msg: &str) -> Vec<Annotation> {
        vec![Annotation {
            annotation_level: Some("failure".into()),
            title: None,
            message: Some(msg.into()),
        }]
    }

    #[test]
    fn classifies_by_runner_message_then_conclusion() {
        let j = job("failure", Some("rle-jit-1-i-0123456789abcdef0-ab12"));
        assert_eq!(classify(&j, &note("The runner has received a shutdown signal. This can happen when the runner service is stopped, or a manually started runner is canceled.")), Cause::ShutdownSignal);
        assert_eq!(
            classify(
                &job("cancelled", Some("x")),
                &note("The runner has received a shutdown signal.")
            ),
            Cause::ShutdownSignal
        );
        assert_eq!(classify(&j, &note("The self-hosted runner: rle-jit-1 lost communication with the server. Verify the machine is running and has a healthy network connection.")), Cause::RunnerLost);
        assert_eq!(
            classify(
                &j,
                &note("The job was not acquired by Runner of type self-hosted even after multiple attempts")
            ),
            Cause::NotAcquired
        );
        assert_eq!(classify(&j, &note("This request was automatically failed because there were no enabled runners online to process the request for more than 1 days.")), Cause::NeverPickedUp);
        assert_eq!(
            classify(&j, &note("Process completed with exit code 1.")),
            Cause::OwnFailure
        );
        assert_eq!(classify(&job("timed_out", None), &[]), Cause::OwnFailure);
        assert_eq!(classify(&job("cancelled", None), &[]), Cause::Cancelled);
        assert_eq!(classify(&job("success", None), &[]), Cause::Succeeded);
        assert_eq!(classify(&job("skipped", None), &[]), Cause::Skipped);
        let mut q = job("success", None);
        q.status = "queued".into();
        assert_eq!(classify(&q, &[]), Cause::Unfinished);
    }

    #[test]
    fn instance_ids_in_runner_names() {
        assert_eq!(
            instance_of("rle-jit-1764000000-i-0123456789abcdef0-ab12").as_deref(),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(instance_of("i-0123abcd").as_deref(), Some("i-0123abcd"));
        assert_eq!(instance_of("runner-7"), None);
        assert_eq!(instance_of("i-xyz"), None);
    }

    #[test]
    fn fleet_filter_by_prefix_group_or_labels() {
        let f = FleetFilter {
            groups: vec!["ec2".into()],
            labels: vec!["self-hosted".into(), "LINUX".into()],
            prefix: Some("rle-jit-".into()),
        };
        assert!(f.keeps(&job("success", Some("rle-jit-1-i-0123abcd-0000"))));
        let mut other = job("success", Some("hosted"));
        other.labels = vec!["ubuntu-latest".into()];
        assert!(!f.keeps(&other));
        other.runner_group_name = Some("EC2".into());
        assert!(f.keeps(&other));
        assert!(f.keeps(&job("failure", None)));
        assert!(FleetFilter::default().keeps(&other));
    }

    #[test]
    fn attribution_and_figures() {
        let events = vec![
            FleetEvent {
                instance_id: "i-0123456789abcdef0".into(),
                fate: Happened::ScaleIn,
                at: "2026-11-02T10:05:00Z".into(),
            },
            FleetEvent {
                instance_id: "i-0123456789abcdef1".into(),
                fate: Happened::Spot,
                at: "2026-11-02T10:09:00Z".into(),
            },
        ];
        let fleet = FleetRecord::new(&events);
        let mut jobs = vec![
            job("failure", Some("rle-jit-1-i-0123456789abcdef0-ab12")),
            job("failure", Some("rle-jit-1-i-0123456789abcdef1-ab12")),
            job("failure", Some("rle-jit-1-i-0123456789abcdef2-ab12")),
            job("success", Some("rle-jit-1-i-0123456789abcdef3-ab12")),
        ];
        for (i, j) in jobs.iter_mut().enumerate() {
            j.id = i as u64 + 1;
        }
        let mut notes = BTreeMap::new();
        notes.insert(1, note("The runner has received a shutdown signal."));
        notes.insert(2, note("The self-hosted runner: x lost communication with the server."));
        notes.insert(3, note("The self-hosted runner: x lost communication with the server."));
        let r = LossReport::build(&jobs, &notes, &FleetFilter::default(), &fleet, None, (0, i64::MAX));
        assert_eq!(r.fleet_losses, 3);
        assert_eq!(r.losses_by_fate["scale_in"], 1);
        assert_eq!(r.losses_by_fate["spot"], 1);
        assert_eq!(r.losses_by_fate["unknown"], 1);
        assert_eq!(r.jobs_killed_by_stop, 1);
        assert_eq!(r.scale_ins, Some(1));
        assert_eq!(r.jobs_killed_by_stop_per_10k_scale_ins, Some(10_000.0));
        assert_eq!(r.queue_wait_p50_s, Some(30.0));
        assert!((r.fleet_losses_per_million_jobs - 750_000.0).abs() < 1e-6);
        assert!(r.table().contains("per 10,000 scale-ins"));
        // No launches recorded: idle time is unknown, and the table says what would make it known.
        assert_eq!(r.idle_instance_hours, None);
        assert_eq!(
            r.idle.instances_left_out, 4,
            "the four instances whose jobs a runner took"
        );
        assert!(r.table().contains("needs each instance's launch and end"));
        assert_eq!(r.queue_waits.len(), 4);
    }

    #[test]
    fn idle_hours_from_launches_ends_and_jobs() {
        let ev = |id: &str, what: &str, at: &str| -> FleetEvent {
            serde_json::from_str(&format!(r#"{{"instance_id":"{id}","event":"{what}","at":"{at}"}}"#)).unwrap()
        };
        let a = "i-0123456789abcdef0";
        let b = "i-0123456789abcdef1";
        let events = vec![
            // a: up 09:00-12:00, ran two overlapping jobs 10:00-10:30 and 10:15-11:00 (1 h busy).
            ev(a, "launch", "2026-11-02T09:00:00Z"),
            ev(a, "scale_in", "2026-11-02T12:00:00Z"),
            // b: launched, never ended in the record: left out, not guessed.
            ev(b, "launch", "2026-11-02T09:00:00Z"),
        ];
        // The old key reads the same.
        let old: FleetEvent = serde_json::from_str(&format!(
            r#"{{"instance_id":"{a}","fate":"spot","at":"2026-11-02T12:00:00Z"}}"#
        ))
        .unwrap();
        assert_eq!(old.fate, Happened::Spot);
        let fleet = FleetRecord::new(&events);
        let mk = |id: u64, inst: &str, s: &str, c: &str| {
            let mut j = job("success", Some(&format!("rle-jit-1-{inst}-ab12")));
            j.id = id;
            j.created_at = Some(s.into());
            j.started_at = Some(s.into());
            j.completed_at = Some(c.into());
            j
        };
        let jobs = vec![
            mk(1, a, "2026-11-02T10:00:00Z", "2026-11-02T10:30:00Z"),
            mk(2, a, "2026-11-02T10:15:00Z", "2026-11-02T11:00:00Z"),
            mk(3, b, "2026-11-02T10:00:00Z", "2026-11-02T10:30:00Z"),
        ];
        let day = (
            parse_rfc3339("2026-11-02T00:00:00Z").unwrap(),
            parse_rfc3339("2026-11-03T00:00:00Z").unwrap(),
        );
        let r = LossReport::build(&jobs, &BTreeMap::new(), &FleetFilter::default(), &fleet, None, day);
        assert_eq!(r.idle_instance_hours, Some(2.0));
        assert_eq!((r.idle.instances, r.idle.instances_left_out), (1, 1));
        assert!(r.table().contains("over 1 instance(s)"));
        // The window clips the life: from 11:00 only one idle hour is in it.
        let late = (parse_rfc3339("2026-11-02T11:00:00Z").unwrap(), day.1);
        let r = LossReport::build(&jobs, &BTreeMap::new(), &FleetFilter::default(), &fleet, None, late);
        assert_eq!(r.idle_instance_hours, Some(1.0));
        // An end before the launch is no end of that life.
        let fleet = FleetRecord::new(&[
            ev(a, "spot", "2026-11-02T08:00:00Z"),
            ev(a, "launch", "2026-11-02T09:00:00Z"),
        ]);
        assert_eq!(fleet.idle(&BTreeMap::new(), day.0, day.1).hours, None);
    }
}
