"""The example Terraform in deploy/terraform: it parses, every reference is declared, and its IAM
policies are exactly what `runner-lifecycle iam-policy` prints (so the two cannot drift apart).

Terraform itself cannot be fetched on these machines, so this is a syntax and reference check,
not `terraform validate`; docs/operations.md says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import hcl2
import pytest

TF = Path(__file__).resolve().parents[2] / "deploy" / "terraform"
# Placeholders the policies are generated with; main.tf replaces them with the real values.
PLACEHOLDERS = {"--group": "GROUP_NAME", "--region": "us-east-1", "--account": "111122223333"}


def tf_files() -> list[Path]:
    files = sorted(TF.glob("*.tf"))
    assert files, f"no .tf files in {TF}"
    return files


def test_every_file_parses() -> None:
    for f in tf_files():
        with f.open() as fh:
            hcl2.load(fh)


def unquote(name: str) -> str:
    """python-hcl2 keeps the quotes of block labels ('"runners"'); compare names without them."""
    return name.strip('"')


def blocks(doc: dict, kind: str) -> list[dict]:
    return [{unquote(k): v for k, v in b.items() if not k.startswith("__")} for b in doc.get(kind, [])]


def declared() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {"var": set(), "local": set(), "resource": set(), "data": set()}
    for f in tf_files():
        with f.open() as fh:
            doc = hcl2.load(fh)
        for block in blocks(doc, "variable"):
            names["var"].update(block)
        for block in blocks(doc, "locals"):
            names["local"].update(block)
        for kind in ("resource", "data"):
            for block in blocks(doc, kind):
                for rtype, body in block.items():
                    names[kind].update(f"{rtype}.{unquote(n)}" for n in body if not n.startswith("__"))
    return names


def test_every_reference_is_declared() -> None:
    names = declared()
    text = "\n".join(f.read_text() for f in tf_files())
    text = re.sub(r"#.*", "", text)  # comments may mention anything
    for v in set(re.findall(r"\bvar\.([A-Za-z0-9_]+)", text)):
        assert v in names["var"], f"var.{v} is used but not declared"
    for v in set(re.findall(r"\blocal\.([A-Za-z0-9_]+)", text)):
        assert v in names["local"], f"local.{v} is used but not declared"
    for t, n in set(re.findall(r"\bdata\.(aws_[a-z0-9_]+)\.([A-Za-z0-9_]+)", text)):
        assert f"{t}.{n}" in names["data"], f"data.{t}.{n} is used but not declared"
    body = re.sub(r"\bdata\.aws_[a-z0-9_]+\.[A-Za-z0-9_]+", "", text)
    for t, n in set(re.findall(r"(?<![\"\w.])(aws_[a-z0-9_]+)\.([A-Za-z0-9_]+)", body)):
        assert f"{t}.{n}" in names["resource"], f"{t}.{n} is used but not declared"
    # And the check has teeth.
    assert "aws_autoscaling_group.runners" in names["resource"]


def test_scaling_is_wired() -> None:
    """The function URL (AuthType NONE: the HMAC is the auth), the one-minute reconcile with the
    scale input, the state table with its TTL, and the controller's scaling settings."""
    with (TF / "main.tf").open() as fh:
        doc = hcl2.load(fh)
    res: dict[str, dict] = {}
    for b in blocks(doc, "resource"):
        for rtype, body in b.items():
            for name, v in body.items():
                res[f"{rtype}.{unquote(name)}"] = v
    assert unquote(res["aws_lambda_function_url.webhook"]["authorization_type"]) == "NONE"
    assert unquote(res["aws_cloudwatch_event_rule.scale"]["schedule_expression"]) == "rate(1 minute)"
    assert "scale" in res["aws_cloudwatch_event_target.scale"]["input"]
    table = res["aws_dynamodb_table.state"]
    assert unquote(table["hash_key"]) == "pk" and unquote(table["ttl"][0]["attribute_name"]) == "expires_at"
    text = (TF / "main.tf").read_text()
    for var in ("RUNNER_LIFECYCLE_SCALE_TABLE", "RUNNER_LIFECYCLE_SCALE_LABELS", "RUNNER_LIFECYCLE_WEBHOOK_SECRET"):
        assert var in text, var


def test_the_jit_url_is_iam_authenticated_on_an_alias() -> None:
    with (TF / "main.tf").open() as fh:
        doc = hcl2.load(fh)
    res = {f"{kind}.{unquote(name)}": body for b in blocks(doc, "resource") for kind, named in b.items()
           for name, body in named.items()}
    jit = res["aws_lambda_function_url.jit"]
    assert unquote(jit["authorization_type"]) == "AWS_IAM" and "aws_lambda_alias.jit" in str(jit["qualifier"])
    assert unquote(res["aws_lambda_function_url.webhook"]["authorization_type"]) == "NONE"
    assert "qualifier" not in res["aws_lambda_function_url.webhook"]
    text = (TF / "main.tf").read_text()
    assert "RUNNER_LIFECYCLE_AGENT_ROLE_NAME" in text and "JIT_FUNCTION_NAME" in text
    agent = json.loads((TF / "policies" / "agent.json").read_text())
    lam = [s for s in agent["Statement"] if "lambda:" in json.dumps(s["Action"])]
    assert lam and all("Condition" in s for s in lam)


def test_lifecycle_hooks_are_there() -> None:
    with (TF / "main.tf").open() as fh:
        doc = hcl2.load(fh)
    groups = [b["aws_autoscaling_group"] for b in blocks(doc, "resource") if "aws_autoscaling_group" in b]
    assert groups, "no aws_autoscaling_group"
    group = groups[0]['"runners"']
    transitions = {unquote(h["lifecycle_transition"]) for h in group["initial_lifecycle_hook"]}
    assert transitions == {"autoscaling:EC2_INSTANCE_TERMINATING"}
    # The launch hook (the registration token) only for persistent runners: JIT configs are minted
    # when the agent asks.
    [launch] = [d['"initial_lifecycle_hook"'] for d in group["dynamic"] if '"initial_lifecycle_hook"' in d]
    assert 'var.runner_mode == "persistent"' in launch["for_each"]
    assert unquote(launch["content"][0]["lifecycle_transition"]) == "autoscaling:EC2_INSTANCE_LAUNCHING"


@pytest.mark.parametrize("role", ["agent", "controller"])
def test_policy_files_match_iam_policy_output(role: str) -> None:
    binary = os.environ.get("RUNNER_LIFECYCLE_BIN")
    if not binary:
        pytest.fail("RUNNER_LIFECYCLE_BIN must name the built binary (scripts/test sets it)")
    args = [binary, "iam-policy", "--role", role]
    for flag, value in PLACEHOLDERS.items():
        args += [flag, value]
    if role == "agent":
        args += ["--jit-function", "JIT_FUNCTION_NAME:jit"]
    if role == "controller":
        args += ["--github-credentials-secret", "GITHUB_CREDENTIALS_SECRET", "--webhook-secret", "WEBHOOK_SECRET",
                 "--state-table", "STATE_TABLE"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True).stdout
    committed = json.loads((TF / "policies" / f"{role}.json").read_text())
    assert committed == json.loads(out), (
        f"deploy/terraform/policies/{role}.json is stale: regenerate with {' '.join(args[1:])}"
    )
