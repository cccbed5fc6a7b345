"""Termination lifecycle hooks for moto's Auto Scaling backend.

moto 5.2.5 stores lifecycle hooks but never acts on them (its PR #4259 calls them
"not functional"): scale-in terminates instances at once, RecordLifecycleActionHeartbeat and
CompleteLifecycleAction are not implemented (HTTP 500), and SetInstanceProtection accepts any
state. This module adds, on top of moto's own group and instance objects:

* ``Terminating:Wait`` with a LifecycleActionToken when a group that has an
  ``autoscaling:EC2_INSTANCE_TERMINATING`` hook scales in or is asked to terminate an instance;
* RecordLifecycleActionHeartbeat and CompleteLifecycleAction, by instance id or token;
* HeartbeatTimeout expiry applying the hook's DefaultResult, and the global timeout;
* SetInstanceProtection's ValidationError for instances that are not InService/Standby;
* deferred scale-in when every instance is protected;
* a per-instance history of lifecycle states (used by the IMDS emulator) and the EventBridge
  events AWS would have sent.

Everything is installed by :func:`install` as small patches on moto's classes, so that it could
be moved into moto's ``autoscaling/models.py`` and ``responses.py`` as plain methods. The AWS
behaviour each piece follows is cited next to it (EC2 Auto Scaling User Guide, "Amazon EC2 Auto
Scaling lifecycle hooks", "Use instance scale-in protection"; API Reference pages of the actions).

Launch hooks (``Pending:Wait``), warm-pool transitions and notification targets (SQS/SNS) are
not emulated; see tests/support/README.md.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import moto

#: The extension patches moto internals that change between releases; it is written against
#: exactly this version and refuses to load on any other.
MOTO_VERSION = "5.2.5"

if moto.__version__ != MOTO_VERSION:  # pragma: no cover - environment guard
    raise ImportError(
        f"tests/support/moto_lifecycle.py is written for moto=={MOTO_VERSION}, "
        f"but moto {moto.__version__} is installed; install tests/requirements.txt"
    )

from moto.autoscaling import models as as_models  # noqa: E402
from moto.autoscaling import responses as as_responses  # noqa: E402
from moto.autoscaling.exceptions import ValidationError  # noqa: E402
from moto.core.responses import EmptyResult  # noqa: E402
from moto.moto_api._internal.models import MotoAPIBackend  # noqa: E402

TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"

#: AWS: "the maximum amount of time that you can keep an instance in a wait state is 48 hours or
#: 100 times the heartbeat timeout, whichever is smaller" (User Guide, lifecycle hooks).
MAX_GLOBAL_TIMEOUT_S = 48 * 3600

#: AWS accepts HeartbeatTimeout from 30 to 7200 s (API Reference, PutLifecycleHook).
MIN_HEARTBEAT_TIMEOUT_S = 30
MAX_HEARTBEAT_TIMEOUT_S = 7200

#: Setting this environment variable to 1 allows HeartbeatTimeout below 30 s (test mode).
TEST_MODE_ENV = "RLE_EMULATOR_TEST_MODE"

#: States from which SetInstanceProtection(ProtectedFromScaleIn=true) is accepted (AWS answers
#: "The instance i-... is not in InService or EnteringStandby or Standby." otherwise).
PROTECTABLE_STATES = ("InService", "EnteringStandby", "Standby")


def _utc_iso(wall: float | None = None) -> str:
    t = datetime.fromtimestamp(time.time() if wall is None else wall, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LifecycleAction:
    """One pending lifecycle action: one hook holding one instance in a wait state."""

    token: str
    instance_id: str
    group_name: str
    hook_name: str
    transition: str
    heartbeat_timeout: int
    default_result: str
    started: float  # time.monotonic()
    started_wall: float  # time.time()
    deadline: float  # monotonic: heartbeat timeout expiry
    global_deadline: float  # monotonic: min(48 h, 100 x HeartbeatTimeout) after start
    backend: Any = field(repr=False, default=None)
    heartbeats: int = 0

    def as_dict(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "LifecycleActionToken": self.token,
            "InstanceId": self.instance_id,
            "AutoScalingGroupName": self.group_name,
            "LifecycleHookName": self.hook_name,
            "LifecycleTransition": self.transition,
            "HeartbeatTimeout": self.heartbeat_timeout,
            "DefaultResult": self.default_result,
            "started_monotonic": self.started,
            "started_wall": self.started_wall,
            "expires_in_s": max(0.0, min(self.deadline, self.global_deadline) - now),
            "global_expires_in_s": max(0.0, self.global_deadline - now),
            "heartbeats": self.heartbeats,
        }


class LifecycleEngine:
    """State the extension keeps next to moto's backends (one per process).

    All of it is guarded by :attr:`lock`, which also serialises every Auto Scaling request
    (see :func:`_call_action`) and the background ticker, so moto's group objects are never
    changed by two threads at once.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.test_mode = os.environ.get(TEST_MODE_ENV, "") not in ("", "0", "false")
        #: Seconds an instance stays in Terminating:Proceed before it leaves the group.
        self.proceed_delay_s = 0.2
        self._clear()

    def _clear(self) -> None:
        self.actions: dict[str, LifecycleAction] = {}
        self.history: dict[str, list[tuple[float, float, str]]] = {}
        self.events: list[dict[str, Any]] = []
        self._removals: list[tuple[float, Any, str]] = []
        self._bypass_hooks = 0
        #: Listeners called as fn(instance_id, state) on each state change (IMDS uses none;
        #: kept for tests that want push notification).
        self.listeners: list[Callable[[str, str], None]] = []

    def reset(self) -> None:
        with self.lock:
            self._clear()

    # ----------------------------------------------------------------- history
    def record(self, instance_id: str, state: str) -> None:
        entries = self.history.setdefault(instance_id, [])
        if entries and entries[-1][2] == state:
            return
        entries.append((time.monotonic(), time.time(), state))
        for fn in list(self.listeners):
            fn(instance_id, state)

    def state_at(self, instance_id: str, monotonic_time: float) -> str | None:
        """The lifecycle state the instance had at ``monotonic_time`` (None if unknown then)."""
        with self.lock:
            state = None
            for t, _wall, s in self.history.get(instance_id, []):
                if t <= monotonic_time:
                    state = s
            return state

    # ------------------------------------------------------------- scale-in
    @staticmethod
    def _termination_hooks(backend: Any, group_name: str) -> list[Any]:
        return [
            h
            for h in backend.lifecycle_hooks.values()
            if h.auto_scaling_group_name == group_name and h.lifecycle_transition == TERMINATING
        ]

    def scale_in(self, group: Any) -> None:
        """Pick instances to terminate until the group is back at its desired capacity.

        AWS: scale-in never picks an instance protected from scale-in; if every candidate is
        protected, the desired capacity still drops and termination waits until an instance
        becomes unprotected (User Guide, "Use instance scale-in protection").
        Among candidates this picks the earliest launched (AWS's default policy balances AZs
        first and then prefers old launch templates; one AZ and one template here).
        """
        excess = len(group.active_instances()) - (group.desired_capacity or 0)
        if excess <= 0:
            return
        candidates = [
            s
            for s in group.instance_states
            if s.lifecycle_state == "InService" and not s.protected_from_scale_in
        ]
        for state in candidates[:excess]:
            self.begin_termination(group, state)

    def begin_termination(self, group: Any, state: Any) -> None:
        """Move an instance out of service; hold it in Terminating:Wait if hooks exist."""
        backend = group.autoscaling_backend
        hooks = [] if self._bypass_hooks else self._termination_hooks(backend, group.name)
        if not hooks:
            state.lifecycle_state = "Terminating"
            self._proceed(group, state, delay=0.0)
            return
        state.lifecycle_state = "Terminating:Wait"
        now, wall = time.monotonic(), time.time()
        for hook in hooks:
            timeout = int(hook.heartbeat_timeout)
            action = LifecycleAction(
                token=str(uuid.uuid4()),
                instance_id=state.instance.id,
                group_name=group.name,
                hook_name=hook.name,
                transition=TERMINATING,
                heartbeat_timeout=timeout,
                default_result=hook.default_result,
                started=now,
                started_wall=wall,
                deadline=now + timeout,
                global_deadline=now + global_timeout(timeout),
                backend=backend,
            )
            self.actions[action.token] = action
            self.events.append(_lifecycle_event(group, action))

    def _proceed(self, group: Any, state: Any, delay: float) -> None:
        # AWS: after the last hook completes (CONTINUE or ABANDON; on termination both
        # terminate) the instance passes Terminating:Proceed and then leaves the group.
        state.lifecycle_state = "Terminating:Proceed"
        due = time.monotonic() + delay
        if delay <= 0:
            self._remove(group, state.instance.id)
        else:
            self._removals.append((due, group, state.instance.id))

    def _remove(self, group: Any, instance_id: str) -> None:
        backend = group.autoscaling_backend
        remaining = [s for s in group.instance_states if s.instance.id != instance_id]
        if len(remaining) == len(group.instance_states):
            return
        group.instance_states = remaining
        backend.ec2_backend.terminate_instances([instance_id])
        self.record(instance_id, "Terminated")
        if group.name in backend.autoscaling_groups:
            backend.update_attached_elbs(group.name)
            backend.update_attached_target_groups(group.name)

    # ------------------------------------------------------ lifecycle actions
    def find_action(
        self,
        backend: Any,
        group_name: str,
        hook_name: str,
        instance_id: str | None,
        token: str | None,
    ) -> LifecycleAction:
        for action in self.actions.values():
            if action.backend is not backend:
                continue
            if action.group_name != group_name or action.hook_name != hook_name:
                continue
            if token:
                if action.token == token:
                    return action
            elif instance_id and action.instance_id == instance_id:
                return action
        # AWS's exact texts (observed, and relied on by callers that treat them as "done").
        if token:
            raise ValidationError(f"No active Lifecycle Action found with token {token}")
        raise ValidationError(f"No active Lifecycle Action found with instance ID {instance_id}")

    def heartbeat(self, action: LifecycleAction) -> None:
        # AWS: a heartbeat restarts the HeartbeatTimeout, but the wait can never outlive the
        # global timeout (API Reference, RecordLifecycleActionHeartbeat; User Guide).
        action.deadline = time.monotonic() + action.heartbeat_timeout
        action.heartbeats += 1

    def complete(self, action: LifecycleAction, result: str) -> None:
        self.actions.pop(action.token, None)
        backend = action.backend
        group = backend.autoscaling_groups.get(action.group_name)
        if group is None:
            return
        state = next((s for s in group.instance_states if s.instance.id == action.instance_id), None)
        if state is None:
            return
        siblings = [a for a in self.actions.values() if a.instance_id == action.instance_id]
        if result == "ABANDON":
            # AWS: ABANDON skips the instance's remaining hooks.
            for other in siblings:
                self.actions.pop(other.token, None)
            siblings = []
        if not siblings:
            self._proceed(group, state, self.proceed_delay_s)

    def expire(self, instance_id: str | None = None) -> int:
        """Apply DefaultResult now to the actions of one instance (or all); returns the count."""
        with self.lock:
            due = [a for a in self.actions.values() if instance_id in (None, a.instance_id)]
            for action in due:
                if action.token in self.actions:
                    self.complete(action, action.default_result)
            return len(due)

    def tick(self) -> None:
        """Apply due timeouts and removals. Called by the ticker thread and on every request."""
        with self.lock:
            now = time.monotonic()
            for action in list(self.actions.values()):
                if action.token in self.actions and now >= min(action.deadline, action.global_deadline):
                    # AWS: when the wait times out the group applies the hook's DefaultResult.
                    self.complete(action, action.default_result)
            due = [r for r in self._removals if r[0] <= now]
            self._removals = [r for r in self._removals if r[0] > now]
            for _t, group, instance_id in due:
                self._remove(group, instance_id)

    def pending(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a.as_dict() for a in self.actions.values()]


