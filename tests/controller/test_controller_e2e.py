"""`runner-lifecycle controller` end to end: the real binary against the moto-based Auto Scaling and
Secrets Manager emulator (tests/support) and the stateful GitHub fake, all on 127.0.0.1."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"
GONE = "i-0dead0000000000d1"
GONE_ONLINE = "i-0dead0000000000d2"


@pytest.fixture
def env(aws_x: Any, aws_env: Any, fake_github: Any) -> dict[str, str]:
    return aws_env(
        RUNNER_LIFECYCLE_CONTROLLER_GROUPS="runners",
        RUNNER_LIFECYCLE_GITHUB_URL="https://github.com/acme",
        RUNNER_LIFECYCLE_GITHUB_API_URL=fake_github.url,
        RUNNER_LIFECYCLE_GITHUB_TOKEN=fake_github.token,
    )


def event(name: str, instance_id: str | None = None, token: str | None = None) -> str:
    e = json.loads((FIXTURES / name).read_text())
    if instance_id:
        e["detail"]["EC2InstanceId"] = instance_id
    if token:
        e["detail"]["LifecycleActionToken"] = token
    return json.dumps(e)


def handle(run_bin: Any, env: dict[str, str], text: str, *extra: str) -> Any:
    return run_bin(["controller", "handle-event", "--event", "-", *extra], env, input=text)


def outcome(result: Any) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def scale_in(aws: Any, to: int = 1) -> None:
    aws.client("autoscaling").set_desired_capacity(AutoScalingGroupName="runners", DesiredCapacity=to)


def test_every_fixture_is_handled_or_rejected_clearly(aws_x: Any, env: dict[str, str], run_bin: Any) -> None:
    aws_x.create_group(size=1)
    for path in sorted(FIXTURES.glob("*.json")):
        r = handle(run_bin, env, path.read_text())
        assert r.returncode == 0, f"{path.name}: {r.stderr}"
        assert "outcome" in json.loads(r.stdout.strip().splitlines()[-1]), path.name
    for path in sorted((FIXTURES / "malformed").glob("*.json")):
        r = handle(run_bin, env, path.read_text())
        assert r.returncode == 24, f"{path.name}: exit {r.returncode}: {r.stderr}"
        assert "event rejected" in r.stderr and "retryable: false" in r.stderr, path.name
        assert "panicked" not in r.stderr and r.stdout == "", path.name


def test_warm_pool_trim_is_completed_at_once(aws_x: Any, env: dict[str, str], run_bin: Any) -> None:
    # moto has no warm pools: the pending termination action stands in for Warmed:Terminating:Wait;
    # what is tested is that an Origin=WarmPool event completes it at once, by token, with CONTINUE.
    ids = aws_x.create_group(size=2, hook_timeout=300)
    scale_in(aws_x)
    [action] = aws_x.pending_actions(ids[0])
    since = time.monotonic()
    r = handle(run_bin, env, event("terminate-warm-pool-trim.json", ids[0], action["LifecycleActionToken"]))
    assert outcome(r) == {"outcome": "warm_pool_trim_completed", "instance_id": ids[0], "already_done": False}
    calls = aws_x.calls(since=since)
    assert [(c.action, c.result, c.token) for c in calls] == [
        ("CompleteLifecycleAction", "CONTINUE", action["LifecycleActionToken"])]
    assert aws_x.pending_actions(ids[0]) == []


def test_regular_termination_is_left_to_the_agent_without_a_call(aws_x: Any, env: dict[str, str], run_bin: Any) -> None:
    ids = aws_x.create_group(size=2, hook_timeout=300)
    scale_in(aws_x)
    [action] = aws_x.pending_actions(ids[0])
    since = time.monotonic()
    r = handle(run_bin, env, event("terminate.json", ids[0], action["LifecycleActionToken"]))
    assert outcome(r) == {"outcome": "left_to_agent", "instance_id": ids[0]}
    assert aws_x.calls(since=since) == []
    assert aws_x.lifecycle_state(ids[0]) == "Terminating:Wait"


def sweep(run_bin: Any, env: dict[str, str], *extra: str) -> dict[str, Any]:
    r = run_bin(["controller", "sweep", *extra], env)
    out = outcome(r)
    assert out["outcome"] == "swept"
    [report] = out["groups"]
    return report


def test_agent_gone_is_completed_after_the_grace_period(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                        fake_github: Any) -> None:
    ids = aws_x.create_group(size=2, hook_timeout=300)
    # The runner of the terminating host is registered but offline: its listener (and agent) died.
    fake_github.add_runner(ids[0], [ids[0], "asg-runners"], status="offline")
    fake_github.add_runner(ids[1], [ids[1], "asg-runners"], status="online")
    scale_in(aws_x)
    since = time.monotonic()
    early = sweep(run_bin, env, "--grace", "60s")
    assert early["left_to_agent"] == [ids[0]] and early["completed_agent_gone"] == []
    assert aws_x.calls("CompleteLifecycleAction", since=since) == []
    time.sleep(2.2)
    late = sweep(run_bin, env, "--grace", "2s")
    assert late["completed_agent_gone"] == [ids[0]]
    [done] = aws_x.calls("CompleteLifecycleAction", since=since)
    assert (done.instance_id, done.result) == (ids[0], "CONTINUE")
    assert aws_x.pending_actions(ids[0]) == []
    # The sweep's Auto Scaling calls are reads plus that one completion.
    actions = sorted({c.action for c in aws_x.calls(since=since)})
    assert actions == ["CompleteLifecycleAction", "DescribeAutoScalingGroups", "DescribeLifecycleHooks",
                       "DescribeScalingActivities"]


def test_a_live_runner_is_never_completed(aws_x: Any, env: dict[str, str], run_bin: Any, fake_github: Any) -> None:
    ids = aws_x.create_group(size=2, hook_timeout=300)
    fake_github.add_runner(ids[0], [ids[0], "asg-runners"], status="online", busy=True)
    scale_in(aws_x)
    since = time.monotonic()
    time.sleep(1.2)
    report = sweep(run_bin, env, "--grace", "1s")
    assert report["left_to_agent"] == [ids[0]] and report["completed_agent_gone"] == []
    assert aws_x.calls("CompleteLifecycleAction", since=since) == []
    assert aws_x.lifecycle_state(ids[0]) == "Terminating:Wait"


def test_github_down_means_nothing_is_completed(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                fake_github: Any) -> None:
    ids = aws_x.create_group(size=2, hook_timeout=300)
    scale_in(aws_x)
    time.sleep(1.2)
    fake_github.fail_next = [503, 503, 503]
    since = time.monotonic()
    report = sweep(run_bin, env, "--grace", "1s")
    assert report["github_available"] is False and report["completed_agent_gone"] == []
    assert aws_x.calls("CompleteLifecycleAction", since=since) == []
    assert ids[0] in report["left_to_agent"]


def test_sweep_removes_exactly_the_orphans(aws_x: Any, env: dict[str, str], run_bin: Any, fake_github: Any) -> None:
    ids = aws_x.create_group(size=2, hook_timeout=None)
    sm = aws_x.client("secretsmanager")
    for name in (f"runner-lifecycle/runners/{ids[0]}", f"runner-lifecycle/runners/{GONE}",
                 f"runner-lifecycle/other/{GONE}", "unrelated-secret"):
        sm.create_secret(Name=name, SecretString='{"token":"x"}')
    fake_github.add_runner(ids[0], [ids[0], "asg-runners"], status="online")
    fake_github.add_runner(ids[1], [ids[1], "asg-runners"], status="offline")
    fake_github.add_runner(GONE, [GONE, "asg-runners"], status="offline")
    fake_github.add_runner(GONE_ONLINE, [GONE_ONLINE, "asg-runners"], status="online")
    fake_github.add_runner("other-group-runner", [GONE, "asg-other"], status="offline")
    fake_github.add_runner("no-labels", ["gpu"], status="offline")
    report = sweep(run_bin, env)
    assert report["runners_deleted"] == [GONE]
    assert report["runners_kept_online"] == [GONE_ONLINE]
    assert report["secrets_deleted"] == [f"runner-lifecycle/runners/{GONE}"]
    assert fake_github.runner_names() == sorted([ids[0], ids[1], GONE_ONLINE, "other-group-runner", "no-labels"])
    left = sorted(s["Name"] for s in sm.list_secrets()["SecretList"])
    assert left == sorted([f"runner-lifecycle/runners/{ids[0]}", f"runner-lifecycle/other/{GONE}", "unrelated-secret"])


def test_launch_stores_a_token_in_the_instance_secret_and_continues(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                                     fake_github: Any) -> None:
    ids = aws_x.create_group(size=1, hook_timeout=None)
    since = time.monotonic()
    r = handle(run_bin, env, event("launch.json", ids[0]))
    out = outcome(r)
    assert out["outcome"] == "launch_continued" and out["secret"] == f"runner-lifecycle/runners/{ids[0]}"
    [token] = fake_github.registration_tokens
    value = json.loads(aws_x.client("secretsmanager").get_secret_value(SecretId=out["secret"])["SecretString"])
    assert value["token"] == token and value["expires_at"]
    # moto emulates no launch hooks, so AWS answers "no active action": the completion was still sent,
    # by the event's token.
    [done] = aws_x.calls("CompleteLifecycleAction", since=since)
    assert (done.token, done.result) == (json.loads(event("launch.json"))["detail"]["LifecycleActionToken"], "CONTINUE")
    assert out["already_done"] is True
    assert token not in r.stdout + r.stderr


def test_launch_is_abandoned_when_no_token_can_be_minted(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                          fake_github: Any) -> None:
    ids = aws_x.create_group(size=1, hook_timeout=None)
    launch_hook(aws_x)
    fake_github.fail_next = [401]
    since = time.monotonic()
    r = handle(run_bin, env, launch_now(ids[0]))
    out = outcome(r)
    assert out["outcome"] == "launch_abandoned" and "401" in out["reason"]
    assert "launch abandoned" in r.stderr
    # At once: one GitHub request, no retry, no DescribeLifecycleHooks, no heartbeat.
    assert len(fake_github.requests) == 1
    assert [(c.action, c.result) for c in aws_x.calls(since=since)] == [("CompleteLifecycleAction", "ABANDON")]
    assert time.monotonic() - since < 10
    assert aws_x.client("secretsmanager").list_secrets()["SecretList"] == []


def launch_hook(aws: Any, timeout: int = 300) -> None:
    """The group's launch hook (moto stores it; it emulates no Pending:Wait, so AWS answers "no
    active action" to the completion, which is still sent and logged)."""
    aws.client("autoscaling").put_lifecycle_hook(
        AutoScalingGroupName="runners", LifecycleHookName="register", HeartbeatTimeout=timeout,
        LifecycleTransition="autoscaling:EC2_INSTANCE_LAUNCHING", DefaultResult="ABANDON")


