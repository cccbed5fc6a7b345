"""Fake ``bin/Runner.Listener``: the runner's long-lived process, talking to the test broker.

Commands (src/Runner.Listener/CommandSettings.cs, validOptions):
  run [--once] [--startuptype service] [--jitconfig B64]
  configure --url URL --token TOKEN [--unattended] [--name N] [--labels a,b] [--ephemeral]
            [--disableupdate] [--replace] [--runnergroup G] [--work W] [--monitorsocketaddress IP:PORT]
  remove --token TOKEN | remove --local
  --version

Each behaviour below cites the upstream file it reproduces; the runner's real protocol with
GitHub is replaced by JSON over HTTP to :mod:`support.fake_runner.broker`.

A job message is taken the way upstream takes it (/work/shared/docs/handover-window.md 1.2):
perf line ``MessageReceived_RunnerJobRequest`` first (Runner.cs:606-607), then ``acknowledge`` and
``acquirejob`` in the message loop (W1, :meth:`Listener.take_job`), then the dispatch waits for the
first ``renewjob`` before it spawns Runner.Worker (W2, :meth:`Dispatcher._run`). Each step waits
the delay the broker put in the message first, and a shutdown during a wait calls the step off.
Two calls are the fake's own, so the broker can tell the windows apart: ``received`` (W1 begins)
and ``spawned`` (W3 begins).
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .common import (
    RUNNER_VERSION,
    ReturnCode,
    code_to_result,
    env_flag,
    fake_settings,
    http_json,
    load_env_file,
    read_json_bom,
    runner_settings,
    utc_u,
    write_json_bom,
)

RUN_OPTS = {"once", "jitconfig", "startuptype"}
CONFIG_FLAGS = {"unattended", "ephemeral", "disableupdate", "replace", "runasservice", "no-default-labels",
                "generateserviceconfig"}
CONFIG_ARGS = {"url", "token", "pat", "name", "labels", "runnergroup", "work", "monitorsocketaddress", "auth",
               "username", "windowslogonaccount", "windowslogonpassword"}
GENERIC_FLAGS = {"help", "version", "commit", "check"}
ARG_NAMES = CONFIG_ARGS | {"jitconfig", "startuptype"}


def _write(stream: Any, text: str) -> None:
    """.NET's console on Unix ignores EPIPE (the runtime ignores SIGPIPE, and ConsolePal's Write
    returns on a broken pipe): a listener whose reader (the agent) died keeps running."""
    try:
        print(text, file=stream, flush=True)
    except (BrokenPipeError, OSError):
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        except OSError:
            pass


def out(line: str) -> None:
    _write(sys.stdout, line)


def err(line: str) -> None:
    _write(sys.stderr, f"Error: {line}")


def trace(line: str) -> None:
    """What upstream writes to its _diag trace only (not the console): on stderr here."""
    _write(sys.stderr, f"[trace] {line}")


def threads_on_usr1() -> None:
    """Tests only (FAKE_LISTENER_THREADS_ON_USR1=N): on SIGUSR1 start N idle threads, standing for
    threads a job injects into its listener with ptrace (issue 16) on a kernel that lets it."""
    count = int(os.environ.get("FAKE_LISTENER_THREADS_ON_USR1", "0") or 0)
    if count <= 0:
        return
    import threading

    def spawn(*_: Any) -> None:
        threading.stack_size(64 * 1024)
        for _ in range(count):
            threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()

    signal.signal(signal.SIGUSR1, spawn)


#: The message types upstream's listener names in its perf counter MessageReceived_<type>
#: (Runner.cs:606-607 writes it for every message the poll returns).
MESSAGE_TYPES = {"job": "RunnerJobRequest", "cancel": "JobCancellation"}


class PerfLog:
    """src/Runner.Common/HostContext.cs:165-176, 633-650: with RUNNER_PERFLOG set (and not
    empty), the constructor creates that directory and names the file <dir>/Runner.perf (the
    host type is "Runner"); WritePerfCounter appends "<counter>:<UtcNow:O>" lines, ':' in the
    counter replaced by '_', and swallows any error. Unset: nothing is written at all."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.lock = threading.Lock()
        where = os.environ.get("RUNNER_PERFLOG")
        if where:
            try:
                Path(where).mkdir(parents=True, exist_ok=True)
                self.path = Path(where) / "Runner.perf"
            except OSError:
                self.path = None  # upstream traces the error and writes nothing

    def write(self, counter: str) -> None:
        if self.path is None:
            return
        # .NET's round-trip "O" format: 2026-01-02T03:04:05.1234567Z (7 fractional digits).
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
        with self.lock:
            try:
                with open(self.path, "a") as f:
                    f.write(f"{counter.replace(':', '_')}:{stamp}\n")
            except OSError:
                pass


