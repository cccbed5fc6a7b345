"""The GitHub client's contract: every request it makes, against GitHub's official OpenAPI
description served by Prism (validating), and its stateful behaviour against FakeGitHub, whose own
answers are checked against the same description."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from support.github_emulator import RUNNER_OPERATIONS, validate_fake_against_spec

REPO = Path(__file__).resolve().parents[2]


# --workspace: the same feature resolution as scripts/test's `cargo test --workspace`, so nothing is rebuilt.
def cargo_contract(test: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["cargo", "test", "--quiet", "--workspace", "--test", "contract", "--", "--ignored", "--exact",
         test, "--nocapture"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def test_the_cut_description_has_exactly_the_runner_operations(runner_spec: Path) -> None:
    spec = json.loads(runner_spec.read_text())
    ops = sorted((m, p) for p, item in spec["paths"].items() for m in item if m != "parameters")
    assert ops == sorted(RUNNER_OPERATIONS)
    assert spec["openapi"].startswith("3.")


def test_the_stateful_fake_answers_in_githubs_schema(runner_spec: Path) -> None:
    assert validate_fake_against_spec(runner_spec) == []


def test_every_client_request_is_valid_against_the_official_description(prism, app_key_file: Path) -> None:
    before = len(prism.log())
    result = cargo_contract("every_request_is_valid_against_the_official_description",
                            {"RLE_GITHUB_PRISM_URL": prism.url, "RLE_GITHUB_APP_KEY_FILE": str(app_key_file)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout, result.stdout[-2000:]
    log = prism.log()[before:]
    # Prism logs each request's validation; a violation is an error line from its VALIDATOR.
    assert "Request received" in log
    # Only the requests are ours: Prism also checks its answer (the description's own example) and
    # the example of list-jobs-for-workflow-run lacks the `created_at` its schema requires.
    violations = [line for line in log.splitlines() if "VALIDATOR" in line and "✖" in line
                  and "Violation: response." not in line]
    assert violations == [], "\n".join(violations)
    for request in ("get /orgs/acme/actions/runners ", "post /orgs/acme/actions/runners/registration-token ",
                    "post /orgs/acme/actions/runners/generate-jitconfig ", "get /orgs/acme/actions/runners/23 ",
                    "delete /orgs/acme/actions/runners/23 ", "get /repos/acme/infra/actions/runners/23 ",
                    "get /repos/acme/infra/actions/runners ", "post /repos/acme/infra/actions/runners/registration-token ",
                    "post /repos/acme/infra/actions/runners/generate-jitconfig ",
                    "delete /repos/acme/infra/actions/runners/23 ", "post /app/installations/42/access_tokens ",
                    "get /repos/acme/infra/actions/runs ",
                    "get /repos/acme/infra/actions/runs/30433642/jobs "):
        assert f"[HTTP SERVER] {request}" in log, request


def test_stateful_behaviour_pagination_busy_delete_and_app_tokens(fake_github, app_key_file: Path) -> None:
    for i in range(248):
        fake_github.add_runner(f"other-{i}", ["gpu"])
    fake_github.add_runner("i-0123456789abcdef0", ["i-0123456789abcdef0", "asg-runners"], status="online", busy=True)
    fake_github.add_runner("i-0123456789abcdef1", ["i-0123456789abcdef1", "asg-runners"])
    result = cargo_contract("stateful_behaviour_against_the_fake", {
        "RLE_GITHUB_FAKE_URL": fake_github.url, "RLE_GITHUB_FAKE_TOKEN": fake_github.token,
        "RLE_GITHUB_APP_KEY_FILE": str(app_key_file)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout
    pages = [p for (m, p, _ok) in fake_github.requests if m == "GET"]
    assert len(pages) >= 6  # 3 pages, twice
    assert "i-0123456789abcdef1" not in fake_github.runner_names()
    assert len(fake_github.installation_tokens) == 1


def test_rate_limits_and_server_errors(fake_github) -> None:
    fake_github.fail_next = [502, 0, 429] + [4290] * 10
    result = cargo_contract("rate_limits_and_server_errors", {
        "RLE_GITHUB_FAKE_URL": fake_github.url, "RLE_GITHUB_FAKE_TOKEN": fake_github.token})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout
    posts = [p for (m, p, _ok) in fake_github.requests if m == "POST"]
    # 502, retried to 201; a 429 given up on; then `Retry-After: 0` answered four times (3 waits).
    assert len(posts) == 3 + 4


def test_jit_conflicts_and_the_never_online_sweep(fake_github) -> None:
    import time

    now = int(time.time())
    old, young = now - 3600, now - 30
    fake_github.add_runner("rle-c-1000-taken", ["rle-test"])
    fake_github.add_runner(f"rle-c-{old}-never", ["x"], version=None, os_name="unknown", ephemeral=True)
    fake_github.add_runner(f"rle-c-{old}-connected", ["x"], ephemeral=True)
    fake_github.add_runner(f"rle-c-{old}-online", ["x"], status="online", version=None)
    fake_github.add_runner(f"rle-c-{old}-busy", ["x"], busy=True, version=None)
    fake_github.add_runner(f"rle-c-{young}-young", ["x"], version=None)
    fake_github.add_runner("rle-c-noepoch", ["x"], version=None)
    fake_github.add_runner(f"other-{old}-x", ["x"], version=None)
    fake_github.fail_next = [0, 0, 409, 409]
    result = cargo_contract("jit_conflicts_and_the_never_online_sweep_against_the_fake", {
        "RLE_GITHUB_FAKE_URL": fake_github.url, "RLE_GITHUB_FAKE_TOKEN": fake_github.token,
        "RLE_GITHUB_FAKE_OLD": str(old)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout
    names = fake_github.runner_names()
    assert f"rle-c-{old}-never" not in names and "rle-c-1000-taken" in names
    assert not [n for n in names if n.startswith("rle-c-1000-taken-r")]
    for kept in (f"rle-c-{old}-connected", f"rle-c-{old}-online", f"rle-c-{old}-busy", f"rle-c-{young}-young",
                 "rle-c-noepoch", f"other-{old}-x"):
        assert kept in names
    posts = [p for (m, p, _ok) in fake_github.requests if m == "POST"]
    assert posts == ["/orgs/acme/actions/runners/generate-jitconfig"] * 4
    assert [p for (m, p, _ok) in fake_github.requests if m == "DELETE"] and \
        all(p.startswith("/orgs/acme/actions/runners/") for (m, p, _ok) in fake_github.requests if m == "DELETE")
