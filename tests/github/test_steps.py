"""The release and rollback steps' own scripts, run the way the runner runs them and cancelled
the way GitHub cancels them.

The runner writes a step's `run` to a file and starts `bash -e {0}` on it (no `shell:` given);
cancelling sends SIGINT, then SIGTERM, to that shell alone (workflow cancellation reference).
Only the programs the script calls are stand-ins: `pulumi login`, and the controller, which
records the signals it gets and ends as the real one does after a cancelled update.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.github.expressions import Job, Run, job_runs
from tests.github.test_workflows import ROOT, load, step_script

pytestmark = pytest.mark.unit

# The controller's part: note each signal; exit CONTROLLER_EXIT at once, or on SIGINT when
# CONTROLLER_WAITS (it waited for the update under way, then started no other: exit 1).
CONTROLLER = """
import os, signal, sys, time
from pathlib import Path
log = Path(os.environ["CONTROLLER_LOG"])
def on_signal(signum, frame):
    with log.open("a") as out:
        out.write(signal.Signals(signum).name + "\\n")
    sys.exit(1)
signal.signal(signal.SIGINT, on_signal)
log.write_text("ready " + " ".join(sys.argv[1:]) + "\\n")
if not os.environ.get("CONTROLLER_WAITS"):
    sys.exit(int(os.environ["CONTROLLER_EXIT"]))
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(9)
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The step's working directory: the real cancellable.sh, a stand-in controller and CLI."""
    (tmp_path / "release").mkdir(parents=True)
    shutil.copy2(ROOT / "release" / "cancellable.sh", tmp_path / "release")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    (tmp_path / "controller.py").write_text(CONTROLLER)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{tmp_path / "controller.py"}" "$@"\n')
    python.chmod(0o755)
    pulumi = tmp_path / "bin" / "pulumi"
    pulumi.parent.mkdir()
    pulumi.write_text("#!/bin/sh\nexit 0\n")
    pulumi.chmod(0o755)
    return tmp_path


def start(checkout: Path, workflow: str, command: str, **env: str) -> subprocess.Popen[str]:
    script = checkout / "step.sh"
    script.write_text(step_script(workflow, command))
    (checkout / "output").write_text("")
    environ = {
        "PATH": f"{checkout / 'bin'}:{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(checkout / "output"),
        "CONTROLLER_LOG": str(checkout / "controller.log"),
        "PULUMI_BACKEND_URL": "gs://state",
        "STACK": "prod",
        **env,
    }
    return subprocess.Popen(
        ["bash", "-e", str(script)],
        cwd=checkout,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the test's own signals stay out of it
    )


def outputs(checkout: Path) -> dict[str, str]:
    lines = (checkout / "output").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def controller_log(checkout: Path) -> list[str]:
    return (checkout / "controller.log").read_text().splitlines()


def wait_until_ready(checkout: Path) -> None:
    deadline = time.monotonic() + 30
    while not (checkout / "controller.log").exists() or not controller_log(checkout):
        assert time.monotonic() < deadline, "the controller never started"
        time.sleep(0.05)


def cancel(step: subprocess.Popen[str]) -> int:
    """GitHub's cancellation: SIGINT to the step's shell, SIGTERM 7.5 s later if it still runs."""
    step.send_signal(signal.SIGINT)
    try:
        return step.wait(timeout=7.5)
    except subprocess.TimeoutExpired:
        step.send_signal(signal.SIGTERM)
        return step.wait(timeout=2.5)


@pytest.mark.parametrize(
    ("code", "step_code", "paused"), [(0, 0, False), (3, 3, False), (4, 0, True), (1, 1, False)]
)
def test_a_release_step_records_the_controllers_exit_code(checkout, code, step_code, paused):
    step = start(checkout, "release.yml", "release", CONTROLLER_EXIT=str(code))
    assert step.wait(timeout=30) == step_code, step.communicate()[0]
    assert controller_log(checkout) == ["ready -m release release --stack prod"]
    expected = {"exit_code": str(code)} | ({"paused": "true"} if paused else {})
    assert outputs(checkout) == expected


def test_a_cancelled_release_step_hands_the_controller_ctrl_c_and_records_no_exit_code(checkout):
    step = start(checkout, "release.yml", "release", CONTROLLER_WAITS="1")
    wait_until_ready(checkout)
    assert cancel(step) != 0
    assert controller_log(checkout)[1:] == ["SIGINT"], "the controller heard of the cancellation"
    assert "exit_code" not in outputs(checkout)
    # And so deploy.yml sends the canary back to stable.
    prod = Job("cancelled", {"began": "true", **outputs(checkout)})
    needs = {"prod": prod, "prod-promote": Job("skipped")}
    assert job_runs(load("deploy.yml")["jobs"]["prod-unfinished"]["if"], Run(needs=needs, cancelled=True))


def test_a_cancelled_rollback_step_hands_the_controller_ctrl_c(checkout):
    step = start(
        checkout, "rollback.yml", "rollback", CONTROLLER_WAITS="1", FURTHER="false", UNFINISHED="true"
    )
    wait_until_ready(checkout)
    assert cancel(step) == 1, "the controller's own exit code"
    assert controller_log(checkout) == [
        "ready -m release rollback --stack prod --unfinished",
        "SIGINT",
    ]
