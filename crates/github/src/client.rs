//! The client: one hyper connection pool over rustls, requests with retries, rate-limit waits and
//! App token caching.

use crate::auth::Auth;
use crate::error::GitHubError;
use crate::jit::{self, Sweep, SweepVerdict};
use crate::link;
use crate::ratelimit::{self, RateHeaders, Verdict};
use crate::secret::Secret;
use crate::time;
use crate::types::{
    ErrorBody, InstallationToken, JitConfig, JitRequest, RegistrationToken, Runner, RunnerDetail, RunnerPage,
    WorkflowJob, WorkflowJobPage, WorkflowRun, WorkflowRunPage,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lifecycle_core::{Backoff, Rng};
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tracing::{debug, warn};

/// GitHub's REST API version this client is written against (the `X-GitHub-Api-Version` header).
pub const API_VERSION: &str = "2022-11-28";
/// Installation tokens live one hour; refresh five minutes before they expire.
const TOKEN_REFRESH_MARGIN_S: i64 = 300;
/// The largest answer accepted (a page of 100 runners is about 50 KiB).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Rate-limit waits at most within one request.
const MAX_RATE_LIMIT_WAITS: u32 = 3;
/// Pages followed at most when listing (10,000 runners).
const MAX_PAGES: usize = 100;

/// Whose runners: an organisation's or a repository's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/orgs/{org}/actions/runners...`
    Org(String),
    /// `/repos/{owner}/{repo}/actions/runners...`
    Repo {
        /// The owner.
        owner: String,
        /// The repository.
        repo: String,
    },
}

impl Scope {
    /// The scope and the API base URL of a runner URL as `config.sh --url` takes it:
    /// `https://github.com/ORG` or `https://github.com/OWNER/REPO` (API `https://api.github.com`),
    /// or the same on a GitHub Enterprise Server host (API `https://HOST/api/v3`).
    pub fn from_runner_url(url: &str) -> Result<(Scope, String), GitHubError> {
        let bad = |why: &str| GitHubError::Config(format!("runner URL `{url}`: {why}"));
        let (scheme, rest) = url.trim().split_once("://").ok_or_else(|| bad("not an http(s) URL"))?;
        if scheme != "https" && scheme != "http" {
            return Err(bad("not an http(s) URL"));
        }
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no organisation or repository in the path"))?;
        let parts: Vec<&str> = path
            .trim_end_matches('/')
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let scope = match parts.as_slice() {
            [org] if valid(org) => Scope::Org((*org).to_string()),
            [owner, repo] if valid(owner) && valid(repo) => Scope::Repo {
                owner: (*owner).to_string(),
                repo: (*repo).to_string(),
            },
            _ => return Err(bad("expected https://HOST/ORG or https://HOST/OWNER/REPO")),
        };
        let api = if host.eq_ignore_ascii_case("github.com") {
            "https://api.github.com".to_string()
        } else {
            format!("{scheme}://{host}/api/v3")
        };
        Ok((scope, api))
    }

    fn prefix(&self) -> String {
        match self {
            Scope::Org(org) => format!("/orgs/{org}"),
            Scope::Repo { owner, repo } => format!("/repos/{owner}/{repo}"),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Org(org) => write!(f, "organisation {org}"),
            Scope::Repo { owner, repo } => write!(f, "repository {owner}/{repo}"),
        }
    }
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// API base URL: `https://api.github.com`, `https://HOST/api/v3`, or a loopback emulator.
    pub api_url: String,
    /// The longest one request may take.
    pub request_timeout: Duration,
    /// Attempts per request for 5xx, timeouts and connection failures.
    pub max_attempts: u32,
    /// The longest the client sleeps for rate limits within one request; beyond it the request
    /// fails with [`GitHubError::RateLimited`] so the caller (a Lambda with a deadline) decides.
    pub max_rate_limit_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api_url: "https://api.github.com".into(),
            request_timeout: Duration::from_secs(10),
            max_attempts: 3,
            max_rate_limit_wait: Duration::from_secs(20),
        }
    }
}

/// What deleting a runner did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// 204: deleted now.
    Deleted,
    /// 404: it was already gone (counts as done).
    AlreadyGone,
}

