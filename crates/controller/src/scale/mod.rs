//! Demand scaling: `workflow_job` webhooks and a periodic reconcile keep a per-group demand record
//! in the DynamoDB state table, and [`lifecycle_core::scaling::DemandPolicy`] (the same function the
//! simulator drives) turns demand into the group's desired capacity. Design: docs/controller.md,
//! "Scaling".
//!
//! - **State** (one item per group, optimistic locking on a version): the jobs queued and running
//!   for the group's labels, recently completed job ids (out-of-order deliveries), the policy's
//!   [`ScalingState`], the capacity last seen or applied, and when the last apply and reconcile were.
//! - **Coalescing**: Auto Scaling is called only when the decision differs from the capacity last
//!   applied, and at most once per `apply_interval` per group: the first change in a window applies
//!   at once (leading edge) and claims the window in the table; later changes in the window make
//!   one invocation (the one that wins the conditional write on `deferred_until`) wait for the
//!   window's end and apply the latest decision then (trailing edge). A burst of N events over T
//!   seconds makes at most T / apply_interval + 2 DescribeAutoScalingGroups and as many
//!   SetDesiredCapacity calls, whatever N.
//! - **Missing data never lowers capacity**: webhook demand may lower capacity only while a
//!   reconcile succeeded within `fresh_for`; a failed reconcile (GitHub down) or an unavailable
//!   table lets demand raise capacity but never lower it.
//!
//! The module by concern: [`state`] (the stored state and how events change it), [`decision`]
//! (pure: the gate, the policy, the apply window), [`execution`] (the table's write loop, the
//! apply, the trailing edge, the reconcile), [`webhooks`] (the route) and [`metrics`] (typed
//! CloudWatch lines).

pub mod decision;
pub mod execution;
pub mod metrics;
pub mod state;
pub mod webhooks;

pub use decision::{policy, Plan};
pub use execution::{Applied, ScaleReport};
pub use metrics::{metrics_line, ScaleMetrics};
pub use state::{GroupState, Job, StoredCapacity, DONE_KEEP_S, MAX_DONE, MAX_JOBS};
pub use webhooks::WebhookAnswer;

use serde_json::Value;

