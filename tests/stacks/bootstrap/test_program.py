"""The bootstrap stack, rendered by the mock engine."""

from __future__ import annotations

from typing import Any

import celpy
import pytest
from celpy.adapter import json_to_cel

from stacks.bootstrap.program import (
    DEPLOYER_ROLES,
    NAMESPACE,
    PREVIEW_ROLES,
    SERVICES,
    BootstrapConfigError,
    build,
    load,
)
from tools.policy_check import evaluate
from tools.render import ROOT, Rendering, render, stack_config
from tools.schema import unknown_properties

pytestmark = pytest.mark.unit

BOOTSTRAP = ROOT / "stacks" / "bootstrap"


def render_bootstrap(overrides: dict[str, Any] | None = None) -> Rendering:
    config = {**stack_config("org", BOOTSTRAP), **(overrides or {})}
    return render("org", config, program=lambda: build(load()), project="liftoff-bootstrap")


@pytest.fixture(scope="module")
def bootstrap() -> Rendering:
    return render_bootstrap()


def test_state_bucket_is_private_versioned_and_protected(bootstrap):
    bucket = bootstrap.one("gcp:storage/bucket:Bucket")
    assert bucket.protect
    inputs = bucket.inputs
    assert inputs["name"] == "your-org-liftoff-state"
    assert inputs["uniformBucketLevelAccess"] is True
    assert inputs["publicAccessPrevention"] == "enforced"
    assert inputs["versioning"] == {"enabled": True}


def test_secrets_key_rotates_and_is_protected(bootstrap):
    key = bootstrap.one("gcp:kms/cryptoKey:CryptoKey")
    assert key.protect
    assert key.inputs["rotationPeriod"] == "7776000s"
    assert bootstrap.outputs["secrets_provider"].startswith("gcpkms://")
    assert bootstrap.outputs["state_backend_url"] == "gs://your-org-liftoff-state"


PROVIDER = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
PROJECTS = {"staging": "liftoff-staging-000000", "prod": "liftoff-prod-000000"}


def admits(condition: str, **claims: str) -> bool:
    """Whether Google's STS would exchange a GitHub token with these claims (the condition is CEL)."""
    environment = celpy.Environment()
    program = environment.program(environment.compile(condition))
    return bool(program.evaluate({"assertion": json_to_cel(claims)}))


REPOSITORY = "your-org/liftoff"


def workflow(path: str, ref: str = "refs/heads/main", repository: str = REPOSITORY) -> str:
    """A `job_workflow_ref` or `workflow_ref` claim: the workflow file a job runs, at a ref."""
    return f"{repository}/.github/workflows/{path}@{ref}"


def token(**claims: str) -> dict[str, str]:
    """A GitHub Actions OIDC token's claims: deploy.yml's release job on a push to main unless told.

    As https://docs.github.com/en/actions/reference/security/oidc lists them: a called workflow's
    job carries the caller's `workflow_ref` and its own file in `job_workflow_ref`.
    """
    return {
        "repository_id": "123456789",
        "repository": REPOSITORY,
        "event_name": "push",
        "ref": "refs/heads/main",
        "workflow_ref": workflow("deploy.yml"),
        "job_workflow_ref": workflow("release.yml"),
        **claims,
    }


def rollback_token(**claims: str) -> dict[str, str]:
    """rollback.yml dispatched by hand from main, in production's rollback environment."""
    dispatched = {
        "event_name": "workflow_dispatch",
        "environment": "production-rollback",
        "workflow_ref": workflow("rollback.yml"),
        "job_workflow_ref": workflow("rollback.yml"),
    }
    return token(**{**dispatched, **claims})


def deployer_condition(bootstrap: Rendering) -> str:
    return str(bootstrap.one(PROVIDER, "github-deployer-provider").inputs["attributeCondition"])


def preview_condition(bootstrap: Rendering) -> str:
    return str(bootstrap.one(PROVIDER, "github-preview-provider").inputs["attributeCondition"])


