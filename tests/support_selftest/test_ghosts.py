"""FakeGitHub and the broker around a JIT runner's handover: REST DELETE refused while a job is
assigned, registrations consumed by an assignment, and listeners whose registration is gone
("ghosts": they exit, or poll forever) (tests/support/README.md; handover-window.md 1.4, 3b)."""

from __future__ import annotations

import signal
import time

import pytest

from support.github_emulator import FakeGitHub, rest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def github(broker):
    fake = FakeGitHub().attach_broker(broker).start()
    try:
        yield fake
    finally:
        fake.stop()


def mint(fake, name):
    status, answer = rest(fake, "POST", "/orgs/acme/actions/runners/generate-jitconfig",
                          {"name": name, "runner_group_id": 1, "labels": ["x"]})
    assert status == 201, (status, answer)
    return answer["runner"]["id"], answer["encoded_jit_config"]


def start_jit(make_runner, fake, broker, name, with_dir=False):
    rid, blob = mint(fake, name)
    runner = make_runner(f"dir-{name}", configured=False)
    proc = runner.start("--jitconfig", blob)
    broker.wait_listening(name, timeout=10)
    return (rid, proc, runner) if with_dir else (rid, proc)


def runner_path(rid):
    return f"/orgs/acme/actions/runners/{rid}"


def listed(fake, name):
    return [r["name"] for r in rest(fake, "GET", "/orgs/acme/actions/runners?per_page=100")[1]["runners"]
            if r["name"] == name]


def kill(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


@pytest.mark.parametrize("window,knob", [("W0", "transit_delay_s"), ("W1", "ack_delay_s"),
                                         ("W2", "renew_delay_s")])
def test_delete_is_refused_while_a_job_is_assigned(make_runner, broker, github, window, knob):
    rid, proc = start_jit(make_runner, github, broker, f"jit-{window.lower()}")
    try:
        job_id = broker.assign_job(0.2, **{knob: 2.0})
        broker.wait_dispatched(job_id, timeout=10) if window == "W0" else broker.wait_window(job_id, window, 10)
        status, body = rest(github, "DELETE", runner_path(rid))
        assert status == 422 and "running a job" in body["message"]
        status, runner = rest(github, "GET", runner_path(rid))
        assert status == 200 and runner["busy"] is True and runner["status"] == "online"
        assert broker.wait_outcome(job_id, timeout=15) == "succeeded"  # the refusal took nothing away
        assert proc.wait(10) == 0
        assert rest(github, "GET", runner_path(rid))[0] == 404  # ephemeral: gone after its job
    finally:
        kill(proc)


def test_a_job_lost_in_w2_keeps_its_dead_runner_undeletable(make_runner, broker, github):
    rid, proc = start_jit(make_runner, github, broker, "jit-lost")
    job_id = broker.assign_job(0.2, renew_delay_s=3.0)
    broker.wait_window(job_id, "W2", timeout=10)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(5) == 0
    assert broker.handover_outcome(job_id) == "lost-W2"
    status, runner = rest(github, "GET", runner_path(rid))
    assert status == 200 and runner["status"] == "offline" and runner["busy"] is False
    # runner#4598: RemoveRunner kept failing with JobStillRunningError while the job was leased.
    assert rest(github, "DELETE", runner_path(rid))[0] == 422


def test_an_idle_delete_means_no_job_ever_again(make_runner, broker, github):
    broker.ghost_mode = "poll"
    rid, proc = start_jit(make_runner, github, broker, "jit-idle")
    try:
        assert rest(github, "DELETE", runner_path(rid))[0] == 204
        assert rest(github, "GET", runner_path(rid))[0] == 404
        job_id = broker.assign_job(0.1, runner="jit-idle")
        time.sleep(2.5)
        # Mode B: the listener polls on as a ghost and is never handed the job.
        assert proc.poll() is None
        assert broker.job(job_id).dispatched_at is None
        assert any(s.runner == "jit-idle" and not s.closed for s in broker.sessions())
        assert listed(github, "jit-idle") == []
        broker.cancel_job(job_id)
    finally:
        kill(proc)


def test_consumed_on_assign_answers_404_from_the_assignment_on(make_runner, broker, github):
    github.consumed_on_assign = True
    rid, proc = start_jit(make_runner, github, broker, "jit-consumed")
    try:
        assert rest(github, "GET", runner_path(rid))[0] == 200
        job_id = broker.assign_job(0.2, ack_delay_s=1.5)
        broker.wait_window(job_id, "W1", timeout=10)
        assert rest(github, "GET", runner_path(rid))[0] == 404
        assert rest(github, "DELETE", runner_path(rid))[0] == 404
        assert listed(github, "jit-consumed") == []
        assert broker.runner_state("jit-consumed")["consumed"]
        # The assignment itself stands: the job runs on the consumed registration.
        assert broker.wait_outcome(job_id, timeout=10) == "succeeded"
        assert proc.wait(10) == 0
    finally:
        kill(proc)


@pytest.mark.parametrize("mode", ["exit", "poll"])
def test_a_consumed_runner_whose_assignment_expired_is_a_ghost(make_runner, broker, github, mode):
    """The assignment consumed the registration, then expired before the listener picked the job
    up: acknowledge answers 404 (AcknowledgeJobNotFound), acquire 409. Mode "exit": the ephemeral
    listener exits 0 (PR #4540). Mode "poll": it skips the message and polls on forever, never
    to be handed a job (runner#4617)."""
    github.consumed_on_assign = True
    broker.pickup_timeout_s = 0.5
    broker.set_ghost_mode("jit-ghost", mode)
    rid, proc, runner = start_jit(make_runner, github, broker, "jit-ghost", with_dir=True)
    other = None
    try:
        job_id = broker.assign_job(0.2, ack_delay_s=1.5)
        assert broker.wait_handover(job_id, timeout=10) == "expired"
        assert rest(github, "GET", runner_path(rid))[0] == 404
        broker.pickup_timeout_s = 60.0  # the next runner takes its time and keeps the job
        other = make_runner("other").start()
        assert broker.wait_outcome(job_id, timeout=15) == "succeeded"
        assert broker.job(job_id).runner == "other" and broker.handover_outcomes(job_id) == ["expired", "ran"]
        if mode == "exit":
            assert proc.wait(10) == 0
            out = (runner / "_diag" / "listener-0.log").read_text()
            # Its own exit on the acknowledge 404, not the poll's runner-not-found (which would
            # clean up the local configuration).
            assert "The job this runner was sent no longer exists on the server" in out
            assert "Cleaning up local configuration" not in out and (runner / ".runner").exists()
            assert not any(s.runner == "jit-ghost" and not s.closed for s in broker.sessions())
        else:
            time.sleep(2.0)
            assert proc.poll() is None
            [ghost] = [s for s in broker.sessions() if s.runner == "jit-ghost" and not s.closed]
            assert ghost.skipped and time.monotonic() - ghost.last_poll < 3
            pinned = broker.assign_job(0.1, runner="jit-ghost")
            time.sleep(1.0)
            assert broker.job(pinned).dispatched_at is None
            broker.cancel_job(pinned)
    finally:
        kill(proc)
        if other is not None:
            other.send_signal(signal.SIGINT)
            other.wait(5)
