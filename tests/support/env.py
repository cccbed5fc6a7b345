"""Environment for a binary under test that talks to the emulators.

The AWS SDKs look for credentials and region in the environment, in ~/.aws and finally at the
instance metadata service on 169.254.169.254, which is not on this machine and must never be
contacted. :func:`aws_env` therefore always sets dummy keys, the region and the endpoint, points
the shared config files at nothing, and either disables IMDS or points it at a loopback emulator.
"""

from __future__ import annotations

import os
from typing import Mapping

DUMMY_KEY_ID = "testing"
DUMMY_SECRET = "testing"

_DROP_PREFIXES = ("AWS_",)
_DROP = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}


def aws_env(
    endpoint_url: str,
    imds_url: str | None = None,
    region: str = "us-east-1",
    base: Mapping[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment dict for a process under test.

    endpoint_url: the AWS emulator (AWS_ENDPOINT_URL, used by every service client).
    imds_url: the instance's IMDS emulator (AWS_EC2_METADATA_SERVICE_ENDPOINT); when None,
        IMDS is disabled (AWS_EC2_METADATA_DISABLED=true).
    base: starting environment (default: this process's), minus AWS_* and proxy variables.
    extra: further variables, added last.
    """
    for url in filter(None, (endpoint_url, imds_url)):
        host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        if not (host.startswith("127.") or host in ("localhost", "::1")):
            raise ValueError(f"refusing a non-loopback endpoint: {url}")
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if not k.startswith(_DROP_PREFIXES) and k not in _DROP}
    env.update(
        AWS_ENDPOINT_URL=endpoint_url,
        AWS_REGION=region,
        AWS_DEFAULT_REGION=region,
        AWS_ACCESS_KEY_ID=DUMMY_KEY_ID,
        AWS_SECRET_ACCESS_KEY=DUMMY_SECRET,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        NO_PROXY="127.0.0.1,localhost,::1",
        no_proxy="127.0.0.1,localhost,::1",
    )
    if imds_url:
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds_url
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"] = "IPv4"
        env["AWS_EC2_METADATA_DISABLED"] = "false"
    else:
        env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra)
    return env
