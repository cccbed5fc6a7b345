//! The agent's side of `POST /jit-config` and `POST /jit-config/release`: fetch a just-in-time
//! runner configuration from the controller's Lambda function URL (`AuthType` `AWS_IAM`), and
//! ask it to remove this host's registration before a stop, both signed with the host's own
//! credentials. docs/controller.md ("The JIT endpoint", "Releasing a registration before a
//! stop") has the wire contract, docs/security.md ("JIT configs: delivery and threat analysis")
//! why the signature is the identity.
//!
//! - **Signing.** AWS Signature Version 4 over the whole request (method, path, `host`,
//!   `content-type`, `x-amz-date`, `x-amz-security-token`, the SHA-256 of the body), service name
//!   `lambda`, the SDK configuration's region, credentials from the SDK configuration's provider
//!   (on a runner host: the instance profile through IMDS). A function URL with `AuthType AWS_IAM`
//!   requires every request to be SigV4-signed (Lambda Developer Guide, "Invoking Lambda function
//!   URLs"); the signer is `aws-sigv4`, the crate the SDK itself signs with.
//! - **Transport.** hyper 1 with hyper-rustls on aws-lc-rs, the stack the SDK and the GitHub client
//!   already build (no second TLS stack). `https://` only, except `http://` to a loopback host for
//!   tests: a signed request replayed within its five-minute validity would mint a config for
//!   whoever replays it, so it must not cross a network in the clear.
//! - **Answers.** 200 with `{"runner_name", "runner_id", "encoded_jit_config"}`; 429, 408 and 5xx
//!   (and transport failures, timeouts, missing credentials) are [`JitFetchError::Retryable`] with
//!   the `Retry-After` seconds if given; any other status is [`JitFetchError::Refused`] (403: not an
//!   authorized identity, 409: the instance is not in service, 400: malformed). The body is
//!   untrusted: messages are clipped and escaped before they reach a log.
//! - **Release answers.** 200, 409 and 404 count only with the controller's `{"result": ...}`
//!   ([`Release`]); a 404 without it is a controller that has no such route ([`JitFetchError::Refused`]),
//!   and the rest is sorted as for the fetch.

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::time::Duration;

/// The route on the controller's function URL.
pub const JIT_PATH: &str = "/jit-config";
/// The route that removes one of the caller's registrations before a stop.
pub const RELEASE_PATH: &str = "/jit-config/release";
/// The largest answer read: a JIT config is a few KiB.
pub const MAX_ANSWER: usize = 256 * 1024;
/// The longest `Retry-After` honoured; a larger (or absurd) value is clamped, the agent asks again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);
/// The SigV4 service name of Lambda function URLs.
const SERVICE: &str = "lambda";
/// The request body: the controller needs nothing but the signature.
const BODY: &[u8] = b"{}";

/// `encoded_jit_config`: a credential. `Debug` and `Display` print `<redacted>`;
/// [`JitConfigSecret::expose`] is the one way to read it (for the listener's environment only).
#[derive(Clone, PartialEq, Eq)]
pub struct JitConfigSecret(String);

impl JitConfigSecret {
    /// The configuration itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JitConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for JitConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What the controller did with `POST /jit-config/release`: the decision core's own type (one
/// type for the agent's core, this client and the controller), with its wire words (`result`:
/// `removed`, `busy`, `not-found`, [`Release::name`]) and, here, the HTTP status each is answered
/// with. Both come from here, for the controller and for this client.
pub use lifecycle_core::Release;

/// The HTTP status a release answer is given: 200 removed, 409 busy (GitHub says the runner runs a
/// job: its DELETE answered 422, or it read `busy`), 404 not found (for a JIT registration an
/// assignment may have consumed it: a job may be landing, never "removed"; docs/controller.md,
/// "Releasing a registration before a stop").
pub fn release_status(r: Release) -> u16 {
    match r {
        Release::Removed => 200,
        Release::Busy => 409,
        Release::NotFound => 404,
    }
}

/// The answer a status and `result` word make, if they belong together.
pub fn release_from_answer(status: u16, result: &str) -> Option<Release> {
    Release::ALL
        .iter()
        .copied()
        .find(|r| release_status(*r) == status && r.name() == result)
}

/// A fresh registration for this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JitGrant {
    /// The runner's name (carries this instance's id).
    pub runner_name: String,
    /// GitHub's runner id.
    pub runner_id: u64,
    /// The configuration for `ACTIONS_RUNNER_INPUT_JITCONFIG`.
    pub encoded_jit_config: JitConfigSecret,
}

