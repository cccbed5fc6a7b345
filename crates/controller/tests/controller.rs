//! The handler core against counting fakes: every committed event fixture, the call budget, the
//! sweep's decisions (agent gone, live agent, stuck, orphans), and error classification.

use lifecycle_controller::fakes::{FakeAws, FakeGitHub};
use lifecycle_controller::ports::{Member, TerminationHook};
use lifecycle_controller::{Controller, HandlerError, Outcome, Settings};
use lifecycle_core::ApiErrorKind;
use std::path::PathBuf;
use std::time::Duration;

const NOW: i64 = 1_795_862_000;
const ID: &str = "i-1234567890abcdef0";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/events")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Set a fake's knob (a fault to inject, an outage).
fn set<T>(knob: &std::sync::Mutex<T>, value: T) {
    if let Ok(mut k) = knob.lock() {
        *k = value;
    }
}

fn controller(aws: FakeAws, gh: FakeGitHub) -> Controller<FakeAws, FakeGitHub> {
    Controller::new(Settings::new(["runners".to_string()]), aws, gh)
}

fn pending(aws: &FakeAws, id: &str) {
    aws.pending.lock().map(|mut p| p.insert(id.to_string())).ok();
}

mod fixtures {
    use super::*;

    #[tokio::test]
    async fn regular_termination_is_left_to_the_agent_with_no_call() {
        let c = controller(FakeAws::default(), FakeGitHub::default());
        let out = c.handle_bytes(&read("terminate.json"), NOW).await;
        assert!(
            matches!(out, Ok(Outcome::LeftToAgent { ref instance_id }) if instance_id == ID),
            "{out:?}"
        );
        assert_eq!(
            (c.aws().asg_calls(), c.aws().secret_calls(), c.github().calls()),
            (0, 0, 0)
        );
    }

