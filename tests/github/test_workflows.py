"""Every workflow: valid against GitHub's schema, and clean in zizmor's security audit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def load(name: str) -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    # YAML reads the bare key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"pr.yml", "deploy.yml", "drift.yml", "release.yml"}


def test_workflows_match_githubs_schema():
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_at_medium_or_above():
    result = subprocess.run(
        [
            str(BIN / "zizmor"),
            "--offline",
            "--min-severity",
            "medium",
            "--format",
            "plain",
            str(ROOT / ".github" / "workflows"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit(path):
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*(?:-\s*)?uses:\s*(\S+)", line)
        if match and not match.group(1).startswith("./"):
            assert PINNED.match(match.group(1)), line.strip()


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_start_empty_and_checkouts_keep_no_credentials(path):
    document = yaml.safe_load(path.read_text())
    assert document["permissions"] == {}
    for job in document["jobs"].values():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_pull_requests_run_checks_comment_the_plan_and_preview_only_with_credentials():
    pr = load("pr.yml")
    assert list(pr["on"]) == ["pull_request"]
    jobs = pr["jobs"]
    assert any("bash .ci/run" in str(step.get("run")) for step in jobs["checks"]["steps"])
    assert any("stacks/plan.py diff" in str(step.get("run")) for step in jobs["plan-diff"]["steps"])
    fork_guard = "github.event.pull_request.head.repo.full_name == github.repository"
    assert jobs["comment"]["if"] == fork_guard
    assert jobs["preview"]["if"] == fork_guard
    (pulumi,) = [s for s in jobs["preview"]["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policies"


def test_deploy_goes_through_staging_then_approved_prod():
    deploy = load("deploy.yml")
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    jobs = deploy["jobs"]
    assert jobs["staging"]["needs"] == "checks"
    assert jobs["prod"]["needs"] == "staging"
    assert jobs["prod"]["with"]["environment"] == "production"
    release = load("release.yml")["jobs"]["release"]
    assert release["permissions"] == {"contents": "read", "id-token": "write"}
    steps = [s.get("name", s.get("uses", "")) for s in release["steps"]]
    ship = steps.index("Ship the new revision at 0 %, beside the stable one")
    smoke = steps.index("Smoke-test /ready on the candidate's tag URL")
    move = steps.index("Move traffic as the stack file declares")
    assert ship < smoke < move
    auth = [s for s in release["steps"] if str(s.get("uses", "")).startswith("google-github-actions/auth@")]
    assert auth and "workload_identity_provider" in auth[0]["with"]
    assert "credentials_json" not in auth[0]["with"]


def test_drift_runs_nightly_and_files_an_issue():
    drift = load("drift.yml")
    assert "schedule" in drift["on"]
    job = drift["jobs"]["drift"]
    assert "--expect-no-changes" in str(job["steps"])
    assert "--refresh" in str(job["steps"])
    assert job["permissions"]["issues"] == "write"


def auth_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith("google-github-actions/auth@")]


def test_the_smoke_test_sends_an_identity_token_for_a_private_api():
    release = load("release.yml")["jobs"]["release"]
    steps = {s.get("name", s.get("id", "")): s for s in release["steps"]}
    invoker = next(s for s in auth_steps(release) if s.get("with", {}).get("token_format") == "id_token")
    # The service's custom audience: accepted on the candidate's tag URL as on the service URL.
    assert invoker["with"]["id_token_audience"] == "${{ steps.urls.outputs.audience }}"
    assert invoker["with"]["create_credentials_file"] is False  # the deploy's credentials stay as they are
    smoke = steps["Smoke-test /ready on the candidate's tag URL"]
    assert smoke["env"]["ID_TOKEN"] == f"${{{{ steps.{invoker['id']}.outputs.id_token }}}}"
    assert '--header "Authorization: Bearer $ID_TOKEN"' in smoke["run"]
    assert "${{" not in smoke["run"]  # values reach the shell through env, never spliced into it
    order = [s.get("id") or s.get("name") for s in release["steps"]]
    assert order.index("urls") < order.index(invoker["id"]) < order.index(smoke["name"])


def test_branch_code_runs_only_with_the_read_only_identity():
    for name, job_name in (("pr.yml", "preview"), ("drift.yml", "drift")):
        (auth,) = auth_steps(load(name)["jobs"][job_name])
        assert auth["with"]["service_account"] == "${{ vars.GCP_PREVIEW_SERVICE_ACCOUNT }}", name
        assert (
            auth["with"]["workload_identity_provider"] == "${{ vars.GCP_PREVIEW_WORKLOAD_IDENTITY_PROVIDER }}"
        )
    assert "GCP_DEPLOYER" not in (ROOT / ".github" / "workflows" / "pr.yml").read_text()
    for auth in auth_steps(load("release.yml")["jobs"]["release"]):
        assert auth["with"]["service_account"] == "${{ vars.GCP_DEPLOYER_SERVICE_ACCOUNT }}"