class Command:
    """Command line plus ACTIONS_RUNNER_INPUT_* variables (src/Runner.Listener/CommandSettings.cs:
    every ACTIONS_RUNNER_INPUT_<NAME> with a non-empty value counts as --<name>, flags when the
    value is "true"; the variables are removed from the environment)."""

    def __init__(self, argv: list[str]) -> None:
        self.commands: list[str] = []
        self.flags: set[str] = set()
        self.args: dict[str, str] = {}
        self.unknown: list[str] = []
        i = 0
        while i < len(argv):
            a = argv[i]
            if a.startswith("--"):
                key = a[2:].lower()
                if key in ARG_NAMES and i + 1 < len(argv):
                    self.args[key] = argv[i + 1]
                    i += 1
                else:
                    self.flags.add(key)
            else:
                self.commands.append(a.lower())
            i += 1
        self.env_args: dict[str, str] = {}
        for key in list(os.environ):
            if key.upper().startswith("ACTIONS_RUNNER_INPUT_"):
                val = os.environ.pop(key).strip()
                if val:
                    self.env_args[key[len("ACTIONS_RUNNER_INPUT_"):].lower()] = val

    def command(self) -> str:
        for c in ("configure", "remove", "run", "warmup"):
            if c in self.commands:
                return c
        return ""

    def flag(self, name: str) -> bool:
        return name in self.flags or env_flag(self.env_args.get(name))

    def arg(self, name: str) -> str | None:
        return self.args.get(name) or self.env_args.get(name)


# -------------------------------------------------------------------------- configure
def configure(root: Path, cmd: Command) -> int:
    """src/Runner.Listener/Configuration/ConfigurationManager.cs ConfigureAsync, reduced to what
    the agent depends on: refuse when configured, require url and token in unattended mode,
    register, write .runner and .credentials."""
    out("--------------------------------------------------------------------------------")
    out("|                       Self-hosted runner registration                        |")
    out("--------------------------------------------------------------------------------")
    if (root / ".runner").exists():
        err("Cannot configure the runner because it is already configured. To reconfigure the runner, "
            "run 'config.cmd remove' or './config.sh remove' first.")
        return ReturnCode.TERMINATED_ERROR
    url = cmd.arg("url")
    if not url:
        # Without a terminal the fake behaves as --unattended (PromptManager.cs).
        err("Invalid configuration provided for url. Terminating unattended configuration.")
        return ReturnCode.TERMINATED_ERROR
    token = cmd.arg("token") or cmd.arg("pat")
    if not token:
        err("Invalid configuration provided for token. Terminating unattended configuration.")
        return ReturnCode.TERMINATED_ERROR
    name = cmd.arg("name") or socket.gethostname() or "myrunner"
    labels = [x for x in (cmd.arg("labels") or "").split(",") if x]
    if not cmd.flag("no-default-labels"):
        labels = ["self-hosted", "Linux", "X64"] + labels
    broker_url = fake_settings(root).get("broker_url")
    if not broker_url:
        err("fake runner: no broker configured (.fake_runner.json)")
        return ReturnCode.TERMINATED_ERROR
    status, answer = http_json("POST", f"{broker_url}/runners", {
        "name": name, "labels": labels, "ephemeral": cmd.flag("ephemeral"), "token": token, "url": url,
        "replace": cmd.flag("replace"),
    })
    if status == 404:
        err(f"Http response code: NotFound from 'POST {url}/actions/runner-registration'")
        return ReturnCode.TERMINATED_ERROR
    if status == 409:
        err(answer.get("error", "A runner exists with the same name"))
        return ReturnCode.TERMINATED_ERROR
    if status != 200:
        err(f"registration failed: HTTP {status}")
        return ReturnCode.TERMINATED_ERROR
    out("√ Runner successfully added")
    write_json_bom(root / ".credentials", {"scheme": "OAuth", "data": {"clientId": str(answer["id"])}})
    out("√ Runner connection is good")
    settings = runner_settings(
        name, broker_url, url, agent_id=answer["id"], ephemeral=cmd.flag("ephemeral"),
        disable_update=cmd.flag("disableupdate"), work=cmd.arg("work") or "_work",
        pool_name=cmd.arg("runnergroup") or "Default", monitor_socket=cmd.arg("monitorsocketaddress"),
    )
    write_json_bom(root / ".runner", settings)
    out("√ Settings Saved.")
    return ReturnCode.SUCCESS


