"""Every workflow: valid against GitHub's schema, and clean in zizmor's security audit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from release.cloud import CloudMonitoringMetrics
from stacks.bootstrap.environments import (
    DEPLOY_ENVIRONMENTS,
    PREVIEW_ENVIRONMENT,
    PRODUCTION,
    RELEASE_WORKFLOW,
    ROLLBACK_ENVIRONMENTS,
    ROLLBACK_WORKFLOW,
)
from stacks.settings.release import parse
from tests.github.expressions import Job, Run, evaluate, job_runs
from tools.render import stack_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
# What a release job does besides soaking, allowed for generously (not measured): make install,
# the image build and migrations of the ship, a `pulumi up` for each traffic shift, metric reads.
RELEASE_JOB_WORK_SECONDS = 20 * 60


def load(name: str) -> dict[Any, Any]:
    document: dict[Any, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    # YAML reads the bare key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def step_script(workflow: str, command: str) -> str:
    """The `run` of the one step in `workflow` that runs the release controller's `command`."""
    (script,) = (
        str(step["run"])
        for job in load(workflow)["jobs"].values()
        for step in job["steps"]
        if f"-m release {command} " in str(step.get("run", ""))
    )
    return script


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
    assert any("tools/plan.py diff" in str(step.get("run")) for step in jobs["plan-diff"]["steps"])
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
    # What a prod job that never finished left serving goes back, through the rollback workflow.
    unfinished = jobs["prod-unfinished"]
    assert unfinished["needs"] == ["prod", "prod-promote"]
    assert unfinished["uses"] == "./.github/workflows/rollback.yml"
    assert unfinished["with"] == {"stack": "prod", "unfinished": True}
    assert unfinished["permissions"] == {"contents": "read", "id-token": "write"}
    staging = jobs["staging-unfinished"]
    assert staging["needs"] == "staging"
    assert staging["uses"] == "./.github/workflows/rollback.yml"
    assert staging["with"] == {"stack": "staging", "unfinished": True}
    assert staging["permissions"] == {"contents": "read", "id-token": "write"}


def test_the_workflows_use_the_environments_the_bootstrap_admits():
    deploy = load("deploy.yml")["jobs"]
    released = {
        job["with"]["environment"] for job in deploy.values() if job.get("uses", "").endswith("/release.yml")
    }
    assert released == set(DEPLOY_ENVIRONMENTS) and PRODUCTION in released
    assert load("release.yml")["jobs"]["release"]["environment"] == "${{ inputs.environment }}"
    assert load("pr.yml")["jobs"]["preview"]["environment"] == PREVIEW_ENVIRONMENT
    # The deployer's identity is asked for only in the two workflows the bootstrap binds it to.
    bound = {Path(RELEASE_WORKFLOW).name, Path(ROLLBACK_WORKFLOW).name}
    assert {p.name for p in WORKFLOWS if "GCP_DEPLOYER_SERVICE_ACCOUNT" in p.read_text()} == bound
    assert all((ROOT / path).is_file() for path in (RELEASE_WORKFLOW, ROLLBACK_WORKFLOW))


def test_the_release_reports_whether_the_controller_began_and_how_it_ended():
    workflow = load("release.yml")
    outputs = workflow["on"]["workflow_call"]["outputs"]
    assert outputs["began"]["value"] == "${{ jobs.release.outputs.began }}"
    assert outputs["exit_code"]["value"] == "${{ jobs.release.outputs.exit_code }}"
    release = workflow["jobs"]["release"]
    assert release["outputs"]["began"] == "${{ steps.began.outputs.began }}"
    assert release["outputs"]["exit_code"] == "${{ steps.release.outputs.exit_code }}"
    order = [s.get("id") for s in release["steps"]]
    # Its own step, done before the controller starts: the output survives a job killed mid-step.
    assert order.index("began") == order.index("release") - 1
    script = next(s for s in release["steps"] if s.get("id") == "release")["run"].splitlines()
    controller = next(i for i, line in enumerate(script) if "-m release release" in line)
    # A cancelled run records no exit code (tests/github/test_steps.py runs the step).
    after = [line.strip() for line in script[controller + 1 :] if not line.strip().startswith("#")]
    assert after[:2] == [
        'if [ "$CANCELLED" = "true" ]; then exit 1; fi',
        'echo "exit_code=$status" >> "$GITHUB_OUTPUT"',
    ]


