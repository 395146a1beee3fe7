"""The offline plan: a stable file with secrets redacted, and a diff that sees every kind of change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.plan import diff_plans, markdown
from tools.plan_document import REDACTED, render_plan
from tools.render import ROOT

pytestmark = pytest.mark.unit

TOOL = ROOT / "tools" / "plan.py"


def plan_file(stack: str, out: Path) -> str:
    subprocess.run(
        [sys.executable, str(TOOL), "render", "--stack", stack, "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out.read_text()


def test_rendering_is_stable_and_sorted(tmp_path):
    first = plan_file("prod", tmp_path / "a.json")
    second = plan_file("prod", tmp_path / "b.json")
    assert first == second
    document = json.loads(first)
    keys = [(r["type"], r["name"]) for r in document["resources"]]
    assert keys == sorted(keys)
    # The release ledger, the wait for new grants, and the pool's scaler (its component, service
    # account, service, two custom roles and their grants, two invokers, its schedule and its
    # `Scaler failing` alert) included.
    assert len(keys) == 64
    assert document["policy"] == []


def test_secrets_are_redacted(tmp_path):
    text = plan_file("prod", tmp_path / "prod.json")
    document = json.loads(text)
    for leak in (
        "placeholder-",
        "mock-redis-password",
        "mock-password-",
        "mock-access-token",
        "postgresql://",
        "rediss://",
    ):
        assert leak not in text, leak
    assert document["outputs"]["database_url"] == REDACTED
    versions = [
        r for r in document["resources"] if r["type"] == "gcp:secretmanager/secretVersion:SecretVersion"
    ]
    assert versions and all(v["inputs"]["secretData"] == REDACTED for v in versions)
    project = next(r for r in document["resources"] if r["type"] == "pulumi-python:dynamic/supabase:Project")
    assert project["inputs"]["db_pass"] == REDACTED
    assert project["protect"] is True


def test_paths_are_relative_to_the_tree():
    document = render_plan("staging", ROOT)
    image = next(r for r in document["resources"] if r["type"] == "docker-build:index:Image")
    assert image["inputs"]["context"]["location"] == "."
    assert image["inputs"]["dockerfile"]["location"] == "./app/Dockerfile"


def _doc(*resources: dict[str, object]) -> dict[str, object]:
    return {"resources": list(resources), "policy": []}


def test_diff_detects_added_removed_and_modified():
    base = _doc(
        {"type": "t:a", "name": "kept", "inputs": {"size": 1, "labels": {"env": "prod"}}},
        {"type": "t:a", "name": "same", "inputs": {"x": [1, 2]}},
        {"type": "t:b", "name": "gone", "inputs": {}},
    )
    head = _doc(
        {"type": "t:a", "name": "kept", "inputs": {"size": 2, "labels": {"env": "prod"}}},
        {"type": "t:a", "name": "same", "inputs": {"x": [1, 2]}},
        {"type": "t:c", "name": "new", "inputs": {}},
    )
    report = diff_plans(base, head)
    assert report["added"] == ["t:c::new"]
    assert report["removed"] == ["t:b::gone"]
    assert report["modified"] == {"t:a::kept": [{"property": "inputs.size", "before": 1, "after": 2}]}
    text = markdown({"prod": report}, "main", {})
    assert "`+ t:c::new`" in text and "`- t:b::gone`" in text and "`~ t:a::kept`" in text


def test_diff_against_nothing_adds_everything():
    head = _doc({"type": "t:a", "name": "x", "inputs": {}})
    assert diff_plans(None, head)["added"] == ["t:a::x"]


def test_protect_changes_are_modifications():
    base = _doc({"type": "t:a", "name": "db", "inputs": {}})
    head = _doc({"type": "t:a", "name": "db", "inputs": {}, "protect": True})
    assert diff_plans(base, head)["modified"] == {
        "t:a::db": [{"property": "protect", "before": False, "after": True}]
    }


def test_plan_diff_against_head_of_this_repository():
    result = subprocess.run(
        [sys.executable, str(TOOL), "diff", "--base", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "### staging:" in result.stdout and "### prod:" in result.stdout


def test_unknown_ref_is_a_clear_error():
    result = subprocess.run(
        [sys.executable, str(TOOL), "diff", "--base", "no-such-ref-anywhere"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "cannot read git ref 'no-such-ref-anywhere'" in result.stderr
