"""A real `pulumi preview` against a sandbox project: needs the CLI and credentials, skips without."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("PULUMI_ACCESS_TOKEN", "GOOGLE_APPLICATION_CREDENTIALS", "LIFTOFF_SANDBOX_STACK")
missing = [name for name in NEEDED if not os.environ.get(name)]

pytestmark = [
    pytest.mark.testinfra,
    pytest.mark.skipif(shutil.which("pulumi") is None, reason="needs the Pulumi CLI on PATH"),
    pytest.mark.skipif(
        bool(missing), reason=f"needs credentials for a sandbox project: set {', '.join(missing)}"
    ),
]


def preview() -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["pulumi", "preview", "--stack", os.environ["LIFTOFF_SANDBOX_STACK"], "--non-interactive", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_preview_of_the_sandbox_stack_succeeds():
    assert json.loads(preview().stdout)["steps"]


def test_rollback_preview_changes_only_traffic():
    """With the sandbox's api.traffic pinned to its stable revision, preview shows one update."""
    steps = [s for s in json.loads(preview().stdout).get("steps", []) if s.get("op") not in ("same", "read")]
    assert all(s["type"] == "gcp:cloudrunv2/service:Service" for s in steps), steps


def pulumi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pulumi", *args, "--stack", os.environ["LIFTOFF_SANDBOX_STACK"], "--non-interactive"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )


def test_the_policy_pack_loads_under_the_real_analyzer_and_passes():
    """What the offline path (tools/policy_check.py) stands in for: the CLI's own analyzer."""
    result = pulumi("preview", "--policy-pack", "policies", "--json")
    assert result.returncode == 0, result.stderr[-4000:]
    events = json.loads(result.stdout).get("diagnostics", [])
    assert not [e for e in events if e.get("severity") == "error"], events


def test_an_up_then_an_unchanged_preview_shows_no_changes():
    """On the real cloud: revision names, the content tag and the JobRun are stable across updates."""
    up = pulumi("up", "--yes", "--policy-pack", "policies")
    assert up.returncode == 0, up.stderr[-4000:]
    again = pulumi("preview", "--expect-no-changes")
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
