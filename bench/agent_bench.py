#!/usr/bin/env python3
"""Agent benchmark: prints, in one run, the figures issue 3 asks for.

* job-started hook wall time (p50/p95) with the agent up, next to a bash script that calls
  ``aws autoscaling set-instance-protection`` (the source PR's approach) on the same emulator;
* detection latency (IMDS target state turns Terminated -> listener signalled) and completion
  latency (job's worker exits -> CompleteLifecycleAction received by the emulator), p50, at the
  agent's default settings;
* the agent's resident memory and CPU while idle, and Auto Scaling calls per idle instance-hour
  (extrapolated from a measured idle period).

Everything runs on loopback: the moto emulator with the lifecycle extension, one IMDSv2 emulator
per instance, the fake runner and its job broker (tests/support). Run from the repository root:

    .venv/bin/pip install -r tests/requirements.txt        # emulator, once
    python3 -m venv bench/.venv && bench/.venv/bin/pip install -r bench/requirements.txt   # awscli, once
    .venv/bin/python bench/agent_bench.py [--idle-seconds 60] [--hook-runs 200]

The binary is $RUNNER_LIFECYCLE_BIN, else target/release/runner-lifecycle (built if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_CONFIG_FILE"] = "/dev/null"
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = "/dev/null"

from support.aws_emulator import AwsEmulator  # noqa: E402
from support.env import aws_env  # noqa: E402
from support.fake_runner import Broker, install_fake_runner  # noqa: E402

AWS_CLI = REPO / "bench" / ".venv" / "bin" / "aws"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def binary() -> Path:
    given = os.environ.get("RUNNER_LIFECYCLE_BIN")
    if given:
        return Path(given)
    path = REPO / "target" / "release" / "runner-lifecycle"
    if not path.exists():
        subprocess.run(["cargo", "build", "--release", "--bin", "runner-lifecycle"], cwd=REPO, check=True)
    return path


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait_for(pred, timeout: float, what: str, every: float = 0.01):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(every)


class Bench:
    def __init__(self, work: Path, bin_path: Path) -> None:
        self.work = work
        self.bin = bin_path
        self.aws = AwsEmulator(test_mode=True).start()
        self.broker = Broker().start()
        self.n = 0

    def close(self) -> None:
        self.broker.stop()
        self.aws.stop()

    def host(self, hook_timeout: int = 30) -> dict:
        """A one-instance group, its IMDS, a fake runner with our hooks, and the agent (defaults)."""
        self.n += 1
        name = f"bench-{self.n}"
        iid = self.aws.create_group(name=name, size=1, hook_timeout=hook_timeout)[0]
        return self.start_host(name, iid)

    def start_host(self, name: str, iid: str, configured: bool = True, extra: dict | None = None,
                   wait: bool = True) -> dict:
        """The agent on instance ``iid`` with a fake runner (registered unless ``configured`` is
        False: JIT mode brings its config); ``extra`` adds to its environment; ``wait`` waits until
        the registered listener polls."""
        imds = self.aws.imds_for(iid)
        runner = install_fake_runner(self.work / name, self.broker.url, name=name, configured=configured)
        runner.set_hooks(started=f'exec "{self.bin}" hook job-started\n',
                         completed=f'exec "{self.bin}" hook job-completed\n')
        env = aws_env(self.aws.endpoint_url, imds.url)
        sock = self.work / f"{name}.sock"
        # A registered runner: the hook, detection and completion figures do not depend on the
        # listener mode, and the JIT chain would add the controller's emulators to every host.
        env.update(RUNNER_LIFECYCLE_CONFIG="/dev/null", RUNNER_LIFECYCLE_RUNNER_DIR=str(runner.path),
                   RUNNER_LIFECYCLE_AGENT_SOCKET=str(sock), RUNNER_LIFECYCLE_AGENT_LOG_FORMAT="json",
                   RUNNER_LIFECYCLE_RUNNER_MODE="persistent")
        env.update(extra or {})
        log = self.work / f"{name}.log"
        proc = subprocess.Popen([str(self.bin), "agent"], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        if wait:
            self.broker.wait_listening(name, timeout=30)
        return {"name": name, "iid": iid, "imds": imds, "runner": runner, "env": env, "sock": sock,
                "log": log, "proc": proc, "group": name}

    @staticmethod
    def records(h: dict, **match) -> list[dict]:
        out = []
        for line in h["log"].read_text(errors="replace").splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                if all(r.get(k) == v for k, v in match.items()):
                    out.append(r)
        return out

    @staticmethod
    def stop(h: dict) -> None:
        if h["proc"].poll() is None:
            h["proc"].send_signal(15)
            try:
                h["proc"].wait(timeout=30)
            except subprocess.TimeoutExpired:
                h["proc"].kill()


def hook_times(b: Bench, runs: int) -> tuple[list[float], list[float], dict]:
    h = b.host()
    env = {**h["env"], "RUNNER_LIFECYCLE_AWS_GROUP": h["group"]}
    ours = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run([str(b.bin), "hook", "job-started"], env=env, capture_output=True, text=True)
        ours.append(time.perf_counter() - t)
        assert r.returncode == 0 and "runner-lifecycle: job-started:" in r.stdout, r
    subprocess.run([str(b.bin), "hook", "job-completed"], env=env, capture_output=True, check=True)

    script = b.work / "set-protection.sh"
    script.write_text(
        "#!/bin/bash\n# The source PR's job-started hook, reduced to its AWS call.\n"
        f'exec "{AWS_CLI}" autoscaling set-instance-protection --instance-ids "$INSTANCE_ID" '
        '--auto-scaling-group-name "$GROUP" --protected-from-scale-in\n'
    )
    script.chmod(0o755)
    cli_env = {**h["env"], "INSTANCE_ID": h["iid"], "GROUP": h["group"]}
    theirs = []
    for _ in range(max(10, runs // 10)):
        t = time.perf_counter()
        r = subprocess.run([str(script)], env=cli_env, capture_output=True, text=True)
        theirs.append(time.perf_counter() - t)
        assert r.returncode == 0, r.stderr
    return ours, theirs, h


def idle_figures(b: Bench, h: dict, seconds: float) -> dict:
    pid = h["proc"].pid
    # Let the job-completed hook's unprotect delay (30 s default) pass first: idle means idle.
    wait_for(lambda: not b.aws.client("autoscaling").describe_auto_scaling_instances(
        InstanceIds=[h["iid"]])["AutoScalingInstances"][0]["ProtectedFromScaleIn"], 60, "unprotected", every=0.5)
    time.sleep(1.0)

    def cpu_ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    calls_before = len(b.aws.calls(instance_id=h["iid"]))
    imds_before = len(h["imds"].requests)
    t0, c0 = time.monotonic(), cpu_ticks()
    time.sleep(seconds)
    t1, c1 = time.monotonic(), cpu_ticks()
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    calls = len(b.aws.calls(instance_id=h["iid"])) - calls_before
    return {
        "seconds": t1 - t0,
        "cpu_pct": 100.0 * (c1 - c0) / CLK_TCK / (t1 - t0),
        "rss_kb": int(status["VmRSS"].split()[0]),
        "hwm_kb": int(status["VmHWM"].split()[0]),
        "asg_calls": calls,
        "calls_per_hour": calls * 3600.0 / (t1 - t0),
        "imds_requests_per_s": (len(h["imds"].requests) - imds_before) / (t1 - t0),
    }


def detection(b: Bench, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        h = b.host()
        # A random phase against the agent's 1 s IMDS poll, so the samples cover the whole period.
        time.sleep(random.uniform(0.5, 1.5))
        asg = b.aws.client("autoscaling")
        asg.set_desired_capacity(AutoScalingGroupName=h["group"], DesiredCapacity=0)
        wall = next(w for _m, w, s in b.aws.history(h["iid"]) if s == "Terminating:Wait")
        rec = wait_for(lambda: b.records(h, action="stop-listener"), 10, "stop-listener")[0]
        out.append(ts(rec["timestamp"]) - wall)
        wait_for(lambda: b.aws.calls("CompleteLifecycleAction", instance_id=h["iid"]), 10, "complete")
        b.stop(h)
    return out


def completion(b: Bench, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        h = b.host()
        job = b.broker.assign_job(1.5, runner=h["name"])
        b.broker.wait_worker_started(job)
        b.aws.client("autoscaling").terminate_instance_in_auto_scaling_group(
            InstanceId=h["iid"], ShouldDecrementDesiredCapacity=True)
        assert b.broker.wait_outcome(job, timeout=30) == "succeeded"
        ended = b.broker.job(job).ended_at
        call = wait_for(lambda: [c for c in b.aws.calls("CompleteLifecycleAction", instance_id=h["iid"])
                                 if c.status == 200], 10, "complete")[0]
        out.append(call.monotonic - ended)
        b.stop(h)
    return out


def kill_strays(work: Path) -> None:
    """SIGKILL fake runner processes of this run left behind (matched by pid via their path)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.decode(errors="replace").startswith(str(work) + "/") for a in args):
            try:
                os.kill(int(d.name), 9)
            except OSError:
                pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--hook-runs", type=int, default=200)
    ap.add_argument("--latency-runs", type=int, default=9)
    args = ap.parse_args()
    if not AWS_CLI.exists():
        print(f"missing {AWS_CLI}: python3 -m venv bench/.venv && bench/.venv/bin/pip install -r bench/requirements.txt")
        return 2
    bin_path = binary()
    work = Path(tempfile.mkdtemp(prefix="rl-bench-"))
    b = Bench(work, bin_path)
    try:
        ours, theirs, h = hook_times(b, args.hook_runs)
        idle = idle_figures(b, h, args.idle_seconds)
        b.stop(h)
        det = detection(b, args.latency_runs)
        comp = completion(b, args.latency_runs)
    finally:
        b.close()
        kill_strays(work)
        shutil.rmtree(work, ignore_errors=True)

    ms = lambda v: f"{v * 1000:8.1f} ms"  # noqa: E731
    print(f"runner-lifecycle agent benchmark ({bin_path.relative_to(REPO) if bin_path.is_relative_to(REPO) else bin_path})")
    print(f"{'':44}{'p50':>11}{'p95':>11}")
    print(f"{'job-started hook, agent up':44}{ms(pct(ours, .5)):>11}{ms(pct(ours, .95)):>11}   n={len(ours)}")
    print(f"{'bash + aws autoscaling set-instance-protection':44}{ms(pct(theirs, .5)):>11}{ms(pct(theirs, .95)):>11}"
          f"   n={len(theirs)}")
    print(f"{'  speed-up (p50)':44}{pct(theirs, .5) / pct(ours, .5):>10.0f}x")
    print(f"{'detection: IMDS Terminated -> SIGINT':44}{ms(statistics.median(det)):>11}{ms(max(det)):>11}"
          f"   n={len(det)} (second column: max)")
    print(f"{'completion: worker exit -> Complete received':44}{ms(statistics.median(comp)):>11}{ms(max(comp)):>11}"
          f"   n={len(comp)} (second column: max)")
    print(f"idle agent over {idle['seconds']:.0f} s: RSS {idle['rss_kb'] / 1024:.1f} MiB (peak {idle['hwm_kb'] / 1024:.1f} MiB), "
          f"CPU {idle['cpu_pct']:.2f} %, IMDS {idle['imds_requests_per_s']:.1f} req/s")
    print(f"Auto Scaling calls while idle: {idle['asg_calls']} in {idle['seconds']:.0f} s "
          f"= {idle['calls_per_hour']:.0f} per idle instance-hour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
