"""An IMDSv2 endpoint for one emulated EC2 instance, on 127.0.0.1.

moto's own IMDS (same port as the API, ``/latest/...``) is static: every instance is
``i-fake``, the token answer lacks the TTL header (the Rust SDK's IMDS client then fails with
``TokenError NoTtl``) and ``autoscaling/target-lifecycle-state`` answers 500. This server
answers for one instance, derives ``target-lifecycle-state`` from the Auto Scaling state kept
by :mod:`support.moto_lifecycle`, and lets a test set spot and rebalance notices, make the
service unavailable for a while, or delay state changes.

Behaviour follows the EC2 User Guide pages "Use IMDSv2", "Instance metadata categories",
"Retrieve the target lifecycle state through instance metadata" (Auto Scaling User Guide),
"Spot Instance interruption notices" and "EC2 instance rebalance recommendations".
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

#: IMDSv2 accepts token TTLs from 1 s to 6 h (EC2 User Guide, "Use IMDSv2").
MAX_TOKEN_TTL_S = 21600

TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


def target_lifecycle_state(lifecycle_state: str | None, warm_pool_state: str = "Stopped") -> str | None:
    """Map an Auto Scaling lifecycle state to IMDS's *target* lifecycle state.

    The target state is where the instance is heading: ``Terminated`` already during
    ``Terminating:Wait``; ``InService`` during ``Pending:*``; warm-pool instances report
    ``Warmed:<pool state>`` (Auto Scaling User Guide, target lifecycle state via IMDS).
    """
    if lifecycle_state is None:
        return None
    s = lifecycle_state
    if s.startswith("Warmed:"):
        if s.startswith("Warmed:Terminat"):
            return "Warmed:Terminated"
        if s.startswith("Warmed:Pending"):
            return f"Warmed:{warm_pool_state}"
        return s
    if s == "InService" or s.startswith("Pending"):
        return "InService"
    if s.startswith("Terminat"):
        return "Terminated"
    if s.startswith("Detach"):
        return "Detached"
    if s in ("EnteringStandby", "Standby"):
        return "Standby"
    return None


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ImdsServer:
    """IMDSv2 for one instance. ``url`` is what AWS_EC2_METADATA_SERVICE_ENDPOINT should be."""

    def __init__(
        self,
        instance_id: str,
        region: str = "us-east-1",
        state_at: Callable[[str, float], str | None] | None = None,
        availability_zone: str | None = None,
        instance_type: str = "t3.micro",
        host: str = "127.0.0.1",
    ) -> None:
        self.instance_id = instance_id
        self.region = region
        self.availability_zone = availability_zone or f"{region}a"
        self.instance_type = instance_type
        self._state_at = state_at or (lambda _iid, _t: None)
        self._host = host
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._spot: dict[str, str] | None = None
        self._rebalance: dict[str, str] | None = None
        self._unavailable_until = 0.0
        self._unavailable_mode = "refused"
        self._lag_s = 0.0
        #: When set, the token answer's TTL header says this (any text, hostile values included)
        #: instead of the TTL granted; the token itself stays valid for the TTL asked.
        self.token_ttl_answer: str | None = None
        self._server: ThreadingHTTPServer | None = None
        self._restart_timer: threading.Timer | None = None
        self._closed = False
        #: (monotonic, method, path, status) per request, for assertions on polling.
        self.requests: list[tuple[float, str, str, int]] = []
        self.port = 0
        self._bind()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def _bind(self) -> None:
        server = ThreadingHTTPServer((self._host, self.port), _make_handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"imds-{self.instance_id}", daemon=True).start()

    def _unbind(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def close(self) -> None:
        self._closed = True
        if self._restart_timer:
            self._restart_timer.cancel()
        self._unbind()

    # -------------------------------------------------------------------- control
    def set_spot_notice(self, action: str = "terminate", when: datetime | str | None = None) -> dict[str, str]:
        """Publish a spot interruption notice (AWS gives two minutes' warning)."""
        if when is None:
            when = datetime.now(timezone.utc) + timedelta(minutes=2)
        t = when if isinstance(when, str) else _iso(when)
        with self._lock:
            self._spot = {"action": action, "time": t}
            return dict(self._spot)

    def clear_spot_notice(self) -> None:
        with self._lock:
            self._spot = None

    def set_rebalance(self, notice_time: datetime | str | None = None) -> dict[str, str]:
        t = notice_time or datetime.now(timezone.utc)
        with self._lock:
            self._rebalance = {"noticeTime": t if isinstance(t, str) else _iso(t)}
            return dict(self._rebalance)

    def set_unavailable(self, seconds: float, mode: str = "refused") -> None:
        """Make the service unreachable for ``seconds``.

        mode "refused": the listening socket is closed (connection refused) and open
        connections are dropped; "500": every request answers 500 Internal Server Error.
        """
        if mode not in ("refused", "500"):
            raise ValueError("mode must be 'refused' or '500'")
        with self._lock:
            self._unavailable_until = time.monotonic() + seconds
            self._unavailable_mode = mode
        if mode == "refused":
            self._unbind()
            if self._restart_timer:
                self._restart_timer.cancel()
            self._restart_timer = threading.Timer(seconds, self._rebind)
            self._restart_timer.daemon = True
            self._restart_timer.start()

    def _rebind(self) -> None:
        if not self._closed and self._server is None:
            self._bind()  # same port (SO_REUSEADDR)

    def set_target_state_lag(self, seconds: float) -> None:
        """Show target-lifecycle-state as it was ``seconds`` ago (AWS updates it with a delay)."""
        with self._lock:
            self._lag_s = float(seconds)

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far (the next GET with one answers 401)."""
        with self._lock:
            self._tokens.clear()

    # ------------------------------------------------------------------- answers
    def _unavailable(self) -> str | None:
        with self._lock:
            if time.monotonic() < self._unavailable_until:
                return self._unavailable_mode
            return None

    def _issue_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(40)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl
        return token

    def _token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
            return expiry is not None and time.monotonic() < expiry

    def target_state(self) -> str | None:
        with self._lock:
            lag = self._lag_s
        return target_lifecycle_state(self._state_at(self.instance_id, time.monotonic() - lag))

    def metadata(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) for a GET under /latest/."""
        simple = {
            "meta-data/instance-id": self.instance_id,
            "meta-data/instance-type": self.instance_type,
            "meta-data/placement/region": self.region,
            "meta-data/placement/availability-zone": self.availability_zone,
            "meta-data/ami-id": "ami-12c6146b",
            "meta-data/local-ipv4": "127.0.0.1",
        }
        if path in ("meta-data", "meta-data/"):
            listing = ["ami-id", "autoscaling/", "events/", "instance-id", "instance-type", "local-ipv4", "placement/", "spot/"]
            return 200, "text/plain", "\n".join(listing)
        path = path.rstrip("/")  # leaves answer with or without a trailing slash
        if path in simple:
            return 200, "text/plain", simple[path]
        if path == "meta-data/autoscaling/target-lifecycle-state":
            state = self.target_state()
            return (200, "text/plain", state) if state else (404, "text/plain", "Not Found")
        if path in ("meta-data/spot/instance-action", "meta-data/spot/termination-time"):
            with self._lock:
                spot = dict(self._spot) if self._spot else None
            if spot is None:
                return 404, "text/plain", "Not Found"
            if path.endswith("termination-time"):
                return 200, "text/plain", spot["time"]
            return 200, "application/json", json.dumps(spot)
        if path == "meta-data/events/recommendations/rebalance":
            with self._lock:
                rebalance = dict(self._rebalance) if self._rebalance else None
            if rebalance is None:
                return 404, "text/plain", "Not Found"
            return 200, "application/json", json.dumps(rebalance)
        if path == "dynamic/instance-identity/document":
            doc = {
                "instanceId": self.instance_id,
                "region": self.region,
                "availabilityZone": self.availability_zone,
                "instanceType": self.instance_type,
                "accountId": "123456789012",
                "imageId": "ami-12c6146b",
                "privateIp": "127.0.0.1",
            }
            return 200, "application/json", json.dumps(doc)
        return 404, "text/plain", "Not Found"


def _make_handler(imds: ImdsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "EC2ws"

        def log_message(self, *_args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: str = "", ctype: str = "text/plain", headers: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            imds.requests.append((time.monotonic(), self.command, self.path, status))

        def _gate(self) -> bool:
            mode = imds._unavailable()
            if mode == "refused":
                # A kept-alive connection opened before the outage is dropped without answer.
                self.close_connection = True
                imds.requests.append((time.monotonic(), self.command, self.path, 0))
                return False
            if mode == "500":
                self._send(500, "Internal Server Error")
                return False
            return True

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if not self._gate():
                return
            if self.path != "/latest/api/token":
                self._send(404 if self.path.startswith("/latest/") else 403, "Not Found")
                return
            if self.headers.get("X-Forwarded-For"):
                # IMDSv2 refuses token requests that went through a proxy.
                self._send(403, "Forbidden")
                return
            raw = self.headers.get(TTL_HEADER)
            try:
                ttl = int(raw) if raw is not None else -1
            except ValueError:
                ttl = -1
            if not 1 <= ttl <= MAX_TOKEN_TTL_S:
                self._send(400, "Bad Request")
                return
            token = imds._issue_token(ttl)
            # The TTL header on the answer is required by the AWS SDKs' IMDS clients.
            answer = imds.token_ttl_answer if imds.token_ttl_answer is not None else str(ttl)
            self._send(200, token, headers={TTL_HEADER: answer})

        def do_GET(self) -> None:
            if not self._gate():
                return
            path = self.path.split("?", 1)[0]
            if not path.startswith("/latest/"):
                self._send(404, "Not Found")
                return
            if path == "/latest/api/token":
                self._send(405, "Method Not Allowed")
                return
            # IMDSv2 required (HttpTokens=required): no or expired token -> 401.
            if not imds._token_valid(self.headers.get(TOKEN_HEADER)):
                self._send(401, "Unauthorized")
                return
            status, ctype, body = imds.metadata(path[len("/latest/"):])
            self._send(status, body, ctype)

    return Handler