/// Why no grant came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JitFetchError {
    /// Try again: after `after` when the controller said so (`Retry-After`), else on the
    /// caller's own backoff. 429, 408, 5xx, connection failures, the timeout, credentials that
    /// could not be loaded, an answer that did not parse.
    Retryable {
        /// The controller's `Retry-After`, clamped to [`MAX_RETRY_AFTER`].
        after: Option<Duration>,
        /// What happened (clipped, escaped).
        reason: String,
    },
    /// The controller refused (403 not an authorized identity, 409 not in service, 400
    /// malformed, ...): asking again at once will get the same answer.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The controller's `error` (or AWS's `Message`), clipped and escaped.
        message: String,
    },
    /// 409: this host already holds an unused config, `runner_id` (one outstanding config per
    /// instance). An agent that holds none lost it (a restart, an answer lost in transit): it may
    /// release that registration and ask again.
    Outstanding {
        /// The unused registration the controller named.
        runner_id: u64,
        /// The controller's message, clipped and escaped.
        message: String,
    },
    /// The local configuration cannot work (a URL that is not `https://`, no region, no
    /// credentials provider). Retrying does not help.
    Config(String),
}

impl fmt::Display for JitFetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Worded for both routes (a fetch and a release share this error).
            JitFetchError::Retryable { after: Some(a), reason } => {
                write!(f, "JIT endpoint call failed (retry in {} s): {reason}", a.as_secs())
            }
            JitFetchError::Retryable { after: None, reason } => {
                write!(f, "JIT endpoint call failed (retryable): {reason}")
            }
            JitFetchError::Refused { status, message } => write!(f, "JIT endpoint refused (HTTP {status}): {message}"),
            JitFetchError::Outstanding { runner_id, message } => {
                write!(
                    f,
                    "JIT endpoint refused (HTTP 409, unused runner {runner_id}): {message}"
                )
            }
            JitFetchError::Config(m) => write!(f, "JIT endpoint client configuration: {m}"),
        }
    }
}

impl std::error::Error for JitFetchError {}

fn retryable(reason: impl Into<String>) -> JitFetchError {
    JitFetchError::Retryable {
        after: None,
        reason: reason.into(),
    }
}

/// The URI of `POST {url}/jit-config` ([`endpoint_uri`]).
pub fn jit_uri(url: &str) -> Result<Uri, JitFetchError> {
    endpoint_uri(url, JIT_PATH)
}

/// The URI of `POST {url}/jit-config/release` ([`endpoint_uri`]).
pub fn release_uri(url: &str) -> Result<Uri, JitFetchError> {
    endpoint_uri(url, RELEASE_PATH)
}

/// The URI of a route (`path`, starting with `/`) on the function URL `url`: `https://`, or
/// `http://` to a loopback host (127.0.0.0/8, `[::1]`, `localhost`) for tests. No user
/// information, query or fragment.
pub fn endpoint_uri(url: &str, path: &str) -> Result<Uri, JitFetchError> {
    let shown = lifecycle_escape::clip(url, 200);
    let bad = |why: &str| JitFetchError::Config(format!("function URL `{shown}`: {why}"));
    let base: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
    let authority = base.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information is not allowed"));
    }
    if base.query().is_some() || url.contains('#') {
        return Err(bad("no query or fragment"));
    }
    match base.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback_host(authority.host()) => {}
        Some("http") => {
            return Err(bad(
                "plain http:// would expose a replayable signed request; use https:// (http:// only to loopback, for tests)",
            ))
        }
        _ => return Err(bad("not http(s)")),
    }
    let path = format!("{}{path}", base.path().trim_end_matches('/'));
    Uri::builder()
        .scheme(base.scheme_str().unwrap_or("https"))
        .authority(authority.as_str())
        .path_and_query(path)
        .build()
        .map_err(|_| bad("not a URL"))
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
        || host.parse::<std::net::Ipv6Addr>().is_ok_and(|a| a.is_loopback())
}

/// The HTTPS client of the controller's function URL: one per agent, made once (the platform's
/// root certificates loaded once, connections kept alive and reused between requests), cheap to
/// clone (clones share the pool).
#[derive(Clone, Debug)]
pub struct JitClient {
    /// The client, or why it could not be made (no root certificates): every request then fails
    /// with that configuration error, as one made per request did.
    http: Result<HttpsClient, String>,
}

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

