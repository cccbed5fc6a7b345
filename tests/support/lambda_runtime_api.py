"""A loopback stand-in for the AWS Lambda Runtime API (Lambda Developer Guide, "Using the Lambda
runtime API for custom runtimes"): ``GET /2018-06-01/runtime/invocation/next`` hands out queued
events with the ``Lambda-Runtime-*`` headers, ``POST .../invocation/{id}/response`` and
``.../{id}/error`` record the function's answers. Enough to run ``runner-lifecycle controller
lambda`` as the provided.al2023 runtime would."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"


class RuntimeApi:
    def __init__(self) -> None:
        self.events: "queue.Queue[tuple[str, bytes]]" = queue.Queue()
        self.results: dict[str, tuple[str, Any]] = {}
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "RuntimeApi":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def invoke(self, body: str) -> str:
        request_id = str(uuid.uuid4())
        self.events.put((request_id, body.encode()))
        return request_id

    def wait(self, request_id: str, timeout: float = 30.0) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while request_id not in self.results:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer to {request_id}")
                self._cond.wait(left)
            return self.results[request_id]

    def _record(self, request_id: str, kind: str, body: bytes) -> None:
        try:
            value: Any = json.loads(body) if body else None
        except ValueError:
            value = body.decode(errors="replace")
        with self._cond:
            self.results[request_id] = (kind, value)
            self._cond.notify_all()


def _handler(api: RuntimeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path != f"{PREFIX}/invocation/next":
                return self._answer(404)
            while True:
                try:
                    request_id, body = api.events.get(timeout=0.5)
                    break
                except queue.Empty:
                    continue
            self._answer(200, body, {
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 60_000),
                "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:runner-lifecycle",
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
            })

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = self.path[len(PREFIX):].strip("/").split("/")
            if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                api._record(parts[1], parts[2], body)
                return self._answer(202, b"{}")
            if parts == ["init", "error"]:
                api._record("init", "error", body)
                return self._answer(202, b"{}")
            return self._answer(404)

    return Handler