ENGINE = LifecycleEngine()


def global_timeout(heartbeat_timeout: int) -> int:
    return min(MAX_GLOBAL_TIMEOUT_S, 100 * int(heartbeat_timeout))


def _lifecycle_event(group: Any, action: LifecycleAction) -> dict[str, Any]:
    """The EventBridge event AWS emits when an instance enters Terminating:Wait.

    Shape from the User Guide ("Amazon EC2 Auto Scaling event reference": detail-type
    "EC2 Instance-terminate Lifecycle Action").
    """
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "EC2 Instance-terminate Lifecycle Action",
        "source": "aws.autoscaling",
        "account": group.account_id,
        "time": _utc_iso(action.started_wall),
        "region": group.region,
        "resources": [group.arn],
        "detail": {
            "LifecycleActionToken": action.token,
            "AutoScalingGroupName": action.group_name,
            "LifecycleHookName": action.hook_name,
            "EC2InstanceId": action.instance_id,
            "LifecycleTransition": action.transition,
            "Origin": "AutoScalingGroup",
            "Destination": "EC2",
        },
        "_monotonic": action.started,
    }


# --------------------------------------------------------------------------- model patches
_orig = {
    "set_desired_capacity": as_models.FakeAutoScalingGroup.set_desired_capacity,
    "hook_init": as_models.LifecycleHook.__init__,
    "delete_group": as_models.AutoScalingBackend.delete_auto_scaling_group,
    "detach": as_models.AutoScalingBackend.detach_instances,
    "notify_terminate": as_models.AutoScalingBackend.notify_terminate_instances,
    "create_hook": as_models.AutoScalingBackend.create_lifecycle_hook,
    "call_action": as_responses.AutoScalingResponse.call_action,
    "api_reset": MotoAPIBackend.reset,
}


