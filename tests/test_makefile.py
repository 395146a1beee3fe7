"""The Makefile creates the policy pack's virtualenv wherever the pack runs, as make itself reads it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make on PATH"),
]

ROOT = Path(__file__).resolve().parents[1]
PACK_VENV = "policies/venv"
CREATE = f"python3 -m venv --clear {PACK_VENV}"
INSTALL = f"{PACK_VENV}/bin/python -m pip install --quiet -r policies/requirements.txt"


def make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """make with PYTHON=python3, whatever the caller's environment sets."""
    return subprocess.run(
        ["make", "PYTHON=python3", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def commands(*targets: str) -> list[str]:
    """What make would run for `targets` with everything out of date (nothing is run)."""
    result = make("--dry-run", "--always-make", *targets)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    "target",
    [
        "install",
        "test",
        "plan STACK=prod",
        "plan-diff BASE=HEAD",
        "release STACK=prod",
        "rollback STACK=prod",
    ],
)
def test_every_target_that_runs_the_pack_creates_its_virtualenv_from_its_requirements(target):
    lines = commands(*target.split())
    assert CREATE in lines and INSTALL in lines
    assert lines.index(CREATE) < lines.index(INSTALL)


def test_clean_removes_the_packs_virtualenv():
    (line,) = [line for line in commands("clean") if line.startswith("rm -rf")]
    assert PACK_VENV in line.split()


def test_the_virtualenv_is_made_again_when_the_requirements_change(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "policies" / "venv").mkdir(parents=True)
    requirements = tmp_path / "policies" / "requirements.txt"
    stamp = tmp_path / "policies" / "venv" / ".installed"
    requirements.write_text("pulumi-policy>=1.13,<2\n")
    stamp.touch()
    os.utime(requirements, (1_000_000, 1_000_000))
    assert make("--question", f"{PACK_VENV}/.installed", cwd=tmp_path).returncode == 0
    os.utime(requirements, None)
    os.utime(stamp, (1_000_000, 1_000_000))
    assert make("--question", f"{PACK_VENV}/.installed", cwd=tmp_path).returncode == 1


def test_the_pack_venv_is_ignored_by_git():
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", f"{PACK_VENV}/bin/python"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if ignored.returncode == 128:
        pytest.skip(f"not a git checkout: {ignored.stderr.strip()}")
    assert ignored.returncode == 0, "policies/venv/ is not in .gitignore"