struct CachedToken {
    token: Secret,
    expires_epoch: i64,
}

/// The backoff between attempts of one request (5xx, transport failures): 250 ms doubling to at
/// most 30 s, jittered by the one rule (`lifecycle_core::Backoff`).
pub const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));

/// A GitHub REST client for one organisation or repository.
pub struct GitHubClient {
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    scope: Scope,
    auth: Auth,
    opts: Options,
    installation_token: Mutex<Option<CachedToken>>,
    jitter: Mutex<Rng>,
    requests: AtomicU64,
}

impl std::fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubClient")
            .field("base", &self.base)
            .field("scope", &self.scope)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// One request to send: [`GitHubClient::send`] sends it, retrying, and each attempt is one
/// [`GitHubClient::exchange`].
struct Outgoing<'a> {
    method: Method,
    url: &'a str,
    bearer: &'a Secret,
    /// Shared between attempts (a clone is a reference count, not a copy).
    body: Option<Bytes>,
    if_none_match: Option<&'a str>,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    /// GitHub's error message, clipped and escaped: it ends up in errors and logs.
    fn message(&self) -> String {
        let msg = serde_json::from_slice::<ErrorBody>(&self.body)
            .unwrap_or_default()
            .message;
        lifecycle_escape::clip(&msg, 300)
    }

    fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, GitHubError> {
        serde_json::from_slice(&self.body).map_err(|e| GitHubError::Decode(format!("{what}: {e}")))
    }
}

/// Check an API base URL: `https://` anywhere, `http://` only on loopback (127.0.0.0/8, `::1`,
/// `localhost`), because every request carries the token and plain HTTP hands it to whoever is on
/// the path. Emulators in tests listen on loopback.
pub fn check_api_url(url: &str) -> Result<(), GitHubError> {
    let shown = lifecycle_escape::clip(url, 200);
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(GitHubError::Config(format!("API URL `{shown}` is not http(s)")));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Whatever precedes an `@` is user information, not the host.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    if is_loopback_host(host) && !authority.contains('@') {
        return Ok(());
    }
    Err(GitHubError::Config(format!(
        "API URL `{shown}`: plain http:// would send the token unencrypted; use https://, \
         or http:// only to a loopback host (127.0.0.1, [::1], localhost) such as a local emulator"
    )))
}

fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
        return v4.is_loopback();
    }
    host.parse::<std::net::Ipv6Addr>().is_ok_and(|v6| v6.is_loopback())
}