def launch_now(instance_id: str) -> str:
    """The launch fixture for `instance_id`, happening now (the controller estimates the hook's
    time left from the event's `time`)."""
    e = json.loads(event("launch.json", instance_id))
    e["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps(e)


@pytest.mark.parametrize("failures", [2, 5])
def test_github_5xx_during_a_launch_is_retried_then_continued(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                              fake_github: Any, failures: int) -> None:
    # Two 503s are absorbed by the GitHub client's own retries of one request; five outlast them
    # (three attempts), so the controller's launch retry (crates/controller/src/retry.rs) runs.
    ids = aws_x.create_group(size=1, hook_timeout=None)
    launch_hook(aws_x)
    fake_github.fail_next = [503] * failures
    since = time.monotonic()
    r = handle(run_bin, env, launch_now(ids[0]))
    out = outcome(r)
    assert out["outcome"] == "launch_continued", r.stderr
    token_posts = [p for (m, p, _ok) in fake_github.requests if m == "POST" and p.endswith("/registration-token")]
    assert len(token_posts) == failures + 1
    [token] = fake_github.registration_tokens
    value = json.loads(aws_x.client("secretsmanager").get_secret_value(SecretId=out["secret"])["SecretString"])
    assert value["token"] == token
    calls = [(c.action, c.result) for c in aws_x.calls(since=since)]
    assert calls[-1] == ("CompleteLifecycleAction", "CONTINUE")
    assert ("CompleteLifecycleAction", "ABANDON") not in calls
    if failures > 3:
        assert "launch: retryable failure; retrying" in r.stderr
        # The hook's timeout was read once; 300 s left: no heartbeat was needed.
        assert [a for a, _ in calls] == ["DescribeLifecycleHooks", "CompleteLifecycleAction"]
    else:
        assert calls == [("CompleteLifecycleAction", "CONTINUE")]
    assert token not in r.stdout + r.stderr


def test_the_token_secret_is_tagged_with_the_instance_arn(aws_x: Any, env: dict[str, str], run_bin: Any) -> None:
    ids = aws_x.create_group(size=1, hook_timeout=None)
    sm = aws_x.client("secretsmanager")
    out = outcome(handle(run_bin, env, event("launch.json", ids[0])))
    arn = f"arn:aws:ec2:us-east-1:123456789012:instance/{ids[0]}"
    tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=out["secret"]).get("Tags", [])}
    assert tags == {"runner-lifecycle-instance-arn": arn}
    # A second launch of the same instance (e.g. out of the warm pool): the secret exists, it is
    # re-tagged (TagResource) and overwritten.
    sm.untag_resource(SecretId=out["secret"], TagKeys=["runner-lifecycle-instance-arn"])
    again = outcome(handle(run_bin, env, event("launch-from-warm-pool.json", ids[0])))
    assert again["outcome"] == "launch_continued"
    tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=out["secret"]).get("Tags", [])}
    assert tags == {"runner-lifecycle-instance-arn": arn}


