"""The runner's tree as `runner-lifecycle install` lays it out (crates/install, docs/operations.md
"The runner's tree"), for tests that stand in for a host whose image was baked with `install`
without running it on this machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: What `runner-lifecycle install` leaves to the runner's user in its tree (crates/install,
#: docs/operations.md "The runner's tree"); `_fake` is the stand-in runner's own bookkeeping.
RUNNER_OWNED = ("_work", "_diag", "_fake")


def lay_out_runner_tree(path: Path, uid: int, gid: int, registration_mode: int = 0o640) -> None:
    """The runner's tree as `install` lays it out: everything root's and not writable by others,
    the directory itself root:<runner group> 1770 (sticky: the runner creates and deletes its own
    registration files there, never root's), `_work` and `_diag` the runner's, an existing
    registration root:<runner group> `registration_mode` (persistent mode)."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames, None]:
            p = Path(dirpath) / name if name else Path(dirpath)
            os.lchown(p, 0, 0)
            if not p.is_symlink():
                os.chmod(p, os.lstat(p).st_mode & 0o7755)
    os.chown(path, 0, gid)
    os.chmod(path, 0o1770)
    for name in RUNNER_OWNED:
        d = path / name
        d.mkdir(exist_ok=True)
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(d)], check=True)
        os.chmod(d, 0o750)
    for name in (".runner", ".credentials", ".credentials_rsaparams"):
        f = path / name
        if f.exists():
            os.chown(f, 0, gid)
            os.chmod(f, registration_mode)
    if (path / ".env").exists():
        os.chmod(path / ".env", 0o644)
