"""moto 5.2.5 server plus runner-lifecycle's Auto Scaling extension, on loopback.

Use in-process::

    emu = AwsEmulator().start()          # 127.0.0.1, free port
    asg = emu.client("autoscaling")      # boto3, dummy keys, no retries
    ...
    emu.stop()

or as a process (for tools that are not Python)::

    python tests/support/aws_emulator.py --port 0 --port-file /tmp/port

Besides moto's own API the server answers a control API under ``/_rle/`` (JSON; see
:class:`_Control` and tests/support/README.md). The same operations are methods of
:class:`AwsEmulator`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

if __package__ in (None, ""):  # run as a script: make "support" importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from support import moto_lifecycle  # noqa: E402  (checks moto's version on import)
from support.imds import ImdsServer  # noqa: E402

from moto.moto_server.threaded_moto_server import ThreadedMotoServer  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server  # noqa: E402

ENGINE = moto_lifecycle.install()

DUMMY_KEY_ID = "testing"
DUMMY_SECRET = "testing"
DEFAULT_REGION = "us-east-1"

_XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"

#: Injectable faults: (HTTP status, error Type, Code, Message). Throttling is what the shared
#: Auto Scaling token bucket answers; InternalFailure is AWS's common 500 error.
FAULTS = {
    "throttle": (400, "Sender", "Throttling", "Rate exceeded"),
    "internal": (500, "Receiver", "InternalFailure", "The request processing has failed because of an unknown error, exception or failure."),
}


@dataclass
class Call:
    """One Auto Scaling API request as the server received it."""

    action: str
    instance_id: str | None
    instance_ids: list[str]
    group: str | None
    hook: str | None
    token: str | None
    result: str | None  # LifecycleActionResult, for CompleteLifecycleAction
    protected: bool | None  # ProtectedFromScaleIn, for SetInstanceProtection
    monotonic: float
    wall: float
    status: int
    error_code: str | None
    injected: bool


class _Recorder:
    """Fault injection and the call log, wrapped around every Auto Scaling request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.faults: list[dict[str, Any]] = []

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()
            self.faults.clear()

    def inject(self, action: str, count: int = 1, kind: str = "throttle", instance_id: str | None = None) -> None:
        if kind not in FAULTS:
            raise ValueError(f"kind must be one of {sorted(FAULTS)}")
        with self.lock:
            self.faults.append({"action": action, "count": int(count), "kind": kind, "instance_id": instance_id})

    def _take_fault(self, action: str, instance_ids: list[str]) -> str | None:
        with self.lock:
            for fault in self.faults:
                if fault["action"] not in ("*", action):
                    continue
                if fault["instance_id"] and fault["instance_id"] not in instance_ids:
                    continue
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self.faults.remove(fault)
                return fault["kind"]
        return None

    def __call__(self, response: Any, call_original: Callable[[], Any]) -> Any:
        now, wall = time.monotonic(), time.time()
        action = response._get_action() or ""

        def param(name: str) -> Any:
            try:
                return response._get_param(name)
            except Exception:  # parameters of unknown actions cannot be parsed
                return None

        ids = list(param("InstanceIds") or [])
        if param("InstanceId"):
            ids.insert(0, param("InstanceId"))
        kind = self._take_fault(action, ids)
        status, error_code, injected = 500, None, kind is not None
        try:
            if kind:
                status, etype, code, message = FAULTS[kind]
                body = (
                    f'<ErrorResponse xmlns="{_XMLNS}"><Error><Type>{etype}</Type><Code>{code}</Code>'
                    f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
                )
                result = (status, {"Content-Type": "text/xml"}, body)
            else:
                result = call_original()
                status = int(result[0])
            body = result[2] if isinstance(result[2], str) else ""
            m = re.search(r"<Code>([^<]+)</Code>", body) if status >= 400 else None
            error_code = m.group(1) if m else None
            return result
        finally:
            protected = param("ProtectedFromScaleIn")
            call = Call(
                action=action,
                instance_id=ids[0] if ids else None,
                instance_ids=ids,
                group=param("AutoScalingGroupName"),
                hook=param("LifecycleHookName"),
                token=param("LifecycleActionToken"),
                result=param("LifecycleActionResult"),
                protected=None if protected is None else str(protected).lower() == "true",
                monotonic=now,
                wall=wall,
                status=status,
                error_code=error_code,
                injected=injected,
            )
            with self.lock:
                self.calls.append(call)