impl JitClient {
    /// Load the root certificates and make the client.
    pub fn new() -> JitClient {
        let http = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map(|b| {
                let https = b.https_or_http().enable_http1().build();
                Client::builder(TokioExecutor::new()).build(https)
            })
            .map_err(|e| format!("loading the platform's root certificates: {e}"));
        JitClient { http }
    }

    /// Fetch a JIT config for this host: SigV4-sign `POST {url}/jit-config` (body `{}`) with
    /// `sdk`'s credentials and region, send it, and sort the answer. `timeout` bounds everything
    /// (credentials, connection, answer).
    pub async fn fetch_jit_config(
        &self,
        url: &str,
        sdk: &SdkConfig,
        timeout: Duration,
    ) -> Result<JitGrant, JitFetchError> {
        let answer = self.post_signed(jit_uri(url)?, BODY, sdk, timeout).await?;
        classify(answer.status, answer.retry_after, &answer.body)
    }

    /// Ask the controller to remove this host's registration `runner_id` before a stop:
    /// SigV4-sign `POST {url}/jit-config/release` (body `{"runner_id": N}`) like
    /// [`fetch_jit_config`](Self::fetch_jit_config), send it, and sort the answer
    /// ([`classify_release`]). `timeout` bounds everything.
    pub async fn release_runner(
        &self,
        url: &str,
        sdk: &SdkConfig,
        timeout: Duration,
        runner_id: u64,
    ) -> Result<Release, JitFetchError> {
        let body = release_body(runner_id);
        let answer = self
            .post_signed(release_uri(url)?, body.as_bytes(), sdk, timeout)
            .await?;
        classify_release(answer.status, answer.retry_after, &answer.body)
    }
}

impl Default for JitClient {
    fn default() -> Self {
        JitClient::new()
    }
}

/// [`JitClient::fetch_jit_config`] with a client made for this one request.
pub async fn fetch_jit_config(url: &str, sdk: &SdkConfig, timeout: Duration) -> Result<JitGrant, JitFetchError> {
    JitClient::new().fetch_jit_config(url, sdk, timeout).await
}

/// The body of a release request.
fn release_body(runner_id: u64) -> String {
    serde_json::json!({ "runner_id": runner_id }).to_string()
}

/// One answer of the controller, read.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Bytes,
}

impl JitClient {
    /// The one signed POST: credentials from `sdk`'s provider, the signature for `sdk`'s region, the
    /// exchange; `timeout` bounds all of it.
    async fn post_signed(
        &self,
        uri: Uri,
        body: &[u8],
        sdk: &SdkConfig,
        timeout: Duration,
    ) -> Result<Answer, JitFetchError> {
        let region = sdk
            .region()
            .map(|r| r.as_ref().to_string())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| JitFetchError::Config("no AWS region".into()))?;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| JitFetchError::Config("no AWS credentials provider".into()))?;
        let exchange = async {
            let creds = provider.provide_credentials().await.map_err(|e| {
                retryable(format!(
                    "AWS credentials: {}",
                    lifecycle_escape::clip(&e.to_string(), 200)
                ))
            })?;
            let identity: Identity = creds.into();
            // The signing time must be the wall clock: AWS refuses signatures more than five minutes
            // off (the IO shell reads the clock; the decision core never does).
            #[allow(clippy::disallowed_methods)]
            let now = std::time::SystemTime::now();
            let request = signed_request(&uri, body, &region, &identity, now)?;
            self.send(request).await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| retryable(format!("no answer within {} ms", timeout.as_millis())))?
    }
}

