"""The job against the handover latch (docs/agent.md, "The handover"): the listener's perf directory
(`RUNNER_PERFLOG`) must be writable by the runner's user for the unmodified listener to report job
messages, so the job can write it too. Run as the real binary with `runner.user` = a throwaway
unprivileged user, the attacker a process of that user (hostlib.py), under the unit's limits where
they matter here (the agent without CAP_DAC_OVERRIDE reads the directory through its group).

What a forged line may do, and no more: hold one drain for at most `drain.handover_bound`; never
protect a host, never keep it; never block or fool the root agent's read (FIFO, symlink, flood).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from hostlib import PY, as_user, attack_py, wait_for  # first: puts tests/e2e on the path
from harness import stop_agent  # noqa: E402

pytestmark = pytest.mark.timeout(90)

BOUND_S = 4

#: Runs as the runner's user: find the perf directory from its own listener's environment (the
#: user may read /proc/PID/environ of its own processes), then act on it.
FIND_DIR = r"""
import os, sys
def perf_dir(listener):
    env = open(f"/proc/{listener}/environ", "rb").read().split(b"\0")
    for kv in env:
        if kv.startswith(b"RUNNER_PERFLOG="):
            return kv.split(b"=", 1)[1].decode()
    raise SystemExit("no RUNNER_PERFLOG in the listener's environment")
d = perf_dir(int(sys.argv[1]))
"""

FORGE_LOOP = FIND_DIR + r"""
import time
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    with open(os.path.join(d, "Runner.perf"), "a") as f:
        f.write("MessageReceived_RunnerJobRequest:2026-12-06T00:00:00.0000000Z\n")
    time.sleep(0.3)
"""

SWAP = FIND_DIR + r"""
p = os.path.join(d, "Runner.perf")
if os.path.exists(p):
    os.unlink(p)
kind = sys.argv[2]
if kind == "fifo":
    os.mkfifo(p)
elif kind == "symlink":
    os.symlink("/etc/shadow", p)
elif kind == "flood":
    with open(p, "wb") as f:
        f.truncate(1 << 30)  # a 1 GiB sparse file
print(d)
"""


def listener_pid(agent) -> int:
    return agent.wait_record(message="listener started")["pid"]


def test_forged_job_messages_hold_a_drain_for_the_bound_at_most(user_host, broker):
    """The job writes `MessageReceived_RunnerJobRequest` lines into its listener's perf log every
    0.3 s, before and throughout the scale-in. The drain is held once, for `drain.handover_bound`
    from the first line the drain honoured, then the idle listener is stopped and the hook completed;
    the host was never protected for it."""
    host = user_host.make(drain_handover_bound=f"{BOUND_S}s")
    agent = host.start_serving()
    pid = listener_pid(agent)
    forger = subprocess.Popen(as_user(user_host.user, PY, "-c", FORGE_LOOP, str(pid), "30"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert forger.poll() is None, forger.communicate()
        sent = host.terminate()
        wait_for(host.gone, BOUND_S + 20, f"{host.instance_id} to terminate\n{agent.tail()}")
        took = time.monotonic() - sent
    finally:
        forger.kill()
        forger.wait(5)
    held = agent.records(notice="stop-held")
    assert held and held[0]["reason"] == "job-message", agent.tail()
    # Lines before the drain opened the hold (the first of the streak); after it ran out, none counts.
    assert took < 2 * BOUND_S + 10, f"the drain took {took:.1f} s with a {BOUND_S} s bound"
    lost = agent.records(notice="job-lost")
    assert [r["cause"] for r in lost] == ["handover-timeout"], agent.tail()
    assert not host.calls("SetInstanceProtection", ok=True), "a forged line protected the host"
    assert len(host.calls("CompleteLifecycleAction", ok=True)) == 1
    assert stop_agent(agent) == 0 or not agent.running()


@pytest.mark.parametrize("kind", ["fifo", "symlink", "flood"])
def test_a_hostile_perf_file_never_blocks_nor_fools_the_agent(user_host, broker, kind):
    """The job swaps `Runner.perf` for a FIFO (an ordinary open would block the agent's only thread),
    a symlink to a root-only file, or a 1 GiB sparse file. The agent keeps answering (`status`),
    reads nothing through the link, and still drains the idle host promptly (a flood is one
    hint: at most one bound)."""
    host = user_host.make(drain_handover_bound=f"{BOUND_S}s")
    agent = host.start_serving()
    pid = listener_pid(agent)
    out = attack_py(user_host.user, SWAP, str(pid), kind)
    assert out.returncode == 0, out
    perf = Path(out.stdout.strip())
    time.sleep(0.5)
    r = host.status("--json")
    assert r.returncode == 0, (r, agent.tail())
    sent = host.terminate()
    wait_for(host.gone, BOUND_S + 20, f"{host.instance_id} to terminate\n{agent.tail()}")
    took = time.monotonic() - sent
    assert took < BOUND_S + 10, took
    assert agent.running() or agent.wait(5) == 0
    if kind in ("fifo", "symlink"):
        assert agent.records(message="cannot read the listener's perf log; the drain relies on /proc and the last look")
        assert not agent.records(notice="stop-held"), agent.tail()
    assert not perf.exists() or perf.is_dir()
    assert stop_agent(agent) == 0 or not agent.running()
