//! The GitHub records a simulated world would leave: for a seed and a strategy, every finished
//! job as GitHub's jobs API shows it (runs, jobs, runner names, conclusions) and the check-run
//! annotations the runner or the Actions service writes when a job dies with its runner, plus what
//! the fleet knows of its instances (`fleet-events.jsonl`) and the simulation's own counts
//! (`expected.json`). `runner-lifecycle audit` over these records, served by the GitHub test double,
//! must reproduce those counts exactly (tests/audit).
//!
//! How a simulated outcome shows on GitHub (docs/audit.md, "What GitHub records"):
//!
//! | outcome | started | GitHub conclusion | annotation | audit cause |
//! |---|---|---|---|---|
//! | succeeded | yes | `success` | none | `succeeded` |
//! | cancelled, lost in the stop window | yes | `cancelled` | runner's shutdown-signal text | `shutdown_signal` |
//! | any loss | no (handed over, never acquired) | `failure` | service's not-acquired text | `not_acquired` |
//! | spot, instance terminated, killed, listener crash, global timeout | yes | `failure` | service's lost-communication text | `runner_lost` |
//! | a job hook failed | yes | `failure` | `Process completed with exit code 1.` | `own_failure` |

use crate::config::SimConfig;
use crate::metrics::{FailCause, JobOutcome, Metrics};
use crate::strategy::Strategy;
use lifecycle_core::Time;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// One finished job of a simulated run (`Metrics::job_log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// The simulation's job id.
    pub job: u32,
    /// When it was queued.
    pub arrival: Time,
    /// When its worker started (`None`: no runner ever ran it).
    pub started: Option<Time>,
    /// When it ended.
    pub ended: Time,
    /// The instance that held it.
    pub instance: Option<u32>,
    /// How it ended.
    pub outcome: JobOutcome,
}

/// The annotation texts (docs/audit.md cites their sources).
pub const SHUTDOWN_TEXT: &str = "The runner has received a shutdown signal. This can happen when the runner service is stopped, or a manually started runner is canceled.";
/// The not-acquired text.
pub const NOT_ACQUIRED_TEXT: &str =
    "The job was not acquired by Runner of type self-hosted even after multiple attempts";
/// The step failure text.
pub const STEP_FAILED_TEXT: &str = "Process completed with exit code 1.";

/// The `runs-on` labels of every simulated job.
pub const LABELS: [&str; 3] = ["self-hosted", "linux", "x64"];
/// The simulated repository.
pub const REPO: (&str, &str) = ("acme", "infra");
/// The JIT name prefix the export uses.
pub const PREFIX: &str = "rle-jit-";

/// The audit cause an outcome shows as (the table above).
pub fn github_cause(r: &JobRecord) -> &'static str {
    match (r.outcome, r.started.is_some()) {
        (JobOutcome::Succeeded, _) => "succeeded",
        (_, false) => "not_acquired",
        (JobOutcome::Cancelled | JobOutcome::LostInStopWindow, true) => "shutdown_signal",
        (JobOutcome::Failed(FailCause::HookFailed), true) => "own_failure",
        (JobOutcome::KilledByInterruption | JobOutcome::Failed(_), true) => "runner_lost",
    }
}

/// Whom the fleet blames for a loss: `None` for a success or a job's own failure.
pub fn fleet_fate(outcome: JobOutcome) -> Option<&'static str> {
    match outcome {
        JobOutcome::Succeeded | JobOutcome::Failed(FailCause::HookFailed) => None,
        JobOutcome::KilledByInterruption => Some("spot"),
        JobOutcome::Failed(FailCause::RunnerCrash) => Some("host_crash"),
        JobOutcome::Cancelled
        | JobOutcome::LostInStopWindow
        | JobOutcome::Failed(FailCause::InstanceTerminated | FailCause::Killed | FailCause::GlobalTimeout) => {
            Some("scale_in")
        }
    }
}

/// The simulated instance's EC2-style id.
pub fn instance_id(inst: u32) -> String {
    format!("i-{:017x}", 0x0a00_0000_0000_0000u64 + u64::from(inst))
}

/// `epoch` seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), as GitHub writes its timestamps.
pub fn rfc3339(epoch: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("@{epoch}"))
}

