//! Contract tests: every request of the client against an emulator of GitHub's REST API. They need
//! the emulator's URL, so they are `#[ignore]`d in a plain `cargo test`; tests/controller's
//! test_github_contract.py starts the emulators and runs them with `--ignored`:
//!
//! - `RLE_GITHUB_PRISM_URL`: Prism serving GitHub's official OpenAPI description (validates each
//!   request, answers with the description's examples);
//! - `RLE_GITHUB_FAKE_URL` + `RLE_GITHUB_FAKE_TOKEN`: the stateful fake (one runner by id, delete
//!   then 404, busy 422, pagination, App installation tokens, JIT name conflicts, the never-online
//!   sweep).

use lifecycle_github::{Auth, Deleted, GitHubClient, GitHubError, JitRequest, Options, Scope, Secret};
use std::collections::BTreeSet;
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
        work_folder: Some("_work".into()),
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
            .generate_jit_config(&jit())
            .await
            .unwrap_or_else(|e| panic!("{scope}: jit: {e}"));
        assert!(!jit.encoded_jit_config.is_empty() && jit.runner.id > 0);
        // The sweep only lists here: the description's example runners lack the prefix.
        let sweep = c
            .delete_runners_never_online("rle-", Duration::from_secs(600))
            .await
            .unwrap_or_else(|e| panic!("{scope}: sweep: {e}"));
        assert!(sweep.deleted.is_empty() && sweep.kept == 0, "{sweep:?}");
        let one = c.get_runner(23).await.unwrap_or_else(|e| panic!("{scope}: get: {e}"));
        assert!(
            one.is_some_and(|r| r.id > 0 && !r.name.is_empty()),
            "{scope}: the description's example is a runner"
        );
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
    assert!(c.get_runner(busy).await.is_ok_and(|r| r.is_some_and(|r| r.busy)));
    assert!(c.get_runner(idle).await.is_ok_and(|r| r.is_some_and(|r| !r.busy)));
    assert_eq!(c.delete_runner(idle).await.ok(), Some(Deleted::Deleted));
    assert_eq!(c.delete_runner(idle).await.ok(), Some(Deleted::AlreadyGone));
    // Gone: GitHub answers 404, the client None.
    assert!(matches!(c.get_runner(idle).await, Ok(None)));
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

#[tokio::test]
#[ignore = "needs the stateful fake (tests/controller/test_github_contract.py)"]
async fn jit_conflicts_and_the_never_online_sweep_against_the_fake() {
    // The fake holds `rle-c-1000-taken` (connected once) and, named with a creation time an hour
    // ago (`OLD`) or 30 s ago, the cases of the sweep rule; RLE_GITHUB_FAKE_FAILS-style
    // injection makes the 3rd and 4th requests answer 409.
    let api = url("RLE_GITHUB_FAKE_URL");
    let c = client(&api, org(), Auth::Token(Secret::new(url("RLE_GITHUB_FAKE_TOKEN"))));
    let request = JitRequest::new("rle-c-1000-taken", 1, vec!["rle-test".into()]);
    // 1: 409 (taken), 2: 201 under a fresh name; the holder is not deleted.
    let jit = c
        .generate_jit_config(&request)
        .await
        .unwrap_or_else(|e| panic!("409 then a fresh name: {e}"));
    assert!(
        jit.runner.name.starts_with("rle-c-1000-taken-r") && jit.runner.name.len() == "rle-c-1000-taken-r".len() + 4
    );
    assert!(!format!("{jit:?}").contains(jit.encoded_jit_config.expose()));
    // 3, 4: 409 twice: a clear error naming the last name tried.
    let err = c
        .generate_jit_config(&JitRequest::new("rle-c-1000-other", 1, vec!["x".into()]))
        .await
        .err();
    assert!(
        matches!(&err, Some(GitHubError::NameConflict { name, .. }) if name.starts_with("rle-c-1000-other-r")),
        "{err:?}"
    );
    // A body GitHub would refuse is refused before any request.
    let err = c
        .generate_jit_config(&JitRequest::new("rle-c-1-x", 1, vec![]))
        .await
        .err();
    assert!(matches!(err, Some(GitHubError::Config(_))), "{err:?}");
    let sweep = c
        .delete_runners_never_online("rle-c-", Duration::from_secs(600))
        .await
        .unwrap_or_else(|e| panic!("sweep: {e}"));
    let deleted: BTreeSet<&str> = sweep.deleted.iter().map(|(_, n)| n.as_str()).collect();
    let old = url("RLE_GITHUB_FAKE_OLD");
    let never = format!("rle-c-{old}-never");
    assert_eq!(deleted, BTreeSet::from([never.as_str(), jit.runner.name.as_str()]));
    assert_eq!(sweep.kept, 6, "{sweep:?}");
    assert!(sweep.already_gone.is_empty() && sweep.refused_busy.is_empty());
    // Nothing left to do the second time.
    let again = c
        .delete_runners_never_online("rle-c-", Duration::from_secs(600))
        .await
        .unwrap_or_else(|e| panic!("sweep: {e}"));
    assert!(again.deleted.is_empty() && again.kept == 6, "{again:?}");
    let err = c.delete_runners_never_online("", Duration::from_secs(600)).await.err();
    assert!(matches!(err, Some(GitHubError::Config(_))), "{err:?}");
}