class AwsEmulator:
    """moto server with the lifecycle extension, IMDS endpoints and a control API."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, test_mode: bool | None = None,
                 proceed_delay_s: float = 0.2) -> None:
        """test_mode: allow HeartbeatTimeout below AWS's 30 s minimum. None takes it from the
        RLE_EMULATOR_TEST_MODE environment variable (off unless set to 1/true)."""
        if test_mode is None:
            test_mode = os.environ.get(moto_lifecycle.TEST_MODE_ENV, "").lower() in ("1", "true", "yes")
        if not host.startswith("127.") and host not in ("localhost", "::1"):
            raise ValueError("the emulator binds loopback only")
        self._host, self._port = host, port
        self._defaults = {"test_mode": test_mode, "proceed_delay_s": proceed_delay_s}
        self.recorder = _Recorder()
        self._imds: dict[str, ImdsServer] = {}
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        self.endpoint_url = ""
        self.configure(**self._defaults)

    # --------------------------------------------------------------- lifecycle
    def start(self) -> "AwsEmulator":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        # moto loads a catalogue of ~2600 AMIs into every new EC2 backend (about 0.3 s, so per
        # test after each reset); instances launch without it. Set to "true" to keep it.
        os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
        moto_lifecycle.REQUEST_HOOK = self.recorder
        app = _ControlMiddleware(DomainDispatcherApplication(create_backend_app), _Control(self))
        self._server = make_server(self._host, self._port, app, threaded=True, request_handler=MotoRequestHandler)
        self._port = self._server.server_address[1]
        self.endpoint_url = f"http://{self._host}:{self._port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()
        threading.Thread(target=self._tick_loop, name="lifecycle-ticker", daemon=True).start()
        return self

    def _tick_loop(self) -> None:
        # Heartbeat timeouts and Terminating:Proceed removals happen without any request too.
        while not self._ticker_stop.wait(0.05):
            ENGINE.tick()

    def stop(self) -> None:
        self._ticker_stop.set()
        for imds in self._imds.values():
            imds.close()
        self._imds.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "AwsEmulator":
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    # ---------------------------------------------------------------- control
    def reset(self) -> None:
        """Clear all moto state, lifecycle actions, faults, the call log and IMDS endpoints."""
        from moto.core.base_backend import BackendDict, backend_lock
        from moto.core.model_instances import reset_model_data

        for imds in self._imds.values():
            imds.close()
        self._imds.clear()
        # Same end state as POST /moto-api/reset (which also works, and resets the engine too),
        # without re-initialising every backend only to drop it: that re-init loads EC2's AMI
        # catalogue and costs about 0.5 s per reset.
        with ENGINE.lock, backend_lock:
            for backends in list(BackendDict._instances):
                backends.clear()
            reset_model_data()
            ENGINE.reset()
        self.recorder.clear()
        self.configure(**self._defaults)

    def configure(self, test_mode: bool | None = None, proceed_delay_s: float | None = None) -> dict[str, Any]:
        """test_mode allows HeartbeatTimeout < 30 s; proceed_delay_s is the Terminating:Proceed dwell."""
        with ENGINE.lock:
            if test_mode is not None:
                ENGINE.test_mode = bool(test_mode)
            if proceed_delay_s is not None:
                ENGINE.proceed_delay_s = float(proceed_delay_s)
            return {"test_mode": ENGINE.test_mode, "proceed_delay_s": ENGINE.proceed_delay_s}

    def inject_fault(self, action: str, count: int = 1, kind: str = "throttle", instance_id: str | None = None) -> None:
        """Make the next ``count`` calls of ``action`` ("*" = any) fail.

        kind "throttle": HTTP 400 Throttling "Rate exceeded"; "internal": HTTP 500 InternalFailure.
        With ``instance_id`` only calls naming that instance are affected.
        """
        self.recorder.inject(action, count, kind, instance_id)

    def clear_faults(self) -> None:
        with self.recorder.lock:
            self.recorder.faults.clear()

    def calls(self, action: str | None = None, instance_id: str | None = None, since: float | None = None) -> list[Call]:
        """Auto Scaling calls received, oldest first; filter by action, instance, monotonic time."""
        with self.recorder.lock:
            out = list(self.recorder.calls)
        return [
            c
            for c in out
            if (action is None or c.action == action)
            and (instance_id is None or instance_id in c.instance_ids)
            and (since is None or c.monotonic >= since)
        ]

    def clear_calls(self) -> None:
        with self.recorder.lock:
            self.recorder.calls.clear()

    def pending_actions(self, instance_id: str | None = None) -> list[dict[str, Any]]:
        """Lifecycle actions waiting for completion (token, hook, timeouts)."""
        return [a for a in ENGINE.pending() if instance_id in (None, a["InstanceId"])]

    def events(self, instance_id: str | None = None) -> list[dict[str, Any]]:
        """EventBridge events AWS would have emitted (EC2 Instance-terminate Lifecycle Action)."""
        with ENGINE.lock:
            return [e for e in ENGINE.events if instance_id in (None, e["detail"]["EC2InstanceId"])]

    def history(self, instance_id: str) -> list[tuple[float, float, str]]:
        """(monotonic, wall, lifecycle state) changes of one instance."""
        with ENGINE.lock:
            return list(ENGINE.history.get(instance_id, []))

    def lifecycle_state(self, instance_id: str) -> str | None:
        return ENGINE.state_at(instance_id, time.monotonic())

    def expire_lifecycle_actions(self, instance_id: str | None = None) -> int:
        """Time out the pending actions of an instance (or all) now, applying DefaultResult."""
        return ENGINE.expire(instance_id)

    def set_lifecycle_state(self, instance_id: str, state: str) -> None:
        """Force an instance's LifecycleState (e.g. Warmed:Stopped, Pending:Wait) for IMDS tests."""
        with ENGINE.lock:
            for st in _all_instance_states():
                if st.instance.id == instance_id:
                    st.lifecycle_state = state
                    return
        raise KeyError(instance_id)

    def imds_for(self, instance_id: str, region: str = DEFAULT_REGION) -> ImdsServer:
        """The IMDSv2 endpoint of one instance (created on first use, closed on reset)."""
        imds = self._imds.get(instance_id)
        if imds is None:
            az = None
            for st in _all_instance_states():
                if st.instance.id == instance_id:
                    az = st.availability_zone
            imds = ImdsServer(instance_id, region=region, state_at=ENGINE.state_at, availability_zone=az, host=self._host)
            self._imds[instance_id] = imds
        return imds

    # ------------------------------------------------------------- boto3 help
    def client(self, service: str, region: str = DEFAULT_REGION, retries: int = 1) -> Any:
        """A boto3 client for this server: dummy keys, loopback endpoint, ``retries`` attempts
        in total (botocore standard retry mode). Clients are cached (they are thread-safe)."""
        key = (service, region, retries, self.endpoint_url)
        cached = self._clients.get(key)
        if cached is None:
            cached = self._clients[key] = self._new_client(service, region, retries)
        return cached

    def _new_client(self, service: str, region: str, retries: int) -> Any:
        import boto3
        from botocore.config import Config

        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        session = boto3.session.Session(
            aws_access_key_id=DUMMY_KEY_ID, aws_secret_access_key=DUMMY_SECRET, region_name=region
        )
        return session.client(
            service,
            endpoint_url=self.endpoint_url,
            config=Config(retries={"total_max_attempts": retries, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )

    def create_group(
        self,
        name: str = "runners",
        size: int = 2,
        hook_timeout: int | None = 30,
        default_result: str = "ABANDON",
        hook_name: str = "drain",
        protect_new: bool = False,
        max_size: int | None = None,
    ) -> list[str]:
        """Create a launch template and an ASG of ``size`` instances (with a termination hook
        unless ``hook_timeout`` is None); return the instance ids in launch order."""
        ec2 = self.client("ec2")
        asg = self.client("autoscaling")
        lt_name = f"{name}-lt"
        try:
            ec2.create_launch_template(
                LaunchTemplateName=lt_name,
                LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
            )
        except ec2.exceptions.ClientError as e:  # already exists
            if "AlreadyExists" not in str(e):
                raise
        asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": lt_name, "Version": "$Latest"},
            MinSize=0,
            MaxSize=max_size if max_size is not None else max(size * 2, 1),
            DesiredCapacity=size,
            AvailabilityZones=[f"{DEFAULT_REGION}a"],
            NewInstancesProtectedFromScaleIn=protect_new,
        )
        if hook_timeout is not None:
            asg.put_lifecycle_hook(
                AutoScalingGroupName=name,
                LifecycleHookName=hook_name,
                LifecycleTransition=moto_lifecycle.TERMINATING,
                HeartbeatTimeout=hook_timeout,
                DefaultResult=default_result,
            )
        with ENGINE.lock:
            return [s.instance.id for s in _group_states(name)]


def _all_instance_states() -> Iterable[Any]:
    from moto.autoscaling.models import autoscaling_backends

    for per_account in list(autoscaling_backends.values()):
        for backend in list(per_account.values()):
            for group in list(backend.autoscaling_groups.values()):
                yield from list(group.instance_states)


def _group_states(name: str) -> list[Any]:
    return [s for s in _all_instance_states() if s.auto_scaling_group_name == name]


# ----------------------------------------------------------------------- control API
class _ControlMiddleware:
    """Routes /_rle/* to the control API and everything else to moto."""

    def __init__(self, app: Any, control: "_Control") -> None:
        self.app, self.control = app, control

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith("/_rle/"):
            return self.control(environ, start_response)
        return self.app(environ, start_response)


class _Control:
    """JSON control API (all bodies and answers are JSON objects).

    POST   /_rle/reset                         clear everything
    GET    /_rle/config  POST {test_mode, proceed_delay_s}
    POST   /_rle/faults  {action, count, kind: throttle|internal, instance_id?};  DELETE clears
    GET    /_rle/calls?action=&instance_id=&since=   DELETE clears
    GET    /_rle/actions?instance_id=          pending lifecycle actions (tokens)
    GET    /_rle/events?instance_id=           EventBridge-shaped lifecycle events
    GET    /_rle/history?instance_id=          lifecycle state changes
    POST   /_rle/expire  {instance_id?}        apply DefaultResult now
    POST   /_rle/lifecycle-state {instance_id, state}
    POST   /_rle/imds    {instance_id, region?}  -> {url, port}
    POST   /_rle/imds/<id>/spot {action?, time?}   DELETE clears
    POST   /_rle/imds/<id>/rebalance {notice_time?}
    POST   /_rle/imds/<id>/unavailable {seconds, mode: refused|500}
    POST   /_rle/imds/<id>/lag {seconds}
    POST   /_rle/imds/<id>/expire-tokens
    """

    def __init__(self, emu: AwsEmulator) -> None:
        self.emu = emu

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        method = environ["REQUEST_METHOD"]
        path = environ["PATH_INFO"][len("/_rle/"):].strip("/")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            body = json.loads(raw) if raw else {}
            status, answer = 200, self.route(method, path, query, body)
        except KeyError as e:
            status, answer = 404, {"error": f"not found: {e}"}
        except (ValueError, TypeError) as e:
            status, answer = 400, {"error": str(e)}
        data = json.dumps(answer).encode()
        start_response(f"{status} {'OK' if status == 200 else 'Error'}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def route(self, method: str, path: str, q: dict[str, str], b: dict[str, Any]) -> Any:
        emu = self.emu
        parts = path.split("/")
        if path == "reset" and method == "POST":
            emu.reset()
            return {}
        if path == "config":
            return emu.configure(**b) if method == "POST" else emu.configure()
        if path == "faults":
            if method == "DELETE":
                emu.clear_faults()
                return {}
            if method == "POST":
                emu.inject_fault(b["action"], int(b.get("count", 1)), b.get("kind", "throttle"), b.get("instance_id"))
            with emu.recorder.lock:
                return {"faults": [dict(f) for f in emu.recorder.faults]}
        if path == "calls":
            if method == "DELETE":
                emu.clear_calls()
                return {}
            since = float(q["since"]) if "since" in q else None
            return {"calls": [asdict(c) for c in emu.calls(q.get("action"), q.get("instance_id"), since)]}
        if path == "actions":
            return {"actions": emu.pending_actions(q.get("instance_id"))}
        if path == "events":
            return {"events": emu.events(q.get("instance_id"))}
        if path == "history":
            return {"history": emu.history(q["instance_id"])}
        if path == "expire" and method == "POST":
            return {"expired": emu.expire_lifecycle_actions(b.get("instance_id"))}
        if path == "lifecycle-state" and method == "POST":
            emu.set_lifecycle_state(b["instance_id"], b["state"])
            return {}
        if path == "imds" and method == "POST":
            imds = emu.imds_for(b["instance_id"], b.get("region", DEFAULT_REGION))
            return {"url": imds.url, "port": imds.port}
        if len(parts) == 3 and parts[0] == "imds":
            imds = emu._imds[parts[1]]
            op = parts[2]
            if op == "spot":
                if method == "DELETE":
                    imds.clear_spot_notice()
                    return {}
                return imds.set_spot_notice(b.get("action", "terminate"), b.get("time"))
            if op == "rebalance":
                return imds.set_rebalance(b.get("notice_time"))
            if op == "unavailable":
                imds.set_unavailable(float(b["seconds"]), b.get("mode", "refused"))
                return {}
            if op == "lag":
                imds.set_target_state_lag(float(b["seconds"]))
                return {}
            if op == "expire-tokens":
                imds.expire_tokens()
                return {}
        raise KeyError(f"{method} /_rle/{path}")


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--test-mode", action="store_true", default=None,
                   help="allow HeartbeatTimeout < 30 s (also: RLE_EMULATOR_TEST_MODE=1)")
    args = p.parse_args(argv)
    emu = AwsEmulator(args.host, args.port, test_mode=args.test_mode).start()
    print(f"aws emulator listening on {emu.endpoint_url}", flush=True)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(emu.port))
        os.replace(tmp, args.port_file)
    stop = threading.Event()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    emu.stop()
    return 0


# Keep ThreadedMotoServer importable from here for callers that want moto's plain server.
__all__ = ["AwsEmulator", "Call", "ImdsServer", "ThreadedMotoServer", "FAULTS", "main"]

if __name__ == "__main__":
    sys.exit(main())
