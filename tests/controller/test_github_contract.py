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
                    "post /orgs/acme/actions/runners/generate-jitconfig ", "delete /orgs/acme/actions/runners/23 ",
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
