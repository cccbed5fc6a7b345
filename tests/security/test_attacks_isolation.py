"""A job against the next job on the same host (issue 16, items 2 to 4): what it leaves behind
(processes, files), the agent's log stream, and a listener flooded with threads. The agent runs as
root with `runner.user` = a throwaway unprivileged user (hostlib.py), with the unit's open-file limit
(LimitNOFILE=1024:524288); every attack is made by a process of that user.

Each test was run against a scratch build of the commit before this change (8ebb972), where it
fails for the reason its docstring gives. The unit's cgroup limits (TasksMax, MemoryLow) are not
reproduced here: this machine's cgroup v2 hierarchy has no pids or memory controller (they are on
cgroup v1), so only cgroup.kill and cgroup.events are exercised.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from hostlib import PY, attack, attack_py, drop_dir, jit_host, start, wait_for  # first: puts tests/e2e on the path

pytestmark = pytest.mark.timeout(240)

# A process that keeps forking and letting its parent exit, so that a /proc scan finds a pid that
# is gone by the time it is signalled. Every 20 ms it writes its hop count and looks for a process
# whose environment holds a JIT config (the next listener's), and keeps what it finds.
HOPPER = r"""
import os, sys, time
drop = sys.argv[1]
hops, last = 0, 0.0
os.setsid()
while True:
    if os.fork():
        os._exit(0)
    hops += 1
    now = time.monotonic()
    if now - last < 0.02:
        continue
    last = now
    try:
        with open(os.path.join(drop, "hops"), "w") as f:
            f.write(f"{hops} {time.time()}")
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == os.getpid():
                continue
            try:
                env = open(f"/proc/{p}/environ", "rb").read()
            except OSError:
                continue
            if b"ACTIONS_RUNNER_INPUT_JITCONFIG=" in env:
                with open(os.path.join(drop, "stolen"), "ab") as f:
                    f.write(env + b"\n")
    except OSError:
        pass
"""


def test_a_pid_hopping_leftover_dies_with_its_cgroup_and_never_reads_the_next_config(
        user_host: Any, broker: Any, rl_bin: Path, aws_env: Any, tmp_path: Path) -> None:
    """The job-started hook leaves a process that forks and lets its parent exit in a loop, and
    reads every same-uid process's /proc/<pid>/environ looking for a JIT config.

    Before (8ebb972): the agent's 10-round /proc kill before the next listener missed it (each round
    signals pids that have already hopped on); it kept hopping next to the next listener and read
    that listener's config from its environ (issue 16: 7,652 hops). After: it lives in the first
    listener's cgroup, which the agent kills (cgroup.kill) and waits to be empty before the next
    listener starts: no hop after that, nothing read.
    """
    drop = drop_dir(user_host)
    hopper = drop / "hopper.py"
    hopper.write_text(HOPPER)
    os.chmod(hopper, 0o644)
    hook = f"#!/bin/sh\n{PY} {hopper} {drop} </dev/null >/dev/null 2>&1 &\nexit 0\n"
    with jit_host(user_host, broker, rl_bin, aws_env, tmp_path, hook) as (host, ctl):
        job = broker.assign_job(1.5)
        wait_for(lambda: (drop / "hops").exists(), 15, "the hopper running")
        assert broker.wait_outcome(job, 30) == "succeeded"
        wait_for(lambda: len(ctl.minted()) >= 2, 30, "the next config")
        broker.wait_listening(ctl.minted()[1], timeout=30)
        listener2 = host.agent.records(message="listener started")[-1]["pid"]
        time.sleep(2.0)
        hops = (drop / "hops").read_text() if (drop / "hops").exists() else ""
        fresh = bool(hops) and time.time() - float(hops.split()[1]) < 1.0
        stolen = (drop / "stolen").read_bytes() if (drop / "stolen").exists() else b""
        assert not fresh, f"the hopper still hops ({hops}) next to listener {listener2}"
        assert b"ACTIONS_RUNNER_INPUT_JITCONFIG" not in stolen, "the next listener's config was read"
        killed = host.agent.records(message="killed what the listener's job left in its cgroup") + \
            host.agent.records(message="killed the cgroups of earlier listeners: nothing their jobs started runs on")
        assert killed and killed[0]["processes"] >= 1, host.agent.tail()


STDERR_ATTACK = r"""
import ctypes, errno, os, sys
listener = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd = 438
pidfd = os.pidfd_open(listener)
fd = libc.syscall(SYS_pidfd_getfd, pidfd, 2, 0)
if fd < 0:
    print("refused", errno.errorcode[ctypes.get_errno()])
    sys.exit(0)
