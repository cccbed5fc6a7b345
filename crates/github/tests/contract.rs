//! Contract tests: every request of the client against an emulator of GitHub's REST API. They need
//! the emulator's URL, so they are `#[ignore]`d in a plain `cargo test`; tests/controller's
//! test_github_contract.py starts the emulators and runs them with `--ignored`:
//!
//! - `RLE_GITHUB_PRISM_URL`: Prism serving GitHub's official OpenAPI description (validates each
//!   request, answers with the description's examples);
//! - `RLE_GITHUB_FAKE_URL` + `RLE_GITHUB_FAKE_TOKEN`: the stateful fake (delete then 404, busy
//!   422, pagination, App installation tokens).

use lifecycle_github::{Auth, Deleted, GitHubClient, GitHubError, JitRequest, Options, Scope, Secret};
use std::time::Duration;

fn url(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set (run through tests/controller/test_github_contract.py)"))
}

fn client(api: &str, scope: Scope, auth: Auth) -> GitHubClient {
    let opts = Options {
        api_url: api.to_string(),
        request_timeout: Duration::from_secs(10),
        max_attempts: 2,
        max_rate_limit_wait: Duration::from_secs(3),
    };
    GitHubClient::new(scope, auth, opts).unwrap_or_else(|e| panic!("{e}"))
}

/// An organisation client authenticating as the test GitHub App (installation 42).
fn app_client(api: &str) -> GitHubClient {
    let key = lifecycle_github::AppKey::from_pem(&test_key()).unwrap_or_else(|e| panic!("{e}"));
    client(
        api,
        org(),
        Auth::App {
            app_id: "12345".into(),
            installation_id: 42,
            key,
        },
    )
}

fn org() -> Scope {
    Scope::Org("acme".into())
}

fn repo() -> Scope {
    Scope::Repo {
        owner: "acme".into(),
        repo: "infra".into(),
    }
}

fn jit() -> JitRequest {
    JitRequest {
        name: "jit-runner-1".into(),
        runner_group_id: 1,
        labels: vec!["self-hosted".into(), "i-0123456789abcdef0".into()],
        work_folder: "_work".into(),
    }
}

fn test_key() -> String {
    std::fs::read_to_string(url("RLE_GITHUB_APP_KEY_FILE")).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
#[ignore = "needs the Prism emulator (tests/controller/test_github_contract.py)"]
async fn every_request_is_valid_against_the_official_description() {
    let api = url("RLE_GITHUB_PRISM_URL");
    for scope in [org(), repo()] {
        let c = client(&api, scope.clone(), Auth::Token(Secret::new("ghp_contracttest")));
        let runners = c.list_runners().await.unwrap_or_else(|e| panic!("{scope}: list: {e}"));
        assert!(!runners.is_empty(), "{scope}: the description's example lists runners");
        assert!(runners.iter().all(|r| r.id > 0 && !r.name.is_empty()));
        let token = c
            .registration_token()
            .await
            .unwrap_or_else(|e| panic!("{scope}: token: {e}"));
        assert!(!token.token.is_empty() && lifecycle_github::time::parse_rfc3339(&token.expires_at).is_some());
        let jit = c
            .generate_jitconfig(&jit())
            .await
            .unwrap_or_else(|e| panic!("{scope}: jit: {e}"));
        assert!(!jit.encoded_jit_config.is_empty() && jit.runner.id > 0);
        assert_eq!(
            c.delete_runner(23)
                .await
                .unwrap_or_else(|e| panic!("{scope}: delete: {e}")),
            Deleted::Deleted
        );
    }
    // The scaling reconcile's reads: queued and in-progress runs, and one run's jobs.
    let c = client(&api, repo(), Auth::Token(Secret::new("ghp_contracttest")));
    for status in ["queued", "in_progress"] {
        let runs = c
            .workflow_runs("acme", "infra", status)
            .await
            .unwrap_or_else(|e| panic!("runs {status}: {e}"));
        assert!(
            !runs.is_empty() && runs.iter().all(|r| r.id > 0),
            "the example lists runs"
        );
    }
    let jobs = c
        .run_jobs("acme", "infra", 30433642)
        .await
        .unwrap_or_else(|e| panic!("jobs: {e}"));
    assert!(!jobs.is_empty() && jobs.iter().all(|j| j.id > 0 && !j.status.is_empty()));
    // As a GitHub App: the installation token request, then a call with the token.
    let app = app_client(&api);
    app.registration_token().await.unwrap_or_else(|e| panic!("app: {e}"));
}

#[tokio::test]
#[ignore = "needs the stateful fake (tests/controller/test_github_contract.py)"]
async fn stateful_behaviour_against_the_fake() {
    let api = url("RLE_GITHUB_FAKE_URL");
    let token = Secret::new(url("RLE_GITHUB_FAKE_TOKEN"));
    let c = client(&api, org(), Auth::Token(token.clone()));
    // The fake holds 250 runners with a page size of 100: three pages through the Link header.
    let all = c.list_runners().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 250);
    let labelled = c
        .runners_with_label("asg-runners")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(labelled.len(), 2);
    let busy = labelled.iter().find(|r| r.busy).map(|r| r.id).unwrap_or_default();
    let idle = labelled.iter().find(|r| !r.busy).map(|r| r.id).unwrap_or_default();
    assert!(matches!(
        c.delete_runner(busy).await,
        Err(GitHubError::RunnerBusy { .. })
    ));
    assert_eq!(c.delete_runner(idle).await.ok(), Some(Deleted::Deleted));
    assert_eq!(c.delete_runner(idle).await.ok(), Some(Deleted::AlreadyGone));
    // Wrong credentials: a clear 401, never the token in the text.
    let bad = client(&api, org(), Auth::Token(Secret::new("ghp_wrongwrongwrong")));
    let err = bad
        .list_runners()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("401") && !err.contains("ghp_wrong"), "{err}");
    // An App: one installation token serves many calls (cached until shortly before expiry).
    let app = app_client(&api);
    for _ in 0..3 {
        app.registration_token().await.unwrap_or_else(|e| panic!("app: {e}"));
    }
    assert_eq!(app.requests_made(), 4, "one token request, three calls");
}

#[tokio::test]
#[ignore = "needs the stateful fake (tests/controller/test_github_contract.py)"]
async fn rate_limits_and_server_errors() {
    // The fake answers the next requests with the statuses listed in RLE_GITHUB_FAKE_FAILS order:
    // 502 then success (retried), then 429 with no Retry-After beyond the client's wait budget.
    let api = url("RLE_GITHUB_FAKE_URL");
    let c = client(&api, org(), Auth::Token(Secret::new(url("RLE_GITHUB_FAKE_TOKEN"))));
    c.registration_token()
        .await
        .unwrap_or_else(|e| panic!("a 502 is retried: {e}"));
    let err = c.registration_token().await.err();
    assert!(matches!(err, Some(GitHubError::RateLimited { .. })), "{err:?}");
    assert!(err.is_some_and(|e| e.is_retryable()));
    // `Retry-After: 0` forever: the client gives up after a few waits instead of spinning.
    let err = c.registration_token().await.err();
    assert!(matches!(err, Some(GitHubError::RateLimited { .. })), "{err:?}");
}
