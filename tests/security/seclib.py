"""Helpers of the host-security tests (fixtures in conftest.py). They need root (CI runs as root);
a test that needs a tool skips, naming it, when it is absent; scripts/test installs them (Debian
packages nftables, iptables, iproute2)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a user, a network namespace and firewall rules (CI runs as root)")


def need_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/test installs nftables, iptables and iproute2)")


def run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=check, **kw)




#: The instance metadata service's addresses (EC2 User Guide: IPv4, and IPv6 on Nitro).
IMDS_V4, IMDS_V6 = "169.254.169.254", "fd00:ec2::254"


@contextlib.contextmanager
def imds_namespace(prefix: str, server_argv: list[str]) -> Iterator[str]:
    """A network namespace of the test's own where both IMDS addresses are local (on a dummy device,
    or on `lo` when the kernel has no dummy driver: local addresses take the same path), with
    `server_argv` running inside it once it has printed `ready`. Yields the namespace's name; the
    server and the namespace are gone afterwards, even on failure."""
    need_root()
    need_tools("ip")
    name = f"{prefix}-{os.getpid()}"
    run("ip", "netns", "del", name, check=False)
    run("ip", "netns", "add", name)
    server = None
    try:
        ns = ("ip", "netns", "exec", name)
        run(*ns, "ip", "link", "set", "lo", "up")
        dev = "imds0"
        if run(*ns, "ip", "link", "add", dev, "type", "dummy", check=False).returncode == 0:
            run(*ns, "ip", "link", "set", dev, "up")
        else:
            dev = "lo"
        run(*ns, "ip", "addr", "add", f"{IMDS_V4}/32", "dev", dev)
        run(*ns, "ip", "-6", "addr", "add", f"{IMDS_V6}/128", "dev", dev, "nodad")
        server = subprocess.Popen([*ns, *server_argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield name
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        run("ip", "netns", "del", name, check=False)
