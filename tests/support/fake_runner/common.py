"""Constants and small helpers shared by the fake Runner.Listener, Runner.Worker and broker.

Upstream references are to github.com/actions/runner (read at runner version 2.336.0).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RUNNER_VERSION = "2.336.0"


class ReturnCode:
    """Listener exit codes (src/Runner.Common/Constants.cs, Runner.ReturnCode), as interpreted
    by src/Misc/layoutbin/RunnerService.js: 0, 1 and 5 stop the service; 2 (retryable) and 3, 4
    (updating) relaunch after 5 s, giving up after 10 in a row."""

    SUCCESS = 0
    TERMINATED_ERROR = 1
    RETRYABLE_ERROR = 2
    RUNNER_UPDATING = 3
    RUN_ONCE_RUNNER_UPDATING = 4
    SESSION_CONFLICT = 5
    RUNNER_CONFIGURATION_REFRESHED = 6
    RUNNER_VERSION_DEPRECATED = 7


#: TaskResult (src/Sdk/DTWebApi/WebApi/TaskResult.cs). The worker exits with 100 + result
#: (src/Runner.Common/Util/TaskResultUtil.cs, _returnCodeOffset = 100).
TASK_RESULTS = ["Succeeded", "SucceededWithIssues", "Failed", "Canceled", "Skipped", "Abandoned"]
RETURN_CODE_OFFSET = 100

#: The issue the worker adds when the runner is shut down mid-job
#: (src/Runner.Worker/JobRunner.cs, ShutdownReason.UserCancelled).
SHUTDOWN_MESSAGE = (
    "The runner has received a shutdown signal. This can happen when the runner service is "
    "stopped, or a manually started runner is canceled."
)


def result_to_code(result: str) -> int:
    return RETURN_CODE_OFFSET + TASK_RESULTS.index(result)


def code_to_result(code: int) -> str | None:
    i = code - RETURN_CODE_OFFSET
    return TASK_RESULTS[i] if 0 <= i < len(TASK_RESULTS) else None


def utc_u() -> str:
    """.NET's DateTime.UtcNow:u format ("2026-01-02 03:04:05Z"), used in listener output."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One JSON request (loopback broker only); returns (status, decoded body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    # Never go through a proxy, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, (json.loads(raw) if raw else None)
        except ValueError:
            return e.code, None


def load_env_file(root: Path) -> dict[str, str]:
    """Read <root>/.env the way Runner.Listener's Program.LoadAndSetEnv does
    (src/Runner.Listener/Program.cs): KEY=VALUE lines, split at the first '='."""
    out: dict[str, str] = {}
    path = root / ".env"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        i = line.find("=")
        if line and i > 0:
            out[line[:i]] = line[i + 1 :]
    return out


def read_json_bom(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8-sig"))


def write_json_bom(path: Path, obj: dict[str, Any]) -> None:
    """Upstream writes .runner/.credentials with File.WriteAllText(..., Encoding.UTF8), which
    puts a UTF-8 BOM first (src/Runner.Sdk/Util/IOUtil.cs SaveObject); readers must cope."""
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8-sig")


def runner_settings(name: str, server_url: str, github_url: str, *, agent_id: int = 1, ephemeral: bool = False,
                    disable_update: bool = False, work: str = "_work", pool_name: str = "Default",
                    monitor_socket: str | None = None) -> dict[str, Any]:
    """The .runner document: camelCase RunnerSettings fields, default values omitted
    (src/Runner.Common/ConfigurationStore.cs, EmitDefaultValue = false)."""
    s: dict[str, Any] = {
        "agentId": agent_id,
        "agentName": name,
        "poolId": 1,
        "poolName": pool_name,
        "serverUrl": server_url,
        "gitHubUrl": github_url,
        "workFolder": work,
    }
    if ephemeral:
        s["ephemeral"] = True
    if disable_update:
        s["disableUpdate"] = True
    if monitor_socket:
        s["monitorSocketAddress"] = monitor_socket
    return s


def fake_settings(root: Path) -> dict[str, Any]:
    """Settings of the fake only (broker URL), written by install_fake_runner."""
    path = root / ".fake_runner.json"
    return json.loads(path.read_text()) if path.exists() else {}


def env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
