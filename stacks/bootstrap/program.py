"""State bucket, KMS key, keyless GitHub identities (deployer, read-only preview), every stack's project."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from stacks.bootstrap.environments import (
    DEPLOY_ENVIRONMENTS,
    MAIN,
    PREVIEW_ENVIRONMENT,
    RELEASE_WORKFLOW,
    ROLLBACK_ENVIRONMENTS,
    ROLLBACK_WORKFLOW,
)

NAMESPACE = "liftoff-bootstrap"
REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
REPOSITORY_ID = re.compile(r"^[1-9][0-9]*$")
PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
ENVIRONMENT = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
STACKS = ("staging", "prod")
# Events whose workflows run the default branch's own code (not a pull request's).
DEPLOY_EVENTS = ("push", "workflow_dispatch")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# APIs each stack's project needs.
SERVICES = (
    "run.googleapis.com",
    "artifactregistry.googleapis.com",
    "secretmanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "monitoring.googleapis.com",
    "logging.googleapis.com",
    "cloudkms.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "sts.googleapis.com",
)
# APIs of the project that holds the state, the key and the identities.
ADMIN_SERVICES = (
    "storage.googleapis.com",
    "cloudkms.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "sts.googleapis.com",
    "cloudresourcemanager.googleapis.com",
)
# Exactly what deploy.yml's `pulumi up` does, and nothing broader.
DEPLOYER_ROLES = (
    "roles/run.admin",  # services, worker pools, jobs, their executions and invoker IAM
    "roles/iam.serviceAccountAdmin",  # the workloads' service accounts
    "roles/iam.serviceAccountUser",  # deploying workloads that run as those accounts
    "roles/iam.roleAdmin",  # the worker pool scaler's two custom roles (components/scaler.py)
    "roles/artifactregistry.admin",  # the repository, its cleanup policy, and pushes
    "roles/secretmanager.admin",  # secrets, versions and per-secret accessor IAM
    "roles/cloudscheduler.admin",  # the retention schedule
    "roles/monitoring.editor",  # uptime check, alert policies, notification channel
    "roles/logging.configWriter",  # log-based metrics
    "roles/serviceusage.serviceUsageConsumer",  # calling the APIs above
)
# Pull-request previews run branch code: they may read everything a preview reads and change
# nothing. roles/viewer reads resources (not secret payloads); securityReviewer reads the IAM
# policies that the stacks' *IAMMember resources refresh.
PREVIEW_ROLES = ("roles/viewer", "roles/iam.securityReviewer")


class BootstrapConfigError(ValueError):
    """The bootstrap stack's configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class BootstrapSettings:
    project: str
    region: str
    repository: str
    # GitHub's numeric id: unlike the name, it cannot be taken over by re-creating the repository.
    repository_id: str
    state_bucket: str
    # Stack name -> its GCP project; staging and prod may share one or not.
    stack_projects: Mapping[str, str]
    deploy_environments: tuple[str, ...] = DEPLOY_ENVIRONMENTS


def load() -> BootstrapSettings:
    gcp_config = pulumi.Config("gcp")
    config = pulumi.Config(NAMESPACE)
    problems = []
    repository = config.get("githubRepository") or ""
    if not REPOSITORY.match(repository):
        problems.append(f"{NAMESPACE}:githubRepository: {repository!r} is not owner/name")
    repository_id = str(config.get("githubRepositoryId") or "")
    if not REPOSITORY_ID.match(repository_id):
        problems.append(
            f"{NAMESPACE}:githubRepositoryId: {repository_id!r} is not a numeric repository id"
            " (gh api repos/OWNER/NAME --jq .id)"
        )
    bucket = config.get("stateBucket") or ""
    if not BUCKET.match(bucket):
        problems.append(f"{NAMESPACE}:stateBucket: {bucket!r} is not a bucket name")
    stack_projects = _stack_projects(config.get_object("stackProjects"), problems)
    environments = _deploy_environments(config.get_object("deployEnvironments"), problems)
    project = gcp_config.get("project") or ""
    if not PROJECT_ID.match(project):
        problems.append(f"gcp:project: {project!r} is not a GCP project id")
    region = gcp_config.get("region") or ""
    if not region:
        problems.append("gcp:region: is required")
    if problems:
        raise BootstrapConfigError("invalid bootstrap configuration:\n  - " + "\n  - ".join(problems))
    return BootstrapSettings(
        project=project,
        region=region,
        repository=repository,
        repository_id=repository_id,
        state_bucket=bucket,
        stack_projects=stack_projects,
        deploy_environments=tuple(environments),
    )


