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

The handover (docs: /work/shared/docs/handover-window.md, section 1.2) is taken step by step, as
upstream's listener takes it (src/Runner.Listener/Runner.cs:606-762, JobDispatcher.cs:381-537):

  W0  the job message is in transit on the long poll (``transit_delay_s`` holds it here);
  W1  the listener has it (``MessageReceived_RunnerJobRequest`` in its perf log): ``acknowledge``
      (after ``ack_delay_s``) then ``acquirejob`` (after ``acquire_delay_s``);
  W2  acquired: the first ``renewjob`` (after ``renew_delay_s``), then Runner.Worker is spawned
      (after ``spawn_delay_s``);
  W3  the worker runs the job (the outcomes above).

A listener that stops before W3 leaves the job to :attr:`Broker.stop_policy` (see
:data:`STOP_POLICIES`); each dispatch of a job is one :class:`Handover` record with its fate.

All times are ``time.monotonic()`` (system-wide on Linux, so comparable with the agent's and the
AWS emulator's call log).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from .common import SHUTDOWN_MESSAGE, runner_settings

OUTCOMES = ("succeeded", "failed", "cancelled")

#: What happens to a job whose listener stops before the worker is spawned, by window.
#: handover-window.md 1.3 and 2.3: in W0/W1 the job was never acquired and GitHub documents a
#: re-queue after 60 s (github/docs self-hosted-runners.md, "Routing precedence"); in W2 it was
#: acquired, the listener's dispatch is cancelled and nothing completes it (JobDispatcher.cs:408-418,
#: 1124-1127), so it stays leased to the dead runner (runner#4598), or comes back once the lease
#: lapses (runner#4492, #4461's "10-15 minutes").
STOP_POLICIES = {
    "default": {"W0": "requeue", "W1": "requeue", "W2": "lost"},
    "all-lost": {"W0": "lost", "W1": "lost", "W2": "lost"},
    "w2-requeued-after-lease": {"W0": "requeue", "W1": "requeue", "W2": "requeue-after-lease"},
}

#: Fates of one dispatch (:attr:`Handover.fate`).
FATES = ("ran", "requeued", "lost-W0", "lost-W1", "lost-W2", "expired", "cancelled")

#: Ghost modes: what a listener whose registration is gone does (handover-window.md 1.4 and 3b).
#: "exit": the poll answers runner-not-found and the listener exits 0 (Runner.cs:826), and an
#: ephemeral listener whose `acknowledge` answers 404 exits 0 (PR #4540, AcknowledgeJobNotFound).
#: "poll": it keeps polling forever and is never handed a job (runner#4617, ARC#4307).
GHOST_MODES = ("exit", "poll")

#: The handover's knobs: broker-wide defaults (Broker attributes of the same names), overridable
#: per job in :meth:`Broker.assign_job`.
HANDOVER_KNOBS = ("transit_delay_s", "ack_delay_s", "acquire_delay_s", "renew_delay_s", "spawn_delay_s")


@dataclass
class HookRun:
    stage: str  # "started" | "completed"
    path: str
    exit_code: int | None
    output: str
    started: float
    ended: float


@dataclass
class Handover:
    """One dispatch of a job to one listener, window by window (times are monotonic)."""

    runner: str
    session_id: str
    listener_pid: int
    dispatched_at: float  # W0 begins: the broker committed the message to a poll answer
    received_at: float | None = None  # W1 begins: the listener took the message (its perf line)
    acknowledged_at: float | None = None
    acquired_at: float | None = None  # W2 begins
    first_renew_at: float | None = None
    spawned_at: float | None = None  # W3 begins: Runner.Worker spawned, the job sent to it
    stopped_in: str | None = None  # "W0" | "W1" | "W2": the listener stopped before W3
    stopped_at: float | None = None
    fate: str | None = None  # one of FATES; None while the handover is under way
    requeue_at: float | None = None  # when a requeued job is back in the queue

    @property
    def window(self) -> str:
        """The window this dispatch is in (or was in when it ended)."""
        if self.stopped_in:
            return self.stopped_in
        if self.spawned_at is not None:
            return "W3"
        if self.acquired_at is not None:
            return "W2"
        if self.received_at is not None:
            return "W1"
        return "W0"


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
    request_id: int = 0  # upstream's RunnerJobRequestRef.runner_request_id (perf counters use it)
    handover: dict[str, Any] = field(default_factory=dict)  # per-job overrides of HANDOVER_KNOBS etc.
    acquire_answers: list[int] = field(default_factory=list)  # statuses for the next acquire attempts
    handovers: list[Handover] = field(default_factory=list)

    def snapshot(self) -> "Job":
        return Job(**{**asdict(self), "hooks": [HookRun(**asdict(h)) for h in self.hooks],
                      "handovers": [Handover(**asdict(h)) for h in self.handovers],
                      "handover": dict(self.handover), "acquire_answers": list(self.acquire_answers)})

    @property
    def current(self) -> Handover | None:
        return self.handovers[-1] if self.handovers else None


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
    dead: bool = False  # the listener process is gone without closing the session (SIGKILL)
    skipped: bool = False  # a one-job session whose job was taken back before it was acquired
    watch_pid: bool = False  # whether the broker can see the listener's process (to notice a SIGKILL)


class Broker:
    def __init__(self, poll_timeout_s: float = 2.0, renew_timeout_s: float = 2.0, host: str = "127.0.0.1",
                 registration_token: str | None = None, *, transit_delay_s: float = 0.0,
                 ack_delay_s: float = 0.05, acquire_delay_s: float = 0.05, renew_delay_s: float = 0.05,
                 spawn_delay_s: float = 0.05, should_acknowledge: bool = True,
                 acquire_backoff_s: tuple[float, float] = (5.0, 15.0), pickup_timeout_s: float = 60.0,
                 stop_policy: str = "default", requeue_delay_s: float = 1.0, lease_s: float = 5.0,
                 ghost_mode: str = "exit", consume_jit_on_assign: bool = False) -> None:
        """poll_timeout_s: long-poll length (GitHub's is about 50 s); renew_timeout_s: how long a
        running job may go without a job-lock renewal from its listener before it is failed as
        "lost communication" (GitHub takes minutes; short here so tests end quickly).
        registration_token: when set, config.sh must present it (GitHub answers 404 otherwise).

        The handover (all attributes, changeable while running; per job in assign_job):
        transit_delay_s: W0, how long a committed job message stays in transit on the poll;
        ack_delay_s / acquire_delay_s: W1, the latency of `acknowledge` and of `acquirejob`;
        renew_delay_s / spawn_delay_s: W2, the latency of the first `renewjob`, then of starting
        Runner.Worker. The defaults make W1+W2 0.2 s (handover-window.md 1.3: "typically
        hundreds of ms").
        should_acknowledge: the message's flag (RunnerJobRequestRef.cs; Runner.cs:691-710).
        acquire_backoff_s: (min, max) wait between acquire attempts (RunServer.cs:63-72: up to
        5 attempts, 5-15 s apart).
        pickup_timeout_s: a job not acquired this long after its dispatch goes back to the queue
        (GitHub's docs: "If the runner doesn't pick up the assigned job within 60 seconds, the
        job is re-queued"); the listener's late acknowledge then answers 404, its acquire 409.
        stop_policy: one of STOP_POLICIES, for a listener that stops in W0, W1 or W2;
        requeue_delay_s: when a W0/W1 job goes back to the queue after its listener stopped
        (GitHub: 60 s; short here); lease_s: when a W2 job does, under "w2-requeued-after-lease"
        (GitHub: about 10 minutes, runner#4492).
        ghost_mode: one of GHOST_MODES, for every runner (per runner: set_ghost_mode).
        consume_jit_on_assign: a JIT registration is deleted when a job is assigned to it
        (runner#4617 / PR #4618; FakeGitHub(consumed_on_assign=True) sets it)."""
        self.poll_timeout_s = poll_timeout_s
        self.renew_timeout_s = renew_timeout_s
        self.registration_token = registration_token
        self.transit_delay_s = transit_delay_s
        self.ack_delay_s = ack_delay_s
        self.acquire_delay_s = acquire_delay_s
        self.renew_delay_s = renew_delay_s
        self.spawn_delay_s = spawn_delay_s
        self.should_acknowledge = should_acknowledge
        self.acquire_backoff_s = tuple(acquire_backoff_s)
        self.pickup_timeout_s = pickup_timeout_s
        if stop_policy not in STOP_POLICIES:
            raise ValueError(f"stop_policy must be one of {sorted(STOP_POLICIES)}")
        self.stop_policy = stop_policy
        self.requeue_delay_s = requeue_delay_s
        self.lease_s = lease_s
        if ghost_mode not in GHOST_MODES:
            raise ValueError(f"ghost_mode must be one of {GHOST_MODES}")
        self.ghost_mode = ghost_mode
        self.consume_jit_on_assign = consume_jit_on_assign
        self._ghost_modes: dict[str, str] = {}
        self._consumed: set[str] = set()
        self._next_request_id = 1
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
                   runner: str | None = None, result: str = "succeeded", transit_delay_s: float | None = None,
                   ack_delay_s: float | None = None, acquire_delay_s: float | None = None,
                   renew_delay_s: float | None = None, spawn_delay_s: float | None = None,
                   should_acknowledge: bool | None = None, acquire_answers: list[int] | None = None) -> str:
        """Queue a job; it goes to the next idle listener polling at or after ``at``
        (a time.monotonic() value; None = now). ``runner`` pins it to one runner name.
        ``result`` is what the job's own steps conclude (hooks can still fail it).
        The handover knobs (None: the broker's value at dispatch time) override the broker's
        for this job; ``acquire_answers`` are statuses the next acquire attempts get instead of
        200 (e.g. [500, 500] then success; [409]: the listener skips the message)."""
        if result not in ("succeeded", "failed"):
            raise ValueError("result must be 'succeeded' or 'failed'")
        now = time.monotonic()
        job_id = str(uuid.uuid4())  # upstream job ids are GUIDs
        overrides = {k: v for k, v in (("transit_delay_s", transit_delay_s), ("ack_delay_s", ack_delay_s),
                                       ("acquire_delay_s", acquire_delay_s), ("renew_delay_s", renew_delay_s),
                                       ("spawn_delay_s", spawn_delay_s),
                                       ("should_acknowledge", should_acknowledge)) if v is not None}
        job = Job(job_id=job_id, name=name or f"job-{len(self._order) + 1}", duration_s=float(duration_s),
                  body_result=result, queued_at=now, not_before=now if at is None else at, runner_pin=runner,
                  handover=overrides, acquire_answers=list(acquire_answers or []))
        with self._cond:
            job.request_id = self._next_request_id
            self._next_request_id += 1
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
                if (not s.closed and not s.dead and s.polling and s.current_job is None
                        and runner in (None, s.runner)):
                    return s
            return None
        return self._wait(idle, timeout, f"listener {runner or ''} polling")

    # -------------------------------------------------------------- the handover
    def handover_outcome(self, job_id: str) -> str | None:
        """The fate of the job's latest dispatch (one of FATES): "ran" once Runner.Worker was
        spawned; "requeued" (back in the queue at its ``requeue_at``); "lost-W0", "lost-W1",
        "lost-W2" (its listener stopped in that window and nothing re-queues it: it stays
        assigned to that runner); "expired" (not acquired within pickup_timeout_s, re-queued);
        "cancelled" (service-side cancel before the worker). None: never dispatched, or the
        handover is still under way."""
        with self._cond:
            h = self._jobs[job_id].current
            return h.fate if h else None

    def handover_outcomes(self, job_id: str) -> list[str | None]:
        """The fate of every dispatch of the job, oldest first (e.g. ["requeued", "ran"])."""
        with self._cond:
            return [h.fate for h in self._jobs[job_id].handovers]

    def handovers(self, job_id: str) -> list[Handover]:
        """Every dispatch of the job with its window times (see :class:`Handover`)."""
        return self.job(job_id).handovers

    def wait_handover(self, job_id: str, timeout: float = 30.0) -> str:
        """Wait until the latest dispatch of the job has a fate; return it."""
        def fate() -> str | None:
            h = self._jobs[job_id].current
            return h.fate if h else None
        return self._wait(fate, timeout, f"handover of {job_id}")

    def wait_window(self, job_id: str, window: str, timeout: float = 30.0) -> Handover:
        """Wait until the job's latest dispatch has reached ``window`` ("W0".."W3")."""
        order = ("W0", "W1", "W2", "W3")

        def reached() -> bool:
            h = self._jobs[job_id].current
            return h is not None and not h.stopped_in and order.index(h.window) >= order.index(window)
        self._wait(reached, timeout, f"{job_id} in {window}")
        return self.job(job_id).handovers[-1]

    def assigned_job(self, runner: str) -> str | None:
        """The job assigned to ``runner``: its message was sent and it has not finished (nor
        been re-queued away). A job lost in W0-W2 stays assigned to the stopped runner."""
        with self._cond:
            return self._assigned(runner)

    def has_assigned_job(self, runner: str) -> bool:
        return self.assigned_job(runner) is not None

    def expire_assignment(self, job_id: str) -> None:
        """Act now as if the job's pickup timeout ran out (see pickup_timeout_s)."""
        with self._cond:
            job = self._jobs[job_id]
            h = job.current
            if h and h.fate is None and not job.accepted and not job.outcome:
                self._expire(job, h)

    def set_ghost_mode(self, runner: str, mode: str | None) -> None:
        """The ghost mode (GHOST_MODES) of one runner name; None: the broker's ghost_mode."""
        if mode is not None and mode not in GHOST_MODES:
            raise ValueError(f"ghost mode must be one of {GHOST_MODES}")
        with self._cond:
            if mode is None:
                self._ghost_modes.pop(runner, None)
            else:
                self._ghost_modes[runner] = mode

    def remove_runner(self, name: str) -> str:
        """Delete a registration the way GitHub's REST DELETE does, atomically with dispatch:
        "assigned" (refused: a job was handed to it and has not finished; the Actions service's
        RemoveRunner refuses once a job request is assigned, handover-window.md 3b), "deleted"
        (from now on it is never handed a job), "gone" (deleted or consumed already), "unknown"
        (never registered here)."""
        with self._cond:
            if name in self._deleted:
                return "gone"
            if name not in self._runners:
                return "unknown"
            if self._assigned(name) is not None:
                return "assigned"
            self._runners.pop(name, None)
            self._deleted.add(name)
            self._cond.notify_all()
            return "deleted"

    def cancel_job(self, job_id: str) -> None:
        """Cancel from the service side (like "Cancel workflow"): a queued job never runs; a
        running one gets a JobCancel message (src/Runner.Listener/Runner.cs). A job not yet
        handed to a worker ends at once (cancelled); its listener's acknowledge/acquire then
        answer 404 and a W2 dispatch is called off."""
        with self._cond:
            job = self._jobs[job_id]
            if job.outcome:
                return
            h = job.current
            if job.dispatched_at is None:
                self._finish(job, "cancelled", "cancelled before it was dispatched", "cancelled")
            else:
                if job.session_id in self._sessions:
                    self._sessions[job.session_id].messages.append({"type": "cancel", "job_id": job_id})
                if h is not None and h.spawned_at is None:
                    if h.fate is None:
                        h.fate = "cancelled"
                    sess = self._sessions.get(job.session_id or "")
                    if sess and sess.once:
                        sess.skipped = True  # its one job did not go ahead
                    self._finish(job, "cancelled", "cancelled before it reached a worker", "cancelled")
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
        (that session runs a job), connected_once (a session was ever opened with it),
        assigned (assigned_job), consumed (deleted by a job assignment, consume_jit_on_assign)."""
        with self._cond:
            sessions = [s for s in self._sessions.values() if s.runner == name and not s.closed]
            return {"registered": name in self._runners, "deleted": name in self._deleted,
                    "online": bool(sessions), "busy": any(s.current_job for s in sessions),
                    "connected_once": name in self._connected_once,
                    "assigned": self._assigned(name) is not None, "consumed": name in self._consumed}

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
        # A job message that was never acquired goes back to the queue and may go to another
        # runner (src/Runner.Listener/Runner.cs: skipped messages are not deleted).
        sess = self._sessions.get(job.session_id or "")
        if sess and sess.current_job == job.job_id:
            sess.current_job = None
        job.runner = job.session_id = None
        job.dispatched_at = None
        job.accepted = False
        job.last_renew = None
        self._cond.notify_all()

    def _assigned(self, runner: str) -> str | None:
        for job in self._jobs.values():
            if job.runner == runner and job.dispatched_at is not None and not job.outcome:
                return job.job_id
        return None

    def _ghost_mode(self, runner: str) -> str:
        return self._ghost_modes.get(runner, self.ghost_mode)

    def _knob(self, job: Job, name: str) -> Any:
        return job.handover.get(name, getattr(self, name))

    def _expire(self, job: Job, h: Handover) -> None:
        # GitHub's docs: an assigned job not picked up within 60 s is re-queued; the listener
        # that still holds the message then gets 404 on acknowledge (AcknowledgeJobNotFound,
        # PR #4540) and 409 on acquirejob (runner#4728: "MissingKey"), and skips it
        # (Runner.cs:737-745). A one-job listener is not handed another job: a ghost.
        h.fate = "expired"
        sess = self._sessions.get(job.session_id or "")
        if sess and sess.once:
            sess.skipped = True
        self._requeue(job)

    def _listener_stopped(self, sess: Session) -> None:
        """The listener of ``sess`` is gone (session deleted, or its process died). Each job it
        held before Runner.Worker was spawned settles by the window it was in
        (handover-window.md 1.3) and :attr:`stop_policy`."""
        now = time.monotonic()
        policy = STOP_POLICIES[self.stop_policy]
        for job in self._jobs.values():
            h = job.current
            if job.outcome or job.session_id != sess.session_id or h is None or h.fate is not None:
                continue
            window = h.window
            if window == "W3":
                continue  # the worker's own result (or lost communication) settles it
            h.stopped_in, h.stopped_at = window, now
            rule = policy[window]
            if rule == "lost":
                # W0: the message was dropped by the listener, the broker counts it delivered
                # (runner#4728). W2: "Skip CompleteJobRequestAsync call from Listener because
                # it's RunService job" (JobDispatcher.cs:1124-1127): nothing tells the service.
                h.fate = f"lost-{window}"
            else:
                h.fate = "requeued"
                h.requeue_at = now + (self.lease_s if rule == "requeue-after-lease" else self.requeue_delay_s)
        held = self._jobs.get(sess.current_job or "")
        if held is not None and held.current is not None and held.current.fate != "ran":
            sess.current_job = None  # the stopped listener runs nothing
        self._cond.notify_all()

    def _watchdog(self) -> None:
        while not self._stop.wait(0.1):
            with self._cond:
                now = time.monotonic()
                for sess in self._sessions.values():
                    if not sess.closed and not sess.dead and sess.watch_pid and not _pid_alive(sess.pid):
                        # A SIGKILLed listener never deletes its session; the service would
                        # notice much later. The fake notices its process is gone.
                        sess.dead = True
                        self._listener_stopped(sess)
                for job in self._jobs.values():
                    if job.outcome or job.dispatched_at is None:
                        continue
                    h = job.current
                    if h is not None and h.fate == "requeued":
                        if h.requeue_at is not None and now >= h.requeue_at:
                            self._requeue(job)
                        continue
                    if h is not None and h.fate is not None and h.fate.startswith("lost-"):
                        continue  # leased to a dead runner: nothing moves it
                    if h is not None and h.spawned_at is None:
                        # Before the worker: no lock renewal is expected yet; only the pickup
                        # timeout applies, until the job is acquired.
                        if not job.accepted and now - h.dispatched_at > self.pickup_timeout_s:
                            self._expire(job, h)
                        continue
                    last = job.last_renew or job.dispatched_at
                    if now - last <= self.renew_timeout_s:
                        continue
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
                    deleted = sess.runner in self._deleted
                    # A one-job listener whose job went ahead (or went with its registration)
                    # exits by itself; see Listener.run.
                    exempt = sess.once and sess.got_job and not sess.skipped
                    if deleted and not exempt and self._ghost_mode(sess.runner) == "exit":
                        return 404, {"error": "runner not found"}
                    for i, (runner, code) in enumerate(self._exit_orders):
                        if runner in (None, sess.runner):
                            self._exit_orders.pop(i)
                            return 200, {"type": "exit", "code": code}
                    if sess.messages:
                        return 200, sess.messages.pop(0)
                    # A deleted registration is never handed a job again; in ghost mode "poll"
                    # its listener just keeps polling (runner#4617).
                    if (not deleted and not sess.dead and sess.current_job is None
                            and not (sess.once and sess.got_job)):
                        job = self._next_job(sess.runner)
                        if job is not None:
                            return self._dispatch(job, sess)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return 204, None
                    self._cond.wait(min(left, 0.1))
                return 204, None
            finally:
                sess.polling = False

    def _dispatch(self, job: Job, sess: Session) -> tuple[int, Any]:
        """Commit ``job`` to ``sess`` (W0 begins) and answer the poll with its message, after
        the job's transit delay (called with the lock held; the wait releases it)."""
        now = time.monotonic()
        job.runner, job.session_id = sess.runner, sess.session_id
        job.dispatched_at = now
        job.listener_pid = sess.pid
        job.dispatch_count += 1
        job.handovers.append(Handover(sess.runner, sess.session_id, sess.pid, now))
        sess.current_job = job.job_id
        if sess.once:
            sess.got_job = True
        info = self._runners.get(sess.runner)
        if self.consume_jit_on_assign and info and info.get("client_id"):
            # runner#4617 / PR #4618: "the service consumes the registration when it assigns
            # the job" (handover-window.md 1.4): from here GET and DELETE of it answer 404.
            self._runners.pop(sess.runner, None)
            self._deleted.add(sess.runner)
            self._consumed.add(sess.runner)
        message = {"type": "job", "job": self._job_message(job)}
        self._cond.notify_all()
        delay = float(self._knob(job, "transit_delay_s"))
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # W0: the message is in transit. If the listener stops meanwhile it never sees it;
            # the broker counts it delivered all the same (runner#4728).
            self._cond.wait(min(left, 0.05))
        return 200, message

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
            # RunnerJobRequestRef.cs: runner_request_id, should_acknowledge.
            "request_id": job.request_id,
            "should_acknowledge": bool(self._knob(job, "should_acknowledge")),
            # Fake only: how long each handover step takes, and the runner's behaviour on an
            # acknowledge 404, as the test configured them on the broker.
            "handover": {
                "ack_delay_s": float(self._knob(job, "ack_delay_s")),
                "acquire_delay_s": float(self._knob(job, "acquire_delay_s")),
                "renew_delay_s": float(self._knob(job, "renew_delay_s")),
                "spawn_delay_s": float(self._knob(job, "spawn_delay_s")),
                "acquire_backoff_s": list(self.acquire_backoff_s),
                "exit_on_ack_not_found": self._ghost_mode(job.runner or "") == "exit",
            },
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
                pid = int(body.get("pid", 0))
                self._sessions[sid] = Session(sid, name, pid, bool(body.get("once")), time.monotonic(),
                                              # Only a listener this process can see is watched
                                              # (another pid namespace, hidepid=2: never).
                                              watch_pid=pid > 0 and _pid_alive(pid))
                return 200, {"session_id": sid}
        if len(parts) == 2 and parts[0] == "sessions" and method == "DELETE":
            with self._cond:
                sess = self._sessions.get(parts[1])
                if sess and not sess.closed:
                    sess.closed = True
                    # Runner.cs:852-866: DeleteSessionAsync runs last, after ShutdownAsync; any
                    # job the listener held before its worker settles by window.
                    self._listener_stopped(sess)
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
            h = job.current
            mine = (h is not None and job.session_id is not None and job.session_id == body.get("session_id")
                    and h.session_id == job.session_id)
            if kind == "received":
                # Fake only: the listener took the message off the poll (W1 begins), right after
                # its perf line (Runner.cs:606-607).
                if mine and h.received_at is None:
                    h.received_at = now
            elif kind == "acknowledge":
                # Runner.cs:691-710, BrokerMessageListener.AcknowledgeMessageAsync.
                if job.outcome or not mine:
                    return 404, {"error": "AcknowledgeJobNotFound"}
                h.acknowledged_at = now
            elif kind in ("acquirejob", "accept"):
                # RunServer.GetJobMessageAsync (Runner.cs:735): 404 job gone, 409 assignment gone.
                if job.outcome:
                    return 404, {"error": "job not found"}
                if not mine:
                    return 409, {"error": "MissingKey"}
                if job.acquire_answers:
                    status = int(job.acquire_answers.pop(0))
                    if status != 200:
                        return status, {"error": f"injected acquirejob answer {status}"}
                job.accepted = True
                job.last_renew = now
                if h.acquired_at is None:
                    h.acquired_at = now
            elif kind == "spawned":
                # Fake only: Runner.Worker was spawned and sent the job (SentJobToWorker_,
                # JobDispatcher.cs:537): W3 begins; the worker's result settles the job now.
                if h is not None and h.spawned_at is None and h.fate is None:
                    h.spawned_at = now
                    h.fate = "ran"
            elif kind == "release":
                # A one-job listener skips further job messages without acquiring them
                # (Runner.cs, skipMessageDeletion): back to the queue for another runner.
                if not job.outcome and not job.accepted and mine:
                    if h.fate is None:
                        h.fate, h.requeue_at = "requeued", now
                    self._requeue(job)
            elif kind == "renew":
                job.last_renew = now
                if mine and h.first_renew_at is None:
                    h.first_renew_at = now
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


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, e.g. a test's un-waited Popen, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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
                # The listener went away while we answered. A job message is delivered as far as
                # the service is concerned (runner#4728); its fate follows from the listener's
                # stop (session deleted, or process gone) or the pickup timeout.
                pass

        do_GET = do_POST = do_DELETE = _serve

    return Handler
