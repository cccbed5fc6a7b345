"""The job is untrusted code running as the runner's user (docs/agent.md, "The job is untrusted"):
what it can read of the listener, what it can do to the hook socket, and what its hook reports
are worth."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from harness import fd_count, stop_agent, wait_for
from support.fake_runner.common import load_env_file


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    out = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def idle_connection(path: Path) -> socket.socket:
    """A connection to the hook socket that never sends a request (refused ones count too)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(str(path))
    except (BlockingIOError, ConnectionRefusedError, OSError):
        pass
    return s


def test_the_listener_gets_none_of_the_agents_environment(make_host, broker):
    host = make_host()
    # The runner's .env as an installer writes it: the hooks, nothing of the agent's.
    hooks_only = {k: v for k, v in load_env_file(host.runner.path).items() if k.startswith("ACTIONS_RUNNER_HOOK_")}
    host.runner.set_env(hooks_only, replace=True)
    host.runner.set_env({"RUNNER_DOT_ENV_MARKER": "from-dot-env"})
    agent = host.start_serving(AWS_SECRET_ACCESS_KEY="canary", RUNNER_LIFECYCLE_X="canary",
                               GITHUB_TOKEN="canary", LC_ALL="C")
    pid = agent.wait_record(message="listener started")["pid"]
    env = environ(pid)
    assert "canary" not in env.values(), sorted(env)
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "RUNNER_LIFECYCLE_X",
                 "GITHUB_TOKEN", "RUNNER_LIFECYCLE_CONFIG", "RUNNER_LIFECYCLE_AWS_IMDS_ENDPOINT"):
        assert name not in env, f"{name} leaked into the listener: {sorted(env)}"
    # What it does get: the allowlist, the runner's .env, and where the agent is.
    assert env["PATH"] and env["LC_ALL"] == "C"
    assert env["RUNNER_DOT_ENV_MARKER"] == "from-dot-env"
    assert env["ACTIONS_RUNNER_HOOK_JOB_STARTED"].endswith("job-started.sh")
    assert env["RUNNER_LIFECYCLE_AGENT_SOCKET"] == str(host.socket)
    assert env["RUNNER_LIFECYCLE_AWS_INSTANCE_ID"] == host.instance_id
    # The job's hooks still reach the agent.
    job = broker.assign_job(1.0, runner=host.runner.name)
    assert broker.wait_outcome(job, timeout=20) == "succeeded"
    hooks = broker.job(job).hooks
    assert [(h.stage, h.exit_code) for h in hooks] == [("started", 0), ("completed", 0)]
    assert "directly" not in hooks[0].output, hooks[0].output
    assert stop_agent(agent) == 0


