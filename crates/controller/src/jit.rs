//! `POST /jit-config`: a just-in-time runner configuration for the runner host that asks, and for
//! no one else. docs/controller.md ("The JIT endpoint") and docs/security.md ("JIT configs:
//! delivery and threat analysis") have the design and the AWS facts behind it.
//!
//! The request arrives through a Lambda function URL whose `AuthType` is `AWS_IAM`: AWS has
//! checked the SigV4 signature and puts the signer into the event's
//! `requestContext.authorizer.iam` (`accessKey`, `accountId`, `callerId`, `userArn`, `userId`;
//! Lambda Developer Guide, "Invoking Lambda function URLs", request payload). The webhook's
//! function URL is `AuthType NONE`: its events carry no `authorizer.iam`, so nothing arriving
//! there can mint (403), whatever its path says.
//!
//! Who may mint: a session of the configured agent role in the function owner's account whose
//! session name is an instance id. For an instance profile EC2 names the role session after the
//! instance (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/i-...`), so the signer can only ever mint
//! for the instance whose credentials signed. The instance must be a member of one of the
//! controller's groups in `InService` or `Pending*`: a host that is draining (`Terminating*`),
//! in `Standby`, `Detaching`/`Detached` or the warm pool (`Warmed:*`) gets 409.
//!
//! One outstanding config per instance ([`outstanding`]): while the instance holds a config that
//! no listener has connected with (GitHub's runner list: a JIT name of the instance, `version`
//! unset, offline, idle), minted less than `--jit-outstanding-for` ago and after the instance's
//! newest used registration, a second mint gets 409. With the state table configured, a
//! per-instance lease (`jit#INSTANCE`) serializes concurrent mints. docs/controller.md, "One
//! outstanding config per instance".
//!
//! `POST /jit-config/release` with `{"runner_id": N}`, on the same URL and with the same
//! identity checks: the host asks the controller to delete one of its own JIT registrations
//! before it stops the listener, so that GitHub, not the host's view of `/proc`, decides whether
//! a job got there first (docs/controller.md, "Releasing a registration before a stop"). The
//! registration must carry the caller's instance id where the mint puts it; a busy runner is
//! left alone. No lifecycle-state check: a draining host (`Terminating:Wait`) is the one that
//! asks.

use crate::function_url::Request;
use crate::handler::Controller;
use crate::ports::{Aws, GitHub};
use crate::settings::JitSettings;
use aws_lambda_events::http::HeaderValue;
use lifecycle_core::{ApiError, ApiErrorKind};
use lifecycle_github::{Deleted, GitHubError, JitRequest, Secret};
use serde_json::{json, Value};
use tracing::{info, warn};

/// The answers of the release route, and its path: the client's (`lifecycle_aws::function_url`),
/// so the wire words and statuses have one definition.
pub use lifecycle_aws::function_url::{release_status, Release, RELEASE_PATH};

/// The path of the route.
pub const JIT_PATH: &str = "/jit-config";
/// The largest request body accepted: the agent sends `{}` or `{"runner_id": N}`.
pub const MAX_BODY: usize = 4096;

/// The routes on the `AWS_IAM` function URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /jit-config`: mint a registration.
    Mint,
    /// `POST /jit-config/release`: remove one.
    Release,
}

impl Route {
    /// The route of a request path (a trailing `/` is ignored).
    pub fn of(path: &str) -> Option<Route> {
        match path.trim_end_matches('/') {
            JIT_PATH => Some(Route::Mint),
            RELEASE_PATH => Some(Route::Release),
            _ => None,
        }
    }

    /// Its path.
    pub fn path(self) -> &'static str {
        match self {
            Route::Mint => JIT_PATH,
            Route::Release => RELEASE_PATH,
        }
    }
}

/// What an admitted request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Mint,
    Release { runner_id: u64 },
}

/// The IAM principal AWS verified, from `requestContext.authorizer.iam`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamCaller {
    /// The access key id that signed.
    pub access_key: String,
    /// The signer's account.
    pub account_id: String,
    /// The signer's ARN (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` for a role session).
    pub user_arn: String,
}

/// The instance a verified caller speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceIdentity {
    /// The account.
    pub account_id: String,
    /// The role name.
    pub role: String,
    /// The role session name: the instance id.
    pub instance_id: String,
}

/// What the route answers. `Debug` never shows the configuration (a [`Secret`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JitOutcome {
    /// 200: a fresh registration for the caller's instance.
    Minted {
        /// The runner's name (`{prefix}{epoch}-{instance id}-{4 hex}`).
        runner_name: String,
        /// GitHub's runner id.
        runner_id: u64,
        /// `encoded_jit_config`, for the listener only.
        config: Secret,
    },
    /// 200, 409 or 404 with `{"result": ...}`: what became of the registration the caller asked
    /// to release.
    Released {
        /// The caller's instance.
        instance_id: String,
        /// The registration.
        runner_id: u64,
        /// Its name, when GitHub still knew it.
        runner_name: Option<String>,
        /// What happened.
        result: Release,
    },
    /// 409: the instance already holds an unused config (one outstanding config per instance).
    /// The answer names that registration (`outstanding_runner_id`), so an agent that lost it (a
    /// restart, an answer lost in transit) can release it and ask again at once instead of waiting
    /// for it to expire.
    Outstanding {
        /// The unused registration.
        runner_id: u64,
        /// Why.
        message: String,
        /// `Retry-After`, seconds: when it stops counting.
        retry_after: u64,
    },
    /// Anything else: the status, a message (no credential in it), and for retryable answers
    /// the seconds to wait (`Retry-After`).
    Refused {
        /// The HTTP status.
        status: u16,
        /// Why.
        message: String,
        /// `Retry-After`, seconds.
        retry_after: Option<u64>,
    },
}

