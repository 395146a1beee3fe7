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
    assert {p.name for p in WORKFLOWS} >= {"pr.yml", "deploy.yml", "drift.yml", "release.yml", "rollback.yml"}


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
    # A release holding for approval goes on only in a second job behind the same protection.
    promote = jobs["prod-promote"]
    assert promote["needs"] == "prod"
    assert promote["if"] == "needs.prod.outputs.paused == 'true'"
    assert promote["with"] == {"stack": "prod", "environment": "production", "approve": True}
    release = load("release.yml")["jobs"]["release"]
    assert release["permissions"] == {"contents": "read", "id-token": "write"}
    auth = auth_steps(release)
    assert auth and "workload_identity_provider" in auth[0]["with"]
    assert "credentials_json" not in auth[0]["with"]


def test_the_release_runs_the_canary_controller_and_reports_a_pause():
    workflow = load("release.yml")
    release = workflow["jobs"]["release"]
    step = next(s for s in release["steps"] if s.get("id") == "release")
    assert '.venv/bin/python -m stacks.release release --stack "$STACK"' in step["run"]
    # Exit 4 (holding for approval) is a pause, not a failure; every other code is the job's.
    assert '"$status" -eq 4' in step["run"] and 'exit "$status"' in step["run"]
    assert (
        workflow["on"]["workflow_call"]["outputs"]["paused"]["value"] == "${{ jobs.release.outputs.paused }}"
    )
    assert release["outputs"]["paused"] == "${{ steps.release.outputs.paused }}"
    assert "${{" not in step["run"]  # values reach the shell through env, never spliced into it


@pytest.mark.parametrize(("workflow", "command"), [("release.yml", "release"), ("rollback.yml", "rollback")])
def test_a_cancelled_run_reaches_the_controller_and_pulumi_as_ctrl_c(workflow, command):
    """GitHub signals only the step's shell (tests/stacks/release/test_cancel.py shows the rest)."""
    lines = [
        line
        for job in load(workflow)["jobs"].values()
        for step in job["steps"]
        for line in str(step.get("run", "")).splitlines()
        if f"-m stacks.release {command} " in line
    ]
    assert lines, f"{workflow} runs no {command}"
    wrapped = f"stacks/release/cancellable.sh .venv/bin/python -m stacks.release {command} "
    assert all(line.strip().startswith(wrapped) for line in lines), lines


def test_rollback_is_a_dispatch_from_main_as_the_deployer():
    workflow = load("rollback.yml")
    assert set(workflow["on"]) == {"workflow_dispatch"}
    assert workflow["on"]["workflow_dispatch"]["inputs"]["stack"]["options"] == ["staging", "prod"]
    job = workflow["jobs"]["rollback"]
    assert job["if"] == "github.ref == 'refs/heads/main'"
    assert job["environment"] == "${{ inputs.stack == 'prod' && 'production' || 'staging' }}"
    (auth,) = auth_steps(job)
    assert auth["with"]["service_account"] == "${{ vars.GCP_DEPLOYER_SERVICE_ACCOUNT }}"
    assert '.venv/bin/python -m stacks.release rollback --stack "$STACK"' in str(job["steps"])


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
    invoker = next(s for s in auth_steps(release) if s.get("with", {}).get("token_format") == "id_token")
    # The service's custom audience: accepted on the candidate's tag URL as on the service URL.
    assert invoker["with"]["id_token_audience"] == "${{ steps.audience.outputs.audience }}"
    assert invoker["with"]["create_credentials_file"] is False  # the deploy's credentials stay as they are
    step = next(s for s in release["steps"] if s.get("id") == "release")
    # The controller's smoke test (stacks/release/cloud.py) sends it as a bearer token.
    assert step["env"]["LIFTOFF_ID_TOKEN"] == f"${{{{ steps.{invoker['id']}.outputs.id_token }}}}"
    order = [s.get("id") or s.get("name") for s in release["steps"]]
    assert order.index("audience") < order.index(invoker["id"]) < order.index("release")


def test_branch_code_runs_only_with_the_read_only_identity():
    for name, job_name in (("pr.yml", "preview"), ("drift.yml", "drift")):
        (auth,) = auth_steps(load(name)["jobs"][job_name])
        assert auth["with"]["service_account"] == "${{ vars.GCP_PREVIEW_SERVICE_ACCOUNT }}", name
        assert (
            auth["with"]["workload_identity_provider"] == "${{ vars.GCP_PREVIEW_WORKLOAD_IDENTITY_PROVIDER }}"
        )
    assert "GCP_DEPLOYER" not in (ROOT / ".github" / "workflows" / "pr.yml").read_text()
    for auth in [
        *auth_steps(load("release.yml")["jobs"]["release"]),
        *auth_steps(load("rollback.yml")["jobs"]["rollback"]),
    ]:
        assert auth["with"]["service_account"] == "${{ vars.GCP_DEPLOYER_SERVICE_ACCOUNT }}"