impl GitHubClient {
    /// A client for `scope` with `auth`. TLS uses the platform's root certificates.
    pub fn new(scope: Scope, auth: Auth, opts: Options) -> Result<GitHubClient, GitHubError> {
        let base = opts.api_url.trim_end_matches('/').to_string();
        check_api_url(&base)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| GitHubError::Config(format!("loading the platform's root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        let seed = time::now_instant().elapsed().as_nanos() as u64 ^ time::now_epoch() as u64;
        Ok(GitHubClient {
            http,
            base,
            scope,
            auth,
            opts,
            installation_token: Mutex::new(None),
            jitter: Mutex::new(Rng::new(seed)),
            requests: AtomicU64::new(0),
        })
    }

    /// The scope this client acts on.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// HTTP requests sent so far (retries and App token requests included).
    pub fn requests_made(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Every runner of the scope (all pages).
    pub async fn list_runners(&self) -> Result<Vec<Runner>, GitHubError> {
        let url = format!("{}{}/actions/runners?per_page=100", self.base, self.scope.prefix());
        let what = format!("the runners of {}", self.scope);
        self.pages(url, &what, |page: RunnerPage| {
            debug!(count = page.runners.len(), total = page.total_count, "runner page");
            page.runners
        })
        .await
    }

    /// Every runner of the scope with the fields few callers need (`version`, `os`, group).
    pub async fn list_runner_details(&self) -> Result<Vec<RunnerDetail>, GitHubError> {
        let url = format!("{}{}/actions/runners?per_page=100", self.base, self.scope.prefix());
        let what = format!("the runners of {}", self.scope);
        self.pages(url, &what, |page: RunnerPage<RunnerDetail>| page.runners)
            .await
    }

    /// The workflow runs of `owner/repo` with `status` (`queued`, `in_progress`), all pages
    /// (`GET /repos/{owner}/{repo}/actions/runs?status=`).
    pub async fn workflow_runs(&self, owner: &str, repo: &str, status: &str) -> Result<Vec<WorkflowRun>, GitHubError> {
        let url = format!(
            "{}/repos/{owner}/{repo}/actions/runs?status={status}&per_page=100",
            self.base
        );
        let what = format!("the {status} workflow runs of {owner}/{repo}");
        self.pages(url, &what, |page: WorkflowRunPage| page.workflow_runs).await
    }

    /// The latest attempt's jobs of one workflow run, all pages
    /// (`GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs?filter=latest`).
    pub async fn run_jobs(&self, owner: &str, repo: &str, run_id: u64) -> Result<Vec<WorkflowJob>, GitHubError> {
        let url = format!(
            "{}/repos/{owner}/{repo}/actions/runs/{run_id}/jobs?filter=latest&per_page=100",
            self.base
        );
        let what = format!("the jobs of run {run_id} of {owner}/{repo}");
        self.pages(url, &what, |page: WorkflowJobPage| page.jobs).await
    }

    /// Follow a list's `Link: rel="next"` pages (never to another host than the API's).
    async fn pages<P: DeserializeOwned, T>(
        &self,
        first: String,
        what: &str,
        items: impl Fn(P) -> Vec<T>,
    ) -> Result<Vec<T>, GitHubError> {
        let mut url = first;
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let answer = self.authed(Method::GET, &url, None).await?;
            let answer = self.expect_ok(answer, what)?;
            let page: P = answer.json(what)?;
            all.extend(items(page));
            let next = answer
                .headers
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(link::next_url);
            match next {
                // Never send the token to another host than the API's.
                Some(n) if n.starts_with(&format!("{}/", self.base)) => url = n,
                Some(n) => {
                    return Err(GitHubError::Decode(format!(
                        "pagination link leaves the API host: {}",
                        n.split('?').next().unwrap_or_default()
                    )))
                }
                None => return Ok(all),
            }
        }
        warn!(pages = MAX_PAGES, what, "list truncated");
        Ok(all)
    }

    /// Every runner of the scope that carries `label`.
    pub async fn runners_with_label(&self, label: &str) -> Result<Vec<Runner>, GitHubError> {
        Ok(self
            .list_runners()
            .await?
            .into_iter()
            .filter(|r| r.has_label(label))
            .collect())
    }

    /// One runner by id (`GET {scope}/actions/runners/{id}`, GitHub REST API "Get a self-hosted
    /// runner for an organization" / "... for a repository"). `None` when GitHub answers 404: no
    /// such registration in the scope (never made, or already removed). Like the list, its `busy`
    /// lags the service's own view by tens of seconds: never the only evidence that it is idle.
    pub async fn get_runner(&self, id: u64) -> Result<Option<Runner>, GitHubError> {
        let url = format!("{}{}/actions/runners/{id}", self.base, self.scope.prefix());
        let answer = self.authed(Method::GET, &url, None).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        let what = format!("runner {id}");
        self.expect_ok(answer, &what)?.json(&what).map(Some)
    }

    /// Delete a runner registration. 404 counts as done; 422 means it runs a job.
    pub async fn delete_runner(&self, id: u64) -> Result<Deleted, GitHubError> {
        let url = format!("{}{}/actions/runners/{id}", self.base, self.scope.prefix());
        let answer = self.authed(Method::DELETE, &url, None).await?;
        match answer.status {
            204 | 200 => Ok(Deleted::Deleted),
            404 => Ok(Deleted::AlreadyGone),
            422 => Err(GitHubError::RunnerBusy {
                id,
                message: answer.message(),
            }),
            _ => self
                .expect_ok(answer, &format!("runner {id}"))
                .map(|_| Deleted::Deleted),
        }
    }

    /// A registration token for `config.sh` (valid one hour).
    pub async fn registration_token(&self) -> Result<RegistrationToken, GitHubError> {
        let url = format!(
            "{}{}/actions/runners/registration-token",
            self.base,
            self.scope.prefix()
        );
        let answer = self.authed(Method::POST, &url, None).await?;
        self.expect_ok(answer, &format!("{}", self.scope))?
            .json("registration token")
    }

    /// A just-in-time configuration for one ephemeral runner (`201`). When the name is taken
    /// (`409`) the client tries once more under [`jit::conflict_retry_name`] and never deletes
    /// the holder (crate::jit explains why); the answer's `runner.name` is the name used. A
    /// second 409 is [`GitHubError::NameConflict`]; a 422 (validation failed, or "the endpoint
    /// has been spammed") is [`GitHubError::Unexpected`].
    pub async fn generate_jit_config(&self, request: &JitRequest) -> Result<JitConfig, GitHubError> {
        request.validate()?;
        match self.post_jit_config(request).await {
            Err(GitHubError::NameConflict { name, message }) => {
                let random = {
                    let mut rng = self.jitter.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    rng.next_u64()
                };
                let retry = JitRequest {
                    name: jit::conflict_retry_name(&name, random),
                    ..request.clone()
                };
                warn!(%name, retry = %retry.name, %message, "runner name taken (HTTP 409); trying once under a fresh name");
                self.post_jit_config(&retry).await
            }
            other => other,
        }
    }

    async fn post_jit_config(&self, request: &JitRequest) -> Result<JitConfig, GitHubError> {
        let url = format!(
            "{}{}/actions/runners/generate-jitconfig",
            self.base,
            self.scope.prefix()
        );
        let body = serde_json::to_vec(request).map_err(|e| GitHubError::Decode(e.to_string()))?;
        let answer = self.authed(Method::POST, &url, Some(body)).await?;
        if answer.status == 409 {
            return Err(GitHubError::NameConflict {
                name: request.name.clone(),
                message: answer.message(),
            });
        }
        let config: JitConfig = self
            .expect_ok(answer, &format!("{}", self.scope))?
            .json("JIT configuration")?;
        if config.encoded_jit_config.is_empty() {
            return Err(GitHubError::Decode(
                "JIT configuration: empty encoded_jit_config".into(),
            ));
        }
        debug!(id = config.runner.id, name = %config.runner.name, "JIT runner registered");
        Ok(config)
    }

    /// Delete the JIT registrations of this group that no listener ever connected to: name
    /// starting with `prefix` and carrying a creation time at least `older_than` ago
    /// ([`jit::jit_runner_name`]), `status: offline`, `busy: false`, `version` unset. Online or
    /// busy runners, and runners that ever connected, are never deleted ([`jit::sweep_verdict`]);
    /// a 422 (GitHub says it runs a job) keeps the runner and is reported, a 404 counts as done.
    /// An empty prefix is refused.
    pub async fn delete_runners_never_online(&self, prefix: &str, older_than: Duration) -> Result<Sweep, GitHubError> {
        if prefix.is_empty() {
            return Err(GitHubError::Config(
                "the never-online sweep needs a runner name prefix (an empty one matches every runner)".into(),
            ));
        }
        let runners = self.list_runner_details().await?;
        let now = time::now_epoch();
        let mut sweep = Sweep::default();
        for r in runners {
            match jit::sweep_verdict(&r, prefix, older_than, now) {
                SweepVerdict::Keep(jit::KeepReason::OtherPrefix) => {}
                SweepVerdict::Keep(why) => {
                    debug!(id = r.runner.id, name = %r.runner.name, ?why, "sweep keeps runner");
                    sweep.kept += 1;
                }
                SweepVerdict::Delete => {
                    let entry = (r.runner.id, r.runner.name.clone());
                    match self.delete_runner(r.runner.id).await {
                        Ok(Deleted::Deleted) => {
                            debug!(id = entry.0, name = %entry.1, "deleted a never-online JIT registration");
                            sweep.deleted.push(entry);
                        }
                        Ok(Deleted::AlreadyGone) => sweep.already_gone.push(entry),
                        Err(GitHubError::RunnerBusy { .. }) => sweep.refused_busy.push(entry),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(sweep)
    }

    fn expect_ok(&self, answer: Answer, what: &str) -> Result<Answer, GitHubError> {
        match answer.status {
            200..=299 => Ok(answer),
            401 => Err(GitHubError::Unauthorized(answer.message())),
            403 => Err(GitHubError::Forbidden(answer.message())),
            404 => Err(GitHubError::NotFound {
                what: what.to_string(),
                message: answer.message(),
            }),
            status => Err(GitHubError::Unexpected {
                status,
                message: answer.message(),
            }),
        }
    }

    /// A conditional `GET` (`If-None-Match: etag` when given) for the loss audit
    /// ([`crate::audit`]): the status (`304` when the cached page still holds), the `ETag` and the
    /// `Link: rel="next"` URL of the answer, and its body. A next link to another host than the
    /// API's is refused (the token must not follow it). Statuses other than 2xx and 304 are errors.
    pub(crate) async fn get_conditional(
        &self,
        url: &str,
        etag: Option<&str>,
        what: &str,
    ) -> Result<(u16, Option<String>, Option<String>, Bytes), GitHubError> {
        let mut answer = None;
        for attempt in 0..2 {
            let bearer = self.bearer().await?;
            let a = self
                .send(&Outgoing {
                    method: Method::GET,
                    url,
                    bearer: &bearer,
                    body: None,
                    if_none_match: etag,
                })
                .await?;
            if a.status == 401 && attempt == 0 && matches!(self.auth, Auth::App { .. }) {
                self.lock_cache().take();
                continue;
            }
            answer = Some(a);
            break;
        }
        let answer = answer.ok_or_else(|| GitHubError::Unauthorized("installation token rejected twice".into()))?;
        let tag = answer
            .headers
            .get(hyper::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let next = answer
            .headers
            .get("link")
            .and_then(|v| v.to_str().ok())
            .and_then(link::next_url);
        if let Some(n) = &next {
            if !n.starts_with(&format!("{}/", self.base)) {
                return Err(GitHubError::Decode(format!(
                    "pagination link leaves the API host: {}",
                    n.split('?').next().unwrap_or_default()
                )));
            }
        }
        if answer.status == 304 {
            return Ok((304, tag, next, answer.body));
        }
        let answer = self.expect_ok(answer, what)?;
        Ok((answer.status, tag, next, answer.body))
    }

    /// The API base URL (no trailing slash).
    pub fn api_base(&self) -> &str {
        &self.base
    }

    /// Re-run one job of a workflow run (`POST /repos/{owner}/{repo}/actions/jobs/{job_id}/rerun`,
    /// GitHub REST API "Re-run a job from a workflow run": 201; 403 when GitHub refuses, for
    /// example a run too old to re-run). Any other status than 2xx is an error.
    pub async fn rerun_job(&self, owner: &str, repo: &str, job_id: u64) -> Result<(), GitHubError> {
        let url = format!("{}/repos/{owner}/{repo}/actions/jobs/{job_id}/rerun", self.base);
        let answer = self.authed(Method::POST, &url, None).await?;
        self.expect_ok(answer, &format!("job {job_id} of {owner}/{repo}"))
            .map(|_| ())
    }

    /// A request with the configured credentials. With an App, a 401 drops the cached
    /// installation token and tries once more with a fresh one.
    async fn authed(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Result<Answer, GitHubError> {
        let body = body.map(Bytes::from);
        for attempt in 0..2 {
            let bearer = self.bearer().await?;
            let answer = self
                .send(&Outgoing {
                    method: method.clone(),
                    url,
                    bearer: &bearer,
                    body: body.clone(),
                    if_none_match: None,
                })
                .await?;
            if answer.status == 401 && attempt == 0 && matches!(self.auth, Auth::App { .. }) {
                self.lock_cache().take();
                continue;
            }
            return Ok(answer);
        }
        Err(GitHubError::Unauthorized("installation token rejected twice".into()))
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<CachedToken>> {
        self.installation_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn bearer(&self) -> Result<Secret, GitHubError> {
        let (app_id, installation_id, key) = match &self.auth {
            Auth::Token(t) => return Ok(t.clone()),
            Auth::App {
                app_id,
                installation_id,
                key,
            } => (app_id, *installation_id, key),
        };
        let now = time::now_epoch();
        if let Some(cached) = self.lock_cache().as_ref() {
            if now < cached.expires_epoch - TOKEN_REFRESH_MARGIN_S {
                return Ok(cached.token.clone());
            }
        }
        let jwt = key.jwt(app_id, now)?;
        let url = format!("{}/app/installations/{installation_id}/access_tokens", self.base);
        let answer = self
            .send(&Outgoing {
                method: Method::POST,
                url: &url,
                bearer: &jwt,
                body: None,
                if_none_match: None,
            })
            .await?;
        let answer = self.expect_ok(answer, &format!("App installation {installation_id}"))?;
        let minted: InstallationToken = answer.json("installation token")?;
        // An unparsable expiry is treated as GitHub's documented one hour.
        let expires_epoch = time::parse_rfc3339(&minted.expires_at).unwrap_or(now + 3600);
        debug!(installation_id, expires_at = %minted.expires_at, "installation token minted");
        let token = minted.token.clone();
        *self.lock_cache() = Some(CachedToken {
            token: minted.token,
            expires_epoch,
        });
        Ok(token)
    }

    /// One logical request: retries 5xx and transport failures with jittered backoff, sleeps
    /// through rate limits within `max_rate_limit_wait`.
    async fn send(&self, req: &Outgoing<'_>) -> Result<Answer, GitHubError> {
        let Outgoing { method, url, .. } = req;
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        let mut rate_waits = 0u32;
        let path = url.split('?').next().unwrap_or(url).to_string();
        loop {
            attempt += 1;
            let started = time::now_instant();
            let result = self.exchange(req).await;
            let failure = match result {
                Ok(answer) => {
                    let h = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok());
                    let headers = RateHeaders {
                        retry_after: h("retry-after"),
                        remaining: h("x-ratelimit-remaining"),
                        reset: h("x-ratelimit-reset"),
                    };
                    let message = answer.message();
                    debug!(%method, path = %path, status = answer.status, ms = started.elapsed().as_millis() as u64, "github");
                    match ratelimit::verdict(answer.status, headers, time::now_epoch(), &message) {
                        Verdict::Accept => return Ok(answer),
                        Verdict::RateLimited(wait) => {
                            // The budget bounds the time; the count bounds a server that keeps
                            // answering `Retry-After: 0`.
                            rate_waits += 1;
                            if waited.saturating_add(wait) > self.opts.max_rate_limit_wait
                                || rate_waits > MAX_RATE_LIMIT_WAITS
                            {
                                return Err(GitHubError::RateLimited { retry_after: wait });
                            }
                            warn!(path = %path, wait_s = wait.as_secs(), "GitHub rate limit; waiting");
                            waited = waited.saturating_add(wait);
                            time::sleep(wait).await;
                            attempt -= 1;
                            continue;
                        }
                        Verdict::Transient => format!("HTTP {}: {message}", answer.status),
                    }
                }
                Err(ExchangeError::Transport(e)) => e,
                Err(ExchangeError::Request(e)) => return Err(GitHubError::Config(format!("{method} {path}: {e}"))),
            };
            if attempt >= self.opts.max_attempts {
                return Err(GitHubError::Transient(format!("{method} {path}: {failure}")));
            }
            // Saturating: `max_attempts` is configurable, and 2^32 must not panic.
            let delay = {
                let mut rng = self.jitter.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                RETRY_BACKOFF.delay(attempt, &mut rng)
            };
            warn!(path = %path, attempt, error = %failure, "GitHub request failed; retrying");
            time::sleep(delay).await;
        }
    }

    async fn exchange(&self, req: &Outgoing<'_>) -> Result<Answer, ExchangeError> {
        let Outgoing {
            method,
            url,
            bearer,
            body,
            if_none_match,
        } = req;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", bearer.expose()))
            .map_err(|_| ExchangeError::Request("the token has characters a header cannot carry".into()))?;
        auth.set_sensitive(true);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(*url)
            // GitHub recommends its own media type; `application/json` is what its OpenAPI
            // description declares (and what a validating emulator negotiates).
            .header(ACCEPT, "application/vnd.github+json, application/json")
            .header("x-github-api-version", API_VERSION)
            .header(USER_AGENT, concat!("runner-lifecycle/", env!("CARGO_PKG_VERSION")))
            .header(AUTHORIZATION, auth);
        if let Some(tag) = if_none_match {
            builder = builder.header(hyper::header::IF_NONE_MATCH, *tag);
        }
        let body = match body {
            Some(b) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(b.clone())
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder
            .body(body)
            .map_err(|e| ExchangeError::Request(format!("bad request: {e}")))?;
        let exchange = async {
            let resp = self
                .http
                .request(request)
                .await
                .map_err(|e| format!("connection: {e}"))?;
            let status = resp.status().as_u16();
            let (parts, body) = resp.into_parts();
            let limited = http_body_util::Limited::new(body, MAX_BODY);
            let bytes = limited
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok::<Answer, String>(Answer {
                status,
                headers: parts.headers,
                body: bytes,
            })
        };
        match tokio::time::timeout(self.opts.request_timeout, exchange).await {
            Ok(answer) => answer.map_err(ExchangeError::Transport),
            Err(_) => Err(ExchangeError::Transport(format!(
                "no answer within {} s",
                self.opts.request_timeout.as_secs()
            ))),
        }
    }
}

/// Why one exchange with GitHub failed: the request itself (retrying repeats it), or the way to
/// GitHub and back (connection, timeout, a cut answer: retried).
#[derive(Debug)]
enum ExchangeError {
    /// The request cannot be sent (a token a header cannot carry, a URL that is not one).
    Request(String),
    /// The connection, the answer or its time failed.
    Transport(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_250_ms_to_30_s() {
        let ms = |n| RETRY_BACKOFF.nominal(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(8), ms(u32::MAX)],
            [250, 500, 1000, 30_000, 30_000]
        );
        let mut rng = Rng::new(42);
        let d = RETRY_BACKOFF.delay(2, &mut rng);
        assert!(
            d >= Duration::from_millis(250) && d < Duration::from_millis(500),
            "{d:?}"
        );
    }

    #[test]
    fn scopes_from_runner_urls() -> Result<(), GitHubError> {
        assert_eq!(
            Scope::from_runner_url("https://github.com/acme")?,
            (Scope::Org("acme".into()), "https://api.github.com".into())
        );
        assert_eq!(
            Scope::from_runner_url("https://github.com/acme/infra/")?,
            (
                Scope::Repo {
                    owner: "acme".into(),
                    repo: "infra".into()
                },
                "https://api.github.com".into()
            )
        );
        assert_eq!(
            Scope::from_runner_url("https://ghe.example.com/acme")?.1,
            "https://ghe.example.com/api/v3"
        );
        for bad in [
            "github.com/acme",
            "https://github.com/",
            "https://github.com/a/b/c",
            "ftp://github.com/a",
            "https://github.com/a b",
        ] {
            assert!(Scope::from_runner_url(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn plain_http_is_refused_unless_loopback() {
        for good in [
            "https://api.github.com",
            "https://ghe.example.com/api/v3",
            "http://127.0.0.1:8080",
            "http://127.1.2.3/api/v3",
            "http://[::1]:9000",
            "http://localhost:3000/",
            "http://LOCALHOST",
        ] {
            assert!(check_api_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://api.github.com",
            "http://ghe.example.com/api/v3",
            "http://10.0.0.1:8080",
            "http://127.0.0.1.evil.example",
            "http://127.0.0.1@evil.example/",
            "http://evil.example@127.0.0.1/",
            "http://[::2]/",
            "http://localhost.evil.example",
            "ftp://127.0.0.1",
            "api.github.com",
        ] {
            let e = check_api_url(bad).expect_err(bad);
            assert!(matches!(e, GitHubError::Config(_)), "{bad}: {e}");
        }
        let e = check_api_url("http://ghe.example.com/api/v3").expect_err("plain");
        assert!(
            e.to_string().contains("unencrypted") && e.to_string().contains("loopback"),
            "{e}"
        );
        // The client refuses it at construction, before any request.
        let opts = Options {
            api_url: "http://ghe.example.com/api/v3".into(),
            ..Options::default()
        };
        let made = GitHubClient::new(Scope::Org("o".into()), Auth::Token(Secret::new("t")), opts);
        assert!(matches!(made, Err(GitHubError::Config(_))));
    }

    #[test]
    fn error_messages_are_clipped_and_escaped() {
        let answer = Answer {
            status: 403,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"{\"message\": \"no\\u001b[2J\\r\\nforged line\"}"),
        };
        assert_eq!(answer.message(), "no\\u{1b}[2J\\r\\nforged line");
    }

    #[test]
    fn builds_scope_paths() {
        assert_eq!(Scope::Org("o".into()).prefix(), "/orgs/o");
        assert_eq!(
            Scope::Repo {
                owner: "o".into(),
                repo: "r".into()
            }
            .prefix(),
            "/repos/o/r"
        );
    }

    /// A loopback server that answers each connection with the next of `answers` (status line
    /// and JSON body); returns the request lines it read.
    async fn serve(answers: Vec<(&'static str, String)>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (status, body) in answers {
                let Ok((mut s, _)) = listener.accept().await else { break };
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else { break };
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&got).into_owned();
                seen.push(text.lines().next().unwrap_or_default().to_string());
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            }
            seen
        });
        (url, task)
    }

    #[tokio::test]
    async fn one_runner_by_id_and_404_as_none() {
        let runner = r#"{"id":7,"name":"rle-jit-1-i-0123456789abcdef0-ab12","os":"Linux","status":"online","busy":true,"labels":[{"id":1,"name":"self-hosted","type":"read-only"}]}"#;
        let (url, server) = serve(vec![
            ("200 OK", runner.to_string()),
            ("404 Not Found", r#"{"message":"Not Found"}"#.to_string()),
            (
                "403 Forbidden",
                r#"{"message":"Resource not accessible by integration"}"#.to_string(),
            ),
        ])
        .await;
        let opts = Options {
            api_url: url,
            max_attempts: 1,
            ..Options::default()
        };
        let c = GitHubClient::new(Scope::Org("acme".into()), Auth::Token(Secret::new("t")), opts)
            .unwrap_or_else(|e| panic!("{e}"));
        let got = c.get_runner(7).await.unwrap_or_else(|e| panic!("{e}"));
        let got = got.unwrap_or_else(|| panic!("no runner"));
        assert_eq!(
            (got.id, got.busy, got.name.as_str()),
            (7, true, "rle-jit-1-i-0123456789abcdef0-ab12")
        );
        assert_eq!(c.get_runner(8).await.ok(), Some(None));
        assert!(matches!(c.get_runner(9).await, Err(GitHubError::Forbidden(_))));
        let seen = server.await.unwrap_or_default();
        assert_eq!(
            seen,
            [
                "GET /orgs/acme/actions/runners/7 HTTP/1.1",
                "GET /orgs/acme/actions/runners/8 HTTP/1.1",
                "GET /orgs/acme/actions/runners/9 HTTP/1.1"
            ]
        );
    }

    /// A token no header can carry is the configuration's fault: refused at once, never retried as
    /// if GitHub were down (which would also make the controller's caller retry it).
    #[tokio::test]
    async fn a_token_a_header_cannot_carry_is_a_configuration_error_and_not_retried() {
        let opts = Options {
            api_url: "http://127.0.0.1:9".into(),
            max_attempts: 5,
            ..Options::default()
        };
        let c = GitHubClient::new(
            Scope::Org("acme".into()),
            Auth::Token(Secret::new("t\nX-Evil: 1")),
            opts,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let got = c.get_runner(7).await;
        assert!(
            matches!(&got, Err(GitHubError::Config(m)) if m.contains("header")),
            "{got:?}"
        );
        assert!(!got.as_ref().is_err_and(GitHubError::is_retryable));
        assert_eq!(c.requests_made(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        #[test]
        fn any_url_is_checked_without_panicking(u in proptest::prelude::any::<String>()) {
            let _ = Scope::from_runner_url(&u);
            if check_api_url(&u).is_ok() {
                proptest::prop_assert!(u.starts_with("https://") || u.starts_with("http://"));
            }
            let _ = check_api_url(&format!("http://{u}"));
        }

        /// A stored credential of any shape: credentials or a configuration error.
        #[test]
        fn any_stored_credentials_parse_or_fail(raw in proptest::prelude::any::<String>()) {
            let _ = Auth::from_stored(&Secret::new(raw.as_str()));
            let _ = Auth::from_stored(&Secret::new(format!("{{\"app_id\": 1, \"installation_id\": 2, \"private_key\": {:?}}}", raw)));
        }
    }
}
