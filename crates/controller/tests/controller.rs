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

    #[tokio::test]
    async fn launch_is_abandoned_when_no_token_can_be_minted() {
        let aws = FakeAws::default();
        pending(&aws, ID);
        let gh = FakeGitHub::default();
        gh.down.lock().map(|mut d| *d = true).ok();
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
        gh.down.lock().map(|mut d| *d = true).ok();
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
        aws.fail.lock().map(|mut f| *f = Some(ApiErrorKind::AccessDenied)).ok();
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
        aws.fail.lock().map(|mut f| *f = Some(ApiErrorKind::Throttled)).ok();
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
        aws.fail.lock().map(|mut f| *f = Some(ApiErrorKind::Throttled)).ok();
        let err = sweep(&settings, &aws, &gh, "runners", NOW).await.err();
        assert!(err.as_ref().is_some_and(HandlerError::is_retryable), "{err:?}");
        aws.fail.lock().map(|mut f| *f = Some(ApiErrorKind::AccessDenied)).ok();
        let err = sweep(&settings, &aws, &gh, "runners", NOW).await.err();
        assert!(err.as_ref().is_some_and(|e| !e.is_retryable()), "{err:?}");
    }
}
