//! The AWS Lambda entry: `lambda_runtime` hands each EventBridge event to the same handler core
//! the CLI uses. A thin `main` (awslabs/aws-lambda-rust-runtime examples): all logic is in
//! [`Controller`].
//!
//! Error mapping: an error that a retry can fix (throttling, 5xx, a GitHub rate limit) is returned
//! as an invocation error, so Lambda's asynchronous retries (and the event's DLQ) apply. A malformed
//! or unsupported event, or AccessDenied, is not: it is logged at ERROR with `retryable=false` and
//! the invocation succeeds with `{"outcome":"rejected",...}`, because retrying the same event can
//! only fail the same way.

use crate::error::HandlerError;
use crate::handler::Controller;
use crate::ports::{Aws, GitHub};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::error;

/// What one invocation answers, or the error Lambda should retry.
pub async fn invoke<A: Aws, G: GitHub>(
    controller: &Controller<A, G>,
    event: Value,
    now: i64,
    deadline: Option<tokio::time::Instant>,
) -> Result<Value, HandlerError> {
    if crate::function_url::is_function_url_event(&event) {
        // A function-URL request: always an HTTP answer, never an invocation error (GitHub does
        // not retry a delivery; the reconcile repairs what is lost). Typed once, here; one that
        // does not parse reaches neither route.
        let request = match crate::function_url::parse(event) {
            Ok(request) => request,
            Err(e) => {
                error!(error = %e, "function URL: malformed event");
                return Ok(crate::webhook::response(400, &e));
            }
        };
        if crate::jit::is_jit_event(&request) {
            // `POST /jit-config` or `POST /jit-config/release` (signed, through the AWS_IAM
            // function URL), or anything on those paths or signed: answered by the JIT routes,
            // which refuse what AWS did not authenticate. Never handed to the webhook, and a
            // webhook delivery never reaches the minting or releasing code.
            return Ok(controller.jit(&request, now).await.response());
        }
        return Ok(match crate::webhook::parse_http_event(&request) {
            Ok(req) => {
                let a = controller.webhook(&req, now).await;
                crate::webhook::response(a.status, &a.message)
            }
            Err(e) => {
                error!(error = %e, "webhook: malformed function-URL event");
                crate::webhook::response(400, &e)
            }
        });
    }
    if crate::scale::is_scale_event(&event) {
        return match controller.scale(now).await {
            Ok(report) => Ok(serde_json::to_value(&report)
                .map(|r| json!({"outcome": "scaled", "report": r}))
                .unwrap_or_else(|e| json!({"outcome": "unserialisable", "error": e.to_string()}))),
            Err(e) if e.is_retryable() => {
                error!(error = %e, retryable = true, "reconcile failed; Lambda will retry");
                Err(e)
            }
            Err(e) => {
                error!(error = %e, retryable = false, "reconcile failed");
                Ok(json!({"outcome": "rejected", "retryable": false, "error": e.to_string()}))
            }
        };
    }
    let parsed = crate::event::parse_value(event);
    let result = match parsed {
        Ok(event) => controller.handle_until(event, now, deadline).await,
        Err(e) => Err(HandlerError::Event(e)),
    };
    match result {
        Ok(outcome) => {
            if let crate::handler::Outcome::Swept { groups } = &outcome {
                for report in groups {
                    println!("{}", crate::sweep::metrics_line(report, now * 1000));
                }
            }
            Ok(serde_json::to_value(&outcome)
                .unwrap_or_else(|e| json!({"outcome": "unserialisable", "error": e.to_string()})))
        }
        Err(e) if e.is_retryable() => {
            error!(error = %e, retryable = true, "event failed; Lambda will retry");
            Err(e)
        }
        Err(e) => {
            error!(error = %e, retryable = false, "event rejected");
            Ok(json!({"outcome": "rejected", "retryable": false, "error": e.to_string()}))
        }
    }
}

