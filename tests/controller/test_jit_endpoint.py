"""`POST /jit-config` end to end on loopback: a host's SigV4-signed request (the Rust client,
`runner-lifecycle jit-config`, or botocore's signer) goes through a stand-in for the AWS_IAM function
URL (tests/support/function_url_front.py: verifies the signature like AWS, builds the function-URL
event with `requestContext.authorizer.iam`), into `runner-lifecycle controller lambda` (under the
loopback Lambda Runtime API), which checks the identity and the instance's state in moto and mints
through FakeGitHub, whose configs the stand-in listener runs (docs/controller.md, "The JIT
endpoint"; docs/security.md, "JIT configs: delivery and threat analysis")."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from support.function_url_front import Identity, instance_role_arn, sign
from support.jit_controller import ACCOUNT, ROLE, HostKey, jit_controller

pytestmark = pytest.mark.timeout(120)

KEY_A, KEY_B, KEY_ADMIN = "ASIAHOSTA00000000000", "ASIAHOSTB00000000000", "ASIAADMIN00000000000"
SECRETS = {KEY_A: "host-a-secret-0000000000000000000000000", KEY_B: "host-b-secret-0000000000000000000000000",
           KEY_ADMIN: "admin-secret-00000000000000000000000000"}
TOKENS = {KEY_A: "host-a-session-token-000000000000", KEY_B: "host-b-session-token-000000000000"}


@pytest.fixture
def jit(aws_x: Any, aws_env: Any, bin_path: Path, broker: Any, tmp_path: Path) -> Iterator[SimpleNamespace]:
    ids = aws_x.create_group(size=2, hook_timeout=300)
    hosts = {ids[0]: HostKey(KEY_A, SECRETS[KEY_A], TOKENS[KEY_A]), ids[1]: HostKey(KEY_B, SECRETS[KEY_B], TOKENS[KEY_B])}
    # Another role of the account whose session someone named after host A.
    admin = {KEY_ADMIN: Identity(SECRETS[KEY_ADMIN], instance_role_arn(ACCOUNT, "admin", ids[0]))}
    with jit_controller(bin_path, broker, aws_env, tmp_path / "controller.log", hosts, extra=admin) as ctl:
        yield SimpleNamespace(ids=ids, github=ctl.github, runtime=ctl.runtime, iam=ctl.iam, webhook=ctl.webhook,
                              bin=bin_path, aws=aws_x, aws_env=aws_env, log_path=ctl.log_path, tmp=tmp_path,
                              proc=ctl.proc)


def host_env(ns: SimpleNamespace, key: str, **extra: str) -> dict[str, str]:
    """The environment of `runner-lifecycle jit-config` on a host whose instance credentials are `key`'s."""
    env = ns.aws_env(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=SECRETS.get(key, "wrong-secret"), **extra)
    env.pop("AWS_SESSION_TOKEN", None)
    if key in TOKENS:
        env["AWS_SESSION_TOKEN"] = TOKENS[key]
    return env


def fetch(ns: SimpleNamespace, key: str, out: Path | None = None, url: str | None = None,
          **extra: str) -> subprocess.CompletedProcess[str]:
    args = [str(ns.bin), "jit-config", "--url", url or ns.iam.url, "--timeout", "30"]
    if out is not None:
        args += ["--config-out", str(out)]
    return subprocess.run(args, env=host_env(ns, key, **extra), capture_output=True, text=True, timeout=60)


def post(url: str, headers: dict[str, str], body: bytes = b"{}", path: str = "/jit-config") -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url + path, data=body, method="POST", headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = raw.decode(errors="replace")
        return e.code, {k.lower(): v for k, v in e.headers.items()}, answer


def signed_post(ns: SimpleNamespace, key: str, body: bytes = b"{}", **kw: Any) -> tuple[int, dict[str, str], Any]:
    headers = sign(ns.iam.url + "/jit-config", key, SECRETS[key], token=TOKENS.get(key), body=body, **kw)
    return post(ns.iam.url, headers, body)


