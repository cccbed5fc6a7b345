//! The agent's side of the controller's just-in-time config endpoint: one SigV4-signed
//! `POST {url}/jit-config` to a Lambda function URL with `AuthType = AWS_IAM`.
//!
//! Why a function URL and a signature: AWS checks the signature and hands the controller the
//! caller's identity (`requestContext.authorizer.iam.userArn`); for an instance profile that is
//! `assumed-role/ROLE/i-...`, the instance id as the session name, so a host can only ever obtain a
//! config minted for itself (docs/security.md, "JIT configs: delivery and threat analysis"). The
//! answer is a credential: it is kept in a [`JitConfigSecret`], which never prints.
//!
//! Signing uses the SDK's own crate (`aws-sigv4`) and credentials provider (the instance role
//! through IMDS in production), and the request goes over the hyper/rustls stack the SDK already
//! builds: no second TLS stack.

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::time::{Duration, SystemTime};

/// The path of the endpoint under the function URL.
pub const JIT_PATH: &str = "/jit-config";

/// The largest answer read: a JIT config is a few kilobytes (three small files, base64 twice).
const MAX_ANSWER: usize = 256 * 1024;

/// The encoded JIT config: base64 of the runner's `.runner`, `.credentials` and RSA key. Whoever
/// holds it can receive a job and its secrets, so it is never printed, logged or put in an error.
#[derive(Clone, PartialEq, Eq)]
pub struct JitConfigSecret(String);

impl JitConfigSecret {
    /// The config itself, for the one place that hands it on (the listener's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JitConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A config minted for this instance.
#[derive(Clone, Debug)]
pub struct JitGrant {
    /// The registration's name (not secret: it shows in GitHub's runner list).
    pub runner_name: String,
    /// The registration's id.
    pub runner_id: u64,
    /// The config.
    pub encoded_jit_config: JitConfigSecret,
}

/// Why no config came.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JitFetchError {
    /// Worth retrying with backoff: 429, 5xx, a timeout, a transport failure, no credentials yet.
    #[error("{reason}")]
    Retryable {
        /// The HTTP status, if an answer came.
        status: Option<u16>,
        /// The server's `Retry-After`, if any.
        after: Option<Duration>,
        /// What happened (escaped, bounded).
        reason: String,
    },
    /// The controller will not mint for this caller now (403: not an instance of a served group;
    /// 409: not in service; 400: a bad request): retrying soon cannot help.
    #[error("refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The controller's message (escaped, bounded).
        message: String,
    },
}

/// Whether `url` may carry a credential: `https://`, or plain `http://` to a loopback address (the
/// test emulators).
pub fn check_url(url: &str) -> Result<(), String> {
    let loopback = ["http://127.0.0.1", "http://[::1]", "http://localhost"]
        .iter()
        .any(|p| {
            url.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    if (url.starts_with("https://") && url.len() > "https://".len()) || loopback {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an https:// URL (plain http is only allowed to a loopback address)",
            lifecycle_escape::escape(url)
        ))
    }
}

/// Ask the controller for a config for this instance. `timeout` bounds the whole exchange.
pub async fn fetch_jit_config(url: &str, sdk: &SdkConfig, timeout: Duration) -> Result<JitGrant, JitFetchError> {
    match tokio::time::timeout(timeout, fetch(url, sdk)).await {
        Ok(result) => result,
        Err(_) => Err(retryable(None, None, format!("no answer within {timeout:?}"))),
    }
}

async fn fetch(url: &str, sdk: &SdkConfig) -> Result<JitGrant, JitFetchError> {
    check_url(url).map_err(|message| JitFetchError::Refused { status: 0, message })?;
    let endpoint = format!("{}{JIT_PATH}", url.trim_end_matches('/'));
    let request = signed_request(&endpoint, sdk).await?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| retryable(None, None, format!("no TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let response = client
        .request(request)
        .await
        .map_err(|e| retryable(None, None, format!("request failed: {e}")))?;
    let status = response.status().as_u16();
    let after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| retryable(Some(status), after, format!("reading the answer failed: {e}")))?
        .to_bytes();
    answer(status, after, &body)
}

/// The request, signed with the SDK's current credentials for the `lambda` service.
async fn signed_request(endpoint: &str, sdk: &SdkConfig) -> Result<hyper::Request<Full<Bytes>>, JitFetchError> {
    let no_creds = |what: String| retryable(None, None, format!("no AWS credentials to sign with: {what}"));
    let provider = sdk
        .credentials_provider()
        .ok_or_else(|| no_creds("none configured".into()))?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| no_creds(e.to_string()))?;
    let region = sdk.region().map(ToString::to_string).unwrap_or_default();
    let identity = credentials.into();
    let body = b"{}";
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("lambda")
        // SigV4 signs the wall-clock time; AWS refuses a signature more than 5 minutes off.
        .time(wall_clock())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| retryable(None, None, format!("cannot sign: {e}")))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        endpoint,
        [("content-type", "application/json")].into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| JitFetchError::Refused {
        status: 0,
        message: format!("cannot sign a request to this URL: {e}"),
    })?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| retryable(None, None, format!("cannot sign: {e}")))?
        .into_parts();
    let mut request = hyper::Request::post(endpoint)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .map_err(|e| JitFetchError::Refused {
            status: 0,
            message: format!("bad request URL: {e}"),
        })?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request)
}

