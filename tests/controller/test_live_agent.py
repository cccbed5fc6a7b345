"""The controller never fights a live agent: a real `runner-lifecycle agent` drains a busy host in
Terminating:Wait while the controller sweeps with a one-second grace period. GitHub's runner status
comes from the stand-in runner's broker (online while its listener holds a session, busy while it
runs a job), so the evidence the controller reads is the listener's own."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from harness import AgentProc, agent_env, hook_scripts, stop_agent, wait_for  # noqa: E402
from support.env import aws_env as _aws_env  # noqa: E402


def test_a_busy_host_drained_by_its_agent_is_left_alone(aws_x: Any, broker: Any, make_runner: Any, fake_github: Any,
                                                         bin_path: Path, run_bin: Any, tmp_path: Path) -> None:
    ids = aws_x.create_group(size=2, hook_timeout=30)
    iid = ids[0]
    imds = aws_x.imds_for(iid)
    runner = make_runner("runner-1")
    runner.set_hooks(**hook_scripts(bin_path))
    env = agent_env(aws_x.endpoint_url, imds.url, runner.path, tmp_path / "run")
    fake_github.add_runner(runner.name, [iid, "asg-runners"])

    def live(name: str) -> tuple[str, bool]:
        online = any(s.runner == name and not s.closed for s in broker.sessions())
        return ("online" if online else "offline"), broker.busy(name)

    fake_github.live = live
    controller_env = _aws_env(aws_x.endpoint_url, None,
                              RUNNER_LIFECYCLE_CONTROLLER_GROUPS="runners",
                              RUNNER_LIFECYCLE_GITHUB_URL="https://github.com/acme",
                              RUNNER_LIFECYCLE_GITHUB_API_URL=fake_github.url,
                              RUNNER_LIFECYCLE_GITHUB_TOKEN=fake_github.token)
    agent = AgentProc(bin_path, env, tmp_path / "agent.log")
    try:
        broker.wait_listening(runner.name, timeout=30)
        job = broker.assign_job(6.0, runner=runner.name)
        broker.wait_worker_started(job)
        aws_x.client("autoscaling").terminate_instance_in_auto_scaling_group(
            InstanceId=iid, ShouldDecrementDesiredCapacity=True)
        sweeps = 0
        while broker.outcome(job) is None:
            time.sleep(1.2)
            r = run_bin(["controller", "sweep", "--grace", "1s"], controller_env)
            assert r.returncode == 0, r.stderr
            [report] = json.loads(r.stdout.strip().splitlines()[-1])["groups"]
            if broker.outcome(job) is None and iid in report["left_to_agent"]:
                sweeps += 1
            assert report["completed_agent_gone"] == [], report
        assert sweeps >= 2, "the controller never looked while the job ran"
        assert broker.wait_outcome(job, timeout=30) == "succeeded"
        wait_for(lambda: aws_x.calls("CompleteLifecycleAction", instance_id=iid), 15, "the agent's completion")
        [done] = aws_x.calls("CompleteLifecycleAction", instance_id=iid)
        assert done.result == "CONTINUE" and done.monotonic > broker.job(job).ended_at
        # Every completion of this instance was the agent's (by instance id; the sweep's would be
        # after a "completing" log line, which never came).
        assert all(c.monotonic >= broker.job(job).ended_at for c in aws_x.calls("CompleteLifecycleAction"))
    finally:
        stop_agent(agent)
        agent.close()
