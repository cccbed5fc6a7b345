"""Jobs on an InService instance, and scale-in of an idle one (issue 3, tests 1 and 2)."""

from __future__ import annotations

import time

from harness import stop_agent, wait_for


def test_job_is_protected_while_it_runs_and_unprotected_after(make_host, broker):
    host = make_host()
    agent = host.start_serving()
    assert host.protected() is False

    job = broker.assign_job(4.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    # The worker appears before the job-started hook runs: protection follows the worker.
    wait_for(lambda: host.protected() is True, 3.0, "protection while the job runs")
    assert broker.outcome(job) is None, "the job is still running"

    assert broker.wait_outcome(job, timeout=20) == "succeeded"
    done = broker.job(job)
    assert [(h.stage, h.exit_code) for h in done.hooks] == [("started", 0), ("completed", 0)]
    assert "runner-lifecycle: job-started:" in done.hooks[0].output
    assert "runner-lifecycle: job-completed: job end noted" in done.hooks[1].output

    # drain.unprotect_delay is 1 s here: protection is cleared once the runner stays idle.
    wait_for(lambda: host.protected() is False, 5.0, "protection cleared after the job")
    sets = [c.protected for c in host.calls("SetInstanceProtection", ok=True)]
    assert sets == [True, False], sets
    assert agent.records(action="set-protection", reason="job-assigned")
    assert agent.records(action="set-protection", reason="idle")
    assert agent.running()
    assert stop_agent(agent) == 0


def test_idle_scale_in_stops_listener_within_a_second_and_completes_the_hook(make_host, broker, aws):
    host = make_host()
    agent = host.start_serving()

    host.asg().set_desired_capacity(AutoScalingGroupName=host.group, DesiredCapacity=0)
    _, wall_wait = host.entered("Terminating:Wait")

    stop = agent.wait_record(action="stop-listener", timeout=10)
    assert stop["reason"] == "terminating-idle" and stop["cancels_job"] is False
    lag = host_time(stop) - wall_wait
    assert lag < 1.0, f"listener signalled {lag:.3f} s after IMDS turned Terminated"

    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    completes = host.calls("CompleteLifecycleAction")
    assert [(c.status, c.result) for c in completes] == [(200, "CONTINUE")]
    wait_for(host.gone, 10, "instance removed from the group")
    assert not aws.pending_actions(host.instance_id)
    # The listener was stopped gracefully (SIGINT, exit 0), never killed.
    assert agent.records(message="listener exited")[0]["code"] == 0
    assert not agent.records(action="kill-listener")
    assert stop_agent(agent) == 0


def host_time(record) -> float:
    from harness import parse_ts

    return parse_ts(record["timestamp"])


def test_listener_exits_are_handled_as_runsvc_does(make_host, broker):
    """A listener exiting 2 (retryable) is relaunched; the runner keeps taking jobs."""
    host = make_host()
    agent = host.start_serving()
    first_pid = agent.records(message="listener started")[0]["pid"]

    broker.crash_next(2, runner=host.runner.name)
    relaunch = agent.wait_record(action="start-listener", reason="relaunch", timeout=15)
    assert relaunch
    broker.wait_listening(host.runner.name, timeout=15)
    pids = [r["pid"] for r in agent.records(message="listener started")]
    assert len(pids) == 2 and pids[0] == first_pid and pids[1] != first_pid

    job = broker.assign_job(1.0, runner=host.runner.name)
    assert broker.wait_outcome(job, timeout=20) == "succeeded"

    # Exit 1 means "stop" (RunnerService.js): no relaunch, and the agent keeps running.
    broker.crash_next(1, runner=host.runner.name)
    agent.wait_record(notice="listener-gave-up", timeout=15)
    time.sleep(1.5)
    assert len(agent.records(message="listener started")) == 2
    assert agent.running()
    assert stop_agent(agent) == 0


def test_systemd_notify_ready_watchdog_and_stopping(make_host, broker, tmp_path):
    """Type=notify with WatchdogSec: READY=1 once serving, WATCHDOG=1 at half the period,
    STOPPING=1 at the end; the listener does not inherit the notification socket."""
    import socket as _socket

    path = tmp_path / "notify.sock"
    systemd = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    systemd.bind(str(path))
    systemd.settimeout(10)
    host = make_host()
    agent = host.start_serving(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="1000000")
    messages = []

    def receive_until(prefix):
        while True:
            msg = systemd.recv(4096).decode()
            messages.append((time.monotonic(), msg))
            if msg.startswith(prefix):
                return msg

    receive_until("READY=1")
    receive_until("WATCHDOG=1")
    t0 = time.monotonic()
    for _ in range(3):
        receive_until("WATCHDOG=1")
    period = (time.monotonic() - t0) / 3
    assert 0.3 < period < 0.8, f"watchdog pinged every {period:.2f} s for WatchdogSec=1s"

    listener = agent.records(message="listener started")[0]["pid"]
    environ = open(f"/proc/{listener}/environ", "rb").read().split(b"\0")
    assert not any(e.startswith(b"NOTIFY_SOCKET=") or e.startswith(b"WATCHDOG_") for e in environ)
    assert any(e.startswith(b"RUNNER_LIFECYCLE_AGENT_SOCKET=") for e in environ)

    agent.signal(15)
    assert "draining" in receive_until("STATUS=draining")
    receive_until("STOPPING=1")
    assert agent.wait(timeout=20) == 0
    systemd.close()


def test_group_without_termination_hook_serves_and_never_calls_hook_actions(make_host, broker, aws):
    """No termination hook: protection still works and hook actions are no-ops (the source PR's
    backward-compatible mode)."""
    host = make_host(hook_timeout=None)
    agent = host.start_serving()
    assert agent.records(message="discovered")[0]["hook"].startswith("(none")
    job = broker.assign_job(1.0, runner=host.runner.name)
    assert broker.wait_outcome(job, timeout=20) == "succeeded"
    assert [c.protected for c in host.calls("SetInstanceProtection", ok=True)][:1] == [True]

    wait_for(lambda: host.protected() is False, 5, "unprotected")
    host.asg().set_desired_capacity(AutoScalingGroupName=host.group, DesiredCapacity=0)
    agent.wait_record(action="stop-listener", reason="terminating-idle", timeout=10)
    wait_for(host.gone, 10, "instance removed")
    time.sleep(0.5)
    assert not host.calls("CompleteLifecycleAction") and not host.calls("RecordLifecycleActionHeartbeat")
    assert stop_agent(agent) == 0


def test_an_explicit_hook_name_overrides_discovery(make_host, broker, aws):
    host = make_host(aws_hook="drain-runner")
    host.asg().put_lifecycle_hook(
        AutoScalingGroupName=host.group, LifecycleHookName="drain-runner",
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", HeartbeatTimeout=40, DefaultResult="CONTINUE",
    )
    agent = host.start_serving()
    found = agent.records(message="discovered")[0]
    assert (found["hook"], found["heartbeat_timeout_s"]) == ("drain-runner", 40)
    host.terminate()
    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    assert [c.hook for c in host.calls("CompleteLifecycleAction")] == ["drain-runner"]
    # The group's other termination hook ("drain") is not ours to complete.
    assert [a["LifecycleHookName"] for a in aws.pending_actions(host.instance_id)] == ["drain"]
    assert stop_agent(agent) == 0