/// Whether a Lambda event asks for the reconcile: the schedule's constant input
/// `{"runner-lifecycle": "scale"}`.
pub fn is_scale_event(event: &Value) -> bool {
    event.get("runner-lifecycle").and_then(Value::as_str) == Some("scale")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{FakeAws, FakeGitHub};
    use crate::ports::Capacity;
    use crate::settings::ScaleSettings;
    use crate::settings::Settings;
    use crate::webhook::{self, HttpRequest, JobAction, JobEvent};
    use crate::Controller;
    use lifecycle_core::scaling::Demand;
    use lifecycle_core::ApiErrorKind;
    use lifecycle_github::Secret;
    use lifecycle_github::WorkflowJob;
    use std::time::Duration;

    const SECRET: &str = "webhook-secret-for-unit-tests";

    fn controller(min: u32, max: u32, desired: u32) -> Controller<FakeAws, FakeGitHub> {
        let mut settings = Settings::new(["runners".to_string()]);
        let mut s = ScaleSettings::new("runners", &["self-hosted", "linux"], "state");
        s.idle_target = 1;
        s.scale_in_after = Duration::from_secs(120);
        s.webhook_secret = Some(Secret::new(SECRET.to_string()));
        settings.scale = Some(s);
        let aws = FakeAws::default();
        *aws.capacity.lock().expect("lock") = Some(Capacity { desired, min, max });
        Controller::new(settings, aws, FakeGitHub::default())
    }

    fn request(action: &str, id: u64, delivery: &str) -> HttpRequest {
        let body = serde_json::json!({
            "action": action,
            "workflow_job": {"id": id, "run_id": 1, "status": action, "labels": ["self-hosted", "Linux"],
                             "created_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:30Z"}
        })
        .to_string()
        .into_bytes();
        HttpRequest {
            method: "POST".into(),
            headers: vec![
                ("x-github-event".into(), "workflow_job".into()),
                ("x-github-delivery".into(), delivery.into()),
                (
                    "x-hub-signature-256".into(),
                    webhook::sign(&Secret::new(SECRET.to_string()), &body),
                ),
            ],
            body,
        }
    }

    fn job(id: u64, status: &str) -> WorkflowJob {
        WorkflowJob {
            id,
            run_id: Some(1),
            status: status.into(),
            labels: vec!["self-hosted".into()],
            created_at: None,
            started_at: None,
        }
    }

    fn sets(c: &Controller<FakeAws, FakeGitHub>) -> Vec<u32> {
        c.aws()
            .set_desired
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, d)| *d)
            .collect()
    }

    #[tokio::test]
    async fn signatures_and_replays_are_refused() {
        let c = controller(0, 10, 0);
        let mut bad = request("queued", 1, "d1");
        bad.body.push(b' ');
        assert_eq!(c.webhook(&bad, 0).await.status, 401);
        let mut missing = request("queued", 1, "d1");
        missing.headers.retain(|(k, _)| k != "x-hub-signature-256");
        assert_eq!(c.webhook(&missing, 0).await.status, 401);
        assert_eq!(c.webhook(&request("queued", 1, "d1"), 0).await.status, 202);
        assert_eq!(c.webhook(&request("queued", 1, "d1"), 1).await.status, 409);
        let mut ping = request("queued", 2, "d2");
        ping.headers[0].1 = "ping".into();
        assert_eq!(c.webhook(&ping, 1).await.status, 204);
    }

    /// The events' `created_at` (2026-01-01T00:00:00Z) plus a little: inside the replay window.
    const T: i64 = 1_767_225_600 + 100;

    fn stored_jobs(c: &Controller<FakeAws, FakeGitHub>) -> usize {
        let t = c.aws().table.lock().expect("lock");
        t.get("state/runners")
            .and_then(|st| serde_json::from_str::<GroupState>(&st.json).ok())
            .map_or(0, |st| st.jobs.len())
    }

    #[tokio::test]
    async fn a_replay_under_a_new_delivery_id_is_not_counted() {
        // Issue 16: a body replayed under a fresh X-GitHub-Delivery was accepted. Here a `queued`
        // replayed after its job completed and the completion was forgotten (an hour later):
        // before, the job came back as demand.
        let c = controller(0, 10, 0);
        assert_eq!(c.webhook(&request("queued", 1, "d1"), T).await.status, 202);
        assert_eq!(c.webhook(&request("completed", 1, "d2"), T + 10).await.status, 202);
        assert_eq!(stored_jobs(&c), 0);
        let replay = c.webhook(&request("queued", 1, "d3-fresh"), T + 4000).await;
        assert_eq!(replay.status, 409, "{}", replay.message);
        assert!(replay.message.contains("counted before"), "{}", replay.message);
        assert_eq!(stored_jobs(&c), 0, "the replay resurrected the job");
        // The same body under yet another id, and the completion again: refused too.
        assert_eq!(c.webhook(&request("queued", 1, "d4"), T + 4001).await.status, 409);
        assert_eq!(c.webhook(&request("completed", 1, "d5"), T + 4002).await.status, 409);
        // A duplicate delivery id is refused as before.
        assert_eq!(c.webhook(&request("completed", 1, "d2"), T + 4003).await.status, 409);
    }

    #[tokio::test]
    async fn out_of_order_and_replayed_deliveries_count_once() {
        let c = controller(0, 10, 0);
        // `completed` first, then its `queued`: accepted once, no job resurrected.
        assert_eq!(c.webhook(&request("completed", 7, "a"), T).await.status, 202);
        assert_eq!(c.webhook(&request("queued", 7, "b"), T + 1).await.status, 202);
        assert_eq!(c.webhook(&request("in_progress", 7, "c"), T + 2).await.status, 202);
        assert_eq!(stored_jobs(&c), 0);
        // Every one of them again, each under a fresh id: refused.
        for (i, action) in ["completed", "queued", "in_progress"].iter().enumerate() {
            let out = c.webhook(&request(action, 7, &format!("again-{i}")), T + 3).await;
            assert_eq!(out.status, 409, "{action}: {}", out.message);
        }
        assert_eq!(stored_jobs(&c), 0);
        // Another job is not affected.
        assert_eq!(c.webhook(&request("queued", 8, "e"), T + 4).await.status, 202);
        assert_eq!(stored_jobs(&c), 1);
    }

    #[tokio::test]
    async fn a_stale_event_is_not_counted() {
        // Older than the replay window (3 days): refused before anything is stored.
        let c = controller(0, 10, 0);
        let late = 1_767_225_600 + 3 * 24 * 3600 + 1;
        let out = c.webhook(&request("queued", 1, "d1"), late).await;
        assert_eq!(out.status, 409, "{}", out.message);
        assert!(out.message.contains("replay window"), "{}", out.message);
        assert_eq!(c.aws().table_calls.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_short_webhook_secret_refuses_every_delivery() {
        let c = controller(0, 10, 0);
        let mut settings = c.settings().clone();
        if let Some(s) = settings.scale.as_mut() {
            s.webhook_secret = Some(Secret::new("short".to_string()));
        }
        let c = Controller::new(settings, FakeAws::default(), FakeGitHub::default());
        let mut req = request("queued", 1, "d1");
        req.headers[2].1 = webhook::sign(&Secret::new("short".to_string()), &req.body);
        let out = c.webhook(&req, T).await;
        assert_eq!(out.status, 401);
        assert!(out.message.contains("at least 16"), "{}", out.message);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_makes_a_bounded_number_of_calls() {
        let c = controller(0, 50, 0);
        // 1,000 queued jobs, one every 10 ms, one after the other (a trailing apply holds its
        // invocation until the window opens); the clock is tokio's paused one.
        let start = tokio::time::Instant::now();
        let epoch = |_: ()| i64::try_from(start.elapsed().as_secs()).unwrap_or(0);
        for i in 0..1000u64 {
            assert_eq!(
                c.webhook(&request("queued", i, &format!("d{i}")), epoch(()))
                    .await
                    .status,
                202
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = start.elapsed().as_secs();
        let calls = sets(&c);
        assert!(
            calls.len() as u64 <= elapsed / 5 + 2,
            "{} calls in {elapsed} s: {calls:?}",
            calls.len()
        );
        assert_eq!(calls.last(), Some(&50), "capped at max");
        let describes = c.aws().asg_calls() - calls.len() as u64;
        assert!(describes <= elapsed / 5 + 2, "{describes} DescribeAutoScalingGroups");
    }

    #[tokio::test]
    async fn reconcile_repairs_dropped_webhooks_and_outages_never_scale_in() {
        let c = controller(0, 20, 0);
        // Two queued webhooks arrive, three jobs exist (one webhook dropped).
        c.webhook(&request("queued", 1, "d1"), 0).await;
        c.webhook(&request("queued", 2, "d2"), 0).await;
        *c.github().jobs.lock().expect("lock") = vec![job(1, "queued"), job(2, "in_progress"), job(3, "queued")];
        let r = c.scale(100).await.expect("reconciled");
        assert_eq!(r.repaired, 2, "job 2 started, job 3 was missing");
        assert_eq!(r.demand, Some(Demand { queued: 2, running: 1 }));
        assert_eq!(r.applied.to, 4);
        // All done, but GitHub is down: no scale-in however long.
        *c.github().jobs.lock().expect("lock") = Vec::new();
        *c.github().down.lock().expect("lock") = true;
        for t in [200, 1000, 10_000] {
            let r = c.scale(t).await.expect("reconciled");
            assert_eq!(r.applied.to, 4, "no scale-in on missing data at {t}");
            assert_eq!(r.demand, None);
        }
        // Back: demand is low, and stays low for scale_in_after, then capacity drops.
        *c.github().down.lock().expect("lock") = false;
        assert_eq!(c.scale(10_100).await.expect("ok").applied.to, 4);
        assert_eq!(c.scale(10_220).await.expect("ok").applied.to, 1);
    }

    #[tokio::test]
    async fn stale_webhook_demand_never_scales_in() {
        let c = controller(0, 20, 5);
        // No reconcile ever succeeded: completed jobs must not shrink the group.
        c.webhook(&request("queued", 1, "d1"), 0).await;
        c.webhook(&request("completed", 1, "d2"), 10).await;
        c.webhook(&request("queued", 9, "d3"), 400).await;
        c.webhook(&request("completed", 9, "d4"), 800).await;
        assert!(sets(&c).is_empty(), "{:?}", sets(&c));
    }

    #[tokio::test]
    async fn without_the_table_the_reconcile_only_scales_out() {
        let c = controller(0, 20, 5);
        *c.aws().table_down.lock().expect("lock") = Some(ApiErrorKind::Transient);
        assert_eq!(c.webhook(&request("queued", 1, "d1"), 0).await.status, 503);
        let r = c.scale(0).await.expect("reconciled");
        assert!(!r.state_ok && r.applied.to == 5, "no jobs: no scale-in");
        *c.github().jobs.lock().expect("lock") = (1..=10).map(|i| job(i, "queued")).collect();
        let r = c.scale(60).await.expect("reconciled");
        assert_eq!(r.applied.to, 11);
    }

    #[tokio::test]
    async fn a_delivery_that_could_not_be_counted_can_be_redelivered() {
        let c = controller(0, 20, 5);
        // The claim succeeds, the state write fails: the claim is released.
        *c.aws().fail_next_save.lock().expect("lock") = 100;
        assert_eq!(c.webhook(&request("queued", 1, "d1"), 0).await.status, 503);
        *c.aws().fail_next_save.lock().expect("lock") = 0;
        assert_eq!(
            c.webhook(&request("queued", 1, "d1"), 1).await.status,
            202,
            "redelivered"
        );
        assert_eq!(
            c.webhook(&request("queued", 1, "d1"), 2).await.status,
            409,
            "then a replay"
        );
    }

    #[test]
    fn out_of_order_deliveries_do_not_resurrect_jobs() {
        let mut st = GroupState::default();
        let ev = |action, id| JobEvent {
            action,
            job_id: id,
            labels: vec![],
            created_at: Some(0),
            started_at: Some(30),
            run_attempt: 1,
            at: Some(30),
        };
        st.apply_event(&ev(JobAction::Completed, 1), 5);
        st.apply_event(&ev(JobAction::Queued, 1), 6);
        assert!(st.jobs.is_empty());
        st.apply_event(&ev(JobAction::Queued, 2), 6);
        assert_eq!(st.apply_event(&ev(JobAction::InProgress, 2), 40), Some(30));
        assert_eq!(st.apply_event(&ev(JobAction::InProgress, 2), 41), None, "a duplicate");
        assert_eq!(st.demand(), Demand { queued: 0, running: 1 });
        let line = metrics_line(
            "runners",
            &ScaleMetrics {
                queue_time_s: Some(30),
                ..Default::default()
            },
            0,
        );
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["QueueTime"], 30);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "RunnerLifecycle");
    }
}
