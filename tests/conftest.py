"""Shared pytest fixtures for runner-lifecycle's end-to-end tests.

Fixtures (see tests/support/README.md):
  aws_server   session-wide AwsEmulator (moto 5.2.5 + lifecycle extension) on 127.0.0.1
  aws          the same emulator, reset before each test
  imds_for     imds_for(instance_id, region="us-east-1") -> ImdsServer on 127.0.0.1
  aws_env      aws_env(instance_id=None, imds=None, **extra) -> env dict for a binary under test
  broker       a fresh fake GitHub job broker per test
  runner_dir   a temp dir with the fake runner installed, configured against `broker`
  make_runner  make_runner(name="runner-N", configured=True, **kw) -> FakeRunnerDir
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Loopback only: no credentials lookup in ~/.aws, never IMDS at 169.254.169.254.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_CONFIG_FILE"] = "/dev/null"
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"
os.environ.pop("AWS_PROFILE", None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"

from support.aws_emulator import AwsEmulator  # noqa: E402
from support.env import aws_env as _aws_env  # noqa: E402
from support.fake_runner import Broker, FakeRunnerDir, install_fake_runner  # noqa: E402
from support.imds import ImdsServer  # noqa: E402


@pytest.fixture(scope="session")
def aws_server() -> Iterator[AwsEmulator]:
    emu = AwsEmulator(test_mode=True).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def aws(aws_server: AwsEmulator) -> AwsEmulator:
    aws_server.reset()
    return aws_server


@pytest.fixture
def imds_for(aws: AwsEmulator) -> Callable[..., ImdsServer]:
    return aws.imds_for


@pytest.fixture
def aws_env(aws: AwsEmulator) -> Callable[..., dict[str, str]]:
    def make(instance_id: str | None = None, imds: ImdsServer | None = None, **extra: str) -> dict[str, str]:
        if imds is None and instance_id is not None:
            imds = aws.imds_for(instance_id)
        return _aws_env(aws.endpoint_url, imds.url if imds else None, **extra)

    return make


@pytest.fixture
def broker() -> Iterator[Broker]:
    b = Broker().start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def make_runner(tmp_path: Path, broker: Broker) -> Iterator[Callable[..., FakeRunnerDir]]:
    made: list[FakeRunnerDir] = []

    def make(name: str | None = None, **kw: Any) -> FakeRunnerDir:
        name = name or f"runner-{len(made) + 1}"
        r = install_fake_runner(tmp_path / name, broker.url, name=name, **kw)
        made.append(r)
        return r

    yield make
    _kill_strays(made)


@pytest.fixture
def runner_dir(make_runner: Callable[..., FakeRunnerDir]) -> FakeRunnerDir:
    return make_runner("runner-1")


def _kill_strays(dirs: list[FakeRunnerDir]) -> None:
    """SIGKILL fake runner processes a test left behind (only ours: matched by runner dir)."""
    roots = [str(d.path) for d in dirs]
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in cmdline if a]
        if any(a.startswith(root + "/bin/Runner.") for a in args for root in roots):
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except OSError:
                pass
