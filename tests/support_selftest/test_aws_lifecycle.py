"""The Auto Scaling extension behaves as AWS does (boto3 against the emulator on loopback)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError

from support import moto_lifecycle

pytestmark = pytest.mark.timeout(30)

GROUP, HOOK = "runners", "drain"


def states(asg, group=GROUP):
    out = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[group])["AutoScalingGroups"][0]["Instances"]
    return {i["InstanceId"]: i["LifecycleState"] for i in out}


def wait_for(pred, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("condition not met in time")


def error_of(excinfo):
    e = excinfo.value.response
    return e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"], e["Error"]["Message"]


def test_scale_in_with_hook_waits_with_token_and_event(aws):
    ids = aws.create_group(size=3, hook_timeout=60)
    asg = aws.client("autoscaling")
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=2)
    st = states(asg)
    waiting = [i for i, s in st.items() if s == "Terminating:Wait"]
    assert len(waiting) == 1 and waiting[0] == ids[0]
    assert sum(s == "InService" for s in st.values()) == 2
    (action,) = aws.pending_actions()
    assert action["InstanceId"] == ids[0] and action["LifecycleHookName"] == HOOK
    uuid.UUID(action["LifecycleActionToken"])
    (event,) = aws.events()
    assert event["detail-type"] == "EC2 Instance-terminate Lifecycle Action"
    assert event["detail"]["LifecycleActionToken"] == action["LifecycleActionToken"]
    assert event["detail"]["EC2InstanceId"] == ids[0]
    # Still there a while later: nothing completes the hook by itself before its timeout.
    time.sleep(0.5)
    assert states(asg)[ids[0]] == "Terminating:Wait"
    # No replacement is launched for a scale-in victim.
    assert len(states(asg)) == 3


def test_update_group_and_terminate_with_decrement_also_wait(aws):
    ids = aws.create_group(size=3, hook_timeout=60)
    asg = aws.client("autoscaling")
    asg.update_auto_scaling_group(AutoScalingGroupName=GROUP, DesiredCapacity=2)
    assert states(asg)[ids[0]] == "Terminating:Wait"
    asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[2], ShouldDecrementDesiredCapacity=True)
    st = states(asg)
    assert st[ids[2]] == "Terminating:Wait" and st[ids[1]] == "InService"
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 1 and len(st) == 3


def test_terminate_without_decrement_launches_replacement(aws):
    ids = aws.create_group(size=2, hook_timeout=60)
    asg = aws.client("autoscaling")
    asg.terminate_instance_in_auto_scaling_group(InstanceId=ids[0], ShouldDecrementDesiredCapacity=False)
    st = states(asg)
    assert st[ids[0]] == "Terminating:Wait"
    assert sum(s == "InService" for s in st.values()) == 2


def test_scale_in_without_hook_terminates_at_once(aws):
    ids = aws.create_group(size=2, hook_timeout=None)
    asg = aws.client("autoscaling")
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    assert list(states(asg)) == [ids[1]]
    assert aws.lifecycle_state(ids[0]) == "Terminated"


def test_protected_instances_are_not_picked(aws):
    ids = aws.create_group(size=3, hook_timeout=60)
    asg = aws.client("autoscaling")
    asg.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=ids[:2], ProtectedFromScaleIn=True)
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=2)
    assert states(asg) == {ids[0]: "InService", ids[1]: "InService", ids[2]: "Terminating:Wait"}


def test_all_protected_defers_then_picks_first_unprotected(aws):
    ids = aws.create_group(size=2, hook_timeout=60, protect_new=True)
    asg = aws.client("autoscaling")
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 1
    assert set(states(asg).values()) == {"InService"}
    # The job on ids[1] ends: its protection is cleared and it is picked at once.
    asg.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=[ids[1]], ProtectedFromScaleIn=False)
    assert states(asg) == {ids[0]: "InService", ids[1]: "Terminating:Wait"}


@pytest.mark.parametrize("result", ["CONTINUE", "ABANDON"])
@pytest.mark.parametrize("by", ["instance", "token"])
def test_complete_proceeds_then_terminates(aws, result, by):
    ids = aws.create_group(size=2, hook_timeout=60)
    aws.configure(proceed_delay_s=0.3)
    asg = aws.client("autoscaling")
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    token = aws.pending_actions()[0]["LifecycleActionToken"]
    ref = {"InstanceId": ids[0]} if by == "instance" else {"LifecycleActionToken": token}
    asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, **ref)
    asg.complete_lifecycle_action(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, LifecycleActionResult=result, **ref)
    assert states(asg)[ids[0]] == "Terminating:Proceed"
    wait_for(lambda: ids[0] not in states(asg), timeout=3)
    assert aws.lifecycle_state(ids[0]) == "Terminated"
    ec2 = aws.client("ec2")
    inst = ec2.describe_instances(InstanceIds=[ids[0]])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "terminated"
    hist = [s for _m, _w, s in aws.history(ids[0])]
    assert hist == ["InService", "Terminating:Wait", "Terminating:Proceed", "Terminated"]


def test_no_active_action_errors_have_aws_texts(aws):
    ids = aws.create_group(size=1, hook_timeout=60)
    asg = aws.client("autoscaling")
    with pytest.raises(ClientError) as ei:
        asg.complete_lifecycle_action(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK,
                                      LifecycleActionResult="CONTINUE", InstanceId=ids[0])
    assert error_of(ei) == (400, "ValidationError", f"No active Lifecycle Action found with instance ID {ids[0]}")
    token = str(uuid.uuid4())
    with pytest.raises(ClientError) as ei:
        asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK,
                                              LifecycleActionToken=token)
    assert error_of(ei) == (400, "ValidationError", f"No active Lifecycle Action found with token {token}")


def test_heartbeat_timeout_applies_default_result(aws):
    ids = aws.create_group(size=2, hook_timeout=2, default_result="ABANDON")
    asg = aws.client("autoscaling")
    t0 = time.monotonic()
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    time.sleep(1.2)
    asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, InstanceId=ids[0])
    time.sleep(1.2)  # 2.4 s after start: alive only thanks to the heartbeat
    assert states(asg)[ids[0]] == "Terminating:Wait"
    wait_for(lambda: ids[0] not in states(asg), timeout=3)
    elapsed = time.monotonic() - t0
    assert 3.1 < elapsed < 6.0
    with pytest.raises(ClientError):
        asg.complete_lifecycle_action(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK,
                                      LifecycleActionResult="CONTINUE", InstanceId=ids[0])


def test_global_timeout_reported_and_enforced(aws):
    ids = aws.create_group(size=2, hook_timeout=2)
    asg = aws.client("autoscaling")
    (hook,) = asg.describe_lifecycle_hooks(AutoScalingGroupName=GROUP)["LifecycleHooks"]
    assert hook["GlobalTimeout"] == 200  # min(48 h, 100 x HeartbeatTimeout)
    assert moto_lifecycle.global_timeout(3600) == 172800
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    (action,) = aws.pending_actions()
    assert 199 < action["global_expires_in_s"] <= 200
    # White-box: shorten the global deadline; heartbeats cannot extend past it.
    with moto_lifecycle.ENGINE.lock:
        moto_lifecycle.ENGINE.actions[action["LifecycleActionToken"]].global_deadline = time.monotonic() + 0.6
    asg.record_lifecycle_action_heartbeat(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, InstanceId=ids[0])
    wait_for(lambda: ids[0] not in states(asg), timeout=3)


def test_expire_now_applies_default_result(aws):
    ids = aws.create_group(size=2, hook_timeout=60)
    asg = aws.client("autoscaling")
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    assert aws.expire_lifecycle_actions(ids[0]) == 1
    wait_for(lambda: ids[0] not in states(asg), timeout=3)


def test_heartbeat_timeout_minimum_outside_test_mode(aws):
    aws.create_group(size=0, hook_timeout=None)
    asg = aws.client("autoscaling")
    aws.configure(test_mode=False)
    with pytest.raises(ClientError) as ei:
        asg.put_lifecycle_hook(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, HeartbeatTimeout=5,
                               LifecycleTransition=moto_lifecycle.TERMINATING)
    assert error_of(ei)[:2] == (400, "ValidationError")
    asg.put_lifecycle_hook(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, HeartbeatTimeout=30,
                           LifecycleTransition=moto_lifecycle.TERMINATING)
    aws.configure(test_mode=True)
    asg.put_lifecycle_hook(AutoScalingGroupName=GROUP, LifecycleHookName=HOOK, HeartbeatTimeout=2,
                           LifecycleTransition=moto_lifecycle.TERMINATING)


def test_set_instance_protection_on_terminating_instance(aws):
    ids = aws.create_group(size=2, hook_timeout=60)
    asg = aws.client("autoscaling")
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    with pytest.raises(ClientError) as ei:
        asg.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=[ids[0]], ProtectedFromScaleIn=True)
    assert error_of(ei) == (400, "ValidationError", f"The instance {ids[0]} is not in InService or EnteringStandby or Standby.")
    asg.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=[ids[0]], ProtectedFromScaleIn=False)
    asg.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=[ids[1]], ProtectedFromScaleIn=True)
    (inst,) = asg.describe_auto_scaling_instances(InstanceIds=[ids[1]])["AutoScalingInstances"]
    assert inst["ProtectedFromScaleIn"] is True


def test_fault_injection_and_call_log(aws):
    ids = aws.create_group(size=1, hook_timeout=60)
    asg = aws.client("autoscaling")
    aws.clear_calls()
    aws.inject_fault("SetInstanceProtection", count=2, kind="throttle")
    for _ in range(2):
        with pytest.raises(ClientError) as ei:
            asg.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=ids, ProtectedFromScaleIn=True)
        assert error_of(ei) == (400, "Throttling", "Rate exceeded")
    asg.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=ids, ProtectedFromScaleIn=True)
    aws.inject_fault("*", kind="internal")
    with pytest.raises(ClientError) as ei:
        asg.describe_auto_scaling_instances(InstanceIds=ids)
    assert error_of(ei)[:2] == (500, "InternalFailure")
    # A retrying client (botocore standard mode) gets through a throttled first attempt.
    aws.inject_fault("DescribeAutoScalingInstances", kind="throttle")
    aws.client("autoscaling", retries=3).describe_auto_scaling_instances(InstanceIds=ids)

    calls = aws.calls()
    assert [(c.action, c.status, c.error_code) for c in calls] == [
        ("SetInstanceProtection", 400, "Throttling"),
        ("SetInstanceProtection", 400, "Throttling"),
        ("SetInstanceProtection", 200, None),
        ("DescribeAutoScalingInstances", 500, "InternalFailure"),
        ("DescribeAutoScalingInstances", 400, "Throttling"),
        ("DescribeAutoScalingInstances", 200, None),
    ]
    assert all(c.instance_id == ids[0] and c.group in (GROUP, None) for c in calls)
    assert calls[2].protected is True
    assert all(a.monotonic <= b.monotonic for a, b in zip(calls, calls[1:]))
    assert abs(calls[-1].wall - time.time()) < 5
    assert aws.calls(action="SetInstanceProtection", since=calls[2].monotonic) == [calls[2]]


def test_fault_for_one_instance_only(aws):
    ids = aws.create_group(size=2, hook_timeout=60)
    asg = aws.client("autoscaling")
    aws.inject_fault("SetInstanceProtection", kind="internal", instance_id=ids[1])
    asg.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=[ids[0]], ProtectedFromScaleIn=True)
    with pytest.raises(ClientError):
        asg.set_instance_protection(AutoScalingGroupName=GROUP, InstanceIds=[ids[1]], ProtectedFromScaleIn=True)


def _control(aws, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{aws.endpoint_url}/_rle/{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")


def test_control_http_api(aws):
    ids = aws.create_group(size=2, hook_timeout=60)
    asg = aws.client("autoscaling")
    assert _control(aws, "POST", "config", {"proceed_delay_s": 0.1})["proceed_delay_s"] == 0.1
    _control(aws, "POST", "faults", {"action": "DescribeAutoScalingGroups", "count": 1, "kind": "throttle"})
    with pytest.raises(ClientError):
        asg.describe_auto_scaling_groups()
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    (action,) = _control(aws, "GET", f"actions?instance_id={ids[0]}")["actions"]
    assert action["InstanceId"] == ids[0]
    assert _control(aws, "GET", "events")["events"][0]["detail"]["EC2InstanceId"] == ids[0]
    calls = _control(aws, "GET", "calls?action=DescribeAutoScalingGroups")["calls"]
    assert [c["error_code"] for c in calls] == ["Throttling"]
    imds = _control(aws, "POST", "imds", {"instance_id": ids[1]})
    assert imds["url"].startswith("http://127.0.0.1:")
    assert _control(aws, "POST", f"imds/{ids[1]}/spot", {})["action"] == "terminate"
    assert [s for _m, _w, s in _control(aws, "GET", f"history?instance_id={ids[0]}")["history"]] == ["InService", "Terminating:Wait"]
    assert _control(aws, "POST", "expire", {"instance_id": ids[0]})["expired"] == 1
    _control(aws, "POST", "reset")
    assert aws.calls() == [] and aws.pending_actions() == []
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []


def test_reset_clears_state(aws):
    aws.create_group(size=2, hook_timeout=60)
    asg = aws.client("autoscaling")
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    aws.inject_fault("*", count=5)
    aws.reset()
    assert aws.pending_actions() == [] and aws.events() == [] and aws.calls() == []
    assert asg.describe_auto_scaling_groups()["AutoScalingGroups"] == []


def test_delete_group_force_drops_actions(aws):
    aws.create_group(size=2, hook_timeout=60)
    asg = aws.client("autoscaling")
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    asg.delete_auto_scaling_group(AutoScalingGroupName=GROUP, ForceDelete=True)
    assert aws.pending_actions() == []
    assert asg.describe_auto_scaling_instances()["AutoScalingInstances"] == []
