"""IAM: secrets readable only by workload service accounts, and no primitive roles for them."""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

from policies.common import get, members

SECRET_IAM = (
    "gcp:secretmanager/secretIamMember:SecretIamMember",
    "gcp:secretmanager/secretIamBinding:SecretIamBinding",
)
PROJECT_IAM = ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding")
PRIMITIVE = frozenset({"roles/owner", "roles/editor"})


def validate_secret_access(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in SECRET_IAM:
        return
    for member in members(args.props):
        if not member.startswith("serviceAccount:"):
            report_violation(
                f"secret access granted to {member}; only workload service accounts may read secrets", None
            )


def validate_primitive_roles(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    # A role not known yet (UNKNOWN, not a str) is left to the update.
    role = get(args.props, "role")
    if args.resource_type not in PROJECT_IAM or not isinstance(role, str) or role not in PRIMITIVE:
        return
    for member in members(args.props):
        if member.startswith("serviceAccount:"):
            report_violation(f"{role} granted to {member}; grant the narrow roles it needs", None)


secret_access_to_workloads = ResourceValidationPolicy(
    name="secret-access-to-workloads",
    description="Secret Manager IAM goes only to service accounts: no allUsers, allAuthenticatedUsers,"
    " users or groups.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_secret_access,
)

no_primitive_roles = ResourceValidationPolicy(
    name="no-primitive-roles",
    description="Service accounts are never granted roles/owner or roles/editor.",
    enforcement_level=EnforcementLevel.MANDATORY,
    validate=validate_primitive_roles,
)
