"""Container jobs under the rootless engine (issue 20): a job that runs a service container and a
container that talks to it through the `docker` CLI and `DOCKER_HOST`, as the runner's worker does
(DockerCommandManager.cs), and what it leaves behind for the next job.

The agent runs as root with `runner.user` = a throwaway user of this test's with a home and a
subordinate id range (what `install --containers rootless` checks for), `containers.mode =
rootless` and the `containers.conf` that `install --containers rootless` renders. No registry is
reachable here: the image is built by the test from Debian's busybox-static package (a root file
system with one binary, imported by the job itself, as a job would pull it).

Where this machine cannot run a rootless engine (no podman, no newuidmap, no user namespaces), the
tests skip and say which; nothing here is claimed beyond what ran.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from hostlib import UserHosts, jit_host, wait_for  # first: puts tests/e2e on the path

pytestmark = pytest.mark.timeout(300)

PODMAN = "/usr/bin/podman"
BUSYBOX = "/bin/busybox"


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def engine_missing() -> str | None:
    """Why this machine cannot run a rootless container engine, or None."""
    for tool in (PODMAN, "/usr/bin/newuidmap", "/usr/bin/newgidmap", BUSYBOX):
        if not Path(tool).exists():
            return f"{tool} is not installed (Debian packages podman, uidmap, busybox-static; scripts/test installs them)"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun: slirp4netns cannot give rootless containers a network"
    if not shutil.which("docker"):
        return "no docker CLI on PATH (the runner calls `docker`; Debian package docker-cli or docker.io)"
    if run("unshare", "--user", "--map-root-user", "true", check=False).returncode != 0:
        return "this kernel refuses unprivileged user namespaces"
    return None


@pytest.fixture
def container_user() -> Iterator[tuple[str, int, int]]:
    """A throwaway runner user with a home and a subordinate id range, as install expects; removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the agent runs as root)")
    why = engine_missing()
    if why:
        pytest.skip(why)
    name = f"rlctr{os.getpid() % 100000}"
    run("userdel", "-r", name, check=False)
    run("useradd", "--create-home", "--shell", "/bin/bash", name)
    # A range of its own, far from what useradd hands out by default (100000 + 65536 * n).
    base = 3_000_000 + (os.getpid() % 1000) * 65536
    run("usermod", "--add-subuids", f"{base}-{base + 65535}", "--add-subgids", f"{base}-{base + 65535}", name)
    # slirp4netns opens /dev/net/tun inside the job's user namespace; distributions ship it 0666,
    # this machine 0600.
    tun = Path("/dev/net/tun")
    mode = stat.S_IMODE(tun.stat().st_mode) if tun.exists() else None
    if mode is not None and mode != 0o666:
        os.chmod(tun, 0o666)
    try:
        yield name, int(run("id", "-u", name).stdout), int(run("id", "-g", name).stdout)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        time.sleep(0.3)
        run("userdel", "-r", name, check=False)
        if mode is not None and mode != 0o666:
            os.chmod(tun, mode)


@pytest.fixture
def image_tar(tmp_path_factory: Any) -> Path:
    """A root file system of Debian's static busybox, as a tar the job imports (no registry here)."""
    root = tmp_path_factory.mktemp("bbroot")
    (root / "bin").mkdir()
    os.chmod(root, 0o755)  # a container user that is not root must be able to reach /bin
    os.chmod(root / "bin", 0o755)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "sleep", "nc", "cat", "echo", "mkdir", "ls", "chmod", "touch"):
        os.symlink("busybox", root / "bin" / applet)
    out = Path(f"/tmp/rl-image-{os.getpid()}.tar")
    with tarfile.open(out, "w") as t:
        t.add(root, arcname=".")
    os.chmod(out, 0o644)
    yield out
    out.unlink(missing_ok=True)