/// The signed `POST` of `body` (JSON) to `uri` (public for tests: the signature can be checked
/// against another signer).
pub fn signed_request(
    uri: &Uri,
    body: &[u8],
    region: &str,
    identity: &Identity,
    time: std::time::SystemTime,
) -> Result<Request<Full<Bytes>>, JitFetchError> {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or_else(|| JitFetchError::Config("no host".into()))?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(HOST, host.as_str())
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| JitFetchError::Config(format!("request: {e}")))?;
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| JitFetchError::Config(format!("signing parameters: {e}")))?
        .into();
    let uri_text = uri.to_string();
    let headers = [("host", host.as_str()), ("content-type", "application/json")];
    let signable = SignableRequest::new(
        "POST",
        uri_text.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| JitFetchError::Config(format!("signing: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| JitFetchError::Config(format!("signing: {e}")))?
        .into_parts();
    instructions.apply_to_request_http1x(&mut request);
    // The Authorization header and the session token are credentials: keep them out of any
    // header dump (hyper honours the flag in its Debug output).
    for name in ["authorization", "x-amz-security-token"] {
        if let Some(v) = request.headers_mut().get_mut(name) {
            v.set_sensitive(true);
        }
    }
    Ok(request)
}

impl JitClient {
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer, JitFetchError> {
        let client = self.http.as_ref().map_err(|e| JitFetchError::Config(e.clone()))?;
        let answer = client
            .request(request)
            .await
            .map_err(|e| retryable(format!("connection: {}", lifecycle_escape::clip(&e.to_string(), 200))))?;
        let status = answer.status().as_u16();
        let retry_after = answer.headers().get(RETRY_AFTER).and_then(parse_retry_after);
        let body = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                retryable(format!(
                    "reading the answer: {}",
                    lifecycle_escape::clip(&e.to_string(), 200)
                ))
            })?
            .to_bytes();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// `Retry-After` as delay-seconds (RFC 9110, section 10.2.3), clamped to [`MAX_RETRY_AFTER`]; an
/// HTTP-date or anything else is no hint (the caller's own backoff applies).
pub fn parse_retry_after(v: &HeaderValue) -> Option<Duration> {
    lifecycle_core::backoff::parse_retry_after(v.to_str().ok()?, MAX_RETRY_AFTER)
}

/// The body of a 200 answer to `POST /jit-config`: the one wire type of the grant, written by the
/// controller (lifecycle_controller::jit) and read here. `Debug` redacts the configuration.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JitGrantBody {
    /// The runner's name (carries the instance's id).
    pub runner_name: String,
    /// GitHub's runner id.
    pub runner_id: u64,
    /// The configuration for `ACTIONS_RUNNER_INPUT_JITCONFIG`: a credential.
    pub encoded_jit_config: String,
}

impl std::fmt::Debug for JitGrantBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitGrantBody")
            .field("runner_name", &self.runner_name)
            .field("runner_id", &self.runner_id)
            .field("encoded_jit_config", &"<redacted>")
            .finish()
    }
}

/// Sort one answer: 200 and a well-formed grant, or why not.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Result<JitGrant, JitFetchError> {
    if status == 200 {
        let g: JitGrantBody = serde_json::from_slice(body)
            // serde's message quotes the input at most by type, never the value; clipped anyway.
            .map_err(|e| {
                retryable(format!(
                    "malformed grant: {}",
                    lifecycle_escape::clip(&e.to_string(), 120)
                ))
            })?;
        let name_ok = !g.runner_name.is_empty()
            && g.runner_name.len() <= 200
            && g.runner_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let config_ok = !g.encoded_jit_config.is_empty()
            && g.encoded_jit_config
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b));
        if !name_ok || !config_ok {
            return Err(retryable(
                "malformed grant: runner_name or encoded_jit_config is not well-formed",
            ));
        }
        return Ok(JitGrant {
            runner_name: g.runner_name,
            runner_id: g.runner_id,
            encoded_jit_config: JitConfigSecret(g.encoded_jit_config),
        });
    }
    Err(failure(status, retry_after, body))
}

/// Sort one release answer: 200, 409 or 404 with the matching `result` ([`Release`]); a 200
/// without it is malformed (retryable: asking again is harmless, and a second answer of a
/// removal is `not-found`, never a false "removed"); a 404 or 409 without it is a refusal (a
/// controller without the route answers 404 `{"error": ...}`); the rest as for the fetch.
pub fn classify_release(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Result<Release, JitFetchError> {
    let result = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("result").and_then(serde_json::Value::as_str).map(str::to_string));
    if let Some(release) = result.as_deref().and_then(|r| release_from_answer(status, r)) {
        return Ok(release);
    }
    if status == 200 {
        return Err(retryable("malformed release answer: no result \"removed\""));
    }
    Err(failure(status, retry_after, body))
}

