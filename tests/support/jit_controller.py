"""The controller's JIT endpoint on loopback, as a host sees it: FakeGitHub linked to the broker,
``runner-lifecycle controller lambda`` under the loopback Lambda Runtime API, and an AWS_IAM
function URL in front of it (function_url_front.py verifies each request's SigV4 signature like AWS
and names the signer in ``requestContext.authorizer.iam``). Used by the endpoint's own tests
(tests/controller/test_jit_endpoint.py) and by the agent's JIT tests (tests/e2e/test_agent_jit.py).

A host's credentials are an access key the front knows: :func:`instance_key` gives each instance
one, whose session the front names ``assumed-role/<role>/<instance id>`` (an instance profile's
session is named after the instance)."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from support.function_url_front import FunctionUrlFront, Identity, instance_role_arn
from support.github_emulator import FakeGitHub
from support.lambda_runtime_api import RuntimeApi

ACCOUNT = "123456789012"
ROLE = "runner-hosts"


@dataclass(frozen=True)
class HostKey:
    """One host's instance-role credentials (temporary: a session token too)."""

    access_key: str
    secret_key: str
    token: str

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_SESSION_TOKEN": self.token}


def instance_key(instance_id: str) -> HostKey:
    """Credentials for ``instance_id``, unique per instance (AWS access keys are 20 characters)."""
    tail = instance_id.removeprefix("i-").upper().ljust(16, "0")[:16]
    return HostKey(f"ASIA{tail}", f"secret-of-{instance_id}".ljust(40, "0"), f"session-token-of-{instance_id}")


@dataclass
class JitController:
    github: FakeGitHub
    runtime: RuntimeApi
    iam: FunctionUrlFront
    webhook: FunctionUrlFront
    proc: subprocess.Popen[bytes]
    log_path: Path
    keys: dict[str, HostKey] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.iam.url

    def log(self) -> str:
        return self.log_path.read_text()

    def minted(self) -> list[str]:
        """Names of the runners minted so far, in order."""
        return list(self.github.jit_configs)


@contextmanager
def jit_controller(bin_path: Path, broker: Any, aws_env: Callable[..., dict[str, str]], log_path: Path,
                   instances: dict[str, HostKey], *, groups: str = "runners",
                   extra: dict[str, Identity] | None = None) -> Iterator[JitController]:
    """Start the chain; ``instances`` maps instance id to its instance-role credentials (session of
    :data:`ROLE`), ``extra`` adds other principals by access key. Stops everything afterwards and
    checks that no credential reached the controller's log."""
    github = FakeGitHub().attach_broker(broker).start()
    runtime = RuntimeApi().start()
    keys = dict(instances)
    identities = {k.access_key: Identity(k.secret_key, instance_role_arn(ACCOUNT, ROLE, iid), k.token)
                  for iid, k in keys.items()}
    identities.update(extra or {})
    iam = FunctionUrlFront(runtime, identities, account_id=ACCOUNT).start()
    webhook = FunctionUrlFront(runtime, auth_type="NONE", account_id=ACCOUNT).start()
    env = aws_env(
        RUNNER_LIFECYCLE_CONTROLLER_GROUPS=groups, RUNNER_LIFECYCLE_AGENT_ROLE_NAME=ROLE,
        RUNNER_LIFECYCLE_LOG_FORMAT="json",
        RUNNER_LIFECYCLE_GITHUB_URL="https://github.com/acme/infra", RUNNER_LIFECYCLE_GITHUB_API_URL=github.url,
        RUNNER_LIFECYCLE_GITHUB_TOKEN=github.token,
        AWS_LAMBDA_RUNTIME_API=runtime.address, AWS_LAMBDA_FUNCTION_NAME="runner-lifecycle",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128", AWS_LAMBDA_FUNCTION_VERSION="$LATEST")
    log = open(log_path, "w")
    proc = subprocess.Popen([str(bin_path), "controller", "lambda"], env=env, stdout=log, stderr=subprocess.STDOUT)
    ctl = JitController(github, runtime, iam, webhook, proc, log_path, keys)
    try:
        yield ctl
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        for s in (iam, webhook, runtime, github):
            s.stop()
    text = log_path.read_text()
    assert "panicked" not in text
    secrets = [github.token, *github.jit_configs.values(), *(i.secret_key for i in identities.values()),
               *(i.token for i in identities.values() if i.token)]
    for secret in secrets:
        assert secret not in text, "a credential reached the controller's log"