    #[tokio::test]
    async fn warm_pool_trim_is_completed_at_once_by_token() {
        let aws = FakeAws::default();
        pending(&aws, ID);
        let c = controller(aws, FakeGitHub::default());
        let out = c.handle_bytes(&read("terminate-warm-pool-trim.json"), NOW).await;
        assert!(
            matches!(
                out,
                Ok(Outcome::WarmPoolTrimCompleted {
                    already_done: false,
                    ..
                })
            ),
            "{out:?}"
        );
        let done = c.aws().completed();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].result.as_str(), "CONTINUE");
        assert_eq!(done[0].token.as_deref(), Some("0befc4b8-9ad4-4a1f-8a7b-3c9b2e1f6d45"));
        assert_eq!((c.aws().asg_calls(), c.github().calls()), (1, 0));
        // A second delivery of the same event: nothing pending any more counts as done.
        let again = c.handle_bytes(&read("terminate-warm-pool-trim.json"), NOW).await;
        assert!(
            matches!(again, Ok(Outcome::WarmPoolTrimCompleted { already_done: true, .. })),
            "{again:?}"
        );
    }

    #[tokio::test]
    async fn every_launch_fixture_stores_a_token_and_continues() {
        for name in [
            "launch.json",
            "launch-into-warm-pool.json",
            "launch-from-warm-pool.json",
        ] {
            let aws = FakeAws::default();
            pending(&aws, ID);
            let c = controller(aws, FakeGitHub::default());
            let out = c.handle_bytes(&read(name), NOW).await;
            let secret = format!("runner-lifecycle/runners/{ID}");
            assert!(
                matches!(out, Ok(Outcome::LaunchContinued { secret: ref s, .. }) if *s == secret),
                "{name}: {out:?}"
            );
            let stored = c
                .aws()
                .secrets
                .lock()
                .map(|s| s.get(&secret).cloned())
                .ok()
                .flatten()
                .unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&stored).unwrap_or_default();
            assert_eq!(v["token"], "AAFAKEREGISTRATIONTOKEN0000", "{name}");
            assert_eq!(v["expires_at"], "2030-01-01T00:00:00Z");
            assert_eq!(c.aws().completed()[0].result.as_str(), "CONTINUE");
            // The outcome (what the CLI prints and the Lambda answers) never carries the token.
            let printed = serde_json::to_string(&out.ok()).unwrap_or_default();
            assert!(!printed.contains("AAFAKE"), "{printed}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn launch_is_abandoned_when_no_token_can_be_minted() {
        // A failure retrying cannot fix (a GitHub outage is retried instead: `launch_retries`).
        let aws = FakeAws::default();
        pending(&aws, ID);
        let gh = FakeGitHub::default();
        gh.fail_next
            .lock()
            .map(|mut f| f.push(lifecycle_github::GitHubError::Unauthorized("Bad credentials".into())))
            .ok();
        let c = controller(aws, gh);
        let out = c.handle_bytes(&read("launch.json"), NOW).await;
        assert!(
            matches!(out, Ok(Outcome::LaunchAbandoned { ref reason, .. }) if reason.contains("minting")),
            "{out:?}"
        );
        assert_eq!(c.aws().completed()[0].result.as_str(), "ABANDON");
        assert!(c.aws().secrets.lock().map(|s| s.is_empty()).unwrap_or(false));
    }

    #[tokio::test]
    async fn spot_and_schedule_fixtures() {
        let aws = FakeAws::default();
        aws.members
            .lock()
            .map(|mut m| {
                m.push(Member {
                    instance_id: ID.into(),
                    state: "InService".into(),
                })
            })
            .ok();
        let c = controller(aws, FakeGitHub::default());
        let spot = c.handle_bytes(&read("spot-interruption-warning.json"), NOW).await;
        assert!(
            matches!(spot, Ok(Outcome::SpotNoted { ref action, .. }) if action == "terminate"),
            "{spot:?}"
        );
        assert_eq!(c.aws().asg_calls(), 0);
        let swept = c.handle_bytes(&read("scheduled-sweep.json"), NOW).await;
        assert!(
            matches!(swept, Ok(Outcome::Swept { ref groups }) if groups.len() == 1 && groups[0].members == 1),
            "{swept:?}"
        );
    }

    #[tokio::test]
    async fn every_malformed_fixture_is_rejected_as_not_retryable() {
        let dir = fixtures().join("malformed");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
            let path = entry.map(|e| e.path()).unwrap_or_default();
            let bytes = std::fs::read(&path).unwrap_or_default();
            let c = controller(FakeAws::default(), FakeGitHub::default());
            match c.handle_bytes(&bytes, NOW).await {
                Err(e @ HandlerError::Event(_)) => {
                    assert!(!e.is_retryable(), "{}", path.display());
                    assert!(!e.to_string().is_empty());
                }
                other => panic!("{}: {other:?}", path.display()),
            }
            assert_eq!(c.aws().asg_calls() + c.github().calls(), 0);
            seen += 1;
        }
        assert!(seen >= 8, "only {seen} malformed fixtures");
    }

    #[tokio::test]
    async fn events_of_other_groups_are_ignored() {
        let text = String::from_utf8(read("terminate-warm-pool-trim.json")).unwrap_or_default();
        let other = text.replace(
            "\"AutoScalingGroupName\": \"runners\"",
            "\"AutoScalingGroupName\": \"someone-elses\"",
        );
        let c = controller(FakeAws::default(), FakeGitHub::default());
        let out = c.handle_bytes(other.as_bytes(), NOW).await;
        assert!(
            matches!(out, Ok(Outcome::Ignored { ref group }) if group == "someone-elses"),
            "{out:?}"
        );
        assert_eq!(c.aws().asg_calls(), 0);
    }
}

mod sweep {
    use super::*;
    use lifecycle_controller::sweep::{metrics_line, sweep};

    const WAITING: &str = "i-0aaaaaaaaaaaaaaa1";

    fn world(state: &str, entered: i64, runner_status: Option<(&str, bool)>) -> (FakeAws, FakeGitHub) {
        let aws = FakeAws::default();
        aws.members
            .lock()
            .map(|mut m| {
                m.push(Member {
                    instance_id: WAITING.into(),
                    state: state.into(),
                })
            })
            .ok();
        aws.known.lock().map(|mut k| k.insert(WAITING.into())).ok();
        aws.hooks
            .lock()
            .map(|mut h| {
                h.push(TerminationHook {
                    name: "drain".into(),
                    heartbeat_timeout_s: 3600,
                })
            })
            .ok();
        aws.since.lock().map(|mut s| s.insert(WAITING.into(), entered)).ok();
        pending(&aws, WAITING);
        let gh = FakeGitHub::default();
        if let Some((status, busy)) = runner_status {
            gh.runners
                .lock()
                .map(|mut r| r.push(FakeGitHub::runner(1, WAITING, "runners", status, busy)))
                .ok();
        }
        (aws, gh)
    }

