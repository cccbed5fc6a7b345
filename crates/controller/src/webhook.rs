//! GitHub `workflow_job` webhooks as a Lambda function URL delivers them: the request, its
//! signature, its payload. No IO here; [`crate::scale`] acts on what this module accepts.
//!
//! - The invocation event is the function-URL (API Gateway HTTP API v2) request shape, typed once
//!   in [`crate::function_url`]; this module reads `headers` (names lower-cased), `body` (a
//!   string), `isBase64Encoded`, `requestContext.http.method` from it.
//! - `X-Hub-Signature-256` is `sha256=` and the hex HMAC-SHA256 of the raw body keyed with the
//!   webhook secret (GitHub Docs, "Validating webhook deliveries"); it is checked with aws-lc-rs's
//!   `hmac::verify`, which compares in constant time.
//! - Only `workflow_job` events with the actions `queued`, `in_progress` and `completed` count as
//!   demand; everything else is ignored (HTTP 204).

use aws_lc_rs::hmac;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use lifecycle_github::Secret;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// The largest body accepted (GitHub caps payloads at 25 MB; a workflow_job payload is a few KiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// The shortest webhook secret accepted, in bytes. GitHub asks for "a random string of text with
/// high entropy" (GitHub Docs, "Validating webhook deliveries"): every signed delivery is an
/// HMAC-SHA256 of a body the attacker may see, so a short secret can be searched for offline from
/// one captured delivery. 16 bytes is the floor below which that search is cheap whatever the
/// alphabet; `openssl rand -hex 32` (64 characters) is what the docs recommend.
pub const MIN_SECRET_BYTES: usize = 16;

/// Refuse a webhook secret shorter than [`MIN_SECRET_BYTES`] (its length is told, never its text).
pub fn check_secret(secret: &Secret) -> Result<(), String> {
    let n = secret.expose().len();
    if n < MIN_SECRET_BYTES {
        return Err(format!(
            "the webhook secret is {n} bytes; at least {MIN_SECRET_BYTES} are required (GitHub asks for a random, high-entropy secret: e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

/// One HTTP request from a function URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method (`POST`).
    pub method: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The raw body, as signed.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The request of a function-URL event ([`crate::function_url::parse`]); `Err` names what is
/// malformed: no `requestContext.http.method`, a body that is not base64 when it says it is, one
/// larger than [`MAX_BODY`].
pub fn parse_http_event(event: &crate::function_url::Request) -> Result<HttpRequest, String> {
    let method = event
        .request_context
        .http
        .method
        .as_deref()
        .ok_or("no requestContext.http.method")?
        .to_ascii_uppercase();
    let mut headers = Vec::with_capacity(event.headers.len());
    for (k, v) in &event.headers {
        // The values came from JSON strings: UTF-8.
        if let Ok(v) = std::str::from_utf8(v.as_bytes()) {
            headers.push((k.as_str().to_string(), v.to_string()));
        }
    }
    let text = event.body.as_deref().unwrap_or_default();
    let body = if event.is_base64_encoded {
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| format!("body is not base64: {e}"))?
    } else {
        text.as_bytes().to_vec()
    };
    if body.len() > MAX_BODY {
        return Err(format!("body of {} bytes is larger than {MAX_BODY}", body.len()));
    }
    Ok(HttpRequest { method, headers, body })
}

/// Why a signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    Missing,
    /// Not `sha256=` and 64 hex digits.
    Malformed,
    /// The HMAC does not match.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureError::Missing => "no X-Hub-Signature-256 header",
            SignatureError::Malformed => "X-Hub-Signature-256 is not sha256=<64 hex digits>",
            SignatureError::Mismatch => "X-Hub-Signature-256 does not match the body (wrong secret or altered body)",
        })
    }
}

/// The `X-Hub-Signature-256` value for `body` (tests and tools).
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    let tag = hmac::sign(&key, body);
    let mut out = String::from("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Check `X-Hub-Signature-256` against the raw body, in constant time.
pub fn verify(secret: &Secret, header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header.trim().strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
    let tag = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    if tag.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    hmac::verify(&key, body, &tag).map_err(|_| SignatureError::Mismatch)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// What a `workflow_job` event says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobAction {
    /// The job waits for a runner.
    Queued,
    /// A runner started it.
    InProgress,
    /// It ended (or was cancelled before it started).
    Completed,
}

/// A `workflow_job` event the controller counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEvent {
    /// What happened.
    pub action: JobAction,
    /// The job.
    pub job_id: u64,
    /// Its `runs-on` labels.
    pub labels: Vec<String>,
    /// When it was created (epoch s), from `workflow_job.created_at`.
    pub created_at: Option<i64>,
    /// When it started (epoch s), from `workflow_job.started_at`.
    pub started_at: Option<i64>,
    /// `workflow_job.run_attempt` (1 when absent).
    pub run_attempt: u64,
    /// When what the event tells happened (epoch s): `completed_at` for `completed`,
    /// `started_at` for `in_progress`, `created_at` for `queued` (else `created_at`).
    pub at: Option<i64>,
}