def _lifecycle_state_get(self: Any) -> str:
    return self._lifecycle_state


def _lifecycle_state_set(self: Any, value: str) -> None:
    # Every state change is timestamped so that IMDS can answer "as of now minus lag".
    self._lifecycle_state = value
    ENGINE.record(self.instance.id, value)


def _active_instances(self: Any) -> list[Any]:
    # Instances in Terminating:* do not count towards capacity (so no replacement is launched
    # for a scale-in victim); Pending ones do.
    return [
        s
        for s in self.instance_states
        if s.lifecycle_state == "InService" or s.lifecycle_state.startswith("Pending")
    ]


def _set_desired_capacity(self: Any, new_capacity: int | None) -> None:
    target = self.min_size if new_capacity is None else new_capacity
    mixed = self.mixed_instances_policy and self.mixed_instances_policy.get(
        "LaunchTemplate", {}
    ).get("Overrides")
    if mixed or (target or 0) >= len(self.active_instances()):
        # Scale-out and mixed-instances sizing stay moto's own.
        _orig["set_desired_capacity"](self, new_capacity)
        return
    self.desired_capacity = target
    ENGINE.scale_in(self)
    if self.name in self.autoscaling_backend.autoscaling_groups:
        self.autoscaling_backend.update_attached_elbs(self.name)
        self.autoscaling_backend.update_attached_target_groups(self.name)