def log_lines(ns: SimpleNamespace) -> list[dict[str, Any]]:
    out = []
    for line in ns.log_path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_an_instance_of_the_group_gets_a_config_the_listener_runs(jit: SimpleNamespace, make_runner: Any,
                                                                 broker: Any) -> None:
    out = jit.tmp / "jitconfig"
    r = fetch(jit, KEY_A, out)
    assert r.returncode == 0, r.stderr
    grant = json.loads(r.stdout)
    name = grant["runner_name"]
    assert name.startswith("rle-jit-") and jit.ids[0] in name and jit.ids[1] not in name
    blob = out.read_text()
    # The config is only in the 0600 file, never on stdout or stderr.
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert blob == jit.github.jit_configs[name] and blob not in r.stdout + r.stderr
    # The registration carries the instance and the group, so sweeps can tie it to the instance.
    [runner] = [x for x in jit.github.runners.values() if x["name"] == name]
    labels = [label["name"] for label in runner["labels"]]
    assert labels == ["self-hosted", jit.ids[0], "asg-runners"] and runner["id"] == grant["runner_id"]
    # The stand-in listener accepts it and runs one job.
    listener_dir = make_runner("jit-host-a", configured=False)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ACTIONS_RUNNER_INPUT_")}
    proc = listener_dir.start(env={**env, "ACTIONS_RUNNER_INPUT_JITCONFIG": blob})
    try:
        broker.wait_listening(name, timeout=15)
        job = broker.assign_job(0.2)
        assert broker.wait_outcome(job, 20) == "succeeded" and broker.job(job).runner == name
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # One log line per mint: instance, name, time taken; never the config.
    minted = [line for line in log_lines(jit) if line.get("message") == "jit: minted"]
    assert len(minted) == 1 and minted[0]["instance_id"] == jit.ids[0] and minted[0]["runner_name"] == name
    assert isinstance(minted[0]["took_ms"], int)
    # The event the function saw came with the signer in requestContext.authorizer.iam.
    [event] = jit.iam.events
    assert event["requestContext"]["authorizer"]["iam"]["userArn"].endswith(f"/{ROLE}/{jit.ids[0]}")


def test_another_instance_gets_a_config_only_for_itself(jit: SimpleNamespace) -> None:
    # Host B asks "for host A": the identity is the signature, so B gets B's own config.
    status, _, answer = signed_post(jit, KEY_B, body=json.dumps({"instance_id": jit.ids[0]}).encode())
    assert status == 200, answer
    assert jit.ids[1] in answer["runner_name"] and jit.ids[0] not in answer["runner_name"]
    # B's key with A's secret (or any wrong secret) does not verify.
    headers = sign(jit.iam.url + "/jit-config", KEY_B, SECRETS[KEY_A], token=TOKENS[KEY_B])
    assert post(jit.iam.url, headers)[0] == 403
    # A session of another role, named after host A: AWS lets it through, the controller does not.
    status, _, answer = signed_post(jit, KEY_ADMIN)
    assert status == 403 and "not an authorized instance identity" in answer["error"], answer
    assert not any(jit.ids[0] in n for n in jit.github.jit_configs)


def test_unsigned_and_badly_signed_requests_get_403(jit: SimpleNamespace) -> None:
    before = len(jit.runtime.results)
    # Unsigned.
    assert post(jit.iam.url, {"content-type": "application/json"})[0] == 403
    # Signed, then the body changed.
    headers = sign(jit.iam.url + "/jit-config", KEY_A, SECRETS[KEY_A], token=TOKENS[KEY_A])
    assert post(jit.iam.url, headers, body=b'{"x":1}')[0] == 403
    # Signed ten minutes ago (a replayed request).
    old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 600))
    headers = sign(jit.iam.url + "/jit-config", KEY_A, SECRETS[KEY_A], token=TOKENS[KEY_A], amz_date=old)
    status, _, answer = post(jit.iam.url, headers)
    assert status == 403 and answer == {"Message": "Forbidden"}
    # Signed for another service, or without the session token.
    headers = sign(jit.iam.url + "/jit-config", KEY_A, SECRETS[KEY_A], token=TOKENS[KEY_A], service="execute-api")
    assert post(jit.iam.url, headers)[0] == 403
    headers = sign(jit.iam.url + "/jit-config", KEY_A, SECRETS[KEY_A])
    assert post(jit.iam.url, headers)[0] == 403
    # An unknown key through the Rust client: a refusal, exit 26, the message escaped.
    r = fetch(jit, "ASIAUNKNOWN000000000")
    assert r.returncode == 26 and "HTTP 403" in r.stderr and "Forbidden" in r.stderr, r.stderr
    assert len(jit.runtime.results) == before, "a refused request reached the function"
    assert not jit.github.jit_configs


