"""Attacks through the network side (docs/security.md B6, B8): the job reaching IMDS for the instance
role, and hostile IMDS and GitHub answers aimed at the parsers. Real binary, real kernel rules in a
network namespace of the test's own, loopback emulators; the attacker is an unprivileged user
created by the test (the `job_user` fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from hostlib import PY, as_user, attack, wait_for  # first: puts tests/e2e on the path
from harness import stop_agent  # noqa: E402
from seclib import IMDS_V4 as V4, IMDS_V6 as V6, imds_namespace, need_tools, run  # noqa: E402
from support.controller_fixtures import aws_x, fake_github  # noqa: E402,F401  (fixtures)

# Each attack is bounded: a hung agent or emulator fails the test, fixtures still clean up.
pytestmark = pytest.mark.timeout(60)



# IMDS stand-in inside the namespace: answers any request 200 on both addresses, port 80, and
# writes one line per request to its log (so "nobody asked" is observable).
IMDS_SERVER = r"""
import sys, threading, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
log = open(sys.argv[1], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        log.write(f"{self.command} {self.path}\n")
        body = b"AQAEAHostileButValidToken=="
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_PUT = answer
class V6(ThreadingHTTPServer):
    address_family = socket.AF_INET6
for cls, addr in ((ThreadingHTTPServer, sys.argv[2]), (V6, sys.argv[3])):
    srv = cls((addr, 80), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

# The attacker: IMDSv2's token request, then the role's credentials path.
STEAL = r"""
import sys, urllib.request
host = sys.argv[1] if ":" not in sys.argv[1] else f"[{sys.argv[1]}]"
try:
    req = urllib.request.Request(f"http://{host}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    token = urllib.request.urlopen(req, timeout=3).read().decode()
    req = urllib.request.Request(f"http://{host}/latest/meta-data/iam/security-credentials/",
                                 headers={"X-aws-ec2-metadata-token": token})
    print("got", urllib.request.urlopen(req, timeout=3).status)
except OSError as e:
    print("refused", e)
    sys.exit(1)
"""


@pytest.fixture
def imds_netns(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A network namespace where both IMDS addresses answer HTTP; (name, request log)."""
    log = tmp_path / "imds-requests.log"
    log.write_text("")
    with imds_namespace("rl-sec", [PY, "-c", IMDS_SERVER, str(log), V4, V6]) as name:
        yield name, log


def in_ns(ns: str, user: str, *argv: str, env: dict[str, str] | None = None,
          timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *as_user(user, *argv)],
                          env={"PATH": "/usr/bin:/bin", **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def test_attack6_the_job_cannot_reach_imds_and_the_hook_does_not_need_it(imds_netns, staged, job_user, rl_bin):
    """Attack 6 (B6): the job asks IMDS (169.254.169.254, fd00:ec2::254) for a token and the instance
    role's credentials, then acts on every host of the group.

    Before: nothing stood in the way (IMDS answers every local process), and the job hooks
    themselves needed IMDS: with the agent unreachable they fell back to IMDS and the Auto Scaling
    API directly. After: with the fence `install` renders (nftables, in a namespace of the test's
    own), the runner's user is refused on both addresses at once while root still gets through; and
    `hook job-started` with the agent down makes no IMDS request at all (the namespace's IMDS logs
    none, fence or not) and exits 0 within a second or two. Fails on 88933a8: its hook's fallback
    asks IMDS for a token, the instance id and the role's credentials (the log is not empty); its
    `install` renders no fence either.
    """
    need_tools("nft")
    ns, log = imds_netns
    user = job_user[0]
    script = staged / "usr/lib/runner-lifecycle/imds-fence"
    hook_env = {  # where an IMDS-reading hook would go: the namespace's IMDS
        "RUNNER_LIFECYCLE_AGENT_SOCKET": f"/tmp/rl-sec-no-agent-{os.getpid()}/agent.sock",
        "RUNNER_LIFECYCLE_AWS_GROUP": "runners", "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://{V4}", "AWS_EC2_METADATA_DISABLED": "false",
        "RUNNER_LIFECYCLE_AWS_IMDS_ENDPOINT": f"http://{V4}", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }

    def hook() -> None:
        t = time.monotonic()
        r = in_ns(ns, user, str(rl_bin), "hook", "job-started", env=hook_env)
        took = time.monotonic() - t
        assert r.returncode == 0 and "unreachable" in r.stdout, r
        assert took < 2.0, f"the hook took {took:.1f} s with the agent down"
        assert log.read_text() == "", f"the hook asked IMDS: {log.read_text()}"

    # Without the fence: the attacker gets through (the test has teeth); the hook asks nothing.
    for addr in (V4, V6):
        out = in_ns(ns, user, PY, "-c", STEAL, addr)
        assert out.returncode == 0 and out.stdout.startswith("got 200"), out
    log.write_text("")
    hook()

    assert run("ip", "netns", "exec", ns, "setpriv", "--bounding-set=-all,+net_admin,+net_raw", "--no-new-privs",
               str(script), "apply", check=False).returncode == 0
    try:
        for addr in (V4, V6):
            t = time.monotonic()
            out = in_ns(ns, user, PY, "-c", STEAL, addr)
            assert out.returncode == 1 and out.stdout.startswith("refused"), out
            assert time.monotonic() - t < 2.5, "refused at once, not left to time out"
            root = subprocess.run(["ip", "netns", "exec", ns, PY, "-c", STEAL, addr], capture_output=True,
                                  text=True, timeout=30)
            assert root.returncode == 0, f"root (the agent) must still reach {addr}: {root}"
        assert "/latest/api/token" in log.read_text()
        log.write_text("")
        hook()
    finally:
        run("ip", "netns", "exec", ns, str(script), "remove", check=False)


HUGE = "18446744073709551615"


def test_attack7_a_hostile_imds_token_ttl_crashes_neither_agent_nor_hook(user_host):
    """Attack 7, IMDS side (B8): IMDS (or whatever answers at its address) grants a token with a TTL of
    18446744073709551615 s (u64::MAX).

    Before: the agent computed the token's refresh time as `now + ttl * 0.8`, which overflows
    `Instant`: a panic at its first IMDS poll (exit 134 in the release build, panic = "abort"; 101 in
    a debug build), restarted by systemd and dying again; the hook's IMDS fallback did the same.
    After: the TTL is clamped to what was asked (6 h at most): the agent keeps polling and serving,
    `hook job-started` (as the job's user) exits 0 whether the agent is up or down. Fails on
    88933a8: the agent panics at its first poll ("panicked at .../std/src/time.rs", exit 101 in the
    debug build).
    """
    host = user_host.make()
    host.imds.token_ttl_answer = HUGE
    agent = host.start_agent()
    wait_for(lambda: not agent.running() or [r for r in host.imds.requests if r[1] == "GET" and r[3] == 200], 10,
             "IMDS polled with the token")
    n = len(host.imds.requests)
    time.sleep(1.0)
    assert agent.running(), f"the agent exited {agent.proc.returncode}\n{agent.tail()}"
    host.broker.wait_listening(host.runner.name, timeout=30)
    assert len(host.imds.requests) > n, "the agent keeps polling IMDS"
    r = user_host.hook_as_user(host, "job-started")
    assert r.returncode == 0 and "runner-lifecycle: job-started:" in r.stdout and "unreachable" not in r.stdout, r
    assert agent.running()
    assert stop_agent(agent) == 0

    # Agent down: the hook still exits 0 (it reads no IMDS, hostile or not).
    env = {"RUNNER_LIFECYCLE_AGENT_SOCKET": str(host.socket), "AWS_EC2_METADATA_SERVICE_ENDPOINT": host.imds.url,
           "RUNNER_LIFECYCLE_AWS_IMDS_ENDPOINT": host.imds.url, "AWS_EC2_METADATA_DISABLED": "false",
           "AWS_ENDPOINT_URL": host.aws.endpoint_url, "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    t = time.monotonic()
    r = attack(user_host.user, str(host.bin), "hook", "job-started", env=env)
    assert r.returncode == 0 and "unreachable" in r.stdout, r
    assert time.monotonic() - t < 3.0


@pytest.mark.parametrize("headers,listed", [
    # Clamped to 15 min, beyond the client's budget: a clear "rate limit: retry in 900 s" at once.
    pytest.param((429, {"Retry-After": HUGE}), False, id="retry-after-u64-max"),
    # A reset in the past: wait 1 s, ask again, list the runners.
    pytest.param((403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "-9223372036854775808"}), True,
                 id="reset-i64-min"),
    pytest.param((403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9223372036854775807",
                        "Retry-After": "99999999999999999999999999"}), False, id="reset-i64-max-retry-after-past-u64"),
])
def test_attack7_hostile_github_rate_limit_headers_do_not_crash_the_controller(
        headers: tuple[int, dict[str, str]], listed: bool, aws_x: Any, aws_env: Any, fake_github: Any, rl_bin: Path) -> None:
    """Attack 7, GitHub side (B8): the GitHub API (or whatever answers at its URL) sends rate-limit
    headers no real answer carries: `Retry-After: 18446744073709551615`, `x-ratelimit-reset:
    -9223372036854775808` (or i64::MAX, or a Retry-After past u64).

    Before: the wait was computed as `reset - now` in i64 (overflow: a panic; 134 in the release
    build, 101 in a debug build) and `Retry-After` was taken unbounded ("retry in
    18446744073709551615 s"). After: every wait is clamped to 15 minutes and compared with the client's
    rate-limit budget: the controller's sweep ends within seconds with its report, either listing the
    runners (after a one-second wait for a reset in the past) or saying "GitHub rate limit: retry in
    900 s" and deciding nothing on missing data; never 134. Fails on 88933a8: reset-i64-min panics
    (exit 101 in the debug build); the others report a retry in 18446744073709551615 s and in
    9223372035058635091 s.
    """
    aws_x.create_group(size=1)
    env = aws_env(RUNNER_LIFECYCLE_CONTROLLER_GROUPS="runners", RUNNER_LIFECYCLE_GITHUB_URL="https://github.com/acme",
                  RUNNER_LIFECYCLE_GITHUB_API_URL=fake_github.url, RUNNER_LIFECYCLE_GITHUB_TOKEN=fake_github.token)
    fake_github.fail_next = [headers]
    t = time.monotonic()
    r = subprocess.run([str(rl_bin), "controller", "sweep", "--grace", "1s"], env=env, capture_output=True, text=True,
                       timeout=60)
    took = time.monotonic() - t
    assert r.returncode != 134 and "panicked" not in r.stderr, r
    assert took < 20.0, f"the sweep took {took:.1f} s"
    assert fake_github.requests, "the controller asked GitHub"
    assert r.returncode == 0, r
    [report] = json.loads(r.stdout.strip().splitlines()[-1])["groups"]
    assert report["github_available"] is listed, report
    if not listed:
        assert report["warnings"] == ["GitHub runners not listed: GitHub rate limit: retry in 900 s"], report
    assert report["completed_agent_gone"] == [] and report["runners_deleted"] == []
