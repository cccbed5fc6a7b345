"""The agent unit's capability set, checked against the kernel rather than assumed.

The unit runs the agent as root with `CapabilityBoundingSet=` and `NoNewPrivileges=yes`; a root
process then holds exactly the bounding set. `setpriv --bounding-set ... --no-new-privs` puts a
process in the same position, so each capability can be shown necessary and the set sufficient:
start a process as the runner's user, signal it, read its /proc/PID/exe (adoption). And the
other side: the runner's user (the job) can neither signal a root process nor remove or replace
what is in a root-owned 0755 directory (the hook socket's), though it can connect to the socket.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from seclib import run


def unit_caps(rl_bin: Path) -> list[str]:
    """The CapabilityBoundingSet of the rendered agent unit, as setpriv names (`sys_ptrace`)."""
    unit = run(str(rl_bin), "install", "--print-unit").stdout
    line = next(ln for ln in unit.splitlines() if ln.startswith("CapabilityBoundingSet="))
    caps = line.split("=", 1)[1].split()
    assert caps and all(c.startswith("CAP_") for c in caps), line
    return [c[4:].lower() for c in caps]


def bounded(caps: list[str]) -> list[str]:
    return ["setpriv", "--bounding-set=-all" + "".join(f",+{c}" for c in caps), "--no-new-privs"]


@pytest.fixture
def job_process(job_user) -> Iterator[int]:
    """A long-lived process of the runner's user (a listener, a job)."""
    name = job_user[0]
    p = subprocess.Popen(["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups", "sleep", "120"])
    time.sleep(0.2)
    try:
        yield p.pid
    finally:
        p.kill()
        p.wait(timeout=10)


def test_the_units_capabilities_are_exactly_what_the_agent_needs(rl_bin, job_user, job_process):
    caps = unit_caps(rl_bin)
    assert sorted(caps) == sorted(["setuid", "setgid", "kill", "sys_ptrace", "chown"]), caps
    name, uid, _ = job_user
    exe = f"/proc/{job_process}/exe"

    # With the unit's set: adopt (read exe), signal, start a process as the runner's user.
    out = run(*bounded(caps), "readlink", exe, check=False)
    assert out.returncode == 0 and out.stdout.strip().endswith("/sleep"), out
    assert run(*bounded(caps), "kill", "-0", str(job_process), check=False).returncode == 0
    out = run(*bounded(caps), "setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups",
              "sh", "-c", "id -u; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status", check=False)
    assert out.returncode == 0, out
    first, *status = out.stdout.splitlines()
    assert first == str(uid), out.stdout
    fields = dict(ln.split(":", 1) for ln in status)
    # The listener holds no capability at all and can never gain one (no setuid binary works).
    assert int(fields["CapPrm"], 16) == 0 and int(fields["CapEff"], 16) == 0, out.stdout
    assert fields["NoNewPrivs"].strip() == "1", out.stdout

    # Each capability is needed.
    without = lambda c: [x for x in caps if x != c]  # noqa: E731
    assert run(*bounded(without("sys_ptrace")), "readlink", exe, check=False).returncode != 0
    assert run(*bounded(without("kill")), "kill", "-0", str(job_process), check=False).returncode != 0
    for c in ("setuid", "setgid"):
        out = run(*bounded(without(c)), "setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups", "true",
                  check=False)
        assert out.returncode != 0, (c, out)

    # CAP_CHOWN: the agent gives its socket to the runner's group (a group root is not in).
    _, _, gid = job_user
    with tempfile.TemporaryDirectory() as d:
        sock = os.path.join(d, "sock")
        open(sock, "w").close()
        # Without first: once the file has that group, chgrp to it again is a no-op the owner may do
        # without CAP_CHOWN (fs/attr.c chgrp_ok), so the order matters.
        assert run(*bounded(without("chown")), "chgrp", str(gid), sock, check=False).returncode != 0
        assert run(*bounded(caps), "chgrp", str(gid), sock, check=False).returncode == 0

    # CAP_DAC_READ_SEARCH does not replace CAP_SYS_PTRACE for another uid's exe link (the kernel
    # asks ptrace_may_access(PTRACE_MODE_READ_FSCREDS), fs/proc/base.c).
    out = run(*bounded([*without("sys_ptrace"), "dac_read_search"]), "readlink", exe, check=False)
    assert out.returncode != 0, out


def test_the_job_cannot_signal_a_root_agent(job_user):
    name = job_user[0]
    agent = subprocess.Popen(["sleep", "120"])
    try:
        out = run("setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups",
                  "kill", "-TERM", str(agent.pid), check=False)
        assert out.returncode != 0 and "not permitted" in out.stderr, out
        assert agent.poll() is None
    finally:
        agent.kill()
        agent.wait(timeout=10)


def test_the_job_can_connect_to_the_socket_but_not_replace_it(job_user):
    """RuntimeDirectoryMode=0755, root-owned: what the job may do with the hook socket."""
    name = job_user[0]
    base = Path(tempfile.mkdtemp(prefix="rl-sock-", dir="/tmp"))
    run_dir = base / "runner-lifecycle"
    run_dir.mkdir()
    os.chmod(base, 0o755)
    os.chmod(run_dir, 0o755)
    path = run_dir / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    # The socket's own mode says who may connect (the agent's business); open it up here so the
    # directory's part is what is tested.
    os.chmod(path, 0o666)
    as_job = ["setpriv", f"--reuid={name}", f"--regid={name}", "--init-groups"]
    try:
        client = (
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')"
        )
        out = run(*as_job, "/usr/bin/python3", "-c", client, str(path), check=False)
        assert out.returncode == 0 and "connected" in out.stdout, out
        for attempt in (["rm", "-f", str(path)], ["mv", str(path), str(run_dir / "x")],
                        ["touch", str(run_dir / "agent.sock.new")]):
            out = run(*as_job, *attempt, check=False)
            assert out.returncode != 0, (attempt, out)
        assert path.exists()
    finally:
        server.close()
        shutil.rmtree(base, ignore_errors=True)