def test_deployer_is_usable_only_from_main_in_an_approved_environment(bootstrap):
    condition = deployer_condition(bootstrap)
    assert admits(condition, **token(environment="production"))
    assert admits(condition, **token(environment="staging", event_name="workflow_dispatch"))
    # A branch (even naming an environment), main outside one, a pull request, another
    # environment, or another repository of the same name: no.
    assert not admits(condition, **token())
    assert not admits(condition, **token(ref="refs/heads/release", environment="staging"))
    assert not admits(condition, **token(ref="refs/heads/feature"))
    assert not admits(condition, **token(event_name="pull_request", ref="refs/pull/7/merge"))
    assert not admits(
        condition, **token(event_name="pull_request", ref="refs/pull/7/merge", environment="staging")
    )
    assert not admits(condition, **token(event_name="pull_request_target", environment="production"))
    assert not admits(condition, **token(environment="sandbox"))
    assert not admits(condition, **token(repository_id="987654321", environment="production"))


def test_a_release_environment_admits_only_the_release_workflow(bootstrap):
    condition = deployer_condition(bootstrap)
    # Another workflow on main naming production, or release.yml of a branch or of another repository.
    for job_workflow in (
        workflow("deploy.yml"),
        workflow("rollback.yml"),
        workflow("release.yml", ref="refs/heads/feature"),
        workflow("release.yml", repository="someone/liftoff"),
    ):
        assert not admits(condition, **token(environment="production", job_workflow_ref=job_workflow))


def test_the_rollback_environments_admit_the_rollback_workflow_from_main(bootstrap):
    condition = deployer_condition(bootstrap)
    # By hand (a dispatch), and when deploy.yml calls it after a promotion that was not approved.
    assert admits(condition, **rollback_token())
    assert admits(condition, **rollback_token(environment="staging-rollback"))
    assert admits(condition, **rollback_token(event_name="push", workflow_ref=workflow("deploy.yml")))
    # A top-level job whose token carried only workflow_ref is matched on it.
    without = rollback_token()
    del without["job_workflow_ref"]
    assert admits(condition, **without)


def test_nobody_releases_or_deploys_a_branch_from_a_rollback_environment(bootstrap):
    condition = deployer_condition(bootstrap)
    # release.yml (or any other workflow) in a rollback environment: no reviewer stood in the way.
    assert not admits(condition, **rollback_token(job_workflow_ref=workflow("release.yml")))
    assert not admits(condition, **rollback_token(job_workflow_ref=workflow("drift.yml")))
    without = rollback_token(workflow_ref=workflow("release.yml"))
    del without["job_workflow_ref"]
    assert not admits(condition, **without)
    # A branch dispatching rollback.yml, or its own copy of it; a pull request naming the environment.
    branch = "refs/heads/feature"
    assert not admits(condition, **rollback_token(ref=branch))
    assert not admits(
        condition,
        **rollback_token(
            ref=branch,
            workflow_ref=workflow("rollback.yml", branch),
            job_workflow_ref=workflow("rollback.yml", branch),
        ),
    )
    pull = {"event_name": "pull_request", "ref": "refs/pull/7/merge"}
    assert not admits(condition, **rollback_token(**pull))
    assert not admits(
        condition, **rollback_token(**pull, job_workflow_ref=workflow("rollback.yml", "refs/pull/7/merge"))
    )
    # The preview environment, main or not, never gets the deployer.
    assert not admits(condition, **rollback_token(environment="preview"))
    assert not admits(condition, **token(environment="preview"))


def test_preview_identity_serves_approved_pull_requests_and_main(bootstrap):
    condition = preview_condition(bootstrap)
    pull_request = {"event_name": "pull_request", "ref": "refs/pull/7/merge"}
    assert admits(condition, **token(**pull_request, environment="preview"))
    assert admits(condition, **token(event_name="schedule"))
    # Branch code outside the reviewed environment, a branch's own run, another repository: no.
    assert not admits(condition, **token(**pull_request))
    assert not admits(condition, **token(**pull_request, environment="staging"))
    assert not admits(condition, **token(**pull_request, environment="production-rollback"))
    assert not admits(condition, **token(ref="refs/heads/feature"))
    assert not admits(condition, **token(**pull_request, environment="preview", repository_id="987654321"))


