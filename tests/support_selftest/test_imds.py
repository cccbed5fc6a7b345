"""The per-instance IMDSv2 emulator."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from support.imds import target_lifecycle_state

pytestmark = pytest.mark.timeout(30)

GROUP = "runners"


def req(imds, method, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", imds.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def token(imds, ttl=60):
    status, headers, body = req(imds, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})
    assert status == 200
    # The SDKs refuse a token answer without the TTL header.
    assert headers["X-aws-ec2-metadata-token-ttl-seconds"] == str(ttl)
    return body


def get(imds, path, tok):
    return req(imds, "GET", path, {"X-aws-ec2-metadata-token": tok})


def test_token_protocol(aws, imds_for):
    (iid,) = aws.create_group(size=1, hook_timeout=None)
    imds = imds_for(iid)
    assert imds.url == f"http://127.0.0.1:{imds.port}"
    assert req(imds, "PUT", "/latest/api/token")[0] == 400  # TTL header required
    assert req(imds, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "0"})[0] == 400
    assert req(imds, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21601"})[0] == 400
    assert req(imds, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "5",
                                                  "X-Forwarded-For": "1.2.3.4"})[0] == 403
    assert req(imds, "GET", "/latest/meta-data/instance-id")[0] == 401
    assert get(imds, "/latest/meta-data/instance-id", "bogus")[0] == 401
    tok = token(imds)
    assert get(imds, "/latest/meta-data/instance-id", tok)[::2] == (200, iid)
    assert get(imds, "/latest/meta-data/placement/region", tok)[::2] == (200, "us-east-1")
    assert get(imds, "/latest/meta-data/no-such-thing", tok)[0] == 404
    imds.expire_tokens()
    assert get(imds, "/latest/meta-data/instance-id", tok)[0] == 401


def test_token_expires_after_ttl(aws, imds_for):
    (iid,) = aws.create_group(size=1, hook_timeout=None)
    imds = imds_for(iid)
    tok = token(imds, ttl=1)
    assert get(imds, "/latest/meta-data/instance-id", tok)[0] == 200
    time.sleep(1.1)
    assert get(imds, "/latest/meta-data/instance-id", tok)[0] == 401


def test_target_lifecycle_state_follows_the_group(aws, imds_for):
    ids = aws.create_group(size=2, hook_timeout=60)
    imds = imds_for(ids[0])
    tok = token(imds)
    path = "/latest/meta-data/autoscaling/target-lifecycle-state"
    assert get(imds, path, tok)[::2] == (200, "InService")
    asg = aws.client("autoscaling")
    asg.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    assert get(imds, path, tok)[::2] == (200, "Terminated")  # already during Terminating:Wait
    aws.configure(proceed_delay_s=0.05)
    asg.complete_lifecycle_action(AutoScalingGroupName=GROUP, LifecycleHookName="drain",
                                  LifecycleActionResult="CONTINUE", InstanceId=ids[0])
    time.sleep(0.3)
    assert get(imds, path, tok)[::2] == (200, "Terminated")


def test_target_state_lag(aws, imds_for):
    ids = aws.create_group(size=2, hook_timeout=60)
    imds = imds_for(ids[0])
    imds.set_target_state_lag(0.6)
    tok = token(imds)
    path = "/latest/meta-data/autoscaling/target-lifecycle-state"
    time.sleep(0.7)  # the InService state itself must be 0.6 s old to show
    aws.client("autoscaling").set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    assert get(imds, path, tok)[2] == "InService"
    time.sleep(0.7)
    assert get(imds, path, tok)[2] == "Terminated"


def test_standby_and_warm_states(aws, imds_for):
    ids = aws.create_group(size=2, hook_timeout=60)
    asg = aws.client("autoscaling")
    asg.enter_standby(AutoScalingGroupName=GROUP, InstanceIds=[ids[1]], ShouldDecrementDesiredCapacity=True)
    imds = imds_for(ids[1])
    tok = token(imds)
    path = "/latest/meta-data/autoscaling/target-lifecycle-state"
    assert get(imds, path, tok)[2] == "Standby"
    aws.set_lifecycle_state(ids[1], "Warmed:Stopped")
    assert get(imds, path, tok)[2] == "Warmed:Stopped"
    aws.set_lifecycle_state(ids[1], "Warmed:Terminating:Wait")
    assert get(imds, path, tok)[2] == "Warmed:Terminated"
    assert target_lifecycle_state("Pending:Wait") == "InService"
    assert target_lifecycle_state("Detaching") == "Detached"


def test_spot_and_rebalance_notices(aws, imds_for):
    (iid,) = aws.create_group(size=1, hook_timeout=None)
    imds = imds_for(iid)
    tok = token(imds)
    assert get(imds, "/latest/meta-data/spot/instance-action", tok)[0] == 404
    assert get(imds, "/latest/meta-data/events/recommendations/rebalance", tok)[0] == 404
    notice = imds.set_spot_notice()
    status, _h, body = get(imds, "/latest/meta-data/spot/instance-action", tok)
    assert status == 200 and json.loads(body) == notice and notice["action"] == "terminate"
    assert notice["time"].endswith("Z") and len(notice["time"]) == 20
    imds.set_rebalance("2026-01-02T03:04:05Z")
    status, _h, body = get(imds, "/latest/meta-data/events/recommendations/rebalance", tok)
    assert status == 200 and json.loads(body) == {"noticeTime": "2026-01-02T03:04:05Z"}
    imds.clear_spot_notice()
    assert get(imds, "/latest/meta-data/spot/instance-action", tok)[0] == 404


def test_unavailable_refused_then_back(aws, imds_for):
    (iid,) = aws.create_group(size=1, hook_timeout=None)
    imds = imds_for(iid)
    tok = token(imds)
    imds.set_unavailable(0.5, mode="refused")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", imds.port), timeout=1)
    time.sleep(0.7)
    assert get(imds, "/latest/meta-data/instance-id", tok)[0] == 200


def test_unavailable_500(aws, imds_for):
    (iid,) = aws.create_group(size=1, hook_timeout=None)
    imds = imds_for(iid)
    imds.set_unavailable(0.4, mode="500")
    assert req(imds, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "5"})[0] == 500
    time.sleep(0.5)
    tok = token(imds)
    assert get(imds, "/latest/meta-data/instance-id", tok)[0] == 200
    assert any(s == 500 for _t, _m, _p, s in imds.requests)


def test_botocore_imds_client_accepts_it(aws, imds_for):
    """botocore's own IMDSv2 client (like the Rust SDK's, it needs the TTL header) reads region."""
    from botocore.utils import InstanceMetadataRegionFetcher

    (iid,) = aws.create_group(size=1, hook_timeout=None)
    imds = imds_for(iid)
    fetcher = InstanceMetadataRegionFetcher(timeout=2, num_attempts=1, base_url=imds.url, env={})
    assert fetcher.retrieve_region() == "us-east-1"
    assert any(m == "PUT" for _t, m, _p, _s in imds.requests)


def test_reset_closes_imds(aws, imds_for):
    (iid,) = aws.create_group(size=1, hook_timeout=None)
    imds = imds_for(iid)
    port = imds.port
    aws.reset()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
