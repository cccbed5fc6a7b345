"""Bad input: clear messages, documented exit codes, and a running agent that keeps running
(issue 3, test 7). Exit codes are listed in docs/agent.md."""

from __future__ import annotations

import subprocess
import time

from harness import ask_socket, stop_agent, wait_for

EXIT_CONFIG = 3
EXIT_ALREADY_RUNNING = 5


def run_agent(host, *args, timeout=20, **env):
    return subprocess.run([str(host.bin), "agent", *args], env={**host.env, **env}, capture_output=True,
                          text=True, timeout=timeout)


def test_malformed_config_file(make_host, tmp_path):
    host = make_host()
    bad = tmp_path / "bad.toml"
    bad.write_text('[runner]\ndir = "/opt/runner\nmode = "persistent"\n')
    r = run_agent(host, "--config", str(bad))
    assert r.returncode == EXIT_CONFIG, r
    assert "is not valid TOML" in r.stderr and str(bad) in r.stderr and "line 2" in r.stderr, r.stderr
    assert "panicked" not in r.stderr


def test_unknown_keys_are_refused_by_name(make_host, tmp_path):
    host = make_host()
    cfg = tmp_path / "typo.toml"
    cfg.write_text(f'[runner]\ndir = "{host.runner.path}"\nstop_grace_seconds = "5s"\n')
    r = run_agent(host, "--config", str(cfg))
    assert r.returncode == EXIT_CONFIG
    assert "unknown key `runner.stop_grace_seconds`" in r.stderr and "stop_grace" in r.stderr, r.stderr
    cfg.write_text("[agnet]\nsocket = \"/tmp/x.sock\"\n")
    r = run_agent(host, "--config", str(cfg))
    assert r.returncode == EXIT_CONFIG and "[agnet]" in r.stderr, r.stderr


def test_bad_values_and_missing_runner_dir(make_host, tmp_path):
    host = make_host()
    r = run_agent(host, RUNNER_LIFECYCLE_RUNNER_DIR=str(tmp_path / "no-runner-here"))
    assert r.returncode == EXIT_CONFIG
    assert "runner.dir" in r.stderr and "does not exist" in r.stderr, r.stderr

    r = run_agent(host, RUNNER_LIFECYCLE_AWS_IMDS_POLL="5")
    assert r.returncode == EXIT_CONFIG
    assert "RUNNER_LIFECYCLE_AWS_IMDS_POLL" in r.stderr and "no unit" in r.stderr, r.stderr

    r = run_agent(host, "--runner-mode", "sometimes")
    assert r.returncode == EXIT_CONFIG and "--runner-mode" in r.stderr, r.stderr

    missing = tmp_path / "absent.toml"
    r = run_agent(host, "--config", str(missing))
    assert r.returncode == EXIT_CONFIG and str(missing) in r.stderr, r.stderr


def test_config_check_prints_resolved_settings_and_their_sources(make_host, tmp_path):
    host = make_host()
    cfg = tmp_path / "ok.toml"
    cfg.write_text('[runner]\nstop_grace = "7s"\n[drain]\nstop_deadline = "2h"\n')
    host.aws.clear_calls()
    r = run_agent(host, "--config", str(cfg), "--config-check", "--runner-stop-grace", "9s")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert 'stop_grace = "9s"  # flag --runner-stop-grace' in out, out
    assert f'dir = "{host.runner.path}"  # env RUNNER_LIFECYCLE_RUNNER_DIR' in out, out
    assert f'stop_deadline = "2h"  # file {cfg}' in out, out
    assert 'unprotect_delay = "1s"  # env RUNNER_LIFECYCLE_DRAIN_UNPROTECT_DELAY' in out, out
    assert "# group: not set (found with DescribeAutoScalingInstances at start)" in out, out
    # --config-check contacts nothing: no Auto Scaling call was made.
    assert not host.aws.calls()


def test_garbage_on_the_hook_socket_gets_an_error_and_the_agent_keeps_running(make_host, broker):
    host = make_host()
    agent = host.start_serving()
    for payload in (b"hello\n", b"\x00\xff\xfe\n", b"job-started please\n", b"x" * 4000, b"\n"):
        reply = ask_socket(host.socket, payload)
        assert reply.startswith("error "), (payload[:20], reply)
        assert "job-started" in reply or "longer than" in reply, reply
    assert agent.running()
    status = ask_socket(host.socket, b"status\n")
    assert status.startswith("ok {") and f'"instance_id":"{host.instance_id}"' in status, status
    # Still fully working: a job runs and is protected.
    job = broker.assign_job(1.0, runner=host.runner.name)
    assert broker.wait_outcome(job, timeout=20) == "succeeded"
    assert host.calls("SetInstanceProtection", ok=True)
    assert stop_agent(agent) == 0


def test_a_second_agent_refuses_to_start(make_host):
    host = make_host()
    agent = host.start_serving()
    r = run_agent(host)
    assert r.returncode == EXIT_ALREADY_RUNNING, r
    assert "already listening" in r.stderr, r.stderr
    assert agent.running()
    assert stop_agent(agent) == 0


def test_hooks_without_an_agent_say_so_at_once_and_call_nothing(make_host, aws):
    """The hook runs as the job's user, which the IMDS fence keeps away from the instance role: with
    no agent it makes no AWS call and reads no IMDS, prints one line and exits 0 at once (the
    agent's /proc watch sees the worker and protects the host itself)."""
    host = make_host()
    for event in ("job-started", "job-completed"):
        started = time.monotonic()
        r = host.hook(event)
        elapsed = time.monotonic() - started
        assert r.returncode == 0, r
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"runner-lifecycle: {event}: agent unreachable at "), r
        assert "not reported" in lines[0] and "Runner.Worker in /proc" in lines[0], r
        assert elapsed < 2.0, f"{event} hook took {elapsed:.2f} s without an agent"
    assert host.calls("SetInstanceProtection") == []
    assert host.imds.requests == [], f"the hook asked IMDS: {host.imds.requests}"
    assert not host.protected()

    for argv in (["hook", "job-exploded"], ["hook"]):
        r = subprocess.run([str(host.bin), *argv], env=host.env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "unknown hook" in r.stdout, r


def test_hook_with_a_broken_config_file_still_reaches_the_agent(make_host, broker, tmp_path):
    host = make_host()
    agent = host.start_serving()
    bad = tmp_path / "broken.toml"
    bad.write_text("[[[")
    r = host.hook("job-started", RUNNER_LIFECYCLE_CONFIG=str(bad))
    assert r.returncode == 0
    assert "config ignored" in r.stdout and "runner-lifecycle: job-started:" in r.stdout, r.stdout
    wait_for(lambda: host.protected() is True, 5, "protection through the agent")
    host.hook("job-completed")
    assert stop_agent(agent) == 0