def test_throttling_is_a_retryable_failure(aws_x: Any, env: dict[str, str], run_bin: Any) -> None:
    ids = aws_x.create_group(size=2, hook_timeout=300)
    scale_in(aws_x)
    [action] = aws_x.pending_actions(ids[0])
    aws_x.inject_fault("CompleteLifecycleAction", count=10, kind="throttle")
    r = handle(run_bin, env, event("terminate-warm-pool-trim.json", ids[0], action["LifecycleActionToken"]))
    assert r.returncode == 25, r.stderr
    assert "retryable: true" in r.stderr


def test_bad_configuration_is_refused(aws_x: Any, env: dict[str, str], run_bin: Any) -> None:
    r = run_bin(["controller", "sweep"], {**env, "RUNNER_LIFECYCLE_CONTROLLER_GROUPS": ""})
    assert r.returncode == 3 and "no group" in r.stderr
    r = run_bin(["controller", "sweep", "--grace", "soon"], env)
    assert r.returncode == 3 and "--grace" in r.stderr
    r = run_bin(["controller", "sweep"], {**env, "RUNNER_LIFECYCLE_GITHUB_TOKEN": ""})
    assert r.returncode == 3 and "credentials" in r.stderr


DURATIONS = {  # flag: (variable, min s, max s) as docs/controller.md, "Duration settings" lists them
    "--grace": ("RUNNER_LIFECYCLE_CONTROLLER_GRACE", 1, 7200),
    "--stuck-after": ("RUNNER_LIFECYCLE_CONTROLLER_STUCK_AFTER", 300, 172800),
    "--launch-retry-for": ("RUNNER_LIFECYCLE_CONTROLLER_LAUNCH_RETRY_FOR", 60, 900),
    "--scale-in-after": ("RUNNER_LIFECYCLE_SCALE_IN_AFTER", 1, 86400),
    "--apply-interval": ("RUNNER_LIFECYCLE_SCALE_APPLY_INTERVAL", 1, 30),
    "--scale-fresh-for": ("RUNNER_LIFECYCLE_SCALE_FRESH_FOR", 60, 3600),
    "--jit-outstanding-for": ("RUNNER_LIFECYCLE_JIT_OUTSTANDING_FOR", 300, 86400),
}


