"""Advisory: every resource that takes labels carries `app` and `env`."""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policies.common import UNKNOWN, get

# Types of this project's stacks that accept a `labels` map.
LABELLED = frozenset(
    {
        "gcp:cloudrunv2/service:Service",
        "gcp:cloudrunv2/workerPool:WorkerPool",
        "gcp:cloudrunv2/job:Job",
        "gcp:secretmanager/secret:Secret",
        "gcp:artifactregistry/repository:Repository",
        "gcp:storage/bucket:Bucket",
        "gcp:kms/cryptoKey:CryptoKey",
    }
)
REQUIRED = ("app", "env")


def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in LABELLED:
        return
    labels = get(args.props, "labels")
    if labels is UNKNOWN:
        return  # a computed map, checked at the update
    # A label whose value is not known yet is there: UNKNOWN counts as set.
    missing = [key for key in REQUIRED if not get(labels, key)]
    if missing:
        report_violation(f"labels {missing} are missing", None)


app_and_env_labels = ResourceValidationPolicy(
    name="app-and-env-labels",
    description="Resources that take labels carry `app` and `env`, for cost reports and ownership.",
    enforcement_level=EnforcementLevel.ADVISORY,
    validate=validate,
)
