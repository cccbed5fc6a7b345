"""Fixtures for the agent's end-to-end tests: the built binary and emulated hosts.

Every process under test talks to loopback only: AWS_ENDPOINT_URL is the moto emulator,
AWS_EC2_METADATA_SERVICE_ENDPOINT (and the agent's own IMDS setting) the instance's IMDS
emulator, with dummy keys (tests/support/env.py refuses any other address).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Host, agent_env, binary, hook_scripts  # noqa: E402
from jit_hosts import HOOK_TIMEOUT_S  # noqa: E402
from support.jit_controller import JitController, instance_key, jit_controller  # noqa: E402


@pytest.fixture(scope="session")
def agent_bin() -> Path:
    return binary()


@pytest.fixture
def make_host(aws: Any, broker: Any, make_runner: Callable[..., Any], tmp_path: Path,
              agent_bin: Path) -> Iterator[Callable[..., Host]]:
    made: list[Host] = []

    def make(hook_timeout: int | None = 30, size: int = 1, index: int = 0, group: str = "runners",
             hooks: bool = True, configured: bool = True, **settings: str) -> Host:
        """An instance of a fresh group (``size`` instances, termination hook with
        ``hook_timeout`` unless None), a fake runner for it and the agent's environment.
        ``configured=False`` leaves the runner unregistered (JIT mode brings its config).
        ``settings`` are extra RUNNER_LIFECYCLE_* variables (short names: imds_poll="250ms")."""
        ids = aws.create_group(name=group, size=size, hook_timeout=hook_timeout)
        iid = ids[index]
        imds = aws.imds_for(iid)
        n = len(made)
        runner = make_runner(f"runner-{n + 1}", configured=configured)
        if hooks:
            runner.set_hooks(**hook_scripts(agent_bin))
        tmp = tmp_path / f"host-{n}"
        tmp.mkdir()
        env = agent_env(aws.endpoint_url, imds.url, runner.path, tmp / "run")
        for key, value in settings.items():
            env[f"RUNNER_LIFECYCLE_{key.upper()}"] = value
        if hooks:
            # The listener gets none of the agent's environment (docs/agent.md): what the job hooks
            # need to stay on loopback if they fall back to a direct call goes in the runner's .env,
            # as a deployment would put its own settings there.
            runner.set_env({k: v for k, v in env.items()
                            if k.startswith("AWS_") or k in ("NO_PROXY", "no_proxy", "RUNNER_LIFECYCLE_CONFIG",
                                                             "RUNNER_LIFECYCLE_AWS_IMDS_ENDPOINT")})
        host = Host(bin=agent_bin, aws=aws, broker=broker, instance_id=iid, group=group, imds=imds,
                    runner=runner, tmp=tmp, env=env)
        made.append(host)
        return host

    yield make
    for h in made:
        h.close()


@pytest.fixture
def jit_host(make_host: Callable[..., Host], agent_bin: Path, broker: Any, aws_env: Callable[..., dict[str, str]],
             tmp_path: Path) -> Iterator[Callable[..., tuple[Host, JitController]]]:
    with ExitStack() as stack:
        def make(group: str = "runners", **settings: str) -> tuple[Host, JitController]:
            host = make_host(hook_timeout=HOOK_TIMEOUT_S, group=group, configured=False, runner_mode="jit",
                             **settings)
            key = instance_key(host.instance_id)
            ctl = stack.enter_context(jit_controller(agent_bin, broker, aws_env, host.tmp / "controller.log",
                                                     {host.instance_id: key}, groups=group))
            host.env.update(key.env())
            host.env["RUNNER_LIFECYCLE_RUNNER_JIT_URL"] = ctl.url
            return host, ctl

        yield make