def test_durations_out_of_range_are_refused(env: dict[str, str], run_bin: Any) -> None:
    """Issue 16: every duration accepted 0 and u64::MAX. Each is refused now, as a flag and as its
    variable, with exit 3 and a message naming the setting and its range; the bounds themselves pass."""
    # Scaling and JIT configured, so their durations are read too.
    full = dict(env, RUNNER_LIFECYCLE_SCALE_TABLE="t", RUNNER_LIFECYCLE_SCALE_LABELS="self-hosted",
                RUNNER_LIFECYCLE_AGENT_ROLE_NAME="runner-hosts")
    for flag, (var, lo, hi) in DURATIONS.items():
        for bad in ("0s", f"{hi + 1}s"):
            for args, e in (([flag, bad], full), ([], dict(full, **{var: bad}))):
                r = run_bin(["controller", "sweep", *args], e)
                assert r.returncode == 3, (flag, bad, args, r.returncode, r.stderr)
                assert flag in r.stderr and var in r.stderr and "out of range" in r.stderr, r.stderr
                assert f"allowed {lo} to {hi} s" in r.stderr, r.stderr
        # One syntax with the agent: a bare number (once read as seconds) is refused, naming the fix;
        # an overflowing one too.
        for bad, says in ((str(lo), f"write e.g. {lo}s"), ("18446744073709551615s", "too long")):
            for args, e in (([flag, bad], full), ([], dict(full, **{var: bad}))):
                r = run_bin(["controller", "sweep", *args], e)
                assert r.returncode == 3, (flag, bad, args, r.returncode, r.stderr)
                assert flag in r.stderr and var in r.stderr and says in r.stderr, r.stderr
        # The bounds are accepted: the command gets past its settings (a sweep of the empty group).
        for good in (f"{lo}s", f"{hi}s"):
            r = run_bin(["controller", "sweep", flag, good], full)
            assert "configuration error" not in r.stderr, (flag, good, r.stderr)