/// What an export holds.
#[derive(Clone, Debug)]
pub struct GithubRecords {
    /// GitHub `job` objects (with `_repo` for the test double).
    pub jobs: Vec<Value>,
    /// Workflow runs: id, created_at, run_attempt.
    pub runs: Vec<Value>,
    /// Annotations by check run id.
    pub annotations: BTreeMap<u64, Vec<Value>>,
    /// The fleet's record: one event per fleet loss, at the loss.
    pub fleet_events: Vec<Value>,
    /// The simulation's own counts.
    pub expected: Value,
}

/// Run `strategy` on `cfg`'s world with the job log on, and turn it into GitHub's records, the
/// simulated time zero being `start_epoch`.
pub fn github_records(cfg: &SimConfig, strategy: Strategy, start_epoch: i64) -> GithubRecords {
    let mut cfg = cfg.clone();
    cfg.record_jobs = true;
    let run = strategy.run(&cfg);
    records_of(&run.metrics, start_epoch, strategy.name())
}

fn records_of(m: &Metrics, start_epoch: i64, strategy: &str) -> GithubRecords {
    let at = |t: Time| rfc3339(start_epoch + t.since(Time::ZERO).as_secs() as i64);
    let log = m.job_log.clone().unwrap_or_default();
    let repo = format!("{}/{}", REPO.0, REPO.1);
    let api = "https://api.github.com";
    let mut jobs = Vec::new();
    let mut runs: BTreeMap<u64, Time> = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let mut fleet_events = Vec::new();
    let mut by_cause: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_fate: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &log {
        let id = 100_000 + u64::from(r.job);
        // Four jobs to a run: the simulated workload has bursts, not runs; any grouping will do.
        let run_id = 10_000 + u64::from(r.job) / 4;
        let first = runs.entry(run_id).or_insert(r.arrival);
        *first = (*first).min(r.arrival);
        let cause = github_cause(r);
        *by_cause.entry(cause).or_default() += 1;
        let runner = r.instance.map(|i| {
            let minted = start_epoch + r.arrival.since(Time::ZERO).as_secs() as i64;
            format!("{PREFIX}{minted}-{}-{:04x}", instance_id(i), r.job & 0xffff)
        });
        let (conclusion, note) = match cause {
            "succeeded" => ("success", None),
            "shutdown_signal" => ("cancelled", Some(SHUTDOWN_TEXT.to_string())),
            "not_acquired" => ("failure", Some(NOT_ACQUIRED_TEXT.to_string())),
            "own_failure" => ("failure", Some(STEP_FAILED_TEXT.to_string())),
            _ => (
                "failure",
                Some(format!(
                    "The self-hosted runner: {} lost communication with the server. Verify the machine is running and has a healthy network connection. Anything in your workflow that terminates the runner process, starves it for CPU/Memory, or blocks its network access can cause this error.",
                    runner.as_deref().unwrap_or("unknown")
                )),
            ),
        };
        if let Some(text) = note {
            annotations.insert(
                id,
                vec![json!({
                    "path": ".github", "blob_href": format!("https://github.com/{repo}/blob/0/.github"),
                    "start_line": 1, "end_line": 1, "start_column": null, "end_column": null,
                    "annotation_level": "failure", "title": "", "message": text, "raw_details": "",
                })],
            );
        }
        if let (Some(fate), Some(inst)) = (fleet_fate(r.outcome), r.instance) {
            *by_fate.entry(fate).or_default() += 1;
            fleet_events.push(json!({"instance_id": instance_id(inst), "fate": fate, "at": at(r.ended)}));
        }
        let started = r.started.unwrap_or(r.ended);
        let step_conclusion = if conclusion == "success" { "success" } else { "failure" };
        jobs.push(json!({
            "id": id, "node_id": format!("J_{id}"), "run_id": run_id, "run_attempt": 1,
            "run_url": format!("{api}/repos/{repo}/actions/runs/{run_id}"), "head_sha": "0".repeat(40),
            "workflow_name": "ci", "head_branch": "main", "name": format!("job-{}", r.job),
            "url": format!("{api}/repos/{repo}/actions/jobs/{id}"),
            "html_url": format!("https://github.com/{repo}/actions/runs/{run_id}/job/{id}"),
            "status": "completed", "conclusion": conclusion,
            "created_at": at(r.arrival), "started_at": at(started), "completed_at": at(r.ended),
            "check_run_url": format!("{api}/repos/{repo}/check-runs/{id}"),
            "labels": LABELS,
            "runner_id": r.instance.map(|i| u64::from(i) + 1),
            "runner_name": runner,
            "runner_group_id": r.instance.map(|_| 1),
            "runner_group_name": r.instance.map(|_| "Default"),
            "steps": if r.started.is_some() { json!([
                {"name": "Set up job", "status": "completed", "conclusion": "success", "number": 1},
                {"name": "Run", "status": "completed", "conclusion": step_conclusion, "number": 2},
            ]) } else { json!([]) },
            "_repo": repo,
        }));
    }
    let runs = runs
        .into_iter()
        .map(|(id, t)| json!({"id": id, "created_at": at(t), "run_attempt": 1, "_repo": repo}))
        .collect();
    let expected = json!({
        "strategy": strategy,
        "jobs_logged": log.len(),
        "by_cause": by_cause,
        "losses_by_fate": by_fate,
        "scale_ins": m.scale_ins,
        "spot_interruptions": m.spot_interruptions,
        "metrics": {
            "jobs_succeeded": m.jobs_succeeded,
            "jobs_cancelled": m.jobs_cancelled,
            "jobs_lost_in_stop_window": m.jobs_lost_in_stop_window,
            "jobs_killed_by_stop": m.jobs_killed_by_stop(),
            "jobs_killed_by_interruption": m.jobs_killed_by_interruption,
            "jobs_failed": m.jobs_failed,
            "failed_runner_crash": m.failed_runner_crash,
            "failed_instance_terminated": m.failed_instance_terminated,
            "failed_hook": m.failed_hook,
            "failed_killed": m.failed_killed,
            "failed_global_timeout": m.failed_global_timeout,
        },
    });
    GithubRecords {
        jobs,
        runs,
        annotations,
        fleet_events,
        expected,
    }
}

