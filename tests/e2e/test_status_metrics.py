"""`runner-lifecycle status` and the Prometheus endpoint against a real agent (issue 5).

Field names and metric names are the documented ones (docs/agent.md, "Status" and "Metrics")."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

from harness import stop_agent, wait_for

EXIT_CONFIG = 3
EXIT_NOT_RUNNING = 6
EXIT_NO_ANSWER = 7
#: HeartbeatTimeout (the emulator's test mode allows < 30 s): a heartbeat every second or so.
HOOK_TIMEOUT_S = 3


def status(host, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return host.status(*args, **env)


def status_json(host) -> dict:
    return host.status_json()


def lines(text: str) -> dict[str, str]:
    """The status text as {label: value} (labels are padded to 12 columns)."""
    out = {}
    for line in text.splitlines():
        out[line[:12].strip()] = line[13:]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int, method: str = "GET", path: str = "/metrics") -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def metrics(port: int) -> dict[str, float]:
    code, _, body = scrape(port)
    assert code == 200, body
    return samples(body)


def listening_tcp_ports(pid: int) -> set[int]:
    """Ports of the TCP sockets in LISTEN state that process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            f = row.split()
            if f[3] == "0A" and f[9] in inodes:
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def test_status_while_idle_during_a_job_and_during_a_drain(make_host, broker):
    host = make_host(hook_timeout=HOOK_TIMEOUT_S)
    agent = host.start_serving()
    listener_pid = agent.records(message="listener started")[0]["pid"]

    # Idle.
    r = status(host)
    assert r.returncode == 0, r
    idle = lines(r.stdout)
    assert idle["agent"].startswith(f"pid {agent.pid}, version "), r.stdout
    assert idle["instance"] == (f"{host.instance_id} in group {host.group} (us-east-1); "
                                "termination hook drain (heartbeat timeout 3.0s)"), r.stdout
    assert idle["lifecycle"] == "IMDS target InService; confirmed InService", r.stdout
    assert idle["listener"].startswith(f"running, pid {listener_pid}, up "), r.stdout
    assert idle["job"].startswith("none, idle for "), r.stdout
    assert idle["protection"] == "not protected", r.stdout
    assert idle["draining"] == "no"
    assert idle["hook"] == "no lifecycle action pending"
    assert idle["heartbeat"] == "none sent" and idle["last error"] == "none"
    assert idle["next"].startswith("idle: nothing scheduled"), r.stdout
    assert "t+" not in r.stdout, "core times never leak into the status"
    j = status_json(host)
    assert j["schema"] == 1 and j["agent_state"] == "running"
    assert (j["instance_id"], j["group"], j["listener_pid"]) == (host.instance_id, host.group, listener_pid)
    assert (j["job_alive"], j["protected"], j["draining"], j["metrics_listen"]) == (False, False, None, None)
    assert j["heartbeat_timeout_ms"] == HOOK_TIMEOUT_S * 1000
    # The same answer through an explicit --socket, from an environment that names no socket.
    env = {k: v for k, v in host.env.items() if k != "RUNNER_LIFECYCLE_AGENT_SOCKET"}
    r2 = subprocess.run([str(host.bin), "status", "--json", "--socket", str(host.socket)], env=env,
                        capture_output=True, text=True, timeout=20)
    assert r2.returncode == 0 and json.loads(r2.stdout)["instance_id"] == host.instance_id, r2

    # During a job.
    job = broker.assign_job(6.0, runner=host.runner.name)
    worker = broker.wait_worker_started(job).worker_pid
    wait_for(lambda: status_json(host)["protected"] is True, 5, "protection in the status")
    r = status(host)
    busy = lines(r.stdout)
    assert re.fullmatch(rf"running for [\d.]+m?s \(Runner\.Worker pid {worker}\)", busy["job"]), r.stdout
    assert busy["protection"] == "protected from scale-in", r.stdout
    assert busy["next"].startswith("job running (protected from scale-in)"), r.stdout
    j = status_json(host)
    assert j["job_alive"] is True and j["workers"] == [worker] and j["job_age_ms"] > 0 and j["idle_ms"] is None

    # During a drain: scale-in while the job runs.
    host.terminate()
    j = wait_for(lambda: (lambda s: s if s["last_heartbeat_ago_ms"] is not None else None)(status_json(host)),
                 10, "a heartbeat in the status")
    assert (j["draining"], j["hook_phase"]) == ("terminating", "pending"), j
    assert (j["target_state"], j["confirmed_state"]) == ("Terminated", "Terminating:Wait"), j
    assert 250_000 < j["global_deadline_in_ms"] <= 300_000, "100 x HeartbeatTimeout after the wait"
    assert j["next_step"].startswith(
        "waiting for the job to finish, then stop the listener and complete the lifecycle hook"), j
    # The core's plan, part by part: the listener's stop waits, the hook is heartbeated meanwhile.
    assert j["step"] == "wait-for-job", j
    hook = [p for p in j["plan"] if p["area"] == "hook"]
    assert hook and hook[0]["step"] == "heartbeat", j["plan"]
    r = status(host)
    drain = lines(r.stdout)
    assert drain["draining"] == "yes: the instance is terminating (scale-in)", r.stdout
    assert drain["lifecycle"] == "IMDS target Terminated; confirmed Terminating:Wait", r.stdout
    assert re.match(r"pending \(Terminating:Wait\); (next heartbeat in [\d.]+m?s|heartbeat in flight); "
                    r"global deadline in 4m\d\ds$", drain["hook"]), r.stdout
    assert re.fullmatch(r"last [\d.]+m?s ago", drain["heartbeat"]), r.stdout
    assert drain["next"].startswith("waiting for the job to finish"), r.stdout
    assert drain["job"].startswith("running for "), r.stdout

    # Drained: the hook is completed after the job.
    assert broker.wait_outcome(job, timeout=30) == "succeeded"
    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    j = wait_for(lambda: (lambda s: s if s["hook_phase"] == "completed" else None)(status_json(host)), 5,
                 "completed in the status")
    assert j["listener"] == "down" and j["job_alive"] is False and j["workers"] == []
    assert j["next_step"] == ("drained and the lifecycle hook completed: waiting for Auto Scaling to "
                              "terminate the instance"), j
    assert lines(status(host).stdout)["hook"] == "completed"
    assert stop_agent(agent) == 0


