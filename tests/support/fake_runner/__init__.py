"""A stand-in for the GitHub Actions runner (actions/runner), for end-to-end tests.

:func:`install_fake_runner` lays out a runner directory the way the real runner's release
archive does (``bin/Runner.Listener``, ``bin/Runner.Worker``, ``config.sh``, ``env.sh``,
``run.sh``, plus ``.runner``/``.credentials``/``.env`` once configured). The two binaries are
Python scripts whose shebang is this interpreter, so ``/proc/<pid>/comm`` reads
``Runner.Listener`` / ``Runner.Worker`` and each job's worker is a child process of the
listener, as upstream. See listener.py and worker.py for the behaviour and its sources.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .broker import Broker, Handover, HookRun, Job  # noqa: F401  (re-exported)
from .common import ReturnCode, runner_settings, write_json_bom  # noqa: F401

_TESTS_DIR = Path(__file__).resolve().parents[2]  # .../tests (holds the "support" package)

_SCRIPT = """#!{python}
# Fake {name} for runner-lifecycle's tests (tests/support/fake_runner).
import sys
sys.path.insert(0, {tests!r})
from support.fake_runner.{module} import main
sys.exit(main())
"""

# config.sh: same shape as upstream's src/Misc/layoutroot/config.sh: refuse root unless
# RUNNER_ALLOW_RUNASROOT is set, snapshot the environment (env.sh), then hand over to
# "bin/Runner.Listener configure" (or "remove"). The fake also records argv and environment.
_CONFIG_SH = """#!/bin/bash
user_id=`id -u`
if [ $user_id -eq 0 -a -z "$RUNNER_ALLOW_RUNASROOT" ]; then
    echo "Must not run with sudo"
    exit 1
fi
DIR="$( cd -P "$( dirname "${BASH_SOURCE[0]}" )" && pwd )"
cd "$DIR"
"$DIR/bin/Runner.Listener" _record-config "$@"
source ./env.sh
shopt -s nocasematch
if [[ "$1" == "remove" ]]; then
    ./bin/Runner.Listener "$@"
else
    ./bin/Runner.Listener configure "$@"
fi
"""

# env.sh: like upstream's, records PATH in .path and adds a few variables to .env if absent.
_ENV_SH = """#!/bin/bash
touch .env
echo $PATH>.path
for var_name in LANG JAVA_HOME ANT_HOME M2_HOME ANDROID_HOME ANDROID_SDK_ROOT GRADLE_HOME NVM_BIN NVM_PATH LD_LIBRARY_PATH PERL5LIB; do
    if ! grep -q "^${var_name}=" .env && [ -n "${!var_name}" ]; then
        echo "${var_name}=${!var_name}" >> .env
    fi
done
"""

# run.sh: upstream's run.sh relaunches the listener while it exits 2; kept to that rule.
_RUN_SH = """#!/bin/bash
DIR="$( cd -P "$( dirname "${BASH_SOURCE[0]}" )" && pwd )"
while :; do
    "$DIR/bin/Runner.Listener" run "$@"
    returnCode=$?
    if [[ $returnCode -eq 2 ]]; then
        echo "Restarting runner..."
    else
        echo "Exiting runner..."
        exit 0
    fi