impl GithubRecords {
    /// Write `github.json` (runs, jobs, annotations), `fleet-events.jsonl` and `expected.json` to `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let github = json!({
            "repository": format!("{}/{}", REPO.0, REPO.1),
            "runs": self.runs,
            "jobs": self.jobs,
            "annotations": self.annotations.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        });
        std::fs::write(dir.join("github.json"), github.to_string())?;
        let events: String = self.fleet_events.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(dir.join("fleet-events.jsonl"), events)?;
        let pretty = serde_json::to_string_pretty(&self.expected).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("expected.json"), pretty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Faults;

    #[test]
    fn the_job_log_agrees_with_the_counters() {
        let mut cfg = SimConfig::fleet(7, 20, 1.0);
        cfg.faults = Faults {
            spot_interruptions_per_day: 0.5,
            runner_crashes_per_day: 0.5,
            ..cfg.faults
        };
        for strategy in [Strategy::RunnerLifecycle, Strategy::Naive] {
            let mut c = cfg.clone();
            c.record_jobs = true;
            let run = strategy.run(&c);
            let m = &run.metrics;
            let log = m.job_log.clone().unwrap_or_default();
            let count = |f: &dyn Fn(JobOutcome) -> bool| log.iter().filter(|r| f(r.outcome)).count() as u64;
            assert_eq!(count(&|o| o == JobOutcome::Succeeded), m.jobs_succeeded);
            assert_eq!(count(&|o| o == JobOutcome::Cancelled), m.jobs_cancelled);
            assert_eq!(
                count(&|o| o == JobOutcome::LostInStopWindow),
                m.jobs_lost_in_stop_window
            );
            assert_eq!(
                count(&|o| o == JobOutcome::KilledByInterruption),
                m.jobs_killed_by_interruption
            );
            assert_eq!(count(&|o| matches!(o, JobOutcome::Failed(_))), m.jobs_failed);
            assert!(
                log.iter().all(|r| r.instance.is_some()),
                "every finished job had a host"
            );
            let recs = records_of(m, 1_790_000_000, strategy.name());
            assert_eq!(recs.jobs.len(), log.len());
            // Recording changes nothing the simulation measures.
            let plain = strategy.run(&cfg);
            assert_eq!(plain.metrics.jobs_total, m.jobs_total);
            assert_eq!(plain.metrics.jobs_failed, m.jobs_failed);
        }
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(instance_id(5).len(), 19);
        assert!(instance_id(5).starts_with("i-") && instance_id(5).ends_with("05"));
    }
}
