"""State bucket, KMS key, Workload Identity Federation for GitHub, and the deployer account."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

NAMESPACE = "liftoff-bootstrap"
REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$")
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# APIs the stacks use.
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
# Exactly what deploy.yml's `pulumi up` does, and nothing broader.
DEPLOYER_ROLES = (
    "roles/run.admin",  # services, worker pools, jobs, their executions and invoker IAM
    "roles/iam.serviceAccountAdmin",  # the workloads' service accounts
    "roles/iam.serviceAccountUser",  # deploying workloads that run as those accounts
    "roles/artifactregistry.admin",  # the repository, its cleanup policy, and pushes
    "roles/secretmanager.admin",  # secrets, versions and per-secret accessor IAM
    "roles/cloudscheduler.admin",  # the retention schedule
    "roles/monitoring.editor",  # uptime check, alert policies, notification channel
    "roles/logging.configWriter",  # log-based metrics
    "roles/serviceusage.serviceUsageConsumer",  # calling the APIs above
)


class BootstrapConfigError(ValueError):
    """The bootstrap stack's configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class BootstrapSettings:
    project: str
    region: str
    repository: str
    state_bucket: str


def load() -> BootstrapSettings:
    gcp_config = pulumi.Config("gcp")
    config = pulumi.Config(NAMESPACE)
    problems = []
    repository = config.get("githubRepository") or ""
    if not REPOSITORY.match(repository):
        problems.append(f"{NAMESPACE}:githubRepository: {repository!r} is not owner/name")
    bucket = config.get("stateBucket") or ""
    if not BUCKET.match(bucket):
        problems.append(f"{NAMESPACE}:stateBucket: {bucket!r} is not a bucket name")
    project = gcp_config.get("project") or ""
    if not project:
        problems.append("gcp:project: is required")
    region = gcp_config.get("region") or ""
    if not region:
        problems.append("gcp:region: is required")
    if problems:
        raise BootstrapConfigError("invalid bootstrap configuration:\n  - " + "\n  - ".join(problems))
    return BootstrapSettings(project=project, region=region, repository=repository, state_bucket=bucket)


def build(s: BootstrapSettings) -> dict[str, Any]:
    labels = {"app": "liftoff", "env": "shared"}
    protect = pulumi.ResourceOptions(protect=True)
    apis = [
        gcp.projects.Service(
            f"api-{service.split('.')[0]}",
            gcp.projects.ServiceArgs(project=s.project, service=service, disable_on_destroy=False),
        )
        for service in SERVICES
    ]
    after_apis = pulumi.ResourceOptions(depends_on=apis)
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
        opts=protect,
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
    pool = gcp.iam.WorkloadIdentityPool(
        "github-pool",
        gcp.iam.WorkloadIdentityPoolArgs(
            project=s.project, workload_identity_pool_id="github", display_name="GitHub Actions"
        ),
        opts=after_apis,
    )
    gcp.iam.WorkloadIdentityPoolProvider(
        "github-provider",
        gcp.iam.WorkloadIdentityPoolProviderArgs(
            project=s.project,
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id="github-actions",
            display_name="GitHub Actions OIDC",
            attribute_mapping={
                "google.subject": "assertion.sub",
                "attribute.repository": "assertion.repository",
                "attribute.ref": "assertion.ref",
            },
            # Only this repository's workflows can exchange their tokens here.
            attribute_condition=f"assertion.repository == '{s.repository}'",
            oidc=gcp.iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=GITHUB_ISSUER),
        ),
    )
    deployer = gcp.serviceaccount.Account(
        "deployer",
        gcp.serviceaccount.AccountArgs(
            project=s.project,
            account_id="liftoff-deployer",
            display_name="Liftoff deployer",
            description="Runs pulumi preview and up from GitHub Actions, keylessly.",
        ),
    )
    member = pulumi.Output.concat("serviceAccount:", deployer.email)
    gcp.serviceaccount.IAMMember(
        "deployer-from-github",
        gcp.serviceaccount.IAMMemberArgs(
            service_account_id=deployer.name,
            role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.concat(
                "principalSet://iam.googleapis.com/", pool.name, "/attribute.repository/", s.repository
            ),
        ),
    )
    for role in DEPLOYER_ROLES:
        gcp.projects.IAMMember(
            f"deployer-{role.split('/')[1].replace('.', '-')}",
            gcp.projects.IAMMemberArgs(project=s.project, role=role, member=member),
        )
    gcp.storage.BucketIAMMember(
        "deployer-state",
        gcp.storage.BucketIAMMemberArgs(bucket=bucket.name, role="roles/storage.objectAdmin", member=member),
    )
    gcp.kms.CryptoKeyIAMMember(
        "deployer-secrets-key",
        gcp.kms.CryptoKeyIAMMemberArgs(
            crypto_key_id=key.id, role="roles/cloudkms.cryptoKeyEncrypterDecrypter", member=member
        ),
    )
    provider_name = pulumi.Output.concat(pool.name, "/providers/github-actions")
    return {
        "state_backend_url": pulumi.Output.concat("gs://", bucket.name),
        "secrets_provider": pulumi.Output.concat("gcpkms://", key.id),
        "workload_identity_provider": provider_name,
        "deployer_service_account": deployer.email,
    }