done
"""


def _write_exec(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@dataclass
class FakeRunnerDir:
    """A fake runner installation; ``os.fspath()`` gives its directory."""

    path: Path
    name: str
    broker_url: str

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: str) -> Path:
        return self.path / other

    @property
    def listener(self) -> Path:
        return self.path / "bin" / "Runner.Listener"

    @property
    def worker(self) -> Path:
        return self.path / "bin" / "Runner.Worker"

    @property
    def config_sh(self) -> Path:
        return self.path / "config.sh"

    @property
    def configured(self) -> bool:
        return (self.path / ".runner").exists()

    def set_hooks(self, started: str | None = None, completed: str | None = None) -> dict[str, Path]:
        """Write hook scripts (``.sh`` bodies) and name them in ``.env``
        (ACTIONS_RUNNER_HOOK_JOB_STARTED / _COMPLETED, read by the listener at start)."""
        paths: dict[str, Path] = {}
        env = _read_env(self.path)
        for stage, body, var in (("started", started, "ACTIONS_RUNNER_HOOK_JOB_STARTED"),
                                 ("completed", completed, "ACTIONS_RUNNER_HOOK_JOB_COMPLETED")):
            if body is None:
                env.pop(var, None)
                continue
            script = self.path / "hooks" / f"job-{stage}.sh"
            script.parent.mkdir(exist_ok=True)
            _write_exec(script, body if body.startswith("#!") else "#!/bin/bash\n" + body)
            env[var] = str(script)
            paths[stage] = script
        self.set_env(env, replace=True)
        return paths

    def set_env(self, values: Mapping[str, str], replace: bool = False) -> None:
        env = {} if replace else _read_env(self.path)
        env.update(values)
        (self.path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))

    def start(self, *args: str, env: Mapping[str, str] | None = None, once: bool = False,
              stdout: Any = None, stderr: Any = None) -> "subprocess.Popen[str]":
        """Start ``bin/Runner.Listener run [--once] *args`` directly (tests that are not about
        the agent's supervision). stdout/stderr default to <dir>/_diag/listener-<n>.log."""
        argv = [str(self.listener), "run"] + (["--once"] if once else []) + list(args)
        diag = self.path / "_diag"
        diag.mkdir(exist_ok=True)
        if stdout is None:
            n = len(list(diag.glob("listener-*.log")))
            stdout = open(diag / f"listener-{n}.log", "w")
        return subprocess.Popen(argv, env=dict(env if env is not None else os.environ), cwd=str(self.path),
                                stdout=stdout, stderr=stderr if stderr is not None else subprocess.STDOUT, text=True)

    def config_calls(self) -> list[dict[str, Any]]:
        """Every config.sh invocation: {"argv": [...], "env": {...}, "cwd": ..., "uid": ...}."""
        path = self.path / "_fake" / "config-calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


def _read_env(root: Path) -> dict[str, str]:
    from .common import load_env_file

    return load_env_file(root)


def install_fake_runner(runner_dir: os.PathLike[str] | str, broker_url: str, *, name: str = "runner-1",
                        configured: bool = True, ephemeral: bool = False, monitor_socket: str | None = None,
                        github_url: str = "https://github.com/fake-org") -> FakeRunnerDir:
    """Install the fake runner into ``runner_dir``.

    configured=True writes ``.runner`` and ``.credentials`` as a successful ``config.sh`` would
    (the broker registers the name on the first session); configured=False leaves that to
    ``config.sh``, which registers with the broker and records its argv and environment in
    ``_fake/config-calls.jsonl``.
    """
    root = Path(runner_dir)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "_fake").mkdir(exist_ok=True)
    for exe, module in (("Runner.Listener", "listener"), ("Runner.Worker", "worker")):
        _write_exec(root / "bin" / exe, _SCRIPT.format(python=sys.executable, name=exe, tests=str(_TESTS_DIR), module=module))
    _write_exec(root / "config.sh", _CONFIG_SH)
    _write_exec(root / "env.sh", _ENV_SH)
    _write_exec(root / "run.sh", _RUN_SH)
    (root / ".fake_runner.json").write_text(json.dumps({"broker_url": broker_url.rstrip("/")}))
    if not (root / ".env").exists():
        (root / ".env").write_text("")
    if configured:
        write_json_bom(root / ".runner", runner_settings(name, broker_url.rstrip("/"), github_url, ephemeral=ephemeral,
                                                         monitor_socket=monitor_socket))
        write_json_bom(root / ".credentials", {"scheme": "OAuth", "data": {"clientId": "fake"}})
    return FakeRunnerDir(root, name, broker_url.rstrip("/"))


__all__ = ["Broker", "FakeRunnerDir", "Handover", "HookRun", "Job", "ReturnCode", "install_fake_runner"]
