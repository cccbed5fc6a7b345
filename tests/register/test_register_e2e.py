"""`runner-lifecycle register` end to end: the real binary, the moto-based emulator (Auto Scaling,
Secrets Manager, SSM) and the stand-in runner whose config.sh records its argv and environment.

The token must never be on any process's argv (world-readable in /proc/<pid>/cmdline), in the
binary's output or in an error text; it reaches config.sh as ACTIONS_RUNNER_INPUT_TOKEN
(actions/runner src/Runner.Listener/CommandSettings.cs)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support import moto_extras
from support.fake_runner import Broker, FakeRunnerDir, install_fake_runner

TOKEN = "AABBCCDDEEFF0011223344556677X"
URL = "https://github.com/acme"


class SlowBroker(Broker):
    """Takes a second to register, so config.sh is observably running meanwhile."""

    def _register(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return super()._register(*args, **kwargs)


@pytest.fixture
def broker_t() -> Iterator[Broker]:
    b = SlowBroker(registration_token=TOKEN).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def runner(tmp_path: Path, broker_t: Broker) -> FakeRunnerDir:
    return install_fake_runner(tmp_path / "actions-runner", broker_t.url, name="unused", configured=False)


@pytest.fixture
def host(aws_x: Any) -> str:
    [instance_id] = aws_x.create_group(size=1, hook_timeout=None)
    return instance_id


def secret_name(instance_id: str) -> str:
    return f"runner-lifecycle/runners/{instance_id}"


def put_token(aws: Any, instance_id: str, token: str = TOKEN, expires_at: str = "2099-01-01T00:00:00Z") -> str:
    name = secret_name(instance_id)
    aws.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps({"token": token, "expires_at": expires_at}))
    return name


def secret_exists(aws: Any, name: str) -> bool:
    names = [s["Name"] for s in aws.client("secretsmanager").list_secrets()["SecretList"]]
    return name in names


@pytest.fixture
def env(aws_env: Any) -> dict[str, str]:
    # The fake config.sh refuses root like upstream's unless RUNNER_ALLOW_RUNASROOT is set.
    return aws_env(RUNNER_ALLOW_RUNASROOT="1")


def register(run_bin: Any, env: dict[str, str], runner: FakeRunnerDir, instance_id: str, *extra: str) -> Any:
    return run_bin(["register", "--runner-dir", os.fspath(runner), "--url", URL, "--instance-id", instance_id,
                    "--labels", "gpu", *extra], env, timeout=60)


class CmdlineWatch:
    """Reads every /proc/<pid>/cmdline every few milliseconds while it runs."""

    def __init__(self, needle: str) -> None:
        self.needle = needle.encode()
        self.leaks: list[str] = []
        self.seen_config: set[int] = set()
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CmdlineWatch":
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if self.needle in cmd:
                    self.leaks.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
                if b"config.sh" in cmd or b"Runner.Listener\0configure" in cmd:
                    self.seen_config.add(int(pid))
            self.scans += 1
            time.sleep(0.005)


def test_registers_with_the_token_never_on_argv_then_deletes_the_secret(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                                         runner: FakeRunnerDir, host: str,
                                                                         broker_t: Broker) -> None:
    name = put_token(aws_x, host)
    with CmdlineWatch(TOKEN) as watch:
        r = register(run_bin, env, runner, host)
    assert r.returncode == 0, r.stderr
    assert watch.seen_config, "the watch never saw config.sh running: it proves nothing"
    assert watch.scans > 20
    assert watch.leaks == []
    assert TOKEN not in r.stdout + r.stderr
    # config.sh got the token through its environment only, and every other option on argv.
    [call] = runner.config_calls()
    assert call["env"].get("ACTIONS_RUNNER_INPUT_TOKEN") == TOKEN
    assert TOKEN not in " ".join(call["argv"])
    argv = call["argv"]
    assert argv[argv.index("--labels") + 1] == f"gpu,{host},asg-runners"
    assert argv[argv.index("--name") + 1] == host and "--unattended" in argv and "--replace" in argv
    # Registered with GitHub (the broker), configured locally, and the token is gone for good.
    assert broker_t.runners()[host]["labels"][-3:] == ["gpu", host, "asg-runners"]
    assert runner.configured
    assert not secret_exists(aws_x, name)
    assert "registered" in r.stdout and "deleted" in r.stdout


def test_an_already_configured_runner_is_left_alone(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                    tmp_path: Path, broker_t: Broker, host: str) -> None:
    runner = install_fake_runner(tmp_path / "configured", broker_t.url, name=host, configured=True)
    name = put_token(aws_x, host)  # a leftover from an earlier run that died before deleting it
    r = register(run_bin, env, runner, host)
    assert r.returncode == 0, r.stderr
    assert "already configured" in r.stdout
    assert runner.config_calls() == []
    assert not secret_exists(aws_x, name)


def test_a_half_configured_runner_is_repaired(aws_x: Any, env: dict[str, str], run_bin: Any, runner: FakeRunnerDir,
                                              host: str) -> None:
    (runner.path / ".runner").write_text("\ufeff{}")  # .credentials missing: an interrupted configure
    put_token(aws_x, host)
    r = register(run_bin, env, runner, host)
    assert r.returncode == 0, r.stderr
    calls = [c["argv"] for c in runner.config_calls()]
    assert calls[0] == ["remove", "--local"] and "--url" in calls[1]
    assert "half-configured" in r.stdout + r.stderr
    assert (runner.path / ".credentials").exists()


def test_a_missing_secret_has_its_own_exit_code(aws_x: Any, env: dict[str, str], run_bin: Any, runner: FakeRunnerDir,
                                                host: str) -> None:
    r = register(run_bin, env, runner, host)
    assert r.returncode == 20, r.stderr
    assert secret_name(host) in r.stderr and runner.config_calls() == []


def test_a_rejected_token_is_reported_masked(aws_x: Any, env: dict[str, str], run_bin: Any, runner: FakeRunnerDir,
                                             host: str) -> None:
    wrong = "ZZWRONGTOKEN00000000000000001"
    name = put_token(aws_x, host, token=wrong)
    r = register(run_bin, env, runner, host)
    assert r.returncode == 21, r.stderr
    assert "rejected" in r.stderr and wrong not in r.stdout + r.stderr
    # Nothing registered, and the token (read once) does not outlive the run.
    assert not secret_exists(aws_x, name)


def test_an_expired_token_is_refused_before_config_sh(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                      runner: FakeRunnerDir, host: str) -> None:
    name = put_token(aws_x, host, expires_at="2020-01-22T12:13:35.123-08:00")
    r = register(run_bin, env, runner, host)
    assert r.returncode == 21 and "expired" in r.stderr
    assert runner.config_calls() == [] and TOKEN not in r.stderr
    assert not secret_exists(aws_x, name)


def test_a_failing_config_script_shows_its_output_masked(aws_x: Any, aws_env: Any, run_bin: Any,
                                                         runner: FakeRunnerDir, host: str) -> None:
    name = put_token(aws_x, host)
    if os.getuid() == 0:
        # As root without RUNNER_ALLOW_RUNASROOT, config.sh refuses (upstream's first check).
        r = register(run_bin, aws_env(), runner, host)
        expected = "Must not run with sudo"
    else:
        (runner.path / "bin" / "Runner.Listener").write_text("#!/bin/sh\necho \"boom $ACTIONS_RUNNER_INPUT_TOKEN\"\nexit 3\n")
        r = register(run_bin, aws_env(), runner, host)
        expected = "boom ***"
    assert r.returncode == 22, r.stderr
    assert expected in r.stderr and TOKEN not in r.stderr
    # config.sh failed after the token was read: the secret is gone all the same.
    assert not secret_exists(aws_x, name)
    assert "deleted anyway" in r.stderr


def test_config_sh_failing_then_the_delete_denied_is_loud(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                           runner: FakeRunnerDir, host: str) -> None:
    name = put_token(aws_x, host)
    (runner.path / "bin" / "Runner.Listener").write_text("#!/bin/sh\necho 'Http response code: InternalServerError'\nexit 1\n")
    moto_extras.deny_secret_deletes([name])
    r = register(run_bin, env, runner, host)
    assert r.returncode == 23, r.stderr
    assert "REGISTRATION FAILED, AND THE TOKEN'S SECRET COULD NOT BE DELETED" in r.stderr
    assert "config.sh failed" in r.stderr and "AccessDenied" in r.stderr and TOKEN not in r.stderr
    assert secret_exists(aws_x, name) and not runner.configured


def test_a_malformed_secret_is_deleted_too(aws_x: Any, env: dict[str, str], run_bin: Any, runner: FakeRunnerDir,
                                           host: str) -> None:
    name = secret_name(host)
    aws_x.client("secretsmanager").create_secret(Name=name, SecretString='{"not_a_token": 1}')
    r = register(run_bin, env, runner, host)
    assert r.returncode == 3 and "no `token`" in r.stderr, r.stderr
    assert not secret_exists(aws_x, name) and runner.config_calls() == []


def test_config_output_echoing_the_token_is_masked(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                   runner: FakeRunnerDir, host: str) -> None:
    put_token(aws_x, host)
    listener = runner.path / "bin" / "Runner.Listener"
    original = listener.read_text()
    # A listener that prints the token it was given and fails (what a debug build might do).
    listener.write_text("#!/bin/sh\nif [ \"$1\" = configure ]; then echo \"token=$ACTIONS_RUNNER_INPUT_TOKEN\" >&2; exit 1; fi\n" + original.split("\n", 1)[1])
    name = secret_name(host)
    r = register(run_bin, env, runner, host)
    assert r.returncode == 22, r.stderr
    assert "token=***" in r.stderr and TOKEN not in r.stderr
    assert not secret_exists(aws_x, name)


def test_access_denied_on_delete_is_loud_and_keeps_the_registration(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                                    runner: FakeRunnerDir, host: str,
                                                                    broker_t: Broker) -> None:
    name = put_token(aws_x, host)
    moto_extras.deny_secret_deletes([name])
    r = register(run_bin, env, runner, host)
    assert r.returncode == 23, r.stderr
    assert "REGISTERED, BUT" in r.stderr and "AccessDenied" in r.stderr and TOKEN not in r.stderr
    assert runner.configured and host in broker_t.runners()
    assert secret_exists(aws_x, name)


def test_the_token_can_come_from_ssm(aws_x: Any, env: dict[str, str], run_bin: Any, runner: FakeRunnerDir,
                                     host: str) -> None:
    ssm = aws_x.client("ssm")
    param = f"/runner-lifecycle/runners/{host}"
    ssm.put_parameter(Name=param, Value=TOKEN, Type="SecureString")
    r = register(run_bin, env, runner, host, "--token-from", "ssm")
    assert r.returncode == 0, r.stderr
    assert runner.configured and TOKEN not in r.stdout + r.stderr
    assert ssm.get_parameters(Names=[param])["InvalidParameters"] == [param]


def test_bad_input_is_refused_clearly(aws_x: Any, env: dict[str, str], run_bin: Any, tmp_path: Path, host: str) -> None:
    r = register(run_bin, env, install_fake_runner(tmp_path / "x", "http://127.0.0.1:9", configured=False), host,
                 "--name-template", "no-placeholder")
    assert r.returncode == 3 and "{instance_id}" in r.stderr
    missing = run_bin(["register", "--runner-dir", str(tmp_path / "nowhere"), "--url", URL, "--instance-id", host], env)
    assert missing.returncode == 3 and "no config.sh" in missing.stderr
    bad_url = run_bin(["register", "--runner-dir", str(tmp_path / "x"), "--url", "github.com/acme",
                       "--instance-id", host], env)
    assert bad_url.returncode == 3 and "runner URL" in bad_url.stderr
    not_id = run_bin(["register", "--runner-dir", str(tmp_path / "x"), "--url", URL, "--instance-id", "host-1"], env)
    assert not_id.returncode == 1 and "not an instance id" in not_id.stderr


def test_a_hung_config_script_is_killed_with_its_children(aws_x: Any, env: dict[str, str], run_bin: Any,
                                                          runner: FakeRunnerDir, host: str) -> None:
    put_token(aws_x, host)
    marker = f"hung-{host}"
    # A listener that never answers, with a child of its own (marked in its argv).
    (runner.path / "bin" / "Runner.Listener").write_text(f"#!/bin/sh\nsh -c 'sleep 300; true' {marker} &\nwait\n")
    started = time.monotonic()
    r = register(run_bin, env, runner, host, "--config-timeout", "1")
    assert r.returncode == 22 and "did not finish within 1 s" in r.stderr, r.stderr
    assert not secret_exists(aws_x, secret_name(host))
    assert time.monotonic() - started < 20
    time.sleep(0.3)
    left = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in open(f"/proc/{pid}/cmdline", "rb").read():
                    left.append(pid)
            except OSError:
                pass
    assert left == []


def test_identity_from_imds_and_the_group_from_auto_scaling(aws_x: Any, aws_env: Any, run_bin: Any,
                                                              runner: FakeRunnerDir, host: str,
                                                              broker_t: Broker) -> None:
    put_token(aws_x, host)
    env = aws_env(instance_id=host, RUNNER_ALLOW_RUNASROOT="1")  # IMDS emulator for this instance
    r = run_bin(["register", "--runner-dir", os.fspath(runner), "--url", URL], env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert broker_t.runners()[host]["labels"][-2:] == [host, "asg-runners"]
    no_imds = run_bin(["register", "--runner-dir", os.fspath(runner), "--url", URL], aws_env(), timeout=60)
    assert no_imds.returncode == 1 and "IMDS is disabled" in no_imds.stderr
