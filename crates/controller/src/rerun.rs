//! `--rerun-fleet-losses` (opt-in): re-run once a job that died with its runner through no fault
//! of its own (a spot interruption, a drain that ran out of time, a host the fleet lost), on the
//! `workflow_job` `completed` webhook (docs/audit.md, "Re-running").
//!
//! A job qualifies only if all of these hold ([`decide`], then [`rerun_fleet_loss`]):
//! 1. the delivery is `completed` with conclusion `failure` or `cancelled`;
//! 2. its runner is the fleet's (name prefix) and the name carries an instance id;
//! 3. it is the run's first attempt (`run_attempt` 1): a re-run is never re-run, whatever arrives;
//! 4. no step concluded `failure` (a job that failed on its own is never re-run);
//! 5. Auto Scaling no longer has the instance in service (gone, or `Terminating*`): a host alive
//!    and in service means the job ended some other way (cancelled by a person, say);
//! 6. a conditional write of `rerun:{owner}/{repo}:{job_id}` to the state table succeeds (the same
//!    put-if-absent-or-expired as delivery ids), so a retried or duplicated delivery never re-runs
//!    twice.
//!
//! Then `POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun`. GitHub refusing (403, 422) keeps
//! the claim (asking again would be refused again); a rate limit or a transient failure releases
//! it, so a redelivery may try again. One log line per re-run and a metric ([`metrics_line`]).

use crate::handler::Controller;
use crate::ports::{Aws, GitHub};
use crate::webhook::HttpRequest;
use lifecycle_core::ApiError;
use lifecycle_github::loss::instance_of;
use lifecycle_github::{GitHubClient, GitHubError};
use serde_json::Value;
use std::future::Future;
use tracing::{info, warn};

/// How long a re-run claim is kept (GitHub lets a run be re-run for 30 days).
pub const CLAIM_TTL_S: i64 = 31 * 24 * 3600;

/// What the payload alone says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not a `completed` delivery of a `workflow_job`.
    NotCompleted,
    /// Completed without a loss (`success`, `skipped`, `neutral`, ...).
    NotALoss,
    /// Its runner is not the fleet's (or it had none).
    NotOurs,
    /// A re-run attempt (`run_attempt` > 1): never re-run again.
    AlreadyReRun(u64),
    /// A step failed: the job's own fault.
    OwnFailure,
    /// A candidate: the fleet must confirm the host is gone.
    Candidate {
        /// Owner.
        owner: String,
        /// Repository.
        repo: String,
        /// The job.
        job_id: u64,
        /// The instance the runner name carries.
        instance_id: String,
    },
}

/// Read a `workflow_job` webhook payload (GitHub Docs, "Webhook events and payloads",
/// `workflow_job`: `action`, `workflow_job.{id, run_attempt, conclusion, runner_name, steps}`,
/// `repository.full_name`).
pub fn decide(payload: &Value, prefix: &str) -> Decision {
    if payload.get("action").and_then(Value::as_str) != Some("completed") {
        return Decision::NotCompleted;
    }
    let Some(job) = payload.get("workflow_job") else {
        return Decision::NotCompleted;
    };
    if !matches!(
        job.get("conclusion").and_then(Value::as_str),
        Some("failure") | Some("cancelled")
    ) {
        return Decision::NotALoss;
    }
    let name = job.get("runner_name").and_then(Value::as_str).unwrap_or_default();
    if prefix.is_empty() || !name.starts_with(prefix) {
        return Decision::NotOurs;
    }
    let Some(instance_id) = instance_of(name) else {
        return Decision::NotOurs;
    };
    let attempt = job.get("run_attempt").and_then(Value::as_u64).unwrap_or(1);
    if attempt > 1 {
        return Decision::AlreadyReRun(attempt);
    }
    let failed_step = job.get("steps").and_then(Value::as_array).is_some_and(|s| {
        s.iter()
            .any(|st| st.get("conclusion").and_then(Value::as_str) == Some("failure"))
    });
    if failed_step {
        return Decision::OwnFailure;
    }
    let full = payload
        .pointer("/repository/full_name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (Some(job_id), Some((owner, repo))) = (job.get("id").and_then(Value::as_u64), full.split_once('/')) else {
        return Decision::NotCompleted;
    };
    Decision::Candidate {
        owner: owner.to_string(),
        repo: repo.to_string(),
        job_id,
        instance_id,
    }
}

/// The one GitHub call a re-run needs.
pub trait Rerun {
    /// `POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun`.
    fn rerun_job(&self, owner: &str, repo: &str, job_id: u64) -> impl Future<Output = Result<(), GitHubError>> + Send;
}

/// Any GitHub port re-runs through its own `rerun_job`.
#[derive(Debug)]
pub struct Port<'a, G>(pub &'a G);