def delete_local_config(root: Path) -> None:
    """ConfigurationManager.DeleteLocalRunnerConfig: remove .credentials and .runner."""
    for name, label in ((".credentials", ".credentials"), (".runner", ".runner")):
        path = root / name
        if path.exists():
            path.unlink()
            if name == ".credentials":
                (root / ".credentials_rsaparams").unlink(missing_ok=True)
            out(f"√ Removed {label}")
        else:
            out(f"Does not exist. Skipping Removing {label}")


def remove(root: Path, cmd: Command) -> int:
    if cmd.flag("local"):
        delete_local_config(root)
        return ReturnCode.SUCCESS
    token = cmd.arg("token") or cmd.arg("pat")
    if not token:
        err("Invalid configuration provided for token. Terminating unattended configuration.")
        return ReturnCode.TERMINATED_ERROR
    if not (root / ".runner").exists():
        err("Runner is not configured.")
        return ReturnCode.TERMINATED_ERROR
    settings = read_json_bom(root / ".runner")
    status, _ = http_json("DELETE", f"{settings['serverUrl']}/runners/{settings['agentName']}")
    if status not in (200, 204):
        err(f"Http response code: NotFound from 'DELETE {settings.get('gitHubUrl')}/actions/runner-registration'")
        return ReturnCode.TERMINATED_ERROR
    out("√ Runner removed successfully")
    delete_local_config(root)
    return ReturnCode.SUCCESS


# -------------------------------------------------------------------------------- run
class Monitor:
    """The monitor socket (src/Runner.Common/JobNotification.cs): connect at session start,
    "Start <jobId> <accessToken> <serverUrl> <pid>" when a job starts, "End <pid>" and a 2 s pause
    when it ends, "<EOF>" on shutdown. Messages have no delimiter."""

    def __init__(self, address: str | None) -> None:
        self.sock: socket.socket | None = None
        if not address:
            return
        host, _, port = address.rpartition(":")
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=5)
        except (OSError, ValueError):
            self.sock = None  # upstream logs and carries on

    def _send(self, text: str) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(text.encode())
            except OSError:
                pass

    def job_started(self, job: dict[str, Any]) -> None:
        if job.get("access_token"):
            self._send(f"Start {job['job_id']} {job['access_token']} {job['server_url']} {os.getpid()}")

    def job_completed(self) -> None:
        if self.sock is not None:
            self._send(f"End {os.getpid()}")
            time.sleep(2)

    def close(self) -> None:
        if self.sock is not None:
            self._send("<EOF>")
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None


