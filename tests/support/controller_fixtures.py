"""Fixtures for tests/controller and tests/register (imported by their conftest.py files).

  bin_path        the binary under test ($RUNNER_LIFECYCLE_BIN, else target/debug)
  runner_spec     session: GitHub's OpenAPI description cut to the runner paths (npm ci on first use)
  prism           session: Prism serving runner_spec on 127.0.0.1
  fake_github     per test: the stateful FakeGitHub on 127.0.0.1
  app_key_file    session: a throwaway RSA key (PEM) for GitHub App authentication
  aws_x           the session AwsEmulator, reset, with support.moto_extras installed
  run_bin(args, env, input=None, timeout=60) -> CompletedProcess (text)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from support import moto_extras
from support.github_emulator import FakeGitHub, PrismServer, cut_spec, ensure_node_modules

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bin_path() -> Path:
    env = os.environ.get("RUNNER_LIFECYCLE_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "runner-lifecycle"
    if not path.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "runner-lifecycle"], cwd=REPO, check=True)
    return path


@pytest.fixture(scope="session")
def runner_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_node_modules()
    return cut_spec(tmp_path_factory.mktemp("github") / "runners.openapi.json")


@pytest.fixture(scope="session")
def prism(runner_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrismServer]:
    server = PrismServer(runner_spec, tmp_path_factory.mktemp("prism") / "prism.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def app_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    path = tmp_path_factory.mktemp("app") / "app-key.pem"
    path.write_bytes(pem)
    return path


@pytest.fixture
def aws_x(aws: Any) -> Iterator[Any]:
    moto_extras.install()
    moto_extras.deny_secret_deletes([])
    try:
        yield aws
    finally:
        # The emulator is shared by the whole session: leave no denial behind for other tests.
        moto_extras.deny_secret_deletes([])


@pytest.fixture
def run_bin(bin_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(args: list[str], env: dict[str, str], input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(bin_path), *args], env=env, input=input, capture_output=True, text=True,
                              timeout=timeout)

    return run
