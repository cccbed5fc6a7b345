"""Fake ``bin/Runner.Worker``: runs one job handed over by the listener.

``Runner.Worker spawnclient <in-fd> <out-fd>`` (src/Runner.Worker/Program.cs) reads the job
from the listener's pipe, then runs the job's steps (src/Runner.Worker/JobExtension.cs,
StepsRunner.cs):

1. the job-started hook (ACTIONS_RUNNER_HOOK_JOB_STARTED), condition ``always()``;
2. the job's own work (``duration_s`` of sleep), condition ``success()``;
3. the job-completed hook (ACTIONS_RUNNER_HOOK_JOB_COMPLETED), a post-job step, ``always()``.

A hook exiting non-zero fails its step and so the job; a failing completed hook fails a green
job. Cancellation:

* CancelRequest (the service cancelled the job): the running step is cancelled unless its
  condition is ``always()``; ``always()`` steps still run; the result is Canceled.
* RunnerShutdown (SIGINT/SIGTERM to the listener, or to this process; Worker.cs
  Worker_Unloading): the result is Failed with the "received a shutdown signal" issue
  (JobRunner.cs), the running step is cancelled and no further step runs, because conditions
  are not evaluated on runner shutdown (StepsRunner.cs) -- so the completed hook does *not* run.
* The listener's pipe closing (listener killed): the channel read fails, the exception is
  unhandled and the worker exits 1 without reporting a result (Worker.cs, Program.cs); the
  service later fails the job for lost communication.

The worker exits with 100 + TaskResult (TaskResultUtil.cs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import SHUTDOWN_MESSAGE, http_json, result_to_code

#: ProcessInvoker.cs: a cancelled process gets SIGINT, then SIGTERM after 7.5 s, then SIGKILL
#: after 2.5 s more.
SIGINT_GRACE_S = 7.5
SIGTERM_GRACE_S = 2.5


class Worker:
    def __init__(self, root: Path, channel_in: int) -> None:
        self.root = root
        self.channel = os.fdopen(channel_in, "r")
        self.cancel = threading.Event()  # CancelRequest
        self.shutdown = threading.Event()  # RunnerShutdown
        self.channel_lost = threading.Event()
        self.changed = threading.Event()
        self.job: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    def post(self, kind: str, body: dict[str, Any]) -> None:
        try:
            http_json("POST", f"{self.job['server_url'].rstrip('/')}/jobs/{self.job['job_id']}/{kind}", body, timeout=5)
        except OSError:
            pass

    def read_channel(self) -> None:
        """Worker.cs: after the job starts, wait for a cancel message from the channel."""
        for line in self.channel:
            msg = json.loads(line)
            kind = msg.get("messageType")
            if kind == "CancelRequest":
                self.cancel.set()
            elif kind in ("RunnerShutdown", "OperatingSystemShutdown"):
                self.shutdown.set()
            self.changed.set()
        # EOF: the listener's end of the pipe is gone.
        self.channel_lost.set()
        self.changed.set()

    def on_signal(self, _signum: int, _frame: Any) -> None:
        self.shutdown.set()
        self.changed.set()

    # ------------------------------------------------------------------- steps
    def _interrupt(self, always: bool) -> bool:
        """Whether the running step must stop now (StepsRunner.cs job-cancel registration)."""
        if self.channel_lost.is_set() or self.shutdown.is_set():
            return True
        return self.cancel.is_set() and not always

    def _stop_process(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, grace in ((signal.SIGINT, SIGINT_GRACE_S), (signal.SIGTERM, SIGTERM_GRACE_S)):
            try:
                os.killpg(proc.pid, sig)
            except OSError:
                return
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()

    def run_hook(self, stage: str, path: str) -> bool:
        """src/Runner.Worker/JobHookProvider.cs RunHook. Returns True on success."""
        started = time.monotonic()
        if not os.path.isfile(path):
            output, code = "File doesn't exist", None
        elif not path.endswith(".sh"):
            # HostContext.GetDefaultShellForScript accepts .sh, .ps1 and .js; only .sh here.
            output, code = (f"{path} is not a valid path to a script. Make sure it ends in '.sh', '.ps1' or '.js'.", None)
        else:
            shell = shutil.which("bash") or shutil.which("sh") or "/bin/sh"
            # ScriptHandlerHelpers.cs: bash runs scripts as "--noprofile --norc -e -o pipefail {0}".
            argv = [shell, "--noprofile", "--norc", "-e", "-o", "pipefail", path] if shell.endswith("bash") else [shell, "-e", path]
            env = dict(os.environ)
            env.update(self.job_env())
            workspace = Path(env["GITHUB_WORKSPACE"])
            workspace.mkdir(parents=True, exist_ok=True)
            log = self.root / "_diag" / f"hook-{self.job['job_id']}-{stage}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as sink:
                proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=str(workspace),
                                        start_new_session=True)
                self.proc = proc
                while proc.poll() is None:
                    # Hooks have condition always(): only a shutdown or a lost channel stops them.
                    if self._interrupt(always=True):
                        self._stop_process(proc)
                        break
                    self.changed.wait(0.05)
                    self.changed.clear()
                code = proc.wait()
                self.proc = None
            output = log.read_text(errors="replace")
        ended = time.monotonic()
        if self.channel_lost.is_set():
            return False
        self.post("hook", {"stage": stage, "path": path, "exit_code": code, "output": output,
                           "started": started, "ended": ended})
        return code == 0

    def job_env(self) -> dict[str, str]:
        j = self.job
        work = self.root / "_work"
        event = work / "_temp" / "_github_workflow" / "event.json"
        event.parent.mkdir(parents=True, exist_ok=True)
        event.write_text(json.dumps({"repository": {"full_name": j["repository"]}}))
        repo = j["repository"].split("/")[-1]
        return {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_JOB": j["name"],
            "GITHUB_RUN_ID": j["run_id"],
            "GITHUB_REPOSITORY": j["repository"],
            "GITHUB_WORKFLOW": "fake-workflow",
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_WORKSPACE": str(work / repo / repo),
            "RUNNER_TEMP": str(work / "_temp"),
            "RUNNER_NAME": self.job.get("runner_name", ""),
        }

    def run_body(self) -> bool:
        """The job's own work: sleep for duration_s, cancellable (condition success())."""
        deadline = time.monotonic() + float(self.job["duration_s"])
        while time.monotonic() < deadline:
            if self._interrupt(always=False):
                return False
            self.changed.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self.changed.clear()
        return self.job.get("result", "succeeded") == "succeeded"

    def run(self) -> int:
        # Worker.cs: wait up to 30 s for the job message.
        line = self.channel.readline()
        if not line:
            return 1
        msg = json.loads(line)
        if msg.get("messageType") != "NewJobRequest":
            return 1
        self.job = msg["body"]
        self.post("started", {"pid": os.getpid()})
        threading.Thread(target=self.read_channel, name="channel", daemon=True).start()

        failed = False
        reason: str | None = None
        started_hook = os.environ.get("ACTIONS_RUNNER_HOOK_JOB_STARTED")
        completed_hook = os.environ.get("ACTIONS_RUNNER_HOOK_JOB_COMPLETED")
        steps: list[tuple[str, bool]] = []
        if started_hook:
            steps.append(("started", True))
        steps.append(("body", False))
        if completed_hook:
            steps.append(("completed", True))

        for step, always in steps:
            if self.channel_lost.is_set():
                break
            if self.shutdown.is_set():
                break  # conditions are not evaluated on runner shutdown: every step skipped
            if not always and (failed or self.cancel.is_set()):
                continue  # success() is false
            if step == "body":
                ok = self.run_body()
                if not ok and not (self.cancel.is_set() or self.shutdown.is_set() or self.channel_lost.is_set()):
                    failed, reason = True, reason or "a job step failed"
            else:
                ok = self.run_hook(step, started_hook if step == "started" else completed_hook)  # type: ignore[arg-type]
                if not ok and not self.channel_lost.is_set():
                    failed, reason = True, reason or f"job {step} hook failed"

        if self.channel_lost.is_set():
            # Unhandled channel exception: exit 1, nothing reported (the job is left to the
            # service's lost-communication handling).
            print("Unhandled exception: the runner listener's channel closed", file=sys.stderr, flush=True)
            return 1
        if self.shutdown.is_set():
            result, reason = "Failed", SHUTDOWN_MESSAGE
        elif self.cancel.is_set():
            result, reason = "Canceled", "The operation was canceled."
        else:
            result = "Failed" if failed else "Succeeded"
        self.post("complete", {"result": result, "reason": reason, "shutdown": self.shutdown.is_set(),
                               "source": "worker"})
        return result_to_code(result)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(sys.argv[0]).resolve().parent.parent
    if len(argv) < 3 or argv[0].lower() != "spawnclient":
        print("Runner.Worker: expected 'spawnclient <in> <out>'", file=sys.stderr)
        return 1
    worker = Worker(root, int(argv[1]))
    signal.signal(signal.SIGINT, worker.on_signal)
    signal.signal(signal.SIGTERM, worker.on_signal)
    try:
        return worker.run()
    finally:
        proc = worker.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
