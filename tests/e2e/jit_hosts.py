"""Just-in-time hosts for the end-to-end tests: the agent in its default mode, fetching each
listener's config from the real controller behind a SigV4-verifying function URL
(tests/support/jit_controller.py). The ``jit_host`` fixture (conftest.py) builds them; these are the
checks the JIT and handover tests share."""

from __future__ import annotations

from typing import Any

from harness import Host, wait_for
from support.jit_controller import JitController

#: HeartbeatTimeout of the groups (the emulator's test mode allows < 30 s): a job of a few seconds
#: is heartbeaten at least once.
HOOK_TIMEOUT_S = 6


def mints(ctl: JitController) -> int:
    return sum(1 for m, p, _ in ctl.github.requests if m == "POST" and p.endswith("/generate-jitconfig"))


def serving(host: Host, broker: Any, ctl: JitController, timeout: float = 30) -> str:
    """Start the agent and wait for its first JIT listener to poll; returns the runner's name."""
    host.start_agent()
    wait_for(lambda: ctl.minted(), timeout, "the first JIT config")
    name = ctl.minted()[0]
    broker.wait_listening(name, timeout=timeout)
    return name


def drained_and_gone(host: Host, timeout: float = 30) -> None:
    wait_for(host.gone, timeout, f"{host.instance_id} to terminate")
    completes = host.calls("CompleteLifecycleAction", ok=True)
    assert len(completes) == 1, completes


def no_job_lost(host: Host) -> None:
    """No stop cancelled a job, and the core counted no job lost, in any of the host's agents."""
    for agent in host.agents:
        assert not agent.records(cancels_job=True), agent.tail()
        assert not agent.records(notice="job-lost"), agent.tail()
        assert not agent.records(notice="listener-died-with-job"), agent.tail()


