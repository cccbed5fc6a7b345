"""A loopback stand-in for an AWS Lambda function URL in front of ``runner-lifecycle controller
lambda``: it authenticates each request as a function URL with ``AuthType AWS_IAM`` would, turns
it into the function-URL event (payload format 2.0) and hands it to the function through
:class:`support.lambda_runtime_api.RuntimeApi`, then answers with the function's HTTP response.

AWS facts it follows (Lambda Developer Guide, "Invoking Lambda function URLs" and "Control access
to Lambda function URLs"; docs/security.md cites them):

* ``AWS_IAM``: every request must carry a valid Signature Version 4 ``Authorization`` header for
  service ``lambda`` in the function's region; anything else is refused with HTTP 403 before the
  function runs. The function sees the signer in ``requestContext.authorizer.iam``
  (``accessKey``, ``accountId``, ``callerId``, ``cognitoIdentity``, ``principalOrgId``,
  ``userArn``, ``userId``). ``NONE``: no check, no ``authorizer``.
* The signature is recomputed with botocore's own SigV4 signer (``botocore.auth.SigV4Auth``) over
  the canonical request made of the method, path, query, the headers the request lists in
  ``SignedHeaders`` and the SHA-256 of the body, with the request's ``X-Amz-Date``. The access
  key must be in the front's table (``access_key -> Identity``); a session token, when the table
  has one, must match ``X-Amz-Security-Token``. A timestamp more than 5 minutes from the front's
  clock is refused (SigV4's validity window; IAM User Guide, "Signing AWS API requests").
* A function error (the runtime's ``/error``) is HTTP 502; a response without ``statusCode`` is
  sent as a 200 JSON body (the "inferred" response format).

Not emulated: IAM policy evaluation (every key in the table is allowed to invoke), CORS,
response streaming, throttling by Lambda, query-string (presigned) signatures, chunked payload
signing. The front drops ``Authorization`` and ``X-Amz-Security-Token`` from the event's headers
(what AWS passes on there was not established); the controller reads neither.
"""

from __future__ import annotations

import base64
import calendar
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from support.lambda_runtime_api import RuntimeApi

#: SigV4's validity window: requests older or newer than this are refused.
MAX_SKEW_S = 300
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<ak>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<sig>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class Identity:
    """What a key stands for: its secret, the principal AWS would name, and (for temporary
    credentials) the session token."""

    secret_key: str
    user_arn: str
    token: str | None = None
    user_id: str = "AROAEXAMPLEROLEID0000"

    @property
    def account_id(self) -> str:
        parts = self.user_arn.split(":")
        return parts[4] if len(parts) > 4 else ""


def instance_role_arn(account: str, role: str, instance_id: str) -> str:
    """The ARN of an instance profile's role session: the session is named after the instance."""
    return f"arn:aws:sts::{account}:assumed-role/{role}/{instance_id}"


def sign(url: str, access_key: str, secret_key: str, *, token: str | None = None, body: bytes = b"{}",
         region: str = "us-east-1", service: str = "lambda", amz_date: str | None = None,
         method: str = "POST") -> dict[str, str]:
    """Headers of a SigV4-signed request (what an SDK would send), for tests acting as a host."""
    amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    headers = {"host": netloc, "content-type": "application/json", "x-amz-date": amz_date}
    if token:
        headers["x-amz-security-token"] = token
    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    req.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(access_key, secret_key, token), service, region)
    signature = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
    signed = auth.signed_headers(auth.headers_to_sign(req))
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={auth.scope(req)}, SignedHeaders={signed}, "
                                f"Signature={signature}")
    return headers