def staged_confs(rl_bin: Path, user: str, stage: Path, *extra: str) -> dict[str, Path]:
    """The containers.conf and storage.conf `install --containers rootless` renders into a staged
    root, copied where the runner's user can read them: {"conf": ..., "storage": ...}."""
    root = stage / "stage"
    (root / "etc").mkdir(parents=True)
    shutil.copy("/etc/passwd", root / "etc/passwd")
    shutil.copy("/etc/group", root / "etc/group")
    for f in ("subuid", "subgid"):
        shutil.copy(f"/etc/{f}", root / "etc" / f)
    # The tools install looks for, as this host has them (runc: crun refuses this machine's hybrid
    # cgroup mounts, and install then names runc).
    for tool in ["usr/bin/podman", "usr/bin/newuidmap", "usr/bin/newgidmap"] + (
            ["usr/bin/runc"] if Path("/usr/bin/runc").exists() else []):
        (root / tool).parent.mkdir(parents=True, exist_ok=True)
        (root / tool).write_text("")
    (root / "opt/actions-runner/bin").mkdir(parents=True)
    (root / "opt/actions-runner/bin/Runner.Listener").write_text("")
    out = run(str(rl_bin), "install", "--root", str(root), "--user", user, "--binary", "/usr/bin/runner-lifecycle",
              "--containers", "rootless", *extra, check=False)
    assert out.returncode == 0, out
    confs = {}
    for key, name in (("conf", "containers.conf"), ("storage", "storage.conf")):
        dest = Path(f"/run/rl-{key}-{os.getpid()}.conf")
        shutil.copy(root / "etc/runner-lifecycle" / name, dest)
        os.chmod(dest, 0o644)
        confs[key] = dest
    return confs


@pytest.fixture
def containers_conf(rl_bin: Path, container_user: tuple[str, int, int], tmp_path: Path) -> Iterator[Path]:
    """The containers.conf `install --containers rootless` renders, from a staged install."""
    confs = staged_confs(rl_bin, container_user[0], tmp_path)
    yield confs["conf"]
    for p in confs.values():
        p.unlink(missing_ok=True)


@pytest.fixture
def ctr_host(rl_bin: Path, aws: Any, broker: Any, container_user: tuple[str, int, int],
             tmp_path: Path) -> Iterator[UserHosts]:
    hosts = UserHosts(rl_bin, aws, broker, container_user, tmp_path)
    try:
        yield hosts
    finally:
        hosts.close()


# Job A (the first job on the host) uses the engine as a workflow with `services:` would, then
# leaves everything a hostile job can: a running container, a privileged one, a volume, a network,
# an image, and a directory in the host's /tmp made by a container user (a subordinate id, which
# the runner's user alone cannot remove). Job B records what it finds.
JOBS = r"""#!/bin/bash
D={drop}
exec >>"$D/log" 2>&1
set -x
if [ ! -e "$D/a" ]; then
  touch "$D/a"
  docker import {image} localhost/rl-bb:1 || exit 0
  docker network create rl-net
  docker volume create rl-vol
  docker run -d --name rl-svc --network rl-net --network-alias db localhost/rl-bb:1 \
    sh -c 'while true; do echo pong | nc -l -p 5432; done'
  for i in $(seq 1 50); do
    docker run --rm --network rl-net -v rl-vol:/v localhost/rl-bb:1 sh -c 'nc db 5432 </dev/null >/v/answer; cat /v/answer' >"$D/a-answer"
    grep -q pong "$D/a-answer" && break
    sleep 0.2
  done
  docker run -d --name rl-long localhost/rl-bb:1 sleep 100000
  docker run -d --name rl-priv --privileged localhost/rl-bb:1 sleep 100000
  docker run -d --name rl-mount --user 1000 -v /tmp:/host-tmp localhost/rl-bb:1 \
    sh -c 'mkdir /host-tmp/rl-ctr-left-{uid} && echo x >/host-tmp/rl-ctr-left-{uid}/f && chmod 700 /host-tmp/rl-ctr-left-{uid}'
  docker wait rl-mount
  docker ps --format '{{{{.Names}}}}' >"$D/a-ps"
  docker volume ls -q >"$D/a-vol"
  docker network ls --format '{{{{.Name}}}}' >"$D/a-net"
  docker images -q >"$D/a-img"
  touch "$D/a-done"
else
  set +e  # what is not there is the point
  docker ps -a --format '{{{{.Names}}}}' >"$D/b-ps"
  docker volume ls -q >"$D/b-vol"
  docker network ls --format '{{{{.Name}}}}' >"$D/b-net"
  docker images -q >"$D/b-img"
  ls -la /tmp/rl-ctr-left-{uid} >"$D/b-left" 2>&1
  touch "$D/b-done"
fi
exit 0
"""