def test_each_identity_has_its_own_pool_bound_on_the_repository_id(bootstrap):
    pools = {
        p.inputs["workloadIdentityPoolId"]
        for p in bootstrap.of_type("gcp:iam/workloadIdentityPool:WorkloadIdentityPool")
    }
    assert pools == {"github-deployer", "github-preview"}
    for provider in bootstrap.of_type(PROVIDER):
        assert provider.inputs["oidc"] == {"issuerUri": "https://token.actions.githubusercontent.com"}
        assert provider.inputs["attributeMapping"]["attribute.repository_id"] == "assertion.repository_id"
    bindings = {b.name: b.inputs for b in bootstrap.of_type("gcp:serviceaccount/iAMMember:IAMMember")}
    assert set(bindings) == {"deployer-from-github", "preview-from-github"}
    for name, binding in bindings.items():
        pool = name.split("-")[0]
        assert binding["role"] == "roles/iam.workloadIdentityUser"
        assert binding["serviceAccountId"].endswith(
            f"liftoff-{pool}@liftoff-prod-000000.iam.gserviceaccount.com"
        )
        assert binding["member"] == (
            "principalSet://iam.googleapis.com/projects/123456789012/locations/global/"
            f"workloadIdentityPools/github-{pool}/attribute.repository_id/123456789"
        )
    assert bootstrap.outputs["deployer_workload_identity_provider"].endswith(
        "/github-deployer/providers/github-actions"
    )
    assert bootstrap.outputs["preview_workload_identity_provider"].endswith(
        "/github-preview/providers/github-actions"
    )


def grants(bootstrap: Rendering, account: str) -> dict[str, set[str]]:
    """Project -> roles granted there to one of the bootstrap's accounts."""
    found: dict[str, set[str]] = {}
    for grant in bootstrap.of_type("gcp:projects/iAMMember:IAMMember"):
        if grant.inputs["member"].startswith(f"serviceAccount:{account}@"):
            found.setdefault(grant.inputs["project"], set()).add(grant.inputs["role"])
    return found