def test_status_without_an_agent_says_how_to_start_it(agent_bin, tmp_path):
    def run(sock: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(agent_bin), "status", "--socket", str(sock)], capture_output=True, text=True,
                              timeout=20, env={"PATH": os.environ.get("PATH", ""), "RUNNER_LIFECYCLE_CONFIG": "/dev/null"})

    missing = tmp_path / "agent.sock"
    r = run(missing)
    assert r.returncode == EXIT_NOT_RUNNING, r
    assert "the agent is not running" in r.stderr and str(missing) in r.stderr, r.stderr
    assert "systemctl start runner-lifecycle" in r.stderr and "systemctl status runner-lifecycle" in r.stderr
    assert r.stdout == "" and "panicked" not in r.stderr

    # A socket left behind by an agent that died.
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    r = run(stale)
    assert r.returncode == EXIT_NOT_RUNNING and "nothing listens" in r.stderr, r

    # Something answers, but not with a status.
    odd = tmp_path / "odd.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(odd))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(256)
            conn.sendall(b"error not an agent\n")

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    r = run(odd)
    t.join(5)
    server.close()
    assert r.returncode == EXIT_NO_ANSWER and "error not an agent" in r.stderr, r


def test_status_while_the_agent_discovers_its_instance(make_host):
    host = make_host()
    host.imds.set_unavailable(4, mode="refused")
    agent = host.start_agent()
    agent.wait_record(message="hook socket ready", timeout=10)
    r = status(host)
    assert r.returncode == 0, r
    text = lines(r.stdout)
    assert text["agent"].endswith("still discovering its instance"), r.stdout
    assert text["next"].startswith("discovering the instance"), r.stdout
    j = status_json(host)
    assert j["agent_state"] == "discovering" and j["pid"] == agent.pid
    agent.wait_record(message="discovered", timeout=30)
    assert status_json(host)["agent_state"] == "running"
    assert stop_agent(agent) == 0