def _hook_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _orig["hook_init"](self, *args, **kwargs)
    # moto reports a fixed 172800; AWS reports min(48 h, 100 x HeartbeatTimeout).
    self.global_timeout = global_timeout(self.heartbeat_timeout)


def _create_lifecycle_hook(self: Any, name: str, as_name: str, transition: str, timeout: int | None, result: str) -> Any:
    if timeout is not None and not ENGINE.test_mode and not (
        MIN_HEARTBEAT_TIMEOUT_S <= int(timeout) <= MAX_HEARTBEAT_TIMEOUT_S
    ):
        # Range from the API Reference (PutLifecycleHook). The wording of AWS's error for this
        # case was not established; the code (ValidationError, HTTP 400) is AWS's.
        raise ValidationError(
            f"HeartbeatTimeout must be between {MIN_HEARTBEAT_TIMEOUT_S} and "
            f"{MAX_HEARTBEAT_TIMEOUT_S} seconds."
        )
    if result is not None and result not in ("CONTINUE", "ABANDON"):
        raise ValidationError("DefaultResult must be CONTINUE or ABANDON.")
    return _orig["create_hook"](self, name, as_name, transition, timeout, result)


def _terminate_instance(self: Any, instance_id: str, should_decrement: bool) -> Any:
    """TerminateInstanceInAutoScalingGroup, honouring termination hooks.

    AWS: the instance goes through the group's termination lifecycle (hooks apply; protection
    does not prevent it). Without ShouldDecrementDesiredCapacity a replacement is launched.
    """
    state = next(
        (s for g in self.autoscaling_groups.values() for s in g.instance_states if s.instance.id == instance_id),
        None,
    )
    if state is None:
        # Believed to be AWS's wording; not verified against AWS.
        raise ValidationError(f"Instance Id not found - No managed instance found for instance ID: {instance_id}")
    group = state.auto_scaling_group
    original_size = group.desired_capacity
    if should_decrement:
        group.desired_capacity = (group.desired_capacity or 0) - 1
    activity = as_models.TerminateInstanceActivity(state.instance, original_size)
    if state.lifecycle_state in ("InService", "Standby") or state.lifecycle_state.startswith("Pending"):
        ENGINE.begin_termination(group, state)
    if not should_decrement:
        group.set_desired_capacity(group.desired_capacity)
    return activity


