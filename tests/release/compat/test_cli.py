"""`make compat BASE=<ref>` and its command: usage errors, the JSON report."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from release.compat import EXIT_USAGE, CompatReport, Finding, MigrationRef
from release.compat.__main__ import main
from release.compat.report import read_json

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "PYTHON=python3", "--dry-run", "--always-make", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make on PATH")
def test_make_compat_runs_the_gate_on_base_and_requires_it():
    lines = make("compat", "BASE=HEAD~1", "JSON=1").stdout.splitlines()
    assert any(line.endswith("-m release.compat --base HEAD~1  --json") for line in lines), lines
    refused = make("compat")
    assert refused.returncode != 0 and "set BASE" in refused.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make on PATH")
def test_make_lint_runs_squawk_over_the_migrations():
    assert ".venv/bin/python -m release.compat.lint" in make("lint").stdout.splitlines()


def test_a_ref_git_does_not_know_is_a_usage_error(capsys):
    assert main(["--base", "no-such-ref-anywhere"]) == EXIT_USAGE
    assert "no-such-ref-anywhere" in capsys.readouterr().err
    assert main(["--base=--upload-pack=x"]) == EXIT_USAGE


def test_the_json_report_reads_back_as_the_report():
    report = CompatReport(
        base="origin/main",
        base_commit="0" * 40,
        head="working tree",
        migrations=[MigrationRef("0099", "0099_drop.py", "expand")],
        findings=[Finding("base.read-own", "GET /v1/generations/x: HTTP 500", ("0099",))],
        steps=["migrate"],
        seconds=1.5,
    )
    data = json.loads(json.dumps(report.to_json()))
    assert data["exit_code"] == 3 and data["compatible"] is False
    assert read_json(data) == report
    assert "FAIL base.read-own (migrations: 0099 (0099_drop.py))" in report.text()