def test_metrics_are_off_by_default_and_only_loopback_is_accepted(make_host, tmp_path):
    port_free = True
    try:
        with socket.create_connection(("127.0.0.1", 9464), timeout=1):
            port_free = False
    except OSError:
        pass
    host = make_host()
    agent = host.start_serving()
    assert listening_tcp_ports(agent.pid) == set(), "the agent listens on no TCP port by default"
    assert not agent.records(message="metrics endpoint ready")
    assert status_json(host)["metrics_listen"] is None
    if port_free:
        try:
            scrape(9464)
            raise AssertionError("something serves 127.0.0.1:9464")
        except ConnectionRefusedError:
            pass
    assert stop_agent(agent) == 0

    def check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(host.bin), "agent", "--config-check", *args], env={**host.env, **env},
                              capture_output=True, text=True, timeout=20)

    for r in (check("--agent-metrics-listen", "0.0.0.0:9464"),
              check(RUNNER_LIFECYCLE_AGENT_METRICS_LISTEN="10.0.0.5:9464"),
              check("--agent-metrics-listen", "[::]:9464")):
        assert r.returncode == EXIT_CONFIG, r
        assert "agent.metrics_listen" in r.stderr and "not a loopback address" in r.stderr, r.stderr
    cfg = tmp_path / "config.toml"
    cfg.write_text('[agent]\nmetrics_listen = "192.0.2.1:9464"\n')
    r = check("--config", str(cfg))
    assert r.returncode == EXIT_CONFIG and str(cfg) in r.stderr and "192.0.2.1:9464" in r.stderr, r.stderr
    r = check("--agent-metrics-listen", "9464")
    assert r.returncode == EXIT_CONFIG and "IP:port" in r.stderr, r.stderr
    r = check(RUNNER_LIFECYCLE_AGENT_METRICS_LISTEN="127.0.0.1:9464")
    assert r.returncode == 0, r
    assert 'metrics_listen = "127.0.0.1:9464"  # env RUNNER_LIFECYCLE_AGENT_METRICS_LISTEN' in r.stdout, r.stdout
    assert 'metrics_listen = "none"  # default' in check().stdout