/// An answer that is not a success: 429, 408 and 5xx are retryable (with the `Retry-After`),
/// anything else a refusal.
fn failure(status: u16, retry_after: Option<Duration>, body: &[u8]) -> JitFetchError {
    let message = error_message(body);
    let outstanding = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("outstanding_runner_id").and_then(serde_json::Value::as_u64));
    if let (409, Some(runner_id)) = (status, outstanding) {
        return JitFetchError::Outstanding { runner_id, message };
    }
    if status == 429 || status == 408 || (500..=599).contains(&status) {
        return JitFetchError::Retryable {
            after: retry_after,
            reason: format!("HTTP {status}: {message}"),
        };
    }
    JitFetchError::Refused { status, message }
}

/// The `error` of the controller's JSON answer, AWS's own `Message`/`message` (its 403 for a
/// bad signature), or the start of the body; at most 300 characters, escaped.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = parsed.as_ref().and_then(|v| {
        ["error", "Message", "message"]
            .iter()
            .find_map(|k| v.get(k).and_then(serde_json::Value::as_str))
            .map(str::to_string)
    });
    let text = field.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(600)]).into_owned());
    lifecycle_escape::clip(text.trim(), 300)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CONFIG: &str = "eyJ2YWx1ZSI6InNlY3JldCJ9";

    /// The controller's one-outstanding-config refusal names the unused registration; any other
    /// 409 stays a plain refusal.
    #[test]
    fn a_409_naming_an_unused_registration_is_told_apart() {
        let body = br#"{"error":"instance i-1 already holds an unused JIT config","outstanding_runner_id":77}"#;
        assert!(matches!(
            classify(409, Some(Duration::from_secs(600)), body),
            Err(JitFetchError::Outstanding { runner_id: 77, .. })
        ));
        assert!(matches!(
            classify(409, None, br#"{"error":"not in service"}"#),
            Err(JitFetchError::Refused { status: 409, .. })
        ));
    }

    #[test]
    fn urls_are_https_or_loopback_http() {
        let ok = |u: &str| jit_uri(u).map(|u| u.to_string());
        assert_eq!(
            ok("https://abc.lambda-url.us-east-1.on.aws/").ok().as_deref(),
            Some("https://abc.lambda-url.us-east-1.on.aws/jit-config")
        );
        assert_eq!(
            ok("http://127.0.0.1:8080").ok().as_deref(),
            Some("http://127.0.0.1:8080/jit-config")
        );
        assert!(ok("http://[::1]:9/").is_ok() && ok("http://localhost:9").is_ok());
        for bad in [
            "http://example.com/",
            "http://10.0.0.1/",
            "ftp://127.0.0.1/",
            "https://user:pw@host/",
            "https://host/?x=1",
            "https://host/#f",
            "not a url",
            "",
            "http://127.0.0.1.example.com/",
        ] {
            assert!(matches!(jit_uri(bad), Err(JitFetchError::Config(_))), "{bad}");
        }
    }

    #[test]
    fn answers_are_sorted() {
        let body = format!(
            r#"{{"runner_name":"rle-jit-1-i-0123456789abcdef0-ab12","runner_id":7,"encoded_jit_config":"{CONFIG}"}}"#
        );
        let g = classify(200, None, body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((g.runner_id, g.encoded_jit_config.expose()), (7, CONFIG));
        assert!(!format!("{g:?}").contains(CONFIG) && !format!("{}", g.encoded_jit_config).contains(CONFIG));
        assert!(matches!(
            classify(200, None, b"{}"),
            Err(JitFetchError::Retryable { .. })
        ));
        let bad_name = format!(r#"{{"runner_name":"a\u001b[31m","runner_id":7,"encoded_jit_config":"{CONFIG}"}}"#);
        assert!(matches!(
            classify(200, None, bad_name.as_bytes()),
            Err(JitFetchError::Retryable { .. })
        ));
        assert_eq!(
            classify(409, None, br#"{"error":"instance i-1 is Terminating:Wait"}"#),
            Err(JitFetchError::Refused {
                status: 409,
                message: "instance i-1 is Terminating:Wait".into()
            })
        );
        assert_eq!(
            classify(403, None, br#"{"Message":"Forbidden"}"#),
            Err(JitFetchError::Refused {
                status: 403,
                message: "Forbidden".into()
            })
        );
        assert_eq!(
            classify(429, Some(Duration::from_secs(3)), br#"{"error":"slow down"}"#),
            Err(JitFetchError::Retryable {
                after: Some(Duration::from_secs(3)),
                reason: "HTTP 429: slow down".into()
            })
        );
        assert!(matches!(
            classify(503, None, b"<html>"),
            Err(JitFetchError::Retryable { after: None, .. })
        ));
        // Untrusted text is escaped and clipped.
        let Err(JitFetchError::Refused { message, .. }) =
            classify(400, None, "\u{1b}]0;owned\u{7}x".repeat(200).as_bytes())
        else {
            panic!("not refused")
        };
        assert!(
            !message.chars().any(lifecycle_escape::is_unsafe) && message.chars().count() < 2000,
            "{message}"
        );
    }

    #[test]
    fn release_urls_share_the_rules() {
        assert_eq!(
            release_uri("https://abc.lambda-url.us-east-1.on.aws/")
                .map(|u| u.to_string())
                .ok()
                .as_deref(),
            Some("https://abc.lambda-url.us-east-1.on.aws/jit-config/release")
        );
        assert_eq!(
            endpoint_uri("http://127.0.0.1:8080/", RELEASE_PATH)
                .map(|u| u.to_string())
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:8080/jit-config/release")
        );
        for bad in ["http://example.com/", "https://user@host/", "https://host/?x=1", ""] {
            assert!(matches!(release_uri(bad), Err(JitFetchError::Config(_))), "{bad}");
        }
        assert_eq!(release_body(42), r#"{"runner_id":42}"#);
    }

    #[test]
    fn release_answers_are_sorted() {
        let r = |status: u16, body: &str| classify_release(status, None, body.as_bytes());
        assert_eq!(r(200, r#"{"result":"removed"}"#), Ok(Release::Removed));
        assert_eq!(r(409, r#"{"result":"busy","runner_id":7}"#), Ok(Release::Busy));
        assert_eq!(r(404, r#"{"result":"not-found"}"#), Ok(Release::NotFound));
        for release in Release::ALL.iter().copied() {
            let body = format!(r#"{{"result":"{}"}}"#, release.name());
            assert_eq!(r(release_status(release), &body), Ok(release));
        }
        // A 404 without our result: a controller (or a front) that has no such route.
        assert_eq!(
            r(404, r#"{"error":"no route; POST /jit-config"}"#),
            Err(JitFetchError::Refused {
                status: 404,
                message: "no route; POST /jit-config".into()
            })
        );
        assert!(matches!(r(404, ""), Err(JitFetchError::Refused { status: 404, .. })));
        assert_eq!(
            r(404, r#"{"error":"no route"}"#).map_err(|e| e.to_string()),
            Err("JIT endpoint refused (HTTP 404): no route".to_string())
        );
        // A result that does not go with the status is no answer of ours.
        assert!(matches!(
            r(404, r#"{"result":"removed"}"#),
            Err(JitFetchError::Refused { status: 404, .. })
        ));
        assert!(matches!(
            r(409, r#"{"error":"x"}"#),
            Err(JitFetchError::Refused { status: 409, .. })
        ));
        // A 200 that is not "removed" is never taken for a removal.
        for body in ["{}", r#"{"result":"busy"}"#, "<html>", r#"{"result":"REMOVED"}"#] {
            assert!(matches!(r(200, body), Err(JitFetchError::Retryable { .. })), "{body}");
        }
        // Refusals and outages as for the fetch.
        assert!(matches!(
            r(403, r#"{"Message":"Forbidden"}"#),
            Err(JitFetchError::Refused { status: 403, .. })
        ));
        assert!(matches!(
            r(400, r#"{"error":"bad"}"#),
            Err(JitFetchError::Refused { status: 400, .. })
        ));
        assert_eq!(
            classify_release(429, Some(Duration::from_secs(42)), br#"{"error":"GitHub rate limit"}"#),
            Err(JitFetchError::Retryable {
                after: Some(Duration::from_secs(42)),
                reason: "HTTP 429: GitHub rate limit".into()
            })
        );
        for status in [408, 500, 502, 503] {
            assert!(
                matches!(r(status, "{}"), Err(JitFetchError::Retryable { .. })),
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_is_seconds_clamped() {
        let h = |s: &str| HeaderValue::from_str(s).ok().and_then(|v| parse_retry_after(&v));
        assert_eq!(h("7"), Some(Duration::from_secs(7)));
        assert_eq!(h("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(h("99999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(h("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(h("-1"), None);
        assert_eq!(h(""), None);
    }

    fn identity(token: Option<&str>) -> Identity {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_string),
            None,
            "test",
        )
        .into()
    }

    #[test]
    fn requests_are_signed_for_lambda_in_the_region() {
        let uri = jit_uri("https://abc.lambda-url.eu-west-1.on.aws").unwrap_or_else(|e| panic!("{e}"));
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = signed_request(&uri, BODY, "eu-west-1", &identity(Some("SESSIONTOKEN")), t)
            .unwrap_or_else(|e| panic!("{e}"));
        let h = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let auth = h("authorization");
        assert_signed_for_lambda(&auth);
        assert_eq!(h("x-amz-date"), "20231114T221320Z");
        assert_eq!(h("host"), "abc.lambda-url.eu-west-1.on.aws");
        assert_eq!(h("x-amz-security-token"), "SESSIONTOKEN");
        assert!(
            format!("{:?}", r.headers()).contains("Sensitive"),
            "credentials not marked sensitive"
        );
        // Deterministic: the same inputs sign the same way; another secret signs differently.
        let again = signed_request(&uri, BODY, "eu-west-1", &identity(Some("SESSIONTOKEN")), t)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.headers().get("authorization"), r.headers().get("authorization"));
    }

    /// The Authorization header of a request signed for Lambda in eu-west-1 by the test identity,
    /// with every header that must be signed.
    fn assert_signed_for_lambda(auth: &str) {
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/eu-west-1/lambda/aws4_request, SignedHeaders="
            ),
            "{auth}"
        );
        for signed in ["content-type", "host", "x-amz-date", "x-amz-security-token"] {
            assert!(auth.contains(signed), "{signed} unsigned: {auth}");
        }
    }

    #[test]
    fn release_requests_sign_their_path_and_body() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let id = identity(Some("SESSIONTOKEN"));
        let sign_for = |uri: &Uri, body: &str| {
            let r = signed_request(uri, body.as_bytes(), "eu-west-1", &id, t).unwrap_or_else(|e| panic!("{e}"));
            let auth = r
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (r, auth)
        };
        let release = release_uri("https://abc.lambda-url.eu-west-1.on.aws").unwrap_or_else(|e| panic!("{e}"));
        let (r, auth) = sign_for(&release, &release_body(7));
        assert_signed_for_lambda(&auth);
        assert_eq!(r.uri().path(), "/jit-config/release");
        assert_eq!(r.method(), Method::POST);
        // The body and the path are signed: another runner id, or the mint's path with the same
        // body, signs differently.
        assert_ne!(auth, sign_for(&release, &release_body(8)).1);
        let mint = jit_uri("https://abc.lambda-url.eu-west-1.on.aws").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(auth, sign_for(&mint, &release_body(7)).1);
        assert_eq!(auth, sign_for(&release, &release_body(7)).1);
    }

    /// One HTTP/1.1 exchange on a loopback port: returns the raw request it read.
    async fn serve_once(answer: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let task = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return String::new();
            };
            let mut buf = vec![0u8; 16384];
            let mut got = Vec::new();
            // Read the head and the JSON body (`{}` or `{"runner_id":N}`).
            while !(String::from_utf8_lossy(&got).contains("\r\n\r\n{") && got.ends_with(b"}")) {
                let Ok(n) = s.read(&mut buf).await else { break };
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
            String::from_utf8_lossy(&got).into_owned()
        });
        (url, task)
    }

    fn sdk() -> SdkConfig {
        SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"),
            ))
            .build()
    }

    #[tokio::test]
    async fn a_grant_comes_back_over_loopback() {
        let (url, server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 94\r\nconnection: close\r\n\r\n{\"runner_name\":\"rle-jit-1-i-0123456789abcdef0-ab12\",\"runner_id\":5,\"encoded_jit_config\":\"QUJD\"}",
        )
        .await;
        let got = fetch_jit_config(&url, &sdk(), Duration::from_secs(5)).await;
        let raw = server.await.unwrap_or_default();
        assert!(raw.starts_with("POST /jit-config HTTP/1.1\r\n"), "{raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains("authorization: aws4-hmac-sha256 credential=akidexample/"),
            "{raw}"
        );
        let g = got.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((g.runner_id, g.encoded_jit_config.expose()), (5, "QUJD"));
    }

    /// The agent's one client keeps its connection: two fetches, one TCP connection.
    #[tokio::test]
    async fn one_client_reuses_its_connection() {
        const ANSWER: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 94\r\n\r\n{\"runner_name\":\"rle-jit-1-i-0123456789abcdef0-ab12\",\"runner_id\":5,\"encoded_jit_config\":\"QUJD\"}";
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        let server = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    let mut got = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        // One whole request (head and the `{}` body): answer, keep the connection.
                        if String::from_utf8_lossy(&got).contains("\r\n\r\n{}") {
                            got.clear();
                            if s.write_all(ANSWER.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let client = JitClient::new();
        for _ in 0..3 {
            let g = client
                .fetch_jit_config(&url, &sdk(), Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(g.runner_id, 5);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "one connection");
        server.abort();
    }

    #[tokio::test]
    async fn a_release_goes_over_loopback() {
        let (url, server) = serve_once(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\nconnection: close\r\n\r\n{\"result\":\"removed\"}",
        )
        .await;
        let got = JitClient::new()
            .release_runner(&url, &sdk(), Duration::from_secs(5), 4242)
            .await;
        let raw = server.await.unwrap_or_default();
        assert!(raw.starts_with("POST /jit-config/release HTTP/1.1\r\n"), "{raw}");
        assert!(raw.ends_with("\r\n\r\n{\"runner_id\":4242}"), "{raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains("authorization: aws4-hmac-sha256 credential=akidexample/"),
            "{raw}"
        );
        assert_eq!(got, Ok(Release::Removed));
        // A controller without the route: its 404 has no result, a refusal.
        let (url, _s) = serve_once(
            "HTTP/1.1 404 Not Found\r\ncontent-length: 38\r\nconnection: close\r\n\r\n{\"error\":\"no route; POST /jit-config\"}",
        )
        .await;
        assert!(matches!(
            JitClient::new()
                .release_runner(&url, &sdk(), Duration::from_secs(5), 1)
                .await,
            Err(JitFetchError::Refused { status: 404, .. })
        ));
        let (url, _s) = serve_once(
            "HTTP/1.1 404 Not Found\r\ncontent-length: 22\r\nconnection: close\r\n\r\n{\"result\":\"not-found\"}",
        )
        .await;
        assert_eq!(
            JitClient::new()
                .release_runner(&url, &sdk(), Duration::from_secs(5), 1)
                .await,
            Ok(Release::NotFound)
        );
        // A silent controller: the timeout, retryable.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}", silent.local_addr().unwrap_or_else(|e| panic!("{e}")));
        assert!(matches!(
            JitClient::new()
                .release_runner(&url, &sdk(), Duration::from_millis(300), 1)
                .await,
            Err(JitFetchError::Retryable { .. })
        ));
    }

    #[tokio::test]
    async fn refusals_and_outages_are_told_apart() {
        let (url, _s) = serve_once("HTTP/1.1 409 Conflict\r\ncontent-length: 32\r\nconnection: close\r\n\r\n{\"error\":\"instance is draining\"}").await;
        assert_eq!(
            fetch_jit_config(&url, &sdk(), Duration::from_secs(5)).await,
            Err(JitFetchError::Refused {
                status: 409,
                message: "instance is draining".into()
            })
        );
        let (url, _s) = serve_once(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 4\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        )
        .await;
        assert!(matches!(
            fetch_jit_config(&url, &sdk(), Duration::from_secs(5)).await,
            Err(JitFetchError::Retryable { after: Some(a), .. }) if a == Duration::from_secs(4)
        ));
        // Nobody listening: retryable.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            format!("http://{}", l.local_addr().unwrap_or_else(|e| panic!("{e}")))
        };
        assert!(matches!(
            fetch_jit_config(&dead, &sdk(), Duration::from_secs(5)).await,
            Err(JitFetchError::Retryable { .. })
        ));
        // A server that never answers: the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}", silent.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let r = fetch_jit_config(&url, &sdk(), Duration::from_millis(300)).await;
        assert!(
            matches!(&r, Err(JitFetchError::Retryable { reason, .. }) if reason.contains("no answer")),
            "{r:?}"
        );
        // No credentials provider: configuration.
        let bare = SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
        assert!(matches!(
            fetch_jit_config("https://x.example", &bare, Duration::from_secs(1)).await,
            Err(JitFetchError::Config(_))
        ));
    }
}
