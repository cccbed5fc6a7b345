"""FakeGitHub's single-runner read and its refusals, against GitHub's OpenAPI description
(tests/support/README.md, section 5)."""

from __future__ import annotations

import json

import pytest

from support.github_emulator import RUNNER_OPERATIONS, FakeGitHub, cut_spec, ensure_node_modules, rest, \
    validate_fake_against_spec

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def runner_spec(tmp_path_factory):
    ensure_node_modules()
    return cut_spec(tmp_path_factory.mktemp("github") / "runners.openapi.json")


@pytest.fixture
def github():
    fake = FakeGitHub().start()
    try:
        yield fake
    finally:
        fake.stop()


def test_the_cut_description_holds_the_single_runner_reads(runner_spec):
    spec = json.loads(runner_spec.read_text())
    for path in ("/orgs/{org}/actions/runners/{runner_id}", "/repos/{owner}/{repo}/actions/runners/{runner_id}"):
        assert ("get", path) in RUNNER_OPERATIONS
        assert spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == \
            {"$ref": "#/components/schemas/runner"}


def test_the_fake_answers_in_githubs_schema(runner_spec):
    assert validate_fake_against_spec(runner_spec) == []


@pytest.mark.parametrize("scope", ["/orgs/acme", "/repos/acme/infra"])
def test_get_one_runner_then_404_once_deleted(github, scope):
    rid = github.add_runner("i-0abc", ["i-0abc", "asg-runners"], status="online")
    status, runner = rest(github, "GET", f"{scope}/actions/runners/{rid}")
    assert status == 200
    assert runner["id"] == rid and runner["name"] == "i-0abc" and runner["status"] == "online"
    assert runner["busy"] is False and [label["name"] for label in runner["labels"]][-2:] == ["i-0abc", "asg-runners"]
    github.live = lambda name: ("offline", True)
    assert rest(github, "GET", f"{scope}/actions/runners/{rid}")[1]["busy"] is True
    github.live = None
    assert rest(github, "GET", f"{scope}/actions/runners/{rid + 100}")[0] == 404
    assert rest(github, "DELETE", f"{scope}/actions/runners/{rid}")[0] == 204
    status, body = rest(github, "GET", f"{scope}/actions/runners/{rid}")
    assert status == 404 and body["message"] == "Not Found"
