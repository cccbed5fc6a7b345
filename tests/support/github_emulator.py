"""GitHub REST emulators for runner-lifecycle's tests (loopback only).

Two servers, both answering the runner endpoints of GitHub's REST API (domain brief section 3):

* :class:`PrismServer`: ``@stoplight/prism-cli`` (pinned 5.16.0 in tests/github/package.json)
  serving GitHub's official OpenAPI description from ``@octokit/openapi`` (pinned 23.0.2), cut
  down to the runner paths by :func:`cut_spec` at test time (the full description takes ~14 s to
  load, the cut ~2 s; test-infra.md). Prism validates every request against the schema and answers
  with the spec's examples: the contract test for the Rust client. Stateless.
* :class:`FakeGitHub`: a small stateful server for the same paths (list, get one, delete then
  404, busy 422, registration tokens, JIT configs with name conflicts, App installation tokens), for tests
  that need state. With :meth:`FakeGitHub.attach_broker` its JIT configs are ones the stand-in
  listener (support.fake_runner) consumes, and its runner list follows the broker: online while a
  listener holds a session, busy during its job, ``version`` once it connected, gone once GitHub
  would have deleted the ephemeral registration (after its one job).
  ``validate_fake_against_spec`` checks its routes and answers against the same cut spec.

Node packages are installed with ``npm ci`` into tests/github/node_modules on first use
(:func:`ensure_node_modules`, idempotent); nothing here contacts any address but 127.0.0.1.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlparse

GITHUB_DIR = Path(__file__).resolve().parents[1] / "github"
SPEC_IN_PACKAGE = "node_modules/@octokit/openapi/generated/api.github.com.json"

#: The operations runner-lifecycle calls: (method, OpenAPI path). The runner operations, the App
#: token, and the two workflow-run reads of the scaling reconcile.
RUNNER_OPERATIONS = [
    ("get", "/orgs/{org}/actions/runners"),
    ("get", "/orgs/{org}/actions/runners/{runner_id}"),
    ("delete", "/orgs/{org}/actions/runners/{runner_id}"),
    ("post", "/orgs/{org}/actions/runners/registration-token"),
    ("post", "/orgs/{org}/actions/runners/generate-jitconfig"),
    ("get", "/repos/{owner}/{repo}/actions/runners"),
    ("get", "/repos/{owner}/{repo}/actions/runners/{runner_id}"),
    ("delete", "/repos/{owner}/{repo}/actions/runners/{runner_id}"),
    ("post", "/repos/{owner}/{repo}/actions/runners/registration-token"),
    ("post", "/repos/{owner}/{repo}/actions/runners/generate-jitconfig"),
    ("post", "/app/installations/{installation_id}/access_tokens"),
    # Demand for `controller scale` (the reconcile): queued / in-progress runs and their jobs.
    ("get", "/repos/{owner}/{repo}/actions/runs"),
    ("get", "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs"),
    # The loss audit (docs/audit.md): an organisation's repositories, a job's check-run
    # annotations; and the controller's opt-in re-run of a job the fleet killed.
    ("get", "/orgs/{org}/repos"),
    ("get", "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations"),
    ("post", "/repos/{owner}/{repo}/actions/jobs/{job_id}/rerun"),
]


def ensure_node_modules(timeout: float = 600.0) -> Path:
    """Install the pinned npm packages once (``npm ci``, from package-lock.json)."""
    prism = GITHUB_DIR / "node_modules" / ".bin" / "prism"
    spec = GITHUB_DIR / SPEC_IN_PACKAGE
    if prism.exists() and spec.exists():
        return GITHUB_DIR
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed; the GitHub contract tests need Node.js and npm")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=GITHUB_DIR, check=True,
                   timeout=timeout)
    return GITHUB_DIR


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            found.add(ref)
        for v in node.values():
            _refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _refs(v, found)


def cut_spec(out: Path, source: Path | None = None) -> Path:
    """Write GitHub's OpenAPI description reduced to :data:`RUNNER_OPERATIONS` and the components
    they reference (transitively) to ``out``."""
    source = source or GITHUB_DIR / SPEC_IN_PACKAGE
    full = json.loads(source.read_text())
    paths: dict[str, Any] = {}
    for method, path in RUNNER_OPERATIONS:
        item = full["paths"][path]
        kept = paths.setdefault(path, {k: v for k, v in item.items() if k == "parameters"})
        kept[method] = copy.deepcopy(item[method])
    # The list operations' `Link` example points at https://api.github.com; a client that (rightly)
    # refuses to follow pagination to another host would fail on it, so the cut drops that header.
    for path, item in paths.items():
        for op in item.values():
            if isinstance(op, dict):
                for resp in op.get("responses", {}).values():
                    if isinstance(resp, dict):
                        resp.get("headers", {}).pop("Link", None)
    cut = {k: v for k, v in full.items() if k not in ("paths", "components", "webhooks", "x-webhooks")}
    cut["paths"] = paths
    components: dict[str, dict[str, Any]] = {}
    pending: set[str] = set()
    _refs(paths, pending)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _, _, kind, name = ref.split("/", 3)
        node = full["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        _refs(node, pending)
    cut["components"] = components
    out.write_text(json.dumps(cut))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrismServer:
    """``prism mock`` of the cut spec on 127.0.0.1 (validating requests, example answers)."""

    def __init__(self, spec: Path, log: Path) -> None:
        self.spec = spec
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = log
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> "PrismServer":
        prism = GITHUB_DIR / "node_modules" / ".bin" / "prism"
        self._log = open(self._log_path, "wb")
        self._proc = subprocess.Popen(
            [str(prism), "mock", "-h", "127.0.0.1", "-p", str(self.port), str(self.spec)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=GITHUB_DIR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prism exited {self._proc.returncode}: {self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prism did not listen within {timeout} s: {self.log()[-2000:]}")

    def log(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()


class FakeGitHub:
    """A stateful GitHub for the runner endpoints of one organisation (or repository).

    ``runners`` maps id -> runner dict (GitHub's ``runner`` schema); ``requests`` logs
    ``(method, path, authorization_ok)``. Tokens are checked: every call needs
    ``Authorization: Bearer <token>`` (or an installation token minted through the App route).
    """

    def __init__(self, token: str = "ghp_faketoken000000000000000000000000", page_size: int = 100,
                 consumed_on_assign: bool = False) -> None:
        """consumed_on_assign: with a broker attached, a JIT registration is consumed when a job
        is assigned to it (runner#4617 / PR #4618, handover-window.md 1.4): from the assignment
        on, GET and DELETE of it answer 404 and the list leaves it out."""
        self._consumed_on_assign = consumed_on_assign
        self.token = token
        self.page_size = page_size
        self.runners: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, bool]] = []
        self.registration_tokens: list[str] = []
        self.installation_tokens: list[str] = []
        #: Workflow jobs by id (GitHub's ``job`` schema); runs are derived from them.
        self.jobs: dict[int, dict[str, Any]] = {}
        #: Statuses to answer next, in order (0: normally; 4290: 429 + Retry-After: 0), or
        #: (status, {header: value}) for any answer with headers of the test's choosing.
        self.fail_next: list[int | tuple[int, dict[str, str]]] = []
        #: Optional live view: name -> (status, busy), e.g. derived from the fake runner broker's
        #: sessions, so GitHub's runner status follows the real (stand-in) listener.
        self.live: Callable[[str], tuple[str, bool]] | None = None
        #: JIT configurations handed out, by runner name (what the stand-in listener takes).
        self.jit_configs: dict[str, str] = {}
        self.jit_names: set[str] = set()
        self.broker: Any = None
        #: Workflow runs loaded from an export (id -> {"id", "created_at", "run_attempt", "_repo"});
        #: when any is loaded, ``GET .../actions/runs`` lists these (``created=A..B`` honoured).
        self.run_records: dict[int, dict[str, Any]] = {}
        #: Check-run annotations by check run id (the audit's evidence of a runner's end).
        self.annotations: dict[int, list[dict[str, Any]]] = {}
        #: Answers of ``304 Not Modified`` sent for a matching ``If-None-Match``.
        self.not_modified = 0
        #: Job ids re-run (``POST .../actions/jobs/{id}/rerun``).
        self.reruns: list[int] = []
        self._next_id = 1
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeGitHub":
        self._started = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if getattr(self, "_started", False):
            self._server.shutdown()
        self._server.server_close()

    def attach_broker(self, broker: Any) -> "FakeGitHub":
        """Link JIT runners to a support.fake_runner Broker: generate-jitconfig registers the
        runner there and answers a config whose `.runner` points at it; list, get and delete
        follow the broker's view (:meth:`Broker.runner_state`), and DELETE is refused (422)
        while the broker has a job assigned to that runner (:meth:`Broker.remove_runner`)."""
        self.broker = broker
        broker.consume_jit_on_assign = self._consumed_on_assign
        return self

    @property
    def consumed_on_assign(self) -> bool:
        return self._consumed_on_assign

    @consumed_on_assign.setter
    def consumed_on_assign(self, value: bool) -> None:
        self._consumed_on_assign = bool(value)
        if self.broker is not None:
            self.broker.consume_jit_on_assign = self._consumed_on_assign

    def add_runner(self, name: str, labels: list[str], status: str = "offline", busy: bool = False,
                   version: str | None = "2.336.0", os_name: str = "Linux", ephemeral: bool = False,
                   runner_group_id: int = 1, default_labels: bool = True) -> int:
        """Register a runner directly. ``version=None`` models a registration no listener ever
        connected to (GitHub sets `version` only after the first connection)."""
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            names = (["self-hosted", "Linux", "X64"] if default_labels else []) + labels
            runner: dict[str, Any] = {
                "id": rid, "name": name, "os": os_name, "status": status, "busy": busy, "ephemeral": ephemeral,
                "runner_group_id": runner_group_id,
                "labels": [{"id": i + 1, "name": label,
                            "type": "read-only" if label.lower() in _DEFAULT_LABELS else "custom"}
                           for i, label in enumerate(names)],
            }
            if version is not None:
                runner["version"] = version
            self.runners[rid] = runner
            return rid

    def _sync_jit(self) -> None:
        """Apply the broker's view to the JIT runners (deleted ones disappear)."""
        if self.broker is None:
            return
        with self._lock:
            jit = [(rid, r["name"]) for rid, r in self.runners.items() if r["name"] in self.jit_names]
        for rid, name in jit:
            state = self.broker.runner_state(name)
            with self._lock:
                runner = self.runners.get(rid)
                if runner is None:
                    continue
                if state["deleted"] or not state["registered"]:
                    del self.runners[rid]
                    self.jit_names.discard(name)
                    continue
                runner["status"] = "online" if state["online"] else "offline"
                runner["busy"] = state["busy"]
                if state["connected_once"]:
                    runner["version"] = "2.336.0"
                    runner["os"] = "Linux"

    def _generate_jitconfig(self, body: dict[str, Any], scope_url: str) -> tuple[int, dict[str, str], Any]:
        name, group, labels = body.get("name"), body.get("runner_group_id"), body.get("labels")
        work = body.get("work_folder", "_work")
        if (not isinstance(name, str) or not name.strip() or not isinstance(group, int) or isinstance(group, bool)
                or not isinstance(labels, list) or not 1 <= len(labels) <= 100
                or not all(isinstance(x, str) and x.strip() for x in labels) or not isinstance(work, str)):
            return 422, {}, {"message": "Validation Failed", "documentation_url": "https://docs.github.com/rest"}
        self._sync_jit()
        with self._lock:
            taken = any(r["name"] == name for r in self.runners.values())
        if taken:
            # The description documents 409 (basic-error); GitHub's exact wording is not
            # established here: do not assert on the message.
            return 409, {}, {"message": f"Already exists - A runner with the name {name} already exists.",
                             "documentation_url": "https://docs.github.com/rest"}
        rid = self.add_runner(name, labels, version=None, os_name="unknown", ephemeral=True,
                              runner_group_id=group, default_labels=False)
        with self._lock:
            self.jit_names.add(name)
            runner = copy.deepcopy(self.runners[rid])
        if self.broker is not None:
            blob = self.broker.generate_jitconfig(name, labels, work_folder=work, runner_id=rid, github_url=scope_url)
        else:
            blob = _standalone_jitconfig(name, rid, self.url, scope_url, work)
        self.jit_configs[name] = blob
        return 201, {}, {"runner": runner, "encoded_jit_config": blob}

    def add_job(self, job_id: int, labels: list[str], status: str = "queued", run_id: int = 1,
                repo: str = "acme/infra") -> dict[str, Any]:
        """A workflow job (``queued``, ``in_progress`` or ``completed``) of run ``run_id``."""
        now = _iso(time.time())
        job = {
            "id": job_id, "node_id": f"J_{job_id}", "run_id": run_id, "run_attempt": 1,
            "run_url": f"{self.url}/repos/{repo}/actions/runs/{run_id}", "head_sha": "0" * 40,
            "workflow_name": "ci", "head_branch": "main", "name": f"job-{job_id}",
            "url": f"{self.url}/repos/{repo}/actions/jobs/{job_id}",
            "html_url": f"https://github.com/{repo}/actions/runs/{run_id}/job/{job_id}",
            "status": status, "conclusion": "success" if status == "completed" else None,
            "created_at": now, "started_at": now, "completed_at": now if status == "completed" else None,
            "check_run_url": f"{self.url}/repos/{repo}/check-runs/{job_id}", "labels": list(labels),
            "runner_id": None, "runner_name": None, "runner_group_id": None, "runner_group_name": None,
            "_repo": repo,
        }
        with self._lock:
            self.jobs[job_id] = job
        return job

    def load_export(self, export_dir: Path) -> "FakeGitHub":
        """Serve the records ``runner-lifecycle simulate --export-github DIR`` wrote: its runs, jobs
        (all completed) and check-run annotations (github.json)."""
        data = json.loads((Path(export_dir) / "github.json").read_text())
        with self._lock:
            for job in data["jobs"]:
                self.jobs[int(job["id"])] = job
            for run in data["runs"]:
                self.run_records[int(run["id"])] = run
            for check_run_id, notes in data["annotations"].items():
                self.annotations[int(check_run_id)] = notes
        return self

    def _paged(self, items: list[Any], query: dict[str, list[str]], path: str) -> tuple[list[Any], dict[str, str]]:
        """One page of ``items`` and its ``Link: rel="next"`` header (the query kept)."""
        per_page = min(int(query.get("per_page", ["30"])[0]), self.page_size)
        page = int(query.get("page", ["1"])[0])
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            keep = "&".join(f"{k}={v[0]}" for k, v in sorted(query.items()) if k not in ("page", "per_page"))
            keep = keep + "&" if keep else ""
            headers["Link"] = f'<{self.url}{path}?{keep}per_page={per_page}&page={page + 1}>; rel="next"'
        return chunk, headers

    def _export_runs(self, repo: str, query: dict[str, list[str]], path: str) -> tuple[int, dict[str, str], Any]:
        """``GET .../actions/runs?created=A..B`` over loaded runs (GitHub's search range syntax,
        inclusive; RFC 3339 UTC timestamps compare as text)."""
        created = query.get("created", [None])[0]
        lo, hi = ("", "\uffff")
        if created:
            if ".." not in created:
                return 422, {}, {"message": "Validation Failed", "documentation_url": "x"}
            lo, hi = created.split("..", 1)
        with self._lock:
            runs = [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.run_records.values()
                    if r["_repo"] == repo and lo <= r["created_at"] <= hi]
        runs.sort(key=lambda r: r["id"])
        for r in runs:
            r.update({"name": "ci", "status": "completed"})
        chunk, headers = self._paged(runs, query, path)
        return 200, headers, {"total_count": len(runs), "workflow_runs": chunk}

    def set_job(self, job_id: int, status: str) -> None:
        with self._lock:
            self.jobs[job_id]["status"] = status
            self.jobs[job_id]["conclusion"] = "success" if status == "completed" else None

    def _public(self, job: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def _actions(self, method: str, repo: str, tail: list[str], query: dict[str, list[str]],
                 path: str) -> tuple[int, dict[str, str], Any]:
        """``GET .../actions/runs?status=`` and ``GET .../actions/runs/{id}/jobs`` (one page each)."""
        if method != "GET":
            return 404, {}, {"message": "Not Found", "documentation_url": "x"}
        if tail == ["runs"] and self.run_records:
            return self._export_runs(repo, query, path)
        rid_wanted = int(tail[1]) if len(tail) == 3 and tail[1].isdigit() else None
        with self._lock:
            # Filtered before the copy: an exported week holds tens of thousands of jobs.
            jobs = [copy.deepcopy(j) for j in self.jobs.values()
                    if j["_repo"] == repo and (rid_wanted is None or j["run_id"] == rid_wanted)]
        if tail == ["runs"]:
            want = query.get("status", [None])[0]
            runs: dict[int, str] = {}
            for j in jobs:
                # A run is in progress while any job is, queued while all unfinished ones are queued.
                st = runs.get(j["run_id"], "completed")
                if j["status"] == "in_progress" or st == "in_progress":
                    st = "in_progress"
                elif j["status"] == "queued":
                    st = "queued"
                runs[j["run_id"]] = st
            chosen = [{"id": rid, "status": st, "name": "ci"} for rid, st in sorted(runs.items())
                      if want is None or st == want]
            return 200, {}, {"total_count": len(chosen), "workflow_runs": chosen}
        if len(tail) == 3 and tail[0] == "runs" and tail[1].isdigit() and tail[2] == "jobs":
            rid = int(tail[1])
            chosen = [self._public(j) for j in sorted(jobs, key=lambda j: j["id"]) if j["run_id"] == rid]
            per_page = min(int(query.get("per_page", ["30"])[0]), self.page_size)
            page = int(query.get("page", ["1"])[0])
            chunk = chosen[(page - 1) * per_page: page * per_page]
            headers = {}
            if page * per_page < len(chosen):
                flt = query.get("filter", ["latest"])[0]
                headers["Link"] = f'<{self.url}{path}?filter={flt}&per_page={per_page}&page={page + 1}>; rel="next"'
            return 200, headers, {"total_count": len(chosen), "jobs": chunk}
        return 404, {}, {"message": "Not Found", "documentation_url": "x"}

    def runner_names(self) -> list[str]:
        with self._lock:
            return sorted(r["name"] for r in self.runners.values())

    # ------------------------------------------------------------------ routes
    def handle(self, method: str, path: str, query: dict[str, list[str]], auth: str,
               body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        parts = [p for p in path.split("/") if p]
        ok = auth in (f"Bearer {self.token}",) or any(auth == f"Bearer {t}" for t in self.installation_tokens)
        with self._lock:
            self.requests.append((method, path, ok))
            status = self.fail_next.pop(0) if self.fail_next else 0
            if isinstance(status, tuple):  # (status, headers): any answer, hostile headers included
                code, extra = status
                return code, dict(extra), {"message": "injected answer", "documentation_url": "x"}
            if status == 4290:  # a 429 with `Retry-After: 0`
                return 429, {"Retry-After": "0"}, {"message": "injected rate limit", "documentation_url": "x"}
            if status:  # 0: answer normally
                return status, {}, {"message": "injected failure", "documentation_url": "https://docs.github.com"}
        if parts[:2] == ["app", "installations"] and len(parts) == 4 and parts[3] == "access_tokens" and method == "POST":
            if not auth.startswith("Bearer ey"):
                return 401, {}, {"message": "A JSON web token could not be decoded", "documentation_url": "x"}
            tok = "ghs_" + uuid.uuid4().hex
            self.installation_tokens.append(tok)
            return 201, {}, {"token": tok, "expires_at": _iso(time.time() + 3600)}
        if not ok:
            return 401, {}, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}
        if parts[0] == "orgs" and len(parts) == 3 and parts[2] == "repos" and method == "GET":
            with self._lock:
                names = sorted({j["_repo"] for j in self.jobs.values()} | {r["_repo"] for r in self.run_records.values()})
            repos = [{"id": i + 1, "name": n.split("/")[1], "full_name": n, "owner": {"login": n.split("/")[0]}}
                     for i, n in enumerate(names) if n.split("/")[0] == parts[1]]
            chunk, headers = self._paged(repos, query, path)
            return 200, headers, chunk
        if parts[0] == "repos" and len(parts) == 6 and parts[3] == "check-runs" and parts[5] == "annotations" \
                and method == "GET" and parts[4].isdigit():
            with self._lock:
                notes = copy.deepcopy(self.annotations.get(int(parts[4]), []))
            chunk, headers = self._paged(notes, query, path)
            return 200, headers, chunk
        if parts[0] == "repos" and len(parts) == 7 and parts[3:5] == ["actions", "jobs"] and parts[6] == "rerun" \
                and method == "POST" and parts[5].isdigit():
            jid = int(parts[5])
            with self._lock:
                if jid not in self.jobs:
                    return 404, {}, {"message": "Not Found", "documentation_url": "x"}
                self.reruns.append(jid)
            return 201, {}, {}
        if parts[0] == "orgs" and len(parts) >= 4:
            rest = parts[2:]
        elif parts[0] == "repos" and len(parts) >= 5:
            rest = parts[3:]
            if rest[:2] == ["actions", "runs"]:
                return self._actions(method, f"{parts[1]}/{parts[2]}", rest[1:], query, path)
        else:
            return 404, {}, {"message": "Not Found", "documentation_url": "x"}
        if rest[:2] != ["actions", "runners"]:
            return 404, {}, {"message": "Not Found", "documentation_url": "x"}
        tail = rest[2:]
        scope_url = "https://github.com/" + "/".join(parts[1:2] if parts[0] == "orgs" else parts[1:3])
        if tail == ["generate-jitconfig"] and method == "POST":
            return self._generate_jitconfig(body, scope_url)
        self._sync_jit()
        if not tail and method == "GET":
            per_page = int(query.get("per_page", ["30"])[0])
            per_page = min(per_page, self.page_size)
            page = int(query.get("page", ["1"])[0])
            with self._lock:
                items = copy.deepcopy(sorted(self.runners.values(), key=lambda r: r["id"]))
            if "name" in query:
                items = [r for r in items if r["name"] == query["name"][0]]
            if self.live is not None:
                for r in items:
                    if r["name"] not in self.jit_names:
                        r["status"], r["busy"] = self.live(r["name"])
            chunk = items[(page - 1) * per_page: page * per_page]
            headers = {}
            if page * per_page < len(items):
                headers["Link"] = f'<{self.url}{path}?per_page={per_page}&page={page + 1}>; rel="next"'
            return 200, headers, {"total_count": len(items), "runners": copy.deepcopy(chunk)}
        if len(tail) == 1 and tail[0].isdigit() and method == "GET":
            # actions/get-self-hosted-runner-for-org / -for-repo: 200 with the `runner` schema.
            # The description documents no 404, but GitHub answers 404 (basic-error) for an id
            # it does not know, as for the DELETE of a runner that is gone.
            with self._lock:
                found = self.runners.get(int(tail[0]))
                runner = copy.deepcopy(found) if found is not None else None
            if runner is None:
                return 404, {}, {"message": "Not Found", "documentation_url": "x"}
            if self.live is not None and runner["name"] not in self.jit_names:
                runner["status"], runner["busy"] = self.live(runner["name"])
            return 200, {}, runner
        if tail == ["registration-token"] and method == "POST":
            tok = "AABBCC" + uuid.uuid4().hex.upper()[:23]
            self.registration_tokens.append(tok)
            return 201, {}, {"token": tok, "expires_at": _iso(time.time() + 3600)}
        if len(tail) == 1 and tail[0].isdigit() and method == "DELETE":
            rid = int(tail[0])
            busy = (422, {}, {"message": "Bad request - Runner is currently running a job", "documentation_url": "x"})
            with self._lock:
                runner = self.runners.get(rid)
                if runner is None:
                    return 404, {}, {"message": "Not Found", "documentation_url": "x"}
                if runner["busy"]:
                    return busy
                name = runner["name"]
            if self.broker is not None:
                # Checked and done in one step with the broker's dispatch: a runner a job was
                # handed to (even one not yet acquired) is refused, as the Actions service's
                # RemoveRunner refuses once a job request is assigned (ARC's ADR 2022-12-27,
                # handover-window.md 3b); a deleted one is never handed a job again.
                verdict = self.broker.remove_runner(name)
                if verdict == "assigned":
                    return busy
                if verdict == "gone" and name in self.jit_names:
                    # Consumed by an assignment (or deleted by the service) meanwhile.
                    with self._lock:
                        self.runners.pop(rid, None)
                        self.jit_names.discard(name)
                    return 404, {}, {"message": "Not Found", "documentation_url": "x"}
            with self._lock:
                if self.runners.pop(rid, None) is None:
                    return 404, {}, {"message": "Not Found", "documentation_url": "x"}
                self.jit_names.discard(name)
            return 204, {}, None
        return 404, {}, {"message": "Not Found", "documentation_url": "x"}


_DEFAULT_LABELS = {"self-hosted", "linux", "x64", "arm64", "windows", "macos"}


def _standalone_jitconfig(name: str, rid: int, server_url: str, scope_url: str, work: str) -> str:
    """A well-formed JIT config when no broker is attached (same shape as
    Broker.generate_jitconfig); its serverUrl is FakeGitHub itself, which has no session routes,
    so a listener given it fails to connect."""
    import base64

    from support.fake_runner.common import runner_settings

    files = {
        ".runner": json.dumps(runner_settings(name, server_url, scope_url, agent_id=rid, ephemeral=True, work=work)),
        ".credentials": json.dumps({"scheme": "OAuth", "data": {"clientId": str(uuid.uuid4())}}),
        ".credentials_rsaparams": json.dumps({"fake": "not a key"}),
    }
    blob = {k: base64.b64encode(v.encode("utf-8-sig")).decode() for k, v in files.items()}
    return base64.b64encode(json.dumps(blob).encode()).decode()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _serve(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            status, headers, answer = fake.handle(self.command, url.path, parse_qs(url.query),
                                                  self.headers.get("Authorization", ""), body)
            data = b"" if answer is None else json.dumps(answer).encode()
            if self.command == "GET" and status == 200:
                # Conditional requests (GitHub REST API "Best practices"): a strong ETag of the body.
                import hashlib

                etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
                headers = {**headers, "ETag": etag}
                if self.headers.get("If-None-Match") == etag:
                    with fake._lock:
                        fake.not_modified += 1
                    status, data = 304, b""
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815

    return Handler


def validate_fake_against_spec(spec_path: Path) -> list[str]:
    """Check :class:`FakeGitHub`'s answers against the cut spec's response schemas; returns the
    problems found (empty when the fake speaks GitHub's schema)."""
    from openapi_schema_validator import OAS30Validator

    spec = json.loads(spec_path.read_text())

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                _, _, kind, name = node["$ref"].split("/", 3)
                return resolve(spec["components"][kind][name])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    fake = FakeGitHub()
    # Completed: the description's `conclusion` enum (OpenAPI 3.0 `nullable` + `enum`) refuses the
    # null GitHub sends for an unfinished job, so the schema check uses a finished one.
    fake.add_job(7, ["self-hosted", "linux"], status="completed", run_id=3)
    busy = fake.add_runner("i-0123456789abcdef0", ["i-0123456789abcdef0", "asg-runners"], status="online", busy=True)
    idle = fake.add_runner("i-0123456789abcdef1", ["i-0123456789abcdef1", "asg-runners"])
    auth = f"Bearer {fake.token}"
    calls = [
        ("get", "/orgs/{org}/actions/runners", "GET", "/orgs/acme/actions/runners", {}, 200),
        ("post", "/orgs/{org}/actions/runners/registration-token", "POST", "/orgs/acme/actions/runners/registration-token", {}, 201),
        ("post", "/orgs/{org}/actions/runners/generate-jitconfig", "POST", "/orgs/acme/actions/runners/generate-jitconfig",
         {"name": "jit-1", "runner_group_id": 1, "labels": ["x"], "work_folder": "_work"}, 201),
        ("post", "/orgs/{org}/actions/runners/generate-jitconfig", "POST", "/orgs/acme/actions/runners/generate-jitconfig",
         {"name": "jit-1", "runner_group_id": 1, "labels": ["x"]}, 409),
        ("post", "/orgs/{org}/actions/runners/generate-jitconfig", "POST", "/orgs/acme/actions/runners/generate-jitconfig",
         {"name": "jit-3", "runner_group_id": 1, "labels": []}, 422),
        ("post", "/repos/{owner}/{repo}/actions/runners/generate-jitconfig", "POST",
         "/repos/acme/infra/actions/runners/generate-jitconfig", {"name": "jit-2", "runner_group_id": 1, "labels": ["x"]}, 201),
        ("get", "/orgs/{org}/actions/runners", "GET", "/orgs/acme/actions/runners", {}, 200),
        ("get", "/orgs/{org}/actions/runners/{runner_id}", "GET", f"/orgs/acme/actions/runners/{busy}", {}, 200),
        ("get", "/repos/{owner}/{repo}/actions/runners/{runner_id}", "GET", f"/repos/acme/infra/actions/runners/{idle}",
         {}, 200),
        ("delete", "/orgs/{org}/actions/runners/{runner_id}", "DELETE", f"/orgs/acme/actions/runners/{busy}", {}, 422),
        ("delete", "/orgs/{org}/actions/runners/{runner_id}", "DELETE", f"/orgs/acme/actions/runners/{idle}", {}, 204),
        ("get", "/repos/{owner}/{repo}/actions/runners", "GET", "/repos/acme/infra/actions/runners", {}, 200),
        ("post", "/repos/{owner}/{repo}/actions/runners/registration-token", "POST", "/repos/acme/infra/actions/runners/registration-token", {}, 201),
        ("get", "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs", "GET", "/repos/acme/infra/actions/runs/3/jobs", {}, 200),
    ]
    problems = []
    for method, template, verb, path, body, want in calls:
        status, _headers, answer = fake.handle(verb, path, {"per_page": ["100"]}, auth, body)
        if status != want:
            problems.append(f"{verb} {path}: {status}, expected {want}")
            continue
        op = spec["paths"][template][method]
        if str(status) not in op["responses"]:
            problems.append(f"{verb} {path}: {status} is not a documented answer")
            continue
        content = resolve(op["responses"][str(status)]).get("content", {})
        schema = content.get("application/json", {}).get("schema")
        if schema is None:
            if answer is not None and status == 204:
                problems.append(f"{verb} {path}: body on 204")
            continue
        errors = sorted(OAS30Validator(schema).iter_errors(answer), key=str)
        problems.extend(f"{verb} {path}: {e.message}" for e in errors[:3])
    fake.stop()
    return problems


def rest(fake: "FakeGitHub", method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One authenticated REST call to ``fake`` as a client would make it (no proxy): the status and
    the decoded JSON answer (None when empty), for the selftests."""
    req = urllib.request.Request(fake.url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {fake.token}",
                                          "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None