def lines(p: Path) -> list[str]:
    return [x for x in p.read_text().split("\n") if x.strip()] if p.exists() else []


def fresh_drop() -> Path:
    """A directory every user may write, where the jobs leave what they saw. Not under /tmp: the
    cleaner removes the job user's files there between the two jobs."""
    drop = Path(f"/run/rl-drop-{os.getpid()}")
    shutil.rmtree(drop, ignore_errors=True)
    drop.mkdir(mode=0o777)
    os.chmod(drop, 0o777)
    return drop


def run_job_b(ctl: Any, broker: Any, drop: Path) -> str:
    """Job B on the next JIT listener, once job A's host has its next config: it succeeds and
    leaves its record. Returns the jobs' log."""
    wait_for(lambda: len(ctl.minted()) >= 2, 90, "the next config")
    broker.wait_listening(ctl.minted()[1], timeout=90)
    job_b = broker.assign_job(0.5)
    assert broker.wait_outcome(job_b, 120) == "succeeded"
    wait_for(lambda: (drop / "b-done").exists(), 30, "job B's record")
    return (drop / "log").read_text()


def test_a_container_job_works_and_leaves_nothing_for_the_next_job(
        ctr_host: UserHosts, broker: Any, rl_bin: Path, aws_env: Any, tmp_path: Path, image_tar: Path,
        containers_conf: Path) -> None:
    """Job A reaches a service container by its network alias, through DOCKER_HOST, without root;
    it then leaves a running container, a privileged one, a volume, a network, an image and a
    directory a container user made in the host's /tmp. Before job B's listener starts, all of it
    is gone (its processes die with the job's cgroup, the cleaner empties the engine's storage, and a
    second pass in the engine's user namespace removes what container users left), the containers never made the idle host look busy, and a scale-in of the idle
    host completes at once.

    Before this change (main at aad2d54) there was no engine to reach: install had no --containers,
    the listener no DOCKER_HOST, and the cleaner could not remove a subordinate id's directory in /tmp
    (the runner's user cannot enter it; job B saw it, the `b-left` assertion)."""
    drop = fresh_drop()
    try:
        check_two_jobs(ctr_host, broker, rl_bin, aws_env, tmp_path, image_tar, containers_conf, drop)
    finally:
        shutil.rmtree(drop, ignore_errors=True)


def check_two_jobs(ctr_host: UserHosts, broker: Any, rl_bin: Path, aws_env: Any, tmp_path: Path, image_tar: Path,
                   containers_conf: Path, drop: Path) -> None:
    uid = ctr_host.uid
    script = JOBS.format(drop=drop, image=image_tar, uid=uid)
    with jit_host(ctr_host, broker, rl_bin, aws_env, tmp_path, script, containers_mode="rootless",
                  containers_podman=PODMAN, containers_conf=str(containers_conf)) as (host, ctl):
        job_a = broker.assign_job(0.5)
        outcome = broker.wait_outcome(job_a, 180)
        log = (drop / "log").read_text() if (drop / "log").exists() else "(no log)"
        assert outcome == "succeeded", log
        assert "pong" in (drop / "a-answer").read_text() if (drop / "a-answer").exists() else False, log
        assert (drop / "a-done").exists(), log
        assert {"rl-svc", "rl-long", "rl-priv"} <= set(lines(drop / "a-ps")), log
        assert "rl-vol" in lines(drop / "a-vol") and "rl-net" in lines(drop / "a-net"), log
        assert lines(drop / "a-img"), log

        # Idle although job A's containers were running when it ended.
        wait_for(lambda: host.status_json()["job_alive"] is False, 30, "the host idle after job A")
        log = run_job_b(ctl, broker, drop)
        assert lines(drop / "b-ps") == [], log
        assert lines(drop / "b-vol") == [], log
        assert "rl-net" not in lines(drop / "b-net"), log
        assert lines(drop / "b-img") == [], log
        assert "No such file" in (drop / "b-left").read_text(), (drop / "b-left").read_text()
        assert not Path(f"/tmp/rl-ctr-left-{uid}").exists()
        # Nothing of job A runs: not its containers (subordinate ids), not its engine.
        ranges = [line.split(":") for line in Path("/etc/subuid").read_text().split("\n")
                  if line.startswith(f"{ctr_host.user}:")]
        lo, count = int(ranges[0][1]), int(ranges[0][2])
        assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _uid(p) in range(lo, lo + count)]
        cleaned = host.agent.records(message="the last job's files are cleaned")
        assert [r for r in cleaned if r.get("in_namespace") is True], cleaned

        wait_for(lambda: host.status_json()["job_alive"] is False, 30, "the host idle after job B")
        host.terminate()
        wait_for(lambda: host.calls("CompleteLifecycleAction", ok=True), 30, "the idle host's hook completed")


