"""Demand scaling end to end: `workflow_job` webhooks through the Lambda (function-URL events on a
loopback Lambda Runtime API), `controller scale` (the reconcile) from the CLI, the state table in
moto's DynamoDB, Auto Scaling in moto (SetDesiredCapacity counted in the emulator's call log), and
the stateful GitHub fake's workflow-run endpoints."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.lambda_runtime_api import RuntimeApi

SECRET = "webhook-secret-for-tests"
SECRET_NAME = "runner-lifecycle/webhook"
TABLE = "runner-lifecycle-state"
LABELS = ["self-hosted", "linux", "x64"]


def make_table(aws: Any, name: str = TABLE) -> None:
    ddb = aws.client("dynamodb")
    ddb.create_table(TableName=name, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")


@pytest.fixture
def scaling(aws_x: Any, aws_env: Any, fake_github: Any) -> dict[str, str]:
    """A group of 1 (max 30, no hook), the table, the webhook secret; the environment for the binary."""
    aws_x.create_group(size=1, hook_timeout=None, max_size=30)
    make_table(aws_x)
    aws_x.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=SECRET)
    return aws_env(
        RUNNER_LIFECYCLE_CONTROLLER_GROUPS="runners",
        RUNNER_LIFECYCLE_GITHUB_URL="https://github.com/acme/infra",
        RUNNER_LIFECYCLE_GITHUB_API_URL=fake_github.url,
        RUNNER_LIFECYCLE_GITHUB_TOKEN=fake_github.token,
        RUNNER_LIFECYCLE_SCALE_TABLE=TABLE,
        RUNNER_LIFECYCLE_SCALE_LABELS=",".join(LABELS),
        RUNNER_LIFECYCLE_WEBHOOK_SECRET=SECRET_NAME,
        RUNNER_LIFECYCLE_SCALE_IDLE_TARGET="0",
        RUNNER_LIFECYCLE_SCALE_APPLY_INTERVAL="2s",
        RUNNER_LIFECYCLE_SCALE_IN_AFTER="600s",
        RUNNER_LIFECYCLE_LOG_FORMAT="json",
    )


class Lambda:
    """`controller lambda` under a loopback Runtime API; `deliver` sends one webhook."""

    def __init__(self, bin_path: Path, env: dict[str, str], log: Path) -> None:
        self.api = RuntimeApi().start()
        self.log_path = log
        self._log = open(log, "w")
        full = dict(env, AWS_LAMBDA_RUNTIME_API=self.api.address, AWS_LAMBDA_FUNCTION_NAME="runner-lifecycle",
                    AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128", AWS_LAMBDA_FUNCTION_VERSION="$LATEST")
        self.proc = subprocess.Popen([str(bin_path), "controller", "lambda"], env=full, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def send(self, body: bytes, *, event: str = "workflow_job", delivery: str | None = None,
             signature: str | None = "good") -> str:
        headers = {"content-type": "application/json", "user-agent": "GitHub-Hookshot/abc",
                   "x-github-event": event, "x-github-delivery": delivery or str(uuid.uuid4())}
        if signature == "good":
            headers["x-hub-signature-256"] = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        elif signature is not None:
            headers["x-hub-signature-256"] = signature
        request = {"version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
                   "headers": headers, "isBase64Encoded": False, "body": body.decode(),
                   "requestContext": {"timeEpoch": int(time.time() * 1000),
                                      "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
                                               "sourceIp": "192.0.2.1", "userAgent": "GitHub-Hookshot/abc"}}}
        return self.api.invoke(json.dumps(request))

    def answer(self, request_id: str, timeout: float = 30) -> tuple[int, str]:
        kind, body = self.api.wait(request_id, timeout)
        assert kind == "response", body
        return body["statusCode"], json.loads(body["body"])["message"]

    def deliver(self, body: bytes, **kw: Any) -> tuple[int, str]:
        return self.answer(self.send(body, **kw))

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()
        self.api.stop()


@pytest.fixture
def lam(bin_path: Path, scaling: dict[str, str], tmp_path: Path) -> Iterator[Lambda]:
    fn = Lambda(bin_path, scaling, tmp_path / "lambda.log")
    try:
        yield fn
    finally:
        fn.stop()


def job(action: str, job_id: int, labels: list[str] | None = None) -> bytes:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps({
        "action": action,
        "workflow_job": {"id": job_id, "run_id": 1, "status": action, "labels": labels or ["self-hosted", "linux"],
                         "created_at": now, "started_at": now if action != "queued" else None},
        "repository": {"full_name": "acme/infra"}, "sender": {"login": "octocat"},
    }).encode()


def desired(aws: Any) -> int:
    [g] = aws.client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=["runners"])["AutoScalingGroups"]
    return g["DesiredCapacity"]


def scale(run_bin: Any, env: dict[str, str], **extra: str) -> dict[str, Any]:
    r = run_bin(["controller", "scale"], dict(env, **extra))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def state(aws: Any) -> dict[str, Any]:
    item = aws.client("dynamodb").get_item(TableName=TABLE, Key={"pk": {"S": "group#runners"}}, ConsistentRead=True)
    return json.loads(item["Item"]["state"]["S"])


def test_signatures_replays_and_unknown_events(aws_x: Any, lam: Lambda) -> None:
    body = job("queued", 1)
    assert lam.deliver(body, delivery="d-1")[0] == 202
    status, message = lam.deliver(body, delivery="d-1")
    assert status == 409 and "replay" in message
    assert lam.deliver(body, signature="sha256=" + "0" * 64)[0] == 401
    altered = lam.send(body, signature="sha256=" + hmac.new(SECRET.encode(), body + b"x", hashlib.sha256).hexdigest())
    assert lam.answer(altered)[0] == 401
    status, message = lam.deliver(body, signature=None)
    assert status == 401 and "no X-Hub-Signature-256" in message
    assert lam.deliver(b'{"zen": "Keep it logically awesome."}', event="ping")[0] == 204
    assert lam.deliver(job("queued", 2, ["self-hosted", "gpu"]))[0] == 204, "labels the group does not serve"
    assert lam.deliver(job("waiting", 3))[0] == 204
    log = lam.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"message"' in line]
    refused = [line for line in lines if "webhook refused" in line.get("message", "")]
    assert len(refused) == 4, refused  # one line each: replay, bad, altered, missing
    assert "panicked" not in log
    # The queued job counted once (idle target 0 and one instance already: no change).
    assert list(state(aws_x)["jobs"]) == ["1"]


def test_a_body_replayed_under_a_fresh_delivery_id_counts_once(aws_x: Any, lam: Lambda) -> None:
    """Issue 16: the signature covers the body, not X-GitHub-Delivery, so a captured body replayed
    under a new id was counted again. Now the payload's identity (job id, run attempt, action) is
    claimed in the state table: any delivery id, one count."""
    queued, completed = job("queued", 41), job("completed", 41)
    assert lam.deliver(queued, delivery="first")[0] == 202
    assert lam.deliver(completed, delivery="second")[0] == 202
    for i, body in enumerate((queued, completed, queued)):
        status, message = lam.deliver(body, delivery=f"fresh-{i}")
        assert status == 409 and "counted before" in message, (status, message)
    # The same delivery id again: refused as before.
    status, message = lam.deliver(queued, delivery="first")
    assert status == 409 and "replay" in message
    assert state(aws_x)["jobs"] == {}
    item = aws_x.client("dynamodb").get_item(TableName=TABLE, Key={"pk": {"S": "job#41#1#queued"}},
                                             ConsistentRead=True)
    assert int(item["Item"]["expires_at"]["N"]) > time.time() + 2 * 24 * 3600


def test_a_short_webhook_secret_is_a_configuration_error(aws_x: Any, run_bin: Any, scaling: dict[str, str]) -> None:
    aws_x.client("secretsmanager").create_secret(Name="short-secret", SecretString="fifteen-bytes!!")
    r = run_bin(["controller", "scale"], dict(scaling, RUNNER_LIFECYCLE_WEBHOOK_SECRET="short-secret"))
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "at least 16" in r.stderr and "fifteen-bytes" not in r.stderr, r.stderr


def test_a_burst_of_1000_queued_jobs_makes_few_auto_scaling_calls(aws_x: Any, lam: Lambda) -> None:
    aws_x.clear_calls()
    start = time.monotonic()
    ids = [lam.send(job("queued", 1000 + i)) for i in range(1000)]
    answers = [lam.answer(r, timeout=120) for r in ids]
    elapsed = time.monotonic() - start
    assert {s for s, _ in answers} == {202}
    sets = aws_x.calls("SetDesiredCapacity")
    describes = aws_x.calls("DescribeAutoScalingGroups")
    # At most one apply per 2 s window, plus the leading and the trailing edge.
    bound = int(elapsed / 2) + 2
    print(f"burst: 1000 events, {len(sets)} SetDesiredCapacity, {len(describes)} DescribeAutoScalingGroups, {elapsed:.1f} s")
    assert 1 <= len(sets) <= bound, (len(sets), elapsed)
    assert len(describes) <= bound, (len(describes), elapsed)
    assert len(sets) < 50, "bounded whatever the number of events"
    assert desired(aws_x) == 30, "capped at the group's MaxSize"
    assert len(state(aws_x)["jobs"]) == 1000
    emf = [json.loads(line) for line in lam.log().splitlines() if '"_aws"' in line]
    assert emf and emf[-1]["QueuedJobs"] == 1000 and emf[-1]["AutoScalingGroupName"] == "runners"
    assert sum(e["ScaleActions"] for e in emf) == len(sets)


def test_reconcile_repairs_dropped_webhooks(aws_x: Any, lam: Lambda, fake_github: Any, run_bin: Any,
                                            scaling: dict[str, str]) -> None:
    for i in (1, 2, 3, 4):
        fake_github.add_job(i, ["self-hosted", "linux"], status="queued", run_id=10 + i % 2)
    fake_github.add_job(5, ["self-hosted", "gpu"], status="queued", run_id=10)  # not ours
    # Webhooks for 1 and 2 only (3 and 4 dropped); 9 was never a job (a stale duplicate, say).
    for i in (1, 2, 9):
        assert lam.deliver(job("queued", i))[0] == 202
    assert sorted(state(aws_x)["jobs"]) == ["1", "2", "9"]
    fake_github.set_job(2, "in_progress")
    time.sleep(1.1)  # webhooks of the reconcile's own second are kept as newer than its reads
    report = scale(run_bin, scaling)
    assert report["repaired"] == 4, report  # 2 started, 3 and 4 missing, 9 extra
    assert report["demand"] == {"queued": 3, "running": 1}
    assert report["applied"]["to"] == 4 and desired(aws_x) == 4
    assert sorted(state(aws_x)["jobs"]) == ["1", "2", "3", "4"]
    runs = [p for (m, p, _ok) in fake_github.requests if p.endswith("/actions/runs")]
    assert runs, "read queued and in-progress runs"
    emf = [json.loads(line) for line in report_log(run_bin, scaling) if '"_aws"' in line]
    assert emf and emf[-1]["WebhooksRepaired"] == 0, "a second reconcile finds nothing to repair"


def report_log(run_bin: Any, env: dict[str, str]) -> list[str]:
    r = run_bin(["controller", "scale"], env)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_a_github_outage_never_scales_in(aws_x: Any, fake_github: Any, run_bin: Any, scaling: dict[str, str]) -> None:
    # The shortest wait the controller accepts (0 is refused: docs/controller.md, "Duration settings").
    env = dict(scaling, RUNNER_LIFECYCLE_SCALE_IN_AFTER="1s")
    for i in (1, 2, 3):
        fake_github.add_job(i, LABELS, status="in_progress")
    assert scale(run_bin, env)["applied"]["to"] == 3
    for i in (1, 2, 3):
        fake_github.set_job(i, "completed")
    fake_github.fail_next = [502] * 200
    for _ in range(2):
        report = scale(run_bin, env)
        assert report["demand"] is None and report["warnings"], report
        assert report["applied"] == {"from": 3, "to": 3} and desired(aws_x) == 3
    fake_github.fail_next = []
    scale(run_bin, env)
    time.sleep(1.2)
    report = scale(run_bin, env)
    assert report["applied"]["to"] == 0 and desired(aws_x) == 0, "back: demand is known and low"


def test_state_survives_across_invocations(aws_x: Any, fake_github: Any, run_bin: Any,
                                           scaling: dict[str, str]) -> None:
    env = dict(scaling, RUNNER_LIFECYCLE_SCALE_IN_AFTER="3s")
    fake_github.add_job(1, LABELS, status="queued")
    fake_github.add_job(2, LABELS, status="queued")
    assert scale(run_bin, env)["applied"]["to"] == 2
    fake_github.set_job(1, "completed")
    fake_github.set_job(2, "completed")
    # Demand is now below capacity: the first process starts the wait, a later one ends it.
    assert scale(run_bin, env)["applied"] == {"from": 2, "to": 2}
    since = state(aws_x)["scaling"]["below_since"]
    assert since is not None
    time.sleep(3.2)
    report = scale(run_bin, env)
    assert report["applied"]["to"] == 0 and report["applied"]["reason"] == "demand-below", report
    assert desired(aws_x) == 0
    assert state(aws_x)["scaling"]["below_since"] is None


def test_without_the_table_webhooks_are_refused_and_the_reconcile_only_scales_out(
        aws_x: Any, fake_github: Any, run_bin: Any, scaling: dict[str, str], bin_path: Path, tmp_path: Path) -> None:
    env = dict(scaling, RUNNER_LIFECYCLE_SCALE_TABLE="no-such-table", RUNNER_LIFECYCLE_SCALE_IN_AFTER="1s")
    fn = Lambda(bin_path, env, tmp_path / "lambda.log")
    try:
        status, message = fn.deliver(job("queued", 1))
        assert status == 503 and "state table unavailable" in message
    finally:
        fn.stop()
    report = scale(run_bin, env)
    assert not report["state_ok"] and report["applied"] == {"from": 1, "to": 1}, "no data kept: no scale-in"
    for i in range(5):
        fake_github.add_job(i, LABELS)
    report = scale(run_bin, env)
    assert report["applied"]["to"] == 5 and desired(aws_x) == 5


def test_scale_without_scaling_configured_is_a_configuration_error(run_bin: Any, scaling: dict[str, str]) -> None:
    env = {k: v for k, v in scaling.items() if not k.startswith("RUNNER_LIFECYCLE_SCALE_")}
    r = run_bin(["controller", "scale"], env)
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "--scale-table and --scale-labels" in r.stderr