def _deploy_environments(raw: Any, problems: list[str]) -> list[str]:
    key = f"{NAMESPACE}:deployEnvironments"
    environments = raw or list(DEPLOY_ENVIRONMENTS)
    if not isinstance(environments, list) or not all(
        isinstance(e, str) and ENVIRONMENT.match(e) for e in environments
    ):
        problems.append(f"{key}: {environments!r} is not a list of environment names")
        return list(DEPLOY_ENVIRONMENTS)
    # A release environment is where reviewers stand; the rollback and preview environments
    # admit other workflows (or branch code) without them.
    for name in environments:
        if name in ROLLBACK_ENVIRONMENTS or name == PREVIEW_ENVIRONMENT:
            problems.append(
                f"{key}: {name!r} is the {'preview' if name == PREVIEW_ENVIRONMENT else 'rollback'}"
                " environment, which cannot also release"
            )
    return environments


def _stack_projects(raw: Any, problems: list[str]) -> dict[str, str]:
    key = f"{NAMESPACE}:stackProjects"
    if not isinstance(raw, Mapping):
        problems.append(f"{key}: is required: the GCP project of each stack ({', '.join(STACKS)})")
        return {}
    for stack in STACKS:
        if stack not in raw:
            problems.append(f"{key}.{stack}: is required")
    for stack, project in raw.items():
        if stack not in STACKS:
            problems.append(f"{key}.{stack}: unknown stack (known: {', '.join(STACKS)})")
        elif not isinstance(project, str) or not PROJECT_ID.match(project):
            problems.append(f"{key}.{stack}: {project!r} is not a GCP project id")
    return {str(k): str(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Identity:
    """One keyless GitHub identity: a pool whose provider admits some workflows, and its account."""

    name: str
    account_id: str
    description: str
    condition: str
    project_roles: tuple[str, ...]
    state_role: str
    key_role: str
    # Pulumi's self-managed backends lock a stack for every operation, preview included: a
    # read-only identity still writes (and removes) its lock objects, and nothing else.
    lock_role: str | None = None


def identities(s: BootstrapSettings) -> tuple[Identity, Identity]:
    """The deployer (main, in a release or rollback environment) and the read-only preview identity."""
    # Matched on the repository's numeric id: a re-created repository of the same name gets another.
    repository = f"assertion.repository_id == '{s.repository_id}'"
    events = ", ".join(f"'{e}'" for e in DEPLOY_EVENTS)
    # GitHub OIDC claims: https://docs.github.com/en/actions/reference/security/oidc. A job
    # without an environment has no `environment` claim, hence the `in assertion` tests; a job
    # with one has the `sub` repo:OWNER/NAME:environment:NAME, which names no branch, so the ref
    # is matched on its own claim.
    # The deployer: code on main, in one of its environments (both: an environment's deployment
    # branch rule is set by hand in GitHub, and a branch may name any environment), running the
    # workflow that environment belongs to. The rollback environments have no reviewers, so they
    # admit only rollback.yml: a release needs release.yml in a release environment, behind its
    # reviewers. Pull request events (ref refs/pull/N/merge) never match.
    in_environment = "'environment' in assertion && assertion.environment"
    deploy = (
        f"{repository} && assertion.event_name in [{events}] && assertion.ref == '{MAIN}'"
        f" && 'environment' in assertion"
        f" && ({_runs(s, RELEASE_WORKFLOW, s.deploy_environments)}"
        f" || {_runs(s, ROLLBACK_WORKFLOW, ROLLBACK_ENVIRONMENTS)})"
    )
    # The preview identity decrypts the stacks' config (management tokens included), so branch
    # code gets it only in the `preview` environment, whose required reviewers approve each run;
    # main's scheduled and manual runs (the drift check) need no approval.
    reviewed = f"assertion.event_name == 'pull_request' && {in_environment} == '{PREVIEW_ENVIRONMENT}'"
    on_main = f"assertion.ref == '{MAIN}' && assertion.event_name in [{events}, 'schedule']"
    previews = f"{repository} && (({reviewed}) || ({on_main}))"
    deployer = Identity(
        name="deployer",
        account_id="liftoff-deployer",
        description="Releases and rolls back from GitHub Actions on main, in its environments, keylessly.",
        condition=deploy,
        project_roles=DEPLOYER_ROLES,
        state_role="roles/storage.objectAdmin",
        key_role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
    )
    preview = Identity(
        name="preview",
        account_id="liftoff-preview",
        description="Runs pulumi preview (pull requests, drift) from GitHub Actions: reads, never writes.",
        condition=previews,
        project_roles=PREVIEW_ROLES,
        state_role="roles/storage.objectViewer",
        key_role="roles/cloudkms.cryptoKeyDecrypter",
        lock_role="roles/storage.objectUser",
    )
    return deployer, preview


def _runs(s: BootstrapSettings, workflow: str, environments: tuple[str, ...]) -> str:
    """A job in one of these environments that runs this workflow file, as it is on main."""
    names = ", ".join(f"'{e}'" for e in environments)
    # job_workflow_ref names the reusable workflow a job runs in (release.yml, called by
    # deploy.yml); GitHub documents it for called workflows, so a job at the top of a dispatched
    # workflow (rollback.yml run by hand) is matched on workflow_ref, the workflow run's own file.
    job_workflow = "('job_workflow_ref' in assertion ? assertion.job_workflow_ref : assertion.workflow_ref)"
    return f"(assertion.environment in [{names}] && {job_workflow} == '{s.repository}/{workflow}@{MAIN}')"


def build(s: BootstrapSettings) -> dict[str, Any]:
    labels = {"app": "liftoff", "env": "shared"}
    apis = _enable_apis(s)
    after_apis = pulumi.ResourceOptions(depends_on=apis)
    _service_agents(s, after_apis)
    bucket, key = _state(s, labels, after_apis)
    outputs: dict[str, Any] = {
        "state_backend_url": pulumi.Output.concat("gs://", bucket.name),
        "secrets_provider": pulumi.Output.concat("gcpkms://", key.id),
        "stack_projects": dict(s.stack_projects),
    }
    for identity in identities(s):
        provider, email = _github_identity(s, identity, bucket, key, after_apis)
        outputs[f"{identity.name}_workload_identity_provider"] = provider
        outputs[f"{identity.name}_service_account"] = email
    return outputs


def _enable_apis(s: BootstrapSettings) -> list[gcp.projects.Service]:
    """The APIs of every stack's project, and of the project holding state and identities."""
    wanted: dict[tuple[str, str], None] = {}
    for project in s.stack_projects.values():
        wanted.update(dict.fromkeys((project, service) for service in SERVICES))
    wanted.update(dict.fromkeys((s.project, service) for service in ADMIN_SERVICES))
    return [
        gcp.projects.Service(
            f"api-{project}-{service.split('.')[0]}",
            gcp.projects.ServiceArgs(project=project, service=service, disable_on_destroy=False),
        )
        for project, service in wanted
    ]


def _service_agents(s: BootstrapSettings, after_apis: pulumi.ResourceOptions) -> None:
    """The Monitoring service agent of every stack's project, made to exist before a stack needs it.

    A stack with a private API grants it roles/run.invoker on the API (components/monitoring.py),
    so that the uptime check may call; IAM refuses a grant to an account that does not exist yet,
    and Google creates this agent on demand. Generating the service identity creates it
    (https://cloud.google.com/service-usage/docs/reference/rest/v1beta1/services/generateServiceIdentity),
    which takes an administrator: the deployer has no role for it.
    """
    for project in dict.fromkeys(s.stack_projects.values()):
        gcp.projects.ServiceIdentity(
            f"agent-{project}-monitoring",
            gcp.projects.ServiceIdentityArgs(project=project, service="monitoring.googleapis.com"),
            opts=after_apis,
        )


def _state(
    s: BootstrapSettings, labels: dict[str, str], after_apis: pulumi.ResourceOptions
) -> tuple[gcp.storage.Bucket, gcp.kms.CryptoKey]:
    protect = pulumi.ResourceOptions(protect=True)
    bucket = gcp.storage.Bucket(
        "state",
        gcp.storage.BucketArgs(
            name=s.state_bucket,
            project=s.project,
            location=s.region,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning=gcp.storage.BucketVersioningArgs(enabled=True),
            labels=labels,
        ),
        opts=pulumi.ResourceOptions.merge(protect, after_apis),
    )
    ring = gcp.kms.KeyRing(
        "secrets-ring",
        gcp.kms.KeyRingArgs(name="liftoff", project=s.project, location=s.region),
        opts=pulumi.ResourceOptions.merge(protect, after_apis),
    )
    key = gcp.kms.CryptoKey(
        "secrets-key",
        gcp.kms.CryptoKeyArgs(
            name="pulumi-secrets",
            key_ring=ring.id,
            rotation_period="7776000s",
            purpose="ENCRYPT_DECRYPT",
            labels=labels,
        ),
        opts=protect,
    )
    return bucket, key


def _github_identity(
    s: BootstrapSettings,
    identity: Identity,
    bucket: gcp.storage.Bucket,
    key: gcp.kms.CryptoKey,
    after_apis: pulumi.ResourceOptions,
) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """A pool of its own (one identity's tokens never match the other's binding), and the account."""
    n = identity.name
    pool = gcp.iam.WorkloadIdentityPool(
        f"github-{n}-pool",
        gcp.iam.WorkloadIdentityPoolArgs(
            project=s.project, workload_identity_pool_id=f"github-{n}", display_name=f"GitHub Actions ({n})"
        ),
        opts=after_apis,
    )
    gcp.iam.WorkloadIdentityPoolProvider(
        f"github-{n}-provider",
        gcp.iam.WorkloadIdentityPoolProviderArgs(
            project=s.project,
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id="github-actions",
            display_name="GitHub Actions OIDC",
            attribute_mapping={
                "google.subject": "assertion.sub",
                "attribute.repository_id": "assertion.repository_id",
                "attribute.repository": "assertion.repository",
                "attribute.ref": "assertion.ref",
                "attribute.event_name": "assertion.event_name",
            },
            attribute_condition=identity.condition,
            oidc=gcp.iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=GITHUB_ISSUER),
        ),
    )
    account = gcp.serviceaccount.Account(
        n,
        gcp.serviceaccount.AccountArgs(
            project=s.project,
            account_id=identity.account_id,
            display_name=f"Liftoff {n}",
            description=identity.description,
        ),
    )
    _grant(s, identity, account, pool, bucket, key)
    return pulumi.Output.concat(pool.name, "/providers/github-actions"), account.email


def _grant(
    s: BootstrapSettings,
    identity: Identity,
    account: gcp.serviceaccount.Account,
    pool: gcp.iam.WorkloadIdentityPool,
    bucket: gcp.storage.Bucket,
    key: gcp.kms.CryptoKey,
) -> None:
    """Impersonation from the pool, the identity's roles in every stack's project, state and key."""
    n = identity.name
    member = pulumi.Output.concat("serviceAccount:", account.email)
    gcp.serviceaccount.IAMMember(
        f"{n}-from-github",
        gcp.serviceaccount.IAMMemberArgs(
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat(
                "principalSet://iam.googleapis.com/", pool.name, "/attribute.repository_id/", s.repository_id
            ),
        ),
    )
    for project in dict.fromkeys(s.stack_projects.values()):
        for role in identity.project_roles:
            gcp.projects.IAMMember(
                f"{n}-{project}-{role.split('/')[1].replace('.', '-')}",
                gcp.projects.IAMMemberArgs(project=project, role=role, member=member),
            )
    gcp.storage.BucketIAMMember(
        f"{n}-state",
        gcp.storage.BucketIAMMemberArgs(bucket=bucket.name, role=identity.state_role, member=member),
    )
    if identity.lock_role is not None:
        # https://cloud.google.com/storage/docs/access-control/iam#conditions (object names).
        prefix = f"projects/_/buckets/{s.state_bucket}/objects/.pulumi/locks/"
        gcp.storage.BucketIAMMember(
            f"{n}-state-locks",
            gcp.storage.BucketIAMMemberArgs(
                bucket=bucket.name,
                role=identity.lock_role,
                member=member,
                condition=gcp.storage.BucketIAMMemberConditionArgs(
                    title="pulumi-locks-only",
                    description="Stack lock objects, which every Pulumi operation writes",
                    expression=f'resource.name.startsWith("{prefix}")',
                ),
            ),
        )
    gcp.kms.CryptoKeyIAMMember(
        f"{n}-secrets-key",
        gcp.kms.CryptoKeyIAMMemberArgs(crypto_key_id=key.id, role=identity.key_role, member=member),
    )
