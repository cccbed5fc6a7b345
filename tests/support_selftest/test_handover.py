"""The stand-in listener takes upstream's handover steps (W0 in transit, W1 acknowledge/acquire,
W2 first renew and worker spawn), writes upstream's perf counters, and a stop in each window
settles as upstream's would (tests/support/README.md, "The handover";
/work/shared/docs/handover-window.md, sections 1.2-1.4)."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime

import pytest

from support.fake_runner import install_fake_runner
from support.fake_runner.broker import Broker

pytestmark = pytest.mark.timeout(60)

JOB_LINES = ["MessageReceived_RunnerJobRequest", "JobRequestRenewed_{rid}", "StartingWorkerProcess",
             "SentJobToWorker_{rid}"]


def perf_lines(path):
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    for line in lines:
        counter, _, stamp = line.partition(":")
        # .NET's round-trip format, UTC: 2026-01-02T03:04:05.1234567Z
        assert stamp.endswith("Z") and len(stamp.split(".")[1]) == 8, line
        datetime.strptime(stamp[:26], "%Y-%m-%dT%H:%M:%S.%f")
    return lines


def counters(path):
    return [line.partition(":")[0] for line in perf_lines(path)]


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(what)


def stop(proc, sig=signal.SIGINT, timeout=20):
    # Generous: under CI's load the broker's answers (the session's DELETE has a 5 s timeout) can
    # be slow; how fast the stop must be is each test's own assertion.
    t0 = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout)
    return code, time.monotonic() - t0


# ----------------------------------------------------------------------------- perf log
def test_perf_lines_follow_upstreams_order_and_come_first(runner_dir, broker, tmp_path):
    perf_dir = tmp_path / "perf" / "not-yet-there"
    proc = runner_dir.start(env={**os.environ, "RUNNER_PERFLOG": str(perf_dir)})
    try:
        broker.wait_listening(timeout=10)
        perf = perf_dir / "Runner.perf"
        # HostContext creates the directory; Program.MainAsync's first counter.
        assert counters(perf) == ["RunnerProcessStarted"]
        job_id = broker.assign_job(0.2, ack_delay_s=1.0)
        broker.wait_window(job_id, "W1", timeout=10)
        # The line is written as soon as the message is taken, before the acknowledge.
        assert counters(perf) == ["RunnerProcessStarted", "MessageReceived_RunnerJobRequest"]
        assert broker.job(job_id).handovers[0].acknowledged_at is None
        assert broker.wait_outcome(job_id, timeout=10) == "succeeded"
        rid = broker.job(job_id).request_id
        assert counters(perf) == ["RunnerProcessStarted"] + [c.format(rid=rid) for c in JOB_LINES]
        stamps = [line.partition(":")[2] for line in perf_lines(perf)]
        assert stamps == sorted(stamps)
        # A cancel message is a message too (MessageReceived_<type> for every message).
        second = broker.assign_job(20)
        broker.wait_worker_started(second, timeout=10)
        broker.cancel_job(second)
        assert broker.wait_outcome(second, timeout=10) == "cancelled"
        wait_for(lambda: "MessageReceived_JobCancellation" in counters(perf), 5, "the cancel message's line")
    finally:
        stop(proc)


def test_perf_log_from_env_file_and_nothing_without_it(make_runner, broker, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_PERFLOG"}
    quiet = make_runner("quiet")
    proc = quiet.start(env=env)
    job_id = broker.assign_job(0.1, runner="quiet")
    assert broker.wait_outcome(job_id, timeout=10) == "succeeded"
    stop(proc)
    empty = make_runner("empty")
    proc = empty.start(env={**env, "RUNNER_PERFLOG": ""})
    job_id = broker.assign_job(0.1, runner="empty")
    assert broker.wait_outcome(job_id, timeout=10) == "succeeded"
    stop(proc)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".perf")]
    # <root>/.env is loaded before the HostContext reads RUNNER_PERFLOG (Program.cs).
    via_env = make_runner("via-env")
    via_env.set_env({"RUNNER_PERFLOG": str(tmp_path / "from-env")})
    proc = via_env.start(env=env)
    job_id = broker.assign_job(0.1, runner="via-env")
    assert broker.wait_outcome(job_id, timeout=10) == "succeeded"
    stop(proc)
    assert "SentJobToWorker_%d" % broker.job(job_id).request_id in counters(tmp_path / "from-env" / "Runner.perf")


# ------------------------------------------------------------------------- the windows
def test_each_step_takes_its_configured_time(runner_dir, broker):
    proc = runner_dir.start()
    try:
        broker.wait_listening(timeout=10)
        fast = broker.assign_job(0.1)
        assert broker.wait_outcome(fast, timeout=10) == "succeeded"
        h = broker.job(fast).handovers[0]
        assert h.fate == "ran" and h.window == "W3"
        assert 0.2 <= h.spawned_at - h.dispatched_at < 1.5  # 4 x 50 ms by default
        broker.ack_delay_s = broker.acquire_delay_s = 0.6  # broker-wide
        slow = broker.assign_job(0.1, renew_delay_s=0.7, spawn_delay_s=0.8)  # per job
        assert broker.wait_outcome(slow, timeout=15) == "succeeded"
        h = broker.job(slow).handovers[0]
        assert h.received_at - h.dispatched_at < 0.5
        assert 0.6 <= h.acknowledged_at - h.received_at < 1.2
        assert 0.6 <= h.acquired_at - h.acknowledged_at < 1.2
        assert 0.7 <= h.first_renew_at - h.acquired_at < 1.3
        assert 0.8 <= h.spawned_at - h.first_renew_at < 1.5
        assert broker.job(slow).worker_started_at >= h.spawned_at
    finally:
        stop(proc)


@pytest.mark.parametrize("window,knob,fate", [
    ("W0", "transit_delay_s", "requeued"),
    ("W1", "ack_delay_s", "requeued"),
    ("W1", "acquire_delay_s", "requeued"),
    ("W2", "renew_delay_s", "lost-W2"),
    ("W2", "spawn_delay_s", "lost-W2"),
])
def test_a_stop_in_each_window_settles_as_upstream(make_runner, broker, tmp_path, window, knob, fate):
    broker.requeue_delay_s = 0.5
    first = make_runner("first")
    perf = tmp_path / "perf-first"
    proc = first.start(env={**os.environ, "RUNNER_PERFLOG": str(perf)})
    broker.wait_listening("first", timeout=10)
    job_id = broker.assign_job(0.2, **{knob: 3.0})
    if window == "W0":
        broker.wait_dispatched(job_id, timeout=10)
        time.sleep(0.3)
    else:
        broker.wait_window(job_id, window, timeout=10)
        if knob in ("acquire_delay_s", "spawn_delay_s"):
            time.sleep(0.3)  # past the step before it
    code, took = stop(proc, signal.SIGTERM if knob == "spawn_delay_s" else signal.SIGINT)
    assert code == 0 and took < 8, took  # the step is called off at once; the rest is the session's end
    assert broker.handover_outcome(job_id) == fate
    h = broker.job(job_id).handovers[0]
    assert h.stopped_in == window and h.runner == "first" and h.spawned_at is None
    assert broker.job(job_id).worker_started_at is None
    # W0: the listener never saw the message (no perf line); W1/W2: it did.
    assert ("MessageReceived_RunnerJobRequest" in counters(perf / "Runner.perf")) == (window != "W0")
    # Another runner is polling: a requeued job goes to it after requeue_delay_s, a lost one never.
    other = make_runner("other").start()
    try:
        if fate == "requeued":
            assert broker.has_assigned_job("first")  # until the re-queue
            assert broker.wait_outcome(job_id, timeout=10) == "succeeded"
            job = broker.job(job_id)
            assert job.runner == "other" and job.dispatch_count == 2
            assert broker.handover_outcomes(job_id) == ["requeued", "ran"]
            assert job.handovers[1].dispatched_at - h.stopped_at >= 0.5
            assert not broker.has_assigned_job("first")
        else:
            time.sleep(1.5)
            job = broker.job(job_id)
            assert job.outcome is None and job.dispatch_count == 1 and job.runner == "first"
            # Leased to the dead runner: still assigned to it, so REST DELETE would be refused.
            assert broker.assigned_job("first") == job_id and not broker.busy("first")
            assert job.accepted
    finally:
        stop(other)


@pytest.mark.parametrize("policy,window,knob,fate", [
    ("all-lost", "W0", "transit_delay_s", "lost-W0"),
    ("all-lost", "W1", "ack_delay_s", "lost-W1"),
    ("all-lost", "W2", "renew_delay_s", "lost-W2"),
    ("w2-requeued-after-lease", "W2", "renew_delay_s", "requeued"),
])
def test_stop_policies(make_runner, broker, policy, window, knob, fate):
    broker.stop_policy = policy
    broker.requeue_delay_s = 0.2
    broker.lease_s = 1.5
    proc = make_runner("first").start()
    broker.wait_listening("first", timeout=10)
    job_id = broker.assign_job(0.2, **{knob: 3.0})
    if window == "W0":
        broker.wait_dispatched(job_id, timeout=10)
    else:
        broker.wait_window(job_id, window, timeout=10)
    stopped = time.monotonic()
    assert stop(proc)[0] == 0
    assert broker.handover_outcome(job_id) == fate
    other = make_runner("other").start()
    try:
        if fate == "requeued":
            assert broker.wait_outcome(job_id, timeout=10) == "succeeded"
            assert broker.job(job_id).handovers[1].dispatched_at - stopped >= 1.5  # after the lease
        else:
            time.sleep(1.0)
            assert broker.outcome(job_id) is None and broker.job(job_id).dispatch_count == 1
    finally:
        stop(other)


def test_a_killed_listener_in_w1_is_noticed(make_runner, broker):
    broker.requeue_delay_s = 0.2
    proc = make_runner("first").start()
    job_id = broker.assign_job(0.2, acquire_delay_s=5.0)
    broker.wait_window(job_id, "W1", timeout=10)
    proc.kill()
    proc.wait(5)
    assert broker.wait_handover(job_id, timeout=5) == "requeued"
    assert broker.job(job_id).handovers[0].stopped_in == "W1"
    other = make_runner("other").start()
    try:
        assert broker.wait_outcome(job_id, timeout=10) == "succeeded" and broker.job(job_id).runner == "other"
    finally:
        stop(other)


def test_a_stop_after_the_spawn_is_the_workers_business(runner_dir, broker):
    proc = runner_dir.start()
    job_id = broker.assign_job(20)
    broker.wait_worker_started(job_id, timeout=10)
    assert stop(proc)[0] == 0
    assert broker.wait_outcome(job_id, timeout=5) == "cancelled"
    assert broker.handover_outcomes(job_id) == ["ran"]


# ------------------------------------------------------------------------------ acquire
def test_acquire_retries_then_runs_and_a_refusal_is_skipped(runner_dir, broker):
    broker.acquire_backoff_s = (0.1, 0.2)
    broker.pickup_timeout_s = 1.5
    proc = runner_dir.start()
    try:
        retried = broker.assign_job(0.1, acquire_answers=[500, 503])
        assert broker.wait_outcome(retried, timeout=10) == "succeeded"
        assert broker.handover_outcomes(retried) == ["ran"]
        # 409: "Skipping message Job." The persistent listener polls on; the assignment expires
        # (pickup timeout) and the job is handed out again.
        skipped = broker.assign_job(0.1, acquire_answers=[409])
        assert broker.wait_outcome(skipped, timeout=15) == "succeeded"
        assert broker.handover_outcomes(skipped) == ["expired", "ran"]
        assert proc.poll() is None
        # Five failed attempts: given up, the same as a skip.
        exhausted = broker.assign_job(0.1, acquire_answers=[500] * 5)
        assert broker.wait_outcome(exhausted, timeout=15) == "succeeded"
        assert broker.handover_outcomes(exhausted) == ["expired", "ran"]
    finally:
        stop(proc)


def test_a_broker_without_handover_delays(tmp_path):
    with Broker(ack_delay_s=0, acquire_delay_s=0, renew_delay_s=0, spawn_delay_s=0) as b:
        proc = install_fake_runner(tmp_path / "zero", b.url, name="zero").start()
        try:
            job_id = b.assign_job(0.1)
            assert b.wait_outcome(job_id, timeout=10) == "succeeded"
            h = b.job(job_id).handovers[0]
            assert h.spawned_at - h.dispatched_at < 0.2
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


def test_unknown_policy_and_ghost_mode_are_refused():
    with pytest.raises(ValueError):
        Broker(stop_policy="sometimes")
    with pytest.raises(ValueError):
        Broker(ghost_mode="haunt")


@pytest.mark.parametrize("window,knob", [("W1", "acquire_delay_s"), ("W2", "renew_delay_s")])
def test_a_service_cancel_before_the_worker(runner_dir, broker, window, knob):
    proc = runner_dir.start()
    try:
        job_id = broker.assign_job(5, **{knob: 1.5})
        broker.wait_window(job_id, window, timeout=10)
        broker.cancel_job(job_id)
        assert broker.outcome(job_id) == "cancelled" and broker.handover_outcome(job_id) == "cancelled"
        assert not broker.has_assigned_job("runner-1")
        time.sleep(2.0)
        assert broker.job(job_id).worker_started_at is None  # the dispatch was called off
        # The persistent listener goes on with the next job.
        nxt = broker.assign_job(0.1)
        assert broker.wait_outcome(nxt, timeout=10) == "succeeded"
    finally:
        stop(proc)
