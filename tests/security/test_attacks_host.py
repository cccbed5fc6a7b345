"""Attacks by the job on its own host (docs/security.md, "Before this round" B1 to B5, B7), each
against the real binary: the agent runs as root with `runner.user` = a throwaway unprivileged user,
the stand-in listener runs as that user, and the attacker is a process of that user (hostlib.py).

Checked against the code before this round (commit 88933a8, built in a scratch directory): every
test here fails there. That code has no `runner.user` (it ignores `RUNNER_LIFECYCLE_RUNNER_USER`,
starts the listener as the agent's own user and makes the socket 0600 for that user), and its unit
ran the agent as the runner's user (`User=runner`); each docstring says what the attack got there
and which assertion fails.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hostlib import PY, as_user, attack, attack_py, fd_count, wait_for  # first: puts tests/e2e on the path
from harness import stop_agent  # noqa: E402

# Each attack is bounded: a hung agent or emulator fails the test, fixtures still clean up.
pytestmark = pytest.mark.timeout(60)


def test_attack1_sigterm_to_the_agent_is_refused(user_host, broker):
    """Attack 1 (B1): the job sends `kill -TERM` to the agent.

    Before (agent running as the job's user): the signal was delivered, the agent drained: the
    listener stopped after the job, protection was cleared and the runner took no more jobs; a clean
    exit 0 was not restarted. After: the kernel refuses it (EPERM: an unprivileged user cannot signal
    a root process); the agent keeps serving hooks and the host stays protected while the job runs.
    Fails on 88933a8: the listener runs as root, not as the runner's user (first assertion); as
    deployed there (`User=runner`) the agent was the job's user and the signal went through.
    """
    host = user_host.make()
    agent = host.start_serving()
    listener = agent.wait_record(message="listener started")["pid"]
    assert os.stat(f"/proc/{listener}").st_uid == user_host.uid and os.stat(f"/proc/{agent.pid}").st_uid == 0
    job = broker.assign_job(5.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    wait_for(lambda: host.protected() is True, 5.0, "protection while the job runs")

    out = attack(user_host.user, "kill", "-TERM", str(agent.pid))
    assert out.returncode != 0 and "not permitted" in out.stderr, out
    code = "import os,sys\ntry:\n os.kill(int(sys.argv[1]), 15)\nexcept OSError as e:\n print(e.errno)"
    out = attack_py(user_host.user, code, str(agent.pid))
    assert out.stdout.strip() == str(errno.EPERM), out

    time.sleep(0.5)
    assert agent.running()
    assert not agent.records(action="stop-listener"), "the agent started a drain"
    r = user_host.hook_as_user(host, "job-started")
    assert r.returncode == 0 and "runner-lifecycle: job-started:" in r.stdout and "unreachable" not in r.stdout, r
    assert host.protected() is True
    assert broker.wait_outcome(job, timeout=20) == "succeeded"
    assert [c.protected for c in host.calls("SetInstanceProtection", ok=True)][:1] == [True]
    assert agent.running()
    assert stop_agent(agent) == 0


SOCKET_ATTACK = r"""
import errno, json, os, socket, sys
p = sys.argv[1]
d = os.path.dirname(p)
res = {}
def bind(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
for name, f in (("unlink", lambda: os.unlink(p)), ("rename", lambda: os.rename(p, p + ".old")),
                ("create", lambda: open(os.path.join(d, "agent.sock.new"), "w")),
                ("bind_beside", lambda: bind(os.path.join(d, "evil.sock"))), ("bind_over", lambda: bind(p)),
                ("chmod", lambda: os.chmod(p, 0o666))):
    try:
        f()
        res[name] = "done"
    except OSError as e:
        res[name] = errno.errorcode[e.errno]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(p)
s.sendall(b"status\n")
res["status"] = s.recv(65536).decode(errors="replace")[:3]
print(json.dumps(res))
"""


def test_attack2_the_hook_socket_cannot_be_replaced_and_an_occupied_path_is_taken_back(user_host):
    """Attack 2 (B2): the job unlinks or renames the hook socket and binds its own at the path, so that
    later hooks and `runner-lifecycle status` talk to it and the agent hears no hook.

    Before: /run/runner-lifecycle belonged to the runner's user (0750): unlink and bind succeeded. And
    a live socket left at the path (an impostor's) made every restarted agent exit 5 ("another agent
    serves the socket") forever. After: the directory is root-owned 0755, so unlink, rename, creating
    a file and binding beside or over the socket all fail (EACCES / EADDRINUSE) while connecting
    still works (socket root:<runner group> 0660); and a restarted agent that finds the path occupied
    by something it does not own (simulated here as root: a live socket owned by the job's user)
    replaces it and serves. Fails on 88933a8: the socket is root:root 0600, so the runner's user
    cannot even connect (the stat assertion fails first); that code also exited 5 on a live impostor.
    """
    host = user_host.make()
    agent = host.start_serving()
    st = os.lstat(host.socket)
    assert stat.S_ISSOCK(st.st_mode) and st.st_uid == 0 and st.st_gid == user_host.gid, st
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    dst = os.stat(host.socket.parent)
    assert dst.st_uid == 0 and stat.S_IMODE(dst.st_mode) == 0o755

    out = attack_py(user_host.user, SOCKET_ATTACK, str(host.socket))
    assert out.returncode == 0, out
    res = json.loads(out.stdout)
    assert res == {"unlink": "EACCES", "rename": "EACCES", "create": "EACCES", "bind_beside": "EACCES",
                   "bind_over": "EADDRINUSE", "chmod": "EPERM", "status": "ok "}, res
    assert os.lstat(host.socket).st_ino == st.st_ino and agent.running()
    r = user_host.hook_as_user(host, "job-started")
    assert r.returncode == 0 and "runner-lifecycle: job-started:" in r.stdout and "unreachable" not in r.stdout, r
    assert stop_agent(agent) == 0

    # Something occupies the path when the agent restarts (root puts it there: the job cannot).
    host.socket.unlink(missing_ok=True)
    impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    impostor.bind(str(host.socket))
    impostor.listen(8)
    impostor.setblocking(False)
    os.lchown(host.socket, user_host.uid, user_host.gid)
    try:
        agent = host.start_agent()
        agent.wait_record(message="the hook socket's path is occupied by something the agent's user does not own; "
                                  "replacing it", timeout=10)
        host.broker.wait_listening(host.runner.name, timeout=30)
        time.sleep(1.0)
        assert agent.running(), f"the agent exited {agent.proc.returncode}\n{agent.tail()}"
        st = os.lstat(host.socket)
        assert st.st_uid == 0 and st.st_gid == user_host.gid and stat.S_IMODE(st.st_mode) == 0o660
        r = user_host.hook_as_user(host, "job-started")
        assert r.returncode == 0 and "runner-lifecycle: job-started:" in r.stdout and "unreachable" not in r.stdout, r
        try:
            impostor.accept()
            raise AssertionError("a hook reached the impostor")
        except BlockingIOError:
            pass
        assert stop_agent(agent) == 0
    finally:
        impostor.close()


FORGE = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"job-started\n")
print(s.recv(4096).decode(errors="replace").strip())
"""


def test_attack3_a_forged_job_started_neither_holds_protection_nor_keeps_a_terminating_host(user_host, broker):
    """Attack 3 (B3): with no job running, the job's user sends `job-started` over the hook socket (as
    a finished job's leftover process could), to keep the host protected from scale-in (cost) and,
    once the host is picked for termination anyway, to have the agent heartbeat its lifecycle action
    instead of completing it (a zombie billed for up to 48 h).

    Before: the report was believed: protection stayed on until a `job-completed`, and a terminating
    host waited for the "job" with heartbeats. After: the report protects at once (a hint) but, with
    no Runner.Worker under the listener within the grace, the claim is dropped (`hook-claim-dropped`)
    and protection cleared; after a scale-in the agent stops the idle listener and completes the
    lifecycle action within seconds, whatever the attacker keeps sending, with no heartbeat. Fails on
    88933a8: with a root agent the 0600 socket refuses the job's user (EACCES), so hooks do not work
    at all; as deployed there (agent = job's user) the forged report held protection until a
    `job-completed` and a terminating host heartbeated instead of completing.
    """
    host = user_host.make(hook_timeout=30)
    agent = host.start_serving()
    time.sleep(1.5)  # idle for longer than drain.unprotect_delay (1 s)
    out = attack_py(user_host.user, FORGE, str(host.socket))
    assert out.returncode == 0 and out.stdout.startswith("ok"), out
    wait_for(lambda: host.protected() is True, 3.0, "the hint protects at once")
    agent.wait_record(notice="hook-claim-dropped", timeout=5)
    wait_for(lambda: host.protected() is False, 3.0, "protection cleared after the grace")

    t = host.terminate()
    # The attacker keeps forging while the host terminates.
    for _ in range(5):
        attack_py(user_host.user, FORGE, str(host.socket))
    done = wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    assert done[0].monotonic - t < 8.0, f"completed {done[0].monotonic - t:.1f} s after the scale-in"
    assert host.calls("RecordLifecycleActionHeartbeat") == [], "heartbeats for a forged job"
    assert [s["cancels_job"] for s in agent.records(action="stop-listener")] == [False]
    assert agent.running(), "and the agent is still there (waiting for its instance to go)"


FLOOD = r"""
import socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(path)
    except OSError:
        pass
    return s
held = [conn() for _ in range(n)]
print("ready", flush=True)
i = 0
while not sys.stdin.closed:
    import select
    if select.select([sys.stdin], [], [], 0.05)[0]:
        break
    for _ in range(25):
        held[i % n].close()
        held[i % n] = conn()
        i += 1
print("reconnected", i, flush=True)
"""


def test_attack4_hundreds_of_held_connections_neither_lock_out_hooks_nor_exhaust_fds_nor_stop_a_busy_listener(
        user_host, broker):
    """Attack 4 (B4): the job's user holds a few hundred connections to the hook socket (and keeps
    reconnecting), to starve the agent of file descriptors (no hooks, no /proc reads, no API calls)
    and to make a terminating host's agent mistake its busy listener for an idle one.

    Before: no bound on hook connections: every one cost the agent a descriptor, and a `/proc` read
    failing with EMFILE counted as "no worker", so the busy listener could be SIGINTed (the job
    cancelled). After: at most 64 connections, the oldest idle one closed to admit a new one: a
    real hook (run as the runner's user) is answered within a second, the agent's fd count stays
    within 64 (+ a margin) of its baseline, and the busy listener is stopped only after its job ends.
    Fails on 88933a8: with a root agent the job's user cannot use the 0600 socket (the real hook gets
    EACCES); as deployed there (agent = job's user) connections were unbounded and each cost a
    descriptor.
    """
    host = user_host.make(hook_timeout=30)
    agent = host.start_serving()
    job = broker.assign_job(10.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    host.terminate()
    agent.wait_record(notice="state-confirmed", state="Terminating:Wait", timeout=10)
    baseline = fd_count(agent.pid)
    bound = baseline + 64 + 24

    flood = subprocess.Popen(as_user(user_host.user, PY, "-c", FLOOD, str(host.socket), "300"),
                             env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert flood.stdout is not None and flood.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        assert fd_count(agent.pid) <= bound, f"{fd_count(agent.pid)} fds open in the agent (baseline {baseline})"
        t = time.monotonic()
        r = user_host.hook_as_user(host, "job-completed")  # a real hook (a forged one: the job still runs)
        took = time.monotonic() - t
        assert r.returncode == 0 and "runner-lifecycle: job-completed: job end noted" in r.stdout, r
        assert took < 1.0, f"the hook took {took:.2f} s"
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            assert fd_count(agent.pid) <= bound, f"{fd_count(agent.pid)} fds (baseline {baseline})"
            time.sleep(0.1)
        assert broker.outcome(job) is None
        assert not agent.records(action="stop-listener"), "SIGINT to a busy listener"
    finally:
        if flood.stdin:
            flood.stdin.close()
        try:
            flood.wait(timeout=10)
        except subprocess.TimeoutExpired:
            flood.kill()
            flood.wait()
    assert broker.wait_outcome(job, timeout=30) == "succeeded"
    agent.wait_record(action="stop-listener", timeout=10)
    assert [s["cancels_job"] for s in agent.records(action="stop-listener")] == [False]
    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")


LOOT = r"""
import errno, json, os, sys
out = {"self": dict(os.environ)}
agent = int(open(sys.argv[1]).read())
for what in ("environ", "mem"):
    try:
        open(f"/proc/{agent}/{what}", "rb").read(64)
        out[f"agent_{what}"] = "read"
    except OSError as e:
        out[f"agent_{what}"] = errno.errorcode[e.errno]
readable = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            readable[d] = open(f"/proc/{d}/environ", "rb").read().decode(errors="replace")
        except OSError:
            pass
out["readable"] = readable
pid, listener = os.getpid(), None
while pid > 1:
    if open(f"/proc/{pid}/comm").read().strip() == "Runner.Listener":
        listener = pid
        break
    pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
out["listener"] = listener
json.dump(out, open(sys.argv[2], "w"))
"""

CANARIES = {"AWS_SECRET_ACCESS_KEY": "canary-aws-secret-4f1e", "AWS_SESSION_TOKEN": "canary-aws-session-4f1e",
            "RUNNER_LIFECYCLE_GITHUB_TOKEN": "canary-rl-github-4f1e", "RUNNER_LIFECYCLE_X_SECRET": "canary-rl-x-4f1e"}


def test_attack5_the_job_finds_none_of_the_agents_secrets(user_host, broker, rl_bin):
    """Attack 5 (B5, B7): the job looks for the agent's secrets (AWS keys, RUNNER_LIFECYCLE_* settings an
    operator put in the unit's environment) in its own environment, in every /proc/<pid>/environ it
    can read (the listener's included), and in the agent's own /proc/<pid>/environ and mem.

    Before: the listener inherited the agent's whole environment (minus sd_notify variables), so every
    job had the AWS keys; and the agent ran as the job's user, so its environ and mem were readable.
    After: the job (here: the started hook's script, running in the job as the runner's user) finds
    no canary anywhere, and the agent's environ and mem give EACCES. Fails on 88933a8: the
    listener's environment (so the job's) holds every canary (`the job found canary-aws-secret-...`).
    """
    pid_file = user_host.base / "agent.pid"
    # Where the job leaves what it found: a directory of the job's user.
    loot_dir = user_host.base / "loot"
    loot_dir.mkdir()
    os.chown(loot_dir, user_host.uid, user_host.gid)
    loot = loot_dir / "loot.json"
    started = (f'"{rl_bin}" hook job-started\n'
               f"{PY} -c '{LOOT.replace(chr(39), chr(34))}' {pid_file} {loot} || true\n")
    host = user_host.make(started_hook=started)
    agent = host.start_serving(**CANARIES)
    pid_file.write_text(str(agent.pid))
    os.chmod(pid_file, 0o644)
    mine = Path(f"/proc/{agent.pid}/environ").read_bytes().decode()
    assert all(v in mine for v in CANARIES.values()), "the test has teeth: the agent holds the canaries"

    job = broker.assign_job(1.0, runner=host.runner.name)
    assert broker.wait_outcome(job, timeout=20) == "succeeded"
    assert loot.exists(), broker.job(job).hooks
    text = loot.read_text()
    found = json.loads(text)
    for v in CANARIES.values():
        assert v not in text, f"the job found {v}"
    assert found["agent_environ"] == "EACCES" and found["agent_mem"] == "EACCES", found
    assert found["listener"] and str(found["listener"]) in found["readable"], "the job reads the listener's environ"
    assert "RUNNER_LIFECYCLE_AGENT_SOCKET" in found["self"] and "AWS_SECRET_ACCESS_KEY" not in found["self"]

    # The same from a process of the runner's user outside the job.
    code = ("import errno,sys\ntry:\n open(sys.argv[1],'rb').read()\n print('read')\n"
            "except OSError as e:\n print(errno.errorcode[e.errno])")
    out = attack_py(user_host.user, code, f"/proc/{agent.pid}/environ")
    assert out.stdout.strip() == "EACCES", out
    assert stop_agent(agent) == 0


WRITE_ATTACK = r"""
import errno, json, os, sys
root = sys.argv[1]
cfg = os.path.join(root, "etc/runner-lifecycle/config.toml")
state = os.path.join(root, "var/lib/runner-lifecycle")
def attempt(f):
    try:
        f()
        return "done"
    except OSError as e:
        return errno.errorcode[e.errno]
res = {
    "append_config": attempt(lambda: open(cfg, "a").write("\n[drain]\nunprotect_delay = '24h'\n")),
    "new_config": attempt(lambda: open(os.path.join(root, "etc/runner-lifecycle/evil.toml"), "w")),
    "rename_config": attempt(lambda: os.rename(cfg, cfg + ".old")),
    "unlink_config": attempt(lambda: os.unlink(cfg)),
    "chmod_config": attempt(lambda: os.chmod(cfg, 0o666)),
    "state_create": attempt(lambda: open(os.path.join(state, "evil"), "w")),
    "state_list": attempt(lambda: os.listdir(state)),
    "unit": attempt(lambda: open(os.path.join(root, "etc/systemd/system/runner-lifecycle.service"), "a")),
    "hook_script": attempt(lambda: open(os.path.join(root, "usr/lib/runner-lifecycle/job-started.sh"), "a")),
}
print(json.dumps(res))
"""


def test_attack8_the_job_cannot_write_the_agents_configuration_or_state(user_host, rl_bin):
    """Attack 8: the job's user rewrites the agent's configuration (say `drain.unprotect_delay` or
    `runner.user`), the unit or the hook scripts, or plants files in the agent's state directory.

    Before (88933a8's `install`): the state directory /var/lib/runner-lifecycle was owned by the
    runner's user (0750), so the job could write there (and the agent, running as that user, could
    be made to read it). After: `install` makes the configuration directory and the state directory
    root-owned (0755 and 0750), the configuration file is root 0644: every write, rename, unlink and
    chmod is refused (EACCES / EPERM), the state directory cannot even be listed, and the agent reads
    the same configuration before and after. Fails on 88933a8: `install` makes the state directory
    the runner's user's (uid assertion on var/lib/runner-lifecycle).
    """
    name, uid, gid = user_host.user, user_host.uid, user_host.gid
    root = user_host.base / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/bash\n{name}:x:{uid}:{gid}::/nonexistent:/bin/sh\n")
    (root / "opt/actions-runner/bin").mkdir(parents=True)
    (root / "opt/actions-runner/bin/Runner.Listener").write_text("")
    out = subprocess.run([str(rl_bin), "install", "--root", str(root), "--user", name, "--binary",
                          "/usr/bin/runner-lifecycle"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out
    host = user_host.make()
    cfg_dir = root / "etc/runner-lifecycle"
    cfg_dir.mkdir(exist_ok=True)
    cfg = cfg_dir / "config.toml"
    cfg.write_text(f'[runner]\ndir = "{host.runner.path}"\nuser = "{name}"\n\n[drain]\nunprotect_delay = "30s"\n')
    os.chmod(cfg, 0o644)
    for path, mode in ((cfg_dir, 0o755), (cfg, 0o644), (root / "var/lib/runner-lifecycle", 0o750)):
        st = os.stat(path)
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == mode, (path, oct(st.st_mode), st.st_uid)

    check = [str(rl_bin), "agent", "--config-check", "--config", str(cfg)]
    before = subprocess.run(check, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
    assert before.returncode == 0 and "30s" in before.stdout, before
    out = attack_py(name, WRITE_ATTACK, str(root))
    assert out.returncode == 0, out
    res = json.loads(out.stdout)
    assert res == {"append_config": "EACCES", "new_config": "EACCES", "rename_config": "EACCES",
                   "unlink_config": "EACCES", "chmod_config": "EPERM", "state_create": "EACCES",
                   "state_list": "EACCES", "unit": "EACCES", "hook_script": "EACCES"}, res
    after = subprocess.run(check, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
    assert after.stdout == before.stdout and os.listdir(root / "var/lib/runner-lifecycle") == []
