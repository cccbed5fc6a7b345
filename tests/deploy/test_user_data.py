"""deploy/terraform/main.tf's user_data, rendered and run end to end on loopback emulators.

The chain of a real boot: the controller handles the launch event (the GitHub emulator mints a
registration token, the instance's secret gets it), then the user_data script runs as root:
`register` as the unprivileged runner user (the stand-in config.sh refuses root like upstream's),
`install`, `systemctl daemon-reload`, `systemctl enable --now runner-lifecycle`, and the agent
starts the runner's listener.

Two things of this machine are shimmed, and only those: systemd does not run here (PID 1 is not
systemd, `systemctl` answers "offline"), so a `systemctl` on PATH starts the agent exactly as the
rendered unit says (`User=` if any, else root; `Environment=`; `ExecStart=`; `RuntimeDirectory=`
becomes a temporary directory);
and `install` runs with `--dry-run`, so the test plans the install against this machine's real
/etc/passwd and runner directory without writing into /etc of the CI machine. Needs root (to
create the `runner` user, removed afterwards, and for runuser): CI runs as root.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import hcl2
import pytest

from support.fake_runner import Broker, install_fake_runner
from support.jit_controller import instance_key, jit_controller
from support.runner_tree import lay_out_runner_tree

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from harness import wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TF = REPO / "deploy" / "terraform"
FIXTURES = REPO / "tests" / "fixtures" / "events"
USER = "runner"
URL = "https://github.com/acme"


def _unquote(v: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals."""
    if isinstance(v, str):
        return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v
    if isinstance(v, list):
        return [_unquote(x) for x in v]
    return v


def variable_defaults() -> dict[str, Any]:
    with (TF / "variables.tf").open() as fh:
        doc = hcl2.load(fh)
    out: dict[str, Any] = {}
    for block in doc.get("variable", []):
        for name, body in block.items():
            if isinstance(body, dict) and "default" in body:
                out[name.strip('"')] = _unquote(body["default"])
    return out


def render_user_data(values: dict[str, str]) -> str:
    """The user_data heredoc of main.tf with its template expressions substituted, as Terraform
    renders it (`<<-EOT` strips the common indentation; `$${` is a literal `${`). Its directives are
    `%{~ if var.runner_mode == "..." }`, `%{~ else }` and `%{~ endif }` on lines of their own; the
    `~` strips the newline before each, so a directive line vanishes and only the taken branch's
    lines stay."""
    text = (TF / "main.tf").read_text()
    m = re.search(r"user_data = base64encode\(<<-EOT\n(.*?)\n[ \t]*EOT\n", text, re.S)
    assert m, "main.tf has no user_data heredoc"
    body = textwrap.dedent(m.group(1))
    kept: list[str] = []
    taking = [True]
    for line in body.split("\n"):
        directive = re.fullmatch(r"\s*%\{~ (.*?) \}", line)
        if directive is None:
            if all(taking):
                kept.append(line)
            continue
        words = directive.group(1)
        cond = re.fullmatch(r'if (var\.\w+) == "(\w+)"', words)
        if cond:
            assert cond.group(1) in values, f"user_data tests {cond.group(1)}, which this test does not know"
            taking.append(values[cond.group(1)] == cond.group(2))
        elif words == "else":
            taking[-1] = not taking[-1]
        elif words == "endif":
            taking.pop()
        else:
            raise AssertionError(f"user_data directive this test does not know: {line!r}")
    body = "\n".join(kept)

    def sub(mo: re.Match[str]) -> str:
        expr = mo.group(1)
        assert expr in values, f"user_data uses ${{{expr}}}, which this test does not know"
        return values[expr]

    rendered = re.sub(r"(?<!\$)\$\{([^}]*)\}", sub, body).replace("$${", "${")
    return rendered + "\n"


def template_values(mode: str, runner_dir: str, jit_url: str = "https://abc.lambda-url.us-east-1.on.aws/",
                    user: str = USER) -> dict[str, str]:
    defaults = variable_defaults()
    return {
        "var.runner_mode": mode,
        "var.runner_user": user,
        "var.runner_dir": runner_dir,
        "var.github_url": URL,
        'join(",", var.runner_labels)': ",".join(defaults["runner_labels"]),
        "aws_lambda_function_url.jit.function_url": jit_url,
    }