    #[tokio::test]
    async fn agent_gone_is_completed_after_the_grace_only() {
        let settings = Settings::new(["runners".to_string()]);
        // Runner offline, 10 minutes in Terminating:Wait: nobody can hold a job there.
        let (aws, gh) = world("Terminating:Wait", NOW - 600, Some(("offline", false)));
        let r = sweep(&settings, &aws, &gh, "runners", NOW)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.completed_agent_gone, vec![WAITING.to_string()]);
        assert_eq!(aws.completed()[0].result.as_str(), "CONTINUE");
        // The same, but only one minute in: within the grace.
        let (aws, gh) = world("Terminating:Wait", NOW - 60, Some(("offline", false)));
        let r = sweep(&settings, &aws, &gh, "runners", NOW)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.completed_agent_gone.is_empty() && r.left_to_agent == vec![WAITING.to_string()]);
        assert!(aws.completed().is_empty());
        // Never registered at all (the agent never started): also gone.
        let (aws, gh) = world("Terminating:Wait", NOW - 600, None);
        let r = sweep(&settings, &aws, &gh, "runners", NOW)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.completed_agent_gone, vec![WAITING.to_string()]);
    }

    #[tokio::test]
    async fn a_live_runner_is_never_completed() {
        let settings = Settings::new(["runners".to_string()]);
        for status in [("online", false), ("online", true), ("offline", true)] {
            let (aws, gh) = world("Terminating:Wait", NOW - 1800, Some(status));
            let r = sweep(&settings, &aws, &gh, "runners", NOW)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(r.completed_agent_gone.is_empty(), "{status:?}");
            assert!(aws.completed().is_empty(), "{status:?}");
        }
        // Past the HeartbeatTimeout the hook has been heartbeated: a live agent with a job.
        let (aws, gh) = world("Terminating:Wait", NOW - 4000, Some(("offline", false)));
        let r = sweep(&settings, &aws, &gh, "runners", NOW)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.completed_agent_gone.is_empty() && aws.completed().is_empty());
    }

    #[tokio::test]
    async fn without_github_nothing_is_completed() {
        let settings = Settings::new(["runners".to_string()]);
        let (aws, gh) = world("Terminating:Wait", NOW - 600, None);
        set(&gh.down, true);
        let r = sweep(&settings, &aws, &gh, "runners", NOW)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!r.github_available && r.completed_agent_gone.is_empty() && aws.completed().is_empty());
    }

    #[tokio::test]
    async fn stuck_instances_are_reported_and_completed_only_on_opt_in() {
        let mut settings = Settings::new(["runners".to_string()]);
        settings.stuck_after = Duration::from_secs(7200);
        let (aws, gh) = world("Terminating:Wait", NOW - 8000, Some(("online", true)));
        let r = sweep(&settings, &aws, &gh, "runners", NOW)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.stuck, vec![WAITING.to_string()]);
        assert!(aws.completed().is_empty());
        assert!(metrics_line(&r, 0).contains("\"StuckTerminatingInstances\":1"));
        settings.complete_stuck = true;
        let (aws, gh) = world("Terminating:Wait", NOW - 8000, Some(("online", true)));
        let r = sweep(&settings, &aws, &gh, "runners", NOW)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.completed_stuck, vec![WAITING.to_string()]);
        assert_eq!(aws.completed().len(), 1);
    }

    #[tokio::test]
    async fn removes_exactly_the_orphans() {
        let settings = Settings::new(["runners".to_string()]);
        let aws = FakeAws::default();
        let member = "i-0bbbbbbbbbbbbbbb1";
        let warmed = "i-0bbbbbbbbbbbbbbb2"; // in the warm pool: not a member, but known
        let gone = "i-0bbbbbbbbbbbbbbb3";
        let gone_online = "i-0bbbbbbbbbbbbbbb4";
        aws.members
            .lock()
            .map(|mut m| {
                m.push(Member {
                    instance_id: member.into(),
                    state: "InService".into(),
                })
            })
            .ok();
        aws.known
            .lock()
            .map(|mut k| {
                k.insert(member.into());
                k.insert(warmed.into());
            })
            .ok();
        aws.secrets
            .lock()
            .map(|mut s| {
                for id in [member, warmed, gone] {
                    s.insert(format!("runner-lifecycle/runners/{id}"), "{}".into());
                }
                s.insert(format!("runner-lifecycle/other-group/{gone}"), "{}".into());
            })
            .ok();
        let gh = FakeGitHub::default();
        gh.runners
            .lock()
            .map(|mut r| {
                r.push(FakeGitHub::runner(1, member, "runners", "online", false));
                r.push(FakeGitHub::runner(2, warmed, "runners", "offline", false));
                r.push(FakeGitHub::runner(3, gone, "runners", "offline", false));
                r.push(FakeGitHub::runner(4, gone_online, "runners", "online", false));
                r.push(FakeGitHub::runner(5, gone, "other-group", "offline", false));
            })
            .ok();
        let r = sweep(&settings, &aws, &gh, "runners", NOW)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.runners_deleted, vec![gone.to_string()]);
        assert_eq!(r.runners_kept_online, vec![gone_online.to_string()]);
        assert_eq!(*gh.deleted.lock().unwrap_or_else(|e| e.into_inner()), vec![3]);
        assert_eq!(r.secrets_deleted, vec![format!("runner-lifecycle/runners/{gone}")]);
        let left: Vec<String> = aws
            .secrets
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(left.len(), 3, "{left:?}");
    }

    #[tokio::test]
    async fn a_failing_group_does_not_stop_the_others() {
        // Two groups, AWS refusing everything: permanent failures are reported per group.
        let aws = FakeAws::default();
        set(&aws.fail, Some(ApiErrorKind::AccessDenied));
        let c = Controller::new(
            Settings::new(["a".to_string(), "b".to_string()]),
            aws,
            FakeGitHub::default(),
        );
        let out = c.handle_bytes(&read("scheduled-sweep.json"), NOW).await;
        match out {
            Ok(Outcome::Swept { groups }) => {
                assert_eq!(groups.len(), 2);
                assert!(groups.iter().all(|g| g.warnings[0].starts_with("sweep failed")));
            }
            other => panic!("{other:?}"),
        }
        // Throttling: both groups are tried, then the error is returned for a retry.
        let aws = FakeAws::default();
        set(&aws.fail, Some(ApiErrorKind::Throttled));
        let c = Controller::new(
            Settings::new(["a".to_string(), "b".to_string()]),
            aws,
            FakeGitHub::default(),
        );
        let out = c.handle_bytes(&read("scheduled-sweep.json"), NOW).await;
        assert!(out.as_ref().is_err_and(HandlerError::is_retryable), "{out:?}");
        assert_eq!(c.aws().asg_calls(), 2);
    }

    #[tokio::test]
    async fn aws_failures_are_classified() {
        let settings = Settings::new(["runners".to_string()]);
        let (aws, gh) = world("InService", NOW, None);
        set(&aws.fail, Some(ApiErrorKind::Throttled));
        let err = sweep(&settings, &aws, &gh, "runners", NOW).await.err();
        assert!(err.as_ref().is_some_and(HandlerError::is_retryable), "{err:?}");
        set(&aws.fail, Some(ApiErrorKind::AccessDenied));
        let err = sweep(&settings, &aws, &gh, "runners", NOW).await.err();
        assert!(err.as_ref().is_some_and(|e| !e.is_retryable()), "{err:?}");
    }
}