def test_a_forged_job_started_report_is_dropped(make_host, broker):
    host = make_host()
    agent = host.start_serving()
    r = host.hook("job-started")  # no job: no Runner.Worker under the listener
    assert r.returncode == 0 and "directly" not in r.stdout, r
    wait_for(lambda: host.protected() is True, 3.0, "the hint protects at once")
    agent.wait_record(notice="hook-claim-dropped", timeout=5)
    # Idle for longer than drain.unprotect_delay (1 s) before the report: cleared right away.
    wait_for(lambda: host.protected() is False, 3.0, "protection cleared after the grace")
    for _ in range(5):
        host.hook("job-started")
    time.sleep(1.5)
    sets = [c.protected for c in host.calls("SetInstanceProtection", ok=True)]
    assert sets == [True, False], f"later forged reports are ignored until a worker is seen: {sets}"
    # A real job afterwards is protected as always.
    job = broker.assign_job(2.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    wait_for(lambda: host.protected() is True, 3.0, "protection for the real job")
    assert broker.wait_outcome(job, timeout=20) == "succeeded"
    assert stop_agent(agent) == 0


def test_idle_connections_neither_lock_out_hooks_nor_exhaust_fds_nor_stop_a_busy_listener(make_host, broker):
    host = make_host(hook_timeout=30)
    agent = host.start_serving()
    job = broker.assign_job(8.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    host.terminate()
    agent.wait_record(notice="state-confirmed", state="Terminating:Wait", timeout=10)
    # Measured with the worker watch and the API connections open; the bound below leaves room
    # for a few more of those (a heartbeat's connection, a watcher re-list), not for the flood.
    baseline = fd_count(agent.pid)
    bound = baseline + 64 + 24

    held: list[socket.socket] = []
    try:
        for _ in range(500):
            held.append(idle_connection(host.socket))
        time.sleep(0.3)
        fds = fd_count(agent.pid)
        assert fds <= bound, f"{fds} fds open in the agent (baseline {baseline})"
        t = time.monotonic()
        r = host.hook("job-completed")  # a real hook request (the job is still running)
        took = time.monotonic() - t
        assert r.returncode == 0 and "runner-lifecycle: job-completed: job end noted" in r.stdout, r
        assert took < 1.0, f"the hook took {took:.2f} s"
        # Keep flooding (reconnecting) while the job runs: the agent keeps watching /proc.
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for i in range(0, len(held), 50):
                held[i].close()
                held[i] = idle_connection(host.socket)
            assert fd_count(agent.pid) <= bound, f"{fd_count(agent.pid)} fds (baseline {baseline})"
            time.sleep(0.05)
        assert broker.outcome(job) is None
        assert not agent.records(action="stop-listener"), "SIGINT to a busy listener"
    finally:
        for s in held:
            s.close()
    assert broker.wait_outcome(job, timeout=30) == "succeeded"
    agent.wait_record(action="stop-listener", timeout=10)
    stops = agent.records(action="stop-listener")
    assert [s["cancels_job"] for s in stops] == [False]
    assert stops[0]["timestamp"] >= agent.wait_record(message="Runner.Worker exited: job over")["timestamp"]
    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")


def test_an_impostor_on_the_socket_path_is_replaced(make_host, broker):
    host = make_host()
    run = host.socket.parent
    run.mkdir(mode=0o755)
    impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    impostor.bind(str(host.socket))
    impostor.listen(8)
    os.lchown(host.socket, 65534, 65534)  # another user's live socket
    try:
        agent = host.start_serving()
        agent.wait_record(message="the hook socket's path is occupied by something the agent's user does not own; "
                                  "replacing it")
        assert agent.running()
        r = host.hook("job-started")
        assert r.returncode == 0 and "runner-lifecycle: job-started:" in r.stdout and "directly" not in r.stdout, r
        assert stop_agent(agent) == 0
    finally:
        impostor.close()


def test_a_look_alike_listener_is_not_adopted(make_host, broker, tmp_path):
    """The job can start a process called Runner.Listener with the runner's argv; after an agent
    restart it must not be adopted (nor later signalled as the listener)."""
    import subprocess
    import sys

    host = make_host()
    fake_dir = tmp_path / "job-workspace" / "bin"
    fake_dir.mkdir(parents=True)
    fake = fake_dir / "Runner.Listener"
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    fake.chmod(0o755)
    # Same comm (the script's name) and an argv that names the real listener.
    look_alike = subprocess.Popen([str(fake), str(host.runner.listener), "run", "--startuptype", "service"],
                                  start_new_session=True)
    try:
        agent = host.start_serving()
        rejected = agent.wait_record(message="a process that looks like the runner's listener is not adopted",
                                     pid=look_alike.pid, timeout=10)
        assert "runs" in rejected["why"], rejected
        assert not agent.records(message="adopted a running listener from a previous agent")
        started = agent.wait_record(message="listener started")
        assert started["pid"] != look_alike.pid
        assert stop_agent(agent) == 0
        assert look_alike.poll() is None, "the look-alike was never signalled"
    finally:
        look_alike.kill()
        look_alike.wait()
