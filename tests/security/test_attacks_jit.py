"""Just-in-time runners against a hostile job (docs/security.md, "JIT configs: delivery and threat
analysis"). The agent runs as root with `runner.user` = a throwaway unprivileged user; the job's
code runs as that user (here: its job-started hook, which a workflow controls on a persistent host).

What a job must not get: the *next* listener's config. Whoever holds it receives the next job (from
any repository the runner group serves) and its secrets. The agent holds it in root's memory until
the listener starts, and before each JIT listener it kills every process of the runner's user, so
nothing a job leaves behind is alive to read the new listener's environment or to kill it and run
its config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hostlib import attack, wait_for
from support.jit_controller import instance_key, jit_controller

pytestmark = pytest.mark.timeout(180)


def leftover_hook(pid_file: Path) -> str:
    """A job-started hook that leaves a process behind: detached (its own session), reparented to
    init, as a job escaping the runner's process cleanup would."""
    return (
        "#!/bin/sh\n"
        f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 600' </dev/null >/dev/null 2>&1 &\n"
        "exit 0\n"
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]


def test_a_process_a_job_leaves_behind_is_killed_before_the_next_jit_listener(
        user_host: Any, broker: Any, rl_bin: Path, aws_env: Any, tmp_path: Path) -> None:
    drop = Path(user_host.base) / "drop"
    drop.mkdir(mode=0o777)
    os.chmod(drop, 0o777)
    pid_file = drop / "leftover.pid"
    host = user_host.make(configured=False, started_hook=leftover_hook(pid_file), group="jit-sec",
                          runner_mode="jit")
    key = instance_key(host.instance_id)
    with jit_controller(rl_bin, broker, aws_env, tmp_path / "controller.log", {host.instance_id: key},
                        groups="jit-sec") as ctl:
        host.env.update(key.env())
        host.env["RUNNER_LIFECYCLE_RUNNER_JIT_URL"] = ctl.url
        host.start_agent()
        wait_for(lambda: ctl.minted(), 60, "the first config")
        broker.wait_listening(ctl.minted()[0], timeout=60)
        job = broker.assign_job(1.0)
        # Read while the job runs: between jobs the agent removes the job's files (the pid file too).
        leftover = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, "the leftover"))
        assert broker.wait_outcome(job, 30) == "succeeded"
        # The next listener polls with the second config, and the leftover is gone before it started.
        wait_for(lambda: len(ctl.minted()) >= 2, 30, "the next config")
        session = broker.wait_listening(ctl.minted()[1], timeout=30)
        assert not alive(leftover), f"pid {leftover} of the last job still runs next to listener {session.pid}"
        # Killed with the last listener's cgroup (or, without cgroups, by the /proc scan).
        in_cgroup = host.agent.records(message="killed what the listener's job left in its cgroup") + \
            host.agent.records(message="killed the cgroups of earlier listeners: nothing their jobs started runs on")
        by_scan = host.agent.records(message="killed processes of the runner's user left from the last job")
        assert (in_cgroup and in_cgroup[0]["processes"] >= 1) or (
            by_scan and by_scan[0]["killed"] >= 1 and by_scan[0]["uid"] == user_host.uid), host.agent.tail()
        # The job itself has no credentials to ask for a config of its own: the agent's AWS
        # variables never reach the listener, and IMDS is fenced off from its user
        # (test_imds_fence.py). Here, with the endpoint's URL in hand, it is refused.
        r = attack(user_host.user, str(rl_bin), "jit-config", "--url", ctl.url,
                   env={"AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1"})
        assert r.returncode != 0, r
        assert len(ctl.minted()) == 2
        for blob in ctl.github.jit_configs.values():
            assert blob not in r.stdout + r.stderr
