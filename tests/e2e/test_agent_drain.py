"""Scale-in and stop requests while a job runs (issue 3, tests 3, 4 and 5)."""

from __future__ import annotations

import signal
import time

from harness import stop_agent, wait_for

#: HeartbeatTimeout for these tests (the emulator's test mode allows < 30 s). The core heartbeats
#: every third of it, so a job of several timeouts needs several heartbeats to survive.
HOOK_TIMEOUT_S = 3


def complete_calls(host):
    return host.calls("CompleteLifecycleAction")


def test_scale_in_during_a_job_longer_than_the_heartbeat_timeout(make_host, broker, aws):
    host = make_host(hook_timeout=HOOK_TIMEOUT_S)
    agent = host.start_serving()
    job = broker.assign_job(8.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    host.terminate()

    assert broker.wait_outcome(job, timeout=30) == "succeeded"
    done = broker.job(job)
    assert [(h.stage, h.exit_code) for h in done.hooks] == [("started", 0), ("completed", 0)]

    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    complete = host.calls("CompleteLifecycleAction", ok=True)
    assert len(complete) == 1 and len(complete_calls(host)) == 1
    # The job's end is the worker's exit, which the broker records as the job's end.
    lag = complete[0].monotonic - done.ended_at
    assert lag < 1.0, f"hook completed {lag:.3f} s after the job ended"

    beats = host.calls("RecordLifecycleActionHeartbeat", ok=True)
    assert len(beats) >= 2, f"an 8 s job under a {HOOK_TIMEOUT_S} s hook needs heartbeats: {len(beats)}"
    assert all(b.monotonic < complete[0].monotonic for b in beats), "no heartbeat after completion"
    # The hook never timed out: the instance left through our CONTINUE.
    assert complete[0].result == "CONTINUE"
    wait_for(host.gone, 10, "instance removed")
    time.sleep(1.0)
    assert len(host.calls("RecordLifecycleActionHeartbeat")) == len(beats), "heartbeat after the hook completed"
    # The listener was only signalled once the job was over.
    stop = agent.records(action="stop-listener")
    assert [s["cancels_job"] for s in stop] == [False]
    assert stop_agent(agent) == 0


def test_race_job_assigned_just_after_terminating_wait(make_host, broker, aws):
    """The source PR's race: a job lands between Terminating:Wait and the runner's stop.

    IMDS shows the new target state 3 s late here, so the job is dispatched after the instance
    entered Terminating:Wait and before the agent can know. The job-started hook's protection
    call is refused (not InService), which the agent takes as the termination signal."""
    host = make_host(hook_timeout=HOOK_TIMEOUT_S)
    agent = host.start_serving()
    # The emulator answers "as of 3 s ago"; before the instance is 3 s old that is "no state"
    # (404), which is not what this test is about.
    born = host.state_changes()[0][0]
    time.sleep(max(0.0, born + 3.5 - time.monotonic()))
    host.imds.set_target_state_lag(3.0)

    host.terminate()
    waited_at, _ = host.entered("Terminating:Wait")
    job = broker.assign_job(4.0, runner=host.runner.name)
    started = broker.wait_worker_started(job)
    assert started.dispatched_at > waited_at

    assert broker.wait_outcome(job, timeout=30) == "succeeded"
    done = broker.job(job)
    assert [(h.stage, h.exit_code) for h in done.hooks] == [("started", 0), ("completed", 0)]
    assert "terminating" in done.hooks[0].output, done.hooks[0].output

    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    complete = host.calls("CompleteLifecycleAction", ok=True)
    assert len(complete) == 1 and complete[0].monotonic > done.ended_at
    refused = [c for c in host.calls("SetInstanceProtection") if c.protected and c.status != 200]
    assert refused and refused[0].error_code == "ValidationError"
    assert agent.records(notice="termination-detected")
    assert not agent.records(notice="listener-died-with-job")
    wait_for(host.gone, 10, "instance removed")
    assert stop_agent(agent) == 0


def test_sigterm_mid_job_lets_the_job_finish_then_exits_zero(make_host, broker):
    host = make_host()
    agent = host.start_serving()
    job = broker.assign_job(4.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    wait_for(lambda: host.protected() is True, 3, "protection")

    agent.signal(signal.SIGTERM)
    agent.wait_record(notice="drain-started", cause="stop-requested", timeout=5)
    time.sleep(0.5)
    assert agent.running(), "the agent must wait for the job"
    assert not agent.records(action="stop-listener"), "no signal to a listener with a live job"

    assert agent.wait(timeout=30) == 0
    assert broker.outcome(job) == "succeeded"
    stop = agent.records(action="stop-listener")
    assert len(stop) == 1 and stop[0]["reason"] == "stop-requested-idle"
    assert broker.job(job).ended_at is not None
    # An idle host left behind unprotected, so the group can scale it in.
    assert host.protected() is False
    # The hook socket is removed on a clean exit.
    assert not host.socket.exists()


def test_second_sigterm_forces_the_stop(make_host, broker):
    host = make_host()
    agent = host.start_serving()
    job = broker.assign_job(30.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    agent.signal(signal.SIGTERM)
    agent.wait_record(notice="drain-started", timeout=5)
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=20) == 0
    stop = agent.records(action="stop-listener")
    assert stop and stop[0]["cancels_job"] is True
    assert agent.records(notice="forcing-stop-with-job")
    # The forced stop is the one path that cancels a job; the runner reports it as such.
    assert broker.wait_outcome(job, timeout=20) in ("cancelled", "failed")


ONE_JOB = {"runner_mode": "one-job", "runner_command": "bin/Runner.Listener run --startuptype service --once"}


def test_spot_notice_stops_new_jobs_but_lets_the_running_one_finish(make_host, broker):
    """One-job mode: the listener exits after its job without taking the next one (Runner.cs,
    run-once), and the agent does not relaunch it while draining. (A persistent listener goes
    straight back to polling and can take a queued job in the instant its job ends.)"""
    host = make_host(**ONE_JOB)
    agent = host.start_serving()
    first = broker.assign_job(3.0, runner=host.runner.name)
    broker.wait_worker_started(first)
    host.imds.set_spot_notice("terminate")
    agent.wait_record(notice="drain-started", cause="spot-interruption", timeout=5)
    second = broker.assign_job(1.0, runner=host.runner.name)

    assert broker.wait_outcome(first, timeout=20) == "succeeded"
    agent.wait_record(message="listener exited", timeout=10)
    time.sleep(1.5)
    # The queued job was never taken here: it waits for another runner.
    assert broker.job(second).dispatched_at is None and broker.outcome(second) is None
    assert len(agent.records(message="listener started")) == 1, "no relaunch while draining"
    # At most a SIGINT to the idle listener on its way out; never one that cancels a job.
    assert all(r["cancels_job"] is False for r in agent.records(action="stop-listener"))
    assert agent.running()
    assert stop_agent(agent) == 0


def test_one_job_mode_relaunches_the_listener_between_jobs(make_host, broker):
    host = make_host(**ONE_JOB)
    agent = host.start_serving()
    for _ in range(2):
        job = broker.assign_job(0.5, runner=host.runner.name)
        assert broker.wait_outcome(job, timeout=20) == "succeeded"
        broker.wait_listening(host.runner.name, timeout=15)
    starts = wait_for(lambda: len(agent.records(action="start-listener")) >= 3 and agent.records(action="start-listener"),
                      10, "third listener start")
    assert [s["reason"] for s in starts] == ["serving", "next-job", "next-job"], starts
    assert stop_agent(agent) == 0