def controller_run(exit_code: int | None, *, began: bool = True, result: str | None = None) -> Job:
    """A release.yml job as deploy.yml's `needs` sees it, from the controller's exit code (None:
    it never returned) and, when it never returned, the job's own result."""
    if exit_code is None:
        return Job(result or "failure", {"began": "true"} if began else {})
    outputs = {"began": "true", "exit_code": str(exit_code), "paused": "true" if exit_code == 4 else ""}
    return Job("success" if exit_code in (0, 4) else "failure", outputs)


PAUSED = controller_run(4)
NOT_STARTED = controller_run(None, began=False)
DURING_PROD, DURING_PROMOTION = "during prod", "during the promotion"
# (prod, prod-promote when it is due, when the run was cancelled, whether prod-unfinished runs)
PROMOTION_CASES = {
    "promoted in one go": (controller_run(0), None, "", False),
    "the canary itself rolled back": (controller_run(3), None, "", False),
    "the canary's rollback failed (the job says: roll back by hand)": (controller_run(1), None, "", False),
    "prod refused before anything moved": (controller_run(2), None, "", False),
    "the first approval rejected or expired": (NOT_STARTED, None, "", False),
    "the run cancelled while prod waited for its approval": (
        controller_run(None, began=False, result="cancelled"),
        None,
        DURING_PROD,
        False,
    ),
    "the run cancelled mid-canary": (controller_run(None, result="cancelled"), None, DURING_PROD, True),
    "prod timed out mid-canary": (controller_run(None), None, "", True),
    "paused, then promoted": (PAUSED, controller_run(0), "", False),
    "paused, then a gate rolled the promotion back": (PAUSED, controller_run(3), "", False),
    "paused, then the promotion's rollback failed": (PAUSED, controller_run(1), "", False),
    "paused, then the promotion refused (moved by hand)": (PAUSED, controller_run(2), "", False),
    "paused, then the promotion rejected": (PAUSED, NOT_STARTED, "", True),
    "paused, then the promotion expired after 30 days": (PAUSED, NOT_STARTED, "", True),
    "paused, then the run cancelled while the promotion waited": (
        PAUSED,
        controller_run(None, began=False, result="cancelled"),
        DURING_PROMOTION,
        True,
    ),
    "paused, then the promotion failed before the controller": (PAUSED, NOT_STARTED, "", True),
    "paused, then the promotion timed out mid-step": (PAUSED, controller_run(None), "", True),
}


@pytest.mark.parametrize(
    ("prod", "promote", "cancelled", "expected"), PROMOTION_CASES.values(), ids=PROMOTION_CASES
)
def test_a_prod_release_left_unfinished_goes_back_to_stable_and_only_then(prod, promote, cancelled, expected):
    jobs = load("deploy.yml")["jobs"]
    # prod-promote's own `if`, evaluated once prod ends: it is due only for a paused release.
    due = job_runs(jobs["prod-promote"]["if"], Run(needs={"prod": prod}, cancelled=cancelled == DURING_PROD))
    assert due == (promote is not None), "the case's promotion does not match prod-promote's `if`"
    needs = {"prod": prod, "prod-promote": promote if promote is not None else Job("skipped")}
    assert job_runs(jobs["prod-unfinished"]["if"], Run(needs=needs, cancelled=bool(cancelled))) is expected


# (staging's release as deploy.yml's `needs` sees it, whether the run was cancelled meanwhile,
# whether staging-unfinished runs). Staging promotes without pausing (its stack file).
STAGING_CASES = {
    "promoted": (controller_run(0), False, False),
    "a gate rolled it back": (controller_run(3), False, False),
    "its rollback failed (the job says: roll back by hand)": (controller_run(1), False, False),
    "refused before anything moved": (controller_run(2), False, False),
    "failed before the controller started": (NOT_STARTED, False, False),
    "cancelled before the controller started": (
        controller_run(None, began=False, result="cancelled"),
        True,
        False,
    ),
    "cancelled mid-canary": (controller_run(None, result="cancelled"), True, True),
    "timed out mid-canary": (controller_run(None), False, True),
}


