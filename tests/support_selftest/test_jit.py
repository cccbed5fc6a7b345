"""Just-in-time runners across FakeGitHub (REST) and the stand-in listener (broker): the config
generate-jitconfig answers is one the listener consumes without config.sh, the listener takes one
job and exits 0, GitHub's side forgets the registration, and the same config cannot be used again
(tests/support/README.md, "Just-in-time runners")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from support.github_emulator import FakeGitHub, rest

pytestmark = pytest.mark.timeout(40)

ENV_HOOK = 'env > "$RUNNER_TEMP_DUMP"\n'


@pytest.fixture
def github(broker):
    fake = FakeGitHub().attach_broker(broker).start()
    try:
        yield fake
    finally:
        fake.stop()


def mint(fake, name, labels=("self-hosted", "rle-test"), scope="/orgs/acme"):
    status, answer = rest(fake, "POST", f"{scope}/actions/runners/generate-jitconfig",
                          {"name": name, "runner_group_id": 1, "labels": list(labels)})
    assert status == 201, answer
    return answer


def listed(fake, name):
    status, page = rest(fake, "GET", f"/orgs/acme/actions/runners?per_page=100&name={name}")
    assert status == 200
    return page["runners"][0] if page["runners"] else None


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ACTIONS_RUNNER_INPUT_")}
    env.update(extra)
    return env


def test_config_from_the_environment_runs_one_job_off_argv(make_runner, broker, github, tmp_path):
    answer = mint(github, "rle-1-i-0abc")
    runner, blob = answer["runner"], answer["encoded_jit_config"]
    assert runner["status"] == "offline" and runner["busy"] is False and runner["ephemeral"] is True
    assert runner["os"] == "unknown" and "version" not in runner
    assert [label["name"] for label in runner["labels"]] == ["self-hosted", "rle-test"]
    files = json.loads(__import__("base64").b64decode(blob))
    assert sorted(files) == [".credentials", ".credentials_rsaparams", ".runner"]

    r = make_runner("jit-env", configured=False)
    dump = tmp_path / "hook-env.txt"
    r.set_hooks(started=ENV_HOOK)
    r.set_env({"RUNNER_TEMP_DUMP": str(dump)})
    proc = r.start(env=clean_env(ACTIONS_RUNNER_INPUT_JITCONFIG=blob))
    try:
        broker.wait_listening("rle-1-i-0abc", timeout=10)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert blob.encode() not in f.read()
        seen = listed(github, "rle-1-i-0abc")
        assert seen["status"] == "online" and seen["version"] and seen["os"] == "Linux"
        first = broker.assign_job(0.6)
        broker.wait_worker_started(first, timeout=10)
        assert wait_for(lambda: (listed(github, "rle-1-i-0abc") or {}).get("busy"))
        second = broker.assign_job(0.1)
        assert proc.wait(10) == 0  # ephemeral: exits 0 after its one job
    finally:
        if proc.poll() is None:
            proc.kill()
    assert broker.outcome(first) == "succeeded" and broker.job(first).runner == "rle-1-i-0abc"
    assert broker.job(second).dispatched_at is None  # the second job waits for another runner
    # The variable is consumed by the listener (CommandSettings.cs removes ACTIONS_RUNNER_INPUT_*):
    # the job's steps and hooks never see it.
    assert "ACTIONS_RUNNER_INPUT_JITCONFIG" not in dump.read_text() and blob not in dump.read_text()
    # Local config deleted by the listener, registration deleted by the service.
    for name in (".runner", ".credentials", ".credentials_rsaparams"):
        assert not (r / name).exists(), name
    assert listed(github, "rle-1-i-0abc") is None
    assert rest(github, "DELETE", f"/orgs/acme/actions/runners/{runner['id']}")[0] == 404


def test_second_start_with_the_same_config_fails(make_runner, broker, github):
    blob = mint(github, "rle-2-i-0abc")["encoded_jit_config"]
    r = make_runner("jit-twice", configured=False)
    first = r.start("--jitconfig", blob)
    job = broker.assign_job(0.1)
    assert first.wait(10) == 0 and broker.outcome(job) == "succeeded"
    late = broker.assign_job(0.1)
    second = r.start("--jitconfig", blob, stderr=subprocess.PIPE)
    assert second.wait(10) == 1  # TerminatedError
    assert "registration has been deleted from the server" in second.stderr.read()
    assert broker.job(late).dispatched_at is None


def test_concurrent_second_start_is_a_session_conflict(make_runner, broker, github):
    blob = mint(github, "rle-3-i-0abc")["encoded_jit_config"]
    a, b = make_runner("jit-a", configured=False), make_runner("jit-b", configured=False)
    first = a.start("--jitconfig", blob)
    try:
        broker.wait_listening("rle-3-i-0abc", timeout=10)
        second = b.start("--jitconfig", blob, stderr=subprocess.PIPE)
        assert second.wait(10) == 5  # SessionConflict
        assert "A session for this runner already exists." in second.stderr.read()
        job = broker.assign_job(0.1)
        assert first.wait(10) == 0 and broker.job(job).runner == "rle-3-i-0abc"
    finally:
        if first.poll() is None:
            first.kill()


def test_run_sh_with_jitconfig_and_an_idle_restart(make_runner, broker, github):
    blob = mint(github, "rle-4-i-0abc", scope="/repos/acme/infra")["encoded_jit_config"]
    r = make_runner("jit-runsh", configured=False)
    # Stopped while idle: the registration stays, so the same config works again (upstream
    # deletes the local config only after a completed one-job run).
    idle = r.start("--jitconfig", blob)
    broker.wait_listening("rle-4-i-0abc", timeout=10)
    idle.send_signal(signal.SIGTERM)
    assert idle.wait(5) == 0
    assert listed(github, "rle-4-i-0abc")["status"] == "offline"
    proc = subprocess.Popen([str(r / "run.sh"), "--jitconfig", blob], cwd=os.fspath(r), env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = broker.assign_job(0.1)
    assert proc.wait(10) == 0 and broker.outcome(job) == "succeeded"
    assert "Exiting runner..." in proc.stdout.read()
    assert listed(github, "rle-4-i-0abc") is None


def test_rest_delete_of_a_waiting_jit_runner_stops_its_listener(make_runner, broker, github):
    answer = mint(github, "rle-5-i-0abc")
    r = make_runner("jit-del", configured=False)
    proc = r.start("--jitconfig", answer["encoded_jit_config"])
    broker.wait_listening("rle-5-i-0abc", timeout=10)
    assert rest(github, "DELETE", f"/orgs/acme/actions/runners/{answer['runner']['id']}")[0] == 204
    assert proc.wait(10) == 0 and not (r / ".runner").exists()
    again = r.start("--jitconfig", answer["encoded_jit_config"])
    assert again.wait(10) == 1


def test_names_conflict_and_bodies_are_validated(github):
    github.add_runner("taken", ["x"])
    for scope in ("/orgs/acme", "/repos/acme/infra"):
        url = f"{scope}/actions/runners/generate-jitconfig"
        assert rest(github, "POST", url, {"name": "taken", "runner_group_id": 1, "labels": ["x"]})[0] == 409
        for bad in ({"name": "n", "runner_group_id": 1, "labels": []},
                    {"name": "n", "labels": ["x"]},
                    {"runner_group_id": 1, "labels": ["x"]},
                    {"name": "n", "runner_group_id": 1, "labels": ["x"] * 101}):
            assert rest(github, "POST", url, bad)[0] == 422, bad
    mint(github, "fresh")
    assert rest(github, "POST", "/orgs/acme/actions/runners/generate-jitconfig",
                {"name": "fresh", "runner_group_id": 1, "labels": ["x"]})[0] == 409
    # A registration nobody used stays listed, offline and never connected, until deleted.
    seen = listed(github, "fresh")
    assert seen["status"] == "offline" and "version" not in seen and not seen["busy"]


def test_a_bad_config_is_refused_like_upstream(make_runner):
    r = make_runner("jit-bad", configured=False)
    for blob in ("not base64!", "WyJhIl0=", "eyIuLi8uLi9ldGMveCI6ICJZUT09In0="):
        proc = r.start("--jitconfig", blob, stderr=subprocess.PIPE)
        assert proc.wait(10) == 1, blob
        assert proc.stderr.read().startswith("Error: ")
    assert not (r / ".runner").exists()
