"""Cancelling a release: the signals GitHub sends reach the `pulumi` CLI as Ctrl-C, the controller
waits for it, and nothing new starts afterwards.

Real processes and real signals throughout. The `pulumi` CLI is played by a small program that
does what the CLI does on SIGINT (pkg/backend/..., cancellationScopeSource: the first asks the
engine to finish the steps under way, the second terminates): it counts them, and exits on the
second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from release.automation import AutomationDeployer
from release.cancel import Cancellation
from release.ports import DeployError
from stacks.ledger import Ledger
from stacks.release_plan import ship

pytestmark = pytest.mark.unit

CANCELLABLE = Path(__file__).resolve().parents[2] / "release" / "cancellable.sh"

# The CLI's part: note each SIGINT, stop at the second (exit 255, as a terminated `pulumi up`).
PULUMI = """
import signal, sys, time
from pathlib import Path
log = Path(sys.argv[1])
def on_int(signum, frame):
    with log.open("a") as out:
        out.write("SIGINT\\n")
    if log.read_text().count("SIGINT") >= 2:
        sys.exit(255)
signal.signal(signal.SIGINT, on_int)
log.write_text("ready\\n")
while True:
    time.sleep(0.05)
"""

# The controller's part: the Automation API runs the CLI as a child and waits for it.
CONTROLLER = """
import subprocess, sys
from release.cancel import Cancellation
cancellation = Cancellation()
cancellation.install()
with subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]]) as pulumi:
    pulumi.wait()
print(f"pulumi exited {pulumi.returncode}; cancelled: {cancellation.requested}", flush=True)
sys.exit(3)
"""


def _ready(log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (log.exists() and log.read_text().startswith("ready")):
        assert time.monotonic() < deadline, "the stand-in never started"
        time.sleep(0.05)


def _env(repo_root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo_root)}


def test_a_cancelled_step_reaches_pulumi_as_two_ctrl_cs_and_the_controller_waits(tmp_path, repo_root):
    """GitHub's SIGINT, then SIGTERM, to the step's shell alone (workflow cancellation reference)."""
    log = tmp_path / "pulumi.log"
    step = subprocess.Popen(
        [str(CANCELLABLE), sys.executable, "-c", CONTROLLER, PULUMI, str(log)],
        cwd=repo_root,
        env=_env(repo_root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _ready(log)
    step.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert step.poll() is None, "the first signal lets the update finish what runs"
    step.send_signal(signal.SIGTERM)
    out, err = step.communicate(timeout=10)
    assert log.read_text().splitlines() == ["ready", "SIGINT", "SIGINT"]
    assert "pulumi exited 255; cancelled: True" in out, err
    assert step.returncode == 3, "the controller's own exit status"
    assert "KeyboardInterrupt" not in err
    assert "cancelling: the update under way is left to finish" in err


def test_a_sigterm_to_the_controller_alone_reaches_pulumi_as_ctrl_c(tmp_path, repo_root):
    """`kill <pid>` or a timeout: the controller passes it on to its process group."""
    log = tmp_path / "pulumi.log"
    controller = subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, PULUMI, str(log)],
        cwd=repo_root,
        env=_env(repo_root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # it leads its group, as under cancellable.sh or a terminal
    )
    _ready(log)
    controller.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    controller.send_signal(signal.SIGTERM)
    out, err = controller.communicate(timeout=10)
    assert log.read_text().splitlines() == ["ready", "SIGINT", "SIGINT"]
    assert "pulumi exited 255; cancelled: True" in out, err


def test_the_step_keeps_the_commands_exit_status(repo_root):
    done = subprocess.run(
        [str(CANCELLABLE), sys.executable, "-c", "import sys; sys.exit(4)"], cwd=repo_root, check=False
    )
    assert done.returncode == 4  # release.yml reads 4 as "paused for approval"


def test_after_a_cancellation_no_further_update_starts():
    cancellation = Cancellation()
    cancellation.event.set()
    deployer = AutomationDeployer("prod", cancellation=cancellation)
    with pytest.raises(DeployError, match="the release was cancelled, so no further `pulumi up` starts"):
        deployer.ship(ship(None, Ledger()))


def test_a_cancellation_cuts_the_controllers_waits_short():
    cancellation = Cancellation()
    cancellation.event.set()
    started = time.monotonic()
    cancellation.sleep(60)
    assert time.monotonic() - started < 1