@pytest.mark.parametrize(("staging", "cancelled", "expected"), STAGING_CASES.values(), ids=STAGING_CASES)
def test_a_staging_release_left_unfinished_goes_back_to_stable_and_only_then(staging, cancelled, expected):
    jobs = load("deploy.yml")["jobs"]
    run = Run(needs={"staging": staging}, cancelled=cancelled)
    assert job_runs(jobs["staging-unfinished"]["if"], run) is expected
    # And prod never starts after an unfinished staging release.
    assert not expected or not job_runs(jobs["prod"].get("if", "success()"), run)


def test_the_release_runs_the_canary_controller_and_reports_a_pause():
    workflow = load("release.yml")
    release = workflow["jobs"]["release"]
    step = next(s for s in release["steps"] if s.get("id") == "release")
    assert '.venv/bin/python -m release release --stack "$STACK"' in step["run"]
    # Exit 4 (holding for approval) is a pause, not a failure; every other code is the job's.
    assert '"$status" -eq 4' in step["run"] and 'exit "$status"' in step["run"]
    assert (
        workflow["on"]["workflow_call"]["outputs"]["paused"]["value"] == "${{ jobs.release.outputs.paused }}"
    )
    assert release["outputs"]["paused"] == "${{ steps.release.outputs.paused }}"
    assert "${{" not in step["run"]  # values reach the shell through env, never spliced into it


@pytest.mark.parametrize(("workflow", "command"), [("release.yml", "release"), ("rollback.yml", "rollback")])
def test_a_cancelled_run_reaches_the_controller_and_pulumi_as_ctrl_c(workflow, command):
    """GitHub signals only the step's shell, so that shell runs the function itself, not a child
    (tests/github/test_steps.py runs the steps, tests/release/test_cancel.py the rest)."""
    script = step_script(workflow, command).splitlines()
    controller = next(i for i, line in enumerate(script) if f"-m release {command} " in line)
    run = f"cancellable .venv/bin/python -m release {command} "
    assert script[controller].strip().startswith(run)
    assert ". release/cancellable.sh" in (line.strip() for line in script[:controller])


def test_rollback_is_a_dispatch_or_a_call_from_main_as_the_deployer():
    workflow = load("rollback.yml")
    assert set(workflow["on"]) == {"workflow_dispatch", "workflow_call"}
    assert workflow["on"]["workflow_dispatch"]["inputs"]["stack"]["options"] == ["staging", "prod"]
    assert workflow["on"]["workflow_call"]["inputs"]["unfinished"]["default"] is False
    job = workflow["jobs"]["rollback"]
    (auth,) = auth_steps(job)
    assert auth["with"]["service_account"] == "${{ vars.GCP_DEPLOYER_SERVICE_ACCOUNT }}"
    step = next(s for s in job["steps"] if "release rollback" in str(s.get("run")))
    assert '.venv/bin/python -m release rollback --stack "$STACK"' in step["run"]
    assert 'if [ "$UNFINISHED" = "true" ]; then flags+=(--unfinished); fi' in step["run"]
    assert job["env"]["UNFINISHED"] == "${{ inputs.unfinished }}"
    assert job["concurrency"] == {"group": "rollback-${{ inputs.stack }}", "cancel-in-progress": False}


@pytest.mark.parametrize(
    ("stack", "environment"), [("prod", "production-rollback"), ("staging", "staging-rollback")]
)
def test_rollback_runs_in_the_stacks_rollback_environment(stack, environment):
    job = load("rollback.yml")["jobs"]["rollback"]
    on_main = Run(needs={}, github={"ref": "refs/heads/main"}, inputs={"stack": stack})
    assert evaluate(job["environment"], on_main) == environment
    assert environment in ROLLBACK_ENVIRONMENTS


@pytest.mark.parametrize("ref", ["refs/heads/feature", "refs/pull/7/merge", "refs/tags/v1"])
def test_a_rollback_from_anything_but_main_fails_before_reaching_the_environment(ref):
    jobs = load("rollback.yml")["jobs"]
    elsewhere = Run(needs={}, github={"ref": ref}, inputs={"stack": "prod"})
    assert not job_runs(jobs["rollback"]["if"], elsewhere)
    refuse = jobs["main-only"]
    assert job_runs(refuse["if"], elsewhere)
    assert "environment" not in refuse and refuse["permissions"] == {}
    assert "exit 1" in refuse["steps"][-1]["run"]
    on_main = Run(needs={}, github={"ref": "refs/heads/main"}, inputs={"stack": "prod"})
    assert job_runs(jobs["rollback"]["if"], on_main) and not job_runs(refuse["if"], on_main)


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
    # The controller's smoke test (release/cloud.py) sends it as a bearer token.
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