line = b'{"timestamp":"2026-01-01T00:00:00Z","level":"ERROR","message":"FORGED by the job","notice":"hook-completed"}\n'
os.write(fd, line)
print("written", os.readlink(f"/proc/self/fd/{fd}"))
"""


def test_the_job_cannot_write_into_the_agents_log_stream(user_host: Any, broker: Any) -> None:
    """The job takes its listener's stderr with pidfd_getfd (same uid; this kernel has no Yama) and
    writes a line that looks like one of the agent's own records.

    Before (8ebb972): the listener's stderr was the agent's (the journal stream under systemd, the
    log file here): the forged record landed in the agent's log as the agent's, indistinguishable
    (a `notice` an alert may key on). After: the listener's stdout and stderr are a pipe the agent
    reads; the line arrives as `listener output`, escaped in a field, never as a record of its own.
    """
    host = user_host.make()
    agent = start(host)
    broker.wait_listening(host.runner.name, timeout=30)
    listener = agent.wait_record(message="listener started")["pid"]
    r = attack_py(user_host.user, STDERR_ATTACK, str(listener))
    assert r.returncode == 0, r
    time.sleep(1.0)
    assert not agent.records(message="FORGED by the job"), f"a forged record in the agent's log ({r.stdout})"
    if r.stdout.startswith("written"):
        got = [x for x in agent.records(message="listener output") if "FORGED by the job" in x.get("line", "")]
        assert got and got[0]["stream"] == "stderr" and got[0]["listener_pid"] == listener, agent.tail()


LEAVE_FILES = """#!/bin/sh
echo leak > /tmp/rl-leak-$(id -u)
mkdir -p /var/tmp/rl-leak-dir-$(id -u)/deep && echo leak > /var/tmp/rl-leak-dir-$(id -u)/deep/f
echo leak > /dev/shm/rl-leak-$(id -u)
echo leak > {drop}/planted
mkdir -p "$GITHUB_WORKSPACE/.git" && echo leak > "$GITHUB_WORKSPACE/.git/config" && chmod 000 "$GITHUB_WORKSPACE/.git"
exit 0
"""


def test_the_last_jobs_files_are_gone_before_the_next_job(
        user_host: Any, broker: Any, rl_bin: Path, aws_env: Any, tmp_path: Path) -> None:
    """The job leaves files in /tmp, /var/tmp, /dev/shm, a root-owned world-writable directory and
    the runner's work directory (one directory made unreadable, as a checkout can be).

    Before (8ebb972): all of it was there for the next job (another repository's) to read or to
    trip over (a planted `.git/config` with a hook path, a poisoned cache). After: before the next
    listener starts, the agent empties `_work` and removes what the runner's user owns in the temp
    directories (as that user, in a cgroup of its own); the runner directory itself stays.
    """
    drop = drop_dir(user_host)
    with jit_host(user_host, broker, rl_bin, aws_env, tmp_path, LEAVE_FILES.format(drop=drop)) as (host, ctl):
        uid = user_host.uid
        leaks = [Path(f"/tmp/rl-leak-{uid}"), Path(f"/var/tmp/rl-leak-dir-{uid}"), Path(f"/dev/shm/rl-leak-{uid}"),
                 drop / "planted"]
        work = host.runner.path / "_work"
        job = broker.assign_job(1.0)
        wait_for(lambda: all(p.exists() for p in leaks) and any(p.name == ".git" for p in work.rglob("*")), 15,
                 "the job's files")
        leaks += [p for p in work.rglob("*") if p.name == ".git"]
        assert broker.wait_outcome(job, 30) == "succeeded"
        wait_for(lambda: len(ctl.minted()) >= 2, 30, "the next config")
        broker.wait_listening(ctl.minted()[1], timeout=30)
        left = [str(p) for p in leaks if p.exists()] + [str(p) for p in work.glob("*")]
        assert not left, f"the last job's files are there for the next one: {left}"
        assert (host.runner.path / "bin" / "Runner.Listener").exists()
        cleaned = host.agent.records(message="the last job's files are cleaned")
        assert cleaned and cleaned[-1]["work_removed"] >= 3 and cleaned[-1]["tmp_removed"] >= 4, cleaned


def test_a_thread_flood_in_the_listener_never_keeps_a_dead_worker_alive(user_host: Any, broker: Any) -> None:
    """While a job runs, 1,200 threads appear in its listener (the job can inject them with ptrace on
    a kernel without Yama, or at scope 0; here the stand-in starts them on the job's SIGUSR1). Then
    the job ends.

    Before (8ebb972): the agent held one open `children` file per listener thread; past its
    1,024 descriptors every /proc scan failed with EMFILE, and it kept the dead worker alive
    (job running, host protected) for as long as the threads stayed. After: above 64 threads the
    files are read one at a time, and a known worker's exit is seen on its pidfd even when a /proc
    read fails: the job's end is seen within seconds.
    """
    host = user_host.make()
    with open(host.runner.path / ".env", "a") as f:
        f.write("FAKE_LISTENER_THREADS_ON_USR1=1200\n")
    agent = start(host)
    broker.wait_listening(host.runner.name, timeout=30)
    listener = agent.wait_record(message="listener started")["pid"]
    job = broker.assign_job(4.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    agent.wait_record(message="Runner.Worker started: job assigned")
    r = attack(user_host.user, "kill", "-USR1", str(listener))
    assert r.returncode == 0, r
    wait_for(lambda: len(os.listdir(f"/proc/{listener}/task")) >= 1200, 15, "1,200 threads in the listener")
    assert broker.wait_outcome(job, 30) == "succeeded"
    agent.wait_record(timeout=10, message="Runner.Worker exited: job over")
    status = host.status_json()
    assert status["workers"] == [] and status["job_alive"] is False, json.dumps(status)
