"""Two small additions to moto 5.2.5 for the controller's and register's tests, on top of
:mod:`support.moto_lifecycle` (which they leave untouched).

* ``DescribeScalingActivities`` (moto answers an empty list): one activity per pending termination
  lifecycle action of the group, as AWS reports it while a hook holds the instance:
  Description ``Terminating EC2 instance: i-...`` (moto's own ``TerminateInstanceActivity`` text),
  StatusCode ``MidLifecycleAction``, StartTime = when the instance entered ``Terminating:Wait``.
  Newest first, like the API. The controller's sweep reads a wait's age from it.
* ``deny_secret_deletes(names)``: DeleteSecret on those secrets answers HTTP 400
  ``AccessDeniedException`` (what an instance profile without ``secretsmanager:DeleteSecret``
  gets), so register's "registered, but the secret stays" path can be tested.

:func:`install` is idempotent; moto runs in-process (``ThreadedMotoServer``), so installing after
the server started is fine.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

from moto.autoscaling import models as as_models
from moto.autoscaling import responses as as_responses
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.secretsmanager import responses as sm_responses

from .moto_lifecycle import ENGINE

TERMINATING = "autoscaling:EC2_INSTANCE_TERMINATING"
_denied: set[str] = set()
_lock = threading.Lock()
_installed = False
_orig: dict[str, Any] = {}


def deny_secret_deletes(names: list[str] | set[str]) -> None:
    """Make DeleteSecret on these secret names (or ARNs) fail with AccessDeniedException."""
    with _lock:
        _denied.clear()
        _denied.update(names)


def _describe_scaling_activities(self: Any) -> Any:
    group_name = self._get_param("AutoScalingGroupName")
    activities = []
    with ENGINE.lock:
        group = self.autoscaling_backend.autoscaling_groups.get(group_name)
        if group is not None:
            for action in ENGINE.actions.values():
                if action.backend is not self.autoscaling_backend or action.group_name != group_name:
                    continue
                if action.transition != TERMINATING:
                    continue
                activities.append(as_models.Activity(
                    description=f"Terminating EC2 instance: {action.instance_id}",
                    cause=f"instance {action.instance_id} was selected for termination",
                    auto_scaling_group=group,
                    activity_id=action.token,
                    start_time=datetime.fromtimestamp(action.started_wall, tz=timezone.utc),
                    status_code="MidLifecycleAction",
                ))
    activities.sort(key=lambda a: a.start_time, reverse=True)
    return ActionResult({"Activities": activities})


def _delete_secret(self: Any) -> Any:
    secret_id = self._get_param("SecretId")
    with _lock:
        denied = secret_id in _denied
    if denied:
        raise JsonRESTError(
            "AccessDeniedException",
            f"User: arn:aws:sts::123456789012:assumed-role/runner/i-test is not authorized to perform: "
            f"secretsmanager:DeleteSecret on resource: {secret_id} because no identity-based policy allows it",
        )
    return _orig["delete_secret"](self)


def install() -> None:
    global _installed
    if _installed:
        return
    as_responses.AutoScalingResponse.describe_scaling_activities = _describe_scaling_activities
    _orig["delete_secret"] = sm_responses.SecretsManagerResponse.delete_secret
    sm_responses.SecretsManagerResponse.delete_secret = _delete_secret
    _installed = True
