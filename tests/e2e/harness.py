"""Running the real ``runner-lifecycle`` binary against the emulators (tests/support).

A :class:`Host` is one emulated EC2 instance: its Auto Scaling group member in the moto
extension, its IMDSv2 endpoint, a fake runner directory whose job hooks call the binary, and
the agent process (:class:`AgentProc`) with JSON logs in a file the test can search.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
BIN_ENV = "RUNNER_LIFECYCLE_BIN"


def binary() -> Path:
    """The binary under test: $RUNNER_LIFECYCLE_BIN, else a fresh debug build."""
    given = os.environ.get(BIN_ENV)
    if given:
        path = Path(given)
        if not path.exists():
            raise RuntimeError(f"{BIN_ENV}={given} does not exist")
        return path
    subprocess.run(
        ["cargo", "build", "--quiet", "--bin", "runner-lifecycle"], cwd=REPO, check=True, timeout=900
    )
    return REPO / "target" / "debug" / "runner-lifecycle"


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def parse_ts(text: str) -> float:
    """tracing's RFC 3339 timestamp (UTC, 'Z') -> Unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class AgentProc:
    """One `runner-lifecycle agent` process with its log file."""

    def __init__(self, bin_path: Path, env: dict[str, str], log_path: Path, args: Iterable[str] = ()) -> None:
        self.log_path = log_path
        self._log = open(log_path, "a")
        # A session of its own: pytest's terminal signals never reach it (nor its listener).
        self.proc = subprocess.Popen(
            [str(bin_path), "agent", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.pid = self.proc.pid

    def lines(self) -> list[dict[str, Any]]:
        """The agent's JSON log records so far (the listener's own output is skipped)."""
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    pass
        return out

    def records(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.lines() if all(r.get(k) == v for k, v in match.items())]

    def wait_record(self, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
        found = wait_for(lambda: self.records(**match), timeout, f"agent log record {match}\n{self.tail()}")
        return found[0]

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {timeout} s\n{self.tail()}") from None

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self._log.close()


def ask_socket(path: Path, payload: bytes, timeout: float = 5.0) -> str:
    """Send raw bytes to the hook socket and return the first reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").strip()


@dataclass
class Host:
    """One emulated instance with its runner and (once started) its agent."""

    bin: Path
    aws: Any
    broker: Any
    instance_id: str
    group: str
    imds: Any
    runner: Any
    tmp: Path
    env: dict[str, str]
    agents: list[AgentProc] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return Path(self.env["RUNNER_LIFECYCLE_AGENT_SOCKET"])

    @property
    def agent(self) -> AgentProc:
        return self.agents[-1]

    def start_agent(self, *args: str, **env: str) -> AgentProc:
        agent = AgentProc(self.bin, {**self.env, **env}, self.tmp / f"agent-{len(self.agents)}.log", args)
        self.agents.append(agent)
        return agent

    def start_serving(self, **env: str) -> AgentProc:
        """Start the agent and wait until its listener polls for jobs."""
        agent = self.start_agent(**env)
        self.broker.wait_listening(self.runner.name, timeout=30)
        return agent

    def asg(self) -> Any:
        return self.aws.client("autoscaling")

    def described(self) -> dict[str, Any] | None:
        out = self.asg().describe_auto_scaling_instances(InstanceIds=[self.instance_id])["AutoScalingInstances"]
        return out[0] if out else None

    def protected(self) -> bool | None:
        d = self.described()
        return None if d is None else bool(d["ProtectedFromScaleIn"])

    def terminate(self) -> float:
        """TerminateInstanceInAutoScalingGroup (goes through the termination hook, protection or
        not); returns the monotonic time it was sent."""
        t = time.monotonic()
        self.asg().terminate_instance_in_auto_scaling_group(
            InstanceId=self.instance_id, ShouldDecrementDesiredCapacity=True
        )
        return t

    def calls(self, action: str | None = None, ok: bool | None = None) -> list[Any]:
        out = self.aws.calls(action=action, instance_id=self.instance_id)
        if ok is not None:
            out = [c for c in out if (c.status == 200) == ok]
        return out

    def state_changes(self) -> list[tuple[float, float, str]]:
        return self.aws.history(self.instance_id)

    def entered(self, state: str) -> tuple[float, float]:
        """(monotonic, wall) when the instance first entered ``state``."""
        for mono, wall, s in self.state_changes():
            if s == state:
                return mono, wall
        raise AssertionError(f"{self.instance_id} never entered {state}: {self.state_changes()}")

    def gone(self) -> bool:
        return self.described() is None

    def status(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`runner-lifecycle status ARGS` against this host's agent."""
        return subprocess.run([str(self.bin), "status", *args], env={**self.env, **env}, capture_output=True,
                              text=True, timeout=20)

    def status_json(self) -> dict[str, Any]:
        """`status --json`: exactly one line of JSON, exit 0."""
        r = self.status("--json")
        assert r.returncode == 0, r
        assert len(r.stdout.splitlines()) == 1, r.stdout
        return json.loads(r.stdout)

    def hook(self, event: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `runner-lifecycle hook <event>` the way the runner would (the listener's env)."""
        full = {**self.env, "RUNNER_LIFECYCLE_AWS_GROUP": self.group, **env}
        return subprocess.run([str(self.bin), "hook", event], env=full, capture_output=True, text=True, timeout=60)

    def close(self) -> None:
        for a in self.agents:
            a.close()
        remove_agent_cgroups(self.socket)


def cgroup_tag(key: str) -> str:
    """The agent's tag for its cgroup outside systemd (lifecycle_agent::isolation::tag: FNV-1a)."""
    h = 0x811C9DC5
    for b in key.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


def remove_agent_cgroups(socket_path: Path) -> None:
    """Remove the cgroups an agent made under its own (outside systemd) for its listeners, once the
    test's agents are gone: what is still in them is killed first (the agent does this itself when it
    exits cleanly; a test that SIGKILLs it leaves them)."""
    mount = next((Path(l.split(" - ")[0].split()[4]) for l in Path("/proc/self/mountinfo").read_text().splitlines()
                  if " - cgroup2 " in l), None)
    if mount is None:
        return
    own = next((l[3:].strip() for l in Path("/proc/self/cgroup").read_text().splitlines() if l.startswith("0::")), "/")
    base = mount / own.lstrip("/") / f"runner-lifecycle-{cgroup_tag(str(socket_path))}"
    if not base.is_dir():
        return
    for child in [c for c in base.iterdir() if c.is_dir()]:
        try:
            if (child / "cgroup.kill").exists():
                (child / "cgroup.kill").write_text("1")
            deadline = time.monotonic() + 5
            while "populated 1" in (child / "cgroup.events").read_text() and time.monotonic() < deadline:
                time.sleep(0.01)
            child.rmdir()
        except OSError:
            pass
    try:
        base.rmdir()
    except OSError:
        pass


def fd_count(pid: int) -> int:
    """Open file descriptors of a process (the agent's bound under a connection flood)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def agent_env(endpoint_url: str, imds_url: str, runner_path: Path, socket_dir: Path) -> dict[str, str]:
    """The environment of an agent under test: loopback AWS and IMDS, its runner and socket, and short
    but realistic knobs so each test takes seconds, not minutes."""
    from support.env import aws_env

    env = aws_env(endpoint_url, imds_url)
    env.update({
        "RUNNER_LIFECYCLE_CONFIG": "/dev/null",
        "RUNNER_LIFECYCLE_RUNNER_DIR": str(runner_path),
        "RUNNER_LIFECYCLE_AGENT_SOCKET": str(socket_dir / "agent.sock"),
        "RUNNER_LIFECYCLE_AGENT_LOG_FORMAT": "json",
        "RUNNER_LIFECYCLE_AWS_IMDS_ENDPOINT": imds_url,
        "RUNNER_LIFECYCLE_AWS_IMDS_POLL": "250ms",
        "RUNNER_LIFECYCLE_DRAIN_UNPROTECT_DELAY": "1s",
        "RUNNER_LIFECYCLE_RUNNER_RELAUNCH_DELAY": "1s",
        "RUNNER_LIFECYCLE_RUNNER_STOP_GRACE": "10s",
        # A registered runner (the fake runner's .runner): the tests of JIT mode, the default, set
        # runner_mode="jit" and the controller's endpoint (tests/e2e/test_agent_jit.py).
        "RUNNER_LIFECYCLE_RUNNER_MODE": "persistent",
    })
    return env


def hook_scripts(bin_path: Path) -> dict[str, str]:
    """Job hook bodies as an installer would write them."""
    return {
        "started": f'exec "{bin_path}" hook job-started\n',
        "completed": f'exec "{bin_path}" hook job-completed\n',
    }


def stop_agent(agent: AgentProc, timeout: float = 30.0) -> int:
    if not agent.running():
        return agent.proc.returncode
    agent.signal(signal.SIGTERM)
    return agent.wait(timeout)