class Dispatcher:
    """One worker process per job (src/Runner.Listener/JobDispatcher.cs)."""

    def __init__(self, root: Path, broker_url: str, monitor: Monitor, perf: PerfLog | None = None,
                 session_id: str = "") -> None:
        self.root = root
        self.broker_url = broker_url
        self.monitor = monitor
        self.perf = perf or PerfLog()
        self.session_id = session_id
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: Any = None
        self.job: dict[str, Any] | None = None
        self.cancel_kind: str | None = None
        self.cancel_event = threading.Event()
        self.done = threading.Event()

    @property
    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def run(self, job: dict[str, Any]) -> None:
        if self.thread is not None:
            # EnsureDispatchFinished: the previous dispatch finishes first.
            self.thread.join()
        self.done.clear()
        self.cancel_event.clear()
        self.cancel_kind = None
        self.job = job
        self.thread = threading.Thread(target=self._run, args=(job,), name="dispatch", daemon=True)
        self.thread.start()

    def cancel(self, job_id: str, kind: str = "CancelRequest") -> bool:
        if self.job is None or self.job["job_id"] != job_id or not self.busy:
            return False
        self.cancel_kind = kind
        self.cancel_event.set()
        return True

    def shutdown(self, kind: str) -> None:
        """JobDispatcher.ShutdownAsync -> EnsureDispatchFinished(cancelRunningJob: true): cancel
        the running job and wait for the worker to exit. On SIGINT/SIGTERM the worker is told
        RunnerShutdown, otherwise CancelRequest."""
        if self.busy and self.job is not None:
            self.cancel(self.job["job_id"], kind)
        if self.thread is not None:
            self.thread.join()

    def _post(self, job_id: str, kind: str, body: dict[str, Any] | None = None) -> Any:
        try:
            return http_json("POST", f"{self.broker_url}/jobs/{job_id}/{kind}",
                             {"session_id": self.session_id, **(body or {})}, timeout=5)
        except OSError:
            return None

    def _run(self, job: dict[str, Any]) -> None:
        job_id = job["job_id"]
        request_id = job.get("request_id", 0)
        steps = job.get("handover", {})
        out(f"{utc_u()}: Running job: {job['name']}")
        # W2 (JobDispatcher.cs:381-399): start renewing the job request and wait for the first
        # renewjob before anything else; "not even start worker if the first renew fail". A
        # cancel (runner shutdown, service cancel) during this wait ends the dispatch, and for a
        # run-service job nothing completes the job request (JobDispatcher.cs:408-418,
        # 1124-1127): the service is left with an acquired job nobody runs.
        stop_renew = threading.Event()
        first_renewed = threading.Event()

        def renew() -> None:
            # The first renewjob takes renew_delay_s (the test's stand-in for its latency); then
            # the lock is renewed while the job runs (every 60 s upstream, JobDispatcher.cs:748-776).
            if stop_renew.wait(float(steps.get("renew_delay_s", 0.0))):
                return
            while True:
                answer = self._post(job_id, "renew")
                if answer is not None and answer[0] == 200:
                    first_renewed.set()
                if stop_renew.wait(0.5):
                    return

        threading.Thread(target=renew, name="renew", daemon=True).start()
        while not first_renewed.wait(0.02):
            if self.cancel_event.is_set():
                stop_renew.set()
                trace(f"Stop renew job request for job {job_id}; the worker was never started.")
                self.done.set()
                return
        self.perf.write(f"JobRequestRenewed_{request_id}")
        self.perf.write("StartingWorkerProcess")
        if self.cancel_event.wait(float(steps.get("spawn_delay_s", 0.0))):
            stop_renew.set()
            trace(f"Job {job_id} cancelled before its worker started.")
            self.done.set()
            return
        # Anonymous pipes as upstream's process channel: "Runner.Worker spawnclient <out> <in>".
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        worker = self.root / "bin" / "Runner.Worker"
        proc = subprocess.Popen(
            [str(worker), "spawnclient", str(to_worker_r), str(from_worker_w)],
            pass_fds=(to_worker_r, from_worker_w), cwd=str(self.root / "bin"),
        )
        os.close(to_worker_r)
        os.close(from_worker_w)
        os.close(from_worker_r)
        self.proc = proc
        channel = os.fdopen(to_worker_w, "w", buffering=1)
        channel.write(json.dumps({"messageType": "NewJobRequest", "body": job}) + "\n")
        channel.flush()
        self.monitor.job_started(job)
        self.perf.write(f"SentJobToWorker_{request_id}")
        self._post(job_id, "spawned", {"pid": proc.pid})  # fake only: W3 begins
        cancelled = False
        while proc.poll() is None:
            if self.cancel_event.wait(0.05):
                cancelled = True
                try:
                    channel.write(json.dumps({"messageType": self.cancel_kind or "CancelRequest"}) + "\n")
                    channel.flush()
                except OSError:
                    proc.kill()
                # Wait for the worker; kill it after the job's cancel timeout (upstream: job
                # cancel-timeout-minutes minus 15 s; RunnerService.js kills us after 30 s anyway).
                try:
                    proc.wait(timeout=float(job.get("cancel_timeout_s", 285)))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                break
        code = proc.wait()
        try:
            channel.close()
        except OSError:
            pass
        result = code_to_result(code)
        self._post(job_id, "worker-exit", {"code": code})
        if result is None:
            # An exit code outside 100..105 means the worker crashed: the job is force-failed.
            self._post(job_id, "complete", {"result": "Failed", "reason": f"worker crashed with exit code {code}",
                                            "source": "listener"})
            result = "Failed"
        elif cancelled and self.cancel_kind == "CancelRequest":
            result = "Canceled"
        out(f"{utc_u()}: Job {job['name']} completed with result: {result}")
        stop_renew.set()
        self.monitor.job_completed()
        self.done.set()