impl JobEvent {
    /// The action's word.
    pub fn action_str(&self) -> &'static str {
        match self.action {
            JobAction::Queued => "queued",
            JobAction::InProgress => "in_progress",
            JobAction::Completed => "completed",
        }
    }

    /// What the event is, whatever delivery carried it: the state-table key under which it is
    /// counted once (`job#{id}#{run attempt}#{action}`). GitHub sends each action of a job
    /// attempt once; a second body with the same identity is a replay, whatever its
    /// `X-GitHub-Delivery`.
    pub fn identity(&self) -> String {
        format!("job#{}#{}#{}", self.job_id, self.run_attempt, self.action_str())
    }
}

#[derive(Deserialize)]
struct Payload {
    action: String,
    workflow_job: lifecycle_github::WorkflowJob,
}

/// The fields of `workflow_job` the replay check needs that [`lifecycle_github::WorkflowJob`]
/// does not carry.
#[derive(Deserialize)]
struct Extra {
    workflow_job: ExtraJob,
}

#[derive(Deserialize)]
struct ExtraJob {
    #[serde(default)]
    run_attempt: Option<u64>,
    #[serde(default)]
    completed_at: Option<String>,
}

/// What a delivery is, for the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A job event to count.
    Job(JobEvent),
    /// Something to ignore, and why (for the log line).
    Ignored(String),
}

/// Classify a verified delivery: `event` is `X-GitHub-Event`. `Err`: a `workflow_job` body that
/// does not parse.
pub fn classify(event: Option<&str>, body: &[u8]) -> Result<Delivery, String> {
    match event {
        Some("workflow_job") => {}
        Some(other) => {
            return Ok(Delivery::Ignored(format!(
                "event `{}` is not workflow_job",
                lifecycle_escape::clip(other, 64)
            )))
        }
        None => return Ok(Delivery::Ignored("no X-GitHub-Event header".into())),
    }
    let p: Payload = serde_json::from_slice(body).map_err(|e| format!("workflow_job payload: {e}"))?;
    let action = match p.action.as_str() {
        "queued" => JobAction::Queued,
        "in_progress" => JobAction::InProgress,
        "completed" => JobAction::Completed,
        other => {
            return Ok(Delivery::Ignored(format!(
                "workflow_job action `{}`",
                lifecycle_escape::clip(other, 64)
            )))
        }
    };
    let extra: Option<ExtraJob> = serde_json::from_slice::<Extra>(body).ok().map(|e| e.workflow_job);
    let t = |s: &Option<String>| s.as_deref().and_then(lifecycle_github::time::parse_rfc3339);
    let created_at = t(&p.workflow_job.created_at);
    let started_at = t(&p.workflow_job.started_at);
    let completed_at = extra.as_ref().and_then(|e| t(&e.completed_at));
    let at = match action {
        JobAction::Queued => created_at,
        JobAction::InProgress => started_at.or(created_at),
        JobAction::Completed => completed_at.or(started_at).or(created_at),
    };
    Ok(Delivery::Job(JobEvent {
        action,
        job_id: p.workflow_job.id,
        labels: p.workflow_job.labels.clone(),
        created_at,
        started_at,
        run_attempt: extra.and_then(|e| e.run_attempt).unwrap_or(1).max(1),
        at,
    }))
}

/// Whether every label of a job is served by the group (GitHub compares labels
/// case-insensitively; `served` is lower-case). A job without labels is not ours.
pub fn served(labels: &[String], served: &BTreeSet<String>) -> bool {
    !labels.is_empty() && labels.iter().all(|l| served.contains(&l.to_ascii_lowercase()))
}

