"""The fake runner reproduces the upstream runner semantics the agent depends on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from support.fake_runner.common import SHUTDOWN_MESSAGE, read_json_bom

pytestmark = pytest.mark.timeout(30)

HOOK_OK = "echo \"hook $GITHUB_JOB on $RUNNER_NAME\"\n"


def comm(pid):
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def gone(pid, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.02)
    return False


def test_job_succeeds_with_hooks_in_a_worker_child(runner_dir, broker):
    runner_dir.set_hooks(started=HOOK_OK, completed=HOOK_OK)
    proc = runner_dir.start()
    try:
        broker.wait_listening(timeout=10)
        assert comm(proc.pid) == "Runner.Listener"
        job_id = broker.assign_job(0.4)
        job = broker.wait_worker_started(job_id, timeout=10)
        assert comm(job.worker_pid) == "Runner.Worker"
        assert ppid(job.worker_pid) == proc.pid
        assert broker.wait_outcome(job_id, timeout=10) == "succeeded"
        job = broker.job(job_id)
        assert [(h.stage, h.exit_code) for h in job.hooks] == [("started", 0), ("completed", 0)]
        assert job.hooks[0].output == f"hook {job.name} on runner-1\n"
        assert job.dispatched_at <= job.worker_started_at <= job.hooks[0].started
        assert job.hooks[1].started - job.hooks[0].ended >= 0.4  # the job's own work ran between
        assert job.conclusion == "success" and job.listener_pid == proc.pid
        assert gone(job.worker_pid)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_job_cancels_and_listener_exits_0(runner_dir, broker, sig):
    runner_dir.set_hooks(started=HOOK_OK, completed=HOOK_OK)
    proc = runner_dir.start()
    broker.wait_listening(timeout=10)
    job_id = broker.assign_job(20)
    job = broker.wait_worker_started(job_id, timeout=10)
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(5) == 0
    assert time.monotonic() - t0 < 2
    assert broker.wait_outcome(job_id, timeout=5) == "cancelled"
    job = broker.job(job_id)
    # Upstream: the worker fails the job with the shutdown issue and skips every later step,
    # the job-completed hook included.
    assert job.reason == SHUTDOWN_MESSAGE and job.conclusion == "failure"
    assert [h.stage for h in job.hooks] == ["started"]
    assert job.worker_exit_code == 102  # 100 + TaskResult.Failed
    assert gone(job.worker_pid)
    out = (runner_dir / "_diag" / "listener-0.log").read_text()
    assert "Listening for Jobs" in out and "Exiting..." in out and "completed with result: Failed" in out


def test_idle_listener_exits_0_promptly(runner_dir, broker):
    proc = runner_dir.start()
    broker.wait_listening(timeout=10)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    assert time.monotonic() - t0 < 2


def test_once_exits_after_its_job_and_leaves_the_next(make_runner, broker):
    once = make_runner("once")
    proc = once.start(once=True)
    broker.wait_listening("once", timeout=10)
    first = broker.assign_job(0.3)
    broker.wait_worker_started(first, timeout=10)
    second = broker.assign_job(0.2)
    assert proc.wait(10) == 0
    assert broker.outcome(first) == "succeeded"
    assert broker.job(second).dispatched_at is None  # never taken by the --once listener
    other = make_runner("other").start()
    try:
        assert broker.wait_outcome(second, timeout=10) == "succeeded"
        assert broker.job(second).runner == "other"
    finally:
        other.send_signal(signal.SIGINT)
        other.wait(5)


def test_persistent_listener_takes_the_next_job_at_once(runner_dir, broker):
    first = broker.assign_job(0.3)
    second = broker.assign_job(0.2)
    proc = runner_dir.start()
    try:
        assert broker.wait_outcome(second, timeout=10) == "succeeded"
        a, b = broker.job(first), broker.job(second)
        assert a.outcome == "succeeded" and a.runner == b.runner == "runner-1"
        assert 0 <= b.dispatched_at - a.ended_at < 1.5
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0


def test_failing_started_hook_fails_the_job(runner_dir, broker):
    runner_dir.set_hooks(started="echo nope; exit 3\n", completed=HOOK_OK)
    proc = runner_dir.start()
    try:
        job_id = broker.assign_job(20)
        assert broker.wait_outcome(job_id, timeout=5) == "failed"  # the 20 s body was skipped
        job = broker.job(job_id)
        assert [(h.stage, h.exit_code) for h in job.hooks] == [("started", 3), ("completed", 0)]
        assert job.hooks[0].output == "nope\n"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(5)


def test_failing_completed_hook_fails_a_green_job(runner_dir, broker):
    runner_dir.set_hooks(completed="false\necho unreachable\n")
    proc = runner_dir.start()
    try:
        job_id = broker.assign_job(0.1)
        assert broker.wait_outcome(job_id, timeout=10) == "failed"
        assert [(h.stage, h.exit_code, h.output) for h in broker.job(job_id).hooks] == [("completed", 1, "")]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(5)


def test_service_cancel_still_runs_completed_hook(runner_dir, broker):
    runner_dir.set_hooks(completed=HOOK_OK)
    proc = runner_dir.start()
    try:
        job_id = broker.assign_job(20)
        broker.wait_worker_started(job_id, timeout=10)
        broker.cancel_job(job_id)
        assert broker.wait_outcome(job_id, timeout=5) == "cancelled"
        job = broker.job(job_id)
        assert job.conclusion == "cancelled" and [h.stage for h in job.hooks] == ["completed"]
        assert proc.poll() is None  # the listener goes on
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0


def test_listener_killed_worker_notices_and_job_fails(runner_dir, broker):
    proc = runner_dir.start()
    job_id = broker.assign_job(20)
    job = broker.wait_worker_started(job_id, timeout=10)
    proc.kill()
    proc.wait(5)
    assert gone(job.worker_pid, timeout=3)
    assert broker.wait_outcome(job_id, timeout=5) == "failed"
    assert "lost communication" in broker.job(job_id).reason


def test_broker_controls_listener_exit_code(runner_dir, broker):
    proc = runner_dir.start()
    broker.wait_listening(timeout=10)
    broker.crash_next(2)
    assert proc.wait(5) == 2


def test_deleted_registration_stops_listener_and_removes_config(runner_dir, broker):
    proc = runner_dir.start()
    job_id = broker.assign_job(20)
    broker.wait_worker_started(job_id, timeout=10)
    broker.delete_runner("runner-1")
    assert proc.wait(5) == 0
    assert broker.wait_outcome(job_id, timeout=5) == "cancelled"
    assert not (runner_dir / ".runner").exists() and not (runner_dir / ".credentials").exists()
    assert runner_dir.start().wait(5) == 1  # "Runner is not configured."


def test_config_sh_env_inputs_registration_and_remove(make_runner, broker):
    r = make_runner("fresh", configured=False)
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_ALLOW_RUNASROOT"}
    args = [str(r.config_sh), "--url", "https://github.com/fake-org", "--unattended", "--name", "ci-7",
            "--labels", "big", "--ephemeral"]
    if os.getuid() == 0:
        res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=10)
        assert res.returncode == 1 and "Must not run with sudo" in res.stdout
    env["RUNNER_ALLOW_RUNASROOT"] = "1"
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=10)
    assert res.returncode == 1 and "Invalid configuration provided for token" in res.stderr
    env["ACTIONS_RUNNER_INPUT_TOKEN"] = "AAAREGTOKEN"
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (r / ".runner").read_bytes().startswith(b"\xef\xbb\xbf")  # upstream writes a BOM
    settings = read_json_bom(r / ".runner")
    assert settings["agentName"] == "ci-7" and settings["ephemeral"] is True
    assert settings["gitHubUrl"] == "https://github.com/fake-org"
    assert broker.runners()["ci-7"]["labels"] == ["self-hosted", "Linux", "X64", "big"]
    call = r.config_calls()[-1]
    assert call["argv"] == args[1:] and call["env"]["ACTIONS_RUNNER_INPUT_TOKEN"] == "AAAREGTOKEN"
    assert "AAAREGTOKEN" not in " ".join(call["argv"])
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=10)
    assert res.returncode == 1 and "already configured" in res.stderr
    res = subprocess.run([str(r.config_sh), "remove", "--token", "T"], env=env, capture_output=True, text=True, timeout=10)
    assert res.returncode == 0 and not (r / ".runner").exists() and "ci-7" not in broker.runners()


def test_jitconfig_runs_one_job_then_cleans_up(make_runner, broker):
    r = make_runner("jit", configured=False)
    jit = broker.generate_jitconfig("jit-1")
    proc = r.start("--jitconfig", jit)
    job_id = broker.assign_job(0.2)
    assert proc.wait(10) == 0
    assert broker.outcome(job_id) == "succeeded" and broker.job(job_id).runner == "jit-1"
    assert not (r / ".runner").exists() and "jit-1" not in broker.runners()


def test_monitor_socket_messages(make_runner, broker):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    port = server.getsockname()[1]
    r = make_runner("mon", monitor_socket=f"127.0.0.1:{port}")
    proc = r.start()
    received = []
    try:
        conn, _ = server.accept()
        conn.settimeout(10)

        def read():
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                received.append(data.decode())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        job_id = broker.assign_job(0.1)
        broker.wait_outcome(job_id, timeout=10)
        job = broker.job(job_id)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0
        reader.join(5)
        text = "".join(received)
        assert text.startswith(f"Start {job_id} {job.access_token} {broker.url}/ {proc.pid}")
        assert f"End {proc.pid}" in text and text.endswith("<EOF>")
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
