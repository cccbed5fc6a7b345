"""Faults: API throttling and 5xx, IMDS outage, agent crash mid-drain (issue 3, test 6).

The listener crash case is in test_agent_jobs.py (relaunch on exit 2, stop on exit 1)."""

from __future__ import annotations

import time

from harness import parse_ts, stop_agent, wait_for

from support.fake_runner.common import pid_alive


def test_throttling_and_5xx_on_heartbeat_and_complete_are_retried_and_complete_once(make_host, broker, aws):
    host = make_host(hook_timeout=3)
    agent = host.start_serving()
    job = broker.assign_job(6.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    iid = host.instance_id
    aws.inject_fault("RecordLifecycleActionHeartbeat", count=1, kind="throttle", instance_id=iid)
    aws.inject_fault("RecordLifecycleActionHeartbeat", count=1, kind="internal", instance_id=iid)
    aws.inject_fault("CompleteLifecycleAction", count=1, kind="throttle", instance_id=iid)
    aws.inject_fault("CompleteLifecycleAction", count=2, kind="internal", instance_id=iid)
    host.terminate()

    assert broker.wait_outcome(job, timeout=30) == "succeeded"
    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 15, "CompleteLifecycleAction")
    wait_for(host.gone, 10, "instance removed")

    completes = host.calls("CompleteLifecycleAction")
    assert [c.error_code for c in completes] == ["Throttling", "InternalFailure", "InternalFailure", None]
    assert len(host.calls("CompleteLifecycleAction", ok=True)) == 1
    beats = host.calls("RecordLifecycleActionHeartbeat")
    assert [b.error_code for b in beats[:2]] == ["Throttling", "InternalFailure"]
    assert host.calls("RecordLifecycleActionHeartbeat", ok=True), "a heartbeat got through after the faults"
    # The hook never timed out (DefaultResult ABANDON would show up as no successful completion).
    assert not aws.pending_actions(iid)
    failed = agent.records(notice="api-failed")
    kinds = sorted({(r["call"], r["kind"]) for r in failed})
    assert kinds == [("complete", "throttled"), ("complete", "transient"),
                     ("heartbeat", "throttled"), ("heartbeat", "transient")], kinds
    assert stop_agent(agent) == 0


def test_imds_down_for_ten_seconds(make_host, broker, aws):
    """A little over 10 s, so the core's fallback (one describe after 10 s of IMDS failures, then
    one every 30 s) shows up too."""
    host = make_host()
    agent = host.start_serving()
    outage_end = time.monotonic() + 11
    host.imds.set_unavailable(11, mode="refused")
    agent.wait_record(message="IMDS read failed", timeout=5)

    # Jobs keep running and being protected: the worker is watched on the host, not through IMDS.
    job = broker.assign_job(2.0, runner=host.runner.name)
    assert broker.wait_outcome(job, timeout=20) == "succeeded"
    assert [c.protected for c in host.calls("SetInstanceProtection", ok=True)][:1] == [True]

    time.sleep(max(0.0, outage_end - time.monotonic()))
    agent.wait_record(message="IMDS answers again", timeout=10)
    fallback = agent.records(action="describe", reason="imds-down")
    assert len(fallback) == 1, "one slow describe while IMDS was down, not a poll storm"
    assert agent.running()
    # The listener was never stopped for lack of IMDS.
    assert not agent.records(action="stop-listener")

    # And termination is still noticed once IMDS is back.
    host.terminate()
    agent.wait_record(action="stop-listener", reason="terminating-idle", timeout=10)
    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    wait_for(host.gone, 10, "instance removed")
    assert stop_agent(agent) == 0