class FunctionUrlFront:
    def __init__(self, runtime: RuntimeApi, identities: dict[str, Identity] | None = None, *,
                 auth_type: str = "AWS_IAM", account_id: str = "123456789012", region: str = "us-east-1",
                 invoke_timeout_s: float = 30.0) -> None:
        if auth_type not in ("AWS_IAM", "NONE"):
            raise ValueError(auth_type)
        self.runtime = runtime
        self.identities = dict(identities or {})
        self.auth_type = auth_type
        self.account_id = account_id
        self.region = region
        self.invoke_timeout_s = invoke_timeout_s
        #: (method, path, status, access key or None, refused-before-invoking reason or None)
        self.requests: list[tuple[str, str, int, str | None, str | None]] = []
        #: Every event handed to the function.
        self.events: list[dict[str, Any]] = []
        self.url_id = uuid.uuid4().hex[:32]
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FunctionUrlFront":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ authentication
    def authenticate(self, method: str, path: str, query: str, headers: dict[str, str],
                     body: bytes, now: float | None = None) -> tuple[str | None, Identity | None, str | None]:
        """(access key, identity, None) when the signature is valid, else (key, None, reason)."""
        m = _AUTH.match(headers.get("authorization", ""))
        if not m:
            return None, None, "missing or malformed Authorization"
        ak = m["ak"]
        ident = self.identities.get(ak)
        if ident is None:
            return ak, None, "unknown access key"
        if m["region"] != self.region or m["service"] != "lambda":
            return ak, None, "credential scope is not this region's lambda"
        signed = m["signed"].split(";")
        if "host" not in signed or "x-amz-date" not in signed or any(h not in headers for h in signed):
            return ak, None, "host and x-amz-date must be signed, and every signed header sent"
        amz_date = headers.get("x-amz-date", "")
        try:
            when = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return ak, None, "bad X-Amz-Date"
        if amz_date[:8] != m["date"]:
            return ak, None, "credential date differs from X-Amz-Date"
        if abs((time.time() if now is None else now) - when) > MAX_SKEW_S:
            return ak, None, "signature expired or not yet current"
        if ident.token is not None and headers.get("x-amz-security-token") != ident.token:
            return ak, None, "security token missing or invalid"
        url = f"http://{headers.get('host', '')}{path}" + (f"?{query}" if query else "")
        req = AWSRequest(method=method, url=url, data=body, headers={h: headers[h] for h in signed})
        req.context["timestamp"] = amz_date
        auth = SigV4Auth(Credentials(ak, ident.secret_key, ident.token), "lambda", self.region)
        if auth.signed_headers(auth.headers_to_sign(req)) != m["signed"]:
            return ak, None, "SignedHeaders is not the canonical list"
        expected = auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req)
        if not hmac.compare_digest(expected, m["sig"]):
            return ak, None, "signature does not match"
        return ak, ident, None

    # ------------------------------------------------------------------ the event
    def event(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes,
              ak: str | None, ident: Identity | None) -> dict[str, Any]:
        try:
            text, b64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, b64 = base64.b64encode(body).decode(), True
        ctx: dict[str, Any] = {
            "accountId": self.account_id, "apiId": self.url_id,
            "domainName": f"{self.url_id}.lambda-url.{self.region}.on.aws", "domainPrefix": self.url_id,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": headers.get("user-agent", "")},
            "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()), "timeEpoch": int(time.time() * 1000),
        }
        if ident is not None:
            ctx["authorizer"] = {"iam": {
                "accessKey": ak, "accountId": ident.account_id, "callerId": ident.user_id,
                "cognitoIdentity": None, "principalOrgId": None, "userArn": ident.user_arn,
                "userId": ident.user_id,
            }}
        passed = {k: v for k, v in headers.items() if k not in ("authorization", "x-amz-security-token")}
        return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
                "headers": passed, "requestContext": ctx, "body": text, "isBase64Encoded": b64}

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        path, _, query = target.partition("?")
        ak, ident, why = (None, None, None)
        if self.auth_type == "AWS_IAM":
            ak, ident, why = self.authenticate(method, path, query, headers, body)
            if ident is None:
                with self._lock:
                    self.requests.append((method, path, 403, ak, why))
                return 403, {"content-type": "application/json"}, json.dumps({"Message": "Forbidden"}).encode()
        event = self.event(method, path, query, headers, body, ak, ident)
        with self._lock:
            self.events.append(event)
        rid = self.runtime.invoke(json.dumps(event))
        try:
            kind, answer = self.runtime.wait(rid, self.invoke_timeout_s)
        except TimeoutError:
            kind, answer = "error", {"errorMessage": "timeout"}
        if kind != "response":
            status, out_headers, out = 502, {"content-type": "application/json"}, b'{"Message":"Internal Server Error"}'
        elif isinstance(answer, dict) and "statusCode" in answer:
            status = int(answer["statusCode"])
            out_headers = {str(k).lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
            raw = answer.get("body") or ""
            out = base64.b64decode(raw) if answer.get("isBase64Encoded") else str(raw).encode()
        else:
            status, out_headers, out = 200, {"content-type": "application/json"}, json.dumps(answer).encode()
        with self._lock:
            self.requests.append((method, path, status, ak, None))
        return status, out_headers, out


def _handler(front: FunctionUrlFront) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out_headers, out = front.handle(self.command, self.path, headers, body)
            self.send_response(status)
            for k, v in out_headers.items():
                if k not in ("content-length", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(out)
            self.close_connection = True

        do_POST = do_GET = do_PUT = _serve  # noqa: N815
    return Handler