def test_the_webhook_url_never_mints(jit: SimpleNamespace) -> None:
    # The webhook's function URL is AuthType NONE: no IAM authorizer in the event, whatever the
    # request carries (here a valid signature for host A that nobody verifies).
    headers = sign(jit.webhook.url + "/jit-config", KEY_A, SECRETS[KEY_A], token=TOKENS[KEY_A])
    status, _, answer = post(jit.webhook.url, headers)
    assert status == 403 and "unsigned" in answer["error"], answer
    assert "authorizer" not in jit.webhook.events[-1]["requestContext"]
    # The Rust client through it: refused.
    r = fetch(jit, KEY_A, url=jit.webhook.url)
    assert r.returncode == 26 and "HTTP 403" in r.stderr, r.stderr
    # A delivery on the webhook's own path is still the webhook's: its answer, not the JIT
    # route's (this controller has no scaling configured, so the webhook refuses it).
    status, _, answer = post(jit.webhook.url, {"content-type": "application/json", "x-github-event": "ping"}, path="/")
    assert "error" not in (answer if isinstance(answer, dict) else {}) and "message" in answer, (status, answer)
    assert not jit.github.jit_configs
    assert not any(m == "POST" and "generate-jitconfig" in p for m, p, _ in jit.github.requests)


def test_a_draining_instance_gets_409(jit: SimpleNamespace) -> None:
    jit.aws.client("autoscaling").set_desired_capacity(AutoScalingGroupName="runners", DesiredCapacity=1)
    assert jit.aws.lifecycle_state(jit.ids[0]) == "Terminating:Wait"
    r = fetch(jit, KEY_A)
    assert r.returncode == 26 and "HTTP 409" in r.stderr and "Terminating:Wait" in r.stderr, r.stderr
    status, _, answer = signed_post(jit, KEY_A)
    assert status == 409 and "not InService or Pending" in answer["error"]
    # The other host is still in service.
    assert signed_post(jit, KEY_B)[0] == 200
    assert not any(jit.ids[0] in n for n in jit.github.jit_configs)


def test_outages_answer_429_or_503_with_retry_after(jit: SimpleNamespace) -> None:
    # GitHub's rate limit, longer than the GitHub client waits: 429 with GitHub's wait.
    jit.github.fail_next = [(429, {"Retry-After": "600"})]
    status, headers, answer = signed_post(jit, KEY_A)
    assert status == 429 and headers.get("retry-after") == "600", (status, headers, answer)
    # GitHub 5xx beyond the client's own retries: 503.
    jit.github.fail_next = [502] * 6
    status, headers, answer = signed_post(jit, KEY_A)
    assert status == 503 and int(headers["retry-after"]) >= 1, (status, headers, answer)
    jit.github.fail_next = []
    # AWS throttling DescribeAutoScalingInstances beyond the SDK's retries: 503.
    jit.aws.inject_fault("DescribeAutoScalingInstances", count=10, kind="throttle")
    r = fetch(jit, KEY_A)
    assert r.returncode == 25 and "HTTP 503" in r.stderr and "retry in" in r.stderr, r.stderr
    jit.aws.clear_faults()
    # And then it works again.
    assert fetch(jit, KEY_A).returncode == 0