def _uid(p: Path) -> int:
    try:
        return p.stat().st_uid
    except OSError:
        return -1


# With a read-only image store (install --container-image-store): root filled it with rl-base; job A
# runs from it, tries to remove it and to write into the store, and imports an image of its own;
# job B finds rl-base as it was and nothing of job A's.
STORE_JOBS = r"""#!/bin/bash
D={drop}
exec >>"$D/log" 2>&1
set -x
set +e
if [ ! -e "$D/a" ]; then
  touch "$D/a"
  docker run --rm localhost/rl-base:1 echo ran-from-store >"$D/a-run"
  docker rmi -f localhost/rl-base:1 >"$D/a-rmi" 2>&1
  touch {store}/storage/planted 2>"$D/a-plant"
  docker import {image} localhost/rl-own:1
  touch "$D/a-done"
else
  docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' >"$D/b-img"
  docker run --rm localhost/rl-base:1 echo ran-from-store >"$D/b-run"
  touch "$D/b-done"
fi
exit 0
"""


def test_base_images_in_the_read_only_store_are_kept_and_cannot_be_poisoned(
        ctr_host: UserHosts, broker: Any, rl_bin: Path, aws_env: Any, tmp_path: Path, image_tar: Path) -> None:
    """The one thing kept between jobs is what no job can change: a store of base images root
    filled. Job A runs from it but can neither remove its image nor write into it; the image it
    imported itself is gone for job B, which still runs the base image.

    Before this change (be9a41f) there was no --container-image-store: every image was dropped
    between jobs, and each job pulled (here: imported) its base images again."""
    store = Path(f"/run/rl-images-{os.getpid()}")
    shutil.rmtree(store, ignore_errors=True)
    drop = fresh_drop()
    confs: dict[str, Path] = {}
    try:
        runroot = Path(f"/run/rl-ir-{os.getpid()}")  # podman refuses a runroot over 50 characters
        out = run(PODMAN, "--root", str(store / "storage"), "--runroot", str(runroot), "--storage-driver", "overlay",
                  "--cgroup-manager=cgroupfs", "import", str(image_tar), "localhost/rl-base:1", check=False)
        assert out.returncode == 0, out
        run("chmod", "-R", "a+rX", str(store))
        os.chmod(store, 0o755)
        confs = staged_confs(rl_bin, ctr_host.user, tmp_path, "--container-image-store", str(store / "storage"))
        assert "additionalimagestores" in confs["storage"].read_text()
        script = STORE_JOBS.format(drop=drop, image=image_tar, store=store)
        with jit_host(ctr_host, broker, rl_bin, aws_env, tmp_path, script, containers_mode="rootless",
                      containers_podman=PODMAN, containers_conf=str(confs["conf"]),
                      containers_storage_conf=str(confs["storage"])) as (host, ctl):
            job_a = broker.assign_job(0.5)
            assert broker.wait_outcome(job_a, 180) == "succeeded"
            log = (drop / "log").read_text() if (drop / "log").exists() else "(no log)"
            assert (drop / "a-done").exists(), log
            assert "ran-from-store" in (drop / "a-run").read_text(), log
            assert not (store / "storage/planted").exists()
            log = run_job_b(ctl, broker, drop)
            images = lines(drop / "b-img")
            assert "localhost/rl-base:1" in images and "localhost/rl-own:1" not in images, log
            assert "ran-from-store" in (drop / "b-run").read_text(), log
    finally:
        run(PODMAN, "--root", str(store / "storage"), "--runroot", f"/run/rl-ir-{os.getpid()}", "--storage-driver",
            "overlay", "system", "reset", "--force", check=False)
        for d in (store, drop, Path(f"/run/rl-ir-{os.getpid()}")):
            shutil.rmtree(d, ignore_errors=True)
        for p in confs.values():
            p.unlink(missing_ok=True)