PACK_COMMANDS = ("-m release release", "-m release rollback", "tools/plan.py")


def _runs_the_pack_at(step: dict[str, Any]) -> int | None:
    """Where in the step the policy pack starts: 0 for a pulumi/actions step given the pack, the
    offset of the command in a script that runs it (a release, a rollback, a plan), else None."""
    if str(step.get("uses", "")).startswith("pulumi/actions@") and "policyPacks" in step.get("with", {}):
        return 0
    run = str(step.get("run", ""))
    offsets = [run.index(command) for command in PACK_COMMANDS if command in run]
    return min(offsets) if offsets else None


def test_every_job_that_runs_the_policy_pack_creates_its_virtualenv_first():
    """The CLI runs the pack on policies/venv as it finds it; `make install` creates it (Makefile)."""
    running = set()
    for path in WORKFLOWS:
        for name, job in load(path.name)["jobs"].items():
            steps = job.get("steps", [])
            for index, step in enumerate(steps):
                at = _runs_the_pack_at(step)
                if at is None:
                    continue
                running.add((path.name, name))
                before = [str(s.get("run", "")) for s in steps[:index]] + [str(step.get("run", ""))[:at]]
                assert any("make install" in run for run in before), f"{path.name} {name}: step {index}"
    assert running >= {
        ("pr.yml", "plan-diff"),
        ("pr.yml", "preview"),
        ("release.yml", "release"),
        ("rollback.yml", "rollback"),
    }


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_longest_release_a_stack_allows_fits_the_release_jobs_timeout(stack):
    # A job killed mid-step would leave the candidate its share with no gate watching it.
    timeout = load("release.yml")["jobs"]["release"]["timeout-minutes"] * 60
    settings, problems = parse(stack_config(stack)["liftoff:release"])
    assert problems == []
    delay = CloudMonitoringMetrics.delay_seconds
    # A step that never reaches minRequests ends at the first poll past maxSoakSeconds of
    # readable traffic (release/controller.py, Controller._soak).
    step = settings.wait_limit_seconds + delay + max(1.0, settings.soak_seconds / 5)
    # With approval the first job holds after the first step, and the promote job resumes at
    # that step, judging it again before the others (Controller._release).
    jobs = [1, len(settings.steps)] if settings.approval else [len(settings.steps)]
    for steps in jobs:
        # The last step's final minutes are read once more before the release is recorded good.
        longest = steps * step + delay + RELEASE_JOB_WORK_SECONDS
        assert longest <= timeout, (stack, steps, longest / 60)


def runs_pulumi(step: dict[str, Any]) -> bool:
    """A step whose process starts the Pulumi CLI (which downloads provider plugins)."""
    if str(step.get("uses", "")).startswith("pulumi/actions@"):
        return "command" in step.get("with", {})  # without a command the action only installs the CLI
    return bool(
        re.search(r"\bpulumi (preview|up)\b|-m release (release|rollback)\b", str(step.get("run", "")))
    )


def test_every_step_that_runs_pulumi_downloads_plugins_with_the_jobs_own_read_token():
    found = []
    for path in WORKFLOWS:
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            for step in job.get("steps", []):
                if runs_pulumi(step):
                    found.append(f"{path.name}:{name}")
                    assert step.get("env", {}).get("GITHUB_TOKEN") == "${{ github.token }}", (path.name, name)
                    # Reading public releases needs nothing more than the job's read access.
                    assert job["permissions"]["contents"] == "read", (path.name, name)
                    assert "write" not in {
                        job["permissions"].get(k) for k in ("contents", "actions", "packages")
                    }
    assert sorted(found) == [
        "drift.yml:drift",
        "pr.yml:preview",
        "release.yml:release",
        "rollback.yml:rollback",
    ]


def test_the_nightly_check_reads_the_environments_with_actions_read_only():
    job = load("drift.yml")["jobs"]["environments"]
    assert job["permissions"] == {"contents": "read", "actions": "read"}
    step = job["steps"][-1]
    assert step["run"] == 'python -m stacks.bootstrap.environments --repository "$REPOSITORY"'
    assert step["env"] == {"GITHUB_TOKEN": "${{ github.token }}", "REPOSITORY": "${{ github.repository }}"}
