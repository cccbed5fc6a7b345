"""A host as the packaged unit makes it, for the attack tests (test_attacks_*.py): the real agent runs
as root with `runner.user` = a throwaway unprivileged user (the `job_user` fixture), the stand-in
runner lives in a directory under /tmp laid out as `install` does it (`lay_out_runner_tree`: root's
but for `_work`, `_diag` and the registration files the listener writes; pytest's tmp dirs are 0700
and so out of its reach), and the hook socket's directory is root-owned 0755, as `RuntimeDirectoryMode=0755`
makes /run/runner-lifecycle. The attacker is a process of that user (`as_user`), started with an
environment of its own, never the test's."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from seclib import REPO

sys.path.insert(0, str(REPO / "tests" / "e2e"))

from harness import Host, agent_env, fd_count, hook_scripts, wait_for  # noqa: E402
from support.fake_runner import install_fake_runner  # noqa: E402
from support.jit_controller import instance_key, jit_controller  # noqa: E402
from support.runner_tree import lay_out_runner_tree  # noqa: E402

PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def as_user(user: str, *argv: str) -> list[str]:
    """argv run as `user` (its uid, primary and supplementary groups), no capability."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv]


def attack(user: str, *argv: str, env: dict[str, str] | None = None, timeout: float = 30,
           **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run argv as the attacker, with a clean environment (plus `env`), and wait for it."""
    return subprocess.run(as_user(user, *argv), env={**CLEAN_ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, **kw)


def attack_py(user: str, code: str, *args: str, env: dict[str, str] | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return attack(user, PY, "-c", code, *args, env=env, timeout=timeout)


def user_pids(uid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid == uid:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def kill_user_processes(uid: int) -> None:
    """SIGKILL what runs as the test's own throwaway user (the listener, the worker, attackers), by pid."""
    for _ in range(3):
        pids = user_pids(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


class UserHosts:
    """Factory behind the `user_host` fixture; `close()` undoes everything."""

    def __init__(self, bin_path: Path, aws: Any, broker: Any, user: tuple[str, int, int], tmp: Path) -> None:
        self.bin = bin_path
        self.aws = aws
        self.broker = broker
        self.user, self.uid, self.gid = user
        self.tmp = tmp
        self.base = Path(tempfile.mkdtemp(prefix="rl-sec-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.hosts: list[Host] = []

    def make(self, hook_timeout: int | None = 30, started_hook: str | None = None, configured: bool = True,
             group: str = "runners", runner_dir: Path | None = None, tree: str = "install",
             **settings: str) -> Host:
        """`tree`: "install" lays the runner's tree out as `install` does (`lay_out_runner_tree`);
        "runner" leaves all of it to the runner's user, as on a host where that user unpacked the
        runner (the test then runs the real `install` on it)."""
        ids = self.aws.create_group(name=group, size=1, hook_timeout=hook_timeout)
        iid = ids[0]
        imds = self.aws.imds_for(iid)
        n = len(self.hosts)
        runner = install_fake_runner(runner_dir or self.base / f"runner-{n + 1}", self.broker.url,
                                     name=f"runner-{n + 1}", configured=configured)
        # The fake's scripts name this venv's interpreter, which may resolve under a directory the
        # runner's user cannot enter (/root/.pyenv); the fake needs only the standard library.
        for exe in (runner.listener, runner.worker):
            lines = exe.read_text().split("\n", 1)
            exe.write_text(f"#!{PY}\n{lines[1]}")
        hooks = hook_scripts(self.bin)
        if started_hook is not None:
            hooks["started"] = started_hook
        runner.set_hooks(**hooks)
        if tree == "install":
            lay_out_runner_tree(runner.path, self.uid, self.gid)
        else:
            subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(runner.path)], check=True)
        run_dir = self.base / f"run-{n}"
        run_dir.mkdir(mode=0o755)  # /run/runner-lifecycle: root-owned, 0755 (RuntimeDirectoryMode)
        os.chmod(run_dir, 0o755)
        tmp = self.tmp / f"host-{n}"
        tmp.mkdir()
        env = agent_env(self.aws.endpoint_url, imds.url, runner.path, run_dir)
        env["RUNNER_LIFECYCLE_RUNNER_USER"] = self.user
        for key, value in settings.items():
            env[f"RUNNER_LIFECYCLE_{key.upper()}"] = value
        host = Host(bin=self.bin, aws=self.aws, broker=self.broker, instance_id=iid, group=group, imds=imds,
                    runner=runner, tmp=tmp, env=env)
        self.hosts.append(host)
        return host

    def hook_as_user(self, host: Host, event: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`runner-lifecycle hook EVENT` as the job runs it: the runner's user, the listener's variables."""
        return attack(self.user, str(self.bin), "hook", event,
                      env={"RUNNER_LIFECYCLE_AGENT_SOCKET": str(host.socket)}, timeout=timeout)

    def close(self) -> None:
        for h in self.hosts:
            h.close()
        kill_user_processes(self.uid)
        shutil.rmtree(self.base, ignore_errors=True)


UNIT_NOFILE = (1024, 524288)


@contextlib.contextmanager
def unit_nofile() -> Iterator[None]:
    """The unit's LimitNOFILE for what is started inside (the agent inherits it)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = min(UNIT_NOFILE[1], before[1]) if before[1] != resource.RLIM_INFINITY else UNIT_NOFILE[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (UNIT_NOFILE[0], hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def start(host: Any) -> Any:
    with unit_nofile():
        return host.start_agent()


@contextlib.contextmanager
def jit_host(user_host: Any, broker: Any, rl_bin: Path, aws_env: Any, tmp_path: Path,
             started_hook: str, **settings: str) -> Iterator[tuple[Any, Any]]:
    """A JIT host (runner.user = the job's user) and its controller, serving its first listener."""
    host = user_host.make(configured=False, started_hook=started_hook, group="jit-iso", runner_mode="jit",
                          **settings)
    key = instance_key(host.instance_id)
    with jit_controller(rl_bin, broker, aws_env, tmp_path / "controller.log", {host.instance_id: key},
                        groups="jit-iso") as ctl:
        host.env.update(key.env())
        host.env["RUNNER_LIFECYCLE_RUNNER_JIT_URL"] = ctl.url
        start(host)
        wait_for(lambda: ctl.minted(), 60, "the first config")
        broker.wait_listening(ctl.minted()[0], timeout=60)
        yield host, ctl


def drop_dir(user_host: Any) -> Path:
    """Where the job's processes report to the test: root-owned, written by the job's user."""
    drop = Path(user_host.base) / "drop"
    drop.mkdir(mode=0o777, exist_ok=True)
    os.chmod(drop, 0o777)
    return drop



__all__ = ["Host", "PY", "UserHosts", "as_user", "attack", "attack_py", "fd_count", "kill_user_processes",
           "lay_out_runner_tree", "wait_for", "drop_dir", "jit_host", "start", "unit_nofile"]
