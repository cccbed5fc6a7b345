"""Fixtures for the host-security tests: they need root (CI runs as root), a throwaway unprivileged
user, and the rendered install (helpers in seclib.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seclib import REPO, need_root, need_tools, run  # noqa: E402


@pytest.fixture(scope="session")
def rl_bin() -> Path:
    """$RUNNER_LIFECYCLE_BIN, else a fresh debug build."""
    given = os.environ.get("RUNNER_LIFECYCLE_BIN")
    if given:
        return Path(given)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    subprocess.run(["cargo", "build", "--quiet", "--bin", "runner-lifecycle"], cwd=REPO, check=True, timeout=900)
    return target / "debug" / "runner-lifecycle"


@pytest.fixture
def job_user() -> Iterator[tuple[str, int, int]]:
    """A throwaway unprivileged user standing for the runner's user (the job's user); removed after."""
    need_root()
    need_tools("useradd", "userdel", "setpriv")
    name = f"rljob{os.getpid() % 100000}"
    run("userdel", name, check=False)
    run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name)
    try:
        uid = int(run("id", "-u", name).stdout)
        gid = int(run("id", "-g", name).stdout)
        yield name, uid, gid
    finally:
        run("userdel", name, check=False)


@pytest.fixture
def staged(rl_bin: Path, job_user: tuple[str, int, int], tmp_path: Path) -> Path:
    """`runner-lifecycle install --root STAGING --user <job user>`: the files as a host would get them."""
    name, uid, gid = job_user
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/bash\n{name}:x:{uid}:{gid}::/nonexistent:/bin/sh\n")
    (root / "opt/actions-runner/bin").mkdir(parents=True)
    (root / "opt/actions-runner/bin/Runner.Listener").write_text("")
    out = run(str(rl_bin), "install", "--root", str(root), "--user", name, "--binary", "/usr/bin/runner-lifecycle")
    assert out.returncode == 0, out
    return root


@pytest.fixture
def user_host(rl_bin: Path, aws, broker, job_user: tuple[str, int, int], tmp_path: Path):
    """user_host.make(**settings) -> harness.Host whose agent runs as root with `runner.user` = the job
    user, runner under /tmp owned by that user, socket directory root 0755 (see hostlib.py). Agents,
    the user's processes and the directory are removed after, on failure too."""
    need_tools("setpriv", "chown")
    from hostlib import UserHosts

    hosts = UserHosts(rl_bin, aws, broker, job_user, tmp_path)
    try:
        yield hosts
    finally:
        hosts.close()