impl JitOutcome {
    fn refuse(status: u16, message: impl Into<String>) -> JitOutcome {
        JitOutcome::Refused {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn retry(status: u16, message: impl Into<String>, after_s: u64) -> JitOutcome {
        JitOutcome::Refused {
            status,
            message: message.into(),
            retry_after: Some(after_s.max(1)),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            JitOutcome::Minted { .. } => 200,
            JitOutcome::Released { result, .. } => release_status(*result),
            JitOutcome::Outstanding { .. } => 409,
            JitOutcome::Refused { status, .. } => *status,
        }
    }

    /// The function-URL answer (`statusCode`, `headers`, `body`). The one place the configuration
    /// is exposed. `cache-control: no-store`: a credential must not sit in any cache.
    pub fn response(&self) -> Value {
        let mut headers = crate::function_url::json_headers();
        crate::function_url::header(&mut headers, "cache-control", HeaderValue::from_static("no-store"));
        let body = match self {
            JitOutcome::Minted {
                runner_name,
                runner_id,
                config,
            } => serde_json::to_value(lifecycle_aws::function_url::JitGrantBody {
                runner_name: runner_name.clone(),
                runner_id: *runner_id,
                encoded_jit_config: config.expose().to_string(),
            })
            .unwrap_or_else(|e| json!({ "error": format!("the grant did not serialize: {e}") })),
            JitOutcome::Released { runner_id, result, .. } => json!({
                "result": result.name(),
                "runner_id": runner_id,
            }),
            JitOutcome::Outstanding {
                runner_id,
                message,
                retry_after,
            } => {
                crate::function_url::header(&mut headers, "retry-after", HeaderValue::from(*retry_after));
                json!({ "error": message, "outstanding_runner_id": runner_id })
            }
            JitOutcome::Refused {
                message, retry_after, ..
            } => {
                if let Some(s) = retry_after {
                    crate::function_url::header(&mut headers, "retry-after", HeaderValue::from(*s));
                }
                json!({ "error": message })
            }
        };
        crate::function_url::answer(self.status(), headers, body.to_string())
    }
}

/// Whether a function-URL event belongs to these routes rather than to the webhook: its path is
/// [`JIT_PATH`] or [`RELEASE_PATH`], or it carries an IAM authorizer context at all (only an
/// `AWS_IAM` URL produces one, and it serves nothing else).
pub fn is_jit_event(event: &Request) -> bool {
    Route::of(crate::function_url::path(event)).is_some() || crate::function_url::iam(event).is_some()
}

/// The verified caller; `None`: no IAM authorizer context; `Err`: one that lacks a field (the
/// typed context leaves every field optional; each one is required here, and must not be empty).
pub fn iam_caller(event: &Request) -> Option<Result<IamCaller, String>> {
    let iam = crate::function_url::iam(event)?;
    let field = |value: &Option<String>, name: &str| {
        value
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("the IAM authorizer context has no {name}"))
    };
    Some((|| {
        Ok(IamCaller {
            access_key: field(&iam.access_key, "accessKey")?,
            account_id: field(&iam.account_id, "accountId")?,
            user_arn: field(&iam.user_arn, "userArn")?,
        })
    })())
}

/// `(partition, account, role, session)` of an STS assumed-role ARN
/// (`arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`; IAM User Guide, "IAM identifiers"),
/// or `None` for any other ARN (an IAM user, a federated user, the root user).
pub fn parse_assumed_role_arn(arn: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("sts"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let mut r = resource.split('/');
    let (Some("assumed-role"), Some(role), Some(session), None) = (r.next(), r.next(), r.next(), r.next()) else {
        return None;
    };
    let partition_ok = !partition.is_empty() && partition.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    // Role names are 1 to 64, session names 2 to 64 of IAM's name alphabet (IAM API Reference,
    // CreateRole `RoleName`; STS API Reference, AssumeRole `RoleSessionName`).
    let names_ok = crate::settings::is_iam_name(role, 1, 64) && crate::settings::is_iam_name(session, 2, 64);
    (partition_ok && account_ok && names_ok).then_some((partition, account, role, session))
}

/// Check that `caller` is a session of `agent_role` in `owner_account` (the function's own
/// account, `requestContext.accountId`) whose session name is an instance id.
pub fn instance_identity(
    caller: &IamCaller,
    owner_account: Option<&str>,
    agent_role: &str,
) -> Result<InstanceIdentity, String> {
    let shown = lifecycle_escape::clip(&caller.user_arn, 160);
    let (_partition, account, role, session) = parse_assumed_role_arn(&caller.user_arn)
        .ok_or_else(|| format!("caller {shown} is not an assumed-role session"))?;
    if account != caller.account_id {
        return Err(format!("caller {shown}: ARN account and authorizer account differ"));
    }
    match owner_account {
        Some(owner) if owner == account => {}
        Some(_) => return Err(format!("caller {shown} is in another account")),
        // Fail closed: without the function owner's account the account cannot be checked.
        None => return Err("the event has no requestContext.accountId".into()),
    }
    if role != agent_role {
        return Err(format!("caller {shown} is not a session of the agent role"));
    }
    let instance_id = lifecycle_github::labels::as_instance_id(session)
        .ok_or_else(|| format!("caller {shown}: the session name is not an instance id"))?;
    Ok(InstanceIdentity {
        account_id: account.to_string(),
        role: role.to_string(),
        instance_id: instance_id.to_string(),
    })
}

/// The answer for a failed AWS call: throttling and 5xx are retryable (503 with `Retry-After`),
/// anything else is the controller's problem (500).
pub fn aws_failure(e: &ApiError) -> JitOutcome {
    aws_failure_of(e, "DescribeAutoScalingInstances")
}

/// [`aws_failure`] for the AWS call `call`.
pub fn aws_failure_of(e: &ApiError, call: &str) -> JitOutcome {
    match e.kind {
        ApiErrorKind::Throttled => JitOutcome::retry(503, "AWS is throttling the controller; retry later", 2),
        ApiErrorKind::Transient => JitOutcome::retry(503, "AWS is unavailable; retry later", 2),
        _ => JitOutcome::retry(500, format!("{call} failed: {}", e.kind), 60),
    }
}

/// How long the per-instance mint lease (`jit#INSTANCE` in the state table) is held while a mint
/// runs: longer than one mint can take (the GitHub client's retries of one request, about 30 s).
/// A crashed invocation's lease lapses by itself after this.
pub const MINT_LEASE_S: i64 = 60;
/// How long the lease stays after a successful mint, so that a mint arriving right behind it is
/// refused even if GitHub's runner list does not show the new registration yet.
pub const MINT_SETTLE_S: i64 = 10;

/// One registration of the caller's instance that counts as its outstanding config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// GitHub's runner id.
    pub runner_id: u64,
    /// When it was minted (epoch s, from its name).
    pub minted_at: i64,
}

/// The instance's outstanding JIT configs among `runners` at `now`: registrations whose name is
/// a JIT name of `instance` (the mint's, [`jit_name_instance`]) that no listener has ever
/// connected to (`version` unset, `offline`, not `busy`), minted less than `bound` ago, and
/// minted after the newest of the instance's registrations that did connect (the agent uses its
/// configs in the order it got them, so an unused one minted no later than a used one is one
/// the agent never held: an answer lost in transit, the client's retry after a lost answer).
/// Sorted oldest first.
pub fn outstanding(
    runners: &[lifecycle_github::RunnerDetail],
    prefix: &str,
    instance: &str,
    now: i64,
    bound: std::time::Duration,
) -> Vec<Outstanding> {
    let mine = runners.iter().filter_map(|r| {
        (jit_name_instance(&r.runner.name, prefix) == Some(instance))
            .then(|| Some((r, lifecycle_github::jit::name_created_epoch(&r.runner.name, prefix)?)))
            .flatten()
    });
    let used = |r: &lifecycle_github::RunnerDetail| r.has_connected() || r.runner.is_online() || r.runner.busy;
    // Names carry whole seconds: a config prefetched in the second its predecessor was minted ties
    // on the time, so the runner id (GitHub's, increasing with creation) breaks the tie.
    let newest_used = mine
        .clone()
        .filter(|(r, _)| used(r))
        .map(|(r, t)| (t, r.runner.id))
        .max();
    let bound = i64::try_from(bound.as_secs()).unwrap_or(i64::MAX);
    let mut out: Vec<Outstanding> = mine
        .filter(|(r, t)| {
            !used(r) && now.saturating_sub(*t) < bound && newest_used.is_none_or(|u| (*t, r.runner.id) > u)
        })
        .map(|(r, t)| Outstanding {
            runner_id: r.runner.id,
            minted_at: t,
        })
        .collect();
    out.sort_by_key(|o| (o.minted_at, o.runner_id));
    out
}

/// The answer for a failed GitHub call of either route (`action`: `mint`, `release`): a rate
/// limit is 429 with GitHub's wait, GitHub trouble 503; a configuration or permission problem on
/// the controller's side is 500 (retried by the agent, slowly: it needs an operator).
pub fn github_failure(e: &GitHubError, action: &str) -> JitOutcome {
    match e {
        GitHubError::RateLimited { retry_after } => {
            JitOutcome::retry(429, "GitHub rate limit; retry later", retry_after.as_secs())
        }
        GitHubError::Transient(_) => JitOutcome::retry(503, "GitHub is unavailable; retry later", 5),
        // Two names taken in a row: a fresh name on the next attempt will do.
        GitHubError::NameConflict { .. } => JitOutcome::retry(503, "runner name taken; retry", 1),
        GitHubError::RunnerBusy { .. } | GitHubError::Unexpected { .. } | GitHubError::Decode(_) => {
            JitOutcome::retry(502, "GitHub answered unexpectedly", 30)
        }
        GitHubError::Config(_)
        | GitHubError::Unauthorized(_)
        | GitHubError::Forbidden(_)
        | GitHubError::NotFound { .. } => JitOutcome::retry(
            500,
            format!("the controller cannot {action} (GitHub configuration)"),
            60,
        ),
    }
}

/// Four random hex digits: two mints for one instance in the same second get different names.
fn nonce() -> String {
    let mut b = [0u8; 2];
    // aws-lc-rs's system RNG; should it ever fail, a fixed suffix only costs a 409 retry.
    let _ = aws_lc_rs::rand::fill(&mut b);
    format!("{:02x}{:02x}", b[0], b[1])
}

impl<A: Aws, G: GitHub> Controller<A, G> {
    /// Answer one function-URL event routed here ([`is_jit_event`]) at `now` (epoch seconds).
    pub async fn jit(&self, event: &Request, now: i64) -> JitOutcome {
        let started = tokio::time::Instant::now();
        let outcome = self.jit_inner(event, now).await;
        match &outcome {
            JitOutcome::Minted {
                runner_name, runner_id, ..
            } => {
                // Settled on the one log line per mint the docs promise; the config never.
                let prefix = self.settings().jit.as_ref().map_or("", |j| j.prefix.as_str());
                let instance_id = jit_name_instance(runner_name, prefix).unwrap_or("?");
                info!(
                    instance_id,
                    runner_name = runner_name.as_str(),
                    runner_id,
                    took_ms = started.elapsed().as_millis() as u64,
                    "jit: minted"
                );
            }
            JitOutcome::Released {
                instance_id,
                runner_id,
                runner_name,
                result,
            } => {
                // The one log line per release.
                info!(
                    instance_id = instance_id.as_str(),
                    runner_name = runner_name.as_deref().map_or("-", |n| n),
                    runner_id,
                    result = result.name(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "jit: release"
                );
            }
            JitOutcome::Refused {
                status,
                message,
                retry_after,
            } => {
                let caller = crate::function_url::iam(event)
                    .and_then(|iam| iam.user_arn.as_deref())
                    .unwrap_or("-");
                warn!(
                    status,
                    retry_after = retry_after.unwrap_or(0),
                    caller = lifecycle_escape::clip(caller, 160).as_str(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "jit: refused: {}",
                    lifecycle_escape::clip(message, 300)
                )
            }
            JitOutcome::Outstanding { runner_id, .. } => {
                info!(
                    runner_id,
                    took_ms = started.elapsed().as_millis() as u64,
                    "jit: refused: the instance already holds an unused config"
                )
            }
        }
        outcome
    }

    async fn jit_inner(&self, event: &Request, now: i64) -> JitOutcome {
        let (settings, who, ask) = match self.admit(event) {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
        match ask {
            Ask::Mint => self.mint(settings, &who, now).await,
            Ask::Release { runner_id } => self.release(settings, &who, runner_id).await,
        }
    }

    /// The checks both routes share, in order: signed (403), configured (403), a route (404),
    /// `POST` (405), a well-formed body for the route (400), a session of the agent role named
    /// after an instance (403). No call is made.
    fn admit(&self, event: &Request) -> Result<(&JitSettings, InstanceIdentity, Ask), JitOutcome> {
        // 1. Only an AWS_IAM function URL may mint or release: AWS verified these signatures.
        let caller = match iam_caller(event) {
            None => {
                return Err(JitOutcome::refuse(
                    403,
                    "not an authorized instance identity: unsigned request",
                ))
            }
            Some(Err(e)) => {
                return Err(JitOutcome::refuse(
                    403,
                    format!("not an authorized instance identity: {e}"),
                ))
            }
            Some(Ok(c)) => c,
        };
        let Some(settings) = &self.settings().jit else {
            return Err(JitOutcome::refuse(
                403,
                "this controller serves no JIT configs (no agent role configured)",
            ));
        };
        // 2. The request itself.
        let Some(route) = Route::of(crate::function_url::path(event)) else {
            return Err(JitOutcome::refuse(
                404,
                format!("no route; POST {JIT_PATH} or {RELEASE_PATH}"),
            ));
        };
        let req = crate::webhook::parse_http_event(event)
            .map_err(|e| JitOutcome::refuse(400, format!("malformed request: {e}")))?;
        if req.method != "POST" {
            return Err(JitOutcome::refuse(405, format!("POST {} only", route.path())));
        }
        if req.body.len() > MAX_BODY {
            return Err(JitOutcome::refuse(400, "body too large"));
        }
        let ask = parse_ask(route, &req.body).map_err(|e| JitOutcome::refuse(400, e))?;
        // 3. Who signed: a session of the agent role named after an instance.
        let owner = event.request_context.account_id.as_deref();
        let who = instance_identity(&caller, owner, &settings.agent_role)
            .map_err(|e| JitOutcome::refuse(403, format!("not an authorized instance identity: {e}")))?;
        Ok((settings, who, ask))
    }

    /// `POST /jit-config` for an admitted caller: its instance must be in one of our groups, in
    /// service or launching; then one generate-jitconfig.
    async fn mint(&self, settings: &JitSettings, who: &InstanceIdentity, now: i64) -> JitOutcome {
        // 4. What Auto Scaling says of that instance.
        let member = match self.aws().instance(&who.instance_id).await {
            Ok(m) => m,
            Err(e) => return aws_failure(&e),
        };
        let Some(member) = member else {
            return JitOutcome::refuse(409, format!("instance {} is in no Auto Scaling group", who.instance_id));
        };
        if !self.settings().groups.contains(&member.group) {
            return JitOutcome::refuse(
                409,
                format!(
                    "instance {} is in group {}, which this controller does not serve",
                    who.instance_id,
                    lifecycle_escape::clip(&member.group, 100)
                ),
            );
        }
        // The one rule of which states may hold a runner (lifecycle_core::AsgState::runner).
        if !lifecycle_core::lifecycle_state_may_mint(&member.state) {
            return JitOutcome::refuse(
                409,
                format!(
                    "instance {} is {}, not InService or Pending: no new runner for it",
                    who.instance_id,
                    lifecycle_escape::clip(&member.state, 40)
                ),
            );
        }
        // 5. One outstanding config per instance, serialized by a lease in the state table when
        // the controller has one (concurrent invocations would otherwise all see none).
        let lease = self
            .settings()
            .scale
            .as_ref()
            .map(|s| (s.table.as_str(), format!("jit#{}", who.instance_id)));
        if let Some((table, key)) = &lease {
            match self
                .aws()
                .claim_key(table, key, now, now.saturating_add(MINT_LEASE_S))
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return JitOutcome::refuse(
                        409,
                        format!(
                            "a JIT config for instance {} is being minted or was minted seconds ago: one outstanding config per instance",
                            who.instance_id
                        ),
                    )
                }
                Err(e) => return aws_failure_of(&e, "DynamoDB PutItem"),
            }
        }
        let outcome = self.mint_one(settings, who, &member.group, now).await;
        if let Some((table, key)) = &lease {
            let until = match outcome {
                JitOutcome::Minted { .. } => now.saturating_add(MINT_SETTLE_S),
                _ => 0,
            };
            if let Err(e) = self.aws().expire_key(table, key, until).await {
                warn!(instance_id = who.instance_id.as_str(), error = %e, "jit: could not end the mint lease; it lapses by itself");
            }
        }
        outcome
    }

    /// Steps 5 and 6 of the mint: refuse while the instance holds an unused config, else
    /// generate-jitconfig.
    async fn mint_one(&self, settings: &JitSettings, who: &InstanceIdentity, group: &str, now: i64) -> JitOutcome {
        let runners = match self.github().runner_details().await {
            Ok(r) => r,
            Err(e) => {
                warn!(instance_id = who.instance_id.as_str(), error = %e, "jit: listing runners failed");
                return github_failure(&e, "mint");
            }
        };
        let held = outstanding(
            &runners,
            &settings.prefix,
            &who.instance_id,
            now,
            settings.outstanding_for,
        );
        if let Some(first) = held.first() {
            let bound = i64::try_from(settings.outstanding_for.as_secs()).unwrap_or(i64::MAX);
            let expires = first.minted_at.saturating_add(bound);
            return JitOutcome::Outstanding {
                runner_id: first.runner_id,
                message: format!(
                    "instance {} already holds an unused JIT config (runner {}, minted {} s ago, no listener has connected with it): one outstanding config per instance; the next is minted once a listener connects with it, it is released (POST {RELEASE_PATH}), or {} s after its mint",
                    who.instance_id,
                    first.runner_id,
                    now.saturating_sub(first.minted_at).max(0),
                    bound
                ),
                retry_after: u64::try_from(expires.saturating_sub(now)).unwrap_or(0).max(1),
            };
        }
        // 6. Mint.
        let name =
            lifecycle_github::jit::jit_runner_name(&settings.prefix, now, &format!("{}-{}", who.instance_id, nonce()));
        let mut labels = settings.labels.clone();
        for l in [
            lifecycle_github::labels::instance_label(&who.instance_id),
            lifecycle_github::labels::group_label(group),
        ] {
            if !labels.iter().any(|x| x.eq_ignore_ascii_case(&l)) {
                labels.push(l);
            }
        }
        let request = JitRequest::new(name, settings.runner_group_id, labels);
        match self.github().jit_config(&request).await {
            Ok(c) => JitOutcome::Minted {
                runner_name: c.runner.name,
                runner_id: c.runner.id,
                config: c.encoded_jit_config,
            },
            Err(e) => {
                warn!(instance_id = who.instance_id.as_str(), error = %e, "jit: generate-jitconfig failed");
                github_failure(&e, "mint")
            }
        }
    }

    /// `POST /jit-config/release` for an admitted caller: GET the runner, check it is a JIT
    /// registration of the caller's instance, leave it if GitHub shows it busy, else DELETE it.
    ///
    /// Two GitHub calls per release (GET, DELETE); one when the GET settles it.
    async fn release(&self, settings: &JitSettings, who: &InstanceIdentity, runner_id: u64) -> JitOutcome {
        // No AWS call is needed: the registration's name proves whose it is (AWS verified the
        // signer, and the mint wrote the signer's instance id into the name,
        // [`jit_name_instance`]). And no lifecycle-state check: the host that asks is typically
        // draining (`Terminating:Wait`), which the mint refuses and the release must not.
        let released = |result: Release, runner_name: Option<String>| JitOutcome::Released {
            instance_id: who.instance_id.clone(),
            runner_id,
            runner_name,
            result,
        };
        let runner = match self.github().get_runner(runner_id).await {
            Ok(Some(r)) => r,
            // Never made, already removed, or (a JIT registration) consumed by an assignment.
            Ok(None) => return released(Release::NotFound, None),
            Err(e) => {
                warn!(instance_id = who.instance_id.as_str(), runner_id, error = %e, "jit: release: GET runner failed");
                return github_failure(&e, "release");
            }
        };
        // An instance may only release its own registration. The answer does not name the
        // runner: it is not the caller's business whose it is.
        if jit_name_instance(&runner.name, &settings.prefix) != Some(who.instance_id.as_str()) {
            return JitOutcome::refuse(
                403,
                format!(
                    "runner {runner_id} is not a JIT registration of instance {}: an instance may only release its own",
                    who.instance_id
                ),
            );
        }
        // GitHub already sees a job: leave it (the agent lets the job run).
        if runner.busy {
            return released(Release::Busy, Some(runner.name));
        }
        match self.github().delete_runner(runner_id).await {
            Ok(Deleted::Deleted) => released(Release::Removed, Some(runner.name)),
            // Gone between the GET and the DELETE: as for a 404 on the GET.
            Ok(Deleted::AlreadyGone) => released(Release::NotFound, Some(runner.name)),
            // 422: GitHub refuses, the runner runs a job.
            Err(GitHubError::RunnerBusy { .. }) => released(Release::Busy, Some(runner.name)),
            Err(e) => {
                warn!(instance_id = who.instance_id.as_str(), runner_id, error = %e, "jit: release: DELETE runner failed");
                github_failure(&e, "release")
            }
        }
    }
}

/// The body of a route: the mint takes an empty body or any JSON object (`{}`), the release a
/// JSON object with `runner_id`, a positive integer (other fields are ignored).
fn parse_ask(route: Route, body: &[u8]) -> Result<Ask, String> {
    match route {
        Route::Mint => {
            let ok = body.iter().all(u8::is_ascii_whitespace)
                || serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object());
            ok.then_some(Ask::Mint)
                .ok_or_else(|| "the body must be a JSON object ({})".to_string())
        }
        Route::Release => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.as_object()?.get("runner_id")?.as_u64())
            .filter(|&id| id > 0)
            .map(|runner_id| Ask::Release { runner_id })
            .ok_or_else(|| r#"the body must be {"runner_id": N}, N a positive integer"#.to_string()),
    }
}

/// The instance a JIT runner name made by the mint belongs to:
/// `{prefix}{epoch}-{instance id}-{rest}`, `rest` being the mint's four hex digits (and
/// `-r{4 hex}` after a name conflict, crate `lifecycle_github::jit`). `None` for any other name:
/// another prefix, no timestamp, no instance id right after it, nothing after the id.
pub fn jit_name_instance<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    lifecycle_github::jit::name_created_epoch(name, prefix)?;
    let (_epoch, tail) = name.get(prefix.len()..)?.split_once('-')?;
    let (hex, unique) = tail.strip_prefix("i-")?.split_once('-')?;
    if unique.is_empty() {
        return None;
    }
    lifecycle_github::labels::as_instance_id(tail.get(..hex.len() + 2)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{FakeAws, FakeGitHub};
    use crate::ports::AsgInstance;
    use crate::settings::{JitSettings, Settings};
    use std::time::Duration;

    const ID: &str = "i-0123456789abcdef0";
    const OTHER: &str = "i-0fedcba9876543210";
    const ACCOUNT: &str = "123456789012";

    fn event(arn: Option<&str>, path: &str, method: &str, body: &str) -> Value {
        let mut ctx = json!({
            "accountId": ACCOUNT,
            "timeEpoch": 1_700_000_000_000_i64,
            "http": {"method": method, "path": path},
        });
        if let Some(arn) = arn {
            ctx["authorizer"] = json!({"iam": {
                "accessKey": "ASIAEXAMPLE", "accountId": ACCOUNT, "callerId": "AROAEXAMPLE:x",
                "userArn": arn, "userId": "AROAEXAMPLE:x"
            }});
        }
        json!({"version": "2.0", "rawPath": path, "headers": {}, "requestContext": ctx,
               "body": body, "isBase64Encoded": false})
    }

    /// [`Controller::jit`] of an event written as JSON, as `invoke` hands it over: typed first.
    trait JitValue {
        fn jit_value(&self, event: &Value, now: i64) -> impl std::future::Future<Output = JitOutcome>;
    }

    impl JitValue for Controller<FakeAws, FakeGitHub> {
        async fn jit_value(&self, event: &Value, now: i64) -> JitOutcome {
            let req = crate::function_url::parse(event.clone()).unwrap_or_else(|e| panic!("{e}"));
            self.jit(&req, now).await
        }
    }

    fn arn(role: &str, session: &str) -> String {
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}")
    }

