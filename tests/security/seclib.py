"""Helpers of the host-security tests (fixtures in conftest.py). They need root (CI runs as root);
a test that needs a tool skips, naming it, when it is absent; scripts/test installs them (Debian
packages nftables, iptables, iproute2)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
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