def test_deployer_gets_exactly_the_roles_deploys_need_in_every_stack_project(bootstrap):
    assert grants(bootstrap, "liftoff-deployer") == {
        project: set(DEPLOYER_ROLES) for project in PROJECTS.values()
    }
    assert not set(DEPLOYER_ROLES) & {"roles/owner", "roles/editor", "roles/viewer"}
    state = bootstrap.one("gcp:storage/bucketIAMMember:BucketIAMMember", "deployer-state").inputs
    assert state["role"] == "roles/storage.objectAdmin"
    key = bootstrap.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", "deployer-secrets-key").inputs
    assert key["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert bootstrap.outputs["deployer_service_account"].startswith("liftoff-deployer@")


def test_preview_identity_reads_and_never_writes(bootstrap):
    assert grants(bootstrap, "liftoff-preview") == {
        project: set(PREVIEW_ROLES) for project in PROJECTS.values()
    }
    assert not [
        r for r in PREVIEW_ROLES if r.endswith(("admin", "Admin", "editor", "Editor", "owner", "User"))
    ]
    state = bootstrap.one("gcp:storage/bucketIAMMember:BucketIAMMember", "preview-state").inputs
    assert state["role"] == "roles/storage.objectViewer"
    locks = bootstrap.one("gcp:storage/bucketIAMMember:BucketIAMMember", "preview-state-locks").inputs
    assert locks["condition"]["expression"] == (
        'resource.name.startsWith("projects/_/buckets/your-org-liftoff-state/objects/.pulumi/locks/")'
    )
    key = bootstrap.one("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember", "preview-secrets-key").inputs
    assert key["role"] == "roles/cloudkms.cryptoKeyDecrypter"  # decrypts stack secrets, encrypts nothing
    assert bootstrap.outputs["preview_service_account"].startswith("liftoff-preview@")


def test_every_stack_project_has_the_apis_the_stacks_use(bootstrap):
    enabled: dict[str, set[str]] = {}
    for service in bootstrap.of_type("gcp:projects/service:Service"):
        enabled.setdefault(service.inputs["project"], set()).add(service.inputs["service"])
        assert service.inputs["disableOnDestroy"] is False
    for project in PROJECTS.values():
        assert set(SERVICES) <= enabled[project], project
    assert bootstrap.outputs["stack_projects"] == PROJECTS


def test_every_stack_project_has_its_monitoring_agent(bootstrap):
    """A private API's uptime check calls as this agent, which a stack grants run.invoker on the API."""
    agents = bootstrap.of_type("gcp:projects/serviceIdentity:ServiceIdentity")
    assert {(a.inputs["project"], a.inputs["service"]) for a in agents} == {
        (project, "monitoring.googleapis.com") for project in PROJECTS.values()
    }
    apis = {s.urn for s in bootstrap.of_type("gcp:projects/service:Service")}
    assert all(apis <= a.dependencies for a in agents), "after the APIs are enabled"


def test_the_bootstrap_names_the_projects_the_stack_files_deploy_to():
    for stack, project in PROJECTS.items():
        assert stack_config(stack)["gcp:project"] == project
    assert stack_config("org", BOOTSTRAP)[f"{NAMESPACE}:stackProjects"] == PROJECTS


def test_one_project_for_both_stacks_is_covered_once():
    shared = render_bootstrap(
        {f"{NAMESPACE}:stackProjects": {"staging": "liftoff-prod-000000", "prod": "liftoff-prod-000000"}}
    )
    assert set(grants(shared, "liftoff-deployer")) == {"liftoff-prod-000000"}
    names = [s.name for s in shared.of_type("gcp:projects/service:Service")]
    assert len(names) == len(set(names))
    (agent,) = shared.of_type("gcp:projects/serviceIdentity:ServiceIdentity")
    assert agent.inputs["project"] == "liftoff-prod-000000"


def test_every_property_exists_in_the_sdk_and_the_pack_is_satisfied(bootstrap):
    assert {
        r.name: unknown_properties(r) for r in bootstrap.resources if r.custom and unknown_properties(r)
    } == {}
    assert [v for v in evaluate(bootstrap, config={}) if v.mandatory] == []


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (f"{NAMESPACE}:githubRepository", "not a repo", "githubRepository: 'not a repo' is not owner/name"),
        (f"{NAMESPACE}:stateBucket", "Bad_Bucket!", "stateBucket: 'Bad_Bucket!' is not a bucket name"),
        (
            f"{NAMESPACE}:githubRepositoryId",
            "your-org/liftoff",
            "githubRepositoryId: 'your-org/liftoff' is not a numeric",
        ),
        (f"{NAMESPACE}:stackProjects", {"prod": "liftoff-prod-000000"}, "stackProjects.staging: is required"),
        (
            f"{NAMESPACE}:stackProjects",
            {"staging": "X", "prod": "liftoff-prod-000000"},
            "stackProjects.staging: 'X' is not",
        ),
        (
            f"{NAMESPACE}:deployEnvironments",
            ["staging", "production-rollback"],
            "deployEnvironments: 'production-rollback' is the rollback environment, which cannot",
        ),
        (
            f"{NAMESPACE}:deployEnvironments",
            ["preview"],
            "deployEnvironments: 'preview' is the preview environment",
        ),
    ],
)
def test_bad_config_names_the_key_and_registers_nothing(registrations, key, value, message):
    with pytest.raises(BootstrapConfigError, match=message):
        render_bootstrap({key: value})
    assert registrations == []