def _set_instance_protection(self: Any, group_name: str, instance_ids: list[str], protected_from_scale_in: bool | None) -> None:
    group = self.autoscaling_groups.get(group_name)
    if group is None:
        # Wording of AWS's answer for an unknown group was not established (moto's own text).
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{group_name}' not found")
    states = {s.instance.id: s for s in group.instance_states}
    for instance_id in instance_ids:
        state = states.get(instance_id)
        if state is None:
            # Wording not established.
            raise ValidationError(f"The instance {instance_id} is not part of Auto Scaling group {group_name}.")
        if protected_from_scale_in and state.lifecycle_state not in PROTECTABLE_STATES:
            # AWS's exact text; clearing protection is accepted in any state.
            raise ValidationError(f"The instance {instance_id} is not in InService or EnteringStandby or Standby.")
    for instance_id in instance_ids:
        states[instance_id].protected_from_scale_in = bool(protected_from_scale_in)
    if not protected_from_scale_in:
        # AWS: a scale-in deferred because everything was protected picks the next instance
        # that becomes unprotected at once.
        ENGINE.scale_in(group)


def _delete_auto_scaling_group(self: Any, group_name: str) -> None:
    # AWS ForceDelete deletes outstanding lifecycle actions and does not wait for hooks.
    for token, action in list(ENGINE.actions.items()):
        if action.backend is self and action.group_name == group_name:
            ENGINE.actions.pop(token, None)
    group = self.autoscaling_groups.get(group_name)
    ENGINE._bypass_hooks += 1
    try:
        if group is not None:
            for state in list(group.instance_states):
                if state.lifecycle_state.startswith("Terminating"):
                    ENGINE._remove(group, state.instance.id)
        _orig["delete_group"](self, group_name)
    finally:
        ENGINE._bypass_hooks -= 1


def _detach_instances(self: Any, group_name: str, instance_ids: list[str], should_decrement: bool) -> Any:
    activities = _orig["detach"](self, group_name, instance_ids, should_decrement)
    for instance_id in instance_ids:
        ENGINE.record(instance_id, "Detached")
    return activities


