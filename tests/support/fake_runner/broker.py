"""Test-side stand-in for GitHub's job service, for the fake runner listener.

An in-process threaded HTTP server on 127.0.0.1 (free port). Tests queue jobs with
:meth:`Broker.assign_job`; the next *idle* polling listener receives it, as GitHub hands a job
to one runner at a time (src/Runner.Listener/JobDispatcher.cs: "server will only send one job
for a given runner at a time"). The broker records what happened to each job: dispatch time,
worker start, hook runs, end time and outcome.

Outcomes:
  ``succeeded``  the worker finished with TaskResult Succeeded;
  ``failed``     a step or hook failed, the worker crashed, or the runner lost communication
                 (no job-lock renewal, e.g. the listener was SIGKILLed);
  ``cancelled``  cancelled by the service (:meth:`Broker.cancel_job`) or interrupted by a runner
                 shutdown (SIGINT/SIGTERM to the listener). For the latter upstream's worker marks
                 the job Failed with the "received a shutdown signal" issue
                 (src/Runner.Worker/StepsRunner.cs, JobRunner.cs): ``conclusion`` is then
                 "failure", as GitHub shows it, and ``reason`` carries that message.

All times are ``time.monotonic()`` (system-wide on Linux, so comparable with the agent's and the
AWS emulator's call log).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from .common import SHUTDOWN_MESSAGE, runner_settings

OUTCOMES = ("succeeded", "failed", "cancelled")


@dataclass
class HookRun:
    stage: str  # "started" | "completed"
    path: str
    exit_code: int | None
    output: str
    started: float
    ended: float


@dataclass
class Job:
    job_id: str
    name: str
    duration_s: float
    body_result: str  # what the job's own steps conclude: "succeeded" | "failed"
    queued_at: float
    not_before: float
    runner_pin: str | None = None
    access_token: str = field(default_factory=lambda: "ghs_fake" + uuid.uuid4().hex)
    runner: str | None = None
    session_id: str | None = None
    dispatched_at: float | None = None
    accepted: bool = False
    listener_pid: int | None = None
    worker_pid: int | None = None
    worker_started_at: float | None = None
    worker_exit_code: int | None = None
    last_renew: float | None = None
    hooks: list[HookRun] = field(default_factory=list)
    ended_at: float | None = None
    outcome: str | None = None
    reason: str | None = None
    conclusion: str | None = None  # as GitHub would show it: success | failure | cancelled
    dispatch_count: int = 0

    def snapshot(self) -> "Job":
        return Job(**{**asdict(self), "hooks": [HookRun(**asdict(h)) for h in self.hooks]})


@dataclass
class Session:
    session_id: str
    runner: str
    pid: int
    once: bool
    created: float
    polling: bool = False
    last_poll: float = 0.0
    current_job: str | None = None
    got_job: bool = False
    closed: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)


class Broker:
    def __init__(self, poll_timeout_s: float = 2.0, renew_timeout_s: float = 2.0, host: str = "127.0.0.1",
                 registration_token: str | None = None) -> None:
        """poll_timeout_s: long-poll length (GitHub's is about 50 s); renew_timeout_s: how long a
        running job may go without a job-lock renewal from its listener before it is failed as
        "lost communication" (GitHub takes minutes; short here so tests end quickly).
        registration_token: when set, config.sh must present it (GitHub answers 404 otherwise)."""
        self.poll_timeout_s = poll_timeout_s
        self.renew_timeout_s = renew_timeout_s
        self.registration_token = registration_token
        self._cond = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._order: list[str] = []
        self._sessions: dict[str, Session] = {}
        self._runners: dict[str, dict[str, Any]] = {}
        self._deleted: set[str] = set()
        self._connected_once: set[str] = set()  # names a listener ever opened a session for
        self._exit_orders: list[tuple[str | None, int]] = []
        self._next_runner_id = 1
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer((host, 0), _make_handler(self))
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="broker", daemon=True),
            threading.Thread(target=self._watchdog, name="broker-watchdog", daemon=True),
        ]

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> "Broker":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ test API
    def assign_job(self, duration_s: float, at: float | None = None, *, name: str | None = None,
                   runner: str | None = None, result: str = "succeeded") -> str:
        """Queue a job; it goes to the next idle listener polling at or after ``at``
        (a time.monotonic() value; None = now). ``runner`` pins it to one runner name.
        ``result`` is what the job's own steps conclude (hooks can still fail it)."""
        if result not in ("succeeded", "failed"):
            raise ValueError("result must be 'succeeded' or 'failed'")
        now = time.monotonic()
        job_id = str(uuid.uuid4())  # upstream job ids are GUIDs
        job = Job(job_id=job_id, name=name or f"job-{len(self._order) + 1}", duration_s=float(duration_s),
                  body_result=result, queued_at=now, not_before=now if at is None else at, runner_pin=runner)
        with self._cond:
            self._jobs[job_id] = job
            self._order.append(job_id)
            self._cond.notify_all()
        return job_id

    def job(self, job_id: str) -> Job:
        with self._cond:
            return self._jobs[job_id].snapshot()

    def jobs(self) -> list[Job]:
        with self._cond:
            return [self._jobs[j].snapshot() for j in self._order]

    def outcome(self, job_id: str) -> str | None:
        with self._cond:
            return self._jobs[job_id].outcome

    def _wait(self, pred: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = pred()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"broker: timed out after {timeout} s waiting for {what}")
                self._cond.wait(min(left, 0.2))

    def wait_outcome(self, job_id: str, timeout: float = 30.0) -> str:
        return self._wait(lambda: self._jobs[job_id].outcome, timeout, f"outcome of {job_id}")

    def wait_dispatched(self, job_id: str, timeout: float = 30.0) -> Job:
        self._wait(lambda: self._jobs[job_id].dispatched_at, timeout, f"dispatch of {job_id}")
        return self.job(job_id)

    def wait_worker_started(self, job_id: str, timeout: float = 30.0) -> Job:
        self._wait(lambda: self._jobs[job_id].worker_started_at or self._jobs[job_id].outcome, timeout,
                   f"worker of {job_id}")
        return self.job(job_id)

    def wait_listening(self, runner: str | None = None, timeout: float = 30.0) -> Session:
        """Wait until an idle listener (of ``runner``, if given) is polling for jobs."""
        def idle() -> Session | None:
            for s in self._sessions.values():
                if not s.closed and s.polling and s.current_job is None and runner in (None, s.runner):
                    return s
            return None
        return self._wait(idle, timeout, f"listener {runner or ''} polling")

    def cancel_job(self, job_id: str) -> None:
        """Cancel from the service side (like "Cancel workflow"): a queued job never runs; a
        running one gets a JobCancel message (src/Runner.Listener/Runner.cs)."""
        with self._cond:
            job = self._jobs[job_id]
            if job.outcome:
                return
            if job.dispatched_at is None:
                self._finish(job, "cancelled", "cancelled before it was dispatched", "cancelled")
            elif job.session_id in self._sessions:
                self._sessions[job.session_id].messages.append({"type": "cancel", "job_id": job_id})
            self._cond.notify_all()

    def crash_next(self, code: int, runner: str | None = None) -> None:
        """The next poll (of ``runner``, if given) makes the listener exit with ``code``,
        like a listener failing (e.g. 2 = retryable error, 5 = session conflict)."""
        with self._cond:
            self._exit_orders.append((runner, int(code)))
            self._cond.notify_all()

    def delete_runner(self, name: str) -> None:
        """Delete the registration server-side: the listener's next poll gets runner-not-found,
        it shuts down (cancelling a running job) and deletes its local configuration
        (src/Runner.Listener/Runner.cs, RunAsync message loop)."""
        with self._cond:
            self._runners.pop(name, None)
            self._deleted.add(name)
            self._cond.notify_all()

    def runners(self) -> dict[str, dict[str, Any]]:
        with self._cond:
            return {k: dict(v) for k, v in self._runners.items()}

    def sessions(self) -> list[Session]:
        with self._cond:
            return [Session(**{**asdict(s), "messages": list(s.messages)}) for s in self._sessions.values()]

    def busy(self, runner: str) -> bool:
        """Whether the service sees ``runner`` as running a job (no REST lag here)."""
        with self._cond:
            return any(s.current_job for s in self._sessions.values() if s.runner == runner and not s.closed)

    def generate_jitconfig(self, name: str, labels: list[str] | None = None, *, work_folder: str = "_work",
                           runner_id: int | None = None, github_url: str = "https://github.com/fake-org") -> str:
        """Like POST .../actions/runners/generate-jitconfig: registers an ephemeral runner and
        returns the base64 config that `Runner.Listener run --jitconfig` (or
        ACTIONS_RUNNER_INPUT_JITCONFIG) accepts: base64 of a JSON map from file name to the
        base64 of its content (src/Runner.Listener/Runner.cs writes each entry to
        <root>/<name>). The map holds `.runner` (ephemeral), `.credentials` (OAuth, with a
        client id of this registration only) and `.credentials_rsaparams`. A name that is
        registered already is replaced here; FakeGitHub answers 409 before it gets this far."""
        client_id = str(uuid.uuid4())
        _status, info = self._register(name, labels or ["self-hosted"], ephemeral=True, replace=True,
                                       client_id=client_id, runner_id=runner_id)
        runner = runner_settings(name, self.url, github_url, agent_id=info["id"], ephemeral=True, work=work_folder)
        creds = {"scheme": "OAuth", "data": {"clientId": client_id,
                                             "authorizationUrl": f"{self.url}/_apis/oauth2/token",
                                             "requireFipsCryptography": "True"}}
        rsa = {"fake": "not a key; the stand-in does not sign tokens", "clientId": client_id}
        files = {".runner": json.dumps(runner).encode("utf-8-sig"), ".credentials": json.dumps(creds).encode("utf-8-sig"),
                 ".credentials_rsaparams": json.dumps(rsa).encode("utf-8-sig")}
        blob = {k: base64.b64encode(v).decode() for k, v in files.items()}
        return base64.b64encode(json.dumps(blob).encode()).decode()

    def runner_state(self, name: str) -> dict[str, bool]:
        """The service's view of one registration, for FakeGitHub's runner list: registered,
        deleted (by the service or the REST API), online (a listener holds a session), busy
        (that session runs a job), connected_once (a session was ever opened with it)."""
        with self._cond:
            sessions = [s for s in self._sessions.values() if s.runner == name and not s.closed]
            return {"registered": name in self._runners, "deleted": name in self._deleted,
                    "online": bool(sessions), "busy": any(s.current_job for s in sessions),
                    "connected_once": name in self._connected_once}

    # ------------------------------------------------------------------ internals
    def _register(self, name: str, labels: list[str], ephemeral: bool, replace: bool,
                  client_id: str | None = None, runner_id: int | None = None) -> tuple[int, dict[str, Any]]:
        with self._cond:
            if name in self._runners and not replace:
                return 409, {"error": f"A runner exists with the same name {name}."}
            rid = runner_id if runner_id is not None else self._next_runner_id
            self._next_runner_id = max(self._next_runner_id, rid) + 1
            self._runners[name] = {"id": rid, "name": name, "labels": labels, "ephemeral": ephemeral,
                                   "client_id": client_id}
            self._deleted.discard(name)
            self._connected_once.discard(name)
            return 200, dict(self._runners[name])

    def _free_session(self, job: Job) -> None:
        sess = self._sessions.get(job.session_id or "")
        if sess and sess.current_job == job.job_id:
            sess.current_job = None

    def _finish(self, job: Job, outcome: str, reason: str | None, conclusion: str, free_session: bool = True) -> None:
        if job.outcome:
            return
        job.outcome, job.reason, job.conclusion = outcome, reason, conclusion
        job.ended_at = time.monotonic()
        if free_session:
            # A job reported by its worker keeps the runner busy until the listener has seen
            # the worker exit (upstream completes the job request only then).
            self._free_session(job)
        info = self._runners.get(job.runner or "")
        if info and info.get("ephemeral"):
            # GitHub unregisters an ephemeral runner once its job is done; its credentials stop
            # working (a second start with the same JIT config fails, see _handle "sessions").
            self._runners.pop(job.runner or "", None)
            self._deleted.add(job.runner or "")
        self._cond.notify_all()

    def _requeue(self, job: Job) -> None:
        # A job message that was never acknowledged goes back to the queue and may go to
        # another runner (src/Runner.Listener/Runner.cs: skipped messages are not deleted).
        sess = self._sessions.get(job.session_id or "")
        if sess and sess.current_job == job.job_id:
            sess.current_job = None
        job.runner = job.session_id = None
        job.dispatched_at = None
        job.accepted = False
        job.last_renew = None
        self._cond.notify_all()

    def _watchdog(self) -> None:
        while not self._stop.wait(0.1):
            with self._cond:
                now = time.monotonic()
                for job in self._jobs.values():
                    if job.outcome or job.dispatched_at is None:
                        continue
                    last = job.last_renew or job.dispatched_at
                    if now - last <= self.renew_timeout_s:
                        continue
                    if not job.accepted:
                        self._requeue(job)
                    else:
                        self._finish(
                            job, "failed",
                            f"The self-hosted runner: {job.runner} lost communication with the server.",
                            "failure",
                        )

    def _poll(self, session_id: str) -> tuple[int, Any]:
        deadline = time.monotonic() + self.poll_timeout_s
        with self._cond:
            sess = self._sessions.get(session_id)
            if sess is None or sess.closed:
                return 404, {"error": "session not found"}
            sess.polling = True
            sess.last_poll = time.monotonic()
            self._cond.notify_all()
            try:
                while not self._stop.is_set():
                    if sess.closed:
                        return 410, {"error": "session closed"}
                    if sess.runner in self._deleted and not (sess.once and sess.got_job):
                        # (A one-job listener whose registration went with its finished job
                        # exits by itself; see Listener.run.)
                        return 404, {"error": "runner not found"}
                    for i, (runner, code) in enumerate(self._exit_orders):
                        if runner in (None, sess.runner):
                            self._exit_orders.pop(i)
                            return 200, {"type": "exit", "code": code}
                    if sess.messages:
                        return 200, sess.messages.pop(0)
                    if sess.current_job is None and not (sess.once and sess.got_job):
                        job = self._next_job(sess.runner)
                        if job is not None:
                            job.runner, job.session_id = sess.runner, sess.session_id
                            job.dispatched_at = time.monotonic()
                            job.listener_pid = sess.pid
                            job.dispatch_count += 1
                            sess.current_job = job.job_id
                            if sess.once:
                                sess.got_job = True
                            return 200, {"type": "job", "job": self._job_message(job)}
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return 204, None
                    self._cond.wait(min(left, 0.1))
                return 204, None
            finally:
                sess.polling = False

    def _next_job(self, runner: str) -> Job | None:
        now = time.monotonic()
        for job_id in self._order:
            job = self._jobs[job_id]
            if job.outcome or job.dispatched_at is not None or job.not_before > now:
                continue
            if job.runner_pin not in (None, runner):
                continue
            return job
        return None

    def _job_message(self, job: Job) -> dict[str, Any]:
        return {
            "job_id": job.job_id,
            "name": job.name,
            "duration_s": job.duration_s,
            "result": job.body_result,
            "access_token": job.access_token,
            "server_url": self.url + "/",
            "run_id": str(abs(hash(job.job_id)) % 10**10),
            "repository": "fake-org/fake-repo",
        }

    # ------------------------------------------------------------ HTTP endpoints
    def _handle(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if parts == ["sessions"] and method == "POST":
            name = body["runner"]
            with self._cond:
                info = self._runners.get(name)
                if body.get("client_id") and (name in self._deleted or (info and info.get("client_id")
                                                                        and info["client_id"] != body["client_id"])):
                    # Upstream's credentials are an OAuth client of the registration: once it is
                    # deleted the token exchange fails with "invalid_client"
                    # (src/Runner.Listener/MessageListener.cs CreateSessionAsync).
                    return 401, {"error": "invalid_client"}
                if name in self._deleted:
                    return 404, {"error": "runner not found"}
                if info and info.get("client_id") and any(
                        s.runner == name and not s.closed for s in self._sessions.values()):
                    # A JIT registration already has a listener: TaskAgentSessionConflictException.
                    return 409, {"error": "session conflict"}
                if name not in self._runners:
                    self._register(name, body.get("labels") or ["self-hosted"], bool(body.get("ephemeral")), True)
                self._connected_once.add(name)
                sid = str(uuid.uuid4())
                self._sessions[sid] = Session(sid, name, int(body.get("pid", 0)), bool(body.get("once")), time.monotonic())
                return 200, {"session_id": sid}
        if len(parts) == 2 and parts[0] == "sessions" and method == "DELETE":
            with self._cond:
                sess = self._sessions.get(parts[1])
                if sess:
                    sess.closed = True
                    for job in self._jobs.values():
                        if job.session_id == sess.session_id and not job.outcome and not job.accepted:
                            self._requeue(job)
                    self._cond.notify_all()
            return 200, {}
        if len(parts) == 3 and parts[0] == "sessions" and parts[2] == "message":
            return self._poll(parts[1])
        if len(parts) == 3 and parts[0] == "jobs":
            return self._job_event(parts[1], parts[2], body)
        if parts == ["runners"] and method == "POST":
            if self.registration_token and body.get("token") != self.registration_token:
                return 404, {"error": "Not Found"}
            return self._register(body["name"], body.get("labels") or [], bool(body.get("ephemeral")), bool(body.get("replace")))
        if len(parts) == 2 and parts[0] == "runners" and method == "DELETE":
            with self._cond:
                if parts[1] not in self._runners:
                    return 404, {"error": "Not Found"}
                self._runners.pop(parts[1], None)
                self._deleted.add(parts[1])
                self._cond.notify_all()
            return 204, None
        return 404, {"error": f"no route {method} {path}"}

    def _job_event(self, job_id: str, kind: str, body: dict[str, Any]) -> tuple[int, Any]:
        now = time.monotonic()
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return 404, {"error": "job not found"}
            if kind == "accept":
                job.accepted = True
                job.last_renew = now
            elif kind == "release":
                if not job.outcome and not job.accepted:
                    self._requeue(job)
            elif kind == "renew":
                job.last_renew = now
                # upstream: renewing a job that the service already finished fails; the
                # listener then cancels its worker. Answered with the outcome here.
                self._cond.notify_all()
                return 200, {"outcome": job.outcome}
            elif kind == "started":
                job.worker_pid = body.get("pid")
                job.worker_started_at = now
            elif kind == "hook":
                job.hooks.append(HookRun(body["stage"], body.get("path", ""), body.get("exit_code"),
                                         body.get("output", ""), body.get("started", now), body.get("ended", now)))
            elif kind == "worker-exit":
                job.worker_exit_code = body.get("code")
                self._free_session(job)
            elif kind == "complete":
                result = body.get("result")
                reason = body.get("reason")
                free = job.worker_exit_code is not None
                if body.get("shutdown"):
                    self._finish(job, "cancelled", reason or SHUTDOWN_MESSAGE, "failure", free)
                elif result in ("Succeeded", "SucceededWithIssues"):
                    self._finish(job, "succeeded", None, "success", free)
                elif result == "Canceled":
                    self._finish(job, "cancelled", reason or "cancelled", "cancelled", free)
                else:
                    self._finish(job, "failed", reason or f"job result {result}", "failure", free)
            else:
                return 404, {"error": f"unknown event {kind}"}
            self._cond.notify_all()
            return 200, {}


def _make_handler(broker: Broker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _serve(self) -> None:
            u = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            query = {k: v[0] for k, v in parse_qs(u.query).items()}
            status, answer = broker._handle(self.command, u.path, query, body)
            data = b"" if answer is None else json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                # The listener went away while we answered; a job handed to it goes back.
                if answer and answer.get("type") == "job":
                    with broker._cond:
                        job = broker._jobs[answer["job"]["job_id"]]
                        if not job.accepted and not job.outcome:
                            broker._requeue(job)

        do_GET = do_POST = do_DELETE = _serve

    return Handler
