"""The handover window end to end (docs/agent.md, "The handover"): a job lands on an *idle* JIT
listener in the seconds around its stop, with the stand-in listener taking upstream's steps and
delays (tests/support/fake_runner: W0 the message in transit on the long poll, W1 acknowledge and
acquire, W2 the first renewal, then Runner.Worker; a SIGINT in W0/W1 leaves the job to GitHub's
re-queue, in W2 loses it: shared/docs/handover-window.md section 1.3).

The race each test exercises: the host is scaled in while its listener is in window W of a job; the
agent sees an idle listener (no Runner.Worker yet) and, without the guard, sends SIGINT. With the
guard (the perf-log latch and the release of the registration, GitHub refusing to delete a runner
with an assigned job) no job is lost, whether the controller is reachable or not. With the guard off
(`drain.handover_latch=false`, `drain.release_registration=false`) the same world loses the W2 job:
the world can produce the loss these tests show absent.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness import stop_agent, wait_for
from jit_hosts import drained_and_gone, serving

pytestmark = pytest.mark.timeout(120)

#: Each window's delays (seconds), long enough that the scale-in lands inside the window: the agent
#: polls IMDS every 250 ms in these tests, and the emulator shows the state within that.
LONG = 3.0
#: The bound of a hold in these tests (default 120 s).
BOUND = "20s"

GUARD_OFF = {"drain_handover_latch": "false", "drain_release_registration": "false"}


def delays(window: str) -> dict[str, float]:
    """Stretch ``window`` to LONG seconds, the others at the stand-in's defaults (0.05 s a step)."""
    return {
        "W0": {"transit_delay_s": LONG},
        "W1": {"acquire_delay_s": LONG},
        "W2": {"renew_delay_s": LONG},
    }[window]


def scale_in_during(host: Any, broker: Any, name: str, window: str) -> str:
    """Hand job J to this host's idle listener and scale the host in while J is in ``window``."""
    job = broker.assign_job(1.0, name="J", runner=name, **delays(window))
    broker.wait_window(job, window, timeout=10)
    host.terminate()
    return job


@pytest.mark.parametrize("window", ["W0", "W1", "W2"])
@pytest.mark.parametrize("controller", ["reachable", "unreachable"])
def test_a_job_landing_on_an_idle_listener_at_the_stop_is_never_lost(jit_host: Any, broker: Any, window: str,
                                                                     controller: str) -> None:
    """Guard on. W1, W2: the perf log showed the message, the stop is held until the worker, and the
    job runs to its end on the draining host under the hook. W0: the controller asks GitHub to
    delete the registration, which refuses (a job is assigned), so the stop waits for the worker
    too; with the controller down the agent falls back to the latch and the last look, and a job
    still in transit at the SIGINT is left to GitHub's re-queue (not lost: it runs elsewhere)."""
    host, ctl = jit_host(group=f"handover-{window}-{controller}", drain_handover_bound=BOUND)
    name = serving(host, broker, ctl)
    if controller == "unreachable":
        ctl.iam.stop()
    job = scale_in_during(host, broker, name, window)
    fate = broker.wait_handover(job, timeout=30)
    drained_and_gone(host, timeout=40)
    agent = host.agent
    print(f"{window}, controller {controller}: {fate}; held: {[r['reason'] for r in agent.records(notice='stop-held')]}")
    assert not fate.startswith("lost"), (fate, agent.tail())
    assert not agent.records(cancels_job=True), agent.tail()
    assert not agent.records(notice="job-lost"), agent.tail()
    if window != "W0" or controller == "reachable":
        assert fate == "ran", (fate, agent.tail())
        assert broker.wait_outcome(job, 20) == "succeeded"
    else:
        assert fate == "requeued", (fate, agent.tail())
        broker.cancel_job(job)
    assert stop_agent(agent) == 0 or not agent.running()