/// Launch retries (crate `retry` drives them): paused tokio time, so minutes of backoff take
/// milliseconds. The launch fixture's action began at 10:31:04, `NOW` is 10:33:20: with a 300 s
/// hook, 164 s are left when the handler starts.
mod launch_retries {
    use super::*;
    use lifecycle_github::GitHubError;
    use tokio::time::{Duration as TDuration, Instant};

    fn launch_world(hook_timeout: Option<u64>) -> (FakeAws, FakeGitHub) {
        let aws = FakeAws::default();
        pending(&aws, ID);
        if let Some(t) = hook_timeout {
            aws.hook_timeouts
                .lock()
                .map(|mut h| h.insert("register".into(), t))
                .ok();
        }
        (aws, FakeGitHub::default())
    }

    fn fail_github(gh: &FakeGitHub, errors: Vec<GitHubError>) {
        set(&gh.fail_next, errors);
    }

    fn transient(n: usize) -> Vec<GitHubError> {
        (0..n)
            .map(|_| GitHubError::Transient("HTTP 503: injected".into()))
            .collect()
    }

    fn results(aws: &FakeAws) -> Vec<&'static str> {
        aws.completed().iter().map(|c| c.result.as_str()).collect()
    }

    /// One GitHub rate limit asking to wait `secs`.
    fn rate_limit(secs: u64) -> Vec<GitHubError> {
        vec![GitHubError::RateLimited {
            retry_after: TDuration::from_secs(secs),
        }]
    }

    /// The heartbeats sent so far.
    fn heartbeats(aws: &FakeAws) -> usize {
        aws.heartbeats.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// The launch fixture handled at `at`, and how long that took (tokio's paused time).
    async fn handle_launch(c: &Controller<FakeAws, FakeGitHub>, at: i64) -> (Result<Outcome, HandlerError>, TDuration) {
        let t0 = Instant::now();
        let out = c.handle_bytes(&read("launch.json"), at).await;
        (out, t0.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn github_5xx_is_retried_then_the_launch_continues() {
        let (aws, gh) = launch_world(Some(300));
        fail_github(&gh, transient(3));
        let c = controller(aws, gh);
        let (out, waited) = handle_launch(&c, NOW).await;
        assert!(matches!(out, Ok(Outcome::LaunchContinued { .. })), "{out:?}");
        assert_eq!(results(c.aws()), ["CONTINUE"]);
        assert_eq!(c.github().calls(), 4);
        // Backoff 2, 4, 8 s, each scaled by 0.5..1 jitter.
        assert!(
            waited >= TDuration::from_secs(7) && waited <= TDuration::from_secs(14),
            "{waited:?}"
        );
        // One DescribeLifecycleHooks (only because something failed), no heartbeat: 164 s left.
        assert_eq!(c.aws().asg_calls(), 2);
        assert!(c.aws().heartbeats.lock().map(|h| h.is_empty()).unwrap_or(false));
    }

    #[tokio::test(start_paused = true)]
    async fn bad_credentials_abandon_at_once() {
        for e in [
            GitHubError::Unauthorized("Bad credentials".into()),
            GitHubError::Forbidden("Resource not accessible by integration".into()),
            GitHubError::NotFound {
                what: "organization acme".into(),
                message: "Not Found".into(),
            },
            GitHubError::Unexpected {
                status: 422,
                message: "Validation Failed".into(),
            },
        ] {
            let (aws, gh) = launch_world(Some(300));
            fail_github(&gh, vec![e]);
            let c = controller(aws, gh);
            let (out, waited) = handle_launch(&c, NOW).await;
            assert!(
                matches!(out, Ok(Outcome::LaunchAbandoned { ref reason, .. }) if reason.contains("retrying cannot fix")),
                "{out:?}"
            );
            assert_eq!(results(c.aws()), ["ABANDON"]);
            // No wait, no second GitHub call, no DescribeLifecycleHooks: the completion only.
            assert_eq!((c.github().calls(), c.aws().asg_calls()), (1, 1));
            assert_eq!(waited, TDuration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_is_waited_out() {
        let (aws, gh) = launch_world(Some(300));
        fail_github(&gh, rate_limit(45));
        let c = controller(aws, gh);
        let (out, waited) = handle_launch(&c, NOW).await;
        assert!(matches!(out, Ok(Outcome::LaunchContinued { .. })), "{out:?}");
        assert!(waited >= TDuration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_describe_lifecycle_hooks_with_a_github_503_is_retried_not_abandoned() {
        // Issue 16: DescribeLifecycleHooks throttled while GitHub answers 503. The controller used
        // to assume a 30 s hook (spent: the action began 136 s ago) and abandoned within 2 s.
        let (aws, gh) = launch_world(Some(300));
        set(&aws.fail_hook_reads, Some((2, ApiErrorKind::Throttled)));
        fail_github(&gh, transient(3));
        let c = controller(aws, gh);
        let (out, waited) = handle_launch(&c, NOW).await;
        assert!(matches!(out, Ok(Outcome::LaunchContinued { .. })), "{out:?}");
        assert_eq!(results(c.aws()), ["CONTINUE"]);
        assert_eq!(c.github().calls(), 4);
        assert!(waited >= TDuration::from_secs(3), "{:?}", waited);
        // Held by heartbeats while the timeout was unknown (as if it were the 30 s minimum).
        let beats = heartbeats(c.aws());
        assert!(beats >= 1, "{beats} heartbeats");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_hook_with_throttled_heartbeats_is_still_not_abandoned() {
        let (aws, gh) = launch_world(None);
        set(&aws.fail_heartbeats, Some(ApiErrorKind::Throttled));
        fail_github(&gh, transient(2));
        let c = controller(aws, gh);
        let out = c.handle_bytes(&read("launch.json"), NOW).await;
        assert!(matches!(out, Ok(Outcome::LaunchContinued { .. })), "{out:?}");
        assert_eq!(results(c.aws()), ["CONTINUE"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_longer_than_the_heartbeat_timeout_is_held_by_heartbeats() {
        // Issue 16: a GitHub rate limit that outlasts the hook's HeartbeatTimeout (60 s) used to
        // abandon the launch at once. It is waited out, the hook heartbeated as often as it needs.
        let (aws, gh) = launch_world(Some(60));
        fail_github(&gh, rate_limit(300));
        let c = controller(aws, gh);
        let (out, waited) = handle_launch(&c, NOW - 120).await;
        assert!(matches!(out, Ok(Outcome::LaunchContinued { .. })), "{out:?}");
        assert_eq!(results(c.aws()), ["CONTINUE"]);
        assert!(waited >= TDuration::from_secs(300));
        // At least one heartbeat per 60 s of the wait.
        let beats = heartbeats(c.aws());
        assert!(beats >= 5, "{beats} heartbeats over a 300 s wait on a 60 s hook");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_global_timeout_abandons_at_once() {
        // A 30 s hook waits at most 100 x 30 s = 3000 s in all: a 4000 s rate limit cannot be held.
        let (aws, gh) = launch_world(Some(30));
        fail_github(&gh, rate_limit(4000));
        let c = controller(aws, gh);
        let (out, waited) = handle_launch(&c, NOW - 120).await;
        assert!(
            matches!(out, Ok(Outcome::LaunchAbandoned { ref reason, .. }) if reason.contains("nearly out")),
            "{out:?}"
        );
        assert_eq!(waited, TDuration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn storing_is_retried_on_throttling_and_abandoned_on_access_denied() {
        let (aws, gh) = launch_world(Some(300));
        set(&aws.fail_puts, Some((2, ApiErrorKind::Throttled)));
        let c = controller(aws, gh);
        let out = c.handle_bytes(&read("launch.json"), NOW).await;
        assert!(matches!(out, Ok(Outcome::LaunchContinued { .. })), "{out:?}");
        assert_eq!(c.github().calls(), 3);

        let (aws, gh) = launch_world(Some(300));
        set(&aws.fail_puts, Some((1, ApiErrorKind::AccessDenied)));
        let c = controller(aws, gh);
        let out = c.handle_bytes(&read("launch.json"), NOW).await;
        assert!(matches!(out, Ok(Outcome::LaunchAbandoned { .. })), "{out:?}");
        assert_eq!(c.github().calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_hook_is_heartbeated_when_retries_approach_its_timeout() {
        // A 50 s hook that began 16 s ago (34 s left): the first retry already needs a heartbeat.
        let (aws, gh) = launch_world(Some(50));
        fail_github(&gh, transient(2));
        let c = controller(aws, gh);
        let out = c.handle_bytes(&read("launch.json"), NOW - 120).await;
        assert!(matches!(out, Ok(Outcome::LaunchContinued { .. })), "{out:?}");
        let beats = c.aws().heartbeats.lock().map(|h| h.clone()).unwrap_or_default();
        assert!(!beats.is_empty() && beats.iter().all(|b| b == ID), "{beats:?}");
        assert_eq!(results(c.aws()), ["CONTINUE"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hook_that_cannot_be_heartbeated_is_abandoned_before_its_time_runs_out() {
        let (aws, gh) = launch_world(Some(60));
        set(&aws.fail_heartbeats, Some(ApiErrorKind::AccessDenied));
        set(&gh.down, true);
        let c = controller(aws, gh);
        let (out, waited) = handle_launch(&c, NOW - 120).await;
        assert!(
            matches!(out, Ok(Outcome::LaunchAbandoned { ref reason, .. }) if reason.contains("nearly out")),
            "{out:?}"
        );
        assert_eq!(results(c.aws()), ["ABANDON"]);
        // Abandoned while the hook (60 s, begun 16 s ago) was still alive, with the reserve left.
        assert!(waited <= TDuration::from_secs(44 - 40), "{:?}", waited);
    }

    #[tokio::test(start_paused = true)]
    async fn an_action_gone_meanwhile_is_left_alone() {
        // By the event's time the 300 s hook is over; the heartbeat finds nothing pending.
        let (aws, gh) = launch_world(Some(300));
        aws.pending.lock().map(|mut p| p.clear()).ok();
        fail_github(&gh, transient(1));
        let c = controller(aws, gh);
        let out = c.handle_bytes(&read("launch.json"), NOW + 600).await;
        assert!(matches!(out, Ok(Outcome::LaunchExpired { .. })), "{out:?}");
        assert!(c.aws().completed().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_invocation_deadline_hands_the_event_back_with_a_heartbeat() {
        // A 60 s Lambda and GitHub down: a few retries, then a retryable error (Lambda's retry
        // redelivers the event) and the hook stays pending.
        let (aws, gh) = launch_world(Some(120));
        set(&gh.down, true);
        let c = controller(aws, gh);
        let t0 = Instant::now();
        let deadline = t0 + TDuration::from_secs(60);
        let event = lifecycle_controller::event::parse(&read("launch.json")).unwrap_or_else(|e| panic!("{e}"));
        let out = c.handle_until(event, NOW, Some(deadline)).await;
        assert!(out.as_ref().is_err_and(HandlerError::is_retryable), "{out:?}");
        assert!(Instant::now() < deadline, "returned after the deadline");
        assert!(c.github().calls() >= 2);
        assert!(c.aws().completed().is_empty(), "nothing completed: the redelivery will");
        // 120 s hook, began 136 s before NOW: its estimate is spent, so the hand-back heartbeats.
        assert_eq!(heartbeats(c.aws()), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_the_retry_budget_ends_it() {
        let (aws, gh) = launch_world(Some(7200));
        set(&gh.down, true);
        let mut settings = Settings::new(["runners".to_string()]);
        settings.launch_retry_for = Duration::from_secs(120);
        let c = Controller::new(settings, aws, gh);
        let t0 = Instant::now();
        let out = c.handle_bytes(&read("launch.json"), NOW).await;
        assert!(out.as_ref().is_err_and(HandlerError::is_retryable), "{out:?}");
        assert!(t0.elapsed() <= TDuration::from_secs(120));
    }

    #[tokio::test]
    async fn the_secret_is_tagged_with_the_instance_arn() {
        let (aws, gh) = launch_world(Some(300));
        let c = controller(aws, gh);
        let out = c.handle_bytes(&read("launch.json"), NOW).await;
        assert!(matches!(out, Ok(Outcome::LaunchContinued { .. })), "{out:?}");
        let tags = c.aws().secret_tags.lock().map(|t| t.clone()).unwrap_or_default();
        assert_eq!(
            tags.get(&format!("runner-lifecycle/runners/{ID}")),
            Some(&vec![(
                "runner-lifecycle-instance-arn".to_string(),
                format!("arn:aws:ec2:us-east-1:123456789012:instance/{ID}")
            )])
        );
    }
}