impl<G: GitHub> Rerun for Port<'_, G> {
    fn rerun_job(&self, owner: &str, repo: &str, job_id: u64) -> impl Future<Output = Result<(), GitHubError>> + Send {
        GitHub::rerun_job(self.0, owner, repo, job_id)
    }
}

impl<A: Aws, G: GitHub> Controller<A, G> {
    /// The webhook path's hook: after a counted, verified delivery, re-run its job once if it is a
    /// fleet loss and `--rerun-fleet-losses` is on (one log line and one metric line per re-run).
    pub(crate) async fn rerun_if_fleet_loss(&self, req: &HttpRequest, now: i64) {
        let Some(s) = self.settings().scale.as_ref() else {
            return;
        };
        let Some(prefix) = s.rerun_fleet_losses.as_deref() else {
            return;
        };
        let Ok(payload) = serde_json::from_slice::<Value>(&req.body) else {
            return;
        };
        let outcome = rerun_fleet_loss(self.aws(), &Port(self.github()), &s.table, prefix, &payload, now).await;
        if matches!(outcome, Outcome::ReRun { .. }) {
            println!("{}", metrics_line(1, now.saturating_mul(1000)));
        }
    }
}

impl Rerun for GitHubClient {
    async fn rerun_job(&self, owner: &str, repo: &str, job_id: u64) -> Result<(), GitHubError> {
        GitHubClient::rerun_job(self, owner, repo, job_id).await
    }
}

/// What happened to one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The payload rules it out.
    Skipped(Decision),
    /// Auto Scaling still has the instance in this state (not terminating): not a fleet loss.
    HostInService(String),
    /// Already claimed: a duplicate or retried delivery.
    Duplicate,
    /// Re-run now.
    ReRun {
        /// The job.
        job_id: u64,
        /// The instance it died with.
        instance_id: String,
    },
    /// GitHub refused (403, 422): not asked again.
    Refused(String),
    /// A rate limit or a transient failure: the claim was released for a redelivery.
    Retry(String),
    /// Auto Scaling or the state table failed: nothing claimed.
    Failed(String),
}

/// Decide, confirm with the fleet, claim, re-run (the module's rules). `now` is epoch seconds.
pub async fn rerun_fleet_loss<A: Aws, G: Rerun>(
    aws: &A,
    github: &G,
    table: &str,
    prefix: &str,
    payload: &Value,
    now: i64,
) -> Outcome {
    let (owner, repo, job_id, instance_id) = match decide(payload, prefix) {
        Decision::Candidate {
            owner,
            repo,
            job_id,
            instance_id,
        } => (owner, repo, job_id, instance_id),
        other => return Outcome::Skipped(other),
    };
    match aws.instance(&instance_id).await {
        Ok(Some(i)) if !i.state.starts_with("Terminating") => return Outcome::HostInService(i.state),
        Ok(_) => {}
        Err(e) => return Outcome::Failed(e.to_string()),
    }
    let key = format!("rerun:{owner}/{repo}:{job_id}");
    match aws.claim_delivery(table, &key, now, now + CLAIM_TTL_S).await {
        Ok(true) => {}
        Ok(false) => return Outcome::Duplicate,
        Err(e) => return Outcome::Failed(e.to_string()),
    }
    match github.rerun_job(&owner, &repo, job_id).await {
        Ok(()) => {
            info!(job_id, %owner, %repo, instance_id = %instance_id, "re-ran a job the fleet lost (--rerun-fleet-losses)");
            Outcome::ReRun { job_id, instance_id }
        }
        Err(e @ (GitHubError::Forbidden(_) | GitHubError::Unexpected { status: 422, .. })) => {
            warn!(job_id, %owner, %repo, error = %e, "GitHub refused to re-run a job the fleet lost");
            Outcome::Refused(e.to_string())
        }
        Err(e) => {
            let released: Result<(), ApiError> = aws.release_delivery(table, &key).await;
            warn!(job_id, %owner, %repo, error = %e, released = released.is_ok(), "re-run failed; a redelivery may try again");
            Outcome::Retry(e.to_string())
        }
    }
}

