//! The webhook route: a GitHub `workflow_job` delivery through the function URL is checked
//! (signature, replay by delivery id and by payload identity, labels), counted in the group's
//! state, and the decision's plan carried out (apply now, or own the trailing apply).

use super::decision::{self, Plan};
use super::metrics::{gauges, metrics_line, ScaleMetrics};
use crate::handler::Controller;
use crate::ports::{Aws, GitHub};
use crate::webhook::{self, Delivery, HttpRequest};
use tracing::{error, info, warn};

/// One webhook's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookAnswer {
    /// HTTP status: 202 accepted, 204 ignored, 400 malformed, 401 bad signature, 409 replay,
    /// 503 state table unavailable.
    pub status: u16,
    /// The one-line reason.
    pub message: String,
}

impl<A: Aws, G: GitHub> Controller<A, G> {
    /// Handle one function-URL request (a GitHub webhook delivery); the answer for the caller.
    pub async fn webhook(&self, req: &HttpRequest, now: i64) -> WebhookAnswer {
        let mut m = ScaleMetrics::default();
        let answer = self.webhook_inner(req, now, &mut m).await;
        let delivery = req.header("x-github-delivery").unwrap_or("-");
        let delivery = lifecycle_escape::clip(delivery, 64);
        match answer.status {
            202 => info!(status = answer.status, delivery = %delivery, "webhook: {}", answer.message),
            204 => info!(status = answer.status, delivery = %delivery, "webhook ignored: {}", answer.message),
            503 => error!(status = answer.status, delivery = %delivery, "webhook not counted: {}", answer.message),
            _ => warn!(status = answer.status, delivery = %delivery, "webhook refused: {}", answer.message),
        }
        if let (202, Some(s)) = (answer.status, self.settings().scale.as_ref()) {
            println!("{}", metrics_line(&s.group, &m, now.saturating_mul(1000)));
        }
        if answer.status == 202 {
            self.rerun_if_fleet_loss(req, now).await;
        }
        answer
    }

    async fn webhook_inner(&self, req: &HttpRequest, now: i64, m: &mut ScaleMetrics) -> WebhookAnswer {
        let a = |status: u16, message: String| WebhookAnswer { status, message };
        let Some(s) = self.settings().scale.as_ref() else {
            return a(404, "scaling is not configured".into());
        };
        if req.method != "POST" {
            return a(
                405,
                format!("method {} (only POST)", lifecycle_escape::clip(&req.method, 16)),
            );
        }
        let Some(secret) = s.webhook_secret.as_ref() else {
            return a(401, "no webhook secret configured: every delivery is refused".into());
        };
        if let Err(e) = webhook::check_secret(secret) {
            return a(401, format!("{e}: every delivery is refused"));
        }
        if let Err(e) = webhook::verify(secret, req.header("x-hub-signature-256"), &req.body) {
            return a(401, format!("bad signature: {e}"));
        }
        let ev = match webhook::classify(req.header("x-github-event"), &req.body) {
            Ok(Delivery::Job(ev)) => ev,
            Ok(Delivery::Ignored(why)) => return a(204, why),
            Err(e) => return a(400, e),
        };
        if !webhook::served(&ev.labels, &s.labels) {
            return a(
                204,
                format!("job {} runs on labels the group does not serve", ev.job_id),
            );
        }
        let Some(delivery) = req
            .header("x-github-delivery")
            .filter(|d| !d.is_empty() && d.len() <= 128)
        else {
            return a(400, "no X-GitHub-Delivery header".into());
        };
        let ttl = i64::try_from(s.delivery_ttl.as_secs()).unwrap_or(i64::MAX);
        let action = ev.action_str();
        // Older than the replay window: its identity may no longer be remembered, so it is not
        // counted at all (the reconcile reads the REST API's view anyway).
        if let Some(at) = ev.at.filter(|&at| now.saturating_sub(at) > ttl) {
            return a(
                409,
                format!(
                    "job {} {action} happened {} s ago, before the {ttl} s replay window: not counted",
                    ev.job_id,
                    now.saturating_sub(at)
                ),
            );
        }
        match self
            .aws()
            .claim_delivery(&s.table, delivery, now, now.saturating_add(ttl))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return a(
                    409,
                    format!("delivery {} seen before (replay)", lifecycle_escape::clip(delivery, 64)),
                )
            }
            Err(e) => return a(503, format!("state table unavailable: {e}")),
        }
        // The payload's identity, whatever delivery id carries it: a body replayed under a fresh
        // X-GitHub-Delivery is counted once. Remembered for the same window, from the later of now
        // and the event's own time, so every body the window above admits is remembered.
        let identity = ev.identity();
        let identity_until = now.max(ev.at.unwrap_or(now)).saturating_add(ttl);
        let forget = |what: &'static str| async move {
            if let Err(e2) = self.aws().release_delivery(&s.table, delivery).await {
                warn!(error = %e2, what, "could not release the delivery id; a redelivery will be refused as a replay");
            }
        };
        match self.aws().claim_key(&s.table, &identity, now, identity_until).await {
            Ok(true) => {}
            Ok(false) => {
                return a(
                    409,
                    format!(
                        "job {} {action} (run attempt {}) was counted before: a replay under delivery {}",
                        ev.job_id,
                        ev.run_attempt,
                        lifecycle_escape::clip(delivery, 64)
                    ),
                )
            }
            Err(e) => {
                forget("identity claim failed").await;
                return a(503, format!("state table unavailable: {e}"));
            }
        }
        let updated = self
            .update_state(s, delivery, |st| {
                let waited = st.apply_event(&ev, now);
                (waited, decision::plan(s, st, now))
            })
            .await;
        let (st, (waited, next)) = match updated {
            Ok(v) => v,
            Err(e) => {
                // Not counted: forget both claims, so a redelivery is counted rather than refused.
                forget("state write failed").await;
                if let Err(e2) = self.aws().expire_key(&s.table, &identity, 0).await {
                    warn!(error = %e2, "could not release the job identity; a redelivery will be refused as a replay");
                }
                return a(503, format!("state table unavailable: {e}"));
            }
        };
        m.queue_time_s = waited;
        gauges(m, &st);
        let done = match next {
            Plan::Nothing => Ok(None),
            Plan::Apply => self.apply(s, delivery, now, m).await.map(Some),
            Plan::Defer { until } => self.trailing(s, delivery, now, until, m).await,
        };
        match done {
            Ok(Some(applied)) if applied.from != applied.to => a(
                202,
                format!(
                    "job {} {action}; desired capacity {} -> {}",
                    ev.job_id, applied.from, applied.to
                ),
            ),
            Ok(_) => a(202, format!("job {} {action}", ev.job_id)),
            // Counted; the next event or the reconcile applies it.
            Err(e) => {
                error!(group = %s.group, error = %e, "applying the decision failed; the reconcile will retry");
                a(202, format!("job {} {action}; apply failed: {e}", ev.job_id))
            }
        }
    }
}