def test_six_quick_mints_for_one_instance_give_one_config(jit: SimpleNamespace, make_runner: Any,
                                                         broker: Any) -> None:
    """Issue 16: with the role's credentials a job minted six configs for its own instance in
    seconds. One outstanding (never connected) config per instance now: the other five get 409,
    until a listener connects with the first (or it is released, or it expires)."""
    answers = [signed_post(jit, KEY_A) for _ in range(6)]
    assert answers[0][0] == 200, answers[0]
    grant = answers[0][2]
    for status, headers, answer in answers[1:]:
        assert status == 409, (status, answer)
        assert "already holds an unused JIT config" in answer["error"], answer
        assert f"runner {grant['runner_id']}" in answer["error"], answer
        assert 1 <= int(headers["retry-after"]) <= 900, headers
    assert [n for n in jit.github.jit_configs if jit.ids[0] in n] == [grant["runner_name"]]
    # The Rust client (what the agent runs) sees a refusal, exit 26.
    r = fetch(jit, KEY_A)
    assert r.returncode == 26 and "HTTP 409" in r.stderr, r.stderr
    # The other host is not affected.
    assert signed_post(jit, KEY_B)[0] == 200
    # A listener connects with the config: it is in use, so the agent's prefetch is allowed, once.
    listener_dir = make_runner("jit-host-a", configured=False)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ACTIONS_RUNNER_INPUT_")}
    proc = listener_dir.start(env={**env, "ACTIONS_RUNNER_INPUT_JITCONFIG": grant["encoded_jit_config"]})
    try:
        broker.wait_listening(grant["runner_name"], timeout=15)
        status, _, prefetched = signed_post(jit, KEY_A)
        assert status == 200, prefetched
        assert signed_post(jit, KEY_A)[0] == 409
        # Released by its host: the slot is free again.
        assert release(jit, KEY_A, prefetched["runner_id"])[0] == 200
        assert signed_post(jit, KEY_A)[0] == 200
    finally:
        proc.kill()
        proc.wait(10)


# ---------------------------------------------------------------- POST /jit-config/release

RELEASE = "/jit-config/release"


def release(ns: SimpleNamespace, key: str, runner_id: int, body: bytes | None = None,
            url: str | None = None) -> tuple[int, dict[str, str], Any]:
    """Host ``key`` asks to release ``runner_id``, signed with botocore's signer as the Rust client
    signs (crates/aws/src/function_url.rs, `release_runner`)."""
    url = url or ns.iam.url
    body = json.dumps({"runner_id": runner_id}).encode() if body is None else body
    headers = sign(url + RELEASE, key, SECRETS[key], token=TOKENS.get(key), body=body)
    return post(url, headers, body, path=RELEASE)


def runner_calls(ns: SimpleNamespace, runner_id: int) -> list[str]:
    """The methods FakeGitHub saw on ``.../actions/runners/{runner_id}``, in order."""
    return [m for m, p, _ok in ns.github.requests if p.endswith(f"/actions/runners/{runner_id}")]


def release_lines(ns: SimpleNamespace) -> list[tuple[str, str, int, str]]:
    return [(line["instance_id"], line["runner_name"], line["runner_id"], line["result"])
            for line in log_lines(ns) if line.get("message") == "jit: release"]


def test_a_draining_host_releases_its_registration_then_it_is_not_found(jit: SimpleNamespace, make_runner: Any,
                                                                        broker: Any) -> None:
    out = jit.tmp / "jitconfig"
    r = fetch(jit, KEY_A, out)
    assert r.returncode == 0, r.stderr
    grant = json.loads(r.stdout)
    rid, name = grant["runner_id"], grant["runner_name"]
    # Its listener is up and idle.
    listener_dir = make_runner("jit-host-a", configured=False)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ACTIONS_RUNNER_INPUT_")}
    proc = listener_dir.start(env={**env, "ACTIONS_RUNNER_INPUT_JITCONFIG": out.read_text()})
    try:
        broker.wait_listening(name, timeout=15)
        # Scale-in: the host is Terminating:Wait, where the mint refuses; the release does not.
        jit.aws.client("autoscaling").set_desired_capacity(AutoScalingGroupName="runners", DesiredCapacity=1)
        assert jit.aws.lifecycle_state(jit.ids[0]) == "Terminating:Wait"
        # And needs no AWS call: with Auto Scaling throttling every read, it still answers.
        jit.aws.inject_fault("DescribeAutoScalingInstances", count=10, kind="throttle")
        status, headers, answer = release(jit, KEY_A, rid)
        jit.aws.clear_faults()
        assert (status, answer) == (200, {"result": "removed", "runner_id": rid}), (status, answer)
        assert headers.get("content-type") == "application/json"
        assert name not in jit.github.runner_names()
        assert runner_calls(jit, rid) == ["GET", "DELETE"]
        # GitHub no longer gives the listener anything: it stops by itself.
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Again: GitHub knows it no more. For a JIT registration that can also mean an assignment
    # consumed it, so the answer is "not-found", never "removed".
    status, _, answer = release(jit, KEY_A, rid)
    assert (status, answer) == (404, {"result": "not-found", "runner_id": rid}), (status, answer)
    assert runner_calls(jit, rid) == ["GET", "DELETE", "GET"]
    # One INFO line per release: instance, runner name (unknown to GitHub the second time), result.
    assert release_lines(jit) == [(jit.ids[0], name, rid, "removed"), (jit.ids[0], "-", rid, "not-found")]