/// The CloudWatch embedded-metric-format line counting re-runs (`FleetLossReruns`, namespace
/// `RunnerLifecycle`, as the sweep's and the scaler's metrics).
pub fn metrics_line(reruns: u64, timestamp_ms: i64) -> String {
    let mut line = crate::emf::Line::fleet_wide(timestamp_ms);
    line.put(crate::emf::Metric::count("FleetLossReruns"), reruns);
    line.render()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fakes::FakeAws;
    use crate::ports::AsgInstance;
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    const NAME: &str = "rle-jit-1764000000-i-0123456789abcdef0-ab12";

    #[derive(Debug, Default)]
    struct Gh {
        calls: Mutex<Vec<u64>>,
        answers: Mutex<Vec<Result<(), GitHubError>>>,
    }

    impl Rerun for Gh {
        async fn rerun_job(&self, _owner: &str, _repo: &str, job_id: u64) -> Result<(), GitHubError> {
            self.calls.lock().unwrap().push(job_id);
            let mut a = self.answers.lock().unwrap();
            if a.is_empty() {
                Ok(())
            } else {
                a.remove(0)
            }
        }
    }

    fn payload(action: &str, conclusion: &str, attempt: u64, step: &str) -> Value {
        json!({
            "action": action,
            "repository": {"full_name": "acme/infra"},
            "workflow_job": {
                "id": 42, "run_id": 7, "run_attempt": attempt, "status": "completed",
                "conclusion": conclusion, "runner_name": NAME,
                "steps": [{"name": "Set up job", "status": "completed", "conclusion": "success", "number": 1},
                          {"name": "Run", "status": "completed", "conclusion": step, "number": 2}],
            }
        })
    }

    #[test]
    fn decides_from_the_payload() {
        assert!(matches!(
            decide(&payload("completed", "failure", 1, "cancelled"), "rle-jit-"),
            Decision::Candidate { job_id: 42, .. }
        ));
        assert_eq!(
            decide(&payload("in_progress", "failure", 1, "cancelled"), "rle-jit-"),
            Decision::NotCompleted
        );
        assert_eq!(
            decide(&payload("completed", "success", 1, "success"), "rle-jit-"),
            Decision::NotALoss
        );
        assert_eq!(
            decide(&payload("completed", "failure", 1, "failure"), "rle-jit-"),
            Decision::OwnFailure
        );
        assert_eq!(
            decide(&payload("completed", "failure", 2, "cancelled"), "rle-jit-"),
            Decision::AlreadyReRun(2)
        );
        assert_eq!(
            decide(&payload("completed", "failure", 1, "cancelled"), "other-"),
            Decision::NotOurs
        );
        assert_eq!(
            decide(&payload("completed", "failure", 1, "cancelled"), ""),
            Decision::NotOurs
        );
        assert_eq!(
            decide(&json!({"action": "completed"}), "rle-jit-"),
            Decision::NotCompleted
        );
    }

    fn run(aws: &FakeAws, gh: &Gh, p: &Value) -> Outcome {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(rerun_fleet_loss(aws, gh, "state", "rle-jit-", p, 1_790_000_000))
    }

    #[test]
    fn re_runs_once_across_duplicate_and_out_of_order_deliveries() {
        let aws = FakeAws::default();
        let gh = Gh::default();
        let p = payload("completed", "failure", 1, "cancelled");
        assert!(matches!(run(&aws, &gh, &p), Outcome::ReRun { job_id: 42, .. }));
        // The same delivery again (GitHub's redelivery, a retried Lambda): no second re-run.
        assert_eq!(run(&aws, &gh, &p), Outcome::Duplicate);
        // An in_progress delivery arriving late changes nothing.
        assert_eq!(
            run(&aws, &gh, &payload("in_progress", "failure", 1, "cancelled")),
            Outcome::Skipped(Decision::NotCompleted)
        );
        // The re-run's own completion (attempt 2), even if it too died with its host.
        assert_eq!(
            run(&aws, &gh, &payload("completed", "failure", 2, "cancelled")),
            Outcome::Skipped(Decision::AlreadyReRun(2))
        );
        assert_eq!(*gh.calls.lock().unwrap(), [42]);
    }

    #[test]
    fn never_for_a_job_that_failed_on_its_own_or_a_host_in_service() {
        let aws = FakeAws::default();
        let gh = Gh::default();
        assert_eq!(
            run(&aws, &gh, &payload("completed", "failure", 1, "failure")),
            Outcome::Skipped(Decision::OwnFailure)
        );
        aws.instances.lock().unwrap().insert(
            "i-0123456789abcdef0".into(),
            AsgInstance {
                group: "g".into(),
                state: "InService".into(),
            },
        );
        assert_eq!(
            run(&aws, &gh, &payload("completed", "cancelled", 1, "cancelled")),
            Outcome::HostInService("InService".into())
        );
        aws.instances.lock().unwrap().insert(
            "i-0123456789abcdef0".into(),
            AsgInstance {
                group: "g".into(),
                state: "Terminating:Wait".into(),
            },
        );
        assert!(matches!(
            run(&aws, &gh, &payload("completed", "failure", 1, "cancelled")),
            Outcome::ReRun { .. }
        ));
        assert_eq!(gh.calls.lock().unwrap().len(), 1);
    }

    #[test]
    fn refusals_keep_the_claim_and_rate_limits_release_it() {
        let aws = FakeAws::default();
        let gh = Gh::default();
        let p = payload("completed", "failure", 1, "cancelled");
        gh.answers
            .lock()
            .unwrap()
            .push(Err(GitHubError::Forbidden("run too old".into())));
        assert!(matches!(run(&aws, &gh, &p), Outcome::Refused(_)));
        assert_eq!(run(&aws, &gh, &p), Outcome::Duplicate);

        let aws = FakeAws::default();
        gh.answers.lock().unwrap().push(Err(GitHubError::Unexpected {
            status: 422,
            message: "already running".into(),
        }));
        assert!(matches!(run(&aws, &gh, &p), Outcome::Refused(_)));
        assert_eq!(run(&aws, &gh, &p), Outcome::Duplicate);

        let aws = FakeAws::default();
        gh.answers.lock().unwrap().push(Err(GitHubError::RateLimited {
            retry_after: Duration::from_secs(60),
        }));
        assert!(matches!(run(&aws, &gh, &p), Outcome::Retry(_)));
        // Released: the redelivery re-runs it.
        assert!(matches!(run(&aws, &gh, &p), Outcome::ReRun { .. }));
        assert_eq!(run(&aws, &gh, &p), Outcome::Duplicate);
    }

    #[test]
    fn a_table_outage_claims_nothing_and_re_runs_nothing() {
        let aws = FakeAws::default();
        *aws.table_down.lock().unwrap() = Some(lifecycle_core::aws::ApiErrorKind::Throttled);
        let gh = Gh::default();
        assert!(matches!(
            run(&aws, &gh, &payload("completed", "failure", 1, "cancelled")),
            Outcome::Failed(_)
        ));
        assert!(gh.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn the_metric_line_is_embedded_metric_format() {
        let v: Value = serde_json::from_str(&metrics_line(3, 1000)).unwrap();
        assert_eq!(v["FleetLossReruns"], 3);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "FleetLossReruns"
        );
    }

    /// The webhook path end to end: a signed `completed` delivery of a fleet loss is counted and
    /// its job re-run once; the same delivery again is a replay, a late `in_progress` and the
    /// re-run's own completion re-run nothing; without the flag nothing is re-run.
    #[tokio::test]
    async fn the_webhook_path_re_runs_a_fleet_loss_once() {
        use crate::fakes::FakeGitHub;
        use crate::ports::Capacity;
        use crate::settings::{ScaleSettings, Settings};
        use lifecycle_github::Secret;

        let secret = Secret::new("a-webhook-secret-of-32-characters".to_string());
        let controller = |rerun: bool| {
            let mut settings = Settings::new(["runners".to_string()]);
            let mut s = ScaleSettings::new("runners", &["self-hosted"], "state");
            s.webhook_secret = Some(secret.clone());
            s.rerun_fleet_losses = rerun.then(|| "rle-jit-".to_string());
            settings.scale = Some(s);
            let aws = FakeAws::default();
            *aws.capacity.lock().unwrap() = Some(Capacity {
                desired: 1,
                min: 0,
                max: 10,
            });
            Controller::new(settings, aws, FakeGitHub::default())
        };
        let request = |p: &Value, delivery: &str| {
            let mut p = p.clone();
            p["workflow_job"]["labels"] = json!(["self-hosted"]);
            p["workflow_job"]["created_at"] = json!("2026-01-01T00:00:00Z");
            p["workflow_job"]["started_at"] = json!("2026-01-01T00:00:30Z");
            let body = p.to_string().into_bytes();
            HttpRequest {
                method: "POST".into(),
                headers: vec![
                    ("x-github-event".into(), "workflow_job".into()),
                    ("x-github-delivery".into(), delivery.into()),
                    ("x-hub-signature-256".into(), crate::webhook::sign(&secret, &body)),
                ],
                body,
            }
        };
        let c = controller(true);
        let lost = payload("completed", "failure", 1, "cancelled");
        assert_eq!(c.webhook(&request(&lost, "d1"), 100).await.status, 202);
        assert_eq!(*c.github().reruns.lock().unwrap(), [42]);
        assert_eq!(c.webhook(&request(&lost, "d1"), 101).await.status, 409);
        assert_eq!(
            c.webhook(&request(&payload("in_progress", "failure", 1, "cancelled"), "d2"), 102)
                .await
                .status,
            202
        );
        assert_eq!(
            c.webhook(&request(&payload("completed", "failure", 2, "cancelled"), "d3"), 103)
                .await
                .status,
            202
        );
        assert_eq!(*c.github().reruns.lock().unwrap(), [42]);

        let off = controller(false);
        assert_eq!(off.webhook(&request(&lost, "d1"), 100).await.status, 202);
        assert!(off.github().reruns.lock().unwrap().is_empty());
    }
}
