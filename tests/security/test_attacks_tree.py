"""The runner's code and settings are not the job's (issue 16, item 1). The job (a process of the
runner's user) goes after what the root agent executes and reads before every listener: the runner's
`.env` (copied into every listener's environment) and `bin/Runner.Listener` (executed as the next
listener). Whatever it plants there runs in the *next* job, another repository's, with its secrets.

Each host here is laid out the way a real one is: the stand-in runner unpacked by the runner's user
(all of it theirs), then the real `runner-lifecycle install` of the binary under test run on it
(into a staging root holding the runner, so nothing is written to this machine's /etc). The agent
runs as root with `runner.user` = a throwaway unprivileged user; attackers are processes of that
user (hostlib.py).

Before (`8ebb972`): `install` left the tree to the runner's user and gave it `.env`; the agent read
`.env` because that user owned it, and executed `bin/Runner.Listener` from a directory that user
could write. After: `install` gives the tree to root (the directory sticky, `_work` and `_diag` the
runner's), the agent refuses to start a listener from a tree the runner's user could change and
ignores a `.env` that user could change.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hostlib import attack, attack_py, wait_for  # first: puts tests/e2e on the path
from harness import hook_scripts, stop_agent  # noqa: E402

pytestmark = pytest.mark.timeout(120)

CANARY = "RL_INJECTED_BY_THE_JOB"

#: Append an interpreter hook and a job hook to the runner's .env; print "done" or the errno name.
APPEND = r"""
import errno, sys
try:
    with open(sys.argv[1], "a") as f:
        f.write("LD_PRELOAD=/nonexistent/rl-evil.so\nNODE_OPTIONS=--require=/nonexistent/rl-evil.js\n"
                "ACTIONS_RUNNER_HOOK_JOB_STARTED=/nonexistent/rl-evil.sh\n" + sys.argv[2] + "=1\n")
    print("done")
except OSError as e:
    print(errno.errorcode[e.errno])
"""

#: Put a wrapper in place of bin/Runner.Listener (rename the real one away, or write over it); the
#: wrapper leaves a marker, then runs the real listener, as a job capturing the next JIT config would.
WRAP = r"""
import errno, os, sys
listener, marker = sys.argv[1], sys.argv[2]
real = listener + ".real"
wrapper = f"#!/bin/sh\necho \"$$ $*\" >> {marker}\nexec {real} \"$@\"\n"
res = []
try:
    os.rename(listener, real)
    with open(listener, "w") as f:
        f.write(wrapper)
    os.chmod(listener, 0o755)
    res.append("replaced")
except OSError as e:
    res.append("rename:" + errno.errorcode[e.errno])
    try:
        with open(listener, "a") as f:
            f.write("\n")
        res.append("writable")
    except OSError as e:
        res.append("write:" + errno.errorcode[e.errno])
