#!/usr/bin/env python3
"""What cleaning up after a job costs between two JIT jobs (issue 16, item 3; docs/security.md).

Run as root on a test machine: `python3 bench/cleanup_bench.py [BINARY]` (default: a debug build in
$CARGO_TARGET_DIR or target/). It creates a throwaway system user, and for each size:

- kills a cgroup v2 holding N idle processes of that user (cgroup.kill) and waits until
  `cgroup.events` says `populated 0` (what the agent does before each listener);
- runs `runner-lifecycle clean-job-state` as that user (what the agent runs, without the launcher)
  on a work directory with F files (a checkout: 100 files per directory), a home with F/10 files,
  and F/10 files of the user's in /tmp;

(under /var/lib, outside the temp directories the cleaner walks), and prints the timings of each part (the cleaner's own report, microseconds) and the wall time of
the whole cleaner process. Everything it made is removed, and so is the user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cgroup2_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            return Path(left.split()[4])
    return None


def make_tree(root: Path, files: int, uid: int, gid: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        d = root / f"d{i // 100}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}").write_bytes(b"x" * 512)
    subprocess.run(["chown", "-R", f"{uid}:{gid}", str(root)], check=True)


def kill_cgroup(user: str, procs: int) -> float | None:
    mount = cgroup2_mount()
    if mount is None:
        return None
    own = next(l[3:] for l in Path("/proc/self/cgroup").read_text().splitlines() if l.startswith("0::"))
    cg = mount / own.strip().lstrip("/") / f"rl-bench-{os.getpid()}"
    cg.mkdir()
    try:
        children = []
        for _ in range(procs):
            children.append(subprocess.Popen(
                ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "sleep", "600"],
                stdin=subprocess.DEVNULL))
        # Moved in from here (root), as the agent's launcher joins before it drops to the user.
        for c in children:
            (cg / "cgroup.procs").write_text(str(c.pid))
        t = time.perf_counter()
        (cg / "cgroup.kill").write_text("1")
        while "populated 1" in (cg / "cgroup.events").read_text():
            time.sleep(0.0005)
        took = time.perf_counter() - t
        for c in children:
            c.wait()
        return took
    finally:
        cg.rmdir()


def main() -> int:
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    binary = sys.argv[1] if len(sys.argv) > 1 else str(
        Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "runner-lifecycle")
    user = f"rlbench{os.getpid() % 100000}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
    base = Path(tempfile.mkdtemp(prefix="rl-bench-", dir="/var/lib"))  # outside the temp dirs
    os.chmod(base, 0o755)
    try:
        uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)
        gid = int(subprocess.run(["id", "-g", user], capture_output=True, text=True, check=True).stdout)
        print(f"binary {binary}")
        print("cgroup kill + wait until empty (N idle processes of the runner's user):")
        for n in (1, 10, 100, 500):
            took = kill_cgroup(user, n)
            print(f"  N={n:4d}: " + ("no cgroup v2" if took is None else f"{took * 1e3:7.2f} ms"))
        print("clean-job-state (F files in _work, F/10 in the home, F/10 in /tmp):")
        for files in (0, 1000, 10000, 50000):
            runner = base / "runner"
            work = runner / "_work"
            home = base / "home"
            make_tree(work, files, uid, gid)
            make_tree(home, files // 10, uid, gid)
            tmp_dir = Path(f"/tmp/rl-bench-tmp-{os.getpid()}")
            make_tree(tmp_dir, files // 10, uid, gid)
            t = time.perf_counter()
            r = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", binary,
                                "clean-job-state", "--work", str(work), "--keep", str(runner), "--home", str(home),
                                "--tmp", "/tmp", "--tmp", "/var/tmp", "--tmp", "/dev/shm"],
                               capture_output=True, text=True, timeout=600)
            wall = time.perf_counter() - t
            if r.returncode != 0:
                print(r.stderr)
                return 1
            rep = json.loads(r.stdout)
            print(f"  F={files:6d}: work {rep['work_us'] / 1e3:8.1f} ms ({rep['work_removed']} removed), "
                  f"tmp {rep['tmp_us'] / 1e3:7.1f} ms ({rep['tmp_removed']}), "
                  f"home {rep['home_us'] / 1e3:7.1f} ms ({rep['home_removed']}), failed {rep['failed']}, "
                  f"process wall {wall * 1e3:8.1f} ms")
            shutil.rmtree(tmp_dir, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(runner, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and d.stat().st_uid == uid:
                    os.kill(int(d.name), 9)
            except (OSError, NameError):
                pass
        subprocess.run(["userdel", user], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
