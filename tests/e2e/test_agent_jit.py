"""Just-in-time runners, the agent's default mode, end to end on loopback: the agent fetches each
listener's config from the controller's AWS_IAM function URL (signed with the instance's
credentials; tests/support/jit_controller.py runs the real controller behind a SigV4-verifying
front), starts the stand-in listener with it in ACTIONS_RUNNER_INPUT_JITCONFIG, and the listener
takes one job and exits (docs/agent.md, "Listener modes").

The race these tests exercise: a host in Terminating:Wait finishes job A while job B is queued for
the same labels. A persistent listener polls again the instant A ends and takes B onto the draining
host (test_a_persistent_listener_takes_the_next_job_onto_a_draining_host shows this world does
produce it); SIGINT in that instant cancels B. With one job per registration no listener is left to
take B: it stays queued for a host that serves.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from harness import Host, stop_agent, wait_for
from jit_hosts import HOOK_TIMEOUT_S, drained_and_gone, mints, no_job_lost, serving

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("when", ["before", "at", "after"])
@pytest.mark.parametrize("round_", [1, 2, 3])
def test_the_next_queued_job_during_a_drain_is_never_cancelled(jit_host: Any, broker: Any, when: str,
                                                               round_: int) -> None:
    """Job A runs on a host the group is scaling in; job B is queued before A ends, in the instant
    it ends, or just after. A finishes, B is neither cancelled nor taken by the draining host (it
    waits for a host that serves), and the hook is completed as soon as A's listener exits."""
    host, ctl = jit_host(group=f"jit-{when}-{round_}")
    serving(host, broker, ctl)
    a = broker.assign_job(3.0, name="A")
    broker.wait_worker_started(a, timeout=20)
    # The next config is fetched while A runs.
    wait_for(lambda: mints(ctl) >= 2, 20, "the prefetched config")
    host.terminate()
    host.agent.wait_record(timeout=20, notice="drain-started")
    ends = broker.job(a).worker_started_at + 3.0
    at = {"before": None, "at": ends, "after": ends + 0.5}[when]
    b = broker.assign_job(1.0, at=at, name="B")
    assert broker.wait_outcome(a, 30) == "succeeded"
    drained_and_gone(host)
    job_b = broker.job(b)
    assert job_b.outcome is None and job_b.dispatched_at is None, job_b
    assert len(ctl.minted()) == 2, "no config is fetched for a draining host"
    no_job_lost(host)
    assert stop_agent(host.agent) == 0 or not host.agent.running()
    broker.cancel_job(b)


def test_a_persistent_listener_takes_the_next_job_onto_a_draining_host(make_host: Callable[..., Host],
                                                                      broker: Any) -> None:
    """The same world with the persistent listener: B lands on the draining host. If the agent sees
    B's worker in the same /proc scan as A's exit, B runs to its end under the hook; if the listener
    accepted B between two scans, the SIGINT meant for an idle listener cancels it before any worker
    shows (in this world that is the usual outcome: the stand-in takes B about 0.2 s after A ends,
    the agent stops it within one 50 ms scan). The agent cannot count a job whose worker it never
    saw; the simulation does (`next-job race`). Either way this world produces the race the test
    above shows closed."""
    host = make_host(hook_timeout=HOOK_TIMEOUT_S, group="persistent-race", runner_mode="persistent")
    host.start_serving()
    a = broker.assign_job(3.0, name="A")
    broker.wait_worker_started(a, timeout=20)
    host.terminate()
    host.agent.wait_record(timeout=20, notice="drain-started")
    b = broker.assign_job(1.0, name="B")
    assert broker.wait_outcome(a, 30) == "succeeded"
    job_b = broker.wait_dispatched(b, 20)
    assert job_b.runner == host.runner.name, "B went to the draining host"
    # B ran here (its message reached the perf log before the stop: the latch held it, or its worker
    # showed in the same scan), or the SIGINT caught it still in transit (W0: left to GitHub's
    # re-queue) or acquiring (W1, W2). A persistent registration has no release to arbitrate W0.
    fate = broker.wait_handover(b, 30)
    outcome = broker.wait_outcome(b, 30) if fate == "ran" else fate
    print(f"persistent listener, next job on a draining host: {fate}, {outcome}")
    assert outcome in ("succeeded", "cancelled", "requeued", "lost-W1", "lost-W2"), outcome
    drained_and_gone(host)
    if fate != "ran":
        broker.cancel_job(b)


def test_an_idle_jit_host_scales_in_within_seconds(jit_host: Any, broker: Any) -> None:
    host, ctl = jit_host(group="jit-idle")
    serving(host, broker, ctl)
    sent = host.terminate()
    drained_and_gone(host, timeout=20)
    gone_after = time.monotonic() - sent
    print(f"idle JIT host: terminate -> gone in {gone_after:.2f} s")
    assert gone_after < 15, gone_after
    assert mints(ctl) == 1