print(" ".join(res))
"""

#: Swap .env for a FIFO (an agent opening it blocking would stop its only thread).
FIFO = r"""
import errno, os, sys
p = sys.argv[1]
try:
    os.rename(p, p + ".old")
    os.mkfifo(p)
    print("swapped")
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def installed(user_host, rl_bin: Path, **settings: str):
    """A host whose runner the runner's user unpacked, laid out by the binary's own `install`
    (persistent mode: the stand-in runner is registered), the test's hook scripts named in `.env`
    again afterwards (install points them at /usr/lib/runner-lifecycle, absent on this machine)."""
    n = len(user_host.hosts)
    stage = user_host.base / f"stage-{n}"
    for d in (stage, stage / "etc", stage / "opt"):
        d.mkdir()
        os.chmod(d, 0o755)
    (stage / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/bash\n"
                                      f"{user_host.user}:x:{user_host.uid}:{user_host.gid}::/nonexistent:/bin/sh\n")
    host = user_host.make(runner_dir=stage / "opt/actions-runner", tree="runner", **settings)
    out = subprocess.run([str(rl_bin), "install", "--root", str(stage), "--user", user_host.user, "--binary",
                          str(rl_bin), "--no-fence-imds", "--runner-mode", "persistent"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out
    host.runner.set_hooks(**hook_scripts(rl_bin))  # in place: owner and mode as install left them
    return host


def listeners(agent) -> list[int]:
    return [r["pid"] for r in agent.records(message="listener started")]


def next_listener(agent, user_host, timeout: float = 30) -> int:
    """The job kills its own listener (same user); the agent starts the next one: its pid."""
    seen = listeners(agent)
    out = attack(user_host.user, "kill", "-KILL", str(seen[-1]))
    assert out.returncode == 0, out
    return wait_for(lambda: [p for p in listeners(agent) if p not in seen], timeout,
                    f"the next listener\n{agent.tail()}")[0]


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_the_job_cannot_put_an_interpreter_hook_into_the_next_listeners_environment(user_host, rl_bin):
    """The job appends LD_PRELOAD, NODE_OPTIONS, a job hook and a canary to the runner's `.env`, then
    ends its listener. Before: the append succeeds (the runner's user owns `.env`) and the agent,
    as root, hands all of it to the next listener (the canary and LD_PRELOAD are in its
    environment). After: the append is refused (EACCES: `.env` is root's in a sticky directory) and
    the next listener's environment has none of it."""
    host = installed(user_host, rl_bin)
    agent = host.start_serving()
    env_file = host.runner.path / ".env"
    out = attack_py(user_host.user, APPEND, str(env_file), CANARY)
    second = next_listener(agent, user_host)
    env = environ(second)
    assert CANARY.encode() not in env and b"LD_PRELOAD" not in env and b"NODE_OPTIONS" not in env, \
        (out.stdout, env)
    assert out.stdout.strip() == "EACCES", out
    assert stop_agent(agent) == 0


def test_the_job_cannot_replace_the_listener_the_root_agent_runs_next(user_host, rl_bin, tmp_path):
    """The job puts a wrapper in place of `bin/Runner.Listener` (it would see the next listener's
    JIT config and run its code inside the next job), then ends its listener. Before: the rename
    and the wrapper succeed (the runner's user owns `bin/`) and the agent runs the wrapper as the
    next listener (the marker is written). After: rename and write are refused, the agent starts
    the real listener, and the marker never appears."""
    host = installed(user_host, rl_bin)
    agent = host.start_serving()
    drop = user_host.base / "drop"
    drop.mkdir()
    os.chown(drop, user_host.uid, user_host.gid)
    marker = drop / "wrapper-ran"
    out = attack_py(user_host.user, WRAP, str(host.runner.listener), str(marker))
    next_listener(agent, user_host)
    host.broker.wait_listening(host.runner.name, timeout=30)
    time.sleep(0.5)
    assert not marker.exists(), f"the job's wrapper ran as the listener: {marker.read_text()} ({out.stdout})"
    assert out.stdout.split() == ["rename:EACCES", "write:EACCES"], out
    assert stop_agent(agent) == 0


def test_the_agent_refuses_a_listener_in_a_tree_the_runner_can_change(user_host, rl_bin):
    """A host whose tree is not laid out (here: `bin/` given back to the runner's user after
    install, as an unpacked runner with no install would be). Before: the agent starts the
    listener from it. After: it refuses at start with the configuration exit code (3) and an error
    naming `bin` and the fix; `install --check` reports the same and exits 8."""
    host = installed(user_host, rl_bin)
    os.chown(host.runner.path / "bin", user_host.uid, user_host.gid)
    agent = host.start_agent()
    code = agent.wait(timeout=20)
    text = agent.tail(80)
    assert code == 3, text
    assert "bin" in text and "runner-lifecycle install" in text, text
    assert not listeners(agent)
    stage = host.runner.path.parent.parent
    check = subprocess.run([str(rl_bin), "install", "--check", "--root", str(stage), "--user", user_host.user,
                            "--binary", str(rl_bin), "--no-fence-imds", "--runner-mode", "persistent"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 8 and "/opt/actions-runner/bin: owned by" in check.stdout, check


def test_a_env_the_runner_can_change_is_ignored(user_host, rl_bin):
    """Defence in depth: `.env` given back to the runner's user (a tree laid out by an older
    install). The job appends its canary. Before: the agent reads `.env` *because* that user owns
    it, and the next listener gets the canary. After: the agent ignores it with a warning naming
    the file, and the listener's environment has no canary."""
    host = installed(user_host, rl_bin)
    env_file = host.runner.path / ".env"
    os.chown(env_file, user_host.uid, user_host.gid)
    out = attack_py(user_host.user, APPEND, str(env_file), CANARY)
    assert out.stdout.strip() == "done", out
    agent = host.start_serving()
    first = listeners(agent)[0]
    assert CANARY.encode() not in environ(first), "the agent read a .env the job could write"
    assert agent.records(message="the runner's .env is not used"), agent.tail()
    assert stop_agent(agent) == 0


def test_a_env_swapped_for_a_fifo_never_blocks_the_agent(user_host, rl_bin):
    """The job swaps `.env` for a FIFO: an agent that opened it blocking would stop its only thread
    (no IMDS polls, no hooks, no watchdog pings). After: the swap is refused (EPERM: a sticky
    directory, root's entry). And a FIFO
    put there anyway (here by root, as a bad layout could) is refused at once: the next listener
    starts, and status answers."""
    host = installed(user_host, rl_bin)
    agent = host.start_serving()
    env_file = host.runner.path / ".env"
    out = attack_py(user_host.user, FIFO, str(env_file))
    if out.stdout.strip() != "swapped":
        assert out.stdout.strip() == "EPERM", out  # sticky directory, root's entry
        env_file.rename(env_file.with_suffix(".old"))
        os.mkfifo(env_file)
    assert stat.S_ISFIFO(os.lstat(env_file).st_mode)
    next_listener(agent, user_host)
    t = time.monotonic()
    r = host.status("--json")
    assert r.returncode == 0 and time.monotonic() - t < 2.0, (r, agent.tail())
    assert agent.records(message="the runner's .env is not used"), agent.tail()
    assert stop_agent(agent) == 0