/// A function-URL answer.
pub fn response(status: u16, message: &str) -> Value {
    crate::function_url::answer(
        status,
        crate::function_url::json_headers(),
        serde_json::json!({"message": message}).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("It's a Secret to Everybody".to_string())
    }

    #[test]
    fn githubs_documented_example_verifies() {
        // GitHub Docs, "Validating webhook deliveries", "Testing the webhook payload validation".
        let body = b"Hello, World!";
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(&secret(), body), sig);
        assert_eq!(verify(&secret(), Some(sig), body), Ok(()));
    }

    #[test]
    fn bad_signatures_are_refused() {
        let body = b"Hello, World!";
        let good = sign(&secret(), body);
        assert_eq!(verify(&secret(), None, body), Err(SignatureError::Missing));
        assert_eq!(
            verify(&secret(), Some("sha1=abc"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&secret(), Some("sha256=zz"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&secret(), Some("sha256=abcd"), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(&secret(), Some(&good), b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        let other = Secret::new("another".to_string());
        assert_eq!(verify(&other, Some(&good), body), Err(SignatureError::Mismatch));
    }

    #[test]
    fn function_url_events_parse() {
        let e = serde_json::json!({
            "version": "2.0", "rawPath": "/",
            "headers": {"X-GitHub-Event": "workflow_job", "x-github-delivery": "d-1"},
            "requestContext": {"http": {"method": "post"}, "timeEpoch": 1},
            "body": STANDARD.encode(b"{}"), "isBase64Encoded": true
        });
        assert!(crate::function_url::is_function_url_event(&e));
        let typed = crate::function_url::parse(e.clone()).expect("parses");
        let r = parse_http_event(&typed).expect("parses");
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("X-GitHub-Delivery"), Some("d-1"));
        assert_eq!(r.header("x-github-event"), Some("workflow_job"));
        assert_eq!(r.body, b"{}");
        assert!(!crate::function_url::is_function_url_event(
            &serde_json::json!({"source": "aws.events"})
        ));
        // What the typed request leaves optional and the webhook needs is still refused.
        let refused = |spoil: fn(&mut Value)| {
            let mut e = e.clone();
            spoil(&mut e);
            parse_http_event(&crate::function_url::parse(e).expect("parses")).expect_err("refused")
        };
        assert_eq!(
            refused(|e| e["requestContext"]["http"]["method"] = Value::Null),
            "no requestContext.http.method"
        );
        assert!(refused(|e| e["body"] = "%%".into()).contains("not base64"));
        assert!(refused(|e| e["body"] = STANDARD.encode(vec![b' '; MAX_BODY + 1]).into()).contains("larger"));
        // No body: an empty one (as before).
        let mut e = e.clone();
        e["body"] = Value::Null;
        let r = parse_http_event(&crate::function_url::parse(e).expect("parses")).expect("parses");
        assert!(r.body.is_empty());
    }

    #[test]
    fn job_events_classify() {
        let body = br#"{"action":"queued","workflow_job":{"id":7,"run_id":1,"status":"queued",
            "labels":["self-hosted","Linux"],"created_at":"2026-01-01T00:00:00Z","started_at":null}}"#;
        let Ok(Delivery::Job(j)) = classify(Some("workflow_job"), body) else {
            panic!("not a job")
        };
        assert_eq!((j.action, j.job_id), (JobAction::Queued, 7));
        assert!(j.created_at.is_some() && j.started_at.is_none());
        assert!(matches!(classify(Some("ping"), b"{}"), Ok(Delivery::Ignored(_))));
        let waiting = br#"{"action":"waiting","workflow_job":{"id":7,"status":"waiting"}}"#;
        assert!(matches!(
            classify(Some("workflow_job"), waiting),
            Ok(Delivery::Ignored(_))
        ));
        assert!(classify(Some("workflow_job"), b"nope").is_err());
    }

    #[test]
    fn a_job_event_has_one_identity_whatever_the_delivery() {
        let body = br#"{"action":"completed","workflow_job":{"id":7,"run_id":1,"run_attempt":2,"status":"completed",
            "labels":["self-hosted"],"created_at":"2026-01-01T00:00:00Z","started_at":"2026-01-01T00:00:10Z",
            "completed_at":"2026-01-01T00:01:00Z"}}"#;
        let Ok(Delivery::Job(j)) = classify(Some("workflow_job"), body) else {
            panic!("not a job")
        };
        assert_eq!(j.identity(), "job#7#2#completed");
        assert_eq!(j.at, lifecycle_github::time::parse_rfc3339("2026-01-01T00:01:00Z"));
        // No run_attempt: the first.
        let body =
            br#"{"action":"queued","workflow_job":{"id":7,"status":"queued","created_at":"2026-01-01T00:00:00Z"}}"#;
        let Ok(Delivery::Job(j)) = classify(Some("workflow_job"), body) else {
            panic!("not a job")
        };
        assert_eq!(j.identity(), "job#7#1#queued");
        assert_eq!(j.at, j.created_at);
    }

    #[test]
    fn short_webhook_secrets_are_refused() {
        assert!(check_secret(&secret()).is_ok());
        assert!(check_secret(&Secret::new("0123456789abcdef".to_string())).is_ok());
        for short in ["", "x", "0123456789abcde"] {
            let e = check_secret(&Secret::new(short.to_string())).err().unwrap_or_default();
            assert!(e.contains("at least 16") && !e.contains("0123456789abcde"), "{e}");
        }
    }

    #[test]
    fn labels_must_all_be_served() {
        let ours: BTreeSet<String> = ["self-hosted", "linux", "x64"].iter().map(|s| s.to_string()).collect();
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(served(&l(&["self-hosted", "Linux"]), &ours));
        assert!(!served(&l(&["self-hosted", "gpu"]), &ours));
        assert!(!served(&[], &ours));
    }

    proptest::proptest! {
        #[test]
        fn any_body_and_header_is_verified_or_refused(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), h in ".{0,80}") {
            let _ = verify(&secret(), Some(&h), &body);
            let _ = classify(Some("workflow_job"), &body);
        }
    }
}