def test_a_busy_registration_is_left_to_its_job(jit: SimpleNamespace, make_runner: Any, broker: Any) -> None:
    out = jit.tmp / "jitconfig"
    r = fetch(jit, KEY_A, out)
    assert r.returncode == 0, r.stderr
    grant = json.loads(r.stdout)
    listener_dir = make_runner("jit-host-a", configured=False)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ACTIONS_RUNNER_INPUT_")}
    proc = listener_dir.start(env={**env, "ACTIONS_RUNNER_INPUT_JITCONFIG": out.read_text()})
    try:
        broker.wait_listening(grant["runner_name"], timeout=15)
        job = broker.assign_job(3.0)
        broker.wait_worker_started(job, 15)
        # GitHub's runner reads busy: 409 busy, and no DELETE.
        status, _, answer = release(jit, KEY_A, grant["runner_id"])
        assert (status, answer) == (409, {"result": "busy", "runner_id": grant["runner_id"]}), (status, answer)
        assert runner_calls(jit, grant["runner_id"]) == ["GET"]
        # The job runs to its end.
        assert broker.wait_outcome(job, 20) == "succeeded"
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert release_lines(jit) == [(jit.ids[0], grant["runner_name"], grant["runner_id"], "busy")]


def test_an_instance_may_only_release_its_own_registration(jit: SimpleNamespace) -> None:
    status, _, grant_b = signed_post(jit, KEY_B)
    assert status == 200, grant_b
    rid = grant_b["runner_id"]
    # Host A asks to release host B's registration: 403, nothing deleted, B's name not told.
    status, _, answer = release(jit, KEY_A, rid)
    assert status == 403 and "only release its own" in answer["error"], (status, answer)
    assert jit.ids[1] not in answer["error"]
    # A session of another role named after host A: not an instance identity.
    status, _, answer = release(jit, KEY_ADMIN, rid)
    assert status == 403 and "not an authorized instance identity" in answer["error"], (status, answer)
    # Unsigned (the front refuses it before the function), and through the webhook's URL (no IAM
    # authorizer: the JIT route refuses it, it is never a webhook delivery).
    body = json.dumps({"runner_id": rid}).encode()
    assert post(jit.iam.url, {"content-type": "application/json"}, body, path=RELEASE)[0] == 403
    status, _, answer = release(jit, KEY_A, rid, url=jit.webhook.url)
    assert status == 403 and "unsigned" in answer["error"], (status, answer)
    # Malformed bodies: 400.
    for bad in (b"{}", b'{"runner_id": "7"}', b"[7]", b""):
        status, _, answer = release(jit, KEY_B, rid, body=bad)
        assert status == 400 and "runner_id" in answer["error"], (bad, status, answer)
    assert grant_b["runner_name"] in jit.github.runner_names()
    assert "DELETE" not in runner_calls(jit, rid)
    # B releases its own.
    status, _, answer = release(jit, KEY_B, rid)
    assert (status, answer) == (200, {"result": "removed", "runner_id": rid}), (status, answer)
    assert grant_b["runner_name"] not in jit.github.runner_names()


def test_release_outages_answer_429_or_503_with_retry_after(jit: SimpleNamespace) -> None:
    status, _, grant = signed_post(jit, KEY_A)
    assert status == 200, grant
    # GitHub's rate limit on the GET, longer than the GitHub client waits: 429 with GitHub's wait.
    jit.github.fail_next = [(429, {"Retry-After": "600"})]
    status, headers, answer = release(jit, KEY_A, grant["runner_id"])
    assert status == 429 and headers.get("retry-after") == "600", (status, headers, answer)
    # GitHub 5xx beyond the client's own retries: 503.
    jit.github.fail_next = [502] * 6
    status, headers, answer = release(jit, KEY_A, grant["runner_id"])
    assert status == 503 and int(headers["retry-after"]) >= 1, (status, headers, answer)
    jit.github.fail_next = []
    assert grant["runner_name"] in jit.github.runner_names()
    assert release(jit, KEY_A, grant["runner_id"])[0] == 200
