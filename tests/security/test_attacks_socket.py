"""The hook socket keeps capacity for the real hooks (issue 16, item 5): the job's user floods it with
connections that pipeline requests and never read the answers, and the job hooks must still be
answered in their normal time. Run against the real binary as the packaged unit runs it (the agent
as root with `runner.user` = a throwaway unprivileged user, the attacker a process of that user:
hostlib.py).

Before (`8ebb972`): a connection counted as "busy" from the moment its request was read until its
answer was written. A client that pipelines requests and never reads fills its socket buffer, after
which every write blocks: the slot stays busy until the 10 s connection deadline. With 64 such
connections every slot is busy, and a new connection (the real hook) is closed at once: the hook
prints "agent unreachable ... closed the connection without answering". After: a connection is
protected only while the agent computes its answer; once answered it is evictable (oldest first)
and must take its reply within a second, so a newcomer always finds room (at once, or as soon as
one answer is done) and a hook that has spoken is always answered.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from hostlib import PY, as_user, fd_count  # first: puts tests/e2e on the path
from harness import stop_agent  # noqa: E402

pytestmark = pytest.mark.timeout(90)

#: N threads, each holding one connection that pipelines `status` requests and never reads; a
#: connection the agent closes is replaced at once. Prints "ready" once every thread has connected.
PIPELINE = r"""
import socket, sys, threading, time
path, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
burst = b"status\n" * 2048
end = time.monotonic() + seconds
lock = threading.Lock()
counts = {"connects": 0, "first": 0}
first = threading.Event()
def hold():
    while time.monotonic() < end:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            with lock:
                counts["connects"] += 1
                counts["first"] += 1
                if counts["first"] == n:
                    first.set()
            s.settimeout(0.2)
            while time.monotonic() < end:
                try:
                    s.sendall(burst)  # never reads a reply
                except socket.timeout:
                    time.sleep(0.02)  # the agent stopped reading: keep the connection, push again
        except OSError:
            pass  # closed by the agent: connect again
        finally:
            s.close()
threads = [threading.Thread(target=hold, daemon=True) for _ in range(n)]
for t in threads:
    t.start()
first.wait(10)
print("ready", flush=True)
for t in threads:
    t.join()
print("connects", counts["connects"], flush=True)
"""


def test_pipelining_readers_that_never_read_do_not_lock_out_the_job_hooks(user_host):
    """80 connections of the job's user pipeline `status` requests without reading, and reconnect
    whenever the agent closes one. Meanwhile the real hooks (`runner-lifecycle hook job-started` and
    `job-completed`, as the runner's user, as the job runs them) must each be answered by the agent
    (not "unreachable", which a hook says once its 5 s wait for the agent is over: hook.rs
    AGENT_TIMEOUT), and the agent's descriptors stay bounded. Fails on 8ebb972: the hooks get
    "closed the connection without answering". How fast they are answered is not asserted here (a
    loaded CI machine once took 1.40 s): tests check behaviour, bench/ checks speed."""
    host = user_host.make()
    agent = host.start_serving()
    baseline = fd_count(agent.pid)
    bound = baseline + 64 + 24
    flood = subprocess.Popen(as_user(user_host.user, PY, "-c", PIPELINE, str(host.socket), "80", "25"),
                             env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert flood.stdout is not None and flood.stdout.readline().strip() == "ready", flood.stderr
        time.sleep(2.0)  # every slot has a pipeliner with a full buffer
        for i in range(6):
            event = "job-started" if i % 2 == 0 else "job-completed"
            r = user_host.hook_as_user(host, event, timeout=30)
            assert r.returncode == 0, r
            assert f"runner-lifecycle: {event}:" in r.stdout, r
            assert "unreachable" not in r.stdout and "the agent answered `error" not in r.stdout, r
            assert fd_count(agent.pid) <= bound, f"{fd_count(agent.pid)} fds (baseline {baseline})"
            time.sleep(0.3)
        assert flood.poll() is None, "the flood was still on"
        r = host.status("--json")
        assert r.returncode == 0, r
    finally:
        flood.kill()
        flood.wait(timeout=10)
    assert agent.running()
    assert stop_agent(agent) == 0