def _notify_terminate_instances(self: Any, instance_ids: list[str]) -> None:
    # EC2 TerminateInstances on a group member: moto drops it from the group and replaces it.
    # (Called from EC2 requests, which do not hold the engine lock.)
    with ENGINE.lock:
        for token, action in list(ENGINE.actions.items()):
            if action.backend is self and action.instance_id in instance_ids:
                ENGINE.actions.pop(token, None)
        members = {s.instance.id for g in self.autoscaling_groups.values() for s in g.instance_states}
        _orig["notify_terminate"](self, instance_ids)
        for instance_id in instance_ids:
            if instance_id in members:
                ENGINE.record(instance_id, "Terminated")


def _backend_record_heartbeat(self: Any, group_name: str, hook_name: str, instance_id: str | None, token: str | None) -> None:
    ENGINE.heartbeat(ENGINE.find_action(self, group_name, hook_name, instance_id, token))


def _backend_complete(self: Any, group_name: str, hook_name: str, instance_id: str | None, token: str | None, result: str) -> None:
    if result not in ("CONTINUE", "ABANDON"):
        raise ValidationError("LifecycleActionResult must be CONTINUE or ABANDON.")
    ENGINE.complete(ENGINE.find_action(self, group_name, hook_name, instance_id, token), result)


# ------------------------------------------------------------------------ response patches
def _response_record_heartbeat(self: Any) -> Any:
    self.autoscaling_backend.record_lifecycle_action_heartbeat(
        group_name=self._get_param("AutoScalingGroupName"),
        hook_name=self._get_param("LifecycleHookName"),
        instance_id=self._get_param("InstanceId"),
        token=self._get_param("LifecycleActionToken"),
    )
    return EmptyResult()


def _response_complete(self: Any) -> Any:
    self.autoscaling_backend.complete_lifecycle_action(
        group_name=self._get_param("AutoScalingGroupName"),
        hook_name=self._get_param("LifecycleHookName"),
        instance_id=self._get_param("InstanceId"),
        token=self._get_param("LifecycleActionToken"),
        result=self._get_param("LifecycleActionResult"),
    )
    return EmptyResult()


#: Optional wrapper set by the emulator (fault injection, call log); called as
#: hook(response, call_original) and must return moto's (status, headers, body).
REQUEST_HOOK: Callable[[Any, Callable[[], Any]], Any] | None = None


def _call_action(self: Any) -> Any:
    with ENGINE.lock:
        ENGINE.tick()
        original = lambda: _orig["call_action"](self)  # noqa: E731
        if REQUEST_HOOK is not None:
            return REQUEST_HOOK(self, original)
        return original()


def _api_reset(self: Any) -> None:
    with ENGINE.lock:
        _orig["api_reset"](self)
        ENGINE.reset()


_installed = False


def install() -> LifecycleEngine:
    """Patch moto's Auto Scaling classes (idempotent). Call before the server starts."""
    global _installed
    if _installed:
        return ENGINE
    IS = as_models.InstanceState
    IS.lifecycle_state = property(_lifecycle_state_get, _lifecycle_state_set)
    G = as_models.FakeAutoScalingGroup
    G.active_instances = _active_instances
    G.set_desired_capacity = _set_desired_capacity
    as_models.LifecycleHook.__init__ = _hook_init
    B = as_models.AutoScalingBackend
    B.create_lifecycle_hook = _create_lifecycle_hook
    B.terminate_instance = _terminate_instance
    B.set_instance_protection = _set_instance_protection
    B.delete_auto_scaling_group = _delete_auto_scaling_group
    B.detach_instances = _detach_instances
    B.notify_terminate_instances = _notify_terminate_instances
    B.record_lifecycle_action_heartbeat = _backend_record_heartbeat
    B.complete_lifecycle_action = _backend_complete
    R = as_responses.AutoScalingResponse
    R.record_lifecycle_action_heartbeat = _response_record_heartbeat
    R.complete_lifecycle_action = _response_complete
    R.call_action = _call_action
    MotoAPIBackend.reset = _api_reset
    _installed = True
    return ENGINE