/// The variables the Lambda runtime sets and `lambda_runtime` requires (it panics without them, so
/// they are checked first: outside Lambda this is a configuration error, not a crash).
pub const RUNTIME_VARIABLES: &[&str] = &[
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// Whether this process runs under a Lambda runtime API; the error names what is missing.
pub fn check_environment() -> Result<(), String> {
    let missing: Vec<&str> = RUNTIME_VARIABLES
        .iter()
        .copied()
        .filter(|v| std::env::var(v).map_or(true, |s| s.is_empty()))
        .collect();
    if !missing.is_empty() {
        return Err(format!("not running under AWS Lambda: {} not set", missing.join(", ")));
    }
    if std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").is_ok_and(|m| m.parse::<i32>().is_err()) {
        return Err("AWS_LAMBDA_FUNCTION_MEMORY_SIZE is not a number".into());
    }
    Ok(())
}

/// Serve invocations until the runtime stops.
pub async fn run<A, G>(controller: Controller<A, G>) -> Result<(), lambda_runtime::Error>
where
    A: Aws + Send + Sync + 'static,
    G: GitHub + Send + Sync + 'static,
{
    let controller = Arc::new(controller);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let controller = Arc::clone(&controller);
        async move {
            // The function's deadline (epoch ms, from the runtime API's
            // Lambda-Runtime-Deadline-Ms): launch retries stop before it (crate::retry).
            // The epoch clock has whole seconds here: count from the end of this second.
            let now_ms = u64::try_from(lifecycle_github::time::now_epoch())
                .unwrap_or(0)
                .saturating_add(1)
                .saturating_mul(1000);
            let left = std::time::Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
            let deadline = tokio::time::Instant::now() + left;
            invoke(
                &controller,
                event.payload,
                lifecycle_github::time::now_epoch(),
                Some(deadline),
            )
            .await
            .map_err(|e| lambda_runtime::Error::from(e.to_string()))
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{FakeAws, FakeGitHub};
    use crate::settings::Settings;

    fn answer(event: Value) -> Value {
        let c = Controller::new(
            Settings::new(["runners".to_string()]),
            FakeAws::default(),
            FakeGitHub::default(),
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(invoke(&c, event, 1, None)))
            .unwrap_or_else(|e| panic!("runtime: {e}"))
            .unwrap_or_else(|e| panic!("invoke: {e}"))
    }

    fn message(a: &Value) -> String {
        let body: Value = serde_json::from_str(a["body"].as_str().unwrap_or_default()).unwrap_or_default();
        body["message"]
            .as_str()
            .or(body["error"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn function_url_events_are_typed_once_and_malformed_ones_answered_400() {
        let good = json!({
            "version": "2.0", "rawPath": "/jit-config", "headers": {},
            "requestContext": {"accountId": "123456789012", "timeEpoch": 1, "http": {"method": "POST"}},
            "body": "{}", "isBase64Encoded": false
        });
        // Unsigned, on the JIT path: the JIT route's refusal.
        let a = answer(good.clone());
        assert_eq!(a["statusCode"], 403, "{a}");
        assert_eq!(a["headers"]["cache-control"], "no-store");
        // Not a function-URL request as AWS makes them: 400, and neither route saw it.
        for spoil in [
            (|e: &mut Value| {
                e["requestContext"].as_object_mut().map(|c| c.remove("timeEpoch"));
            }) as fn(&mut Value),
            |e| e["isBase64Encoded"] = json!("yes"),
            |e| e["headers"] = json!({"bad name": "x"}),
            |e| e["requestContext"]["authorizer"] = json!({"iam": "x"}),
        ] {
            let mut e = good.clone();
            spoil(&mut e);
            let a = answer(e.clone());
            assert_eq!(a["statusCode"], 400, "{e} -> {a}");
            assert!(message(&a).starts_with("malformed function-URL event: "), "{a}");
        }
        // A webhook delivery without a method: the webhook's own refusal, as before.
        let mut e = good;
        e["rawPath"] = json!("/");
        e["requestContext"]["http"] = json!({});
        let a = answer(e);
        assert_eq!(
            (a["statusCode"].as_u64(), message(&a).as_str()),
            (Some(400), "no requestContext.http.method")
        );
    }
}