def test_metrics_count_a_job_and_an_idle_scale_in(make_host, broker):
    port = free_port()
    host = make_host(agent_metrics_listen=f"127.0.0.1:{port}")
    agent = host.start_serving()
    assert agent.records(message="metrics endpoint ready")[0]["listen"] == f"127.0.0.1:{port}"
    assert port in listening_tcp_ports(agent.pid)
    assert status_json(host)["metrics_listen"] == f"127.0.0.1:{port}"
    assert lines(status(host).stdout)["agent"].endswith(f"; metrics on http://127.0.0.1:{port}/metrics")

    code, headers, body = scrape(port)
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    assert "# TYPE runner_lifecycle_termination_detection_seconds histogram" in body
    m = samples(body)
    assert m["runner_lifecycle_jobs_assigned_total"] == 0
    assert m['runner_lifecycle_listener_starts_total{reason="serving"}'] == 1
    assert m["runner_lifecycle_job_alive"] == 0 and m["runner_lifecycle_protected"] == 0
    assert m['runner_lifecycle_next_step{step="idle"}'] == 1 and m['runner_lifecycle_next_step{step="job-running"}'] == 0
    assert scrape(port, path="/")[0] == 404
    assert scrape(port, method="POST")[0] == 405
    assert scrape(port, method="HEAD")[0] == 200

    job = broker.assign_job(1.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    wait_for(lambda: metrics(port)["runner_lifecycle_job_alive"] == 1, 3, "job_alive gauge")
    assert metrics(port)['runner_lifecycle_next_step{step="job-running"}'] == 1
    assert broker.wait_outcome(job, timeout=20) == "succeeded"
    wait_for(lambda: host.protected() is False, 5, "protection cleared after the job")
    m = wait_for(lambda: (lambda s: s if s.get('runner_lifecycle_protection_calls_total{action="unprotect",'
                                               'result="ok"}') == 1 else None)(metrics(port)),
                 3, "the unprotect call counted")
    assert m["runner_lifecycle_jobs_assigned_total"] == 1 and m["runner_lifecycle_jobs_ended_total"] == 1
    assert m['runner_lifecycle_protection_calls_total{action="protect",result="ok"}'] == 1
    assert m['runner_lifecycle_api_calls_total{call="set-protection"}'] == len(host.calls("SetInstanceProtection"))
    assert m["runner_lifecycle_job_alive"] == 0 and m["runner_lifecycle_protected"] == 0

    # Idle scale-in: detected through IMDS, the listener signalled, the hook completed.
    host.asg().set_desired_capacity(AutoScalingGroupName=host.group, DesiredCapacity=0)
    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    m = wait_for(lambda: (lambda s: s if s['runner_lifecycle_hooks_completed_total{already_done="false"}'] == 1
                          else None)(metrics(port)), 3, "the completion counted")
    assert m['runner_lifecycle_termination_detected_total{via="imds"}'] == 1
    assert m['runner_lifecycle_drains_started_total{cause="terminating"}'] == 1
    assert m["runner_lifecycle_termination_detection_seconds_count"] == 1
    # From the IMDS read that saw Terminated to the SIGINT: the agent's own reaction, which the core's
    # millisecond clock can record as 0 (CI saw exactly that); it must land in a bucket, not only +Inf.
    assert 0 <= m["runner_lifecycle_termination_detection_seconds_sum"] < 1.5, m
    assert m['runner_lifecycle_termination_detection_seconds_bucket{le="2"}'] == 1
    assert m["runner_lifecycle_drain_seconds_count"] == 1
    assert 0 < m["runner_lifecycle_drain_seconds_sum"] < 5, m
    assert m["runner_lifecycle_heartbeats_sent_total"] == 0, "no heartbeat without a job"
    assert m['runner_lifecycle_api_calls_total{call="complete"}'] == 1
    assert m["runner_lifecycle_draining"] == 1 and m["runner_lifecycle_hook_pending"] == 0
    assert not any(k.startswith("runner_lifecycle_api_errors_total") for k in m), m
    assert all(v == 0 for k, v in m.items() if k.startswith("runner_lifecycle_jobs_lost_total")), m
    assert stop_agent(agent) == 0


def test_metrics_count_heartbeats_and_api_errors_of_a_busy_drain(make_host, broker, aws):
    port = free_port()
    host = make_host(hook_timeout=HOOK_TIMEOUT_S, agent_metrics_listen=f"127.0.0.1:{port}")
    agent = host.start_serving()
    iid = host.instance_id
    aws.inject_fault("SetInstanceProtection", count=1, kind="throttle", instance_id=iid)
    aws.inject_fault("RecordLifecycleActionHeartbeat", count=1, kind="throttle", instance_id=iid)
    job = broker.assign_job(5.0, runner=host.runner.name)
    broker.wait_worker_started(job)
    wait_for(lambda: host.protected() is True, 5, "protection after a throttled first try")
    host.terminate()
    assert broker.wait_outcome(job, timeout=30) == "succeeded"
    wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 10, "CompleteLifecycleAction")
    m = wait_for(lambda: (lambda s: s if s['runner_lifecycle_hooks_completed_total{already_done="false"}'] == 1
                          else None)(metrics(port)), 3, "the completion counted")

    beats = host.calls("RecordLifecycleActionHeartbeat")
    assert len(beats) >= 2, beats
    assert m["runner_lifecycle_heartbeats_sent_total"] == len(beats)
    assert m["runner_lifecycle_heartbeats_failed_total"] == 1
    assert m['runner_lifecycle_api_errors_total{call="heartbeat",kind="throttled"}'] == 1
    assert m['runner_lifecycle_api_errors_total{call="set-protection",kind="throttled"}'] == 1
    assert m['runner_lifecycle_protection_calls_total{action="protect",result="throttled"}'] == 1
    assert m['runner_lifecycle_protection_calls_total{action="protect",result="ok"}'] == 1
    assert m['runner_lifecycle_termination_detected_total{via="imds"}'] == 1
    # Busy at detection: the listener's stop waited for the job, which is the drain, not detection.
    assert m["runner_lifecycle_termination_detection_seconds_count"] == 0
    assert m["runner_lifecycle_drain_seconds_count"] == 1
    assert m["runner_lifecycle_drain_seconds_sum"] >= 2.0, "the drain lasted as long as the rest of the job"
    assert m["runner_lifecycle_jobs_assigned_total"] == 1 and m["runner_lifecycle_jobs_ended_total"] == 1
    assert all(v == 0 for k, v in m.items() if k.startswith("runner_lifecycle_jobs_lost_total")), m
    assert m["runner_lifecycle_hook_pending"] == 0 and m["runner_lifecycle_job_alive"] == 0
    assert stop_agent(agent) == 0