def test_the_user_data_renders_and_parses() -> None:
    defaults = variable_defaults()
    assert defaults["runner_mode"] == "jit"
    jit = render_user_data(template_values("jit", defaults["runner_dir"], user=defaults["runner_user"]))
    persistent = render_user_data(template_values("persistent", defaults["runner_dir"], user=defaults["runner_user"]))
    for script in (jit, persistent):
        assert script.startswith("#!/bin/bash\nset -euo pipefail\n")
        syntax = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert syntax.returncode == 0, syntax.stderr
        assert script.endswith("systemctl daemon-reload\nsystemctl enable --now runner-lifecycle\n"), script
    # JIT (the default): no registration at boot; the unit gets the mode and the endpoint.
    assert "register" not in jit and "--runner-mode jit --jit-url https://abc.lambda-url" in jit
    # Persistent: register runs as the runner's user, never as root.
    assert "runuser -u runner -- runner-lifecycle register --runner-dir /opt/actions-runner" in persistent
    assert re.search(r"^runner-lifecycle register", persistent, re.M) is None
    assert "--labels self-hosted,linux,x64" in persistent and "--runner-mode persistent" in persistent
    # install gives the runner's tree to root: the runner cannot update itself (docs/operations.md).
    assert "--disable-update" in persistent


@pytest.fixture
def runner_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates the `runner` user and runs user_data as root (CI runs as root)")
    created = False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True)
        created = True
    try:
        yield pwd.getpwnam(USER)
    finally:
        if created:
            subprocess.run(["userdel", USER], check=False)


def runner_python(user: str) -> str:
    """An interpreter the runner user may execute for the stand-in's scripts (this venv may live
    under a directory only root can enter)."""
    import sys

    for candidate in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if candidate and subprocess.run(["runuser", "-u", user, "--", candidate, "-c", "pass"],
                                        capture_output=True).returncode == 0:
            return candidate
    pytest.fail(f"no Python interpreter the `{user}` user can run")


SYSTEMCTL = """#!/bin/bash
# systemctl stand-in (systemd does not run in this test environment): records its arguments and,
# for `enable --now runner-lifecycle`, starts the agent as the unit rendered by `install` says.
set -euo pipefail
echo "$*" >> "$RLE_SYSTEMCTL_LOG"
case "$*" in
  daemon-reload) exit 0 ;;
  "enable --now runner-lifecycle") ;;
  *) echo "systemctl stand-in: unsupported: $*" >&2; exit 1 ;;
esac
# The unit exactly as `install` (a dry run here) was asked to write it: the same flags.
mapfile -t install_args < "$RLE_INSTALL_ARGS"
unit="$("$RLE_BIN" install --print-unit "${install_args[@]}")"
printf '%s\\n' "$unit" > "$RLE_UNIT_COPY"
# No User= means root (the agent); Environment= lines reach the agent as systemd passes them.
user="$(printf '%s\\n' "$unit" | sed -n 's/^User=//p')"
user="${user:-root}"
envs="$(printf '%s\\n' "$unit" | sed -n 's/^Environment=//p')"
workdir="$(printf '%s\\n' "$unit" | sed -n 's/^WorkingDirectory=//p')"
exec_start="$(printf '%s\\n' "$unit" | sed -n 's/^ExecStart=//p')"
# The unit's configuration file is /etc/runner-lifecycle/config.toml, which this test does not
# write; RuntimeDirectory= (/run/runner-lifecycle) is a directory the test made for the user.
exec_start="${exec_start//\\/etc\\/runner-lifecycle\\/config.toml/$RLE_CONFIG}"
cd "$workdir"
RUNNER_LIFECYCLE_AGENT_SOCKET="$RLE_RUNTIME_DIR/agent.sock" \\
  setsid runuser -u "$user" -- env $envs $exec_start > "$RLE_AGENT_LOG" 2>&1 < /dev/null &
echo $! > "$RLE_AGENT_PID"
"""

RUNNER_LIFECYCLE = """#!/bin/sh
# The binary under test; `install` only plans (--dry-run): this test does not write into /etc.
if [ "$1" = install ]; then
  shift
  printf '%s\\n' "$@" > "$RLE_INSTALL_ARGS"
  exec "$RLE_BIN" install --dry-run "$@"
fi
exec "$RLE_BIN" "$@"
"""


