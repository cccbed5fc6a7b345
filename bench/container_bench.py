#!/usr/bin/env python3
"""Rootless Podman against rootless Docker, as the agent would run either for one job (issue 20:
"choose by measurement"). For each engine, `--runs` times, as a throwaway user with a subordinate
range (created here, removed after), from an empty home:

- ready: from starting the API service (`podman system service`, or `dockerd-rootless.sh`) to the
  first answer of `docker info` through its socket;
- run: `docker run --rm IMAGE true`, median of 3, through the same docker CLI;
- memory: the resident set of every process of the user and its subordinate ids, idle after the runs
  (the engine's standing cost on a host);
- teardown: SIGKILL to all of them (the agent kills the listener's cgroup) and removing the
  engine's storage in the user namespace (the cleaner's second pass).

The image is a root file system of Debian's busybox-static (no registry here). Needs root, podman,
uidmap, and for Docker the Debian packages docker.io and rootlesskit (dockerd-rootless.sh). Prints
one table; an engine that is not installed is reported as such.

    sudo python3 bench/container_bench.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

DOCKERD_ROOTLESS = "/usr/share/docker.io/contrib/dockerd-rootless.sh"
USER = f"rlbench{os.getpid() % 100000}"


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kw)


def as_user(cmd: str, env: dict[str, str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    return subprocess.run(["su", "-", USER, "-s", "/bin/bash", "-c", f"export {exports}; {cmd}"],
                          capture_output=True, text=True, check=check, timeout=timeout)


def image_tar() -> Path:
    root = Path(tempfile.mkdtemp(prefix="rl-bench-root-"))
    os.chmod(root, 0o755)
    (root / "bin").mkdir(mode=0o755)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "true", "sleep"):
        os.symlink("busybox", root / "bin" / applet)
    out = Path(f"/tmp/rl-bench-image-{os.getpid()}.tar")
    with tarfile.open(out, "w") as t:
        t.add(root, arcname=".")
    os.chmod(out, 0o644)
    shutil.rmtree(root)
    return out


def subuid_range() -> tuple[int, int]:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, count = line.split(":")
        if name == USER:
            return int(start), int(count)
    raise SystemExit("no subordinate range for the bench user")


def owned_pids(lo: int, count: int, uid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                u = d.stat().st_uid
            except OSError:
                continue
            if u == uid or lo <= u < lo + count:
                out.append(int(d.name))
    return out


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def kill_all(lo: int, count: int, uid: int) -> None:
    for _ in range(10):
        pids = owned_pids(lo, count, uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        time.sleep(0.05)


def one_run(engine: str, image: Path, home: Path, uid: int, lo: int, count: int) -> dict[str, float]:
    run_dir = Path(f"/run/rl-bench-{os.getpid()}")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, uid, uid)
    env = {"XDG_RUNTIME_DIR": str(run_dir), "PATH": "/usr/share/docker.io/contrib:/usr/sbin:/usr/local/bin:/usr/bin:/bin"}
    if engine == "podman":
        sock = run_dir / "podman.sock"
        start = (f"podman --cgroup-manager=cgroupfs --events-backend=file system service --time=0 unix://{sock} "
                 f">/dev/null 2>&1 &")
        if Path("/usr/bin/runc").exists():
            start = start.replace("--events-backend=file", "--events-backend=file --runtime=runc")
    else:
        sock = run_dir / "docker.sock"
        start = "dockerd-rootless.sh --exec-opt native.cgroupdriver=cgroupfs >/dev/null 2>&1 &"
    env["DOCKER_HOST"] = f"unix://{sock}"
    t0 = time.monotonic()
    as_user(f"nohup sh -c '{start}' >/dev/null 2>&1", env)
    while as_user("docker info >/dev/null 2>&1", env, check=False).returncode != 0:
        if time.monotonic() - t0 > 60:
            raise RuntimeError(f"{engine}: no answer in 60 s")
        time.sleep(0.02)
    ready = time.monotonic() - t0
    as_user(f"docker import {image} localhost/bench:1 >/dev/null", env)
    runs = []
    for _ in range(3):
        t = time.monotonic()
        as_user("docker run --rm localhost/bench:1 true", env)
        runs.append(time.monotonic() - t)
    time.sleep(1.0)
    mem = rss_mib(owned_pids(lo, count, uid))
    t = time.monotonic()
    kill_all(lo, count, uid)
    # The cleaner's second pass: the storage, subordinate ids' files included, in the user namespace.
    as_user("podman unshare rm -rf ~/.local/share/containers ~/.local/share/docker ~/.config", env, check=False)
    teardown = time.monotonic() - t
    kill_all(lo, count, uid)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"ready": ready, "run": statistics.median(runs), "mem": mem, "teardown": teardown}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (it creates a throwaway user)")
    engines = []
    if shutil.which("podman") and shutil.which("newuidmap"):
        engines.append("podman")
    if Path(DOCKERD_ROOTLESS).exists() and shutil.which("rootlesskit") and shutil.which("dockerd"):
        engines.append("docker")
    missing = {"podman", "docker"} - set(engines)
    sh("useradd", "--create-home", "--shell", "/bin/bash", USER)
    sh("usermod", "--add-subuids", "5000000-5065535", "--add-subgids", "5000000-5065535", USER)
    image = image_tar()
    uid = int(sh("id", "-u", USER).stdout)
    lo, count = subuid_range()
    home = Path(sh("sh", "-c", f"getent passwd {USER} | cut -d: -f6").stdout.strip())
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for engine in engines:
            results[engine] = [one_run(engine, image, home, uid, lo, count) for _ in range(args.runs)]
    finally:
        kill_all(lo, count, uid)
        sh("userdel", "-r", USER, check=False)
        image.unlink(missing_ok=True)
    print(f"rootless engines, {args.runs} runs each, one throwaway user, empty home each run")
    print(f"{'engine':<8} {'ready p50 ms':>13} {'ready max ms':>13} {'run p50 ms':>11} {'idle RSS MiB':>13} "
          f"{'teardown p50 ms':>16}")
    for engine, rs in results.items():
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        print(f"{engine:<8} {med('ready') * 1e3:>13.0f} {max(r['ready'] for r in rs) * 1e3:>13.0f} "
              f"{med('run') * 1e3:>11.0f} {med('mem'):>13.1f} {med('teardown') * 1e3:>16.0f}")
    for engine in sorted(missing):
        print(f"{engine:<8} not installed here")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
