#!/usr/bin/env python3
"""Handover benchmark: what the handover guard (docs/agent.md, "The handover") costs and what it
saves, with and without it, in one run on the same emulators.

For each setting (guard on: the perf-log latch and the release of the JIT registration; guard off:
`drain.handover_latch=false`, `drain.release_registration=false`) it runs:

* idle scale-ins of a JIT host: seconds from TerminateInstanceInAutoScalingGroup to the
  CompleteLifecycleAction the emulator received (the host's idle time in Terminating:Wait), and the
  GitHub REST calls the controller made per scale-in (FakeGitHub's request log);
* scale-ins in the handover window: a job handed to the idle listener, the host scaled in while
  the job is in W1 (acquiring) or W2 (acquired, first renewal pending), with each window stretched
  to 2 s; the job's fate (ran, re-queued, lost).

Everything runs on loopback: the moto emulator with the lifecycle extension, IMDS per instance, the
stand-in runner and broker, FakeGitHub and the real controller behind a SigV4-verifying function URL
(tests/support). Run from the repository root:

    .venv/bin/python bench/handover_bench.py [--runs 10]

The binary is $RUNNER_LIFECYCLE_BIN, else target/release/runner-lifecycle (built if missing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_bench import REPO, Bench, binary, pct, wait_for  # noqa: E402  (sets the loopback AWS env)

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from support.env import aws_env as loopback_env  # noqa: E402
from support.jit_controller import instance_key, jit_controller  # noqa: E402

GUARD_OFF = {"RUNNER_LIFECYCLE_DRAIN_HANDOVER_LATCH": "false",
             "RUNNER_LIFECYCLE_DRAIN_RELEASE_REGISTRATION": "false"}


class HandoverBench(Bench):
    def __init__(self, work: Path, bin_path: Path, stack: ExitStack) -> None:
        super().__init__(work, bin_path)
        self.stack = stack

    def jit_host(self, guard: bool):
        """A JIT host with its own controller chain; returns (host, controller)."""
        self.n += 1
        name = f"jit-{self.n}"
        iid = self.aws.create_group(name=name, size=1, hook_timeout=30)[0]
        key = instance_key(iid)

        def env(**extra: str) -> dict[str, str]:
            return loopback_env(self.aws.endpoint_url, None, **extra)

        ctl = self.stack.enter_context(jit_controller(self.bin, self.broker, env, self.work / f"{name}-ctl.log",
                                                      {iid: key}, groups=name))
        extra = {"RUNNER_LIFECYCLE_RUNNER_MODE": "jit", "RUNNER_LIFECYCLE_RUNNER_JIT_URL": ctl.url, **key.env()}
        if not guard:
            extra.update(GUARD_OFF)
        h = self.start_host(name, iid, configured=False, extra=extra, wait=False)
        wait_for(lambda: ctl.minted(), 30, "the first JIT config")
        self.broker.wait_listening(ctl.minted()[0], timeout=30)
        h["runner_name"] = ctl.minted()[0]
        return h, ctl

    def terminate(self, h: dict) -> float:
        t = time.monotonic()
        self.aws.client("autoscaling").terminate_instance_in_auto_scaling_group(
            InstanceId=h["iid"], ShouldDecrementDesiredCapacity=True)
        return t

    def completed(self, h: dict) -> bool:
        return any(c.status == 200 for c in self.aws.calls(action="CompleteLifecycleAction", instance_id=h["iid"]))


def github_calls(ctl) -> int:
    """REST calls the controller made, less the mints (those are per job, not per scale-in)."""
    return sum(1 for m, p, _ in ctl.github.requests if not p.endswith("/generate-jitconfig"))


def idle_scale_ins(b: HandoverBench, guard: bool, runs: int) -> tuple[list[float], list[int]]:
    waits, calls = [], []
    for _ in range(runs):
        h, ctl = b.jit_host(guard)
        before = github_calls(ctl)
        sent = b.terminate(h)
        wait_for(lambda: b.completed(h), 60, "CompleteLifecycleAction")
        waits.append(time.monotonic() - sent)
        calls.append(github_calls(ctl) - before)
        b.stop(h)
    return waits, calls


def window_scale_ins(b: HandoverBench, guard: bool, window: str, runs: int) -> dict[str, int]:
    knob = {"W1": "acquire_delay_s", "W2": "renew_delay_s"}[window]
    fates: dict[str, int] = {}
    for _ in range(runs):
        h, ctl = b.jit_host(guard)
        job = b.broker.assign_job(0.5, runner=h["runner_name"], **{knob: 2.0})
        b.broker.wait_window(job, window, timeout=10)
        b.terminate(h)
        fate = b.broker.wait_handover(job, timeout=30)
        wait_for(lambda: b.completed(h), 60, "CompleteLifecycleAction")
        fates[fate] = fates.get(fate, 0) + 1
        if fate != "ran":
            b.broker.cancel_job(job)
        b.stop(h)
    return fates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="scale-ins per setting and scenario")
    args = ap.parse_args()
    bin_path = binary()
    with tempfile.TemporaryDirectory(prefix="rl-handover-bench-") as tmp, ExitStack() as stack:
        b = HandoverBench(Path(tmp), bin_path, stack)
        stack.callback(b.close)
        print(f"runner-lifecycle handover bench: {args.runs} scale-ins per row, binary {bin_path}")
        print(f"  {'guard':<6}{'idle: terminate -> complete p50 / p95 s':>42}{'GitHub calls / scale-in':>26}"
              f"{'W1 fates':>26}{'W2 fates':>26}")
        for guard in (True, False):
            waits, calls = idle_scale_ins(b, guard, args.runs)
            w1 = window_scale_ins(b, guard, "W1", args.runs)
            w2 = window_scale_ins(b, guard, "W2", args.runs)
            fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items()))  # noqa: E731
            print(f"  {'on' if guard else 'off':<6}{f'{pct(waits, 0.5):.2f} / {pct(waits, 0.95):.2f}':>42}"
                  f"{statistics.mean(calls):>26.1f}{fmt(w1):>26}{fmt(w2):>26}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