/// The IO shell's one read of the wall clock (SigV4 needs it; the decision core never does).
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// Sort an answer: 200 with a config, a refusal, or a retryable failure.
fn answer(status: u16, after: Option<Duration>, body: &[u8]) -> Result<JitGrant, JitFetchError> {
    #[derive(serde::Deserialize)]
    struct Granted {
        runner_name: String,
        runner_id: u64,
        encoded_jit_config: String,
    }
    #[derive(serde::Deserialize)]
    struct Failed {
        error: String,
    }
    if status == 200 {
        let g: Granted = serde_json::from_slice(body).map_err(|e| {
            // Never echo the body: it may hold a config.
            retryable(Some(status), after, format!("the answer is not a JIT grant: {e}"))
        })?;
        if g.encoded_jit_config.is_empty() {
            return Err(retryable(Some(status), after, "the answer has an empty config".into()));
        }
        return Ok(JitGrant {
            runner_name: g.runner_name,
            runner_id: g.runner_id,
            encoded_jit_config: JitConfigSecret(g.encoded_jit_config),
        });
    }
    let message = serde_json::from_slice::<Failed>(body)
        .map(|f| f.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    let message = bounded(&message);
    match status {
        429 | 500..=599 => Err(retryable(Some(status), after, format!("HTTP {status}: {message}"))),
        _ => Err(JitFetchError::Refused { status, message }),
    }
}

fn retryable(status: Option<u16>, after: Option<Duration>, reason: String) -> JitFetchError {
    JitFetchError::Retryable {
        status,
        after,
        reason: bounded(&reason),
    }
}

/// Untrusted text for a log line: escaped, at most 300 characters.
fn bounded(text: &str) -> String {
    let escaped = lifecycle_escape::escape(text);
    match escaped.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &escaped[..i]),
        None => escaped.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls_or_loopback_may_carry_a_config() {
        assert!(check_url("https://abc.lambda-url.us-east-1.on.aws").is_ok());
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("http://localhost/").is_ok());
        assert!(check_url("http://[::1]:9").is_ok());
        assert!(check_url("http://127.0.0.1.evil.example").is_err());
        assert!(check_url("http://example.com").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("ftp://x").is_err());
    }

    #[test]
    fn a_grant_never_prints_its_config() {
        let g = answer(
            200,
            None,
            br#"{"runner_name":"rl-1-i-0abc","runner_id":7,"encoded_jit_config":"c2VjcmV0"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.encoded_jit_config.expose(), "c2VjcmV0");
        let shown = format!("{g:?}");
        assert!(!shown.contains("c2VjcmV0") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn answers_sort_into_retryable_and_refused() {
        let after = Some(Duration::from_secs(7));
        match answer(429, after, br#"{"error":"GitHub rate limit"}"#) {
            Err(JitFetchError::Retryable {
                status: Some(429),
                after: a,
                ..
            }) => assert_eq!(a, after),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answer(503, None, b"<html>"),
            Err(JitFetchError::Retryable { status: Some(503), .. })
        ));
        match answer(409, None, br#"{"error":"instance i-1 is Terminating:Wait"}"#) {
            Err(JitFetchError::Refused { status: 409, message }) => assert!(message.contains("Terminating:Wait")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answer(403, None, b""),
            Err(JitFetchError::Refused { status: 403, .. })
        ));
    }

    #[test]
    fn a_malformed_grant_is_retried_and_never_echoed() {
        match answer(200, None, br#"{"encoded_jit_config":"c2VjcmV0"}"#) {
            Err(e @ JitFetchError::Retryable { .. }) => assert!(!e.to_string().contains("c2VjcmV0"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(answer(
            200,
            None,
            br#"{"runner_name":"n","runner_id":1,"encoded_jit_config":""}"#
        )
        .is_err());
    }

    #[test]
    fn hostile_messages_are_escaped_and_bounded() {
        let long = format!("{{\"error\":\"\\u001b[31m{}\"}}", "x".repeat(5000));
        match answer(400, None, long.as_bytes()) {
            Err(JitFetchError::Refused { message, .. }) => {
                assert!(message.len() < 400 && !message.contains('\u{1b}'), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
