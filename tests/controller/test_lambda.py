"""`runner-lifecycle controller lambda` under a loopback Lambda Runtime API: the same handler core,
with Lambda's error mapping (retryable failures are invocation errors; rejected events succeed with
`outcome: rejected` so Lambda does not retry them)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.lambda_runtime_api import RuntimeApi

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "events"


@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    api = RuntimeApi().start()
    try:
        yield api
    finally:
        api.stop()


def test_lambda_runtime_round_trip(aws_x: Any, aws_env: Any, bin_path: Path, runtime_api: RuntimeApi,
                                   tmp_path: Path) -> None:
    ids = aws_x.create_group(size=2, hook_timeout=300)
    aws_x.client("autoscaling").set_desired_capacity(AutoScalingGroupName="runners", DesiredCapacity=1)
    [action] = aws_x.pending_actions(ids[0])
    env = aws_env(
        RUNNER_LIFECYCLE_CONTROLLER_GROUPS="runners", RUNNER_LIFECYCLE_LOG_FORMAT="json",
        AWS_LAMBDA_RUNTIME_API=runtime_api.address, AWS_LAMBDA_FUNCTION_NAME="runner-lifecycle",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128", AWS_LAMBDA_FUNCTION_VERSION="$LATEST")
    log = open(tmp_path / "lambda.log", "w")
    proc = subprocess.Popen([str(bin_path), "controller", "lambda"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        trim = json.loads((FIXTURES / "terminate-warm-pool-trim.json").read_text())
        trim["detail"].update(EC2InstanceId=ids[0], LifecycleActionToken=action["LifecycleActionToken"])
        ok = runtime_api.invoke(json.dumps(trim))
        assert runtime_api.wait(ok) == ("response", {"outcome": "warm_pool_trim_completed", "instance_id": ids[0],
                                                     "already_done": False})
        bad = runtime_api.invoke((FIXTURES / "malformed" / "terminate-without-instance.json").read_text())
        kind, answer = runtime_api.wait(bad)
        assert kind == "response" and answer["outcome"] == "rejected" and answer["retryable"] is False
        assert "EC2InstanceId" in answer["error"]
        aws_x.inject_fault("CompleteLifecycleAction", count=10, kind="throttle")
        again = runtime_api.invoke(json.dumps(trim))
        kind, answer = runtime_api.wait(again)
        assert kind == "error" and "Throttl" in json.dumps(answer)
        sweep = runtime_api.invoke((FIXTURES / "scheduled-sweep.json").read_text())
        kind, answer = runtime_api.wait(sweep)
        assert kind == "response" and answer["outcome"] == "swept"
        assert proc.poll() is None, "the runtime loop keeps serving"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    text = (tmp_path / "lambda.log").read_text()
    # The sweep's metrics, as CloudWatch Embedded Metric Format on stdout.
    emf = [json.loads(line) for line in text.splitlines() if line.startswith('{"AgentGoneCompletions"') or '"_aws"' in line]
    assert emf and emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "RunnerLifecycle"
    assert "panicked" not in text


def test_lambda_outside_lambda_is_a_configuration_error(aws_env: Any, run_bin: Any) -> None:
    r = run_bin(["controller", "lambda"], aws_env(RUNNER_LIFECYCLE_CONTROLLER_GROUPS="runners"))
    assert r.returncode == 3 and "not running under AWS Lambda" in r.stderr and "panicked" not in r.stderr
