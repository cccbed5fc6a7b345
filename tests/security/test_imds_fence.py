"""The IMDS fence against the real kernel: in a network namespace of its own, 169.254.169.254 and
fd00:ec2::254 answer on a dummy interface (loopback when the kernel has no dummy driver), and the
rules `runner-lifecycle install` renders keep the runner's user out while root gets in. Nothing
leaves the namespace; the real IMDS is never contacted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from seclib import IMDS_V4 as V4, IMDS_V6 as V6, imds_namespace, need_tools, run

PORT = 80
PY = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable

SERVER = f"""
import socket, sys, threading
def serve(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, {PORT}))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.sendall(b"imds\\n")
        c.close()
for fam, addr in ((socket.AF_INET, "{V4}"), (socket.AF_INET6, "{V6}")):
    threading.Thread(target=serve, args=(fam, addr), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

CLIENT = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print(s.recv(16).decode().strip())
except OSError as e:
    print(f"refused: {e}")
    sys.exit(1)
"""


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace with both IMDS addresses and a TCP listener on each."""
    with imds_namespace("rl-fence", [PY, "-c", SERVER]) as name:
        yield name


def connect(ns: str, addr: str, user: str | None) -> tuple[bool, float]:
    """(connected, seconds) for a TCP connection from inside `ns`, as `user` (None: root)."""
    # A bare number is an id with no passwd entry (a subordinate id): no groups to look up.
    groups = "--clear-groups" if user and user.isdigit() else "--init-groups"
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", groups] if user else []
    started = time.monotonic()
    out = run("ip", "netns", "exec", ns, *as_user, PY, "-c", CLIENT, addr, str(PORT), check=False)
    elapsed = time.monotonic() - started
    assert out.returncode in (0, 1), out
    if out.returncode == 0:
        assert out.stdout.strip() == "imds", out
    return out.returncode == 0, elapsed


def fence(ns: str, script: Path, *args: str, caps: bool = True) -> subprocess.CompletedProcess[str]:
    # The fence unit's CapabilityBoundingSet, enforced the same way systemd would.
    bounded = ["setpriv", "--bounding-set=-all,+net_admin,+net_raw", "--no-new-privs"] if caps else []
    return run("ip", "netns", "exec", ns, *bounded, str(script), *args, check=False)


def assert_fenced(ns: str, user: str) -> None:
    for addr in (V4, V6):
        ok, elapsed = connect(ns, addr, user)
        assert not ok, f"{user} reached {addr} through the fence"
        assert elapsed < 2.0, f"refused, not dropped: {elapsed:.2f} s for {addr}"
        assert connect(ns, addr, None)[0], f"root must still reach {addr} (the agent needs IMDS)"


def assert_open(ns: str, user: str) -> None:
    for addr in (V4, V6):
        assert connect(ns, addr, user)[0], f"{user} cannot reach {addr} without the fence"


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_the_runner_user_cannot_reach_imds_and_root_can(backend, netns, staged, job_user):
    need_tools(backend, *(("ip6tables",) if backend == "iptables" else ()))
    user = job_user[0]
    script = staged / "usr/lib/runner-lifecycle/imds-fence"
    assert_open(netns, user)  # the test has teeth: without the rules the user gets in

    out = fence(netns, script, "apply", backend)
    assert out.returncode == 0, out
    assert_fenced(netns, user)
    assert fence(netns, script, "status", backend).returncode == 0

    # Applied again (a unit restart): still exactly one copy of the rules.
    assert fence(netns, script, "apply", backend).returncode == 0
    if backend == "nft":
        listing = run("ip", "netns", "exec", netns, "nft", "list", "ruleset").stdout
        assert listing.count("reject") == 2, listing
    else:
        for tool in ("iptables", "ip6tables"):
            listing = run("ip", "netns", "exec", netns, tool, "-S", "OUTPUT").stdout
            assert listing.count("runner-lifecycle-imds-fence") == 1, listing
    assert_fenced(netns, user)

    out = fence(netns, script, "remove")
    assert out.returncode == 0, out
    assert_open(netns, user)
    assert fence(netns, script, "status", backend).returncode != 0
    assert fence(netns, script, "remove").returncode == 0, "removing twice is fine"


def test_the_default_backend_is_nft_and_the_unit_runs_the_staged_script(netns, staged, job_user):
    need_tools("nft")
    user = job_user[0]
    unit = (staged / "etc/systemd/system/runner-lifecycle-imds-fence.service").read_text()
    assert "ExecStart=/usr/lib/runner-lifecycle/imds-fence apply" in unit
    assert "ExecStop=/usr/lib/runner-lifecycle/imds-fence remove" in unit
    script = staged / "usr/lib/runner-lifecycle/imds-fence"
    assert fence(netns, script, "apply").returncode == 0
    assert "runner_lifecycle_imds_fence" in run("ip", "netns", "exec", netns, "nft", "list", "tables").stdout
    assert_fenced(netns, user)
    assert fence(netns, script, "remove").returncode == 0
    assert_open(netns, user)


def test_an_unknown_user_fails_loudly(netns, tmp_path):
    need_tools("nft")
    script = tmp_path / "imds-fence"
    staged_text = (Path(__file__).resolve().parents[2] / "packaging/imds-fence").read_text()
    script.write_text(staged_text.replace("RUNNER_USER='runner'", "RUNNER_USER='rl-no-such-user'"))
    script.chmod(0o755)
    out = fence(netns, script, "apply")
    assert out.returncode == 1 and "user rl-no-such-user does not exist" in out.stderr, out


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_a_rootless_containers_users_are_fenced_too(backend, netns, staged, job_user):
    """A rootless container's user 1000 runs on the host as the runner's subordinate id start + 999;
    with `--network host` its sockets are that id's, not the runner's. The fence reads the runner's
    ranges from /etc/subuid (issue 20). Before (b630374) only the runner's own uid was matched: this
    id reached both addresses."""
    need_tools(backend, "usermod", *(("ip6tables",) if backend == "iptables" else ()))
    user = job_user[0]
    base = 4_000_000 + (job_user[1] % 1000) * 65536
    run("usermod", "--add-subuids", f"{base}-{base + 65535}", user)
    script = staged / "usr/lib/runner-lifecycle/imds-fence"
    container_user = str(base + 999)
    try:
        assert_open(netns, container_user)  # teeth: without the rules the id gets in
        assert fence(netns, script, "apply", backend).returncode == 0
        assert_fenced(netns, container_user)
        assert_fenced(netns, user)
        assert fence(netns, script, "remove").returncode == 0
        assert_open(netns, container_user)
    finally:
        fence(netns, script, "remove")
        run("usermod", "--del-subuids", f"{base}-{base + 65535}", user, check=False)