@pytest.mark.parametrize("window", ["W1", "W2"])
def test_the_same_world_loses_the_job_without_the_guard(jit_host: Any, broker: Any, window: str) -> None:
    """Guard off: the agent signals the listener the moment it looks idle. W2 (acquired, no worker):
    the dispatch is cancelled and nothing completes the job: lost. W1: the acquire is cancelled and
    the job is left to GitHub's re-queue (a minute on github.com): the job did not run here."""
    host, ctl = jit_host(group=f"unguarded-{window}", **GUARD_OFF)
    name = serving(host, broker, ctl)
    job = scale_in_during(host, broker, name, window)
    fate = broker.wait_handover(job, timeout=30)
    drained_and_gone(host, timeout=40)
    print(f"guard off, {window}: {fate}")
    assert fate == {"W1": "requeued", "W2": "lost-W2"}[window], (fate, host.agent.tail())
    assert not [r for r in host.agent.records(notice="stop-held")], host.agent.tail()
    if window == "W1":
        broker.cancel_job(job)


@pytest.mark.parametrize("handover_s", [0.2, 1.0, 4.0])
def test_jobs_around_the_stop_with_short_and_long_handovers_are_never_lost(jit_host: Any, broker: Any,
                                                                          handover_s: float) -> None:
    """W1+W2 from 0.2 s to several seconds, and the job handed over just before, at, or just after
    the scale-in: whatever the instant, the job either runs here to its end or is never handed to
    the draining host (it waits for one that serves)."""
    step = handover_s / 4
    knobs = dict(ack_delay_s=step, acquire_delay_s=step, renew_delay_s=step, spawn_delay_s=step)
    fates = []
    for offset in (-0.3, 0.0, 0.3):
        host, ctl = jit_host(group=f"sweep-{handover_s}-{offset}", drain_handover_bound=BOUND)
        name = serving(host, broker, ctl)
        if offset < 0:
            job = broker.assign_job(0.5, runner=name, **knobs)
            time.sleep(-offset)
            host.terminate()
        else:
            host.terminate()
            time.sleep(offset)
            job = broker.assign_job(0.5, runner=name, **knobs)
        drained_and_gone(host, timeout=40)
        dispatched = broker.job(job).dispatched_at is not None
        fate = broker.wait_handover(job, timeout=30) if dispatched else "not-dispatched"
        fates.append((offset, fate))
        assert not fate.startswith("lost"), (offset, fate, host.agent.tail())
        assert fate in ("ran", "not-dispatched", "requeued"), (offset, fate)
        assert not host.agent.records(notice="job-lost"), host.agent.tail()
        if fate == "ran":
            assert broker.wait_outcome(job, 20) == "succeeded"
        else:
            broker.cancel_job(job)
        stop_agent(host.agent)
    print(f"W1+W2 = {handover_s} s: {fates}")


@pytest.mark.parametrize("mode", ["poll", "exit"])
def test_a_ghost_jit_listener_is_replaced_and_nothing_is_lost(jit_host: Any, broker: Any, mode: str) -> None:
    """GitHub consumes the JIT registration when it assigns a job, and the acquire is refused
    (409): the listener skips the message (Runner.cs:737-745) and either exits 0 on the
    acknowledge's 404 (mode "exit", actions/runner PR #4540) or polls on as a ghost that will never
    be assigned again (mode "poll", runner#4617). The agent replaces it within the bound with a
    fresh registration, which then runs the next job; nothing is counted lost."""
    host, ctl = jit_host(group=f"ghost-{mode}", drain_handover_bound="3s")
    name = serving(host, broker, ctl)
    broker.set_ghost_mode(name, mode)
    skipped = broker.assign_job(0.5, name="skipped", runner=name, acquire_answers=[409])
    wait_for(lambda: len(ctl.minted()) >= 2, 20, "a fresh registration for the ghost's host")
    second = ctl.minted()[1]
    broker.wait_listening(second, timeout=20)
    if mode == "poll":
        host.agent.wait_record(timeout=5, action="stop-listener", reason="ghost")
    job = broker.assign_job(0.3, name="next", runner=second)
    assert broker.wait_outcome(job, 20) == "succeeded"
    assert not host.agent.records(notice="job-lost"), host.agent.tail()
    broker.cancel_job(skipped)
    assert stop_agent(host.agent) == 0