def test_iam_policy_documents(run_bin: Any, aws_env: Any) -> None:
    env = aws_env()
    r = run_bin(["iam-policy", "--role", "controller", "--group", "runners", "--region", "us-east-1",
                 "--account", "123456789012"], env)
    doc = json.loads(r.stdout)
    actions = sorted(a for s in doc["Statement"] for a in s["Action"])
    assert actions == sorted([
        "autoscaling:CompleteLifecycleAction", "autoscaling:DescribeAutoScalingGroups",
        "autoscaling:DescribeAutoScalingInstances", "autoscaling:DescribeLifecycleHooks",
        "autoscaling:DescribeScalingActivities", "autoscaling:RecordLifecycleActionHeartbeat",
        "autoscaling:SetDesiredCapacity",
        "secretsmanager:CreateSecret", "secretsmanager:DeleteSecret", "secretsmanager:ListSecrets",
        "secretsmanager:PutSecretValue", "secretsmanager:TagResource"])
    # Demand scaling: the state table and the webhook secret, each only when named.
    r = run_bin(["iam-policy", "--role", "controller", "--group", "runners", "--region", "us-east-1",
                 "--account", "123456789012", "--state-table", "rl-state", "--webhook-secret", "rl/webhook"], env)
    scaled = {s["Sid"]: s for s in json.loads(r.stdout)["Statement"]}
    assert scaled["ScalingStateTable"]["Action"] == ["dynamodb:GetItem", "dynamodb:PutItem"]
    assert scaled["ScalingStateTable"]["Resource"] == "arn:aws:dynamodb:us-east-1:123456789012:table/rl-state"
    assert scaled["GitHubCredentials"]["Resource"] == "arn:aws:secretsmanager:us-east-1:123456789012:secret:rl/webhook-??????"
    assert "SetDesiredCapacity" in json.dumps(scaled["LifecycleOfThisGroup"])
    bad = run_bin(["iam-policy", "--role", "controller", "--group", "runners", "--state-table", "a*"], env)
    assert bad.returncode == 3 and "--state-table" in bad.stderr
    agent = json.loads(run_bin(["iam-policy", "--role", "agent", "--group", "runners"], env).stdout)
    scoped = {s["Sid"]: s["Resource"] for s in agent["Statement"]}
    assert scoped["LifecycleOfThisGroup"].endswith(":autoScalingGroupName/runners")
    assert scoped["RegistrationTokenSecretOfThisInstance"] == "arn:aws:secretsmanager:*:*:secret:runner-lifecycle/runners/*"
    # Each host reads and deletes only its own instance's secret (the controller tags it with the
    # instance ARN). moto does not enforce IAM: this checks the policy text, not its effect.
    [own] = [st for st in agent["Statement"] if st["Sid"] == "RegistrationTokenSecretOfThisInstance"]
    assert own["Condition"] == {
        "StringEquals": {"aws:ResourceTag/runner-lifecycle-instance-arn": "${ec2:SourceInstanceARN}"}}
    bad = run_bin(["iam-policy", "--role", "agent", "--group", "runners", "--account", "12"], env)
    assert bad.returncode == 3 and "account" in bad.stderr