class Listener:
    """src/Runner.Listener/Runner.cs RunAsync: session, message loop, shutdown."""

    def __init__(self, root: Path, settings: dict[str, Any], run_once: bool, perf: PerfLog | None = None) -> None:
        self.root = root
        self.settings = settings
        self.run_once = run_once
        self.perf = perf or PerfLog()
        self.broker_url = settings["serverUrl"].rstrip("/")
        self.shutdown_reason: str | None = None
        self.shutdown = threading.Event()
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()

    def on_signal(self, signum: int, _frame: Any) -> None:
        # Runner.cs CtrlCHandler (SIGINT) and Runner_Unloading (SIGTERM) both shut the runner
        # down with ShutdownReason.UserCancelled.
        if not self.shutdown.is_set():
            out("Exiting...")
        self.shutdown_reason = "RunnerShutdown"
        self.shutdown.set()

    def _poller(self, session_id: str, dispatcher: Dispatcher) -> None:
        backoff = 0.1
        while not self.shutdown.is_set():
            try:
                status, msg = http_json("GET", f"{self.broker_url}/sessions/{session_id}/message",
                                        timeout=60)
            except OSError:
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            if status == 200 and msg:
                self.messages.put(msg)
            elif status == 404 and msg and msg.get("error") == "runner not found":
                self.messages.put({"type": "runner-not-found"})
                return
            elif status in (404, 410):
                return

    def take_job(self, job: dict[str, Any], dispatcher: Dispatcher) -> str:
        """W1 (Runner.cs:691-757): acknowledge, then acquire. Returns "acquired", "skipped"
        (404/409/422 or attempts exhausted: the message is dropped and the listener polls on),
        "stopped" (runner shutdown during W1: the job never runs here) or "gone" (an ephemeral
        runner's acknowledge answered 404 AcknowledgeJobNotFound: exit 0, PR #4540)."""
        job_id = job["job_id"]
        steps = job.get("handover", {})
        if job.get("should_acknowledge", True):
            # Best effort, bounded by 5 s and the loop's token; a failure is only traced.
            if self.shutdown.wait(float(steps.get("ack_delay_s", 0.0))):
                return "stopped"
            answer = dispatcher._post(job_id, "acknowledge")
            if (answer is not None and answer[0] == 404 and self.settings.get("ephemeral")
                    and steps.get("exit_on_ack_not_found", True)):
                out(f"{utc_u()}: The job this runner was sent no longer exists on the server, and an ephemeral "
                    "runner takes no other: exiting.")
                return "gone"
            if answer is None or answer[0] != 200:
                trace(f"Failed to acknowledge job {job_id}: {answer[0] if answer else 'no answer'}; carrying on.")
        lo, hi = (list(steps.get("acquire_backoff_s", [5.0, 15.0])) + [15.0, 15.0])[:2]
        for attempt in range(1, 6):
            # RunServer.GetJobMessageAsync (RunServer.cs:63-72): up to 5 attempts, 5-15 s apart,
            # except on 404/409/422. A shutdown cancels the wait: OperationCanceledException
            # lands in the generic catch (Runner.cs:747-757) and the job is never run here.
            wait = float(steps.get("acquire_delay_s", 0.0)) if attempt == 1 else random.uniform(float(lo), float(hi))
            if self.shutdown.wait(wait):
                trace(f"Caught exception from acquiring job message: the operation was canceled ({job_id}).")
                return "stopped"
            answer = dispatcher._post(job_id, "acquirejob", {"runnerOS": "Linux"})
            status = answer[0] if answer is not None else None
            if status == 200:
                return "acquired"
            if status in (404, 409, 422):
                trace(f"Skipping message Job. Job message not found '{job_id}' (acquirejob {status}).")
                return "skipped"
            trace(f"Acquire attempt {attempt} for job {job_id} failed: {status or 'no answer'}.")
        trace(f"Caught exception from acquiring job message: gave up after 5 attempts ({job_id}).")
        return "skipped"

    def run(self) -> int:
        client_id = None
        try:
            client_id = read_json_bom(self.root / ".credentials").get("data", {}).get("clientId")
        except (OSError, ValueError):
            pass
        status, answer = http_json("POST", f"{self.broker_url}/sessions", {
            "runner": self.settings["agentName"], "pid": os.getpid(), "once": self.run_once,
            "ephemeral": bool(self.settings.get("ephemeral")), "client_id": client_id,
        })
        if status == 401 and answer and answer.get("error") == "invalid_client":
            # MessageListener.cs CreateSessionAsync: the OAuth token exchange fails with
            # invalid_client once the registration is deleted -> CreateSessionResult.Failure ->
            # Runner.cs returns TerminatedError (1). The local files stay.
            err("Failed to create a session. The runner registration has been deleted from the server, please "
                "re-configure. Runner registrations are automatically deleted for runners that have not connected "
                "to the service recently.")
            return ReturnCode.TERMINATED_ERROR
        if status == 409:
            # MessageListener.cs: TaskAgentSessionConflictException -> "A session for this runner
            # already exists."; upstream retries every 30 s for 4 minutes before returning
            # SessionConflict (5). The stand-in gives up at once.
            err("A session for this runner already exists.")
            err("Failed to create session. session conflict")
            return ReturnCode.SESSION_CONFLICT
        if status != 200:
            err("The runner no longer exists on the server." if status == 404 else f"Failed to create session: HTTP {status}")
            return ReturnCode.TERMINATED_ERROR
        session_id = answer["session_id"]
        out("√ Connected to GitHub")
        out("")
        out(f"Current runner version: '{RUNNER_VERSION}'")
        # RunnerService.js resets its failure counters when it sees this line.
        out(f"{utc_u()}: Listening for Jobs")
        monitor = Monitor(self.settings.get("monitorSocketAddress"))
        dispatcher = Dispatcher(self.root, self.broker_url, monitor, self.perf, session_id)
        poller = threading.Thread(target=self._poller, args=(session_id, dispatcher), name="poll", daemon=True)
        poller.start()
        exit_code = ReturnCode.SUCCESS
        job_received = False
        run_once_completed = False
        cleanup_after_404 = False
        try:
            while not self.shutdown.is_set():
                if job_received and self.run_once and dispatcher.done.is_set():
                    # One-job mode: exit 0 as soon as the job completed (Runner.cs,
                    # runOnceJobReceived / RunOnceJobCompleted).
                    run_once_completed = True
                    break
                try:
                    msg = self.messages.get(timeout=0.05)
                except queue.Empty:
                    continue
                kind = msg.get("type")
                if kind in MESSAGE_TYPES:
                    # Runner.cs:606-607: the first thing done with any message the poll returns,
                    # before acknowledge or acquire (handover-window.md 0.3 and 3e).
                    self.perf.write(f"MessageReceived_{MESSAGE_TYPES[kind]}")
                if kind == "job":
                    job = msg["job"]
                    dispatcher._post(job["job_id"], "received")  # fake only: W1 begins
                    if job_received and self.run_once:
                        # Further job messages are skipped and not acknowledged, so the service
                        # hands them to another runner (Runner.cs, skipMessageDeletion).
                        dispatcher._post(job["job_id"], "release")
                        continue
                    verdict = self.take_job(job, dispatcher)
                    if verdict == "gone":
                        exit_code = ReturnCode.SUCCESS
                        break
                    if verdict != "acquired":
                        continue  # skipped (or stopping): back to the loop, as Runner.cs:745/757
                    job["runner_name"] = self.settings["agentName"]
                    dispatcher.run(job)
                    job_received = True
                elif kind == "cancel":
                    dispatcher.cancel(msg["job_id"], "CancelRequest")
                elif kind == "exit":
                    # Test knob: behave as a listener failing with this code.
                    exit_code = int(msg["code"])
                    break
                elif kind == "runner-not-found":
                    # Runner.cs: registration gone -> shut down and delete the local config.
                    err("The runner no longer exists on the server. Cleaning up local configuration.")
                    cleanup_after_404 = True
                    break
        finally:
            self.shutdown.set()
            # Messages the poll returned after the shutdown began are dropped: the poll was
            # cancelled ("Get next message has been cancelled.", BrokerMessageListener.cs:316-319)
            # and the service counts them delivered (W0, runner#4728).
            while True:
                try:
                    self.messages.get_nowait()
                except queue.Empty:
                    break
            dispatcher.shutdown(self.shutdown_reason or "CancelRequest")
            try:
                http_json("DELETE", f"{self.broker_url}/sessions/{session_id}", timeout=5)
            except OSError:
                pass
            if (self.settings.get("ephemeral") and run_once_completed) or cleanup_after_404:
                delete_local_config(self.root)
            monitor.close()
        return exit_code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(sys.argv[0]).resolve().parent.parent
    if argv[:1] == ["_record-config"]:
        # Fake only: config.sh records how it was called (argv, environment) for the tests.
        record = {"argv": argv[1:], "env": dict(os.environ), "cwd": os.getcwd(), "uid": os.getuid(),
                  "time": time.time()}
        (root / "_fake").mkdir(exist_ok=True)
        with open(root / "_fake" / "config-calls.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        return 0
    # Program.cs LoadAndSetEnv: <root>/.env becomes part of the process environment, before the
    # HostContext reads RUNNER_PERFLOG; MainAsync's first perf counter is RunnerProcessStarted.
    os.environ.update(load_env_file(root))
    perf = PerfLog()
    perf.write("RunnerProcessStarted")
    cmd = Command(argv)
    name = cmd.command()
    allowed = {"configure": CONFIG_FLAGS | CONFIG_ARGS, "remove": {"token", "pat", "local"},
               "run": RUN_OPTS, "warmup": set()}.get(name, set()) | GENERIC_FLAGS
    unknown = sorted((cmd.flags | set(cmd.args)) - allowed)
    if unknown:
        err(f"Unrecognized command-line input arguments for command {name}: '{', '.join(unknown)}'. "
            "For usage refer to: .\\config.cmd --help or ./config.sh --help")
    if cmd.flag("version"):
        out(RUNNER_VERSION)
        return ReturnCode.SUCCESS
    if name == "configure":
        return configure(root, cmd)
    if name == "remove":
        return remove(root, cmd)
    if name != "run":
        out("Usage: Runner.Listener run [--once] [--startuptype service] | configure ... | remove ...")
        return ReturnCode.SUCCESS

    # Runner.cs ExecuteCommand: the JIT config (`--jitconfig B64`, or ACTIONS_RUNNER_INPUT_JITCONFIG
    # through CommandSettings.GetJitConfig -> GetArg -> GetEnvArg) is written before the settings
    # are loaded: base64 of a JSON map from file name to base64 content, each written to
    # <root>/<name>, replacing what is there. Any failure: the message, TerminatedError (1).
    jit = cmd.arg("jitconfig")
    if jit:
        import base64
        import binascii

        try:
            files = json.loads(base64.b64decode(jit, validate=True).decode("utf-8"))
            if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                raise ValueError("the JIT configuration is not a map of file names to base64 contents")
            decoded = {}
            for fname, content in files.items():
                # Upstream joins the name to the root unchecked; the stand-in refuses to write
                # outside the runner directory.
                if not fname or "/" in fname or fname in (".", ".."):
                    raise ValueError(f"refusing JIT configuration file name {fname!r}")
                decoded[fname] = base64.b64decode(content, validate=True)
            for fname, data in decoded.items():
                (root / fname).write_bytes(data)
        except (ValueError, binascii.Error, UnicodeDecodeError, OSError) as e:
            err(str(e))
            return ReturnCode.TERMINATED_ERROR
    if not (root / ".runner").exists():
        err("Runner is not configured.")
        return ReturnCode.TERMINATED_ERROR
    settings = read_json_bom(root / ".runner")
    run_once = cmd.flag("once")
    if run_once:
        out("Warning: '--once' is going to be deprecated in the future, please consider using '--ephemeral' during runner registration.")
    # Runner.cs: one-job mode for --once or an ephemeral registration.
    listener = Listener(root, settings, run_once or bool(settings.get("ephemeral")), perf)
    signal.signal(signal.SIGINT, listener.on_signal)
    signal.signal(signal.SIGTERM, listener.on_signal)
    threads_on_usr1()
    return listener.run()