def test_after_a_job_the_next_listener_serves_at_once(jit_host: Any, broker: Any) -> None:
    host, ctl = jit_host(group="jit-next")
    first = serving(host, broker, ctl)
    a = broker.assign_job(0.5, name="A")
    assert broker.wait_outcome(a, 20) == "succeeded"
    ended = broker.job(a).ended_at
    wait_for(lambda: len(ctl.minted()) >= 2, 20, "the second config")
    second = ctl.minted()[1]
    assert second != first
    broker.wait_listening(second, timeout=20)
    serving_again = time.monotonic() - ended
    print(f"job end -> next JIT listener polling: {serving_again:.2f} s")
    b = broker.assign_job(0.2, name="B")
    assert broker.wait_outcome(b, 20) == "succeeded" and broker.job(b).runner == second
    # The first registration is gone (ephemeral); the host keeps exactly one config in reserve.
    assert not broker.runner_state(first)["registered"] or broker.runner_state(first)["deleted"]
    assert stop_agent(host.agent) == 0


def mint_attempts(ctl: Any) -> int:
    """The controller's mint attempts as GitHub sees them: each lists the runners, then (if the
    list answered) asks generate-jitconfig."""
    return sum(1 for m, p, _ in ctl.github.requests if m == "GET" and p.endswith("/actions/runners"))


@pytest.mark.parametrize("fault", ["rate-limit", "5xx"])
def test_a_failing_mint_leaves_the_host_out_of_service_retrying_and_its_hook_is_completed(
        jit_host: Any, broker: Any, fault: str) -> None:
    host, ctl = jit_host(group=f"jit-fault-{fault}")
    failure: Any = (429, {"Retry-After": "1"}) if fault == "rate-limit" else 502
    ctl.github.fail_next = [failure] * 1000
    host.start_agent()
    # A mint attempt starts with the runner list (the controller's one-outstanding-config check,
    # docs/controller.md), so a GitHub that fails everything sees the lists, not the POSTs.
    wait_for(lambda: mint_attempts(ctl) >= 3, 60, "three mint attempts")
    # Out of service, healthy, and saying why.
    assert host.agent.running()
    st = host.status_json()
    assert st["listener"] == "down", st
    assert "just-in-time" in st["next_step"], st
    assert not broker.sessions()
    # Scale-in while it cannot mint: no listener, no job, so the hook is completed at once.
    host.terminate()
    drained_and_gone(host)
    assert not broker.sessions()
    no_job_lost(host)
    ctl.github.fail_next = []


def test_a_mint_that_recovers_brings_the_host_into_service(jit_host: Any, broker: Any) -> None:
    host, ctl = jit_host(group="jit-recover")
    ctl.github.fail_next = [(429, {"Retry-After": "1"})] * 2 + [502] * 3
    host.start_agent()
    wait_for(lambda: ctl.minted(), 60, "a config after the outage")
    broker.wait_listening(ctl.minted()[0], timeout=30)
    a = broker.assign_job(0.2, name="A")
    assert broker.wait_outcome(a, 20) == "succeeded"
    assert stop_agent(host.agent) == 0


def test_an_agent_restarted_during_a_job_serves_again_at_once_after_it(jit_host: Any, broker: Any) -> None:
    """The agent prefetched the next config while job A ran, then was killed (SIGKILL: the config
    was in its memory only) and restarted. The controller allows one unused config per instance and
    refuses a second mint naming the first (409, `outstanding_runner_id`); the restarted agent
    releases that one and mints again, so after A the host serves at once instead of waiting for
    the unused config to expire (15 minutes)."""
    host, ctl = jit_host(group="jit-restart")
    serving(host, broker, ctl)
    a = broker.assign_job(4.0, name="A")
    broker.wait_worker_started(a, timeout=20)
    wait_for(lambda: mints(ctl) >= 2, 20, "the prefetched config")
    lost = ctl.minted()[1]
    host.agent.kill()
    second = host.start_agent()
    second.wait_record(message="adopted a running listener from a previous agent", timeout=15)
    assert broker.wait_outcome(a, 30) == "succeeded"
    wait_for(lambda: len(ctl.minted()) >= 3, 30, "a fresh config after the restart")
    assert second.records(message="released an unused config this agent does not hold"), second.tail()
    broker.wait_listening(ctl.minted()[2], timeout=20)
    assert broker.runner_state(lost)["deleted"], "the lost config was released"
    b = broker.assign_job(0.2, name="B")
    assert broker.wait_outcome(b, 20) == "succeeded"
    assert stop_agent(second) == 0