def test_launch_with_github_app_credentials(aws_x: Any, env: dict[str, str], run_bin: Any, fake_github: Any,
                                            app_key_file: Path) -> None:
    ids = aws_x.create_group(size=1, hook_timeout=None)
    app_env = {k: v for k, v in env.items() if k != "RUNNER_LIFECYCLE_GITHUB_TOKEN"}
    app_env.update(RUNNER_LIFECYCLE_GITHUB_APP_ID="12345", RUNNER_LIFECYCLE_GITHUB_APP_INSTALLATION_ID="42",
                   RUNNER_LIFECYCLE_GITHUB_APP_KEY_FILE=str(app_key_file))
    out = outcome(handle(run_bin, app_env, event("launch.json", ids[0])))
    assert out["outcome"] == "launch_continued"
    # One installation token from the App's JWT, then the registration token with it.
    assert [p for (_m, p, _ok) in fake_github.requests] == [
        "/app/installations/42/access_tokens", "/orgs/acme/actions/runners/registration-token"]
    assert len(fake_github.installation_tokens) == 1 and len(fake_github.registration_tokens) == 1
    bad = run_bin(["controller", "sweep"], {**app_env, "RUNNER_LIFECYCLE_GITHUB_APP_KEY_FILE": "/dev/null"})
    assert bad.returncode == 3 and "PEM" in bad.stderr


def test_github_credentials_from_a_secret(aws_x: Any, env: dict[str, str], run_bin: Any, fake_github: Any) -> None:
    ids = aws_x.create_group(size=1, hook_timeout=None)
    aws_x.client("secretsmanager").create_secret(Name="runner-lifecycle/github",
                                                 SecretString=json.dumps({"token": fake_github.token}))
    secret_env = {k: v for k, v in env.items() if k != "RUNNER_LIFECYCLE_GITHUB_TOKEN"}
    secret_env["RUNNER_LIFECYCLE_GITHUB_CREDENTIALS_SECRET"] = "runner-lifecycle/github"
    r = handle(run_bin, secret_env, event("launch.json", ids[0]))
    assert outcome(r)["outcome"] == "launch_continued"
    assert all(ok for (_m, _p, ok) in fake_github.requests) and fake_github.token not in r.stdout + r.stderr
    missing = run_bin(["controller", "sweep"], {**secret_env, "RUNNER_LIFECYCLE_GITHUB_CREDENTIALS_SECRET": "nope"})
    assert missing.returncode == 3 and "credentials secret nope" in missing.stderr