    fn controller(state: &str, group: &str) -> Controller<FakeAws, FakeGitHub> {
        let mut s = Settings::new(["runners".to_string()]);
        s.jit = Some(JitSettings::new("runner-hosts"));
        let aws = FakeAws::default();
        aws.instances
            .lock()
            .map(|mut m| {
                m.insert(
                    ID.into(),
                    AsgInstance {
                        group: group.into(),
                        state: state.into(),
                    },
                )
            })
            .ok();
        Controller::new(s, aws, FakeGitHub::default())
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(f))
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    }

    fn ok_event() -> Value {
        event(Some(&arn("runner-hosts", ID)), "/jit-config", "POST", "{}")
    }

    #[test]
    fn an_instance_of_the_group_gets_a_config_for_itself() {
        let c = controller("InService", "runners");
        let out = run(c.jit_value(&ok_event(), 1_700_000_000));
        let JitOutcome::Minted {
            runner_name,
            runner_id,
            config,
        } = &out
        else {
            panic!("{out:?}")
        };
        assert!(
            runner_name.starts_with(&format!("rle-jit-1700000000-{ID}-")),
            "{runner_name}"
        );
        assert_eq!(jit_name_instance(runner_name, "rle-jit-"), Some(ID));
        assert_eq!(*runner_id, 1001);
        assert!(!format!("{out:?}").contains(config.expose()), "Debug leaks the config");
        let req = c.github().jit_requests.lock().map(|r| r[0].clone()).ok();
        let req = req.unwrap_or_else(|| panic!("no request"));
        assert_eq!(req.labels, vec!["self-hosted", ID, "asg-runners"]);
        assert_eq!(req.runner_group_id, 1);
        let resp = out.response();
        assert_eq!(resp["statusCode"], 200);
        assert_eq!(resp["headers"]["cache-control"], "no-store");
        let body: Value = serde_json::from_str(resp["body"].as_str().unwrap_or_default()).unwrap_or_default();
        assert_eq!(body["encoded_jit_config"], config.expose());
        assert_eq!(body["runner_name"], runner_name.as_str());
        // The agent's client reads this very answer with the same wire type.
        let grant =
            lifecycle_aws::function_url::classify(200, None, resp["body"].as_str().unwrap_or_default().as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&grant.runner_name, runner_name);
        assert_eq!(grant.encoded_jit_config.expose(), config.expose());
        // A Pending host (launch hook) is served too.
        for state in ["Pending", "Pending:Wait", "Pending:Proceed"] {
            assert_eq!(
                run(controller(state, "runners").jit_value(&ok_event(), 1)).status(),
                200,
                "{state}"
            );
        }
    }

    #[test]
    fn unsigned_or_foreign_callers_are_refused_with_403() {
        let c = controller("InService", "runners");
        let cases = [
            // No IAM authorizer: the webhook URL (AuthType NONE).
            event(None, "/jit-config", "POST", "{}"),
            // Another role of the account.
            event(Some(&arn("admin", ID)), "/jit-config", "POST", "{}"),
            // The agent role, but a session name that is not an instance id (someone with
            // sts:AssumeRole on the role choosing a name).
            event(Some(&arn("runner-hosts", "alice")), "/jit-config", "POST", "{}"),
            // An IAM user.
            event(
                Some(&format!("arn:aws:iam::{ACCOUNT}:user/bob")),
                "/jit-config",
                "POST",
                "{}",
            ),
            // Another account's role of the same name.
            event(
                Some(&format!("arn:aws:sts::999999999999:assumed-role/runner-hosts/{ID}")),
                "/jit-config",
                "POST",
                "{}",
            ),
        ];
        for e in &cases {
            let out = run(c.jit_value(e, 1));
            assert_eq!(out.status(), 403, "{e} -> {out:?}");
        }
        assert_eq!(c.github().calls(), 0);
        assert_eq!(c.aws().asg_calls(), 0);
        // An authorizer context missing a field.
        let mut e = ok_event();
        e["requestContext"]["authorizer"]["iam"]["userArn"] = Value::Null;
        assert_eq!(run(c.jit_value(&e, 1)).status(), 403);
        // No owner account in the event: fail closed.
        let mut e = ok_event();
        e["requestContext"]["accountId"] = Value::Null;
        assert_eq!(run(c.jit_value(&e, 1)).status(), 403);
        // Not configured at all.
        let c = Controller::new(
            Settings::new(["runners".to_string()]),
            FakeAws::default(),
            FakeGitHub::default(),
        );
        assert_eq!(run(c.jit_value(&ok_event(), 1)).status(), 403);
    }

    #[test]
    fn the_signer_can_only_mint_for_its_own_instance() {
        // Another host's session asks: the identity is its own session name, never a parameter
        // of the request; a body naming another instance changes nothing.
        let c = controller("InService", "runners");
        let e = event(
            Some(&arn("runner-hosts", OTHER)),
            "/jit-config",
            "POST",
            &format!(r#"{{"instance_id":"{ID}"}}"#),
        );
        let out = run(c.jit_value(&e, 1));
        assert_eq!(out.status(), 409, "{out:?}");
        assert_eq!(c.github().calls(), 0);
    }

    #[test]
    fn draining_or_foreign_hosts_get_409() {
        let never = lifecycle_core::aws::LIFECYCLE_STATES
            .iter()
            .copied()
            .filter(|s| *s != "InService" && !s.starts_with("Pending"));
        for state in never.chain(["SomethingNew"]) {
            let c = controller(state, "runners");
            let out = run(c.jit_value(&ok_event(), 1));
            assert_eq!(out.status(), 409, "{state}");
            assert!(format!("{out:?}").contains(state), "{out:?}");
            assert_eq!(c.github().calls(), 0, "{state}");
        }
        let c = controller("InService", "someone-elses");
        assert_eq!(run(c.jit_value(&ok_event(), 1)).status(), 409);
    }

    #[test]
    fn malformed_requests_get_4xx() {
        let c = controller("InService", "runners");
        let signed = arn("runner-hosts", ID);
        assert_eq!(
            run(c.jit_value(&event(Some(&signed), "/", "POST", "{}"), 1)).status(),
            404
        );
        assert_eq!(
            run(c.jit_value(&event(Some(&signed), "/jit-config", "GET", ""), 1)).status(),
            405
        );
        assert_eq!(
            run(c.jit_value(&event(Some(&signed), "/jit-config", "POST", "[1]"), 1)).status(),
            400
        );
        assert_eq!(
            run(c.jit_value(&event(Some(&signed), "/jit-config", "POST", "nope"), 1)).status(),
            400
        );
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_BODY));
        assert_eq!(
            run(c.jit_value(&event(Some(&signed), "/jit-config", "POST", &big), 1)).status(),
            400
        );
        // An empty body is fine (as is `{}`).
        assert_eq!(
            run(c.jit_value(&event(Some(&signed), "/jit-config/", "POST", ""), 1)).status(),
            200
        );
    }

    #[test]
    fn outages_map_to_retryable_answers() {
        let c = controller("InService", "runners");
        let expect = |e: GitHubError, status: u16, after: Option<u64>| {
            c.github().fail_next.lock().map(|mut f| f.push(e)).ok();
            let out = run(c.jit_value(&ok_event(), 1));
            assert_eq!(out.status(), status, "{out:?}");
            let resp = out.response();
            assert_eq!(
                resp["headers"]["retry-after"].as_str().map(str::to_string),
                after.map(|a| a.to_string()),
                "{resp}"
            );
        };
        expect(
            GitHubError::RateLimited {
                retry_after: Duration::from_secs(42),
            },
            429,
            Some(42),
        );
        expect(GitHubError::Transient("502".into()), 503, Some(5));
        expect(GitHubError::Unauthorized("bad".into()), 500, Some(60));
        // AWS throttling and 5xx.
        for kind in [ApiErrorKind::Throttled, ApiErrorKind::Transient] {
            let c = controller("InService", "runners");
            c.aws().fail.lock().map(|mut f| *f = Some(kind)).ok();
            let out = run(c.jit_value(&ok_event(), 1));
            assert_eq!(out.status(), 503, "{kind:?}");
            assert!(out.response()["headers"]["retry-after"].is_string());
        }
        let c = controller("InService", "runners");
        c.aws()
            .fail
            .lock()
            .map(|mut f| *f = Some(ApiErrorKind::AccessDenied))
            .ok();
        assert_eq!(run(c.jit_value(&ok_event(), 1)).status(), 500);
    }

    #[test]
    fn arns_parse_strictly() {
        assert_eq!(
            parse_assumed_role_arn(&arn("runner-hosts", ID)),
            Some(("aws", ACCOUNT, "runner-hosts", ID))
        );
        assert!(parse_assumed_role_arn(&format!("arn:aws-cn:sts::{ACCOUNT}:assumed-role/r/{ID}")).is_some());
        for bad in [
            "",
            "arn:aws:sts::123:assumed-role/r/i-0123456789abcdef0",
            &format!("arn:aws:iam::{ACCOUNT}:role/r"),
            &format!("arn:aws:sts::{ACCOUNT}:assumed-role/r/{ID}/extra"),
            &format!("arn:aws:sts::{ACCOUNT}:assumed-role/r"),
            &format!("arn:aws:sts::{ACCOUNT}:federated-user/bob"),
            &format!("arn:aws:sts:us-east-1:{ACCOUNT}:assumed-role/r/{ID}"),
            &format!("arn:aws:sts::{ACCOUNT}:assumed-role/r/{ID}\u{1b}[31m"),
        ] {
            assert_eq!(parse_assumed_role_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn routing_tells_jit_from_webhook_events() {
        let is_jit_event = |e: Value| is_jit_event(&crate::function_url::parse(e).unwrap_or_else(|e| panic!("{e}")));
        assert!(is_jit_event(ok_event()));
        assert!(is_jit_event(event(None, "/jit-config", "POST", "{}")));
        // The release route too: on the webhook's URL it is refused (unsigned), never a delivery.
        assert!(is_jit_event(event(None, "/jit-config/release", "POST", "{}")));
        assert!(is_jit_event(event(None, "/jit-config/release/", "POST", "{}")));
        assert!(!is_jit_event(event(None, "/jit-config/other", "POST", "{}")));
        assert_eq!(Route::of("/jit-config/"), Some(Route::Mint));
        assert_eq!(Route::of(RELEASE_PATH).map(Route::path), Some(RELEASE_PATH));
        assert!(is_jit_event(event(Some(&arn("r", ID)), "/", "POST", "{}")));
        assert!(!is_jit_event(event(None, "/", "POST", "{}")));
        assert!(!is_jit_event(event(None, "/webhook", "POST", "{}")));
    }

    // ---------------------------------------------------------------- one outstanding config

    const T0: i64 = 1_700_000_000;

    fn minted_id(out: &JitOutcome) -> u64 {
        match out {
            JitOutcome::Minted { runner_id, .. } => *runner_id,
            other => panic!("not minted: {other:?}"),
        }
    }

    fn error_of(out: &JitOutcome) -> String {
        match out {
            JitOutcome::Refused { message, .. } | JitOutcome::Outstanding { message, .. } => message.clone(),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn six_quick_mints_for_one_instance_give_one_config() {
        // Issue 16: with the role's credentials a job minted six configs in seconds.
        let c = controller("InService", "runners");
        let outs: Vec<JitOutcome> = (0..6).map(|i| run(c.jit_value(&ok_event(), T0 + i))).collect();
        assert_eq!(outs[0].status(), 200, "{:?}", outs[0]);
        for (i, out) in outs.iter().enumerate().skip(1) {
            assert_eq!(out.status(), 409, "{out:?}");
            let msg = error_of(out);
            assert!(
                msg.contains("already holds an unused JIT config") && msg.contains("runner 1001"),
                "{msg}"
            );
            // When the unused one stops counting (900 s after its mint), for a client that reads it.
            assert_eq!(out.response()["headers"]["retry-after"], json!((900 - i).to_string()));
            // Named, so that an agent that lost it can release it and ask again.
            let body: Value = serde_json::from_str(out.response()["body"].as_str().unwrap_or("{}")).unwrap_or_default();
            assert_eq!(body["outstanding_runner_id"], json!(1001));
        }
        assert_eq!(c.github().jit_requests.lock().map(|r| r.len()).unwrap_or(0), 1);
        // Another instance is not affected.
        c.aws()
            .instances
            .lock()
            .map(|mut m| {
                m.insert(
                    OTHER.into(),
                    AsgInstance {
                        group: "runners".into(),
                        state: "InService".into(),
                    },
                )
            })
            .ok();
        let e = event(Some(&arn("runner-hosts", OTHER)), "/jit-config", "POST", "{}");
        assert_eq!(run(c.jit_value(&e, T0 + 6)).status(), 200);
    }

    #[test]
    fn a_normal_jit_host_is_never_refused() {
        let c = controller("InService", "runners");
        // The first listener's config: minted, then its listener connects and takes a job.
        let a = minted_id(&run(c.jit_value(&ok_event(), T0)));
        c.github().connect(a);
        // The agent prefetches the next config while the job runs: allowed (A is in use).
        let b = minted_id(&run(c.jit_value(&ok_event(), T0 + 30)));
        // A third while B waits unused: refused.
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 31)).status(), 409);
        // A's job ends (GitHub removes the ephemeral runner); B's listener connects and takes a
        // job; the agent prefetches again: allowed.
        c.github().runners.lock().map(|mut r| r.retain(|r| r.id != a)).ok();
        c.github().connect(b);
        let third = minted_id(&run(c.jit_value(&ok_event(), T0 + 600)));
        assert!(third > b);
    }

    #[test]
    fn an_outstanding_config_is_freed_by_release_or_expiry() {
        let c = controller("InService", "runners");
        let a = minted_id(&run(c.jit_value(&ok_event(), T0)));
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 899)).status(), 409);
        // Expired: 900 s (the default bound) after its mint it no longer counts.
        let b = minted_id(&run(c.jit_value(&ok_event(), T0 + 900)));
        assert!(b > a);
        // Released by its host: the next mint is allowed at once.
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 901)).status(), 409);
        assert_eq!(run(c.jit_value(&release_of(ID, b), T0 + 902)).status(), 200);
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 903)).status(), 200);
    }

    #[test]
    fn an_unused_config_older_than_a_used_one_is_an_orphan() {
        // The client's retry after a lost answer left `X` unused; the agent got `X-r0001`, minted
        // the same second, and its listener connected: `X` was never the agent's and does not count.
        let c = controller("InService", "runners");
        let jit = |id: u64, name: String| {
            let mut r = FakeGitHub::runner(id, ID, "runners", "offline", false);
            r.name = name;
            r.ephemeral = true;
            r
        };
        c.github()
            .runners
            .lock()
            .map(|mut rs| {
                rs.push(jit(7, format!("rle-jit-{T0}-{ID}-ab12")));
                rs.push(jit(8, format!("rle-jit-{T0}-{ID}-ab12-r0001")));
            })
            .ok();
        c.github().connect(8);
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 60)).status(), 200);
        // A persistent registration named after the instance, or another instance's JIT
        // registration, is not the instance's outstanding config either.
        let c = controller("InService", "runners");
        c.github()
            .runners
            .lock()
            .map(|mut rs| {
                rs.push(FakeGitHub::runner(9, ID, "runners", "offline", false));
                rs.push(jit(10, format!("rle-jit-{T0}-{OTHER}-ab12")));
            })
            .ok();
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 60)).status(), 200);
    }

    #[test]
    fn outstanding_follows_the_rule() {
        let d =
            |id: u64, name: String, status: &str, busy: bool, version: Option<&str>| lifecycle_github::RunnerDetail {
                runner: lifecycle_github::Runner {
                    id,
                    name,
                    status: status.into(),
                    busy,
                    labels: vec![],
                    ephemeral: true,
                },
                version: version.map(str::to_string),
                os: None,
                runner_group_id: None,
            };
        let n = |t: i64| format!("rle-jit-{t}-{ID}-ab12");
        let bound = Duration::from_secs(900);
        let o = |rs: &[lifecycle_github::RunnerDetail]| -> Vec<u64> {
            outstanding(rs, "rle-jit-", ID, T0 + 100, bound)
                .iter()
                .map(|o| o.runner_id)
                .collect()
        };
        assert_eq!(o(&[d(1, n(T0), "offline", false, None)]), vec![1]);
        // Online, busy or ever connected: in use.
        assert!(o(&[d(1, n(T0), "online", false, None)]).is_empty());
        assert!(o(&[d(1, n(T0), "offline", true, None)]).is_empty());
        assert!(o(&[d(1, n(T0), "offline", false, Some("2.330.0"))]).is_empty());
        // Too old.
        assert!(outstanding(&[d(1, n(T0), "offline", false, None)], "rle-jit-", ID, T0 + 900, bound).is_empty());
        // Minted after the newest used one: counts; before it: an orphan. In the same second the
        // runner id tells (a prefetch right after its predecessor's mint).
        let used = d(2, n(T0 + 10), "online", true, Some("2.330.0"));
        assert_eq!(o(&[used.clone(), d(3, n(T0 + 11), "offline", false, None)]), vec![3]);
        assert_eq!(o(&[used.clone(), d(3, n(T0 + 10), "offline", false, None)]), vec![3]);
        assert!(o(&[used.clone(), d(1, n(T0 + 10), "offline", false, None)]).is_empty());
        assert!(o(&[used, d(3, n(T0 + 9), "offline", false, None)]).is_empty());
    }

    #[test]
    fn with_a_state_table_concurrent_mints_are_serialized_by_a_lease() {
        let mut s = Settings::new(["runners".to_string()]);
        s.jit = Some(JitSettings::new("runner-hosts"));
        s.scale = Some(crate::settings::ScaleSettings::new(
            "runners",
            &["self-hosted"],
            "state",
        ));
        let c = Controller::new(s, FakeAws::default(), FakeGitHub::default());
        // The instance's mint lease in the state table (its expiry, epoch s).
        let lease = |c: &Controller<FakeAws, FakeGitHub>| {
            c.aws()
                .keys
                .lock()
                .map(|k| k.get(&format!("jit#{ID}")).copied())
                .ok()
                .flatten()
        };
        c.aws()
            .instances
            .lock()
            .map(|mut m| {
                m.insert(
                    ID.into(),
                    AsgInstance {
                        group: "runners".into(),
                        state: "InService".into(),
                    },
                )
            })
            .ok();
        // Another invocation holds the lease (its mint is under way): refused, nothing asked of
        // GitHub.
        c.aws()
            .keys
            .lock()
            .map(|mut k| k.insert(format!("jit#{ID}"), T0 + 60))
            .ok();
        let out = run(c.jit_value(&ok_event(), T0));
        assert_eq!(out.status(), 409, "{out:?}");
        assert!(error_of(&out).contains("being minted"), "{out:?}");
        assert_eq!(c.github().calls(), 0);
        // The lease lapses: one mint, and the lease is kept a few seconds after it, so a mint
        // right behind it is refused even before GitHub's list shows the new registration.
        let first = run(c.jit_value(&ok_event(), T0 + 61));
        assert_eq!(first.status(), 200, "{first:?}");
        c.github().runners.lock().map(|mut r| r.clear()).ok();
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 62)).status(), 409);
        assert_eq!(lease(&c), Some(T0 + 61 + MINT_SETTLE_S));
        // A failed mint gives the lease back at once.
        c.github()
            .fail_next
            .lock()
            .map(|mut f| f.push(GitHubError::Transient("502".into())))
            .ok();
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 80)).status(), 503);
        assert_eq!(lease(&c), Some(0));
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 81)).status(), 200);
        // The table down: 503, retryable; nothing minted.
        *c.aws().table_down.lock().expect("lock") = Some(ApiErrorKind::Throttled);
        c.github().runners.lock().map(|mut r| r.clear()).ok();
        let before = c.github().jit_requests.lock().map(|r| r.len()).unwrap_or(0);
        assert_eq!(run(c.jit_value(&ok_event(), T0 + 200)).status(), 503);
        assert_eq!(c.github().jit_requests.lock().map(|r| r.len()).unwrap_or(0), before);
    }

    // ---------------------------------------------------------------- release

    fn release_event(arn: Option<&str>, body: &str) -> Value {
        event(arn, RELEASE_PATH, "POST", body)
    }

    fn release_of(instance: &str, runner_id: u64) -> Value {
        release_event(
            Some(&arn("runner-hosts", instance)),
            &format!(r#"{{"runner_id":{runner_id}}}"#),
        )
    }

    /// A controller whose GitHub holds JIT registrations: 7 of [`ID`] (idle), 8 of [`OTHER`]
    /// (idle), 9 of [`ID`] (busy), 10 named after [`ID`] the way `register` names a persistent
    /// runner; the caller [`ID`] is draining (`Terminating:Wait`).
    fn with_runners() -> Controller<FakeAws, FakeGitHub> {
        let c = controller("Terminating:Wait", "runners");
        let jit = |id: u64, instance: &str, busy: bool| {
            let mut r = FakeGitHub::runner(id, instance, "runners", "online", busy);
            r.name = format!("rle-jit-1700000000-{instance}-ab1{id}");
            r.ephemeral = true;
            r
        };
        c.github()
            .runners
            .lock()
            .map(|mut rs| {
                rs.extend([
                    jit(7, ID, false),
                    jit(8, OTHER, false),
                    jit(9, ID, true),
                    FakeGitHub::runner(10, ID, "runners", "online", false),
                ])
            })
            .ok();
        c
    }

    fn body(out: &JitOutcome) -> Value {
        serde_json::from_str(out.response()["body"].as_str().unwrap_or_default()).unwrap_or_default()
    }

    fn deleted(c: &Controller<FakeAws, FakeGitHub>) -> Vec<u64> {
        c.github().deleted.lock().map(|d| d.clone()).unwrap_or_default()
    }

    #[test]
    fn a_draining_host_releases_its_idle_registration() {
        let c = with_runners();
        let out = run(c.jit_value(&release_of(ID, 7), 1));
        assert_eq!(
            out,
            JitOutcome::Released {
                instance_id: ID.into(),
                runner_id: 7,
                runner_name: Some(format!("rle-jit-1700000000-{ID}-ab17")),
                result: Release::Removed,
            }
        );
        assert_eq!(out.status(), 200);
        assert_eq!(body(&out), json!({"result": "removed", "runner_id": 7}));
        assert_eq!(deleted(&c), vec![7]);
        // GET and DELETE, and no AWS call: the name proves ownership, the state does not matter.
        assert_eq!(c.github().calls(), 2);
        assert_eq!(c.aws().asg_calls(), 0);
        // Again: GitHub knows it no more.
        let again = run(c.jit_value(&release_of(ID, 7), 1));
        assert_eq!(again.status(), 404);
        assert_eq!(body(&again), json!({"result": "not-found", "runner_id": 7}));
        assert_eq!(deleted(&c), vec![7], "nothing deleted the second time");
        // The same from any state, or from a host no group knows any more.
        for state in [
            "InService",
            "Pending:Wait",
            "Terminating:Proceed",
            "Standby",
            "Warmed:Stopped",
        ] {
            let c = controller(state, "runners");
            c.github()
                .runners
                .lock()
                .map(|mut rs| {
                    let mut r = FakeGitHub::runner(7, ID, "runners", "online", false);
                    r.name = format!("rle-jit-1-{ID}-0000");
                    rs.push(r)
                })
                .ok();
            assert_eq!(run(c.jit_value(&release_of(ID, 7), 1)).status(), 200, "{state}");
        }
    }

    #[test]
    fn a_busy_registration_is_left_alone() {
        // GitHub's runner reads busy: no DELETE.
        let c = with_runners();
        let out = run(c.jit_value(&release_of(ID, 9), 1));
        assert_eq!(out.status(), 409, "{out:?}");
        assert_eq!(body(&out), json!({"result": "busy", "runner_id": 9}));
        assert!(deleted(&c).is_empty());
        assert_eq!(c.github().calls(), 1);
        // Reads idle, but the DELETE answers 422: busy, and it stays.
        let c = with_runners();
        c.github()
            .delete_next
            .lock()
            .map(|mut d| {
                d.push(Err(GitHubError::RunnerBusy {
                    id: 7,
                    message: "Bad request - Runner is still running a job".into(),
                }))
            })
            .ok();
        let out = run(c.jit_value(&release_of(ID, 7), 1));
        assert!(
            matches!(
                out,
                JitOutcome::Released {
                    result: Release::Busy,
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(out.status(), 409);
        assert_eq!(
            c.github().runners.lock().map(|r| r.iter().any(|r| r.id == 7)).ok(),
            Some(true)
        );
    }

    #[test]
    fn an_unknown_registration_is_not_found_never_removed() {
        // 404 on the GET: never made, removed, or consumed by an assignment.
        let c = with_runners();
        let out = run(c.jit_value(&release_of(ID, 4242), 1));
        assert_eq!(
            out,
            JitOutcome::Released {
                instance_id: ID.into(),
                runner_id: 4242,
                runner_name: None,
                result: Release::NotFound,
            }
        );
        assert_eq!(out.status(), 404);
        assert_eq!(body(&out)["result"], "not-found");
        assert_eq!(c.github().calls(), 1);
        // 404 on the DELETE (gone between the GET and the DELETE): the same answer.
        let c = with_runners();
        c.github()
            .delete_next
            .lock()
            .map(|mut d| d.push(Ok(Deleted::AlreadyGone)))
            .ok();
        let out = run(c.jit_value(&release_of(ID, 7), 1));
        assert!(
            matches!(
                &out,
                JitOutcome::Released {
                    result: Release::NotFound,
                    runner_name: Some(_),
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(out.status(), 404);
        assert_eq!(body(&out)["result"], "not-found");
        assert_eq!(c.github().calls(), 2);
    }

    #[test]
    fn an_instance_may_only_release_its_own_registration() {
        let c = with_runners();
        // Another instance's JIT registration.
        let out = run(c.jit_value(&release_of(ID, 8), 1));
        assert_eq!(out.status(), 403, "{out:?}");
        let msg = body(&out)["error"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("only release its own") && !msg.contains(OTHER), "{msg}");
        // The caller's persistent registration (named after the instance, not minted): not a
        // JIT registration of it.
        assert_eq!(run(c.jit_value(&release_of(ID, 10), 1)).status(), 403);
        // The other instance may release its own.
        assert_eq!(run(c.jit_value(&release_of(OTHER, 8), 1)).status(), 200);
        assert_eq!(deleted(&c), vec![8], "nothing of the refused ones deleted");
    }

    #[test]
    fn release_refuses_the_unsigned_the_foreign_and_the_malformed() {
        let c = with_runners();
        let good = r#"{"runner_id":7}"#;
        for e in [
            release_event(None, good),
            release_event(Some(&arn("admin", ID)), good),
            release_event(Some(&arn("runner-hosts", "alice")), good),
            release_event(
                Some(&format!("arn:aws:sts::999999999999:assumed-role/runner-hosts/{ID}")),
                good,
            ),
        ] {
            let out = run(c.jit_value(&e, 1));
            assert_eq!(out.status(), 403, "{e} -> {out:?}");
        }
        let signed = arn("runner-hosts", ID);
        for bad in [
            "",
            "{}",
            "[7]",
            "nope",
            r#"{"runner_id":"7"}"#,
            r#"{"runner_id":-7}"#,
            r#"{"runner_id":7.5}"#,
            r#"{"runner_id":0}"#,
            r#"{"runner_id":18446744073709551616}"#,
            r#"{"runner":7}"#,
        ] {
            let out = run(c.jit_value(&release_event(Some(&signed), bad), 1));
            assert_eq!(out.status(), 400, "{bad} -> {out:?}");
            assert!(body(&out)["error"].is_string());
        }
        assert_eq!(
            run(c.jit_value(&event(Some(&signed), RELEASE_PATH, "GET", ""), 1)).status(),
            405
        );
        assert_eq!(
            run(c.jit_value(&event(Some(&signed), "/jit-config/other", "POST", "{}"), 1)).status(),
            404
        );
        // Nothing reached GitHub or AWS.
        assert_eq!(c.github().calls(), 0);
        assert_eq!(c.aws().asg_calls(), 0);
        // Extra fields are ignored; a trailing slash too.
        let e = event(
            Some(&signed),
            "/jit-config/release/",
            "POST",
            r#"{"runner_id":7,"reason":"stop"}"#,
        );
        assert_eq!(run(c.jit_value(&e, 1)).status(), 200);
        // Not configured: 403.
        let c = Controller::new(
            Settings::new(["runners".to_string()]),
            FakeAws::default(),
            FakeGitHub::default(),
        );
        assert_eq!(run(c.jit_value(&release_of(ID, 7), 1)).status(), 403);
    }

    #[test]
    fn release_outages_map_like_the_mint() {
        let expect = |fail: GitHubError, status: u16, after: Option<&str>| {
            let c = with_runners();
            c.github().fail_next.lock().map(|mut f| f.push(fail)).ok();
            let out = run(c.jit_value(&release_of(ID, 7), 1));
            assert_eq!(out.status(), status, "{out:?}");
            assert_eq!(out.response()["headers"]["retry-after"].as_str(), after, "{out:?}");
            assert!(deleted(&c).is_empty());
        };
        expect(
            GitHubError::RateLimited {
                retry_after: Duration::from_secs(42),
            },
            429,
            Some("42"),
        );
        expect(GitHubError::Transient("502".into()), 503, Some("5"));
        expect(GitHubError::Forbidden("no permission".into()), 500, Some("60"));
        // The rate limit on the DELETE, after a good GET: the same answer.
        let c = with_runners();
        c.github()
            .delete_next
            .lock()
            .map(|mut d| {
                d.push(Err(GitHubError::RateLimited {
                    retry_after: Duration::from_secs(7),
                }))
            })
            .ok();
        let out = run(c.jit_value(&release_of(ID, 7), 1));
        assert_eq!(out.status(), 429, "{out:?}");
        assert_eq!(out.response()["headers"]["retry-after"], "7");
        assert_eq!(body(&out)["error"], "GitHub rate limit; retry later");
        assert!(deleted(&c).is_empty());
    }

    #[test]
    fn jit_names_tell_their_instance_strictly() {
        let p = "rle-jit-";
        assert_eq!(jit_name_instance(&format!("rle-jit-1700000000-{ID}-ab12"), p), Some(ID));
        assert_eq!(jit_name_instance(&format!("rle-jit-1-{ID}-ab12-r00ff"), p), Some(ID));
        assert_eq!(jit_name_instance("rle-jit-1-i-0123abcd-ab12", p), Some("i-0123abcd"));
        for bad in [
            ID.to_string(),
            format!("rle-jit-1700000000-{ID}"),
            format!("rle-jit-1700000000-{ID}-"),
            format!("other-1700000000-{ID}-ab12"),
            format!("rle-jit-x-{ID}-ab12"),
            format!("rle-jit--{ID}-ab12"),
            format!("rle-jit-1-junk-{ID}-ab12"),
            format!("evil-rle-jit-1-{ID}-ab12"),
            format!("rle-jit-1-{ID}0-ab12"),
            "rle-jit-1-i--ab12".to_string(),
            String::new(),
        ] {
            assert_eq!(jit_name_instance(&bad, p), None, "{bad}");
        }
        assert_eq!(jit_name_instance(&format!("rle-jit-1-{ID}-ab12"), ""), None);
    }

    proptest::proptest! {
        #[test]
        fn any_arn_or_event_is_answered_never_a_panic(a in ".{0,120}", p in ".{0,40}", b in ".{0,60}") {
            let _ = parse_assumed_role_arn(&a);
            let c = controller("InService", "runners");
            let out = run(c.jit_value(&event(Some(&a), &p, "POST", &b), 1));
            proptest::prop_assert!(out.status() != 200 || p.trim_end_matches('/') == JIT_PATH);
        }

        #[test]
        fn any_release_body_or_name_is_answered_never_a_panic(b in ".{0,60}", n in ".{0,80}") {
            let _ = jit_name_instance(&n, "rle-jit-");
            let c = with_runners();
            let out = run(c.jit_value(&release_event(Some(&arn("runner-hosts", ID)), &b), 1));
            // Only the caller's own idle registration is ever deleted.
            proptest::prop_assert!(deleted(&c).iter().all(|&id| id == 7));
            proptest::prop_assert!(out.status() != 200 || deleted(&c) == vec![7]);
        }
    }
}