def test_agent_killed_mid_drain_and_restarted_finishes_the_drain_exactly_once(make_host, broker, aws):
    host = make_host(hook_timeout=6)
    first = host.start_serving()
    job = broker.assign_job(9.0, runner=host.runner.name)
    worker = broker.wait_worker_started(job)
    host.terminate()
    first.wait_record(notice="state-confirmed", state="Terminating:Wait", timeout=10)
    first.wait_record(action="heartbeat", timeout=10)
    listener_pid = first.records(message="listener started")[0]["pid"]

    first.kill()  # SIGKILL: no cleanup, stale socket left behind
    assert pid_alive(listener_pid) and pid_alive(worker.worker_pid), "the job must survive the agent"
    assert broker.outcome(job) is None

    second = host.start_agent()
    adopted = second.wait_record(message="adopted a running listener from a previous agent", timeout=10)
    assert adopted["pid"] == listener_pid and adopted["workers"] == 1

    assert broker.wait_outcome(job, timeout=30) == "succeeded"
    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    wait_for(host.gone, 10, "instance removed")
    time.sleep(0.5)
    assert len(host.calls("CompleteLifecycleAction")) == 1, "completed exactly once"
    assert not second.records(action="start-listener"), "the restarted agent must not start a second listener"
    assert [s["cancels_job"] for s in second.records(action="stop-listener")] == [False]
    # The job's hooks reached whichever agent was up; both exited 0.
    assert [(h.stage, h.exit_code) for h in broker.job(job).hooks] == [("started", 0), ("completed", 0)]
    assert stop_agent(second) == 0


def test_a_listener_ignoring_sigint_is_killed_only_after_the_grace(make_host, tmp_path):
    """SIGKILL comes only from the core's KillListener: after runner.stop_grace, with no job."""
    stubborn = tmp_path / "stubborn" / "Runner.Listener"
    stubborn.parent.mkdir()
    stubborn.write_text("#!/bin/bash\ntrap 'echo got SIGINT, ignoring it' INT\necho trap-set\n"
                        "while :; do sleep 0.1; done\n")
    stubborn.chmod(0o755)
    host = make_host(runner_command=str(stubborn), runner_stop_grace="2s")
    agent = host.start_agent()
    agent.wait_record(message="listener started", timeout=15)
    # Only once the trap is set: a SIGINT before it (a loaded machine) kills bash at once.
    wait_for(lambda: "trap-set" in agent.log_path.read_text(), 15, "the stubborn listener's trap")
    agent.signal(15)
    stop = agent.wait_record(action="stop-listener", timeout=10)
    kill = agent.wait_record(action="kill-listener", timeout=10)
    gap = parse_ts(kill["timestamp"]) - parse_ts(stop["timestamp"])
    assert 1.9 <= gap < 4.0, f"SIGKILL {gap:.2f} s after SIGINT; the grace is 2 s"
    assert kill["reason"] == "grace-expired"
    exited = agent.wait_record(message="listener exited", timeout=10)
    assert exited["signal"] == 9
    assert agent.wait(timeout=15) == 0


def test_hooks_while_the_agent_cannot_discover_the_instance_are_remembered(make_host, broker):
    """During discovery the agent notes a job-started hook and answers `error`; the hook prints that
    answer and calls nothing itself (it has no AWS rights to use); the agent protects the host as
    soon as it knows its instance."""
    host = make_host()
    host.imds.set_unavailable(8, mode="refused")
    agent = host.start_agent()
    agent.wait_record(message="hook socket ready", timeout=10)

    r = host.hook("job-started", RUNNER_LIFECYCLE_AWS_INSTANCE_ID=host.instance_id)
    assert r.returncode == 0
    assert "the agent is starting" in r.stdout and "job noted" in r.stdout, r.stdout
    assert len(r.stdout.strip().splitlines()) == 1, r.stdout
    assert host.calls("SetInstanceProtection") == [], "the hook called AWS itself"

    # Once IMDS is back the agent discovers the instance and feeds the noted report to the core.
    # A report is a hint that /proc must confirm (docs/agent.md, "Hook reports are hints"): no
    # Runner.Worker runs here (the hook was sent by hand), so after the grace the claim is dropped
    # and any protection set for it is cleared. (With a real job, the adopted listener's worker backs
    # the report and the protection stays.)
    agent.wait_record(message="discovered", timeout=30)
    agent.wait_record(notice="job-assigned", timeout=10)
    agent.wait_record(notice="hook-claim-dropped", timeout=5)
    wait_for(lambda: host.protected() is False, 5, "protection cleared once the unbacked report is dropped")
    r = host.hook("job-completed")
    assert r.returncode == 0 and "job end noted" in r.stdout, r.stdout
    assert stop_agent(agent) == 0
