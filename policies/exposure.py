"""Who can reach a workload: never the public for the worker, and for the API only if declared."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from policies.common import members

PUBLIC = frozenset({"allUsers", "allAuthenticatedUsers"})
WORKER_POOL_IAM = (
    "gcp:cloudrunv2/workerPoolIamMember:WorkerPoolIamMember",
    "gcp:cloudrunv2/workerPoolIamBinding:WorkerPoolIamBinding",
)
SERVICE_IAM = (
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
    "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",
)


def validate_worker(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type in WORKER_POOL_IAM:
        for member in PUBLIC.intersection(members(args.props)):
            report_violation(f"the worker pool must never be public, but {member} is granted", None)


def validate_api(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in SERVICE_IAM:
        return
    if args.get_config().get("publicApi") is True:
        return
    for member in PUBLIC.intersection(members(args.props)):
        report_violation(f"{member} may invoke the API, but this stack does not declare it public", None)


worker_never_public = ResourceValidationPolicy(
    name="worker-never-public",
    description="No IAM binding makes the worker pool reachable by allUsers or allAuthenticatedUsers.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_worker,
)

api_public_only_when_declared = ResourceValidationPolicy(
    name="api-public-only-when-declared",
    description="The API is invokable by allUsers only where the stack's policy config says publicApi.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_api,
    config_schema=PolicyConfigSchema(properties={"publicApi": {"type": "boolean", "default": False}}),
)