def write_exec(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def kill_group(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def processes_in_group(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    out.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return out


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


@dataclass
class Boot:
    """An emulated host booting: its runner directory (the AMI's), shims, and the result."""

    base: Path
    runner: Any
    runner_dir: Path
    env: dict[str, str]
    pid_file: Path

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        (self.base / "user-data.sh").write_text(script)
        return subprocess.run(["bash", str(self.base / "user-data.sh")], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def unit(self) -> str:
        return (self.base / "unit").read_text()

    def agent_log(self) -> str:
        return (self.base / "agent.log").read_text(errors="replace")

    def check_agent_and_listener(self, session: Any, bin_path: Path, runner_user: pwd.struct_passwd) -> None:
        """The agent, started as the unit says, runs as root and starts the listener as the runner
        user (docs/security.md: the job must not share the agent's uid)."""
        assert (self.base / "systemctl.log").read_text().splitlines() == ["daemon-reload",
                                                                          "enable --now runner-lifecycle"]
        unit = self.unit()
        assert "\nUser=" not in unit, "the agent runs as root, not as the job's user"
        assert f"Environment=RUNNER_LIFECYCLE_RUNNER_USER={USER}" in unit
        pgid = int(self.pid_file.read_text().strip())
        agents = [p for p in processes_in_group(pgid) if os.path.realpath(f"/proc/{p}/exe") == os.path.realpath(bin_path)]
        assert agents, self.agent_log()[-3000:]
        assert all(uid_of(p) == 0 for p in agents)
        assert uid_of(session.pid) == runner_user.pw_uid
        assert any(parent_of(session.pid) == a for a in agents)


@contextmanager
def booting(broker: Any, env: dict[str, str], bin_path: Path) -> Iterator[Boot]:
    """The AMI (the stand-in runner in runner_dir, laid out as `install` lays it out; RuntimeDirectory=
    as the unit makes it: root's, 0755) and the boot environment with the systemctl and install shims."""
    base = Path(tempfile.mkdtemp(prefix="rl-user-data-"))
    base.chmod(0o755)
    pid_file = base / "agent.pid"
    try:
        runner_dir = base / "actions-runner"
        runner = install_fake_runner(runner_dir, broker.url, name="unused", configured=False)
        python = runner_python(USER)
        for exe in ("Runner.Listener", "Runner.Worker"):
            script = runner_dir / "bin" / exe
            script.write_text(re.sub(r"^#!.*", f"#!{python}", script.read_text(), count=1))
        runtime_dir = base / "run"
        runtime_dir.mkdir(mode=0o755)
        # The AMI was baked with `install` (here only planned, --dry-run): the runner's tree is root's
        # but for _work and _diag, its directory sticky and the runner group's (docs/operations.md).
        entry = pwd.getpwnam(USER)
        lay_out_runner_tree(runner_dir, entry.pw_uid, entry.pw_gid)
        config = base / "config.toml"
        config.write_text((REPO / "packaging" / "config.toml").read_text()
                          .replace('dir = "/opt/actions-runner"', f'dir = "{runner_dir}"'))
        config.chmod(0o644)
        shims = base / "bin"
        shims.mkdir()
        write_exec(shims / "systemctl", SYSTEMCTL)
        write_exec(shims / "runner-lifecycle", RUNNER_LIFECYCLE)
        boot_env = {
            **env,
            "PATH": f"{shims}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "RLE_BIN": str(bin_path), "RLE_CONFIG": str(config), "RLE_RUNTIME_DIR": str(runtime_dir),
            "RLE_SYSTEMCTL_LOG": str(base / "systemctl.log"), "RLE_UNIT_COPY": str(base / "unit"),
            "RLE_INSTALL_ARGS": str(base / "install-args"),
            "RLE_AGENT_LOG": str(base / "agent.log"), "RLE_AGENT_PID": str(pid_file),
            "RUNNER_LIFECYCLE_AWS_IMDS_ENDPOINT": env["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
            "RUNNER_LIFECYCLE_AWS_IMDS_POLL": "250ms",
            "RUNNER_LIFECYCLE_AGENT_LOG_FORMAT": "json",
        }
        boot_env.pop("RUNNER_ALLOW_RUNASROOT", None)
        yield Boot(base, runner, runner_dir, boot_env, pid_file)
    finally:
        kill_group(pid_file)
        shutil.rmtree(base, ignore_errors=True)


def test_user_data_in_persistent_mode_registers_as_the_runner_user_and_starts_the_agent(
        aws_x: Any, aws_env: Any, run_bin: Any, fake_github: Any, bin_path: Path,
        runner_user: pwd.struct_passwd) -> None:
    """The token-free path of `register` for teams that keep persistent runners."""
    [instance_id] = aws_x.create_group(size=1, hook_timeout=None)
    env = aws_env(instance_id=instance_id)
    with Broker(poll_timeout_s=2.0) as broker, booting(broker, env, bin_path) as host:
        # 1. The controller handles the launch: the emulated GitHub mints, the secret holds it.
        ctl_env = {**env, "RUNNER_LIFECYCLE_CONTROLLER_GROUPS": "runners", "RUNNER_LIFECYCLE_GITHUB_URL": URL,
                   "RUNNER_LIFECYCLE_GITHUB_API_URL": fake_github.url,
                   "RUNNER_LIFECYCLE_GITHUB_TOKEN": fake_github.token}
        launch = json.loads((FIXTURES / "launch.json").read_text())
        launch["detail"]["EC2InstanceId"] = instance_id
        r = run_bin(["controller", "handle-event", "--event", "-"], ctl_env, input=json.dumps(launch))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.strip().splitlines()[-1])["outcome"] == "launch_continued"
        [token] = fake_github.registration_tokens
        broker.registration_token = token  # the stand-in's GitHub accepts exactly that token
        secret = f"runner-lifecycle/runners/{instance_id}"

        # 2. Boot: the rendered user_data as root, with the instance's (emulated) environment.
        boot = host.run(render_user_data(template_values("persistent", str(host.runner_dir))))
        assert boot.returncode == 0, f"user_data failed:\n{boot.stdout}\n{boot.stderr}"
        assert token not in boot.stdout + boot.stderr
        assert "dry run; nothing changed" in boot.stdout

        # register ran config.sh as the runner user, the token in its environment only.
        [call] = host.runner.config_calls()
        assert call["uid"] == runner_user.pw_uid != 0
        assert call["env"].get("ACTIONS_RUNNER_INPUT_TOKEN") == token and "RUNNER_ALLOW_RUNASROOT" not in call["env"]
        assert token not in " ".join(call["argv"])
        assert host.runner.configured and "registered" in boot.stdout
        names = [s["Name"] for s in aws_x.client("secretsmanager").list_secrets()["SecretList"]]
        assert secret not in names
        # The stand-in's GitHub has the runner, labelled as the controller's sweep expects.
        labels = broker.runners()[instance_id]["labels"]
        assert labels[-5:] == ["self-hosted", "linux", "x64", instance_id, "asg-runners"]
        assert "Environment=RUNNER_LIFECYCLE_RUNNER_MODE=persistent" in host.unit()

        # 3. The agent runs as root and starts the registered listener as the runner user.
        session = broker.wait_listening(instance_id, timeout=60)
        assert session.runner == instance_id
        host.check_agent_and_listener(session, bin_path, runner_user)


def test_user_data_in_jit_mode_starts_just_in_time_listeners_as_the_runner_user(
        aws_x: Any, aws_env: Any, bin_path: Path, runner_user: pwd.struct_passwd, tmp_path: Path) -> None:
    """The default: nothing registered at boot; the agent gets each config from the controller's
    JIT endpoint with the instance's credentials, and the listener runs it as the runner user."""
    [instance_id] = aws_x.create_group(size=1, hook_timeout=None)
    key = instance_key(instance_id)
    env = {**aws_env(instance_id=instance_id), **key.env()}
    with Broker(poll_timeout_s=2.0) as broker, \
            jit_controller(bin_path, broker, aws_env, tmp_path / "controller.log", {instance_id: key}) as ctl, \
            booting(broker, env, bin_path) as host:
        boot = host.run(render_user_data(template_values("jit", str(host.runner_dir), jit_url=ctl.url)))
        assert boot.returncode == 0, f"user_data failed:\n{boot.stdout}\n{boot.stderr}"
        assert not host.runner.config_calls(), "nothing is registered at boot in JIT mode"
        unit = host.unit()
        assert "Environment=RUNNER_LIFECYCLE_RUNNER_MODE=jit" in unit
        assert f"Environment=RUNNER_LIFECYCLE_RUNNER_JIT_URL={ctl.url}" in unit
        wait_for(lambda: ctl.minted(), 60, f"a JIT config\n{host.agent_log()[-3000:]}")
        name = ctl.minted()[0]
        assert instance_id in name
        session = broker.wait_listening(name, timeout=60)
        host.check_agent_and_listener(session, bin_path, runner_user)
        blob = ctl.github.jit_configs[name]
        assert blob not in Path(f"/proc/{session.pid}/cmdline").read_bytes().decode(errors="replace")
        job = broker.assign_job(0.2)
        assert broker.wait_outcome(job, 30) == "succeeded"
        # The config never reached a log either.
        assert blob not in host.agent_log() and blob not in boot.stdout + boot.stderr
